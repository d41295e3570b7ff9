"""The rehearsal base (config key ``model.rehearsal``; config/rehearsal.yaml): Qwen3.5-4B's
architecture at rehearsal size (:func:`ssd_math.modeling.rehearsal_config`), a tokenizer trained
on the real prompts, and a short warm-up with the project's own training loop (``ssd_math.train``)
so that its samples stop and box an answer. Rule build_rehearsal_model calls
:func:`build_rehearsal_model`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .io import atomic_path, write_jsonl, write_meta
from .modeling import QWEN35_4B_SHAPE, generation_config_for, n_params, rehearsal_config, rehearsal_spec
from .prompting import render_prompt, user_message
from .tokenizer import VISION_TOKENS, build_tokenizer, load_tokenizer
from .train import train


def warmup_records(problems: list[dict], tokenizer, *, instruction: str, tail_chars: int = 48) -> list[dict]:
    """Training rows that teach a random rehearsal base the *shape* of an answer (think block,
    ``\\boxed{gold}``, eos), so that its samples stop and get graded: ``{prompt, completion}``.
    The prompt is the chat template around the problem's last ``tail_chars`` characters (a short
    context keeps this warm-up cheap; the pattern follows the generation prompt either way)."""
    return [
        {
            "prompt": render_prompt(tokenizer, p["problem"][-tail_chars:], instruction="{problem}"),
            "completion": f"Let me think.\n</think>\n\nThe answer is $\\boxed{{{p['answer']}}}$.",
            "finish_reason": "stop",
        }
        for p in problems
    ]


def build_rehearsal_model(
    out_dir, problems: list[dict], *, instruction: str, spec: dict | None = None, seed: int = 0, work_dir=None
) -> dict:
    """The rehearsal base model folder (what ``model.hub.local_dir`` points at): a BPE tokenizer
    with Qwen's special tokens and :data:`CHAT_TEMPLATE`, trained on the rendered ``problems``;
    a seeded random ``Qwen3_5ForConditionalGeneration`` (:func:`rehearsal_config`), whose language
    model is then warmed up for a few steps on :func:`warmup_records` (``ssd_math.train``, so it
    stops and boxes an answer), and saved back with the vision tower in Qwen3.5's checkpoint
    layout (``model.language_model.*``, ``model.visual.*``). Written atomically; returns a summary."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    s = rehearsal_spec(spec)
    warm = s["warmup"]
    if not problems:
        raise ValueError("build_rehearsal_model: no problems to train the tokenizer on")
    texts = [user_message(p["problem"], instruction=instruction) + f" \\boxed{{{p['answer']}}}" for p in problems]
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        tok = build_tokenizer(texts, tmp, vocab_size=int(s["vocab_size"]), extra_special_tokens=VISION_TOKENS)
        tok = load_tokenizer(tmp)
        cfg = rehearsal_config(tok, s)
        torch.manual_seed(int(seed))
        vlm = Qwen3_5ForConditionalGeneration(cfg)
        vlm.generation_config = generation_config_for(tok)
        vlm.save_pretrained(str(tmp))
        scratch = Path(work_dir or tempfile.mkdtemp(prefix="rehearsal-warmup."))
        scratch.mkdir(parents=True, exist_ok=True)
        summary = {"steps": 0}
        if int(warm["steps"]) > 0:
            data = scratch / "warmup.jsonl"
            write_jsonl(data, warmup_records(problems, tok, instruction=instruction))
            summary = train(
                {
                    "init_dir": str(tmp),
                    "data": str(data),
                    "out_dir": str(scratch / "lm"),
                    "log": str(scratch / "log.jsonl"),
                    "seed": int(seed),
                    "epochs": max(1, -(-int(warm["steps"]) * int(warm["batch"]) // len(problems))),
                    "max_steps": int(warm["steps"]),
                    "global_batch": int(warm["batch"]),
                    "micro_batch": int(warm["batch"]),
                    "max_len": int(warm["max_len"]),
                    "lr": float(warm["lr"]),
                    "min_lr": float(warm["lr"]) / 10,
                    "warmup_steps": 5,
                    "progress": False,
                    "instrument": {"enabled": False},
                }
            )
            lm = AutoModelForCausalLM.from_pretrained(str(scratch / "lm"), dtype=torch.float32)
            # the warmed-up language model back into the VLM (same parameter names under
            # model.language_model.*), vision tower untouched, saved in Qwen3.5's layout
            missing, unexpected = vlm.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
            vlm.save_pretrained(str(tmp))
        shutil.rmtree(scratch, ignore_errors=True)
        info = {
            "rule": "build_rehearsal_model",
            "architecture": "Qwen3_5ForConditionalGeneration",
            "layer_types": cfg.text_config.layer_types,
            "vocab": len(tok),
            "n_params": n_params(vlm),
            "n_params_language_model": n_params(vlm.model.language_model),
            "n_prompts": len(problems),
            "warmup": {**warm, **{k: summary.get(k) for k in ("steps", "final_loss")}},
            "seed": int(seed),
            "reference_shape": QWEN35_4B_SHAPE,
        }
        write_meta(tmp, **info)
    return info
