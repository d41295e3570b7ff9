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

from . import config as sc
from . import layout
from .io import read_benchmark, write_text
from .launcher import gpu_counts
from .layout import BASE

KINDS = ("sample", "eval", "train")
THROUGHPUT_KEYS = ("generate_tokens_per_s_per_gpu", "train_tokens_per_s_per_gpu",
                   "prefill_tokens_per_s_per_gpu", "startup_s_per_job")
PLAN_COLUMNS = ("rule", "name", "kind", "model", "gpus", "n_prompts", "n_samples_per_prompt",
                "mean_gen_tokens", "gen_tokens", "prompt_tokens", "train_tokens", "work_tokens",
                "tokens_per_s_per_gpu", "startup_s", "hours", "gpu_hours")


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
        write_text(path, text)
    return text


# ----------------------------------------------------------------------------------------------
# measured
# ----------------------------------------------------------------------------------------------


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

    # one engine start per job: a checkpoints job swaps its checkpoints' weights inside one engine
    # (ssd_math.vllm_sampler.VLLMSampler.load_model: reload_weights), a cost the start dominates
    def gen(rule, name, model, n_prompts, k, mean, bench):
        jobs.append({"rule": rule, "name": name, "kind": "sample" if rule == "sample_train_shard" else "eval",
                     "model": model, "gpus": g_gen, "n_prompts": n_prompts,
                     "n_samples_per_prompt": k, "mean_gen_tokens": round(mean, 1),
                     "mean_prompt_tokens": prompt, "startup_s": startup,
                     "benchmark": bench})

    for arm in (list(L.all_arms) if extra_arms else L.arms):
        s = sc.arm_sampling(cfg, arm)
        cap = s.max_new_tokens
        mean_all = ex["sample_gen_fraction"] * cap
        for job in (L.sample_jobs(arm) if L.data_arm(arm) == arm else []):  # else: another arm's data
            shard = job["shard"]
            gen("sample_train_shard", f"sample {arm} shard{shard}", BASE,
                _shard_len(pool, shard, L.n_shards), s.n, mean_all, job["benchmark"])
        kept = ex["kept_fraction"] if L.all_arms[arm]["filter_length_stop"] else 1.0
        mean_kept = mean_all if kept >= 1.0 else max((mean_all - (1 - kept) * cap) / kept, 0.05 * cap)
        n_kept = pool * s.n * kept
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
            sizes[job["evalset"]] * len(conds), sc.condition_sampling(cfg, conds[0]["condition"]).n,
            eval_mean, job["benchmark"])
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
H200_BYTES = 149.0e9     # "141 GB" H200: about 139 GiB free on an idle card
CUDA_RESERVE = 3.0e9     # CUDA context, cuBLAS/Triton workspaces and allocator fragmentation
# What a training GPU must keep free beyond the predicted peak (the config check refuses less):
# the CUDA context, cuBLAS/Triton workspaces and allocator fragmentation (CUDA_RESERVE), plus what
# the formula cannot see until a GPU has measured it (kernels' transient buffers, the allocator's
# rounding). docs/memory_plan.md.
GPU_HEADROOM = 8.0e9
# The formula against the measured peak of the same training code on the CPU at scaled shapes
# (bench/bench_memory.py, bench/RESULTS.md "SFT memory"): the worst ratio predicted / measured
# with checkpoint_sublayers on. The static terms (weights, gradients, AdamW) are exact counts, so
# what the formula misses is activations: sft_memory adds activations x (1 / ratio - 1).
FORMULA_MEASURED_RATIO = 0.873
# flash-linear-attention's chunk size (fla-core 0.6.0, fla/ops/gated_delta_rule/chunk.py: 64)
FLA_CHUNK = 64

