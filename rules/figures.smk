# Stage 7 - figures, drawn by rules from the tables and logs (no computation beyond plotting).


rule figure_c:
    """Figure C: accuracy on the hard set and extracted-answer rate vs T_eval, base and arms."""
    input:
        metrics=rules.metrics.output.metrics,
    output:
        png=f"{R}/figures/figure_c.png",
    params:
        hard_set=HARD_SET,
        models=MODELS,
    log:
        log_path("figures", "figure_c"),
    benchmark:
        bench_path("figures", "figure_c")
    script:
        "../scripts/figure_c.py"


rule training_curves:
    """Training curves of every arm: loss/perplexity, learning rate, gradient norm."""
    input:
        logs=train_logs(),
    output:
        png=f"{R}/figures/training_curves.png",
    params:
        arms=ARMS,
    log:
        log_path("figures", "training_curves"),
    benchmark:
        bench_path("figures", "training_curves")
    script:
        "../scripts/training_curves.py"
