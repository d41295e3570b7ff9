"""Probing locks and forks (study §6), step 3 of 3 (rule probe_tables): the analysis.

:func:`analyse` — classification (:func:`ssd_math.probe_stats.classify`: lock-like / fork-like /
mixed from the base model's reference view; locks split into strict / swap / self-correction per
trained model, :func:`ssd_math.probe_stats.lock_subclass`), per-class deltas (trained - base) with
prompt-clustered bootstrap CIs (:func:`ssd_math.probe_stats.clustered_mean_ci`), example top-5 tables,
ground-truth recovery and the exact SSD effect at true locks / forks, fork-method shares in
sampled solutions, and the control comparison (compare arm vs each control). Its inputs are
:mod:`ssd_math.probe_positions`' positions and :mod:`ssd_math.probe_forward`'s distributions.

Conventions (what a position is, probabilities, truncation order, entropies): the docstring of
:mod:`ssd_math.probe_positions`.
"""

from __future__ import annotations

import logging
import math
import random
import re
from pathlib import Path

import numpy as np
import polars as pl

from . import derive, stats
from .io import read_jsonl, write_csv
from .probe_forward import METRICS
from .probe_positions import FORK_ALTERNATIVES, fork_decision_start, stable_seed
from .probe_stats import CI_METHOD, CLASSES, LOCK_SUBCLASSES, classify, clustered_mean_ci, lock_subclass
from .stats import matrix, wilson_ci

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- analysis
def _key(r: dict) -> tuple[str, int]:
    return (r["carrier_id"], int(r["j"]))


def method_entropy(alt_probs: dict[str, float]) -> tuple[float, float, float]:
    """(entropy in bits of the distribution renormalised over the valid methods, the mass on the
    valid methods, the share of the first alternative) from ``{alt: probability}``."""
    v = np.array(list(alt_probs.values()), dtype=float)
    mass = float(v.sum())
    if mass <= 0:
        return math.nan, 0.0, math.nan
    q = v / mass
    h = float(-(q[q > 0] * np.log2(q[q > 0])).sum())
    return h, mass, float(q[0])


def first_method(completion: str) -> str | None:
    """The first method a sampled solution names ("left" / "right" of :data:`FORK_ALTERNATIVES`)."""
    n = fork_decision_start(FORK_ALTERNATIVES[0], 0)
    prefix = FORK_ALTERNATIVES[0][:n]
    alts = [a[n:].rstrip(":").strip() for a in FORK_ALTERNATIVES]
    m = re.search(re.escape(prefix) + "(" + "|".join(map(re.escape, alts)) + ")", completion or "")
    return m.group(1) if m else None


