"""Every default lives once, in schemas/config.schema.yaml, and every value the schema accepts is
one the code accepts (and the reverse): the schema's enums and ranges walked against their
consumers (ssd_math.train's spec, the noise tracker, the probe's model load, the rehearsal's
model shapes), and the resolved defaults against a record of what they were when the defaults
still lived in the code (train.DEFAULTS, probe.DEFAULTS, modeling.REHEARSAL_DEFAULTS)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ssd_math import config as sc
from ssd_math import noise
from ssd_math import train as T
from ssd_math.modeling import rehearsal_spec

from conftest import ROOT, config_error

JOB = {"init_dir": "x", "data": "x", "out_dir": "x"}

# What the code's own defaults were (ssd_math 3d6bbe9); the schema's must resolve to the same.
RECORDED_TRAIN = {
    "init_dir": None, "init_random": False, "data": None, "out_dir": None, "checkpoints": {},
    "log": None, "resume_dir": None, "seed": 0, "epochs": 1, "max_steps": None, "max_len": 2048,
    "group_by_length": False, "global_batch": 32, "micro_batch": 4, "lr": 5e-6, "min_lr": 1e-6,
    "warmup_steps": 5, "schedule": "cosine", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1,
    "grad_clip": 1.0, "dtype": "float32", "save_dtype": None, "optimizer_state": "fp32",
    "gradient_checkpointing": False, "checkpoint_sublayers": False, "loss_chunk_tokens": 0, "checkpoints_past_end": "error",
    "instrument": {"enabled": False, "store_dtype": "bfloat16", "ema": 0.9, "dw_bins": None},
    "progress": True, "interrupt_after_step": None,
}
RECORDED_PROBE = {
    "t_eval": 1.5, "controls": [], "carriers": {"per_generator": 24, "length_bins": 3},
    "positions": {"every": 6, "hot_spots": ["\\boxed", "Let", "Wait", "From the"], "n_random": 4,
                  "labeled": True},
    "temperature": 1.0, "reference": {"top_k": 20, "top_p": 0.95},
    "classify": {"lock_top1": 0.9, "lock_nucleus_max": 2, "lock_tail_max": 0.05,
                 "fork_top1_max": 0.8, "fork_second_min": 0.1, "fork_tail_max": 0.1},
    "top_n": 5, "examples": 3, "dtype": "float32",
}
RECORDED_REHEARSAL = {
    "vocab_size": 768, "hidden": 64, "layers": 4, "full_attention_interval": 4, "heads": 4,
    "kv_heads": 2, "head_dim": 32, "linear_key_heads": 2, "linear_value_heads": 4,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
    "intermediate": 128, "max_pos": 4096,
    "vision": {"depth": 1, "hidden": 32, "heads": 2, "intermediate": 64, "patch_size": 16,
               "num_position_embeddings": 64},
    "warmup": {"steps": 40, "lr": 3.0e-3, "batch": 16, "max_len": 96},
}
#: repr of the default config's resolved probe section: rules/probe.smk passes it as a param, and
#: Snakemake compares params by repr (key order included), so a change reruns the probe.
RECORDED_PROBE_REPR = (
    "{'t_eval': 1.5, 'eval_set': 'eval_main', 'arms': ['ssd', 'naive', 'filter-only'], "
    "'compare_arm': 'ssd', 'controls': ['naive', 'filter-only'], 'carriers': {'per_generator': 36, "
    "'length_bins': 3}, 'positions': {'every': 6, 'hot_spots': ['\\\\boxed', 'Let', 'Wait', "
    "'From the'], 'n_random': 4, 'labeled': True}, 'temperature': 1.0, 'reference': {'top_k': 20, "
    "'top_p': 0.95}, 'classify': {'lock_top1': 0.9, 'lock_nucleus_max': 2, 'lock_tail_max': 0.05, "
    "'fork_top1_max': 0.8, 'fork_second_min': 0.1, 'fork_tail_max': 0.1}, 'top_n': 5, "
    "'examples': 3, 'dtype': 'float32', 'labeled': True}")


def test_resolved_defaults_equal_the_recorded_ones(default):
    assert T.DEFAULTS == RECORDED_TRAIN
    assert sc.schema_defaults("properties/probe") == RECORDED_PROBE
    assert rehearsal_spec() == RECORDED_REHEARSAL
    assert repr(sc.probe_settings(sc.validate(copy.deepcopy(default)))) == RECORDED_PROBE_REPR


def test_a_spec_built_from_the_config_is_complete(default):
    """The rules' spec (an arm's recipe + the job keys) needs nothing from train's defaults."""
    cfg = sc.validate(copy.deepcopy(default))
    for arm in sc.all_arms(cfg):
        recipe = {k: v for k, v in sc.arm_sft(cfg, arm).items() if k != "checkpoint_steps"}
        assert set(recipe) | set(T.JOB_DEFAULTS) == set(T.DEFAULTS), arm
        assert set(recipe["instrument"]) == set(T.DEFAULTS["instrument"]), arm


# ------------------------------------------------------------------- the schema vs its consumers
def _inside_outside(prop: dict) -> tuple[list, list]:
    """Values at the edges of a schema property's enum / range / type: (accepted, rejected)."""
    types = prop.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "enum" in prop:
        return list(prop["enum"]), ["not-" + str(prop["enum"][0])]
    if "boolean" in types:
        return [True, False], ["yes"]
    step = 1 if "integer" in types else 1e-9
    ok, bad = [], []
    if "minimum" in prop:
        ok.append(prop["minimum"])
        bad.append(prop["minimum"] - step)
    if "exclusiveMinimum" in prop:
        ok.append(prop["exclusiveMinimum"] + step)
        bad.append(prop["exclusiveMinimum"])
    if "maximum" in prop:
        ok.append(prop["maximum"])
        bad.append(prop["maximum"] + step)
    if "exclusiveMaximum" in prop:
        ok.append(prop["exclusiveMaximum"] - step)
        bad.append(prop["exclusiveMaximum"])
    return ok, bad


