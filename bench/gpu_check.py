"""GPU check of the tiny pipeline's CUDA paths: transformers sampling (HFSampler) and training
(ssd_math.train through `accelerate launch` with envs/accelerate/gpu1.yaml), with tokens/s.

    bash bench/gpu_check.sh [OUT_DIR]        # on a machine with one CUDA GPU

Steps (library calls, the same the rules make; no Snakemake needed on the GPU box):
 1. the synthetic task (ssd_math.synth.build_splits) and the tiny tokenizer + qwen3_5_text config;
 2. pretraining the tiny base on CUDA (accelerate launch -m ssd_math.train, bf16 autocast over fp32
    master weights), a fixed number of optimizer steps; tokens/s and peak memory from its log;
 3. SFT-sized training of the same model at micro-batch 64 (tokens/s);
 4. sampling the training prompts with HFSampler on cuda at T 1.1/top-k 20/top-p 0.95 (tokens/s),
    and the same on the CPU for a handful of batches (the speed-up);
 5. gpu_check.json: GPU name, torch/transformers/accelerate versions, CUDA, the numbers.
Everything writes under OUT_DIR (default: a temp folder). Meant to finish in about 3 minutes.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

INSTRUCTION = ("Solve the following competition math problem. Reason step by step, and put your "
               "final answer within \\boxed{}.\n\n{problem}")


def sh(cmd, log):
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}).returncode
    if rc:
        sys.stdout.write(Path(log).read_text()[-4000:])
        raise SystemExit(f"failed ({rc}): {' '.join(map(str, cmd))}")
    return time.perf_counter() - t0


def train_rate(log_path: Path, skip: int = 3) -> dict:
    rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    body = rows[skip:] or rows
    tps = [r["tokens_per_s"] for r in body if r.get("tokens_per_s")]
    return {"steps": len(rows), "tokens_per_s_median": sorted(tps)[len(tps) // 2] if tps else None,
            "peak_mem_mb": max((r.get("mem_mb") or 0) for r in rows),
            "final_loss": rows[-1].get("loss") if rows else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=None)
    ap.add_argument("--steps", type=int, default=150, help="pretraining optimizer steps")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run the same steps tiny and on the CPU (checks the script without a GPU)")
    args = ap.parse_args()
    smoke = args.cpu_smoke
    import tempfile

    import torch

    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check."))
    out.mkdir(parents=True, exist_ok=True)
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    dev = "cpu" if smoke else "cuda"

    from ssd_math.io import read_jsonl, write_jsonl
    from ssd_math.modeling import config_for_tokenizer, init_model_dir
    from ssd_math.synth import build_splits, pretrain_records, tokenizer_corpus
    from ssd_math.tokenizer import build_tokenizer, load_tokenizer

    summary = {"gpu": None if smoke else torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
               "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("transformers", "accelerate"):
        summary[mod] = __import__(mod).__version__
    t0 = time.perf_counter()
    splits = build_splits({"n_pretrain": 2000 if smoke else 24000,
                           "n_train_prompts": 64 if smoke else 1024, "n_eval_main": 64,
                           "n_eval_hard": 32, "levels": [1, 2, 3, 4, 5], "seed": 1234})
    write_jsonl(out / "train_prompts.jsonl", splits["train_prompts"])
    init = out / "init"
    tok = build_tokenizer(tokenizer_corpus(splits["pretrain"], instruction=INSTRUCTION), init,
                          vocab_size=384)
    cfg = config_for_tokenizer(tok, hidden=192, layers=4, heads=6, kv_heads=2, intermediate=512,
                               max_pos=256)
    init_model_dir(init, cfg, tok)
    tok = load_tokenizer(init)
    write_jsonl(out / "pretrain_sft.jsonl", pretrain_records(splits["pretrain"], tok, instruction=INSTRUCTION))
    summary["setup_s"] = round(time.perf_counter() - t0, 1)

    acc = str(REPO / ("envs/accelerate/cpu.yaml" if smoke else "envs/accelerate/gpu1.yaml"))
    base_spec = {"init_dir": str(init), "init_random": True, "data": str(out / "pretrain_sft.jsonl"),
                 "out_dir": str(out / "base"), "log": str(out / "pretrain_log.jsonl"), "seed": 1234,
                 "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 20, "schedule": "cosine",
                 "global_batch": 64, "micro_batch": 64, "max_len": 128, "epochs": 1,
                 "max_steps": 5 if smoke else args.steps, "dtype": "float32", "progress": False,
                 "instrument": {"enabled": False}}
    wall = sh(["accelerate", "launch", "--config_file", acc, "-m", "ssd_math.train",
               "--spec-json", json.dumps(base_spec)], out / "pretrain.log")
    summary["pretrain"] = {**train_rate(out / "pretrain_log.jsonl"), "wall_s": round(wall, 1)}

    # sampling: transformers generate on cuda, then a few batches on cpu for the ratio
    from ssd_math.generate import build_requests, prompt_renderer
    from ssd_math.sampler import HFSampler, SamplingConfig

    render, _ = prompt_renderer(out / "base", INSTRUCTION)
    reqs = build_requests(read_jsonl(out / "train_prompts.jsonl"), render)
    sampling = SamplingConfig(temperature=1.1, top_k=20, top_p=0.95, max_new_tokens=96)
    res = {}
    for device, n in ((dev, len(reqs)), ("cpu", 32 if smoke else 128)):
        if smoke and device == "cpu" and device in res:
            res["cpu_ref"] = res["cpu"]
        s = HFSampler(out / "base", device=device, batch_size=256 if device == "cuda" else 64)
        rows = s.sample(reqs[:n], sampling=sampling, condition="gpu-check", base_seed=1234)
        th = s.throughput()
        res[device] = {"prompts": n, "new_tokens": th["new_tokens"],
                       "new_tokens_per_s": round(th["new_tokens_per_s"], 1),
                       "length_stop_rate": round(sum(r["finish_reason"] == "length" for r in rows) / len(rows), 3)}
        if n == len(reqs):
            write_jsonl(out / "samples.jsonl", rows)
    if not smoke:
        res["speedup"] = round(res["cuda"]["new_tokens_per_s"] / res["cpu"]["new_tokens_per_s"], 1)
    summary["sample_hf"] = res

    # SFT on the model's own samples (completion-only loss), as rule sft runs it
    kept = [r for r in read_jsonl(out / "samples.jsonl") if r["finish_reason"] == "stop"]
    if smoke:  # a 5-step base rarely closes its answer; train on what there is
        kept = read_jsonl(out / "samples.jsonl")
    write_jsonl(out / "kept.jsonl", kept)
    sft_spec = {**base_spec, "init_dir": str(out / "base"), "init_random": False,
                "data": str(out / "kept.jsonl"), "out_dir": str(out / "sft"),
                "log": str(out / "sft_log.jsonl"), "lr": 5e-5, "min_lr": 1e-5, "warmup_steps": 2,
                "global_batch": 32, "micro_batch": 16, "max_len": 160, "max_steps": None,
                "instrument": {"enabled": True, "store_dtype": "bfloat16", "ema": 0.9}}
    wall = sh(["accelerate", "launch", "--config_file", acc, "-m", "ssd_math.train",
               "--spec-json", json.dumps(sft_spec)], out / "sft.log")
    summary["sft"] = {**train_rate(out / "sft_log.jsonl", skip=1), "wall_s": round(wall, 1),
                      "kept": len(kept)}
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
