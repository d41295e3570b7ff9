"""The SFT memory model: what one training process holds on a GPU at its peak (weights,
gradients, AdamW state, the checkpointed layer inputs, the recomputed layer, the loss chunk,
flash-linear-attention's backward workspace, the weight-change tracker), for a model shape and a
sequence length (docs/memory_plan.md; checked against measured peaks by bench/bench_memory.py and,
on a GPU, bench/gpu_check.sh). Arithmetic only: the config check (ssd_math.config_checks) and the cost
planner read it; nothing here reads a config."""

from __future__ import annotations

from collections.abc import Mapping

# Qwen3.5-4B's text model (docs/memory_plan.md "Model dimensions"; check against the pinned
# checkpoint's config.json before the real run).
QWEN35_4B_TEXT = {
    "hidden_size": 2560,
    "num_hidden_layers": 32,
    "intermediate_size": 9216,
    "vocab_size": 248320,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "tie_word_embeddings": True,
    "full_attention_interval": 4,
}
H100_BYTES = 85.5e9  # "80 GB" H100: 79.6 GiB (torch.cuda.mem_get_info on an idle card)
H200_BYTES = 149.0e9  # "141 GB" H200: about 139 GiB free on an idle card
CUDA_RESERVE = 3.0e9  # CUDA context, cuBLAS/Triton workspaces and allocator fragmentation
# What a training GPU must keep free beyond the predicted peak (the config check refuses less):
# the CUDA context, cuBLAS/Triton workspaces and allocator fragmentation (CUDA_RESERVE), plus what
# the formula cannot see until a GPU has measured it (kernels' transient buffers, the allocator's
# rounding). docs/memory_plan.md.
GPU_HEADROOM = 8.0e9
# The formula against the measured peak of the same training code on the CPU at scaled shapes
# (bench/bench_memory.py, bench/RESULTS.md "SFT memory"): the worst ratio predicted / measured
# with checkpoint_sublayers on. The static terms (weights, gradients, AdamW) are exact counts, so
# what the formula misses is activations: sft_memory adds activations x (1 / ratio - 1).
FORMULA_MEASURED_RATIO = 0.873
# flash-linear-attention's chunk size (fla-core 0.6.0, fla/ops/gated_delta_rule/chunk.py: 64)
FLA_CHUNK = 64

# Qwen3.5-4B's sizes and what one of its decoder layers saves for backward with
# flash-linear-attention's kernel, as memory_model.model_sizes and layer_saved_bytes(QWEN35_4B_TEXT,
# kernels="fla"[, sublayers=True]) count them (35 s on a CPU with torch: stored here so the config
# check is arithmetic; tests/test_planner.py recounts them).
QWEN35_4B_SIZES = {"params": 4205751296, "embedding": 635699200, "layer_max": 112923840}
QWEN35_4B_LAYER_FLA = {"fixed": 225896704.0, "per_token": 271172.0}
QWEN35_4B_LAYER_FLA_SUBLAYERS = {
    "sublayers": {
        "linear_attention": {
            "held": {"fixed": 0.0, "per_token": 15360.0},
            "parts": {
                "linear_attn": {"fixed": 84328704.0, "per_token": 156480.0},
                "mlp": {"fixed": 141557760.0, "per_token": 73728.0},
                "input_layernorm": {"fixed": 0.0, "per_token": 10240.0},
                "post_attention_layernorm": {"fixed": 10240.0, "per_token": 20484.0},
            },
        },
        "full_attention": {
            "held": {"fixed": 0.0, "per_token": 15368.0},
            "parts": {
                "self_attn": {"fixed": 73402368.0, "per_token": 86160.0},
                "mlp": {"fixed": 141557760.0, "per_token": 73728.0},
                "input_layernorm": {"fixed": 0.0, "per_token": 10240.0},
                "post_attention_layernorm": {"fixed": 10240.0, "per_token": 20484.0},
            },
        },
    }
}


