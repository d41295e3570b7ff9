"""Real data preparation: load problem sources, validate them with counts, build the training
prompt pool and the two validation sets (the ~1k "main" set and the harder ~300 subset).

Every function here works on plain rows of the project schema (docs/contracts.md)::

    {"id": str, "problem": str, "answer": str, "source": str, "level": int|None,
     "subject": str|None, ...extra fields of the source}

A *source spec* (one entry of ``config["data"]["train"]["sources"]`` or
``config["data"]["eval"]["sources"]``) says where rows come from and how to map them:

local file
    ``{name, path, format?: jsonl|parquet|json (default: from the suffix), fields?, ...}``
Hugging Face hub dataset
    ``{name, hub_id, revision (a pinned commit sha), split, config?, files?, fields, ...}``
    downloaded once with ``huggingface_hub.snapshot_download`` into ``cache_dir/<name>@<rev>``
    (a ``.complete.json`` marker makes later runs offline). Without network, or when the files
    are missing, :class:`DataError` names the dataset and the config key (``path``) to set so a
    local copy is used instead.

Optional keys of both kinds:

``fields``            ``{project_field: source_column}``; unmapped project fields default to a
                      column of the same name. ``"id": null`` makes ids ``<name>-<row number>``.
``answer_from_boxed`` a column (e.g. ``solution``) whose **last** ``\\boxed{...}``/``\\fbox{...}``
                      (brace matched) becomes the answer; rows without one are dropped and
                      counted (NuminaMath-CoT has no answer column).
``source_label``      the ``source`` value written into rows (default: the mapped ``source``
                      column, else ``name``). Use it when the dataset's own ``source`` column
                      means something else (NuminaMath-CoT: the sub-corpus, kept as ``subset``).
``where``             ``{field: [allowed values]}`` filters on mapped fields (e.g. NuminaMath
                      ``subset: [olympiads, amc_aime, aops_forum, math]``).
``extra_fields``      which other columns to pass through: ``"all"`` (default) or a list.
``id_prefix``         a string put in front of every id (ids must be unique across sources
                      that end up in the same artifact; the shipped files already are).
``levels``            (training) per-source override of the global level filter; ``null``
                      turns it off for this source.
``share``             (training) a weight: the budget is split across sources by share.
``quota``             (eval) the most rows this source contributes to the main set.
``difficulty_rank``   (eval) the source's rank for the "harder" subset (higher = harder).
``config_key``        where the spec sits in the config (``data.real.eval.sources[3]``), set
                      by ssd_math.prepare_real_data; errors name it (default: the source's name).

Selections are deterministic and stable: rows are ordered by ``sha256(seed | id)``, so the same
seed gives the same rows whatever the input order, and a bigger budget is a superset of a
smaller one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ssd_math.grading import boxed_spans
from ssd_math.io import DataError, read_json, read_jsonl_report, write_json

log = logging.getLogger(__name__)

PROJECT_FIELDS = ("id", "problem", "answer", "source", "level", "subject")
SCHEMA_HINT = "fields id, problem, answer (string), source, level (int|null), subject"


# ----------------------------------------------------------------------------------------------
# answers
# ----------------------------------------------------------------------------------------------


def last_boxed(text: str | None) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, found by
    brace matching (nested braces are kept); ``None`` when there is none or it is empty. The box
    syntax is :func:`ssd_math.grading.boxed_spans`' (the grader owns it)."""
    spans = boxed_spans(text or "")
    return (spans[-1][2] or None) if spans else None


