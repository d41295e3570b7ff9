"""Figures drawn from tables and logs that rules already computed (plotting only, no statistics).

This module owns the figures' style (colours, page width, DPI, panel size, font sizes) and the
helpers every figure module draws and saves with, and draws the base model's decoding baselines
(Figure A) and accuracy against T_eval (Figure C). The training figures are
:mod:`ssd_math.figures_training`'s, the locks-and-forks figures :mod:`ssd_math.figures_probe`'s.

Each function reads small files and writes one PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from .derive import BASE  # noqa: E402
from .fmt import pct_scale  # noqa: E402
from .io import atomic_path  # noqa: E402
from .stats import level_text  # noqa: E402

COLORS = ["#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]

# Legibility at the report's page width: the report's column is about PAGE_PX CSS pixels wide at a
# 1280 px window; a figure is drawn at most MAX_WIDTH_IN wide (wider panel sets wrap into rows of
# at most MAX_COLS panels) with the font sizes below, so its smallest text stays >= ~10 px there
# (:func:`min_text_px`).
PAGE_PX = 860
DPI = 130
MAX_COLS = 3
PANEL_IN = (3.2, 2.5)  # one small-multiple panel (width, height), inches
MAX_WIDTH_IN = MAX_COLS * PANEL_IN[0]
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "figure.titlesize": 11,
}
matplotlib.rcParams.update(STYLE)


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def min_text_px(fig, page_px: int = PAGE_PX, width_px: float | None = None) -> float:
    """The smallest visible text of ``fig``, in CSS pixels, once its PNG (``DPI``; ``width_px``
    wide, default the figure's width) is scaled to fit ``page_px`` (the report's column at
    1280 px): what a reader sees."""
    from matplotlib.text import Text

    width_px = width_px or fig.get_figwidth() * DPI
    scale = min(1.0, page_px / width_px)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * DPI / 72 * scale if sizes else float("inf")


def _panels(n: int, *, sharey: bool = False, panel: tuple[float, float] = PANEL_IN):
    """Small multiples: ``n`` panels in rows of at most MAX_COLS (unused slots hidden), so the
    figure never grows wider than the page. Returns (fig, list of n Axes)."""
    ncols = max(1, min(MAX_COLS, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows + 0.5), squeeze=False, sharey=sharey
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def ci_caption(df: pl.DataFrame, what: str = "CIs") -> str:
    """``"<level> CIs: <method>"`` for a figure drawn from ``df``: the level from its ``conf``
    column, i.e. the ``stats.conf`` its intervals were computed at (never typed here), and the
    interval method from its ``method`` column. "" for an empty table (nothing plotted)."""
    if df.is_empty():
        return ""
    levels = df["conf"].drop_nulls().unique().to_list() if "conf" in df.columns else []
    if len(levels) != 1:
        raise ValueError(
            f"the intervals' level must be one value of a 'conf' column, got {levels or 'none'} (columns: {df.columns})"
        )
    return f"{level_text(levels[0])} {what}: {df['method'][0]}"


def _errorbar(ax, x, est, lo, hi, **kw):
    est, lo, hi = (pct_scale(v) for v in (est, lo, hi))
    ax.errorbar(x, est, yerr=[est - lo, hi - est], capsize=3, marker="o", ms=4, **kw)


def figure_c(metrics_csv: str | Path, out_png: str | Path, *, hard_set: str, models: Sequence[str]) -> None:
    """Figure C (study §4): accuracy on the hard set and extracted-answer (boxed) rate against
    T_eval, the base model and every trained arm, points with their CIs (level and method
    from the metrics table: :func:`ci_caption`)."""
    df = pl.read_csv(metrics_csv).filter((pl.col("kind") == "grid") & (pl.col("evalset") == hard_set))
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 3.3))
    for i, model in enumerate(models):
        d = df.filter(pl.col("model") == model).sort("temperature")
        if d.is_empty():
            continue
        style = dict(
            color=COLORS[i % len(COLORS)],
            label=model,
            lw=2.2 if model == BASE else 1.4,
            ls="--" if model == BASE else "-",
        )
        _errorbar(axes[0], d["temperature"], d["accuracy"], d["accuracy_lo"], d["accuracy_hi"], **style)
        _errorbar(axes[1], d["temperature"], d["boxed"], d["boxed_lo"], d["boxed_hi"], **style)
    n = df["n_prompts"].max() if not df.is_empty() else 0
    axes[0].set_title(f"accuracy, {hard_set} (n={n} prompts)")
    axes[1].set_title("extracted-answer (boxed) rate")
    for ax in axes:
        ax.set_xlabel("T_eval")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(ci_caption(df))
    fig.tight_layout()
    _save(fig, out_png)


# ------------------------------------------------------------------------------------------------
# helpers for the figures below: what was plotted (tests inspect it; rules ignore it)
# ------------------------------------------------------------------------------------------------


def plotted_series(fig) -> list[dict]:
    """Per Axes: its title and the labels of the data series drawn on it (lines and error-bar
    containers with a label not starting with '_'; helper lines such as CI bands are unlabeled)."""
    out = []
    for ax in fig.axes:
        labels = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        labels += [c.get_label() for c in ax.containers if not str(c.get_label()).startswith("_")]
        out.append({"title": ax.get_title(), "series": list(dict.fromkeys(labels))})
    return out


def _finish(fig, path: str | Path) -> list[dict]:
    info = plotted_series(fig)
    _save(fig, path)
    return info


# ------------------------------------------------------------------------------------------------
# Figure A (study §3): the base model's decoding baselines
# ------------------------------------------------------------------------------------------------

PRESET_MARKERS = ["*", "D", "P", "X", "s"]


def figure_a(sweeps_csv: str | Path, out_png: str | Path, *, sets: Sequence[str]) -> list[dict]:
    """Figure A: accuracy on each eval set and the extracted-answer (boxed) rate against T (top row,
    the base model's T grid) and against min-p at the sweep temperature (bottom row), points with
    their CIs (:func:`ci_caption`); the presets highlighted (top row: star-like markers at their T; bottom row: a
    horizontal line with a CI band, for presets at the min-p sweep's temperature)."""

    df = pl.read_csv(sweeps_csv)
    cols = [(s, "accuracy") for s in sets] + [(None, "boxed")]
    ncols = min(MAX_COLS, len(cols))
    fig, axes = plt.subplots(
        2, len(cols), figsize=(MAX_WIDTH_IN * len(cols) / ncols, 2 * PANEL_IN[1] + 0.8), squeeze=False
    )
    presets = df.filter(pl.col("family") == "preset")
    preset_names = list(dict.fromkeys(presets["name"].to_list()))
    minp = df.filter(pl.col("family") == "min-p")
    t_minp = float(minp["temperature"][0]) if not minp.is_empty() else None
    for j, (s, metric) in enumerate(cols):
        top, bot = axes[0][j], axes[1][j]
        for i, es in enumerate([s] if s else list(sets)):
            color = COLORS[(i + 1) % len(COLORS)] if s is None else COLORS[1]
            lab = f"T grid, {es}" if s is None else "T grid"
            d = df.filter((pl.col("evalset") == es) & (pl.col("family") == "T grid")).sort("temperature")
            if not d.is_empty():
                _errorbar(
                    top, d["temperature"], d[metric], d[f"{metric}_lo"], d[f"{metric}_hi"], color=color, label=lab
                )
            d = minp.filter(pl.col("evalset") == es).sort("min_p")
            if not d.is_empty():
                _errorbar(
                    bot,
                    d["min_p"],
                    d[metric],
                    d[f"{metric}_lo"],
                    d[f"{metric}_hi"],
                    color=color,
                    label=f"min-p @ T{t_minp:g}" + (f", {es}" if s is None else ""),
                )
            for pi, name in enumerate(preset_names):
                p = presets.filter((pl.col("evalset") == es) & (pl.col("name") == name))
                if p.is_empty():
                    continue
                r = p.row(0, named=True)
                pc = COLORS[(len(sets) + 2 + pi) % len(COLORS)]
                plab = f"preset {name}" + (f", {es}" if s is None else "")
                est, lo, hi = (100 * r[metric], 100 * r[f"{metric}_lo"], 100 * r[f"{metric}_hi"])
                top.errorbar(
                    [r["temperature"]],
                    [est],
                    yerr=[[est - lo], [hi - est]],
                    marker=PRESET_MARKERS[pi % 5],
                    ms=11,
                    color=pc,
                    mec="black",
                    ls="none",
                    capsize=3,
                    label=plab,
                    zorder=5,
                )
                if t_minp is not None and abs(r["temperature"] - t_minp) < 1e-9:
                    bot.axhline(est, color=pc, ls=":", lw=1.6, label=plab)
                    bot.axhspan(lo, hi, color=pc, alpha=0.12, label="_band")
        title = f"accuracy, {s}" if s else "boxed-answer rate"
        n = df.filter(pl.col("evalset") == s)["n_prompts"].max() if s else None
        top.set_title(title + (f" (n={n})" if n else ""))
        bot.set_title(title + (f" (n={n})" if n else ""))
        top.set_xlabel("temperature")
        bot.set_xlabel("min-p")
        for ax in (top, bot):
            ax.set_ylabel("%")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8.5, framealpha=0.7)
    fig.suptitle("base model decoding baselines" + (f"; {ci_caption(df)}" if not df.is_empty() else ""))
    fig.tight_layout()
    return _finish(fig, out_png)
