"""Derived settings: what the rules and the libraries read from a validated config beyond its
keys -- the model names (:data:`BASE`, the arms), each arm's merged SFT recipe and training
decoding, the eval conditions' decodings, the data and base recipes a shipped base is matched by,
the optimizer steps an arm is sure to reach, the GPUs of the accelerate config and the predicted
training peak on them, the resolved ``probe:`` section, and the message for a requested file that
names a value the config does not define. Functions of the config (and the accelerate file it
names); the checks that refuse a config live in :mod:`ssd_math.config_checks`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path

import yaml

from . import memory_model
from .io import stable_hash
from .sampler import SamplingConfig
from .schema import SCHEMA_PATH, _root, schema_defaults, schema_node
from .schema import fill as _fill

REPO_ROOT = SCHEMA_PATH.parents[1]  # the workflow folder: relative model folders resolve here too
BASE = "base"
#: the provenance file of a shipped tiny base (rule ship_base writes it; fetch_base copies it)
BASE_PROVENANCE = "provenance.json"
#: how to rebuild the shipped tiny base (README, config/tiny-base.yaml)
REBUILD_BASE = "snakemake --cores 2 ship_base --configfile config.yaml config/tiny-base.yaml"


# ----------------------------------------------------------------------------------------------
# derived names used by the rules
# ----------------------------------------------------------------------------------------------


def fmt_t(t: float) -> str:
    """Temperature as it appears in file names: 0.7 -> '0.7', 1.0 -> '1.0'."""
    return f"{float(t):g}" if float(t) != int(t) else f"{float(t):.1f}"


def all_arms(cfg: dict) -> dict:
    """Default arms and extra (built-on-request) arms together."""
    return {**cfg["arms"], **(cfg.get("extra_arms") or {})}


def arm_sft(cfg: dict, arm: str) -> dict:
    """The SFT recipe of an arm: the global sft section with the arm's overrides, every key the
    schema gives a default filled in (an override of ``instrument`` replaces the whole section)."""
    out = copy.deepcopy(cfg["sft"])
    out.update(copy.deepcopy(all_arms(cfg)[arm].get("sft") or {}))
    return _fill(schema_node("$defs/optim"), out, _root())


def arm_sampling(cfg: dict, arm: str) -> SamplingConfig:
    """The decoding of an arm's training data (condition ``train-<arm>``): its T_train, top-k,
    top-p, cap and samples per prompt."""
    a, ts = all_arms(cfg)[arm], cfg["train_sampling"]
    return SamplingConfig.from_config(
        a,
        max_new_tokens=a.get("max_new_tokens", ts["max_new_tokens"]),
        n=a.get("samples_per_prompt", ts["samples_per_prompt"]),
    )


def final_models(cfg: dict) -> list[str]:
    return [BASE, *cfg["arms"]]


def serve_dtype(cfg: dict) -> str | None:
    """The dtype trained models are served in, hence saved in (``ssd_math.train``'s
    ``save_dtype``): vLLM's ``sampler.vllm.dtype`` (``auto``: the hub model's ``model.hub.dtype``);
    None for the transformers sampler, which loads fp32 (the tiny default: folders stay fp32)."""
    sam = cfg["sampler"]
    if sam.get("backend") != "vllm":
        return None
    dt = sam["vllm"]["dtype"]
    if dt == "auto":
        dt = ((cfg.get("model") or {}).get("hub") or {}).get("dtype")
    return None if dt in (None, "float32") else str(dt)


def checkpoint_names(cfg: dict) -> list[str]:
    return [f"step{s}" for s in cfg["sft"]["checkpoint_steps"]] + ["final"]


def eval_sampling(cfg: dict, temperature: float, *, n: int | None = None) -> SamplingConfig:
    """The decoding of an eval condition at ``temperature`` (``eval.decoding``, the eval cap):
    the T grid and the checkpoints (``T<t>``: ``eval.samples_per_prompt`` samples), a pass@k run
    (``T<t>-k<k>``: ``n`` = k)."""
    ev = cfg["eval"]
    return SamplingConfig.from_config(
        ev["decoding"],
        temperature=temperature,
        max_new_tokens=ev["max_new_tokens"],
        n=n if n is not None else ev["samples_per_prompt"],
    )


def sweep_samplings(cfg: dict) -> dict[str, SamplingConfig]:
    """Baseline sweep conditions of the base model by name: presets and the min-p grid."""
    ev = cfg["eval"]
    sw = ev.get("sweeps") or {}
    out = {
        f"preset-{name}": SamplingConfig.from_config(p, max_new_tokens=ev["max_new_tokens"], n=ev["samples_per_prompt"])
        for name, p in (sw.get("presets") or {}).items()
    }
    for mp in sw.get("min_p_grid") or []:
        t = sw["min_p_temperature"]
        out[f"minp{mp:g}-T{fmt_t(t)}"] = dataclasses.replace(eval_sampling(cfg, t), min_p=float(mp))
    return out


def condition_sampling(cfg: dict, condition: str) -> SamplingConfig:
    """The decoding a condition name stands for. The name is a generation file's name and part of
    every seed, so one name is one decoding: ``train-<arm>`` (:func:`arm_sampling`), a sweep name
    (:func:`sweep_samplings`), ``T<t>`` and ``T<t>-k<k>`` (:func:`eval_sampling`, n = k)."""
    if condition.startswith("train-") and condition[len("train-") :] in all_arms(cfg):
        return arm_sampling(cfg, condition[len("train-") :])
    sweeps = sweep_samplings(cfg)
    if condition in sweeps:
        return sweeps[condition]
    m = re.fullmatch(r"T(\d+(?:\.\d+)?)(?:-k(\d+))?", condition)
    if m:
        return eval_sampling(cfg, float(m[1]), n=int(m[2]) if m[2] else None)
    raise ValueError(
        f"unknown decoding condition {condition!r}: not train-<arm> "
        f"({', '.join(all_arms(cfg))}), a sweep ({', '.join(sweeps) or 'none'}), "
        "T<t> or T<t>-k<k>"
    )


def sampling_params(cfg: dict, generations: list[dict]) -> list[dict]:
    """Generations ``[{model, model_dir, condition}]`` (:meth:`ssd_math.layout.Layout.generations`,
    :meth:`~ssd_math.layout.Layout.train_generation`) as a generation rule's ``jobs`` param: each
    with its ``sampling`` (:func:`condition_sampling`) as a plain dict, since Snakemake reruns a
    job when a param's repr changes and records no object param (the rule script's
    :func:`ssd_math.generate.generate_jobs` builds the :class:`SamplingConfig` back)."""
    return [{**g, "sampling": condition_sampling(cfg, g["condition"]).to_dict()} for g in generations]


# ----------------------------------------------------------------------------------------------
# targets no rule can build (rules/common.smk's catch-all rules call these)
# ----------------------------------------------------------------------------------------------


def unbuildable_target(cfg: dict, path: str, *, kind: str, value: str) -> str:
    """The message for a requested file that names a value the config does not define: which
    value, and which values exist. ``kind``: ``model`` (an arm or model name), ``evalset``,
    ``t`` (a T_eval off the grid) or ``ckpt`` (a checkpoint not in sft.checkpoint_steps)."""
    arms = all_arms(cfg)
    if kind == "model":
        valid = [BASE, *arms]
        what = (
            f"{value!r} is not a model: 'base', the arms ({', '.join(cfg['arms'])}) or the "
            f"extra arms ({', '.join(cfg.get('extra_arms') or {}) or 'none'})"
        )
    elif kind == "evalset":
        valid = list(cfg["eval"]["sets"])
        what = f"{value!r} is not an eval set of eval.sets ({', '.join(valid)})"
    elif kind == "t":
        valid = [f"T{fmt_t(t)}" for t in cfg["eval"]["t_grid"]]
        what = (
            f"T{value} is not on eval.t_grid ({', '.join(valid)}); a grid file exists for each "
            "T of eval.t_grid (add the temperature there to evaluate it, or ask for a pass@k "
            f"run T{value}-k<k>.jsonl)"
        )
    elif kind == "ckpt":
        valid = checkpoint_names(cfg)
        what = f"{value!r} is not a checkpoint of sft.checkpoint_steps ({', '.join(valid)})"
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return f"no rule can build {path}: {what}"


# ----------------------------------------------------------------------------------------------
# the data and base recipes, the training bounds, the accelerate config
# ----------------------------------------------------------------------------------------------


def data_recipe(cfg: dict) -> dict:
    """What the synthetic data (pretraining corpus, training prompts, eval sets) are a function
    of: the seed and data.synthetic (rule make_synthetic_data's params)."""
    return {"seed": cfg["seed"], "synthetic": cfg["data"].get("synthetic")}


def data_recipe_hash(cfg: dict) -> str:
    return stable_hash(data_recipe(cfg))


def base_recipe(cfg: dict) -> dict:
    """The tiny base's own recipe: the model's dimensions, its pretraining and the prompt its
    corpus and tokenizer were rendered with."""
    return {
        "tiny": cfg["model"].get("tiny"),
        "pretrain": cfg["model"].get("pretrain"),
        "instruction": cfg["prompt"]["instruction"],
    }


def resolve_local_dir(local_dir: str, workflow_dir: str | Path | None = None) -> Path:
    """``model.hub.local_dir``: as given when it exists from the working directory (or is
    absolute), else taken against the workflow folder, so ``snakemake --directory elsewhere``
    still reads the clone's models/tiny-base."""
    p = Path(local_dir).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return Path(workflow_dir or REPO_ROOT) / p


def train_pool_size(cfg: dict) -> tuple[int | None, str]:
    """(most training prompts an arm can see, the config key that bounds it); ``None`` when the
    pool is every row of the configured files (data.real.train.budget: null)."""
    if cfg["data"]["kind"] == "synthetic" and cfg["data"].get("synthetic"):
        return int(cfg["data"]["synthetic"]["n_train_prompts"]), "data.synthetic.n_train_prompts"
    real = cfg["data"].get("real") or {}
    budget = (real.get("train") or {}).get("budget")
    if budget is not None:
        return int(budget), "data.real.train.budget"
    return None, "data.real.train.budget"


def max_sft_steps(cfg: dict, arm: str) -> tuple[int | None, str]:
    """The optimizer steps an arm is sure to reach, known at config time, and how it was computed.

    The same arithmetic as :func:`ssd_math.train.train` (``rows // global_batch × epochs``, capped
    by ``max_steps``) with the fewest rows the config allows the arm: prompts × samples per prompt
    × ``train_sampling.min_kept_fraction`` when it filters length stops, so that a
    checkpoint step is refused now, naming the arm, not after all its sampling. ``None`` when the
    pool size is not in the config."""
    n_prompts, key = train_pool_size(cfg)
    if n_prompts is None:
        return None, f"{key} is null (every row of the files): no bound at config time"
    n = arm_sampling(cfg, arm).n
    sft = arm_sft(cfg, arm)
    kept, kept_how = 1.0, "at most 1.0"
    if all_arms(cfg)[arm].get("filter_length_stop"):
        kept = float(cfg["train_sampling"]["min_kept_fraction"])
        kept_how = f"{kept} (train_sampling.min_kept_fraction, the worst case allowed)"
    steps = int(n_prompts * n * kept) // sft["global_batch"] * sft["epochs"]
    how = (
        f"({n_prompts} prompts ({key}) x {n} sample(s) per prompt x a kept fraction of "
        f"{kept_how}) // global_batch {sft['global_batch']} x {sft['epochs']} epoch(s)"
    )
    if sft["max_steps"] is not None and sft["max_steps"] < steps:
        steps, how = int(sft["max_steps"]), f"max_steps {sft['max_steps']}"
    return steps, how


def read_accelerate_config(path: str | os.PathLike) -> dict:
    """An accelerate config file (a relative path that is not here resolves against the repo)."""
    p = Path(path)
    if not p.exists() and not p.is_absolute():
        p = REPO_ROOT / p
    with open(p, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def accelerate_gpus(path: str | os.PathLike) -> int:
    """GPUs an accelerate config uses: 0 with ``use_cpu``, else processes x machines."""
    acc = read_accelerate_config(path)
    if acc.get("use_cpu"):
        return 0
    return int(acc.get("num_processes", 1)) * int(acc.get("num_machines", 1))


def training_memory(cfg: dict, arm: str, *, processes: int | None = None, tokens: int | None = None) -> dict | None:
    """The predicted peak of one training process of ``arm`` on the config's GPUs
    (:func:`ssd_math.memory_model.sft_memory` with flash-linear-attention's kernels and the measured gap), with
    ``capacity`` (runtime.gpu_memory_gb) and ``headroom`` = capacity - peak; None where there is
    nothing to predict: training on the CPU, or a model whose shape is not in :data:`ssd_math.memory_model.KNOWN_SHAPES`."""
    known = (
        memory_model.KNOWN_SHAPES.get((cfg["model"].get("hub") or {}).get("id"))
        if cfg["model"]["kind"] == "hub"
        else None
    )
    gpus = accelerate_gpus(cfg["runtime"]["accelerate_config"])
    if known is None or gpus == 0:
        return None
    shape, sizes, layers = known
    sft = arm_sft(cfg, arm)
    acc = read_accelerate_config(cfg["runtime"]["accelerate_config"])
    mixed = str(acc.get("mixed_precision", "no")) == "bf16"
    n = gpus if processes is None else processes
    T = int(sft["max_len"] if tokens is None else tokens)
    m = memory_model.sft_memory(
        shape,
        T,
        processes=n,
        micro_batch=int(sft["micro_batch"]),
        chunk_tokens=int(sft["loss_chunk_tokens"] or 0),
        mixed_precision=mixed,
        sizes=sizes,
        layer=layers[bool(sft["checkpoint_sublayers"])],
        kernels="fla",
        instrumented=bool(sft["instrument"]["enabled"]),
    )
    capacity = float(cfg["runtime"]["gpu_memory_gb"]) * 1e9
    return {**m, "capacity": capacity, "headroom": capacity - m["peak"], "processes": n, "tokens": T}


# ----------------------------------------------------------------------------------------------
# the probe: section (ssd_math.probe_positions / probe_forward / probe_analysis read it through probe_settings)
# ----------------------------------------------------------------------------------------------


def _merge(base: dict, over: dict | None) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merge(base[k], v) if isinstance(base.get(k), dict) and isinstance(v, dict) else v
    return out


def probe_settings(cfg: dict) -> dict:
    """The resolved ``probe:`` section, in the schema's key order: its defaults overlaid with the
    config's keys, and the keys without a default filled from the rest of the config (eval_set:
    the first of eval.sets; arms: every default arm; compare_arm: report.table1.ssd_arm, else the
    first probed arm), plus ``labeled`` (labelled positions are probed: synthetic data only)."""
    keys = schema_node("properties/probe")["properties"]
    s = _merge({k: None for k in keys} | schema_defaults("properties/probe"), cfg.get("probe"))
    s["eval_set"] = s["eval_set"] or cfg["eval"]["sets"][0]
    s["arms"] = list(s["arms"] if s["arms"] is not None else cfg["arms"])
    s["compare_arm"] = s["compare_arm"] or cfg["report"].get("table1", {}).get("ssd_arm") or s["arms"][0]
    s["labeled"] = bool(s["positions"]["labeled"]) and cfg["data"]["kind"] == "synthetic"
    return s
