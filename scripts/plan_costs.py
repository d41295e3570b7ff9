"""Cost planner: every GPU job of the DAG with its expected tokens and GPU-hours, before a run;
beside the measured times (Snakemake ``benchmark:`` files) after it.

    python scripts/plan_costs.py --configfile config/real.yaml             # print the plan
    python scripts/plan_costs.py --configfile config/real.yaml --csv plan.csv
    python scripts/plan_costs.py --configfile config/real.yaml --measured  # after a run

(or ``snakemake --configfile config/real.yaml plan`` -> <results>/plan/cost_plan.{csv,txt}, and
``... plan_measured`` -> <results>/tables/cost_plan.{csv,txt} once the GPU jobs have run).

The job list mirrors the target lists of rules/common.smk (sampling shards of every default
arm, SFT of every arm, the T grid of base + arms on every eval set, pass@k runs, every
checkpoint on the hard set, the baseline sweeps); tests/test_real_pipeline.py checks it against
``snakemake -n``. Work per job (tokens) comes from the config and ``planner.expected``; the
arithmetic (tokens / (rate x gpus) + startup) is ssd_math.planner's. GPU counts are the rules'
``gpu`` resources (:func:`gpu_counts`, also used by rules/plan.smk).

Token model. A sampling or eval job generates ``n_prompts x samples_per_prompt x mean`` tokens,
``mean = fraction x cap`` (``sample_gen_fraction`` of the arm's cap, ``eval_gen_fraction`` of
``eval.max_new_tokens``). SFT trains on the kept samples: with the length filter on, the
dropped ones are exactly the samples at the cap, so the kept mean is
``(mean_all - (1 - kept_fraction) x cap) / kept_fraction`` (floored at 5% of the cap).
"""


import argparse
import os
import sys
from pathlib import Path

import yaml

from ssd_math import config as sc
from ssd_math.planner import format_plan, merge_measured, plan, plan_to_csv, plan_totals

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ACCELERATE = "envs/accelerate/cpu.yaml"


# ----------------------------------------------------------------------------------------------
# GPU counts (the rules' gpu resources)
# ----------------------------------------------------------------------------------------------

def accelerate_gpus(path: str | os.PathLike) -> int:
    """GPUs an accelerate config uses: 0 with ``use_cpu``, else processes x machines."""
    p = Path(path)
    if not p.exists() and not p.is_absolute():
        p = REPO / p
    with open(p, encoding="utf-8") as fh:
        acc = yaml.safe_load(fh) or {}
    if acc.get("use_cpu"):
        return 0
    return int(acc.get("num_processes", 1)) * int(acc.get("num_machines", 1))


def gpu_counts(cfg: dict) -> dict[str, int]:
    """``{"generate": n, "train": n}``: GPUs of one sampling/eval job and of one SFT job.

    Generation: vLLM -> ``sampler.vllm.tensor_parallel_size`` (default 1); transformers -> 1 on
    a cuda device, else 0. Training: the accelerate config of ``runtime.accelerate_config``.
    """
    rt = cfg.get("runtime") or {}
    sam = cfg["sampler"]
    device = str(rt.get("device", sam.get("device", "cpu")))
    if sam["backend"] == "vllm":
        gen = int((sam.get("vllm") or {}).get("tensor_parallel_size", 1))
    else:
        gen = 1 if device.startswith("cuda") else 0
    return {"generate": gen, "train": accelerate_gpus(rt.get("accelerate_config", DEFAULT_ACCELERATE))}


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


