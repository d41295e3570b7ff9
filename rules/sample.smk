# Stage 3 - SSD training data: sample the frozen base once per training prompt at each arm's
# T_train with top-k/top-p truncation (sharded by a wildcard, merged by a rule), then drop the
# length-stopped samples.


def get_train_generation(wildcards):
    """The shard's one generation: the frozen base under the arm's training-data decoding (its
    T_train, top-k, top-p, cap, samples per prompt; ssd_math.derive.sampling_params)."""
    return sampling_params(config, [L.train_generation(wildcards.arm)])


def get_filter_length_stop(wildcards):
    return ALL_ARMS[wildcards.arm]["filter_length_stop"]


def get_sft_reach(wildcards):
    """The step arithmetic of every arm that trains on this arm's kept samples (the arm and the
    default arms whose data it is, noise runs aside: no checkpoints): the filter stops when they
    cannot reach a checkpoint step (ssd_math.filtering.check_reach)."""
    arms = [wildcards.arm] + [a for a in ARMS if a != wildcards.arm and L.data_arm(a) == wildcards.arm]
    keys = ("global_batch", "epochs", "max_steps", "checkpoint_steps", "checkpoints_past_end")
    return {a: {k: arm_sft(config, a)[k] for k in keys} for a in arms if a not in NOISE_RUNS}


rule sample_train_shard:
    """One shard of the training-prompt pool, sampled from the frozen base (resumable)."""
    input:
        model=L.model_dir(BASE),
        prompts=L.data("train_prompts"),
    output:
        samples=temp(L.samples("{arm}", "shard{shard}")),
    params:
        jobs=get_train_generation,
        common=GEN_COMMON,
        n_shards=N_SHARDS,
    threads: GEN_THREADS
    resources:
        **GEN_RESOURCES,
    log:
        log_path(*L.sample_key("{arm}", "{shard}")),
    benchmark:
        bench_path(*L.sample_key("{arm}", "{shard}"))
    script:
        "../scripts/sample_train_shard.py"


rule merge_shards:
    """Concatenate the shards of an arm in prompt order."""
    input:
        shards=[L.samples("{arm}", f"shard{i}") for i in range(N_SHARDS)],
    output:
        samples=L.samples("{arm}"),
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
        kept=L.samples("{arm}", "kept"),
        dropped=L.samples("{arm}", "dropped"),
        summary=L.samples("{arm}", "filter_summary", "json"),
    params:
        filter_length_stop=get_filter_length_stop,
        sft_reach=get_sft_reach,
        min_kept_fraction=config["train_sampling"].get("min_kept_fraction"),
    log:
        log_path("samples", "{arm}", "filter"),
    benchmark:
        bench_path("samples", "{arm}", "filter")
    script:
        "../scripts/filter_samples.py"
