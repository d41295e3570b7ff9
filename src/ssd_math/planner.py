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

from . import derive, layout
from .io import read_benchmark, write_text
from .launcher import gpu_counts
from .layout import BASE

KINDS = ("sample", "eval", "train")
THROUGHPUT_KEYS = (
    "generate_tokens_per_s_per_gpu",
    "train_tokens_per_s_per_gpu",
    "prefill_tokens_per_s_per_gpu",
    "startup_s_per_job",
)
PLAN_COLUMNS = (
    "rule",
    "name",
    "kind",
    "model",
    "gpus",
    "n_prompts",
    "n_samples_per_prompt",
    "mean_gen_tokens",
    "gen_tokens",
    "prompt_tokens",
    "train_tokens",
    "work_tokens",
    "tokens_per_s_per_gpu",
    "startup_s",
    "hours",
    "gpu_hours",
)


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
    raise PlanError(
        f"job {job.get('name')!r}: no throughput entry for model {model!r} "
        f"(have {sorted(throughput)}; add planner.throughput.{model} or .default)"
    )


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
        rows.append(
            {
                "rule": job.get("rule"),
                "name": name,
                "kind": kind,
                "model": job.get("model"),
                "gpus": gpus,
                "n_prompts": job.get("n_prompts"),
                "n_samples_per_prompt": job.get("n_samples_per_prompt"),
                "mean_gen_tokens": job.get("mean_gen_tokens"),
                "gen_tokens": int(gen),
                "prompt_tokens": int(prompt),
                "train_tokens": int(train),
                "work_tokens": int(work),
                "tokens_per_s_per_gpu": rate,
                "startup_s": startup,
                "hours": hours,
                "gpu_hours": hours * gpus,
                **{k: job[k] for k in ("disk_gb", "resume_gb") if job.get(k) is not None},
                **({"benchmark": job["benchmark"]} if job.get("benchmark") else {}),
            }
        )
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
    return {
        "jobs": len(rows),
        "hours": sum(r["hours"] for r in rows),
        "gpu_hours": sum(r["gpu_hours"] for r in rows),
        "by_kind": by_kind,
        "disk_gb": sum(r.get("disk_gb") or 0.0 for r in rows),
        "resume_gb": max((r.get("resume_gb") or 0.0 for r in rows), default=0.0),
    }


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
        columns = ["rule", "name", "kind", "gpus", "work_tokens", "tokens_per_s_per_gpu", "hours", "gpu_hours"]
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
        line.update(
            {
                "rule": "total",
                "name": kind,
                "kind": f"{t['jobs']} jobs",
                "hours": _fmt(t["hours"]),
                "gpu_hours": _fmt(t["gpu_hours"]),
            }
        )
        foot.append([line.get(c, "") for c in columns])
    line = {c: "" for c in columns}
    line.update(
        {
            "rule": "TOTAL",
            "name": "",
            "kind": f"{tot['jobs']} jobs",
            "hours": _fmt(tot["hours"]),
            "gpu_hours": _fmt(tot["gpu_hours"]),
        }
    )
    if "disk_gb" in columns:  # all model folders kept; resume states exist one job at a time
        line.update({"disk_gb": _fmt(tot["disk_gb"]), "resume_gb": _fmt(tot["resume_gb"])})
    if "measured_gpu_hours" in columns:
        mh = [r["measured_gpu_hours"] for r in rows if r.get("measured_gpu_hours") is not None]
        line["measured_gpu_hours"] = _fmt(sum(mh)) if mh else "-"
    foot.append([line.get(c, "") for c in columns])
    widths = [max(len(c), *(len(x[i]) for x in body + foot)) for i, c in enumerate(columns)]
    numeric = [all(re.fullmatch(r"[-\d,.]*", x[i] or "") for x in body) for i in range(len(columns))]

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

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
        write_text(path, text)
    return text


# ----------------------------------------------------------------------------------------------
# measured
# ----------------------------------------------------------------------------------------------


