"""Every default lives once, in schemas/config.schema.yaml, and every value the schema accepts is
one the code accepts (and the reverse): each schema default round-trips to the value its consumer
resolves (and follows the schema when the schema's default changes, so the consumer holds no copy
of it); no code under src/ falls back to a literal for a key the schema gives a default; and the
schema's enums and ranges are walked against their consumers (ssd_math.train's spec, the noise
tracker, the probe's model load, the rehearsal's model shapes)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import math
import re
from collections.abc import Callable

import pytest
import torch
import yaml

from ssd_math import derive, noise, schema, synth
from ssd_math import train as T
from ssd_math.config import fill_defaults, validate
from ssd_math.decontam import decontaminate
from ssd_math.modeling import rehearsal_spec
from ssd_math.sampler import SamplingConfig

from conftest import ROOT, config_error

JOB = {"init_dir": "x", "data": "x", "out_dir": "x"}
SRC = ROOT / "src" / "ssd_math"


# ------------------------------------------------------------------ one owner: the round trip
def _configs() -> dict[str, dict]:
    return {
        n: yaml.safe_load((ROOT / f).read_text())
        for n, f in (("default", "config.yaml"), ("real", "config/real.yaml"), ("rehearsal", "config/rehearsal.yaml"))
    }


def _drop(cfg: dict, dotted: str) -> dict:
    """``cfg`` with the key at ``dotted`` removed (the consumer must then resolve the default)."""
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node.pop(last, None)
    return cfg


def _vllm_cfg(cfg: dict) -> dict:
    cfg["sampler"]["backend"] = "vllm"
    cfg["model"].setdefault("hub", {})["dtype"] = "float16"
    return cfg


#: each default a function reads (rather than a rule reading ``config[...]`` after validation):
#: (which config, dotted key to drop, the consumer's resolved value from the validated config).
#: A consumer that keeps its own copy returns it; one that reads the schema returns the default.
CONSUMERS: dict[str, tuple[str, str, Callable[[dict], object]]] = {
    "$defs/min_p": ("default", "arms.ssd.min_p", lambda c: derive.arm_sampling(c, "ssd").min_p),
    "$defs/presence_penalty": (
        "default",
        "arms.ssd.presence_penalty",
        lambda c: derive.arm_sampling(c, "ssd").presence_penalty,
    ),
    "properties/train_sampling/properties/samples_per_prompt": (
        "default",
        "train_sampling.samples_per_prompt",
        lambda c: derive.arm_sampling(c, "ssd").n,
    ),
    "properties/eval/properties/sweeps/properties/min_p_temperature": (
        "default",
        "eval.sweeps.min_p_temperature",
        lambda c: {s.temperature for k, s in derive.sweep_samplings(c).items() if k.startswith("minp")}.pop(),
    ),
    "properties/train_sampling/properties/min_kept_fraction": (
        "default",
        "train_sampling.min_kept_fraction",
        lambda c: float(
            re.search(r"kept fraction of ([0-9.]+) \(train_sampling", derive.max_sft_steps(c, "ssd")[1])[1]
        ),
    ),
    "properties/sampler/properties/vllm/properties/dtype": (
        "default",
        "sampler.vllm.dtype",
        lambda c: "auto" if derive.serve_dtype(_vllm_cfg(c)) == "float16" else derive.serve_dtype(c),
    ),
    "properties/sampler/properties/batch_size": ("default", "sampler.batch_size", lambda c: c["sampler"]["batch_size"]),
    "properties/data/properties/synthetic/properties/lock_noise": (
        "synth",
        "lock_noise",
        lambda c: _synth_knobs(c)["lock_noise"],
    ),
    "properties/data/properties/synthetic/properties/p_recheck": (
        "synth",
        "p_recheck",
        lambda c: _synth_knobs(c)["p_recheck"],
    ),
    "properties/data/properties/real/properties/decontam/properties/threshold": (
        "real",
        "data.real.decontam.threshold",
        lambda c: c["data"]["real"]["decontam"]["threshold"],
    ),
    "properties/probe/properties/top_n": ("default", "probe.top_n", lambda c: derive.probe_settings(c)["top_n"]),
    "properties/model/properties/rehearsal/properties/hidden": (
        "rehearsal",
        "model.rehearsal.hidden",
        lambda c: rehearsal_spec(c["model"]["rehearsal"])["hidden"],
    ),
    "$defs/optim/properties/eps": ("default", "sft.eps", lambda c: derive.arm_sft(c, "ssd")["eps"]),
    "$defs/optim/properties/loss_chunk_tokens": (
        "default",
        "sft.loss_chunk_tokens",
        lambda c: T.resolve_spec(
            {**JOB, **{k: v for k, v in derive.arm_sft(c, "ssd").items() if k != "checkpoint_steps"}}
        )["loss_chunk_tokens"],
    ),
}


def _synth_knobs(recipe: dict) -> dict:
    """The knobs ssd_math.synth.build_splits hands each worked solution for ``recipe``."""
    seen = {}
    real = synth.worked_solution

    def spy(row, rng, **kw):
        seen.update(kw)
        return real(row, rng, **kw)

    synth.worked_solution = spy
    try:
        synth.build_splits(recipe)
    finally:
        synth.worked_solution = real
    return seen


def _other(value):
    """A different valid value of the same kind (for the schema-follows check)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.99, 12) if value else 0.5
    return {"auto": "bfloat16"}.get(value, value)


