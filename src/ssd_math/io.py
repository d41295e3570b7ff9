"""Files: atomic writes, JSONL with row-level error reporting, provenance sidecars.

Every artifact a rule declares is written through :func:`atomic_path` (a temporary name in the
same folder, then ``os.replace``), so a consumer never sees a half-written file and a crashed
job leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """A data file is malformed; the message names the file and the row."""


@contextlib.contextmanager
def atomic_path(path: PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        if is_dir:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            with open(tmp, "rb+") as fh:
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")


def read_text(path: PathLike) -> str:
    """A UTF-8 text file's content; bytes that are not UTF-8 are a :class:`DataError` naming
    the file, the line and the column."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        lineno = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - line_start
        raise DataError(f"{path}: line {lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                        f"column {col + 1}); re-encode the file as UTF-8, e.g. iconv -f latin1 "
                        "-t utf-8") from None


def read_json(path: PathLike) -> Any:
    """A JSON file; not UTF-8 or not JSON is a :class:`DataError` naming the file and line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> int:
    """Write rows atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
                n += 1
    return n


def read_jsonl(path: PathLike, *, strict: bool = True) -> list[dict]:
    """Read a JSONL file. A malformed line raises :class:`DataError` naming file and line
    (``strict``) or is skipped (``strict=False``; use :func:`read_jsonl_report` to count them)."""
    rows, bad = read_jsonl_report(path)
    if bad and strict:
        lineno, why = bad[0]
        raise DataError(f"{path}: line {lineno}: {why} ({len(bad)} malformed line(s) in all)")
    return rows


def read_jsonl_lines(path: PathLike) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """Return ([(line number, row)], [(line number, reason)]) for a JSONL file; blank lines are
    ignored, a line that is not a JSON object is reported with its number."""
    rows: list[tuple[int, dict]] = []
    bad: list[tuple[int, str]] = []
    with open(path, "rb") as fh:  # bytes, so a line that is not UTF-8 is named, not fatal
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((lineno, _not_utf8(raw, exc)))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((lineno, f"not valid JSON ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                bad.append((lineno, "not a JSON object"))
                continue
            rows.append((lineno, obj))
    return rows, bad


def read_jsonl_report(path: PathLike) -> tuple[list[dict], list[tuple[int, str]]]:
    """Return (rows, [(line number, reason), ...]) for a JSONL file; blank lines are ignored."""
    rows, bad = read_jsonl_lines(path)
    return [r for _, r in rows], bad


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------------------------
# provenance
# ----------------------------------------------------------------------------------------------

PROVENANCE_PACKAGES = (
    "torch", "transformers", "accelerate", "tokenizers", "snakemake", "math-verify",
    "polars", "numpy", "scipy", "vllm",
)


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object (key order independent)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_sha256(path: PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def meta_path(path: PathLike) -> Path:
    """The sidecar of an artifact: ``x.jsonl`` -> ``x.jsonl.meta.json`` beside it; a folder
    artifact ``d/`` keeps its sidecar inside, ``d/meta.json``, so it lives and dies with it."""
    p = Path(path)
    if p.is_dir():
        return p / "meta.json"
    return p.with_name(p.name + ".meta.json")


CONFIG_HASH_ENV = "SSD_MATH_CONFIG_HASH"


def config_hash(config: dict) -> str:
    """The provenance hash of a config: :func:`stable_hash` of it without ``runtime`` (runtime
    knobs change where a job runs, never what it computes). rules/common.smk exports it as
    ``$SSD_MATH_CONFIG_HASH`` so every rule's sidecar records it."""
    return stable_hash({k: v for k, v in config.items() if k != "runtime"})


def accelerator_info() -> dict:
    """torch/CUDA versions and GPU names, when the writing process has torch loaded (a job that
    never imported torch, e.g. grading or a table, has no device to report)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"torch_loaded": False}
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_meta(path: PathLike, **fields: Any) -> Path:
    """Write the provenance sidecar of an artifact: what made it, with which versions.

    Always recorded: python, platform, package versions and ``config_hash`` (from
    ``$SSD_MATH_CONFIG_HASH``, set by the Snakefile; ``None`` outside a pipeline run unless the
    caller passes ``config_hash=``). Callers add the rule's own fields: seeds (``base_seed`` /
    ``seeds``), sampling parameters, the prompt-template hash, counts, ..."""
    meta = {
        "artifact": str(path),
        "config_hash": os.environ.get(CONFIG_HASH_ENV) or None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "accelerator": accelerator_info(),
        **fields,
    }
    mp = meta_path(path)
    write_json(mp, meta)
    return mp
