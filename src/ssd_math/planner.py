"""Cost planner: every job's expected GPU-hours before a run, and expected vs measured after.

A job (one row per Snakemake job that needs a GPU; the lead's target functions build them)::

    {rule, name, kind: "sample"|"eval"|"train", model?, gpus,
     n_prompts, n_samples_per_prompt, mean_gen_tokens,      # sample / eval
     mean_prompt_tokens?,                                   # optional prefill work
     train_tokens, epochs?,                                 # train (tokens per epoch)
     startup_s?}                                            # optional fixed cost (model load)

The throughput table (config ``planner.throughput``), tokens per second **per GPU**, either flat
or keyed by model name (then a job's ``model`` picks the entry, ``"default"`` is the fallback)::

    generate_tokens_per_s_per_gpu: 2500     # decode tokens/s of a batched engine (vLLM)
    prefill_tokens_per_s_per_gpu: 40000     # optional; 0/absent = prefill not counted
    train_tokens_per_s_per_gpu: 3000        # SFT tokens/s incl. recompute (checkpointing)
    startup_s_per_job: 120                  # optional default of a job's startup_s

Arithmetic (all jobs): ``work_tokens / (per_gpu_rate * gpus) + startup_s`` = wall seconds,
``hours = seconds / 3600``, ``gpu_hours = hours * gpus``. Sample/eval work is
``n_prompts * n_samples_per_prompt * mean_gen_tokens`` generated tokens (plus prompt tokens at
the prefill rate when given); train work is ``train_tokens * epochs``. Linear scaling in
``gpus`` is the planner's assumption (data-parallel sampling is close to it; training with
FSDP is not, so measure and put the measured per-GPU rate into the table).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import config as sc
from . import layout
from .layout import BASE

KINDS = ("sample", "eval", "train")
THROUGHPUT_KEYS = ("generate_tokens_per_s_per_gpu", "train_tokens_per_s_per_gpu",
                   "prefill_tokens_per_s_per_gpu", "startup_s_per_job")
PLAN_COLUMNS = ("rule", "name", "kind", "model", "gpus", "n_prompts", "n_samples_per_prompt",
                "mean_gen_tokens", "gen_tokens", "prompt_tokens", "train_tokens", "work_tokens",
                "tokens_per_s_per_gpu", "startup_s", "hours", "gpu_hours")
# Snakemake's benchmark TSV header (snakemake/benchmark.py, BenchmarkRecord.get_header);
# --benchmark-extended appends jobid, rule_name, wildcards, params, threads, cpu_usage,
# resources, input_size_mb. max_* are MB, io_* MB, mean_load %, cpu_time s; "NA" when the
# job ended before the first sample; one row per repeat() run.
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in",
                     "io_out", "mean_load", "cpu_time")


class PlanError(ValueError):
    """A job or the throughput table is incomplete; the message names the job and the key."""


def _rates(throughput: Mapping, job: Mapping) -> Mapping:
    if any(k in throughput for k in THROUGHPUT_KEYS):
        return throughput
    model = job.get("model")
    if model in throughput:
        return throughput[model]
    if "default" in throughput:
        return throughput["default"]
    raise PlanError(f"job {job.get('name')!r}: no throughput entry for model {model!r} "
                    f"(have {sorted(throughput)}; add planner.throughput.{model} or .default)")


def _need(mapping: Mapping, key: str, what: str) -> float:
    v = mapping.get(key)
    if v is None:
        raise PlanError(f"{what}: missing {key!r}")
    v = float(v)
    if v < 0:
        raise PlanError(f"{what}: {key!r} must be >= 0, got {v}")
    return v


def plan(jobs: Iterable[Mapping], throughput: Mapping) -> list[dict]:
    """One row per job with its expected tokens, hours and GPU-hours (see the module doc)."""
    rows = []
    for job in jobs:
        name = job.get("name") or job.get("rule")
        what = f"job {name!r}"
        kind = job.get("kind")
        if kind not in KINDS:
            raise PlanError(f"{what}: kind must be one of {KINDS}, got {kind!r}")
        gpus = int(job.get("gpus") or 1)
        if gpus < 1:
            raise PlanError(f"{what}: gpus must be >= 1")
        rates = _rates(throughput, job)
        startup = float(job.get("startup_s", rates.get("startup_s_per_job", 0)) or 0)
        gen = prompt = train = 0.0
        if kind in ("sample", "eval"):
            n_p = _need(job, "n_prompts", what)
            k = float(job.get("n_samples_per_prompt", 1))
            gen = n_p * k * _need(job, "mean_gen_tokens", what)
            rate = _need(rates, "generate_tokens_per_s_per_gpu", f"throughput for {what}")
            seconds = gen / (rate * gpus)
            if job.get("mean_prompt_tokens") and rates.get("prefill_tokens_per_s_per_gpu"):
                prompt = n_p * k * float(job["mean_prompt_tokens"])
                seconds += prompt / (float(rates["prefill_tokens_per_s_per_gpu"]) * gpus)
            work = gen + prompt
        else:
            train = _need(job, "train_tokens", what) * float(job.get("epochs", 1))
            rate = _need(rates, "train_tokens_per_s_per_gpu", f"throughput for {what}")
            seconds = train / (rate * gpus)
            work = train
        if rate <= 0:
            raise PlanError(f"throughput for {what}: rate must be > 0")
        hours = (seconds + startup) / 3600.0
        rows.append({
            "rule": job.get("rule"), "name": name, "kind": kind, "model": job.get("model"),
            "gpus": gpus, "n_prompts": job.get("n_prompts"),
            "n_samples_per_prompt": job.get("n_samples_per_prompt"),
            "mean_gen_tokens": job.get("mean_gen_tokens"),
            "gen_tokens": int(gen), "prompt_tokens": int(prompt), "train_tokens": int(train),
            "work_tokens": int(work), "tokens_per_s_per_gpu": rate, "startup_s": startup,
            "hours": hours, "gpu_hours": hours * gpus,
            **{k: job[k] for k in ("disk_gb", "resume_gb") if job.get(k) is not None},
            **({"benchmark": job["benchmark"]} if job.get("benchmark") else {}),
        })
    return rows


def plan_totals(rows: Iterable[Mapping]) -> dict:
    """Totals over plan rows: ``jobs``, ``hours`` (sum of job wall hours, i.e. one job at a
    time), ``gpu_hours``, and the same split by kind (``by_kind``)."""
    rows = list(rows)
    by_kind: dict[str, dict] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"jobs": 0, "hours": 0.0, "gpu_hours": 0.0})
        k["jobs"] += 1
        k["hours"] += r["hours"]
        k["gpu_hours"] += r["gpu_hours"]
    return {"jobs": len(rows), "hours": sum(r["hours"] for r in rows),
            "gpu_hours": sum(r["gpu_hours"] for r in rows), "by_kind": by_kind,
            "disk_gb": sum(r.get("disk_gb") or 0.0 for r in rows),
            "resume_gb": max((r.get("resume_gb") or 0.0 for r in rows), default=0.0)}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def format_plan(rows: Iterable[Mapping], *, columns: Iterable[str] | None = None) -> str:
    """A fixed-width table of the plan rows with a totals line (by kind and overall). With
    measured columns (from :func:`merge_measured`) they are shown too."""
    rows = list(rows)
    if columns is None:
        columns = ["rule", "name", "kind", "gpus", "work_tokens", "tokens_per_s_per_gpu",
                   "hours", "gpu_hours"]
        if any(r.get("disk_gb") is not None for r in rows):
            columns += ["disk_gb", "resume_gb"]
        if any("measured_hours" in r for r in rows):
            columns += ["measured_hours", "measured_gpu_hours", "ratio", "max_rss_mb"]
    columns = list(columns)
    tot = plan_totals(rows)
    body = [[_fmt(r.get(c)) for c in columns] for r in rows]
    foot = []
    for kind, t in tot["by_kind"].items():
        line = {c: "" for c in columns}
        line.update({"rule": "total", "name": kind, "kind": f"{t['jobs']} jobs",
                     "hours": _fmt(t["hours"]), "gpu_hours": _fmt(t["gpu_hours"])})
        foot.append([line.get(c, "") for c in columns])
    line = {c: "" for c in columns}
    line.update({"rule": "TOTAL", "name": "", "kind": f"{tot['jobs']} jobs",
                 "hours": _fmt(tot["hours"]), "gpu_hours": _fmt(tot["gpu_hours"])})
    if "disk_gb" in columns:  # all model folders kept; resume states exist one job at a time
        line.update({"disk_gb": _fmt(tot["disk_gb"]), "resume_gb": _fmt(tot["resume_gb"])})
    if "measured_gpu_hours" in columns:
        mh = [r["measured_gpu_hours"] for r in rows if r.get("measured_gpu_hours") is not None]
        line["measured_gpu_hours"] = _fmt(sum(mh)) if mh else "-"
    foot.append([line.get(c, "") for c in columns])
    widths = [max(len(c), *(len(x[i]) for x in body + foot)) for i, c in enumerate(columns)]
    numeric = [all(re.fullmatch(r"[-\d,.]*", x[i] or "") for x in body) for i in range(len(columns))]

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([render(columns), sep, *map(render, body), sep, *map(render, foot)]) + "\n"


def plan_to_csv(rows: Iterable[Mapping], path: str | os.PathLike | None = None) -> str:
    """CSV text of the plan rows (all plan columns plus any measured ones); written atomically
    to ``path`` when given."""
    rows = list(rows)
    cols = list(PLAN_COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    text = buf.getvalue()
    if path is not None:
        from ssd_math.io import write_text

        write_text(path, text)
    return text


# ----------------------------------------------------------------------------------------------
# measured
# ----------------------------------------------------------------------------------------------


def _num(v: str | None) -> float | None:
    if v is None:
        return None
    v = v.strip()
    if v in ("", "NA", "-", "None"):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def read_benchmark(path: str | os.PathLike) -> dict:
    """Parse one Snakemake ``benchmark:`` file (TSV, or JSONL when the path ends in .jsonl).

    Returns ``{"n_runs", "s_mean", "s_max", "max_rss_mb", "cpu_time_s", "mean_load", "rows"}``
    (``rows`` are the raw per-run dicts; several with ``repeat()``). Raises ``ValueError``
    naming the file when the header lacks the ``s`` column or there is no data row.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        import json

        raw = [{k: (None if v is None else str(v)) for k, v in json.loads(line).items()}
               for line in text.splitlines() if line.strip()]
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"{path}: empty benchmark file")
        header = lines[0].split("\t")
        if "s" not in header:
            raise ValueError(f"{path}: not a Snakemake benchmark file (header {header[:4]})")
        raw = [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]
    if not raw:
        raise ValueError(f"{path}: benchmark file without a data row")
    secs = [x for x in (_num(r.get("s")) for r in raw) if x is not None]
    rss = [x for x in (_num(r.get("max_rss")) for r in raw) if x is not None]
    cpu = [x for x in (_num(r.get("cpu_time")) for r in raw) if x is not None]
    load = [x for x in (_num(r.get("mean_load")) for r in raw) if x is not None]
    return {"n_runs": len(raw), "s_mean": sum(secs) / len(secs) if secs else None,
            "s_max": max(secs) if secs else None, "max_rss_mb": max(rss) if rss else None,
            "cpu_time_s": sum(cpu) / len(cpu) if cpu else None,
            "mean_load": sum(load) / len(load) if load else None, "rows": raw}


