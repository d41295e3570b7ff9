"""Rules subset_grid / subset_sweep: a subset eval set's generations from its parent's -> ssd_math.generate.subset_generations."""

from ssd_math.generate import subset_generations
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    counts = subset_generations(list(sm.input.parent), sm.input.problems, list(sm.output.samples))
    for out, n in zip(sm.output.samples, counts):
        log.info("%s: %d rows", out, n)
