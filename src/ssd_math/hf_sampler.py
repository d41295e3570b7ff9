"""The transformers backend of :mod:`ssd_math.sampler`: :class:`HFSampler` and its fast decode loop.

Seeds, rows and the request contract are :mod:`ssd_math.sampler`'s; this module turns one fixed
batch of requests into rows with transformers (CPU by default), reproducibly for the same
(requests, batch_size, loop, machine, thread count).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .modeling import load_model
from .sampler import SamplingConfig, base_row, check_requests, derive_seed, request_seed
from .tokenizer import load_tokenizer

# Why a hand-written decode loop and not transformers' continuous batching
# (``generate_batch`` / ``init_continuous_batching``): it does run on CPU, but (1) its paged
# cache, warm-up and scheduler thread are built for GPUs, so on a CPU and a tiny model each call
# costs far more than plain generate; (2) its scheduler runs in a background
# thread and admits requests as they arrive, so which rows share a forward (hence the RNG stream)
# is not fixed by the batch: byte-identical reruns are not guaranteed by construction; (3) its
# logits processors see only each request's last token, not the generated history, so the
# presence penalty cannot be expressed; (4) its paged cache has no linear-attention (Gated
# DeltaNet) state, which the real recipe's hybrid Qwen3.5 needs.
#
# The loop (:func:`decode_batch`) keeps what generate's ``_sample`` does for one batch and drops
# its per-step machinery:
# * same distribution by construction: the processors are transformers' own classes, built under
#   generate's own conditions (:meth:`SamplingConfig.hf_processors`), then ``softmax`` + ``multinomial``;
# * finished rows leave the batch and the cache (``Cache.reorder_cache`` with the surviving rows:
#   ``index_select`` on every layer kind, KV and linear-attention conv/recurrent states alike),
#   batched so the copy is paid when at least ``compact_frac`` of the rows are done (0.1: every
#   compaction copies the whole cache, so compacting at each finished row costs more than it
#   saves, while waiting for a larger share leaves more positions computed for finished rows;
#   bench/bench_sampler.py's ``--compact-frac`` times other values);
# * full-attention KV lives in one preallocated buffer per layer (:class:`BufferedKVLayer`), written
#   in place, instead of ``torch.cat`` of the whole cache at every step;
# * ``logits_to_keep=1`` in prefill and decode; no stopping-criteria objects, one host sync a step.
# Refilling freed slots with waiting prompts (continuous batching) is left out on purpose: batch
# composition is fixed so each batch is seeded on its own and resumable (module docstring).


@dataclass(frozen=True)
class Batch:
    index: int  # position of the chunk in the request order
    sample_index: int
    requests: tuple  # the chunk's requests (fixed composition)

    @property
    def key(self) -> tuple[str, int]:
        """(first prompt id, sample index): identifies the batch across runs."""
        return (self.requests[0]["id"], self.sample_index)


def plan_batches(requests: Sequence[dict], batch_size: int, n: int) -> list[Batch]:
    """Requests chunked in order into ``batch_size`` groups, once per sample index."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = [tuple(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]
    return [Batch(b, s, chunk) for s in range(n) for b, chunk in enumerate(chunks)]


