"""Config: schema validation with messages that name the key, semantic checks, and the derived
names (models, eval conditions) the Snakemake rules expand over.

The schema (schemas/config.schema.yaml) describes every key; :func:`validate` runs it before any
job starts, then :func:`check_semantics` catches what a schema cannot say (checkpoint steps vs
batch sizes, pass@k runs naming unknown arms, the hard set larger than the main set, ...).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
BASE = "base"


class ConfigError(ValueError):
    """The config is invalid; the message names the key and what is allowed."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    return validate(cfg)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        key = f"{where}." if error.absolute_path else ""
        return f"unknown config key {', '.join(key + e for e in extra)}{hint}"
    if v == "required":
        return f"{where}: {error.message}"
    if v in ("exclusiveMinimum", "minimum", "maximum", "exclusiveMaximum", "enum", "type",
             "pattern", "minItems", "maxItems", "uniqueItems", "minLength", "minProperties"):
        desc = error.schema.get("description")
        allowed = {
            "exclusiveMinimum": lambda s: f"must be > {s['exclusiveMinimum']}",
            "minimum": lambda s: f"must be >= {s['minimum']}",
            "maximum": lambda s: f"must be <= {s['maximum']}",
            "exclusiveMaximum": lambda s: f"must be < {s['exclusiveMaximum']}",
            "enum": lambda s: "must be one of " + ", ".join(map(repr, s["enum"])),
            "type": lambda s: f"must be of type {s['type']}",
        }.get(v, lambda s: error.message)(error.schema)
        more = f" ({desc})" if desc else ""
        return f"config key {where} = {error.instance!r}: {allowed}{more}"
    return f"config key {where}: {error.message}"


