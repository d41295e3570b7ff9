"""The embedded tiny base model: a Qwen3.5-class text model (``qwen3_5_text``), full attention only.

Qwen3.5 interleaves linear-attention (Gated DeltaNet) layers with full-attention ones; on CPU the
linear ones fall back to slow reference kernels, so the tiny model uses ``full_attention`` in every
layer. Everything else is the real architecture (gated attention, q/k RMSNorm, GQA, SwiGLU,
partial RoPE), loaded by ``AutoModelForCausalLM`` without ``trust_remote_code``.

Embeddings are tied (``tie_word_embeddings=True``), as in the small Qwen3/Qwen3.5 checkpoints; with
a ~400-token vocabulary the embedding is a small share of the parameters either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config_checks, schema


def _round_up(n: int, m: int) -> int:
    return ((n + m - 1) // m) * m


def tiny_config(
    vocab_size: int,
    *,
    hidden: int = 192,
    layers: int = 4,
    heads: int = 6,
    kv_heads: int = 2,
    head_dim: int | None = None,
    intermediate: int = 512,
    max_pos: int = 512,
    tie_embeddings: bool = True,
    partial_rotary_factor: float = 1.0,
    rope_theta: float = 10000.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    pad_vocab_to: int = 64,
):
    """A ``Qwen3_5TextConfig`` for a tiny model. ``vocab_size`` is rounded up to a multiple of
    ``pad_vocab_to`` (the tokenizer may be smaller than the embedding, never larger)."""
    from transformers import Qwen3_5TextConfig

    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    if heads % kv_heads:
        raise ValueError(f"heads {heads} is not divisible by kv_heads {kv_heads}")
    return Qwen3_5TextConfig(
        vocab_size=_round_up(int(vocab_size), pad_vocab_to) if pad_vocab_to else int(vocab_size),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim or hidden // heads,
        max_position_embeddings=max_pos,
        layer_types=["full_attention"] * layers,
        tie_word_embeddings=tie_embeddings,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": rope_theta,
            "partial_rotary_factor": partial_rotary_factor,
        },
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        use_cache=True,
    )


def config_for_tokenizer(tokenizer, **kw):
    """:func:`tiny_config` with vocab size and eos/pad ids taken from ``tokenizer``."""
    return tiny_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kw)


def generation_config_for(tokenizer):
    from transformers import GenerationConfig

    # Qwen's shipped thinking-mode defaults; samplers always pass their own parameters.
    return GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )


def init_model_dir(out_dir, config, tokenizer, *, with_weights: bool = False, seed: int = 0) -> Path:
    """Write ``config.json``, the tokenizer and ``generation_config.json`` into ``out_dir`` (what
    ``ssd_math.train.train`` needs with ``init_random: true``). ``with_weights`` also saves freshly
    initialised weights (seeded), e.g. for tests of the samplers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if with_weights:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config = generation_config_for(tokenizer)
        model.save_pretrained(str(out))
    else:
        config.save_pretrained(str(out))
        generation_config_for(tokenizer).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def load_model(model_dir, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """Load a causal LM for inference. ``trust_remote_code`` (config ``model.trust_remote_code``)
    is off unless the config turns it on: a model folder's own Python code never runs by default."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=getattr(torch, dtype), trust_remote_code=bool(trust_remote_code)
    )
    return model.to(device).eval()


def n_params(model) -> int:
    # unique parameters (tied embeddings counted once)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def describe(model_dir) -> dict:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    keys = (
        "model_type",
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "tie_word_embeddings",
    )
    return {k: cfg.get(k) for k in keys}


# ------------------------------------------------------------------------------------------
# the rehearsal base: Qwen3.5-4B's architecture, scaled down (config key model.rehearsal)
# ------------------------------------------------------------------------------------------

#: Qwen/Qwen3.5-4B's shape (its config.json), for reference: 32 layers, 3 Gated DeltaNet
#: (linear_attention) layers per full_attention layer (full_attention_interval 4), 16 query /
#: 4 KV heads x head_dim 256 (gated), linear attention 16 key / 32 value heads x 128, conv
#: kernel 4, hidden 2560, MLP 9216, partial rotary 0.25 with interleaved mrope [11, 11, 10],
#: tied embeddings, a 24-block vision tower (hidden 1024).
QWEN35_4B_SHAPE = {
    "layers": 32,
    "full_attention_interval": 4,
    "heads": 16,
    "kv_heads": 4,
    "head_dim": 256,
    "linear_key_heads": 16,
    "linear_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "hidden": 2560,
    "intermediate": 9216,
}


def rehearsal_spec(spec: dict | None = None) -> dict:
    """``model.rehearsal`` with the schema's defaults under the keys it leaves out (vision and
    warmup key by key)."""
    d = schema.schema_defaults("properties/model/properties/rehearsal")
    s = {**d, **(spec or {})}
    for sub in ("vision", "warmup"):
        s[sub] = {**d[sub], **(s.get(sub) or {})}
    return s


def rehearsal_config(tokenizer, spec: dict | None = None):
    """A ``Qwen3_5Config`` (model_type ``qwen3_5``, architecture
    ``Qwen3_5ForConditionalGeneration``) with Qwen3.5-4B's structure at rehearsal size:
    ``layers`` decoder layers, every ``full_attention_interval``-th one full attention and the
    others Gated DeltaNet, gated GQA attention with q/k norms, partial rotary 0.25 with
    interleaved mrope, tied embeddings, and a small vision tower. Special-token ids come from
    ``tokenizer`` (it must have :data:`ssd_math.tokenizer.VISION_TOKENS`)."""
    from transformers import Qwen3_5Config

    s = rehearsal_spec(spec)
    v = s["vision"]
    problems = config_checks.rehearsal_problems(s)
    if problems:
        raise ValueError("; ".join(problems))
    rotary = int(s["head_dim"] * 0.25)
    half = rotary // 2  # mrope sections (t, h, w) share the rotary half-dim, as 4B's [11, 11, 10]
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    }
    if any(i is None or i == tokenizer.unk_token_id for i in ids.values()):
        raise ValueError("the rehearsal tokenizer lacks Qwen3.5's vision tokens")
    n = s["layers"]
    text = dict(
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=n,
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        max_position_embeddings=s["max_pos"],
        layer_types=[
            "full_attention" if (i + 1) % s["full_attention_interval"] == 0 else "linear_attention" for i in range(n)
        ],
        full_attention_interval=s["full_attention_interval"],
        linear_num_key_heads=s["linear_key_heads"],
        linear_num_value_heads=s["linear_value_heads"],
        linear_key_head_dim=s["linear_key_head_dim"],
        linear_value_head_dim=s["linear_value_head_dim"],
        linear_conv_kernel_dim=s["linear_conv_kernel_dim"],
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": mrope,
            "mrope_interleaved": True,
        },
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        use_cache=True,
    )
    vision = dict(
        depth=v["depth"],
        hidden_size=v["hidden"],
        num_heads=v["heads"],
        intermediate_size=v["intermediate"],
        patch_size=v["patch_size"],
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=s["hidden"],
        num_position_embeddings=v["num_position_embeddings"],
    )
    cfg = Qwen3_5Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    cfg.architectures = ["Qwen3_5ForConditionalGeneration"]
    return cfg


def layer_types_of(model_dir) -> list[str]:
    """``layer_types`` of a saved model (a text config, or the text_config of a VLM)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return list((cfg.get("text_config") or cfg)["layer_types"])
