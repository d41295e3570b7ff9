# Stage 6 - tables, written as files by rules (the report only reads them). Every table names
# its estimator, interval method, n and resample count in columns beside the numbers.


rule metrics:
    """Accuracy and the three rates with 95% CIs for every eval file, plus breakdowns."""
    input:
        evals=all_eval_files(),
    output:
        metrics=f"{R}/tables/metrics.csv",
        breakdown=f"{R}/tables/breakdown.csv",
    params:
        stats=stats_params(),
        results=R,
    log:
        log_path("tables", "metrics"),
    benchmark:
        bench_path("tables", "metrics")
    script:
        "../scripts/metrics.py"


rule table1:
    """Table 1: accuracy (Wilson / clustered CI) and paired-bootstrap SSD - base deltas."""
    input:
        evals=table1_files(),
    output:
        table=f"{R}/tables/table1.csv",
    params:
        rows=config["report"]["table1"]["rows"],
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        sets=EVAL_SETS,
        stats=stats_params(),
        results=R,
    log:
        log_path("tables", "table1"),
    benchmark:
        bench_path("tables", "table1")
    script:
        "../scripts/table1.py"


rule table2:
    """Table 2: pass@k on the hard set (unbiased estimator, bootstrap CI) and paired deltas."""
    input:
        evals=passk_targets(),
    output:
        table=f"{R}/tables/table2.csv",
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


# --- breakdowns (issue 4.2): Table 1 and Table 2 within each difficulty level and each source ------


rule table1_breakdown:
    """Table 1 per difficulty level and per source (where the data has >= 2 of them)."""
    input:
        evals=rules.table1.input.evals,
    output:
        table=f"{R}/tables/table1_breakdown.csv",
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
        table=f"{R}/tables/table2_breakdown.csv",
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


# --- baseline decoding sweeps (issue 4.3, study §3): the table behind Figure A ----------------------


rule sweep_table:
    """The base model's T grid, presets and min-p grid on every eval set [CI], from metrics.csv."""
    input:
        metrics=rules.metrics.output.metrics,
    output:
        table=f"{R}/tables/sweeps.csv",
    log:
        log_path("tables", "sweep_table"),
    benchmark:
        bench_path("tables", "sweep_table")
    script:
        "../scripts/sweep_table.py"


# --- the noise trap (issue 3.4, study §4) ---------------------------------------------------------
# Log-only probe runs (rule noise_probe in figures.smk): extra arms that differ from the default
# recipe in the optimizer-state precision (e.g. extra_arms.bf16-state). They are trained on a
# default arm's kept samples for their per-step log only, so the report can show the weight-change
# collapse without evaluating another model.


NOISE_PROBES = list(config.get("noise_probes") or [])  # extra arms trained for their log only


rule checkpoint_table:
    """Accuracy of every checkpoint of every arm [CI] (step 0 = base) beside the training log."""
    input:
        metrics=rules.metrics.output.metrics,
        logs=train_logs(),
    output:
        table=f"{R}/tables/checkpoints.csv",
    params:
        arms=ARMS,
    log:
        log_path("tables", "checkpoint_table"),
    benchmark:
        bench_path("tables", "checkpoint_table")
    script:
        "../scripts/checkpoint_table.py"


rule noise_summary:
    """Weight-change fraction, perplexity, gradient signal/noise per run (arms and probes)."""
    input:
        logs=list(noise_runs().values()),
    output:
        table=f"{R}/tables/noise_summary.csv",
    params:
        runs=list(noise_runs()),
        recipes=noise_recipes(),
    log:
        log_path("tables", "noise_summary"),
    benchmark:
        bench_path("tables", "noise_summary")
    script:
        "../scripts/noise_summary.py"


# --- sample-size planning (issue 4.1, study §2) -----------------------------------------------------
# The study's planning values: alpha 5%, power 80%; the differences to detect (fractions).
PLANNING = {"deltas": [0.02, 0.05, 0.10], "alpha": 0.05, "power": 0.8}


rule power:
    """Between/within-prompt variance from the k > 1 (pass@k) evals and n per arm for each delta."""
    input:
        evals=passk_targets(),
    output:
        table=f"{R}/tables/power.csv",
    params:
        planning=PLANNING,
        results=R,
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
        table=f"{R}/tables/timings.csv",
    params:
        benchmarks=f"{R}/benchmarks",
        exclude=["figures", "report", "tables/timings.tsv"],
    log:
        log_path("tables", "timings"),
    benchmark:
        bench_path("tables", "timings")
    script:
        "../scripts/timings.py"