# Qwen3.5-4B's sizes and what one of its decoder layers saves for backward with
# flash-linear-attention's kernel, as planner.model_sizes and layer_saved_bytes(QWEN35_4B_TEXT,
# kernels="fla"[, sublayers=True]) count them (35 s on a CPU with torch: stored here so the config
# check is arithmetic; tests/test_planner.py recounts them).
QWEN35_4B_SIZES = {"params": 4205751296, "embedding": 635699200, "layer_max": 112923840}
QWEN35_4B_LAYER_FLA = {"fixed": 225896704.0, "per_token": 271172.0}
QWEN35_4B_LAYER_FLA_SUBLAYERS = {"sublayers": {
    "linear_attention": {"held": {"fixed": 0.0, "per_token": 15360.0}, "parts": {
        "linear_attn": {"fixed": 84328704.0, "per_token": 156480.0},
        "mlp": {"fixed": 141557760.0, "per_token": 73728.0},
        "input_layernorm": {"fixed": 0.0, "per_token": 10240.0},
        "post_attention_layernorm": {"fixed": 10240.0, "per_token": 20484.0}}},
    "full_attention": {"held": {"fixed": 0.0, "per_token": 15368.0}, "parts": {
        "self_attn": {"fixed": 73402368.0, "per_token": 86160.0},
        "mlp": {"fixed": 141557760.0, "per_token": 73728.0},
        "input_layernorm": {"fixed": 0.0, "per_token": 10240.0},
        "post_attention_layernorm": {"fixed": 10240.0, "per_token": 20484.0}}}}}


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
                      kernels: str = "reference", lengths: tuple[int, int] = (128, 256),
                      sublayers: bool = False) -> dict:
    """What one decoder layer keeps for its backward, counted (``saved_tensors_hooks``, parameters
    excluded) on one forward at each of two ``lengths`` on the CPU under bf16 autocast with SDPA
    attention, split into a part that does not grow with the length (the uncached autocast's
    bf16 copies of the weights) and one per token. That is what one recomputed layer holds in
    backward under gradient checkpointing.

    Without ``sublayers``: ``{"fixed": bytes, "per_token": bytes}``, the larger (at 32,768
    tokens) of a Gated DeltaNet and a full-attention layer of ``shape``. With ``sublayers``
    (:func:`ssd_math.train.checkpoint_sublayers`: each part of the layer under its own nested
    checkpoint): per layer kind, what the recompute holds throughout (``held``: the parts' inputs,
    which their checkpoints keep to recompute from; the layer's own input, a checkpointed input,
    and the rotary tables, shared by all layers, excluded) and what each part saves for its own
    backward (``parts``, its inputs excluded: they are held), as
    ``{"sublayers": {kind: {"held": {"fixed", "per_token"}, "parts": {name: {"fixed",
    "per_token"}}}}}``. :func:`layer_recompute_bytes` turns either into bytes at a length.
    ``kernels``: "reference" = transformers' PyTorch chunked delta rule (what runs without
    flash-linear-attention, e.g. on the CPU); "fla" = what flash-linear-attention's kernel saves
    instead (:func:`_fla_gdn_saves`), the GPU's."""
    import torch
    import torch.utils._pytree
    from transformers.models.qwen3_5 import modeling_qwen3_5 as Q

    if kernels not in ("reference", "fla"):
        raise ValueError(f"kernels must be 'reference' or 'fla', got {kernels!r}")
    cfg = text_config(shape)
    cfg._attn_implementation = "sdpa"
    types = cfg.layer_types

    def storages(tree) -> set:
        leaves = torch.utils._pytree.tree_leaves(tree)
        return {t.untyped_storage().data_ptr() for t in leaves if isinstance(t, torch.Tensor)}

    def split(saved: list[float]) -> dict:
        per_token = (saved[1] - saved[0]) / (lengths[1] - lengths[0])
        return {"fixed": max(0.0, saved[0] - per_token * lengths[0]), "per_token": per_token}

    def count(layer, tokens: int, parts: dict) -> tuple[int, dict, int]:
        """Bytes saved by one forward (the layer input and parameters excluded); per part of
        ``parts`` ({name: module}) with each part's own inputs excluded; and the parts' inputs."""
        params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
        x = torch.randn(1, tokens, cfg.hidden_size,
                        dtype=torch.bfloat16 if mixed_precision else torch.float32)
        pos = torch.arange(tokens)[None]
        pe = Q.Qwen3_5TextRotaryEmbedding(cfg)(x, pos)
        skip = params | storages(x)
        seen: dict[int, int] = {}
        by_part: dict[str, dict[int, int]] = {n: {} for n in parts}
        inputs: dict[int, int] = {}
        state: dict = {"part": None, "inputs": set()}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in skip:
                seen[st.data_ptr()] = st.nbytes()
                if state["part"] is not None and st.data_ptr() not in state["inputs"]:
                    by_part[state["part"]][st.data_ptr()] = st.nbytes()
            return t

        hooks = []
        for name, m in parts.items():
            def pre(_m, args, kwargs, name=name):
                state.update(part=name, inputs=storages((args, kwargs)))
                for t in torch.utils._pytree.tree_leaves((args, kwargs)):
                    st = t.untyped_storage() if isinstance(t, torch.Tensor) else None
                    if st is not None and st.data_ptr() not in skip | storages(pe):
                        inputs[st.data_ptr()] = st.nbytes()
            hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            hooks.append(m.register_forward_hook(lambda *_a: state.update(part=None, inputs=set())))
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision):
                out = layer(x, position_embeddings=pe, attention_mask=None, position_ids=pos)
            del out
        finally:
            for h in hooks:
                h.remove()
        return (sum(seen.values()), {n: sum(d.values()) for n, d in by_part.items()},
                sum(inputs.values()))

    best = {"fixed": 0.0, "per_token": 0.0}
    nested: dict = {}
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
                parts = dict(layer.named_children())
                runs = [count(layer, n, parts) for n in lengths]
                whole = split([r[0] for r in runs])
                if whole["fixed"] + whole["per_token"] * 32768 > best["fixed"] + best["per_token"] * 32768:
                    best = whole
                if sublayers:
                    nested[kind] = {"held": split([r[2] for r in runs]),
                                    "parts": {n: split([r[1][n] for r in runs]) for n in parts}}
    finally:
        Q.torch_chunk_gated_delta_rule = orig
    return {"sublayers": nested} if sublayers else best


