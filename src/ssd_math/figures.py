"""Figures drawn from tables and logs that rules already computed (plotting only, no statistics).

Each function reads small files and writes one PNG atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from .io import atomic_path, read_jsonl  # noqa: E402

COLORS = ["#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


def _errorbar(ax, x, est, lo, hi, **kw):
    import numpy as np

    est, lo, hi = (np.asarray(v, dtype=float) * 100 for v in (est, lo, hi))
    ax.errorbar(x, est, yerr=[est - lo, hi - est], capsize=3, marker="o", ms=4, **kw)


def figure_c(metrics_csv: str | Path, out_png: str | Path, *, hard_set: str, models: Sequence[str]) -> None:
    """Figure C (study §4): accuracy on the hard set and extracted-answer (boxed) rate against
    T_eval, the base model and every trained arm, points with 95% CIs."""
    df = pl.read_csv(metrics_csv).filter((pl.col("kind") == "grid") & (pl.col("evalset") == hard_set))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, model in enumerate(models):
        d = df.filter(pl.col("model") == model).sort("temperature")
        if d.is_empty():
            continue
        style = dict(color=COLORS[i % len(COLORS)], label=model, lw=2.2 if model == "base" else 1.4,
                     ls="--" if model == "base" else "-")
        _errorbar(axes[0], d["temperature"], d["accuracy"], d["accuracy_lo"], d["accuracy_hi"], **style)
        _errorbar(axes[1], d["temperature"], d["boxed"], d["boxed_lo"], d["boxed_hi"], **style)
    n = df["n_prompts"].max() if not df.is_empty() else 0
    method = df["method"][0] if not df.is_empty() else ""
    axes[0].set_title(f"accuracy, {hard_set} (n={n} prompts)")
    axes[1].set_title("extracted-answer (boxed) rate")
    for ax in axes:
        ax.set_xlabel("T_eval")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Figure C — 95% CIs: {method}", fontsize=9)
    _save(fig, out_png)


def training_curves(logs: dict[str, str | Path], out_png: str | Path) -> None:
    """Per-step training curves of every arm: loss (and perplexity), learning rate, grad norm."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, (arm, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        c = COLORS[(i + 1) % len(COLORS)]
        axes[0].plot(steps, [r["loss"] for r in rows], color=c, label=arm)
        axes[1].plot(steps, [r["lr"] for r in rows], color=c, label=arm)
        axes[2].plot(steps, [r["grad_norm"] for r in rows], color=c, label=arm)
    axes[0].set_title("train loss (perplexity = exp(loss))")
    axes[1].set_title("learning rate")
    axes[2].set_title("gradient norm (before clipping)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, out_png)
