"""What report/report.qmd shows, written as strings (rule ``report_parts``): every table as a pandoc
pipe table, every method note, every sentence with a number, the provenance panel, and the
values its prose quotes, in one JSON object ``{name: text}`` (``tables/report_parts.json``).

The page then only places them (:class:`ssd_math.report_inputs.ReportInputs`): it computes
nothing, and every number it shows is in a file the DAG wrote. Which runs are the arms and which
are the log-only noise runs come from the config (the Layout's ``arms`` / ``noise_runs``, passed
in), never from the folders found on disk. Numbers are written by :mod:`ssd_math.fmt`.

This module writes the overview, Tables 1 and 2, the noise trap and the provenance rows, and
gathers every part (:func:`build_parts`); the locks-and-forks parts are
:mod:`ssd_math.report_probe`'s, the appendix's :mod:`ssd_math.report_appendix`'s.
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
from .report_appendix import _appendix
from .report_probe import _probe

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


def _noise(noise: pl.DataFrame, arms: Sequence[str], noise_runs: Sequence[str]) -> dict[str, str]:
    rows = {r["run"]: r for r in noise.iter_rows(named=True)}
    arm_rows = [rows[a] for a in arms if a in rows]
    noise_rows = [rows[p] for p in noise_runs if p in rows]
    lines = []
    for r in noise_rows:  # the precision switch at one learning rate: the clean contrast
        for c in noise_rows + arm_rows:
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
    if not noise_rows:
        lines.append(
            "(No optimizer-state noise run is configured; add e.g. `extra_arms.bf16-state` with "
            "`sft: {optimizer_state: bf16}` and list it in `noise_runs` to show the bf16-only collapse.)"
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
# all of it
# ------------------------------------------------------------------------------------------------


def build_parts(
    tables: Mapping[str, str | Path],
    filters: Mapping[str, str | Path],
    *,
    arms: Sequence[str],
    noise_runs: Sequence[str],
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
        **_noise(t["noise"], arms, noise_runs),
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
    noise_runs: Sequence[str],
    experiment: str,
) -> dict[str, Any]:
    """Rule report_parts: :func:`build_parts` -> ``out_json``."""
    parts = build_parts(tables, filters, arms=arms, noise_runs=noise_runs, experiment=experiment)
    write_json(out_json, parts)
    return parts
