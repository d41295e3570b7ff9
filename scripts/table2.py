"""Rules table2, table2_breakdown: pass@k with bootstrap CIs and paired deltas
-> ssd_math.tables.table2 (overall) / ssd_math.tables.table2_breakdown (per level and source)."""

from ssd_math.derive import fmt_t
from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import table2, table2_breakdown

sm = snakemake  # noqa: F821
build = table2_breakdown if sm.rule == "table2_breakdown" else table2
with rule_log(sm) as log:
    p = sm.params
    st = p.stats
    df = build(
        list(sm.input.evals),
        p.runs,
        int(p.k),
        p.ssd_arm,
        conf=st["conf"],
        n_boot=st["n_boot"],
        seed=st["seed"],
        fmt_t=fmt_t,
    )
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule=sm.rule, stats=st, runs=p.runs, k=p.k)
    log.info("\n%s", df)
