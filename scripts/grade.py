"""Rules grade_*: math-verify (gold first) in worker processes with a hard per-answer limit
-> ssd_math.grading_pool.grade_files (one pool for all of the job's files)."""

from ssd_math.grading_pool import grade_files
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    counts = grade_files(
        list(sm.input.samples),
        list(sm.output.graded),
        workers=int(sm.params.workers),
        timeout_s=float(sm.params.timeout_s),
    )
    for out, c in zip(sm.output.graded, counts):
        log.info("graded %s: %s", out, c)
