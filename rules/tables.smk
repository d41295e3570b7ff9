# Stage 6 - tables, written as files by rules (the report only reads them). Every table names
# its estimator, interval method, n and resample count in columns beside the numbers.


def noise_recipes():
    """The SFT recipe keys the noise summary prints beside each run (arms and noise runs)."""
    return {
        a: {k: arm_sft(config, a).get(k) for k in ("optimizer_state", "lr", "schedule")} for a in L.noise_trap_logs()
    }


def timing_inputs():
    """The tables: once they exist every compute job upstream of them has written its benchmark."""
    return [
        rules.metrics.output.metrics,
        rules.table1.output.table,
        rules.table2.output.table,
        rules.table1_breakdown.output.table,
        rules.table2_breakdown.output.table,
        rules.sweep_table.output.table,
        rules.checkpoint_table.output.table,
        rules.noise_summary.output.table,
        rules.power.output.table,
    ]


rule metrics:
    """Accuracy and the three rates with CIs (stats.conf) for every eval file, plus breakdowns."""
    input:
        evals=L.all_eval_files(),
    output:
        metrics=L.table("metrics"),
        breakdown=L.table("breakdown"),
    params:
        stats=stats_params(),
        results=results_dir,
    log:
        log_path("tables", "metrics"),
    benchmark:
        bench_path("tables", "metrics")
    script:
        "../scripts/metrics.py"


rule table1:
    """Table 1: accuracy (Wilson / clustered CI) and paired-bootstrap SSD - base deltas."""
    input:
        evals=L.table1_files(),
    output:
        table=L.table("table1"),
    params:
        rows=config["report"]["table1"]["rows"],
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        sets=EVAL_SETS,
        stats=stats_params(),
        results=results_dir,
    log:
        log_path("tables", "table1"),
    benchmark:
        bench_path("tables", "table1")
    script:
        "../scripts/table1.py"


rule table2:
    """Table 2: pass@k on the hard set (unbiased estimator, bootstrap CI) and paired deltas."""
    input:
        evals=L.passk_eval_files(),
    output:
        table=L.table("table2"),
    params:
        runs=config["eval"]["passk"]["runs"],
        k=config["eval"]["passk"]["k"],
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        stats=stats_params(),
    log:
        log_path("tables", "table2"),
    benchmark:
        bench_path("tables", "table2")
    script:
        "../scripts/table2.py"


# --- breakdowns: Table 1 and Table 2 within each difficulty level and each source ------


rule table1_breakdown:
    """Table 1 per difficulty level and per source (where the data has >= 2 of them)."""
    input:
        evals=rules.table1.input.evals,
    output:
        table=L.table("table1_breakdown"),
    params:
        rows=config["report"]["table1"]["rows"],
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        sets=EVAL_SETS,
        stats=stats_params(),
    log:
        log_path("tables", "table1_breakdown"),
    benchmark:
        bench_path("tables", "table1_breakdown")
    script:
        "../scripts/table1.py"


rule table2_breakdown:
    """Table 2 (pass@k) per difficulty level and per source."""
    input:
        evals=rules.table2.input.evals,
    output:
        table=L.table("table2_breakdown"),
    params:
        runs=config["eval"]["passk"]["runs"],
        k=config["eval"]["passk"]["k"],
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        stats=stats_params(),
    log:
        log_path("tables", "table2_breakdown"),
    benchmark:
        bench_path("tables", "table2_breakdown")
    script:
        "../scripts/table2.py"


# --- baseline decoding sweeps (study §3): the table behind Figure A ----------------------


rule sweep_table:
    """The base model's T grid, presets and min-p grid on every eval set [CI], from metrics.csv."""
    input:
        metrics=rules.metrics.output.metrics,
    output:
        table=L.table("sweeps"),
    log:
        log_path("tables", "sweep_table"),
    benchmark:
        bench_path("tables", "sweep_table")
    script:
        "../scripts/sweep_table.py"


# --- the noise trap (study §4) -------------------------------------------------------------------
# Log-only noise runs (rule noise_run in train.smk): extra arms that differ from the default
# recipe in the optimizer-state precision (e.g. extra_arms.bf16-state). They are trained on a
# default arm's kept samples for their per-step log only, so the report can show the weight-change
# collapse without evaluating another model.


rule checkpoint_table:
    """Accuracy of every checkpoint of every arm [CI] (step 0 = base) beside the training log."""
    input:
        metrics=rules.metrics.output.metrics,
        logs=L.train_logs(),
    output:
        table=L.table("checkpoints"),
    params:
        arms=ARMS,
    log:
        log_path("tables", "checkpoint_table"),
    benchmark:
        bench_path("tables", "checkpoint_table")
    script:
        "../scripts/checkpoint_table.py"


rule noise_summary:
    """Weight-change fraction, perplexity, gradient signal/noise per run (arms and noise runs)."""
    input:
        logs=list(L.noise_trap_logs().values()),
    output:
        table=L.table("noise_summary"),
    params:
        runs=list(L.noise_trap_logs()),
        recipes=noise_recipes(),
    log:
        log_path("tables", "noise_summary"),
    benchmark:
        bench_path("tables", "noise_summary")
    script:
        "../scripts/noise_summary.py"


# --- sample-size planning (study §2): config sample_size (alpha, power, the deltas to detect) -------


rule power:
    """Between/within-prompt variance from the k > 1 (pass@k) evals and n per arm for each delta."""
    input:
        evals=L.passk_eval_files(),
    output:
        table=L.table("power"),
    params:
        planning=config["sample_size"],
        results=results_dir,
    log:
        log_path("tables", "power"),
    benchmark:
        bench_path("tables", "power")
    script:
        "../scripts/power.py"


# --- measured cost (report "Cost and time") ---------------------------------------------------------
# plan_measured (rules/plan.smk) needs a `planner` section (throughput table) that the tiny config
# does not have, so the default report shows the measured times instead: every benchmark: file of
# the stages upstream of the tables (they have all run once the tables exist), summed per stage.


rule timings:
    """Measured wall/CPU time per stage from results/benchmarks/ (figures and report excluded)."""
    input:
        tables=timing_inputs(),
    output:
        table=L.table("timings"),
    params:
        benchmarks=L.benchmarks_dir(),
        exclude=["figures", "report", "tables/timings.tsv"],
    log:
        log_path("tables", "timings"),
    benchmark:
        bench_path("tables", "timings")
    script:
        "../scripts/timings.py"
