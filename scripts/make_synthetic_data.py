"""Rule make_synthetic_data: the embedded task's splits -> ssd_math.synth.build_splits."""

from ssd_math.io import write_jsonl, write_meta
from ssd_math.rulelog import rule_log
from ssd_math.synth import build_splits

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    cfg = {**sm.params.synthetic, "seed": int(sm.params.seed)}
    splits = build_splits(cfg)
    for name in ("pretrain", "train_prompts", "eval_main", "eval_hard"):
        n = write_jsonl(getattr(sm.output, name), splits[name])
        write_meta(getattr(sm.output, name), rule="make_synthetic_data", split=name, n_rows=n, synthetic=cfg)
        log.info("%s: %d rows", name, n)
