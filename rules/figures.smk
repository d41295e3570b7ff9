# Stage 7 - figures, drawn by rules from the tables and logs (no computation beyond plotting).


rule figure_c:
    """Figure C: accuracy on the hard set and extracted-answer rate vs T_eval, base and arms."""
    input:
        metrics=rules.metrics.output.metrics,
    output:
        png=L.figure("figure_c"),
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
        logs=L.train_logs(),
    output:
        png=L.figure("training_curves"),
    params:
        arms=ARMS,
    log:
        log_path("figures", "training_curves"),
    benchmark:
        bench_path("figures", "training_curves")
    script:
        "../scripts/training_curves.py"


rule figure_a:
    """Figure A (study §3): base-model accuracy on both sets and extracted-answer rate vs T and
    vs min-p, CIs at stats.conf, presets highlighted."""
    input:
        sweeps=rules.sweep_table.output.table,
    output:
        png=L.figure("figure_a"),
    params:
        sets=EVAL_SETS,
    log:
        log_path("figures", "figure_a"),
    benchmark:
        bench_path("figures", "figure_a")
    script:
        "../scripts/figure_a.py"


# --- the noise trap (study §4): every arm's training log and the noise runs' (rules/train.smk) ---


def noise_run_labels():
    """Legend label of every run: its optimizer-state precision and learning rate."""
    return {a: f"{a} ({r['optimizer_state']} optimizer state, lr {r['lr']:g})" for a, r in noise_recipes().items()}


rule figure_b:
    """Figure B: observed gradient norm per step vs the estimated signal |G| at checkpoints, per arm."""
    input:
        logs=L.train_logs(),
    output:
        png=L.figure("figure_b"),
    params:
        arms=ARMS,
        checkpoint_steps=config["sft"]["checkpoint_steps"],
    log:
        log_path("figures", "figure_b"),
    benchmark:
        bench_path("figures", "figure_b")
    script:
        "../scripts/figure_b.py"


rule weight_change:
    """Weight-change fraction (stored dtype) per step: every arm, and the noise runs dashed."""
    input:
        logs=rules.noise_summary.input.logs,
    output:
        png=L.figure("weight_change"),
    params:
        runs=list(L.noise_trap_logs()),
        noise_runs=NOISE_RUNS,
        labels=noise_run_labels(),
    log:
        log_path("figures", "weight_change"),
    benchmark:
        bench_path("figures", "weight_change")
    script:
        "../scripts/weight_change.py"


rule dw_hist:
    """|Δw| histograms of the stored values at the first, peak-LR and last step of every run."""
    input:
        logs=rules.noise_summary.input.logs,
    output:
        png=L.figure("dw_hist"),
    params:
        runs=list(L.noise_trap_logs()),
    log:
        log_path("figures", "dw_hist"),
    benchmark:
        bench_path("figures", "dw_hist")
    script:
        "../scripts/dw_hist.py"


rule train_ppl:
    """Training perplexity per step (the trap: low loss on the model's own samples)."""
    input:
        logs=rules.noise_summary.input.logs,
    output:
        png=L.figure("train_ppl"),
    params:
        runs=list(L.noise_trap_logs()),
        noise_runs=NOISE_RUNS,
    log:
        log_path("figures", "train_ppl"),
    benchmark:
        bench_path("figures", "train_ppl")
    script:
        "../scripts/train_ppl.py"


rule checkpoint_accuracy:
    """Accuracy of every checkpoint (step 0 = base) with CIs at stats.conf, one series per arm."""
    input:
        checkpoints=rules.checkpoint_table.output.table,
    output:
        png=L.figure("checkpoint_accuracy"),
    log:
        log_path("figures", "checkpoint_accuracy"),
    benchmark:
        bench_path("figures", "checkpoint_accuracy")
    script:
        "../scripts/checkpoint_accuracy.py"