def text_config(shape: Mapping):
    """A transformers Qwen3.5 text config of ``shape`` (keys of :data:`QWEN35_4B_TEXT`), with
    Qwen3.5's layer mix (every ``full_attention_interval``-th layer full attention)."""
    from transformers import Qwen3_5TextConfig

    shape = dict(shape)
    n, every = shape["num_hidden_layers"], shape.pop("full_attention_interval", 4)
    types = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    return Qwen3_5TextConfig(
        **shape, layer_types=types, max_position_embeddings=131072, pad_token_id=0, eos_token_id=1, bos_token_id=None
    )


def model_sizes(shape: Mapping) -> dict:
    """Parameter counts of a Qwen3.5 text model of ``shape``, counted on the meta device (no
    memory): ``params`` (tied embedding once), ``embedding`` (vocab x hidden), ``layer_max``
    (the largest decoder layer: one FSDP unit)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text_config(shape))
    layers = model.model.layers
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "embedding": model.get_input_embeddings().weight.numel(),
        "layer_max": max(sum(p.numel() for p in m.parameters()) for m in layers),
    }


def _fla_gdn_saves():
    """A stand-in for flash-linear-attention's chunked gated delta rule that saves for backward
    what fla-core 0.6.0's ``ChunkGatedDeltaRuleFunction.forward`` saves
    (fla/ops/gated_delta_rule/chunk.py:310: q and k l2-normalised with their rstd, v, g, beta and
    the per-chunk matrix A, tokens x heads x 64 in fp32; w, u and the states are recomputed in its
    backward). Its output is zeros: only the saved bytes are counted."""
    import torch

    class Saves(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, g, beta):
            b, t, h, _ = v.shape
            f32 = torch.float32
            ctx.save_for_backward(
                q.clone(),
                q.new_empty((b, t, h), dtype=f32),
                k.clone(),
                k.new_empty((b, t, h), dtype=f32),
                v,
                g.to(f32).clone(),
                beta,
                v.new_empty((b, t, h, 64), dtype=f32),
            )
            return torch.zeros_like(v)

        @staticmethod
        def backward(ctx, grad):
            return (None,) * 5

    def rule(query, key, value, g, beta, **_kw):
        return Saves.apply(query, key, value, g, beta), None

    return rule


def layer_saved_bytes(
    shape: Mapping,
    mixed_precision: bool = True,
    kernels: str = "reference",
    lengths: tuple[int, int] = (128, 256),
    sublayers: bool = False,
) -> dict:
    """What one decoder layer keeps for its backward, counted (``saved_tensors_hooks``, parameters
    excluded) on one forward at each of two ``lengths`` on the CPU under bf16 autocast with SDPA
    attention, split into a part that does not grow with the length (the uncached autocast's
    bf16 copies of the weights) and one per token. That is what one recomputed layer holds in
    backward under gradient checkpointing.

    Without ``sublayers``: ``{"fixed": bytes, "per_token": bytes}``, the larger (at 32,768
    tokens) of a Gated DeltaNet and a full-attention layer of ``shape``. With ``sublayers``
    (:func:`ssd_math.train_model.checkpoint_sublayers`: each part of the layer under its own nested
    checkpoint): per layer kind, what the recompute holds throughout (``held``: the parts' inputs,
    which their checkpoints keep to recompute from; the layer's own input, a checkpointed input,
    and the rotary tables, shared by all layers, excluded) and what each part saves for its own
    backward (``parts``, its inputs excluded: they are held), as
    ``{"sublayers": {kind: {"held": {"fixed", "per_token"}, "parts": {name: {"fixed",
    "per_token"}}}}}``. :func:`layer_recompute_bytes` turns either into bytes at a length.
    ``kernels``: "reference" = transformers' PyTorch chunked delta rule (what runs without
    flash-linear-attention, e.g. on the CPU); "fla" = what flash-linear-attention's kernel saves
    instead (:func:`_fla_gdn_saves`), the GPU's."""
    import torch
    import torch.utils._pytree
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    if kernels not in ("reference", "fla"):
        raise ValueError(f"kernels must be 'reference' or 'fla', got {kernels!r}")
    cfg = text_config(shape)
    cfg._attn_implementation = "sdpa"
    types = cfg.layer_types

    def storages(tree) -> set:
        leaves = torch.utils._pytree.tree_leaves(tree)
        return {t.untyped_storage().data_ptr() for t in leaves if isinstance(t, torch.Tensor)}

    def split(saved: list[float]) -> dict:
        per_token = (saved[1] - saved[0]) / (lengths[1] - lengths[0])
        return {"fixed": max(0.0, saved[0] - per_token * lengths[0]), "per_token": per_token}

    def count(layer, tokens: int, parts: dict) -> tuple[int, dict, int]:
        """Bytes saved by one forward (the layer input and parameters excluded); per part of
        ``parts`` ({name: module}) with each part's own inputs excluded; and the parts' inputs."""
        params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
        x = torch.randn(1, tokens, cfg.hidden_size, dtype=torch.bfloat16 if mixed_precision else torch.float32)
        pos = torch.arange(tokens)[None]
        pe = Q.Qwen3_5TextRotaryEmbedding(cfg)(x, pos)
        skip = params | storages(x)
        seen: dict[int, int] = {}
        by_part: dict[str, dict[int, int]] = {n: {} for n in parts}
        inputs: dict[int, int] = {}
        state: dict = {"part": None, "inputs": set()}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in skip:
                seen[st.data_ptr()] = st.nbytes()
                if state["part"] is not None and st.data_ptr() not in state["inputs"]:
                    by_part[state["part"]][st.data_ptr()] = st.nbytes()
            return t

        hooks = []
        for name, m in parts.items():

            def pre(_m, args, kwargs, name=name):
                state.update(part=name, inputs=storages((args, kwargs)))
                for t in torch.utils._pytree.tree_leaves((args, kwargs)):
                    st = t.untyped_storage() if isinstance(t, torch.Tensor) else None
                    if st is not None and st.data_ptr() not in skip | storages(pe):
                        inputs[st.data_ptr()] = st.nbytes()

            hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            hooks.append(m.register_forward_hook(lambda *_a: state.update(part=None, inputs=set())))
        try:
            with (
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision),
            ):
                out = layer(x, position_embeddings=pe, attention_mask=None, position_ids=pos)
            del out
        finally:
            for h in hooks:
                h.remove()
        return (sum(seen.values()), {n: sum(d.values()) for n, d in by_part.items()}, sum(inputs.values()))

    best = {"fixed": 0.0, "per_token": 0.0}
    nested: dict = {}
    orig = Q.torch_chunk_gated_delta_rule
    try:
        if kernels == "fla":
            Q.torch_chunk_gated_delta_rule = _fla_gdn_saves()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for kind in ("linear_attention", "full_attention"):
                if kind not in types:
                    continue
                layer = Q.Qwen3_5DecoderLayer(cfg, types.index(kind)).train()
                parts = dict(layer.named_children())
                runs = [count(layer, n, parts) for n in lengths]
                whole = split([r[0] for r in runs])
                if whole["fixed"] + whole["per_token"] * 32768 > best["fixed"] + best["per_token"] * 32768:
                    best = whole
                if sublayers:
                    nested[kind] = {
                        "held": split([r[2] for r in runs]),
                        "parts": {n: split([r[1][n] for r in runs]) for n in parts},
                    }
    finally:
        Q.torch_chunk_gated_delta_rule = orig
    return {"sublayers": nested} if sublayers else best