def analyse(
    positions_path: str | Path,
    dists: dict[str, str | Path],
    *,
    probe: dict,
    views_: dict[str, dict],
    stats_cfg: dict,
    share_files: dict[tuple[str, str], str | Path],
    accuracy_files: dict[tuple[str, str, str], str | Path],
) -> dict[str, list[dict]]:
    """Rule probe_tables: every table of the probe, as lists of rows (module docstring, 3).

    ``dists``: {model: forward_model output} (``base`` and every probed arm); ``share_files``:
    {(model, T): graded eval file} for the method shares; ``accuracy_files``: {(model, set, T):
    graded eval file} for the control comparison's accuracy rows."""
    th = probe["classify"]
    conf, n_boot, seed = float(stats_cfg["conf"]), int(stats_cfg["n_boot"]), int(stats_cfg["seed"])
    carriers = {c["carrier_id"]: c for c in read_jsonl(positions_path)}
    pos_meta = {(cid, int(p["j"])): p for cid, c in carriers.items() for p in c["positions"]}
    by_model = {m: {_key(r): r for r in read_jsonl(path)} for m, path in dists.items()}
    base = by_model[derive.BASE]
    keys = sorted(base)
    for m, rows in by_model.items():
        if set(rows) != set(keys):
            raise ValueError(f"probe dists of {m!r} and base cover different positions")
    arms = [m for m in dists if m != derive.BASE]

    def cls_of(r):
        return classify(r["raw_top1"], r["raw_second"], int(r["ref|nucleus"]), r["ref|tail"], th)

    base_cls = {k: cls_of(base[k]) for k in keys}
    sub = {
        a: {
            k: lock_subclass(base[k]["top_tokens"][0], by_model[a][k]["top_tokens"][0], pos_meta[k].get("token", ""))
            for k in keys
            if base_cls[k] == "lock"
        }
        for a in arms
    }

    def ci(vals, ks, den=None, salt=""):
        return clustered_mean_ci(
            vals,
            [base[k]["prompt_id"] for k in ks],
            n_boot=n_boot,
            seed=seed + stable_seed(salt) % 100000,
            conf=conf,
            den=den,
        )

    def groups(a):
        g = {"all": keys}
        for c in CLASSES:
            g[c] = [k for k in keys if base_cls[k] == c]
        for s in LOCK_SUBCLASSES:
            g[f"lock:{s}"] = [k for k in keys if sub[a].get(k) == s]
        return g

    deltas, positions_tbl, examples = [], [], []
    for a in arms:
        for vname, view in (("ref", "ref"), ("own", f"arm:{a}")):
            for g, ks in groups(a).items():
                for m in METRICS:
                    bv = np.array([base[k][f"{view}|{m}"] for k in ks], dtype=float)
                    av = np.array([by_model[a][k][f"{view}|{m}"] for k in ks], dtype=float)
                    res = ci(av - bv, ks, salt=f"{a}{vname}{g}{m}")
                    deltas.append(
                        {
                            "arm": a,
                            "view": vname,
                            "view_settings": _fmt_view(views_[view]),
                            "class": g,
                            "metric": m,
                            "base_mean": float(bv.mean()) if len(ks) else math.nan,
                            "arm_mean": float(av.mean()) if len(ks) else math.nan,
                            "delta": res["estimate"],
                            "lo": res["lo"],
                            "hi": res["hi"],
                            "n_positions": len(ks),
                            "n_prompts": res["n_prompts"],
                            "method": CI_METHOD,
                            "n_boot": n_boot,
                            "conf": conf,
                        }
                    )
        rng = random.Random(seed)
        for c in CLASSES:
            ks = [k for k in keys if base_cls[k] == c]
            for k in sorted(rng.sample(ks, min(int(probe["examples"]), len(ks)))):
                car = carriers[k[0]]
                ctx = _context(car, k[1])
                examples.append(
                    {
                        "arm": a,
                        "class": c,
                        "subclass": sub[a].get(k, ""),
                        "carrier_id": k[0],
                        "j": k[1],
                        "context": ctx,
                        "carrier_token": pos_meta[k].get("token", ""),
                        "base_top5": _fmt_top(base[k]),
                        "arm_top5": _fmt_top(by_model[a][k]),
                    }
                )
    for m, rows in by_model.items():
        for k in keys:
            r = rows[k]
            positions_tbl.append(
                {
                    "model": m,
                    "carrier_id": k[0],
                    "j": k[1],
                    "prompt_id": r["prompt_id"],
                    "generator": carriers[k[0]]["generator"],
                    "class": base_cls[k],
                    "own_class": cls_of(r),
                    "label": pos_meta[k].get("label") or "",
                    "sources": ";".join(pos_meta[k]["sources"]),
                    "top1": r["raw_top1"],
                    "second": r["raw_second"],
                    "nucleus": int(r["ref|nucleus"]),
                    "tail": r["ref|tail"],
                    "entropy": r["ref|entropy_before"],
                }
            )

    # --- ground truth: recovery of the labels, and the SSD effect where it is exact
    truth, effect = [], []
    labelled = [k for k in keys if pos_meta[k].get("label")]
    if labelled:
        for m, rows in by_model.items():
            pred = {k: cls_of(rows[k]) for k in keys}
            for c in ("lock", "fork"):
                is_true = np.array([pos_meta[k].get("label") == c for k in keys], dtype=float)
                is_pred = np.array([pred[k] == c for k in keys], dtype=float)
                hit = is_true * is_pred
                prec = ci(hit, keys, den=is_pred, salt=f"p{m}{c}")
                rec = ci(hit, keys, den=is_true, salt=f"r{m}{c}")
                truth.append(
                    {
                        "model": m,
                        "class": c,
                        "n_true": int(is_true.sum()),
                        "n_predicted": int(is_pred.sum()),
                        "n_both": int(hit.sum()),
                        "precision": prec["estimate"],
                        "precision_lo": prec["lo"],
                        "precision_hi": prec["hi"],
                        "recall": rec["estimate"],
                        "recall_lo": rec["lo"],
                        "recall_hi": rec["hi"],
                        "n_positions": len(keys),
                        "n_prompts": prec["n_prompts"],
                        "method": "pooled ratio; " + CI_METHOD,
                        "n_boot": n_boot,
                        "conf": conf,
                    }
                )
        effect = _truth_effect(by_model, keys, pos_meta, views_, ci, conf, n_boot)
    shares = _fork_shares(share_files, conf) if labelled else []  # the task's methods only
    controls = _controls(probe, by_model, keys, base_cls, sub, effect, accuracy_files, ci, stats_cfg)
    return {
        "deltas": deltas,
        "positions": positions_tbl,
        "examples": examples,
        "truth": truth,
        "truth_effect": effect,
        "fork_shares": shares,
        "controls": controls,
    }


