"""Build, pretrain and probe the embedded tiny base model (the default experiment's subject).

    . .venv/bin/activate && python bench/bench_tiny_base.py --seed 0 [--write-results]

Steps: synthetic splits (ssd_math.synth.build_splits) -> tokenizer (ssd_math.tokenizer) -> model
dir (ssd_math.modeling) -> pretraining through ssd_math.train.train(spec) -> sample eval_main at
T in --temps (top-k 20, top-p 0.95) with the HF sampler; prints accuracy (quick \\boxed{} string
match), length-stop rate, think-close rate, mean completion tokens, generation tokens/s and
pretraining wall time. --write-results appends a run block to bench/RESULTS.md (section
"tiny base model"). Work files go to bench/_scratch/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from ssd_math.io import write_jsonl
from ssd_math.modeling import config_for_tokenizer, init_model_dir, load_model, n_params
from ssd_math.prompting import DEFAULT_INSTRUCTION, render_prompt
from ssd_math.sampler import HFSampler, SamplingConfig
from ssd_math.synth import build_splits, pretrain_records, tokenizer_corpus
from ssd_math.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parent


def boxed(text: str) -> str | None:
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1].strip() if m else None


def weights_hash(model_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(model_dir.glob("*.safetensors")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="work folder (default bench/_scratch/tiny_base_s{seed})")
    ap.add_argument("--levels", default="1,2,3,4")
    ap.add_argument("--hard-levels", default="3,4")
    ap.add_argument("--n-pretrain", type=int, default=24000)
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--p-recheck", type=float, default=0.12)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--rotary", type=float, default=1.0, help="partial_rotary_factor")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--temps", default="0.6,1.0,1.5")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-train", action="store_true", help="reuse the trained model in --work")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    work = Path(a.work or ROOT / "_scratch" / f"tiny_base_s{a.seed}")
    work.mkdir(parents=True, exist_ok=True)
    levels = [int(x) for x in a.levels.split(",")]
    t0 = time.perf_counter()
    splits = build_splits({"seed": a.seed, "levels": levels,
                           "hard_levels": [int(x) for x in a.hard_levels.split(",")],
                           "n_pretrain": a.n_pretrain, "n_eval_main": a.n_eval,
                           "n_train_prompts": 600, "p_recheck": a.p_recheck})
    tok = build_tokenizer(tokenizer_corpus(splits["pretrain"], instruction=a.instruction),
                          work / "tokenizer", vocab_size=a.vocab)
    cfg = config_for_tokenizer(tok, hidden=a.hidden, layers=a.layers, heads=a.heads,
                               kv_heads=a.kv_heads, intermediate=a.intermediate, max_pos=512,
                               partial_rotary_factor=a.rotary)
    init_dir = init_model_dir(work / "init", cfg, tok)
    recs = pretrain_records(splits["pretrain"], tok, instruction=a.instruction)
    write_jsonl(work / "pretrain.jsonl", recs)
    t_prep = time.perf_counter() - t0
    comp_tok = [len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in recs[:2000]]
    print(f"splits {[(k, len(v)) for k, v in splits.items()]}; vocab {len(tok)}; prep {t_prep:.1f}s; "
          f"pretrain completion tokens mean {statistics.mean(comp_tok):.1f} "
          f"p95 {sorted(comp_tok)[int(.95 * len(comp_tok))]} max {max(comp_tok)}", flush=True)

    spec = {
        "init_dir": str(init_dir), "init_random": True, "data": str(work / "pretrain.jsonl"),
        "out_dir": str(work / "model"), "log": str(work / "pretrain_log.jsonl"),
        "seed": a.seed, "epochs": 1, "max_steps": a.steps, "max_len": a.max_len,
        "global_batch": a.batch, "micro_batch": a.batch, "lr": a.lr, "min_lr": a.min_lr,
        "warmup_steps": a.warmup, "schedule": "cosine", "betas": [0.9, 0.95],
        "weight_decay": 0.1, "grad_clip": 1.0, "dtype": "float32", "optimizer_state": "fp32",
        "progress": False,
    }
    print("pretraining spec:", json.dumps(spec), flush=True)
    train_s = None
    if not a.skip_train:
        from ssd_math.train import train

        if Path(spec["log"]).exists():
            Path(spec["log"]).unlink()
        t1 = time.perf_counter()
        summary = train(spec)
        train_s = time.perf_counter() - t1
        print(f"pretrain: {summary} wall {train_s:.1f}s "
              f"({summary['steps'] / train_s:.2f} steps/s, {summary['tokens'] / train_s:.0f} tokens/s)",
              flush=True)
    model_dir = work / "model"
    wh = weights_hash(model_dir)
    nparam = n_params(load_model(model_dir))
    print(f"model params {nparam}; weights sha256 {wh}", flush=True)

    reqs = [{**r, "prompt": render_prompt(tok, r["problem"], instruction=a.instruction)}
            for r in splits["eval_main"]]
    hard_ids = {r["id"] for r in splits["eval_hard"]}
    sampler = HFSampler(model_dir, batch_size=a.gen_batch)
    results = []
    for T in [float(x) for x in a.temps.split(",")]:
        sc = SamplingConfig(temperature=T, top_k=20, top_p=0.95, max_new_tokens=a.max_new_tokens)
        sampler.stats = {"new_tokens": 0, "seconds": 0.0, "batches": 0}
        rows = sampler.sample(reqs, sampling=sc, condition=f"T{T}", base_seed=a.seed)
        write_jsonl(work / f"samples_T{T}.jsonl", rows)
        ok = [boxed(r["completion"]) == r["gold"] for r in rows]
        by_level = {}
        for r, c in zip(rows, ok):
            by_level.setdefault(r["level"], []).append(c)
        res = {
            "T": T, "n": len(rows),
            "acc": sum(ok) / len(rows),
            "acc_hard": statistics.mean(c for r, c in zip(rows, ok) if r["prompt_id"] in hard_ids),
            "acc_by_level": {k: round(statistics.mean(v), 3) for k, v in sorted(by_level.items())},
            "length_stop": statistics.mean(r["finish_reason"] == "length" for r in rows),
            "think_close": statistics.mean("</think>" in r["completion"] for r in rows),
            "boxed": statistics.mean(boxed(r["completion"]) is not None for r in rows),
            "mean_tokens": statistics.mean(r["n_completion_tokens"] for r in rows),
            "gen_tok_s": sampler.throughput()["new_tokens_per_s"],
            "gen_s": sampler.stats["seconds"],
        }
        results.append(res)
        print(json.dumps(res), flush=True)
    summary = {"seed": a.seed, "params": nparam, "weights_sha256": wh, "train_s": train_s,
               "spec": spec, "results": results, "args": vars(a)}
    (work / "bench_summary.json").write_text(json.dumps(summary, indent=1))
    if a.write_results:
        write_results(summary)


def write_results(s):
    path = ROOT / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = "## tiny base model"
    if head not in text:
        text = text.rstrip("\n") + f"\n\n{head}\n\n(bench/bench_tiny_base.py; 2-core CPU shared with "\
               "other jobs, fp32; timings are noisy)\n"
    a = s["args"]
    lines = [f"\n### run seed {s['seed']} ({time.strftime('%Y-%m-%d %H:%M')}) {a['note']}\n",
             f"- model: hidden {a['hidden']}, layers {a['layers']}, heads {a['heads']}/{a['kv_heads']}, "
             f"intermediate {a['intermediate']}, {s['params']} params; weights sha256 {s['weights_sha256']}",
             f"- pretraining: {a['steps']} steps x batch {a['batch']}, lr {a['lr']} (warmup {a['warmup']}, "
             f"cosine to {a['min_lr']}), wall {s['train_s']:.1f} s" if s["train_s"] else "- pretraining: reused",
             f"- eval: {a['n_eval']} eval_main prompts, levels {a['levels']}, max_new_tokens "
             f"{a['max_new_tokens']}, gen batch {a['gen_batch']}",
             "", "| T | acc | acc hard | acc by level | length-stop | think-close | boxed | mean tokens | gen tok/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in s["results"]:
        lines.append(f"| {r['T']} | {r['acc']:.3f} | {r['acc_hard']:.3f} | {r['acc_by_level']} | "
                     f"{r['length_stop']:.3f} | {r['think_close']:.3f} | {r['boxed']:.3f} | "
                     f"{r['mean_tokens']:.1f} | {r['gen_tok_s']:.0f} |")
    # insert our block at the end of our section (before the next "## " section, if any)
    i = text.index(head)
    j = text.find("\n## ", i + len(head))
    block = "\n".join(lines) + "\n"
    text = text + block if j < 0 else text[:j] + block + text[j:]
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
