"""ssd_math.noise against planted truths: a least-squares problem with known G and Σ, a
hand-computed bf16 rounding case, and a tiny transformer under bf16 vs fp32 optimizer state."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import base_spec, load_weights, make_rows, make_tokenizer, read_log, tiny_config

from ssd_math import train as T
from ssd_math import train_data, train_model
from ssd_math.noise import GradientNoiseEstimator, WeightChangeTracker, param_group

# ------------------------------------------------------------------------------------------
# gradient noise: least squares with known per-example gradients
# ------------------------------------------------------------------------------------------


def test_noise_estimator_recovers_planted_G2_and_trace_sigma():
    """loss_i(w) = ½|w − x_i|², x_i ~ N(μ, diag(σ²)): per-example gradient g_i = w − x_i, so
    the true gradient is G = w − μ and the per-example covariance is Σ = diag(σ²) exactly."""
    gen = torch.Generator().manual_seed(0)
    d, b_small, b_big, steps = 20, 4, 32, 4000
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    sigma = 0.5 + torch.rand(d, generator=gen, dtype=torch.float64)
    w = mu + 0.25 * torch.randn(d, generator=gen, dtype=torch.float64)
    true_g2 = float(((w - mu) ** 2).sum())
    true_trs = float((sigma**2).sum())
    # the regime of interest: the noise term at B_b is comparable to the signal
    assert 0.2 < (true_trs / b_big) / true_g2 < 5

    est = GradientNoiseEstimator(ema=0.95)
    raw_g2, raw_trs, ema_g2, ema_trs = [], [], [], []
    for _ in range(steps):
        x = mu + sigma * torch.randn(b_big, d, generator=gen, dtype=torch.float64)
        g_big = w - x.mean(0)
        g_small = w - x[:b_small].mean(0)  # nested, as the first micro-batch in train.py
        out = est.update(float(g_small @ g_small), b_small, float(g_big @ g_big), b_big)
        raw_g2.append(out["G2_raw"])
        raw_trs.append(out["trS_raw"])
        ema_g2.append(out["G2_ema"])
        ema_trs.append(out["trS_ema"])
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(raw_g2) == pytest.approx(true_g2, rel=0.05)
    assert mean(raw_trs) == pytest.approx(true_trs, rel=0.05)
    assert mean(ema_g2[100:]) == pytest.approx(true_g2, rel=0.05)
    assert mean(ema_trs[100:]) == pytest.approx(true_trs, rel=0.05)
    assert min(raw_g2) < 0 < true_g2  # single-step estimates can be negative: hence the EMA
    assert out["B_simple"] == pytest.approx(out["trS_ema"] / out["G2_ema"])
    assert out["gB_norm"] == pytest.approx(math.sqrt(float(g_big @ g_big)))


def test_noise_estimator_rejects_bad_batches():
    with pytest.raises(ValueError):
        GradientNoiseEstimator().update(1.0, 8, 1.0, 8)


# ------------------------------------------------------------------------------------------
# weight changes in the stored dtype: hand-computed bf16 rounding
# ------------------------------------------------------------------------------------------


class _Named(torch.nn.Module):
    def __init__(self, values: dict[str, list[float]]):
        super().__init__()
        self._names = {}
        for i, (name, vals) in enumerate(values.items()):
            key = f"p{i}"
            self._names[key] = name
            self.register_parameter(key, torch.nn.Parameter(torch.tensor(vals)))

    def named_parameters(self, *a, **k):  # expose the transformer-like names
        for key, p in super().named_parameters(*a, **k):
            yield self._names[key], p


def test_param_group_rules():
    assert param_group("model.embed_tokens.weight") == "embeddings"
    assert param_group("lm_head.weight") == "embeddings"
    assert param_group("model.layers.0.self_attn.q_proj.weight") == "attention"
    assert param_group("model.layers.0.self_attn.q_norm.weight") == "norms"
    assert param_group("model.layers.0.mlp.down_proj.weight") == "mlp"
    assert param_group("model.layers.0.input_layernorm.weight") == "norms"
    assert param_group("model.norm.weight") == "norms"
    assert param_group("score.bias") == "other"


def test_weight_change_fraction_matches_hand_computed_bf16_rounding():
    # bf16 keeps 8 significant bits: ulp(1.0) = 2^-7 above 1 and 2^-8 below 1; ulp(256) = 2.
    # Round-to-nearest-even decides; the comments say what the stored value becomes.
    before = {
        "embed_tokens.weight": [1.0, 1.0],  # +0.003 -> 1.0 (same) ; +0.005 -> 1+2^-7
        "layers.0.self_attn.q_proj.weight": [1.0, 1.0],  # -0.003 -> 1-2^-8     ; -0.001 -> 1.0
        "layers.0.mlp.up_proj.weight": [256.0, 256.0],  # +1.0 -> tie -> 256 (even); +1.5 -> 258
        "layers.0.input_layernorm.weight": [0.0],  # +1e-30 -> bf16(1e-30), about 1e-30
        "head.other": [3.0],  # unchanged
    }
    delta = {
        "embed_tokens.weight": [0.003, 0.005],
        "layers.0.self_attn.q_proj.weight": [-0.003, -0.001],
        "layers.0.mlp.up_proj.weight": [1.0, 1.5],
        "layers.0.input_layernorm.weight": [1e-30],
        "head.other": [0.0],
    }
    model = _Named(before)
    tracker = WeightChangeTracker(model, "bfloat16", dw_bins=[-31, -3, -2, 0, 1])
    tracker.before_step(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.tensor(delta[name]))
    out = tracker.after_step(model)
    assert out["n_params"] == 8 and out["n_changed"] == 4
    assert out["frac_changed"] == 4 / 8
    assert out["frac_changed_embeddings"] == 1 / 2
    assert out["frac_changed_attention"] == 1 / 2
    assert out["frac_changed_mlp"] == 1 / 2
    assert out["frac_changed_norms"] == 1.0
    assert out["frac_changed_other"] == 0.0
    # stored |Δw|: 2^-7 (log10 -2.1), 2^-8 (-2.4), 2 (0.30), bf16(1e-30) (-30)
    # bins: zero | <1e-31 | [1e-31,1e-3) | [1e-3,1e-2) | [1e-2,1) | [1,10) | >=10
    assert out["dw_hist"]["counts"] == [4, 0, 1, 2, 0, 1, 0]
    assert out["dw_hist"]["edges_log10"] == [-31.0, -3.0, -2.0, 0.0, 1.0]


def test_weight_change_streams_chunks_and_keeps_its_copy_in_host_memory(monkeypatch):
    """The tracker's copy of the stored values lives in host memory (never a second copy on the
    accelerator), and streaming parameters in chunks (here 3 values, crossing parameter and group
    boundaries) gives exactly the counts and histogram of one pass."""
    from ssd_math import noise

    g = torch.Generator().manual_seed(0)
    before = {
        "embed_tokens.weight": torch.randn(7, generator=g).tolist(),
        "layers.0.self_attn.q_proj.weight": torch.randn(5, generator=g).tolist(),
        "layers.0.mlp.up_proj.weight": torch.randn(11, generator=g).tolist(),
        "layers.0.input_layernorm.weight": [1.0, 0.5],
    }
    delta = {
        k: (torch.randn(len(v), generator=g) * 10.0 ** torch.randint(-6, 0, (len(v),), generator=g)).tolist()
        for k, v in before.items()
    }

    def run():
        model = _Named(before)
        tracker = WeightChangeTracker(model, "bfloat16")
        assert tracker._before.device.type == "cpu" and not hasattr(tracker, "_after")
        tracker.before_step(model)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(torch.tensor(delta[name]))
        return tracker.after_step(model)

    whole = run()
    monkeypatch.setattr(noise, "CHUNK", 3)
    chunked = run()
    assert chunked == whole and whole["n_params"] == 25 and 0 < whole["n_changed"] < 25


# ------------------------------------------------------------------------------------------
# a tiny real model: bf16-only updates vanish, fp32 master weights move
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_init_dir(tmp_path_factory):
    """Tiny Qwen3.5 with initializer_range 0.1, so few weights sit near zero (see below)."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("wide") / "m"
    torch.manual_seed(0)
    config = tiny_config()
    config.initializer_range = 0.1
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def _fracs(init_dir, tmp_path, name, **over):
    d = tmp_path / name
    d.mkdir()
    spec = base_spec(init_dir, d, warmup_steps=0, schedule="constant", instrument={"enabled": True}, **over)
    T.train(spec)
    return [r["frac_changed"] for r in read_log(spec["log"])]


