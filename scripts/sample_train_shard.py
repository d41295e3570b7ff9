"""Rule sample_train_shard: one shard of an arm's training samples -> ssd_math.generate.generate_jobs.

Under a ``__main__`` guard, as scripts/generate_eval.py and for the same reason: the vLLM
engine's spawned process re-runs this file.
"""

from ssd_math.generate import generate_jobs
from ssd_math.rulelog import rule_log


def main(sm) -> None:
    with rule_log(sm) as log:
        p = sm.params
        job = {"model": p.model_name, "model_dir": sm.input.model, "condition": p.condition,
               "sampling": p.sampling}
        common = {"instruction": p.instruction, "backend": p.backend, "batch_size": p.batch_size,
                  "device": p.device, "seed": p.seed, "sampler_extra": p.sampler_extra,
                  "trust_remote_code": p.trust_remote_code}
        (n,) = generate_jobs([job], sm.input.prompts, [sm.output.samples], common=common,
                             threads=sm.threads, shard=(int(sm.wildcards.shard), int(p.n_shards)))
        log.info("shard %s of %s: %d samples", sm.wildcards.shard, p.n_shards, n)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
