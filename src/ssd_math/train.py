"""Supervised fine-tuning (and tiny-base pretraining) of a causal LM: one file, top to bottom.

Launch (one CPU process; the same command scales to N GPUs with another accelerate config):

    accelerate launch --config_file envs/accelerate/cpu.yaml -m ssd_math.train --spec SPEC.json

or without accelerate's launcher (single process): ``python -m ssd_math.train --spec SPEC.json``
(the rules do that for a one-process CPU config, with the launcher's environment:
:func:`ssd_math.launcher.train_launcher`). ``--spec-json '{...}'`` takes the spec inline instead
of from a file. Several CPU processes (gloo): ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N
-m ssd_math.train --spec SPEC.json``. From Python: ``ssd_math.train.train(spec_dict)``. The spec
keys and their defaults are ``DEFAULTS`` below (the recipe keys' defaults are the config schema's
``$defs/optim``); this docstring and those of the modules the loop calls are what they mean
(docs/contracts.md points here): the rows and their order (:mod:`ssd_math.train_data`); the model,
its kernels, memory, loss and optimizer (:mod:`ssd_math.train_model`); the processes, DDP and
FSDP2 (:mod:`ssd_math.train_parallel`); checkpoints, the resume contract and the log file
(:mod:`ssd_math.train_state`).

What one optimizer step is
    ``global_batch`` sequences = ``micro_batch`` x accumulation x processes (fail fast when it
    does not divide). Each process runs its micro-batches (forward+backward) and the optimizer
    steps once. The loss is the mean over *all completion tokens of the global batch*: every
    micro-batch contributes sum(token losses) / (completion tokens in the whole global batch),
    so accumulation is exact (4 micro-batches of 2 == 1 batch of 8) and long sequences are not
    down-weighted. We do not pass gradient_accumulation_steps to the Accelerator (its
    ``backward`` would divide the loss again); gradients are synchronised across processes on
    the last micro-batch only (``accelerator.no_sync`` on the others).

Schedule
    LR at optimizer step s = 1..T: linear warmup lr*s/warmup_steps for s <= warmup_steps, then
    cosine from lr to min_lr reaching min_lr exactly at s = T (``schedule: cosine``), or lr
    held (``schedule: constant``). Gradient norm is measured before clipping; clipped to
    ``grad_clip`` when set.

Guards
    A NaN/inf loss or gradient norm raises ``FloatingPointError`` naming the step, before the
    optimizer step; the last checkpoint stays intact.

Log
    One JSON row per optimizer step (appended, flushed and fsynced): step, loss (mean over the
    step's completion tokens), ppl = exp(loss), lr (the lr used by this step), grad_norm (before
    clipping), tokens (cumulative non-pad input tokens, all processes), loss_tokens (completion
    tokens in this step), elapsed_s, step_s (this step's wall time, instrumentation included),
    step_cpu_s (its CPU time, all threads of this process; robust on a shared machine),
    tokens_per_s (this step's input tokens / its wall time), mem_mb (peak RSS of this process, or
    peak CUDA memory on GPU), and with ``instrument.enabled`` the noise-trap fields of
    :mod:`ssd_math.noise`: frac_changed, frac_changed_<group>, n_changed, n_params, dw_hist,
    G2_raw, trS_raw, G2_ema, trS_ema, B_simple, gB_norm, gs_norm, B_small, B_big.

Gradient-noise batch sizes (B in sequences; tokens would also be defensible)
    One process: B_s = the first micro-batch (its gradient measured right after its backward,
    rescaled to the gradient of that micro-batch's own mean loss), B_b = the global batch.
    Several processes (DDP): every micro-batch runs under ``no_sync``; B_s = one process's
    accumulated gradient (its own mean loss), averaged over processes; then the gradients are
    all-reduced (mean) here explicitly and B_b = the global batch. FSDP2: gradients are sharded
    (DTensors) and every micro-batch reduce-scatters (never ``no_sync``); B_s = the first
    micro-batch of every process together (micro_batch x processes), |g|² = the sum over processes
    of the local shards' |g|². With one micro-batch per process and step there is no small batch
    and the gradient-noise fields are null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

# The CUDA caching allocator reads its settings from the environment, so they must be there before
# torch is imported. Expandable segments: the micro-batches range from ~1k to 33.8k tokens, the
# worst case for fragmentation of fixed-size segments, and the memory plan's headroom assumes them
# (docs/memory_plan.md). A user's own setting (either variable name torch 2.13 reads) wins. The
# training modules imported below import torch, hence after this.
CUDA_ALLOC_CONF = "expandable_segments:True"
if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = CUDA_ALLOC_CONF

import torch  # noqa: E402

from ssd_math.config import recipe_errors  # noqa: E402
from ssd_math.io import read_json, read_jsonl  # noqa: E402
from ssd_math.noise import DEFAULT_DW_BINS, GradientNoiseEstimator, WeightChangeTracker  # noqa: E402
from ssd_math.schema import schema_defaults  # noqa: E402
from ssd_math.train_data import collate, encode_row, global_batch_rows, n_loss_tokens  # noqa: E402
from ssd_math.train_model import (  # noqa: E402
    check_linear_attention_kernels,
    compute_dtype_residuals,
    load_model_and_tokenizer,
    make_optimizer,
    round_to_bf16_,
    token_sum_loss,
)
from ssd_math.train_parallel import (  # noqa: E402
    _sum_fn,
    clip_grads_,
    ddp_small_batch_and_allreduce,
    grad_sq_norm,
    start_processes,
)
from ssd_math.train_state import (  # noqa: E402
    _SAVE_DTYPES,
    _inner,
    append_row,
    drop_resume_state,
    full_weights,
    open_step_log,
    partial_log,
    restore_resume_state,
    save_model,
    save_resume,
    training_spec_hash,
)

#: The job keys of a spec: where it reads and writes, and how it reports (the rules set them).
JOB_DEFAULTS: dict = {
    "init_dir": None,  # folder with config.json + tokenizer (+ weights unless init_random)
    "init_random": False,  # fresh weights from config.json (pretraining the tiny base)
    "data": None,  # JSONL path (or a list of row dicts) with prompt / completion
    "out_dir": None,  # final model folder
    "checkpoints": {},  # {optimizer step: folder}
    "log": None,  # per-step JSONL log
    "resume_dir": None,  # training state for resume (None: no resume state)
    "seed": 0,
    "save_dtype": None,  # dtype of the saved model folders (the served dtype); None = dtype
    "progress": True,  # tqdm bar on stderr
    "interrupt_after_step": None,  # exit (INTERRUPT_EXIT) once the resume state of this step is saved
}


def recipe_defaults() -> dict:
    """The recipe keys of a spec and their defaults: the schema's optim section
    (schemas/config.schema.yaml ``$defs/optim``, one owner with the config's sft and
    model.pretrain), less checkpoint_steps (a spec names its checkpoints in ``checkpoints``)."""
    return {k: v for k, v in schema_defaults("$defs/optim").items() if k != "checkpoint_steps"}


#: Every spec key and its default: the job keys, then the recipe keys (:func:`recipe_defaults`).
DEFAULTS: dict = {**JOB_DEFAULTS, **recipe_defaults()}

# The exit code of a run stopped by ``interrupt_after_step`` (EX_TEMPFAIL: try again).
INTERRUPT_EXIT = 75


def resolve_spec(spec: dict) -> dict:
    """Defaults filled in, types normalised, incompatible options rejected (fail fast): the
    recipe keys accept exactly what the config schema accepts for sft (:func:`ssd_math.config.recipe_errors`)."""
    unknown = set(spec) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training spec key(s): {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **spec}
    s["instrument"] = {**DEFAULTS["instrument"], **(spec.get("instrument") or {})}
    s["checkpoints"] = {int(k): str(v) for k, v in (s["checkpoints"] or {}).items()}
    for key in ("init_dir", "data", "out_dir"):
        if s[key] is None:
            raise ValueError(f"training spec needs {key!r}")
    problems = recipe_errors({k: s[k] for k in DEFAULTS if k not in JOB_DEFAULTS}, what="training spec key")
    if problems:
        raise ValueError("invalid training spec:\n  - " + "\n  - ".join(problems))
    if s["interrupt_after_step"] is not None and not (
        s["resume_dir"] and int(s["interrupt_after_step"]) in s["checkpoints"]
    ):
        raise ValueError(
            f"interrupt_after_step {s['interrupt_after_step']} needs a resume_dir and a "
            f"checkpoint at that step (checkpoints: {sorted(s['checkpoints'])}): the "
            "resume state is saved at checkpoint steps only"
        )
    if s["save_dtype"] is not None and s["save_dtype"] not in _SAVE_DTYPES:
        raise ValueError(f"save_dtype must be one of {sorted(_SAVE_DTYPES)} or null, got {s['save_dtype']!r}")
    return s


def lr_at(step: int, s: dict, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based) out of ``total_steps``."""
    lr, min_lr, warm = s["lr"], s["min_lr"], s["warmup_steps"]
    if warm > 0 and step <= warm:
        return lr * step / warm
    if s["schedule"] == "constant":
        return lr
    progress = (step - warm) / max(1, total_steps - warm)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def peak_mem_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---- the loop and its helpers (each named for the part of a step it owns) ------------------


