"""Fault injection: a real sampling shard (``python -m ssd_math.generate``) killed with SIGKILL
at a batch boundary, mid-batch, or mid-write, then rerun, ends with exactly the rows of an
uninterrupted run; the declared output never appears before it is complete. (The training run's
SIGKILL test is tests/test_train.py::test_sigkill_and_resume_equals_uninterrupted.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ssd_math import generate as G
from ssd_math import generate_prep as GP
from ssd_math.io import read_json
from ssd_math.sampler import SamplingConfig

N_PROBLEMS = 48  # the file; the shard (1 of 2) holds 24 of them
SHARD = (1, 2)
BATCH = 4  # 24 prompts -> 6 batches
N_SAMPLES = 2  # samples per prompt
N_BATCHES = 6
SAMPLING = {
    "temperature": 1.1,
    "top_k": 20,
    "top_p": 0.95,
    "min_p": 0.0,
    "presence_penalty": 0.0,
    "max_new_tokens": 64,
    "n": N_SAMPLES,
}


from conftest import tiny_random_model  # noqa: E402


def build_tiny(d: Path, n_problems: int) -> tuple[Path, Path]:
    """A tiny random qwen3_5_text model (with the task's chat template) and a problems file."""
    mdir, _, rows = tiny_random_model(d, n_pretrain=200, n_eval=n_problems)
    problems = d / "problems.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return mdir, problems


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ssd_math.prompting import DEFAULT_INSTRUCTION

    d = tmp_path_factory.mktemp("faults")
    mdir, problems = build_tiny(d, N_PROBLEMS)
    jobs = d / "jobs.json"
    jobs.write_text(
        json.dumps([{"model": "tiny", "model_dir": str(mdir), "condition": "train-ssd", "sampling": SAMPLING}])
    )
    common = d / "common.json"
    common.write_text(
        json.dumps(
            {"instruction": DEFAULT_INSTRUCTION, "backend": "hf", "batch_size": BATCH, "device": "cpu", "seed": 7}
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSD_MATH_CONFIG_HASH": "cafe0123"}
    ns = {"dir": d, "model": mdir, "problems": problems, "jobs": jobs, "common": common, "env": env}
    ref = d / "ref" / "shard1.jsonl"
    proc = _launch(ns, ref)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    ns["ref"] = ref
    return ns


def _launch(ns: dict, out: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "ssd_math.generate",
        "--jobs-json",
        str(ns["jobs"]),
        "--problems",
        str(ns["problems"]),
        "--outputs",
        str(out),
        "--common-json",
        str(ns["common"]),
        "--shard",
        *map(str, SHARD),
        "--no-progress",
    ]
    return subprocess.Popen(cmd, env=ns["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def complete_batches(partial: Path) -> int:
    """Batches with all their rows in a (possibly growing) partial file."""
    if not partial.exists():
        return 0
    by = Counter()
    for line in partial.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "_batch" in row:
            by[row["_batch"]] += 1
    return sum(v == BATCH * N_SAMPLES for v in by.values())


@pytest.mark.slow  # generation subprocesses on a built tiny model (module fixture setup)
def test_uninterrupted_shard(setup):
    rows = [json.loads(x) for x in setup["ref"].read_text().splitlines()]
    assert len(rows) == 24 * N_SAMPLES
    assert len({(r["prompt_id"], r["sample_index"]) for r in rows}) == len(rows)
    assert not setup["ref"].with_name("shard1.jsonl.partial").exists()
    # the shard is rows 24..47 of the file, in order, each with all its sample indices
    ids = [json.loads(x)["id"] for x in setup["problems"].read_text().splitlines()][24:]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(i, s) for i in ids for s in range(N_SAMPLES)]


@pytest.mark.slow  # a generation subprocess killed and resumed, then compared (~20-30 s each)
@pytest.mark.parametrize("where", ["boundary", "mid_batch", "torn_write"])
def test_sigkill_shard_and_resume_equals_uninterrupted(setup, where):
    out = setup["dir"] / where / "shard1.jsonl"
    partial = out.with_name(out.name + ".partial")
    rng = random.Random(where)  # a random kill point, reproducible per variant
    target = rng.choice([2, 3])
    victim = _launch(setup, out)
    deadline = time.time() + 120
    t_first = None
    while complete_batches(partial) < target:
        if t_first is None and complete_batches(partial) >= 1:
            t_first = time.time()
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the shard never got going"
        time.sleep(0.003)
    if where == "mid_batch":  # part-way through the next batch's generate()
        per_batch = (time.time() - t_first) / (target - 1) if t_first else 0.05
        time.sleep(per_batch * rng.uniform(0.2, 0.8))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    before = complete_batches(partial)
    assert 2 <= before < N_BATCHES, f"killed too late ({before} batches done)"
    assert not out.exists(), "a killed shard left its declared output"
    assert not Path(str(out) + ".meta.json").exists()
    if where == "torn_write":  # a kill inside write(): half a row of the next batch, no newline
        lines = partial.read_text(encoding="utf-8").splitlines(keepends=True)
        row = json.loads(lines[-1])
        row["_batch"] = max(json.loads(x).get("_batch", -1) for x in lines) + 1
        torn = json.dumps(row, ensure_ascii=False)
        with open(partial, "a", encoding="utf-8") as fh:
            fh.write(torn[: len(torn) // 2])

    again = _launch(setup, out)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr.decode()[-3000:]
    log = stderr.decode()
    resumed = f"resuming, {before} of {N_BATCHES} batches already done"
    assert resumed in log, log[-3000:]
    assert json.loads(stdout.decode().strip().splitlines()[-1])["counts"] == [24 * N_SAMPLES]

    assert out.read_bytes() == setup["ref"].read_bytes()  # byte-identical to uninterrupted
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(rows) == 24 * N_SAMPLES and len(set(keys)) == len(keys)
    assert not partial.exists()
    meta = read_json(Path(str(out) + ".meta.json"))
    assert meta["n_rows"] == 24 * N_SAMPLES and meta["shard"] == list(SHARD)
    assert meta["config_hash"] == "cafe0123"
    print(
        f"\n[{where}] batches done before SIGKILL: {before}/{N_BATCHES}; "
        f"rows after resume: {len(rows)} (expected {24 * N_SAMPLES}), duplicates: 0"
    )


# ------------------------------------------------------------------------------------------
# the resume logic itself, with a stand-in sampler (no model)
# ------------------------------------------------------------------------------------------


class FakeSampler:
    """Deterministic rows; can fail on the k-th call (a crash mid-job)."""

    dtype = "float32"  # recorded in each output's sidecar, as a real sampler's

    def __init__(self, fail_at: int | None = None, tag: str = "x"):
        self.calls, self.fail_at, self.tag = 0, fail_at, tag

    def sample(self, batch, *, sampling, condition, base_seed):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("boom")
        return [
            {
                "prompt_id": r["id"],
                "sample_index": s,
                "prompt": r["prompt"],
                "completion": f"{self.tag}:{condition}:{r['id']}:{s}:{base_seed}",
            }
            for r in batch
            for s in range(sampling.n)
        ]


def _reqs(n=10):
    return [{"id": f"p{i}", "prompt": f"P{i}", "answer": "1"} for i in range(n)]


SAMP = {"temperature": 1.0, "n": 2}


def _run(sampler, out, **kw):
    return G.run_condition(
        sampler,
        _reqs(),
        out,
        sampling=SamplingConfig.from_dict(SAMP),
        condition="c",
        model="m",
        base_seed=0,
        batch_size=4,
        progress=False,
        **kw,
    )


def test_crash_leaves_no_output_and_resume_skips_done_batches(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError, match="boom"):
        _run(FakeSampler(fail_at=3), out)
    assert not out.exists() and out.with_name("o.jsonl.partial").exists()
    s = FakeSampler()
    assert _run(s, out) == 20
    assert s.calls == 1  # batches 0 and 1 were kept, only batch 2 ran
    ref = tmp_path / "ref.jsonl"
    _run(FakeSampler(), ref)
    assert out.read_bytes() == ref.read_bytes()


def test_stale_partial_from_other_settings_is_discarded(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError):
        _run(FakeSampler(fail_at=3, tag="old"), out, identity={"model": "v1"})
    s = FakeSampler(tag="new")
    _run(s, out, identity={"model": "v2"})  # e.g. the model was retrained
    assert s.calls == 3
    assert all(json.loads(x)["completion"].startswith("new:") for x in out.read_text().splitlines())


def test_partial_with_duplicates_or_a_short_batch_is_not_trusted(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError):
        _run(FakeSampler(fail_at=3), out)
    partial = out.with_name("o.jsonl.partial")
    lines = partial.read_text().splitlines(keepends=True)
    # header, batch 0 (8 rows), batch 1 (8 rows): duplicate one row of batch 0, drop one of 1
    partial.write_text("".join(lines[:9] + [lines[1]] + lines[9:-1]))
    s = FakeSampler()
    assert _run(s, out) == 20
    assert s.calls == 3  # neither batch was trusted
    keys = [(json.loads(x)["prompt_id"], json.loads(x)["sample_index"]) for x in out.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 20


def test_multi_output_job_keeps_partials_until_done(tmp_path, monkeypatch):
    """A job with two outputs dies in the second: Snakemake deletes the first (finished) output
    too; the rerun rebuilds it from its kept partial without sampling it again."""
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps(r | {"problem": r["prompt"]}) + "\n" for r in _reqs()))
    state = {"sampler": FakeSampler(fail_at=5)}
    monkeypatch.setattr(G, "open_sampler", lambda *a, **k: state["sampler"])
    monkeypatch.setattr(GP, "prompt_renderer", lambda *a, **k: ((lambda p: p), "th"))
    jobs = [
        {"model": "m", "model_dir": str(tmp_path / "model"), "condition": c, "sampling": SAMP} for c in ("T0.7", "T1.0")
    ]
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    common = {"instruction": "{problem}", "backend": "hf", "batch_size": 4, "seed": 0}
    with pytest.raises(RuntimeError, match="boom"):
        G.generate_jobs(jobs, problems, outs, common=common, progress=False)
    assert outs[0].exists() and not outs[1].exists()
    outs[0].unlink()  # what Snakemake does with the outputs of a failed job
    state["sampler"] = FakeSampler()
    assert G.generate_jobs(jobs, problems, outs, common=common, progress=False) == [20, 20]
    assert state["sampler"].calls == 2  # only b's last two batches
    assert not any(p.with_name(p.name + ".partial").exists() for p in outs)
