"""Rule merge_shards: concatenate an arm's sampling shards -> ssd_math.generate.merge_shards."""

from ssd_math.generate import merge_shards
from ssd_math.rulelog import rule_log

with rule_log(snakemake) as log:  # noqa: F821
    n = merge_shards(list(snakemake.input.shards), snakemake.output.samples)
    log.info("merged %d rows from %d shards", n, len(snakemake.input.shards))
