"""Supervised fine-tuning (and tiny-base pretraining) of a causal LM: one file, top to bottom.

Launch (one CPU process; the same command scales to N GPUs with another accelerate config):

    accelerate launch --config_file envs/accelerate/cpu.yaml -m ssd_math.train --spec SPEC.json

or without accelerate's launcher (single process): ``python -m ssd_math.train --spec SPEC.json``
(the rules do that for a one-process CPU config, with the launcher's environment:
:func:`ssd_math.launcher.train_launcher`).
``--spec-json '{...}'`` takes the spec inline instead of from a file. Several CPU processes
(gloo): ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ssd_math.train --spec SPEC.json``.
From Python: ``ssd_math.train.train(spec_dict)``. The spec keys and their defaults are
``DEFAULTS`` below (the recipe keys' defaults are the config schema's ``$defs/optim``); this
docstring is what they mean (docs/contracts.md points here).

What one optimizer step is
    ``global_batch`` sequences = ``micro_batch`` x accumulation x processes (fail fast when it
    does not divide). Each process runs its micro-batches (forward+backward) and the optimizer
    steps once. The loss is the mean over *all completion tokens of the global batch*: every
    micro-batch contributes sum(token losses) / (completion tokens in the whole global batch),
    so accumulation is exact (4 micro-batches of 2 == 1 batch of 8) and long sequences are not
    down-weighted. We do not pass gradient_accumulation_steps to the Accelerator (its
    ``backward`` would divide the loss again); gradients are synchronised across processes on
    the last micro-batch only (``accelerator.no_sync`` on the others).

Data
    Rows {"prompt", "completion", "finish_reason"?}. The prompt is the fully rendered chat
    prompt: prompt and completion are tokenized separately without special tokens and
    concatenated; the eos token is appended when finish_reason is "stop" or absent (a
    length-stopped completion did not end); then truncated to ``max_len``. Labels are -100 on
    prompt tokens and padding (loss on completion tokens only). The order of an epoch is a
    permutation that is a pure function of (seed, epoch); an epoch has
    floor(rows / global_batch) optimizer steps (the remainder rows of an epoch are dropped).
    ``group_by_length: true`` groups rows of similar length into the same global batch (less
    padding): transformers' ``get_length_grouped_indices`` (mega-batches of 50 batches sorted by
    length), then the batches in a seeded random order, so a long-to-short sweep within each
    mega-batch does not become a curriculum.

Optimizer and schedule
    AdamW(lr, betas, eps, weight_decay). Weight decay applies to matrices (``p.ndim >= 2``:
    projections, embeddings, lm_head); 1-D parameters (norm weights, biases) get none.
    LR at optimizer step s = 1..T: linear warmup lr*s/warmup_steps for s <= warmup_steps, then
    cosine from lr to min_lr reaching min_lr exactly at s = T (``schedule: cosine``), or lr
    held (``schedule: constant``). Gradient norm is measured before clipping; clipped to
    ``grad_clip`` when set.

``optimizer_state: "bf16"`` (an emulation)
    After every optimizer step the weights and both AdamW moment buffers are rounded to bf16
    and stored back as fp32 (this CPU has no bf16 hardware; compute stays fp32). This mimics a
    bf16-only optimizer, where small updates vanish below bf16 resolution. "fp32" leaves them.

Checkpoints and resume (the resume contract)
    At each step in ``checkpoints`` ({step: folder}) the model is saved (save_pretrained +
    tokenizer into a temporary folder, then renamed; in ``save_dtype``, the served dtype, when
    set: the fp32 master weights are then only in the resume state) and, when ``resume_dir`` is set, the full
    training state too (accelerate's ``save_state``, into a temporary folder then renamed): model
    and optimizer state, scheduler, noise-estimator EMA, RNG states (python, numpy, torch, CUDA;
    per process), and in ``progress.json`` the data position (= the optimizer step; the data
    order is a function of (seed, epoch) only), elapsed time, log length and the state's format
    (a state of another format is refused; the weight-change tracker keeps nothing between
    steps). On start, an
    existing resume state is restored and training continues at the next step; the log is
    truncated to that step so no row is duplicated (the log grows in ``<log>.partial`` and is
    renamed onto ``log`` at the end). A killed and rerun CPU run ends with weights
    equal (bitwise) to an uninterrupted run's. A spec that differs from the one that wrote the
    resume state in anything that changes training fails fast. The state keeps hard links of the
    checkpoint folders written so far and a resume puts back any Snakemake deleted (it deletes a
    rerun job's declared outputs); a finished run removes its resume state, so a forced rerun
    starts over. ``interrupt_after_step`` (the resume drill of config/gpu-smoke.yaml) stops a
    run with exit code 75 right after that step's resume state is saved, as a preempted job
    would; run again, it resumes there and never stops again.

Guards
    A NaN/inf loss or gradient norm raises ``FloatingPointError`` naming the step, before the
    optimizer step; the last checkpoint stays intact.

Log
    One JSON row per optimizer step (appended, flushed and fsynced): step, loss (mean over the
    step's completion tokens), ppl = exp(loss), lr (the lr used by this step), grad_norm (before
    clipping), tokens (cumulative non-pad input tokens, all processes), loss_tokens (completion
    tokens in this step), elapsed_s, step_s (this step's wall time, instrumentation included),
    step_cpu_s (its CPU time, all threads of this process; robust on a shared machine),
    tokens_per_s (this step's input tokens / its wall time), mem_mb (peak RSS of this process, or peak CUDA memory on GPU), and with
    ``instrument.enabled`` the noise-trap fields of :mod:`ssd_math.noise`: frac_changed,
    frac_changed_<group>, n_changed, n_params, dw_hist, G2_raw, trS_raw, G2_ema, trS_ema,
    B_simple, gB_norm, gs_norm, B_small, B_big.

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

FSDP2 (envs/accelerate/fsdp.yaml)
    Model and optimizer are prepared together; checkpoints and the resume state are full state
    dicts gathered from the shards (accelerate's ``get_state_dict`` and ``save_state`` with
    fsdp.yaml's FULL_STATE_DICT) and written by the main process; on resume the main process
    reads them and broadcasts them tensor by tensor, and every process keeps its own shards. The
    chunked loss works as on one process. FSDP1, and activation checkpointing switched on in both
    the accelerate config and the spec, fail fast. tests/test_fsdp.py runs all of it on 2 CPU processes (gloo).

Kernels
    On CUDA a model with linear-attention (Gated DeltaNet) layers needs flash-linear-attention;
    without it training stops before loading the model (naming the install command) rather than
    run transformers' reference kernels. causal-conv1d is optional: without it a warning, and
    transformers' ``F.conv1d`` fallback (:func:`check_linear_attention_kernels`).

Memory (docs/memory_plan.md, bench/bench_memory.py)
    fp32 master weights, gradients and AdamW state; compute in the accelerator's autocast dtype,
    without autocast's weight cache, and with a bf16 residual stream
    (:func:`compute_dtype_residuals`); the weight-change tracker keeps its copy in host memory;
    a resume state is loaded to the CPU first. ``gradient_checkpointing`` checkpoints each decoder
    layer; ``checkpoint_sublayers`` also each part of it (norms, token mixer, MLP; nested, so a
    recomputed layer holds one part's activations at a time: :func:`checkpoint_sublayers`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

# The CUDA caching allocator reads its settings from the environment, so they must be there before
# torch is imported. Expandable segments: the micro-batches range from ~1k to 33.8k tokens, the
# worst case for fragmentation of fixed-size segments, and the memory plan's headroom assumes them
# (docs/memory_plan.md). A user's own setting (either variable name torch 2.13 reads) wins.
CUDA_ALLOC_CONF = "expandable_segments:True"
if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = CUDA_ALLOC_CONF

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.checkpoint  # noqa: E402

from ssd_math.config import recipe_errors  # noqa: E402
from ssd_math.io import (  # noqa: E402
    atomic_path,
    file_sha256,
    read_json,
    read_jsonl,
    stable_hash,
    write_json,
    write_meta,
)
from ssd_math.noise import DEFAULT_DW_BINS, GradientNoiseEstimator, WeightChangeTracker  # noqa: E402
from ssd_math.schema import schema_defaults  # noqa: E402
from ssd_math.tokenizer import load_tokenizer  # noqa: E402

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

_SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# keys that do not change the trained weights (may differ between a run and its resume);
# max_steps is not one of them: it sets the number of steps, hence the LR schedule
_RESUME_NEUTRAL = {"checkpoints", "log", "resume_dir", "out_dir", "progress", "save_dtype", "interrupt_after_step"}
# The exit code of a run stopped by ``interrupt_after_step`` (EX_TEMPFAIL: try again).
INTERRUPT_EXIT = 75

# progress.json "format" of a resume state: 1 (no key) = the hand-written state.pt + rng_<i>.pt,
# 2 = accelerate's save_state folder (model, optimizer.bin, random_states_<i>.pkl, custom_checkpoint_<i>.pkl)
RESUME_FORMAT = 2


# ------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------


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


def lr_at(step: int, s: dict, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based) out of ``total_steps``."""
    lr, min_lr, warm = s["lr"], s["min_lr"], s["warmup_steps"]
    if warm > 0 and step <= warm:
        return lr * step / warm
    if s["schedule"] == "constant":
        return lr
    progress = (step - warm) / max(1, total_steps - warm)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def encode_row(row: dict, tok, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt tokens labelled -100, completion (+eos if stopped) trained."""
    p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    c = tok(row["completion"], add_special_tokens=False)["input_ids"]
    if row.get("finish_reason", "stop") in ("stop", None):
        if tok.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token to append to stopped completions")
        c = c + [tok.eos_token_id]
    ids = (p + c)[:max_len]
    labels = ([-100] * len(p) + c)[:max_len]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-pad to the longest; padding has attention 0 and label -100."""
    n = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def n_loss_tokens(labels: list[int]) -> int:
    """Tokens that carry loss after the causal shift (label position 0 predicts nothing)."""
    return sum(1 for y in labels[1:] if y != -100)


def epoch_order(n_rows: int, seed: int, epoch: int, lengths: list[int] | None = None, batch: int = 1) -> list[int]:
    """The row order of an epoch: a pure function of (seed, epoch) (and, with ``lengths``, of
    the rows' lengths: length-grouped batches of ``batch`` rows in a random order)."""
    if lengths is None:
        return np.random.default_rng([seed, epoch]).permutation(n_rows).tolist()
    from transformers.trainer_pt_utils import get_length_grouped_indices

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    grouped = get_length_grouped_indices(list(lengths), batch, generator=g)
    n_batches = len(grouped) // batch  # the remainder rows are dropped, as without grouping
    perm = np.random.default_rng([seed, epoch, 1]).permutation(n_batches)
    return [i for b in perm for i in grouped[b * batch : (b + 1) * batch]]


def global_batch_rows(
    step: int, n_rows: int, s: dict, steps_per_epoch: int, lengths: list[int] | None = None
) -> list[int]:
    """Row indices of 0-based optimizer step ``step`` (the data position); ``lengths`` (token
    counts per row) when ``s["group_by_length"]``."""
    epoch, k = divmod(step, steps_per_epoch)
    order = epoch_order(n_rows, s["seed"], epoch, lengths if s.get("group_by_length") else None, s["global_batch"])
    return order[k * s["global_batch"] : (k + 1) * s["global_batch"]]


def token_sum_loss(model, batch: dict, *, raw_model=None, chunk_tokens: int = 0) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over label positions != -100.

    ``chunk_tokens > 0`` is the memory-lean loss for long sequences: the full logits of a 32k
    sequence over Qwen3.5's 248k vocabulary are ~32 GB in fp32. The model's forward then returns
    the last hidden states (its output layer swapped for an identity), and the output layer and
    cross-entropy run ``chunk_tokens`` positions at a time under activation checkpointing, so at
    most one chunk's logits exist, in forward and in backward. Same value and gradients as the
    plain path (tests/test_train.py), also under FSDP2 (tests/test_fsdp.py). The caller runs it
    under the accelerator's autocast: the output layer's matmul is then in the compute dtype (bf16)
    like the model body, not an fp32 matmul of T x hidden x vocab."""
    if not chunk_tokens:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1].float()
        target = batch["labels"][:, 1:]
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
    raw = raw_model if raw_model is not None else model
    head = raw.get_output_embeddings()
    raw.set_output_embeddings(torch.nn.Identity())
    try:
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        raw.set_output_embeddings(head)
    # Under FSDP2 accelerate puts the final norm and the output layer (with the tied embedding) in
    # one unit that is not resharded after forward: the weight is whole here, and the gradient it
    # gets is reduce-scattered by that unit's post-backward (tests/test_fsdp.py).
    w, b = head.weight, head.bias
    h = hidden[:, :-1].reshape(-1, hidden.size(-1))
    t = batch["labels"][:, 1:].reshape(-1)
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, h.size(0), int(chunk_tokens)):
        tc = t[i : i + chunk_tokens]
        if bool((tc != -100).any()):
            total = total + torch.utils.checkpoint.checkpoint(
                _chunk_ce, h[i : i + chunk_tokens], tc, w, b, use_reentrant=False
            )
    return total


def _local(t):
    """The local shard of a DTensor (FSDP2 parameter or gradient); a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _chunk_ce(h: torch.Tensor, t: torch.Tensor, w: torch.Tensor, b) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=-100, reduction="sum")