def _fmt_view(v: dict) -> str:
    k = "off" if v["top_k"] <= 0 else v["top_k"]
    p = "off" if v["top_p"] >= 1 else f"{v['top_p']:g}"
    return f"T{v['temperature']:g}, top-k {k}, top-p {p}"


def _fmt_top(r: dict) -> str:
    return "  ".join(f"{t!r}:{p:.3f}" for t, p in zip(r["top_tokens"], r["top_probs"]))


def _context(car: dict, j: int, n: int = 32) -> str:
    """The ``n`` characters of the completion before position ``j`` (newlines shown as ⏎)."""
    p = next(p for p in car["positions"] if int(p["j"]) == j)
    return ("…" + car["completion"][: int(p["char"])][-n:]).replace("\n", "⏎")


def _truth_effect(by_model, keys, pos_meta, views_, ci, conf, n_boot) -> list[dict]:
    locks = [k for k in keys if pos_meta[k].get("label") == "lock" and "correct" in pos_meta[k]["targets"]]
    forks = [
        k
        for k in keys
        if pos_meta[k].get("label") == "fork" and any(t.startswith("alt:") for t in pos_meta[k]["targets"])
    ]
    base = by_model[derive.BASE]
    out = []

    def fork_vals(rows, k):
        alts = {t[4:]: v for t, v in rows[k]["target_probs"].items() if t.startswith("alt:")}
        return method_entropy(alts)

    quantities = {
        "lock: P(correct digit)": (locks, lambda rows, k: rows[k]["target_probs"]["correct"]),
        "lock: top-1 is the correct digit": (
            locks,
            lambda rows, k: float(rows[k]["target_probs"]["correct"] >= rows[k]["raw_top1"] - 1e-12),
        ),
        "lock: tail mass outside top-k (ref)": (locks, lambda rows, k: rows[k]["ref|tail_k"]),
        "lock: tail mass outside nucleus (ref)": (locks, lambda rows, k: rows[k]["ref|tail"]),
        "fork: entropy over valid methods (bits)": (forks, lambda rows, k: fork_vals(rows, k)[0]),
        "fork: mass on valid methods": (forks, lambda rows, k: fork_vals(rows, k)[1]),
        f"fork: share of '{FORK_ALTERNATIVES[0]}'": (forks, lambda rows, k: fork_vals(rows, k)[2]),
    }
    for m, rows in by_model.items():
        for q, (ks, f) in quantities.items():
            v = np.array([f(rows, k) for k in ks], dtype=float)
            b = np.array([f(base, k) for k in ks], dtype=float)
            ok = np.isfinite(v) & np.isfinite(b)
            kk = [k for k, o in zip(ks, ok) if o]
            est = ci(v[ok], kk, salt=f"e{m}{q}")
            d = ci(v[ok] - b[ok], kk, salt=f"d{m}{q}") if m != derive.BASE else None
            out.append(
                {
                    "model": m,
                    "quantity": q,
                    "estimate": est["estimate"],
                    "lo": est["lo"],
                    "hi": est["hi"],
                    "delta_vs_base": d["estimate"] if d else None,
                    "delta_lo": d["lo"] if d else None,
                    "delta_hi": d["hi"] if d else None,
                    "n_positions": int(ok.sum()),
                    "n_prompts": est["n_prompts"],
                    "method": CI_METHOD + "; delta paired at the same positions",
                    "n_boot": n_boot,
                    "conf": conf,
                    "_values": dict(zip(kk, v[ok])),
                }
            )
    return out


