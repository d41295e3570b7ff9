"""Rule checkpoint_accuracy: accuracy per checkpoint with CIs -> ssd_math.figures_training.checkpoint_accuracy."""

from ssd_math.figures_training import checkpoint_accuracy
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info("%s", checkpoint_accuracy(sm.input.checkpoints, sm.output.png))
