"""The hub base model for rule fetch_base: the model at its pinned revision -> <results>/models/base.

``huggingface_hub.snapshot_download(repo_id, revision=<sha>, allow_patterns=..., local_dir=...)``
into a temporary folder beside the output, checked (config.json, a tokenizer, a chat template,
weights) and renamed into place, so a crashed download never looks like a model. A ``meta.json``
inside records the hub id, the requested and the resolved revision, the files with sizes and
the package versions. ``model.hub.local_dir`` copies an existing local folder instead (no
network); ``HF_HOME`` / ``HF_HUB_CACHE`` keep the usual hub cache reusable across result folders.

Model code from the hub (``*.py``) is only fetched when ``model.trust_remote_code`` is true.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from . import derive
from .derive import BASE_PROVENANCE
from .io import (
    atomic_path,
    file_sha256,
    machine_info,
    package_versions,
    read_jsonl,
    stable_hash,
    write_json,
    write_meta,
)
from .provenance import git_state

DEFAULT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]


class FetchError(RuntimeError):
    """The model could not be fetched or is incomplete; the message says how to supply it."""


def _snapshot_download(**kwargs):
    """Indirection so tests can simulate the hub."""
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def check_model_dir(folder: Path, hub_id: str) -> list[str]:
    """What a model folder lacks for the pipeline (config, tokenizer, chat template, weights)."""
    files = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not ({"tokenizer.json", "tokenizer_config.json"} & files):
        missing.append("tokenizer (tokenizer.json / tokenizer_config.json)")
    if not any(f.endswith(".safetensors") for f in files):
        missing.append("weights (*.safetensors)")
    has_template = "chat_template.jinja" in files or "chat_template.json" in files
    if not has_template and "tokenizer_config.json" in files:
        has_template = "chat_template" in (folder / "tokenizer_config.json").read_text("utf-8")
    if not has_template:
        missing.append("a chat template (thinking-mode prompts are rendered through it)")
    return missing


def fetch_base(hub: dict, out_dir: str | os.PathLike, *, trust_remote_code: bool = False) -> dict:
    """Download (or copy) the base model into ``out_dir``; return what ``meta.json`` records."""
    hub_id, revision = hub["id"], hub["revision"]
    out_dir = Path(out_dir)
    patterns = list(hub.get("allow_patterns") or DEFAULT_PATTERNS)
    if trust_remote_code:
        patterns.append("*.py")
    how = (
        "set config key model.hub.local_dir to a local copy of the model folder "
        "(config.json, tokenizer, chat template, *.safetensors), or pre-fill the hub cache "
        "(HF_HOME) on a machine with network and rerun with HF_HUB_OFFLINE=1"
    )
    with atomic_path(out_dir, is_dir=True) as tmp:
        if hub.get("local_dir"):
            src = Path(hub["local_dir"])
            if not src.is_dir():
                raise FetchError(f"model {hub_id}: model.hub.local_dir = {src} is not a folder")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            resolved, origin = None, f"local copy of {src}"
        else:
            try:
                path = _snapshot_download(
                    repo_id=hub_id, revision=revision, allow_patterns=patterns, local_dir=str(tmp)
                )
            except Exception as exc:  # no network, unknown repo/revision, gated, disk full
                raise FetchError(
                    f"model {hub_id}@{revision} could not be fetched from the "
                    f"Hugging Face hub ({type(exc).__name__}: {exc}); {how}"
                ) from exc
            resolved, origin = _resolved_revision(Path(path)), "huggingface hub"
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # snapshot_download's local metadata
        missing = check_model_dir(tmp, hub_id)
        if missing:
            raise FetchError(
                f"model {hub_id}@{revision}: the fetched folder lacks "
                f"{', '.join(missing)} (allow_patterns {patterns}); {how}"
            )
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        shipped = check_shipped_weights(tmp, hub_id)
        info = {
            "rule": "fetch_base",
            "hub_id": hub_id,
            "revision": revision,
            "resolved_revision": resolved,
            "origin": origin,
            "allow_patterns": patterns,
            "trust_remote_code": trust_remote_code,
            "dtype": hub.get("dtype"),
            "files": files,
            "base_provenance": shipped,
        }
        write_meta(tmp, **info)
    return info


def weights_sha256(folder: Path) -> dict[str, str]:
    """sha256 (hex) of every ``*.safetensors`` file of a model folder."""
    return {p.name: file_sha256(p, n=64) for p in sorted(Path(folder).glob("*.safetensors"))}


def check_shipped_weights(folder: Path, hub_id: str) -> dict | None:
    """A folder with a ``provenance.json`` (a base shipped by rule ship_base) must hold the very
    weights it records (sha256); returns the provenance (None for a folder without one)."""
    import json

    p = Path(folder) / BASE_PROVENANCE
    if not p.exists():
        return None
    prov = json.loads(p.read_text("utf-8"))
    have, want = weights_sha256(folder), prov.get("weights_sha256") or {}
    if have != want:
        raise FetchError(
            f"model {hub_id}: the weights' sha256 {have} differ from those its "
            f"{BASE_PROVENANCE} records {want} (a changed or corrupted file; "
            "rebuild the base with rule ship_base)"
        )
    return prov


def ship_base(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    cfg: dict,
    train_log: str | os.PathLike | None = None,
    workdir: str | os.PathLike = ".",
) -> dict:
    """Rule ship_base: copy the tiny base pretrained by rule pretrain_base (weights, tokenizer,
    config, chat template) into ``out_dir`` (model.ship_dir, the repository's models/tiny-base)
    with a ``provenance.json``: the git commit, the base's recipe (model.tiny, model.pretrain, the
    prompt) and the data recipe (seed, data.synthetic) with their hashes, the machine that
    pretrained it, the pretraining's last logged step, and the sha256 of the weights."""
    import json

    src = Path(model_dir)
    keep = [p for p in sorted(src.iterdir()) if p.is_file() and p.name != "meta.json" and not p.name.startswith(".")]
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for p in keep:
            shutil.copy2(p, tmp / p.name)
        missing = check_model_dir(tmp, "tiny base")
        if missing:
            raise FetchError(f"{src} lacks {', '.join(missing)}: not a pretrained base folder")
        log = read_jsonl(train_log) if train_log and Path(train_log).exists() else []
        try:  # the pretraining job's own sidecar: the machine and threads that made these weights
            trained = json.loads((src / "meta.json").read_text("utf-8"))
        except (OSError, ValueError):
            trained = {}
        prov = {
            "rule": "ship_base",
            "rebuild": derive.REBUILD_BASE,
            "git": git_state(workdir),
            "config_recipe": derive.base_recipe(cfg),
            "config_recipe_hash": stable_hash(derive.base_recipe(cfg)),
            "data_recipe": derive.data_recipe(cfg),
            "data_recipe_hash": derive.data_recipe_hash(cfg),
            "dtype": "float32",
            "machine": trained.get("machine") or machine_info(),
            "packages": trained.get("packages") or package_versions(),
            "pretrain_spec_hash": trained.get("spec_hash"),
            "pretrain_last_step": {k: log[-1].get(k) for k in ("step", "loss", "ppl", "lr")} if log else None,
            "weights_sha256": weights_sha256(tmp),
            "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        write_json(tmp / derive.BASE_PROVENANCE, prov)
    return prov


def _resolved_revision(folder: Path) -> str | None:
    """The commit snapshot_download resolved (recorded by huggingface_hub in .cache), if any."""
    for meta in folder.glob(".cache/huggingface/download/*.metadata"):
        first = meta.read_text("utf-8", errors="replace").splitlines()[:1]
        if first and len(first[0]) == 40:
            return first[0]
    return None


# ----------------------------------------------------------------------------------------------
# what vLLM's loader expects of a Qwen3.5 checkpoint (no vLLM needed)
# ----------------------------------------------------------------------------------------------

#: vLLM 0.32's ``hf_to_vllm_mapper.orig_to_new_prefix`` of the two Qwen3.5 architectures
#: (vllm/model_executor/models/qwen3_5.py; the VLM's inherits qwen3_vl.py's), applied in order:
#: a prefix is replaced (``None``: the weight is skipped).
VLLM_PREFIX_MAP = {
    "Qwen3_5ForConditionalGeneration": {
        "model.visual.": "visual.",
        "lm_head.": "language_model.lm_head.",
        "model.language_model.": "language_model.model.",
        "mtp.": None,
    },
    "Qwen3_5ForCausalLM": {"model.language_model.": "model.", "mtp.": None},
}
#: Parameter names (before vLLM stacks q/k/v, gate/up, in_proj_qkv/z and in_proj_b/a into its
#: fused modules: orig_to_new_stacked of Qwen3_5Model / Qwen3NextModel) of vLLM's Qwen3_5Model.
_VLLM_TEXT_PARAM = re.compile(
    r"^model\.(?:embed_tokens\.weight|norm\.weight"
    r"|layers\.(?P<layer>\d+)\.(?:"
    r"(?:input_layernorm|post_attention_layernorm)\.weight"
    r"|mlp\.(?:gate_proj|up_proj|down_proj)\.weight"
    r"|(?P<full>self_attn)\.(?:q_proj|k_proj|v_proj|o_proj|q_norm|k_norm)\.weight"
    r"|(?P<linear>linear_attn)\.(?:in_proj_qkv\.weight|in_proj_z\.weight|in_proj_b\.weight"
    r"|in_proj_a\.weight|conv1d\.weight|dt_bias|A_log|norm\.weight|out_proj\.weight)))$"
    r"|^lm_head\.weight$"
)


_COMMON = {
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
}
#: the weights every decoder layer of each type has (vLLM's Qwen3_5DecoderLayer)
LAYER_WEIGHTS = {
    "full_attention": _COMMON
    | {f"self_attn.{n}.weight" for n in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")},
    "linear_attention": _COMMON
    | {
        f"linear_attn.{n}"
        for n in (
            "in_proj_qkv.weight",
            "in_proj_z.weight",
            "in_proj_b.weight",
            "in_proj_a.weight",
            "conv1d.weight",
            "dt_bias",
            "A_log",
            "norm.weight",
            "out_proj.weight",
        )
    },
}


def vllm_map_name(name: str, architecture: str) -> str | None:
    """``name`` as vLLM 0.32's loader for ``architecture`` sees it (None: skipped)."""
    for prefix, new in VLLM_PREFIX_MAP[architecture].items():
        if name.startswith(prefix):
            if new is None:
                return None
            name = new + name[len(prefix) :]
    return name


def vllm_weight_problems(model_dir: str | os.PathLike) -> list[str]:
    """Why vLLM 0.32's Qwen3.5 loader would not load ``model_dir``'s weights (empty: it would):
    the architecture (config.json) is one vLLM registers, every weight name maps onto a parameter
    of vLLM's module tree (language model under ``language_model.`` for the VLM, the vision tower
    under ``visual.``), self-attention weights sit on full_attention layers and Gated DeltaNet
    weights on linear_attention layers, and every layer has its attention weights."""
    import json

    from safetensors import safe_open

    folder = Path(model_dir)
    cfg = json.loads((folder / "config.json").read_text("utf-8"))
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in VLLM_PREFIX_MAP:
        return [f"architecture {arch!r} is not one of vLLM's Qwen3.5 classes {sorted(VLLM_PREFIX_MAP)}"]
    text = cfg.get("text_config") or cfg
    types = list(text["layer_types"])
    names: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            names += list(fh.keys())
    problems, seen = [], {i: set() for i in range(len(types))}
    lm = "language_model." if arch == "Qwen3_5ForConditionalGeneration" else ""
    for name in names:
        mapped = vllm_map_name(name, arch)
        if mapped is None:
            continue
        if lm and mapped.startswith("visual."):
            continue  # the vision tower (skipped under language_model_only)
        if lm and not mapped.startswith(lm):
            problems.append(f"{name} -> {mapped}: not under vLLM's {lm!r}")
            continue
        m = _VLLM_TEXT_PARAM.match(mapped[len(lm) :])
        if not m:
            problems.append(f"{name} -> {mapped}: no such parameter in vLLM's Qwen3_5Model")
            continue
        if m.group("layer") is not None:
            i = int(m.group("layer"))
            kind = "full_attention" if m.group("full") else "linear_attention" if m.group("linear") else None
            if i >= len(types):
                problems.append(f"{name}: layer {i} beyond num_hidden_layers {len(types)}")
            elif kind and types[i] != kind:
                problems.append(f"{name}: {kind} weights on a {types[i]} layer")
            else:
                seen[i].add(mapped[len(lm) :].split(f"layers.{i}.", 1)[1])
    for i, t in enumerate(types):
        lacking = sorted(LAYER_WEIGHTS[t] - seen.get(i, set()))
        if lacking:
            problems.append(f"layer {i} ({t}) lacks {', '.join(lacking)}")
    if not any(vllm_map_name(n, arch) and vllm_map_name(n, arch).endswith("embed_tokens.weight") for n in names):
        problems.append("no embed_tokens weight")
    return problems
