"""Tables computed from graded eval files (the report only reads what these functions write).

Every row carries its estimator and interval method, n (prompts and samples per prompt), the
confidence level, the resample count and the seed, beside the numbers (ssd_math.stats computes
them: Wilson for k = 1, prompt-clustered bootstrap for k > 1, paired percentile bootstrap over
prompts for differences, the unbiased pass@k with a percentile bootstrap).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from . import stats
from .io import DataError, read_jsonl

METRICS = {  # column -> graded-row field
    "accuracy": "correct",
    "think_close": "think_closed",
    "boxed": "boxed",
    "length_stop": "length_stop",
}
STATUSES = ("correct", "incorrect", "no_answer", "timeout", "gold_parse_error", "error")


def describe_eval_path(path: str | Path, results: str | Path) -> dict:
    """Where an eval file sits says what it is: model, eval set, condition, kind."""
    rel = Path(path).resolve().relative_to((Path(results) / "eval").resolve())
    parts = rel.with_suffix("").parts
    if len(parts) == 4 and parts[2] == "checkpoints":
        return {"model": f"{parts[0]}/{parts[3]}", "arm": parts[0], "evalset": parts[1],
                "condition": parts[3], "kind": "checkpoint"}
    if len(parts) == 4 and parts[2] == "sweep":
        return {"model": parts[0], "arm": None, "evalset": parts[1], "condition": parts[3], "kind": "sweep"}
    if len(parts) == 3:
        kind = "passk" if "-k" in parts[2] else "grid"
        return {"model": parts[0], "arm": None, "evalset": parts[1], "condition": parts[2], "kind": kind}
    raise ValueError(f"{path}: not an eval file path under {results}/eval")


def matrix(rows: Sequence[dict], field: str, prompt_ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Rows -> (prompt ids, 0/1 array of shape (n_prompts, k)), prompts in first-seen order
    (or ``prompt_ids``' order). Every prompt must have the same number of samples."""
    by_prompt: dict[str, dict[int, float]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], {})[int(r["sample_index"])] = float(bool(r[field]))
    ids = list(prompt_ids) if prompt_ids is not None else list(by_prompt)
    missing = [i for i in ids if i not in by_prompt]
    if missing:
        raise DataError(f"{len(missing)} prompt(s) missing from the eval rows, e.g. {missing[0]!r}")
    ks = {len(by_prompt[i]) for i in ids}
    if len(ks) != 1:
        raise DataError(f"prompts have different sample counts {sorted(ks)}; cannot form a matrix")
    k = ks.pop()
    x = np.array([[by_prompt[i][j] for j in sorted(by_prompt[i])] for i in ids], dtype=float).reshape(len(ids), k)
    return ids, x


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


