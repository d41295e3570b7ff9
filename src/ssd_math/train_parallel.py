"""The processes of a training run (:mod:`ssd_math.train`'s distributed side): the Accelerator and
the setups it supports, how the global batch divides over the processes, and the gradient
arithmetic across them (norms, clipping, DDP's mean by hand, sums over FSDP2 shards).

FSDP2 (envs/accelerate/fsdp.yaml)
    Model and optimizer are prepared together; checkpoints and the resume state are full state
    dicts gathered from the shards (accelerate's ``get_state_dict`` and ``save_state`` with
    fsdp.yaml's FULL_STATE_DICT) and written by the main process; on resume the main process
    reads them and broadcasts them tensor by tensor, and every process keeps its own shards. The
    chunked loss works as on one process. FSDP1, and activation checkpointing switched on in both
    the accelerate config and the spec, fail fast. tests/test_fsdp.py runs all of it on 2 CPU processes (gloo).
"""

from __future__ import annotations

import os

import torch


def start_processes(s: dict):
    """The Accelerator of this run (distributed setup checked, seeds set) and the number of
    micro-batches per process and optimizer step."""
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs, set_seed

    # no gradient_accumulation_steps: the loss scaling is ours. Autocast without its weight cache:
    # the cache keeps a bf16 copy of every fp32 weight from first use to the end of the forward
    # (8.4 GB on 4B); uncached, each layer's copy lives while that layer computes
    # (docs/memory_plan.md). No effect without mixed precision (the CPU default).
    accelerator = Accelerator(kwargs_handlers=[AutocastKwargs(cache_enabled=False)])
    check_parallel_setup(s, accelerator)
    world = accelerator.num_processes
    if int(os.environ.get("WORLD_SIZE", "1")) != world:
        raise RuntimeError(
            f"launched as {os.environ['WORLD_SIZE']} processes but accelerate sees {world}: on CPU "
            "set ACCELERATE_USE_CPU=1 (accelerate launch with use_cpu: true does), or every "
            "process would train alone and overwrite the same files"
        )
    accum = batch_layout(s["global_batch"], s["micro_batch"], world)
    set_seed(s["seed"])
    if accelerator.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return accelerator, accum


def batch_layout(global_batch: int, micro_batch: int, num_processes: int) -> int:
    """Accumulation steps per process so that micro x accum x processes == global_batch."""
    per_proc, rem = divmod(global_batch, num_processes)
    if rem or per_proc % micro_batch:
        raise ValueError(
            f"global_batch {global_batch} is not micro_batch {micro_batch} x accumulation x "
            f"{num_processes} process(es): it must be divisible by "
            f"{micro_batch * num_processes}"
        )
    return per_proc // micro_batch


def check_parallel_setup(s: dict, accelerator) -> None:
    """Fail fast on distributed setups this loop does not support (before loading the model)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ValueError(
            "FSDP1 is not supported by ssd_math.train: set fsdp_version: 2 in the "
            "accelerate config (envs/accelerate/fsdp.yaml)"
        )
    if accelerator.distributed_type not in (
        DistributedType.NO,
        DistributedType.MULTI_CPU,
        DistributedType.MULTI_GPU,
        DistributedType.FSDP,
    ):
        raise ValueError(
            f"accelerate distributed_type {accelerator.distributed_type} is not "
            "supported by ssd_math.train (NO, MULTI_CPU, MULTI_GPU or FSDP v2)"
        )
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if accelerator.is_fsdp2 and plugin.activation_checkpointing and s["gradient_checkpointing"]:
        raise ValueError(
            "activation checkpointing is on twice: fsdp_activation_checkpointing in "
            "the accelerate config and sft.gradient_checkpointing; keep one "
            "(envs/accelerate/fsdp.yaml leaves it to sft.gradient_checkpointing)"
        )


def _local(t):
    """The local shard of a DTensor (FSDP2 parameter or gradient); a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def grad_sq_norm(params, sharded: bool = False, device=None) -> float:
    """|g|² of the parameters' gradients. ``sharded`` (FSDP2): each process holds a disjoint
    shard of every gradient, so the local shards' squared norms are summed over processes."""
    grads = [_local(p.grad) for p in params if p.grad is not None]
    sq = float(torch.nn.utils.get_total_norm(grads, 2.0) ** 2) if grads else 0.0
    if sharded:
        t = torch.tensor([sq], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        sq = float(t)
    return sq


def allreduce_mean_grads_(params, world: int) -> None:
    """DDP's gradient mean, done by hand (after every micro-batch ran under no_sync)."""
    for p in params:  # SUM then divide: gloo (CPU) has no AVG
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad.div_(world)


def clip_grads_(params, max_norm: float, total_norm: float) -> None:
    """Scale gradients by min(1, max_norm / (total_norm + 1e-6)) (torch's clip rule), shard-wise."""
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for p in params:
            if p.grad is not None:
                _local(p.grad).mul_(coef)


def ddp_small_batch_and_allreduce(
    accelerator, params, local: list[int], n_loss, n_global: int, per_proc: int
) -> tuple[float, int]:
    """DDP with the noise estimator: B_small = one process's accumulated gradient (rescaled to
    its own mean loss), |g_small|² averaged over processes; then the gradients are all-reduced
    (mean) here, in place of DDP's own sync. Returns (|g_small|², B_small)."""
    world = accelerator.num_processes
    n_loc = max(1, sum(n_loss[i] for i in local))
    local_sq = grad_sq_norm(params) * (n_global / (world * n_loc)) ** 2
    g_small_sq = float(accelerator.gather(torch.tensor([local_sq], device=accelerator.device)).mean())
    allreduce_mean_grads_(params, world)
    return g_small_sq, per_proc


def _sum_fn(accelerator):
    """Sum of a tensor over processes (for counts over FSDP2 shards)."""

    def total(t: torch.Tensor) -> torch.Tensor:
        t = t.to(accelerator.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    return total