def layer_recompute_bytes(layer: Mapping, tokens: int) -> float:
    """What one recomputed decoder layer holds at the peak of its backward, at ``tokens`` tokens
    per micro-batch, from :func:`layer_saved_bytes`: the whole layer's saves, or with sublayers the
    parts' inputs plus the largest part's saves (each part is recomputed and freed in turn),
    for the layer kind where that is larger."""

    def at(d: Mapping) -> float:
        return d["fixed"] + tokens * d["per_token"]

    if "sublayers" not in layer:
        return at(layer)
    return max(at(k["held"]) + max(at(p) for p in k["parts"].values()) for k in layer["sublayers"].values())


def sublayer_recompute_flops(shape: Mapping, tokens: int) -> dict:
    """The compute price of :func:`ssd_math.train_model.checkpoint_sublayers`, in forward FLOPs per
    trained token at ``tokens`` per sequence: ``step`` = one training step with per-layer
    checkpointing and the chunked loss (forward, recompute, backward = 2 forwards, for the body
    and the output layer alike), ``extra`` = the additional forward of every layer's token mixer
    (the norms' are negligible), ``fraction`` = extra / step. Matmuls are 2 FLOPs per weight
    and token (counted on the meta device); causal attention adds 2 x tokens x heads x head_dim
    per full-attention layer and token; the chunked delta rule (flash-linear-attention, 64-token
    chunks) about 2 x value heads x (3 dk dv + 64 (dk + dv)) per Gated DeltaNet layer and token."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text_config(shape))
    dk, dv = shape["linear_key_head_dim"], shape["linear_value_head_dim"]
    mixers = mlps = 0.0
    for layer in model.model.layers:
        if hasattr(layer, "self_attn"):
            mixer = layer.self_attn
            core = 2.0 * tokens * shape["num_attention_heads"] * shape["head_dim"]
        else:
            mixer = layer.linear_attn
            core = 2.0 * shape["linear_num_value_heads"] * (3 * dk * dv + 64 * (dk + dv))
        mixers += 2.0 * sum(p.numel() for p in mixer.parameters()) + core
        mlps += 2.0 * sum(p.numel() for p in layer.mlp.parameters())
    head = 2.0 * shape["hidden_size"] * shape["vocab_size"]
    step = 4.0 * (mixers + mlps + head)
    return {"step": step, "extra": mixers, "fraction": mixers / step}


def fla_backward_workspace(shape: Mapping, tokens: int, bytes_per_value: int = 2) -> float:
    """Bytes flash-linear-attention's chunked gated delta rule allocates in its backward on top of
    what its forward saved (fla-core 0.6.0, fla/ops/gated_delta_rule/chunk.py
    ``chunk_gated_delta_rule_bwd``), all alive together when ``chunk_bwd_dqkwg`` runs: the
    recomputed states ``h`` and their gradients ``dh`` (tokens / 64 chunks x value heads x K x V
    each), the recomputed ``w`` and ``dw``, ``dq``, ``dk`` (tokens x value heads x K; q and k are
    repeated to the value heads) and ``u``, ``v_new``, ``dv``, ``dv2`` (tokens x value heads x V),
    in the inputs' dtype (bf16 under autocast). At 33,792 tokens on Qwen3.5-4B: 2 x 0.55 GB +
    8 x 0.28 GB = 3.3 GB."""
    hv = shape["linear_num_value_heads"]
    k, v = shape["linear_key_head_dim"], shape["linear_value_head_dim"]
    chunks = -(-tokens // FLA_CHUNK)
    return bytes_per_value * (2 * chunks * hv * k * v + 4 * tokens * hv * k + 4 * tokens * hv * v)


def sft_memory(
    shape: Mapping,
    tokens: int,
    *,
    processes: int = 1,
    micro_batch: int = 1,
    chunk_tokens: int = 1024,
    mixed_precision: bool = True,
    host_is_device: bool = False,
    instrumented: bool = True,
    sizes: Mapping | None = None,
    layer: Mapping | None = None,
    kernels: str = "reference",
    sublayers: bool = False,
    measured_gap: bool = True,
) -> dict:
    """Peak memory (bytes) of one training process of :mod:`ssd_math.train` at ``tokens`` per
    sequence, by term (docs/memory_plan.md lists where each is allocated, file:line).

    ``processes`` > 1 is FSDP2 over that many GPUs (weights, gradients and AdamW state sharded;
    activations not). ``host_is_device``: the CPU, where the weight-change tracker's host buffer
    is the same memory. The peak is reached in a micro-batch after the first of a step (the
    gradients are then whole) in the backward of the last layer: every checkpointed layer input
    still held, plus the larger of the chunked loss's and one recomputed layer's working set.
    ``sublayers``: the layer's parts are checkpointed too (config ``sft.checkpoint_sublayers``),
    so the recomputed layer holds the largest part's activations, not the sum
    (:func:`layer_recompute_bytes`); ignored when ``layer`` is given (it says which).

    ``kernels="fla"`` (the GPU's): the recomputed layer's term also holds flash-linear-attention's
    backward workspace (:func:`fla_backward_workspace`, added whole: a bound, as if the Gated
    DeltaNet mixer were the largest part). ``measured_gap``: add what the formula missed against
    the CPU measurement (activations x (1 / :data:`FORMULA_MEASURED_RATIO` - 1)); off where the
    formula itself is compared with a measurement (bench/bench_memory.py)."""
    sz = dict(sizes or model_sizes(shape))
    lay = layer or layer_saved_bytes(shape, mixed_precision=mixed_precision, kernels=kernels, sublayers=sublayers)
    P, E, Pl = sz["params"], sz["embedding"], sz["layer_max"]
    H, L, V = (shape[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
    n, T = max(1, processes), tokens * micro_batch
    cb = 2 if mixed_precision else 4  # bytes of an activation in the compute dtype
    c = min(chunk_tokens, tokens) * micro_batch if chunk_tokens else T
    terms = {
        "weights_fp32": 4 * P / n,
        "grads_fp32": 4 * P / n,
        "adamw_fp32": 8 * P / n,
        "checkpointed_inputs": L * T * H * cb,
        "hidden_out_and_grad": T * H * (cb + 4),
        # one loss chunk: logits in the compute dtype and in fp32, the fp32 log-softmax grad and
        # the compute-dtype logits grad; under autocast the head weight's bf16 copy and its grad
        "loss_chunk": c * V * (cb + 4 + 4 + cb) + (2 * E * 2 if mixed_precision else 0),
        # one recomputed layer in backward: what it saves for its own backward (its weights' bf16
        # copies and its activations; with sublayers its parts' inputs and the largest part's)
        "layer_recompute": layer_recompute_bytes(lay, T),
    }
    if n > 1:
        # FSDP2: this and the prefetched next layer gathered in the compute dtype, their
        # unsharded gradients before the reduce-scatter; the root unit (norm + tied embedding)
        # stays gathered
        terms["fsdp_gathered"] = 2 * Pl * (cb + 4) + E * cb
    if instrumented and host_is_device:
        terms["tracker_host_copy"] = 2 * P  # bf16 stored values before the step (host memory)
    if kernels == "fla" and shape.get("linear_num_value_heads"):
        terms["fla_backward_workspace"] = fla_backward_workspace(shape, T, cb)
    activations = (
        terms["checkpointed_inputs"]
        + terms["hidden_out_and_grad"]
        + max(terms["loss_chunk"], terms["layer_recompute"] + terms.get("fla_backward_workspace", 0))
    )
    if measured_gap:
        terms["formula_gap"] = activations * (1 / FORMULA_MEASURED_RATIO - 1)
    peak = (
        terms["weights_fp32"]
        + terms["grads_fp32"]
        + terms["adamw_fp32"]
        + activations
        + terms.get("formula_gap", 0)
        + terms.get("fsdp_gathered", 0)
        + terms.get("tracker_host_copy", 0)
    )
    return {"peak": peak, "terms": terms, "sizes": sz, "layer": dict(lay)}


def max_fitting_tokens(shape: Mapping, capacity: float = H100_BYTES - GPU_HEADROOM, step: int = 1024, **kw) -> int:
    """The longest sequence (a multiple of ``step``) whose :func:`sft_memory` peak fits
    ``capacity`` bytes; 0 when none does."""
    sizes = kw.pop("sizes", None) or model_sizes(shape)
    if kw.get("layer") is None:
        kw["layer"] = layer_saved_bytes(
            shape,
            mixed_precision=kw.get("mixed_precision", True),
            kernels=kw.get("kernels", "reference"),
            sublayers=kw.get("sublayers", False),
        )
    best, t = 0, step
    while t <= 1 << 20 and sft_memory(shape, t, sizes=sizes, **kw)["peak"] <= capacity:
        best, t = t, t + step
    return best


# Shapes the config check knows, by hub id (model.hub.id): the text model trained.
KNOWN_SHAPES = {
    "Qwen/Qwen3.5-4B": (
        QWEN35_4B_TEXT,
        QWEN35_4B_SIZES,
        {True: QWEN35_4B_LAYER_FLA_SUBLAYERS, False: QWEN35_4B_LAYER_FLA},
    )
}
