"""SFT GPU check: ``ssd_math.train``'s own optimizer step on a random-initialised model of
Qwen3.5-4B's exact text shape, at 16,384 and 33,792 tokens (the recipe's max_len), with the real
recipe's settings; peak memory per phase, tokens/s, MFU, whether flash-linear-attention ran, the
GPU's name -> JSON.

    bash bench/gpu_check.sh OUT_DIR              # on a lent GPU machine (one 9-minute command)
    bash bench/gpu_check.sh OUT_DIR --dry-run    # here, on the CPU: the same code at tiny shapes

Each run is one process (:func:`run_one`): ``ssd_math.train.train`` with init_random on the shape,
bf16 mixed precision (``ACCELERATE_MIXED_PRECISION=bf16``, as envs/accelerate/gpu1.yaml),
gradient checkpointing with ``checkpoint_sublayers`` (config/real.yaml), ``loss_chunk_tokens`` 1024, ``global_batch`` 2 of ``micro_batch`` 1 (so the
second micro-batch runs with whole gradients, as in the real step), 2 optimizer steps; first with
instrumentation on, then off. Phases are timed and metered by wrapping the training code's own
functions (forward = ``token_sum_loss``, backward = ``Accelerator.backward``, optimizer =
``AdamW.step``, tracker = ``WeightChangeTracker.before_step/after_step``): the peak of each is
``torch.cuda.max_memory_allocated`` after a reset at its start (on the CPU: the live tensor bytes
of bench/bench_memory.py). An out-of-memory error is a result (the phase it hit, recorded), not a
crash. Runs are skipped, and said so, once the time budget (``--budget-s``) is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

# bf16 dense peak FLOP/s by GPU name (NVIDIA datasheets, SXM parts, no sparsity): the MFU denominator
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12}
TINY = {"hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 128, "vocab_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
        "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4, "tie_word_embeddings": True,
        "full_attention_interval": 4}


class Meter:
    """Peak memory since :meth:`reset`: CUDA's allocator counter, or live tensor bytes on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        if not cuda:
            from bench_memory import live_bytes_mode

            self.mode = live_bytes_mode()
            self.mode.__enter__()

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.mode.peak = self.mode.cur

    def peak(self) -> int:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return int(self.mode.peak)


def meter_phases(meter: Meter, phases: dict, state: dict) -> None:
    """Wrap the training code's functions: each call's peak memory and time go to ``phases``."""
    import accelerate
    import torch

    from ssd_math import noise
    from ssd_math import train as T

    def wrap(owner, attr, name):
        orig = getattr(owner, attr)

        def run(*a, **kw):
            state["phase"] = name
            meter.reset()
            t0 = time.perf_counter()
            out = orig(*a, **kw)
            ph = phases.setdefault(name, {"peak_bytes": 0, "seconds": 0.0, "calls": 0})
            ph["peak_bytes"] = max(ph["peak_bytes"], meter.peak())
            ph["seconds"] += time.perf_counter() - t0
            ph["calls"] += 1
            return out

        setattr(owner, attr, run)

    wrap(T, "token_sum_loss", "forward")
    wrap(accelerate.Accelerator, "backward", "backward")
    wrap(torch.optim.AdamW, "step", "optimizer")
    wrap(noise.WeightChangeTracker, "before_step", "tracker")
    wrap(noise.WeightChangeTracker, "after_step", "tracker")


def run_one(shape: dict, tokens: int, instrument: bool, out_json: Path, steps: int) -> None:
    """In this process: train ``steps`` optimizer steps; write the run's record to ``out_json``."""
    import torch

    from ssd_math import planner
    from ssd_math import train as T
    from ssd_math.io import read_jsonl
    from ssd_math.tokenizer import build_tokenizer

    cuda = torch.cuda.is_available()
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_sft_"))
    init = tmp / "init"
    planner.text_config(shape).save_pretrained(init)
    build_tokenizer(["Q: 0123456789 A:"], init)
    rows = [{"prompt": "Q: ", "completion": "7" * tokens, "finish_reason": "length"}] * (2 * steps)
    spec = {"init_dir": str(init), "init_random": True, "data": rows, "out_dir": str(tmp / "out"),
            "log": str(tmp / "log.jsonl"), "max_len": tokens, "global_batch": 2, "micro_batch": 1,
            "max_steps": steps, "warmup_steps": 1, "gradient_checkpointing": True,
            "checkpoint_sublayers": True, "loss_chunk_tokens": 1024, "instrument": {"enabled": instrument}, "progress": False}
    rec: dict = {"tokens": tokens, "instrument": instrument, "steps_asked": steps, "phases": {}}
    meter = Meter(cuda)
    state = {"phase": "load"}
    meter_phases(meter, rec["phases"], state)
    t0 = time.perf_counter()
    try:
        T.train(spec)
        rec["oom"] = None
    except torch.OutOfMemoryError as e:  # a result: where it ran out
        rec["oom"] = {"phase": state["phase"], "message": str(e).splitlines()[0][:300]}
    rec["wall_s"] = time.perf_counter() - t0
    log = read_jsonl(tmp / "log.jsonl.partial") if (tmp / "log.jsonl.partial").exists() else (
        read_jsonl(tmp / "log.jsonl") if (tmp / "log.jsonl").exists() else [])
    rec["steps_done"] = len(log)
    timed = log[1:] or log  # the first step includes warm-up (kernel compilation, autotuning)
    if timed:
        rec["tokens_per_s"] = sum(r["tokens_per_s"] for r in timed) / len(timed)
        rec["step_s"] = sum(r["step_s"] for r in timed) / len(timed)
    for ph in rec["phases"].values():
        ph["peak_gb"] = round(ph.pop("peak_bytes") / 1e9, 3)
    rec["peak_gb"] = max((p["peak_gb"] for p in rec["phases"].values()), default=None)
    out_json.write_text(json.dumps(rec))