def merge_measured(plan_rows: Iterable[Mapping],
                   benchmark_files: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike],
                   ) -> list[dict]:
    """Join Snakemake benchmark files to plan rows by job name.

    ``benchmark_files`` is ``{job name: path}``, or an iterable of paths matched by a plan
    row's ``benchmark`` path (when its job declared one) or else by the file's stem (``.../
    sample_base.tsv`` -> ``sample_base``). Adds ``measured_s`` (mean over repeats),
    ``measured_hours``, ``measured_gpu_hours`` (= measured hours * gpus: benchmark cannot see
    GPUs, the job's allocation is what it cost), ``ratio`` (measured / expected hours),
    ``max_rss_mb`` and ``n_runs``; rows without a file get ``None`` there.
    """
    if isinstance(benchmark_files, Mapping):
        by_name = {str(k): Path(v) for k, v in benchmark_files.items()}
        by_path: dict[str, Path] = {}
    else:
        paths = [Path(p) for p in benchmark_files]
        by_name = {p.name.split(".")[0]: p for p in paths}
        by_path = {os.path.normpath(str(p)): p for p in paths}
    out = []
    for r in plan_rows:
        r = dict(r)
        p = None
        if r.get("benchmark") and os.path.normpath(str(r["benchmark"])) in by_path:
            p = by_path[os.path.normpath(str(r["benchmark"]))]
        elif str(r.get("name")) in by_name:
            p = by_name[str(r["name"])]
        if p is not None and p.exists():
            b = read_benchmark(p)
            hours = b["s_mean"] / 3600.0 if b["s_mean"] is not None else None
            r.update({"measured_s": b["s_mean"], "measured_hours": hours,
                      "measured_gpu_hours": hours * r["gpus"] if hours is not None else None,
                      "ratio": hours / r["hours"] if hours is not None and r["hours"] else None,
                      "max_rss_mb": b["max_rss_mb"], "n_runs": b["n_runs"],
                      "benchmark_file": str(p)})
        else:
            r.update({"measured_s": None, "measured_hours": None, "measured_gpu_hours": None,
                      "ratio": None, "max_rss_mb": None, "n_runs": 0,
                      "benchmark_file": str(p) if p else None})
        out.append(r)
    return out


