"""Rule grade: math-verify in a process pool with a hard per-answer limit -> ssd_math.grading.grade_file."""

from ssd_math.grading import grade_file
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    counts = grade_file(sm.input.samples, sm.output.graded, workers=int(sm.params.workers),
                        timeout_s=float(sm.params.timeout_s))
    log.info("graded %s: %s", sm.output.graded, counts)
