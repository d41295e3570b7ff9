"""Files: atomic writes, JSONL with row-level error reporting, provenance sidecars, Snakemake
benchmark files.

Every artifact a rule declares is written through :func:`atomic_path` (a temporary name in the
same folder, then ``os.replace``), so a consumer never sees a half-written file and a crashed
job leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
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


def write_csv(df: Any, path: PathLike) -> None:
    """A table (a polars DataFrame, or anything with its ``write_csv(path)``) to CSV, atomically."""
    with atomic_path(path) as tmp:
        df.write_csv(tmp)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return (
        f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
        "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
    )


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
        raise DataError(
            f"{path}: line {lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
            f"column {col + 1}); re-encode the file as UTF-8, e.g. iconv -f latin1 "
            "-t utf-8"
        ) from None


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


# ----------------------------------------------------------------------------------------------
# Snakemake benchmark files
# ----------------------------------------------------------------------------------------------

# Snakemake's benchmark TSV header (snakemake/benchmark.py, BenchmarkRecord.get_header);
# --benchmark-extended appends jobid, rule_name, wildcards, params, threads, cpu_usage,
# resources, input_size_mb. max_* are MB, io_* MB, mean_load %, cpu_time s; "NA" when the
# job ended before the first sample; one row per repeat() run.
BENCHMARK_COLUMNS = (
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
)


def _benchmark_number(v: str | None) -> float | None:
    if v is None:
        return None
    v = v.strip()
    if v in ("", "NA", "-", "None"):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def read_benchmark(path: str | os.PathLike) -> dict:
    """Parse one Snakemake ``benchmark:`` file (TSV, or JSONL when the path ends in .jsonl).

    Returns ``{"n_runs", "s_mean", "s_max", "max_rss_mb", "cpu_time_s", "mean_load", "rows"}``
    (``rows`` are the raw per-run dicts; several with ``repeat()``). Raises ``ValueError``
    naming the file when the header lacks the ``s`` column or there is no data row.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        raw = [
            {k: (None if v is None else str(v)) for k, v in json.loads(line).items()}
            for line in text.splitlines()
            if line.strip()
        ]
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"{path}: empty benchmark file")
        header = lines[0].split("\t")
        if "s" not in header:
            raise ValueError(f"{path}: not a Snakemake benchmark file (header {header[:4]})")
        raw = [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]
    if not raw:
        raise ValueError(f"{path}: benchmark file without a data row")
    secs = [x for x in (_benchmark_number(r.get("s")) for r in raw) if x is not None]
    rss = [x for x in (_benchmark_number(r.get("max_rss")) for r in raw) if x is not None]
    cpu = [x for x in (_benchmark_number(r.get("cpu_time")) for r in raw) if x is not None]
    load = [x for x in (_benchmark_number(r.get("mean_load")) for r in raw) if x is not None]
    return {
        "n_runs": len(raw),
        "s_mean": sum(secs) / len(secs) if secs else None,
        "s_max": max(secs) if secs else None,
        "max_rss_mb": max(rss) if rss else None,
        "cpu_time_s": sum(cpu) / len(cpu) if cpu else None,
        "mean_load": sum(load) / len(load) if load else None,
        "rows": raw,
    }


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
    "torch",
    "transformers",
    "accelerate",
    "tokenizers",
    "snakemake",
    "math-verify",
    "polars",
    "numpy",
    "scipy",
    "vllm",
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


def _gpu_names(torch: Any) -> tuple[str, ...] | None:
    """Names of the visible CUDA devices (None without CUDA); device names do not change within
    a process, so the first answer is kept."""
    global _GPU_NAMES
    if not torch.cuda.is_available():
        return None
    if _GPU_NAMES is None:
        _GPU_NAMES = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return _GPU_NAMES


_GPU_NAMES: tuple[str, ...] | None = None