def environment() -> dict:
    import torch
    import transformers
    from transformers.utils.import_utils import (is_causal_conv1d_available,
                                                 is_flash_linear_attention_available)

    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1) if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "flash_linear_attention_available": bool(is_flash_linear_attention_available()),
            "causal_conv1d_available": bool(is_causal_conv1d_available())}


def flops_per_token(shape: dict, params: int, tokens: int) -> float:
    """Model FLOPs per trained token (the MFU convention: recompute not counted): 6 x parameters,
    plus causal attention of the full-attention layers, 6 x tokens x heads x head_dim each."""
    n_full = shape["num_hidden_layers"] // shape.get("full_attention_interval", 4)
    return 6.0 * params + 6.0 * n_full * tokens * shape["num_attention_heads"] * shape["head_dim"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, short lengths")
    ap.add_argument("--lengths", default=None, help="comma-separated tokens per sequence")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=450.0, help="no new run after this")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        shape, tokens, inst, path = json.loads(args.one)
        run_one(shape, tokens, inst, Path(path), args.steps)
        return 0

    from ssd_math import planner

    shape = TINY if args.dry_run else planner.QWEN35_4B_TEXT
    lengths = [int(x) for x in (args.lengths or ("256,512" if args.dry_run else "16384,33792")).split(",")]
    env = environment()
    print(json.dumps(env), flush=True)
    sizes = planner.model_sizes(shape)
    layer = planner.layer_saved_bytes(shape, kernels="fla" if env["flash_linear_attention_available"] else "reference",
                                      sublayers=True)
    peak_flops = next((v for k, v in PEAK_BF16.items() if env["gpu"] and k in env["gpu"]), None)
    child_env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16", "PYTHONUNBUFFERED": "1"}
    if env["gpu"] is None:
        child_env["ACCELERATE_USE_CPU"] = "True"
    t_start, runs = time.perf_counter(), []
    for tokens in lengths:
        for inst in (True, False):
            rec_path = out / f"run_{tokens}_{'inst' if inst else 'noinst'}.json"
            if time.perf_counter() - t_start > args.budget_s:
                runs.append({"tokens": tokens, "instrument": inst, "skipped": "time budget spent"})
                continue
            proc = subprocess.run([sys.executable, __file__, str(out), "--steps", str(args.steps),
                                   "--one", json.dumps([shape, tokens, inst, str(rec_path)])],
                                  env=child_env, capture_output=True, text=True)
            (out / f"run_{tokens}_{'inst' if inst else 'noinst'}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode or not rec_path.exists():
                rec = {"tokens": tokens, "instrument": inst, "crashed": proc.returncode,
                       "stderr_tail": (proc.stderr or "")[-1500:]}
            else:
                rec = json.loads(rec_path.read_text())
            rec["fla_fell_back"] = "falling back" in (proc.stderr or "")
            pred = planner.sft_memory(shape, tokens, sizes=sizes, layer=layer, instrumented=inst)
            rec["predicted_peak_gb"] = round(pred["peak"] / 1e9, 3)
            if rec.get("tokens_per_s") and peak_flops:
                rec["mfu"] = rec["tokens_per_s"] * flops_per_token(shape, sizes["params"], tokens) / peak_flops
            runs.append(rec)
            print(json.dumps({k: rec.get(k) for k in ("tokens", "instrument", "steps_done", "peak_gb",
                                                      "predicted_peak_gb", "tokens_per_s", "mfu", "oom",
                                                      "crashed", "fla_fell_back")}), flush=True)
    result = {**env, "dry_run": args.dry_run, "shape": shape, "params": sizes["params"],
              "fla_ran": bool(env["flash_linear_attention_available"]
                              and not any(r.get("fla_fell_back") for r in runs)),
              "runs": runs, "elapsed_s": time.perf_counter() - t_start}
    (out / "gpu_check_sft.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'gpu_check_sft.json'}")
    bad = [r for r in runs if r.get("crashed")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
