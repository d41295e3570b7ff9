# Stage 2 - the base model: built and pretrained here (tiny), or fetched from the hub (real).


def get_pretrain_spec(wildcards):
    """The tiny base's pretraining spec (model.pretrain): fresh weights, gold worked solutions.
    Paths from the Layout, not from input/output: Snakemake compares only params functions of
    the wildcards alone with their last run (the params rerun trigger)."""
    return training_spec(
        config["model"]["pretrain"],
        init_dir=L.model_dir("init"),
        init_random=True,
        data=L.data("pretrain_sft"),
        out_dir=L.model_dir(BASE),
        checkpoints={},
        log=L.train_log(BASE),
        resume_dir=L.resume_dir(BASE),
        instrument={**config["model"]["pretrain"]["instrument"], "enabled": False},
    )


if config["model"]["kind"] == "tiny":

    rule build_tiny_init:
        """Tokenizer (BPE, Qwen-style chat template) and the tiny qwen3_5_text config."""
        input:
            pretrain=rules.make_synthetic_data.output.pretrain,
        output:
            init=directory(L.model_dir("init")),
        params:
            tiny=config["model"]["tiny"],
            instruction=prompt_instruction,
        log:
            log_path("model", "build_tiny_init"),
        benchmark:
            bench_path("model", "build_tiny_init")
        script:
            "../scripts/build_tiny_init.py"

    rule render_pretrain_corpus:
        """Gold worked solutions rendered through the chat template (prompt + completion rows)."""
        input:
            pretrain=rules.make_synthetic_data.output.pretrain,
            init=rules.build_tiny_init.output.init,
        output:
            corpus=L.data("pretrain_sft"),
        params:
            instruction=prompt_instruction,
        log:
            log_path("model", "render_pretrain_corpus"),
        benchmark:
            bench_path("model", "render_pretrain_corpus")
        script:
            "../scripts/render_pretrain_corpus.py"

    rule pretrain_base:
        """Pretrain the tiny base on gold worked solutions (the same training loop as SFT)."""
        input:
            init=rules.build_tiny_init.output.init,
            corpus=rules.render_pretrain_corpus.output.corpus,
        output:
            model=directory(L.model_dir(BASE)),
            log=L.train_log(BASE),
        params:
            spec=get_pretrain_spec,
            accelerate_config=accelerate_config(),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        log:
            log_path("model", "pretrain_base"),
        benchmark:
            bench_path("model", "pretrain_base")
        shell:
            f"{TRAIN_LAUNCHER} --spec-json {{params.spec:q}} > {{log}} 2>&1"

    if config["model"].get("ship_dir"):

        rule ship_base:
            """The pretrained tiny base -> model.ship_dir (the repository's models/tiny-base, which
            the default reads through fetch_base), with provenance.json: commit, recipes and their
            hashes, the CPU, the weights' sha256. On request only:
            snakemake --cores 2 ship_base --configfile config.yaml config/tiny-base.yaml"""
            input:
                model=rules.pretrain_base.output.model,
                log=rules.pretrain_base.output.log,
            output:
                model=directory(config["model"]["ship_dir"]),
            params:
                cfg=config,
                workflow_dir=workflow.basedir,
            log:
                log_path("model", "ship_base"),
            benchmark:
                bench_path("model", "ship_base")
            script:
                "../scripts/ship_base.py"

elif config["model"]["kind"] == "hub":

    # --- the rehearsal (config/rehearsal.yaml): model.rehearsal asks a rule to build the
    # folder model.hub.local_dir names (a tiny Qwen3.5-class VLM), which fetch_base then copies
    # exactly as it copies a real local model folder.
    REHEARSAL = config["model"].get("rehearsal")

    def get_rehearsal_model(wildcards):
        """The rehearsal's model folder (a rule builds it), or a shipped base's weights and
        provenance (models/tiny-base: a changed base re-fetches); nothing for a hub download."""
        local = config["model"]["hub"].get("local_dir")
        if REHEARSAL:
            return [local]
        if not local:
            return []
        folder = resolve_local_dir(local, workflow.basedir)
        return [str(p) for p in (folder / BASE_PROVENANCE, *sorted(folder.glob("*.safetensors"))) if p.exists()]

    def get_hub(wildcards):
        """model.hub with a relative local_dir taken against the workflow folder when the working
        directory has none (snakemake --directory elsewhere)."""
        hub = dict(config["model"]["hub"])
        if hub.get("local_dir") and not REHEARSAL:
            hub["local_dir"] = str(resolve_local_dir(hub["local_dir"], workflow.basedir))
        return hub

    if REHEARSAL:

        rule build_rehearsal_model:
            """Tiny random Qwen3_5ForConditionalGeneration (4B's layer pattern, a small vision
            tower), BPE tokenizer on the real prompts with Qwen's special tokens and chat template."""
            input:
                train_prompts=rules.prepare_real_data.output.train_prompts,
                eval_main=rules.prepare_real_data.output.eval_main,
            output:
                model=directory(config["model"]["hub"]["local_dir"]),
            params:
                spec=REHEARSAL,
                instruction=prompt_instruction,
                seed=config["seed"],
            threads: 2
            resources:
                mem_mb=4000,
                runtime=30,
            log:
                log_path("model", "build_rehearsal_model"),
            benchmark:
                bench_path("model", "build_rehearsal_model")
            script:
                "../scripts/build_rehearsal_model.py"

    rule fetch_base:
        """The hub base model at its pinned revision (huggingface_hub.snapshot_download), or a
        copy of model.hub.local_dir; checked for config, tokenizer, chat template and weights."""
        localrule: True
        input:
            local=get_rehearsal_model,
        output:
            model=directory(L.model_dir(BASE)),
        params:
            hub=get_hub,
            trust_remote_code=config["model"]["trust_remote_code"],
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
        log:
            log_path("model", "fetch_base"),
        benchmark:
            bench_path("model", "fetch_base")
        script:
            "../scripts/fetch_base.py"