def _coerce_answer(value: Any) -> str | None:
    """Gold answers are strings; numbers are written without a spurious ``.0``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        parts = [p for p in (_coerce_answer(v) for v in value) if p]
        return ", ".join(parts) if parts else None
    text = str(value).strip()
    return text or None


def _coerce_level(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and value.is_integer() else None
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


def normalize_problem(text: str) -> str:
    """Whitespace-normalised problem text (the duplicate key of :func:`validate_rows`)."""
    return " ".join(str(text).split())


def stable_order_key(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}|{row_id}".encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _read_table(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        rows, bad = read_jsonl_report(path)
        if bad:
            lineno, why = bad[0]
            raise DataError(f"{path}: line {lineno}: {why} ({len(bad)} malformed line(s))")
        return rows
    if path.suffix == ".parquet":
        import polars as pl

        return pl.read_parquet(path).to_dicts()
    if path.suffix == ".json":
        obj = read_json(path)  # not UTF-8 / not JSON: a DataError naming the file and line
        if isinstance(obj, list):
            return obj
        raise DataError(f"{path}: a .json source must hold a list of objects")
    raise DataError(f"{path}: unknown format (expected .jsonl, .parquet or .json)")


def _snapshot_download(**kwargs: Any) -> str:
    """Indirection so tests can simulate an unreachable hub."""
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def _hub_patterns(spec: Mapping) -> list[str]:
    if spec.get("files"):
        files = spec["files"]
        return [files] if isinstance(files, str) else list(files)
    split = spec.get("split", "train")
    prefix = f"{spec['config']}/" if spec.get("config") else ""
    return [f"{prefix}*{split}*.parquet", f"{prefix}*{split}*.jsonl", f"{prefix}*{split}*.json"]


def _spec_key(spec: Mapping) -> str:
    """The config key of a source spec, for error messages."""
    return spec.get("config_key") or f"the source '{spec['name']}'"


def local_copy_hint(spec: Mapping) -> str:
    """How to use a local copy instead of a hub download (the end of every hub error)."""
    key = _spec_key(spec)
    return (
        f"to use a local copy instead, set {key}.path to a local JSONL file, one problem per "
        f"line with at least a problem and an answer ({SCHEMA_HINT}, or the dataset's own "
        f"columns as {key}.fields maps them; a relative path resolves against "
        f"data.real.root), or set {key}.enabled: false to leave the source out"
    )


def _hub_files(spec: Mapping, cache_dir: Path | None) -> list[Path]:
    name, hub_id = spec["name"], spec["hub_id"]
    revision = spec.get("revision")
    hint = local_copy_hint(spec)
    if not revision:
        raise DataError(
            f"dataset '{name}' ({hub_id}): no pinned 'revision' (a commit sha) in its source spec; pin one, or {hint}"
        )
    if cache_dir is None:
        raise DataError(f"dataset '{name}' ({hub_id}@{revision}): no cache_dir given for the hub download; {hint}")
    patterns = _hub_patterns(spec)
    local_dir = Path(cache_dir) / f"{name}@{revision[:12]}"
    marker = local_dir / ".complete.json"
    want = {"hub_id": hub_id, "revision": revision, "patterns": patterns}
    cached = False
    if marker.exists():
        try:
            cached = json.loads(marker.read_text()) == want
        except (OSError, json.JSONDecodeError):
            cached = False
    if not cached:
        try:
            _snapshot_download(
                repo_id=hub_id,
                repo_type="dataset",
                revision=revision,
                local_dir=str(local_dir),
                allow_patterns=patterns,
            )
        except Exception as exc:  # no network, unknown repo/revision, auth, disk ...
            raise DataError(
                f"dataset '{name}' ({hub_id}@{revision}, config key {_spec_key(spec)}) could not "
                f"be fetched from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                f"{hint}"
            ) from exc
    files = sorted(
        p
        for p in local_dir.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(local_dir).parts)
        and any(fnmatch.fnmatch(p.relative_to(local_dir).as_posix(), pat) for pat in patterns)
    )
    if not files:
        raise DataError(
            f"dataset '{name}' ({hub_id}@{revision}): no files matching {patterns} "
            f"in the download at {local_dir}; set {_spec_key(spec)}.files to the data files "
            f"of split '{spec.get('split')}', or {hint}"
        )
    if not cached:
        write_json(marker, want)
    return files


def load_source(
    spec: Mapping,
    *,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    report: dict | None = None,
) -> list[dict]:
    """Load one source as project rows (see the module docstring for the spec keys).

    ``root`` resolves a relative ``path``. ``report`` (a dict, optional) receives counts:
    ``n_read``, ``no_boxed_answer`` (rows dropped for want of a ``\\boxed{}`` answer when
    ``answer_from_boxed`` is set), ``filtered_where``. Validation (missing fields, duplicates)
    is :func:`validate_rows`'s job.
    """
    if "name" not in spec:
        raise DataError(f"source spec without a 'name': {dict(spec)}")
    name = spec["name"]
    if spec.get("path"):
        path = Path(spec["path"])
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        if not path.exists():
            key = _spec_key(spec)
            hub = f", or remove it to download hub_id {spec['hub_id']!r}" if spec.get("hub_id") else ""
            raise DataError(
                f"dataset '{name}': file {path} not found; set {key}.path to an "
                f"existing .jsonl/.parquet file ({SCHEMA_HINT}){hub}, or set "
                f"{key}.enabled: false"
            )
        fmt = spec.get("format")
        if fmt and fmt != "json" and path.suffix.lstrip(".") != fmt:
            raise DataError(f"dataset '{name}': {path} does not look like format {fmt!r}")
        files = [path]
    elif spec.get("hub_id"):
        files = _hub_files(spec, Path(cache_dir) if cache_dir is not None else None)
    else:
        raise DataError(
            f"dataset '{name}': its source spec needs 'path' (a local file) or "
            f"'hub_id' + 'revision' + 'split' (a Hugging Face dataset)"
        )

    raw: list[dict] = []
    for f in files:
        raw.extend(_read_table(f))

    fields = dict(spec.get("fields") or {})
    boxed_col = spec.get("answer_from_boxed")
    extra = spec.get("extra_fields", "all")
    where = spec.get("where") or {}
    prefix = spec.get("id_prefix", "")
    label = spec.get("source_label")
    mapped_cols = {c for c in fields.values() if c}
    if boxed_col:
        mapped_cols.add(boxed_col)

    rows: list[dict] = []
    n_no_boxed = n_where = 0
    for i, r in enumerate(raw):
        out: dict[str, Any] = {}
        for f in PROJECT_FIELDS:
            col = fields.get(f, f)
            out[f] = r.get(col) if col else None
        for f, col in fields.items():  # extra mapped names, e.g. subset <- source
            if f not in PROJECT_FIELDS:
                out[f] = r.get(col) if col else None
        if boxed_col:
            out["answer"] = last_boxed(r.get(boxed_col))
            if out["answer"] is None:
                n_no_boxed += 1
                continue
        out["answer"] = _coerce_answer(out["answer"])
        out["level"] = _coerce_level(out["level"])
        out["id"] = f"{prefix}{out['id']}" if out["id"] not in (None, "") else f"{prefix}{name}-{i}"
        out["source"] = label or out["source"] or name
        if extra == "all":
            for k, v in r.items():
                if k not in out and k not in mapped_cols:
                    out[k] = v
        else:
            for k in extra or ():
                out.setdefault(k, r.get(k))
        if any(out.get(f) not in set(allowed) for f, allowed in where.items()):
            n_where += 1
            continue
        out["dataset"] = name
        rows.append(out)
    if report is not None:
        report.update(
            {
                "dataset": name,
                "files": [str(f) for f in files],
                "n_read": len(raw),
                "no_boxed_answer": n_no_boxed,
                "filtered_where": n_where,
                "n_loaded": len(rows),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


DROP_REASONS = (
    "missing_id",
    "missing_problem",
    "missing_answer",
    "problem_too_long",
    "duplicate_id",
    "duplicate_problem",
)
# A problem text longer than this is dropped before anything tokenizes it (a competition problem
# is a few thousand characters; a 10 MB "problem" is a broken row, not a prompt).
MAX_PROBLEM_CHARS = 50_000


def check_rows(
    rows: Iterable[tuple[int, dict]], *, file: str | os.PathLike, unit: str = "line", max_examples: int = 10
) -> tuple[list[dict], dict]:
    """The one row-validation rule (data preparation and sampling inputs alike): drop and count
    the rows without an id, without problem text, without a gold answer, with a problem over
    :data:`MAX_PROBLEM_CHARS`, with an id seen before, or with a problem text seen before after
    whitespace normalisation (:func:`normalize_problem`); the first of a repeat is kept.

    ``rows``: ``[(line or row number, row)]``; ``unit`` names that number in the examples.
    Returns ``(good rows (unchanged), report)``, report = ``{file, n_in, n_out, dropped: {reason:
    count}, examples: {reason: ["line L (id X)", ...]}}``; what was dropped is logged. Raises
    :class:`DataError` naming the file, the reasons and examples when no row is left."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    examples: dict[str, list[str]] = {k: [] for k in DROP_REASONS}
    seen_ids: dict[str, int] = {}
    seen_problems: dict[str, str] = {}
    good: list[dict] = []
    n_in = 0

    def drop(reason: str, where: str) -> None:
        dropped[reason] += 1
        if len(examples[reason]) < max_examples:
            examples[reason].append(where)

    for lineno, row in rows:
        n_in += 1
        rid = row.get("id")
        if rid is None or (isinstance(rid, str) and not rid.strip()):
            drop("missing_id", f"{unit} {lineno}")
            continue
        where = f"{unit} {lineno} (id {rid!r})"
        problem = row.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            drop("missing_problem", where)
        elif _coerce_answer(row.get("answer")) is None:
            drop("missing_answer", where)
        elif len(problem) > MAX_PROBLEM_CHARS:
            drop("problem_too_long", f"{where}: {len(problem)} characters > {MAX_PROBLEM_CHARS}")
        elif str(rid) in seen_ids:
            drop("duplicate_id", f"{where}, first on {unit} {seen_ids[str(rid)]}")
        elif (key := normalize_problem(problem)) in seen_problems:
            drop("duplicate_problem", f"{where}, same text as {seen_problems[key]}")
        else:
            seen_ids[str(rid)] = lineno
            seen_problems[key] = where
            good.append(row)
    report = {
        "file": str(file),
        "n_in": n_in,
        "n_out": len(good),
        "dropped": dropped,
        "examples": {k: v for k, v in examples.items() if v},
    }
    summary = ", ".join(f"{k}={v}" for k, v in dropped.items() if v)
    detail = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in report["examples"].items())
    if not good:
        raise DataError(
            f"{file}: no valid problem rows out of {n_in} (dropped: {summary}; "
            f"{detail}); rows need id, problem and answer"
        )
    if summary:
        log.warning("%s: dropped %d of %d rows (%s): %s", file, n_in - len(good), n_in, summary, detail)
    return good, report


def validate_rows(rows: Iterable[dict], *, file: str | os.PathLike) -> tuple[list[dict], dict]:
    """:func:`check_rows` on a source's rows (numbered from 1), the kept rows with a string id
    and the gold answer as a string (:func:`_coerce_answer`). Returns ``(good_rows, report)``;
    the rule writes the report beside the artifact."""
    good, report = check_rows(enumerate(rows, 1), file=file, unit="row")
    return [{**r, "id": str(r["id"]), "answer": _coerce_answer(r["answer"])} for r in good], report


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
