"""Rule figure_c: accuracy (hard set) and extracted-answer rate vs T_eval -> ssd_math.figures.figure_c."""

from ssd_math.figures import figure_c
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm):
    figure_c(sm.input.metrics, sm.output.png, hard_set=sm.params.hard_set, models=list(sm.params.models))
