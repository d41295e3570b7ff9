import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ssd_math.derive import all_arms
from ssd_math.generate_prep import make_sampler
from ssd_math.hf_sampler import HFSampler, plan_batches
from ssd_math.prompting import render_prompt
from ssd_math.sampler import SamplingConfig, derive_seed, presence_penalty_processor, request_seed
from ssd_math.vllm_sampler import CPU_SHUTDOWN_TIMEOUT_S, VLLMSampler, vllm_output_to_rows

ROW_FIELDS = {
    "prompt_id",
    "sample_index",
    "prompt",
    "completion",
    "n_completion_tokens",
    "finish_reason",
    "seed",
    "sampling",
    "model",
    "condition",
    "gold",
    "level",
    "source",
}
SAMPLING_FIELDS = {"temperature", "top_k", "top_p", "min_p", "presence_penalty", "max_new_tokens", "n"}


# ---- config and seeds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,msg",
    [
        # the ranges are the schema's $defs (one owner): the message names the field and the limit
        ({"temperature": 0}, "temperature = 0: 0 is less than or equal to the minimum of 0"),
        ({"temperature": -1.0}, "temperature = -1.0: -1.0 is less than or equal to the minimum of 0"),
        ({"top_p": 0}, "top_p = 0: 0 is less than or equal to the minimum of 0"),
        ({"top_p": 1.5}, "top_p = 1.5: 1.5 is greater than the maximum of 1"),
        ({"min_p": 1.5}, "min_p = 1.5: 1.5 is greater than the maximum of 1"),
        ({"min_p": -0.1}, "min_p = -0.1: -0.1 is less than the minimum of 0"),
        ({"top_k": 2.5}, "top_k = 2.5: 2.5 is not of type 'integer'"),
        ({"presence_penalty": 3.0}, "presence_penalty = 3.0: 3.0 is greater than the maximum of 2"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1"),
        ({"n": 0}, "n (samples per prompt) must be an int >= 1"),
    ],
)
def test_sampling_config_validation(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        SamplingConfig(**kw)


def test_sampling_config_accepts_the_schema_edges():
    """What the config schema accepts, the sampler accepts (min_p 1 keeps only the top tokens)."""
    SamplingConfig(min_p=1.0, top_p=1.0, presence_penalty=-2.0, top_k=-1)


def test_sampling_config_dict_roundtrip():
    scfg = SamplingConfig(temperature=0.7, presence_penalty=1.5)
    assert SamplingConfig.from_dict(scfg.to_dict()) == scfg
    assert set(scfg.to_dict()) == SAMPLING_FIELDS
    with pytest.raises(ValueError, match="unknown sampling key"):
        SamplingConfig.from_dict({"temp": 1.0})


def test_derive_seed_stable():
    # pinned values: a change here silently changes every sample of every run
    assert derive_seed(0, "a", 1, "T1.0") == derive_seed(0, "a", 1, "T1.0")
    assert derive_seed(0, "a", 1, "T1.0") == 8247273916771826833
    assert derive_seed(1, "a", 1, "T1.0") != derive_seed(0, "a", 1, "T1.0")
    assert derive_seed(0, "a", 0) != derive_seed(0, "a", 1)
    assert 0 <= derive_seed(123, "x") < 2**63
    assert request_seed(7, "p", 2, "c") == derive_seed(7, "p", 2, "c")


def test_plan_batches_fixed_composition():
    reqs = [{"id": f"p{i}", "prompt": "x"} for i in range(10)]
    plan = plan_batches(reqs, 4, 2)
    assert [len(b.requests) for b in plan] == [4, 4, 2, 4, 4, 2]
    assert [b.key for b in plan[:3]] == [("p0", 0), ("p4", 0), ("p8", 0)]
    assert [b.key for b in plan[3:]] == [("p0", 1), ("p4", 1), ("p8", 1)]


def test_presence_penalty_processor_crafted_logits():
    proc = presence_penalty_processor(1.5, prompt_len=3)
    # prompt tokens 0,1,2 (must not count); generated: 4, 4, 5
    ids = torch.tensor([[0, 1, 2, 4, 4, 5], [0, 1, 2, 6, 6, 6]])
    scores = torch.zeros(2, 8)
    out = proc(ids, scores)
    assert out[0].tolist() == [0, 0, 0, 0, -1.5, -1.5, 0, 0]  # presence, not frequency
    assert out[1].tolist() == [0, 0, 0, 0, 0, 0, -1.5, 0]
    assert proc(ids[:, :3], scores).tolist() == scores.tolist()  # nothing generated yet


# ---- HF backend on a tiny random model -------------------------------------------------------

from conftest import tiny_random_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    mdir, tok, rows = tiny_random_model(d, n_pretrain=600, n_eval=12)
    reqs = [{**r, "prompt": render_prompt(tok, r["problem"])} for r in rows]
    return mdir, reqs


@pytest.mark.slow  # samples the same rows three ways
def test_hf_rows_deterministic_and_order_independent(tiny):
    mdir, reqs = tiny
    s = HFSampler(mdir, batch_size=5)
    scfg = SamplingConfig(temperature=1.0, max_new_tokens=12, n=2)
    rows = s.sample(reqs, sampling=scfg, condition="c", base_seed=3)
    assert len(rows) == len(reqs) * 2
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(q["id"], k) for q in reqs for k in range(2)]
    again = s.sample(reqs, sampling=scfg, condition="c", base_seed=3)
    assert json.dumps(rows) == json.dumps(again)
    # each batch is seeded on its own: any subset, in any order, gives the same rows (what the
    # generation jobs' resume relies on)
    plan = plan_batches(reqs, 5, 2)
    full = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    for b in [plan[-1], plan[2], plan[0]]:
        for r in s.generate_batch(b, sampling=scfg, condition="c", base_seed=3):
            assert r == full[(r["prompt_id"], r["sample_index"])]
    other = s.sample(reqs, sampling=scfg, condition="c", base_seed=4)
    assert [r["completion"] for r in other] != [r["completion"] for r in rows]