def layer_recompute_bytes(layer: Mapping, tokens: int) -> float:
    """What one recomputed decoder layer holds at the peak of its backward, at ``tokens`` tokens
    per micro-batch, from :func:`layer_saved_bytes`: the whole layer's saves, or with sublayers the
    parts' inputs plus the largest part's saves (each part is recomputed and freed in turn),
    for the layer kind where that is larger."""
    def at(d: Mapping) -> float:
        return d["fixed"] + tokens * d["per_token"]

    if "sublayers" not in layer:
        return at(layer)
    return max(at(k["held"]) + max(at(p) for p in k["parts"].values())
               for k in layer["sublayers"].values())


def sublayer_recompute_flops(shape: Mapping, tokens: int) -> dict:
    """The compute price of :func:`ssd_math.train.checkpoint_sublayers`, in forward FLOPs per
    trained token at ``tokens`` per sequence: ``step`` = one training step with per-layer
    checkpointing and the chunked loss (forward, recompute, backward = 2 forwards, for the body
    and the output layer alike), ``extra`` = the additional forward of every layer's token mixer
    (the norms' are negligible), ``fraction`` = extra / step. Matmuls are 2 FLOPs per weight
    and token (counted on the meta device); causal attention adds 2 x tokens x heads x head_dim
    per full-attention layer and token; the chunked delta rule (flash-linear-attention, 64-token
    chunks) about 2 x value heads x (3 dk dv + 64 (dk + dv)) per Gated DeltaNet layer and token."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text_config(shape))
    dk, dv = shape["linear_key_head_dim"], shape["linear_value_head_dim"]
    mixers = mlps = 0.0
    for layer in model.model.layers:
        if hasattr(layer, "self_attn"):
            mixer = layer.self_attn
            core = 2.0 * tokens * shape["num_attention_heads"] * shape["head_dim"]
        else:
            mixer = layer.linear_attn
            core = 2.0 * shape["linear_num_value_heads"] * (3 * dk * dv + 64 * (dk + dv))
        mixers += 2.0 * sum(p.numel() for p in mixer.parameters()) + core
        mlps += 2.0 * sum(p.numel() for p in layer.mlp.parameters())
    head = 2.0 * shape["hidden_size"] * shape["vocab_size"]
    step = 4.0 * (mixers + mlps + head)
    return {"step": step, "extra": mixers, "fraction": mixers / step}


def fla_backward_workspace(shape: Mapping, tokens: int, bytes_per_value: int = 2) -> float:
    """Bytes flash-linear-attention's chunked gated delta rule allocates in its backward on top of
    what its forward saved (fla-core 0.6.0, fla/ops/gated_delta_rule/chunk.py
    ``chunk_gated_delta_rule_bwd``), all alive together when ``chunk_bwd_dqkwg`` runs: the
    recomputed states ``h`` and their gradients ``dh`` (tokens / 64 chunks x value heads x K x V
    each), the recomputed ``w`` and ``dw``, ``dq``, ``dk`` (tokens x value heads x K; q and k are
    repeated to the value heads) and ``u``, ``v_new``, ``dv``, ``dv2`` (tokens x value heads x V),
    in the inputs' dtype (bf16 under autocast). At 33,792 tokens on Qwen3.5-4B: 2 x 0.55 GB +
    8 x 0.28 GB = 3.3 GB."""
    hv = shape["linear_num_value_heads"]
    k, v = shape["linear_key_head_dim"], shape["linear_value_head_dim"]
    chunks = -(-tokens // FLA_CHUNK)
    return bytes_per_value * (2 * chunks * hv * k * v + 4 * tokens * hv * k + 4 * tokens * hv * v)


def sft_memory(shape: Mapping, tokens: int, *, processes: int = 1, micro_batch: int = 1,
               chunk_tokens: int = 1024, mixed_precision: bool = True,
               host_is_device: bool = False, instrumented: bool = True,
               sizes: Mapping | None = None, layer: Mapping | None = None,
               kernels: str = "reference", sublayers: bool = False,
               measured_gap: bool = True) -> dict:
    """Peak memory (bytes) of one training process of :mod:`ssd_math.train` at ``tokens`` per
    sequence, by term (docs/memory_plan.md lists where each is allocated, file:line).

    ``processes`` > 1 is FSDP2 over that many GPUs (weights, gradients and AdamW state sharded;
    activations not). ``host_is_device``: the CPU, where the weight-change tracker's host buffer
    is the same memory. The peak is reached in a micro-batch after the first of a step (the
    gradients are then whole) in the backward of the last layer: every checkpointed layer input
    still held, plus the larger of the chunked loss's and one recomputed layer's working set.
    ``sublayers``: the layer's parts are checkpointed too (config ``sft.checkpoint_sublayers``),
    so the recomputed layer holds the largest part's activations, not the sum
    (:func:`layer_recompute_bytes`); ignored when ``layer`` is given (it says which).

    ``kernels="fla"`` (the GPU's): the recomputed layer's term also holds flash-linear-attention's
    backward workspace (:func:`fla_backward_workspace`, added whole: a bound, as if the Gated
    DeltaNet mixer were the largest part). ``measured_gap``: add what the formula missed against
    the CPU measurement (activations x (1 / :data:`FORMULA_MEASURED_RATIO` - 1)); off where the
    formula itself is compared with a measurement (bench/bench_memory.py)."""
    sz = dict(sizes or model_sizes(shape))
    lay = layer or layer_saved_bytes(shape, mixed_precision=mixed_precision, kernels=kernels,
                                     sublayers=sublayers)
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
        # copies and its activations; with sublayers its parts' inputs and the largest part's)
        "layer_recompute": layer_recompute_bytes(lay, T),
    }
    if n > 1:
        # FSDP2: this and the prefetched next layer gathered in the compute dtype, their
        # unsharded gradients before the reduce-scatter; the root unit (norm + tied embedding)
        # stays gathered
        terms["fsdp_gathered"] = 2 * Pl * (cb + 4) + E * cb
    if instrumented and host_is_device:
        terms["tracker_host_copy"] = 2 * P  # bf16 stored values before the step (host memory)
    if kernels == "fla" and shape.get("linear_num_value_heads"):
        terms["fla_backward_workspace"] = fla_backward_workspace(shape, T, cb)
    activations = (terms["checkpointed_inputs"] + terms["hidden_out_and_grad"]
                   + max(terms["loss_chunk"],
                         terms["layer_recompute"] + terms.get("fla_backward_workspace", 0)))
    if measured_gap:
        terms["formula_gap"] = activations * (1 / FORMULA_MEASURED_RATIO - 1)
    peak = (terms["weights_fp32"] + terms["grads_fp32"] + terms["adamw_fp32"] + activations
            + terms.get("formula_gap", 0)
            + terms.get("fsdp_gathered", 0) + terms.get("tracker_host_copy", 0))
    return {"peak": peak, "terms": terms, "sizes": sz, "layer": dict(lay)}


def max_fitting_tokens(shape: Mapping, capacity: float = H100_BYTES - GPU_HEADROOM,
                       step: int = 1024, **kw) -> int:
    """The longest sequence (a multiple of ``step``) whose :func:`sft_memory` peak fits
    ``capacity`` bytes; 0 when none does."""
    sizes = kw.pop("sizes", None) or model_sizes(shape)
    if kw.get("layer") is None:
        kw["layer"] = layer_saved_bytes(shape, mixed_precision=kw.get("mixed_precision", True),
                                        kernels=kw.get("kernels", "reference"),
                                        sublayers=kw.get("sublayers", False))
    best, t = 0, step
    while t <= 1 << 20 and sft_memory(shape, t, sizes=sizes, **kw)["peak"] <= capacity:
        best, t = t, t + step
    return best


# Shapes the config check knows, by hub id (model.hub.id): the text model trained.
KNOWN_SHAPES = {"Qwen/Qwen3.5-4B": (QWEN35_4B_TEXT, QWEN35_4B_SIZES,
                                    {True: QWEN35_4B_LAYER_FLA_SUBLAYERS, False: QWEN35_4B_LAYER_FLA})}


def training_memory(cfg: dict, arm: str, *, processes: int | None = None,
                    tokens: int | None = None) -> dict | None:
    """The predicted peak of one training process of ``arm`` on the config's GPUs
    (:func:`sft_memory` with flash-linear-attention's kernels and the measured gap), with
    ``capacity`` (runtime.gpu_memory_gb) and ``headroom`` = capacity - peak; None where there is
    nothing to predict: training on the CPU, or a model whose shape is not in :data:`KNOWN_SHAPES`."""
    from .launcher import accelerate_gpus, read_accelerate_config

    known = KNOWN_SHAPES.get((cfg["model"].get("hub") or {}).get("id")) if cfg["model"]["kind"] == "hub" else None
    gpus = accelerate_gpus(cfg["runtime"]["accelerate_config"])
    if known is None or gpus == 0:
        return None
    shape, sizes, layers = known
    sft = sc.arm_sft(cfg, arm)
    acc = read_accelerate_config(cfg["runtime"]["accelerate_config"])
    mixed = str(acc.get("mixed_precision", "no")) == "bf16"
    n = gpus if processes is None else processes
    T = int(sft["max_len"] if tokens is None else tokens)
    m = sft_memory(shape, T, processes=n, micro_batch=int(sft["micro_batch"]),
                   chunk_tokens=int(sft["loss_chunk_tokens"] or 0), mixed_precision=mixed,
                   sizes=sizes, layer=layers[bool(sft["checkpoint_sublayers"])], kernels="fla",
                   instrumented=bool(sft["instrument"]["enabled"]))
    capacity = float(cfg["runtime"]["gpu_memory_gb"]) * 1e9
    return {**m, "capacity": capacity, "headroom": capacity - m["peak"], "processes": n, "tokens": T}


def training_memory_problems(cfg: dict) -> list[str]:
    """The config check: every arm (extra arms too) whose predicted training peak leaves less than
    :data:`GPU_HEADROOM` of ``runtime.gpu_memory_gb``, one message per distinct setting, naming
    the arms, the numbers and the alternatives (FSDP over more GPUs, a larger GPU, a shorter
    ``sft.max_len``)."""
    groups: dict[tuple, list[str]] = {}
    try:
        from .launcher import read_accelerate_config

        read_accelerate_config(cfg["runtime"]["accelerate_config"])
    except OSError:
        return []  # a missing accelerate config is reported where the rules read it
    for arm in sc.all_arms(cfg):
        if arm in cfg.get("noise_probes", []):
            continue
        m = training_memory(cfg, arm)
        if m is None:
            return []
        if m["headroom"] < GPU_HEADROOM:
            sft = sc.arm_sft(cfg, arm)
            key = (m["tokens"], int(sft["micro_batch"]), bool(sft["checkpoint_sublayers"]))
            groups.setdefault(key, []).append(arm)
    out = []
    for (tokens, micro, sub), arms in groups.items():
        m = training_memory(cfg, arms[0])
        fsdp = training_memory(cfg, arms[0], processes=4)
        fit = 0
        for t in range(1024, tokens, 1024):
            if training_memory(cfg, arms[0], tokens=t)["headroom"] >= GPU_HEADROOM:
                fit = t
        need = (m["peak"] + GPU_HEADROOM) / 1e9
        out.append(
            f"sft.max_len {tokens} (micro_batch {micro}; arms {', '.join(arms)}): the predicted "
            f"training peak is {m['peak'] / 1e9:.1f} GB per GPU on {m['processes']} GPU(s) "
            f"(runtime.accelerate_config), which leaves {m['headroom'] / 1e9:.1f} GB of "
            f"runtime.gpu_memory_gb {m['capacity'] / 1e9:g}; at least {GPU_HEADROOM / 1e9:g} GB "
            f"must stay free (docs/memory_plan.md). Alternatives: FSDP over 4 GPUs "
            f"(runtime.accelerate_config: envs/accelerate/fsdp.yaml: {fsdp['peak'] / 1e9:.1f} GB per "
            f"GPU), a GPU with at least {need:.0f} GB (an H200: runtime.gpu_memory_gb: "
            f"{H200_BYTES / 1e9:g}), or sft.max_len <= {fit} on this GPU")
    return out
