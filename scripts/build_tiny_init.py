"""Rule build_tiny_init: BPE tokenizer + chat template and the tiny qwen3_5_text config
-> ssd_math.tokenizer.build_tokenizer, ssd_math.modeling.init_model_dir."""

from ssd_math.io import atomic_path, read_jsonl, write_meta
from ssd_math.modeling import config_for_tokenizer, init_model_dir
from ssd_math.rulelog import rule_log
from ssd_math.synth import tokenizer_corpus
from ssd_math.tokenizer import build_tokenizer

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    tiny = dict(sm.params.tiny)
    texts = tokenizer_corpus(read_jsonl(sm.input.pretrain), instruction=sm.params.instruction)
    with atomic_path(sm.output.init, is_dir=True) as tmp:
        tok = build_tokenizer(texts, tmp, vocab_size=int(tiny.pop("vocab_size")))
        cfg = config_for_tokenizer(tok, **tiny)
        init_model_dir(tmp, cfg, tok)
    write_meta(sm.output.init, rule="build_tiny_init", tiny=sm.params.tiny, vocab=len(tok))
    log.info("tokenizer: %d tokens; config: %s", len(tok), cfg.to_dict())