def test_hf_row_fields_and_length_stop(tiny):
    mdir, reqs = tiny
    s = make_sampler("hf", mdir, batch_size=8, model_name="tiny-random")
    scfg = SamplingConfig(temperature=1.0, max_new_tokens=3)
    rows = s.sample(reqs[:4], sampling=scfg, condition="T1.0", base_seed=0)
    for r, q in zip(rows, reqs[:4]):
        assert ROW_FIELDS <= set(r)
        assert set(r["sampling"]) == SAMPLING_FIELDS
        assert r["prompt"] == q["prompt"] and r["gold"] == q["answer"]
        assert r["level"] == q["level"] and r["source"] == "synthetic"
        assert r["model"] == "tiny-random" and r["condition"] == "T1.0"
        assert r["seed"] == request_seed(0, q["id"], 0, "T1.0")
        assert r["n_completion_tokens"] <= 3
        if r["finish_reason"] == "length":
            assert r["n_completion_tokens"] == 3
    # a random model practically never emits eos within 3 tokens
    assert sum(r["finish_reason"] == "length" for r in rows) >= 3


def test_hf_stop_counts_eos(tiny, monkeypatch):
    """Force eos as the 3rd generated token: finish 'stop', 3 tokens counted, text without eos
    (the generate path; the fast loop's counting is checked by teacher forcing below)."""
    mdir, reqs = tiny
    s = HFSampler(mdir, batch_size=4, loop="generate")
    eos = s.eos_id
    orig = s.model.generate

    def fake_generate(**kw):
        out = orig(**kw)
        plen = kw["input_ids"].shape[1]
        out = out[:, : plen + 6].clone()
        out[:, plen + 2] = eos
        out[:, plen + 3 :] = s.tokenizer.pad_token_id
        return out

    monkeypatch.setattr(s.model, "generate", fake_generate)
    rows = s.sample(reqs[:4], sampling=SamplingConfig(max_new_tokens=10), condition="c", base_seed=0)
    for r in rows:
        assert r["finish_reason"] == "stop" and r["n_completion_tokens"] == 3
        assert "<|im_end|>" not in r["completion"] and "<|endoftext|>" not in r["completion"]


