"""Rule prepare_real_data: real problems -> data/{train_prompts,eval_main,eval_hard}.jsonl,
data/decontam_pairs.csv, data/data_report.json (ssd_math.prepare_real_data.prepare_real_data)."""

from ssd_math.prepare_real_data import prepare_real_data
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    out = {k: getattr(sm.output, k) for k in ("train_prompts", "eval_main", "eval_hard", "decontam", "report")}
    rep = prepare_real_data(
        sm.params.real, seed=int(sm.params.seed), outputs=out, cache_dir=sm.params.cache_dir, root=sm.params.root
    )
    log.info(
        "train_prompts %d, eval_main %d, eval_hard %d, decontam pairs %d",
        rep["train"]["n_written"],
        rep["eval"]["n_main"],
        rep["eval"]["n_hard"],
        rep["decontam"]["n_pairs"],
    )
