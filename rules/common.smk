# Helpers shared by every stage: config validation, paths, target lists, input functions.
# Named functions only (no lambdas inside rules), so a reader can grep where a path comes from.

import json
import os
import re

from ssd_math import config as sc
from ssd_math.io import config_hash

# Validate before any job is scheduled: a bad key stops here with a message naming it (the
# --config values are passed too: Snakemake hands nested ones over as strings, said so).
sc.validate(config, cli_overrides=dict(workflow.config_settings.config))
# Provenance: every sidecar (ssd_math.io.write_meta) records this hash of the config.
os.environ["SSD_MATH_CONFIG_HASH"] = config_hash(config)

# `snakemake --report` is Snakemake's run metadata, not the study's report: say so on its page
# (the report is results/report/report.html; docs/report.md).
report: "../report/snakemake_report.rst"

R = config["results"]
ARMS = list(config["arms"])  # built by default
ALL_ARMS = sc.all_arms(config)  # default + extra arms (extra ones are built only when targeted)
MODELS = sc.final_models(config)  # base + every default arm's final model
EVAL_SETS = config["eval"]["sets"]
TGRID = [sc.fmt_t(t) for t in config["eval"]["t_grid"]]
CKPTS = sc.checkpoint_names(config)  # step<N> ... final
N_SHARDS = config["train_sampling"]["n_shards"]
SWEEPS = sc.sweep_conditions(config)
HARD_SET = "eval_hard" if "eval_hard" in EVAL_SETS else EVAL_SETS[0]
RUNTIME = config.get("runtime", {})


wildcard_constraints:
    arm="|".join(map(re.escape, ALL_ARMS)),
    model="|".join(map(re.escape, [sc.BASE, *ALL_ARMS])),
    evalset="|".join(EVAL_SETS),
    t=r"\d+(\.\d+)?",
    k=r"\d+",
    shard=r"\d+",
    ckpt=r"step\d+|final",


def log_path(*parts):
    return os.path.join(R, "logs", *parts) + ".log"


def bench_path(*parts):
    return os.path.join(R, "benchmarks", *parts) + ".tsv"


# --- models ------------------------------------------------------------------------------------

def model_dir(model):
    """Folder of a model by name: 'base', an arm (its final model), or '<arm>/<ckpt>'."""
    if model == sc.BASE:
        return f"{R}/models/base"
    if "/" in model:
        arm, ckpt = model.split("/")
        return f"{R}/models/{arm}/{ckpt}"
    return f"{R}/models/{model}/final"


def model_dir_of(wildcards):
    return model_dir(wildcards.model)


def checkpoint_dirs(arm):
    return [f"{R}/models/{arm}/{c}" for c in CKPTS]


# --- decoding conditions ---------------------------------------------------------------------

def grid_conditions():
    """{condition name: sampling params} of the T grid (one file per T)."""
    return {f"T{t}": sc.grid_decoding(config, float(t)) for t in TGRID}


def passk_targets():
    k = config["eval"]["passk"]["k"]
    return [
        f"{R}/eval/{run['model']}/{HARD_SET}/T{sc.fmt_t(run['temperature'])}-k{k}.jsonl"
        for run in config["eval"]["passk"]["runs"]
    ]


# --- target lists ------------------------------------------------------------------------------

def grid_eval_files():
    return expand(f"{R}/eval/{{model}}/{{evalset}}/T{{t}}.jsonl", model=MODELS, evalset=EVAL_SETS, t=TGRID)


def checkpoint_eval_files():
    return [f"{R}/eval/{arm}/{HARD_SET}/checkpoints/{c}.jsonl" for arm in ARMS for c in CKPTS]


def sweep_eval_files():
    return [f"{R}/eval/base/{s}/sweep/{name}.jsonl" for s in EVAL_SETS for name in SWEEPS]


def all_eval_files():
    return grid_eval_files() + passk_targets() + checkpoint_eval_files() + sweep_eval_files()


def train_logs():
    return [f"{R}/train/{arm}/log.jsonl" for arm in ARMS]


def runtime(key, default):
    """Runtime knobs (set from a profile: --config runtime='{...}'), never science."""
    return RUNTIME.get(key, default)


def accelerate_config():
    """The accelerate config of the training rules: a runtime knob (profiles set it)."""
    path = runtime("accelerate_config", "envs/accelerate/cpu.yaml")
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


def prompt_instruction(wildcards):
    """The user-turn template (a function: its '{problem}' slot must not be read as a wildcard)."""
    return config["prompt"]["instruction"]


# --- helpers of rules/model.smk ---------------------------------------------------


def pretrain_spec(wildcards, input, output):
    p = config["model"]["pretrain"]
    return json.dumps(
        {
            **p,
            "init_dir": input.init,
            "init_random": True,
            "data": input.corpus,
            "out_dir": output.model,
            "checkpoints": {},
            "log": output.log,
            "resume_dir": f"{R}/train/base/resume",
            "seed": config["seed"],
            "dtype": p.get("dtype", "float32"),
            "instrument": {"enabled": False},
        }
    )


# --- helpers of rules/sample.smk --------------------------------------------------