def test_bf16_optimizer_state_freezes_stored_weights(wide_init_dir, tmp_path):
    """Why the threshold: a stored bf16 value w moves only if the update exceeds half its ulp,
    which is >= |w|·2^-9. Adam's step is lr·|m̂/√v̂| with |m̂/√v̂| <= ~2 in the first steps, so
    with bf16 weights *and* bf16 state (nothing accumulates below resolution) only weights with
    |w| < 2^10·lr can change: that fraction of the initial weights (zero-init norm weights
    included) bounds frac_changed. With initializer_range 0.1 and lr 5e-6 it is ~5%. fp32 master
    weights accumulate sub-ulp updates and at lr 1e-3 move most stored values every step."""
    lr = 5e-6
    w0 = torch.cat([v.flatten() for v in load_weights(wide_init_dir).values()])
    bound = float((w0.abs() < 2**10 * lr).float().mean())
    assert bound < 0.06
    bf16 = _fracs(wide_init_dir, tmp_path, "bf16", lr=lr, min_lr=lr, optimizer_state="bf16")
    fp32_same = _fracs(wide_init_dir, tmp_path, "fp32s", lr=lr, min_lr=lr)
    fp32_big = _fracs(wide_init_dir, tmp_path, "fp32b", lr=1e-3, min_lr=1e-3)
    assert max(bf16) < bound  # "near zero": only near-zero weights can move at all
    assert sum(bf16[1:]) / 3 < 0.02  # after step 1 (Adam steps exactly ±lr) it is lower still
    assert sum(fp32_same[1:]) > 1.5 * sum(bf16[1:])  # fp32 master weights keep more updates
    assert min(fp32_big) > 0.5  # clearly nonzero


