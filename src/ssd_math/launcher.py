"""How jobs use the hardware: the GPUs of a generation and of a training job (the rules' ``gpu``
resources, rules/common.smk; the cost planner prices the same counts) and the command that starts
a training job under its accelerate config (rules pretrain_base, sft, noise_run).
"""

from __future__ import annotations

import os
import shlex

from .derive import accelerate_gpus, read_accelerate_config
from .gpu_driver import cuda_driver_problem
from .layout import device

# What `accelerate launch` puts in a one-process CPU run's environment beyond OMP_NUM_THREADS
# (accelerate.utils.launch.prepare_simple_launcher_cmd_env, accelerate 1.15; Snakemake already
# sets OMP_NUM_THREADS to the job's threads). tests/test_train.py checks it against that function.
SIMPLE_CPU_ENV = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"}


def job_port(environ=None) -> int:
    """The rendezvous port of a multi-process training job (``accelerate launch
    --main_process_port``): from ``SLURM_JOB_ID`` (the same on every node of the job, different
    for two jobs that share a node; 15000-29999, below Linux's ephemeral range 32768+ where
    outgoing connections take their ports), else 0: accelerate then picks a free port
    (accelerate.utils.launch.prepare_multi_gpu_env). Without it every job takes 29500, and a
    second FSDP job on the node fails to bind it."""
    env = os.environ if environ is None else environ
    job = str(env.get("SLURM_JOB_ID", "")).strip()
    return 15000 + int(job) % 15000 if job.isdigit() else 0


def train_launcher(path: str | os.PathLike, python: str = "python") -> str:
    """The shell command, without its arguments, that starts ``-m ssd_math.train`` under an
    accelerate config: ``accelerate launch --config_file <path>`` wherever the launcher does
    something (several processes or machines, a GPU, FSDP, mixed precision, dynamo); for a
    one-process CPU config the training process itself, started by ``python`` with the
    environment the launcher would give it (:data:`SIMPLE_CPU_ENV`). Why by hand: the launcher
    is a second Python process whose own imports cost seconds per training job, a job that holds
    every core it asked for meanwhile (and the default run has many short training jobs).
    A config of several processes gets a rendezvous port per job (:func:`job_port`); a GPU
    config starts with the driver check (``python -m ssd_math.launcher on-gpu CMD...``:
    :func:`ssd_math.gpu_driver.require_cuda_driver`, then CMD)."""
    acc = read_accelerate_config(path)
    simple = (
        acc.get("use_cpu")
        and str(acc.get("distributed_type", "NO")) == "NO"
        and int(acc.get("num_processes", 1)) == 1
        and int(acc.get("num_machines", 1)) == 1
        and str(acc.get("mixed_precision", "no")) == "no"
        and not acc.get("dynamo_config")
    )
    if simple:
        env = " ".join(f"{k}={v}" for k, v in SIMPLE_CPU_ENV.items())
        return f"{env} {shlex.quote(python)} -m ssd_math.train"
    py = shlex.quote(python)
    port = ""
    if int(acc.get("num_processes", 1)) * int(acc.get("num_machines", 1)) > 1:
        # evaluated by the job's shell, where SLURM_JOB_ID is set (no braces: Snakemake formats
        # the command)
        port = f' --main_process_port "$({py} -m ssd_math.launcher port)"'
    cmd = f"accelerate launch --config_file {shlex.quote(str(path))}{port} -m ssd_math.train"
    if not acc.get("use_cpu"):
        # a GPU job's first step: the driver check (with too old a driver torch sees no GPU),
        # then the launcher in the same process (exec), its output in the rule's log
        cmd = f"{py} -m ssd_math.launcher on-gpu {cmd}"
    return cmd


def gpu_counts(cfg: dict) -> dict[str, int]:
    """``{"generate": n, "train": n}``: GPUs of one sampling/eval job and of one SFT job (the
    rules' ``gpu`` resources, rules/common.smk), of a validated config (defaults filled in).

    Generation on a cuda device (:func:`ssd_math.layout.device`): vLLM ->
    ``sampler.vllm.tensor_parallel_size`` (default 1), transformers -> 1; on the CPU (either
    backend: vLLM's CPU build included) 0. Training: the accelerate config of
    ``runtime.accelerate_config``.
    """
    sam = cfg["sampler"]
    if not device(cfg).startswith("cuda"):
        gen = 0
    elif sam["backend"] == "vllm":
        gen = int(sam["vllm"].get("tensor_parallel_size", 1))  # vLLM's own default
    else:
        gen = 1
    return {"generate": gen, "train": accelerate_gpus(cfg["runtime"]["accelerate_config"])}


def main(argv: list[str]) -> int:
    """``port``: print :func:`job_port`; ``on-gpu CMD...``: check the NVIDIA driver
    (:func:`ssd_math.gpu_driver.require_cuda_driver`), then replace this process with CMD."""
    import sys

    if argv == ["port"]:
        print(job_port())
        return 0
    if len(argv) >= 2 and argv[0] == "on-gpu":
        problem = cuda_driver_problem()
        if problem:
            print(f"ERROR: {problem}", file=sys.stderr, flush=True)
            return 1
        os.execvp(argv[1], argv[1:])
    print("usage: python -m ssd_math.launcher port | on-gpu CMD [ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
