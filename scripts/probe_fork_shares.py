"""Rule probe_fork_shares: fork-method shares in sampled solutions and at true forks -> ssd_math.figures_probe.probe_fork_shares."""

from ssd_math.figures_probe import probe_fork_shares
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm):
    probe_fork_shares(sm.input.shares, sm.input.effect, sm.output.png)