def _consumer_value(pointer: str) -> object:
    which, key, read = CONSUMERS[pointer]
    if which == "synth":  # the task's recipe without the key (build_splits fills it)
        return read(
            {"levels": [2, 3], "hard_levels": [3], "n_pretrain": 2, "n_train_prompts": 1, "n_eval_main": 1, "seed": 0}
        )
    cfg = _drop(_configs()[which], key)
    return read(validate(cfg, cli_overrides=None) if which != "real" else _validated_real(cfg))


def _validated_real(cfg: dict) -> dict:
    """The real recipe, filled (its local files and hub revisions are checked elsewhere)."""
    return fill_defaults(cfg)


@pytest.mark.parametrize("pointer", sorted(CONSUMERS))
def test_each_default_round_trips_to_its_consumer(pointer, monkeypatch):
    """The consumer's resolved value is the schema's default; and when the schema's default
    changes, the consumer follows it (a copy of the default in the code would not)."""
    want = schema.default(pointer)
    assert _consumer_value(pointer) == want
    new = _other(want)
    raw = schema.load_schema()
    node = raw
    for part in pointer.split("/"):
        node = node[part]
    node["default"] = new
    monkeypatch.setattr(schema, "load_schema", lambda path=schema.SCHEMA_PATH: copy.deepcopy(raw))
    schema._schema_text.cache_clear()
    schema._root.cache_clear()
    try:
        assert _consumer_value(pointer) == new, f"{pointer}: the consumer kept its own default"
    finally:
        monkeypatch.undo()
        schema._schema_text.cache_clear()
        schema._root.cache_clear()


def test_import_time_defaults_are_the_schemas():
    """Defaults read once at import (the training spec, the sampler's optional knobs, the
    decontamination the tests use) equal the schema's."""
    optim = {k: v for k, v in schema.schema_defaults("$defs/optim").items() if k != "checkpoint_steps"}
    assert {k: T.DEFAULTS[k] for k in optim} == optim
    fields = {f.name: f.default for f in dataclasses.fields(SamplingConfig)}
    assert fields["min_p"] == schema.default("$defs/min_p")
    assert fields["presence_penalty"] == schema.default("$defs/presence_penalty")
    dc = schema.schema_defaults("properties/data/properties/real/properties/decontam")
    assert decontaminate([], [], **dc) == ([], [])  # the schema's defaults are a valid setting


