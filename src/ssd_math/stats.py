"""Statistics for the results tables (docs/study.md section 5, docs/conventions.md "Statistics").

Conventions of every interval function here
-------------------------------------------
* Input data are per-prompt: an ``(n_prompts, k)`` array of 0/1 outcomes (k samples per prompt),
  or per-prompt (n, c) counts for pass@k. Rows are prompts; paired inputs must list the same
  prompts in the same order.
* Resampling is over prompts, never over samples: a prompt's k samples stay together (the
  prompt-clustered bootstrap). Paired comparisons use the SAME resampled prompt indices for both
  arms. All resample indices come from ``np.random.default_rng(seed)``, drawn in fixed-size
  chunks (so memory stays bounded and results are a deterministic function of data, n_boot,
  seed).
* Percentile intervals: the ``(1-conf)/2`` and ``(1+conf)/2`` quantiles of the bootstrap
  distribution (numpy's default linear interpolation).
* Each function returns a dict naming ``method``, ``n_prompts``, ``k`` (samples per prompt),
  ``n_boot``, ``seed``, ``conf`` (None where not applicable) plus ``estimate``, ``lo``, ``hi`` as
  fractions (not %), so a table can print n, method, resample count and seed beside every
  interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from .io import DataError

_CHUNK_ELEMS = 4_000_000  # resample indices per chunk (32 MB of int64)


def level_text(conf: float) -> str:
    """An interval's level as every label prints it: 0.95 -> ``"95%"``, 0.975 -> ``"97.5%"``.

    The one formatter of ``stats.conf`` for figures, the report's captions and the findings, so
    a label always says the level its intervals were computed at."""
    return f"{round(100 * float(conf), 6):g}%"


# ----------------------------------------------------------------------------------- helpers
def _as_2d(x) -> np.ndarray:
    """(n_prompts, k) float array of 0/1 outcomes; a 1-D input is k = 1."""
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected a non-empty (n_prompts, k) array, got shape {a.shape}")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError("outcomes must be 0/1 (or bool)")
    return a


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``values`` (one per prompt) over ``n_boot`` resamples of the prompts (with
    replacement, all indices from one ``default_rng(seed)`` stream, chunked)."""
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, _CHUNK_ELEMS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _percentile(boot: np.ndarray, conf: float) -> tuple[float, float]:
    if not 0 < conf < 1:
        raise ValueError("conf must be in (0, 1)")
    lo, hi = np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)


def _p_boot(boot: np.ndarray) -> float:
    """Two-sided bootstrap p-value for H0: delta = 0 (percentile-interval inversion).

    p = min(1, 2 * min((#{d* <= 0} + 1) / (B + 1), (#{d* >= 0} + 1) / (B + 1))): about the
    smallest 1 - conf for which the percentile interval excludes 0. The +1 terms keep p > 0 (the
    resolution is ~2 / B). Resamples exactly at 0 count on both sides (conservative on ties).
    """
    b = boot.shape[0]
    le = (np.count_nonzero(boot <= 0) + 1) / (b + 1)
    ge = (np.count_nonzero(boot >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(le, ge)))


def _paired_bootstrap(d: np.ndarray, n_boot: int, seed: int, conf: float) -> dict[str, Any]:
    """Percentile bootstrap of mean(d) over prompts, d = per-prompt difference. Resampling the
    difference is the same as resampling both arms with the same prompt indices."""
    boot = _bootstrap_means(d, n_boot, seed)
    lo, hi = _percentile(boot, conf)
    return {
        "estimate": float(d.mean()),
        "lo": lo,
        "hi": hi,
        "p_boot": _p_boot(boot),
        "se_boot": float(boot.std(ddof=1)),
    }


def _k_of(n_arr: np.ndarray) -> int | list[int]:
    u = np.unique(n_arr)
    return int(u[0]) if u.size == 1 else [int(u.min()), int(u.max())]


