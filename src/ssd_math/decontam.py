"""Decontamination between training prompts and evaluation rows.

A training row is removed when, against any eval row,

* ``exact``: the normalised texts are equal, or
* ``ngram``: the Jaccard similarity of their word n-gram *sets* is at least ``threshold``, or at
  least the lower ``threshold_same_answer`` when the two gold answers are equal after
  normalisation (a reworded copy of a problem usually keeps its answer, an unrelated problem
  sharing boilerplate usually does not).

Normalisation (:func:`normalize_text`) lower-cases, drops ``$``, ``\\left``/``\\right`` and LaTeX
spacing (``\\,`` ``\\;`` ``\\!`` ``\\quad`` ``~``), maps ``\\dfrac``/``\\tfrac`` to ``\\frac``, drops the braces
of one-token super/subscripts (``x^{4}`` -> ``x^4``; seen in OlympiadBench vs MATH copies of
the same problem), and collapses whitespace; tokens are words, numbers, LaTeX commands and single symbols, so
``x^{2}`` equals ``x^2`` and ``$3$`` equals ``3``.

The schema's defaults (``data.real.decontam``, schemas/config.schema.yaml) and why (measured on MATH-train L4-5 vs MATH-500 + OlympiadBench + AIME/AMC/HMMT, see
tests/test_decontam.py): ``n = 8`` (the common choice for benchmark-contamination checks; with
math symbols as tokens 8 tokens are about one short clause, so a shared 8-gram is rarely a
coincidence except for boilerplate like "express your answer as a common fraction"),
``threshold = 0.5`` and ``threshold_same_answer = 0.3``. A reworded copy with one number changed
keeps most n-grams: a change at one token removes at most ``n`` of the ``L - n + 1`` n-grams
on each side, so for a typical 60-token problem J = 45/61 ≈ 0.74, well above 0.5; unrelated
problems from the same competition style score below 0.1 (the largest unrelated score on the
real files is printed by the test). Texts shorter than ``n`` tokens use the whole token sequence
as their single n-gram, i.e. they only match exactly.

Efficiency: eval n-grams go into an inverted index ``{ngram: [eval indices]}``; each training
row counts shared n-grams per candidate eval row and computes Jaccard only for those, so the
cost is proportional to the number of shared n-grams, not to ``len(train) * len(eval)``
(10k x 1k takes about a second in pure Python).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_SPACING = re.compile(r"\\(?:,|;|:|!|quad|qquad|enspace|thinspace|medspace|thickspace)(?![a-z])|~")
_LEFTRIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_SCRIPT_BRACES = re.compile(r"([\^_])\{\s*(\w+|\\[a-zA-Z]+)\s*\}")
_TOKEN = re.compile(r"\\[a-z]+|[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")


def normalize_text(text: str) -> str:
    """Normalised problem text (see the module docstring)."""
    t = str(text)
    t = t.replace("$", " ")
    t = _SPACING.sub(" ", t)
    t = _LEFTRIGHT.sub("", t)
    t = _FRAC.sub(r"\\frac", t)
    t = _SCRIPT_BRACES.sub(r"\1\2", t)
    t = t.lower()
    return " ".join(t.split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize_text(text))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    toks = tokens(text)
    if not toks:
        return set()
    if len(toks) < n:
        return {tuple(toks)}
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


_ANS_DROP = re.compile(r"\\(?:left|right|!|,|;|displaystyle)(?![a-zA-Z])|\$|\s+")
_ANS_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_answer(answer: Any) -> str:
    """Loose string normal form of a gold answer for the same-answer test (not a grader):
    no spaces/``$``/``\\left``/``\\right``, ``\\dfrac`` -> ``\\frac``, ``\\text{x}`` -> ``x``,
    ``^\\circ`` and trailing ``.`` dropped, lower-case."""
    if answer is None:
        return ""
    a = str(answer)
    a = _ANS_TEXT.sub(r"\1", a)
    a = _FRAC.sub(r"\\frac", a)
    a = a.replace("^\\circ", "").replace("^{\\circ}", "")
    a = _ANS_DROP.sub("", a)
    a = a.rstrip(".").lower()
    return a


def _gram_index(rows: list[Mapping], n: int) -> tuple[list[set], dict[tuple, list[int]]]:
    """Each row's problem n-gram set, and the inverted index n-gram -> positions of the rows."""
    grams = [ngrams(r["problem"], n) for r in rows]
    index: dict[tuple, list[int]] = {}
    for j, gs in enumerate(grams):
        for g in gs:
            index.setdefault(g, []).append(j)
    return grams, index


