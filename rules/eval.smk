# Stage 5 - evaluation. Generation jobs (one model load / one engine start per job, serving all
# its decoding conditions) write raw samples under generations/; one grading job per file writes
# the graded eval JSONL under eval/ (math-verify in a process pool with a hard per-answer limit).
#
#   generations|eval/{model}/{evalset}/T{t}.jsonl              T grid: base and every arm's final
#   generations|eval/{model}/{evalset}/T{t}-k{k}.jsonl         pass@k runs (Table 2)
#   generations|eval/{arm}/{evalset}/checkpoints/{ckpt}.jsonl  every checkpoint at the arm's T_eval
#   generations|eval/base/{evalset}/sweep/{name}.jsonl         baseline decoding sweeps (Figure A)


def eval_set_file(wildcards):
    return f"{R}/data/{wildcards.evalset}.jsonl"


def gen_common():
    return {
        "instruction": config["prompt"]["instruction"],
        "backend": config["sampler"]["backend"],
        "batch_size": config["sampler"].get("batch_size", 64),
        "device": runtime("device", config["sampler"].get("device", "cpu")),
        "seed": config["seed"],
        "sampler_extra": config["sampler"].get("vllm", {}),
        "trust_remote_code": config["model"].get("trust_remote_code", False),
    }


def grid_jobs(wildcards):
    """One generation per T of the grid, in the order of the rule's outputs."""
    return [
        {"model": wildcards.model, "model_dir": model_dir(wildcards.model), "condition": name, "sampling": s}
        for name, s in grid_conditions().items()
    ]


def arm_checkpoint_dirs(wildcards):
    return checkpoint_dirs(wildcards.arm)


def passk_jobs(wildcards):
    s = sc.grid_decoding(config, float(wildcards.t), n=int(wildcards.k))
    return [{"model": wildcards.model, "model_dir": model_dir(wildcards.model),
             "condition": f"T{wildcards.t}-k{wildcards.k}", "sampling": s}]


def checkpoint_jobs(wildcards):
    t = float(ALL_ARMS[wildcards.arm]["t_eval"])
    return [
        {"model": f"{wildcards.arm}/{c}", "model_dir": f"{R}/models/{wildcards.arm}/{c}",
         "condition": f"T{sc.fmt_t(t)}", "sampling": sc.grid_decoding(config, t)}
        for c in CKPTS
    ]


def sweep_jobs(wildcards):
    return [
        {"model": sc.BASE, "model_dir": model_dir(sc.BASE), "condition": name, "sampling": s}
        for name, s in SWEEPS.items()
    ]


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
    threads: 1
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
    threads: 1
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
    threads: 1
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
        threads: 1
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
