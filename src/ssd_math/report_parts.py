"""What report/report.qmd shows, written as strings (rule ``report_parts``): every table as a pandoc
pipe table, every method note, every sentence with a number, the provenance panel, and the
values its prose quotes, in one JSON object ``{name: text}`` (``tables/report_parts.json``).

The page then only places them (:class:`ssd_math.report_inputs.ReportInputs`): it computes nothing, and
every number it shows is in a file the DAG wrote. Which runs are the arms and which are the
log-only noise probes comes from the config (the Layout's ``arms`` / ``noise_probes``, passed
in), never from the folders found on disk. Numbers are written by :mod:`ssd_math.fmt`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from . import fmt
from .fmt import pipe_table
from .io import write_json
from .stats import level_text

__all__ = ["PROBE_TABLES", "build_parts", "write_parts"]

#: the locks-and-forks probe's tables (rule probe_tables), by the name the parts use
PROBE_TABLES = ("deltas", "positions", "examples", "truth", "truth_effect", "fork_shares", "controls")

#: the packages the provenance panel names, in this order
PANEL_PACKAGES = ["torch", "transformers", "vllm", "accelerate", "snakemake", "math-verify", "polars", "numpy"]

NO_BREAKDOWN = "The eval data has no level or source breakdown (fewer than two values)."


def _csv(path: str | Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=None)


def _h(x: Any) -> str:
    return html.escape(str(x))


# ------------------------------------------------------------------------------------------------
# provenance panel (from findings.json's provenance; the renderer's row is added at render time)
# ------------------------------------------------------------------------------------------------


def provenance_rows(prov: Mapping[str, Any]) -> list[list[str]]:
    """The panel's rows ``[term, HTML]``: experiment and config hash, commit, base model, machines,
    packages (the ``rendered`` row is the report rule's: :func:`ssd_math.report_inputs.provenance_panel`)."""
    g = prov["git"]
    commit = (
        f"<code>{_h(g['commit'][:12])}</code>" + (" (uncommitted changes)" if g.get("dirty") else " (clean)")
        if g.get("commit")
        else f"unknown ({_h(g.get('error'))})"
    )
    machines = []
    for m in prov["machines"]:
        t = m.get("torch") or {}
        gpus = ", ".join(m["gpus"]) if m.get("gpus") else "no GPU"
        machines.append(
            f"{_h(m.get('cpu_model'))} ({m.get('usable_cores')}/{m.get('logical_cores')} cores); {_h(gpus)}"
            + (f"; torch {_h(t.get('version'))} ({_h(t.get('blas'))} BLAS, {_h(t.get('cpu_capability'))})" if t else "")
        )
    pk = ", ".join(f"{k} {'/'.join(prov['packages'][k])}" for k in PANEL_PACKAGES if k in prov["packages"])
    rows = [
        [
            "experiment",
            f"<code>{_h(prov['experiment'])}</code>, config hash "
            + ", ".join(f"<code>{_h(h)}</code>" for h in prov["config_hash"])
            if prov["config_hash"]
            else _h(prov["experiment"]),
        ],
        ["commit", commit],
    ]
    b = prov.get("base_model") or {}
    if b.get("weights_sha256"):
        rows.append(
            [
                "base model",
                f"<code>{_h(b['hub_id'])}</code> ({_h(b['origin'])}); weights sha256 "
                + ", ".join(f"<code>{_h(k)}</code> <code>{_h(v)}</code>" for k, v in b["weights_sha256"].items())
                + f"; data recipe <code>{_h(b['data_recipe_hash'])}</code>, pretrained at commit "
                f"<code>{_h(str(b['pretrained_at_commit'])[:12])}</code> on {_h(b['pretrained_on'])}",
            ]
        )
    rows.append(["machine" + ("s" if len(machines) > 1 else ""), "<br>".join(machines) or "not recorded"])
    rows.append(["packages", _h(pk) + (f"; Python {_h('/'.join(prov['python']))}" if prov.get("python") else "")])
    return rows


# ------------------------------------------------------------------------------------------------
# Tables 1 and 2 with their breakdowns
# ------------------------------------------------------------------------------------------------


def _table1(t1: pl.DataFrame, t1b: pl.DataFrame, level: str) -> dict[str, str]:
    sets = [c[: -len("_acc")] for c in t1.columns if c.endswith("_acc")]
    r = t1.row(0, named=True)
    cols = {
        "row": "model @ T_eval",
        **{f"{s}_text": f"{s} accuracy" for s in sets},
        **{f"{s}_delta_text": f"SSD − base, {s} (pp)" for s in sets},
    }
    delta_method = next(
        (x[f"{sets[0]}_delta_method"] for x in t1.iter_rows(named=True) if x[f"{sets[0]}_delta_method"]), "—"
    )
    out = {
        "table1": pipe_table(t1.select(list(cols)).rename(cols)),
        "table1_method": (
            f"*Method.* Accuracy: {r[sets[0] + '_method']}; n = {r[f'{sets[0]}_n_prompts']} prompts × "
            f"{r[f'{sets[0]}_k']} sample(s) on {sets[0]}"
            + "".join(f", {r[s + '_n_prompts']} on {s}" for s in sets[1:])
            + ". "
            f"Difference: {delta_method}, {r['n_boot']} resamples, seed {r['seed']}; "
            f"defined as {r['delta_definition']}."
        ),
    }
    if t1b.is_empty():
        out["table1_breakdown"] = NO_BREAKDOWN
        return out
    cols = {"by": "by", "group": "group", "row": "model @ T_eval"}
    for s in sets:
        if f"{s}_text" in t1b.columns:
            cols.update(
                {f"{s}_n_prompts": f"n, {s}", f"{s}_text": f"{s} accuracy", f"{s}_delta_text": f"SSD − base, {s} (pp)"}
            )
    out["table1_breakdown"] = (
        pipe_table(t1b.select(list(cols)).rename(cols).fill_null("—"))
        + f"\n: Table 1 by level and by source: accuracy [{level} CI] and the paired SSD − base "
        f"difference (pp [{level} CI]) within each group.\n"
    )
    b = t1b.row(0, named=True)
    dm = (
        next((x for x in t1b[f"{sets[0]}_delta_method"].to_list() if x), "—")
        if f"{sets[0]}_delta_method" in t1b.columns
        else "—"
    )
    out["table1_breakdown"] += "\n" + (
        fmt.method_note(
            b[f"{sets[0]}_method"], "per group (column n)", b[f"{sets[0]}_k"], b["n_boot"], b["seed"], b["conf"]
        )
        + f" Difference: {dm}, {b['n_boot']} resamples, seed {b['seed']}."
    )
    return out


def _table2(t2: pl.DataFrame, t2b: pl.DataFrame, level: str) -> dict[str, str]:
    r = t2.row(0, named=True)
    out = {
        "table2": pipe_table(
            t2.select(["row", "text", "delta_text"]).rename(
                {"row": "model @ T_eval", "text": f"pass@{t2['k'][0]}", "delta_text": "SSD − base (pp)"}
            )
        ),
        "table2_method": (
            f"*Method.* {r['method']}; n = {r['n_prompts']} prompts × {r['samples_per_prompt']} samples; "
            f"{r['n_boot']} resamples, seed {r['seed']}. pass@k by the unbiased estimator "
            f"1 − C(n−c, k)/C(n, k) (Chen et al. 2021)."
        ),
    }
    if t2b.is_empty():
        out["table2_breakdown"] = NO_BREAKDOWN
        return out
    out["table2_breakdown"] = (
        pipe_table(
            t2b.select(["by", "group", "row", "n_prompts", "text", "delta_text"]).rename(
                {
                    "row": "model @ T_eval",
                    "n_prompts": "n",
                    "text": f"pass@{t2b['k'][0]}",
                    "delta_text": "SSD − base (pp)",
                }
            )
        )
        + f"\n: Table 2 by level and by source: pass@k [{level} CI] and the paired SSD − base difference within "
        "each group.\n"
    )
    b = t2b.row(0, named=True)
    out["table2_breakdown"] += "\n" + fmt.method_note(
        b["method"],
        "per group (column n)",
        b["samples_per_prompt"],
        b["n_boot"],
        b["seed"],
        b["conf"],
        estimator=f"unbiased pass@{b['k']} per prompt, averaged over prompts",
    )
    return out


# ------------------------------------------------------------------------------------------------
# the noise trap
# ------------------------------------------------------------------------------------------------


def _noise(noise: pl.DataFrame, arms: Sequence[str], noise_probes: Sequence[str]) -> dict[str, str]:
    rows = {r["run"]: r for r in noise.iter_rows(named=True)}
    arm_rows = [rows[a] for a in arms if a in rows]
    probe_rows = [rows[p] for p in noise_probes if p in rows]
    lines = []
    for r in probe_rows:  # the precision switch at one learning rate: the clean contrast
        for c in probe_rows + arm_rows:
            if (
                c["peak_lr"] == r["peak_lr"]
                and c["optimizer_state"] != r["optimizer_state"]
                and r["optimizer_state"] == "bf16"
            ):
                lines.append(
                    f"At the same peak lr {r['peak_lr']:.3g} on the same samples, the bf16-only optimizer "
                    f"state changes {fmt.pct(r['frac_changed_mean'])} of the stored weights per step on "
                    f"average, the fp32 state ({c['run']}) {fmt.pct(c['frac_changed_mean'])}."
                )
    if not probe_rows:
        lines.append(
            "(No optimizer-state probe is configured; add e.g. `extra_arms.bf16-state` with "
            "`sft: {optimizer_state: bf16}` and list it in `noise_probes` to show the bf16-only collapse.)"
        )
    nv = noise.select(
        "run",
        "optimizer_state",
        "peak_lr",
        "steps",
        (100 * pl.col("frac_changed_at_peak_lr")).round(2).alias("% changed @ peak LR"),
        (100 * pl.col("frac_changed_mean_last_third")).round(2).alias("% changed, last third"),
        pl.col("ppl_first").round(3).alias("ppl first"),
        pl.col("ppl_last").round(3).alias("ppl last"),
        pl.col("grad_norm_median").alias("median |g|"),
        pl.col("signal_norm_last").alias("|G| last"),
        pl.col("B_simple_last").alias("B_simple last"),
    )
    return {"noise_contrast": "".join(f"\n{x}\n" for x in lines), "noise_table": pipe_table(nv, floatfmt=".3g")}


def _overview(filters: Mapping[str, str | Path]) -> str:
    rows = []
    for arm, path in filters.items():
        f = json.loads(Path(path).read_text("utf-8"))
        rows.append(
            {
                "arm": arm,
                "sampled": f["n_samples"],
                "kept": f["n_kept"],
                "dropped (length stop)": f["n_dropped"],
                "length-stop rate": fmt.pct(f["length_stop_rate"]),
                "mean kept tokens": round(f["mean_kept_completion_tokens"], 1),
            }
        )
    return pipe_table(rows)


# ------------------------------------------------------------------------------------------------
# locks and forks (the probe's tables)
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# the appendix
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# all of it
# ------------------------------------------------------------------------------------------------


def build_parts(
    tables: Mapping[str, str | Path],
    filters: Mapping[str, str | Path],
    *,
    arms: Sequence[str],
    noise_probes: Sequence[str],
    experiment: str,
) -> dict[str, Any]:
    """Every part of the page. ``tables``: name -> file (``numbers`` report_numbers.json,
    ``findings_json``, ``table1``, ``table2``, ``table1_breakdown``, ``table2_breakdown``, ``noise``,
    ``sweeps``, ``checkpoints``, ``metrics``, ``breakdown``, ``power``, ``timings`` and
    ``probe_<name>`` for :data:`PROBE_TABLES`); ``filters``: arm -> its filter_summary.json, the
    config's default arms in order."""
    missing = [
        k
        for k in (
            "numbers",
            "findings_json",
            "table1",
            "table2",
            "table1_breakdown",
            "table2_breakdown",
            "noise",
            "sweeps",
            "checkpoints",
            "metrics",
            "breakdown",
            "power",
            "timings",
        )
        if k not in tables
    ]
    if missing:
        raise ValueError(f"report parts: no input file named {', '.join(missing)}")
    numbers = json.loads(Path(tables["numbers"]).read_text("utf-8"))
    level = numbers["conf_label"]
    best = numbers["best_base"]
    prov = json.loads(Path(tables["findings_json"]).read_text("utf-8"))["provenance"]
    t = {
        k: _csv(tables[k])
        for k in (
            "table1",
            "table2",
            "table1_breakdown",
            "table2_breakdown",
            "noise",
            "sweeps",
            "checkpoints",
            "metrics",
            "breakdown",
            "power",
            "timings",
        )
    }
    out: dict[str, Any] = {
        "level": level,
        "experiment": experiment,
        "main_evalset": numbers["main_evalset"],
        "minp_temperature": "—" if numbers["minp_temperature"] is None else f"{numbers['minp_temperature']:.1f}",
        "best_base": "—" if best is None else f"{best['condition']} ({best['accuracy_text']})",
        "provenance_rows": provenance_rows(prov),
        "n_sidecars": prov["n_sidecars"],
        "overview": _overview(filters),
        **_table1(t["table1"], t["table1_breakdown"], level),
        **_table2(t["table2"], t["table2_breakdown"], level),
        **_noise(t["noise"], arms, noise_probes),
        **_appendix(t),
    }
    if all(f"probe_{n}" in tables for n in PROBE_TABLES):
        out.update(_probe({n: _csv(tables[f"probe_{n}"]) for n in PROBE_TABLES}, level))
    return out


def write_parts(
    out_json: str | Path,
    tables: Mapping[str, str | Path],
    filters: Mapping[str, str | Path],
    *,
    arms: Sequence[str],
    noise_probes: Sequence[str],
    experiment: str,
) -> dict[str, Any]:
    """Rule report_parts: :func:`build_parts` -> ``out_json``."""
    parts = build_parts(tables, filters, arms=arms, noise_probes=noise_probes, experiment=experiment)
    write_json(out_json, parts)
    return parts