# ------------------------------------------------------------------------------ single rates
def wilson_ci(successes: int, n: int, conf: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy ``binomtest(...).proportion_ci``,
    method "wilson", no continuity correction)."""
    ci = sps.binomtest(int(successes), int(n)).proportion_ci(confidence_level=conf, method="wilson")
    return float(ci.low), float(ci.high)


def rate_ci(x, *, n_boot: int, seed: int, conf: float) -> dict[str, Any]:
    """Rate (accuracy, think-close, boxed, length-stop ...) with a confidence interval.

    ``x``: (n_prompts, k) 0/1 array, or 1-D (k = 1).

    * k == 1: estimate = successes / n; interval = Wilson score interval (no bootstrap;
      ``n_boot`` and ``seed`` are reported as None).
    * k > 1: estimate = mean over prompts of the per-prompt mean (= the overall mean, since every
      prompt has k samples); interval = prompt-clustered percentile bootstrap (resample prompts
      with replacement, keep each prompt's k samples together).
    """
    a = _as_2d(x)
    n, k = a.shape
    succ = int(a.sum())
    base = {"n_prompts": n, "k": k, "n_samples": n * k, "successes": succ, "conf": conf}
    if k == 1:
        lo, hi = wilson_ci(succ, n, conf)
        return {
            "method": "Wilson score interval (k=1)",
            **base,
            "n_boot": None,
            "seed": None,
            "estimate": succ / n,
            "lo": lo,
            "hi": hi,
        }
    per_prompt = a.mean(axis=1)
    boot = _bootstrap_means(per_prompt, n_boot, seed)
    lo, hi = _percentile(boot, conf)
    return {
        "method": "prompt-clustered percentile bootstrap (resample prompts, k samples kept "
        "together); estimate = mean of per-prompt means",
        **base,
        "n_boot": n_boot,
        "seed": seed,
        "estimate": float(per_prompt.mean()),
        "lo": lo,
        "hi": hi,
    }


def paired_delta(a, b, *, n_boot: int, seed: int, conf: float) -> dict:
    """Paired difference of rates on the same prompts: delta = mean(a) - mean(b).

    ``a``: (n_prompts, k_a), ``b``: (n_prompts, k_b) 0/1 arrays, same prompts in the same order
    (k_a may differ from k_b; 1-D means k = 1). delta = mean over prompts of (per-prompt mean of a
    - per-prompt mean of b). Interval: paired percentile bootstrap over prompts -- each resample
    draws prompt indices once and uses them for both arms. ``p_boot``: two-sided bootstrap
    p-value for delta = 0 by percentile-interval inversion (see ``_p_boot``).
    """
    a2, b2 = _as_2d(a), _as_2d(b)
    if a2.shape[0] != b2.shape[0]:
        raise ValueError(f"paired arrays need the same prompts: {a2.shape[0]} vs {b2.shape[0]}")
    d = a2.mean(axis=1) - b2.mean(axis=1)
    res = _paired_bootstrap(d, n_boot, seed, conf)
    return {
        "method": "paired percentile bootstrap over prompts (same resampled prompts for "
        "both arms); delta = mean(a) - mean(b) of per-prompt means",
        "n_prompts": a2.shape[0],
        "k": a2.shape[1] if a2.shape[1] == b2.shape[1] else None,
        "k_a": a2.shape[1],
        "k_b": b2.shape[1],
        "n_boot": n_boot,
        "seed": seed,
        "conf": conf,
        "estimate_a": float(a2.mean(axis=1).mean()),
        "estimate_b": float(b2.mean(axis=1).mean()),
        **res,
    }


# ------------------------------------------------------------------------------------ pass@k
def pass_at_k(n, c, k: int) -> np.ndarray | float:
    """Unbiased pass@k per prompt (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    ``n``: samples per prompt, ``c``: correct samples (scalars or arrays, broadcast), k <= n.
    Computed in the numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k / i)
    (exactly 1 when n - c < k), vectorised with a masked product over the c factors. Returns an
    array (a float for scalar inputs). This is a per-prompt estimator, not an interval.
    """
    n_a, c_a = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64))
    if np.any(c_a < 0) or np.any(c_a > n_a):
        raise ValueError("need 0 <= c <= n")
    if k < 1 or np.any(n_a < k):
        raise ValueError(f"need 1 <= k <= n (k={k})")
    flat_n, flat_c = n_a.ravel(), c_a.ravel()
    out = np.ones(flat_n.shape, dtype=float)
    ok = (flat_n - flat_c) >= k  # otherwise every k-subset holds a correct sample
    if np.any(ok):
        nn, cc = flat_n[ok], flat_c[ok]
        j = np.arange(int(cc.max()) if cc.size else 0)
        i = (nn - cc + 1)[:, None] + j[None, :]  # i = n-c+1 .. n
        factors = np.where(j[None, :] < cc[:, None], 1.0 - k / np.maximum(i, 1), 1.0)
        out[ok] = 1.0 - np.prod(factors, axis=1)
    out = out.reshape(n_a.shape)
    return float(out) if out.ndim == 0 else out


def pass_at_k_ci(n_arr, c_arr, k: int, *, n_boot: int, seed: int, conf: float) -> dict[str, Any]:
    """pass@k over prompts with a percentile bootstrap interval.

    estimate = mean over prompts of the unbiased per-prompt pass@k; interval = percentile
    bootstrap over prompts. In the returned dict ``k`` is the number of samples per prompt
    (``n``; [min, max] if it varies) and ``pass_k`` the k of pass@k; ``n_solved`` = prompts with
    at least one correct sample (with n == pass_k it equals estimate * n_prompts).
    """
    n_a, c_a = np.asarray(n_arr), np.asarray(c_arr)
    if n_a.ndim == 0:
        n_a = np.full(c_a.shape, int(n_a))
    if n_a.shape != c_a.shape or n_a.ndim != 1 or n_a.size == 0:
        raise ValueError("n_arr and c_arr must be 1-D arrays of the same length")
    p = pass_at_k(n_a, c_a, k)
    boot = _bootstrap_means(p, n_boot, seed)
    lo, hi = _percentile(boot, conf)
    return {
        "method": f"unbiased pass@{k} (Chen et al. 2021) per prompt; percentile bootstrap over prompts",
        "n_prompts": int(n_a.size),
        "k": _k_of(n_a),
        "pass_k": k,
        "n_solved": int(np.count_nonzero(c_a > 0)),
        "n_boot": n_boot,
        "seed": seed,
        "conf": conf,
        "estimate": float(p.mean()),
        "lo": lo,
        "hi": hi,
    }


def paired_pass_at_k_delta(n_a, c_a, n_b, c_b, k: int, *, n_boot: int, seed: int, conf: float) -> dict[str, Any]:
    """Paired difference of pass@k on the same prompts: mean pass@k(a) - mean pass@k(b).

    Per-prompt unbiased pass@k for each arm, then the paired percentile bootstrap over prompts
    (same resampled prompts for both arms) and a two-sided ``p_boot`` as in ``paired_delta``.
    """
    na, ca, nb, cb = (np.asarray(v) for v in (n_a, c_a, n_b, c_b))
    na = np.full(ca.shape, int(na)) if na.ndim == 0 else na
    nb = np.full(cb.shape, int(nb)) if nb.ndim == 0 else nb
    if not (na.shape == ca.shape == nb.shape == cb.shape) or ca.ndim != 1:
        raise ValueError("paired pass@k needs four 1-D arrays over the same prompts")
    pa, pb = pass_at_k(na, ca, k), pass_at_k(nb, cb, k)
    res = _paired_bootstrap(pa - pb, n_boot, seed, conf)
    return {
        "method": f"unbiased pass@{k} per prompt; paired percentile bootstrap over prompts "
        "(same resampled prompts for both arms)",
        "n_prompts": int(ca.size),
        "k": _k_of(na) if _k_of(na) == _k_of(nb) else None,
        "k_a": _k_of(na),
        "k_b": _k_of(nb),
        "pass_k": k,
        "n_boot": n_boot,
        "seed": seed,
        "conf": conf,
        "estimate_a": float(pa.mean()),
        "estimate_b": float(pb.mean()),
        **res,
    }


# --------------------------------------------------------------------- planning / variance
def sample_size(sigma2: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Units per arm to detect a mean difference ``delta`` with a two-sided level-``alpha`` z-test:
    n = 2 sigma^2 (z_{1-alpha/2} + z_{power})^2 / delta^2 (rounded up).

    ``sigma2`` is the per-unit variance in each of two independent arms. For a paired design
    (same prompts, variance of the per-prompt difference sigma_d^2) pass ``sigma2 = sigma_d^2 / 2``.
    With k samples per prompt, the per-prompt variance is between + within / k (see
    ``variance_decomposition``).
    """
    if sigma2 < 0 or delta == 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("need sigma2 >= 0, delta != 0, alpha and power in (0, 1)")
    z_a, z_b = float(sps.norm.ppf(1 - alpha / 2)), float(sps.norm.ppf(power))
    n_exact = 2.0 * sigma2 * (z_a + z_b) ** 2 / delta**2
    return {
        "method": "normal approximation, two-sided, two arms: n = 2 sigma^2 (z_a/2 + z_b)^2 / delta^2 per arm",
        "sigma2": sigma2,
        "delta": delta,
        "alpha": alpha,
        "power": power,
        "z_alpha2": z_a,
        "z_beta": z_b,
        "n_exact": n_exact,
        "n": int(math.ceil(n_exact)),
    }


def variance_decomposition(x) -> dict[str, Any]:
    """Between- and within-prompt variance of (n_prompts, k) 0/1 outcomes (k >= 2).

    One-way random-effects ANOVA, method of moments: within = mean over prompts of the
    within-prompt sample variance (ddof=1) = MSW; between = var(per-prompt means, ddof=1) -
    within / k, truncated at 0. ``between_share`` = between / (between + within) (the intraclass
    correlation); ``design_effect`` = 1 + (k - 1) * ICC is the variance inflation of the overall
    mean relative to n*k independent samples; ``var_prompt_mean`` = between + within / k is the
    per-prompt variance to use in ``sample_size``.
    """
    a = _as_2d(x)
    n, k = a.shape
    if k < 2:
        raise ValueError("variance decomposition needs k >= 2 samples per prompt")
    if n < 2:
        raise ValueError("variance decomposition needs at least 2 prompts")
    m = a.mean(axis=1)
    within = float(a.var(axis=1, ddof=1).mean())
    between = max(0.0, float(m.var(ddof=1)) - within / k)
    total = between + within
    icc = between / total if total > 0 else 0.0
    return {
        "method": "one-way random-effects ANOVA (method of moments), between truncated at 0",
        "n_prompts": n,
        "k": k,
        "mean": float(m.mean()),
        "between": between,
        "within": within,
        "total": total,
        "between_share": icc,
        "design_effect": 1.0 + (k - 1) * icc,
        "var_prompt_mean": between + within / k,
    }


def matrix(rows: Sequence[dict], field: str, prompt_ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Rows -> (prompt ids, 0/1 array of shape (n_prompts, k)), prompts in first-seen order
    (or ``prompt_ids``' order). Every prompt must have the same number of samples."""
    by_prompt: dict[str, dict[int, float]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], {})[int(r["sample_index"])] = float(bool(r[field]))
    ids = list(prompt_ids) if prompt_ids is not None else list(by_prompt)
    missing = [i for i in ids if i not in by_prompt]
    if missing:
        raise DataError(f"{len(missing)} prompt(s) missing from the eval rows, e.g. {missing[0]!r}")
    ks = {len(by_prompt[i]) for i in ids}
    if len(ks) != 1:
        raise DataError(f"prompts have different sample counts {sorted(ks)}; cannot form a matrix")
    k = ks.pop()
    x = np.array([[by_prompt[i][j] for j in sorted(by_prompt[i])] for i in ids], dtype=float).reshape(len(ids), k)
    return ids, x