@pytest.mark.slow  # samples hundreds of rows
def test_hf_presence_penalty_reduces_repeats(tiny):
    mdir, reqs = tiny
    s = HFSampler(mdir, batch_size=12)

    def distinct_frac(pp):
        # penalty is applied before temperature (vLLM order): at T 0.4 a penalty of 2 is 5 logits
        # three base seeds x 12 prompts: one seed's 12 rows move the mean by ~0.08 on their own
        scfg = SamplingConfig(temperature=0.4, top_k=20, max_new_tokens=32, presence_penalty=pp)
        rows = [r for seed in range(3) for r in s.sample(reqs, sampling=scfg, condition="c", base_seed=seed)]
        fr = []
        for r in rows:
            ids = s.tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
            fr.append(len(set(ids)) / max(1, len(ids)))
        return sum(fr) / len(fr)

    for fused in (True, False):  # TopKTruncation (top-k on) and transformers' warpers
        s.fused_topk = fused
        with_pp, without = distinct_frac(2.0), distinct_frac(0.0)
        assert with_pp > without + 0.05, (fused, with_pp, without)


# ---- vLLM seams -------------------------------------------------------------------------------


def test_to_vllm_params_names():
    scfg = SamplingConfig(
        temperature=1.1, top_k=20, top_p=0.95, min_p=0.05, presence_penalty=1.5, max_new_tokens=100, n=4
    )
    p = scfg.to_vllm(42)
    assert p == {
        "n": 1,
        "temperature": 1.1,
        "top_k": 20,
        "top_p": 0.95,
        "min_p": 0.05,
        "presence_penalty": 1.5,
        "max_tokens": 100,
        "seed": 42,
        "skip_special_tokens": False,
    }
    assert SamplingConfig(top_k=0).to_vllm(None)["top_k"] == -1


def test_to_vllm_params_accepted_by_vllm():
    vllm = pytest.importorskip("vllm")
    scfg = SamplingConfig(
        temperature=1.1, top_k=20, top_p=0.95, min_p=0.05, presence_penalty=1.5, max_new_tokens=100, n=4
    )
    sp = vllm.SamplingParams(**scfg.to_vllm(42))  # the real class accepts every key
    assert sp.max_tokens == 100 and sp.seed == 42


def test_vllm_output_to_rows_with_stand_ins():
    req = {"id": "q1", "prompt": "P", "answer": "7", "level": 3, "source": "synthetic"}
    out = SimpleNamespace(
        request_id="0",
        prompt="P",
        outputs=[
            SimpleNamespace(
                index=0, text="<think>\nx\n</think>\n\n\\boxed{7}", token_ids=[5, 6, 7, 2], finish_reason="stop"
            ),
            SimpleNamespace(index=1, text="<think>\nloop", token_ids=[5, 6, 6, 6], finish_reason="length"),
        ],
    )
    scfg = SamplingConfig(n=2, max_new_tokens=4)
    rows = vllm_output_to_rows(req, out, sampling=scfg, condition="T1.0", base_seed=9, model="m")
    assert [r["finish_reason"] for r in rows] == ["stop", "length"]
    assert [r["n_completion_tokens"] for r in rows] == [4, 4]
    assert [r["sample_index"] for r in rows] == [0, 1]
    assert rows[1]["seed"] == request_seed(9, "q1", 1, "T1.0")
    assert all(ROW_FIELDS <= set(r) for r in rows)
    # an eos string left in the text is stripped
    out2 = SimpleNamespace(outputs=[SimpleNamespace(text="a<|im_end|>", token_ids=[1, 2], finish_reason="stop")])
    r = vllm_output_to_rows(
        req, out2, sampling=SamplingConfig(), condition="c", base_seed=0, model="m", sample_indices=[3]
    )[0]
    assert r["completion"] == "a" and r["sample_index"] == 3
    with pytest.raises(ValueError):
        vllm_output_to_rows(req, out2, sampling=scfg, condition="c", base_seed=0, model="m", sample_indices=[0, 1])


def test_make_sampler_rejects_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="unknown sampler backend"):
        make_sampler("tgi", tmp_path)


def test_make_sampler_vllm_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *a, **kw):  # vLLM absent even where it is installed
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match="vllm"):
        make_sampler("vllm", tmp_path, dtype="auto")