class TopKTruncation:
    """temperature -> top-k -> top-p -> min-p, then a draw, on the ``top_k`` best logits only.

    The same distribution as transformers' warpers (:meth:`SamplingConfig.hf_processors`) followed by
    ``softmax`` + ``multinomial`` over the whole vocabulary, computed on ``torch.topk``'s k
    candidates instead: top-k keeps the k largest scores (transformers keeps every score equal
    to the k-th as well: only exact ties at the boundary differ); top-p keeps candidate i iff the
    probability mass of the candidates ranked before it is < top_p (transformers: the ascending
    cumulative mass of the rest is > 1 - top_p: the same set, up to float rounding at the
    boundary); min-p keeps candidates with probability >= min_p x the top one (a ratio, so
    normalisation does not matter). Written by hand because transformers' warpers sort and
    mask the whole vocabulary at every step and ``multinomial`` then draws over it; on the tiny
    default's 384-token vocabulary the gain is small (the "bare + top-k sampling" row of
    bench/bench_sampler.py's ablations; a real vocabulary is not measured). Used by the fast loop when
    top-k is on; with top-k off the loop runs transformers' warpers."""

    def __init__(self, sampling: SamplingConfig):
        if sampling.top_k <= 0:
            raise ValueError("TopKTruncation needs top_k > 0")
        self.temperature = float(sampling.temperature)
        self.top_k = int(sampling.top_k)
        self.top_p = float(sampling.top_p)
        self.min_p = float(sampling.min_p)

    def sample(self, scores, generator=None):
        import torch

        if self.temperature != 1.0:
            scores = scores / self.temperature
        vals, idx = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1)  # descending
        probs = torch.softmax(vals, dim=-1)
        keep = None
        if self.top_p < 1.0:
            keep = (torch.cumsum(probs, dim=-1) - probs) < self.top_p  # mass ranked before < p
        if self.min_p > 0:
            ok = probs >= self.min_p * probs[:, :1]
            keep = ok if keep is None else keep & ok
        if keep is not None:
            probs = torch.softmax(vals.masked_fill(~keep, float("-inf")), dim=-1)
        choice = torch.multinomial(probs, num_samples=1, generator=generator)
        return idx.gather(1, choice).squeeze(1)


def loop_sampling(sampling: SamplingConfig):
    """What the fast loop samples ``sampling`` with: ``(processors, truncation)``. With top-k on,
    the processors are the presence penalty only and :class:`TopKTruncation` does the rest;
    otherwise transformers' warpers (:meth:`SamplingConfig.hf_processors`) and ``truncation`` None."""
    if sampling.top_k > 0:
        return sampling.hf_processors(warpers=False), TopKTruncation(sampling)
    return sampling.hf_processors(), None


def _buffered_kv_layer_class():
    import torch
    from transformers.cache_utils import DynamicLayer

    class BufferedKVLayer(DynamicLayer):
        """A full-attention cache layer whose keys/values live in one preallocated
        ``[batch, kv heads, capacity, head dim]`` buffer: ``update`` writes the new positions in
        place and returns views of the filled part (what ``DynamicLayer`` returns, without its
        ``torch.cat`` of the whole cache every step). Selecting rows copies the filled part only."""

        def __init__(self, capacity: int, **kwargs):
            super().__init__(**kwargs)
            self.capacity = int(capacity)
            self.length = 0

        def lazy_initialization(self, key_states, value_states) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, dk = key_states.shape
            self._k = key_states.new_empty((b, h, self.capacity, dk))
            self._v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
            self.length = 0
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"BufferedKVLayer: {end} positions exceed the capacity {self.capacity}")
            self._k[:, :, self.length : end].copy_(key_states)
            self._v[:, :, self.length : end].copy_(value_states)
            self.length = end
            self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def _select(self, indices) -> None:
            if not self.is_initialized:
                return
            n = self.length
            idx = indices.to(self._k.device)
            k = self._k.new_empty((len(idx), *self._k.shape[1:]))
            v = self._v.new_empty((len(idx), *self._v.shape[1:]))
            k[:, :, :n] = self._k[:, :, :n].index_select(0, idx)
            v[:, :, :n] = self._v[:, :, :n].index_select(0, idx)
            self._k, self._v = k, v
            self.keys, self.values = k[:, :, :n], v[:, :, :n]

        def repeat_rows(self, n: int) -> None:
            """A batch-1 cache (a shared prompt prefix) becomes ``n`` identical rows."""
            self._select(self._k.new_zeros(n, dtype=torch.long))

        def reorder_cache(self, beam_idx) -> None:
            self._select(beam_idx)

        def batch_select_indices(self, indices) -> None:
            self._select(indices)

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("BufferedKVLayer does not crop")

        def reset(self) -> None:
            self.length = 0
            super().reset()

    return BufferedKVLayer


DECODE_ATTENTION = "ssd_math_gqa_decode"


