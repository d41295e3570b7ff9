"""Rule probe_tables: classes, deltas, ground truth, fork shares, controls -> ssd_math.probe_analysis.analyse."""

from ssd_math.io import write_meta
from ssd_math.probe_analysis import analyse, write_tables
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    p = sm.params
    tables = analyse(
        sm.input.positions,
        dict(zip(p.models, sm.input.dists)),
        probe=p.probe,
        views_=p.views,
        stats_cfg=p.stats,
        share_files={tuple(k): f for k, f in zip(p.share_keys, sm.input.shares)},
        accuracy_files={tuple(k): f for k, f in zip(p.accuracy_keys, sm.input.accuracy)},
    )
    outputs = {name: getattr(sm.output, name) for name in tables}
    write_tables(tables, outputs)
    for name, path in outputs.items():
        write_meta(
            path, rule=sm.rule, table=name, probe=p.probe, views=p.views, stats=p.stats, n_rows=len(tables[name])
        )
    log.info("%s", {k: len(v) for k, v in tables.items()})