# ---- the fast decode loop (ssd_math.hf_sampler.decode_batch) -------------------------------------

from ssd_math import hf_sampler as S  # noqa: E402
from ssd_math.hf_sampler import decode_batch, fast_loop_support  # noqa: E402


def _sharpen(src: Path, dst: Path, *, eos_pull: float | None = 1.5) -> Path:
    """A copy of a tiny random model whose logits are peaked (embeddings x10, tied: a clear top
    token and a long tail, so temperature/top-k/top-p change the distribution) and, with
    ``eos_pull``, whose eos embedding points along the mean final hidden state (eos then ends
    rows at varied lengths, so finished rows do leave the batch)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    m = AutoModelForCausalLM.from_pretrained(src)
    enc = tok(
        ["<|im_start|>user\nFind the units digit of $2 + 3$.<|im_end|>\n"],
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        m.model.embed_tokens.weight.mul_(10)
        if eos_pull is not None:
            h = m.model(**enc).last_hidden_state[0].mean(0)
            m.model.embed_tokens.weight[tok.eos_token_id] = eos_pull * h / h.norm()
    m.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def sharp(tiny, tmp_path_factory):
    mdir, reqs = tiny
    return _sharpen(mdir, tmp_path_factory.mktemp("sharp")), reqs


def _enc(s, reqs):
    return s.tokenizer([r["prompt"] for r in reqs], return_tensors="pt", padding=True, add_special_tokens=False)


def _teacher_forced_logits(model, prompt_ids: list[int], gen: list[int]) -> torch.Tensor:
    """The model's float32 logits before each generated token (one unpadded row)."""
    ids = torch.tensor([prompt_ids + gen])
    with torch.inference_mode():
        lg = model(input_ids=ids).logits[0].float()
    return lg[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(gen)]


def test_fast_loop_is_the_default_and_generate_can_be_forced(tiny):
    mdir, _ = tiny
    assert HFSampler(mdir).loop == "decode_batch"
    assert HFSampler(mdir, loop="generate").loop == "generate"
    with pytest.raises(ValueError, match="loop must be"):
        HFSampler(mdir, loop="fast")


def test_processors_are_generates_own(tiny):
    """The list the loop applies (SamplingConfig.hf_processors) is, class by class and parameter
    by parameter, the one generate builds (GenerationMixin._get_logits_processor) from what the
    generate path hands it (SamplingConfig.hf_generate_kwargs + the presence penalty)."""
    from transformers import GenerationConfig

    mdir, _ = tiny
    s = HFSampler(mdir)
    for scfg in [
        SamplingConfig(temperature=0.7, top_k=20, top_p=0.95, min_p=0.05, presence_penalty=1.5),
        SamplingConfig(temperature=1.0, top_k=0, top_p=1.0),
        SamplingConfig(temperature=1.1, top_k=5, top_p=0.8),
    ]:
        ours = scfg.hf_processors()
        pp = ours[: len(scfg.hf_processors(warpers=False))]  # the same presence-penalty object
        gc = GenerationConfig(**scfg.hf_generate_kwargs())
        theirs = s.model._get_logits_processor(gc, logits_processor=pp)
        assert [type(p) for p in ours] == [type(p) for p in theirs]
        assert [vars(p) for p in ours] == [vars(p) for p in theirs]


def test_top_k_1_equals_greedy_generate(sharp):
    """top_k=1 through the loop (rows dropped the step they finish: compact_frac 0) is token for
    token generate's greedy decoding of the same batch."""
    mdir, reqs = sharp
    s = HFSampler(mdir)
    enc = _enc(s, reqs)
    plen = enc["input_ids"].shape[1]
    with torch.inference_mode():
        greedy = s.model.generate(
            **enc, do_sample=False, max_new_tokens=24, eos_token_id=s.eos_id, pad_token_id=s.tokenizer.pad_token_id
        )
    stats = {}
    for frac in (0.0, 0.5, 2.0):
        ours = decode_batch(
            s.model,
            enc["input_ids"],
            enc["attention_mask"],
            processors=SamplingConfig(top_k=1).hf_processors(),
            max_new_tokens=24,
            eos_token_id=s.eos_id,
            pad_token_id=s.tokenizer.pad_token_id,
            compact_frac=frac,
            stats=stats,
        )
        for row, ref in zip(ours, greedy[:, plen:].tolist()):
            assert row == ref[: len(row)]
            assert len(row) == 24 or row[-1] == s.eos_id


