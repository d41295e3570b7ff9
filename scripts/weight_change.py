"""Rule weight_change: weight-change fraction per step, arms and noise runs -> ssd_math.figures_training.weight_change."""

from ssd_math.figures_training import weight_change
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info(
        "%s",
        weight_change(
            dict(zip(sm.params.runs, sm.input.logs)),
            sm.output.png,
            noise_runs=list(sm.params.noise_runs),
            labels=dict(sm.params.labels),
        ),
    )
