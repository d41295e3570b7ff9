"""Sampling from a model: the request contract, seeds and decoding settings shared by the two backends,
:mod:`ssd_math.hf_sampler` (transformers, CPU by default) and :mod:`ssd_math.vllm_sampler` (vLLM 0.32
on GPU, or its CPU build); :func:`ssd_math.generate_prep.make_sampler` picks one. It imports only
:mod:`ssd_math.schema` (the decoding settings' defaults and ranges are the schema's ``$defs``): it is
the layer both backends and the config build on.

Rows follow docs/contracts.md "Sample row": one per (prompt, sample index)::

    prompt_id, sample_index, prompt, completion, n_completion_tokens, finish_reason,
    seed, sampling{...}, model, condition, gold, level, source

``completion`` is the decoded generated text without the eos token (special tokens such as
``<think>``/``</think>`` kept); ``n_completion_tokens`` counts generated tokens up to and including
the eos; ``finish_reason`` is "stop" when the eos (``<|im_end|>``) was produced, else "length".

Seeds. ``seed`` in a row is the per-request seed of the contract,
``derive_seed(base_seed, prompt_id, sample_index, condition)``; the vLLM backend hands exactly that
to the engine (``SamplingParams.seed``), so a vLLM row's *sampling noise* does not depend on what
else is in the batch -- its logits do, unless vLLM's batch-invariant mode is on (see
:class:`VLLMSampler`: what is and is not reproducible). The HF backend (its fast loop
:func:`decode_batch`, or ``generate``) has one RNG per batch, so it seeds *batches*:

* requests are chunked, in their given order, into fixed groups of ``batch_size``
  (:func:`plan_batches`; the composition never depends on what was already done);
* sample index ``s`` of a batch is one decode of the batch seeded with
  ``derive_seed(base_seed, condition, first prompt id of the batch, s)`` (a ``torch.Generator``
  for the fast loop, the global seed for ``generate``; recorded in the row
  as ``batch_seed``); n > 1 is n such passes, not ``num_return_sequences``, so sample ``s`` of a
  prompt is the same whatever n is.

Hence generating the batches of a shard in any order, or only the unfinished ones after a crash
(what ``generate.run_condition``'s partial file does), gives byte-identical rows. A prompt's
completion does depend on its batch (other prompts change the padding and the RNG stream), so HF rows are reproducible for the same
(requests, batch_size, loop) on one machine and thread count, not across batch sizes; the fast
loop and ``generate`` sample the same distribution but draw differently (``HFSampler.loop``).

Presence penalty (vLLM / OpenAI semantics): ``presence_penalty`` is subtracted from the logit of
every token that already occurs in the *generated* part (the prompt does not count), before
temperature and truncation, as vLLM applies penalties before temperature. HF order:
presence penalty -> temperature -> top-k -> top-p -> min-p (transformers' warper order; vLLM
applies min-p before top-k/top-p, which differs only when min-p and top-k/top-p are combined);
with top-k on, the fast loop applies the last four on the k best candidates
(:class:`TopKTruncation`), the same distribution.

Decoding settings, one type end to end: :class:`SamplingConfig` is built from a config section
(:meth:`SamplingConfig.from_config`; :mod:`ssd_math.derive`'s ``arm_sampling`` / ``eval_sampling``
/ ``sweep_samplings`` pick the section), travels through the rule params as its plain dict
(:meth:`SamplingConfig.to_dict`: Snakemake reruns a job when a param's repr changes) and is rebuilt
once by :func:`ssd_math.generate.generate_jobs` (:meth:`SamplingConfig.from_dict`); each backend
reads it through its own method: :meth:`SamplingConfig.to_vllm` (``vllm.SamplingParams``),
:meth:`SamplingConfig.hf_processors` and :meth:`SamplingConfig.hf_generate_kwargs` (transformers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .schema import default as schema_default
from .schema import errors as schema_errors

#: the decoding settings whose range (and default, where optional) the schema's ``$defs`` own
SCHEMA_FIELDS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty")

# ------------------------------------------------------------------------------------------
# configuration and seeds
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 20  # <= 0: off
    top_p: float = 0.95
    min_p: float = schema_default("$defs/min_p")
    presence_penalty: float = schema_default("$defs/presence_penalty")
    max_new_tokens: int = 128
    n: int = 1  # samples per prompt

    def __post_init__(self):
        errs = [e for f in SCHEMA_FIELDS for e in schema_errors(getattr(self, f), f"$defs/{f}", f)]
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            errs.append(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not (isinstance(self.n, int) and self.n >= 1):
            errs.append(f"n (samples per prompt) must be an int >= 1, got {self.n!r}")
        if errs:
            raise ValueError("invalid SamplingConfig: " + "; ".join(errs))

    @classmethod
    def from_config(
        cls, section: dict, *, max_new_tokens: int, n: int, temperature: float | None = None
    ) -> SamplingConfig:
        """The decoding of a config section with ``temperature`` (unless given), ``top_k``,
        ``top_p`` and optional ``min_p`` / ``presence_penalty`` (their schema defaults when absent:
        an arm or a sweep preset is a map entry the config's default filling does not reach): an
        arm, ``eval.decoding`` or a sweep preset; the cap and samples per prompt come from around it."""
        opt = {k: section[k] if k in section else schema_default(f"$defs/{k}") for k in ("min_p", "presence_penalty")}
        return cls(
            temperature=float(section["temperature"] if temperature is None else temperature),
            top_k=int(section["top_k"]),
            top_p=float(section["top_p"]),
            min_p=float(opt["min_p"]),
            presence_penalty=float(opt["presence_penalty"]),
            max_new_tokens=int(max_new_tokens),
            n=int(n),
        )

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sampling key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_vllm(self, seed: int | None) -> dict:
        """Keyword arguments of ``vllm.SamplingParams`` for one request (vLLM's field names;
        ``n`` is 1: each sample index is its own seeded request). ``top_k`` off is -1 (vLLM's
        "all tokens"). ``skip_special_tokens=False`` keeps tokens like ``<|im_start|>`` a model
        may emit mid-text (Qwen's ``<think>`` is not special either way); the eos that stops a
        request is not part of ``text``."""
        return {
            "n": 1,
            "temperature": float(self.temperature),
            "top_k": int(self.top_k) if self.top_k > 0 else -1,
            "top_p": float(self.top_p),
            "min_p": float(self.min_p),
            "presence_penalty": float(self.presence_penalty),
            "max_tokens": int(self.max_new_tokens),
            "seed": None if seed is None else int(seed),
            "skip_special_tokens": False,
        }

    def hf_processors(self, prompt_len: int = 0, *, warpers: bool = True):
        """The ``LogitsProcessorList`` ``generate`` applies, in its order: presence penalty (a
        custom processor: generate puts those before its warpers) -> temperature -> top-k ->
        top-p -> min-p. transformers' own warper classes, added under the conditions of
        ``GenerationMixin._get_logits_processor`` (5.19.0): temperature only if != 1, top-k only
        if != 0 (off here is <= 0), top-p only if < 1, min-p only if set (> 0 here),
        ``min_tokens_to_keep`` 1. ``prompt_len``: where the generated part starts in the
        ``input_ids`` the list is called with (0 when it is called with the generated tokens
        only). ``warpers=False``: the presence penalty only (what ``generate`` is handed next to
        :meth:`hf_generate_kwargs`, and what the fast loop runs before its top-k truncation)."""
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        procs = LogitsProcessorList()
        if self.presence_penalty:
            procs.append(presence_penalty_processor(self.presence_penalty, prompt_len))
        if not warpers:
            return procs
        if float(self.temperature) != 1.0:
            procs.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k > 0:
            procs.append(TopKLogitsWarper(top_k=int(self.top_k), min_tokens_to_keep=1))
        if float(self.top_p) < 1.0:
            procs.append(TopPLogitsWarper(top_p=float(self.top_p), min_tokens_to_keep=1))
        if self.min_p > 0:
            procs.append(MinPLogitsWarper(min_p=float(self.min_p), min_tokens_to_keep=1))
        return procs

    def hf_generate_kwargs(self) -> dict:
        """Keyword arguments of transformers' ``model.generate`` for these settings (its warpers:
        the same as :meth:`hf_processors`); the presence penalty goes in as
        ``logits_processor=self.hf_processors(prompt_len, warpers=False)``."""
        return {
            "do_sample": True,
            "temperature": float(self.temperature),
            "top_k": int(self.top_k) if self.top_k > 0 else 0,
            "top_p": float(self.top_p),
            "min_p": float(self.min_p) if self.min_p > 0 else None,
            "max_new_tokens": int(self.max_new_tokens),
        }


def presence_penalty_processor(penalty: float, prompt_len: int):
    """A ``LogitsProcessor`` subtracting ``penalty`` from logits of tokens present in the
    generated part (positions >= ``prompt_len`` of the left-padded input)."""
    import torch
    from transformers import LogitsProcessor

    class PresencePenaltyLogitsProcessor(LogitsProcessor):
        def __init__(self, penalty: float, prompt_len: int):
            self.penalty = float(penalty)
            self.prompt_len = int(prompt_len)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            gen = input_ids[:, self.prompt_len :]
            if gen.shape[1] == 0 or self.penalty == 0:
                return scores
            present = torch.zeros_like(scores, dtype=torch.bool)
            present.scatter_(1, gen, True)
            return scores - self.penalty * present.to(scores.dtype)

    return PresencePenaltyLogitsProcessor(penalty, prompt_len)


def derive_seed(base_seed: int, *parts: Any) -> int:
    """A stable 63-bit seed from a base seed and any JSON-able parts (sha256; not ``hash()``,
    which is salted per process)."""
    blob = json.dumps([int(base_seed), *parts], sort_keys=True, separators=(",", ":"), default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") & ((1 << 63) - 1)


def request_seed(base_seed: int, prompt_id: str, sample_index: int, condition: str) -> int:
    """The per-request seed of the contract."""
    return derive_seed(base_seed, prompt_id, sample_index, condition)


def base_row(
    request: dict,
    *,
    sample_index: int,
    completion: str,
    n_completion_tokens: int,
    finish_reason: str,
    seed: int,
    sampling: SamplingConfig,
    model: str,
    condition: str,
) -> dict:
    return {
        "prompt_id": request["id"],
        "sample_index": int(sample_index),
        "prompt": request["prompt"],
        "completion": completion,
        "n_completion_tokens": int(n_completion_tokens),
        "finish_reason": finish_reason,
        "seed": int(seed),
        "sampling": sampling.to_dict(),
        "model": model,
        "condition": condition,
        "gold": request.get("answer"),
        "level": request.get("level"),
        "source": request.get("source"),
    }


def check_requests(requests: Sequence[dict]) -> None:
    ids = set()
    for i, r in enumerate(requests):
        for key in ("id", "prompt"):
            if key not in r:
                raise ValueError(f"request {i} has no {key!r} field")
        if r["id"] in ids:
            raise ValueError(f"duplicate request id {r['id']!r}")
        ids.add(r["id"])