def _optim_cases():
    optim = sc.schema_node("$defs/optim")
    for key, prop in optim["properties"].items():
        if key == "checkpoint_steps":  # a spec names its checkpoints in `checkpoints`
            continue
        if key == "instrument":
            for sub, sp in prop["properties"].items():
                yield f"instrument.{sub}", sp
        else:
            yield key, prop


@pytest.mark.parametrize("key,prop", list(_optim_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_train_spec_accepts_exactly_what_the_schema_accepts(key, prop):
    """Each enum value and each range edge of the optim schema: the training spec (what every
    training job runs) accepts it; one step outside: both reject it, naming the key."""
    ok, bad = _inside_outside(prop)
    if not ok and not bad:
        pytest.skip(f"{key}: no enum or range")
    # min_lr <= lr is a config-level check; checkpoint_sublayers needs gradient_checkpointing
    others = {"lr": {"min_lr": 0.0}, "checkpoint_sublayers": {"gradient_checkpointing": True}}.get(key, {})

    def spec(value):
        if key.startswith("instrument."):
            return {**JOB, **others, "instrument": {key.split(".")[1]: value}}
        return {**JOB, **others, key: value}

    for v in ok:
        T.resolve_spec(spec(v))
    for v in bad:
        with pytest.raises(ValueError, match=key.split(".")[-1]):
            T.resolve_spec(spec(v))


def test_recipe_enums_have_their_consumers():
    """Beyond the spec check: the noise tracker stores weights in every store_dtype, the LR
    schedule computes every schedule, and every checkpoints_past_end value is handled."""
    optim = sc.schema_node("$defs/optim")["properties"]
    for dt in optim["instrument"]["properties"]["store_dtype"]["enum"]:
        assert isinstance(noise.as_dtype(dt), torch.dtype)
    for sched in optim["schedule"]["enum"]:
        s = T.resolve_spec({**JOB, "schedule": sched, "warmup_steps": 0})
        assert math.isfinite(T.lr_at(5, s, 10))
    for how in optim["checkpoints_past_end"]["enum"]:
        s = T.resolve_spec({**JOB, "checkpoints_past_end": how, "checkpoints": {9: "ck"},
                            "global_batch": 4, "micro_batch": 4})
        if how == "final":
            assert T.plan_steps(s, 8)[2] == {9: "ck"}
        else:
            with pytest.raises(ValueError, match="checkpoint step 9"):
                T.plan_steps(s, 8)


def test_served_dtypes_are_save_dtypes_of_training():
    """Every dtype the config can serve the trained models in (model.hub.dtype, sampler.vllm.dtype)
    is a save_dtype ssd_math.train accepts (rules/train.smk passes config.serve_dtype)."""
    props = sc.schema_node("properties/model/properties/hub")["properties"]
    vprops = sc.schema_node("properties/sampler/properties/vllm")["properties"]
    for hub_dt in props["dtype"]["enum"]:
        for vllm_dt in vprops["dtype"]["enum"]:
            cfg = {"sampler": {"backend": "vllm", "vllm": {"dtype": vllm_dt}},
                   "model": {"hub": {"dtype": hub_dt}}}
            T.resolve_spec({**JOB, "save_dtype": sc.serve_dtype(cfg)})


def test_probe_dtypes_load(default):
    """The probe's forward pass loads its model in probe.dtype (getattr(torch, dtype))."""
    for dt in sc.schema_node("properties/probe")["properties"]["dtype"]["enum"]:
        assert isinstance(getattr(torch, dt), torch.dtype)


def test_what_the_code_refuses_the_config_refuses_first(default):
    """sft.dtype bfloat16 used to pass validation and stop the first sft job after all the
    sampling; a rehearsal shape rehearsal_config cannot build used to stop its rule; unsorted
    histogram edges used to stop the noise tracker. Each is now a config error naming the key."""
    c = copy.deepcopy(default)
    c["sft"]["dtype"] = "bfloat16"
    assert "sft.dtype = 'bfloat16': must be one of 'float32'" in config_error(c)
    c = copy.deepcopy(default)
    c["extra_arms"]["lr-high"]["sft"]["dtype"] = "bfloat16"
    assert "extra_arms.lr-high.sft.dtype" in config_error(c)
    c = copy.deepcopy(default)
    c["sft"]["instrument"]["dw_bins"] = [-3, -6, 0]
    assert "sft.instrument.dw_bins = [-3, -6, 0]: the log10 edges must increase" in config_error(c)
    import yaml

    reh = yaml.safe_load((ROOT / "config" / "rehearsal.yaml").read_text())
    sc.validate(copy.deepcopy(reh))
    for change, msg in (({"layers": 6}, "model.rehearsal.layers = 6 is not a multiple"),
                        ({"kv_heads": 3}, "heads must be a multiple of kv_heads"),
                        ({"head_dim": 16}, "model.rehearsal.head_dim = 16")):
        c = copy.deepcopy(reh)
        c["model"]["rehearsal"].update(change)
        assert msg in config_error(c)
