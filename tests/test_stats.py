"""Property tests of ssd_math.stats against independent references (runs in ~2 s)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from ssd_math.stats import (
    level_text,
    paired_delta,
    paired_pass_at_k_delta,
    pass_at_k,
    pass_at_k_ci,
    rate_ci,
    sample_size,
    variance_decomposition,
    wilson_ci,
)

#: the default config's stats section (config.yaml): what the tables pass
STATS = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())["stats"]
CONF = STATS["conf"]
KEYS = {"method", "n_prompts", "k", "n_boot", "seed", "conf", "estimate", "lo", "hi"}


def _wilson_closed_form(s, n, conf):
    z = sps.norm.ppf((1 + conf) / 2)
    p = s / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# ------------------------------------------------------------------------------------ Wilson
@pytest.mark.parametrize("n", [1, 7, 30, 300, 1000])
@pytest.mark.parametrize("conf", [0.9, 0.95])
def test_wilson_matches_closed_form(n, conf):
    for s in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        lo, hi = wilson_ci(s, n, conf)
        rlo, rhi = _wilson_closed_form(s, n, conf)
        assert lo == pytest.approx(max(0.0, rlo), abs=1e-12)
        assert hi == pytest.approx(min(1.0, rhi), abs=1e-12)


def test_rate_ci_k1_is_wilson_and_reports_its_terms():
    x = np.array([1] * 37 + [0] * 63)
    r = rate_ci(x, **STATS)
    assert KEYS <= r.keys()
    assert r["k"] == 1 and r["n_prompts"] == 100 and r["n_boot"] is None and r["seed"] is None
    assert "Wilson" in r["method"] and r["estimate"] == 0.37
    assert (r["lo"], r["hi"]) == pytest.approx(_wilson_closed_form(37, 100, 0.95), abs=1e-12)
    assert rate_ci(x[:, None], **STATS)["lo"] == r["lo"]  # (n, 1) is the same as 1-D


def test_rate_ci_rejects_non_binary():
    with pytest.raises(ValueError):
        rate_ci(np.array([0, 0.5, 1]), **STATS)


# ------------------------------------------------------------------------------------ pass@k
def _brute_pass_at_k(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    cases = [(n, c, k) for n in range(1, 9) for c in range(n + 1) for k in range(1, n + 1)]
    n, c, k = (np.array(v) for v in zip(*cases))
    for kk in np.unique(k):
        sel = k == kk
        got = pass_at_k(n[sel], c[sel], int(kk))
        ref = [_brute_pass_at_k(a, b, int(kk)) for a, b in zip(n[sel], c[sel])]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_pass_at_k_scalar_large_n_and_validation():
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    big = pass_at_k(200, 13, 10)  # product form against exact integers
    assert big == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10), rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_pass_at_k_ci_fields_and_bounds():
    rng = np.random.default_rng(1)
    c = rng.binomial(4, rng.uniform(size=300))
    r = pass_at_k_ci(4, c, 4, n_boot=1000, seed=3, conf=CONF)
    assert KEYS <= r.keys() and r["k"] == 4 and r["pass_k"] == 4 and r["n_prompts"] == 300
    assert r["estimate"] == pytest.approx(np.mean(c > 0)) and r["n_solved"] == np.sum(c > 0)
    assert r["lo"] < r["estimate"] < r["hi"]


def test_paired_pass_at_k_delta_same_arm_is_zero():
    c = np.random.default_rng(2).binomial(4, 0.4, size=200)
    r = paired_pass_at_k_delta(4, c, 4, c, 2, n_boot=500, seed=0, conf=CONF)
    assert r["estimate"] == 0 and r["lo"] == 0 and r["hi"] == 0 and r["p_boot"] == 1.0


# ------------------------------------------------------------------------- paired bootstrap
def test_paired_bootstrap_agrees_with_normal_approximation():
    # Large synthetic paired data: 4000 prompts with heterogeneous difficulty, 4 samples per arm,
    # arm a ~ +3 pp. With n this large the CLT makes the percentile interval ~ mean +- z * SE.
    # Tolerance: the Monte Carlo sd of a 2.5 % bootstrap quantile with B = 4000 is
    # sqrt(.025 * .975 / B) / phi(1.96) ~ 0.042 SE, i.e. ~2 % of the 1.96 SE half-width; skewness
    # and the (n-1)/n plug-in factor add < 1 %. 10 % of the half-width is ~5 MC sd -- generous
    # enough not to flake, tight enough to catch a wrong scale (e.g. resampling samples: -50 %).
    rng = np.random.default_rng(123)
    n = 4000
    p = rng.beta(1.0, 1.5, size=n)
    a = rng.binomial(1, np.clip(p + 0.03, 0, 1)[:, None], size=(n, 4))
    b = rng.binomial(1, p[:, None], size=(n, 4))
    r = paired_delta(a, b, n_boot=4000, seed=7, conf=CONF)
    d = a.mean(1) - b.mean(1)
    se = d.std(ddof=1) / math.sqrt(n)
    half = sps.norm.ppf(0.975) * se
    assert r["estimate"] == pytest.approx(d.mean(), abs=1e-15)
    assert r["lo"] == pytest.approx(d.mean() - half, abs=0.10 * half)
    assert r["hi"] == pytest.approx(d.mean() + half, abs=0.10 * half)
    assert r["se_boot"] == pytest.approx(se, rel=0.05)
    assert KEYS | {"p_boot"} <= r.keys() and r["k"] == 4


def test_p_boot_agrees_with_normal_p_value():
    # A small effect (z ~ 2) so that the p-value is not trivially ~0. With B = 4000 the Monte
    # Carlo sd of p_boot near p = 0.05 is ~2 * sqrt(.025 * .975 / B) ~ 0.005; tolerance 0.02.
    rng = np.random.default_rng(321)
    n = 4000
    p = rng.beta(1.0, 1.5, size=n)
    a = rng.binomial(1, np.clip(p + 0.01, 0, 1)[:, None], size=(n, 4))
    b = rng.binomial(1, p[:, None], size=(n, 4))
    r = paired_delta(a, b, n_boot=4000, seed=8, conf=CONF)
    d = a.mean(1) - b.mean(1)
    p_norm = 2 * sps.norm.sf(abs(d.mean() / (d.std(ddof=1) / math.sqrt(n))))
    assert 0.005 < p_norm < 0.5  # the test is about a non-trivial p-value
    assert r["p_boot"] == pytest.approx(p_norm, abs=0.02)


def test_paired_uses_same_indices_for_both_arms():
    # If indices were drawn separately per arm, a == b would give a non-degenerate interval.
    x = np.random.default_rng(0).binomial(1, 0.5, size=(100, 3))
    r = paired_delta(x, x.copy(), n_boot=300, seed=1, conf=CONF)
    assert (r["lo"], r["hi"], r["estimate"]) == (0.0, 0.0, 0.0) and r["p_boot"] == 1.0


def test_paired_delta_different_k_and_shape_check():
    rng = np.random.default_rng(5)
    a, b = rng.binomial(1, 0.6, size=(50, 4)), rng.binomial(1, 0.4, size=50)
    r = paired_delta(a, b, n_boot=200, seed=0, conf=CONF)
    assert r["k"] is None and r["k_a"] == 4 and r["k_b"] == 1
    with pytest.raises(ValueError):
        paired_delta(a, b[:49], n_boot=10, seed=0, conf=CONF)


# ------------------------------------------------------------------------ clustering effects
def test_clustered_interval_wider_than_naive_binomial_when_correlated():
    # Planted within-prompt correlation: prompt difficulty ~ Beta(0.3, 0.3) (most prompts almost
    # always or almost never solved), k = 8 samples each. Treating the 8 * 300 samples as
    # independent (Wilson on all samples) understates the uncertainty; the design effect is
    # 1 + (k-1) ICC with ICC ~ 0.6, so the clustered interval should be ~2x wider.
    rng = np.random.default_rng(11)
    n, k = 300, 8
    p = rng.beta(0.3, 0.3, size=n)
    x = rng.binomial(1, p[:, None], size=(n, k))
    clustered = rate_ci(x, n_boot=2000, seed=0, conf=CONF)
    naive_lo, naive_hi = wilson_ci(int(x.sum()), n * k, CONF)
    w_c, w_n = clustered["hi"] - clustered["lo"], naive_hi - naive_lo
    assert w_c > 1.5 * w_n
    vd = variance_decomposition(x)
    assert vd["between_share"] > 0.4
    assert w_c / w_n == pytest.approx(math.sqrt(vd["design_effect"]), rel=0.2)


def test_no_clustering_gives_similar_widths():
    x = np.random.default_rng(12).binomial(1, 0.4, size=(400, 4))  # independent samples
    w_c = np.subtract(*reversed([rate_ci(x, n_boot=2000, seed=0, conf=CONF)[s] for s in ("lo", "hi")]))
    lo, hi = wilson_ci(int(x.sum()), x.size, CONF)
    assert w_c == pytest.approx(hi - lo, rel=0.15)
    assert variance_decomposition(x)["between_share"] < 0.05


# -------------------------------------------------------------------------- determinism etc.
def test_determinism_for_a_seed():
    x = np.random.default_rng(3).binomial(1, 0.3, size=(120, 4))
    y = np.random.default_rng(4).binomial(1, 0.35, size=(120, 4))
    assert rate_ci(x, n_boot=500, seed=9, conf=CONF) == rate_ci(x, n_boot=500, seed=9, conf=CONF)
    assert paired_delta(x, y, n_boot=500, seed=9, conf=CONF) == paired_delta(x, y, n_boot=500, seed=9, conf=CONF)
    assert (
        rate_ci(x, n_boot=500, seed=9, conf=CONF)["lo"] != rate_ci(x, n_boot=500, seed=10, conf=CONF)["lo"]
        or rate_ci(x, n_boot=500, seed=9, conf=CONF)["hi"] != rate_ci(x, n_boot=500, seed=10, conf=CONF)["hi"]
    )


def test_rate_ci_k_gt_1_reports_method_and_terms():
    x = np.random.default_rng(6).binomial(1, 0.5, size=(80, 4))
    r = rate_ci(x, n_boot=700, seed=2, conf=0.9)
    assert "clustered" in r["method"] and "bootstrap" in r["method"]
    assert (r["n_prompts"], r["k"], r["n_boot"], r["seed"], r["conf"]) == (80, 4, 700, 2, 0.9)
    assert r["estimate"] == pytest.approx(x.mean()) and r["lo"] < r["estimate"] < r["hi"]


def test_sample_size_formula():
    r = sample_size(0.25, 0.05)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert r["n_exact"] == pytest.approx(2 * 0.25 * z**2 / 0.05**2)
    assert r["n"] == math.ceil(r["n_exact"]) == 1570


def test_variance_decomposition_exact_cases():
    # Every prompt all-or-nothing: all variance between prompts.
    x = np.repeat(np.array([[1], [0], [1], [0]]), 4, axis=1)
    vd = variance_decomposition(x)
    assert vd["within"] == 0 and vd["between_share"] == 1 and vd["design_effect"] == 4
    # Identical mixed prompts: all variance within.
    x = np.tile(np.array([1, 0, 1, 0]), (5, 1))
    vd = variance_decomposition(x)
    assert vd["between"] == 0 and vd["within"] == pytest.approx(1 / 3)
    assert vd["between_share"] == 0


@pytest.mark.parametrize(
    "conf, text", [(0.95, "95%"), (0.9, "90%"), (0.975, "97.5%"), (0.99, "99%"), (0.999, "99.9%"), (0.58, "58%")]
)
def test_level_text(conf, text):
    # every label's level: no float noise (0.58 * 100 = 57.99999999999999), no rounding 97.5 to 98
    assert level_text(conf) == text