def _hybrid_model(d: Path, tok) -> Path:
    from transformers import AutoModelForCausalLM, Qwen3_5TextConfig

    cfg = Qwen3_5TextConfig(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_conv_kernel_dim=4,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg)
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_hybrid_linear_attention_model_runs_the_loop(tiny, tmp_path):
    """A Qwen3.5 hybrid (Gated DeltaNet + full attention): the loop drives its cache (conv and
    recurrent states are selected with the rows) and equals greedy generate under top_k=1."""
    from transformers import AutoTokenizer

    mdir, reqs = tiny
    tok = AutoTokenizer.from_pretrained(mdir)
    hdir = _sharpen(_hybrid_model(tmp_path / "hyb", tok), tmp_path / "hyb_sharp", eos_pull=None)
    s = HFSampler(hdir)
    assert s.loop == "decode_batch", s.loop_reason
    enc = _enc(s, reqs[:6])
    plen = enc["input_ids"].shape[1]
    with torch.inference_mode():
        greedy = s.model.generate(
            **enc, do_sample=False, max_new_tokens=10, eos_token_id=s.eos_id, pad_token_id=s.tokenizer.pad_token_id
        )
    g_rows = greedy[:, plen:].tolist()
    # drop half of the rows from the cache after the first step: the rest must continue exactly

    class Eos3:  # a processor forcing eos on the first 3 rows' first step (rows 0-2 finish)
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            if self.calls == 1:
                scores = scores.clone()
                scores[:3] = float("-inf")
                scores[:3, s.eos_id] = 0.0
            return scores

    procs = SamplingConfig(top_k=1).hf_processors()
    procs.insert(0, Eos3())
    ours = S.decode_batch(
        s.model,
        enc["input_ids"],
        enc["attention_mask"],
        processors=procs,
        max_new_tokens=10,
        eos_token_id=s.eos_id,
        pad_token_id=s.tokenizer.pad_token_id,
        compact_frac=0.0,
    )
    assert [len(r) for r in ours[:3]] == [1, 1, 1]
    for row, ref in zip(ours[3:], g_rows[3:]):
        assert row == ref[: len(row)]
    rows = s.sample(reqs[:6], sampling=SamplingConfig(max_new_tokens=8), condition="c", base_seed=1)
    again = HFSampler(hdir).sample(reqs[:6], sampling=SamplingConfig(max_new_tokens=8), condition="c", base_seed=1)
    assert json.dumps(rows) == json.dumps(again)


def test_unsupported_model_falls_back_to_generate_with_a_reason(tiny, monkeypatch):
    mdir, reqs = tiny
    s = HFSampler(mdir)
    s.model.config._attn_implementation = "flex_attention"
    why = fast_loop_support(s.model)
    assert why is not None and "flex_attention" in why
    s.model.config._attn_implementation = "sdpa"
    from transformers import cache_utils

    class Sliding(cache_utils.DynamicSlidingWindowLayer):
        pass

    monkeypatch.setitem(
        cache_utils.DYNAMIC_LAYER_TYPE_MAPPING, "full_attention", lambda **kw: Sliding(sliding_window=8)
    )
    assert "Sliding" in fast_loop_support(s.model)


