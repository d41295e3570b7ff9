"""The study's findings as sentences, one builder per table: Table 1 (SSD vs each base row),
Table 2 (pass@k), the level breakdown (harder problems), the noise summary (weights, gradient
signal), the checkpoints, and the probe deltas (locks and forks). Each returns :class:`Finding`
records (the sentence, the numbers it quotes, the verdict it states), or none when its table cannot
decide; :mod:`ssd_math.findings` puts them in the study's order.

Wording follows the numbers, never the study's expectation:

* a paired difference "beats" its baseline when its interval lies above 0, "is worse than" it
  when the interval lies below 0, and "does not beat" it when the interval covers 0
  (:func:`verdict`); every such clause carries the estimate, the interval and n;
* "harder problems gain more" only when the hardest level's interval lies wholly above the
  easiest level's (non-overlapping intervals: a conservative check, the tables carry no interval
  of the difference of differences);
* the noise trap: the weight-change fraction is a census (every stored value counted, no
  interval); the batch is "noise-dominated" when the gradient noise scale B_simple exceeds the
  global batch, or when the EMA of |G|² is zero or negative (the noise swamps the signal at that
  batch size: B_simple has no finite positive value; the study saw such estimates too); the
  checkpoints are "flat" when the trained checkpoints' intervals all overlap.

Intervals are written with non-breaking spaces (U+00A0) so a browser never wraps one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .derive import BASE
from .fmt import NBSP, g3, n_prompts, num, order, pct, pp, rate, span, verdict
from .stats import level_text

__all__ = ["Finding", "verdict", "fmt_pp", "fmt_rate"]


@dataclass
class Finding:
    """One sentence of the section: ``key`` names the study's finding, ``numbers`` holds what the
    sentence quotes, ``verdict`` the word it chose (e.g. ``beats``)."""

    key: str
    text: str
    verdict: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)


fmt_pp, fmt_rate = pp, rate  # the names the findings' callers know
_num, _pct, _span, _n, _g = num, pct, span, n_prompts, g3


def _label(row: str) -> str:
    """``Base @ T0.7`` -> ``Base @ T0.7`` with a non-breaking space around the @."""
    return row.replace(" @ ", f"{NBSP}@{NBSP}")


# ------------------------------------------------------------------------------------------------
# the findings
# ------------------------------------------------------------------------------------------------


def _sets(table1: pl.DataFrame) -> list[str]:
    return [c[: -len("_delta_pp")] for c in table1.columns if c.endswith("_delta_pp")]


def _table1_findings(t1: pl.DataFrame, ssd_arm: str) -> list[Finding]:
    sets = _sets(t1)
    ssd = next((r for r in t1.iter_rows(named=True) if r["model"] == ssd_arm), None)
    if ssd is None:
        return []
    out = []
    for r in t1.iter_rows(named=True):
        if r["model"] != BASE or r.get(f"{sets[0]}_delta_pp") is None:
            continue
        matched = abs(r["temperature"] - ssd["temperature"]) < 1e-9
        t_text = r["row"].rsplit("@", 1)[-1].strip()  # "T0.7", as the table writes it
        who = "the matched baseline" if matched else f"the {t_text} baseline"
        clauses, nums, words = [], {}, []
        for s in sets:
            est, lo, hi = r[f"{s}_delta_pp"], r[f"{s}_delta_lo_pp"], r[f"{s}_delta_hi_pp"]
            if est is None:
                continue
            w = verdict(lo, hi)
            words.append(w)
            whom = _label(r["row"]) if not clauses else "it"
            clauses.append(f"{w} {whom} on {s} ({fmt_pp(est, lo, hi)}, {_n(r[f'{s}_n_prompts'], r.get(f'{s}_k'))})")
            nums[s] = {
                "delta_pp": est,
                "lo_pp": lo,
                "hi_pp": hi,
                "n_prompts": r[f"{s}_n_prompts"],
                "k": r.get(f"{s}_k"),
                "verdict": w,
                "method": r.get(f"{s}_delta_method"),
            }
        text = (
            f"**SSD vs {who}.** {_label(ssd['row'])} {' and '.join(clauses)} "
            f"(paired SSD − base difference, {level_text(r['conf'])} interval)."
        )
        key = "ssd_vs_matched" if matched else f"ssd_vs_base_{t_text}"
        out.append(
            Finding(key, text, words[0] if words else None, {"ssd_row": ssd["row"], "base_row": r["row"], "sets": nums})
        )
    return out


def _table2_findings(t2: pl.DataFrame, ssd_arm: str) -> list[Finding]:
    ssd = next((r for r in t2.iter_rows(named=True) if r["model"] == ssd_arm), None)
    if ssd is None:
        return []
    out = []
    for r in t2.iter_rows(named=True):
        if r["model"] != BASE or r.get("delta_pp") is None:
            continue
        k = int(r["k"])
        w = verdict(r["delta_lo_pp"], r["delta_hi_pp"])
        moves = {"beats": "rises", "does not beat": "does not move", "is worse than": "falls"}[w]
        text = (
            f"**pass@{k} vs {_label(r['row'])}.** pass@{k} on the hard set {moves}: {_label(ssd['row'])} "
            f"({fmt_rate(ssd['pass_at_k'], ssd['lo'], ssd['hi'])}) {w} {_label(r['row'])} "
            f"({fmt_rate(r['pass_at_k'], r['lo'], r['hi'])}; "
            f"{fmt_pp(r['delta_pp'], r['delta_lo_pp'], r['delta_hi_pp'])}, "
            f"{_n(r['n_prompts'], r['samples_per_prompt'])})."
        )
        out.append(
            Finding(
                f"passk_vs_base_{r['row'].rsplit('@', 1)[-1].strip()}",
                text,
                w,
                {
                    "k": k,
                    "ssd_row": ssd["row"],
                    "base_row": r["row"],
                    "ssd": ssd["pass_at_k"],
                    "base": r["pass_at_k"],
                    "delta_pp": r["delta_pp"],
                    "lo_pp": r["delta_lo_pp"],
                    "hi_pp": r["delta_hi_pp"],
                    "n_prompts": r["n_prompts"],
                    "samples_per_prompt": r["samples_per_prompt"],
                    "method": r.get("delta_method"),
                },
            )
        )
    return out


def _harder_findings(t1b: pl.DataFrame | None, t1: pl.DataFrame, ssd_arm: str) -> list[Finding]:
    if t1b is None or t1b.is_empty() or "by" not in t1b.columns:
        return []
    sets = _sets(t1)
    s = sets[0]
    ssd = next((r for r in t1.iter_rows(named=True) if r["model"] == ssd_arm), None)
    if ssd is None:
        return []
    lv = t1b.filter(
        (pl.col("by") == "level")
        & (pl.col("model") == BASE)
        & ((pl.col("temperature") - ssd["temperature"]).abs() < 1e-9)
        & pl.col(f"{s}_delta_pp").is_not_null()
    )
    if lv.height < 2:
        return []
    rows = sorted(lv.iter_rows(named=True), key=lambda r: float(r["group"]))
    easy, hard = rows[0], rows[-1]

    def part(r):
        return (
            f"level {r['group']}: {fmt_pp(r[f'{s}_delta_pp'], r[f'{s}_delta_lo_pp'], r[f'{s}_delta_hi_pp'])}, "
            f"{_n(r[f'{s}_n_prompts'], r.get(f'{s}_k'))}"
        )

    w, head = {
        "above": ("more", "Harder problems gain more"),
        "below": ("less", "Harder problems gain less"),
        "overlap": ("not distinguishable", "The tables do not show that harder problems gain more"),
    }[order(hard[f"{s}_delta_lo_pp"], hard[f"{s}_delta_hi_pp"], easy[f"{s}_delta_lo_pp"], easy[f"{s}_delta_hi_pp"])]
    overlap = "the intervals overlap" if w == "not distinguishable" else "the intervals do not overlap"
    text = (
        f"**Harder problems.** {head}: SSD − matched base on {s} at the hardest {part(hard)}, "
        f"at the easiest {part(easy)} ({overlap})."
    )
    return [
        Finding(
            "harder_problems",
            text,
            w,
            {
                "set": s,
                "hard_level": hard["group"],
                "easy_level": easy["group"],
                "hard": {
                    "delta_pp": hard[f"{s}_delta_pp"],
                    "lo_pp": hard[f"{s}_delta_lo_pp"],
                    "hi_pp": hard[f"{s}_delta_hi_pp"],
                    "n_prompts": hard[f"{s}_n_prompts"],
                },
                "easy": {
                    "delta_pp": easy[f"{s}_delta_pp"],
                    "lo_pp": easy[f"{s}_delta_lo_pp"],
                    "hi_pp": easy[f"{s}_delta_hi_pp"],
                    "n_prompts": easy[f"{s}_n_prompts"],
                },
            },
        )
    ]


#: more runs than this and a noise-trap / checkpoint finding gives ranges over the runs (each run's
#: numbers stay in findings.json and in the report's noise and checkpoint tables)
MAX_LISTED_RUNS = 2


def _overall(words: Sequence[str], heads: dict[str, str]) -> tuple[str, str]:
    """The verdict over runs (their common word, else "mixed") and its sentence head."""
    w = words[0] if len(set(words)) == 1 else "mixed"
    return w, heads[w]


def _steps_text(steps: Sequence[int]) -> str:
    return f"n{NBSP}={NBSP}" + (
        f"{steps[0]} steps each" if len(set(steps)) == 1 else f"{min(steps)}–{max(steps)} steps"
    )


def _noise_findings(noise: pl.DataFrame | None, arms: Sequence[str]) -> list[Finding]:
    if noise is None or noise.is_empty():
        return []
    out = []
    rows = [r for r in noise.iter_rows(named=True) if r["run"] in arms] or list(noise.iter_rows(named=True))
    noise_runs = [r for r in noise.iter_rows(named=True) if r["run"] not in arms]
    # 1. weights
    parts, nums = [], {}
    for r in rows:
        if r.get("frac_changed_at_peak_lr") is None:
            continue
        parts.append(
            f"{r['run']} {_pct(r['frac_changed_at_peak_lr'])} at the peak-LR step and "
            f"{_pct(r['frac_changed_mean_last_third'])} on average over the last third "
            f"(n{NBSP}={NBSP}{r['steps']} steps)"
        )
        nums[r["run"]] = {
            "at_peak_lr": r["frac_changed_at_peak_lr"],
            "mean_last_third": r["frac_changed_mean_last_third"],
            "steps": r["steps"],
        }
    if parts:
        peak = max(v["at_peak_lr"] for v in nums.values())
        w = "most values unchanged" if peak < 0.5 else "most values change"
        head = (
            "Most stored weights do not change in an optimizer step"
            if peak < 0.5
            else "Most stored weights change in an optimizer step"
        )
        if len(parts) > MAX_LISTED_RUNS:
            v = list(nums.values())
            parts = [
                f"{_span([x['at_peak_lr'] for x in v], _pct)} at the peak-LR step and "
                f"{_span([x['mean_last_third'] for x in v], _pct)} on average over the last "
                f"third across the {len(v)} runs ({', '.join(nums)}; "
                f"{_steps_text([x['steps'] for x in v])})"
            ]
        text = (
            f"**Noise trap: weights.** {head}: the fraction of stored (bf16) values changed is "
            + "; ".join(parts)
            + " (a census of every parameter at each step, no interval)."
        )
        for p in noise_runs:
            if p.get("frac_changed_mean") is not None:
                text += (
                    f" The log-only noise run {p['run']} ({p.get('optimizer_state')} optimizer state) "
                    f"changes {_pct(p['frac_changed_mean'], 2)} per step on average."
                )
                nums[p["run"]] = {"mean": p["frac_changed_mean"], "noise_run": True}
        out.append(Finding("noise_weights", text, w, nums))
    # 2. gradient signal
    parts, nums, words = [], {}, []
    for r in rows:
        b, g, big = r.get("B_simple_last"), r.get("signal_norm_last"), r.get("B_big")
        g2, trs = r.get("G2_ema_last"), r.get("trS_ema_last")
        if big is None or g2 is None:
            continue
        if g2 <= 0 or b is None:
            # |G|² <= 0: the batch-size difference of the squared norms is all noise, so B_simple
            # (tr(Σ)/|G|²) has no finite positive value: noise swamps the signal at this batch size
            # (study §4: "the raw |G|² estimate can be negative")
            words.append("noise-dominated")
            parts.append(
                f"{r['run']}: the EMA of |G|²{NBSP}={NBSP}{g2:.3g} ≤ 0 against tr(Σ){NBSP}="
                f"{NBSP}{_g(trs)} after n{NBSP}={NBSP}{r['steps']} steps, so the noise swamps "
                f"the signal at the batch of {int(big)} (B_simple is undefined: no batch "
                "size would make the signal dominate)"
            )
            nums[r["run"]] = {
                "B_simple": None,
                "signal_norm": 0.0,
                "G2_ema": g2,
                "trS_ema": trs,
                "B_big": big,
                "signal_over_grad_norm": 0.0,
                "verdict": words[-1],
            }
            continue
        noisy = b > big
        words.append("noise-dominated" if noisy else "signal-dominated")
        ratio = g / r["grad_norm_median"] if r.get("grad_norm_median") else None
        parts.append(
            f"{r['run']}: B_simple{NBSP}={NBSP}{b:.3g} sequences "
            f"{'>' if noisy else '≤'} the batch of {int(big)}, |G|{NBSP}={NBSP}{g:.3g} "
            f"after n{NBSP}={NBSP}{r['steps']} steps"
            + (f" ({_pct(ratio, 0)} of the median observed gradient norm)" if ratio is not None else "")
        )
        nums[r["run"]] = {
            "B_simple": b,
            "signal_norm": g,
            "G2_ema": g2,
            "trS_ema": trs,
            "B_big": big,
            "signal_over_grad_norm": ratio,
            "verdict": words[-1],
        }
    if parts:
        w, head = _overall(
            words,
            {
                "noise-dominated": "Each step's gradient is noise-dominated",
                "signal-dominated": "Each step's gradient is signal-dominated",
                "mixed": "The runs differ in whether the gradient is noise-dominated",
            },
        )
        if len(parts) > MAX_LISTED_RUNS:
            parts = []
            for verdict, sign in (("noise-dominated", ">"), ("signal-dominated", "≤")):
                runs = {k: v for k, v in nums.items() if v["verdict"] == verdict}
                finite = {k: v for k, v in runs.items() if v["B_simple"] is not None}
                swamped = [k for k in runs if k not in finite]
                if finite:
                    big = sorted({int(v["B_big"]) for v in finite.values()})
                    parts.append(
                        f"{verdict} for {', '.join(finite)} (B_simple{NBSP}="
                        f"{NBSP}{_span([v['B_simple'] for v in finite.values()], lambda x: f'{x:.3g}')} "
                        f"sequences {sign} the batch of {'/'.join(map(str, big))})"
                    )
                if swamped:
                    big = sorted({int(runs[k]["B_big"]) for k in swamped})
                    parts.append(
                        f"noise-dominated for {', '.join(swamped)}: the EMA of |G|² is "
                        f"{_span([runs[k]['G2_ema'] for k in swamped], _g)} ≤ 0 against tr(Σ)"
                        f"{NBSP}={NBSP}{_span([runs[k]['trS_ema'] for k in swamped], _g)}, so the "
                        f"noise swamps the signal at the batch of {'/'.join(map(str, big))} "
                        "(B_simple is undefined)"
                    )
            steps = [r["steps"] for r in rows if r["run"] in nums]
            parts.append(
                f"|G|{NBSP}={NBSP}{_span([v['signal_norm'] for v in nums.values()], lambda x: f'{x:.3g}')} "
                f"({_steps_text(steps)})"
            )
        text = (
            f"**Noise trap: gradient signal.** {head} at the last step: "
            + "; ".join(parts)
            + " (two-batch estimator of McCandlish et al. 2018, EMA-smoothed; no interval)."
        )
        out.append(Finding("noise_gradient", text, w, nums))
    return out


def _checkpoint_findings(ck: pl.DataFrame | None) -> list[Finding]:
    if ck is None or ck.is_empty():
        return []
    out = []
    parts, nums, words = [], {}, []
    for arm in dict.fromkeys(ck["arm"].to_list()):
        tr = ck.filter((pl.col("arm") == arm) & (pl.col("step") > 0)).sort("step")
        if tr.height < 2:
            continue
        flat = tr["accuracy_lo"].max() <= tr["accuracy_hi"].min()  # every pair of intervals overlaps
        words.append("flat" if flat else "not flat")
        a, b = tr.row(-2, named=True), tr.row(-1, named=True)
        parts.append(
            f"{arm}: {tr.height} checkpoints from {_pct(tr['accuracy'].min())} to "
            f"{_pct(tr['accuracy'].max())}, the last two {fmt_rate(a['accuracy'], a['accuracy_lo'], a['accuracy_hi'])} "
            f"(step {a['step']}) and {fmt_rate(b['accuracy'], b['accuracy_lo'], b['accuracy_hi'])} "
            f"(step {b['step']}), {_n(b['n_prompts'], b.get('k'))} on {b['evalset']} at {b['condition']}"
        )
        nums[arm] = {
            "n_checkpoints": tr.height,
            "min": tr["accuracy"].min(),
            "max": tr["accuracy"].max(),
            "last_two": [a["accuracy"], b["accuracy"]],
            "steps": [a["step"], b["step"]],
            "n_prompts": b["n_prompts"],
            "verdict": words[-1],
        }
    if parts:
        w, head = _overall(
            words,
            {
                "flat": "Accuracy is flat across checkpoints (all intervals overlap)",
                "not flat": "Accuracy is not flat across checkpoints (some intervals do not overlap)",
                "mixed": "Accuracy is flat across checkpoints for some arms only",
            },
        )
        if len(parts) > MAX_LISTED_RUNS:
            v = list(nums.values())
            last = ck.filter(pl.col("step") > 0).sort("step").group_by("arm").last()
            r0 = last.row(0, named=True)
            n_ck = sorted({x["n_checkpoints"] for x in v})
            parts = [
                f"across the {len(v)} arms ({', '.join(nums)}; "
                + (f"{n_ck[0]} checkpoints each" if len(n_ck) == 1 else f"{n_ck[0]}–{n_ck[-1]} checkpoints")
                + f") accuracy stays within {_pct(min(x['min'] for x in v))}–"
                f"{_pct(max(x['max'] for x in v))}, {_n(r0['n_prompts'], r0.get('k'))} on "
                f"{r0['evalset']} at {r0['condition']}"
            ]
        text = f"**Noise trap: checkpoints.** {head}: " + "; ".join(parts) + "."
        out.append(Finding("noise_checkpoints", text, w, nums))
    return out


#: the probe classes the locks-and-forks sentence names (every class stays in findings.json)
SENTENCE_CLASSES = ("lock:strict", "fork")


def _probe_findings(pd_: pl.DataFrame | None) -> list[Finding]:
    """Locks and forks (study §6): the nucleus-size change at strict locks, from probe_deltas.csv
    (columns arm, view, class, metric, delta, lo, hi, n_positions, n_prompts, base_mean)."""
    if pd_ is None or pd_.is_empty() or not {"arm", "view", "class", "metric", "delta"} <= set(pd_.columns):
        return []
    rows = pd_.filter(
        (pl.col("view") == "ref")
        & (pl.col("metric") == "nucleus")
        & (pl.col("n_positions") > 0)
        & pl.col("lo").is_not_null()
    )
    if rows.is_empty():
        return []
    arm = rows["arm"][0]
    parts, nums = [], {}
    mine = rows.filter(pl.col("arm") == arm)
    said = [c for c in SENTENCE_CLASSES if c in mine["class"].to_list()] or mine["class"].to_list()
    for r in mine.iter_rows(named=True):
        w = verdict(r["lo"], r["hi"], above="grows", covers="does not change", below="shrinks")
        nums[r["class"]] = {
            "delta": r["delta"],
            "lo": r["lo"],
            "hi": r["hi"],
            "base_mean": r["base_mean"],
            "n_positions": r["n_positions"],
            "verdict": w,
        }
        if r["class"] not in said:
            continue
        parts.append(
            f"at {r['class']} positions it {w} ({_num(r['base_mean'], 2)} tokens at base, "
            f"Δ{NBSP}{_num(r['delta'], 2, sign=True)} [{_num(r['lo'], 2, sign=True)},{NBSP}"
            f"{_num(r['hi'], 2, sign=True)}], n{NBSP}={NBSP}{r['n_positions']} positions in "
            f"{r['n_prompts']} prompts)"
        )
    text = (
        f"**Locks and forks.** The nucleus after truncation, {arm} − base: "
        + "; ".join(parts)
        + " (the other classes: the report's probe tables)."
    )
    strict = nums.get("lock:strict", {}).get("verdict")  # the study's claim is about strict locks
    return [Finding("locks_and_forks", text, strict, {"arm": arm, "classes": nums})]
