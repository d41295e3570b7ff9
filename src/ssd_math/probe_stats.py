"""Probing locks and forks (study §6): the measures the analysis (:mod:`ssd_math.probe_analysis`)
applies to positions: a position's class (:func:`classify`: lock-like / fork-like / mixed, from
the base model's reference view), a lock's subclass per trained model (:func:`lock_subclass`:
strict / swap / self-correction), and a pooled mean over positions with its prompt-clustered
percentile bootstrap interval (:func:`clustered_mean_ci`, over ``ssd_math.stats``' resampler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import stats

CLASSES = ("lock", "fork", "mixed")
LOCK_SUBCLASSES = ("strict", "swap", "self-correction")
SELF_CORRECTION = ("Wait",)  # a lock whose carrier token or top-1 starts (stripped) with one


# ---------------------------------------------------------------------------- classification
def classify(top1: float, second: float, nucleus: int, tail: float, th: dict) -> str:
    """lock (high top-1, small nucleus, low tail), fork (top-1 below ``fork_top1_max`` with a
    runner-up of at least ``fork_second_min``, low tail) or mixed; thresholds: config
    ``probe.classify``. Read from the base model's reference view."""
    if top1 >= th["lock_top1"] and nucleus <= th["lock_nucleus_max"] and tail <= th["lock_tail_max"]:
        return "lock"
    if top1 <= th["fork_top1_max"] and second >= th["fork_second_min"] and tail <= th["fork_tail_max"]:
        return "fork"
    return "mixed"


def lock_subclass(base_top1_token: str, model_top1_token: str, carrier_token: str) -> str:
    """A lock's split per trained model: self-correction (the carrier's token or either top-1
    begins a self-correction word, e.g. "Wait"), swap (the trained model's top-1 differs from the
    base's) or strict (same top-1)."""
    if any(
        t.strip().startswith(w)
        for t in (base_top1_token, model_top1_token, carrier_token)
        for w in SELF_CORRECTION
        if t.strip()
    ):
        return "self-correction"
    return "strict" if base_top1_token == model_top1_token else "swap"


# --------------------------------------------------------------------------------- statistics
def clustered_mean_ci(
    values: Sequence[float],
    clusters: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    conf: float,
    den: Sequence[float] | None = None,
) -> dict:
    """Pooled mean over positions, sum(values) / sum(den) (``den`` default 1 per position: the
    plain mean; 0/1 ``values`` and ``den`` give a precision or recall), with a prompt-clustered
    percentile bootstrap: prompts are resampled with replacement, each keeping all its positions.
    The resampler and percentile are ``ssd_math.stats``' (one ``default_rng(seed)`` stream: the
    numerator's and denominator's per-prompt sums are resampled with the same indices)."""
    vals = np.asarray(values, dtype=float)
    dens = np.ones_like(vals) if den is None else np.asarray(den, dtype=float)
    keys = [str(c) for c in clusters]
    if dens.sum() == 0 or not keys:
        return {
            "estimate": math.nan,
            "lo": math.nan,
            "hi": math.nan,
            "n_prompts": len(set(keys)),
            "n_positions": int(dens.sum()),
        }
    idx = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    num_c, den_c = np.zeros(len(idx)), np.zeros(len(idx))
    np.add.at(num_c, [idx[k] for k in keys], vals)
    np.add.at(den_c, [idx[k] for k in keys], dens)
    bn = stats._bootstrap_means(num_c, int(n_boot), int(seed))
    bd = stats._bootstrap_means(den_c, int(n_boot), int(seed))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = bn / bd
    boot = boot[np.isfinite(boot)]
    lo, hi = stats._percentile(boot, float(conf)) if boot.size else (math.nan, math.nan)
    return {
        "estimate": float(num_c.sum() / den_c.sum()),
        "lo": lo,
        "hi": hi,
        "n_prompts": len(idx),
        "n_positions": int(den_c.sum()),
    }


CI_METHOD = (
    "pooled mean over positions; prompt-clustered percentile bootstrap (prompts resampled "
    "with replacement, each keeping all its positions)"
)
