"""GPU check: the rehearsal (config/rehearsal.yaml, the real recipe's DAG scaled down) on one
CUDA GPU with the vLLM backend, training with gradient checkpointing, the chunked loss and
flash-linear-attention's Gated DeltaNet kernels (causal-conv1d is not installed: transformers runs
its F.conv1d fallback for the short convolution); sampling and training tokens/s and peak memory.

    bash bench/gpu_check_rehearsal.sh [OUT_DIR]   # one H100/H200 with a registry (installs vLLM)
    bash bench/gpu_check_rehearsal.sh OUT_DIR --dry-run  # CPU: the variant config, the DAG (snakemake -n)
                                                   #  and the install commands, nothing run

Steps: (1) the GPU environment (bench/gpu_check_rehearsal.sh: envs/vllm.yaml's pins +
flash-linear-attention, then this package without dependencies); (2) a config variant of the rehearsal
(:func:`variant_config`): sampler.backend vllm (language_model_only, gpu_memory_utilization 0.5),
runtime device cuda + envs/accelerate/gpu1.yaml, results under OUT_DIR; (3) ``snakemake`` on it
with ``--resources gpu=1``, nvidia-smi sampled every second for the peak GPU memory; (4)
:func:`collect`: tokens/s of every sampling/eval job (generated tokens / its benchmark: seconds,
engine start included; and the engine's own rate from the job log), training tokens/s and peak
CUDA memory from train/*/log.jsonl, whether the fast linear-attention kernels were used (no
:data:`GDN_FELL_BACK` in the training logs: the gated delta rule's own warning, not causal-conv1d's,
which transformers prints whenever causal-conv1d is missing), and a vLLM weight-name check of
every checkpoint;
(5) OUT_DIR/gpu_check.json, OUT_DIR/plan_rates.yaml (the ``planner.throughput`` block the cost
planner reads from a config: measured on the REHEARSAL model, so a check of the plumbing, not
4B rates) and a section of bench/RESULTS.md. The rehearsal's benchmark: files stay under
OUT_DIR/rehearsal/benchmarks, where ``plan_costs.py --measured`` / rule plan_measured read them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
MARK_BEGIN, MARK_END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
# transformers 5.19's warning when the Gated DeltaNet's chunked delta rule runs its PyTorch
# reference (integrations/hub_kernels.py, use_kernel_func_from_hub_with_fallback)
GDN_FELL_BACK = "`chunk_gated_delta_rule` is falling back"


def variant_config(base: dict, out_dir: Path) -> dict:
    """The rehearsal config for one CUDA GPU and vLLM (results and the built model under out_dir)."""
    cfg = json.loads(json.dumps(base))
    R = str(out_dir / "rehearsal")
    cfg["results"] = R
    cfg["experiment"] = base["experiment"] + "-gpu"
    cfg["data"]["real"]["root"] = str(REPO / "data" / "real")
    cfg["model"]["hub"]["local_dir"] = f"{R}/rehearsal-model"
    cfg["sampler"]["backend"] = "vllm"
    cfg["sampler"].setdefault("vllm", {})
    cfg["sampler"]["vllm"].update({"language_model_only": True, "gpu_memory_utilization": 0.5, "dtype": "bfloat16"})
    cfg["runtime"] = {"accelerate_config": "envs/accelerate/gpu1.yaml", "device": "cuda"}
    return cfg


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def collect(results: Path) -> dict:
    """Measured rates of a finished rehearsal run under ``results`` (any backend)."""
    from ssd_math.hub import vllm_weight_problems
    from ssd_math.io import read_benchmark

    results = Path(results)
    out: dict = {"sampling": {}, "training": {}, "vllm_weight_problems": {}}
    gen_tokens, gen_s = 0, 0.0
    for bench in sorted((results / "benchmarks").rglob("*.tsv")):
        rel = bench.relative_to(results / "benchmarks").with_suffix("")
        if rel.parts[0] == "samples" and rel.name.startswith("shard"):
            files = [results / "samples" / rel.parts[1] / "samples.jsonl"]
            share = 1.0 / len(list((results / "benchmarks" / "samples" / rel.parts[1]).glob("shard*.tsv")))
        elif rel.parts[0] == "generate":
            model, evalset, kind = rel.parts[1:4] if len(rel.parts) >= 4 else (*rel.parts[1:3], None)
            folder = results / "generations" / model / evalset
            name = rel.parts[-1]
            files = (
                sorted(folder.glob("T*.jsonl"))
                if name == "grid"
                else sorted((folder / "checkpoints").glob("*.jsonl"))
                if name == "checkpoints"
                else sorted((folder / "sweep").glob("*.jsonl"))
                if name == "sweep"
                else [folder / f"{name}.jsonl"]
            )
            files = [f for f in files if "-k" not in f.name or name != "grid"]
            share = 1.0
        else:
            continue
        toks = 0
        for f in files:
            if f.exists():
                toks += sum(json.loads(x)["n_completion_tokens"] for x in f.read_text().splitlines())
        b = read_benchmark(bench)
        if b["s_mean"]:
            gen_tokens += toks * share
            gen_s += b["s_mean"]
    out["sampling"]["new_tokens"] = int(gen_tokens)
    out["sampling"]["job_seconds"] = round(gen_s, 1)
    out["sampling"]["tokens_per_s_incl_startup"] = round(gen_tokens / gen_s, 1) if gen_s else None
    engine = []
    for logf in (results / "logs" / "generate").rglob("*.log") if (results / "logs" / "generate").exists() else []:
        for m in re.finditer(r"vllm throughput (\{.*\})", logf.read_text(errors="replace")):
            engine.append(json.loads(m.group(1)))
    for logf in (results / "logs" / "samples").rglob("*.log") if (results / "logs" / "samples").exists() else []:
        for m in re.finditer(r"vllm throughput (\{.*\})", logf.read_text(errors="replace")):
            engine.append(json.loads(m.group(1)))
    if engine:
        tok, sec = sum(e["new_tokens"] for e in engine), sum(e["seconds"] for e in engine)
        out["sampling"]["engine_tokens_per_s"] = round(tok / sec, 1) if sec else None
    rates, mems, fell_back = [], [], []
    for log in sorted((results / "train").glob("*/log.jsonl")):
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        rates += [r.get("tokens_per_s") for r in rows[1:] or rows]
        mems += [r.get("mem_mb") for r in rows]
    for logf in sorted((results / "logs" / "train").glob("*.log")) if (results / "logs" / "train").exists() else []:
        if GDN_FELL_BACK in logf.read_text(errors="replace"):
            fell_back.append(logf.stem)
    out["training"] = {
        "tokens_per_s_median": _median(rates),
        "peak_mem_mb": max([m for m in mems if m is not None], default=None),
        "fla_kernels": not fell_back,
        "fell_back": fell_back,
    }
    for d in [results / "models" / "base", *sorted((results / "models").glob("*/final"))]:
        if d.exists():
            out["vllm_weight_problems"][str(d.relative_to(results))] = vllm_weight_problems(d)
    return out


def plan_rates(m: dict, startup_s: float | None) -> dict:
    """The planner.throughput block (ssd_math.planner) of the measured rates."""
    s, t = m["sampling"], m["training"]
    return {
        "planner": {
            "throughput": {
                "generate_tokens_per_s_per_gpu": s.get("engine_tokens_per_s") or s.get("tokens_per_s_incl_startup"),
                "train_tokens_per_s_per_gpu": t["tokens_per_s_median"],
                "startup_s_per_job": startup_s,
            }
        }
    }


def write_results_section(text: str, path: Path = REPO / "bench" / "RESULTS.md") -> None:
    old = path.read_text() if path.exists() else ""
    block = f"{MARK_BEGIN}\n{text.rstrip()}\n{MARK_END}\n"
    if MARK_BEGIN in old and MARK_END in old:
        new = old[: old.index(MARK_BEGIN)] + block + old[old.index(MARK_END) + len(MARK_END) + 1 :]
    else:
        new = old.rstrip() + "\n\n" + block
    path.write_text(new)


class GpuMemorySampler(threading.Thread):
    """Peak nvidia-smi memory.used (MiB) of GPU 0, sampled every second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                v = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.split()
                self.peak = max(self.peak, int(v[0]))
            except Exception:  # noqa: BLE001 - a missing nvidia-smi leaves the peak at 0
                pass
            self.stop.wait(1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="write the variant config and run snakemake -n only")
    ap.add_argument("--cores", type=int, default=16)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    from ssd_math.config import load_config, validate

    cfg = variant_config(load_config(REPO / "config" / "rehearsal.yaml"), a.out.resolve())
    validate(cfg)
    cfgfile = a.out / "rehearsal-gpu.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(REPO),
        "--configfile",
        str(cfgfile),
        "--cores",
        str(a.cores),
        "--resources",
        "gpu=1",
    ]
    if a.dry_run:
        proc = subprocess.run(cmd + ["-n", "--quiet", "rules"], capture_output=True, text=True)
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return proc.returncode
    mem = GpuMemorySampler()
    mem.start()
    t0 = time.perf_counter()
    with open(a.out / "snakemake.log", "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    mem.stop.set()
    m = collect(Path(cfg["results"]))
    import torch

    summary = {
        "rc": rc,
        "wall_s": round(wall, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peak_gpu_mem_mib_nvidia_smi": mem.peak,
        **m,
    }
    for mod in ("vllm", "transformers", "fla", "causal_conv1d"):
        try:
            summary[mod] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            summary[mod] = None
    (a.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    (a.out / "plan_rates.yaml").write_text(yaml.safe_dump(plan_rates(m, None), sort_keys=False))
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    write_results_section(
        f"## GPU check (bench/gpu_check_rehearsal.sh): the rehearsal on {summary['gpu']}, vLLM {summary['vllm']}\n\n"
        f"CPU {cpu}. rc {rc}, wall {summary['wall_s']} s. Sampling: {m['sampling']}. Training: "
        f"{m['training']}. Peak GPU memory (nvidia-smi) {mem.peak} MiB. vLLM weight-name problems: "
        f"{ {k: len(v) for k, v in m['vllm_weight_problems'].items()} }. Rates of the tiny rehearsal "
        f"model: a check of the GPU plumbing, not the 4B model's throughput.\n"
    )
    print(json.dumps(summary, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
