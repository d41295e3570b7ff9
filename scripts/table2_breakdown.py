"""Rule table2_breakdown: pass@k per level and per source -> ssd_math.tables.table2_breakdown."""

from ssd_math.config import fmt_t
from ssd_math.io import write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import table2_breakdown, write_csv

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    p = sm.params
    st = p.stats
    df = table2_breakdown(list(sm.input.evals), p.runs, int(p.k), p.ssd_arm, conf=st["conf"], n_boot=st["n_boot"],
                          seed=st["seed"], fmt_t=fmt_t)
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="table2_breakdown", stats=st, runs=p.runs, k=p.k)
    log.info("\n%s", df)
