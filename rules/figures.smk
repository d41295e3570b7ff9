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


rule figure_a:
    """Figure A (study §3): base-model accuracy on both sets and extracted-answer rate vs T and
    vs min-p, 95% CIs, presets highlighted."""
    input:
        sweeps=rules.sweep_table.output.table,
    output:
        png=f"{R}/figures/figure_a.png",
    params:
        sets=EVAL_SETS,
    log:
        log_path("figures", "figure_a"),
    benchmark:
        bench_path("figures", "figure_a")
    script:
        "../scripts/figure_a.py"


# --- the noise trap (study §4) ---------------------------------------------------------------------


rule noise_probe:
    """Train a probe arm (e.g. extra_arms.bf16-state: bf16-only optimizer state) for its per-step
    noise-trap log only: the source arm's kept samples, no checkpoints, no evaluation; the model
    is deleted (it exists to show the weight-change collapse, not to be evaluated)."""
    input:
        base=model_dir(sc.BASE),
        kept=probe_kept,
    output:
        log=f"{R}/train/{{arm}}/probe/log.jsonl",
    params:
        spec=probe_spec,
        scratch=probe_scratch,
        accelerate_config=accelerate_config(),
    threads: 2
    resources:
        mem_mb=TRAIN_MEM_MB,
        runtime=TRAIN_RUNTIME,
        gpu=TRAIN_GPUS,
    log:
        log_path("train", "{arm}", "probe"),
    benchmark:
        bench_path("train", "{arm}", "probe")
    shell:
        "accelerate launch --config_file {params.accelerate_config} -m ssd_math.train"
        " --spec-json {params.spec:q} > {log} 2>&1 && rm -rf {params.scratch:q}"


rule figure_b:
    """Figure B: observed gradient norm per step vs the estimated signal |G| at checkpoints, per arm."""
    input:
        logs=train_logs(),
    output:
        png=f"{R}/figures/figure_b.png",
    params:
        arms=ARMS,
        checkpoint_steps=config["sft"].get("checkpoint_steps", []),
    log:
        log_path("figures", "figure_b"),
    benchmark:
        bench_path("figures", "figure_b")
    script:
        "../scripts/figure_b.py"


rule weight_change:
    """Weight-change fraction (stored dtype) per step: every arm, and the probes dashed."""
    input:
        logs=rules.noise_summary.input.logs,
    output:
        png=f"{R}/figures/weight_change.png",
    params:
        runs=list(noise_runs()),
        probes=NOISE_PROBES,
        labels=probe_labels(),
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
        png=f"{R}/figures/dw_hist.png",
    params:
        runs=list(noise_runs()),
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
        png=f"{R}/figures/train_ppl.png",
    params:
        runs=list(noise_runs()),
        probes=NOISE_PROBES,
    log:
        log_path("figures", "train_ppl"),
    benchmark:
        bench_path("figures", "train_ppl")
    script:
        "../scripts/train_ppl.py"


rule checkpoint_accuracy:
    """Accuracy of every checkpoint (step 0 = base) with 95% CIs, one series per arm."""
    input:
        checkpoints=rules.checkpoint_table.output.table,
    output:
        png=f"{R}/figures/checkpoint_accuracy.png",
    log:
        log_path("figures", "checkpoint_accuracy"),
    benchmark:
        bench_path("figures", "checkpoint_accuracy")
    script:
        "../scripts/checkpoint_accuracy.py"