_REPO = Path(__file__).resolve().parents[2]
# ----------------------------------------------------------------------------------------------
# GPU counts (the rules' gpu resources)
# ----------------------------------------------------------------------------------------------

def read_accelerate_config(path: str | os.PathLike) -> dict:
    """An accelerate config file (a relative path that is not here resolves against the repo)."""
    p = Path(path)
    if not p.exists() and not p.is_absolute():
        p = _REPO / p
    with open(p, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def accelerate_gpus(path: str | os.PathLike) -> int:
    """GPUs an accelerate config uses: 0 with ``use_cpu``, else processes x machines."""
    acc = read_accelerate_config(path)
    if acc.get("use_cpu"):
        return 0
    return int(acc.get("num_processes", 1)) * int(acc.get("num_machines", 1))


# What `accelerate launch` puts in a one-process CPU run's environment beyond OMP_NUM_THREADS
# (accelerate.utils.launch.prepare_simple_launcher_cmd_env, accelerate 1.15; Snakemake already
# sets OMP_NUM_THREADS to the job's threads). tests/test_train.py checks it against that function.
SIMPLE_CPU_ENV = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"}


def train_launcher(path: str | os.PathLike, python: str = "python") -> str:
    """The shell command, without its arguments, that starts ``-m ssd_math.train`` under an
    accelerate config: ``accelerate launch --config_file <path>`` wherever the launcher does
    something (several processes or machines, a GPU, FSDP, mixed precision, dynamo); for a
    one-process CPU config the training process itself, started by ``python`` with the
    environment the launcher would give it (:data:`SIMPLE_CPU_ENV`). Why by hand: the launcher
    is a second Python process whose own imports cost seconds per training job, a job that holds
    every core it asked for meanwhile (and the default run has many short training jobs)."""
    import shlex

    acc = read_accelerate_config(path)
    simple = (acc.get("use_cpu") and str(acc.get("distributed_type", "NO")) == "NO"
              and int(acc.get("num_processes", 1)) == 1 and int(acc.get("num_machines", 1)) == 1
              and str(acc.get("mixed_precision", "no")) == "no" and not acc.get("dynamo_config"))
    if simple:
        env = " ".join(f"{k}={v}" for k, v in SIMPLE_CPU_ENV.items())
        return f"{env} {shlex.quote(python)} -m ssd_math.train"
    return f"accelerate launch --config_file {shlex.quote(str(path))} -m ssd_math.train"


def gpu_counts(cfg: dict) -> dict[str, int]:
    """``{"generate": n, "train": n}``: GPUs of one sampling/eval job and of one SFT job (the
    rules' ``gpu`` resources, rules/common.smk), of a validated config (defaults filled in).

    Generation on a cuda device (:func:`ssd_math.layout.device`): vLLM ->
    ``sampler.vllm.tensor_parallel_size`` (default 1), transformers -> 1; on the CPU (either
    backend: vLLM's CPU build included) 0. Training: the accelerate config of
    ``runtime.accelerate_config``.
    """
    sam = cfg["sampler"]
    if not layout.device(cfg).startswith("cuda"):
        gen = 0
    elif sam["backend"] == "vllm":
        gen = int(sam["vllm"].get("tensor_parallel_size", 1))  # vLLM's own default
    else:
        gen = 1
    return {"generate": gen, "train": accelerate_gpus(cfg["runtime"]["accelerate_config"])}


# ----------------------------------------------------------------------------------------------
# the jobs
# ----------------------------------------------------------------------------------------------

def _sizes(cfg: dict) -> tuple[int, dict[str, int]]:
    if cfg["data"]["kind"] == "synthetic":
        syn = cfg["data"]["synthetic"]
        return syn["n_train_prompts"], {"eval_main": syn["n_eval_main"], "eval_hard": syn["n_eval_hard"]}
    real = cfg["data"]["real"]
    budget = real["train"].get("budget")
    if not budget:
        raise ValueError("data.real.train.budget is null: the planner needs the pool size")
    return int(budget), {"eval_main": real["eval"]["main_size"], "eval_hard": real["eval"]["hard_size"]}


def _shard_len(n: int, shard: int, n_shards: int) -> int:
    return (n * (shard + 1)) // n_shards - (n * shard) // n_shards


def planned_jobs(cfg: dict, results: str | None = None, *, reuse: bool = True,
                 extra_arms: bool = False) -> list[dict]:
    """Every GPU job of the default DAG (what ``snakemake`` with no target builds): the job lists
    of :class:`ssd_math.layout.Layout`, the same the rules expand, with their benchmark paths.
    ``reuse=False``: as if no job reused another's file (Layout's dedupe off: the "before");
    ``extra_arms``: also the sampling and SFT jobs of every extra arm (sweeps, controls)."""
    if "planner" not in cfg:
        raise ValueError("the config has no 'planner' section (see config/real.yaml)")
    L = layout.Layout(cfg, results, reuse=reuse)
    ex = cfg["planner"]["expected"]
    gpus = gpu_counts(cfg)
    g_gen, g_train = max(gpus["generate"], 1), max(gpus["train"], 1)
    prompt = float(ex["prompt_tokens"])
    pool, sizes = _sizes(cfg)
    eval_mean = ex["eval_gen_fraction"] * int(cfg["eval"]["max_new_tokens"])
    startup = float(cfg["planner"]["throughput"].get("startup_s_per_job", 0))
    jobs: list[dict] = []

    def gen(rule, name, model, n_prompts, k, mean, bench, n_models=1):
        jobs.append({"rule": rule, "name": name, "kind": "sample" if rule == "sample_train_shard" else "eval",
                     "model": model, "gpus": g_gen, "n_prompts": n_prompts,
                     "n_samples_per_prompt": k, "mean_gen_tokens": round(mean, 1),
                     "mean_prompt_tokens": prompt, "startup_s": startup * n_models,
                     "benchmark": bench})

    for arm in (list(L.all_arms) if extra_arms else L.arms):
        s = sc.arm_sampling(cfg, arm)
        cap = s["max_new_tokens"]
        mean_all = ex["sample_gen_fraction"] * cap
        for job in (L.sample_jobs(arm) if L.data_arm(arm) == arm else []):  # else: another arm's data
            shard = job["shard"]
            gen("sample_train_shard", f"sample {arm} shard{shard}", BASE,
                _shard_len(pool, shard, L.n_shards), s["n"], mean_all, job["benchmark"])
        kept = ex["kept_fraction"] if L.all_arms[arm]["filter_length_stop"] else 1.0
        mean_kept = mean_all if kept >= 1.0 else max((mean_all - (1 - kept) * cap) / kept, 0.05 * cap)
        n_kept = pool * s["n"] * kept
        sft = sc.arm_sft(cfg, arm)
        jobs.append({"rule": "sft", "name": f"sft {arm}", "kind": "train", "model": arm,
                     "gpus": g_train, "n_prompts": round(n_kept), "n_samples_per_prompt": 1,
                     "mean_gen_tokens": round(mean_kept, 1),
                     "train_tokens": round(n_kept * min(prompt + mean_kept, sft["max_len"])),
                     "epochs": sft["epochs"], "startup_s": startup,
                     **sft_disk(cfg, len(L.ckpts)),
                     "benchmark": L.sft_job(arm)["benchmark"]})
    names = {"grid": "grid {model} {evalset}", "passk": "passk {model} {evalset} T{t}",
             "checkpoints": "checkpoints {model} {evalset}", "sweep": "sweep {model} {evalset}"}
    for job in L.generation_jobs():
        conds = job["conditions"]
        gen(job["rule"], names[job["family"]].format(**job), job["model"],
            sizes[job["evalset"]] * len(conds), conds[0]["sampling"]["n"], eval_mean, job["benchmark"],
            n_models=len(conds) if job["family"] == "checkpoints" else 1)
    return jobs


_DTYPE_BYTES = {None: 4, "float32": 4, "bfloat16": 2, "float16": 2}


def sft_disk(cfg: dict, n_folders: int) -> dict:
    """Disk of one SFT job (``planner.expected.model_params`` parameters): ``disk_gb`` = its model
    folders (the checkpoints and ``final``) in the served dtype (:func:`ssd_math.config.serve_dtype`)
    and ``resume_gb`` = its resume state while it trains (fp32 weights + AdamW moments, 12 bytes
    per parameter; removed when the job ends). Empty without ``model_params``."""
    params = cfg["planner"]["expected"].get("model_params")
    if not params:
        return {}
    per = _DTYPE_BYTES[sc.serve_dtype(cfg)]
    return {"disk_gb": n_folders * params * per / 1e9, "resume_gb": 12 * params / 1e9}


def build_plan(cfg: dict, results: str | None = None, **kw) -> list[dict]:
    return plan(planned_jobs(cfg, results, **kw), cfg["planner"]["throughput"])


def reuse_summary(cfg: dict, results: str | None = None) -> str:
    """GPU-hours and disk without and with the Layout's reuse of identical generations and data
    (default DAG, and with every extra arm built), and the jobs the reuse removed."""
    lines = ["# reuse of identical jobs (ssd_math.layout: data_arm, final_from_grid, sweep_from_grid):"]
    for label, extra in (("default DAG", False), ("default + every extra arm", True)):
        before = build_plan(cfg, results, reuse=False, extra_arms=extra)
        after = build_plan(cfg, results, extra_arms=extra)
        tb, ta = plan_totals(before), plan_totals(after)
        gone = sorted(set(r["name"] for r in before) - set(r["name"] for r in after))
        lines.append(f"#   {label}: {tb['jobs']} -> {ta['jobs']} GPU jobs, {tb['gpu_hours']:,.1f} -> "
                     f"{ta['gpu_hours']:,.1f} GPU-hours, model folders {tb['disk_gb']:,.0f} GB"
                     f" (+ {tb['resume_gb']:,.0f} GB resume state while training)")
        if gone:
            lines.append(f"#     jobs gone: {', '.join(gone)}")
    return "\n".join(lines) + "\n"


def describe(cfg: dict) -> str:
    """The assumptions, printed above the table."""
    tp, ex, g = cfg["planner"]["throughput"], cfg["planner"]["expected"], gpu_counts(cfg)
    return (f"# cost plan: {cfg['experiment']} (config results={cfg['results']})\n"
            f"# throughput per GPU: generate {tp['generate_tokens_per_s_per_gpu']:,} tok/s, "
            f"prefill {tp.get('prefill_tokens_per_s_per_gpu', 0):,} tok/s, "
            f"train {tp['train_tokens_per_s_per_gpu']:,} tok/s, startup {tp.get('startup_s_per_job', 0)} s/job\n"
            f"# expected: prompt {ex['prompt_tokens']} tok, sample mean {ex['sample_gen_fraction']:.0%} of cap, "
            f"eval mean {ex['eval_gen_fraction']:.0%} of cap, kept {ex['kept_fraction']:.0%}\n"
            f"# GPUs per job: generate {g['generate']}, train {g['train']}; hours = wall hours of "
            f"one job, gpu_hours = hours x gpus; extra_arms are not in the plan until targeted\n")




# ----------------------------------------------------------------------------------------------
# SFT memory (docs/memory_plan.md; checked against measured peaks by bench/bench_memory.py)
# ----------------------------------------------------------------------------------------------

# Qwen3.5-4B's text model (docs/memory_plan.md "Model dimensions"; check against the pinned
# checkpoint's config.json before the real run).
QWEN35_4B_TEXT = {"hidden_size": 2560, "num_hidden_layers": 32, "intermediate_size": 9216,
                  "vocab_size": 248320, "num_attention_heads": 16, "num_key_value_heads": 4,
                  "head_dim": 256, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
                  "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                  "linear_conv_kernel_dim": 4, "tie_word_embeddings": True,
                  "full_attention_interval": 4}
H100_BYTES = 85.5e9      # "80 GB" H100: 79.6 GiB (torch.cuda.mem_get_info on an idle card)
CUDA_RESERVE = 3.0e9     # CUDA context, cuBLAS/Triton workspaces and allocator fragmentation


def text_config(shape: Mapping):
    """A transformers Qwen3.5 text config of ``shape`` (keys of :data:`QWEN35_4B_TEXT`), with
    Qwen3.5's layer mix (every ``full_attention_interval``-th layer full attention)."""
    from transformers import Qwen3_5TextConfig

    shape = dict(shape)
    n, every = shape["num_hidden_layers"], shape.pop("full_attention_interval", 4)
    types = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    return Qwen3_5TextConfig(**shape, layer_types=types, max_position_embeddings=131072,
                             pad_token_id=0, eos_token_id=1, bos_token_id=None)


def model_sizes(shape: Mapping) -> dict:
    """Parameter counts of a Qwen3.5 text model of ``shape``, counted on the meta device (no
    memory): ``params`` (tied embedding once), ``embedding`` (vocab x hidden), ``layer_max``
    (the largest decoder layer: one FSDP unit)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text_config(shape))
    layers = model.model.layers
    return {"params": sum(p.numel() for p in model.parameters()),
            "embedding": model.get_input_embeddings().weight.numel(),
            "layer_max": max(sum(p.numel() for p in m.parameters()) for m in layers)}


def _fla_gdn_saves():
    """A stand-in for flash-linear-attention's chunked gated delta rule that saves for backward
    what fla-core 0.6.0's ``ChunkGatedDeltaRuleFunction.forward`` saves
    (fla/ops/gated_delta_rule/chunk.py:310: q and k l2-normalised with their rstd, v, g, beta and
    the per-chunk matrix A, tokens x heads x 64 in fp32; w, u and the states are recomputed in its
    backward). Its output is zeros: only the saved bytes are counted."""
    import torch

    class Saves(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, g, beta):
            b, t, h, _ = v.shape
            f32 = torch.float32
            ctx.save_for_backward(q.clone(), q.new_empty((b, t, h), dtype=f32), k.clone(),
                                  k.new_empty((b, t, h), dtype=f32), v, g.to(f32).clone(), beta,
                                  v.new_empty((b, t, h, 64), dtype=f32))
            return torch.zeros_like(v)

        @staticmethod
        def backward(ctx, grad):
            return (None,) * 5

    def rule(query, key, value, g, beta, **_kw):
        return Saves.apply(query, key, value, g, beta), None

    return rule


def layer_saved_bytes(shape: Mapping, mixed_precision: bool = True,
                      kernels: str = "reference", lengths: tuple[int, int] = (128, 256)) -> dict:
    """What one decoder layer keeps for its backward: ``{"fixed": bytes, "per_token": bytes}``,
    the larger of a Gated DeltaNet and a full-attention layer of ``shape``. Counted
    (``saved_tensors_hooks``, parameters excluded) on one forward at each of two ``lengths`` on
    the CPU under bf16 autocast with SDPA attention, and split into a part that does not grow with
    the length (the uncached autocast's bf16 copies of the layer's weights) and one per token.
    That is what one recomputed layer holds in backward under gradient checkpointing.
    ``kernels``: "reference" = transformers' PyTorch chunked delta rule (what runs without
    flash-linear-attention, e.g. on the CPU); "fla" = what flash-linear-attention's kernel saves
    instead (:func:`_fla_gdn_saves`), the GPU's."""
    import torch
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    if kernels not in ("reference", "fla"):
        raise ValueError(f"kernels must be 'reference' or 'fla', got {kernels!r}")
    cfg = text_config(shape)
    cfg._attn_implementation = "sdpa"
    types = cfg.layer_types
    best = {"fixed": 0.0, "per_token": 0.0}
    orig = Q.torch_chunk_gated_delta_rule
    try:
        if kernels == "fla":
            Q.torch_chunk_gated_delta_rule = _fla_gdn_saves()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for kind in ("linear_attention", "full_attention"):
                if kind not in types:
                    continue
                layer = Q.Qwen3_5DecoderLayer(cfg, types.index(kind)).train()
                params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
                saved = []
                for tokens in lengths:
                    x = torch.randn(1, tokens, cfg.hidden_size,
                                    dtype=torch.bfloat16 if mixed_precision else torch.float32)
                    pos = torch.arange(tokens)[None]
                    pe = Q.Qwen3_5TextRotaryEmbedding(cfg)(x, pos)
                    seen: dict[int, int] = {}

                    def pack(t, seen=seen):
                        st = t.untyped_storage()
                        if st.data_ptr() not in params:
                            seen[st.data_ptr()] = st.nbytes()
                        return t

                    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                            torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision):
                        out = layer(x, position_embeddings=pe, attention_mask=None, position_ids=pos)
                    saved.append(sum(seen.values()))
                    del out
                per_token = (saved[1] - saved[0]) / (lengths[1] - lengths[0])
                fixed = max(0.0, saved[0] - per_token * lengths[0])
                if fixed + per_token * 32768 > best["fixed"] + best["per_token"] * 32768:
                    best = {"fixed": fixed, "per_token": per_token}
    finally:
        Q.torch_chunk_gated_delta_rule = orig
    return best


