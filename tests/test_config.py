"""Config validation: every bad key is named, with what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from ssd_math import config_checks, derive
from ssd_math.config import ConfigError, fill_defaults, load_config, main, validate
from ssd_math.schema import load_schema

ROOT = Path(__file__).resolve().parents[1]


from conftest import config_error as _err  # noqa: E402


def test_default_config_is_valid(default):
    assert validate(copy.deepcopy(default)) is not None


def test_every_schema_property_has_a_description():
    schema = load_schema()
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


def test_noise_probes_is_not_a_key(default):
    """The log-only noise runs are `noise_runs`; a config written with the former name
    `noise_probes` fails naming it and listing the key to use, instead of silently training none."""
    cfg = copy.deepcopy(default)
    cfg["noise_probes"] = cfg.pop("noise_runs")
    msg = _err(cfg)
    assert "unknown config key noise_probes" in msg and "noise_runs" in msg


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
    assert derive.fmt_t(1.0) == "1.0" and derive.fmt_t(0.7) == "0.7" and derive.fmt_t(1.25) == "1.25"
    assert derive.final_models(default)[0] == "base"
    assert derive.checkpoint_names(default)[-1] == "final"
    d = derive.eval_sampling(default, 0.6)
    assert d.temperature == 0.6 and d.top_k == 20 and d.max_new_tokens == default["eval"]["max_new_tokens"]


# ------------------------------------------------------------------------------------------
# per-arm sft overrides: the merged recipe, the same schema and messages as the top-level sft
# ------------------------------------------------------------------------------------------


def _arm_cfg(default, section, arm, sft):
    cfg = copy.deepcopy(default)
    cfg[section][arm]["sft"] = sft
    return cfg


@pytest.mark.parametrize(
    "section,arm", [("arms", "ssd"), ("extra_arms", "lr-high"), ("extra_arms", "bf16-state")]
)  # bf16-state: a noise run
def test_arm_sft_yaml_string_float_names_arm_key_and_fix(default, section, arm):
    # what PyYAML makes of `sft: {lr: 1e-4}`: the string '1e-4'
    cfg = copy.deepcopy(default)
    cfg[section][arm]["sft"] = yaml.safe_load("{lr: 1e-4}")
    assert cfg[section][arm]["sft"]["lr"] == "1e-4"
    msg = _err(cfg)
    assert f"config key {section}.{arm}.sft.lr = '1e-4': must be of type number" in msg
    assert "YAML reads 1e-4 as a string" in msg and "1.0e-4" in msg


def test_top_level_sft_yaml_string_float_same_message(default):
    cfg = copy.deepcopy(default)
    cfg["sft"]["lr"] = "1e-4"
    msg = _err(cfg)
    assert "config key sft.lr = '1e-4': must be of type number" in msg and "1.0e-4" in msg
    # reported once, under sft, not again under every arm that inherits it
    assert "arms.ssd.sft.lr" not in msg and msg.count("'1e-4'") == 1


def test_arm_sft_bad_enum_and_range_use_the_sft_schema(default):
    cfg = _arm_cfg(default, "arms", "naive", {"schedule": "linear", "warmup_steps": -1})
    msg = _err(cfg)
    assert "config key arms.naive.sft.schedule = 'linear': must be one of 'cosine', 'constant'" in msg
    assert "config key arms.naive.sft.warmup_steps = -1: must be >= 0" in msg
    cfg = _arm_cfg(default, "extra_arms", "const-lr", {"checkpoints_past_end": "maybe"})
    assert "config key extra_arms.const-lr.sft.checkpoints_past_end = 'maybe': must be one of" in _err(cfg)


def test_checkpoint_sublayers_defaults_off_and_needs_gradient_checkpointing(default):
    """sft.checkpoint_sublayers nests checkpoints in the checkpointed layers: off unless set (the
    tiny default trains as before), on in the real recipe, refused at config time without
    gradient_checkpointing (not after the sampling, when training starts)."""
    assert validate(copy.deepcopy(default))["sft"]["checkpoint_sublayers"] is False
    assert load_config(ROOT / "config" / "real.yaml")["sft"]["checkpoint_sublayers"] is True
    cfg = copy.deepcopy(default)
    cfg["sft"].update(checkpoint_sublayers=True, gradient_checkpointing=False)
    assert (
        "config key sft.gradient_checkpointing = False: must be True (checkpoint_sublayers needs "
        "gradient_checkpointing: true" in _err(cfg)
    )


def test_arm_sft_override_semantics(default):
    cfg = _arm_cfg(default, "extra_arms", "lr-high", {"lr": 1.0e-6})  # below sft.min_lr 1e-5
    assert "extra_arms.lr-high.sft: min_lr 1e-05 is above lr 1e-06" in _err(cfg)


# ------------------------------------------------------------------------------------------
# checkpoint steps that training cannot reach, at config time
# ------------------------------------------------------------------------------------------


def test_unreachable_checkpoint_step_names_key_arm_and_bound(default):
    cfg = fill_defaults(copy.deepcopy(default))  # what the rules see
    # 600 prompts x 1 sample // 32 = 18 optimizer steps at most
    assert derive.max_sft_steps(cfg, "ssd")[0] == 18
    cfg["sft"]["checkpoint_steps"] = [4, 18, 19]
    msg = _err(cfg)
    assert "sft.checkpoint_steps = [4, 18, 19]: step 19 cannot be reached by arms.ssd" in msg
    assert "at most 18 optimizer steps" in msg and "data.synthetic.n_train_prompts" in msg
    assert "arms.ssd.sft.checkpoints_past_end: final" in msg
    cfg["sft"]["checkpoint_steps"] = [4, 18]
    assert validate(cfg)


def test_checkpoint_bound_follows_arm_batch_samples_and_max_steps(default):
    cfg = fill_defaults(copy.deepcopy(default))  # what the rules see
    cfg["extra_arms"]["data3x"]["sft"] = {"global_batch": 64}  # 1800 samples // 64 = 28
    assert derive.max_sft_steps(cfg, "data3x")[0] == 28
    cfg["arms"]["ssd"]["sft"] = {"global_batch": 64}  # 600 // 64 = 9 < checkpoint step 12
    msg = _err(cfg)
    assert "step 12 cannot be reached by arms.ssd, which trains at most 9 optimizer steps" in msg
    assert "arms.naive" not in msg
    cfg["arms"]["ssd"]["sft"]["checkpoints_past_end"] = "final"  # the opt-in train.py honours
    assert validate(cfg)
    cfg = fill_defaults(copy.deepcopy(default))
    cfg["sft"]["max_steps"] = 10
    assert derive.max_sft_steps(cfg, "ssd") == (10, "max_steps 10")
    assert "at most 10 optimizer steps (max_steps 10)" in _err(cfg)


def test_checkpoint_bound_of_the_real_recipe_uses_the_pool_budget():
    cfg = load_config(ROOT / "config" / "real.yaml")
    budget = cfg["data"]["real"]["train"]["budget"]
    bound, how = derive.max_sft_steps(cfg, "ssd")
    kept = cfg["train_sampling"]["min_kept_fraction"]  # the arms filter length stops
    assert bound == int(budget * kept) // cfg["sft"]["global_batch"] and "data.real.train.budget" in how
    cfg["data"]["real"]["train"]["budget"] = 1000  # 1000 x 0.5 // 32 = 15 < the step-21 checkpoint
    msg = _err(cfg)
    assert "step 21 cannot be reached by arms.ssd, arms.t13" in msg
    assert "which train at most 15 optimizer steps" in msg
    assert "extra_arms.batch64" not in msg  # opted in (checkpoints_past_end: final)
    cfg["data"]["real"]["train"]["budget"] = None  # every row of the files: no bound now
    assert derive.max_sft_steps(cfg, "ssd")[0] is None


# ------------------------------------------------------------------------------------------
# --config values and YAML files
# ------------------------------------------------------------------------------------------


def test_nested_cli_config_value_explains_snakemake_strings(default):
    cfg = copy.deepcopy(default)
    cli = {"stats": {"conf": "0.9"}}  # what `--config 'stats={conf: 0.9}'` hands over
    cfg["stats"] = {**cfg["stats"], **cli["stats"]}
    with pytest.raises(ConfigError) as ei:
        validate(cfg, cli_overrides=cli)
    msg = str(ei.value)
    assert "config key stats.conf = '0.9': must be of type number" in msg
    assert "came from --config" in msg and "nested --config values as strings" in msg
    assert "--configfile" in msg and "--config seed=7" in msg
    # without the --config origin it is a quoted number in a file
    assert "remove the quotes" in _err(cfg)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "broken.yaml"
    text = (ROOT / "config.yaml").read_text().replace("  conf: 0.95", "  conf: [0.95", 1)
    bad.write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "conf: [0.95" in x)
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    msg = str(ei.value)
    assert msg.startswith(f"{bad}: line ") and "YAML syntax error" in msg
    got = int(msg.split("line ")[1].split(",")[0])
    assert line <= got <= line + 2  # PyYAML marks where it noticed: the flow sequence's end


def test_yaml_tab_indentation_names_line(tmp_path):
    bad = tmp_path / "tabs.yaml"
    bad.write_text("experiment: x\nstats:\n\tconf: 0.9\n")
    with pytest.raises(ConfigError, match=r"tabs\.yaml: line 3, column 1: YAML syntax error"):
        load_config(bad)


def test_config_not_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("experiment: x\nreport:\n  title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: line 3: not valid UTF-8 \(byte 0xe9\)"):
        load_config(bad)


def tiny_default(default) -> dict:
    """The default with the tiny base pretrained in the DAG: config/tiny-base.yaml over config.yaml
    (the rebuild command's configs)."""
    cfg = copy.deepcopy(default)
    cfg["model"].update(yaml.safe_load((ROOT / "config" / "tiny-base.yaml").read_text())["model"])
    return cfg


def test_tiny_base_rebuild_config_is_valid(default):
    cfg = validate(tiny_default(default))
    assert cfg["model"]["kind"] == "tiny" and cfg["model"]["ship_dir"] == "models/tiny-base"


def test_tiny_context_leaves_room_for_prompts(default):
    cfg = tiny_default(default)
    cap = cfg["eval"]["max_new_tokens"]
    cfg["model"]["tiny"]["max_pos"] = cap
    assert f"eval.max_new_tokens = {cap} leaves no room for the prompt in model.tiny.max_pos = {cap}" in _err(cfg)


# ------------------------------------------------------------------------------------------
# targets no rule can build
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,value,expect",
    [
        ("t", "0.8", "T0.8 is not on eval.t_grid (T0.6, T0.7, T1.0, T1.1, T1.3, T1.5)"),
        (
            "model",
            "nope",
            "'nope' is not a model: 'base', the arms (ssd, naive, filter-only) or the extra arms (t13, topk5, nofilter,",
        ),
        ("evalset", "eval_x", "'eval_x' is not an eval set of eval.sets (eval_main, eval_hard)"),
        ("ckpt", "step5", "'step5' is not a checkpoint of sft.checkpoint_steps (step4, step8, step12, final)"),
    ],
)
def test_unbuildable_target_lists_the_valid_values(default, kind, value, expect):
    msg = derive.unbuildable_target(default, "results/x", kind=kind, value=value)
    assert msg.startswith("no rule can build results/x: ") and expect in msg


