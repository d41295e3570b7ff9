"""Rule report_parts: every table, note and number the report shows, as strings ->
ssd_math.report_parts.write_parts."""

from ssd_math.io import write_meta
from ssd_math.report_parts import write_parts
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    p = sm.params
    tables = {k: v for k, v in sm.input.items() if k != "filters"}
    parts = write_parts(
        sm.output.json,
        tables,
        dict(zip(p.arms, sm.input.filters)),
        arms=list(p.arms),
        noise_runs=list(p.noise_runs),
        experiment=p.experiment,
    )
    write_meta(sm.output.json, rule="report_parts", parts=sorted(parts))
    log.info("report parts: %s", ", ".join(sorted(parts)))
