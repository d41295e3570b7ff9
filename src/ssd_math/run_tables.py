"""Tables about the run rather than its eval scores (those are :mod:`ssd_math.tables`): the noise
trap (every checkpoint's accuracy beside the training log at its step, and a per-run summary of the
training logs), sample-size planning from the k > 1 evals, and the measured cost per stage from the
jobs' ``benchmark:`` files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from . import fmt, stats
from .derive import BASE
from .io import read_benchmark, read_jsonl
from .layout import describe_eval_path
from .stats import matrix

# ------------------------------------------------------------------------------------------------
# the noise trap (study §4): checkpoints beside the training log, and a per-arm summary
# ------------------------------------------------------------------------------------------------

LOG_AT_CHECKPOINT = ("lr", "loss", "ppl", "grad_norm", "frac_changed", "G2_ema", "trS_ema", "B_simple", "gB_norm")


def _ckpt_step(name: str, last_step: int) -> int:
    if name == "final":
        return last_step
    if name.startswith("step"):
        return int(name[4:])
    raise ValueError(f"not a checkpoint name: {name!r}")


def checkpoint_table(
    metrics: pl.DataFrame | str | Path, logs: dict[str, str | Path], *, base: str = BASE
) -> pl.DataFrame:
    """Accuracy of every checkpoint of every arm [CI] beside the training log at that step.

    One row per (arm, checkpoint), in step order, preceded by a step-0 row: the base model on the
    same eval set at the same condition (its T-grid file, which is the same decoding as the
    checkpoints'), when the metrics table has it. Log columns (lr, loss, ppl, grad_norm,
    frac_changed, G2_ema, trS_ema, B_simple, gB_norm) are those of the optimizer step that
    produced the checkpoint ("final" = the last step); ``signal_norm`` = sqrt(max(G2_ema, 0)),
    the estimated |G| (study §4, Figure B)."""
    m = metrics if isinstance(metrics, pl.DataFrame) else pl.read_csv(metrics)
    ck = m.filter(pl.col("kind") == "checkpoint")
    out = []
    for arm in dict.fromkeys(ck["arm"].to_list()):
        log = {r["step"]: r for r in read_jsonl(logs[arm])} if arm in logs else {}
        last = max(log) if log else None
        rows = ck.filter(pl.col("arm") == arm).to_dicts()
        if not rows:
            continue
        ev, t = rows[0]["evalset"], rows[0]["temperature"]
        # the base model's T-grid file at the checkpoints' decoding (same T, top-k, top-p, min-p, penalty)
        same = [
            pl.col(c) == rows[0][c]
            for c in ("top_k", "top_p", "min_p", "presence_penalty", "k")
            if c in m.columns and rows[0].get(c) is not None
        ]
        b = m.filter(
            (pl.col("kind") == "grid")
            & (pl.col("model") == base)
            & (pl.col("evalset") == ev)
            & ((pl.col("temperature") - t).abs() < 1e-9),
            *same,
        )
        recs = []
        if not b.is_empty():
            recs.append({**b.row(0, named=True), "arm": arm, "checkpoint": base, "step": 0, "_log": {}})
        for r in rows:
            name = r["model"].split("/", 1)[1]
            step = _ckpt_step(name, last) if (name != "final" or last is not None) else None
            recs.append({**r, "checkpoint": name, "step": step, "_log": log.get(step, {})})
        for r in sorted(recs, key=lambda x: (x["step"] is None, x["step"] or 0)):
            lg = r.pop("_log")
            rec = {
                "arm": arm,
                "checkpoint": r["checkpoint"],
                "step": r["step"],
                "evalset": r["evalset"],
                "condition": f"T{r['temperature']:g}",
                "temperature": r["temperature"],
                "n_prompts": r["n_prompts"],
                "k": r["k"],
                "accuracy": r["accuracy"],
                "accuracy_lo": r["accuracy_lo"],
                "accuracy_hi": r["accuracy_hi"],
                "boxed": r["boxed"],
                "length_stop": r["length_stop"],
                "accuracy_text": fmt.ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                "method": r["method"],
                "conf": r["conf"],
                "n_boot": r["n_boot"],
                "seed": r["seed"],
            }
            for c in LOG_AT_CHECKPOINT:
                rec[c] = lg.get(c)
            g2 = lg.get("G2_ema")
            rec["signal_norm"] = float(np.sqrt(max(g2, 0.0))) if g2 is not None else None
            out.append(rec)
    return pl.DataFrame(out, infer_schema_length=None)


def noise_summary(logs: dict[str, str | Path], recipes: dict[str, dict] | None = None) -> pl.DataFrame:
    """The noise-trap numbers per training run (default arms and log-only noise runs), from the logs.

    Columns: run, optimizer_state / lr / schedule (from ``recipes``, the run's SFT recipe), steps,
    peak_lr_step (first step at the maximum lr), frac_changed at the peak-LR step, its mean over all
    steps and over the last third, min and max; ppl at the first and last step and its mean;
    median grad_norm; G2_ema, trS_ema, B_simple and signal_norm (sqrt(max(G2_ema, 0))) at the last
    step where they are defined."""
    recipes = recipes or {}
    out = []
    for name, path in logs.items():
        rows = read_jsonl(path)
        if not rows:
            continue
        rec: dict = {"run": name}
        r = recipes.get(name, {})
        rec.update({"optimizer_state": r.get("optimizer_state"), "lr": r.get("lr"), "schedule": r.get("schedule")})
        lr = [x["lr"] for x in rows]
        peak = int(np.argmax(lr))
        fc = [x.get("frac_changed") for x in rows]
        have_fc = all(v is not None for v in fc)
        tail = fc[len(fc) - max(1, len(fc) // 3) :]
        ppl = [x["ppl"] for x in rows]
        rec.update(
            {
                "steps": len(rows),
                "peak_lr_step": rows[peak]["step"],
                "peak_lr": lr[peak],
                "frac_changed_at_peak_lr": fc[peak] if have_fc else None,
                "frac_changed_mean": float(np.mean(fc)) if have_fc else None,
                "frac_changed_mean_last_third": float(np.mean(tail)) if have_fc else None,
                "frac_changed_min": float(np.min(fc)) if have_fc else None,
                "frac_changed_max": float(np.max(fc)) if have_fc else None,
                "ppl_first": ppl[0],
                "ppl_last": ppl[-1],
                "ppl_mean": float(np.mean(ppl)),
                "grad_norm_median": float(np.median([x["grad_norm"] for x in rows])),
            }
        )
        est = [x for x in rows if x.get("G2_ema") is not None]
        e = est[-1] if est else {}
        rec.update(
            {
                "G2_ema_last": e.get("G2_ema"),
                "trS_ema_last": e.get("trS_ema"),
                "B_simple_last": e.get("B_simple"),
                "signal_norm_last": float(np.sqrt(max(e["G2_ema"], 0.0))) if e else None,
                "B_small": e.get("B_small"),
                "B_big": e.get("B_big"),
            }
        )
        out.append(rec)
    return pl.DataFrame(out, infer_schema_length=None)


# ------------------------------------------------------------------------------------------------
# sample-size planning (study §2): variance decomposition from k > 1 evals, n per arm
# ------------------------------------------------------------------------------------------------


def power_table(
    eval_files: Sequence[str | Path],
    results: str | Path,
    *,
    deltas: Sequence[float],
    alpha: float = 0.05,
    power: float = 0.8,
) -> pl.DataFrame:
    """Between/within-prompt variance of accuracy from every eval file with k > 1 samples per
    prompt (:func:`ssd_math.stats.variance_decomposition`), and the prompts per arm needed to
    detect each difference ``delta`` (fractions) by n = 2 sigma^2 (z_{alpha/2} + z_beta)^2 / delta^2
    (:func:`ssd_math.stats.sample_size`), with sigma^2 the per-prompt variance at one sample per
    prompt (between + within; ``n_k1``) and at the file's k (between + within / k; ``n_kk``).
    One row per (file, delta)."""
    out = []
    for path in eval_files:
        rows = read_jsonl(path)
        _, x = matrix(rows, "correct")
        if x.shape[1] < 2:
            continue
        where = describe_eval_path(path, results)
        vd = stats.variance_decomposition(x)
        for d in deltas:
            # zero variance (every prompt always right or always wrong) leaves n undefined: null
            s1 = stats.sample_size(vd["total"], d, alpha, power)
            sk = stats.sample_size(vd["var_prompt_mean"], d, alpha, power)
            out.append(
                {
                    "model": where["model"],
                    "evalset": where["evalset"],
                    "condition": where["condition"],
                    "n_prompts": vd["n_prompts"],
                    "k": vd["k"],
                    "accuracy": vd["mean"],
                    "between": vd["between"],
                    "within": vd["within"],
                    "between_share": vd["between_share"],
                    "design_effect": vd["design_effect"],
                    "variance_method": vd["method"],
                    "delta_pp": 100 * d,
                    "alpha": alpha,
                    "power": power,
                    "z_alpha2": s1["z_alpha2"],
                    "z_beta": s1["z_beta"],
                    "sigma2_k1": vd["total"],
                    "n_k1": s1["n"] if vd["total"] > 0 else None,
                    "sigma2_kk": vd["var_prompt_mean"],
                    "n_kk": sk["n"] if vd["var_prompt_mean"] > 0 else None,
                    "size_method": s1["method"],
                    "file": str(path),
                }
            )
    return pl.DataFrame(out, infer_schema_length=None)


# ------------------------------------------------------------------------------------------------
# measured cost: per-stage wall time of the jobs that ran (Snakemake benchmark: files)
# ------------------------------------------------------------------------------------------------


def timings_table(bench_files: Sequence[str | Path], benchmarks_dir: str | Path) -> pl.DataFrame:
    """Measured wall and CPU time per stage from Snakemake ``benchmark:`` files.

    The stage is the first folder under ``benchmarks_dir`` (data, model, samples, train,
    generate, grade, tables, figures, ...). Columns: stage, jobs, wall_s (sum over jobs),
    max_job_s, cpu_s (sum), max_rss_mb (max), slowest (the slowest job's file, relative);
    a final row ``total``. Jobs run in parallel, so the sum of wall times is the CPU-side cost,
    not the elapsed time of the run."""
    root = Path(benchmarks_dir).resolve()
    per: dict[str, dict] = {}
    for f in bench_files:
        p = Path(f).resolve()
        rel = p.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else "other"
        b = read_benchmark(p)
        s = per.setdefault(
            stage,
            {
                "stage": stage,
                "jobs": 0,
                "wall_s": 0.0,
                "max_job_s": 0.0,
                "cpu_s": 0.0,
                "max_rss_mb": 0.0,
                "slowest": None,
            },
        )
        s["jobs"] += 1
        s["wall_s"] += b["s_mean"] or 0.0
        s["cpu_s"] += b["cpu_time_s"] or 0.0
        s["max_rss_mb"] = max(s["max_rss_mb"], b["max_rss_mb"] or 0.0)
        if (b["s_mean"] or 0.0) >= s["max_job_s"]:
            s["max_job_s"] = b["s_mean"] or 0.0
            s["slowest"] = str(rel.with_suffix(""))
    rows = sorted(per.values(), key=lambda r: -r["wall_s"])
    if rows:
        rows.append(
            {
                "stage": "total",
                "jobs": sum(r["jobs"] for r in rows),
                "wall_s": sum(r["wall_s"] for r in rows),
                "max_job_s": max(r["max_job_s"] for r in rows),
                "cpu_s": sum(r["cpu_s"] for r in rows),
                "max_rss_mb": max(r["max_rss_mb"] for r in rows),
                "slowest": max(rows, key=lambda r: r["max_job_s"])["slowest"],
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "stage": pl.String,
            "jobs": pl.Int64,
            "wall_s": pl.Float64,
            "max_job_s": pl.Float64,
            "cpu_s": pl.Float64,
            "max_rss_mb": pl.Float64,
            "slowest": pl.String,
        },
    )
