"""A small Qwen-style byte-level BPE tokenizer with a Qwen3.5-style thinking chat template.

Mirrors what matters of Qwen's tokenizer: byte-level BPE (any text round-trips), Qwen2's
pre-tokenizer regex (so digits are split one per token, ``\\p{N}``), the ChatML special tokens
``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos), and ``<think>`` / ``</think>`` as
single added tokens. As in Qwen3, ``<think>``/``</think>`` are *not* special: decoding with
``skip_special_tokens=True`` keeps them.

The chat template mirrors the Qwen3.5 / Qwen3-Thinking convention for thinking mode: the
generation prompt is ``<|im_start|>assistant\\n<think>\\n`` (the model starts inside its thinking
block); ``enable_thinking=False`` renders ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``
(an empty thinking block), as Qwen3's template does. Assistant turns in a history are rendered
with their reasoning (``reasoning_content`` or the part before ``</think>``) in a think block. The
tool-calling branches of the real template are left out (the task has no tools).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]

#: Qwen2/Qwen3's pre-tokenizer pattern: one digit per pre-token (``\p{N}``), letters in words.
QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}"
    "{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{- '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def _raw_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def build_tokenizer(texts: Iterable[str], out_dir=None, *, vocab_size: int = 512):
    """Train the BPE on ``texts`` and return a ``PreTrainedTokenizerFast`` (saved to ``out_dir``
    with ``save_pretrained`` when given). Deterministic for the same texts and vocab size."""
    from transformers import PreTrainedTokenizerFast

    tok = _raw_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(str(out_dir))
    return hf


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
