"""The study beside the run: each published claim of the study, its estimate and interval, this
run's, and whether this run's verdict agrees (rule ``study_table``; the report opens with it).

The claims live in one data file with their source (``report/study_claims.yaml``: the section of
docs/study.md each comes from, the study's estimate where it states one, its verdict). This run's
side is read only from tables the DAG built: ``tables/findings.json`` (the verdicts and numbers of
:mod:`ssd_math.findings`), ``tables/noise_summary.csv`` and ``tables/metrics.csv``. A claim this
run cannot decide (its arm was not built, its finding is ``undecided``) gets a row saying why.

How a claim's run side is read is the claim's ``run.kind`` (:data:`RUN_READERS`): ``finding``
(a findings.json verdict), ``threshold`` (a noise-summary column against the study's bound, every
default arm), ``precision`` (the bf16-only optimizer state against its fp32 control) and ``sweep``
(an arm changing one knob against ssd: overlapping Wilson intervals read as "no effect", a
conservative check, since the tables hold no paired interval between two arms).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from .config import read_yaml
from .derive import fmt_t
from .fmt import MINUS, NBSP, num, order, pct, pipe_table, pp, span, verdict
from .io import write_csv, write_text

__all__ = ["load_claims", "compare", "render_markdown", "write_study_table", "RUN_READERS"]

COLUMNS = [
    "claim",
    "section",
    "study_estimate",
    "study_verdict",
    "study_verdict_by_numbers",
    "run_estimate",
    "run_n",
    "run_verdict",
    "agrees",
    "overlap",
    "disagreement",
    "why",
    "short",
]
UNDECIDED = "cannot decide"


def load_claims(path: str | Path) -> dict:
    """The claims file, checked: every claim has key, claim, section, study.verdict and a known
    run.kind (a ValueError names the claim and the file)."""
    doc = read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list) or not doc.get("source"):
        raise ValueError(f"{path}: needs 'source' and a list 'claims'")
    for i, c in enumerate(doc["claims"]):
        for k in ("key", "claim", "section", "study", "run"):
            if k not in c:
                raise ValueError(f"{path}: claims[{i}] ({c.get('key')}) lacks '{k}'")
        st = c["study"]
        for d in ([st] if "estimate" in st else []) + list(st.get("contrast") or []):
            vals = [d.get(k) for k in ("estimate", "lo", "hi")]
            if not all(isinstance(v, (int, float)) for v in vals) or not vals[1] <= vals[0] <= vals[2]:
                raise ValueError(
                    f"{path}: claims[{i}] ({c['key']}).study: estimate, lo, hi must be numbers with "
                    f"lo <= estimate <= hi, not {vals}"
                )
        if "contrast" in st and len(st["contrast"]) != 2:
            raise ValueError(
                f"{path}: claims[{i}] ({c['key']}).study.contrast: two differences, not {len(st['contrast'])}"
            )
        if c["run"].get("kind") not in RUN_READERS:
            raise ValueError(
                f"{path}: claims[{i}] ({c['key']}).run.kind = {c['run'].get('kind')!r}: one of {', '.join(RUN_READERS)}"
            )
    return doc


def _pp(d: Mapping, est="delta_pp", lo="lo_pp", hi="hi_pp") -> str:
    return pp(d[est], d[lo], d[hi])


def _row(
    verdict: str | None,
    estimate: str = "—",
    n: str = "—",
    why: str = "",
    short: str = "",
    interval: tuple[float, float] | None = None,
    scale: str = "",
) -> dict:
    """This run's side of a claim; an undecided one carries ``why`` (the CSV) and ``short`` (the
    report's cell); ``interval`` is the run's (lo, hi) in the claim's unit where the study gives one
    to set beside it; ``scale`` what makes this run's scale differ from the study's, with numbers."""
    return {
        "run_estimate": estimate,
        "run_n": n,
        "run_verdict": verdict or UNDECIDED,
        "why": why,
        "short": short,
        "run_lo": None if interval is None else interval[0],
        "run_hi": None if interval is None else interval[1],
        "scale": scale,
    }


# ------------------------------------------------------------------------------------------------
# this run's side, per kind of claim
# ------------------------------------------------------------------------------------------------


def _finding(claim: dict, ctx: dict) -> dict:
    run = claim["run"]
    f = ctx["findings"].get(run["finding"])
    if f is None or f.get("verdict") in (None, "undecided"):
        why = _plain(f["text"]) if f else f"findings.json has no finding {run['finding']!r}"
        return _row(None, why=why, short="see its finding")
    nums = f.get("numbers") or {}
    if "sets" in nums:  # Table 1: one eval set, by its role
        sets = list(nums["sets"])
        i = {"main": 0, "hard": 1}[run.get("set", "main")]
        if i >= len(sets):
            return _row(
                None, why=f"this run's Table 1 has no {run.get('set')} eval set", short=f"no {run.get('set')} eval set"
            )
        d = nums["sets"][sets[i]]
        return _row(
            d["verdict"], f"{_pp(d)} on {sets[i]}", f"{d['n_prompts']} prompts", interval=(d["lo_pp"], d["hi_pp"])
        )
    if "delta_pp" in nums:  # Table 2
        k = nums.get("samples_per_prompt")
        return _row(
            f["verdict"],
            f"{pct(nums['ssd'])} vs {pct(nums['base'])}, {_pp(nums)}",
            f"{nums['n_prompts']} prompts × {k} samples",
            interval=(nums["lo_pp"], nums["hi_pp"]),
        )
    if "hard" in nums and "easy" in nums:
        h, e = nums["hard"], nums["easy"]
        return _row(
            f["verdict"],
            f"level {nums['hard_level']}: {_pp(h)}; level {nums['easy_level']}: {_pp(e)}",
            f"{h['n_prompts']} / {e['n_prompts']} prompts",
        )
    if "classes" in nums:
        d = nums["classes"].get("lock:strict") or {}
        if not d:
            return _row(None, why="the probe found no strict-lock positions", short="no strict locks probed")
        return _row(
            f["verdict"],
            f"{num(d['base_mean'], 2)} tokens at base, Δ{NBSP}{num(d['delta'], 2, sign=True)} "
            f"[{num(d['lo'], 2, sign=True)},{NBSP}{num(d['hi'], 2, sign=True)}]",
            f"{d['n_positions']} positions",
        )
    runs = {k: v for k, v in nums.items() if isinstance(v, dict) and "verdict" in v}
    if runs and all("B_big" in v for v in runs.values()):  # gradient signal
        parts = []
        finite = [v["B_simple"] for v in runs.values() if v.get("B_simple") is not None]
        if finite:
            parts.append(f"B_simple {span(finite, lambda x: f'{x:.3g}')}")
        swamped = [v["G2_ema"] for v in runs.values() if v.get("B_simple") is None]
        if swamped:
            parts.append(
                f"EMA |G|² {span(swamped, lambda x: f'{x:.3g}'.replace('-', MINUS))} ≤ 0 "
                f"({len(swamped)} of {len(runs)} runs)"
            )
        big = sorted({int(v["B_big"]) for v in runs.values()})
        return _row(f["verdict"], "; ".join(parts) + f" vs batch {'/'.join(map(str, big))}", f"{len(runs)} runs")
    if runs and all("min" in v for v in runs.values()):  # checkpoints
        return _row(
            f["verdict"],
            f"accuracy {span([v['min'] for v in runs.values()] + [v['max'] for v in runs.values()], pct)}",
            f"{len(runs)} arms, {next(iter(runs.values()))['n_prompts']} prompts",
        )
    return _row(f["verdict"])


def _arm_rows(ctx: dict) -> list[dict]:
    ns = ctx["noise"]
    if ns is None or ns.is_empty():
        return []
    return [r for r in ns.iter_rows(named=True) if r["run"] in ctx["arms"]]


def _threshold(claim: dict, ctx: dict) -> dict:
    run = claim["run"]
    rows = [r for r in _arm_rows(ctx) if r.get(run["column"]) is not None]
    if not rows:
        return _row(
            None,
            why=f"noise_summary.csv has no {run['column']} for this run's arms "
            "(sft.instrument.enabled off, or no training log)",
            short="no weight-change log",
        )
    vals = [r[run["column"]] for r in rows]
    ok = all(run["lo"] <= v <= run["hi"] for v in vals)
    steps = sorted({int(r["steps"]) for r in rows})
    return _row(
        "inside" if ok else "outside",
        f"{span(vals, pct)} (study bound {pct(run['lo'])}–{pct(run['hi'])})",
        f"{len(rows)} arms × {'/'.join(map(str, steps))} steps (census)",
        scale=_scale_note(claim, rows),
    )


#: the words of an interval order (fmt.order) for a contrast "a gains more than b"
CONTRAST_WORDS = {"above": "more", "below": "less", "overlap": "not distinguishable"}


def _contrast(claim: dict, ctx: dict) -> dict:
    """Two eval sets' paired differences of one Table 1 finding against each other (the study's
    comparison for "harder problems gain more": the 300 set's SSD − base against the 1k set's)."""
    run = claim["run"]
    f = ctx["findings"].get(run["finding"])
    sets = list(((f or {}).get("numbers") or {}).get("sets") or {})
    if f is None or len(sets) < 2 or f.get("verdict") in (None, "undecided"):
        return _row(None, why=f"findings.json has no {run['finding']!r} on two eval sets", short="needs two eval sets")
    idx = {"main": 0, "hard": 1}
    a, b = (f["numbers"]["sets"][sets[idx[run[k]]]] for k in ("a", "b"))
    w = CONTRAST_WORDS[order(a["lo_pp"], a["hi_pp"], b["lo_pp"], b["hi_pp"])]
    return _row(
        w,
        f"{sets[idx[run['a']]]} {_pp(a)} vs {sets[idx[run['b']]]} {_pp(b)}",
        f"{a['n_prompts']} / {b['n_prompts']} prompts",
    )


def _scale_note(claim: dict, rows: list[dict]) -> str:
    """What makes this run's weight-change fraction a different scale from the study's: its peak LR
    against the study's, and the smallest stored value an Adam step of that size (≈ lr per
    parameter) still moves in bf16 (relative spacing 2⁻⁸, a value changes when the step exceeds
    half of it: |w| < lr · 2⁹)."""
    study_lr = (claim.get("scale") or {}).get("study_peak_lr")
    lrs = sorted({float(r["peak_lr"]) for r in rows if r.get("peak_lr") is not None})
    if not study_lr or not lrs:
        return ""
    ratio = [lr / study_lr for lr in lrs]
    if all(0.5 <= x <= 2 for x in ratio):
        return ""

    def g(x: float) -> str:
        return f"{x:.3g}".replace("e-0", "e-")

    lr_s = "/".join(g(lr) for lr in lrs)
    return (
        f"peak LR {lr_s} = {span(ratio, g)}× the study's {g(study_lr)}: an Adam step "
        f"(≈{NBSP}lr) moves a bf16 value (spacing 2⁻⁸ of it) when |w|{NBSP}<{NBSP}lr{NBSP}·{NBSP}2⁹ = "
        f"{'/'.join(f'{lr * 512:.3g}' for lr in lrs)} here, {study_lr * 512:.3g} in the study"
    )


def _precision(claim: dict, ctx: dict) -> dict:
    ns = ctx["noise"]
    runs = (
        []
        if ns is None or ns.is_empty()
        else [
            r
            for r in ns.iter_rows(named=True)
            if r["run"] not in ctx["arms"] and r.get("frac_changed_mean") is not None
        ]
    )
    bf16 = [r for r in runs if r.get("optimizer_state") == "bf16"]
    for b in bf16:
        ctl = [r for r in runs if r.get("optimizer_state") == "fp32" and r.get("lr") == b.get("lr")]
        if ctl:
            c = ctl[0]
            lower = b["frac_changed_mean"] < c["frac_changed_mean"]
            return _row(
                "collapses" if lower else "does not collapse",
                f"{b['run']} {pct(b['frac_changed_mean'], 2)} vs {c['run']} {pct(c['frac_changed_mean'], 2)} per step",
                f"{b['steps']} / {c['steps']} steps (census)",
            )
    return _row(
        None,
        why="this run has no bf16-state log-only noise run beside an fp32 control at the same LR (noise_runs)",
        short="no bf16-state noise run",
    )


def _sweep(claim: dict, ctx: dict) -> dict:
    arms = [a for a in claim["run"].get("arms") or [] if a in ctx["arms"]]
    if not claim["run"].get("arms"):
        return _row(None, why="no arm of this config varies it", short="no arm varies it")
    if not arms:
        return _row(
            None,
            why=f"arm {', '.join(claim['run']['arms'])} is not among this run's arms "
            "(an extra arm: built when one of its files is asked for, or moved into arms)",
            short=f"arm {', '.join(claim['run']['arms'])} not built",
        )
    m, main, ssd = ctx["metrics"], ctx["main_set"], ctx["ssd_arm"]
    out = []
    for a in arms:
        t = fmt_t(ctx["arms"][a].get("t_eval", 0.7))

        def pick(model, t=t):
            if m is None:
                return None
            r = m.filter(
                (pl.col("model") == model)
                & (pl.col("evalset") == main)
                & (pl.col("condition") == f"T{t}")
                & (pl.col("kind") == "grid")
            )
            return r.row(0, named=True) if r.height else None

        x, y = pick(a), pick(ssd)
        if x is None or y is None:
            return _row(None, why=f"metrics.csv has no {main} T{t} row of {a} or {ssd}", short=f"no T{t} eval of {a}")
        overlap = x["accuracy_lo"] <= y["accuracy_hi"] and y["accuracy_lo"] <= x["accuracy_hi"]
        out.append(
            (
                "no effect" if overlap else "an effect",
                f"{a} {pct(x['accuracy'])} [{num(100 * x['accuracy_lo'])},{NBSP}{num(100 * x['accuracy_hi'])}] "
                f"vs {ssd} {pct(y['accuracy'])} [{num(100 * y['accuracy_lo'])},{NBSP}{num(100 * y['accuracy_hi'])}] "
                f"on {main} @ T{t}",
                f"{x['n_prompts']} prompts",
            )
        )
    words = {w for w, *_ in out}
    return _row(words.pop() if len(words) == 1 else "mixed", "; ".join(e for _, e, _ in out), out[0][2])


#: claim run.kind -> reader of this run's side
RUN_READERS: dict[str, Callable[[dict, dict], dict]] = {
    "finding": _finding,
    "contrast": _contrast,
    "threshold": _threshold,
    "precision": _precision,
    "sweep": _sweep,
}

#: the run-side word that means the claim holds, per kind (finding: the claim's own verdicts)
_AGREE = {"threshold": {"inside"}, "precision": {"collapses"}, "sweep": {"no effect"}, "contrast": set()}


def _plain(text: str) -> str:
    return text.replace("**", "")


def study_side(st: Mapping[str, Any]) -> tuple[str, str | None, tuple[float, float] | None]:
    """The study's estimate as text, its verdict by its own numbers (the rule this run's verdict
    follows: an interval of a difference against 0, two intervals against each other), and its
    interval (lo, hi) where it gives one difference."""
    if st.get("estimate") is not None and st.get("lo") is not None:
        return pp(st["estimate"], st["lo"], st["hi"], digits=2), verdict(st["lo"], st["hi"]), (st["lo"], st["hi"])
    if st.get("contrast"):
        a, b = st["contrast"]
        w = CONTRAST_WORDS[order(a["lo"], a["hi"], b["lo"], b["hi"])]
        text = " vs ".join(f"{x['label']} {pp(x['estimate'], x['lo'], x['hi'], digits=2)}" for x in (a, b))
        return text, w, None
    return st.get("text") or "not stated (verdict only)", None, None


def compare(
    claims: dict,
    *,
    findings_json: str | Path,
    noise_summary: str | Path | None,
    metrics: str | Path | None,
    arms: Mapping[str, dict],
    ssd_arm: str,
    main_set: str,
) -> pl.DataFrame:
    """One row per claim (:data:`COLUMNS`): the study's estimate, its stated verdict and its
    verdict by its own numbers, this run's estimate, n and verdict, ``agrees`` (yes / no / cannot
    decide, with ``why``), ``overlap`` (the study's interval and this run's, where both exist) and,
    for a "no", ``disagreement``: ``of scale`` where the claim's scale note explains it with
    numbers, else ``of mechanism`` (the same comparison, another verdict).

    A run agrees when its verdict is one the claim accepts (``run.verdicts``, or its kind's word),
    or the verdict the study's own numbers give by the same rule (the study's words can say more
    than its intervals do)."""
    fj = json.loads(Path(findings_json).read_text("utf-8"))
    ctx = {
        "findings": {f["key"]: f for f in fj["findings"]},
        "noise": pl.read_csv(noise_summary, infer_schema_length=None)
        if noise_summary and Path(noise_summary).exists()
        else None,
        "metrics": pl.read_csv(metrics, infer_schema_length=None) if metrics and Path(metrics).exists() else None,
        "arms": dict(arms),
        "ssd_arm": ssd_arm,
        "main_set": main_set,
    }
    out = []
    for c in claims["claims"]:
        st = c["study"]
        r = RUN_READERS[c["run"]["kind"]](c, ctx)
        est, by_numbers, interval = study_side(st)
        good = set(c["run"].get("verdicts") or _AGREE[c["run"]["kind"]]) | ({by_numbers} if by_numbers else set())
        agrees = UNDECIDED if r["run_verdict"] == UNDECIDED else "yes" if r["run_verdict"] in good else "no"
        overlap = None
        if interval is not None and r["run_lo"] is not None:
            overlap = "overlap" if order(r["run_lo"], r["run_hi"], *interval) == "overlap" else "do not overlap"
        kind = None if agrees != "no" else f"of scale: {r['scale']}" if r["scale"] else "of mechanism"
        out.append(
            {
                "key": c["key"],
                "claim": c["claim"],
                "section": c["section"],
                "study_estimate": est,
                "study_verdict": st["verdict"],
                "study_verdict_by_numbers": by_numbers,
                **{k: v for k, v in r.items() if k not in ("run_lo", "run_hi", "scale")},
                "agrees": agrees,
                "overlap": overlap,
                "disagreement": kind,
            }
        )
    return pl.DataFrame(out, schema={k: pl.Utf8 for k in ["key", *COLUMNS]})


def render_markdown(df: pl.DataFrame, claims: dict, *, absolute_comparable: bool) -> str:
    """The report's table (a pandoc pipe table in a ``study-table`` div, whose style lets its cells
    wrap so every column stays on screen; one short line per claim: the CSV keeps the long
    reasons) and one note under it. For a comparable recipe the agrees cell says whether the
    study's interval and this run's overlap."""
    rows, scales = [], []
    for r in df.iter_rows(named=True):
        run = (
            f"{r['short']}"
            if r["agrees"] == UNDECIDED
            else r["run_estimate"] + ("" if r["run_n"] == "—" else f"; n{NBSP}={NBSP}{r['run_n']}")
        )
        study_v = r["study_verdict"] + (
            f" (its numbers: {r['study_verdict_by_numbers']})"
            if r["study_verdict_by_numbers"] not in (None, r["study_verdict"])
            else ""
        )
        agrees = r["agrees"]
        if r["disagreement"]:
            kind = r["disagreement"].split(":", 1)
            agrees += f", {kind[0]}" + ("" if len(kind) == 1 else f" ({len(scales) + 1} below)")
            if len(kind) > 1:
                scales.append(f"({len(scales) + 1}) {r['claim']}: {kind[1].strip()}.")
        if absolute_comparable and r["overlap"]:
            agrees += f"; intervals {r['overlap']}"
        rows.append(
            {
                "claim (docs/study.md)": f"{r['claim']} ({r['section']})",
                "study": "—" if r["study_estimate"].startswith("not stated") else _breakable(r["study_estimate"]),
                "this run": _breakable(run),
                "verdict: study / this run": f"{study_v} / {r['run_verdict']}",
                "agrees": agrees,
            }
        )
    counts = {k: df.filter(pl.col("agrees") == k).height for k in ("yes", "no", UNDECIDED)}
    note = (
        f"*{counts['yes']} of {df.height} claims agree, {counts['no']} disagree, {counts[UNDECIDED]} "
        f"this run cannot decide* (why: `tables/study_vs_run.csv`, column `why`). The study's "
        f"estimate is its published one with the study's interval (docs/study.md §5; differences in percentage points), "
        f"— where it states only the verdict. A disagreement is *of scale* where the run's recipe differs "
        f"from the study's by the numbers given, else *of mechanism*. Source: {claims['source'].strip()}."
    )
    if scales:
        note += " *Of scale:* " + " ".join(scales)
    if not absolute_comparable:
        note += " *Not comparable:* the absolute numbers. " + claims["absolute_numbers"].strip()
    # column-page-right: Quarto lets the table use the page's right margin (the offline page is one
    # wide column and ignores it)
    return "::: {.study-table .column-page-right}\n" + pipe_table(rows) + ":::\n\n" + note + "\n"


def _breakable(text: str) -> str:
    """A cell's text with a break allowed between a difference and its interval (``Δ +2.40 pp``
    / ``[+0.30, +4.50]``): the interval itself stays whole."""
    return text.replace(f"pp{NBSP}[", "pp [")


def write_study_table(
    claims_path: str | Path,
    out_csv: str | Path,
    out_md: str | Path,
    *,
    findings_json: str | Path,
    noise_summary: str | Path | None,
    metrics: str | Path | None,
    arms: Mapping[str, dict],
    ssd_arm: str,
    main_set: str,
    absolute_comparable: bool,
) -> pl.DataFrame:
    """Rule study_table: ``tables/study_vs_run.csv`` and the report's markdown of it."""
    claims = load_claims(claims_path)
    df = compare(
        claims,
        findings_json=findings_json,
        noise_summary=noise_summary,
        metrics=metrics,
        arms=arms,
        ssd_arm=ssd_arm,
        main_set=main_set,
    )
    write_csv(df, out_csv)
    write_text(out_md, render_markdown(df, claims, absolute_comparable=absolute_comparable))
    return df