def metrics_table(eval_files: Sequence[str | Path], results: str | Path, *, conf: float, n_boot: int,
                  seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metrics: one row per eval file, breakdown: accuracy by level and by source)."""
    recs, brk = [], []
    for path in eval_files:
        rows = read_jsonl(path)
        where = describe_eval_path(path, results)
        recs.append({**where, **summarize_eval(rows, conf=conf, n_boot=n_boot, seed=seed), "file": str(path)})
        for by in ("level", "source"):
            groups: dict = {}
            for r in rows:
                groups.setdefault(r.get(by), []).append(r)
            if len(groups) <= 1 and by == "source":
                continue
            for value, grows in sorted(groups.items(), key=lambda kv: str(kv[0])):
                if value is None:
                    continue
                _, x = matrix(grows, "correct")
                res = stats.rate_ci(x, n_boot=n_boot, seed=seed, conf=conf)
                brk.append({**where, "by": by, "group": str(value), "n_prompts": x.shape[0], "k": x.shape[1],
                            **_ci_cols("accuracy", res), "method": res["method"], "conf": conf})
    return pl.DataFrame(recs), pl.DataFrame(brk)


def _fmt_ci(est: float, lo: float, hi: float, *, pp: bool = False) -> str:
    return f"{100 * est:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if pp else \
        f"{100 * est:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def table1(files: dict[tuple[str, str, str], str | Path], rows: Sequence[dict], sets: Sequence[str],
           ssd_arm: str, *, conf: float, n_boot: int, seed: int, fmt_t=lambda t: f"{t}") -> pl.DataFrame:
    """Table 1: rows (model, T); per eval set the accuracy [CI] and the paired SSD − base delta.

    ``files[(model, T-string, set)]`` is the graded file. The delta of a base row is (the first
    row of ``ssd_arm``) − (this row), on the same prompts, by paired percentile bootstrap over
    prompts, in percentage points."""
    ref = next((r for r in rows if r["model"] == ssd_arm), None)
    out = []
    for r in rows:
        t = fmt_t(r["temperature"])
        rec = {"row": f"{'Base' if r['model'] == 'base' else r['model']} @ T{t}", "model": r["model"], "temperature": float(t)}
        for s in sets:
            data = read_jsonl(files[(r["model"], t, s)])
            ids, x = matrix(data, "correct")
            res = stats.rate_ci(x, n_boot=n_boot, seed=seed, conf=conf)
            rec.update({f"{s}_acc": res["estimate"], f"{s}_lo": res["lo"], f"{s}_hi": res["hi"],
                        f"{s}_n_prompts": x.shape[0], f"{s}_k": x.shape[1],
                        f"{s}_text": _fmt_ci(res["estimate"], res["lo"], res["hi"]),
                        f"{s}_method": res["method"]})
            if ref is not None and r["model"] == "base":
                tr = fmt_t(ref["temperature"])
                _, y = matrix(read_jsonl(files[(ref["model"], tr, s)]), "correct", prompt_ids=ids)
                d = stats.paired_delta(y, x, n_boot=n_boot, seed=seed, conf=conf)
                rec.update({f"{s}_delta_pp": 100 * d["estimate"], f"{s}_delta_lo_pp": 100 * d["lo"],
                            f"{s}_delta_hi_pp": 100 * d["hi"], f"{s}_delta_p": d.get("p_boot"),
                            f"{s}_delta_text": _fmt_ci(d["estimate"], d["lo"], d["hi"], pp=True),
                            f"{s}_delta_method": d["method"]})
            else:
                rec.update({f"{s}_delta_pp": None, f"{s}_delta_lo_pp": None, f"{s}_delta_hi_pp": None,
                            f"{s}_delta_p": None, f"{s}_delta_text": "—", f"{s}_delta_method": None})
        rec.update({"conf": conf, "n_boot": n_boot, "seed": seed,
                    "delta_definition": f"{ssd_arm} @ T{fmt_t(ref['temperature'])} − this row" if ref else None})
        out.append(rec)
    return pl.DataFrame(out)


def table2(files: Sequence[str | Path], runs: Sequence[dict], k: int, ssd_arm: str, *, conf: float,
           n_boot: int, seed: int, fmt_t=lambda t: f"{t}") -> pl.DataFrame:
    """Table 2: pass@k on the hard set per run (count/n = % [CI]) and the paired delta of the
    first ``ssd_arm`` run against each base run."""
    data = {}
    for run, path in zip(runs, files):
        rows = read_jsonl(path)
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
        rec = {"row": f"{'Base' if run['model'] == 'base' else run['model']} @ T{key[1]}", "model": run["model"],
               "temperature": float(key[1]), "k": k, "n_prompts": x.shape[0], "samples_per_prompt": x.shape[1],
               "pass_at_k": res["estimate"], "lo": res["lo"], "hi": res["hi"], "count": solved,
               "text": (f"{solved}/{x.shape[0]} = " if solved is not None else "") + _fmt_ci(res["estimate"], res["lo"], res["hi"]),
               "method": res["method"], "conf": conf, "n_boot": n_boot, "seed": seed}
        if ref_key is not None and run["model"] == "base":
            rids, y = data[ref_key]
            _, y = matrix(read_jsonl(files[runs.index(next(r for r in runs if (r["model"], fmt_t(r["temperature"])) == ref_key))]),
                          "correct", prompt_ids=ids)
            d = stats.paired_pass_at_k_delta(np.full(y.shape[0], y.shape[1]), y.sum(1).astype(int), n_arr, c_arr, k,
                                             n_boot=n_boot, seed=seed, conf=conf)
            rec.update({"delta_pp": 100 * d["estimate"], "delta_lo_pp": 100 * d["lo"], "delta_hi_pp": 100 * d["hi"],
                        "delta_text": _fmt_ci(d["estimate"], d["lo"], d["hi"], pp=True), "delta_method": d["method"]})
        else:
            rec.update({"delta_pp": None, "delta_lo_pp": None, "delta_hi_pp": None, "delta_text": "—", "delta_method": None})
        out.append(rec)
    return pl.DataFrame(out)


def write_csv(df: pl.DataFrame, path: str | Path) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        df.write_csv(tmp)
