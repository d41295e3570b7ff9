# Stage 1 - data: training-prompt pool and eval sets (the "1k" and "300" roles).


if config["data"]["kind"] == "synthetic":

    rule make_synthetic_data:
        """The embedded task: problems with one checkable answer, levels, forks and locks."""
        output:
            pretrain=f"{R}/data/pretrain.jsonl",
            train_prompts=f"{R}/data/train_prompts.jsonl",
            eval_main=f"{R}/data/eval_main.jsonl",
            eval_hard=f"{R}/data/eval_hard.jsonl",
        params:
            synthetic=config["data"]["synthetic"],
            seed=config["seed"],
        log:
            log_path("data", "make_synthetic_data"),
        benchmark:
            bench_path("data", "make_synthetic_data")
        script:
            "../scripts/make_synthetic_data.py"


elif config["data"]["kind"] == "real":

    rule prepare_real_data:
        """Real problems: training pool (MATH L4-5 + NuminaMath-CoT), the ~1k eval set and its
        harder 300 subset, decontamination (exact + n-gram Jaccard) with a table of removed pairs.
        Hub datasets are downloaded at pinned revisions, so it runs where the network is."""
        localrule: True
        input:
            local=real_local_files,
        output:
            train_prompts=f"{R}/data/train_prompts.jsonl",
            eval_main=f"{R}/data/eval_main.jsonl",
            eval_hard=f"{R}/data/eval_hard.jsonl",
            decontam=f"{R}/data/decontam_pairs.csv",
            report=f"{R}/data/data_report.json",
        params:
            real=config["data"]["real"],
            seed=config["seed"],
            root=real_root(),
            cache_dir=real_cache_dir(),
        threads: 1
        resources:
            mem_mb=32000,
            runtime=120,
        log:
            log_path("data", "prepare_real_data"),
        benchmark:
            bench_path("data", "prepare_real_data")
        script:
            "../scripts/prepare_real_data.py"
