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
