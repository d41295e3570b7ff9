"""The report appendix's parts (for rule ``report_parts``, :mod:`ssd_math.report_parts`): the
decoding sweeps, every checkpoint, every eval with its breakdown by level, the variance
decomposition and sample sizes (power), and the measured timings, as pipe tables with their
method notes.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from . import fmt
from .fmt import pipe_table
from .report_probe import _struct_text
from .stats import level_text


def _ci_expr(c: str) -> pl.Expr:
    """A rate column with its interval as text (fmt.ci); em dash where there is none."""

    def text(est, lo, hi):
        return "\u2014" if fmt.is_missing(est) else fmt.ci(est, lo, hi)

    return _struct_text([c, f"{c}_lo", f"{c}_hi"], text, c)


def _appendix(t: Mapping[str, pl.DataFrame]) -> dict[str, str]:
    sweeps, ckpts, metrics, breakdown, power, timings = (
        t[k] for k in ("sweeps", "checkpoints", "metrics", "breakdown", "power", "timings")
    )
    out = {}
    sv = sweeps.select(
        "evalset",
        "family",
        "name",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "presence_penalty",
        pl.col("accuracy_text").alias("accuracy"),
        pl.col("boxed_text").alias("boxed"),
        pl.col("think_close_text").alias("think-close"),
        pl.col("length_stop_text").alias("length-stop"),
    )
    out["sweeps"] = pipe_table(sv, floatfmt=".2f")
    out["sweeps_method"] = fmt.method_note(
        sweeps["method"][0],
        sorted(set(sweeps["n_prompts"].to_list())),
        sweeps["k"][0],
        sweeps["n_boot"][0],
        sweeps["seed"][0],
        sweeps["conf"][0],
    )
    cv = ckpts.select(
        "arm",
        "checkpoint",
        "step",
        "evalset",
        "condition",
        "n_prompts",
        pl.col("accuracy_text").alias("accuracy"),
        pl.col("lr"),
        pl.col("ppl").round(3),
        (100 * pl.col("frac_changed")).round(2).alias("% changed"),
        pl.col("signal_norm").alias("|G|"),
    )
    out["checkpoints"] = pipe_table(cv, floatfmt=".3g")
    r = ckpts.row(0, named=True)
    out["checkpoints_method"] = fmt.method_note(r["method"], r["n_prompts"], r["k"], r["n_boot"], r["seed"], r["conf"])
    m = metrics.filter(pl.col("kind") == "grid").sort(["evalset", "model", "temperature"])
    view = m.select(
        "evalset",
        "model",
        "temperature",
        "n_prompts",
        "k",
        _ci_expr("accuracy").alias("accuracy"),
        _ci_expr("think_close").alias("think-close"),
        _ci_expr("boxed").alias("boxed"),
        _ci_expr("length_stop").alias("length-stop"),
        "n_timeout",
        "n_error",
    )
    out["all_evals"] = pipe_table(view)
    out["all_evals_method"] = (
        f"*Method.* {m['method'][0]}; {level_text(m['conf'][0])} intervals. Statuses other "
        "than correct/incorrect/no_answer (timeout, gold_parse_error, error) are counted here, "
        "never silently scored."
    )
    bl = breakdown.filter((pl.col("kind") == "grid") & (pl.col("by") == "level"))
    if bl.is_empty():
        out["all_by_level"] = "No level information in the eval data."
    else:
        bl = bl.with_columns(
            _ci_expr("accuracy").alias("acc"), ("level " + pl.col("group").cast(pl.String)).alias("lv")
        )
        wide = bl.pivot(on="lv", index=["evalset", "model", "condition"], values="acc").sort(
            ["evalset", "model", "condition"]
        )
        out["all_by_level"] = pipe_table(wide.fill_null("—"))
    out["all_by_level_method"] = (
        ""
        if breakdown.is_empty()
        else (
            fmt.method_note(
                breakdown["method"][0],
                "per cell (see breakdown.csv)",
                breakdown["k"][0],
                "—",
                "—",
                breakdown["conf"][0],
            )
            + " Breakdowns by source appear only where the data has more than one source."
        )
    )
    if power.is_empty():
        out["power"], out["power_method"] = (
            "No eval with more than one sample per prompt: the decomposition needs k > 1.",
            "",
        )
    else:
        pv = power.select(
            "model",
            "evalset",
            "condition",
            "n_prompts",
            "k",
            pl.col("accuracy").round(3),
            pl.col("between").round(4),
            pl.col("within").round(4),
            (100 * pl.col("between_share")).round(1).alias("between share %"),
            pl.col("delta_pp").alias("δ (pp)"),
            pl.col("n_k1").alias("n per model (k=1)"),
            pl.col("n_kk").alias("n per model (k samples)"),
        )
        out["power"] = pipe_table(pv, floatfmt=".4g")
        p = power.row(0, named=True)
        out["power_method"] = (
            f"*Method.* Variance: {p['variance_method']}. Sample size: {p['size_method']}; α = {p['alpha']}, "
            f"power = {p['power']} (z = {p['z_alpha2']:.3f} + {p['z_beta']:.3f}). n = "
            f"{', '.join(sorted(set(str(x) for x in power['n_prompts'].to_list())))} prompts × {p['k']} samples per "
            "prompt per eval; no resampling (moment estimates)."
        )
    tv = timings.select(
        "stage",
        "jobs",
        pl.col("wall_s").round(1).alias("wall s (sum)"),
        pl.col("max_job_s").round(1).alias("slowest job s"),
        pl.col("cpu_s").round(1).alias("CPU s (sum)"),
        pl.col("max_rss_mb").round(0).alias("max RSS MB"),
        "slowest",
    )
    out["timings"] = pipe_table(tv, floatfmt=".1f")
    return out
