"""The report's locks-and-forks parts (for rule ``report_parts``, :mod:`ssd_math.report_parts`):
the probe's tables (rule probe_tables) as pipe tables, with their method notes and the sentences
that quote their numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from . import fmt
from .fmt import pipe_table
from .stats import level_text


def _struct_text(cols: Sequence[str], fn, name: str) -> pl.Expr:
    return pl.struct(list(cols)).map_elements(lambda s: fn(*(s[c] for c in cols)), return_dtype=pl.String).alias(name)


def _probe(pr: Mapping[str, pl.DataFrame], level: str) -> dict[str, str]:
    pd_, ct, tr, te, fs = pr["deltas"], pr["controls"], pr["truth"], pr["truth_effect"], pr["fork_shares"]
    ref_view = pd_.filter(pl.col("view") == "ref")["view_settings"][0] if not pd_.is_empty() else "—"
    probe_models = list(dict.fromkeys(pr["positions"]["model"].to_list()))
    compare = (
        ct["compare_arm"][0]
        if "compare_arm" in ct.columns and not ct.is_empty()
        else (probe_models[1] if len(probe_models) > 1 else "—")
    )
    out: dict[str, str] = {}
    pos0 = pr["positions"].filter(pl.col("model") == "base")
    counts = pos0.group_by("class").len().sort("class")
    out["probe_positions"] = (
        f"{pos0.height} positions in {pos0['carrier_id'].n_unique()} carriers "
        f"({pos0['prompt_id'].n_unique()} prompts) from {pos0['generator'].n_unique()} generators; "
        "classes (base model, reference view "
        + ref_view
        + "): "
        + ", ".join(f"{r['class']} {r['len']}" for r in counts.to_dicts())
        + "."
    )
    show = ["top1_before", "nucleus", "tail", "tail_k", "entropy_before"]
    dv = pd_.filter(
        (pl.col("view") == "ref") & pl.col("metric").is_in(show) & (pl.col("n_positions") > 0)
    ).with_columns(_struct_text(["delta", "lo", "hi"], fmt.dci, "d"))
    wide = dv.pivot(on="metric", index=["arm", "class", "n_positions", "n_prompts"], values="d")
    out["probe_deltas"] = pipe_table(
        wide.select(["arm", "class", "n_positions", "n_prompts", *[m for m in show if m in wide.columns]])
    )
    text = ""
    if not pd_.is_empty():
        r = pd_.row(0, named=True)
        text = (
            f"*Method.* Estimator: {r['method']}; {level_text(r['conf'])} intervals, {r['n_boot']} resamples; "
            "n = positions (prompts) per row. Each arm's own training-sampling truncation is the second "
            "view in tables/probe_deltas.csv (view = own), truncated top-1 and entropy there too."
        )
        for cls in ("lock:strict", "fork"):
            rr = pd_.filter((pl.col("arm") == compare) & (pl.col("view") == "ref") & (pl.col("class") == cls))
            if rr.is_empty() or rr["n_positions"][0] == 0:
                continue
            g = {x["metric"]: x for x in rr.to_dicts()}
            n, t, e = g["nucleus"], g["tail"], g["entropy_before"]
            text += (
                f"\n\nAt {cls} positions (n = {n['n_positions']}), {compare} − base: nucleus size "
                f"{fmt.dci(n['delta'], n['lo'], n['hi'], 2)} tokens (base mean {n['base_mean']:.2f}; the interval "
                f"{fmt.zero_text(n['lo'], n['hi'])}), tail mass {fmt.dci(t['delta'], t['lo'], t['hi'])} "
                f"({fmt.zero_text(t['lo'], t['hi'])}), entropy {fmt.dci(e['delta'], e['lo'], e['hi'])} nats "
                f"({fmt.zero_text(e['lo'], e['hi'])})."
            )
    out["probe_method"] = text
    ex = pr["examples"]
    out["probe_examples"] = (
        ""
        if ex.is_empty()
        else pipe_table(
            ex.filter(pl.col("arm") == compare).select(
                "class", "subclass", "context", "carrier_token", "base_top5", "arm_top5"
            )
        )
    )
    if ct.is_empty() or "delta" not in ct.columns:
        out["probe_controls"] = "No control arms configured (probe.controls)."
        out["probe_controls_method"] = out["probe_controls_truth"] = ""
    else:
        keep = ct.filter(~pl.col("quantity").str.ends_with(": top1") & ~pl.col("quantity").str.ends_with(": entropy"))
        cv = keep.with_columns(
            _struct_text(["delta", "lo", "hi"], fmt.dci, "Δ [CI]"),
            pl.col("compare").round(3),
            pl.col("control_value").round(3),
        )
        acc = (ct["family"] == "accuracy").any()
        out["probe_controls"] = pipe_table(
            cv.select("control", "family", "quantity", "compare", "control_value", "Δ [CI]", "n", "unit")
        )
        out["probe_controls_method"] = (
            f"*Method.* probe and ground-truth rows: {ct.filter(pl.col('family') != 'accuracy')['method'][0]}; "
            + (f"accuracy rows: {ct.filter(pl.col('family') == 'accuracy')['method'][0]}; " if acc else "")
            + f"{level_text(ct['conf'][0])}, {ct['n_boot'][0]} resamples."
        )
        lines = [
            f"- {q}: {r['compare_arm']} − {r['control']} = {fmt.dci(r['delta'], r['lo'], r['hi'])} "
            f"(n = {r['n']} {r['unit']}; the interval {fmt.zero_text(r['lo'], r['hi'])})."
            for q in ("lock: P(correct digit)", "fork: entropy over valid methods (bits)")
            for r in ct.filter((pl.col("family") == "ground truth") & (pl.col("quantity") == q)).to_dicts()
        ]
        out["probe_controls_truth"] = "\n".join(lines)
    if tr.is_empty() or "precision" not in tr.columns:
        out["probe_truth"] = "No labelled positions (ground truth exists only on the embedded synthetic task)."
        out["probe_truth_method"] = ""
    else:
        tv = tr.with_columns(
            _struct_text(["precision", "precision_lo", "precision_hi"], fmt.fixed, "precision [CI]"),
            _struct_text(["recall", "recall_lo", "recall_hi"], fmt.fixed, "recall [CI]"),
        )
        out["probe_truth"] = pipe_table(
            tv.select("model", "class", "n_true", "n_predicted", "n_both", "precision [CI]", "recall [CI]")
        )
        r = tr.row(0, named=True)
        out["probe_truth_method"] = (
            f"*Method.* {r['method']}; {level_text(r['conf'])}, {r['n_boot']} resamples; "
            f"n = {r['n_positions']} positions, {r['n_prompts']} prompts; precision is undefined (—) where "
            "a model predicts no position of the class. The task labels only result digits and method "
            "choices, so deterministic formatting tokens the probe calls lock-like count against lock precision."
        )
    out["probe_truth_effect"] = ""
    if not te.is_empty() and "quantity" in te.columns:
        tev = te.with_columns(
            _struct_text(["estimate", "lo", "hi"], lambda *a: fmt.dci(*a).replace("+", ""), "value [CI]"),
            _struct_text(["delta_vs_base", "delta_lo", "delta_hi"], fmt.dci, "Δ vs base [CI]"),
        )
        out["probe_truth_effect"] = pipe_table(
            tev.select("quantity", "model", "n_positions", "value [CI]", "Δ vs base [CI]")
        )
    out["probe_fork_method"] = ""
    if not fs.is_empty() and "share" in fs.columns:
        first = fs["method"][0]
        f1 = fs.filter(pl.col("method") == first).sort(["T", "model"])
        out["probe_fork_method"] = (
            f"*Method.* Share of solutions naming a method whose first method is '{first}'; {f1['ci_method'][0]}, "
            f"{level_text(f1['conf'][0])}; n = solutions with a method, per model and T: "
            + "; ".join(
                f"{r['model']} T{r['T']} {100 * r['share']:.1f}% (n={r['n_with_method']})" for r in f1.to_dicts()
            )
            + "."
        )
    return out
