"""Rules generate_*: eval generations for one job's decoding conditions -> ssd_math.generate.generate_jobs.

Under a ``__main__`` guard: vLLM starts its engine in a process made with the *spawn* method
(always on CPU; on CUDA whenever CUDA was initialised first), and spawn re-runs this file in
the new process as ``__mp_main__``, where Snakemake's ``snakemake`` object does not exist.
"""

from ssd_math.generate import generate_jobs
from ssd_math.rulelog import rule_log


def main(sm) -> None:
    with rule_log(sm) as log:
        outputs = list(sm.output.samples) if not isinstance(sm.output.samples, str) else [sm.output.samples]
        counts = generate_jobs(sm.params.jobs, sm.input.problems, outputs, common=sm.params.common, threads=sm.threads)
        for out, n in zip(outputs, counts):
            log.info("%s: %d samples", out, n)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
