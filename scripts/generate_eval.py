"""Rules generate_*: eval generations for one job's decoding conditions -> ssd_math.generate.generate_jobs."""

from ssd_math.generate import generate_jobs
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    outputs = list(sm.output.samples) if not isinstance(sm.output.samples, str) else [sm.output.samples]
    counts = generate_jobs(sm.params.jobs, sm.input.problems, outputs, common=sm.params.common, threads=sm.threads)
    for out, n in zip(outputs, counts):
        log.info("%s: %d samples", out, n)
