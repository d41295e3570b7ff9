"""Tables computed from graded eval files (the report only reads what these functions write).

Every row carries its estimator and interval method, n (prompts and samples per prompt), the
confidence level, the resample count and the seed, beside the numbers (ssd_math.stats computes
them: Wilson for k = 1, prompt-clustered bootstrap for k > 1, paired percentile bootstrap over
prompts for differences, the unbiased pass@k with a percentile bootstrap).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from . import fmt, stats
from .derive import BASE
from .grading import STATUSES, answer_kind
from .io import DataError, read_benchmark, read_jsonl
from .layout import describe_eval_path
from .stats import matrix

METRICS = {  # column -> graded-row field
    "accuracy": "correct",
    "think_close": "think_closed",
    "boxed": "boxed",
    "length_stop": "length_stop",
}


def _ci_cols(prefix: str, res: dict) -> dict:
    return {prefix: res["estimate"], f"{prefix}_lo": res["lo"], f"{prefix}_hi": res["hi"]}


def summarize_eval(rows: Sequence[dict], *, conf: float, n_boot: int, seed: int) -> dict:
    """Accuracy and the three rates with CIs, status counts and mean length of one eval file."""
    if not rows:
        raise DataError("an eval file has no rows")
    out: dict = {}
    method = None
    for col, field in METRICS.items():
        _, x = matrix(rows, field)
        res = stats.rate_ci(x, n_boot=n_boot, seed=seed, conf=conf)
        out.update(_ci_cols(col, res))
        method = res["method"]
        out["n_prompts"], out["k"] = x.shape
    counts = Counter(r.get("status", "error") for r in rows)
    for s in STATUSES:
        out[f"n_{s}"] = counts.get(s, 0)
    out["n_samples"] = len(rows)
    out["mean_completion_tokens"] = float(np.mean([r["n_completion_tokens"] for r in rows]))
    out.update({"method": method, "conf": conf, "n_boot": n_boot, "seed": seed})
    s = rows[0].get("sampling", {})
    for key in ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "max_new_tokens"):
        out[key] = s.get(key)
    return out


def metrics_table(
    eval_files: Sequence[str | Path], results: str | Path, *, conf: float, n_boot: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metrics: one row per eval file, breakdown: accuracy and per-status counts by level, by
    source and by answer kind (``grading.answer_kind`` of the gold))."""
    recs, brk = [], []
    for path in eval_files:
        rows = read_jsonl(path)
        where = describe_eval_path(path, results)
        recs.append({**where, **summarize_eval(rows, conf=conf, n_boot=n_boot, seed=seed), "file": str(path)})
        for by in ("level", "source", "answer_kind"):
            groups: dict = {}
            for r in rows:
                groups.setdefault(row_group(r, by), []).append(r)
            if len(groups) <= 1 and by == "source":
                continue
            for value, grows in sorted(groups.items(), key=lambda kv: str(kv[0])):
                if value is None:
                    continue
                _, x = matrix(grows, "correct")
                res = stats.rate_ci(x, n_boot=n_boot, seed=seed, conf=conf)
                counts = Counter(r.get("status", "error") for r in grows)
                brk.append(
                    {
                        **where,
                        "by": by,
                        "group": str(value),
                        "n_prompts": x.shape[0],
                        "k": x.shape[1],
                        **_ci_cols("accuracy", res),
                        "method": res["method"],
                        "conf": conf,
                        **{f"n_{s}": counts.get(s, 0) for s in STATUSES},
                    }
                )
    return pl.DataFrame(recs, infer_schema_length=None), pl.DataFrame(brk, infer_schema_length=None)


def table1(
    files: dict[tuple[str, str, str], str | Path],
    rows: Sequence[dict],
    sets: Sequence[str],
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t=lambda t: f"{t}",
) -> pl.DataFrame:
    """Table 1: rows (model, T); per eval set the accuracy [CI] and the paired SSD − base delta.

    ``files[(model, T-string, set)]`` is the graded file. The delta of a base row is (the first
    row of ``ssd_arm``) − (this row), on the same prompts, by paired percentile bootstrap over
    prompts, in percentage points."""
    data = {key: read_jsonl(path) for key, path in files.items()}
    return _table1_rows(data, rows, sets, ssd_arm, conf=conf, n_boot=n_boot, seed=seed, fmt_t=fmt_t)