def arm_sampling(wildcards):
    return sc.arm_sampling(config, wildcards.arm)


def train_condition(wildcards):
    return f"train-{wildcards.arm}"


def arm_filters_length_stop(wildcards):
    return ALL_ARMS[wildcards.arm]["filter_length_stop"]


# --- helpers of rules/train.smk ---------------------------------------------------


def sft_spec(wildcards, input, output):
    sft = sc.arm_sft(config, wildcards.arm)
    steps = sft.pop("checkpoint_steps", [])
    return json.dumps(
        {
            **sft,
            "init_dir": input.base,
            "init_random": False,
            "data": input.kept,
            "out_dir": output.final,
            "checkpoints": {str(s): f"{R}/models/{wildcards.arm}/step{s}" for s in steps},
            "log": output.log,
            "resume_dir": f"{R}/train/{wildcards.arm}/resume",
            "seed": config["seed"],
            "dtype": sft.get("dtype", "float32"),
        }
    )


# --- helpers of rules/eval.smk ----------------------------------------------------


def eval_set_file(wildcards):
    return f"{R}/data/{wildcards.evalset}.jsonl"


def gen_common():
    return {
        "instruction": config["prompt"]["instruction"],
        "backend": config["sampler"]["backend"],
        "batch_size": config["sampler"].get("batch_size", 64),
        "device": runtime("device", config["sampler"].get("device", "cpu")),
        "seed": config["seed"],
        "sampler_extra": config["sampler"].get("vllm", {}),
        "trust_remote_code": config["model"].get("trust_remote_code", False),
    }


def grid_jobs(wildcards):
    """One generation per T of the grid, in the order of the rule's outputs."""
    return [
        {"model": wildcards.model, "model_dir": model_dir(wildcards.model), "condition": name, "sampling": s}
        for name, s in grid_conditions().items()
    ]


def arm_checkpoint_dirs(wildcards):
    return checkpoint_dirs(wildcards.arm)


def passk_jobs(wildcards):
    s = sc.grid_decoding(config, float(wildcards.t), n=int(wildcards.k))
    return [{"model": wildcards.model, "model_dir": model_dir(wildcards.model),
             "condition": f"T{wildcards.t}-k{wildcards.k}", "sampling": s}]


def checkpoint_jobs(wildcards):
    t = float(ALL_ARMS[wildcards.arm]["t_eval"])
    return [
        {"model": f"{wildcards.arm}/{c}", "model_dir": f"{R}/models/{wildcards.arm}/{c}",
         "condition": f"T{sc.fmt_t(t)}", "sampling": sc.grid_decoding(config, t)}
        for c in CKPTS
    ]


def sweep_jobs(wildcards):
    return [
        {"model": sc.BASE, "model_dir": model_dir(sc.BASE), "condition": name, "sampling": s}
        for name, s in SWEEPS.items()
    ]


# --- helpers of rules/tables.smk --------------------------------------------------


def stats_params():
    return dict(config["stats"])


def table1_files():
    """Graded files of Table 1's rows on every eval set."""
    rows = config["report"]["table1"]["rows"]
    return [f"{R}/eval/{r['model']}/{s}/T{sc.fmt_t(r['temperature'])}.jsonl" for r in rows for s in EVAL_SETS]


def _probe_source_arm(arm):
    """The default arm whose kept samples a probe trains on: same sampling and filter, else itself."""
    same = [a for a in ARMS if sc.arm_sampling(config, a) == sc.arm_sampling(config, arm)
            and ALL_ARMS[a]["filter_length_stop"] == ALL_ARMS[arm]["filter_length_stop"]]
    return same[0] if same else arm


def probe_logs():
    return [f"{R}/train/{a}/probe/log.jsonl" for a in NOISE_PROBES]


def noise_runs():
    """{run name: its training log}: every default arm, then every probe."""
    return {**dict(zip(ARMS, train_logs())), **dict(zip(NOISE_PROBES, probe_logs()))}


def noise_recipes():
    """The SFT recipe keys the noise summary prints beside each run."""
    return {a: {k: sc.arm_sft(config, a).get(k) for k in ("optimizer_state", "lr", "schedule")}
            for a in noise_runs()}


def timing_inputs():
    """The tables: once they exist every compute job upstream of them has written its benchmark."""
    return [rules.metrics.output.metrics, rules.table1.output.table, rules.table2.output.table,
            rules.table1_breakdown.output.table, rules.table2_breakdown.output.table,
            rules.sweep_table.output.table, rules.checkpoint_table.output.table,
            rules.noise_summary.output.table, rules.power.output.table]


# --- helpers of rules/figures.smk -------------------------------------------------


def probe_spec(wildcards, input, output):
    """The probe's training spec: its arm's SFT recipe on the source arm's kept samples, no
    checkpoints, no resume state; the model goes to a scratch folder the rule deletes."""
    sft = sc.arm_sft(config, wildcards.arm)
    sft.pop("checkpoint_steps", None)
    return json.dumps(
        {
            **sft,
            "init_dir": input.base,
            "init_random": False,
            "data": input.kept,
            "out_dir": probe_scratch(wildcards),
            "checkpoints": {},
            "log": output.log,
            "resume_dir": None,
            "seed": config["seed"],
            "dtype": sft.get("dtype", "float32"),
        }
    )


