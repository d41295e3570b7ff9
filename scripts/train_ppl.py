"""Rule train_ppl: training perplexity per step, arms and noise runs -> ssd_math.figures_training.train_ppl."""

from ssd_math.figures_training import train_ppl
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info(
        "%s", train_ppl(dict(zip(sm.params.runs, sm.input.logs)), sm.output.png, noise_runs=list(sm.params.noise_runs))
    )
