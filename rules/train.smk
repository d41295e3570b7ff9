# Stage 4 - SFT of each arm on its own kept samples: one epoch, completion-only loss,
# checkpoints at config-fixed steps (so the DAG is static), per-step noise-trap log.


rule sft:
    """Fine-tune the base on one arm's kept samples (accelerate: CPU here, GPU/FSDP by profile)."""
    input:
        base=model_dir(sc.BASE),
        kept=rules.filter_samples.output.kept,
    output:
        final=directory(f"{R}/models/{{arm}}/final"),
        checkpoints=[directory(f"{R}/models/{{arm}}/step{s}") for s in config["sft"].get("checkpoint_steps", [])],
        log=f"{R}/train/{{arm}}/log.jsonl",
    params:
        spec=sft_spec,
        accelerate_config=accelerate_config(),
    threads: 2
    resources:
        mem_mb=TRAIN_MEM_MB,
        runtime=TRAIN_RUNTIME,
        gpu=TRAIN_GPUS,
    log:
        log_path("train", "{arm}"),
    benchmark:
        bench_path("train", "{arm}")
    shell:
        "accelerate launch --config_file {params.accelerate_config} -m ssd_math.train"
        " --spec-json {params.spec:q} > {log} 2>&1"