# ------------------------------------------------------------------------------------------
# train.py's small-batch gradient is the first micro-batch's own mean-loss gradient
# ------------------------------------------------------------------------------------------


def test_train_small_batch_norm_is_first_micro_batch_mean_loss_gradient(tmp_path):
    from test_train import make_model_dir
    from transformers import AutoModelForCausalLM

    init_dir = make_model_dir(tmp_path / "m")
    spec = base_spec(init_dir, tmp_path, max_steps=1, instrument={"enabled": True}, grad_clip=None)
    T.train(spec)
    row = read_log(spec["log"])[0]
    s = T.resolve_spec(spec)
    tok = make_tokenizer()
    ex = [train_data.encode_row(r, tok, s["max_len"]) for r in make_rows(32)]
    idx = train_data.global_batch_rows(0, len(ex), s, len(ex) // s["global_batch"])
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)

    def mean_loss_grad_norm(rows):
        model.zero_grad()
        n = sum(train_data.n_loss_tokens(ex[i][1]) for i in rows)
        (train_model.token_sum_loss(model, train_data.collate([ex[i] for i in rows], 0)) / n).backward()
        return float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))

    assert row["gs_norm"] == pytest.approx(mean_loss_grad_norm(idx[: s["micro_batch"]]), rel=1e-4)
    assert row["gB_norm"] == pytest.approx(mean_loss_grad_norm(idx), rel=1e-4)
    assert row["B_small"] == 4 and row["B_big"] == 8