def validate(cfg: dict, schema: dict | None = None) -> dict:
    """Validate against the JSON schema and the semantic rules; return the config unchanged.

    Raises :class:`ConfigError` listing every problem, each naming its key."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        msgs = [_describe(e) for e in errors]
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(dict.fromkeys(msgs)))
    problems = check_semantics(cfg)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    return cfg


def check_semantics(cfg: dict) -> list[str]:
    """What the schema cannot express; each message names the key."""
    out: list[str] = []
    arms = all_arms(cfg)
    for name in set(cfg["arms"]) & set(cfg.get("extra_arms") or {}):
        out.append(f"extra_arms.{name}: also defined in arms; arm names must be unique")
    if BASE in arms:
        out.append(f"arms.{BASE}: '{BASE}' is reserved for the base model; rename the arm")
    for name in arms:
        if name in ("final", "init", "tokenizer") or name.startswith("step"):
            out.append(f"arms.{name}: arm names may not be 'final', 'init', 'tokenizer' or start with 'step'")
    for section in ("sft",) + (("model.pretrain",) if cfg["model"]["kind"] == "tiny" else ()):
        opt = _get(cfg, section)
        if opt is None:
            if section == "model.pretrain":
                out.append("model.pretrain: required when model.kind is 'tiny'")
            continue
        if opt["global_batch"] % opt["micro_batch"]:
            out.append(f"{section}.global_batch = {opt['global_batch']} is not a multiple of "
                       f"{section}.micro_batch = {opt['micro_batch']}")
        if opt["min_lr"] > opt["lr"]:
            out.append(f"{section}.min_lr = {opt['min_lr']} is above {section}.lr = {opt['lr']}")
    steps = cfg["sft"].get("checkpoint_steps", [])
    if steps != sorted(steps):
        out.append(f"sft.checkpoint_steps = {steps}: must be increasing")
    for i, probe in enumerate(cfg.get("noise_probes") or []):
        if probe not in (cfg.get("extra_arms") or {}):
            out.append(f"noise_probes[{i}] = {probe!r}: not an extra arm (extra_arms: "
                       f"{', '.join(cfg.get('extra_arms') or {}) or 'none'})")
    known = {BASE, *arms}
    for i, run in enumerate(cfg["eval"]["passk"]["runs"]):
        if run["model"] not in known:
            out.append(f"eval.passk.runs[{i}].model = {run['model']!r}: not 'base' or an arm "
                       f"({', '.join(sorted(arms))})")
    for i, row in enumerate(cfg["report"].get("table1", {}).get("rows", [])):
        if row["model"] not in known:
            out.append(f"report.table1.rows[{i}].model = {row['model']!r}: not 'base' or an arm")
    grid = {fmt_t(t) for t in cfg["eval"]["t_grid"]}
    for i, row in enumerate(cfg["report"].get("table1", {}).get("rows", [])):
        if fmt_t(row["temperature"]) not in grid:
            out.append(f"report.table1.rows[{i}].temperature = {row['temperature']}: not on "
                       f"eval.t_grid ({', '.join(sorted(grid, key=float))}); Table 1 reads the "
                       "grid's eval files")
    t1 = cfg["report"].get("table1", {})
    if t1.get("ssd_arm") and t1["ssd_arm"] not in arms:
        out.append(f"report.table1.ssd_arm = {t1['ssd_arm']!r}: not an arm ({', '.join(arms)})")
    if cfg["data"]["kind"] == "synthetic":
        syn = cfg["data"].get("synthetic")
        if syn is None:
            out.append("data.synthetic: required when data.kind is 'synthetic'")
        elif not set(syn["hard_levels"]) <= set(syn["levels"]):
            out.append(f"data.synthetic.hard_levels = {syn['hard_levels']} must be a subset of "
                       f"data.synthetic.levels = {syn['levels']}")
        if syn is not None and cfg["train_sampling"]["n_shards"] > syn["n_train_prompts"]:
            out.append(f"train_sampling.n_shards = {cfg['train_sampling']['n_shards']} is larger "
                       f"than data.synthetic.n_train_prompts = {syn['n_train_prompts']} (a shard "
                       "would have no prompts); allowed: 1 .. n_train_prompts")
    if cfg["data"]["kind"] == "real" and "real" not in cfg["data"]:
        out.append("data.real: required when data.kind is 'real'")
    out += _check_real(cfg)
    if cfg["model"]["kind"] == "tiny" and "tiny" not in cfg["model"]:
        out.append("model.tiny: required when model.kind is 'tiny'")
    if cfg["model"]["kind"] == "hub":
        hub = cfg["model"].get("hub") or {}
        for k in ("id", "revision"):
            if not hub.get(k):
                out.append(f"model.hub.{k}: required when model.kind is 'hub'")
    if cfg["data"]["kind"] == "synthetic" and cfg["model"]["kind"] != "tiny":
        out.append("data.kind 'synthetic' needs model.kind 'tiny' (the task's tokenizer is built here)")
    if cfg["eval"]["max_new_tokens"] < cfg["train_sampling"]["max_new_tokens"]:
        out.append(f"eval.max_new_tokens = {cfg['eval']['max_new_tokens']} is below "
                   f"train_sampling.max_new_tokens = {cfg['train_sampling']['max_new_tokens']}")
    for name, arm in arms.items():
        where = "arms" if name in cfg["arms"] else "extra_arms"
        for k in (arm.get("sft") or {}):
            if k == "checkpoint_steps":
                out.append(f"{where}.{name}.sft.checkpoint_steps: checkpoint steps are global "
                           "(sft.checkpoint_steps) so the DAG stays static")
            elif k not in cfg["sft"] and k not in ("max_steps", "grad_clip", "gradient_checkpointing", "dtype",
                                                       "loss_chunk_tokens", "checkpoints_past_end"):
                out.append(f"{where}.{name}.sft.{k}: unknown sft key (allowed: {', '.join(cfg['sft'])})")
        sft = arm_sft(cfg, name)
        if sft["global_batch"] % sft["micro_batch"]:
            out.append(f"{where}.{name}.sft: global_batch {sft['global_batch']} is not a multiple of "
                       f"micro_batch {sft['micro_batch']}")
        cap = arm.get("max_new_tokens", cfg["train_sampling"]["max_new_tokens"])
        if cap > cfg["eval"]["max_new_tokens"]:
            out.append(f"{where}.{name}.max_new_tokens = {cap} is above eval.max_new_tokens")
    return out


PLACEHOLDER_MARKS = ("PIN-ME", "PLACEHOLDER", "TODO", "CHANGEME")
UNPINNED_REVISIONS = ("main", "master", "head", "latest")


def is_placeholder_revision(rev: Any) -> bool:
    """A revision that pins nothing: empty, a marked placeholder, or a branch name."""
    if not isinstance(rev, str) or not rev.strip():
        return True
    r = rev.strip()
    return any(m in r.upper() for m in PLACEHOLDER_MARKS) or r.lower() in UNPINNED_REVISIONS


def _check_real(cfg: dict) -> list[str]:
    """Checks of the real-recipe sections (data.real, model.hub, sampler.vllm, planner)."""
    out: list[str] = []
    real = cfg["data"].get("real") if cfg["data"]["kind"] == "real" else None
    if cfg["data"]["kind"] == "real" and cfg["model"]["kind"] != "hub":
        out.append("data.kind 'real' needs model.kind 'hub' (the tiny model's tokenizer is "
                   "built from the synthetic task)")
    if real:
        names: dict[str, str] = {}
        for part in ("train", "eval"):
            for i, src in enumerate(real[part]["sources"]):
                key = f"data.real.{part}.sources[{i}]"
                name = src["name"]
                if name in names:
                    out.append(f"{key}.name = {name!r}: also used by {names[name]}; source names "
                               "must be unique (they name the download cache folders)")
                names.setdefault(name, key)
                if src.get("enabled", True) is False:
                    continue
                if not src.get("path") and not src.get("hub_id"):
                    out.append(f"{key} ({name}): needs 'path' (a local file) or 'hub_id' + "
                               "'revision' + 'split' (a Hugging Face dataset)")
                if src.get("hub_id") and not src.get("path"):
                    if is_placeholder_revision(src.get("revision")):
                        out.append(
                            f"{key}.revision = {src.get('revision')!r}: dataset '{name}' "
                            f"({src['hub_id']}) is not pinned; set it to the dataset's commit "
                            f"sha, or set {key}.path to a local .jsonl/.parquet copy, or "
                            f"{key}.enabled to false")
                    if not src.get("split") and not src.get("files"):
                        out.append(f"{key}.split: required for hub dataset '{name}' "
                                   "(or list its data files in .files)")
        budget = real["train"].get("budget")
        if budget is not None and cfg["train_sampling"]["n_shards"] > budget:
            out.append(f"train_sampling.n_shards = {cfg['train_sampling']['n_shards']} is larger "
                       f"than data.real.train.budget = {budget} (a shard would have no prompts)")
        ev = real["eval"]
        if ev["hard_size"] > ev["main_size"]:
            out.append(f"data.real.eval.hard_size = {ev['hard_size']} is larger than "
                       f"data.real.eval.main_size = {ev['main_size']} (it is a subset)")
        if not any(s.get("enabled", True) for s in real["train"]["sources"]):
            out.append("data.real.train.sources: every source is disabled")
        if not any(s.get("enabled", True) for s in ev["sources"]):
            out.append("data.real.eval.sources: every source is disabled")
        dc = real.get("decontam") or {}
        if dc.get("threshold_same_answer", 0.3) > dc.get("threshold", 0.5):
            out.append("data.real.decontam.threshold_same_answer is above data.real.decontam."
                       "threshold (the same-answer threshold is the lower one)")
    if cfg["model"].get("rehearsal") is not None:
        hub = cfg["model"].get("hub") or {}
        if cfg["model"]["kind"] != "hub" or cfg["data"]["kind"] != "real" or not hub.get("local_dir"):
            out.append("model.rehearsal: needs model.kind 'hub', data.kind 'real' and "
                       "model.hub.local_dir (the folder rule build_rehearsal_model writes)")
    if cfg["model"]["kind"] == "hub":
        hub = cfg["model"].get("hub") or {}
        if hub.get("revision") and not hub.get("local_dir") and is_placeholder_revision(hub["revision"]):
            out.append(f"model.hub.revision = {hub['revision']!r}: not a pinned commit of "
                       f"{hub.get('id')}; set the commit sha (or model.hub.local_dir)")
    vl = cfg["sampler"].get("vllm") or {}
    if cfg["sampler"]["backend"] == "vllm" and vl.get("max_model_len"):
        if vl["max_model_len"] <= cfg["eval"]["max_new_tokens"]:
            out.append(f"sampler.vllm.max_model_len = {vl['max_model_len']} leaves no room for "
                       f"the prompt above eval.max_new_tokens = {cfg['eval']['max_new_tokens']}")
    return out


def _get(cfg: dict, dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


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
    """The SFT recipe of an arm: the global sft section with the arm's overrides."""
    out = copy.deepcopy(cfg["sft"])
    out.update(all_arms(cfg)[arm].get("sft") or {})
    return out


