"""Rule power: variance decomposition and sample-size planning -> ssd_math.run_tables.power_table."""

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.run_tables import power_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    pl_ = sm.params.planning
    df = power_table(
        list(sm.input.evals), sm.params.results, deltas=pl_["deltas"], alpha=pl_["alpha"], power=pl_["power"]
    )
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="power", planning=dict(pl_))
    log.info("\n%s", df)
