"""How every number of the report is written: one formatter for the tables, the findings, the
study table, the figures and the report's fragments, and the pandoc pipe table
(:func:`pipe_table`) that every table of the report's fragments is written as.

Intervals are written with non-breaking spaces (U+00A0), so a browser never wraps one, and a
true minus sign (U+2212) where the text is prose. Rates are fractions in, percent out;
percentage-point differences (``pp``) are already in points.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from .stats import level_text

__all__ = [
    "NBSP",
    "MINUS",
    "num",
    "pct",
    "pp",
    "rate",
    "ci",
    "fixed",
    "dci",
    "span",
    "g3",
    "n_prompts",
    "is_missing",
    "excludes_zero",
    "zero_text",
    "order",
    "verdict",
    "method_note",
    "pct_scale",
    "pipe_table",
]

NBSP = "\u00a0"
MINUS = "\u2212"


def is_missing(x: Any) -> bool:
    """None or NaN: shown as an em dash."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float, digits: int = 1, *, sign: bool = False) -> str:
    """``x`` with ``digits`` decimals (``+`` when ``sign``), a true minus sign."""
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", MINUS)


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percent: ``0.123`` -> ``12.3%``."""
    return f"{num(100 * x, digits)}%"


def g3(x: float | None) -> str:
    """Three significant digits (a true minus sign); ``n/a`` when there is no value."""
    return "n/a" if x is None else f"{x:.3g}".replace("-", MINUS)


def pp(est: float, lo: float, hi: float, *, digits: int = 1) -> str:
    """``Δ −0.3 pp [−5.0, +4.3]`` (percentage points in; non-breaking spaces)."""
    return (
        f"Δ{NBSP}{num(est, digits, sign=True)}{NBSP}pp{NBSP}"
        f"[{num(lo, digits, sign=True)},{NBSP}{num(hi, digits, sign=True)}]"
    )


def rate(est: float, lo: float, hi: float) -> str:
    """``35.7% [28.6, 43.5]`` from fractions (prose: true minus, non-breaking spaces)."""
    return f"{num(100 * est)}%{NBSP}[{num(100 * lo)},{NBSP}{num(100 * hi)}]"


def ci(est: float, lo: float, hi: float, *, pp: bool = False) -> str:
    """A table cell from fractions: ``12.3% [8.0, 17.1]``, or with ``pp`` the signed difference in
    points ``+1.0 [-2.0, +3.0]`` (ASCII signs, as the CSVs have always held them); no break inside
    the interval, a possible one before it (a narrow column wraps there)."""
    if pp:
        return f"{100 * est:+.1f} [{100 * lo:+.1f},{NBSP}{100 * hi:+.1f}]"
    return f"{100 * est:.1f}% [{100 * lo:.1f},{NBSP}{100 * hi:.1f}]"


def fixed(est: float | None, lo: float, hi: float, digits: int = 3) -> str:
    """An estimate in its own unit with its interval, unsigned: ``0.812 [0.700, 0.900]``; em dash
    when there is no estimate."""
    if is_missing(est):
        return "\u2014"
    return f"{est:.{digits}f} [{lo:.{digits}f},{NBSP}{hi:.{digits}f}]"


def dci(est: float | None, lo: float, hi: float, digits: int = 3) -> str:
    """A signed difference with its interval in the quantity's own unit: ``+0.012 [−0.003, +0.020]``
    (ASCII sign, as the probe tables have it); em dash when there is no estimate."""
    if is_missing(est):
        return "\u2014"
    return f"{est:+.{digits}f} [{lo:+.{digits}f},{NBSP}{hi:+.{digits}f}]"


def span(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """The range of ``values`` as ``fmt(min)–fmt(max)``, one value when both print the same."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def n_prompts(n: Any, k: Any = None) -> str:
    """``n = 50 prompts`` or ``n = 50 prompts × 4 samples``."""
    n_s = f"n{NBSP}={NBSP}{int(n)}"
    if k is not None and int(k) > 1:
        return f"{n_s} prompts{NBSP}×{NBSP}{int(k)} samples"
    return f"{n_s} prompts"


def excludes_zero(lo: float, hi: float) -> bool:
    """The interval [lo, hi] lies wholly above or wholly below 0."""
    return lo > 0 or hi < 0


def zero_text(lo: float, hi: float) -> str:
    """``excludes 0`` / ``includes 0``."""
    return "excludes 0" if excludes_zero(lo, hi) else "includes 0"


def order(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> str:
    """Interval a against interval b: ``above`` (a wholly above b), ``below``, or ``overlap``
    (a conservative comparison of two estimates: no interval of their difference)."""
    if a_lo > b_hi:
        return "above"
    if a_hi < b_lo:
        return "below"
    return "overlap"


def verdict(
    lo: float, hi: float, *, above: str = "beats", covers: str = "does not beat", below: str = "is worse than"
) -> str:
    """The word for a difference with interval [lo, hi]: above 0, covering 0, or below 0."""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        raise ValueError("a verdict needs an interval")
    if lo > 0:
        return above
    if hi < 0:
        return below
    return covers


def method_note(
    method: str, n: Any, k: Any, n_boot: Any, seed: Any, conf: float, estimator: str = "share of samples graded correct"
) -> str:
    """The estimator, interval method, n and resample count of a table, as one italic line."""
    if isinstance(n, (list, tuple)) and len(set(n)) == 1:
        n = n[0]
    if isinstance(n, (list, tuple)):
        n = f"{min(n)}–{max(n)}"
    resample = (
        "closed form, no resampling"
        if "Wilson" in str(method)
        else f"{n_boot} bootstrap resamples of prompts, seed {seed}"
    )
    return (
        f"*Method.* Estimator: {estimator}. Interval: {method}, {level_text(conf)}. "
        f"n = {n} prompts × {k} sample(s) per prompt. Resampling: {resample}."
    )


def pct_scale(v):
    """Fractions (a scalar or an array) as percent values, for plotting."""
    import numpy as np

    return np.asarray(v, dtype=float) * 100


_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # ASCII punctuation: backslash-escaped, read literally


def pipe_table(data: Any, *, floatfmt: str = ".3f", columns: Sequence[str] | None = None) -> str:
    """A pandoc pipe table (``tabulate(tablefmt="pipe")``) from a polars DataFrame, a list of
    dicts or a dict of lists, for report cells: ``display(Markdown(pipe_table(df)))``.

    Numeric columns (every value an int or float) are right-aligned, floats formatted with
    ``floatfmt``, ``None``/NaN shown as an em dash; a text cell is text, never markdown (its ASCII
    punctuation is backslash-escaped: no TeX math from ``$``, emphasis from ``*``, column break
    from ``|``); strings are never re-parsed as numbers.
    """
    from tabulate import tabulate

    if hasattr(data, "to_dicts"):  # polars
        rows, cols = data.to_dicts(), list(data.columns)
    elif isinstance(data, dict):
        cols = list(data)
        rows = [dict(zip(cols, vals)) for vals in zip(*data.values())]
    else:
        rows = [dict(r) for r in data]
        cols = list(rows[0]) if rows else []
    cols = list(columns) if columns is not None else cols

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "\u2014"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v) if isinstance(v, (int, bool)) else _MD_PUNCT.sub(r"\\\1", str(v).replace("\n", " "))

    def numeric(c: str) -> bool:
        vals = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    return (
        tabulate(
            [[cell(r.get(c)) for c in cols] for r in rows],
            headers=[str(c).replace("|", "\\|") for c in cols],
            tablefmt="pipe",
            colalign=["right" if numeric(c) else "left" for c in cols],
            disable_numparse=True,
        )
        + "\n"
    )
