# Stage 8 - the report: report/report.qmd reads the tables and figures listed as inputs here.
# With Quarto on PATH this runs `quarto render`; without it, the offline renderer
# (ssd_math.report: nbclient + pandoc) renders the same .qmd to a self-contained HTML.


rule report:
    input:
        qmd=f"{workflow.basedir}/report/report.qmd",
        metrics=rules.metrics.output.metrics,
        breakdown=rules.metrics.output.breakdown,
        table1=rules.table1.output.table,
        table2=rules.table2.output.table,
        figure_c=rules.figure_c.output.png,
        curves=rules.training_curves.output.png,
        filters=expand(f"{R}/samples/{{arm}}/filter_summary.json", arm=ARMS),
        table1_breakdown=rules.table1_breakdown.output.table,
        table2_breakdown=rules.table2_breakdown.output.table,
        sweeps=rules.sweep_table.output.table,
        figure_a=rules.figure_a.output.png,
        checkpoints=rules.checkpoint_table.output.table,
        noise=rules.noise_summary.output.table,
        figure_b=rules.figure_b.output.png,
        weight_change=rules.weight_change.output.png,
        dw_hist=rules.dw_hist.output.png,
        train_ppl=rules.train_ppl.output.png,
        checkpoint_accuracy=rules.checkpoint_accuracy.output.png,
        power=rules.power.output.table,
        timings=rules.timings.output.table,
        probe_tables=list(rules.probe_tables.output),
        probe_scatter=rules.probe_scatter.output.png,
        probe_fork_shares=rules.probe_fork_shares.output.png,
    output:
        html=f"{R}/report/report.html",
    params:
        title=config["report"].get("title", "ssd-math"),
        experiment=config["experiment"],
        results=R,
    log:
        log_path("report", "report"),
    benchmark:
        bench_path("report", "report")
    script:
        "../scripts/render_report.py"
