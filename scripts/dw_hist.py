"""Rule dw_hist: |Δw| histograms at the first, peak-LR and last steps -> ssd_math.figures_training.dw_hist."""

from ssd_math.figures_training import dw_hist
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    log.info("%s", dw_hist(dict(zip(sm.params.runs, sm.input.logs)), sm.output.png))