def plan_steps(s: dict, n_rows: int) -> tuple[int, int, dict]:
    """(steps per epoch, total optimizer steps, {checkpoint step past the end: folder}).

    A checkpoint step past the end is an error, unless ``checkpoints_past_end: final`` (e.g. a
    bigger-batch sweep arm with fewer steps than the global checkpoint steps): those steps leave
    ``s["checkpoints"]`` and their folders get the final weights (their meta.json says so)."""
    steps_per_epoch = n_rows // s["global_batch"]
    total_steps = steps_per_epoch * s["epochs"]
    if s["max_steps"] is not None:
        total_steps = min(total_steps, int(s["max_steps"]))
    if total_steps < 1:
        raise ValueError(f"{n_rows} rows give no optimizer step at global_batch {s['global_batch']}")
    too_far = sorted(k for k in s["checkpoints"] if k > total_steps or k < 1)
    past_end = {}
    if too_far and s["checkpoints_past_end"] == "final" and all(k >= 1 for k in too_far):
        past_end = {k: s["checkpoints"].pop(k) for k in too_far}
        too_far = []
    if too_far:
        raise ValueError(
            f"checkpoint step {too_far[0]} requested but training has only {total_steps} "
            f"optimizer steps ({n_rows} rows / global_batch {s['global_batch']} x "
            f"{s['epochs']} epoch(s)); lower config key sft.checkpoint_steps"
        )
    return steps_per_epoch, total_steps, past_end


