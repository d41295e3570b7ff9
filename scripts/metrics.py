"""Rule metrics: accuracy and rates with CIs per eval file, plus breakdowns -> ssd_math.tables.metrics_table."""

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import metrics_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    st = sm.params.stats
    metrics, breakdown = metrics_table(
        list(sm.input.evals), sm.params.results, conf=st["conf"], n_boot=st["n_boot"], seed=st["seed"]
    )
    write_csv(metrics, sm.output.metrics)
    write_csv(breakdown, sm.output.breakdown)
    write_meta(sm.output.metrics, rule="metrics", stats=st, n_files=len(sm.input.evals))
    log.info("metrics for %d eval files", metrics.height)