def test_command_line_check_names_file_and_line(tmp_path, capsys):
    """What a user runs when Snakemake says only "Config file is not valid JSON or YAML"."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nstats: {conf: 0.9\nseed: 1\n")
    assert main([str(bad), str(ROOT / "config.yaml")]) == 1
    out = capsys.readouterr()
    assert f"{bad}: line 3, column 5: YAML syntax error" in out.err
    assert "config.yaml: ok" in out.out
    assert main([str(ROOT / "config.yaml")]) == 0


# ------------------------------------------------------------------------------------------
# the shipped tiny base: the default's data recipe must be the one it was pretrained on
# ------------------------------------------------------------------------------------------


def shipped(default, tmp_path, **change) -> dict:
    """The default reading a base folder in tmp_path whose provenance.json records the data recipe
    hash of the default with ``change`` applied to data.synthetic."""
    import json

    cfg = copy.deepcopy(default)
    pre = fill_defaults(copy.deepcopy(default))
    pre["data"]["synthetic"].update(change)
    (tmp_path / "base").mkdir(exist_ok=True)
    (tmp_path / "base" / derive.BASE_PROVENANCE).write_text(
        json.dumps({"data_recipe_hash": derive.data_recipe_hash(pre)})
    )
    cfg["model"]["hub"]["local_dir"] = str(tmp_path / "base")
    return cfg


def test_the_shipped_base_matches_the_default_data_recipe(default):
    """The repository's models/tiny-base was pretrained on config.yaml's synthetic data."""
    import json

    prov = json.loads((ROOT / "models" / "tiny-base" / derive.BASE_PROVENANCE).read_text())
    cfg = validate(copy.deepcopy(default))
    assert prov["data_recipe_hash"] == derive.data_recipe_hash(cfg)
    assert prov["data_recipe"] == json.loads(json.dumps(derive.data_recipe(cfg)))


def test_a_base_pretrained_on_other_data_is_refused(default, tmp_path):
    validate(shipped(default, tmp_path))  # the same recipe: accepted
    cfg = shipped(default, tmp_path, n_eval_main=200)
    msg = _err(cfg)
    have = derive.data_recipe_hash(fill_defaults(copy.deepcopy(default)))
    other = fill_defaults(copy.deepcopy(default))
    other["data"]["synthetic"]["n_eval_main"] = 200
    want = derive.data_recipe_hash(other)
    assert have != want
    assert (
        f"seed / data.synthetic: this config's data recipe hash is {have}, but the base in "
        f"{tmp_path / 'base'} was pretrained on data recipe {want} "
        f"({tmp_path / 'base' / 'provenance.json'})"
    ) in msg
    assert derive.REBUILD_BASE in msg
    cfg = shipped(default, tmp_path)
    cfg["seed"] = 7  # the seed makes other data too
    assert "data recipe hash is" in _err(cfg)


def test_a_base_without_provenance_is_refused_for_synthetic_data(default, tmp_path):
    cfg = copy.deepcopy(default)
    cfg["model"]["hub"]["local_dir"] = str(tmp_path)
    assert f"model.hub.local_dir = {tmp_path}: {tmp_path / 'provenance.json'} does not exist" in _err(cfg)
    cfg["model"]["hub"]["local_dir"] = None
    assert "data.kind 'synthetic' needs model.kind 'tiny'" in _err(cfg)


def test_a_relative_base_folder_resolves_against_the_workflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert derive.resolve_local_dir("models/tiny-base") == ROOT / "models" / "tiny-base"
    (tmp_path / "models" / "tiny-base").mkdir(parents=True)
    assert derive.resolve_local_dir("models/tiny-base") == Path("models/tiny-base")


def test_checkpoint_steps_checked_at_the_worst_kept_fraction(default):
    """train_sampling.min_kept_fraction: an arm that filters length stops is checked at the fewest
    rows the config allows it (a hot arm with many length stops), named at config time; an arm
    without the filter keeps every sample."""
    cfg = copy.deepcopy(default)
    cfg["train_sampling"]["min_kept_fraction"] = 0.5  # 600 x 0.5 // 32 = 9 < checkpoint step 12
    msg = _err(cfg)
    assert "step 12 cannot be reached by arms.ssd" in msg and "min_kept_fraction" in msg
    assert derive.max_sft_steps(cfg, "ssd")[0] == 9
    if "naive" in derive.all_arms(cfg) and not derive.all_arms(cfg)["naive"]["filter_length_stop"]:
        assert derive.max_sft_steps(cfg, "naive")[0] == 18
    cfg["train_sampling"]["min_kept_fraction"] = 0.7  # 420 // 32 = 13 >= 12
    assert validate(cfg)


def test_real_recipe_checkpoints_reachable_at_its_worst_kept_fraction():
    """config/real.yaml: every arm reaches every checkpoint step at its min_kept_fraction."""
    cfg = load_config(ROOT / "config" / "real.yaml")
    kept = cfg["train_sampling"]["min_kept_fraction"]
    assert kept <= 0.5
    for arm in derive.all_arms(cfg):
        bound, _ = derive.max_sft_steps(cfg, arm)
        if derive.arm_sft(cfg, arm).get("checkpoints_past_end") != "final":
            assert max(cfg["sft"]["checkpoint_steps"]) <= bound, arm


def test_accelerate_gpu_ids_would_override_the_schedulers_gpus(tmp_path):
    """gpu_ids in the accelerate config makes `accelerate launch` overwrite CUDA_VISIBLE_DEVICES
    (SLURM's choice): refused at config time; the shipped GPU configs name none."""
    cfg = load_config(ROOT / "config" / "real.yaml")
    assert not [m for m in config_checks.check_semantics(cfg) if "gpu_ids" in m]
    for name in ("gpu1.yaml", "fsdp.yaml"):
        assert "gpu_ids" not in yaml.safe_load((ROOT / "envs" / "accelerate" / name).read_text())
    acc = yaml.safe_load((ROOT / "envs" / "accelerate" / "gpu1.yaml").read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**acc, "gpu_ids": "0"}))
    cfg["runtime"]["accelerate_config"] = str(tmp_path / "a.yaml")
    msg = [m for m in config_checks.check_semantics(cfg) if "gpu_ids" in m]
    assert msg and "CUDA_VISIBLE_DEVICES" in msg[0] and "a.yaml" in msg[0]
