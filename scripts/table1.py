"""Rules table1, table1_breakdown: accuracy with CIs and paired SSD − base deltas
-> ssd_math.tables.table1 (overall) / ssd_math.tables.table1_breakdown (per level and source)."""

from ssd_math.derive import fmt_t
from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import table1, table1_breakdown

sm = snakemake  # noqa: F821
build = table1_breakdown if sm.rule == "table1_breakdown" else table1
with rule_log(sm) as log:
    p = sm.params
    it = iter(sm.input.evals)  # the order of rule table1's inputs: rows x sets
    files = {(r["model"], fmt_t(r["temperature"]), s): next(it) for r in p.rows for s in p.sets}
    st = p.stats
    df = build(files, p.rows, p.sets, p.ssd_arm, conf=st["conf"], n_boot=st["n_boot"], seed=st["seed"], fmt_t=fmt_t)
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule=sm.rule, stats=st, rows=p.rows, ssd_arm=p.ssd_arm)
    log.info("\n%s", df)
