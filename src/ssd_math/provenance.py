"""What produced a result: the git state of the checkout, the config hash(es), the machines and
package versions recorded in the inputs' sidecars (``<file>.meta.json``, ``meta.json``), and where
the base model came from. Read by rule ``findings`` (the report's provenance panel) and by
:mod:`ssd_math.hub` (the git state rule ``ship_base`` writes into a shipped base's
``provenance.json``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["provenance", "git_state"]


def git_state(workdir: str | Path) -> dict:
    """``{"commit", "dirty", "error"}`` of the checkout holding ``workdir`` (``git rev-parse``
    and ``git status --porcelain``); outside a git checkout commit/dirty are None and ``error``
    says why."""
    try:
        top = subprocess.run(
            ["git", "-C", str(workdir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"commit": None, "dirty": None, "error": f"git not runnable: {exc}"}
    if top.returncode != 0:
        return {"commit": None, "dirty": None, "error": (top.stderr.strip().splitlines() or ["not a git checkout"])[-1]}
    st = subprocess.run(
        ["git", "-C", str(workdir), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return {
        "commit": top.stdout.strip(),
        "dirty": bool(st.stdout.strip()) if st.returncode == 0 else None,
        "error": None,
    }


def _sidecar(path: Path) -> dict | None:
    p = path / "meta.json" if path.is_dir() else path.with_name(path.name + ".meta.json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def base_model_provenance(model_dir: str | Path | None) -> dict | None:
    """Where the base came from, for the provenance panel: fetch_base's meta.json (hub id,
    origin) and, for a base shipped by rule ship_base, its provenance.json (weights' sha256, the
    recipes' hashes, the commit and CPU that pretrained it). None without a base folder."""
    if model_dir is None or not Path(model_dir).is_dir():
        return None
    meta = _sidecar(Path(model_dir)) or {}
    try:
        shipped = json.loads((Path(model_dir) / "provenance.json").read_text("utf-8"))
    except (OSError, ValueError):
        shipped = meta.get("base_provenance") or {}
    return {
        "hub_id": meta.get("hub_id"),
        "origin": meta.get("origin"),
        "rule": meta.get("rule"),
        "weights_sha256": shipped.get("weights_sha256"),
        "data_recipe_hash": shipped.get("data_recipe_hash"),
        "config_recipe_hash": shipped.get("config_recipe_hash"),
        "pretrained_at_commit": (shipped.get("git") or {}).get("commit"),
        "pretrained_on": (shipped.get("machine") or {}).get("cpu_model"),
    }


def provenance(
    inputs: Sequence[str | Path], *, experiment: str, workdir: str | Path, config_hash: str | None = None
) -> dict:
    """What produced the report: the git state of ``workdir``, the config hash(es), the
    machines (CPU model, cores, torch build, GPUs) and package versions recorded in the
    sidecars (``<file>.meta.json``) of ``inputs``. Distinct values are listed, so a run whose
    jobs ran on several machines says so."""
    metas = [m for m in (_sidecar(Path(p)) for p in inputs) if m]
    hashes = sorted({m.get("config_hash") for m in metas if m.get("config_hash")} | ({config_hash} - {None}))
    machines: dict[str, dict] = {}
    for m in metas:
        mc = m.get("machine") or {}
        if not mc.get("cpu_model") and not mc.get("gpus"):
            continue  # a sidecar without a machine block (written before it existed)
        torch = mc.get("torch") or {}
        key = json.dumps([mc.get("cpu_model"), mc.get("logical_cores"), mc.get("gpus")], default=str)
        cur = machines.setdefault(
            key,
            {
                "cpu_model": mc.get("cpu_model"),
                "arch": mc.get("arch"),
                "logical_cores": mc.get("logical_cores"),
                "usable_cores": mc.get("usable_cores"),
                "gpus": mc.get("gpus"),
                "torch": None,
                "n_sidecars": 0,
            },
        )
        cur["n_sidecars"] += 1
        if torch and not cur["torch"]:
            cur["torch"] = {k: torch.get(k) for k in ("version", "blas", "cpu_capability", "onednn_version")}
    packages: dict[str, list[str]] = {}
    for m in metas:
        for k, v in (m.get("packages") or {}).items():
            if v not in packages.setdefault(k, []):
                packages[k].append(v)
    python = sorted({m.get("python") for m in metas if m.get("python")})
    return {
        "experiment": experiment,
        "git": git_state(workdir),
        "config_hash": hashes,
        "machines": list(machines.values()),
        "packages": packages,
        "python": python,
        "n_sidecars": len(metas),
        "n_inputs": len(inputs),
    }
