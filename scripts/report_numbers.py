"""Rule report_numbers: the numbers the report's prose quotes -> ssd_math.tables.report_numbers."""

from ssd_math.io import write_json, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.tables import report_numbers

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    numbers = report_numbers(sm.input.table1, sm.input.sweeps)
    write_json(sm.output.json, numbers)
    write_meta(sm.output.json, rule="report_numbers")
    log.info("report numbers: %s", numbers)
