# Stage 5 - evaluation. Generation jobs (one model load / one engine start per job, serving all
# its decoding conditions) write raw samples under generations/; one grading job per file writes
# the graded eval JSONL under eval/ (math-verify in a process pool with a hard per-answer limit).
#
#   generations|eval/{model}/{evalset}/T{t}.jsonl              T grid: base and every arm's final
#   generations|eval/{model}/{evalset}/T{t}-k{k}.jsonl         pass@k runs (Table 2)
#   generations|eval/{arm}/{evalset}/checkpoints/{ckpt}.jsonl  every checkpoint at the arm's T_eval
#   generations|eval/base/{evalset}/sweep/{name}.jsonl         baseline decoding sweeps (Figure A)
#
# eval_hard is eval_main's rows at the hard levels: its T-grid and sweep files are cut from
# eval_main's (rules subset_grid, subset_sweep; layout.subset_sets), not sampled again.


def get_eval_set(wildcards):
    """The problems of the job's {evalset}."""
    return L.data(wildcards.evalset)


def get_checkpoint_dirs(wildcards):
    """The checkpoint folders the job's {arm} generates from (sft.checkpoint_steps, then final
    unless it comes from the grid: layout.Layout.generated_ckpts)."""
    return [L.checkpoint_dir(wildcards.arm, c) for c in L.generated_ckpts]


def get_reused_final_source(wildcards):
    """The T-grid eval file of the arm's final model at its T_eval, which its checkpoints/final
    file is a copy of (layout.Layout.final_from_grid)."""
    return L.gen_file("eval", wildcards.arm, wildcards.evalset, f"T{fmt_t(ALL_ARMS[wildcards.arm]['t_eval'])}")


def get_reused_sweep_source(wildcards):
    """The base's T-grid eval file a sweep preset equal to a grid condition is a copy of
    (layout.Layout.sweep_from_grid)."""
    return L.reused_source(L.gen_file("eval", BASE, wildcards.evalset, f"sweep/{wildcards.name}"))


def get_generations(family):
    """The params function of rule generate_<family>: the decoding conditions its job serves,
    in the order of its outputs (layout.Layout.generations; the planner prices the same list),
    each with its decoding (ssd_math.derive.sampling_params)."""

    def generations(wildcards):
        w = dict(wildcards)
        model = w.get("model") or w.get("arm") or BASE
        return sampling_params(config, L.generations(family, model, w.get("t", ""), w.get("k", "")))

    generations.__name__ = f"get_generations_{family}"
    return generations


def get_parent_files(family):
    """The input function of rule subset_<family>: the parent eval set's generation files of the
    same conditions (layout.subset_sets: eval_hard's parent is eval_main)."""

    def parent_files(wildcards):
        parent = L.subsets[wildcards.evalset]
        if family == "grid":
            return L.grid_files("generations", wildcards.model, parent)
        return L.sweep_generated_files("generations", parent)

    parent_files.__name__ = f"get_parent_files_{family}"
    return parent_files


GENERATED_SETS = "|".join(map(re.escape, L.generated_sets))  # the sets generate_grid/_sweep sample


rule generate_grid:
    input:
        model=get_model_dir,
        problems=get_eval_set,
    output:
        samples=L.grid_files("generations", "{model}", "{evalset}"),
    wildcard_constraints:
        evalset=GENERATED_SETS,
    params:
        jobs=get_generations("grid"),
        common=GEN_COMMON,
    threads: GEN_THREADS
    resources:
        **GEN_RESOURCES,
    log:
        log_path(*L.generate_key("grid", "{model}", "{evalset}")),
    benchmark:
        bench_path(*L.generate_key("grid", "{model}", "{evalset}"))
    script:
        "../scripts/generate_eval.py"


rule generate_passk:
    input:
        model=get_model_dir,
        problems=get_eval_set,
    output:
        samples=L.passk_file("generations", "{model}", "{evalset}", "{t}", "{k}"),
    params:
        jobs=get_generations("passk"),
        common=GEN_COMMON,
    threads: GEN_THREADS
    resources:
        **GEN_RESOURCES,
    log:
        log_path(*L.generate_key("passk", "{model}", "{evalset}", "{t}", "{k}")),
    benchmark:
        bench_path(*L.generate_key("passk", "{model}", "{evalset}", "{t}", "{k}"))
    script:
        "../scripts/generate_eval.py"


CKPT_FAMILY = ["checkpoints"] if L.generated_ckpts else []
SWEEP_FAMILY = ["sweep"] if SWEEPS and L.generated_sweeps else []


rule generate_checkpoints:
    input:
        models=get_checkpoint_dirs,
        problems=get_eval_set,
    output:
        samples=L.checkpoint_generated_files("generations", "{arm}", "{evalset}"),
    params:
        jobs=get_generations("checkpoints"),
        common=GEN_COMMON,
    threads: GEN_THREADS
    resources:
        **GEN_RESOURCES,
    log:
        log_path(*L.generate_key("checkpoints", "{arm}", "{evalset}")),
    benchmark:
        bench_path(*L.generate_key("checkpoints", "{arm}", "{evalset}"))
    script:
        "../scripts/generate_eval.py"