def _register_decode_attention() -> str:
    """Register (once) the attention the fast loop runs the model with, through transformers'
    public ``AttentionInterface`` / ``AttentionMaskInterface``: prefill (more than one query
    position) is transformers' own ``sdpa_attention_forward``; a one-token decode step is
    ``softmax(q k^T * scale + mask) v`` with the query heads grouped over their shared kv head
    (GQA as a reshape). transformers' sdpa path, given a padding mask, first copies k/v to every
    query head (``repeat_kv``) and runs a kernel built for long queries, a copy and a kernel
    a one-token step of a small model does not need (bench/bench_sampler.py's ablations time
    both attentions). Masks: the sdpa ones (bool, True = attend)."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if DECODE_ATTENTION in AttentionInterface._global_mapping:
        return DECODE_ATTENTION

    def gqa_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        b, h, q_len, d = query.shape
        kvh = key.shape[1]
        mask = attention_mask
        if (
            q_len != 1
            or h % kvh
            or dropout
            or kwargs.get("position_bias") is not None
            or (mask is not None and (mask.dim() != 4 or mask.shape[1] != 1))
        ):
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        scale = d**-0.5 if scaling is None else scaling
        qg = query.reshape(b, kvh, h // kvh, d)  # [b, kv heads, group, d]
        scores = torch.matmul(qg, key.transpose(-1, -2)) * scale  # [b, kv heads, group, L]
        if mask is not None:
            m = mask[:, :, -1:, : key.shape[-2]]  # [b or 1, 1, 1, L]
            if m.dtype == torch.bool:
                scores = scores.masked_fill(~m, float("-inf"))
            else:
                scores = scores + m
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        out = torch.matmul(probs, value)  # [b, kv heads, group, d]
        return out.reshape(b, h, 1, d).transpose(1, 2), None

    AttentionInterface.register(DECODE_ATTENTION, gqa_decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION


def fast_loop_support(model) -> str | None:
    """None when :func:`decode_batch` can drive ``model``, else the reason it cannot (then the
    sampler falls back to plain ``generate``). Supported: decoder-only causal LMs whose forward
    takes ``logits_to_keep`` and whose ``DynamicCache(config)`` layers are plain full attention
    (``DynamicLayer``) or linear attention (``LinearAttentionLayer``, Gated DeltaNet's conv +
    recurrent state): both are batch-selectable with ``reorder_cache``. Sliding-window layers and
    other kinds are not (their row selection and masks are not handled here)."""
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, LinearAttentionLayer

    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no logits_to_keep"
    impl = getattr(cfg, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} (the loop is checked with sdpa and eager)"
    try:
        layers = DynamicCache(config=cfg).layers
    except Exception as exc:  # noqa: BLE001 - any failure means: not ours to drive
        return f"DynamicCache(config) fails: {exc}"
    kinds = {type(layer) for layer in layers}
    if not layers or not kinds <= {DynamicLayer, LinearAttentionLayer}:
        return (
            "cache layer kinds "
            + ", ".join(sorted(k.__name__ for k in kinds))
            + " (only DynamicLayer / LinearAttentionLayer are batch-selected by this loop)"
        )
    if DynamicLayer not in kinds:
        return "no full-attention layer (the mask sizes come from one)"
    return None


def decode_batch(
    model,
    input_ids,
    attention_mask,
    *,
    processors,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    generator=None,
    truncation=None,
    compact_frac: float = 0.1,
    buffered_kv: bool = True,
    decode_attention: bool = True,
    share_prefix: bool = True,
    stats: dict | None = None,
) -> list[list[int]]:
    """Sample up to ``max_new_tokens`` tokens for a left-padded batch; returns each row's
    generated ids up to and including its eos (or all ``max_new_tokens`` ids).

    Per step, what generate's ``_sample`` does: the last position's float32 logits ->
    ``processors(generated ids, logits)`` -> ``softmax`` -> ``multinomial`` (``generator``), or,
    with ``truncation`` (a :class:`TopKTruncation`; :func:`loop_sampling` builds both), the
    processors (presence penalty) -> ``truncation.sample``. Positions as generate makes them
    (``cumsum(attention_mask) - 1``, pads 0; +1 a step). A row that produced eos is done; done
    rows are removed from the batch and the cache once they are ``compact_frac`` of the batch (0:
    at every step with a finished row; > 1: never). ``share_prefix``: when every cache layer is
    full attention, the prompts' common token prefix (the chat template's head and the
    instruction) is prefilled once and its keys/values copied to every row; the rows' own
    suffixes follow it, left-padded, so pads sit between prefix and suffix (masked; positions
    from the mask as above, so every token keeps the position it has in full prefill; it saves
    the prefix's prefill for every row but the first, which on the default's short prompts is
    small and depends on the CPU's kernels: bench/bench_sampler.py's ablations time it).
    ``buffered_kv=False`` keeps transformers' ``DynamicLayer`` (and no prefix sharing),
    ``decode_attention=False`` the model's own attention implementation in decode steps
    (ablations; for sdpa/eager models the fast loop otherwise runs
    :func:`_register_decode_attention`'s). ``stats``, if given, gets ``positions`` (rows x
    steps computed, prefill rows once), ``steps`` and ``prefix_tokens`` (shared, per batch) added."""
    impl = model.config._attn_implementation
    model.config._attn_implementation = _register_decode_attention() if decode_attention else impl
    try:
        return _decode_batch(
            model,
            input_ids,
            attention_mask,
            processors=processors,
            truncation=truncation,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            generator=generator,
            compact_frac=compact_frac,
            buffered_kv=buffered_kv,
            share_prefix=share_prefix,
            stats=stats,
        )
    finally:
        model.config._attn_implementation = impl


def common_prefix_len(input_ids, attention_mask) -> int:
    """Tokens every row of a left-padded batch starts with, leaving each row >= 1 token of its own."""
    rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
    first, n = rows[0], min(len(r) for r in rows) - 1
    k = 0
    while k < n and all(r[k] == first[k] for r in rows):
        k += 1
    return k


def _prefill_shared_prefix(model, input_ids, am, cache, n_prefix: int):
    """Prefill ``n_prefix`` common tokens once, repeat their cache rows, then prefill each row's
    suffix after them. Returns the mask and position ids of the re-laid-out prompt
    ``[prefix][pads][suffix]`` (``n_prefix`` + the longest suffix wide) and the prefill output."""
    import torch

    n_rows, plen = input_ids.shape
    start = plen - am.sum(-1)  # left padding of each row
    prefix = input_ids[0, int(start[0]) : int(start[0]) + n_prefix][None]
    model(
        input_ids=prefix,
        attention_mask=torch.ones_like(prefix),
        position_ids=torch.arange(n_prefix, device=prefix.device)[None],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    for layer in cache.layers:
        layer.repeat_rows(n_rows)
    # the suffixes, right-aligned as left padding put them, in the last S columns; a shorter
    # row's prefix copy that falls inside them is masked (it is in the cache already)
    width = plen - int(start.min()) - n_prefix
    cols = torch.arange(plen - width, plen, device=input_ids.device)[None]
    ids, sub = input_ids[:, plen - width :], am[:, plen - width :]
    sub = sub.masked_fill(cols < (start + n_prefix)[:, None], 0)
    full_mask = torch.cat([torch.ones((n_rows, n_prefix), dtype=am.dtype, device=am.device), sub], dim=1)
    pos = (full_mask.cumsum(-1) - 1).masked_fill_(full_mask == 0, 0)[:, n_prefix:]
    out = model(
        input_ids=ids,
        attention_mask=full_mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return full_mask, pos, out


def _decode_batch(
    model,
    input_ids,
    attention_mask,
    *,
    processors,
    truncation,
    max_new_tokens,
    eos_token_id,
    pad_token_id,
    generator,
    compact_frac,
    buffered_kv,
    share_prefix,
    stats,
):
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    device = input_ids.device
    n_rows, plen = input_ids.shape
    am = attention_mask.to(torch.long)
    cache = DynamicCache(config=model.config)
    full_attention_only = all(type(layer) is DynamicLayer for layer in cache.layers)
    n_prefix = (
        common_prefix_len(input_ids, am) if share_prefix and buffered_kv and full_attention_only and n_rows > 1 else 0
    )
    cap = plen + max_new_tokens  # prompt columns never grow
    layer_cls = _buffered_kv_layer_class()
    for i, layer in enumerate(cache.layers):
        if buffered_kv and type(layer) is DynamicLayer:
            cache.layers[i] = layer_cls(cap)
    if n_prefix:
        am, position_ids, out = _prefill_shared_prefix(model, input_ids, am, cache, n_prefix)
    else:
        position_ids = (am.cumsum(-1) - 1).masked_fill_(am == 0, 0)
        out = model(
            input_ids=input_ids,
            attention_mask=am,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    logits = out.logits[:, -1].to(dtype=torch.float32)
    del out
    width = am.shape[1]  # prompt columns of the cache
    next_pos = position_ids[:, -1] + 1
    mask = torch.ones((n_rows, cap), dtype=am.dtype, device=device)
    mask[:, :width] = am
    hist = torch.full((n_rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    tokens = torch.full((n_rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = [max_new_tokens] * n_rows
    rows = torch.arange(n_rows, device=device)  # original row of each batch row
    alive = torch.ones(n_rows, dtype=torch.bool, device=device)
    n_alive = n_rows
    positions, steps = n_rows, 0
    for t in range(max_new_tokens):
        scores = processors(hist[:, :t], logits)
        if truncation is not None:
            nxt = truncation.sample(scores, generator)
        else:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        hist[:, t] = nxt
        tokens[rows, t] = nxt
        stop = (nxt == eos_token_id) & alive
        if bool(stop.any()):
            for r in rows[stop].tolist():
                lengths[r] = t + 1
            alive &= ~stop
            n_alive = int(alive.sum())
        if n_alive == 0 or t + 1 == max_new_tokens:
            break
        n_dead = len(rows) - n_alive
        if n_dead and n_dead >= compact_frac * len(rows):
            keep = alive.nonzero().squeeze(1)
            cache.reorder_cache(keep)
            rows, hist, mask, next_pos, nxt = (x.index_select(0, keep) for x in (rows, hist, mask, next_pos, nxt))
            alive = torch.ones(len(keep), dtype=torch.bool, device=device)
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask[:, : width + t + 1],
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].to(dtype=torch.float32)
        del out
        next_pos += 1
        positions += len(rows)
        steps += 1
    if stats is not None:
        stats["positions"] = stats.get("positions", 0) + positions
        stats["steps"] = stats.get("steps", 0) + steps
        stats["prefix_tokens"] = stats.get("prefix_tokens", 0) + n_prefix
    toks = tokens.tolist()
    return [toks[r][: lengths[r]] for r in range(n_rows)]


class HFSampler:
    """transformers sampler (CPU default), batched with left padding.

    ``loop``: "auto" (default) drives the model with :func:`decode_batch` when
    :func:`fast_loop_support` allows it, else with ``model.generate`` (the reason is logged and
    kept in ``self.loop_reason``); "generate" forces ``model.generate``. The two loops sample the
    same distribution with different RNG streams, so their rows differ; ``self.loop`` says which
    one ran (generation jobs put it into the resume fingerprint). ``threads``: torch's intra-op
    threads for this process (the job's cores)."""

    backend = "hf"

    def __init__(
        self,
        model_dir,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 64,
        model_name: str | None = None,
        threads: int | None = None,
        trust_remote_code: bool = False,
        loop: str = "auto",
        compact_frac: float = 0.1,
    ):
        import logging

        import torch

        if loop not in ("auto", "generate"):
            raise ValueError(f"loop must be 'auto' or 'generate', got {loop!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.model_dir = str(model_dir)
        self.model_name = model_name or self.model_dir
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.compact_frac = float(compact_frac)
        self.buffered_kv = True  # ablation switches of decode_batch (bench/bench_sampler.py)
        self.decode_attention = True
        self.share_prefix = True
        self.fused_topk = True
        self.trust_remote_code = bool(trust_remote_code)  # off unless model.trust_remote_code
        self.tokenizer = load_tokenizer(self.model_dir, trust_remote_code=self.trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{model_dir}: the tokenizer has no pad token")
        self.eos_id = self.tokenizer.eos_token_id
        self.model = load_model(self.model_dir, dtype=dtype, device=device, trust_remote_code=self.trust_remote_code)
        if loop == "generate":
            self.loop, self.loop_reason = "generate", "asked for (loop='generate')"
        else:
            why = fast_loop_support(self.model)
            self.loop = "generate" if why else "decode_batch"
            self.loop_reason = why
            if why:
                logging.getLogger(__name__).warning(
                    "%s: sampling with model.generate, not the fast loop: %s", self.model_dir, why
                )
        self.stats = {"new_tokens": 0, "seconds": 0.0, "batches": 0, "positions": 0, "steps": 0, "prefix_tokens": 0}

    def _generate_ids(self, enc: dict, sampling: SamplingConfig) -> list[list[int]]:
        """``model.generate`` for one batch: the generated ids of each row (pads included)."""
        tok = self.tokenizer
        prompt_len = enc["input_ids"].shape[1]
        out = self.model.generate(
            **enc,
            **sampling.hf_generate_kwargs(),
            eos_token_id=self.eos_id,
            pad_token_id=tok.pad_token_id,
            logits_processor=sampling.hf_processors(prompt_len, warpers=False),
            num_return_sequences=1,
        )
        self.stats["positions"] += out.shape[0] * (out.shape[1] - prompt_len)
        self.stats["steps"] += out.shape[1] - prompt_len
        return out[:, prompt_len:].tolist()

    def generate_batch(self, batch: Batch, *, sampling: SamplingConfig, condition: str, base_seed: int) -> list[dict]:
        import torch

        tok = self.tokenizer
        prompts = [r["prompt"] for r in batch.requests]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        bseed = derive_seed(base_seed, condition, batch.requests[0]["id"], batch.sample_index)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self.loop == "generate":
                torch.manual_seed(bseed)
                gen = self._generate_ids(enc, sampling)
            else:
                g = torch.Generator(device=self.device)
                g.manual_seed(bseed)
                procs, trunc = loop_sampling(sampling) if self.fused_topk else (sampling.hf_processors(), None)
                gen = decode_batch(
                    self.model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    processors=procs,
                    truncation=trunc,
                    max_new_tokens=int(sampling.max_new_tokens),
                    eos_token_id=self.eos_id,
                    pad_token_id=tok.pad_token_id,
                    generator=g,
                    compact_frac=self.compact_frac,
                    buffered_kv=self.buffered_kv,
                    decode_attention=self.decode_attention,
                    share_prefix=self.share_prefix,
                    stats=self.stats,
                )
        dt = time.perf_counter() - t0
        rows = []
        for req, ids in zip(batch.requests, gen):
            if self.eos_id in ids:
                cut = ids.index(self.eos_id)
                body, n_tok, reason = ids[:cut], cut + 1, "stop"
            else:
                body, n_tok, reason = ids, len(ids), "length"
            self.stats["new_tokens"] += n_tok
            text = tok.decode(body, skip_special_tokens=False)
            row = base_row(
                req,
                sample_index=batch.sample_index,
                completion=text,
                n_completion_tokens=n_tok,
                finish_reason=reason,
                seed=request_seed(base_seed, req["id"], batch.sample_index, condition),
                sampling=sampling,
                model=self.model_name,
                condition=condition,
            )
            row["batch_seed"] = bseed
            rows.append(row)
        self.stats["seconds"] += dt
        self.stats["batches"] += 1
        return rows

    def sample(
        self, requests: Sequence[dict], *, sampling: SamplingConfig, condition: str, base_seed: int
    ) -> list[dict]:
        """All rows, sorted by (request order, sample index): :meth:`generate_batch` over
        :func:`plan_batches`. Each batch is seeded on its own, so any subset of batches gives
        the rows an uninterrupted run gives; resuming is ``generate.run_condition``'s job (its
        partial file keeps finished batches)."""
        check_requests(requests)
        pos = {r["id"]: i for i, r in enumerate(requests)}
        rows = [
            r
            for b in plan_batches(list(requests), self.batch_size, sampling.n)
            for r in self.generate_batch(b, sampling=sampling, condition=condition, base_seed=base_seed)
        ]
        rows.sort(key=lambda r: (pos[r["prompt_id"]], r["sample_index"]))
        return rows

    def throughput(self) -> dict:
        """Totals so far: new (useful) tokens, seconds, batches, positions computed (rows x
        decode steps) and steps; ``new_tokens_per_s``; ``useful_frac`` = new tokens / positions."""
        s = self.stats
        return {
            **s,
            "new_tokens_per_s": s["new_tokens"] / s["seconds"] if s["seconds"] else None,
            "useful_frac": s["new_tokens"] / s["positions"] if s["positions"] else None,
        }
