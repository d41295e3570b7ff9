"""The vLLM backend at its seam, without vLLM: a stand-in for vLLM 0.33's offline API.

The stand-in has the objects and methods VLLMSampler uses, with vLLM 0.33's signatures (read in
the vllm==0.33.0 wheel): ``LLM(**engine_args)`` with ``.get_tokenizer()`` and ``.llm_engine``;
``LLMEngine.add_request(request_id: str, prompt, params, arrival_time=None, lora_request=None,
tokenization_kwargs=None, trace_headers=None, priority=0, session_id=None, prompt_text=None,
kv_hints=None)`` (a non-str request_id is a TypeError there), ``.step() -> list[RequestOutput]``,
``.has_unfinished_requests()``, ``.abort_request(request_ids, internal=False)``;
``RequestOutput(request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished)`` whose
``request_id`` is the caller's id; ``CompletionOutput(index, text, token_ids, cumulative_logprob,
logprobs, finish_reason)``; ``SamplingParams`` keyword fields (a subset of 0.33's, checked
below) with ``output_kind=RequestOutputKind.FINAL_ONLY`` (then ``step`` returns a request only
when it is finished). The engine finishes requests OUT OF submission order, a few per step, and
its output depends only on the request's seed, as vLLM's per-request seeded sampling does.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_random_model  # noqa: E402

from ssd_math import generate  # noqa: E402
from ssd_math.prompting import DEFAULT_INSTRUCTION  # noqa: E402
from ssd_math.sampler import VLLM_ENGINE_ARGS, VLLMSampler  # noqa: E402

# vllm 0.33.0 vllm/sampling_params.py SamplingParams fields (those this project may pass)
SAMPLING_PARAMS_033 = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty",
                       "temperature", "top_p", "top_k", "min_p", "seed", "stop", "max_tokens",
                       "min_tokens", "skip_special_tokens", "output_kind", "logprobs"}
# vllm 0.33.0 vllm/engine/arg_utils.py EngineArgs fields (the ones VLLM_ENGINE_ARGS names)
ENGINE_ARGS_033 = {"model", "tensor_parallel_size", "dtype", "seed", "gpu_memory_utilization",
                   "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                   "enable_prefix_caching", "enforce_eager", "kv_cache_dtype",
                   "trust_remote_code", "language_model_only"}


class RequestOutputKind(enum.Enum):  # vllm.sampling_params.RequestOutputKind
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    def __init__(self, **kw):
        bad = set(kw) - SAMPLING_PARAMS_033
        if bad:
            raise TypeError(f"SamplingParams got unexpected keyword(s) {sorted(bad)}")
        self.__dict__.update(kw)


class CompletionOutput:
    def __init__(self, index, text, token_ids, cumulative_logprob, logprobs, finish_reason=None):
        self.index, self.text, self.token_ids = index, text, token_ids
        self.cumulative_logprob, self.logprobs, self.finish_reason = cumulative_logprob, logprobs, finish_reason


class RequestOutput:
    def __init__(self, request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished):
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.prompt_logprobs, self.outputs, self.finished = prompt_logprobs, outputs, finished


class CrashError(RuntimeError):
    pass


class FakeEngine:
    """LLMEngine stand-in: finishes requests out of order; optionally dies after ``crash_after``
    finished requests (as a CUDA error or an OOM kill would)."""

    def __init__(self, per_step: int = 3, crash_after: int | None = None):
        self.per_step, self.crash_after = per_step, crash_after
        self.queue: list[tuple[str, dict, SamplingParams]] = []
        self.added: list[str] = []
        self.added_before_first_step = None
        self.finished_order: list[str] = []
        self.aborted: list[str] = []

    def add_request(self, request_id, prompt, params, arrival_time=None, lora_request=None,
                    tokenization_kwargs=None, trace_headers=None, priority=0, session_id=None,
                    prompt_text=None, kv_hints=None):
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string, got {type(request_id)}")
        assert isinstance(params, SamplingParams) and params.output_kind is RequestOutputKind.FINAL_ONLY
        assert params.n == 1 and isinstance(params.seed, int)
        assert list(prompt) == ["prompt_token_ids"] and all(isinstance(i, int) for i in prompt["prompt_token_ids"])
        self.queue.append((request_id, prompt, params))
        self.added.append(request_id)
        return request_id + "-internal"

    def has_unfinished_requests(self):
        return bool(self.queue)

    def step(self):
        if self.added_before_first_step is None:
            self.added_before_first_step = len(self.added)
        # finish the requests with the smallest seed hash first: not the submission order
        self.queue.sort(key=lambda q: (q[2].seed * 2654435761) % 1000003)
        if self.crash_after is not None and len(self.finished_order) >= self.crash_after:
            raise CrashError("engine died")
        done, self.queue = self.queue[:self.per_step], self.queue[self.per_step:]
        outs = []
        for rid, prompt, p in done:
            n_tok = 3 + p.seed % 5
            stop = p.seed % 4 != 0
            text = f"<think>\nr{p.seed % 997}\n</think>\n\n$\\boxed{{{p.seed % 10}}}$" + ("<|im_end|>" if stop else "")
            outs.append(RequestOutput(rid, None, prompt["prompt_token_ids"], None,
                                      [CompletionOutput(0, text, list(range(n_tok)), None, None,
                                                        "stop" if stop else "length")], True))
            self.finished_order.append(rid)
        return outs

    def abort_request(self, request_ids, internal=False):
        self.aborted += list(request_ids)
        self.queue = [q for q in self.queue if q[0] not in set(request_ids)]


class FakeLLM:
    def __init__(self, model_dir, engine):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.llm_engine = engine

    def get_tokenizer(self):
        return self._tok


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm_seam")
    mdir, _, rows = tiny_random_model(d, n_eval=7)
    problems = d / "problems.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return mdir, problems


def _jobs(mdir):
    base = {"top_k": 20, "top_p": 0.95, "min_p": 0.0, "presence_penalty": 0.0, "max_new_tokens": 8}
    return [{"model": "base", "model_dir": str(mdir), "condition": "T0.7", "sampling": {**base, "temperature": 0.7, "n": 1}},
            {"model": "base", "model_dir": str(mdir), "condition": "T1.0-k2", "sampling": {**base, "temperature": 1.0, "n": 2}}]


COMMON = {"instruction": DEFAULT_INSTRUCTION, "backend": "vllm", "batch_size": 4, "seed": 7,
          "sampler_extra": {"dtype": "bfloat16", "language_model_only": True}}


def _run(monkeypatch, mdir, problems, outs, engine):
    made = []

    def fake_open_sampler(common, model_dir, *, model_name, threads=1):
        s = VLLMSampler(model_dir, model_name=model_name, seed=int(common["seed"]),
                        llm=FakeLLM(model_dir, engine), sampling_params_cls=SamplingParams,
                        final_only=RequestOutputKind.FINAL_ONLY, **common["sampler_extra"])
        made.append(s)
        return s

    monkeypatch.setattr(generate, "open_sampler", fake_open_sampler)
    counts = generate.generate_jobs(_jobs(mdir), problems, outs, common=COMMON, progress=False)
    return counts, made


def _rows(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines()]


def test_one_submission_out_of_order_rows_in_request_order(model, tmp_path, monkeypatch):
    mdir, problems = model
    outs = [tmp_path / "T0.7.jsonl", tmp_path / "T1.0-k2.jsonl"]
    engine = FakeEngine()
    counts, _ = _run(monkeypatch, mdir, problems, outs, engine)
    assert counts == [7, 14]
    # every request of both conditions was submitted before the engine's first step
    assert engine.added_before_first_step == 21 == len(engine.added)
    # ...and they finished out of submission order
    assert engine.finished_order != engine.added
    a, b = _rows(outs[0]), _rows(outs[1])
    ids = [json.loads(x)["id"] for x in problems.read_text().splitlines()]
    assert [r["prompt_id"] for r in a] == ids
    assert [(r["prompt_id"], r["sample_index"]) for r in b] == [(i, s) for i in ids for s in (0, 1)]
    from ssd_math.sampler import request_seed

    for r in a + b:
        assert r["seed"] == request_seed(7, r["prompt_id"], r["sample_index"], r["condition"])
        assert not r["completion"].endswith("<|im_end|>")
        assert r["finish_reason"] == ("stop" if r["seed"] % 4 else "length")
        assert r["completion"].endswith(f"\\boxed{{{r['seed'] % 10}}}$")
    assert {r["sampling"]["temperature"] for r in b} == {1.0}
    meta = json.loads(Path(str(outs[1]) + ".meta.json").read_text())
    assert meta["backend"] == "vllm" and meta["n_rows"] == 14
    assert not list(tmp_path.glob("*.partial"))


def test_crash_loses_only_requests_in_flight_and_resume_submits_the_rest(model, tmp_path, monkeypatch):
    mdir, problems = model
    ref = [tmp_path / "ref" / "T0.7.jsonl", tmp_path / "ref" / "T1.0-k2.jsonl"]
    ref[0].parent.mkdir()
    _run(monkeypatch, mdir, problems, ref, FakeEngine())

    outs = [tmp_path / "T0.7.jsonl", tmp_path / "T1.0-k2.jsonl"]
    dying = FakeEngine(per_step=5, crash_after=10)
    with pytest.raises(CrashError):
        _run(monkeypatch, mdir, problems, outs, dying)
    # the 10 finished rows are on disk (partials), nothing looks complete, the rest was aborted
    assert not outs[0].exists() and not outs[1].exists()
    kept = sum(len(_rows(str(o) + ".partial")) - 1 for o in outs)
    assert kept == 10
    assert len(dying.aborted) == 21 - 10

    engine = FakeEngine()
    counts, _ = _run(monkeypatch, mdir, problems, outs, engine)
    assert counts == [7, 14]
    assert len(engine.added) == 11  # only the unfinished requests went to the new engine
    resubmitted = {tuple(rid.split(":")[1:]) for rid in engine.added}
    finished_before = {tuple(rid.split(":")[1:]) for rid in dying.finished_order}
    assert not resubmitted & finished_before
    for o, r in zip(outs, ref):
        assert o.read_text() == r.read_text()  # byte-identical to the uninterrupted run


def test_a_stale_partial_from_other_settings_is_discarded(model, tmp_path, monkeypatch):
    mdir, problems = model
    outs = [tmp_path / "T0.7.jsonl", tmp_path / "T1.0-k2.jsonl"]
    with pytest.raises(CrashError):
        _run(monkeypatch, mdir, problems, outs, FakeEngine(crash_after=5))
    monkeypatch.setitem(COMMON, "seed", 8)  # another base seed: the finished rows do not apply
    engine = FakeEngine()
    _run(monkeypatch, mdir, problems, outs, engine)
    assert len(engine.added) == 21


def test_engine_args_language_model_only_and_batch_invariant(tmp_path, monkeypatch):
    """VLLMSampler starts vllm.LLM with language_model_only (default on) and, with
    batch_invariant, VLLM_BATCH_INVARIANT=1 in the environment before vllm is imported."""
    seen = {}

    class LLM:
        def __init__(self, **kw):
            import os

            seen["kw"], seen["env"] = kw, os.environ.get("VLLM_BATCH_INVARIANT")
            self.llm_engine = FakeEngine()

        def get_tokenizer(self):
            return types.SimpleNamespace(eos_token="<|im_end|>")

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    fake_sp = types.ModuleType("vllm.sampling_params")
    fake_sp.RequestOutputKind = RequestOutputKind
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    monkeypatch.delitem(sys.modules, "vllm", raising=False)

    def fake_import(name, *a, **k):
        return {"vllm": fake, "vllm.sampling_params": fake_sp}[name] if name in ("vllm", "vllm.sampling_params") else real_import(name, *a, **k)

    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", fake_import)
    VLLMSampler(tmp_path, max_model_len=512)
    assert seen["kw"]["language_model_only"] is True and seen["env"] is None
    assert seen["kw"]["max_model_len"] == 512
    assert set(seen["kw"]) <= ENGINE_ARGS_033
    VLLMSampler(tmp_path, language_model_only=False, batch_invariant=True)
    assert seen["kw"]["language_model_only"] is False and seen["env"] == "1"
    with pytest.raises(ValueError, match="unknown vLLM engine argument"):
        VLLMSampler(tmp_path, max_num_seq=8)


def test_engine_arg_names_are_vllm_033_fields():
    assert set(VLLM_ENGINE_ARGS) <= ENGINE_ARGS_033