# ------------------------------------------------------------------------------------------
# model, optimizer, state
# ------------------------------------------------------------------------------------------


def load_model_and_tokenizer(s: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = load_tokenizer(s["init_dir"])
    if s["init_random"]:
        config = AutoConfig.from_pretrained(s["init_dir"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(s["init_dir"], dtype=torch.float32)
    model.config.use_cache = False
    if s["gradient_checkpointing"]:
        # transformers 5.19.0's API (modeling_utils.PreTrainedModel.gradient_checkpointing_enable)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if s["checkpoint_sublayers"]:
            checkpoint_sublayers(model)
    return model, tok


def checkpoint_sublayers(model) -> int:
    """Run every part of each decoder layer (its norms, token mixer and MLP: the layer's direct
    children) under its own non-reentrant checkpoint, nested in the layer's checkpoint. The
    recompute of a layer in backward then holds the parts' inputs and one part's activations at a
    time, not the whole layer's: the largest part instead of the sum (docs/memory_plan.md). The
    price is one more forward of every part but the last (torch.utils.checkpoint's early stop ends
    the layer's recompute once the last part's input exists): the token mixer runs three times per
    step instead of two. Same values and gradients (checkpointing recomputes, it does not
    approximate: tests/test_train.py). The forward is replaced on the instance, so parameter names,
    state dicts and FSDP units stay those of the plain model. Returns the number of parts wrapped."""
    from functools import partial

    from transformers.modeling_layers import GradientCheckpointingLayer

    n = 0
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            for part in layer.children():
                part.forward = partial(_checkpointed, part.forward)
                n += 1
    if not n:
        raise ValueError(
            f"checkpoint_sublayers: {type(model).__name__} has no transformers "
            "GradientCheckpointingLayer (decoder layer) to look inside"
        )
    return n


def _checkpointed(forward, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def compute_dtype_residuals(model, device_type: str):
    """Under autocast, cast the input embeddings' output to the autocast dtype, so that the
    residual stream (and with gradient checkpointing every layer's saved input) is bf16 as in a
    bf16 model, not fp32: the fp32 embedding output would otherwise make every residual add fp32
    (RMSNorm returns its input's dtype), doubling the checkpointed activations
    (docs/memory_plan.md). Without autocast (the CPU default) the hook changes nothing.
    Returns the hook handle."""

    def cast(_module, _inputs, out):
        if torch.is_autocast_enabled(device_type):
            return out.to(torch.get_autocast_dtype(device_type))
        return out

    return model.get_input_embeddings().register_forward_hook(cast)


# The exact commands that install the kernels on a CUDA machine with the pinned torch: both are
# pure-Python wheels on PyPI (Triton kernels), no compiler and no GitHub download.
FLA_INSTALL = "pip install --no-deps flash-linear-attention==0.6.0 fla-core==0.6.0"


def check_linear_attention_kernels(config, device_type: str) -> list[str]:
    """On CUDA, for a model with linear-attention (Gated DeltaNet) layers: stop when
    flash-linear-attention is missing (transformers would run its reference chunked delta rule, a
    Python loop over 64-token chunks in fp32: far slower and more activation memory than
    docs/memory_plan.md assumes), naming the command that installs it; only warn when
    causal-conv1d is missing: it is optional (an sdist that compiles CUDA code or downloads from
    GitHub), and transformers then runs the 4-tap short convolution as a plain ``F.conv1d``, a
    small share of a layer's work. Returns the warnings it printed. Uses transformers' own
    availability checks (the ones its Qwen3.5 modeling code relies on)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or []
    if device_type != "cuda" or "linear_attention" not in layer_types:
        return []
    from transformers.utils.import_utils import is_causal_conv1d_available, is_flash_linear_attention_available

    n = layer_types.count("linear_attention")
    if not is_flash_linear_attention_available():
        raise RuntimeError(
            f"the model has {n} linear-attention (Gated DeltaNet) layers but flash-linear-attention "
            f"is not installed: transformers would run its reference PyTorch kernels. Install it "
            f"with: {FLA_INSTALL}"
        )
    warnings = []
    if not is_causal_conv1d_available():
        warnings.append(
            f"warning: causal-conv1d is not installed: the short convolution of the {n} "
            "linear-attention layers runs as transformers' PyTorch fallback (F.conv1d); "
            "bench/gpu_check.sh records the step time with the kernels that ran"
        )
    for w in warnings:
        print(w, file=sys.stderr)
    return warnings


def make_optimizer(model, s: dict) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (ndim >= 2, incl. embeddings), none on norms/biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach=False: the per-parameter loop is bitwise reproducible on CPU across resumes
    return torch.optim.AdamW(groups, lr=s["lr"], betas=tuple(s["betas"]), eps=s["eps"], foreach=False)


@torch.no_grad()
def round_to_bf16_(model, optimizer) -> None:
    """Emulated bf16-only training: weights and AdamW moments rounded to bf16 (kept as fp32)."""
    for p in model.parameters():
        _local(p).copy_(_local(p).to(torch.bfloat16))
        st = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                _local(st[key]).copy_(_local(st[key]).to(torch.bfloat16))


def save_model(model, tok, folder: str | Path, state_dict=None, save_dtype: str | None = None, **meta) -> None:
    """save_pretrained + tokenizer into a temporary folder, then rename onto ``folder``.
    ``state_dict``: the full weights when the model is sharded (accelerator.get_state_dict).
    ``save_dtype``: the dtype the folder holds (the served dtype: bf16 for the real recipe, half
    the disk of the fp32 master weights, which only the resume state keeps); None = as trained."""
    sd = state_dict
    if save_dtype is not None:
        sd = cast_state_dict(model.state_dict() if sd is None else sd, _SAVE_DTYPES[save_dtype])
    with atomic_path(folder, is_dir=True) as tmp:
        model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        if save_dtype is not None:
            # save_pretrained writes the parameters' dtype (fp32); config.json says what it holds
            cfg_path = Path(tmp) / "config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            cfg["dtype"] = save_dtype
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tok.save_pretrained(tmp)
        write_meta(tmp, artifact=str(folder), saved_dtype=save_dtype or "float32", **meta)


def cast_state_dict(sd: dict, dtype: torch.dtype) -> dict:
    """``sd``'s floating tensors in ``dtype`` on the CPU, one tensor at a time (no second copy of the
    model on the accelerator). Tensors that share storage (tied embeddings) stay one tensor, so
    save_pretrained drops the tied key as it does for the model's own state dict."""
    out, seen = {}, {}
    for k, v in sd.items():
        if not torch.is_floating_point(v):
            out[k] = v
            continue
        key = (v.device, v.data_ptr(), tuple(v.shape), v.dtype)
        if key not in seen:
            seen[key] = v.detach().to("cpu", dtype=dtype, copy=True)
        out[k] = seen[key]
    return out


def _link_tree(src, dst) -> None:
    """Copy a folder as hard links (no second copy of the weights on disk; a plain copy where
    links are refused), atomically: into a temporary name, then renamed."""

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link)
    os.replace(tmp, dst)


def save_resume(
    resume_dir, accelerator, step: int, elapsed: float, tokens: int, spec_hash: str, checkpoints: dict | None = None
) -> None:
    """accelerate's ``save_state`` (model, optimizer, RNG states of every process, and the objects
    registered for checkpointing: the scheduler and the noise estimator), plus ``progress.json``
    and the checkpoint folders written so far (``checkpoints``: {step: folder}) as hard links
    (``checkpoints/<step>``): Snakemake deletes a rerun job's declared outputs, and a resumed run
    restores them from here (:func:`restore_resume_state`). save_state writes into the folder it
    is given, in place: it is given a temporary folder that the main process renames."""
    resume_dir = Path(resume_dir)
    tmp = resume_dir.with_name(f".{resume_dir.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)  # every process (FSDP2 gathers the full state onto the main one)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(
            tmp / "progress.json",
            {
                "format": RESUME_FORMAT,
                "step": step,
                "log_rows": step,
                "elapsed_s": elapsed,
                "tokens": tokens,
                "spec_hash": spec_hash,
            },
        )
        for k, folder in sorted((checkpoints or {}).items()):
            if k <= step:
                _link_tree(folder, tmp / "checkpoints" / str(k))
        for f in (f for f in tmp.iterdir() if f.is_file()):  # durable before the rename
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = resume_dir.with_name(f".{resume_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if resume_dir.exists():
            os.replace(resume_dir, old)
        os.replace(tmp, resume_dir)  # a crash between the two renames leaves .old: restored on start
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def full_weights(accelerator, model) -> dict:
    """The whole model's weights from FSDP2 shards (every process calls; the main one gets them,
    on CPU), via accelerate's own gathering (torch.distributed.checkpoint full_state_dict).
    Tied parameters (Qwen3.5's lm_head = embed_tokens) are gathered as separate copies; they are
    made one tensor again so that save_pretrained drops the tied key as it does unsharded."""
    sd = accelerator.get_state_dict(model)
    names_of: dict[int, list[str]] = {}
    for name, p in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    for first, *tied in names_of.values():
        for name in tied:
            if first in sd and name in sd:
                sd[name] = sd[first]
    return sd


def _inner(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer."""
    return getattr(optimizer, "optimizer", optimizer)


def truncate_log(path: Path, n_rows: int) -> None:
    """Keep the first ``n_rows`` rows of the log (rows past the resume point are redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines[:n_rows]), encoding="utf-8")


def append_row(fh, row: dict) -> None:
    fh.write(json.dumps(row) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


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


def _sum_fn(accelerator):
    """Sum of a tensor over processes (for counts over FSDP2 shards)."""

    def total(t: torch.Tensor) -> torch.Tensor:
        t = t.to(accelerator.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    return total


def peak_mem_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------------------
# the loop and its helpers (each named for the part of a step it owns)
# ------------------------------------------------------------------------------------------


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


def training_spec_hash(s: dict) -> str:
    """The hash of everything in the spec that changes the trained weights (the data file's
    content included): a resume state written under another hash is refused."""
    return stable_hash(
        {
            **{k: v for k, v in s.items() if k not in _RESUME_NEUTRAL},
            "data_sha256": file_sha256(s["data"]) if isinstance(s["data"], (str, os.PathLike)) else None,
        }
    )


def restore_resume_state(
    rdir: Path | None, spec_hash: str, accelerator, checkpoints: dict | None = None, live_log: Path | None = None
) -> tuple[int, float, int]:
    """Restore the training state in ``rdir`` when there is one (accelerate's ``load_state``: the
    prepared model and optimizer, the RNG states, the registered scheduler and noise estimator);
    (optimizer steps done, elapsed seconds, tokens seen) -- (0, 0.0, 0) on a fresh start.
    Checkpoint folders at or before its step (``checkpoints``: {step: folder}) that are gone --
    Snakemake deletes a rerun job's declared outputs -- are put back from the state's links; a
    state that cannot finish the run as an uninterrupted one would (a checkpoint with no link, or
    fewer rows in ``live_log`` than its step) is not resumed: training starts over. A state of
    another format (``progress.json`` "format"; none: format 1, ``state.pt``) is refused."""
    if rdir is None:
        return 0, 0.0, 0
    old = rdir.with_name(f".{rdir.name}.old")  # a save killed between its two renames
    if accelerator.is_main_process and not (rdir / "progress.json").exists() and (old / "progress.json").exists():
        shutil.rmtree(rdir, ignore_errors=True)
        os.replace(old, rdir)
    accelerator.wait_for_everyone()
    if not (rdir / "progress.json").exists():
        return 0, 0.0, 0
    prog = read_json(rdir / "progress.json")
    if prog.get("format", 1) != RESUME_FORMAT:
        raise ValueError(
            f"resume state in {rdir} has format {prog.get('format', 1)} (an older "
            f"ssd_math.train's); this one reads format {RESUME_FORMAT} (accelerate's "
            "save_state): delete it to start over"
        )
    if prog["spec_hash"] != spec_hash:
        raise ValueError(f"resume state in {rdir} was written by a different training spec; delete it to start over")
    missing = {k: Path(f) for k, f in (checkpoints or {}).items() if k <= prog["step"] and not Path(f).exists()}
    lost = [str(f) for k, f in sorted(missing.items()) if not (rdir / "checkpoints" / str(k)).is_dir()]
    rows = (
        sum(1 for ln in live_log.read_text(encoding="utf-8").splitlines() if ln.strip())
        if live_log is not None and live_log.exists()
        else 0
    )
    if lost or (live_log is not None and rows < prog["step"]):
        why = (
            f"checkpoint(s) {', '.join(lost)} are gone"
            if lost
            else f"its log {live_log} has {rows} of {prog['step']} rows"
        )
        print(f"resume state in {rdir} is at step {prog['step']}, but {why}: starting over", file=sys.stderr)
        return 0, 0.0, 0
    accelerator.wait_for_everyone()  # every process has decided before the folders come back
    if accelerator.is_main_process:
        for k, folder in sorted(missing.items()):
            _link_tree(rdir / "checkpoints" / str(k), folder)
    accelerator.wait_for_everyone()
    # On the CPU first, memory-mapped: the weights through safetensors (mmap), the optimizer state
    # through torch.load(mmap=True), then copied into place. map_location "cpu" explicitly:
    # accelerate's default with several GPU processes, "on_device", would put a second copy of the
    # weights on the GPU beside the model's (docs/memory_plan.md "Resume"; FSDP2 ignores it: the
    # main process reads the full state and broadcasts it tensor by tensor).
    accelerator.load_state(rdir, map_location="cpu", load_kwargs={"mmap": True})
    return prog["step"], prog["elapsed_s"], prog["tokens"]


def drop_resume_state(rdir: Path | None) -> None:
    """A finished run's resume state served a killed run only: removed, so that a forced rerun
    starts over and a 4B run's full optimizer state does not stay on disk."""
    if rdir is not None:
        shutil.rmtree(rdir, ignore_errors=True)


def partial_log(log: str | None) -> Path | None:
    """The live log a run appends to, ``<log>.partial`` (undeclared, so a rerun keeps it)."""
    return Path(log).with_name(Path(log).name + ".partial") if log else None


def open_step_log(log: str | None, start_step: int, is_main: bool):
    """(declared log path, live ``<log>.partial`` path, its open handle on the main process).

    The log grows in ``<log>.partial`` (appended, fsynced per step) and is renamed onto the
    declared log only when training ends: a killed job leaves no log that looks complete, and the
    partial (which Snakemake does not delete, being undeclared) survives for the resume, truncated
    to the resumed step."""
    log_path = Path(log) if log else None
    live_log = partial_log(log)
    if live_log is None or not is_main:
        return log_path, live_log, None
    live_log.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    if start_step:
        truncate_log(live_log, start_step)
    else:
        live_log.unlink(missing_ok=True)
    return log_path, live_log, open(live_log, "a", encoding="utf-8")


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
