# GPU resources of the heavy rules, and the cost plan built from the same numbers.
#
# Included right after common.smk: the sampling, training and eval rules read GEN_* / TRAIN_*
# below in their `resources:`. GPUs follow the config (never a number typed twice):
#   generation (sample_train_shard, generate_*): vLLM -> sampler.vllm.tensor_parallel_size;
#       transformers -> 1 on a cuda device (runtime.device / sampler.device), else 0;
#   training (sft): num_processes of the accelerate config (runtime.accelerate_config),
#       0 when it says use_cpu (the tiny default: every job stays a CPU job).
# Memory and wall time are declared here per kind of job; a cluster profile overrides them per
# rule (profiles/slurm/config.yaml `set-resources`), together with partitions and accounts.
#
# Cost plan (study-scale runs cost GPU-days; look first):
#   python scripts/plan_costs.py --configfile config/real.yaml      # prints the table
#   snakemake --configfile config/real.yaml plan                   # -> <results>/plan/cost_plan.{csv,txt}
#   snakemake --configfile config/real.yaml plan_measured          # after the run: expected vs benchmark: times

from ssd_math import planner as PLAN_COSTS  # noqa: N812 (the cost planner library)

_GPUS = PLAN_COSTS.gpu_counts(config)

GEN_GPUS = _GPUS["generate"]
GEN_MEM_MB = 64000 if GEN_GPUS else 4000      # host RAM: engine, CUDA graphs, tokenizer, rows
GEN_RUNTIME = 12 * 60 if GEN_GPUS else 60     # minutes; `plan` gives each job's expected hours
TRAIN_GPUS = _GPUS["train"]
TRAIN_MEM_MB = 128000 if TRAIN_GPUS else 4000  # host RAM: fp32 load of a 4B model, full-state saves
TRAIN_RUNTIME = 24 * 60 if TRAIN_GPUS else 60


rule plan:
    """Expected tokens, hours and GPU-hours of every GPU job (config planner.throughput)."""
    output:
        csv=f"{R}/plan/cost_plan.csv",
        txt=f"{R}/plan/cost_plan.txt",
    params:
        cfg=config,
        results=R,
    localrule: True
    log:
        log_path("plan", "plan"),
    script:
        "../scripts/plan_costs.py"


rule plan_measured:
    """The plan beside the measured wall times of the same jobs (their benchmark: files)."""
    input:
        plan=rules.plan.output.csv,
        benchmarks=planned_benchmarks,
    output:
        csv=f"{R}/tables/cost_plan.csv",
        txt=f"{R}/tables/cost_plan.txt",
    params:
        cfg=config,
        results=R,
    localrule: True
    log:
        log_path("plan", "plan_measured"),
    script:
        "../scripts/plan_costs.py"