def arm_sampling(cfg: dict, arm: str) -> dict:
    """Sampling parameters of an arm's training data."""
    a = all_arms(cfg)[arm]
    return {
        "temperature": float(a["temperature"]),
        "top_k": int(a["top_k"]),
        "top_p": float(a["top_p"]),
        "min_p": float(a.get("min_p", 0.0)),
        "presence_penalty": 0.0,
        "max_new_tokens": int(a.get("max_new_tokens", cfg["train_sampling"]["max_new_tokens"])),
        "n": int(a.get("samples_per_prompt", cfg["train_sampling"].get("samples_per_prompt", 1))),
    }


def final_models(cfg: dict) -> list[str]:
    return [BASE, *cfg["arms"]]


def checkpoint_names(cfg: dict) -> list[str]:
    return [f"step{s}" for s in cfg["sft"].get("checkpoint_steps", [])] + ["final"]


def grid_decoding(cfg: dict, temperature: float, *, n: int | None = None) -> dict:
    """Sampling parameters of an eval condition on the T grid."""
    dec = cfg["eval"]["decoding"]
    return {
        "temperature": float(temperature),
        "top_k": int(dec["top_k"]),
        "top_p": float(dec["top_p"]),
        "min_p": float(dec.get("min_p", 0.0)),
        "presence_penalty": float(dec.get("presence_penalty", 0.0)),
        "max_new_tokens": int(cfg["eval"]["max_new_tokens"]),
        "n": int(n if n is not None else cfg["eval"]["samples_per_prompt"]),
    }


def sweep_conditions(cfg: dict) -> dict[str, dict]:
    """Baseline sweep conditions of the base model: presets and the min-p grid."""
    sw = cfg["eval"].get("sweeps") or {}
    out: dict[str, dict] = {}
    for name, p in (sw.get("presets") or {}).items():
        out[f"preset-{name}"] = {
            "temperature": float(p["temperature"]), "top_k": int(p["top_k"]),
            "top_p": float(p["top_p"]), "min_p": float(p.get("min_p", 0.0)),
            "presence_penalty": float(p.get("presence_penalty", 0.0)),
            "max_new_tokens": int(cfg["eval"]["max_new_tokens"]),
            "n": int(cfg["eval"]["samples_per_prompt"]),
        }
    t = sw.get("min_p_temperature", 1.0)
    for mp in sw.get("min_p_grid") or []:
        d = grid_decoding(cfg, t)
        d["min_p"] = float(mp)
        out[f"minp{mp:g}-T{fmt_t(t)}"] = d
    return out
