"""Rule checkpoint_table: accuracy per checkpoint beside the training log -> ssd_math.run_tables.checkpoint_table."""

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.run_tables import checkpoint_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    df = checkpoint_table(sm.input.metrics, dict(zip(sm.params.arms, sm.input.logs)))
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="checkpoint_table", arms=list(sm.params.arms))
    log.info("\n%s", df)
