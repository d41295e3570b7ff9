"""Logging for rule scripts: everything (progress bars included) goes to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


@contextlib.contextmanager
def rule_log(snakemake_obj):
    """Send logging, stdout and stderr of a rule script to ``log[0]`` (if the rule has one)."""
    logs = list(getattr(snakemake_obj, "log", []) or [])
    if not logs:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        yield logging.getLogger("ssd_math")
        return
    path = Path(logs[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1) as fh, \
            contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield logging.getLogger("ssd_math")
        except BaseException:
            logging.getLogger("ssd_math").exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)
