"""The training figures (study §4, the noise trap), drawn from the per-step training logs and the
checkpoint table: per-step training curves, Figure B (gradient norm against the estimated signal),
the weight-change fraction, the |Δw| histograms, the training perplexity and every checkpoint's
accuracy. Plotting only; the style is :mod:`ssd_math.figures`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from .figures import COLORS, MAX_COLS, MAX_WIDTH_IN, PANEL_IN, _errorbar, _finish, _panels, _save, ci_caption
from .io import read_jsonl


def training_curves(logs: dict[str, str | Path], out_png: str | Path) -> None:
    """Per-step training curves of every arm: loss (and perplexity), learning rate, grad norm."""
    fig, axes = _panels(3)
    for i, (arm, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        c = COLORS[(i + 1) % len(COLORS)]
        axes[0].plot(steps, [r["loss"] for r in rows], color=c, label=arm)
        axes[1].plot(steps, [r["lr"] for r in rows], color=c, label=arm)
        axes[2].plot(steps, [r["grad_norm"] for r in rows], color=c, label=arm)
    axes[0].set_title("train loss\n(perplexity = exp(loss))")
    axes[1].set_title("learning rate")
    axes[2].set_title("gradient norm\n(before clipping)")
    _step_axes(fig, axes)
    _save(fig, out_png)


def _step_axes(fig, axes) -> None:
    """Panels against the optimizer step: x label, grid, the first panel's legend, layout."""
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()


def _style(i: int, dashed: bool) -> dict:
    return dict(color=COLORS[(i + 1) % len(COLORS)], ls="--" if dashed else "-", lw=1.3 if dashed else 1.6)


def figure_b(logs: dict[str, str | Path], out_png: str | Path, *, checkpoint_steps: Sequence[int]) -> list[dict]:
    """Figure B: per arm (one panel each), the observed gradient norm per optimizer step (before
    clipping; line) against the estimated signal magnitude |G| = sqrt(max(G2_ema, 0)) (McCandlish
    et al.; EMA-smoothed) at each checkpoint step and the last step (dashed, markers). A panel
    whose log has no gradient-noise estimate (one micro-batch per step) says so."""

    arms = list(logs)
    fig, axes = _panels(len(arms), sharey=True)
    for i, arm in enumerate(arms):
        ax = axes[i]
        rows = read_jsonl(logs[arm])
        steps = [r["step"] for r in rows]
        ax.plot(
            steps,
            [r["grad_norm"] for r in rows],
            color=COLORS[(i + 1) % len(COLORS)],
            lw=1.4,
            label="observed |g| per step",
        )
        want = sorted(
            {s for s in checkpoint_steps if s <= (steps[-1] if steps else 0)} | ({steps[-1]} if steps else set())
        )
        by = {r["step"]: r for r in rows}
        pts = [(s, by[s].get("G2_ema")) for s in want if s in by and by[s].get("G2_ema") is not None]
        if pts:
            xs = [p[0] for p in pts]
            ys = [float(np.sqrt(max(p[1], 0.0))) for p in pts]
            ax.plot(xs, ys, ls="--", marker="o", color="black", lw=1.2, label="estimated |G| at checkpoints")
            last = by[xs[-1]]
            if last.get("B_simple") is not None:
                ax.text(
                    0.98,
                    0.95,
                    f"B_simple = {last['B_simple']:.3g} seq\n(batch {last.get('B_big')})",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=8.5,
                )
        else:
            ax.text(
                0.5,
                0.5,
                "no gradient-noise estimate\n(one micro-batch per step)",
                transform=ax.transAxes,
                ha="center",
                fontsize=8.5,
            )
        ax.set_title(arm)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    for ax in axes[::MAX_COLS]:
        ax.set_ylabel("gradient L2 norm")
    fig.suptitle("observed gradient norm vs estimated signal |G|\n(EMA of the two-batch estimate)")
    fig.tight_layout()
    return _finish(fig, out_png)


def weight_change(
    logs: dict[str, str | Path],
    out_png: str | Path,
    *,
    noise_runs: Sequence[str] = (),
    labels: dict[str, str] | None = None,
) -> list[dict]:
    """Fraction of parameters whose stored (bf16) value changed at each optimizer step, one line per
    arm; log-only noise runs (e.g. the bf16 optimizer state) dashed. Right panel: learning rate."""
    labels = labels or {}
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    for i, (name, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        st = _style(i, name in noise_runs)
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [100 * (r.get("frac_changed") or 0.0) for r in rows], label=labels.get(name, name), **st)
        axes[1].plot(steps, [r["lr"] for r in rows], label=labels.get(name, name), **st)
    axes[0].set_title("weight-change fraction (stored dtype) per step")
    axes[0].set_ylabel("% of parameters changed")
    axes[1].set_title("learning rate")
    axes[1].set_yscale("log")
    _step_axes(fig, axes)
    return _finish(fig, out_png)


