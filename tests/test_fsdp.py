"""FSDP2 (envs/accelerate/fsdp.yaml) where it can run here: 2 CPU processes over gloo.

accelerate's own translation of fsdp.yaml into the launch environment, the real FSDP2 prepare
(fully_shard per decoder layer on a CPU mesh; tests/fsdp_cpu_launch.py only lets accelerate
use FSDP on CPU), and ssd_math.train's sharding-aware pieces: gradients reduce-scattered on every
micro-batch, instrumentation norms summed over shards, the chunked loss with the output layer's
weight, full state dicts gathered for checkpoints and resume. mixed_precision is turned off for the
comparisons with a single-process run (bf16 on CPU would only blur them).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import base_spec, hybrid_config, load_weights, make_model_dir, make_rows, read_log, write_rows

from ssd_math import train as T
from ssd_math import train_data, train_model

ROOT = Path(__file__).resolve().parents[1]
FSDP_YAML = ROOT / "envs" / "accelerate" / "fsdp.yaml"
LAUNCH = Path(__file__).with_name("fsdp_cpu_launch.py")


def fsdp_launch_env(nproc: int, port: int, config_file: Path = FSDP_YAML) -> dict:
    """The environment `accelerate launch --config_file fsdp.yaml` gives its processes
    (accelerate's own parser, config merge and prepare_multi_gpu_env), on CPU."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        [
            "--config_file",
            str(config_file),
            "--num_processes",
            str(nproc),
            "--main_process_port",
            str(port),
            "unused.py",
        ]
    )
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    env.update(
        {
            "ACCELERATE_USE_CPU": "1",
            "OMP_NUM_THREADS": "1",
            "ACCELERATE_MIXED_PRECISION": "no",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    return env


def test_fsdp_yaml_wraps_the_text_decoder_layers(monkeypatch):
    """fsdp.yaml's wrap policy, read by accelerate, finds Qwen3.5's decoder layers (linear and
    full attention) in the text model, and fails fast on what train() refuses."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers import AutoModelForCausalLM

    for k, v in fsdp_launch_env(2, 29999).items():
        if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and not plugin.activation_checkpointing
    model = AutoModelForCausalLM.from_config(hybrid_config())
    plugin.set_auto_wrap_policy(model)  # raises on a class the model lacks
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [m for m in model.modules() if policy(m)]
    assert wrapped == list(model.model.layers)
    assert {m.block_type for m in wrapped} == {"linear_attention", "full_attention"}


def _run(spec: dict, d: Path, nproc: int, port: int, *, wait: bool = True):
    (d / "spec.json").write_text(json.dumps(spec))
    if nproc == 1:
        cmd = [sys.executable, "-m", "ssd_math.train", "--spec", str(d / "spec.json")]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(port),
            str(LAUNCH),
            "--spec",
            str(d / "spec.json"),
        ]
        env = fsdp_launch_env(nproc, port)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(d))
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-4000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (torchrun starts them in sessions of their own)."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in reversed(procs):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    proc.wait()


def _first_microbatch_grad_norm(init_dir, spec: dict, rows: list[dict], world: int) -> float:
    """|g| of the mean loss over the first micro-batch of every process at step 1, computed on
    one unsharded model: what B_s's gradient under FSDP must be."""
    from test_train import make_tokenizer
    from transformers import AutoModelForCausalLM

    s = T.resolve_spec(spec)
    tok = make_tokenizer()
    ex = [train_data.encode_row(r, tok, s["max_len"]) for r in rows]
    idx = train_data.global_batch_rows(0, len(ex), s, len(ex) // s["global_batch"])
    per = s["global_batch"] // world
    first = [ex[i] for r in range(world) for i in idx[r * per : r * per + s["micro_batch"]]]
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    n = sum(train_data.n_loss_tokens(y) for _, y in first)
    (train_model.token_sum_loss(model, train_data.collate(first, 0)) / n).backward()
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_train_instrument_checkpoint_resume(tmp_path):
    """Under FSDP2 (2 gloo processes, fsdp.yaml's settings) with instrumentation, the chunked
    loss and gradient checkpointing on: the same losses, gradient norms and final weights as one
    process; B_s's gradient is the first micro-batch of both processes; checkpoints hold the
    full weights (reloadable by transformers); a SIGKILLed run resumes to the same weights."""
    init = make_model_dir(tmp_path / "init", tie=True)  # Qwen3.5-4B ties lm_head to the embedding
    rows = make_rows(96, seed=7)
    port = 29400 + os.getpid() % 500

    def spec_for(name: str) -> dict:
        d = tmp_path / name
        d.mkdir()
        return d, base_spec(
            init,
            d,
            data=str(write_rows(d / "rows.jsonl", rows)),
            global_batch=8,
            micro_batch=2,
            grad_clip=1.0,
            instrument={"enabled": True},
            loss_chunk_tokens=16,
            gradient_checkpointing=True,
            checkpoints={2: str(d / "ck2"), 12: str(d / "ck12")},
            resume_dir=str(d / "resume"),
        )

    d1, one = spec_for("one")
    s1 = _run(one, d1, 1, port)
    d2, two = spec_for("fsdp")
    s2 = _run(two, d2, 2, port + 1)
    assert s1["steps"] == s2["steps"] == 12 and s2["processes"] == 2 and s2["accumulation"] == 2

    log1, log2 = read_log(one["log"]), read_log(two["log"])
    for a, b in zip(log1, log2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        # |g| of the global batch from sharded gradients (summed over shards) = one process's
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["gB_norm"] == b["grad_norm"] and b["n_params"] == a["n_params"]
        assert b["B_small"] == 4 and b["B_big"] == 8 and a["B_small"] == 2
        assert abs(b["frac_changed"] - a["frac_changed"]) < 0.01
    assert log2[0]["gs_norm"] == pytest.approx(_first_microbatch_grad_norm(init, two, rows, world=2), rel=1e-4)

    w0, w1, w2 = load_weights(init), load_weights(one["out_dir"]), load_weights(two["out_dir"])
    assert w1.keys() == w2.keys() == w0.keys()
    for k in w0:
        assert not torch.equal(w0[k], w2[k]), f"{k} did not change under FSDP"
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    ck = load_weights(d2 / "ck12")
    assert all(torch.equal(ck[k], w2[k]) for k in w2)
    from transformers import AutoModelForCausalLM

    re = AutoModelForCausalLM.from_pretrained(d2 / "ck2", dtype=torch.float32).state_dict()
    ck2 = load_weights(d2 / "ck2")
    assert all(torch.equal(re[k], ck2[k]) for k in ck2)

    # kill -> resume: the same weights as the uninterrupted FSDP run
    d3, kill = spec_for("kill")
    victim = _run(kill, d3, 2, port + 2, wait=False)
    deadline = time.time() + 300
    while not (Path(kill["resume_dir"]) / "progress.json").exists():
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    _kill_tree(victim)
    assert not Path(kill["out_dir"]).exists(), "killed too late: the run had finished"
    s3 = _run(kill, d3, 2, port + 3)
    assert s3["resumed_from"] == 2 and s3["steps"] == 12
    w3 = load_weights(kill["out_dir"])
    for k in w2:
        assert torch.equal(w2[k], w3[k]), k
    log3 = read_log(kill["log"])
    assert [r["step"] for r in log3] == list(range(1, 13))
    for a, b in zip(log2, log3):
        assert a["loss"] == b["loss"] and a["G2_ema"] == b["G2_ema"]


def test_config_rejects_fsdp_settings_train_cannot_run(tmp_path):
    """config/real.yaml with envs/accelerate/fsdp.yaml validates; the FSDP settings that
    ssd_math.train cannot run fail at config time, naming the keys."""
    import copy

    import yaml

    from ssd_math.config import load_config, validate

    from conftest import config_error

    real = load_config(ROOT / "config" / "real.yaml")
    cfg = copy.deepcopy(real)
    cfg["runtime"]["accelerate_config"] = str(FSDP_YAML)
    validate(cfg)  # FSDP + instrumentation + chunked loss + checkpointing: all supported
    base = yaml.safe_load(FSDP_YAML.read_text())
    for change, expect in (
        ({"fsdp_version": 1}, "fsdp_config.fsdp_version must be 2"),
        (
            {"fsdp_activation_checkpointing": True},
            "fsdp_config.fsdp_activation_checkpointing and sft.gradient_checkpointing",
        ),
        ({"fsdp_transformer_layer_cls_to_wrap": None}, "fsdp_config.fsdp_transformer_layer_cls_to_wrap must name"),
    ):
        acc = copy.deepcopy(base)
        acc["fsdp_config"].update(change)
        path = tmp_path / f"fsdp_{len(change)}_{next(iter(change))}.yaml"
        path.write_text(yaml.safe_dump(acc))
        bad = copy.deepcopy(real)
        bad["runtime"]["accelerate_config"] = str(path)
        msg = config_error(bad)
        assert expect in msg and f"runtime.accelerate_config = {path}" in msg, msg