def _chi2_homogeneity(a: list[int], b: list[int]) -> float:
    """p-value of Pearson's chi-square test that two samples of tokens come from one
    distribution (tokens with fewer than 5 expected counts pooled into one cell)."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    ca, cb = Counter(a), Counter(b)
    keys = sorted(set(ca) | set(cb), key=lambda k: -(ca[k] + cb[k]))
    big = [k for k in keys if (ca[k] + cb[k]) / 2 >= 5]
    rest = [k for k in keys if k not in big]
    table = [[ca[k] for k in big] + [sum(ca[k] for k in rest)], [cb[k] for k in big] + [sum(cb[k] for k in rest)]]
    table = [row[:-1] for row in table] if table[0][-1] + table[1][-1] == 0 else table
    return float(chi2_contingency(table)[1])


@pytest.mark.slow  # thousands of samples on two backends
def test_distribution_matches_generate(sharp):
    """Per-position token frequencies of the loop and of generate agree: one prompt x 120 rows
    x 4 seeds = 480 samples each, positions 1-3 (a row that stopped counts as pad there, as
    generate writes it); Pearson chi-square homogeneity p > 1e-3 at every position (Bonferroni
    over 3 positions x 3 settings: family-wise false alarm <= 0.9%). Seeds are fixed, so the
    outcome is deterministic. Settings: T 0.7 / top-k 20 / top-p 0.9, and T 1 with a presence
    penalty of 1, with top-k 20 / top-p 0.95 / min-p 0.05 (the loop's TopKTruncation) and with
    top-k off (transformers' warpers)."""
    mdir, reqs = sharp
    s = HFSampler(mdir)
    pad = s.tokenizer.pad_token_id
    enc = _enc(s, [reqs[3]] * 120)
    npos = 3
    for scfg in [
        SamplingConfig(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=npos),
        SamplingConfig(temperature=1.0, top_k=20, top_p=0.95, min_p=0.05, presence_penalty=1.0, max_new_tokens=npos),
        SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, presence_penalty=1.0, max_new_tokens=npos),
    ]:
        procs, trunc = S.loop_sampling(scfg)  # TopKTruncation when top-k is on, as HFSampler runs
        assert (trunc is not None) == (scfg.top_k > 0)
        ours, theirs = [[] for _ in range(npos)], [[] for _ in range(npos)]
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            with torch.inference_mode():
                rows = decode_batch(
                    s.model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    processors=procs,
                    truncation=trunc,
                    max_new_tokens=npos,
                    eos_token_id=s.eos_id,
                    pad_token_id=pad,
                    generator=g,
                )
                torch.manual_seed(100 + seed)
                ref = s._generate_ids(enc, scfg)
            for r, q in zip(rows, ref):
                r = r + [pad] * (npos - len(r))
                q = q + [pad] * (npos - len(q))
                for t in range(npos):
                    ours[t].append(r[t])
                    theirs[t].append(q[t])
        for t in range(npos):
            p = _chi2_homogeneity(ours[t], theirs[t])
            assert p > 1e-3, (scfg, t, p)
        assert len(set(ours[0])) >= 3  # a real distribution, not one forced token


def _loop_rows(s, reqs, scfg, seed):
    """(prompt ids without padding, generated ids) per request, straight from decode_batch."""
    enc = _enc(s, reqs)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        rows = decode_batch(
            s.model,
            enc["input_ids"],
            enc["attention_mask"],
            processors=scfg.hf_processors(),
            max_new_tokens=scfg.max_new_tokens,
            eos_token_id=s.eos_id,
            pad_token_id=s.tokenizer.pad_token_id,
            generator=g,
            compact_frac=0.0,
        )
    prompts = [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
    return list(zip(prompts, rows))


def test_sampled_tokens_inside_top_k_top_p_and_min_p(sharp):
    """Recompute each step's distribution from the model's own logits (teacher forcing, one
    unpadded row): every sampled token is in that step's top-k and top-p set (T 1.1, top-k 5,
    top-p 0.8), and with min-p 0.3 (no top-k/top-p) every token has p >= 0.3 p_max, while the
    same run without min-p does sample below it (the check has teeth)."""
    mdir, reqs = sharp
    s = HFSampler(mdir, batch_size=12)

    def check(scfg, pred):
        hits = []
        n_stop = 0
        for p_ids, gen in _loop_rows(s, reqs, scfg, 5):
            n_stop += gen[-1] == s.eos_id
            lg = _teacher_forced_logits(s.model, p_ids, gen) / scfg.temperature
            for t, token in enumerate(gen):
                hits.append(pred(lg[t], token))
        return hits, n_stop

    def in_topk_topp(lg, token, k=5, p=0.8):
        probs = lg.softmax(-1)
        order = probs.argsort(descending=True)
        topk = set(order[:k].tolist())
        cum = probs[order].cumsum(0)
        n = int((cum < p).sum()) + 1  # smallest prefix with mass >= p
        return token in topk and token in set(order[:n].tolist())

    def above_min_p(lg, token, m=0.3):
        probs = lg.softmax(-1)
        return bool(probs[token] >= m * probs.max() - 1e-6)

    hits, n_stop = check(SamplingConfig(temperature=1.1, top_k=5, top_p=0.8, max_new_tokens=16), in_topk_topp)
    assert all(hits) and len(hits) > 60 and n_stop >= 1
    hits, _ = check(SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.3, max_new_tokens=16), above_min_p)
    assert all(hits)
    hits, _ = check(SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16), above_min_p)
    assert not all(hits)