def merge_measured(
    plan_rows: Iterable[Mapping],
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
            r.update(
                {
                    "measured_s": b["s_mean"],
                    "measured_hours": hours,
                    "measured_gpu_hours": hours * r["gpus"] if hours is not None else None,
                    "ratio": hours / r["hours"] if hours is not None and r["hours"] else None,
                    "max_rss_mb": b["max_rss_mb"],
                    "n_runs": b["n_runs"],
                    "benchmark_file": str(p),
                }
            )
        else:
            r.update(
                {
                    "measured_s": None,
                    "measured_hours": None,
                    "measured_gpu_hours": None,
                    "ratio": None,
                    "max_rss_mb": None,
                    "n_runs": 0,
                    "benchmark_file": str(p) if p else None,
                }
            )
        out.append(r)
    return out


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


def planned_jobs(cfg: dict, results: str | None = None, *, reuse: bool = True, extra_arms: bool = False) -> list[dict]:
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

    # one engine start per job: a checkpoints job swaps its checkpoints' weights inside one engine
    # (ssd_math.vllm_sampler.VLLMSampler.load_model: reload_weights), a cost the start dominates
    def gen(rule, name, model, n_prompts, k, mean, bench):
        jobs.append(
            {
                "rule": rule,
                "name": name,
                "kind": "sample" if rule == "sample_train_shard" else "eval",
                "model": model,
                "gpus": g_gen,
                "n_prompts": n_prompts,
                "n_samples_per_prompt": k,
                "mean_gen_tokens": round(mean, 1),
                "mean_prompt_tokens": prompt,
                "startup_s": startup,
                "benchmark": bench,
            }
        )

    for arm in list(L.all_arms) if extra_arms else L.arms:
        s = derive.arm_sampling(cfg, arm)
        cap = s.max_new_tokens
        mean_all = ex["sample_gen_fraction"] * cap
        for job in L.sample_jobs(arm) if L.data_arm(arm) == arm else []:  # else: another arm's data
            shard = job["shard"]
            gen(
                "sample_train_shard",
                f"sample {arm} shard{shard}",
                BASE,
                _shard_len(pool, shard, L.n_shards),
                s.n,
                mean_all,
                job["benchmark"],
            )
        kept = ex["kept_fraction"] if L.all_arms[arm]["filter_length_stop"] else 1.0
        mean_kept = mean_all if kept >= 1.0 else max((mean_all - (1 - kept) * cap) / kept, 0.05 * cap)
        n_kept = pool * s.n * kept
        sft = derive.arm_sft(cfg, arm)
        jobs.append(
            {
                "rule": "sft",
                "name": f"sft {arm}",
                "kind": "train",
                "model": arm,
                "gpus": g_train,
                "n_prompts": round(n_kept),
                "n_samples_per_prompt": 1,
                "mean_gen_tokens": round(mean_kept, 1),
                "train_tokens": round(n_kept * min(prompt + mean_kept, sft["max_len"])),
                "epochs": sft["epochs"],
                "startup_s": startup,
                **sft_disk(cfg, len(L.ckpts)),
                "benchmark": L.sft_job(arm)["benchmark"],
            }
        )
    names = {
        "grid": "grid {model} {evalset}",
        "passk": "passk {model} {evalset} T{t}",
        "checkpoints": "checkpoints {model} {evalset}",
        "sweep": "sweep {model} {evalset}",
    }
    for job in L.generation_jobs():
        conds = job["conditions"]
        gen(
            job["rule"],
            names[job["family"]].format(**job),
            job["model"],
            sizes[job["evalset"]] * len(conds),
            derive.condition_sampling(cfg, conds[0]["condition"]).n,
            eval_mean,
            job["benchmark"],
        )
    return jobs


_DTYPE_BYTES = {None: 4, "float32": 4, "bfloat16": 2, "float16": 2}


def sft_disk(cfg: dict, n_folders: int) -> dict:
    """Disk of one SFT job (``planner.expected.model_params`` parameters): ``disk_gb`` = its model
    folders (the checkpoints and ``final``) in the served dtype (:func:`ssd_math.derive.serve_dtype`)
    and ``resume_gb`` = its resume state while it trains (fp32 weights + AdamW moments, 12 bytes
    per parameter; removed when the job ends). Empty without ``model_params``."""
    params = cfg["planner"]["expected"].get("model_params")
    if not params:
        return {}
    per = _DTYPE_BYTES[derive.serve_dtype(cfg)]
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
        lines.append(
            f"#   {label}: {tb['jobs']} -> {ta['jobs']} GPU jobs, {tb['gpu_hours']:,.1f} -> "
            f"{ta['gpu_hours']:,.1f} GPU-hours, model folders {tb['disk_gb']:,.0f} GB"
            f" (+ {tb['resume_gb']:,.0f} GB resume state while training)"
        )
        if gone:
            lines.append(f"#     jobs gone: {', '.join(gone)}")
    return "\n".join(lines) + "\n"


def describe(cfg: dict) -> str:
    """The assumptions, printed above the table."""
    tp, ex, g = cfg["planner"]["throughput"], cfg["planner"]["expected"], gpu_counts(cfg)
    return (
        f"# cost plan: {cfg['experiment']} (config results={cfg['results']})\n"
        f"# throughput per GPU: generate {tp['generate_tokens_per_s_per_gpu']:,} tok/s, "
        f"prefill {tp.get('prefill_tokens_per_s_per_gpu', 0):,} tok/s, "
        f"train {tp['train_tokens_per_s_per_gpu']:,} tok/s, startup {tp.get('startup_s_per_job', 0)} s/job\n"
        f"# expected: prompt {ex['prompt_tokens']} tok, sample mean {ex['sample_gen_fraction']:.0%} of cap, "
        f"eval mean {ex['eval_gen_fraction']:.0%} of cap, kept {ex['kept_fraction']:.0%}\n"
        f"# GPUs per job: generate {g['generate']}, train {g['train']}; hours = wall hours of "
        f"one job, gpu_hours = hours x gpus; extra_arms are not in the plan until targeted\n"
    )
