"""A small Qwen-style byte-level BPE tokenizer with a Qwen3.5-style thinking chat template.

Mirrors what matters of Qwen's tokenizer: byte-level BPE (any text round-trips), Qwen2's
pre-tokenizer regex (so digits are split one per token, ``\\p{N}``), the ChatML special tokens
``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos), and ``<think>`` / ``</think>`` as
single added tokens. As in Qwen3, ``<think>``/``</think>`` are *not* special: decoding with
``skip_special_tokens=True`` keeps them.

The chat template (:data:`CHAT_TEMPLATE`) renders text chats exactly as Qwen3.5's published
template does: the thinking-mode generation prompt is ``<|im_start|>assistant\\n<think>\\n`` (the
model starts inside its thinking block); ``enable_thinking=False`` renders an empty thinking
block ``<think>\\n\\n</think>\\n\\n``; message contents are trimmed; an assistant turn after the
last user turn carries its reasoning (``reasoning_content`` or the text before ``</think>``) in a
think block, earlier assistant turns are rendered without it. The tool-calling and vision
branches of the real template are left out (they raise): the task has neither.
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

#: Qwen3.5's published chat template (Qwen/Qwen3.5-4B ``chat_template.jinja``), rewritten for
#: text-only chats: the same output for system / user / assistant turns (contents trimmed; an
#: assistant turn after the last user turn keeps its reasoning in a think block, earlier ones
#: lose it; ``reasoning_content`` or the text before ``</think>``), text parts of list contents
#: concatenated, and the thinking-mode generation prompt. Tools, images and videos raise (the
#: task has none). tests/test_rehearsal.py checks the rendering against strings rendered by
#: the published template.
CHAT_TEMPLATE = (
    "{%- macro text(c) %}"
    "{%- if c is string %}{{- c }}"
    "{%- elif c is iterable and c is not mapping %}"
    "{%- for part in c %}"
    "{%- if part.type == 'text' or (part is mapping and 'text' in part) %}{{- part.text }}"
    "{%- else %}{{- raise_exception('only text content is supported by this chat template') }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- endmacro %}"
    "{%- if not messages %}{{- raise_exception('No messages provided.') }}{%- endif %}"
    "{%- if tools %}{{- raise_exception('tools are not supported by this chat template') }}{%- endif %}"
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- if ns.last_user < 0 %}{{- raise_exception('No user query found in messages.') }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- set content = text(m.content) | trim %}"
    "{%- if m.role == 'system' %}"
    "{%- if not loop.first %}{{- raise_exception('System message must be at the beginning.') }}{%- endif %}"
    "{{- '<|im_start|>system\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'user' %}"
    "{{- '<|im_start|>user\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{%- set reasoning = '' %}"
    "{%- if m.reasoning_content is string %}"
    "{%- set reasoning = m.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_user %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + (reasoning | trim) + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- else %}{{- raise_exception('Unexpected message role.') }}"
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

#: Qwen3.5's vision placeholders (special tokens of its tokenizer): a
#: ``Qwen3_5ForConditionalGeneration`` config names their ids.
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _raw_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def build_tokenizer(
    texts: Iterable[str], out_dir=None, *, vocab_size: int = 512, extra_special_tokens: Iterable[str] = ()
):
    """Train the BPE on ``texts`` and return a ``PreTrainedTokenizerFast`` (saved to ``out_dir``
    with ``save_pretrained`` when given). Deterministic for the same texts and vocab size.
    ``extra_special_tokens`` (e.g. :data:`VISION_TOKENS`) are added after Qwen's three."""
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
    special = SPECIAL_TOKENS + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
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


# tokenizer_config.json classes that are transformers' plain tokenizers-backed class: the
# tokenizer this module builds saves "TokenizersBackend" (transformers 5; older files say
# "PreTrainedTokenizerFast", its alias)
PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path, *, trust_remote_code: bool = False):
    """The tokenizer saved in ``path`` (every job loads it through here).

    A folder whose ``tokenizer_config.json`` names the plain tokenizers-backed class (what
    :func:`build_tokenizer` saves) and no remote code is loaded with that class directly:
    ``AutoTokenizer`` returns the same class and tokens but its import pulls in torch and
    transformers' model registry, seconds of start-up that rule render_pretrain_corpus (it needs
    only the tokenizer, and pretraining waits for it) would pay for nothing (its ``benchmark:``
    file shows the time). Any other folder (a hub model's own tokenizer class, ``auto_map``)
    goes through ``AutoTokenizer``, with ``trust_remote_code``."""
    import json

    cfg_file = Path(path) / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    if cfg.get("tokenizer_class") in PLAIN_TOKENIZER_CLASSES and "auto_map" not in cfg:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(path))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
