"""Shared fixtures: the default config and a helper that returns a config error's message."""

from pathlib import Path

import pytest
import yaml

from ssd_math import config as sc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    """The default experiment's config (config.yaml), as a fresh dict per test module."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def config_error(cfg) -> str:
    """The message of the ConfigError that validating ``cfg`` raises (fails if none)."""
    with pytest.raises(sc.ConfigError) as ei:
        sc.validate(cfg)
    return str(ei.value)