# ------------------------------------------------------- one owner: no literal fallback in src/
def _schema_defaults_by_key() -> dict[str, list]:
    """Every property name the schema gives a default, with its defaults (a name may recur)."""
    out: dict[str, list] = {}

    def walk(n):
        if isinstance(n, dict):
            for k, v in (n.get("properties") or {}).items():
                if isinstance(v, dict) and "default" in v:
                    out.setdefault(k, []).append(v["default"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(schema.load_schema())
    return out


#: (module, function or "", key): a literal that is not a copy of the config's default, each with
#: why. Library functions called with values that are not the config's (a test's, a bench's, a
#: model loader's) keep their argument defaults here.
NOT_CONFIG = {
    ("hf_sampler", "", "positions"): "a decode loop's statistics dict, not probe.positions",
    ("hf_sampler", "", "steps"): "a decode loop's statistics dict, not model.rehearsal.warmup.steps",
    ("cluster", "", "runtime"): "a SLURM job's runtime column ('-' = not reported), not the config's",
    ("config_checks", "", "enabled"): "data.real sources are array items: the schema's default does not reach them",
    ("prepare_real_data", "", "enabled"): "data.real sources are array items: the schema's default does not reach them",
    ("generate", "", "trust_remote_code"): "a generation job's common dict from a test or bench may omit it: "
    "the safe value, never run a folder's code",
    ("generate_prep", "", "trust_remote_code"): "a generation job's common dict from a test or bench may omit it: "
    "the safe value, never run a folder's code",
    ("generate_vllm", "", "trust_remote_code"): "a generation job's common dict from a test or bench may omit it: "
    "the safe value, never run a folder's code",
    ("generate_prep", "prompt_renderer", "trust_remote_code"): "the safe value, never run a folder's code",
    ("generate_prep", "prompt_token_counter", "trust_remote_code"): "the safe value, never run a folder's code",
    ("hub", "fetch_base", "trust_remote_code"): "the safe value, never run a folder's code",
    ("modeling", "load_model", "trust_remote_code"): "the safe value, never run a folder's code",
    ("tokenizer", "load_tokenizer", "trust_remote_code"): "the safe value, never run a folder's code",
    ("probe_positions", "build_positions", "trust_remote_code"): "the safe value, never run a folder's code",
    ("probe_forward", "forward_model", "trust_remote_code"): "the safe value, never run a folder's code",
    ("hf_sampler", "__init__", "trust_remote_code"): "the safe value, never run a folder's code",
    ("generate", "", "device"): "a generation job's common dict from a test may omit it",
    ("generate_prep", "", "device"): "a generation job's common dict from a test may omit it",
    ("hf_sampler", "__init__", "device"): "the sampler's own argument (tests, benches)",
    ("hf_sampler", "__init__", "batch_size"): "the sampler's own argument (tests, benches)",
    ("hf_sampler", "__init__", "dtype"): "transformers loads fp32 (the hf backend has no dtype key)",
    ("modeling", "load_model", "dtype"): "the loader's argument (fp32 unless a caller asks)",
    ("modeling", "load_model", "device"): "the loader's argument",
    (
        "probe_forward",
        "position_logits",
        "device",
    ): "the forward pass's argument (the probe rule passes runtime.device)",
    ("probe_forward", "forward_model", "device"): "the forward pass's argument (the probe rule passes runtime.device)",
    ("probe_forward", "forward_model", "dtype"): "the forward pass's argument (the probe rule passes probe.dtype)",
    ("modeling", "tiny_config", "hidden"): "model shape helper for tests; the rules pass model.tiny",
    ("modeling", "tiny_config", "layers"): "model shape helper for tests; the rules pass model.tiny",
    ("modeling", "tiny_config", "heads"): "model shape helper for tests; the rules pass model.tiny",
    ("modeling", "tiny_config", "kv_heads"): "model shape helper for tests; the rules pass model.tiny",
    ("modeling", "tiny_config", "intermediate"): "model shape helper for tests; the rules pass model.tiny",
    ("modeling", "tiny_config", "max_pos"): "model shape helper for tests; the rules pass model.tiny",
    ("tokenizer", "build_tokenizer", "vocab_size"): "tokenizer helper for tests; the rules pass model.tiny.vocab_size",
    ("noise", "__init__", "store_dtype"): "the tracker's argument; train passes sft.instrument.store_dtype",
    ("noise", "__init__", "ema"): "the tracker's argument; train passes sft.instrument.ema",
    ("planner", "", "epochs"): "a training job of the plan's throughput table, not sft.epochs",
    ("planner", "sft_memory", "micro_batch"): "the memory model's argument (one sequence)",
    ("train_data", "epoch_order", "batch"): "an argument of the batching helper, not model.rehearsal.warmup.batch",
    ("qmd_render", "render_qmd", "timeout_s"): "Quarto's time limit, not eval.grader.timeout_s",
    ("report", "render", "timeout_s"): "Quarto's time limit, not eval.grader.timeout_s",
    ("stats", "sample_size", "alpha"): "the power helper's argument; rule power passes sample_size.alpha",
    ("stats", "sample_size", "power"): "the power helper's argument; rule power passes sample_size.power",
    ("run_tables", "power_table", "alpha"): "the power helper's argument; rule power passes sample_size.alpha",
    ("run_tables", "power_table", "power"): "the power helper's argument; rule power passes sample_size.power",
    ("study", "", "t_eval"): "a study claim's T_eval (report/study_claims.yaml), not probe.t_eval",
    ("grading_pool", "grade_rows", "workers"): "grading helper for tests and benches; the rules pass eval.grader",
    ("grading_pool", "grade_rows", "timeout_s"): "grading helper for tests and benches; the rules pass eval.grader",
    ("grading_pool", "grade_files", "workers"): "grading helper for tests and benches; the rules pass eval.grader",
    ("grading_pool", "grade_files", "timeout_s"): "grading helper for tests and benches; the rules pass eval.grader",
    ("grading_pool", "grade_file", "workers"): "grading helper for tests and benches; the rules pass eval.grader",
    ("grading_pool", "grade_file", "timeout_s"): "grading helper for tests and benches; the rules pass eval.grader",
}


def shadowed_defaults(files: dict[str, str]) -> list[str]:
    """``module:line: ...`` for each ``.get("key", <literal>)`` and each keyword default
    ``key=<literal>`` whose key the schema gives a default (a ``.get``) or whose literal equals
    that key's schema default (a keyword default), outside :data:`NOT_CONFIG`."""
    keys = _schema_defaults_by_key()
    out = []
    for mod, text in sorted(files.items()):
        tree = ast.parse(text)
        funcs = [(n, n.name) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

        def owner(node, funcs=funcs):
            best = ""
            for f, name in funcs:
                if f.lineno <= node.lineno <= (f.end_lineno or f.lineno):
                    best = name
            return best

        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
            ):
                k, d = node.args
                if (
                    isinstance(k, ast.Constant)
                    and k.value in keys
                    and isinstance(d, ast.Constant)
                    and d.value is not None
                    and (mod, "", k.value) not in NOT_CONFIG
                    and (mod, owner(node), k.value) not in NOT_CONFIG
                ):
                    out.append(f"{mod}:{node.lineno}: .get({k.value!r}, {d.value!r}) shadows the schema's default")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults))
                pairs += [(x, y) for x, y in zip(a.kwonlyargs, a.kw_defaults) if y is not None]
                for arg, dflt in pairs:
                    if (
                        arg.arg in keys
                        and isinstance(dflt, ast.Constant)
                        and dflt.value is not None
                        and dflt.value in keys[arg.arg]
                        and (mod, node.name, arg.arg) not in NOT_CONFIG
                    ):
                        out.append(
                            f"{mod}:{node.lineno}: {node.name}({arg.arg}={dflt.value!r}) copies the schema's default"
                        )
    return out


