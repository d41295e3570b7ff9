"""Tables computed from graded eval files (the report only reads what these functions write).

Every row carries its estimator and interval method, n (prompts and samples per prompt), the
confidence level, the resample count and the seed, beside the numbers (ssd_math.stats computes
them: Wilson for k = 1, prompt-clustered bootstrap for k > 1, paired percentile bootstrap over
prompts for differences, the unbiased pass@k with a percentile bootstrap).

The training runs' tables, the sample-size plan and the measured cost live in
:mod:`ssd_math.run_tables`.
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
from .io import DataError, read_jsonl
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
