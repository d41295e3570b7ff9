"""The NVIDIA driver check: whether this machine's driver can run the GPU stack (torch 2.13.0's
CUDA 13.0 build), read from ``nvidia-smi``. The first step of every job that holds a GPU
(ssd_math.rulelog, ssd_math.launcher) and of the cluster check (ssd_math.cluster)."""

from __future__ import annotations

import re
import shutil
import subprocess

# torch 2.13.0 from PyPI is its CUDA 13.0 build (torch/version.py: cuda = '13.0'; it requires
# cuda-toolkit 13.0.3), and CUDA 13.0 needs an NVIDIA driver of branch 580 or newer (NVIDIA's CUDA
# 13.0 release notes, "minor version compatibility"). envs/vllm.yaml says the same.
CUDA_DRIVER_MIN = 580
DRIVER_HINT = (
    f"the GPU environment (envs/vllm.yaml) runs torch 2.13.0 built for CUDA 13.0, which "
    f"needs NVIDIA driver >= {CUDA_DRIVER_MIN}; upgrade the driver, or run on nodes that "
    f"have one (a SLURM site profile: `constraint` or `slurm_partition` of the GPU rules)"
)


def cuda_driver_problem(smi: str = "nvidia-smi") -> str | None:
    """Why this machine's NVIDIA driver cannot run the GPU stack, or None when it can. A missing
    ``nvidia-smi`` is a problem too (no driver to check); callers that may run where no GPU is
    (the submit host) test ``shutil.which`` first."""
    path = shutil.which(smi)
    if path is None:
        return f"`{smi}` is not on PATH: no NVIDIA driver found here; {DRIVER_HINT}"
    proc = subprocess.run(
        [path, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
    )
    versions = [v.strip() for v in proc.stdout.splitlines() if v.strip()]
    if proc.returncode != 0 or not versions:
        return (
            f"`{smi} --query-gpu=driver_version` failed (exit {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}): the driver could not be read; {DRIVER_HINT}"
        )
    for v in versions:
        m = re.match(r"(\d+)\.", v + ".")
        if m is None:
            return f"`{smi}` reported driver version {v!r}, which is not a version number; {DRIVER_HINT}"
        if int(m.group(1)) < CUDA_DRIVER_MIN:
            return f"NVIDIA driver {v} is too old: {DRIVER_HINT}"
    return None


def require_cuda_driver(smi: str = "nvidia-smi") -> None:
    """Stop (RuntimeError naming the fix) unless the driver can run the GPU stack: the first step
    of every rule that holds a GPU (ssd_math.rulelog.rule_log, and the training launch command
    of ssd_math.launcher.train_launcher)."""
    problem = cuda_driver_problem(smi)
    if problem:
        raise RuntimeError(problem)