def accelerator_info() -> dict:
    """torch/CUDA versions and GPU names, when the writing process has torch loaded (a job that
    never imported torch, e.g. grading or a table, has no device to report)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"torch_loaded": False}
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info["gpus"] = list(_gpu_names(torch) or ())
    return info


# --- machine provenance: what the numbers of a CPU job (timings, bf16 paths) depend on ---------

# x86 ISA extensions that change which kernels torch/oneDNN run: AVX2 and AVX-512 matmul paths,
# native bf16 dot products (avx512_bf16), and Intel AMX tiles (amx_*: bf16/int8 matmul units).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def parse_cpuinfo(text: str) -> dict:
    """CPU model and ISA flags from ``/proc/cpuinfo`` text: ``{"cpu_model": str | None,
    "isa": {flag: bool for flag in ISA_FLAGS}}``. The first processor's ``model name`` and
    ``flags`` (``Features`` on ARM) are used; flags match whole words (``avx512f`` is not
    ``avx512fp16``)."""
    model = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    return {"cpu_model": model, "isa": {f: f in (flags or ()) for f in ISA_FLAGS}}


def parse_torch_config(text: str) -> dict:
    """torch's BLAS/LAPACK/oneDNN build from ``torch.__config__.show()`` text: ``blas``
    (``BLAS_INFO``: mkl, open, accelerate, ...), ``lapack``, ``mkl_version``, ``onednn_version``
    (the MKL-DNN/oneDNN line), ``cpu_capability_built`` ("CPU capability usage"); ``None``
    where the build text does not say."""

    def find(pattern: str) -> str | None:
        m = re.search(pattern, text)
        return m.group(1).strip() if m else None

    return {
        "blas": find(r"BLAS_INFO=([^,\s]+)"),
        "lapack": find(r"LAPACK_INFO=([^,\s]+)"),
        "mkl_version": find(r"Math Kernel Library Version ([^\s-]+)"),
        "onednn_version": find(r"(?:MKL-DNN|oneDNN) (v[\w.]+)"),
        "cpu_capability_built": find(r"CPU capability usage: ([^\n]+)"),
    }


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:  # not Linux
        return ""


@functools.lru_cache(maxsize=1)
def _static_machine() -> dict:
    """The parts of :func:`machine_info` that cannot change within a process (computed once)."""
    cpu = parse_cpuinfo(_read_cpuinfo())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": cpu["cpu_model"] or platform.processor() or platform.machine() or None,
        "arch": platform.machine(),
        "isa": cpu["isa"],
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
    }


_TORCH_BUILD: dict[int, tuple[Any, dict]] = {}  # id -> (the module, kept alive; its build)


def _torch_build(torch: Any) -> dict:
    """torch's build (version, BLAS/oneDNN, CPU capability): fixed once torch is imported, so
    computed once per torch module."""
    if _TORCH_BUILD.get(id(torch), (None,))[0] is not torch:
        build = parse_torch_config(torch.__config__.show())
        cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        _TORCH_BUILD[id(torch)] = (
            torch,
            {
                "version": torch.__version__,
                **build,
                "cpu_capability": cap() if cap else build["cpu_capability_built"],
                "mkl_available": bool(torch.backends.mkl.is_available()),
                "mkldnn_available": bool(torch.backends.mkldnn.is_available()),
            },
        )
    return _TORCH_BUILD[id(torch)][1]


def machine_info() -> dict:
    """The ``machine`` block of every sidecar: what a CPU job's timings and numerics depend on.

    ``cpu_model`` (/proc/cpuinfo "model name", else the platform's name), ``arch``, ``isa``
    (:data:`ISA_FLAGS` present or not), ``logical_cores`` (``os.cpu_count()``),
    ``usable_cores`` (this process's CPU affinity), ``torch`` (``None`` when the writing process
    never imported torch -- this function does not import it -- else its ``version``, ``blas``,
    ``lapack``, ``mkl_version``, ``onednn_version``, ``cpu_capability`` (the kernels torch
    dispatches to here), ``cpu_capability_built``, ``mkl_available``, ``mkldnn_available``, and
    ``intra_op_threads``/``inter_op_threads`` read at write time), and ``gpus`` (CUDA device names,
    ``None`` without CUDA or torch). Everything but the thread counts is computed once per
    process."""
    info = dict(_static_machine())
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):  # absent or still importing
        info["torch"] = None
        info["gpus"] = None
        return info
    info["torch"] = {
        **_torch_build(torch),
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
    }
    gpus = _gpu_names(torch)
    info["gpus"] = list(gpus) if gpus is not None else None
    return info


def write_meta(path: PathLike, **fields: Any) -> Path:
    """Write the provenance sidecar of an artifact: what made it, with which versions.

    Always recorded: python, platform, package versions, ``accelerator``, ``machine``
    (:func:`machine_info`: CPU model, ISA flags, cores, torch's BLAS/oneDNN build and thread
    count, GPU names) and ``config_hash`` (from
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
        "machine": machine_info(),
        **fields,
    }
    mp = meta_path(path)
    write_json(mp, meta)
    return mp
