"""The GPU smoke run (config/gpu-smoke.yaml) and its CPU twin.

Fast tests: the config is the real recipe's model and settings at its smallest, its plan fits the
budget the README states (scripts/plan_costs.py), and it passes the memory check only on a GPU
that keeps the headroom.

Slow test: the CPU twin. ``snakemake --configfile <twin>`` in a temporary folder, to the report:
gpu-smoke.yaml's DAG and settings (one arm, two optimizer steps of one sequence, checkpoints at
steps 1 and 2 evaluated from one job, the interrupted-then-resumed SFT job, the pass@k run, the
probe), with what only a GPU runs swapped for its CPU counterpart: the tiny random Qwen3.5-shaped
rehearsal model (config/rehearsal.yaml's model.rehearsal: 4B's layer pattern), transformers
sampling on the CPU (a vLLM CPU engine start costs minutes per job; tests/test_rehearsal.py runs
the vLLM path), caps of tens of tokens, and the CPU accelerate config.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math.config import ConfigError, load_config, validate

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "gpu-smoke.yaml"
REAL = ROOT / "config" / "real.yaml"


def test_smoke_is_the_real_recipe_at_its_smallest():
    smoke, real = load_config(SMOKE), load_config(REAL)
    assert smoke["model"] == real["model"]
    assert smoke["prompt"] == real["prompt"]
    assert smoke["runtime"]["accelerate_config"] == real["runtime"]["accelerate_config"]
    assert smoke["runtime"]["interrupt_sft_after_step"] == 1 and real["runtime"]["interrupt_sft_after_step"] is None
    for key in (
        "max_len",
        "optimizer_state",
        "dtype",
        "gradient_checkpointing",
        "checkpoint_sublayers",
        "loss_chunk_tokens",
        "lr",
        "betas",
        "weight_decay",
        "instrument",
    ):
        assert smoke["sft"][key] == real["sft"][key], key
    # two optimizer steps of one sequence; samples capped at the training length and all kept,
    # so a sample that runs to the cap fills sft.max_len
    assert smoke["sft"]["global_batch"] == smoke["sft"]["micro_batch"] == 1
    assert smoke["data"]["real"]["train"]["budget"] == 2 and smoke["sft"]["checkpoint_steps"] == [1, 2]
    assert smoke["train_sampling"]["max_new_tokens"] == smoke["sft"]["max_len"]
    assert not any(a["filter_length_stop"] for a in smoke["arms"].values())
    v, rv = smoke["sampler"]["vllm"], real["sampler"]["vllm"]
    assert smoke["sampler"]["backend"] == "vllm" and not v.get("enforce_eager")  # CUDA graphs
    assert v["dtype"] == rv["dtype"] and v["max_model_len"] >= smoke["sft"]["max_len"] + 2000


def test_smoke_plan_fits_its_budget():
    """plan_costs.py's total for the smoke: at most 0.5 GPU-hours, and at most 20 minutes of one
    GPU (the README quotes the number this prints)."""
    exe = Path(sys.executable)
    out = subprocess.run(
        [str(exe), str(ROOT / "scripts" / "plan_costs.py"), "--configfile", str(SMOKE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    from ssd_math.planner import build_plan, plan_totals

    tot = plan_totals(build_plan(load_config(SMOKE)))
    assert tot["gpu_hours"] <= 0.5 and tot["hours"] * 60 <= 20, tot
    assert f"{tot['gpu_hours']:,.2f}" in out.split("TOTAL", 1)[1].splitlines()[0]
    assert {r["rule"] for r in build_plan(load_config(SMOKE))} == {
        "sample_train_shard",
        "sft",
        "generate_grid",
        "generate_passk",
        "generate_checkpoints",
    }
    readme = (ROOT / "README.md").read_text()
    assert f"{tot['gpu_hours']:.2f} GPU-hours" in readme, "README's smoke cost is not plan_costs.py's"


def test_smoke_on_an_80gb_h100_is_refused_with_the_alternatives():
    raw = yaml.safe_load(SMOKE.read_text())
    raw["runtime"]["gpu_memory_gb"] = 85.5
    with pytest.raises(ConfigError, match=r"sft.max_len 33792 .*an H200: runtime.gpu_memory_gb: 149"):
        validate(raw)


def twin_config(workdir: Path) -> dict:
    """gpu-smoke.yaml with the GPU-only parts swapped for the CPU's (the module doc)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    rehearsal = yaml.safe_load((ROOT / "config" / "rehearsal.yaml").read_text())
    cfg["experiment"], cfg["results"] = "gpu-smoke-cpu-twin", "results-twin"
    cfg["data"]["real"]["root"] = str(ROOT / "data" / "real")
    model = copy.deepcopy(rehearsal["model"])
    model["hub"]["local_dir"] = "results-twin/rehearsal-model"
    # a few problems to warm up on (2 training + 2 eval prompts): batches of 4
    model["rehearsal"]["warmup"].update(steps=24, batch=4)
    cfg["model"] = model
    cfg["sampler"] = {"backend": "hf", "batch_size": 8, "vllm": {}}
    cfg["train_sampling"]["max_new_tokens"] = 40
    cfg["eval"]["max_new_tokens"] = 40
    cfg["sft"]["max_len"] = 1536  # the longest rendered training prompt + the 40-token cap
    cfg["sft"]["loss_chunk_tokens"] = 32
    cfg["eval"]["grader"]["workers"] = 2
    cfg["runtime"] = {"accelerate_config": "envs/accelerate/cpu.yaml", "device": "cpu", "interrupt_sft_after_step": 1}
    return cfg


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    wd = tmp_path_factory.mktemp("gpu_smoke_twin")
    cfg = twin_config(wd)
    configfile = wd / "twin.yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [
            str(exe),
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(wd),
            "--configfile",
            str(configfile),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode:
        raise AssertionError(f"twin failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return wd / cfg["results"], cfg, proc


@pytest.mark.slow
def test_cpu_twin_runs_the_smoke_dag_to_its_report(twin):
    R, cfg, proc = twin
    assert (R / "report" / "report.html").stat().st_size > 0
    log = [json.loads(x) for x in (R / "train" / "ssd" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # two optimizer steps, each row once
    # the first attempt stopped after saving its step-1 state; the retry resumed from it
    sft_log = R / "logs" / "train" / "ssd.log"
    text = sft_log.read_text() if sft_log.exists() else ""
    assert '"resumed_from": 1' in text, text[-2000:]
    assert "interrupt_after_step 1" in proc.stderr + proc.stdout or "Trying to restart" in proc.stderr
    for ckpt in ("step1", "step2", "final"):
        assert (R / "models" / "ssd" / ckpt / "model.safetensors").exists(), ckpt
    ckpts = json.loads((R / "generations" / "ssd" / "eval_hard" / "checkpoints" / "step1.jsonl.meta.json").read_text())
    assert ckpts["rule"] == "generate"
    assert not (R / "train" / "ssd" / "resume").exists()
