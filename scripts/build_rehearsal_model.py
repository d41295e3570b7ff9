"""Rule build_rehearsal_model: the rehearsal base model folder (a tiny random Qwen3.5-class
Qwen3_5ForConditionalGeneration with a BPE tokenizer trained on the real prompts) at
model.hub.local_dir -> ssd_math.rehearsal.build_rehearsal_model."""

from ssd_math.io import read_jsonl
from ssd_math.rehearsal import build_rehearsal_model
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    problems = read_jsonl(sm.input.train_prompts) + read_jsonl(sm.input.eval_main)
    info = build_rehearsal_model(
        sm.output.model,
        problems,
        instruction=sm.params.instruction,
        spec=dict(sm.params.spec),
        seed=int(sm.params.seed),
    )
    log.info(
        "%s: %s, %d parameters, vocab %d, warm-up %s",
        sm.output.model,
        info["layer_types"],
        info["n_params"],
        info["vocab"],
        info["warmup"],
    )
