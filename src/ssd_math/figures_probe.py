"""The locks-and-forks figures (study §6), drawn from the probe's tables
(:mod:`ssd_math.probe_analysis`): every probed position's top-1 probability against its nucleus
size, and the fork-method shares. Plotting only; the style is :mod:`ssd_math.figures`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from .figures import COLORS, _errorbar, _finish, _save
from .fmt import pct_scale

PROBE_CLASS_COLORS = {"lock": "#1f77b4", "fork": "#d62728", "mixed": "#9a9a9a"}


def probe_scatter(positions_csv: str | Path, out_png: str | Path, *, models: Sequence[str]) -> list[dict]:
    """One panel per model: every probed position's top-1 probability against its nucleus size
    (reference view, log x, small deterministic jitter), coloured by the position's class (read
    from the base model, so the same point keeps its colour across panels)."""
    df = pl.read_csv(positions_csv)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 2.7), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        d = df.filter(pl.col("model") == m)
        for c, col in PROBE_CLASS_COLORS.items():
            dc = d.filter(pl.col("class") == c)
            if dc.is_empty():
                continue
            x = dc["nucleus"].to_numpy().astype(float)
            jit = np.random.default_rng(0).uniform(-0.12, 0.12, len(x))
            ax.scatter(
                x * np.exp(jit),
                dc["top1"].to_numpy(),
                s=9,
                alpha=0.55,
                color=col,
                label=f"{c} (n={len(dc)})",
                edgecolors="none",
            )
        ax.set_xscale("log")
        ax.set_title(f"{m}: top-1 vs nucleus")
        ax.set_xlabel("nucleus size (tokens kept, reference view)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("top-1 probability (untruncated)")
    fig.tight_layout()
    info = [
        {"title": ax.get_title(), "series": [t.get_text() for t in ax.get_legend().get_texts()]}
        for ax in axes[0]
        if ax.get_legend()
    ]
    _save(fig, out_png)
    return info


def probe_fork_shares(shares_csv: str | Path, effect_csv: str | Path, out_png: str | Path) -> list[dict]:
    """Left: the share of sampled solutions whose first method is the first alternative, per model
    and T_eval (Wilson CIs). Right: the entropy over the valid methods at the true forks, per
    model (prompt-clustered CIs). Both at the tables' ``conf`` (stats.conf); no label names the
    level, the report's caption does."""
    sh = pl.read_csv(shares_csv)
    ef = pl.read_csv(effect_csv) if Path(effect_csv).stat().st_size else pl.DataFrame()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if not sh.is_empty() and "method" in sh.columns:
        first = sh["method"][0]
        d = sh.filter(pl.col("method") == first)
        models = list(dict.fromkeys(d["model"].to_list()))
        ts = sorted(set(d["T"].cast(pl.String).to_list()), key=float)
        w = 0.8 / max(1, len(ts))
        for i, t in enumerate(ts):
            dt = {r["model"]: r for r in d.filter(pl.col("T").cast(pl.String) == t).to_dicts()}
            xs = [k + (i - (len(ts) - 1) / 2) * w for k in range(len(models))]
            est = [dt[m]["share"] if m in dt else np.nan for m in models]
            lo = [dt[m]["lo"] if m in dt else np.nan for m in models]
            hi = [dt[m]["hi"] if m in dt else np.nan for m in models]
            a1.bar(xs, pct_scale(est), width=w, color=COLORS[(i + 1) % len(COLORS)], alpha=0.75, label=f"T{t}")
            a1.errorbar(
                xs,
                pct_scale(est),
                yerr=[pct_scale(est) - pct_scale(lo), pct_scale(hi) - pct_scale(est)],
                fmt="none",
                ecolor="k",
                capsize=2,
            )
        a1.axhline(50, color="k", lw=0.8, ls=":")
        a1.set_xticks(range(len(models)), models, rotation=20)
        a1.set_ylabel(f"first method = '{first}' (% of solutions)")
        a1.set_title("method shares in sampled solutions")
        a1.legend(fontsize=7)
    if not ef.is_empty() and "quantity" in ef.columns:
        e = ef.filter(pl.col("quantity").str.starts_with("fork: entropy"))
        if not e.is_empty():
            x = np.arange(len(e))
            _errorbar(
                a2,
                x,
                e["estimate"].to_numpy() / 100,
                e["lo"].to_numpy() / 100,
                e["hi"].to_numpy() / 100,
                color=COLORS[1],
                ls="none",
                label="entropy over valid methods",
            )
            a2.set_xticks(x, e["model"].to_list(), rotation=20)
            a2.set_ylim(0, 1.05)
            a2.set_ylabel("bits (max 1 for two methods)")
            a2.set_title(f"at the true forks (n={e['n_positions'][0]} positions)")
            a2.legend(fontsize=7)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig, out_png)
