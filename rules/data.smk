# Stage 1 - data: training-prompt pool and eval sets (the "1k" and "300" roles).


if config["data"]["kind"] == "real":
    # Config-time check, before any job: a missing data.real.root folder or local source file
    # is a ConfigError naming its key (never a MissingInputException). Relative roots resolve
    # against this workflow's folder (ssd_math.prepare_real_data.resolve_root).
    from ssd_math import prepare_real_data as _prepare_real

    REAL_ROOT = str(_prepare_real.check_local_sources(config["data"]["real"], workflow.basedir))

    def get_real_local_files(wildcards):
        """Local source files (enabled ones) as inputs, so an edited file reruns the rule."""
        real = config["data"]["real"]
        out = []
        for part in ("train", "eval"):
            for src in real[part]["sources"]:
                if src.get("enabled", True) and src.get("path"):
                    out.append(os.path.join(REAL_ROOT, src["path"]))  # absolute paths stay
        return out


if config["data"]["kind"] == "synthetic":

    rule make_synthetic_data:
        """The embedded task: problems with one checkable answer, levels, forks and locks."""
        output:
            pretrain=L.data("pretrain"),
            train_prompts=L.data("train_prompts"),
            eval_main=L.data("eval_main"),
            eval_hard=L.data("eval_hard"),
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
            local=get_real_local_files,
        output:
            train_prompts=L.data("train_prompts"),
            eval_main=L.data("eval_main"),
            eval_hard=L.data("eval_hard"),
            decontam=L.data("decontam_pairs", "csv"),
            report=L.data("data_report", "json"),
        params:
            real=config["data"]["real"],
            seed=config["seed"],
            root=REAL_ROOT,
            cache_dir=L.real_cache_dir(),
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