def _jaccards(grams: set, row_grams: list[set], index: dict[tuple, list[int]]) -> dict[int, float]:
    """The n-gram Jaccard of ``grams`` with every indexed row sharing at least one n-gram
    (position -> Jaccard, in order of first shared n-gram)."""
    shared: dict[int, int] = {}
    for g in grams:
        for j in index.get(g, ()):
            shared[j] = shared.get(j, 0) + 1
    return {j: k / (len(grams) + len(row_grams[j]) - k) for j, k in shared.items()}


def decontaminate(
    train_rows: Iterable[Mapping],
    eval_rows: Iterable[Mapping],
    *,
    n: int,
    threshold: float,
    threshold_same_answer: float,
) -> tuple[list[dict], list[dict]]:
    """Remove training rows that duplicate or nearly duplicate an eval row.

    Returns ``(kept_train_rows, removed_pairs)``; ``removed_pairs`` has one row per matching
    (train, eval) pair, ``{train_id, eval_id, jaccard, same_answer, reason: "exact"|"ngram"}``,
    sorted by train id then descending Jaccard. A training row is kept only when it matches no
    eval row. Rows need ``id`` and ``problem``; ``answer`` is optional (missing = not equal).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < threshold_same_answer <= threshold <= 1:
        raise ValueError(
            f"need 0 < threshold_same_answer <= threshold <= 1, got {threshold_same_answer} and {threshold}"
        )
    train = list(train_rows)
    evals = list(eval_rows)

    exact_index: dict[str, list[int]] = {}
    for j, e in enumerate(evals):
        exact_index.setdefault(normalize_text(e["problem"]), []).append(j)
    eval_answers = [normalize_answer(e.get("answer")) for e in evals]
    eval_grams, index = _gram_index(evals, n)

    kept: list[dict] = []
    pairs: list[dict] = []
    for t in train:
        found: dict[int, dict] = {}
        t_ans = normalize_answer(t.get("answer"))
        for j in exact_index.get(normalize_text(t["problem"]), ()):
            found[j] = {"jaccard": 1.0, "reason": "exact"}
        for j, jac in _jaccards(ngrams(t["problem"], n), eval_grams, index).items():
            if j in found:
                continue
            same = bool(t_ans) and t_ans == eval_answers[j]
            if jac >= (threshold_same_answer if same else threshold):
                found[j] = {"jaccard": jac, "reason": "ngram"}
        if not found:
            kept.append(dict(t))
            continue
        for j, hit in found.items():
            same = bool(t_ans) and t_ans == eval_answers[j]
            pairs.append(
                {
                    "train_id": str(t["id"]),
                    "eval_id": str(evals[j]["id"]),
                    "jaccard": round(hit["jaccard"], 4),
                    "same_answer": same,
                    "reason": hit["reason"],
                }
            )
    pairs.sort(key=lambda p: (p["train_id"], -p["jaccard"], p["eval_id"]))
    return kept, pairs


def max_similarity(train_rows: Iterable[Mapping], eval_rows: Iterable[Mapping], *, n: int, top: int = 20) -> list[dict]:
    """The ``top`` most similar (train, eval) pairs by n-gram Jaccard, whatever the threshold:
    a calibration aid for choosing ``threshold`` (written into the decontamination report)."""
    evals = list(eval_rows)
    eval_grams, index = _gram_index(evals, n)
    best: list[dict] = []
    for t in train_rows:
        for j, jac in _jaccards(ngrams(t["problem"], n), eval_grams, index).items():
            best.append(
                {
                    "train_id": str(t["id"]),
                    "eval_id": str(evals[j]["id"]),
                    "jaccard": round(jac, 4),
                    "same_answer": bool(normalize_answer(t.get("answer")))
                    and normalize_answer(t.get("answer")) == normalize_answer(evals[j].get("answer")),
                }
            )
        if len(best) > 50 * top:
            best = sorted(best, key=lambda p: -p["jaccard"])[:top]
    return sorted(best, key=lambda p: -p["jaccard"])[:top]