def _table1_rows(
    data: dict[tuple[str, str, str], list[dict]],
    rows: Sequence[dict],
    sets: Sequence[str],
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t,
) -> pl.DataFrame:
    """Table 1 from loaded graded rows (``data[(model, T-string, set)]``); see :func:`table1`."""
    ref = next((r for r in rows if r["model"] == ssd_arm), None)
    out = []
    for r in rows:
        t = fmt_t(r["temperature"])
        rec = {
            "row": f"{'Base' if r['model'] == 'base' else r['model']} @ T{t}",
            "model": r["model"],
            "temperature": float(t),
        }
        for s in sets:
            ids, x = matrix(data[(r["model"], t, s)], "correct")
            res = stats.rate_ci(x, n_boot=n_boot, seed=seed, conf=conf)
            rec.update(
                {
                    f"{s}_acc": res["estimate"],
                    f"{s}_lo": res["lo"],
                    f"{s}_hi": res["hi"],
                    f"{s}_n_prompts": x.shape[0],
                    f"{s}_k": x.shape[1],
                    f"{s}_text": fmt.ci(res["estimate"], res["lo"], res["hi"]),
                    f"{s}_method": res["method"],
                }
            )
            if ref is not None and r["model"] == BASE:
                tr = fmt_t(ref["temperature"])
                _, y = matrix(data[(ref["model"], tr, s)], "correct", prompt_ids=ids)
                d = stats.paired_delta(y, x, n_boot=n_boot, seed=seed, conf=conf)
                rec.update(
                    {
                        f"{s}_delta_pp": 100 * d["estimate"],
                        f"{s}_delta_lo_pp": 100 * d["lo"],
                        f"{s}_delta_hi_pp": 100 * d["hi"],
                        f"{s}_delta_p": d.get("p_boot"),
                        f"{s}_delta_text": fmt.ci(d["estimate"], d["lo"], d["hi"], pp=True),
                        f"{s}_delta_method": d["method"],
                    }
                )
            else:
                rec.update(
                    {
                        f"{s}_delta_pp": None,
                        f"{s}_delta_lo_pp": None,
                        f"{s}_delta_hi_pp": None,
                        f"{s}_delta_p": None,
                        f"{s}_delta_text": "—",
                        f"{s}_delta_method": None,
                    }
                )
        rec.update(
            {
                "conf": conf,
                "n_boot": n_boot,
                "seed": seed,
                "delta_definition": f"{ssd_arm} @ T{fmt_t(ref['temperature'])} − this row" if ref else None,
            }
        )
        out.append(rec)
    return pl.DataFrame(out, infer_schema_length=None)


def table2(
    files: Sequence[str | Path],
    runs: Sequence[dict],
    k: int,
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t=lambda t: f"{t}",
) -> pl.DataFrame:
    """Table 2: pass@k on the hard set per run (count/n = % [CI]) and the paired delta of the
    first ``ssd_arm`` run against each base run."""
    loaded = [read_jsonl(path) for path in files]
    return _table2_rows(loaded, runs, k, ssd_arm, conf=conf, n_boot=n_boot, seed=seed, fmt_t=fmt_t)


def _table2_rows(
    loaded: Sequence[list[dict]],
    runs: Sequence[dict],
    k: int,
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t,
) -> pl.DataFrame:
    """Table 2 from loaded graded rows (one list per run, in ``runs`` order); see :func:`table2`."""
    data = {}
    for run, rows in zip(runs, loaded):
        ids, x = matrix(rows, "correct")
        data[(run["model"], fmt_t(run["temperature"]))] = (ids, x)
    ref_key = next(((r["model"], fmt_t(r["temperature"])) for r in runs if r["model"] == ssd_arm), None)
    out = []
    for run in runs:
        key = (run["model"], fmt_t(run["temperature"]))
        ids, x = data[key]
        n_arr = np.full(x.shape[0], x.shape[1])
        c_arr = x.sum(axis=1).astype(int)
        res = stats.pass_at_k_ci(n_arr, c_arr, k, n_boot=n_boot, seed=seed, conf=conf)
        solved = int((stats.pass_at_k(n_arr, c_arr, k) == 1).sum()) if x.shape[1] == k else None
        rec = {
            "row": f"{'Base' if run['model'] == 'base' else run['model']} @ T{key[1]}",
            "model": run["model"],
            "temperature": float(key[1]),
            "k": k,
            "n_prompts": x.shape[0],
            "samples_per_prompt": x.shape[1],
            "pass_at_k": res["estimate"],
            "lo": res["lo"],
            "hi": res["hi"],
            "count": solved,
            "text": (f"{solved}/{x.shape[0]} = " if solved is not None else "")
            + fmt.ci(res["estimate"], res["lo"], res["hi"]),
            "method": res["method"],
            "conf": conf,
            "n_boot": n_boot,
            "seed": seed,
        }
        if ref_key is not None and run["model"] == BASE:
            rids, y = data[ref_key]
            _, y = matrix(
                loaded[runs.index(next(r for r in runs if (r["model"], fmt_t(r["temperature"])) == ref_key))],
                "correct",
                prompt_ids=ids,
            )
            d = stats.paired_pass_at_k_delta(
                np.full(y.shape[0], y.shape[1]),
                y.sum(1).astype(int),
                n_arr,
                c_arr,
                k,
                n_boot=n_boot,
                seed=seed,
                conf=conf,
            )
            rec.update(
                {
                    "delta_pp": 100 * d["estimate"],
                    "delta_lo_pp": 100 * d["lo"],
                    "delta_hi_pp": 100 * d["hi"],
                    "delta_text": fmt.ci(d["estimate"], d["lo"], d["hi"], pp=True),
                    "delta_method": d["method"],
                }
            )
        else:
            rec.update(
                {"delta_pp": None, "delta_lo_pp": None, "delta_hi_pp": None, "delta_text": "—", "delta_method": None}
            )
        out.append(rec)
    return pl.DataFrame(out, infer_schema_length=None)


