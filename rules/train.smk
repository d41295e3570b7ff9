# Stage 4 - SFT of each arm on its own kept samples: one epoch, completion-only loss,
# checkpoints at config-fixed steps (so the DAG is static), per-step noise-trap log; and the
# noise runs (config noise_runs), trained the same way for their per-step log only.


SAVE_DTYPE = serve_dtype(config)
INTERRUPT_SFT = RUNTIME["interrupt_sft_after_step"]


# The spec functions take the wildcards only (paths from the Layout, not input/output): Snakemake
# leaves params functions of input/output out of its params rerun trigger, so a changed recipe
# (sft.lr, ...) would not rerun training.
def get_sft_spec(wildcards):
    """The arm's SFT recipe on its kept samples, checkpoints at sft.checkpoint_steps, resumable."""
    sft = arm_sft(config, wildcards.arm)
    return training_spec(
        sft,
        init_dir=L.model_dir(BASE),
        init_random=False,
        data=get_sft_kept(wildcards),
        out_dir=L.checkpoint_dir(wildcards.arm, "final"),
        checkpoints={str(s): L.checkpoint_dir(wildcards.arm, f"step{s}") for s in sft["checkpoint_steps"]},
        log=L.train_log(wildcards.arm),
        resume_dir=L.resume_dir(wildcards.arm),
        # the served dtype (bf16 for vLLM): checkpoints half the disk of fp32; the fp32 master
        # weights stay in the resume state only. Absent (fp32) in the tiny default.
        **({"save_dtype": SAVE_DTYPE} if SAVE_DTYPE else {}),
        # the resume drill (config/gpu-smoke.yaml): stop after this step's state, resume on retry
        **({"interrupt_after_step": INTERRUPT_SFT} if INTERRUPT_SFT else {}),
    )


def get_noise_run_spec(wildcards):
    """The noise run's training spec: its arm's SFT recipe on the source arm's kept samples, no
    checkpoints, no resume state; the model goes to a scratch folder the rule deletes."""
    return training_spec(
        arm_sft(config, wildcards.arm),
        init_dir=L.model_dir(BASE),
        init_random=False,
        data=get_noise_run_kept(wildcards),
        out_dir=L.noise_run_scratch(wildcards.arm),
        checkpoints={},
        log=L.noise_run_log(wildcards.arm),
        resume_dir=None,
    )


def get_noise_run_scratch(wildcards):
    return L.noise_run_scratch(wildcards.arm)


def get_noise_run_kept(wildcards):
    """The kept samples of the default arm a noise run trains on (layout.Layout.noise_run_source_arm)."""
    return L.samples(L.noise_run_source_arm(wildcards.arm), "kept")


def get_sft_kept(wildcards):
    """The kept samples the arm trains on: its own, or those of the default arm with the same
    training-data sampling and filter (layout.Layout.data_arm: the LR/batch/schedule sweeps train
    on ssd's, with no sampling job of their own)."""
    return L.samples(L.data_arm(wildcards.arm), "kept")


rule sft:
    """Fine-tune the base on one arm's kept samples (accelerate: CPU here, GPU/FSDP by profile)."""
    input:
        base=L.model_dir(BASE),
        kept=get_sft_kept,
    output:
        final=directory(L.checkpoint_dir("{arm}", "final")),
        checkpoints=[directory(L.checkpoint_dir("{arm}", f"step{s}")) for s in config["sft"]["checkpoint_steps"]],
        log=L.train_log("{arm}"),
    params:
        spec=get_sft_spec,
        accelerate_config=accelerate_config(),
    threads: 2
    resources:
        **TRAIN_RESOURCES,
    # the resume drill's second attempt resumes; None keeps the profile's retries (SLURM resubmits a
    # cancelled or failed training job, which resumes from its state)
    retries: 1 if INTERRUPT_SFT else None
    log:
        log_path(*L.sft_key("{arm}")),
    benchmark:
        bench_path(*L.sft_key("{arm}"))
    shell:
        TRAIN_LAUNCHER + " --spec-json {params.spec:q} > {log} 2>&1"


rule noise_run:
    """Train a noise run (e.g. extra_arms.bf16-state: bf16-only optimizer state) for its per-step
    noise-trap log only: the source arm's kept samples, no checkpoints, no evaluation; the model
    is deleted (it exists to show the weight-change collapse, not to be evaluated)."""
    input:
        base=L.model_dir(BASE),
        kept=get_noise_run_kept,
    output:
        log=L.noise_run_log("{arm}"),
    params:
        spec=get_noise_run_spec,
        scratch=get_noise_run_scratch,
        accelerate_config=accelerate_config(),
    threads: 2
    resources:
        **TRAIN_RESOURCES,
    log:
        log_path("train", "{arm}", "noise_run"),
    benchmark:
        bench_path("train", "{arm}", "noise_run")
    shell:
        TRAIN_LAUNCHER + " --spec-json {params.spec:q} > {log} 2>&1 && rm -rf {params.scratch:q}"
