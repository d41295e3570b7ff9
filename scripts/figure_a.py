"""Rule figure_a: the base model's decoding baselines vs T and min-p -> ssd_math.figures.figure_a."""

from ssd_math.figures import figure_a
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info("%s", figure_a(sm.input.sweeps, sm.output.png, sets=list(sm.params.sets)))
