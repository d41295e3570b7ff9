"""Logging for rule scripts: everything (progress bars included) goes to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .gpu_driver import require_cuda_driver
from .io import meta_path, write_meta


def job_gpus(snakemake_obj) -> int:
    """The GPUs a rule's job holds (its ``gpu`` resource; 0 without one)."""
    res = getattr(snakemake_obj, "resources", None)
    try:
        return int(res.get("gpu", 0) or 0) if res is not None else 0
    except (TypeError, ValueError):
        return 0


@contextlib.contextmanager
def rule_log(snakemake_obj):
    """Send logging, stdout and stderr of a rule script to ``log[0]`` (if the rule has one). A job
    that holds a GPU first checks the NVIDIA driver (:func:`ssd_math.gpu_driver.require_cuda_driver`:
    with too old a driver torch sees no GPU), and stops with the fix in its log."""
    logs = list(getattr(snakemake_obj, "log", []) or [])
    if not logs:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        if job_gpus(snakemake_obj):
            require_cuda_driver()
        yield logging.getLogger("ssd_math")
        ensure_sidecars(snakemake_obj)
        return
    path = Path(logs[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "w", encoding="utf-8", buffering=1) as fh,
        contextlib.redirect_stdout(fh),
        contextlib.redirect_stderr(fh),
    ):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            if job_gpus(snakemake_obj):
                require_cuda_driver()
            yield logging.getLogger("ssd_math")
            ensure_sidecars(snakemake_obj)
        except BaseException:
            logging.getLogger("ssd_math").exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)


def ensure_sidecars(snakemake_obj) -> list[Path]:
    """Give every declared output of a finished rule that has no provenance sidecar of its own a
    minimal one (config hash, versions, the rule's name), so that every artifact records the
    config it was built from. Returns the sidecars written."""
    rule = getattr(snakemake_obj, "rule", None)
    written = []
    for out in list(getattr(snakemake_obj, "output", []) or []):
        p = Path(out)
        if p.exists() and not meta_path(p).exists():
            written.append(
                write_meta(
                    p,
                    rule=rule,
                    note="sidecar written by ssd_math.rulelog: the rule records no fields of its own for this output",
                )
            )
    return written
