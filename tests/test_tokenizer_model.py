import json

import pytest
import torch

from ssd_math.modeling import config_for_tokenizer, init_model_dir, load_model, tiny_config
from ssd_math.prompting import DEFAULT_INSTRUCTION, render_prompt, template_hash, user_message
from ssd_math.synth import build_splits, tokenizer_corpus
from ssd_math.tokenizer import build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    # levels 1-4 (shorter texts than the default's 2-5), the schema's defaults for the rest
    sp = build_splits(
        {
            "levels": [1, 2, 3, 4],
            "hard_levels": [3, 4],
            "n_pretrain": 800,
            "n_train_prompts": 20,
            "n_eval_main": 20,
            "seed": 0,
        }
    )
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer(tokenizer_corpus(sp["pretrain"], instruction=DEFAULT_INSTRUCTION), d, vocab_size=400)
    return d


def test_tokenizer_special_tokens_digits_roundtrip(tok_dir):
    tok = load_tokenizer(tok_dir)
    for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, t
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # digits are one token each, like Qwen's
    toks = tok.convert_ids_to_tokens(tok("12345+678=9", add_special_tokens=False)["input_ids"])
    assert [t for t in toks if t.isdigit()] == list("123456789")
    text = "<think>\nÜnïcode ∑ 3+4=7\n</think>\n\n$\\boxed{7}$"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # <think> is not a special token (Qwen3): skip_special_tokens keeps it, drops <|im_end|>
    ids = tok("<think>\nx</think><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nx</think>"


def test_chat_template_thinking_mode(tok_dir):
    tok = load_tokenizer(tok_dir)
    p = render_prompt(tok, "Find $1+1$.")
    assert p == ("<|im_start|>user\n" + user_message("Find $1+1$.") + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert "\\boxed{}" in p
    off = render_prompt(tok, "Q", enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    hist = tok.apply_chat_template(
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA"}],
        tokenize=False,
    )
    assert hist.endswith("<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n")
    h = template_hash(tok, DEFAULT_INSTRUCTION)
    assert h == template_hash(tok, DEFAULT_INSTRUCTION) and h != template_hash(tok, "x {problem}")
    with pytest.raises(ValueError, match="problem"):
        user_message("Q", instruction="no slot")


def test_load_tokenizer_plain_class_without_torch(tok_dir, tmp_path, monkeypatch):
    """The project's own tokenizer folder loads as the plain class, with no torch import (what a
    tokenizer-only job such as render_pretrain_corpus waits for), and gives AutoTokenizer's
    tokens and chat template; a folder naming another class goes through AutoTokenizer."""
    import shutil
    import subprocess
    import sys

    from transformers import AutoTokenizer

    probe = (
        "import sys; from ssd_math.tokenizer import load_tokenizer; "
        f"t = load_tokenizer({str(tok_dir)!r}); "
        "print(type(t).__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["TokenizersBackend", "False"]
    tok, auto = load_tokenizer(tok_dir), AutoTokenizer.from_pretrained(str(tok_dir))
    assert type(tok) is type(auto)
    text = "<|im_start|>user\nFind 3+4.<|im_end|>\n<think>\n3+4=7\n</think> $\\boxed{7}$<|im_end|>"
    assert tok(text, add_special_tokens=False)["input_ids"] == auto(text, add_special_tokens=False)["input_ids"]
    assert render_prompt(tok, "Q") == render_prompt(auto, "Q")
    assert (tok.eos_token_id, tok.pad_token_id) == (auto.eos_token_id, auto.pad_token_id)
    other = tmp_path / "other"
    shutil.copytree(tok_dir, other)
    cfg = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "Qwen2Tokenizer"}))
    assert type(load_tokenizer(other)).__name__ == "Qwen2Tokenizer"
    # a tokenizer with its own code (auto_map) is AutoTokenizer's, with the caller's trust_remote_code
    (other / "tokenizer_config.json").write_text(
        json.dumps({**cfg, "auto_map": {"AutoTokenizer": ["tok.MyTokenizer", None]}})
    )
    seen = []
    monkeypatch.setattr(
        AutoTokenizer, "from_pretrained", lambda path, **k: seen.append((path, k.get("trust_remote_code"))) or "auto"
    )
    assert load_tokenizer(other, trust_remote_code=True) == "auto"
    assert seen == [(str(other), True)]


def test_tokenizer_deterministic(tmp_path):
    texts = ["Find the units digit of $3 + 4$. <think>\n3+4=7\n</think>"] * 50
    a = build_tokenizer(texts, tmp_path / "a", vocab_size=300)
    b = build_tokenizer(texts, tmp_path / "b", vocab_size=300)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    assert a.get_vocab() == b.get_vocab()


def test_tiny_config_and_model_dir(tok_dir, tmp_path):
    tok = load_tokenizer(tok_dir)
    cfg = config_for_tokenizer(tok, hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
    assert cfg.model_type == "qwen3_5_text"
    assert cfg.layer_types == ["full_attention"] * 2
    assert cfg.vocab_size >= len(tok) and cfg.vocab_size % 64 == 0
    assert cfg.eos_token_id == tok.eos_token_id
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(100, hidden=30, heads=4)
    d = init_model_dir(tmp_path / "init", cfg, tok)
    assert (d / "config.json").exists() and (d / "tokenizer.json").exists()
    assert json.loads((d / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id
    assert not list(d.glob("*.safetensors"))
    d2 = init_model_dir(tmp_path / "w", cfg, tok, with_weights=True, seed=1)
    m = load_model(d2)
    assert type(m).__name__ == "Qwen3_5ForCausalLM"
    with torch.no_grad():
        out = m(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3, cfg.vocab_size)
    # same seed -> same weights
    d3 = init_model_dir(tmp_path / "w3", cfg, tok, with_weights=True, seed=1)
    m3 = load_model(d3)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m3.state_dict().values()))