def _sources() -> dict[str, str]:
    return {p.stem: p.read_text("utf-8") for p in sorted(SRC.glob("*.py"))}


def test_no_code_falls_back_to_a_copy_of_a_schema_default():
    found = shadowed_defaults(_sources())
    assert not found, (
        "read these from the config (validated: the schema filled them) or the schema "
        "(ssd_math.schema.default), not a literal:\n" + "\n".join(found)
    )
    stale = sorted(k for k in NOT_CONFIG if k[0] not in _sources())  # a module renamed or split
    assert not stale, f"NOT_CONFIG names modules that no longer exist: {stale}"


def test_the_scan_finds_a_copy_put_back():
    src = _sources()
    planted = src["derive"].replace('t = sw["min_p_temperature"]', 't = sw.get("min_p_temperature", 1.0)')
    assert planted != src["derive"]
    assert any(".get('min_p_temperature', 1.0)" in f for f in shadowed_defaults({**src, "derive": planted}))
    planted = src["stats"].replace(
        "n_boot: int, seed: int, conf: float", "n_boot: int, seed: int, conf: float = 0.95", 1
    )
    planted = "def f(*, lock_noise=0.0):\n    pass\n" + planted
    assert any("f(lock_noise=0.0)" in f for f in shadowed_defaults({**src, "stats": planted}))