def test_presence_penalty_changes_the_greedy_choice(sharp):
    """Under top_k=1 each token is argmax(logits - penalty * [token already generated]), recomputed
    from the model's logits, and the penalty changes at least one choice vs no penalty."""
    mdir, reqs = sharp
    s = HFSampler(mdir, batch_size=12)
    scfg = SamplingConfig(top_k=1, presence_penalty=2.0, max_new_tokens=16)
    rows = s.sample(reqs, sampling=scfg, condition="c", base_seed=0)
    plain = s.sample(reqs, sampling=SamplingConfig(top_k=1, max_new_tokens=16), condition="c", base_seed=0)
    assert [r["completion"] for r in rows] != [r["completion"] for r in plain]
    changed = 0
    for p_ids, gen in _loop_rows(s, reqs, scfg, 0):
        lg = _teacher_forced_logits(s.model, p_ids, gen)
        for t, token in enumerate(gen):
            pen = lg[t].clone()
            pen[list(set(gen[:t]))] -= 2.0
            assert token == int(pen.argmax())
            changed += int(lg[t].argmax()) != token
    assert changed >= 1


def test_ssd_and_topk5_settings_differ(sharp, default):
    """The default's ssd arm and its topk5 sweep arm (top-k 20 vs 5, same T) sample different
    rows from the same seed; topk5 rows stay inside the top 5 (test above)."""
    mdir, reqs = sharp
    s = HFSampler(mdir, batch_size=12)
    out = {}
    for arm in ("ssd", "topk5"):
        a = all_arms(default)[arm]
        scfg = SamplingConfig(temperature=a["temperature"], top_k=a["top_k"], top_p=a["top_p"], max_new_tokens=16)
        out[arm] = [r["completion"] for r in s.sample(reqs, sampling=scfg, condition="T1.1", base_seed=0)]
    assert all_arms(default)["ssd"]["top_k"] != all_arms(default)["topk5"]["top_k"]
    assert out["ssd"] != out["topk5"]


@pytest.mark.slow  # samples the same rows four ways
def test_fast_rows_byte_identical_across_instances_and_resume(sharp):
    """Two samplers (fresh model loads) give byte-identical rows; the remaining batches of a
    resumed job give the rows of the uninterrupted run; finished rows really left the batch (positions < rows x
    steps)."""
    mdir, reqs = sharp
    scfg = SamplingConfig(temperature=1.0, max_new_tokens=20, n=2)
    a = HFSampler(mdir, batch_size=5)
    rows = a.sample(reqs, sampling=scfg, condition="c", base_seed=11)
    thr = a.throughput()
    assert thr["positions"] < thr["batches"] * 5 * 20 and thr["useful_frac"] > 0.5
    assert any(r["finish_reason"] == "stop" for r in rows)
    assert any(r["finish_reason"] == "length" for r in rows)
    b = HFSampler(mdir, batch_size=5)
    assert json.dumps(rows) == json.dumps(b.sample(reqs, sampling=scfg, condition="c", base_seed=11))
    # dropped the step they finish (compact_frac 0): every computed row-position is a kept token
    enc = _enc(a, reqs)
    st = {}
    with torch.inference_mode():
        toks = decode_batch(
            a.model,
            enc["input_ids"],
            enc["attention_mask"],
            processors=scfg.hf_processors(),
            max_new_tokens=20,
            eos_token_id=a.eos_id,
            pad_token_id=a.tokenizer.pad_token_id,
            generator=torch.Generator().manual_seed(0),
            compact_frac=0.0,
            stats=st,
        )
    assert st["positions"] == sum(map(len, toks)) < len(toks) * 20
    full = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    for batch in reversed(plan_batches(reqs, 5, 2)[1:]):  # a resumed job's remaining batches
        for r in b.generate_batch(batch, sampling=scfg, condition="c", base_seed=11):
            assert json.dumps(r) == json.dumps(full[(r["prompt_id"], r["sample_index"])])