def planned_jobs(cfg: dict, results: str | None = None) -> list[dict]:
    """Every GPU job of the default DAG (what ``snakemake`` with no target builds)."""
    if "planner" not in cfg:
        raise ValueError("the config has no 'planner' section (see config/real.yaml)")
    R = results or cfg["results"]
    ex = cfg["planner"]["expected"]
    gpus = gpu_counts(cfg)
    g_gen, g_train = max(gpus["generate"], 1), max(gpus["train"], 1)
    prompt = float(ex["prompt_tokens"])
    pool, sizes = _sizes(cfg)
    sets = cfg["eval"]["sets"]
    hard = "eval_hard" if "eval_hard" in sets else sets[0]
    eval_cap = int(cfg["eval"]["max_new_tokens"])
    eval_mean = ex["eval_gen_fraction"] * eval_cap
    k_eval = int(cfg["eval"]["samples_per_prompt"])
    tgrid = [sc.fmt_t(t) for t in cfg["eval"]["t_grid"]]
    ckpts = sc.checkpoint_names(cfg)
    sweeps = sc.sweep_conditions(cfg)
    n_shards = int(cfg["train_sampling"]["n_shards"])
    startup = float(cfg["planner"]["throughput"].get("startup_s_per_job", 0))
    jobs: list[dict] = []

    def gen(rule, name, model, n_prompts, k, mean, bench, n_models=1):
        jobs.append({"rule": rule, "name": name, "kind": "sample" if rule == "sample_train_shard" else "eval",
                     "model": model, "gpus": g_gen, "n_prompts": n_prompts,
                     "n_samples_per_prompt": k, "mean_gen_tokens": round(mean, 1),
                     "mean_prompt_tokens": prompt, "startup_s": startup * n_models,
                     "benchmark": f"{R}/benchmarks/{bench}.tsv"})

    for arm in cfg["arms"]:
        s = sc.arm_sampling(cfg, arm)
        cap = s["max_new_tokens"]
        mean_all = ex["sample_gen_fraction"] * cap
        for shard in range(n_shards):
            gen("sample_train_shard", f"sample {arm} shard{shard}", "base",
                _shard_len(pool, shard, n_shards), s["n"], mean_all, f"samples/{arm}/shard{shard}")
        kept = ex["kept_fraction"] if cfg["arms"][arm]["filter_length_stop"] else 1.0
        mean_kept = mean_all if kept >= 1.0 else max((mean_all - (1 - kept) * cap) / kept, 0.05 * cap)
        n_kept = pool * s["n"] * kept
        sft = sc.arm_sft(cfg, arm)
        jobs.append({"rule": "sft", "name": f"sft {arm}", "kind": "train", "model": arm,
                     "gpus": g_train, "n_prompts": round(n_kept), "n_samples_per_prompt": 1,
                     "mean_gen_tokens": round(mean_kept, 1),
                     "train_tokens": round(n_kept * min(prompt + mean_kept, sft["max_len"])),
                     "epochs": sft["epochs"], "startup_s": startup,
                     "benchmark": f"{R}/benchmarks/train/{arm}.tsv"})
    for model in sc.final_models(cfg):
        for es in sets:
            gen("generate_grid", f"grid {model} {es}", model, sizes[es] * len(tgrid), k_eval,
                eval_mean, f"generate/{model}/{es}/grid")
    kp = int(cfg["eval"]["passk"]["k"])
    for run in cfg["eval"]["passk"]["runs"]:
        t = sc.fmt_t(run["temperature"])
        gen("generate_passk", f"passk {run['model']} {hard} T{t}", run["model"], sizes[hard], kp,
            eval_mean, f"generate/{run['model']}/{hard}/T{t}-k{kp}")
    for arm in cfg["arms"]:
        gen("generate_checkpoints", f"checkpoints {arm} {hard}", arm, sizes[hard] * len(ckpts),
            k_eval, eval_mean, f"generate/{arm}/{hard}/checkpoints", n_models=len(ckpts))
    if sweeps:
        for es in sets:
            gen("generate_sweep", f"sweep base {es}", "base", sizes[es] * len(sweeps), k_eval,
                eval_mean, f"generate/base/{es}/sweep")
    return jobs


def build_plan(cfg: dict, results: str | None = None) -> list[dict]:
    return plan(planned_jobs(cfg, results), cfg["planner"]["throughput"])


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


def _write(rows: list[dict], csv_path, txt_path, cfg) -> str:
    text = describe(cfg) + format_plan(rows)
    plan_to_csv(rows, csv_path)
    if txt_path:
        from ssd_math.io import write_text

        write_text(txt_path, text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", default="config.yaml", help="config YAML (default config.yaml)")
    ap.add_argument("--results", help="override the config's results folder")
    ap.add_argument("--csv", help="also write the plan as CSV here")
    ap.add_argument("--measured", action="store_true",
                    help="join <results>/benchmarks/**.tsv (after a run): measured hours beside expected")
    args = ap.parse_args(argv)
    cfg = sc.load_config(args.configfile)
    results = args.results or cfg["results"]
    rows = build_plan(cfg, results)
    if args.measured:
        rows = merge_measured(rows, [r["benchmark"] for r in rows if Path(r["benchmark"]).exists()])
    text = describe(cfg) + format_plan(rows)
    if args.csv:
        plan_to_csv(rows, args.csv)
    sys.stdout.write(text)
    return 0


if "snakemake" in globals():
    from ssd_math.rulelog import rule_log

    sm = snakemake  # noqa: F821
    with rule_log(sm) as log:
        cfg = sm.params.cfg
        rows = build_plan(cfg, sm.params.results)
        if sm.rule == "plan_measured":
            rows = merge_measured(rows, list(sm.input.benchmarks))
        text = _write(rows, sm.output.csv, sm.output.txt, cfg)
        tot = plan_totals(rows)
        log.info("%d GPU jobs, %.1f GPU-hours expected\n%s", tot["jobs"], tot["gpu_hours"], text)
elif __name__ == "__main__":
    sys.exit(main())
