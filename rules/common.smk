# Helpers shared by every stage: config validation, paths, target lists, input functions.
# Named functions only (no lambdas inside rules), so a reader can grep where a path comes from.

import json
import os
import re

from ssd_math import config as sc

# Validate before any job is scheduled: a bad key stops here with a message naming it.
sc.validate(config)
# Provenance: every sidecar (ssd_math.io.write_meta) records this hash of the config.
os.environ["SSD_MATH_CONFIG_HASH"] = __import__("ssd_math.io").io.config_hash(config)

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
    path=r"[^/]+/[^/]+/.+",


def log_path(*parts):
    return f"{R}/logs/" + "/".join(parts) + ".log"


def bench_path(*parts):
    return f"{R}/benchmarks/" + "/".join(parts) + ".tsv"


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
