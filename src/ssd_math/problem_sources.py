"""Real data preparation, the sources: load a problem source into rows of the project schema and
validate rows with counts (the one row rule, :func:`check_rows`, which sampling inputs pass too).
The training prompt pool and the evaluation sets are built from these rows by
:mod:`ssd_math.problem_sets`.

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
"""

from __future__ import annotations

import fnmatch
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