def sft_memory(shape: Mapping, tokens: int, *, processes: int = 1, micro_batch: int = 1,
               chunk_tokens: int = 1024, mixed_precision: bool = True,
               host_is_device: bool = False, instrumented: bool = True,
               sizes: Mapping | None = None, layer: Mapping | None = None,
               kernels: str = "reference") -> dict:
    """Peak memory (bytes) of one training process of :mod:`ssd_math.train` at ``tokens`` per
    sequence, by term (docs/memory_plan.md lists where each is allocated, file:line).

    ``processes`` > 1 is FSDP2 over that many GPUs (weights, gradients and AdamW state sharded;
    activations not). ``host_is_device``: the CPU, where the weight-change tracker's host buffer
    is the same memory. The peak is reached in a micro-batch after the first of a step (the
    gradients are then whole) in the backward of the last layer: every checkpointed layer input
    still held, plus the larger of the chunked loss's and one recomputed layer's working set."""
    sz = dict(sizes or model_sizes(shape))
    lay = layer or layer_saved_bytes(shape, mixed_precision=mixed_precision, kernels=kernels)
    P, E, Pl = sz["params"], sz["embedding"], sz["layer_max"]
    H, L, V = (shape[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
    n, T = max(1, processes), tokens * micro_batch
    cb = 2 if mixed_precision else 4        # bytes of an activation in the compute dtype
    c = min(chunk_tokens, tokens) * micro_batch if chunk_tokens else T
    terms = {
        "weights_fp32": 4 * P / n,
        "grads_fp32": 4 * P / n,
        "adamw_fp32": 8 * P / n,
        "checkpointed_inputs": L * T * H * cb,
        "hidden_out_and_grad": T * H * (cb + 4),
        # one loss chunk: logits in the compute dtype and in fp32, the fp32 log-softmax grad and
        # the compute-dtype logits grad; under autocast the head weight's bf16 copy and its grad
        "loss_chunk": c * V * (cb + 4 + 4 + cb) + (2 * E * 2 if mixed_precision else 0),
        # one recomputed layer in backward: what it saves for its own backward (its weights' bf16
        # copies and its activations)
        "layer_recompute": lay["fixed"] + T * lay["per_token"],
    }
    if n > 1:
        # FSDP2: this and the prefetched next layer gathered in the compute dtype, their
        # unsharded gradients before the reduce-scatter; the root unit (norm + tied embedding)
        # stays gathered
        terms["fsdp_gathered"] = 2 * Pl * (cb + 4) + E * cb
    if instrumented and host_is_device:
        terms["tracker_host_copy"] = 2 * P  # bf16 stored values before the step (host memory)
    peak = (terms["weights_fp32"] + terms["grads_fp32"] + terms["adamw_fp32"]
            + terms["checkpointed_inputs"] + terms["hidden_out_and_grad"]
            + max(terms["loss_chunk"], terms["layer_recompute"])
            + terms.get("fsdp_gathered", 0) + terms.get("tracker_host_copy", 0))
    return {"peak": peak, "terms": terms, "sizes": sz, "layer": dict(lay)}


def max_fitting_tokens(shape: Mapping, capacity: float = H100_BYTES - CUDA_RESERVE,
                       step: int = 1024, **kw) -> int:
    """The longest sequence (a multiple of ``step``) whose :func:`sft_memory` peak fits
    ``capacity`` bytes; 0 when none does."""
    sizes = kw.pop("sizes", None) or model_sizes(shape)
    if kw.get("layer") is None:
        kw["layer"] = layer_saved_bytes(shape, mixed_precision=kw.get("mixed_precision", True),
                                        kernels=kw.get("kernels", "reference"))
    best, t = 0, step
    while t <= 1 << 20 and sft_memory(shape, t, sizes=sizes, **kw)["peak"] <= capacity:
        best, t = t, t + step
    return best
