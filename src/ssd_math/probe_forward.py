"""Probing locks and forks (study §6), step 2 of 3 (rule probe_forward, one job per model): the
next-token distributions at the probed positions, summarised under each view.

:func:`forward_model` — ONE batched forward pass over each carrier (no generation); at every
position the distribution's summary under each *view* (:func:`views`: a temperature + top-k +
top-p: the probe's reference decoding and each arm's training-sampling settings): top-1
probability after truncation, nucleus size (tokens kept), tail mass (untruncated mass outside the
nucleus), entropy before and after truncation, mass outside the top-k, the top-5 tokens, and the
probability of the position's target tokens. Step 1 is :mod:`ssd_math.probe_positions`, step 3
:mod:`ssd_math.probe_analysis`.

Conventions (what a position is, probabilities, truncation order, entropies): the docstring of
:mod:`ssd_math.probe_positions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import derive
from .io import read_jsonl, write_jsonl
from .modeling import load_model
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)

METRICS = ("top1_before", "top1", "nucleus", "tail", "tail_k", "entropy_before", "entropy")


# ------------------------------------------------------------------------------------- config
def views(cfg: dict) -> dict[str, dict]:
    """{view name: {temperature, top_k, top_p}}: ``ref`` (the probe's reference decoding at
    probe.temperature) and ``arm:<arm>`` (each probed arm's training-sampling settings)."""
    s = derive.probe_settings(cfg)
    out = {
        "ref": {
            "temperature": float(s["temperature"]),
            "top_k": int(s["reference"]["top_k"]),
            "top_p": float(s["reference"]["top_p"]),
        }
    }
    for a in s["arms"]:
        sa = derive.arm_sampling(cfg, a)
        out[f"arm:{a}"] = {"temperature": float(sa.temperature), "top_k": int(sa.top_k), "top_p": float(sa.top_p)}
    return out


# ------------------------------------------------------------------------------ nucleus math
def truncate_sorted(p_desc: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Number of tokens kept (the nucleus size) per row of probabilities sorted descending.

    HF order: top-k (``top_k <= 0``: off) keeps the k largest; top-p on the top-k-renormalised
    distribution keeps token i iff the mass of the tokens ranked before it is < top_p (so the
    smallest prefix reaching top_p, at least one token); ``top_p >= 1`` is off."""
    p = np.atleast_2d(np.asarray(p_desc, dtype=np.float64))
    v = p.shape[1]
    k = v if top_k <= 0 else min(int(top_k), v)
    if top_p >= 1.0:
        return np.full(p.shape[0], k, dtype=np.int64)
    q = p[:, :k] / p[:, :k].sum(axis=1, keepdims=True)
    before = np.cumsum(q, axis=1) - q  # mass ranked strictly before each token
    return np.maximum(1, (before < top_p).sum(axis=1)).astype(np.int64)


def view_metrics(logits: np.ndarray, view: dict) -> dict[str, np.ndarray]:
    """Per-row summary of ``logits`` (P x V) under one view: ``top1_before`` / ``top1`` (the
    largest probability untruncated / after truncation),
    ``nucleus`` (tokens kept), ``tail`` (untruncated mass outside the nucleus), ``entropy_before``
    / ``entropy`` (untruncated / truncated, nats), ``tail_k`` (untruncated mass outside the top-k;
    0 with top-k off)."""
    z = np.asarray(logits, dtype=np.float64) / float(view["temperature"])
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    ps = -np.sort(-p, axis=1)
    m = truncate_sorted(ps, int(view["top_k"]), float(view["top_p"]))
    cum = np.cumsum(ps, axis=1)
    kept = cum[np.arange(len(m)), m - 1]
    rank = np.arange(ps.shape[1])[None, :]
    q = np.where(rank < m[:, None], ps, 0.0) / kept[:, None]
    k = int(view["top_k"])
    tail_k = 1.0 - cum[:, min(k, ps.shape[1]) - 1] if k > 0 else np.zeros(len(m))
    return {
        "top1_before": ps[:, 0],
        "top1": ps[:, 0] / kept,
        "nucleus": m,
        "tail": np.clip(1.0 - kept, 0.0, 1.0),
        "entropy_before": _entropy(ps),
        "entropy": _entropy(q),
        "tail_k": np.clip(tail_k, 0.0, 1.0),
    }


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


# ------------------------------------------------------------------------------ forward pass
def batches_by_tokens(carriers: Sequence[dict], max_batch_tokens: int) -> list[list[int]]:
    """Carrier indices grouped longest first so that each batch's padded size (rows x longest
    sequence) stays within ``max_batch_tokens`` (a longer carrier is a batch of its own)."""
    lens = [len(c["prompt_ids"]) + len(c["completion_ids"]) for c in carriers]
    order = sorted(range(len(carriers)), key=lambda i: (-lens[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * lens[out[-1][0]] <= max_batch_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def position_logits(model, carriers: Sequence[dict], *, max_batch_tokens: int, device: str = "cpu"):
    """Yield ``(carrier, logits[P, V] as float32 numpy)`` at each carrier's positions: ONE
    right-padded, batched forward pass per batch of carriers (:func:`batches_by_tokens`), no
    generation; the output layer runs only at the positions asked for (``logits_to_keep`` = the
    union of the batch's sequence indices), so a long carrier never materialises L x V logits."""
    import torch

    for batch in batches_by_tokens(carriers, max_batch_tokens):
        chunk = [carriers[i] for i in batch]
        seqs = [c["prompt_ids"] + c["completion_ids"] for c in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, sq in enumerate(seqs):
            ids[i, : len(sq)] = torch.tensor(sq)
            mask[i, : len(sq)] = 1
        want = [[len(c["prompt_ids"]) + int(p["j"]) - 1 for p in c["positions"]] for c in chunk]
        keep = sorted({x for w in want for x in w})
        col = {x: i for i, x in enumerate(keep)}
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                logits_to_keep=torch.tensor(keep, device=device),
            ).logits
        for i, c in enumerate(chunk):
            yield c, logits[i, [col[x] for x in want[i]]].float().cpu().numpy()


def summarize_positions(
    carrier: dict,
    logits: np.ndarray,
    *,
    views_: dict[str, dict],
    temperature: float,
    top_n: int,
    decode: Callable[[int], str],
) -> list[dict]:
    """One row per position of ``carrier``: raw (T = ``temperature``, untruncated) top-n tokens
    with probabilities, the second-largest probability, target-token probabilities, and every
    view's metrics (keys ``<view>|<metric>``)."""
    z = logits.astype(np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1)[:, :top_n]
    vm = {name: view_metrics(logits, v) for name, v in views_.items()}
    rows = []
    for r, pos in enumerate(carrier["positions"]):
        row = {
            "carrier_id": carrier["carrier_id"],
            "prompt_id": carrier["prompt_id"],
            "j": pos["j"],
            "raw_top1": float(p[r, top[r, 0]]),
            "raw_second": float(p[r, top[r, 1]]) if top_n > 1 else 0.0,
            "top_tokens": [decode(int(t)) for t in top[r]],
            "top_probs": [round(float(p[r, t]), 6) for t in top[r]],
            "target_probs": {k: float(p[r, v]) for k, v in pos.get("targets", {}).items()},
        }
        for name, m in vm.items():
            for k, arr in m.items():
                row[f"{name}|{k}"] = float(arr[r])
        rows.append(row)
    return rows


def forward_model(
    positions_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    *,
    model_name: str,
    views_: dict[str, dict],
    temperature: float,
    top_n: int,
    max_batch_tokens: int,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    threads: int = 1,
) -> int:
    """Rule probe_forward: every position of every carrier through one model; JSONL of
    :func:`summarize_positions` rows (with ``model``) to ``out_path``."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    carriers = read_jsonl(positions_path)
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    rows = []
    for c, lg in position_logits(model, carriers, max_batch_tokens=max_batch_tokens, device=device):
        rows += [
            {"model": model_name, **r}
            for r in summarize_positions(
                c, lg, views_=views_, temperature=temperature, top_n=top_n, decode=lambda t: tok.decode([t])
            )
        ]
    rows.sort(key=lambda r: (r["carrier_id"], r["j"]))
    return write_jsonl(out_path, rows)
