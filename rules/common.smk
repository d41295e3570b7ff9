# Read first by every stage: config validation (which fills in the schema's defaults), the results
# layout (ssd_math.layout: every path, target list and job list), the constants derived from the
# config, the resources of the heavy jobs, wildcard constraints, and the functions more than one
# stage uses. A stage's own helpers sit at the top of its rules/<stage>.smk.
# Named functions only (no lambdas inside rules), so a reader can grep where a path comes from.

import copy
import json
import os
import re

from ssd_math.config import validate
from ssd_math.config_checks import missing_backend
from ssd_math.derive import (
    BASE,
    BASE_PROVENANCE,
    all_arms,
    arm_sft,
    fmt_t,
    probe_settings,
    resolve_local_dir,
    sampling_params,
    serve_dtype,
    unbuildable_target,
)
from ssd_math import layout
from ssd_math import launcher
from ssd_math.io import config_hash
from snakemake.exceptions import WorkflowError

# Validate before any job is scheduled: a bad key stops here with a message naming it (the
# --config values are passed too: Snakemake hands nested ones over as strings, said so). Then
# every key the schema gives a `default:` is set, so the rules read config[...] directly.
_CONFIG_AS_GIVEN = copy.deepcopy(config)
validate(config, cli_overrides=dict(workflow.config_settings.config))
# Provenance: every sidecar (ssd_math.io.write_meta) records this hash of the config as given.
os.environ["SSD_MATH_CONFIG_HASH"] = config_hash(_CONFIG_AS_GIVEN)


# every job (a cluster job too) gets the hash in its environment: the sidecars record it
envvars:
    "SSD_MATH_CONFIG_HASH",


onstart:
    # A backend this environment lacks stops the run here, before the first job (a dry run,
    # which runs no handler, still plans it).
    if missing_backend(config):
        raise WorkflowError(missing_backend(config))


# `snakemake --report` is Snakemake's run metadata, not the study's report: say so on its page
# (the report is results/report/report.html; docs/report.md).
report: "../report/snakemake_report.rst"


L = layout.Layout(config)  # every artifact path: L.model_dir(...), L.table(...), L.bench(...)
R = L.results
ARMS = L.arms  # built by default
ALL_ARMS = L.all_arms  # default + extra arms (extra ones are built only when targeted)
MODELS = L.models  # base + every default arm's final model
EVAL_SETS = L.eval_sets
TGRID = L.tgrid
CKPTS = L.ckpts  # step<N> ... final
N_SHARDS = L.n_shards
SWEEPS = L.sweeps
HARD_SET = L.hard_set
NOISE_RUNS = L.noise_runs  # extra arms trained for their log only (rule noise_run)
RUNTIME = config["runtime"]  # runtime knobs (a profile sets them: --config runtime='{...}'), never science
DEVICE = layout.device(config)  # torch device of hf sampling / eval / probe jobs

# --- resources of the heavy jobs ---------------------------------------------------------------
# GPUs follow the config (never a number typed twice; ssd_math.launcher.gpu_counts):
#   generation (sample_train_shard, generate_*, probe_forward): vLLM -> sampler.vllm.tensor_parallel_size;
#       transformers -> 1 on a cuda device (runtime.device / sampler.device), else 0;
#   training (sft, noise_run): num_processes of the accelerate config (runtime.accelerate_config),
#       0 when it says use_cpu (the tiny default: every job stays a CPU job).
# Memory and wall time per kind of job; a cluster profile overrides them per rule
# (the site file of profiles/slurm, `set-resources`), together with partitions and accounts.
# Generation jobs own their cores: they ask for GEN_THREADS and Snakemake caps that at --cores;
# the sampler sets torch's threads to exactly the job's `threads`. A profile overrides it per rule
# (`set-threads:`): the auto-loaded profiles/default gives each generation job 1 thread, so its
# --cores 2 runs two of them side by side (why: the comment there); without that profile,
# --cores 2 runs one at a time on 2 threads.
_GPUS = launcher.gpu_counts(config)
GEN_THREADS = 16
GEN_GPUS = _GPUS["generate"]
GEN_MEM_MB = 64000 if GEN_GPUS else 4000  # host RAM: engine, CUDA graphs, tokenizer, rows
GEN_RUNTIME = 12 * 60 if GEN_GPUS else 60  # minutes; `snakemake plan` gives each job's expected hours
# A GPU job runs on one node: SLURM may spread `--gpus=4` over several nodes, where FSDP's four
# processes (started by `accelerate launch` on the first) and the jobstep's `srun --nodes=1` fail.
# The SLURM plugin (2.6.1, submit_string.py) adds --nodes only for a `nodes` resource.
ONE_NODE = dict(nodes=1)
GEN_RESOURCES = dict(mem_mb=GEN_MEM_MB, runtime=GEN_RUNTIME, gpu=GEN_GPUS, **(ONE_NODE if GEN_GPUS else {}))
TRAIN_GPUS = _GPUS["train"]
TRAIN_MEM_MB = 128000 if TRAIN_GPUS else 4000  # host RAM: fp32 load of a 4B model, full-state saves
TRAIN_RUNTIME = 24 * 60 if TRAIN_GPUS else 60
TRAIN_RESOURCES = dict(mem_mb=TRAIN_MEM_MB, runtime=TRAIN_RUNTIME, gpu=TRAIN_GPUS, **(ONE_NODE if TRAIN_GPUS else {}))