# ------------------------------------------------------------------------------------------------
# breakdowns (study §5: "harder problems gain more"): Table 1 and Table 2 by level and by source
# ------------------------------------------------------------------------------------------------

BREAKDOWN_BY = ("level", "source")


def row_group(row: dict, by: str) -> str | None:
    """The breakdown group of a graded row (one rule for every breakdown): its ``level`` or
    ``source`` as a string, or the answer kind of its gold (``by="answer_kind"``); None when the
    row has no such value (it then belongs to no group)."""
    value = answer_kind(row.get("gold")) if by == "answer_kind" else row.get(by)
    return None if value is None else str(value)


def breakdown_groups(rows_by_key: dict, by: str) -> list[str]:
    """The groups of ``by`` present in the data (:func:`row_group`, sorted), or [] when the data
    has fewer than two of them (nothing to break down)."""
    vals = {row_group(r, by) for rows in rows_by_key.values() for r in rows} - {None}
    return sorted(vals, key=lambda v: (len(v), v)) if len(vals) >= 2 else []


def _filter_group(rows: list[dict], by: str, group: str) -> list[dict]:
    return [r for r in rows if row_group(r, by) == group]


def _stack_groups(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Per-group tables stacked, ``by`` and ``group`` first (empty when no group qualified)."""
    if not frames:
        return pl.DataFrame({"by": [], "group": []})
    df = pl.concat(frames, how="diagonal_relaxed")
    return df.select(["by", "group", *[c for c in df.columns if c not in ("by", "group")]])


def table1_breakdown(
    files: dict[tuple[str, str, str], str | Path],
    rows: Sequence[dict],
    sets: Sequence[str],
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t=lambda t: f"{t}",
    by: Sequence[str] = BREAKDOWN_BY,
) -> pl.DataFrame:
    """Table 1 within each difficulty level and each source (where the data has >= 2 of them).

    Each group is Table 1 computed on that group's prompts only (same estimator, interval and
    paired delta), with columns ``by``, ``group`` first. A set with no prompt in a group (e.g. the
    hard set has no easy levels) gets nulls for that set."""
    data = {key: read_jsonl(path) for key, path in files.items()}
    out = []
    for b in by:
        for g in breakdown_groups(data, b):
            sub = {key: _filter_group(v, b, g) for key, v in data.items()}
            present = [s for s in sets if all(sub[(r["model"], fmt_t(r["temperature"]), s)] for r in rows)]
            if not present:
                continue
            df = _table1_rows(sub, rows, present, ssd_arm, conf=conf, n_boot=n_boot, seed=seed, fmt_t=fmt_t)
            out.append(df.with_columns(pl.lit(b).alias("by"), pl.lit(g).alias("group")))
    return _stack_groups(out)


def table2_breakdown(
    files: Sequence[str | Path],
    runs: Sequence[dict],
    k: int,
    ssd_arm: str,
    *,
    conf: float,
    n_boot: int,
    seed: int,
    fmt_t=lambda t: f"{t}",
    by: Sequence[str] = BREAKDOWN_BY,
) -> pl.DataFrame:
    """Table 2 (pass@k, paired deltas) within each difficulty level and each source."""
    loaded = [read_jsonl(p) for p in files]
    out = []
    for b in by:
        for g in breakdown_groups(dict(enumerate(loaded)), b):
            sub = [_filter_group(v, b, g) for v in loaded]
            if not all(sub):
                continue
            df = _table2_rows(sub, runs, k, ssd_arm, conf=conf, n_boot=n_boot, seed=seed, fmt_t=fmt_t)
            out.append(df.with_columns(pl.lit(b).alias("by"), pl.lit(g).alias("group")))
    return _stack_groups(out)


# ------------------------------------------------------------------------------------------------
# baseline decoding sweeps (study §3, Figure A)
# ------------------------------------------------------------------------------------------------


def sweep_family(kind: str, condition: str) -> str:
    """'T grid' (the base model's T_eval grid), 'preset' or 'min-p' (rule generate_sweep)."""
    if kind == "grid":
        return "T grid"
    if condition.startswith("preset-"):
        return "preset"
    if condition.startswith("minp"):
        return "min-p"
    return "other"


def sweep_table(metrics: pl.DataFrame | str | Path, *, model: str = BASE) -> pl.DataFrame:
    """The base model's decoding baselines, one row per (eval set, condition): the T grid, the
    presets and the min-p grid, with accuracy and the three rates [CI] read from the metrics table
    (which computed them from the graded files). Sorted by eval set, family, temperature, min-p."""
    m = metrics if isinstance(metrics, pl.DataFrame) else pl.read_csv(metrics)
    d = m.filter((pl.col("model") == model) & pl.col("kind").is_in(["grid", "sweep"]))
    d = d.with_columns(
        pl.struct(["kind", "condition"])
        .map_elements(lambda s: sweep_family(s["kind"], s["condition"]), return_dtype=pl.String)
        .alias("family")
    )
    order = {"T grid": 0, "preset": 1, "min-p": 2, "other": 3}
    d = d.with_columns(pl.col("family").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
    d = d.with_columns(pl.col("condition").str.strip_prefix("preset-").alias("name"))
    texts = [
        pl.format(
            "{}% [{}, {}]",
            (100 * pl.col(c)).round(1),
            (100 * pl.col(f"{c}_lo")).round(1),
            (100 * pl.col(f"{c}_hi")).round(1),
        ).alias(f"{c}_text")
        for c in METRICS
    ]
    keep = [
        "evalset",
        "family",
        "name",
        "condition",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "presence_penalty",
        "max_new_tokens",
        "n_prompts",
        "k",
    ]
    for c in METRICS:
        keep += [c, f"{c}_lo", f"{c}_hi"]
    keep += ["mean_completion_tokens", "method", "conf", "n_boot", "seed", "file"]
    return (
        d.with_columns(texts)
        .sort(["evalset", "_o", "temperature", "min_p", "name"])
        .select(keep + [f"{c}_text" for c in METRICS])
    )


def report_numbers(table1: pl.DataFrame | str | Path, sweeps: pl.DataFrame | str | Path) -> dict:
    """The numbers report.qmd's prose quotes, each computed here so the prose only formats them:

    ``conf_label`` (the intervals' level as labels print it, ``"95%"``: :func:`stats.level_text` of
    Table 1's ``conf``), ``main_evalset`` (Table 1's first eval
    set), ``minp_temperature`` (the T of the base model's min-p sweep; None without one) and
    ``best_base`` (``condition``, ``accuracy_text``: the base decoding condition with the highest
    accuracy on the main eval set in the sweep table; None when it has no row there)."""
    t1 = table1 if isinstance(table1, pl.DataFrame) else pl.read_csv(table1)
    sw = sweeps if isinstance(sweeps, pl.DataFrame) else pl.read_csv(sweeps)
    main = next(c[: -len("_acc")] for c in t1.columns if c.endswith("_acc"))
    minp = sw.filter(pl.col("family") == "min-p")
    best = sw.filter(pl.col("evalset") == main).sort("accuracy", descending=True)
    return {
        "conf_label": stats.level_text(t1["conf"][0]),
        "main_evalset": main,
        "minp_temperature": float(minp["temperature"][0]) if minp.height else None,
        "best_base": ({k: best.row(0, named=True)[k] for k in ("condition", "accuracy_text")} if best.height else None),
    }


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
    """The noise-trap numbers per training run (default arms and log-only probes), from the logs.

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
