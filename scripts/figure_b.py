"""Rule figure_b: observed gradient norm vs estimated signal |G| per arm -> ssd_math.figures_training.figure_b."""

from ssd_math.figures_training import figure_b
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info(
        "%s",
        figure_b(
            dict(zip(sm.params.arms, sm.input.logs)), sm.output.png, checkpoint_steps=list(sm.params.checkpoint_steps)
        ),
    )