def test_a_spec_built_from_the_config_is_complete(default):
    """The rules' spec (an arm's recipe + the job keys) needs nothing from train's defaults."""
    cfg = validate(copy.deepcopy(default))
    for arm in derive.all_arms(cfg):
        recipe = {k: v for k, v in derive.arm_sft(cfg, arm).items() if k != "checkpoint_steps"}
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
    optim = schema.schema_node("$defs/optim")
    for key, prop in optim["properties"].items():
        if key == "checkpoint_steps":  # a spec names its checkpoints in `checkpoints`
            continue
        if key == "instrument":
            for sub, sp in prop["properties"].items():
                yield f"instrument.{sub}", sp
        else:
            yield key, prop


# keys with an enum or a range (betas and instrument.dw_bins have neither at their top level)
@pytest.mark.parametrize(
    "key,prop",
    [(k, p) for k, p in _optim_cases() if any(_inside_outside(p))],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_train_spec_accepts_exactly_what_the_schema_accepts(key, prop):
    """Each enum value and each range edge of the optim schema: the training spec (what every
    training job runs) accepts it; one step outside: both reject it, naming the key."""
    ok, bad = _inside_outside(prop)
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
    optim = schema.schema_node("$defs/optim")["properties"]
    for dt in optim["instrument"]["properties"]["store_dtype"]["enum"]:
        assert isinstance(noise.as_dtype(dt), torch.dtype)
    for sched in optim["schedule"]["enum"]:
        s = T.resolve_spec({**JOB, "schedule": sched, "warmup_steps": 0})
        assert math.isfinite(T.lr_at(5, s, 10))
    for how in optim["checkpoints_past_end"]["enum"]:
        s = T.resolve_spec(
            {**JOB, "checkpoints_past_end": how, "checkpoints": {9: "ck"}, "global_batch": 4, "micro_batch": 4}
        )
        if how == "final":
            assert T.plan_steps(s, 8)[2] == {9: "ck"}
        else:
            with pytest.raises(ValueError, match="checkpoint step 9"):
                T.plan_steps(s, 8)


def test_served_dtypes_are_save_dtypes_of_training():
    """Every dtype the config can serve the trained models in (model.hub.dtype, sampler.vllm.dtype)
    is a save_dtype ssd_math.train accepts (rules/train.smk passes derive.serve_dtype)."""
    props = schema.schema_node("properties/model/properties/hub")["properties"]
    vprops = schema.schema_node("properties/sampler/properties/vllm")["properties"]
    for hub_dt in props["dtype"]["enum"]:
        for vllm_dt in vprops["dtype"]["enum"]:
            cfg = {"sampler": {"backend": "vllm", "vllm": {"dtype": vllm_dt}}, "model": {"hub": {"dtype": hub_dt}}}
            T.resolve_spec({**JOB, "save_dtype": derive.serve_dtype(cfg)})


def test_probe_dtypes_load(default):
    """The probe's forward pass loads its model in probe.dtype (getattr(torch, dtype))."""
    for dt in schema.schema_node("properties/probe")["properties"]["dtype"]["enum"]:
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
    validate(copy.deepcopy(reh))
    for change, msg in (
        ({"layers": 6}, "model.rehearsal.layers = 6 is not a multiple"),
        ({"kv_heads": 3}, "heads must be a multiple of kv_heads"),
        ({"head_dim": 16}, "model.rehearsal.head_dim = 16"),
    ):
        c = copy.deepcopy(reh)
        c["model"]["rehearsal"].update(change)
        assert msg in config_error(c)
