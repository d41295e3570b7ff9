"""Rule timings: measured time per stage from the benchmark: files -> ssd_math.run_tables.timings_table."""

from pathlib import Path

from ssd_math.io import write_csv, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.run_tables import timings_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    root = Path(sm.params.benchmarks)
    skip = tuple(sm.params.exclude)
    files = sorted(p for p in root.rglob("*.tsv") if not p.relative_to(root).as_posix().startswith(skip))
    df = timings_table(files, root)
    write_csv(df, sm.output.table)
    write_meta(sm.output.table, rule="timings", n_files=len(files), excluded=list(skip))
    log.info("%d benchmark files\n%s", len(files), df)
