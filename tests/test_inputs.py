"""Bad input gets a clear error (or a counted, reported drop) before any expensive job, naming
the key / file / row; provenance sidecars; trust_remote_code off unless the config turns it on."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math import generate as G
from ssd_math import generate_prep as GP
from ssd_math.io import DataError, config_hash, read_json, stable_hash
from ssd_math.problem_sources import MAX_PROBLEM_CHARS
from ssd_math.sampler import SamplingConfig

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"instruction": "{problem}", "backend": "hf", "batch_size": 4, "seed": 3}
SAMP = {"temperature": 0.7, "top_k": 20, "top_p": 0.95, "max_new_tokens": 8, "n": 1}


# ------------------------------------------------------------------------------------------
# eval / prompt files
# ------------------------------------------------------------------------------------------


class FakeSampler:
    dtype = "float32"  # recorded in the sidecar, as HFSampler's

    def __init__(self):
        self.calls = 0

    def sample(self, batch, *, sampling, condition, base_seed):
        self.calls += 1
        return [
            {"prompt_id": r["id"], "sample_index": s, "completion": "x", "gold": r["answer"]}
            for r in batch
            for s in range(sampling.n)
        ]


@pytest.fixture
def fake(monkeypatch):
    """generate_jobs without a model: a stand-in sampler and renderer; records model loads."""
    state = {"sampler": FakeSampler(), "opened": 0}

    def open_sampler(*a, **k):
        state["opened"] += 1
        return state["sampler"]

    monkeypatch.setattr(G, "open_sampler", open_sampler)
    monkeypatch.setattr(GP, "prompt_renderer", lambda *a, **k: ((lambda p: p), "th"))
    return state


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _gen(tmp_path, problems, n_out=1):
    outs = [tmp_path / f"out{i}.jsonl" for i in range(n_out)]
    jobs = [
        {"model": "m", "model_dir": str(tmp_path / "model"), "condition": f"c{i}", "sampling": SAMP}
        for i in range(n_out)
    ]
    return G.generate_jobs(jobs, problems, outs, common=COMMON, progress=False), outs


def _row(i, **over):
    return {"id": f"q{i}", "problem": f"What is {i}+1?", "answer": str(i + 1), **over}


def test_bad_rows_are_dropped_counted_and_named(tmp_path, fake, caplog):
    rows = [
        _row(0),
        _row(1, problem=""),
        _row(2, answer=None),
        _row(3),
        _row(0, problem="other"),
        _row(5, answer="  "),
        {"problem": "no id", "answer": "1"},
        _row(7),
    ]
    del rows[2]["answer"]  # a row with no answer field at all
    problems = _write(tmp_path / "eval_main.jsonl", rows)
    with caplog.at_level("WARNING"):
        (n,), (out,) = _gen(tmp_path, problems)
    assert n == 3  # q0, q3, q7
    got = [json.loads(x)["prompt_id"] for x in out.read_text().splitlines()]
    assert got == ["q0", "q3", "q7"]
    rep = read_json(str(out) + ".meta.json")["input_validation"]
    assert rep["file"] == str(problems) and rep["n_in"] == 8 and rep["n_out"] == 3
    assert rep["dropped"] == {
        "missing_id": 1,
        "missing_problem": 1,
        "missing_answer": 2,
        "problem_too_long": 0,
        "duplicate_id": 1,
        "duplicate_problem": 0,
    }
    assert rep["examples"]["missing_problem"] == ["line 2 (id 'q1')"]
    assert rep["examples"]["missing_answer"] == ["line 3 (id 'q2')", "line 6 (id 'q5')"]
    assert rep["examples"]["duplicate_id"] == ["line 5 (id 'q0'), first on line 1"]
    assert rep["examples"]["missing_id"] == ["line 7"]
    msg = caplog.text
    assert str(problems) in msg and "dropped 5 of 8 rows" in msg and "line 3 (id 'q2')" in msg
    # a row without a gold answer is never sampled, so it can never be scored as wrong
    assert all(json.loads(x)["gold"] for x in out.read_text().splitlines())


def test_empty_eval_set_is_an_error_naming_the_file(tmp_path, fake):
    problems = tmp_path / "eval_hard.jsonl"
    problems.write_text("\n\n")
    with pytest.raises(DataError, match=r"eval_hard\.jsonl: no problems to sample \(empty file\)"):
        _gen(tmp_path, problems)
    assert fake["opened"] == 0  # before any model load
    assert not list(tmp_path.glob("out*"))


def test_no_valid_row_is_an_error_naming_file_and_row(tmp_path, fake):
    problems = _write(tmp_path / "eval_main.jsonl", [_row(0, answer=""), _row(1, problem=None)])
    with pytest.raises(DataError) as ei:
        _gen(tmp_path, problems)
    msg = str(ei.value)
    assert str(problems) in msg and "no valid problem rows out of 2" in msg
    assert "missing_problem=1" in msg and "missing_answer=1" in msg and "line 1 (id 'q0')" in msg
    assert fake["opened"] == 0


def test_malformed_line_names_file_and_line(tmp_path, fake):
    problems = _write(tmp_path / "eval_main.jsonl", [_row(0), "{not json", _row(2)])
    with pytest.raises(DataError, match=r"eval_main\.jsonl: line 2: not valid JSON"):
        _gen(tmp_path, problems)
    problems = _write(tmp_path / "eval_main.jsonl", [_row(0), "[1, 2]"])
    with pytest.raises(DataError, match=r"eval_main\.jsonl: line 2: not a JSON object"):
        _gen(tmp_path, problems)
    assert fake["opened"] == 0


def test_validation_happens_before_sharding(tmp_path, fake):
    """Every shard drops the same rows, so shards stay disjoint and cover the valid rows."""
    rows = [_row(i) for i in range(9)] + [_row(3)]  # a late duplicate of q3
    problems = _write(tmp_path / "train_prompts.jsonl", rows)
    ids = []
    for k in range(3):
        job = [{"model": "m", "model_dir": str(tmp_path / "model"), "condition": "c", "sampling": SAMP}]
        out = tmp_path / f"shard{k}.jsonl"
        G.generate_jobs(job, problems, [out], common=COMMON, shard=(k, 3), progress=False)
        ids += [json.loads(x)["prompt_id"] for x in out.read_text().splitlines()]
    assert ids == [f"q{i}" for i in range(9)]


def test_duplicate_problem_text_is_dropped_as_in_data_preparation(tmp_path, fake):
    """One rule (problem_sources.check_rows): a problem text repeated under another id is dropped, the
    first kept, in a sampling input exactly as in data preparation."""
    problems = _write(tmp_path / "p.jsonl", [_row(0), _row(1, problem="What is  0+1?"), _row(2)])
    (n,), (out,) = _gen(tmp_path, problems)
    assert n == 2
    assert [json.loads(x)["prompt_id"] for x in out.read_text().splitlines()] == ["q0", "q2"]
    rep = read_json(str(out) + ".meta.json")["input_validation"]
    assert rep["dropped"]["duplicate_problem"] == 1
    assert rep["examples"]["duplicate_problem"] == ["line 2 (id 'q1'), same text as line 1 (id 'q0')"]


def test_job_output_mismatch_is_an_error(tmp_path, fake):
    problems = _write(tmp_path / "p.jsonl", [_row(0)])
    jobs = [{"model": "m", "model_dir": "x", "condition": "c", "sampling": SAMP}]
    with pytest.raises(ValueError, match="1 jobs but 2 outputs"):
        G.generate_jobs(jobs, problems, [tmp_path / "a", tmp_path / "b"], common=COMMON)
    with pytest.raises(ValueError, match="duplicate outputs"):
        G.generate_jobs(jobs * 2, problems, [tmp_path / "a"] * 2, common=COMMON)


def test_subset_generations_keeps_the_parents_rows_and_names_a_problem_it_lacks(tmp_path, fake):
    """A subset set's file is its parent's rows of its prompts, in the parent's order; a problem
    the parent has no rows for (the set is not a subset) is an error naming the file and the id."""
    parent = _write(tmp_path / "main.jsonl", [_row(i) for i in range(6)])
    (src,) = _gen(tmp_path, parent)[1]
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    hard = _write(tmp_path / "hard.jsonl", [_row(4), _row(1)])
    out = tmp_path / "hard_out.jsonl"
    assert G.subset_generations([src], hard, [out]) == [len([r for r in rows if r["prompt_id"] in ("q1", "q4")])]
    assert [json.loads(x) for x in out.read_text().splitlines()] == [r for r in rows if r["prompt_id"] in ("q1", "q4")]
    meta = read_json(out.with_name(out.name + ".meta.json"))
    assert meta["subset_of"] == str(src) and meta["artifact"] == str(out) and meta["condition"] == "c0"
    stranger = _write(tmp_path / "stranger.jsonl", [_row(1), _row(99)])
    with pytest.raises(DataError, match=r"out0\.jsonl: no generations for 1 of the 2 problems.*q99"):
        G.subset_generations([src], stranger, [tmp_path / "x.jsonl"])
    assert not (tmp_path / "x.jsonl").exists()


def test_non_utf8_line_names_file_and_line(tmp_path, fake):
    problems = tmp_path / "eval_main.jsonl"
    good = json.dumps(_row(0)) + "\n"
    problems.write_bytes(good.encode() + '{"id": "q1", "problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(
        DataError,
        match=r"eval_main\.jsonl: line 2: not valid UTF-8 \(byte 0xe9 at "
        r"column 29\)",
    ):
        _gen(tmp_path, problems)
    assert fake["opened"] == 0
    from ssd_math.io import read_jsonl, read_jsonl_report

    rows, bad = read_jsonl_report(problems)
    assert [r["id"] for r in rows] == ["q0"] and bad[0][0] == 2
    with pytest.raises(DataError, match=r"line 2: not valid UTF-8"):
        read_jsonl(problems)


def test_non_utf8_json_source_names_file_and_line(tmp_path):
    from ssd_math.problem_sources import load_source

    src = tmp_path / "rows.json"
    src.write_bytes(
        '[\n {"problem": "ok", "answer": "1"},\n {"problem": "na\xefve", "answer": "2"}\n]\n'.encode("latin-1")
    )
    with pytest.raises(DataError, match=r"rows\.json: line 3: not valid UTF-8 \(byte 0xef at column 17\)"):
        load_source({"name": "s", "path": str(src)})
    src.write_text('[\n {"problem": "ok",\n]\n')
    with pytest.raises(DataError, match=r"rows\.json: line 3: not valid JSON"):
        load_source({"name": "s", "path": str(src)})


def test_oversize_problem_is_dropped_counted_and_named(tmp_path, fake):
    huge = "1+" * (MAX_PROBLEM_CHARS // 2) + "1"  # just over the limit (a 10 MB row likewise)
    problems = _write(tmp_path / "eval_main.jsonl", [_row(0), _row(1, problem=huge), _row(2)])
    (n,), (out,) = _gen(tmp_path, problems)
    assert n == 2
    rep = read_json(str(out) + ".meta.json")["input_validation"]
    assert rep["dropped"]["problem_too_long"] == 1 and rep["n_out"] == 2
    assert rep["examples"]["problem_too_long"] == [f"line 2 (id 'q1'): {len(huge)} characters > {MAX_PROBLEM_CHARS}"]


# ------------------------------------------------------------------------------------------
# config errors not covered by tests/test_config.py
# ------------------------------------------------------------------------------------------

from conftest import config_error as _err  # noqa: E402
from conftest import tiny_random_model  # noqa: E402


@pytest.mark.parametrize(
    "path,value,expect",
    [
        (("arms", "ssd", "top_p"), 0, "config key arms.ssd.top_p = 0: must be > 0"),
        (("extra_arms", "t13", "top_p"), 1.01, "config key extra_arms.t13.top_p = 1.01: must be <= 1"),
        (("arms", "ssd", "t_eval"), 0, "config key arms.ssd.t_eval = 0: must be > 0"),
        (("arms", "ssd", "top_k"), -2, "config key arms.ssd.top_k = -2: must be >= -1"),
        (("arms", "ssd", "top_k"), "20", "config key arms.ssd.top_k = '20': must be of type integer"),
        (("arms", "ssd", "min_p"), 1.5, "config key arms.ssd.min_p = 1.5: must be <= 1"),
        (
            ("eval", "passk", "runs", 0, "temperature"),
            -0.1,
            "config key eval.passk.runs.0.temperature = -0.1: must be > 0",
        ),
        (("eval", "passk", "k"), 0, "config key eval.passk.k = 0: must be >= 1"),
        (
            ("eval", "sweeps", "presets", "precise", "top_p"),
            2.0,
            "config key eval.sweeps.presets.precise.top_p = 2.0: must be <= 1",
        ),
        (
            ("eval", "sweeps", "presets", "general", "presence_penalty"),
            3,
            "config key eval.sweeps.presets.general.presence_penalty = 3: must be <= 2",
        ),
        (("eval", "decoding", "min_p"), -0.1, "config key eval.decoding.min_p = -0.1: must be >= 0"),
        (("eval", "grader", "timeout_s"), 0, "config key eval.grader.timeout_s = 0: must be > 0"),
        (("eval", "samples_per_prompt"), 1.5, "config key eval.samples_per_prompt = 1.5: must be of type integer"),
        (("model", "trust_remote_code"), "yes", "config key model.trust_remote_code = 'yes': must be of type boolean"),
        (("train_sampling", "n_shards"), 0, "config key train_sampling.n_shards = 0: must be >= 1"),
        (("sampler", "backend"), "tgi", "config key sampler.backend = 'tgi': must be one of 'hf', 'vllm'"),
    ],
)
def test_out_of_range_and_wrong_type_name_key_and_allowed(default, path, value, expect):
    cfg = copy.deepcopy(default)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    assert expect in _err(cfg)


def test_unknown_nested_keys_are_named(default):
    cfg = copy.deepcopy(default)
    cfg["arms"]["ssd"]["temprature"] = 1.0
    cfg["eval"]["passk"]["n"] = 8
    msg = _err(cfg)
    assert "unknown config key arms.ssd.temprature" in msg and "temperature" in msg
    assert "unknown config key eval.passk.n" in msg and "allowed keys here: k, runs" in msg


def test_unknown_arm_sft_override_is_named(default):
    cfg = copy.deepcopy(default)
    cfg["arms"]["ssd"]["sft"] = {"learning_rate": 1e-4}
    msg = _err(cfg)
    # the same message as an unknown key of the top-level sft section, with the allowed keys
    assert "unknown config key arms.ssd.sft.learning_rate; allowed keys here:" in msg
    assert "checkpoints_past_end" in msg and "lr" in msg


def test_more_shards_than_prompts(default):
    """The config's "k larger than samples" relation: n_shards > training prompts. (pass@k's k
    cannot exceed its samples here: eval.passk.k is the number of samples drawn per prompt.)"""
    cfg = copy.deepcopy(default)
    cfg["train_sampling"]["n_shards"] = cfg["data"]["synthetic"]["n_train_prompts"] + 1
    msg = _err(cfg)
    assert "train_sampling.n_shards" in msg and "data.synthetic.n_train_prompts" in msg


def test_table1_temperature_must_be_on_the_grid(default):
    cfg = copy.deepcopy(default)
    cfg["report"]["table1"]["rows"][0]["temperature"] = 0.8
    msg = _err(cfg)
    assert "report.table1.rows[0].temperature = 0.8: not on eval.t_grid" in msg


def test_hard_levels_subset_and_missing_section(default):
    cfg = copy.deepcopy(default)
    cfg["data"]["synthetic"]["hard_levels"] = [9]
    assert "data.synthetic.hard_levels = [9] must be a subset of data.synthetic.levels" in _err(cfg)
    cfg = copy.deepcopy(default)
    del cfg["data"]["synthetic"]
    assert "data.synthetic: required when data.kind is 'synthetic'" in _err(cfg)


def test_missing_required_key_is_named(default):
    cfg = copy.deepcopy(default)
    del cfg["eval"]["grader"]
    assert "eval: 'grader' is a required property" in _err(cfg)


# ------------------------------------------------------------------------------------------
# provenance and trust_remote_code, on a real tiny model
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyprov")
    mdir, tok, rows = tiny_random_model(d, n_pretrain=200, n_eval=6)
    return mdir, _write(d / "p.jsonl", rows), tok


def _record_from_pretrained(monkeypatch):
    """Record the trust_remote_code of every model load and every tokenizer load (all go through
    ``ssd_math.tokenizer.load_tokenizer``, which hands it to AutoTokenizer for any tokenizer that
    is not the plain class: tests/test_tokenizer_model.py)."""
    import transformers

    import ssd_math.tokenizer as T

    seen = []
    orig = transformers.AutoModelForCausalLM.from_pretrained

    def wrapped(*a, **k):
        seen.append(("AutoModelForCausalLM", k.get("trust_remote_code", "<absent>")))
        return orig(*a, **k)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", wrapped)
    orig_tok = T.load_tokenizer

    def load_tok(*a, **k):
        seen.append(("load_tokenizer", k.get("trust_remote_code", "<absent>")))
        return orig_tok(*a, **k)

    # every module that imported the function by name (ssd_math.generate_prep, .hf_sampler, ...)
    for mod in [m for name, m in sys.modules.items() if name.startswith("ssd_math")]:
        if getattr(mod, "load_tokenizer", None) is orig_tok:
            monkeypatch.setattr(mod, "load_tokenizer", load_tok)
    return seen


def test_sidecar_provenance_and_trust_remote_code_default_off(tiny, tmp_path, monkeypatch):
    import torch

    from ssd_math.prompting import DEFAULT_INSTRUCTION, template_hash

    mdir, problems, tok = tiny
    seen = _record_from_pretrained(monkeypatch)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    monkeypatch.setenv("SSD_MATH_CONFIG_HASH", config_hash(cfg))
    common = {"instruction": DEFAULT_INSTRUCTION, "backend": "hf", "batch_size": 4, "seed": 11}
    out = tmp_path / "T0.7.jsonl"
    threads = torch.get_num_threads()
    try:
        G.generate_jobs(
            [{"model": "base", "model_dir": str(mdir), "condition": "T0.7", "sampling": SAMP}],
            problems,
            [out],
            common=common,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    meta = read_json(str(out) + ".meta.json")
    assert meta["config_hash"] == config_hash(cfg) == stable_hash({k: v for k, v in cfg.items() if k != "runtime"})
    assert meta["base_seed"] == 11 and meta["seeds"]["base_seed"] == 11
    assert {"torch", "transformers", "tokenizers"} <= set(meta["packages"])
    assert meta["prompt_template_hash"] == template_hash(tok, DEFAULT_INSTRUCTION)
    # the sidecar records every setting the rows were sampled with (SamplingConfig's defaults too)
    assert meta["sampling"] == SamplingConfig.from_dict(SAMP).to_dict() and meta["n_rows"] == 6
    assert meta["batch_size"] == 4
    assert meta["trust_remote_code"] is False
    assert seen and all(v is False for _, v in seen), seen
    assert {name for name, _ in seen} == {"AutoModelForCausalLM", "load_tokenizer"}


def test_prompt_past_the_context_is_dropped_by_the_stated_rule(tiny, tmp_path):
    """prompt tokens + max_new_tokens > max_position_embeddings: dropped, counted, in the sidecar."""
    import torch

    from ssd_math.prompting import DEFAULT_INSTRUCTION

    mdir, problems, tok = tiny
    context = json.loads((Path(mdir) / "config.json").read_text())["max_position_embeddings"]
    assert GP.model_context(mdir) == (context, "max_position_embeddings")
    rows = [json.loads(x) for x in problems.read_text().splitlines()]
    long_row = {**rows[0], "id": "long", "problem": " + ".join(["7"] * context)}  # > context tokens
    path = _write(tmp_path / "p.jsonl", rows + [long_row])
    common = {"instruction": DEFAULT_INSTRUCTION, "backend": "hf", "batch_size": 4, "seed": 11}
    out = tmp_path / "T0.7.jsonl"
    threads = torch.get_num_threads()
    try:
        (n,) = G.generate_jobs(
            [{"model": "base", "model_dir": str(mdir), "condition": "T0.7", "sampling": SAMP}],
            path,
            [out],
            common=common,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert n == len(rows)
    assert "long" not in {json.loads(x)["prompt_id"] for x in out.read_text().splitlines()}
    rep = read_json(str(out) + ".meta.json")["input_validation"]
    assert rep["dropped"]["prompt_too_long"] == 1 and rep["n_out"] == len(rows)
    assert rep["context"] == {
        "limit": context,
        "source": "max_position_embeddings",
        "max_new_tokens": SAMP["max_new_tokens"],
        "rule": "drop when prompt tokens + max_new_tokens > limit",
    }
    (ex,) = rep["examples"]["prompt_too_long"]
    assert ex.startswith("id 'long': ") and ex.endswith(f" + {SAMP['max_new_tokens']} > {context}")
    # the boundary: a prompt of exactly limit - max_new_tokens tokens is kept
    count = GP.prompt_token_counter(mdir)
    reqs = [{"id": "a", "prompt": "x"}]
    n_a = count("x")
    kept, _ = GP.fit_context(reqs, count, context=n_a + 8, max_new_tokens=8, report=rep)
    assert kept == reqs
    with pytest.raises(DataError, match="no prompt fits the model's context"):
        GP.fit_context(reqs, count, context=n_a + 7, max_new_tokens=8, report=rep)


def test_vllm_max_model_len_bounds_the_context(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 262144}}))
    assert GP.model_context(tmp_path) == (262144, "max_position_embeddings")
    assert GP.model_context(tmp_path, {"max_model_len": 65536}) == (65536, "sampler.vllm.max_model_len")
    assert GP.model_context(tmp_path / "missing") == (None, "no config.json")


def test_trust_remote_code_passed_through_when_configured(tiny, monkeypatch):
    from ssd_math.hf_sampler import HFSampler

    mdir, _, _ = tiny
    seen = _record_from_pretrained(monkeypatch)
    s = GP.open_sampler({**COMMON, "trust_remote_code": True}, mdir, model_name="m")
    assert isinstance(s, HFSampler) and s.trust_remote_code is True
    assert sorted(seen) == [("AutoModelForCausalLM", True), ("load_tokenizer", True)]
    seen.clear()
    assert HFSampler(mdir).trust_remote_code is False
    assert sorted(seen) == [("AutoModelForCausalLM", False), ("load_tokenizer", False)]


def test_config_hash_ignores_runtime_knobs(default):
    cfg = copy.deepcopy(default)
    h = config_hash(cfg)
    cfg["runtime"] = {"device": "cuda"}
    assert config_hash(cfg) == h
    cfg["seed"] += 1
    assert config_hash(cfg) != h


def test_model_output_is_never_executed():
    """Grading parses text with math-verify; no module evaluates a completion as code."""
    import re

    bad = re.compile(r"(?<![.\w])(eval|exec)\s*\(|compile\([^)]*completion")  # not model.eval()
    offenders = [p.name for p in (ROOT / "src" / "ssd_math").glob("*.py") if bad.search(p.read_text())]
    assert offenders == [], offenders


# ------------------------------------------------------------------------------------------
# what Snakemake prints (dry runs on the smoke config, nothing is built)
# ------------------------------------------------------------------------------------------


def _dry_run(tmp_path, *args):
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(ROOT / "tests" / "data" / "smoke_config.yaml"),
        "--cores",
        "1",
        "-n",
        *args,
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow  # Snakemake runs on each target
@pytest.mark.parametrize(
    "target,expect",
    [
        (
            "results/eval/base/eval_main/T0.8.jsonl",
            "no rule can build results/eval/base/eval_main/T0.8.jsonl: T0.8 is not on eval.t_grid (T0.7, T1.0)",
        ),
        (
            "results/eval/nope/eval_hard/T0.7.jsonl",
            "no rule can build results/eval/nope/eval_hard/T0.7.jsonl: 'nope' is not a model: 'base', "
            "the arms (ssd, topk5) or the extra arms (naive, bf16-state)",
        ),
        (
            "results/eval/ssd/eval_hard/checkpoints/step7.jsonl",
            "'step7' is not a checkpoint of sft.checkpoint_steps (step1, step2, final)",
        ),
    ],
)
def test_unbuildable_target_lists_valid_values_in_snakemake(tmp_path, target, expect):
    rc, out = _dry_run(tmp_path, target)
    assert rc != 0 and expect in out, out[-3000:]


@pytest.mark.slow  # Snakemake dry runs
def test_valid_targets_still_resolve(tmp_path):
    rc, out = _dry_run(
        tmp_path,
        "results/eval/base/eval_main/T0.7.jsonl",
        "results/eval/naive/eval_hard/T0.7.jsonl",
        "results/eval/base/eval_hard/T0.8-k2.jsonl",
    )
    assert rc == 0, out[-3000:]
    assert "unknown_model_target" not in out and "off_grid_target" not in out


@pytest.mark.slow  # a Snakemake run
def test_nested_cli_config_in_snakemake_names_key_and_fix(tmp_path):
    rc, out = _dry_run(tmp_path, "--config", "stats={conf: 0.9, n_boot: 200, seed: 1}")
    assert rc != 0
    assert "config key stats.conf = '0.9': must be of type number" in out, out[-3000:]
    assert "Snakemake passes nested --config values as strings" in out


def test_rule_outputs_without_a_sidecar_get_one_with_the_config_hash(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ssd_math.io import write_meta
    from ssd_math.rulelog import rule_log

    monkeypatch.setenv("SSD_MATH_CONFIG_HASH", "abc123")
    own, bare = tmp_path / "table.csv", tmp_path / "figure.png"
    sm = SimpleNamespace(rule="fig", log=[str(tmp_path / "x.log")], output=[str(own), str(bare)])
    with rule_log(sm):
        own.write_text("a\n")
        write_meta(own, rule="table", n_rows=1)
        bare.write_bytes(b"png")
    assert read_json(str(own) + ".meta.json")["n_rows"] == 1  # the rule's own sidecar is kept
    meta = read_json(str(bare) + ".meta.json")
    assert meta["config_hash"] == "abc123" and meta["rule"] == "fig"
    failed = tmp_path / "failed.png"
    with pytest.raises(RuntimeError):
        with rule_log(SimpleNamespace(rule="f", log=[str(tmp_path / "y.log")], output=[str(failed)])):
            failed.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not Path(str(failed) + ".meta.json").exists()  # a failed rule gets none
