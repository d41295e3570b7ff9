"""The report's "Findings" section: every finding of the study (:data:`STUDY_FINDINGS`), in its
order, each a sentence from the tables (:mod:`ssd_math.finding_sentences`, which says how its
wording follows the numbers).

:func:`write_findings` (rule ``findings``) reads the table CSVs that :mod:`ssd_math.tables` and
:mod:`ssd_math.run_tables` wrote (``table1.csv``, ``table2.csv``, ``table1_breakdown.csv``,
``noise_summary.csv``, ``checkpoints.csv``, and, when the locks-and-forks probe ran,
``probe_deltas.csv``) and writes ``findings.md`` (the prose the report includes verbatim) and
``findings.json`` (every number the prose quotes, plus the verdict each sentence states), beside a
provenance block gathered from the inputs' sidecars (:func:`ssd_math.provenance.provenance`).

Every finding of the study appears in every run: a table that cannot decide one gives a sentence
saying which table and what it lacks (:func:`_undecided`, verdict ``undecided``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from .finding_sentences import (
    Finding,
    _checkpoint_findings,
    _harder_findings,
    _noise_findings,
    _probe_findings,
    _table1_findings,
    _table2_findings,
)
from .io import write_json, write_text
from .provenance import base_model_provenance, provenance

__all__ = ["findings", "write_findings", "render_markdown"]


def _read(path: str | Path | None) -> pl.DataFrame | None:
    if path is None or not Path(path).exists():
        return None
    return pl.read_csv(path, infer_schema_length=None)


#: Every finding of the study (docs/study.md §4-§6), in its order: (key, the sentence's bold head,
#: the table it needs, what that table must hold). A run whose tables cannot decide one still says
#: so, with the reason (:func:`_undecided`), so no finding vanishes from a report.
STUDY_FINDINGS = (
    (
        "ssd_vs_matched",
        "SSD vs the matched baseline",
        "table1",
        "a base row at the SSD row's temperature (report.table1.rows)",
    ),
    ("ssd_vs_base_T1.0", "SSD vs the T1.0 baseline", "table1", "a Base @ T1.0 row (report.table1.rows)"),
    (
        "passk_vs_base_T0.7",
        "pass@k vs Base @ T0.7",
        "table2",
        "a pass@k run of the base at T0.7 and one of the SSD arm (eval.passk.runs)",
    ),
    (
        "harder_problems",
        "Harder problems",
        "table1_breakdown",
        "at least two levels with a paired SSD − matched-base difference",
    ),
    (
        "noise_weights",
        "Noise trap: weights",
        "noise_summary",
        "per-step weight-change fractions in the arms' training logs (sft.instrument.enabled)",
    ),
    (
        "noise_gradient",
        "Noise trap: gradient signal",
        "noise_summary",
        "the two-batch |G|² and tr(Σ) estimates in the training logs (needs micro_batch < global_batch "
        "and sft.instrument.enabled)",
    ),
    (
        "noise_checkpoints",
        "Noise trap: checkpoints",
        "checkpoints",
        "at least two evaluated checkpoints of an arm (sft.checkpoint_steps)",
    ),
    (
        "locks_and_forks",
        "Locks and forks",
        "probe_deltas",
        "nucleus-size deltas with intervals at probed positions (rules/probe.smk)",
    ),
)


def _undecided(key: str, head: str, table: str, needs: str, path: Any) -> Finding:
    built = path is not None and Path(path).exists()
    where = f"does not hold {needs}" if built else f"was not built in this run (it needs {needs})"
    text = f"**{head}.** This run cannot decide it: the table it is read from ({table}) {where}."
    return Finding(
        key, text, "undecided", {"table": table, "path": None if path is None else str(path), "needs": needs}
    )


def findings(tables: Mapping[str, str | Path | None], *, ssd_arm: str, arms: Sequence[str]) -> list[Finding]:
    """Every finding of the study, in its order (§5, then the noise trap, then the locks-and-forks
    probe): a sentence with a verdict from the tables, or (verdict ``undecided``) a sentence naming
    the table and what it lacks. ``tables`` maps ``table1``, ``table2``, ``table1_breakdown``,
    ``noise_summary``, ``checkpoints`` and optionally ``probe_deltas`` to CSV paths."""
    t1 = _read(tables["table1"])
    t2 = _read(tables.get("table2"))
    if t1 is None:
        raise FileNotFoundError(f"findings need table1: {tables['table1']}")
    out = _table1_findings(t1, ssd_arm)
    if t2 is not None:
        out += _table2_findings(t2, ssd_arm)
    out += _harder_findings(_read(tables.get("table1_breakdown")), t1, ssd_arm)
    out += _noise_findings(_read(tables.get("noise_summary")), arms)
    out += _checkpoint_findings(_read(tables.get("checkpoints")))
    out += _probe_findings(_read(tables.get("probe_deltas")))
    have = {f.key for f in out}
    order = {k: i for i, (k, *_) in enumerate(STUDY_FINDINGS)}
    for key, head, table, needs in STUDY_FINDINGS:
        if key not in have:
            out.append(_undecided(key, head, table, needs, tables.get(table)))
    # the study's findings in its order; any further one (another base row of Table 1) after them
    return sorted(out, key=lambda f: order.get(f.key, len(order)))


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def render_markdown(items: Sequence[Finding]) -> str:
    """The section's body: one bullet per finding (no heading: the report owns the heading)."""
    if not items:
        return "The tables support no finding (no SSD arm in Table 1).\n"
    return "\n".join(f"- {f.text}" for f in items) + "\n"


def write_findings(
    tables: Mapping[str, str | Path | None],
    out_md: str | Path,
    out_json: str | Path,
    *,
    ssd_arm: str,
    arms: Sequence[str],
    experiment: str,
    workdir: str | Path,
    provenance_inputs: Sequence[str | Path] = (),
    config_hash: str | None = None,
    base_model_dir: str | Path | None = None,
) -> dict:
    """Rule ``findings``: write ``findings.md`` and ``findings.json`` (the findings' numbers and
    verdicts, and the provenance block). Returns the JSON object."""
    items = findings(tables, ssd_arm=ssd_arm, arms=arms)
    obj = {
        "findings": [{"key": f.key, "verdict": f.verdict, "text": f.text, "numbers": f.numbers} for f in items],
        "provenance": provenance(
            [*tables_inputs(tables), *provenance_inputs],
            experiment=experiment,
            workdir=workdir,
            config_hash=config_hash,
        ),
    }
    obj["provenance"]["base_model"] = base_model_provenance(base_model_dir)
    write_text(out_md, render_markdown(items))
    write_json(out_json, obj)
    return obj


def tables_inputs(tables: Mapping[str, str | Path | None]) -> list[str]:
    return [str(p) for p in tables.values() if p is not None and Path(p).exists()]
