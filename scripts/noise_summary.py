"""Rule noise_summary: the noise-trap numbers per run -> ssd_math.run_tables.noise_summary."""

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.run_tables import noise_summary

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    df = noise_summary(dict(zip(sm.params.runs, sm.input.logs)), dict(sm.params.recipes))
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="noise_summary", runs=list(sm.params.runs))
    log.info("\n%s", df)
