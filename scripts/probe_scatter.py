"""Rule probe_scatter: positions' top-1 vs nucleus size by class, base vs the compare arm -> ssd_math.figures_probe.probe_scatter."""

from ssd_math.figures_probe import probe_scatter
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm):
    probe_scatter(sm.input.positions, sm.output.png, models=list(sm.params.models))
