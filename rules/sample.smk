# Stage 3 - SSD training data: sample the frozen base once per training prompt at each arm's
# T_train with top-k/top-p truncation (sharded by a wildcard, merged by a rule), then drop the
# length-stopped samples.

# Generation jobs own their cores: they ask for GEN_THREADS and Snakemake caps that at --cores
# (snakemake --cores 2: one generation job at a time, 2 torch threads; --cores 8: up to 8); the
# sampler sets torch's threads to exactly the job's `threads`. A profile overrides it per rule
# (`set-threads:`, profiles/default/config.yaml, profiles/slurm/config.yaml).
GEN_THREADS = 16


rule sample_train_shard:
    """One shard of the training-prompt pool, sampled from the frozen base (resumable)."""
    input:
        model=model_dir(sc.BASE),
        prompts=f"{R}/data/train_prompts.jsonl",
    output:
        samples=temp(f"{R}/samples/{{arm}}/shard{{shard}}.jsonl"),
    params:
        sampling=arm_sampling,
        condition=train_condition,
        n_shards=N_SHARDS,
        instruction=prompt_instruction,
        backend=config["sampler"]["backend"],
        batch_size=config["sampler"].get("batch_size", 64),
        device=runtime("device", config["sampler"].get("device", "cpu")),
        seed=config["seed"],
        model_name=sc.BASE,
        sampler_extra=config["sampler"].get("vllm", {}),
        trust_remote_code=config["model"].get("trust_remote_code", False),
    threads: GEN_THREADS
    resources:
        mem_mb=GEN_MEM_MB,
        runtime=GEN_RUNTIME,
        gpu=GEN_GPUS,
    log:
        log_path("samples", "{arm}", "shard{shard}"),
    benchmark:
        bench_path("samples", "{arm}", "shard{shard}")
    script:
        "../scripts/sample_train_shard.py"


rule merge_shards:
    """Concatenate the shards of an arm in prompt order."""
    input:
        shards=expand(f"{R}/samples/{{{{arm}}}}/shard{{shard}}.jsonl", shard=range(N_SHARDS)),
    output:
        samples=f"{R}/samples/{{arm}}/samples.jsonl",
    log:
        log_path("samples", "{arm}", "merge"),
    benchmark:
        bench_path("samples", "{arm}", "merge")
    script:
        "../scripts/merge_shards.py"


rule filter_samples:
    """Drop length-stopped samples (truncated answers); write what was kept and dropped."""
    input:
        samples=rules.merge_shards.output.samples,
    output:
        kept=f"{R}/samples/{{arm}}/kept.jsonl",
        dropped=f"{R}/samples/{{arm}}/dropped.jsonl",
        summary=f"{R}/samples/{{arm}}/filter_summary.json",
    params:
        filter_length_stop=arm_filters_length_stop,
    log:
        log_path("samples", "{arm}", "filter"),
    benchmark:
        bench_path("samples", "{arm}", "filter")
    script:
        "../scripts/filter_samples.py"
