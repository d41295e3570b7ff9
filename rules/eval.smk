# Stage 5 - evaluation. Generation jobs (one model load / one engine start per job, serving all
# its decoding conditions) write raw samples under generations/; one grading job per file writes
# the graded eval JSONL under eval/ (math-verify in a process pool with a hard per-answer limit).
#
#   generations|eval/{model}/{evalset}/T{t}.jsonl              T grid: base and every arm's final
#   generations|eval/{model}/{evalset}/T{t}-k{k}.jsonl         pass@k runs (Table 2)
#   generations|eval/{arm}/{evalset}/checkpoints/{ckpt}.jsonl  every checkpoint at the arm's T_eval
#   generations|eval/base/{evalset}/sweep/{name}.jsonl         baseline decoding sweeps (Figure A)


# GEN_MEM_MB / GEN_RUNTIME / GEN_GPUS: rules/plan.smk (GPUs follow sampler.backend / vllm TP).
GEN_RESOURCES = dict(mem_mb=GEN_MEM_MB, runtime=GEN_RUNTIME, gpu=GEN_GPUS)


rule generate_grid:
    input:
        model=model_dir_of,
        problems=eval_set_file,
    output:
        samples=expand(f"{R}/generations/{{{{model}}}}/{{{{evalset}}}}/T{{t}}.jsonl", t=TGRID),
    params:
        jobs=grid_jobs,
        common=gen_common(),
    threads: GEN_THREADS  # rules/sample.smk
    resources:
        **GEN_RESOURCES,
    log:
        log_path("generate", "{model}", "{evalset}", "grid"),
    benchmark:
        bench_path("generate", "{model}", "{evalset}", "grid")
    script:
        "../scripts/generate_eval.py"


rule generate_passk:
    input:
        model=model_dir_of,
        problems=eval_set_file,
    output:
        samples=f"{R}/generations/{{model}}/{{evalset}}/T{{t}}-k{{k}}.jsonl",
    params:
        jobs=passk_jobs,
        common=gen_common(),
    threads: GEN_THREADS  # rules/sample.smk
    resources:
        **GEN_RESOURCES,
    log:
        log_path("generate", "{model}", "{evalset}", "T{t}-k{k}"),
    benchmark:
        bench_path("generate", "{model}", "{evalset}", "T{t}-k{k}")
    script:
        "../scripts/generate_eval.py"


rule generate_checkpoints:
    input:
        models=arm_checkpoint_dirs,
        problems=eval_set_file,
    output:
        samples=expand(f"{R}/generations/{{{{arm}}}}/{{{{evalset}}}}/checkpoints/{{ckpt}}.jsonl", ckpt=CKPTS),
    params:
        jobs=checkpoint_jobs,
        common=gen_common(),
    threads: GEN_THREADS  # rules/sample.smk
    resources:
        **GEN_RESOURCES,
    log:
        log_path("generate", "{arm}", "{evalset}", "checkpoints"),
    benchmark:
        bench_path("generate", "{arm}", "{evalset}", "checkpoints")
    script:
        "../scripts/generate_eval.py"


if SWEEPS:  # baseline decoding sweeps of the base model (config eval.sweeps)

    rule generate_sweep:
        input:
            model=model_dir(sc.BASE),
            problems=eval_set_file,
        output:
            samples=expand(f"{R}/generations/base/{{{{evalset}}}}/sweep/{{name}}.jsonl", name=list(SWEEPS)),
        params:
            jobs=sweep_jobs,
            common=gen_common(),
        threads: GEN_THREADS  # rules/sample.smk
        resources:
            **GEN_RESOURCES,
        log:
            log_path("generate", "base", "{evalset}", "sweep"),
        benchmark:
            bench_path("generate", "base", "{evalset}", "sweep")
        script:
            "../scripts/generate_eval.py"


# One grading job per generation job (one worker pool for all of its files): the graded file of
# generations/<path>.jsonl is eval/<path>.jsonl. Defined in a loop so the four families share
# one definition; `snakemake --forcerun grade_grid` regrades without regenerating.
for _family in ("grid", "passk", "checkpoints", "sweep") if SWEEPS else ("grid", "passk", "checkpoints"):
    _gen = getattr(rules, f"generate_{_family}")
    _raw = list(_gen.output.samples) if not isinstance(_gen.output.samples, str) else [_gen.output.samples]
    _wc = list(dict.fromkeys(re.findall(r"(?<!{){(\w+)}(?!})", _raw[0])))

    rule:
        name:
            f"grade_{_family}"
        input:
            samples=_raw,
        output:
            graded=[p.replace(f"{R}/generations/", f"{R}/eval/", 1) for p in _raw],
        params:
            workers=config["eval"]["grader"].get("workers", 2),
            timeout_s=config["eval"]["grader"].get("timeout_s", 5.0),
        threads: 1
        log:
            log_path("grade", _family, *[f"{{{w}}}" for w in _wc]),
        benchmark:
            bench_path("grade", _family, *[f"{{{w}}}" for w in _wc])
        script:
            "../scripts/grade.py"
