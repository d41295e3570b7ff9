"""Real data preparation, the selections: the training prompt pool (:func:`build_training_pool`)
and the two validation sets (:func:`build_eval_sets`: the ~1k "main" set and its harder ~300
subset), from the sources :mod:`ssd_math.problem_sources` loads and validates (a source spec's
keys: that module's docstring; ``levels`` and ``share`` are read here for the pool, ``quota`` and
``difficulty_rank`` for the eval sets).

Selections are deterministic and stable: rows are ordered by ``sha256(seed | id)``, so the same
seed gives the same rows whatever the input order, and a bigger budget is a superset of a
smaller one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ssd_math.io import DataError
from ssd_math.problem_sources import load_source, normalize_problem, validate_rows


def stable_order_key(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}|{row_id}".encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# training pool
# ----------------------------------------------------------------------------------------------


def _source_name(spec: Mapping) -> str:
    return spec["name"]


def _load_validated(spec: dict, *, cache_dir, root) -> tuple[str, list[dict], dict, dict]:
    """(name, valid rows, load report, validation report) of one configured source."""
    name = _source_name(spec)
    load_rep: dict = {}
    rows = load_source(spec, cache_dir=cache_dir, root=root, report=load_rep)
    rows, val_rep = validate_rows(rows, file=f"{name} ({load_rep['files'][0]})")
    return name, rows, load_rep, val_rep


def build_training_pool(
    sources: list[Mapping],
    *,
    levels: Iterable[int] | None = (4, 5),
    budget: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    exclude_problems: Iterable[str] = (),
    report: dict | None = None,
) -> list[dict]:
    """The training prompt pool: every source loaded, validated, level-filtered, and sampled
    deterministically to ``budget`` prompts (``None``: all of them).

    Level filter: ``levels`` applies to a source whose rows carry levels (MATH: keep 4-5, and
    drop its rows with an unknown level); a source without levels (NuminaMath-CoT) is not
    filtered; a spec's own ``levels`` key overrides (``null`` = no filter).

    Budget: with no ``share`` in any spec, sources fill the budget **in the listed order**
    (e.g. all of MATH L4-5 first, NuminaMath the rest). With shares, each source gets
    ``round(budget * share / sum(shares))`` and what a short source cannot fill goes to the
    next ones in order. Inside a source rows are taken in ``sha256(seed|id)`` order.

    ``exclude_problems``: normalised problem texts to leave out before sampling (e.g. found by
    :func:`ssd_math.decontam.decontaminate`), so the budget is met after decontamination.

    Gold answers stay in the rows for analysis only; the sampler must never train on them.
    ``report`` (dict) receives per-source load/validation/filter counts and the final mix.
    """
    if not sources:
        raise DataError("no training sources configured (data.train.sources is empty)")
    levels_set = set(levels) if levels is not None else None
    excluded = {normalize_problem(p) for p in exclude_problems}
    per_source: dict[str, list[dict]] = {}
    rep: dict[str, Any] = {
        "sources": {},
        "levels": sorted(levels_set) if levels_set else None,
        "budget": budget,
        "seed": seed,
    }
    seen_problem: set[str] = set()
    seen_id: set[str] = set()
    for spec in sources:
        name, rows, load_rep, val_rep = _load_validated(spec, cache_dir=cache_dir, root=root)
        lv = set(spec["levels"]) if spec.get("levels") else None
        if "levels" not in spec:
            lv = levels_set if any(r.get("level") is not None for r in rows) else None
        n_before = len(rows)
        if lv is not None:
            rows = [r for r in rows if r.get("level") in lv]
        n_level = n_before - len(rows)
        n_cross = n_excl = 0
        kept = []
        for r in rows:
            key = normalize_problem(r["problem"])
            if key in excluded:
                n_excl += 1
                continue
            if key in seen_problem or r["id"] in seen_id:  # same problem in an earlier source
                n_cross += 1
                continue
            seen_problem.add(key)
            seen_id.add(r["id"])
            kept.append(r)
        kept.sort(key=lambda r: stable_order_key(seed, r["id"]))
        per_source[name] = kept
        rep["sources"][name] = {
            "load": load_rep,
            "validate": val_rep,
            "level_filter": sorted(lv) if lv else None,
            "dropped_level": n_level,
            "dropped_excluded": n_excl,
            "dropped_cross_source_duplicate": n_cross,
            "available": len(kept),
        }
    quotas = _quotas(
        [_source_name(s) for s in sources],
        {k: len(v) for k, v in per_source.items()},
        {s["name"]: s.get("share") for s in sources},
        budget,
    )
    pool: list[dict] = []
    for spec in sources:
        name = _source_name(spec)
        pool.extend(per_source[name][: quotas[name]])
    if not pool:
        raise DataError(
            "training pool is empty after filtering: "
            + json.dumps({k: v["available"] for k, v in rep["sources"].items()})
        )
    rep["taken"] = {k: quotas[k] for k in quotas}
    rep["n_pool"] = len(pool)
    if budget is not None and len(pool) < budget:
        rep["short_of_budget"] = budget - len(pool)
    if report is not None:
        report.update(rep)
    return pool


def _quotas(
    order: list[str], available: Mapping[str, int], shares: Mapping[str, Any], budget: int | None
) -> dict[str, int]:
    if budget is None:
        return dict(available)
    if not any(shares.get(n) for n in order):
        out, left = {}, budget
        for n in order:
            out[n] = min(available[n], left)
            left -= out[n]
        return out
    total = sum(float(shares.get(n) or 0) for n in order)
    out = {n: min(available[n], round(budget * float(shares.get(n) or 0) / total)) for n in order}
    left = budget - sum(out.values())
    for n in order:  # redistribute what short sources could not fill, in listed order
        if left <= 0:
            break
        extra = min(available[n] - out[n], left)
        out[n] += extra
        left -= extra
    return out


# ----------------------------------------------------------------------------------------------
# evaluation sets
# ----------------------------------------------------------------------------------------------

HARD_RULES = ("rank", "ids")


def build_eval_sets(
    sources: list[Mapping],
    *,
    main_size: int = 1000,
    hard_size: int = 300,
    seed: int = 0,
    hard_rule: str | Mapping = "rank",
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    report: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """The validation set (``main_size`` rows, the study's "1k budget") and its harder subset
    (``hard_size`` rows, the "300 budget"; always a subset of the main set).

    Main set: sources are taken **in the listed order**, each contributing at most its
    ``quota`` rows (all of them when no quota), until ``main_size`` is reached; later sources
    are backfill (the study: BeyondAIME 100, Omni-MATH-2, OlympiadBench, AIME archives as
    backfill). Within a source rows go in ``sha256(seed|id)`` order. Problems already taken
    from an earlier source (same whitespace-normalised text or id) are skipped and counted.

    Harder subset, ``hard_rule``:

    ``"rank"`` (default)
        Sort the main set by ``(difficulty_rank of its source, the row's own difficulty,
        sha256(seed|id))``, hardest first, and take the first ``hard_size``. ``difficulty_rank``
        is set per source in the config (higher = harder); the row's own difficulty is its
        ``difficulty`` field (Omni-MATH's 1-10 rating) or else its MATH ``level``, else 0.
        The shipped config ranks competitions by their published difficulty ladder:
        BeyondAIME 9 > HMMT Feb 8 > AIME 7 > Omni-MATH 6 (its own 1-10 rating breaks ties)
        > OlympiadBench 5 > AMC 12 3 > MATH-500 (level 1-5) 1. A fixed, model-free rule: it
        does not depend on any model's accuracy (choosing by base-model failures would make the
        subset regress toward the mean and favour whichever model is compared to that base).
    ``{"method": "ids", "ids": [...]}``
        An explicit list of main-set ids (e.g. a published list); an id not in the main set is
        an error.

    ``report`` (dict) receives per-source counts, the composition of both sets and the rule.
    """
    if not sources:
        raise DataError("no evaluation sources configured (data.eval.sources is empty)")
    if hard_size > main_size:
        raise DataError(f"hard_size {hard_size} > main_size {main_size}")
    rule = {"method": hard_rule} if isinstance(hard_rule, str) else dict(hard_rule)
    if rule.get("method") not in HARD_RULES:
        raise DataError(f"unknown hard_rule {rule.get('method')!r}; expected one of {HARD_RULES}")

    rep: dict[str, Any] = {
        "sources": {},
        "main_size": main_size,
        "hard_size": hard_size,
        "seed": seed,
        "hard_rule": rule,
    }
    main: list[dict] = []
    seen_problem: set[str] = set()
    seen_id: set[str] = set()
    for spec in sources:
        name, rows, load_rep, val_rep = _load_validated(spec, cache_dir=cache_dir, root=root)
        rows.sort(key=lambda r: stable_order_key(seed, r["id"]))
        quota = spec.get("quota")
        room = main_size - len(main)
        take = room if quota is None else min(int(quota), room)
        n_cross = 0
        taken = 0
        for r in rows:
            if taken >= take:
                break
            key = normalize_problem(r["problem"])
            if key in seen_problem or r["id"] in seen_id:
                n_cross += 1
                continue
            seen_problem.add(key)
            seen_id.add(r["id"])
            r = {**r, "eval_source": name, "difficulty_rank": spec.get("difficulty_rank", 0)}
            main.append(r)
            taken += 1
        rep["sources"][name] = {
            "load": load_rep,
            "validate": val_rep,
            "quota": quota,
            "taken": taken,
            "skipped_cross_source_duplicate": n_cross,
        }
    if not main:
        raise DataError("evaluation set is empty")
    if len(main) < main_size:
        rep["short_of_main_size"] = main_size - len(main)

    if rule["method"] == "rank":
        ordered = sorted(
            main,
            key=lambda r: (-float(r.get("difficulty_rank") or 0), -_row_difficulty(r), stable_order_key(seed, r["id"])),
        )
        hard_ids = {r["id"] for r in ordered[:hard_size]}
    else:
        want = [str(i) for i in rule.get("ids") or []]
        missing = [i for i in want if i not in seen_id]
        if missing:
            raise DataError(f"hard_rule ids not in the main set: {missing[:5]} ({len(missing)} in all)")
        hard_ids = set(want[:hard_size])
    hard = [r for r in main if r["id"] in hard_ids]

    def composition(rows: list[dict]) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            out[r["eval_source"]] = out.get(r["eval_source"], 0) + 1
        return out

    rep["n_main"] = len(main)
    rep["n_hard"] = len(hard)
    rep["main_composition"] = composition(main)
    rep["hard_composition"] = composition(hard)
    if report is not None:
        report.update(rep)
    return main, hard


def _row_difficulty(row: Mapping) -> float:
    for key in ("difficulty", "level"):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0
