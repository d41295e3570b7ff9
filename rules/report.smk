# Stage 8 - the report: rule report_parts writes every table, note and number the page shows;
# rule report writes its inputs as a manifest (report_inputs.json) and renders report/report.qmd,
# which reads that manifest and places what it names.
# With Quarto on PATH this runs `quarto render` (from any working directory: ssd_math.report
# renders a copy of report/ in a folder beside the output); without it, the offline renderer
# (ssd_math.qmd_render: nbclient + pandoc) renders the same .qmd to a self-contained HTML.


def findings_probe_tables():
    """The locks-and-forks deltas table when the probe stage (rule probe_tables) is in the
    workflow; the findings then get a sentence for it."""
    return [rules.probe_tables.output.deltas] if rules.has("probe_tables") else []


rule report_numbers:
    """The numbers the report's prose quotes (interval level, main eval set, min-p T, best base
    condition), computed from the tables so the prose only formats them."""
    input:
        table1=rules.table1.output.table,
        sweeps=rules.sweep_table.output.table,
    output:
        json=f"{R}/tables/report_numbers.json",
    log:
        log_path("report", "report_numbers"),
    benchmark:
        bench_path("report", "report_numbers")
    script:
        "../scripts/report_numbers.py"


rule findings:
    """The report's findings (one sentence per finding of the study, worded from the tables'
    intervals) and its provenance panel (git commit, config hash, machines, packages)."""
    input:
        table1=rules.table1.output.table,
        table2=rules.table2.output.table,
        table1_breakdown=rules.table1_breakdown.output.table,
        noise=rules.noise_summary.output.table,
        checkpoints=rules.checkpoint_table.output.table,
        probe_deltas=findings_probe_tables(),
        provenance=[rules.metrics.output.metrics, *(L.model_dir(a) for a in ARMS)],  # sidecars: machines, versions
        base=L.model_dir(BASE),  # a shipped base's provenance.json (weights' sha256, recipes)
    output:
        md=L.table("findings", "md"),
        json=L.table("findings", "json"),
    params:
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        arms=ARMS,
        experiment=config["experiment"],
        workflow_dir=workflow.basedir,
    log:
        log_path("report", "findings"),
    benchmark:
        bench_path("report", "findings")
    script:
        "../scripts/findings.py"


rule report_parts:
    """Everything the report shows besides its figures and the findings/study fragments, written
    as strings (ssd_math.report_parts): each table as a pipe table, each method note, each sentence
    with a number, the provenance panel's rows. The arms and the noise runs are the config's."""
    input:
        **{f"probe_{name}": rules.probe_tables.output[name] for name in PROBE_TABLES},
        numbers=rules.report_numbers.output.json,
        findings_json=rules.findings.output.json,
        table1=rules.table1.output.table,
        table2=rules.table2.output.table,
        table1_breakdown=rules.table1_breakdown.output.table,
        table2_breakdown=rules.table2_breakdown.output.table,
        noise=rules.noise_summary.output.table,
        sweeps=rules.sweep_table.output.table,
        checkpoints=rules.checkpoint_table.output.table,
        metrics=rules.metrics.output.metrics,
        breakdown=rules.metrics.output.breakdown,
        power=rules.power.output.table,
        timings=rules.timings.output.table,
        filters=[L.samples(a, "filter_summary", "json") for a in ARMS],
    output:
        json=L.table("report_parts", "json"),
    params:
        arms=ARMS,
        noise_runs=NOISE_RUNS,
        experiment=config["experiment"],
    log:
        log_path("report", "report_parts"),
    benchmark:
        bench_path("report", "report_parts")
    script:
        "../scripts/report_parts.py"


rule report:
    """The page (report/report.qmd) and its manifest: the rule's inputs by name, which the page
    reads (ssd_math.report_inputs.ReportInputs); the page computes nothing."""
    input:
        qmd=f"{workflow.basedir}/report/report.qmd",
        css=f"{workflow.basedir}/report/report.css",
        parts=rules.report_parts.output.json,
        study=L.table("study_vs_run", "md"),  # rule study_table (below)
        findings=rules.findings.output.md,
        figure_a=rules.figure_a.output.png,
        figure_b=rules.figure_b.output.png,
        figure_c=rules.figure_c.output.png,
        curves=rules.training_curves.output.png,
        weight_change=rules.weight_change.output.png,
        dw_hist=rules.dw_hist.output.png,
        train_ppl=rules.train_ppl.output.png,
        checkpoint_accuracy=rules.checkpoint_accuracy.output.png,
        probe_scatter=rules.probe_scatter.output.png,
        probe_fork_shares=rules.probe_fork_shares.output.png,
    output:
        html=L.report(),
        manifest=f"{R}/report/report_inputs.json",
    params:
        title=config["report"]["title"],
        config_hash=config_hash(_CONFIG_AS_GIVEN),
    log:
        log_path("report", "report"),
    benchmark:
        bench_path("report", "report")
    script:
        "../scripts/render_report.py"


rule study_table:
    """The study beside the run (the report opens with it): each claim of the study
    (report/study_claims.yaml, with its source), the study's estimate, this run's from the tables,
    and whether this run's verdict agrees (ssd_math.study)."""
    input:
        claims=f"{workflow.basedir}/report/study_claims.yaml",
        findings=rules.findings.output.json,
        noise=rules.noise_summary.output.table,
        metrics=rules.metrics.output.metrics,
    output:
        csv=L.table("study_vs_run", "csv"),
        md=L.table("study_vs_run", "md"),
    params:
        arms={a: all_arms(config)[a] for a in ARMS},
        ssd_arm=config["report"]["table1"]["ssd_arm"],
        main_set=EVAL_SETS[0],
        absolute_comparable=config["data"]["kind"] == "real",
    log:
        log_path("report", "study_table"),
    benchmark:
        bench_path("report", "study_table")
    script:
        "../scripts/study_table.py"
