# Stage 6b - probing locks and forks (study §6; ssd_math.probe_positions, probe_forward, probe_analysis). Carriers are the eval grid's
# generations at probe.t_eval (nothing is sampled again); one forward job per model (base and
# every probed arm) reads the next-token distributions at the chosen positions; one job turns
# them into the tables, two draw the figures.
#
#   probe/positions.jsonl              carriers (stratified) with their token ids and positions
#   probe/dists/{model}.jsonl          per position: each view's top-1 / nucleus / tail / entropy, top-5
#   tables/probe_*.csv                 deltas, positions, examples, truth, truth_effect, fork_shares, controls
#   figures/probe_scatter.png, probe_fork_shares.png

from ssd_math import probe_forward

PROBE = probe_settings(config)
PROBE_VIEWS = probe_forward.views(config)
PROBE_T = fmt_t(PROBE["t_eval"])
PROBE_MODELS = [BASE, *PROBE["arms"]]
PROBE_TABLES = ("deltas", "positions", "examples", "truth", "truth_effect", "fork_shares", "controls")


def probe_carrier_evals():
    """The graded eval files the carriers come from, one per generator (PROBE_MODELS order)."""
    return [L.gen_file("eval", m, PROBE["eval_set"], f"T{PROBE_T}") for m in PROBE_MODELS]


def probe_share_keys():
    """(model, T) of the method-share files: every probed model at probe.t_eval and at each
    probed arm's t_eval, on probe.eval_set."""
    ts = dict.fromkeys([PROBE_T, *(fmt_t(ALL_ARMS[a]["t_eval"]) for a in PROBE["arms"])])
    return [[m, t] for m in PROBE_MODELS for t in ts]


def probe_share_files():
    return [L.gen_file("eval", m, PROBE["eval_set"], f"T{t}") for m, t in probe_share_keys()]


def probe_accuracy_keys():
    """(model, eval set, T) of the control table's accuracy rows: the compare arm and each control
    on every eval set at the compare arm's t_eval and at probe.t_eval."""
    if not PROBE["controls"]:
        return []
    ts = dict.fromkeys([fmt_t(ALL_ARMS[PROBE["compare_arm"]]["t_eval"]), PROBE_T])
    return [[m, s, t] for m in [PROBE["compare_arm"], *PROBE["controls"]] for s in EVAL_SETS for t in ts]


def probe_accuracy_files():
    return [L.gen_file("eval", m, s, f"T{t}") for m, s, t in probe_accuracy_keys()]


rule probe_positions:
    """Carriers stratified by length x correctness x generator, tokenized, with their positions."""
    input:
        evals=probe_carrier_evals(),
        tokenizer=L.model_dir(BASE),
    output:
        positions=L.probe_file("positions"),
    params:
        generators=PROBE_MODELS,
        probe=PROBE,
        seed=config["seed"],
        trust_remote_code=config["model"]["trust_remote_code"],
    log:
        log_path("probe", "positions"),
    benchmark:
        bench_path("probe", "positions")
    script:
        "../scripts/probe_positions.py"


rule probe_forward:
    """One model's next-token distributions at every position: one batched forward pass per
    batch of carriers, no generation (a GPU job on the real recipe)."""
    input:
        positions=rules.probe_positions.output.positions,
        model=get_model_dir,
    output:
        dists=L.probe_file("dists/{model}"),
    params:
        views=PROBE_VIEWS,
        temperature=PROBE["temperature"],
        top_n=PROBE["top_n"],
        dtype=PROBE["dtype"],
        max_batch_tokens=RUNTIME["probe_max_batch_tokens"],
        device=DEVICE,
        trust_remote_code=config["model"]["trust_remote_code"],
    threads: 1
    resources:
        **(ONE_NODE if GEN_GPUS else {}),
        mem_mb=GEN_MEM_MB,
        runtime=GEN_RUNTIME,
        gpu=min(1, GEN_GPUS),
    log:
        log_path("probe", "forward", "{model}"),
    benchmark:
        bench_path("probe", "forward", "{model}")
    script:
        "../scripts/probe_forward.py"


rule probe_tables:
    """Classes, per-class deltas with prompt-clustered CIs, example top-5 rows, ground-truth
    recovery and effect, fork-method shares, and the control comparison."""
    input:
        positions=rules.probe_positions.output.positions,
        dists=[L.probe_file(f"dists/{m}") for m in PROBE_MODELS],
        shares=probe_share_files(),
        accuracy=probe_accuracy_files(),
    output:
        **{name: L.table(f"probe_{name}") for name in PROBE_TABLES},
    params:
        models=PROBE_MODELS,
        probe=PROBE,
        views=PROBE_VIEWS,
        stats=stats_params(),
        share_keys=probe_share_keys(),
        accuracy_keys=probe_accuracy_keys(),
    log:
        log_path("probe", "tables"),
    benchmark:
        bench_path("probe", "tables")
    script:
        "../scripts/probe_tables.py"


rule probe_scatter:
    """Top-1 probability vs nucleus size at every position, coloured by class: base vs the
    compare arm."""
    input:
        positions=rules.probe_tables.output.positions,
    output:
        png=L.figure("probe_scatter"),
    params:
        models=[BASE, PROBE["compare_arm"]],
    log:
        log_path("figures", "probe_scatter"),
    benchmark:
        bench_path("figures", "probe_scatter")
    script:
        "../scripts/probe_scatter.py"


rule probe_fork_shares:
    """Fork-method shares in sampled solutions (per model and T) and at the true forks."""
    input:
        shares=rules.probe_tables.output.fork_shares,
        effect=rules.probe_tables.output.truth_effect,
    output:
        png=L.figure("probe_fork_shares"),
    log:
        log_path("figures", "probe_fork_shares"),
    benchmark:
        bench_path("figures", "probe_fork_shares")
    script:
        "../scripts/probe_fork_shares.py"