def make_instruments(inst: dict, raw_model, accelerator):
    """(weight-change tracker, gradient-noise estimator) of ``instrument.enabled``, else (None, None)."""
    if not inst["enabled"]:
        return None, None
    tracker = WeightChangeTracker(
        raw_model,
        inst["store_dtype"],
        inst["dw_bins"] or DEFAULT_DW_BINS,
        sum_over_processes=_sum_fn(accelerator) if accelerator.is_fsdp2 else None,
    )
    return tracker, GradientNoiseEstimator(ema=inst["ema"])


def accumulate_gradients(
    model,
    raw_model,
    accelerator,
    s: dict,
    examples,
    idx: list[int],
    n_loss,
    n_global: int,
    pad_id: int,
    accum: int,
    params,
    measure_noise: bool,
):
    """Forward and backward over this process's micro-batches of one global batch (``idx``);
    returns (summed token loss of this process, the small-batch gradient measurement
    ``(|g_small|², B_small)`` for the gradient-noise estimator, or None).

    Gradient-noise bookkeeping (module docstring): one process, or FSDP2 -- |g|² of the first
    micro-batch (of every process together) read right after its backward; DDP -- every
    micro-batch under ``no_sync``, then :func:`ddp_small_batch_and_allreduce`. FSDP2 never runs
    under ``no_sync`` (that would keep whole unsharded gradients per GPU and leave p.grad None)."""
    world, rank, fsdp = accelerator.num_processes, accelerator.process_index, accelerator.is_fsdp2
    per_proc = s["global_batch"] // world
    local = idx[rank * per_proc : (rank + 1) * per_proc]
    loss_sum = torch.zeros((), device=accelerator.device)
    small = None
    manual_reduce = measure_noise and world > 1 and not fsdp
    for m in range(accum):
        mb = local[m * s["micro_batch"] : (m + 1) * s["micro_batch"]]
        batch = {k: v.to(accelerator.device) for k, v in collate([examples[i] for i in mb], pad_id).items()}
        sync = fsdp or (m == accum - 1 and not manual_reduce)
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            with accelerator.autocast():  # the chunked output layer too, not just forward
                tok_loss = token_sum_loss(model, batch, raw_model=raw_model, chunk_tokens=int(s["loss_chunk_tokens"]))
            # DDP/FSDP average over processes, hence * world: the sum is over the global batch
            accelerator.backward(tok_loss * world / n_global)
        loss_sum += tok_loss.detach()
        if measure_noise and m == 0 and accum > 1 and (world == 1 or fsdp):
            first = [i for r in range(world) for i in idx[r * per_proc : r * per_proc + s["micro_batch"]]]
            n_first = max(1, sum(n_loss[i] for i in first))
            small = (
                grad_sq_norm(params, fsdp, accelerator.device) * (n_global / n_first) ** 2,
                s["micro_batch"] * world,
            )
    if manual_reduce:
        small = ddp_small_batch_and_allreduce(accelerator, params, local, n_loss, n_global, per_proc)
    return loss_sum, small