def _fork_shares(share_files, conf) -> list[dict]:
    out = []
    alts = [a[fork_decision_start(FORK_ALTERNATIVES[0], 0) :].rstrip(":").strip() for a in FORK_ALTERNATIVES]
    for (model, t), path in share_files.items():
        methods = [first_method(r.get("completion", "")) for r in read_jsonl(path)]
        named = [x for x in methods if x]
        for alt in alts:
            n_alt = sum(1 for x in named if x == alt)
            lo, hi = wilson_ci(n_alt, len(named), conf) if named else (math.nan, math.nan)
            out.append(
                {
                    "model": model,
                    "T": t,
                    "method": alt,
                    "share": n_alt / len(named) if named else math.nan,
                    "lo": lo,
                    "hi": hi,
                    "n_with_method": len(named),
                    "n_samples": len(methods),
                    "ci_method": "Wilson score interval (one sample per prompt)",
                    "conf": conf,
                }
            )
    return out


def _controls(probe, by_model, keys, base_cls, sub, effect, accuracy_files, ci, stats_cfg) -> list[dict]:
    s_arm = probe["compare_arm"]
    out = []
    if s_arm not in by_model:
        return out
    eff = {(e["model"], e["quantity"]): e["_values"] for e in effect}
    for ctl in probe["controls"]:
        if ctl not in by_model:
            continue
        for g in ("lock", "fork", "mixed"):
            ks = [k for k in keys if base_cls[k] == g]
            for m in METRICS:
                sv = np.array([by_model[s_arm][k][f"ref|{m}"] for k in ks], dtype=float)
                cv = np.array([by_model[ctl][k][f"ref|{m}"] for k in ks], dtype=float)
                r = ci(sv - cv, ks, salt=f"c{ctl}{g}{m}")
                out.append(
                    _ctl_row(
                        s_arm,
                        ctl,
                        "probe (ref view)",
                        f"{g}: {m}",
                        sv.mean() if len(ks) else math.nan,
                        cv.mean() if len(ks) else math.nan,
                        r,
                        CI_METHOD,
                        stats_cfg,
                    )
                )
        for (model, q), vals in eff.items():
            if model != s_arm or (ctl, q) not in eff:
                continue
            cvals = eff[(ctl, q)]
            kk = [k for k in vals if k in cvals]
            d = np.array([vals[k] - cvals[k] for k in kk])
            r = ci(d, kk, salt=f"t{ctl}{q}")
            out.append(
                _ctl_row(
                    s_arm,
                    ctl,
                    "ground truth",
                    q,
                    np.mean([vals[k] for k in kk]),
                    np.mean([cvals[k] for k in kk]),
                    r,
                    CI_METHOD,
                    stats_cfg,
                )
            )
        for (model, es, t), path in accuracy_files.items():
            if model != s_arm or (ctl, es, t) not in accuracy_files:
                continue
            rs, rc = read_jsonl(path), read_jsonl(accuracy_files[(ctl, es, t)])
            ids = sorted({r["prompt_id"] for r in rs} & {r["prompt_id"] for r in rc})
            _, a = matrix(rs, "correct", ids)
            _, b = matrix(rc, "correct", ids)
            res = stats.paired_delta(
                a, b, n_boot=int(stats_cfg["n_boot"]), seed=int(stats_cfg["seed"]), conf=float(stats_cfg["conf"])
            )
            out.append(
                {
                    "compare_arm": s_arm,
                    "control": ctl,
                    "family": "accuracy",
                    "quantity": f"{es} @ T{t}",
                    "compare": res["estimate_a"],
                    "control_value": res["estimate_b"],
                    "delta": res["estimate"],
                    "lo": res["lo"],
                    "hi": res["hi"],
                    "p_boot": res["p_boot"],
                    "n": res["n_prompts"],
                    "unit": "prompts",
                    "method": res["method"],
                    "n_boot": res["n_boot"],
                    "conf": res["conf"],
                }
            )
    return out


def _ctl_row(s_arm, ctl, family, q, sv, cv, r, method, stats_cfg) -> dict:
    return {
        "compare_arm": s_arm,
        "control": ctl,
        "family": family,
        "quantity": q,
        "compare": float(sv),
        "control_value": float(cv),
        "delta": r["estimate"],
        "lo": r["lo"],
        "hi": r["hi"],
        "p_boot": None,
        "n": r["n_positions"],
        "unit": f"positions ({r['n_prompts']} prompts)",
        "method": method + "; paired at the same positions",
        "n_boot": int(stats_cfg["n_boot"]),
        "conf": float(stats_cfg["conf"]),
    }


def write_tables(tables: dict[str, list[dict]], outputs: dict[str, str | Path]) -> None:
    """Each table to its CSV (``outputs``: {table name: path}); private ``_`` columns dropped."""
    for name, path in outputs.items():
        rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in tables[name]]
        df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame({"empty": []})
        write_csv(df, path)