def probe_scratch(wildcards):
    return f"{R}/train/{wildcards.arm}/probe/scratch-model"


def probe_kept(wildcards):
    return expand(rules.filter_samples.output.kept, arm=_probe_source_arm(wildcards.arm))[0]


def probe_labels():
    return {a: f"{a} ({r['optimizer_state']} optimizer state, lr {r['lr']:g})" for a, r in noise_recipes().items()}


# --- helpers of rules/plan.smk ----------------------------------------------------


def planned_benchmarks(wildcards):
    """benchmark: files of every planned GPU job (they exist once those jobs have run)."""
    return [job["benchmark"] for job in PLAN_COSTS.planned_jobs(config, R)]


# --- helpers of rules/data.smk (real data) ----------------------------------------


if config["data"]["kind"] == "real":
    # Config-time check, before any job: a missing data.real.root folder or local source file
    # is a ConfigError naming its key (never a MissingInputException). Relative roots resolve
    # against this workflow's folder (ssd_math.realdata.resolve_root).
    from ssd_math import realdata as _realdata

    REAL_ROOT = str(_realdata.check_local_sources(config["data"]["real"], workflow.basedir))


def real_root():
    """Folder of the real data's local files (data.real.root, resolved and checked above)."""
    return REAL_ROOT


def real_cache_dir():
    return config["data"]["real"].get("cache_dir") or f"{R}/cache/datasets"


def real_local_files(wildcards):
    """Local source files (enabled ones) as inputs, so an edited file reruns the rule."""
    real = config["data"]["real"]
    out = []
    for part in ("train", "eval"):
        for src in real[part]["sources"]:
            if src.get("enabled", True) and src.get("path"):
                out.append(os.path.join(real_root(), src["path"]))  # absolute paths stay
    return out


# --- targets no rule can build ------------------------------------------------------------------
# A requested file naming an unknown arm/model, eval set or checkpoint, or a T off eval.t_grid,
# matches one of these rules only (their wildcards exclude every valid value), whose input
# function stops the DAG with a message listing the valid values (instead of Snakemake's bare
# "No rule to produce ..."). They never run: their input function always raises.


def _none_of(names):
    """A wildcard regex: a path component that is none of ``names``."""
    return "(?!(?:" + "|".join(map(re.escape, names)) + ")(?:/|$))[^/]+"


def unknown_model_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.unknown}/{wildcards.rest}"
    raise ValueError(sc.unbuildable_target(config, path, kind="model", value=wildcards.unknown))


def unknown_evalset_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.model}/{wildcards.unknown}/{wildcards.rest}"
    raise ValueError(sc.unbuildable_target(config, path, kind="evalset", value=wildcards.unknown))


def off_grid_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.model}/{wildcards.evalset}/T{wildcards.off}.jsonl"
    raise ValueError(sc.unbuildable_target(config, path, kind="t", value=wildcards.off))


def unknown_checkpoint_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.arm}/{wildcards.evalset}/checkpoints/{wildcards.off}.jsonl"
    raise ValueError(sc.unbuildable_target(config, path, kind="ckpt", value=wildcards.off))


rule unknown_model_target:
    output:
        f"{R}/{{stage}}/{{unknown}}/{{rest}}",
    wildcard_constraints:
        stage="eval|generations|models|samples|train",
        unknown=_none_of([sc.BASE, *ALL_ARMS, "init"]),
        rest=".+",
    input:
        unknown_model_input,
    log:
        log_path("unbuildable", "model", "{stage}", "{unknown}", "{rest}"),
    shell:
        "false"


rule unknown_evalset_target:
    output:
        f"{R}/{{stage}}/{{model}}/{{unknown}}/{{rest}}",
    wildcard_constraints:
        stage="eval|generations",
        unknown=_none_of(EVAL_SETS),
        rest=".+",
    input:
        unknown_evalset_input,
    log:
        log_path("unbuildable", "evalset", "{stage}", "{model}", "{unknown}", "{rest}"),
    shell:
        "false"


rule off_grid_target:
    output:
        f"{R}/{{stage}}/{{model}}/{{evalset}}/T{{off}}.jsonl",
    wildcard_constraints:
        stage="eval|generations",
        off="(?!(?:" + "|".join(map(re.escape, TGRID)) + r")\.jsonl$)\d+(?:\.\d+)?",
    input:
        off_grid_input,
    log:
        log_path("unbuildable", "t", "{stage}", "{model}", "{evalset}", "T{off}"),
    shell:
        "false"


rule unknown_checkpoint_target:
    output:
        f"{R}/{{stage}}/{{arm}}/{{evalset}}/checkpoints/{{off}}.jsonl",
    wildcard_constraints:
        stage="eval|generations",
        off="(?!(?:" + "|".join(map(re.escape, CKPTS)) + r")\.jsonl$)[^/]+",
    input:
        unknown_checkpoint_input,
    log:
        log_path("unbuildable", "ckpt", "{stage}", "{arm}", "{evalset}", "{off}"),
    shell:
        "false"