wildcard_constraints:
    arm="|".join(map(re.escape, ALL_ARMS)),
    model="|".join(map(re.escape, [BASE, *ALL_ARMS])),
    evalset="|".join(EVAL_SETS),
    t=r"\d+(\.\d+)?",
    k=r"\d+",
    shard=r"\d+",
    ckpt=r"step\d+|final",


log_path = L.log  # <results>/logs/<parts>.log
bench_path = L.bench  # <results>/benchmarks/<parts>.tsv


def accelerate_config():
    """The accelerate config of the training rules (runtime.accelerate_config; relative paths
    resolve against this workflow's folder)."""
    path = RUNTIME["accelerate_config"]
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


# How a training job starts ssd_math.train: `accelerate launch` where it does something, the
# training process itself for a one-process CPU config (launcher.train_launcher says why).
TRAIN_LAUNCHER = launcher.train_launcher(accelerate_config())


def prompt_instruction(wildcards):
    """The user-turn template (a function: its '{problem}' slot must not be read as a wildcard)."""
    return config["prompt"]["instruction"]


# What every generation job (sample_train_shard, generate_*) shares: prompt, backend, batch size,
# device, seed, engine settings (ssd_math.generate.generate_jobs's `common`).
GEN_COMMON = {
    "instruction": config["prompt"]["instruction"],
    "backend": config["sampler"]["backend"],
    "batch_size": config["sampler"]["batch_size"],
    "device": DEVICE,
    "seed": config["seed"],
    "sampler_extra": config["sampler"]["vllm"],
    "trust_remote_code": config["model"]["trust_remote_code"],
}


def results_dir(wildcards, output):
    """The results folder, from the rule's own first output (a table, the plan, the report)."""
    return L.results_of(output[0])


def get_model_dir(wildcards):
    """The folder of the model the job's {model} wildcard names."""
    return L.model_dir(wildcards.model)


def stats_params():
    """The interval settings every table uses (config stats)."""
    return dict(config["stats"])


def training_spec(recipe, *, init_dir, init_random, data, out_dir, checkpoints, log, resume_dir, **extra):
    """The JSON spec of one `ssd_math.train` job (docs/contracts.md "Training
    spec"): a recipe (sft or model.pretrain section, checkpoint_steps dropped; complete: config
    validation filled in the schema's defaults) and where it reads and writes."""
    recipe = {k: v for k, v in recipe.items() if k != "checkpoint_steps"}
    return json.dumps(
        {
            **recipe,
            "init_dir": init_dir,
            "init_random": init_random,
            "data": data,
            "out_dir": out_dir,
            "checkpoints": checkpoints,
            "log": log,
            "resume_dir": resume_dir,
            "seed": config["seed"],
            **extra,
        }
    )


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
    raise ValueError(unbuildable_target(config, path, kind="model", value=wildcards.unknown))


def unknown_evalset_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.model}/{wildcards.unknown}/{wildcards.rest}"
    raise ValueError(unbuildable_target(config, path, kind="evalset", value=wildcards.unknown))


def off_grid_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.model}/{wildcards.evalset}/T{wildcards.off}.jsonl"
    raise ValueError(unbuildable_target(config, path, kind="t", value=wildcards.off))


def unknown_checkpoint_input(wildcards):
    path = f"{R}/{wildcards.stage}/{wildcards.arm}/{wildcards.evalset}/checkpoints/{wildcards.off}.jsonl"
    raise ValueError(unbuildable_target(config, path, kind="ckpt", value=wildcards.off))


rule unknown_model_target:
    output:
        f"{R}/{{stage}}/{{unknown}}/{{rest}}",
    wildcard_constraints:
        stage="eval|generations|models|samples|train",
        unknown=_none_of([BASE, *ALL_ARMS, "init"]),
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
