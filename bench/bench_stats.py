"""Benchmark: 10,000 paired bootstrap resamples on 1,000 prompts x 4 samples (target <= 1 s).

Run: ``python bench/bench_stats.py``. Prints the timings and rewrites the "stats" section of
bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from ssd_math.stats import paired_delta, pass_at_k_ci, rate_ci

from _results import write_section  # bench/_results.py (this folder is on sys.path)

N_PROMPTS, K, N_BOOT, REPEATS = 1000, 4, 10_000, 5
CONF = 0.95  # the timing does not depend on it


def _time(fn, repeats=REPEATS):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts))


def main() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1.0, 1.5, size=N_PROMPTS)
    a = rng.binomial(1, np.clip(p + 0.03, 0, 1)[:, None], size=(N_PROMPTS, K))
    b = rng.binomial(1, p[:, None], size=(N_PROMPTS, K))
    rows = [
        ("paired_delta", _time(lambda: paired_delta(a, b, n_boot=N_BOOT, seed=0, conf=CONF))),
        ("rate_ci (clustered)", _time(lambda: rate_ci(a, n_boot=N_BOOT, seed=0, conf=CONF))),
        ("pass_at_k_ci (k=4)", _time(lambda: pass_at_k_ci(K, a.sum(1), 4, n_boot=N_BOOT, seed=0, conf=CONF))),
    ]
    r = paired_delta(a, b, n_boot=N_BOOT, seed=0, conf=CONF)
    host = f"{platform.machine()}, {os.cpu_count()} CPUs visible, numpy {np.__version__}"
    lines = [
        "## stats",
        "",
        f"`python bench/bench_stats.py` -- {N_PROMPTS} prompts x {K} samples, {N_BOOT:,} "
        f"bootstrap resamples, best / median of {REPEATS} runs after a warm-up ({host}; "
        "machine shared with other jobs). Target: paired bootstrap <= 1 s.",
        "",
        "| function | best (s) | median (s) |",
        "|---|---|---|",
        *[f"| {name} | {best:.3f} | {med:.3f} |" for name, (best, med) in rows],
        "",
        f"Sanity: delta = {r['estimate']:.4f} [{r['lo']:.4f}, {r['hi']:.4f}], p_boot = {r['p_boot']:.4f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("stats", text)
    best = rows[0][1][0]
    print(f"paired bootstrap: {best:.3f} s ({'OK' if best <= 1.0 else 'OVER'} target 1 s)")


if __name__ == "__main__":
    main()