if SWEEP_FAMILY:  # baseline decoding sweeps of the base model (config eval.sweeps)

    rule generate_sweep:
        input:
            model=L.model_dir(BASE),
            problems=get_eval_set,
        output:
            samples=L.sweep_generated_files("generations", "{evalset}"),
        wildcard_constraints:
            evalset=GENERATED_SETS,
        params:
            jobs=get_generations("sweep"),
            common=GEN_COMMON,
        threads: GEN_THREADS
        resources:
            **GEN_RESOURCES,
        log:
            log_path(*L.generate_key("sweep", BASE, "{evalset}")),
        benchmark:
            bench_path(*L.generate_key("sweep", BASE, "{evalset}"))
        script:
            "../scripts/generate_eval.py"


if L.subsets:  # eval_hard inside eval_main: its grid and sweeps are eval_main's rows of its prompts

    rule subset_grid:
        input:
            parent=get_parent_files("grid"),
            problems=get_eval_set,
        output:
            samples=L.grid_files("generations", "{model}", "{evalset}"),
        wildcard_constraints:
            evalset="|".join(map(re.escape, L.subsets)),
        log:
            log_path(*L.subset_key("grid", "{model}", "{evalset}")),
        benchmark:
            bench_path(*L.subset_key("grid", "{model}", "{evalset}"))
        script:
            "../scripts/subset_generations.py"

    if SWEEP_FAMILY:

        rule subset_sweep:
            input:
                parent=get_parent_files("sweep"),
                problems=get_eval_set,
            output:
                samples=L.sweep_generated_files("generations", "{evalset}"),
            wildcard_constraints:
                evalset="|".join(map(re.escape, L.subsets)),
            log:
                log_path(*L.subset_key("sweep", BASE, "{evalset}")),
            benchmark:
                bench_path(*L.subset_key("sweep", BASE, "{evalset}"))
            script:
                "../scripts/subset_generations.py"


# One grading job per generation job (one worker pool for all of its files): the graded file of
# generations/<path>.jsonl is eval/<path>.jsonl. Four plain rules (greppable, and named as they are
# in the SLURM profile's set-resources/set-threads); `snakemake --forcerun grade_grid` regrades
# without regenerating. _grading() derives each one's files and log wildcards from its generate_*
# rule, so the two never disagree.
def _grading(family: str):
    """(samples, graded files, log path, benchmark path) of the grading job of generate_<family>."""
    gen = getattr(rules, f"generate_{family}")
    raw = [gen.output.samples] if isinstance(gen.output.samples, str) else list(gen.output.samples)
    wcs = [f"{{{w}}}" for w in dict.fromkeys(re.findall(r"(?<!{){(\w+)}(?!})", raw[0]))]
    return raw, [L.graded(p) for p in raw], log_path("grade", family, *wcs), bench_path("grade", family, *wcs)


GRADER = dict(workers=config["eval"]["grader"]["workers"], timeout_s=config["eval"]["grader"]["timeout_s"])


rule grade_grid:
    input:
        samples=_grading("grid")[0],
    output:
        graded=_grading("grid")[1],
    params:
        **GRADER,
    threads: 1
    log:
        _grading("grid")[2],
    benchmark:
        _grading("grid")[3]
    script:
        "../scripts/grade.py"


rule grade_passk:
    input:
        samples=_grading("passk")[0],
    output:
        graded=_grading("passk")[1],
    params:
        **GRADER,
    threads: 1
    log:
        _grading("passk")[2],
    benchmark:
        _grading("passk")[3]
    script:
        "../scripts/grade.py"


if CKPT_FAMILY:  # every checkpoint of an arm that generate_checkpoints samples

    rule grade_checkpoints:
        input:
            samples=_grading("checkpoints")[0],
        output:
            graded=_grading("checkpoints")[1],
        params:
            **GRADER,
        threads: 1
        log:
            _grading("checkpoints")[2],
        benchmark:
            _grading("checkpoints")[3]
        script:
            "../scripts/grade.py"


if SWEEP_FAMILY:

    rule grade_sweep:
        input:
            samples=_grading("sweep")[0],
        output:
            graded=_grading("sweep")[1],
        params:
            **GRADER,
        threads: 1
        log:
            _grading("sweep")[2],
        benchmark:
            _grading("sweep")[3]
        script:
            "../scripts/grade.py"


# No generation twice: an eval file whose (model, prompts, decoding, seeds) equal a T-grid file's
# is a copy of that graded file (layout.Layout.reused_files): an arm's final model at its T_eval
# on the hard set (the checkpoint evals), and sweep presets equal to a grid condition of the base.
if L.final_from_grid:

    rule reuse_grid_final:
        input:
            source=get_reused_final_source,
        output:
            graded=L.gen_file("eval", "{arm}", "{evalset}", "checkpoints/final"),
        log:
            log_path("reuse", "{arm}", "{evalset}", "final"),
        benchmark:
            bench_path("reuse", "{arm}", "{evalset}", "final")
        shell:  # the file and its sidecar (where the rows came from)
            "(cp {input.source:q} {output.graded:q} && cp {input.source:q}.meta.json {output.graded:q}.meta.json) 2> {log}"


if L.sweep_from_grid:

    rule reuse_grid_sweep:
        input:
            source=get_reused_sweep_source,
        output:
            graded=L.gen_file("eval", BASE, "{evalset}", "sweep/{name}"),
        wildcard_constraints:
            name="|".join(map(re.escape, L.sweep_from_grid)),
        log:
            log_path("reuse", BASE, "{evalset}", "sweep-{name}"),
        benchmark:
            bench_path("reuse", BASE, "{evalset}", "sweep-{name}")
        shell:  # the file and its sidecar (where the rows came from)
            "(cp {input.source:q} {output.graded:q} && cp {input.source:q}.meta.json {output.graded:q}.meta.json) 2> {log}"
