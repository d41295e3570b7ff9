"""Config validation: every bad key is named, with what is allowed."""

import copy
from pathlib import Path

import pytest

from ssd_math import config as sc

ROOT = Path(__file__).resolve().parents[1]


from conftest import config_error as _err  # noqa: E402


def test_default_config_is_valid(default):
    assert sc.validate(copy.deepcopy(default)) is not None


def test_every_schema_property_has_a_description():
    schema = sc.load_schema()
    missing = []

    def walk(node, path):
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                if "description" not in sub and "$ref" not in sub:
                    missing.append(".".join(path + [key]))
                walk(sub, path + [key])
                for child in ("additionalProperties", "items"):
                    if isinstance(sub.get(child), dict):
                        walk(sub[child], path + [key, child])

    walk(schema, [])
    for name, d in schema["$defs"].items():
        walk(d, ["$defs", name])
    assert not missing, f"schema keys without a description: {missing}"


def test_unknown_key_is_named(default):
    cfg = copy.deepcopy(default)
    cfg["sft"]["learning_rate"] = 1e-5
    msg = _err(cfg)
    assert "unknown config key sft.learning_rate" in msg
    assert "lr" in msg  # the allowed keys are listed


def test_unknown_top_level_key(default):
    cfg = copy.deepcopy(default)
    cfg["evaluation"] = {}
    assert "unknown config key evaluation" in _err(cfg)


def test_wrong_type_is_named(default):
    cfg = copy.deepcopy(default)
    cfg["eval"]["max_new_tokens"] = "lots"
    msg = _err(cfg)
    assert "eval.max_new_tokens" in msg and "integer" in msg


@pytest.mark.parametrize("value", [0, -0.5])
def test_temperature_must_be_positive(default, value):
    cfg = copy.deepcopy(default)
    cfg["arms"]["ssd"]["temperature"] = value
    msg = _err(cfg)
    assert "arms.ssd.temperature" in msg and "must be > 0" in msg


@pytest.mark.parametrize("value", [0, 1.5])
def test_top_p_range(default, value):
    cfg = copy.deepcopy(default)
    cfg["eval"]["decoding"]["top_p"] = value
    msg = _err(cfg)
    assert "eval.decoding.top_p" in msg


def test_t_grid_entries_checked(default):
    cfg = copy.deepcopy(default)
    cfg["eval"]["t_grid"] = [0.7, 0.0]
    assert "eval.t_grid.1" in _err(cfg)


def test_passk_model_must_exist(default):
    cfg = copy.deepcopy(default)
    cfg["eval"]["passk"]["runs"][1]["model"] = "nope"
    msg = _err(cfg)
    assert "eval.passk.runs[1].model = 'nope'" in msg


def test_batch_divisibility(default):
    cfg = copy.deepcopy(default)
    cfg["sft"]["micro_batch"] = 5
    assert "sft.global_batch = 32 is not a multiple of sft.micro_batch = 5" in _err(cfg)


def test_checkpoint_steps_increasing(default):
    cfg = copy.deepcopy(default)
    cfg["sft"]["checkpoint_steps"] = [8, 4]
    assert "sft.checkpoint_steps" in _err(cfg)


def test_reserved_arm_name(default):
    cfg = copy.deepcopy(default)
    cfg["arms"]["base"] = copy.deepcopy(cfg["arms"]["ssd"])
    assert "arms.base" in _err(cfg)


def test_eval_cap_below_train_cap(default):
    cfg = copy.deepcopy(default)
    cfg["eval"]["max_new_tokens"] = 8
    assert "eval.max_new_tokens = 8 is below train_sampling.max_new_tokens" in _err(cfg)


def test_all_problems_reported_at_once(default):
    cfg = copy.deepcopy(default)
    cfg["stats"]["n_boot"] = 5
    cfg["seed"] = -1
    msg = _err(cfg)
    assert "stats.n_boot" in msg and "seed" in msg


def test_derived_names(default):
    assert sc.fmt_t(1.0) == "1.0" and sc.fmt_t(0.7) == "0.7" and sc.fmt_t(1.25) == "1.25"
    assert sc.final_models(default)[0] == "base"
    assert sc.checkpoint_names(default)[-1] == "final"
    d = sc.grid_decoding(default, 0.6)
    assert d["temperature"] == 0.6 and d["top_k"] == 20 and d["max_new_tokens"] == default["eval"]["max_new_tokens"]
