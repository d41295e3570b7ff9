"""Tests of ssd_math.decontam: planted near-duplicates and a run on the real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ssd_math.decontam import decontaminate, max_similarity, ngrams, normalize_answer, normalize_text
from ssd_math.schema import schema_defaults

DATA = Path(__file__).resolve().parents[1] / "data" / "real"  # the repository's copies of the real files

BASE = (
    "Let $S$ be the set of positive integers $n$ such that $n^2 + 12n - 2007$ is a perfect "
    "square. Find the remainder when the sum of all elements of $S$ is divided by $1000$, "
    "given that each element is at most $10^{6}$ and the set is non-empty."
)
UNRELATED = [
    "A bag contains 5 red marbles and 3 blue marbles. Two marbles are drawn without "
    "replacement. What is the probability that both are red?",
    "Find the area of the triangle with vertices $(0,0)$, $(4,0)$ and $(0,3)$.",
    "Let $f(x) = x^3 - 3x + 1$. How many real roots does $f$ have in the interval $[-2, 2]$?",
]


#: the schema's decontamination defaults (data.real.decontam): the thresholds these tests measure
DC = schema_defaults("properties/data/properties/real/properties/decontam")


def row(i, problem, answer="1"):
    return {"id": i, "problem": problem, "answer": answer}


def test_normalisation():
    assert normalize_text(r"$x^{2}\,+\;\left(\dfrac{1}{2}\right)$") == normalize_text(r"x^2 + (\frac{1}{2})")
    assert normalize_answer(r"\dfrac{1}{2}") == normalize_answer(r"$\frac{1}{2}$")
    assert normalize_answer(r"30^\circ") == normalize_answer("30")
    assert normalize_answer(r"\text{(B)}") == normalize_answer("(B)")
    assert normalize_answer("") == "" and normalize_answer(None) == ""
    assert ngrams("a b", 8) == {("a", "b")}  # shorter than n: one gram = the whole text


def test_exact_copy_with_whitespace_and_latex_spacing_is_caught():
    spaced = BASE.replace(" ", "   ").replace("n^2", r"n^{2}\,").replace("$1000$", r"$1\!000$")
    spaced = spaced.replace("1\\!000", "1000")  # only spacing commands differ
    kept, pairs = decontaminate([row("t1", spaced, "17")], [row("e1", BASE, "17")], **DC)
    assert kept == []
    assert pairs == [{"train_id": "t1", "eval_id": "e1", "jaccard": 1.0, "same_answer": True, "reason": "exact"}]


def test_reworded_copy_with_one_changed_number_is_caught():
    changed = BASE.replace("2007", "2013").replace("Find the remainder", "Compute the remainder")
    kept, pairs = decontaminate([row("t1", changed, "99")], [row("e1", BASE, "17")], **DC)
    assert kept == [] and len(pairs) == 1
    p = pairs[0]
    assert p["reason"] == "ngram" and not p["same_answer"] and 0.5 <= p["jaccard"] < 1


def test_unrelated_problems_are_kept():
    train = [row(f"u{i}", t) for i, t in enumerate(UNRELATED)]
    kept, pairs = decontaminate(train, [row("e1", BASE, "1")], **DC)
    assert len(kept) == 3 and pairs == []


def test_same_answer_uses_the_lower_threshold():
    # a heavier rewording: similarity between the two thresholds
    reworded = BASE.replace(
        "Let $S$ be the set of positive integers $n$ such that", "Consider all positive integers $n$ for which"
    ).replace("Find the remainder when", "What is the remainder when")
    [(t_id, e_id, jac)] = [
        (p["train_id"], p["eval_id"], p["jaccard"])
        for p in max_similarity([row("t", reworded)], [row("e", BASE)], n=DC["n"], top=1)
    ]
    assert 0.3 <= jac < 0.5, jac
    kept, pairs = decontaminate([row("t", reworded, r"\dfrac{1}{2}")], [row("e", BASE, r"\frac{1}{2}")], **DC)
    assert kept == [] and pairs[0]["same_answer"] and pairs[0]["reason"] == "ngram"
    kept, pairs = decontaminate([row("t", reworded, "3")], [row("e", BASE, "4")], **DC)
    assert len(kept) == 1 and pairs == []
    # the lower threshold is configurable
    kept, pairs = decontaminate(
        [row("t", reworded, "4")], [row("e", BASE, "4")], **{**DC, "threshold_same_answer": 0.49}
    )
    assert len(kept) == 1


def test_one_train_row_can_match_several_eval_rows():
    kept, pairs = decontaminate([row("t", BASE)], [row("e1", BASE), row("e2", BASE + " ")], **DC)
    assert kept == [] and [p["eval_id"] for p in pairs] == ["e1", "e2"]


def test_bad_thresholds_rejected():
    with pytest.raises(ValueError):
        decontaminate([], [], n=DC["n"], threshold=0.3, threshold_same_answer=0.5)


def _read(name):
    with open(DATA / f"{name}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_real_files_math_train_vs_eval_sources(capsys):
    names = ["math_train", "math500", "olympiadbench", "aime2024", "amc2023"]
    extra = ["aime2025", "hmmt_feb2025"]
    assert all((DATA / f"{n}.jsonl").exists() for n in names), f"real data files missing from {DATA}"
    train = [r for r in _read("math_train") if r.get("level") in (4, 5)]
    evals = [r for n in names[1:] + [e for e in extra if (DATA / f"{e}.jsonl").exists()] for r in _read(n)]
    t0 = time.perf_counter()
    kept, pairs = decontaminate(train, evals, **DC)
    dt = time.perf_counter() - t0
    removed = len(train) - len(kept)
    with capsys.disabled():
        print(
            f"\n[decontam] MATH train L4-5 ({len(train)}) vs {len(evals)} eval rows: "
            f"{len(pairs)} pairs, {removed} train rows removed "
            f"({sum(p['same_answer'] for p in pairs)} pairs with equal answers, "
            f"{sum(p['reason'] == 'exact' for p in pairs)} exact) in {dt:.2f} s"
        )
    assert 0 < removed <= 50  # MATH train does not overlap MATH-500 exactly; few near copies
    assert len({p["train_id"] for p in pairs}) == removed
    assert dt < 20
    # a known near copy: MATH train vs MATH-500, same answer, reworded ("are there in")
    assert any(
        p["train_id"] == "train/algebra/1477.json" and p["eval_id"] == "test/algebra/170.json" and p["same_answer"]
        for p in pairs
    )
    # the same problem in MATH train and OlympiadBench with x^{4} vs x^4 notation
    assert any(p["eval_id"].startswith("olympiadbench-") for p in pairs)
