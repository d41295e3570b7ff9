"""The real recipe, tested without a GPU or network: config/real.yaml validates, the SLURM
profile's dry-run lists the whole DAG with GPU resources on sampling, training and eval jobs,
the real-data rule runs on the files the repository ships in data/real (nothing outside the clone),
a missing data file or folder stops the workflow when it loads, naming its config key, hub
datasets and the base-model fetch fail with a helpful message offline, and the cost plan is
internally consistent and covers every GPU job.

The SLURM executor plugin is not installed here, and ``snakemake -n --executor slurm`` needs it
(argparse rejects an unknown executor). The dry-run therefore uses a copy of profiles/slurm
without its ``executor:`` line, with profiles/slurm/site.example.yaml (the site values) as
``--profile``, the way profiles/slurm/README.md runs it.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math import config_checks, derive
from ssd_math.config import ConfigError, load_config, validate
from ssd_math.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT / "data" / "real"  # the shipped local sources (data/real/README.md)
REAL = ROOT / "config" / "real.yaml"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SITE = ROOT / "profiles" / "slurm" / "site.example.yaml"  # the site values (default/set-resources, set-threads)
GPU_RULES = {"sample_train_shard", "sft", "generate_grid", "generate_passk", "generate_checkpoints", "generate_sweep"}
UNPLANNED_GPU_RULES = {"probe_forward"}  # GPU jobs the cost plan does not cover (yet)
SLURM_RESOURCES = {
    "slurm_partition",
    "slurm_account",
    "runtime",
    "mem_mb",
    "mem_mb_per_cpu",
    "gpu",
    "gpu_model",
    "gres",
    "tasks",
    "tasks_per_gpu",
    "cpus_per_task",
    "constraint",
    "qos",
    "slurm_extra",
    "nodes",
}


@pytest.fixture(scope="module")
def real():
    return load_config(REAL)


# ------------------------------------------------------------------------------------ config


def test_real_config_validates(real):
    assert real["model"]["hub"]["id"] == "Qwen/Qwen3.5-4B"
    assert re.fullmatch(r"[0-9a-f]{40}", real["model"]["hub"]["revision"])
    assert real["sampler"]["backend"] == "vllm"
    # study §4 values
    assert {a: (v["temperature"], v["top_k"], v["top_p"]) for a, v in real["arms"].items()}["ssd"] == (1.1, 20, 0.95)
    assert real["train_sampling"]["max_new_tokens"] == 32768 and real["eval"]["max_new_tokens"] == 49152
    assert (real["sft"]["lr"], real["sft"]["min_lr"], real["sft"]["warmup_steps"]) == (5e-6, 1e-6, 5)
    assert real["sft"]["betas"] == [0.9, 0.95] and real["sft"]["weight_decay"] == 0.1
    assert real["sft"]["optimizer_state"] == "fp32" and real["sft"]["global_batch"] == 32
    assert real["eval"]["t_grid"] == [0.6, 0.7, 1.0, 1.1, 1.3, 1.5]
    # the sweeps are extra arms (cost nothing until targeted)
    extra = real["extra_arms"]
    assert {"lr7p5e-6", "lr1e-5", "batch64", "len48k", "data3x", "const-lr", "nofilter", "naive", "filter-only"} <= set(
        extra
    )
    assert extra["len48k"]["max_new_tokens"] == real["eval"]["max_new_tokens"]
    assert not set(extra) & set(derive.final_models(real))


def test_placeholder_revisions_are_rejected_by_key(real):
    cfg = copy.deepcopy(real)
    srcs = cfg["data"]["real"]["eval"]["sources"]
    i = next(i for i, s in enumerate(srcs) if s["name"] == "beyondaime")
    assert srcs[i]["enabled"] is False and config_checks.is_placeholder_revision(srcs[i]["revision"])
    srcs[i]["enabled"] = True
    cfg["model"]["hub"]["revision"] = "main"
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    msg = str(ei.value)
    assert f"data.real.eval.sources[{i}].revision" in msg and "BeyondAIME" in msg
    assert "model.hub.revision = 'main'" in msg
    srcs[i]["path"] = "beyondaime.jsonl"  # a local copy instead of the hub: fine
    cfg["model"]["hub"]["revision"] = "a" * 40
    validate(cfg)


def test_real_data_checks(real):
    cfg = copy.deepcopy(real)
    cfg["data"]["real"]["eval"]["hard_size"] = 2000
    cfg["data"]["real"]["train"]["sources"].append({"name": "math500", "path": "x.jsonl"})
    cfg["model"]["kind"] = "tiny"
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    msg = str(ei.value)
    assert "data.real.eval.hard_size = 2000" in msg
    assert "name = 'math500': also used by data.real.train.sources[2]" in msg
    assert "needs model.kind 'hub'" in msg


def test_gpu_counts_follow_the_config(real):
    from ssd_math.launcher import gpu_counts

    default = load_config(ROOT / "config.yaml")
    assert gpu_counts(default) == {"generate": 0, "train": 0}  # the tiny default stays on CPU
    assert gpu_counts(real) == {"generate": 1, "train": 1}
    fsdp = copy.deepcopy(real)
    fsdp["runtime"]["accelerate_config"] = "envs/accelerate/fsdp.yaml"
    fsdp["sampler"]["vllm"]["tensor_parallel_size"] = 2
    assert gpu_counts(fsdp) == {"generate": 2, "train": 4}
    acc = yaml.safe_load((ROOT / "envs/accelerate/fsdp.yaml").read_text())
    assert acc["distributed_type"] == "FSDP" and acc["fsdp_config"]["fsdp_version"] == 2
    assert acc["mixed_precision"] == "bf16"
    one = yaml.safe_load((ROOT / "envs/accelerate/gpu1.yaml").read_text())
    assert one["mixed_precision"] == "bf16" and one["use_cpu"] is False


def test_vllm_env_pins_the_extra():
    """The GPU env installs the pyproject's vllm extra at the same versions, and torch at the one
    stack's pin (vLLM 0.32's CUDA build is 2.13.0); the shared library pins are tests/test_pins.py's."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^vllm = \[(.*)\]$", pyproject, re.M).group(1)
    pins = re.findall(r'"([^"]+)"', extra)
    assert any(p.startswith("vllm==") for p in pins)
    env = yaml.safe_load((ROOT / "envs/vllm.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pins) <= set(pip)
    assert [p for p in pip if p.startswith("torch")] == ["torch==2.13.0"]


# ------------------------------------------------------------------------------- SLURM profile


def test_slurm_profile_keys():
    prof, site = yaml.safe_load(PROFILE.read_text()), yaml.safe_load(SITE.read_text())
    assert prof["executor"] == "slurm"
    for line in PROFILE.read_text().splitlines() + SITE.read_text().splitlines():  # every key is commented
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^\s*[\w-]+:\s*$", line):
            assert "#" in line, f"uncommented profile line: {line!r}"
    resources = set(site["default-resources"])
    for res in site["set-resources"].values():
        resources |= set(res)
    assert resources <= SLURM_RESOURCES, resources - SLURM_RESOURCES
    assert set(site["set-resources"]) >= GPU_RULES | UNPLANNED_GPU_RULES
    assert "code" not in prof["rerun-triggers"]


def _dry_run_jobs(text: str) -> list[dict]:
    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line)
        if m:
            cur = {"rule": m.group(1)}
            jobs.append(cur)
        elif cur is not None and line.startswith("    resources: "):
            cur["resources"] = dict(kv.split("=", 1) for kv in line[len("    resources: ") :].split(", "))
        elif cur is not None and line.startswith("    benchmark: "):
            cur["benchmark"] = line[len("    benchmark: ") :].strip()
    return jobs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm")
    prof = tmp / "profile"
    prof.mkdir()
    text = "\n".join(ln for ln in PROFILE.read_text().splitlines() if not ln.startswith("executor:"))
    (prof / "config.yaml").write_text(text + "\n")
    results = tmp / "results"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--profile",
        str(SITE),
        "--workflow-profile",
        str(prof),
        "--configfile",
        str(REAL),
        "--config",
        f"results={results}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"results": str(results), "jobs": _dry_run_jobs(proc.stdout + proc.stderr)}


@pytest.mark.slow  # a Snakemake dry run of the real recipe
def test_dry_run_lists_the_whole_dag_with_gpu_resources(dry_run, real):
    jobs = dry_run["jobs"]
    rules = {j["rule"] for j in jobs}
    assert {
        "fetch_base",
        "prepare_real_data",
        "sample_train_shard",
        "merge_shards",
        "filter_samples",
        "sft",
        "generate_grid",
        "generate_passk",
        "generate_checkpoints",
        "generate_sweep",
        "grade_grid",
        "grade_passk",
        "grade_checkpoints",
        "grade_sweep",
        "metrics",
        "table1",
        "table2",
        "figure_c",
        "training_curves",
        "report",
        "all",
    } <= rules
    assert not rules & {"make_synthetic_data", "build_tiny_init", "pretrain_base"}
    count = lambda r: sum(j["rule"] == r for j in jobs)  # noqa: E731
    assert count("sample_train_shard") == len(real["arms"]) * real["train_sampling"]["n_shards"]
    assert count("sft") == len(real["arms"])
    for j in jobs:
        res = j.get("resources", {})
        if j["rule"] in GPU_RULES | UNPLANNED_GPU_RULES:
            assert int(res.get("gpu", 0)) >= 1, j
            assert res["slurm_partition"] == "SITE-gpu" and res["slurm_account"] == "SITE-account", j
            assert int(res["runtime"]) >= 60 and int(res["mem_mb"]) >= 32000, j
        elif j["rule"] != "all":
            assert int(res.get("gpu", 0)) == 0, j


@pytest.mark.slow  # the real recipe's Snakemake dry run (fixture dry_run)
def test_plan_is_consistent_and_covers_every_gpu_job(dry_run, real):
    from ssd_math import planner as pc
    from ssd_math.planner import plan_totals

    rows = pc.build_plan(real, dry_run["results"])
    tp = real["planner"]["throughput"]
    for r in rows:
        assert r["gpu_hours"] == pytest.approx(r["hours"] * r["gpus"])
        rate = tp["train_tokens_per_s_per_gpu"] if r["kind"] == "train" else tp["generate_tokens_per_s_per_gpu"]
        secs = (
            r["train_tokens"] / (rate * r["gpus"])
            if r["kind"] == "train"
            else (
                r["gen_tokens"] / (rate * r["gpus"])
                + r["prompt_tokens"] / (tp["prefill_tokens_per_s_per_gpu"] * r["gpus"])
            )
        )
        assert r["hours"] == pytest.approx((secs + r["startup_s"]) / 3600)
        if r["kind"] != "train":
            assert r["gen_tokens"] == int(r["n_prompts"] * r["n_samples_per_prompt"] * r["mean_gen_tokens"])
    tot = plan_totals(rows)
    assert tot["jobs"] == len(rows)
    assert tot["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in rows))
    assert tot["hours"] == pytest.approx(sum(t["hours"] for t in tot["by_kind"].values()))
    assert sum(t["jobs"] for t in tot["by_kind"].values()) == len(rows)
    # the sampling shards cover the whole pool exactly once per arm
    for arm in real["arms"]:
        assert (
            sum(r["n_prompts"] for r in rows if r["name"].startswith(f"sample {arm} "))
            == real["data"]["real"]["train"]["budget"]
        )
    # every GPU job of the DAG has exactly one plan row (matched by its benchmark file) and back
    dag = {j["benchmark"]: j for j in dry_run["jobs"] if j["rule"] in GPU_RULES}
    planned = {r["benchmark"]: r for r in rows}
    assert len(planned) == len(rows)
    assert set(dag) == set(planned)
    for path, j in dag.items():
        assert planned[path]["rule"] == j["rule"]
        assert planned[path]["gpus"] == int(j["resources"]["gpu"])
    text = pc.describe(real) + pc.format_plan(rows)
    assert "TOTAL" in text and f"{len(rows)} jobs" in text


def test_plan_cli_prints_the_table(tmp_path):
    out = tmp_path / "plan.csv"
    proc = subprocess.run(
        [sys.executable, "scripts/plan_costs.py", "--configfile", str(REAL), "--csv", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "gpu_hours" in proc.stdout and "TOTAL" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert rows and all(float(r["gpu_hours"]) > 0 for r in rows)


def test_plan_measured_joins_benchmark_files(real, tmp_path):
    from ssd_math import planner as pc
    from ssd_math.planner import merge_measured

    rows = pc.build_plan(real, str(tmp_path))
    bench = Path(rows[0]["benchmark"])
    bench.parent.mkdir(parents=True)
    bench.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "3600.0\t1:00:00\t1000\t2000\t900\t950\t1\t2\t90\t3000\n"
    )
    merged = merge_measured(rows, [bench])
    assert merged[0]["measured_hours"] == pytest.approx(1.0)
    assert merged[0]["measured_gpu_hours"] == pytest.approx(rows[0]["gpus"])
    assert all(m["measured_hours"] is None for m in merged[1:])


# ------------------------------------------------------------------------------- data and model


def test_prepare_real_data_on_the_shipped_files(real, tmp_path):
    from ssd_math import prepare_real_data as prd

    sec = copy.deepcopy(real["data"]["real"])
    for s in sec["train"]["sources"] + sec["eval"]["sources"]:
        if s.get("hub_id"):  # no network in tests: the local files only
            s["enabled"] = False
    outs = {k: str(tmp_path / f"{k}.jsonl") for k in ("train_prompts", "eval_main", "eval_hard")}
    outs |= {"decontam": str(tmp_path / "decontam_pairs.csv"), "report": str(tmp_path / "data_report.json")}
    rep = prd.prepare_real_data(
        sec, seed=real["seed"], outputs=outs, root=str(REAL_DATA), cache_dir=str(tmp_path / "cache")
    )
    train, main, hard = (read_jsonl(outs[k]) for k in ("train_prompts", "eval_main", "eval_hard"))
    # training pool: MATH train levels 4-5 only (NuminaMath disabled), decontaminated
    assert train and {r["level"] for r in train} <= {4, 5}
    assert {r["dataset"] for r in train} == {"math_train"}
    assert 3900 < len(train) <= sec["train"]["budget"]
    # eval sets: local sources in fill order, hard is a subset, hardest sources first
    assert len(main) == min(sec["eval"]["main_size"], rep["eval"]["n_main"]) and len(hard) == 300
    assert {r["id"] for r in hard} <= {r["id"] for r in main}
    # hub sources off: OlympiadBench 300 (quota) + AIME 2024 30 + AMC 40 + MATH-500 500 = 870;
    # the 300 hardest by rank: AIME 2024 (7) then OlympiadBench (5)
    assert rep["eval"]["main_composition"] == {"olympiadbench": 300, "aime2024": 30, "amc2023": 40, "math500": 500}
    assert rep["eval"]["hard_composition"] == {"aime2024": 30, "olympiadbench": 270}
    for row in train + main:
        assert set(row) >= {"id", "problem", "answer", "source", "level", "subject"}
    # decontamination table: every removed prompt is out of the pool, with its eval partner
    with open(outs["decontam"], newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert pairs, "MATH train has near-copies of MATH-500 problems; the table should list them"
    assert set(pairs[0]) >= {"train_id", "eval_id", "reason", "jaccard", "same_answer"}
    train_ids, main_ids = {r["id"] for r in train}, {r["id"] for r in main}
    assert all(p["train_id"] not in train_ids and p["eval_id"] in main_ids for p in pairs)
    assert all(p["reason"] in ("exact", "ngram") for p in pairs)
    report = json.loads(Path(outs["report"]).read_text())
    assert report["decontam"]["n_removed_prompts"] == len({p["train_id"] for p in pairs})
    assert report["disabled_sources"] == ["numinamath_cot", "beyondaime", "omni_math_2", "aime2025", "hmmt_feb2025"]
    assert Path(outs["train_prompts"] + ".meta.json").exists()


def test_unreachable_hub_dataset_names_the_dataset(real, tmp_path, monkeypatch):
    from ssd_math import problem_sources as data
    from ssd_math.io import DataError

    def offline(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "_snapshot_download", offline)
    from ssd_math import prepare_real_data as prd

    sec = copy.deepcopy(real["data"]["real"])
    i = next(i for i, s in enumerate(sec["eval"]["sources"]) if s["name"] == "omni_math_2")
    outs = {k: str(tmp_path / k) for k in ("train_prompts", "eval_main", "eval_hard", "decontam", "report")}
    with pytest.raises(DataError) as ei:
        prd.prepare_real_data(sec, seed=1, outputs=outs, root=str(REAL_DATA), cache_dir=str(tmp_path))
    msg = str(ei.value)
    assert "omni_math_2" in msg and "martheballon/Omni-MATH-2" in msg
    assert f"data.real.eval.sources[{i}].path" in msg  # the key to set, with its index


def test_fetch_base_offline_message_and_local_copy(tmp_path, monkeypatch):
    from ssd_math import hub as fb

    def offline(**kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(fb, "_snapshot_download", offline)
    hub = {"id": "Qwen/Qwen3.5-4B", "revision": "a" * 40}
    with pytest.raises(fb.FetchError) as ei:
        fb.fetch_base(hub, tmp_path / "base")
    assert "Qwen/Qwen3.5-4B" in str(ei.value) and "model.hub.local_dir" in str(ei.value)
    assert not (tmp_path / "base").exists()  # nothing that looks like a model is left behind

    src = tmp_path / "local"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "tokenizer.json").write_text("{}")
    (src / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (src / "model.safetensors").write_bytes(b"\0" * 8)
    info = fb.fetch_base({**hub, "local_dir": str(src)}, tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").exists()
    meta = json.loads((tmp_path / "base" / "meta.json").read_text())
    assert meta["hub_id"] == "Qwen/Qwen3.5-4B" and meta["origin"].startswith("local copy")
    assert set(info["files"]) >= {"config.json", "model.safetensors"}

    (src / "model.safetensors").unlink()
    with pytest.raises(fb.FetchError, match="weights"):
        fb.fetch_base({**hub, "local_dir": str(src)}, tmp_path / "base2")


@pytest.mark.slow  # a Snakemake run
def test_prepare_real_data_rule_runs(real, tmp_path):
    """The rule itself (Snakemake -> script adapter) on the shipped files, hub sources disabled,
    run from an unrelated working directory: the config's relative data.real.root (data/real)
    resolves against the workflow folder, not the working directory."""
    cfg = copy.deepcopy(real)
    for s in cfg["data"]["real"]["train"]["sources"] + cfg["data"]["real"]["eval"]["sources"]:
        if s.get("hub_id"):
            s["enabled"] = False
    assert cfg["data"]["real"]["root"] == "data/real"
    cfg["results"] = str(tmp_path / "results")
    cfgfile = tmp_path / "real-local.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    target = f"{cfg['results']}/data/decontam_pairs.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            target,
            "-c1",
            "--configfile",
            str(cfgfile),
            "--workflow-profile",
            "none",
            "--nolock",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = Path(cfg["results"]) / "data"
    for name in ("train_prompts.jsonl", "eval_main.jsonl", "eval_hard.jsonl", "decontam_pairs.csv", "data_report.json"):
        assert (data / name).stat().st_size > 0, name
    assert (Path(cfg["results"]) / "benchmarks/data/prepare_real_data.tsv").exists()
    assert len(read_jsonl(data / "eval_hard.jsonl")) == cfg["data"]["real"]["eval"]["hard_size"]
    report = json.loads((data / "data_report.json").read_text())
    assert report["root"] == str(REAL_DATA)


# ------------------------------------------------------------------- nothing outside the clone


def _real_config_file(tmp_path: Path, real: dict, **data_real) -> Path:
    cfg = copy.deepcopy(real)
    cfg["data"]["real"].update(data_real)
    cfg["results"] = str(tmp_path / "results")
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow  # a Snakemake run
def test_missing_data_root_stops_the_workflow_at_load(real, tmp_path):
    """A data.real.root that does not exist is a config-time error naming the key, raised when
    the Snakefile loads (a dry run lists no job), never a MissingInputException."""
    cfgfile = _real_config_file(tmp_path, real, root=str(tmp_path / "no-such-folder"))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(cfgfile), "--workflow-profile", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "data.real.root = " in out and "no-such-folder" in out and "ConfigError" in out
    assert "MissingInputException" not in out and "Job stats" not in out


def test_missing_local_file_names_its_source_key(real, tmp_path):
    from ssd_math import prepare_real_data as prd

    sec = copy.deepcopy(real["data"]["real"])
    root = tmp_path / "data"
    root.mkdir()
    for name in ("math_train", "olympiadbench", "amc2023", "math500"):  # all but aime2024
        (root / f"{name}.jsonl").write_bytes((REAL_DATA / f"{name}.jsonl").read_bytes())
    sec["root"] = str(root)
    i = next(i for i, s in enumerate(sec["eval"]["sources"]) if s["name"] == "aime2024")
    with pytest.raises(ConfigError) as ei:
        prd.check_local_sources(sec, ROOT)
    msg = str(ei.value)
    assert f"data.real.eval.sources[{i}].path = 'aime2024.jsonl'" in msg
    assert str(root / "aime2024.jsonl") in msg and f"data.real.eval.sources[{i}].enabled" in msg
    assert msg.count("\n  - ") == 1  # the four present files are not reported
    (root / "aime2024.jsonl").write_bytes((REAL_DATA / "aime2024.jsonl").read_bytes())
    assert prd.check_local_sources(sec, ROOT) == root
    # a relative root resolves against the given workflow folder, whatever the working directory
    sec["root"] = "data"
    assert prd.check_local_sources(sec, tmp_path) == root


def test_offline_hub_dataset_error_names_dataset_key_and_fix(real, tmp_path):
    """With the hub unreachable (HF_HUB_OFFLINE=1 and an empty HF cache: the real
    huggingface_hub code path), the AIME 2025 source fails naming the dataset, its config key
    and how to give a local copy; following that advice (path: a local JSONL) works offline."""
    sources = real["data"]["real"]["eval"]["sources"]
    i = next(i for i, s in enumerate(sources) if s["name"] == "aime2025")
    assert sources[i]["hub_id"] == "MathArena/aime_2025" and not sources[i].get("path")
    outs = {k: str(tmp_path / k) for k in ("train_prompts", "eval_main", "eval_hard", "decontam", "report")}
    code = "\n".join(
        [
            "import sys",
            "from ssd_math import prepare_real_data as realdata",
            "from ssd_math.config import load_config",
            "from ssd_math.io import DataError",
            f"real = load_config({str(REAL)!r})['data']['real']",
            "real['eval']['sources'] = [s if s['name'] == 'aime2025' else {**s, 'enabled': False}",
            "                           for s in real['eval']['sources']]",
            "try:",
            f"    realdata.prepare_real_data(real, seed=1, outputs={outs!r},",
            f"                               cache_dir={str(tmp_path / 'cache')!r})",
            "except DataError as exc:",
            "    print(exc)",
            "    sys.exit(3)",
        ]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    msg = proc.stdout
    assert "'aime2025'" in msg and f"MathArena/aime_2025@{sources[i]['revision']}" in msg
    key = f"data.real.eval.sources[{i}]"
    assert f"{key}.path to a local JSONL file" in msg and f"{key}.enabled: false" in msg

    from ssd_math import prepare_real_data as prd
    from ssd_math.problem_sources import load_source

    local = tmp_path / "aime2025.jsonl"  # a local copy in the project's row format
    local.write_text(
        "".join(
            json.dumps({"id": f"aime2025-{n}", "problem": f"Problem {n}?", "answer": str(n), "source": "AIME 2025"})
            + "\n"
            for n in range(1, 4)
        )
    )
    spec = {**prd.enabled([sources[i]], "eval")[0], "path": str(local)}
    rows = load_source(spec, cache_dir=tmp_path / "cache")  # read locally, no download tried
    assert [r["answer"] for r in rows] == ["1", "2", "3"]
    assert {r["source"] for r in rows} == {"AIME 2025"} and len({r["id"] for r in rows}) == 3


# The check of the brief, as a test: no rule, config, script, library module, test, bench or
# doc names the development machines' folder beside the clone (a fresh clone has nothing there).
# .ci/run alone may: it provides CI with the services a CI image would (SLURM, Quarto) from there.
# (also a path joined from parts: a "shared" literal followed by ` / `)
_OUTSIDE = re.compile(r"\.\./" + "shared|" + "shared" + "/data|" + '"' + "shared" + '"' + r"\s*/")


def test_nothing_outside_the_clone_is_named():
    proc = subprocess.run(
        [
            "git",
            "grep",
            "--untracked",
            "-nE",
            _OUTSIDE.pattern,
            "--",
            "Snakefile",
            "rules",
            "config",
            "config.yaml",
            "src",
            "scripts",
            "tests",
            "bench",
            "docs",
            "schemas",
            "profiles",
            "envs",
            "report",
            ".ci",
            "data",
            ":!.ci/run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode not in (0, 1):  # not a git checkout (e.g. an sdist): walk the files
        pytest.skip(f"git grep unavailable: {proc.stderr.strip()}")
    assert proc.returncode == 1 and not proc.stdout, proc.stdout
