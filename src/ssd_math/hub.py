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
import shutil
from pathlib import Path

from .io import atomic_path, write_meta

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
    how = ("set config key model.hub.local_dir to a local copy of the model folder "
           "(config.json, tokenizer, chat template, *.safetensors), or pre-fill the hub cache "
           "(HF_HOME) on a machine with network and rerun with HF_HUB_OFFLINE=1")
    with atomic_path(out_dir, is_dir=True) as tmp:
        if hub.get("local_dir"):
            src = Path(hub["local_dir"])
            if not src.is_dir():
                raise FetchError(f"model {hub_id}: model.hub.local_dir = {src} is not a folder")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            resolved, origin = None, f"local copy of {src}"
        else:
            try:
                path = _snapshot_download(repo_id=hub_id, revision=revision,
                                          allow_patterns=patterns, local_dir=str(tmp))
            except Exception as exc:  # no network, unknown repo/revision, gated, disk full
                raise FetchError(f"model {hub_id}@{revision} could not be fetched from the "
                                 f"Hugging Face hub ({type(exc).__name__}: {exc}); {how}") from exc
            resolved, origin = _resolved_revision(Path(path)), "huggingface hub"
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # snapshot_download's local metadata
        missing = check_model_dir(tmp, hub_id)
        if missing:
            raise FetchError(f"model {hub_id}@{revision}: the fetched folder lacks "
                             f"{', '.join(missing)} (allow_patterns {patterns}); {how}")
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        info = {"rule": "fetch_base", "hub_id": hub_id, "revision": revision,
                "resolved_revision": resolved, "origin": origin, "allow_patterns": patterns,
                "trust_remote_code": trust_remote_code, "dtype": hub.get("dtype"),
                "files": files}
        write_meta(tmp, **info)
    return info


def _resolved_revision(folder: Path) -> str | None:
    """The commit snapshot_download resolved (recorded by huggingface_hub in .cache), if any."""
    for meta in folder.glob(".cache/huggingface/download/*.metadata"):
        first = meta.read_text("utf-8", errors="replace").splitlines()[:1]
        if first and len(first[0]) == 40:
            return first[0]
    return None
