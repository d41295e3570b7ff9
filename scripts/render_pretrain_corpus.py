"""Rule render_pretrain_corpus: gold worked solutions through the chat template
-> ssd_math.synth.pretrain_records."""

from ssd_math.io import read_jsonl, write_jsonl, write_meta
from ssd_math.prompting import template_hash
from ssd_math.rulelog import rule_log
from ssd_math.synth import pretrain_records
from ssd_math.tokenizer import load_tokenizer

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    tok = load_tokenizer(sm.input.init)
    rows = pretrain_records(read_jsonl(sm.input.pretrain), tok, instruction=sm.params.instruction)
    n = write_jsonl(sm.output.corpus, rows)
    write_meta(
        sm.output.corpus,
        rule="render_pretrain_corpus",
        n_rows=n,
        prompt_template_hash=template_hash(tok, sm.params.instruction),
    )
    log.info("%d pretraining rows", n)
