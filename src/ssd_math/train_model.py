"""The model a training run trains and its optimizer (:mod:`ssd_math.train`'s model side): loading
it, the memory-saving hooks, the linear-attention kernel check, the loss, AdamW.

Optimizer
    AdamW(lr, betas, eps, weight_decay). Weight decay applies to matrices (``p.ndim >= 2``:
    projections, embeddings, lm_head); 1-D parameters (norm weights, biases) get none.

``optimizer_state: "bf16"`` (an emulation)
    After every optimizer step the weights and both AdamW moment buffers are rounded to bf16
    and stored back as fp32 (this CPU has no bf16 hardware; compute stays fp32). This mimics a
    bf16-only optimizer, where small updates vanish below bf16 resolution. "fp32" leaves them.

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

import sys

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from ssd_math.tokenizer import load_tokenizer
from ssd_math.train_parallel import _local


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


def _chunk_ce(h: torch.Tensor, t: torch.Tensor, w: torch.Tensor, b) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=-100, reduction="sum")


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