def noise_fields(tracker, noise_est, raw_model, small, grad_norm: float, global_batch: int) -> dict:
    """The noise-trap fields of one step's log row (after the optimizer step): the weight change
    and, with a small-batch measurement, the gradient-noise estimates (null without one)."""
    row = tracker.after_step(raw_model)
    if small is not None:
        row.update(noise_est.update(small[0], small[1], grad_norm**2, global_batch))
    else:
        row.update(
            {k: None for k in ("G2_raw", "trS_raw", "G2_ema", "trS_ema", "B_simple", "gs_norm", "B_small", "B_big")}
        )
        row["gB_norm"] = grad_norm
    return row


def train(spec: dict) -> dict:
    """Train as ``spec`` says (see module docstring); return a summary dict."""
    s = resolve_spec(spec)
    accelerator, accum = start_processes(s)
    fsdp, world = accelerator.is_fsdp2, accelerator.num_processes
    is_main = accelerator.is_main_process

    # ---- data, model, optimizer, schedule ------------------------------------------------
    from transformers import AutoConfig

    check_linear_attention_kernels(AutoConfig.from_pretrained(s["init_dir"]), accelerator.device.type)
    model, tok = load_model_and_tokenizer(s)
    rows = read_jsonl(s["data"]) if isinstance(s["data"], (str, os.PathLike)) else s["data"]
    examples = [encode_row(r, tok, s["max_len"]) for r in rows]
    n_loss = [n_loss_tokens(y) for _, y in examples]
    lengths = [len(x) for x, _ in examples]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    steps_per_epoch, total_steps, past_end = plan_steps(s, len(examples))
    optimizer = make_optimizer(model, s)
    # together: FSDP2 swaps the optimizer's parameters for the sharded ones (accelerate requires it)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(_inner(optimizer), lambda i: lr_at(i + 1, s, total_steps) / s["lr"])
    model.train()
    raw_model = accelerator.unwrap_model(model)
    compute_dtype_residuals(raw_model, accelerator.device.type)
    params = [p for p in raw_model.parameters() if p.requires_grad]
    tracker, noise_est = make_instruments(s["instrument"], raw_model, accelerator)

    # ---- resume, log, progress bar -------------------------------------------------------
    spec_hash = training_spec_hash(s)
    rdir = Path(s["resume_dir"]) if s["resume_dir"] else None
    live = partial_log(s["log"])
    # saved and restored by accelerate's save_state/load_state beside the prepared model and optimizer;
    # the scheduler is not prepared (accelerate's wrapper would step it once per process)
    accelerator.register_for_checkpointing(scheduler, *([noise_est] if noise_est is not None else []))
    start_step, elapsed0, tokens_total = restore_resume_state(rdir, spec_hash, accelerator, s["checkpoints"], live)
    log_path, live_log, log_fh = open_step_log(s["log"], start_step, is_main)
    bar = None
    if s["progress"] and is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=start_step, file=sys.stderr, desc="train", dynamic_ncols=True)

    # ---- steps ---------------------------------------------------------------------------
    t_run = time.perf_counter()
    loss = float("nan")
    try:
        for step in range(start_step, total_steps):  # 0-based here; logged as step + 1
            t0, c0 = time.perf_counter(), time.process_time()
            idx = global_batch_rows(step, len(examples), s, steps_per_epoch, lengths)
            n_global = max(1, sum(n_loss[i] for i in idx))  # completion tokens, whole batch
            step_tokens = sum(len(examples[i][0]) for i in idx)
            loss_sum, small = accumulate_gradients(
                model,
                raw_model,
                accelerator,
                s,
                examples,
                idx,
                n_loss,
                n_global,
                pad_id,
                accum,
                params,
                noise_est is not None,
            )
            loss = float(accelerator.reduce(loss_sum, reduction="sum")) / n_global
            grad_norm = math.sqrt(grad_sq_norm(params, fsdp, accelerator.device))
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise FloatingPointError(
                    f"non-finite training signal at optimizer step {step + 1}: loss={loss}, "
                    f"grad_norm={grad_norm}; stopped before the update (last checkpoint intact)"
                )
            if s["grad_clip"] is not None:
                clip_grads_(params, s["grad_clip"], grad_norm)
            lr_now = optimizer.param_groups[0]["lr"]
            if tracker is not None:
                tracker.before_step(raw_model)
            optimizer.step()
            if s["optimizer_state"] == "bf16":
                round_to_bf16_(raw_model, _inner(optimizer))
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            tokens_total += step_tokens
            row = {
                "step": step + 1,
                "loss": loss,
                "ppl": math.exp(min(loss, 50.0)),
                "lr": lr_now,
                "grad_norm": grad_norm,
                "tokens": tokens_total,
                "loss_tokens": n_global,
            }
            if tracker is not None:
                row.update(noise_fields(tracker, noise_est, raw_model, small, grad_norm, s["global_batch"]))
            dt = time.perf_counter() - t0  # the whole step, instrumentation included
            row.update(
                {
                    "elapsed_s": elapsed0 + time.perf_counter() - t_run,
                    "step_s": dt,
                    "step_cpu_s": time.process_time() - c0,
                    "tokens_per_s": step_tokens / dt,
                    "mem_mb": peak_mem_mb(accelerator.device),
                }
            )
            if log_fh is not None:
                append_row(log_fh, row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr_now:.2e}")
            if step + 1 in s["checkpoints"]:
                weights = full_weights(accelerator, model) if fsdp else None  # every process
                if is_main:
                    save_model(
                        raw_model,
                        tok,
                        s["checkpoints"][step + 1],
                        state_dict=weights,
                        save_dtype=s["save_dtype"],
                        step=step + 1,
                        total_steps=total_steps,
                        spec_hash=spec_hash,
                    )
                if rdir is not None:
                    save_resume(
                        rdir, accelerator, step + 1, row["elapsed_s"], tokens_total, spec_hash, s["checkpoints"]
                    )
                accelerator.wait_for_everyone()
                if step + 1 == s["interrupt_after_step"]:
                    # the resume drill: stop as a preempted job would; the rerun resumes here
                    # (a run that resumed past this step never gets here)
                    print(
                        f"interrupt_after_step {step + 1}: resume state saved, stopping "
                        f"(exit {INTERRUPT_EXIT}); a rerun resumes from it",
                        file=sys.stderr,
                        flush=True,
                    )
                    raise SystemExit(INTERRUPT_EXIT)
    finally:
        if log_fh is not None:
            log_fh.close()
        if bar is not None:
            bar.close()

    # ---- the final model -----------------------------------------------------------------
    weights = full_weights(accelerator, model) if fsdp else None  # every process
    if is_main:
        save_model(
            raw_model,
            tok,
            s["out_dir"],
            state_dict=weights,
            save_dtype=s["save_dtype"],
            step=total_steps,
            total_steps=total_steps,
            spec_hash=spec_hash,
        )
        for k, folder in sorted(past_end.items()):
            save_model(
                raw_model,
                tok,
                folder,
                state_dict=weights,
                save_dtype=s["save_dtype"],
                step=total_steps,
                requested_step=k,
                total_steps=total_steps,
                spec_hash=spec_hash,
                note="requested step is past the end of training: these are the final weights",
            )
        if live_log is not None:
            os.replace(live_log, log_path)
        drop_resume_state(rdir)
    accelerator.wait_for_everyone()
    return {
        "steps": total_steps,
        "resumed_from": start_step,
        "tokens": tokens_total,
        "final_loss": loss,
        "elapsed_s": elapsed0 + time.perf_counter() - t_run,
        "steps_per_epoch": steps_per_epoch,
        "accumulation": accum,
        "processes": world,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", help="training spec JSON file (keys: ssd_math.train.DEFAULTS)")
    src.add_argument("--spec-json", help="the training spec as an inline JSON string")
    args = ap.parse_args(argv)
    summary = train(read_json(args.spec) if args.spec else json.loads(args.spec_json))
    if os.environ.get("RANK", "0") == "0":  # one summary line, from the main process only
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
