"""Rule training_curves: loss / perplexity, LR and gradient norm per arm -> ssd_math.figures_training.training_curves."""

from ssd_math.figures_training import training_curves
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm):
    training_curves(dict(zip(sm.params.arms, sm.input.logs)), sm.output.png)