def hist_steps(rows: Sequence[dict]) -> list[int]:
    """The steps whose |Δw| histogram is drawn: the first, the first at the peak LR, the last."""

    if not rows:
        return []
    peak = rows[int(np.argmax([r["lr"] for r in rows]))]["step"]
    return sorted({rows[0]["step"], peak, rows[-1]["step"]})


def dw_hist(logs: dict[str, str | Path], out_png: str | Path) -> list[dict]:
    """|Δw| of the stored values over log10-spaced bins (share of parameters per bin, log scale),
    one panel per run, at the first step, the peak-LR step and the last step (:func:`hist_steps`).
    The leftmost bin is Δw = 0 (unchanged)."""

    names = list(logs)
    fig, axes = _panels(len(names), sharey=True, panel=(PANEL_IN[0], PANEL_IN[1] + 0.4))
    for i, name in enumerate(names):
        ax = axes[i]
        rows = read_jsonl(logs[name])
        by = {r["step"]: r for r in rows}
        edges = None
        for j, s in enumerate(hist_steps(rows)):
            h = by[s].get("dw_hist")
            if not h:
                continue
            edges = h["edges_log10"]
            c = np.asarray(h["counts"], dtype=float)
            share = c / c.sum()
            lab = f"step {s}" + (" (peak LR)" if s == max(rows, key=lambda r: r["lr"])["step"] else "")
            ax.step(
                np.arange(len(share)),
                np.where(share > 0, share, np.nan),
                where="mid",
                lw=1.5,
                color=COLORS[(j + 1) % len(COLORS)],
                label=lab,
            )
        if edges is not None:
            ticks = ["0", f"<1e{edges[0]:g}"] + [f"1e{e:g}" for e in edges[:-1]] + [f"≥1e{edges[-1]:g}"]
            every = max(1, -(-len(ticks) // 7))  # at most ~7 labels per panel: readable, not overlapping
            ax.set_xticks(np.arange(len(ticks))[::every])
            ax.set_xticklabels(ticks[::every], rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("|Δw| of stored value")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[::MAX_COLS]:
        ax.set_ylabel("share of parameters")
    fig.suptitle("|Δw| histograms (stored dtype); leftmost bin: unchanged")
    fig.tight_layout()
    return _finish(fig, out_png)


def train_ppl(logs: dict[str, str | Path], out_png: str | Path, *, noise_runs: Sequence[str] = ()) -> list[dict]:
    """Training perplexity (exp of the mean completion-token loss) per optimizer step."""
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    for i, (name, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        ax.plot([r["step"] for r in rows], [r["ppl"] for r in rows], label=name, **_style(i, name in noise_runs))
    ax.axhline(2.0, color="grey", ls=":", lw=1, label="_ppl2")
    ax.set_title("train perplexity on the model's own samples")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("perplexity")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _finish(fig, out_png)


def checkpoint_accuracy(checkpoints_csv: str | Path, out_png: str | Path) -> list[dict]:
    """Accuracy of every checkpoint (step 0 = the base model at the same decoding) with its CI
    (:func:`ci_caption`), one series per arm, on the eval set the checkpoints were evaluated on."""
    df = pl.read_csv(checkpoints_csv)
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    arms = list(dict.fromkeys(df["arm"].to_list()))
    for i, arm in enumerate(arms):
        d = df.filter((pl.col("arm") == arm) & pl.col("step").is_not_null()).sort("step")
        off = (i - (len(arms) - 1) / 2) * 0.08  # dodge overlapping CIs
        _errorbar(
            ax,
            d["step"].cast(pl.Float64) + off,
            d["accuracy"],
            d["accuracy_lo"],
            d["accuracy_hi"],
            color=COLORS[(i + 1) % len(COLORS)],
            label=arm,
        )
    if not df.is_empty():
        r = df.row(0, named=True)
        ax.set_title(f"accuracy per checkpoint, {r['evalset']} @ {r['condition']} (n={r['n_prompts']})")
        ax.text(0.01, 0.02, ci_caption(df, "CI"), transform=ax.transAxes, fontsize=8.5)
    ax.set_xlabel("optimizer step (0 = base)")
    ax.set_ylabel("accuracy %")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _finish(fig, out_png)
