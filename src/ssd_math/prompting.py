"""Prompt rendering: the study's instruction, in the model's own chat template, thinking mode.

The same code path serves the embedded tiny model (whose template mirrors Qwen3.5's) and
Qwen3.5-4B's real template: ``apply_chat_template(..., add_generation_prompt=True,
enable_thinking=True)``. With Qwen3.5-style templates the rendered prompt ends with
``<|im_start|>assistant\\n<think>\\n``, so completions start inside the thinking block.
"""

from __future__ import annotations

import hashlib

#: The study's user turn (blog series, "data" post): solve, reason step by step, box the answer.
DEFAULT_INSTRUCTION = (
    "Solve the following competitive math problem. Reason step by step, "
    "and put your final answer within \\boxed{}.\n\n{problem}"
)


def user_message(problem: str, *, instruction: str = DEFAULT_INSTRUCTION) -> str:
    if "{problem}" not in instruction:
        raise ValueError("instruction template must contain a {problem} slot")
    # Only the slot is substituted (no str.format: LaTeX braces stay as written).
    return instruction.replace("{problem}", problem)


def render_prompt(
    tokenizer, problem: str, *, instruction: str = DEFAULT_INSTRUCTION, enable_thinking: bool = True
) -> str:
    """The exact prompt text a sampler feeds the model (no tokenization)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message(problem, instruction=instruction)}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )


def template_hash(tokenizer, instruction: str = DEFAULT_INSTRUCTION, n: int = 16) -> str:
    """A short sha256 over the chat template and the instruction (provenance of prompts)."""
    tmpl = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(tmpl, dict):  # several named templates
        tmpl = "\x00".join(f"{k}\x01{v}" for k, v in sorted(tmpl.items()))
    blob = (tmpl + "\x00" + instruction).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
