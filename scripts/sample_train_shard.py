"""Rule sample_train_shard: one shard of an arm's training samples -> ssd_math.generate.generate_jobs.

Under a ``__main__`` guard, as scripts/generate_eval.py and for the same reason: the vLLM
engine's spawned process re-runs this file.
"""

from ssd_math.generate import generate_jobs
from ssd_math.rulelog import rule_log


def main(sm) -> None:
    with rule_log(sm) as log:
        shard, n_shards = int(sm.wildcards.shard), int(sm.params.n_shards)
        (n,) = generate_jobs(
            sm.params.jobs,
            sm.input.prompts,
            [sm.output.samples],
            common=sm.params.common,
            threads=sm.threads,
            shard=(shard, n_shards),
        )
        log.info("shard %s of %s: %d samples", shard, n_shards, n)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
