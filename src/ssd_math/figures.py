"""Figures drawn from tables and logs that rules already computed (plotting only, no statistics).

Each function reads small files and writes one PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from .derive import BASE  # noqa: E402
from .fmt import pct_scale  # noqa: E402
from .io import atomic_path, read_jsonl  # noqa: E402
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


# ------------------------------------------------------------------------------------------------
# helpers for the figures below: what was plotted (tests inspect it; rules ignore it)
# ------------------------------------------------------------------------------------------------


def _step_axes(fig, axes) -> None:
    """Panels against the optimizer step: x label, grid, the first panel's legend, layout."""
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()


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


# ------------------------------------------------------------------------------------------------
# the noise trap (study §4): Figure B, weight changes, |Δw| histograms, perplexity, checkpoints
# ------------------------------------------------------------------------------------------------


def _style(i: int, probe: bool) -> dict:
    return dict(color=COLORS[(i + 1) % len(COLORS)], ls="--" if probe else "-", lw=1.3 if probe else 1.6)


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
    probes: Sequence[str] = (),
    labels: dict[str, str] | None = None,
) -> list[dict]:
    """Fraction of parameters whose stored (bf16) value changed at each optimizer step, one line per
    arm; log-only probe runs (e.g. the bf16 optimizer state) dashed. Right panel: learning rate."""
    labels = labels or {}
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    for i, (name, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        st = _style(i, name in probes)
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


def train_ppl(logs: dict[str, str | Path], out_png: str | Path, *, probes: Sequence[str] = ()) -> list[dict]:
    """Training perplexity (exp of the mean completion-token loss) per optimizer step."""
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    for i, (name, path) in enumerate(logs.items()):
        rows = read_jsonl(path)
        ax.plot([r["step"] for r in rows], [r["ppl"] for r in rows], label=name, **_style(i, name in probes))
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


# ------------------------------------------------------------------------------------------------
# Locks and forks (study §6): the probe's positions and the fork-method shares (ssd_math.probe_analysis)
# ------------------------------------------------------------------------------------------------

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
