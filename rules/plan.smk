# The cost plan: expected tokens, hours and GPU-hours of every GPU job before a run
# (ssd_math.planner prices the job lists of ssd_math.layout, the ones the rules expand; the GPUs
# per job are the rules' `gpu` resources, rules/common.smk), and expected vs measured after it.
# Study-scale runs cost GPU-days; look first:
#   python scripts/plan_costs.py --configfile config/real.yaml      # prints the table
#   snakemake --configfile config/real.yaml plan                   # -> <results>/plan/cost_plan.{csv,txt}
#   snakemake --configfile config/real.yaml plan_measured          # after the run: expected vs benchmark: times

from ssd_math import planner


def get_planned_benchmarks(wildcards):
    """benchmark: files of every planned GPU job (they exist once those jobs have run)."""
    return [job["benchmark"] for job in planner.planned_jobs(config, R)]


rule plan:
    """Expected tokens, hours and GPU-hours of every GPU job (config planner.throughput)."""
    output:
        csv=L.plan_file("csv"),
        txt=L.plan_file("txt"),
    params:
        cfg=config,
        results=results_dir,
    localrule: True
    log:
        log_path("plan", "plan"),
    script:
        "../scripts/plan_costs.py"


rule plan_measured:
    """The plan beside the measured wall times of the same jobs (their benchmark: files)."""
    input:
        plan=rules.plan.output.csv,
        benchmarks=get_planned_benchmarks,
    output:
        csv=L.table("cost_plan"),
        txt=L.table("cost_plan", "txt"),
    params:
        cfg=config,
        results=results_dir,
    localrule: True
    log:
        log_path("plan", "plan_measured"),
    script:
        "../scripts/plan_costs.py"
