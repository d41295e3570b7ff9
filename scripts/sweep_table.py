"""Rule sweep_table: the base model's decoding baselines (Figure A's numbers) -> ssd_math.tables.sweep_table."""

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import sweep_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    df = sweep_table(sm.input.metrics)
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="sweep_table")
    log.info("\n%s", df)
