# Stage 6 - tables, written as files by rules (the report only reads them). Every table names
# its estimator, interval method, n and resample count in columns beside the numbers.


def stats_params():
    return dict(config["stats"])


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


def table1_files():
    """Graded files of Table 1's rows on every eval set."""
    rows = config["report"]["table1"]["rows"]
    return [f"{R}/eval/{r['model']}/{s}/T{sc.fmt_t(r['temperature'])}.jsonl" for r in rows for s in EVAL_SETS]


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