def test_threads_are_the_jobs(tiny):
    mdir, _ = tiny
    HFSampler(mdir, threads=2)
    assert torch.get_num_threads() == 2
    HFSampler(mdir, threads=1)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("share_prefix", [True, False])
def test_loop_logits_equal_teacher_forced_logits(sharp, share_prefix):
    """The logits the loop samples from (left-padded batch, buffered cache, decode attention,
    with and without the shared-prefix prefill) are the model's own: each step's row equals a
    plain unpadded forward over prompt + generated prefix (atol 1e-4), so positions, masks and
    the cache are right."""
    mdir, reqs = sharp
    s = HFSampler(mdir)
    enc = _enc(s, reqs[:6])
    seen = []

    def record(input_ids, scores):
        seen.append(scores.clone())
        return scores

    procs = SamplingConfig(top_k=1).hf_processors()
    procs.insert(0, record)
    with torch.inference_mode():
        stats = {}
        rows = decode_batch(
            s.model,
            enc["input_ids"],
            enc["attention_mask"],
            processors=procs,
            max_new_tokens=8,
            eos_token_id=-1,
            pad_token_id=s.tokenizer.pad_token_id,
            compact_frac=2.0,
            share_prefix=share_prefix,
            stats=stats,
        )
    n_common = S.common_prefix_len(enc["input_ids"], enc["attention_mask"])
    assert n_common >= 5  # the chat template's head and the instruction
    assert stats["prefix_tokens"] == (n_common if share_prefix else 0)
    for i, (r, gen) in enumerate(zip(reqs[:6], rows)):
        p_ids = s.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        ref = _teacher_forced_logits(s.model, p_ids, gen)
        got = torch.stack([step[i] for step in seen[: len(gen)]])
        assert torch.allclose(got, ref, atol=1e-4), float((got - ref).abs().max())


def test_vllm_engine_seed_from_config_reaches_the_engine_once(tmp_path, monkeypatch):
    """``sampler.vllm.seed`` (schema: the engine seed) replaces the experiment seed as the
    engine's ``seed=``; it is not passed a second time with the other engine arguments."""
    from ssd_math import generate_prep as GP

    seen = []

    class FakeVLLM:
        def __init__(self, model_dir, **kw):
            seen.append(kw)

    monkeypatch.setattr(GP, "VLLMSampler", FakeVLLM)
    common = {"backend": "vllm", "seed": 1234, "sampler_extra": {"dtype": "bfloat16", "seed": 7}}
    GP.open_sampler(common, tmp_path, model_name="m")
    GP.open_sampler({**common, "sampler_extra": {"dtype": "bfloat16"}}, tmp_path, model_name="m")
    assert [kw["seed"] for kw in seen] == [7, 1234]
    assert seen[0]["dtype"] == "bfloat16" and common["sampler_extra"]["seed"] == 7


@pytest.mark.parametrize("device,timeout", [("cpu", CPU_SHUTDOWN_TIMEOUT_S), ("cuda", None)])
def test_closing_a_cpu_engine_does_not_wait_out_vllms_grace(device, timeout):
    """On CPU the engine's processes get a short grace (vLLM's 5 s default was paid by every job);
    on a GPU vLLM's own default stays."""
    calls = []
    core = SimpleNamespace(shutdown=lambda timeout=None: calls.append(timeout))
    s = object.__new__(VLLMSampler)
    s.llm, s.device = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core)), device
    s.close()
    s.close()  # a second close does nothing
    assert calls == [timeout] and s.llm is None
    assert 0 < CPU_SHUTDOWN_TIMEOUT_S < 5
