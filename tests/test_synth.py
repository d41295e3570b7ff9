import random
import re

import pytest

from ssd_math.synth import (
    RECHECK, answer_of, build_splits, completion_after_prompt, make_problems, worked_solution,
)

SCHEMA = {"id", "problem", "answer", "source", "level", "subject"}


def test_make_problems_schema_distinct_deterministic():
    a = make_problems(200, seed=1, levels=[1, 2, 3])
    b = make_problems(200, seed=1, levels=[1, 2, 3])
    assert a == b
    assert len({r["problem"] for r in a}) == 200
    for r in a:
        assert SCHEMA <= set(r)
        assert r["source"] == "synthetic" and r["level"] in (1, 2, 3)
        assert len(r["terms"]) == r["level"] + 1
        assert r["answer"] == str(answer_of(r["subject"], r["terms"]))
    assert make_problems(50, seed=2, levels=[1]) != make_problems(50, seed=3, levels=[1])


def test_make_problems_runs_out_with_a_clear_error():
    with pytest.raises(ValueError, match="distinct problems"):
        make_problems(2000, seed=0, levels=[1])  # only 9**3 + 8**3 exist


def _check_solution(row, sol):
    assert sol.startswith("<think>\n")
    think, _, final = sol.partition("\n</think>\n\n")
    assert final == f"The units digit is $\\boxed{{{row['answer']}}}$."
    # every step is a correct (mod 10) lock
    for a, op, b, c in re.findall(r"(\d)([+*])(\d)=(\d)", think):
        got = (int(a) + int(b)) % 10 if op == "+" else (int(a) * int(b)) % 10
        assert got == int(c), (sol, a, op, b, c)
    assert think.rstrip().endswith(f"So the units digit is {row['answer']}.")


def test_worked_solutions_are_correct_and_forked():
    rows = make_problems(400, seed=5, levels=[1, 2, 3, 4, 5])
    rng = random.Random(0)
    methods, rechecks = set(), 0
    for r in rows:
        sol = worked_solution(r, rng, p_recheck=0.2)
        _check_solution(r, sol)
        methods |= set(re.findall(r"(From the left|From the right|Pair to ten)", sol))
        rechecks += RECHECK in sol
        # parsing the problem text gives the same terms as the stored field
        r2 = {k: v for k, v in r.items() if k != "terms"}
        _check_solution(r2, worked_solution(r2, random.Random(1)))
    assert methods == {"From the left", "From the right"}  # PAIR_FORK is off by default
    assert 0.1 < rechecks / len(rows) < 0.35


def test_build_splits_disjoint_and_hard_subset():
    sp = build_splits({"n_pretrain": 3000, "n_train_prompts": 200, "n_eval_main": 150, "seed": 3})
    texts = {k: {r["problem"] for r in v} for k, v in sp.items()}
    assert not texts["pretrain"] & texts["eval_main"]
    assert not texts["pretrain"] & texts["train_prompts"]
    assert not texts["train_prompts"] & texts["eval_main"]
    assert texts["eval_hard"] <= texts["eval_main"]
    assert sp["eval_hard"] and all(r["level"] in (3, 4) for r in sp["eval_hard"])
    assert len(sp["eval_hard"]) == sum(r["level"] in (3, 4) for r in sp["eval_main"])
    assert all("solution" in r for r in sp["pretrain"])
    assert sp == build_splits({"n_pretrain": 3000, "n_train_prompts": 200, "n_eval_main": 150,
                               "seed": 3})
    with pytest.raises(ValueError, match="subset"):
        build_splits({"hard_levels": [9], "n_pretrain": 10})


def test_answers_grade_with_math_verify():
    from math_verify import parse, verify

    r = make_problems(1, seed=0, levels=[2])[0]
    sol = worked_solution(r, random.Random(0))
    assert verify(parse(f"${r['answer']}$"), parse(sol))


def test_completion_after_prompt():
    assert completion_after_prompt("x<think>\n", "<think>\nabc") == "abc"
    assert completion_after_prompt("x", "<think>\nabc") == "<think>\nabc"
