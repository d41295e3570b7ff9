import random
import re
from pathlib import Path

import pytest
import yaml

from ssd_math.synth import (
    RECHECK,
    answer_of,
    build_splits,
    completion_after_prompt,
    label_spans,
    make_problems,
    worked_solution,
)

#: the default config's recipe (config.yaml data.synthetic): tests change only what they measure
SYN = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())["data"]["synthetic"]
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
    sp = build_splits({**SYN, "n_pretrain": 3000, "n_train_prompts": 200, "n_eval_main": 150, "seed": 3})
    texts = {k: {r["problem"] for r in v} for k, v in sp.items()}
    assert not texts["pretrain"] & texts["eval_main"]
    assert not texts["pretrain"] & texts["train_prompts"]
    assert not texts["train_prompts"] & texts["eval_main"]
    assert texts["eval_hard"] <= texts["eval_main"]
    hard = set(SYN["hard_levels"])
    assert sp["eval_hard"] and all(r["level"] in hard for r in sp["eval_hard"])
    assert len(sp["eval_hard"]) == sum(r["level"] in hard for r in sp["eval_main"])
    assert all("solution" in r for r in sp["pretrain"])
    assert sp == build_splits({**SYN, "n_pretrain": 3000, "n_train_prompts": 200, "n_eval_main": 150, "seed": 3})
    with pytest.raises(ValueError, match="subset"):
        build_splits({**SYN, "hard_levels": [9], "n_pretrain": 10, "seed": 0})
    with pytest.raises(ValueError, match="data.synthetic: 'levels' is a required property"):
        build_splits({k: v for k, v in SYN.items() if k != "levels"} | {"seed": 0})


def test_answers_grade_with_math_verify():
    from math_verify import parse, verify

    r = make_problems(1, seed=0, levels=[2])[0]
    sol = worked_solution(r, random.Random(0))
    assert verify(parse(f"${r['answer']}$"), parse(sol))


def test_completion_after_prompt():
    assert completion_after_prompt("x<think>\n", "<think>\nabc") == "abc"
    assert completion_after_prompt("x", "<think>\nabc") == "<think>\nabc"


# --- noisy locks, fork shares, label_spans --------------------------------------------------


def _binom_bound(p, n, z=4.5):
    """|empirical - p| allowed for n Bernoulli(p) draws: z standard errors (z = 4.5: a false
    alarm about once in 150,000 runs; the data are seeded, so the test is deterministic anyway)."""
    return z * (p * (1 - p) / n) ** 0.5


def _locks(sol):
    return [s for s in label_spans(sol) if s["kind"] == "lock"]


def _tally_slips(sol: str, offsets: dict, n: int, wrong: int) -> tuple[int, int]:
    """Count the locks of ``sol`` and its slips, with each slip's offset (written - right) mod 10."""
    for s in _locks(sol):
        n += 1
        got = sol[s["start"] : s["end"]]
        if got != s["correct"]:
            wrong += 1
            d = (int(got) - int(s["correct"])) % 10
            offsets[d] = offsets.get(d, 0) + 1
    return n, wrong


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_lock_noise_rate_and_chain_follows_written_digit(eps):
    rows = make_problems(1500, seed=11, levels=[1, 2, 3, 4])
    rng = random.Random(3)
    n = wrong = answered_wrong = 0
    wrong_digits = {}
    for r in rows:
        sol = worked_solution(r, rng, p_recheck=0.15, lock_noise=eps)
        think = sol.split("</think>")[0]
        for chain in think.split(RECHECK):
            steps = re.findall(r"(\d)([+*])(\d)=(\d)", chain)
            for (_a, _op, _b, c), nxt in zip(steps, steps[1:]):
                assert nxt[0] == c  # the chain continues from the digit written
            # the first operand of a chain is the first (left) or the last (right) term
            if steps:
                first = int(steps[0][0])
                assert first in (r["terms"][0], r["terms"][-1])
        last = re.findall(r"(\d)([+*])(\d)=(\d)", think.split(RECHECK)[-1])
        boxed = re.search(r"\\boxed\{(\d)\}", sol).group(1)
        assert think.rstrip().endswith(f"So the units digit is {boxed}.")
        assert boxed == last[-1][3]  # the boxed answer follows the last chain
        answered_wrong += boxed != r["answer"]
        n, wrong = _tally_slips(sol, wrong_digits, n, wrong)
    assert n > 3000
    assert abs(wrong / n - eps) <= _binom_bound(eps, n) + 1e-12, (wrong / n, eps, n)
    if eps == 0:
        assert answered_wrong == 0
    else:
        assert answered_wrong > 0
        # wrong digits spread uniformly over the other nine: every offset 1..9 at 1/9 +- bound
        assert set(wrong_digits) == set(range(1, 10))
        for d, k in wrong_digits.items():
            assert abs(k / wrong - 1 / 9) <= _binom_bound(1 / 9, wrong), (d, k, wrong)


def test_fork_shares_are_reproduced():
    rows = make_problems(2000, seed=12, levels=[1, 2, 3, 4])
    rng = random.Random(4)
    shares = {"left": 0.7, "right": 0.3}
    forks = []
    for r in rows:
        sol = worked_solution(r, rng, p_recheck=0.1, fork_shares=shares)
        forks += [s["correct"] for s in label_spans(sol) if s["kind"] == "fork"]
    n = len(forks)
    left = forks.count("left") / n
    assert abs(left - 0.7) <= _binom_bound(0.7, n), (left, n)
    only = [
        s["correct"]
        for r in rows[:50]
        for s in label_spans(worked_solution(r, rng, fork_shares={"right": 1.0}))
        if s["kind"] == "fork"
    ]
    assert set(only) == {"right"}
    with pytest.raises(ValueError, match="fork_shares"):
        worked_solution(rows[0], rng, fork_shares={"middle": 1.0})
    with pytest.raises(ValueError, match="fork_shares"):
        worked_solution(rows[0], rng, fork_shares={"left": 0.0, "right": 0.0})


def test_build_splits_noise_knobs_only_touch_pretraining_solutions():
    base = {**SYN, "n_pretrain": 500, "n_train_prompts": 50, "n_eval_main": 40, "seed": 2, "lock_noise": 0.0}
    clean = build_splits(base)
    noisy = build_splits({**base, "lock_noise": 0.3, "fork_shares": {"left": 0.2, "right": 0.8}})
    for k in ("eval_main", "eval_hard", "train_prompts"):
        assert noisy[k] == clean[k]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "solution"} for r in rows]  # noqa: E731
    assert strip(noisy["pretrain"]) == strip(clean["pretrain"])
    assert [r["solution"] for r in noisy["pretrain"]] != [r["solution"] for r in clean["pretrain"]]
    slips = sum(
        noisy["pretrain"][i]["solution"].split("boxed{")[1][0] != r["answer"] for i, r in enumerate(clean["pretrain"])
    )
    assert slips > 50
    with pytest.raises(ValueError, match="lock_noise"):
        build_splits({**base, "lock_noise": 0.95})
    with pytest.raises(ValueError, match="fork_shares"):
        build_splits({**base, "fork_shares": {"up": 1}})


def test_label_spans_on_a_known_text():
    text = (
        "<think>\nFrom the left: 3+7=0, 0+5=5, 5*8=1.\nWait, let me check again.\n"
        "From the right: 8+5=3, 3+7=0.\nSo the units digit is 0.\n</think>\n\n"
        "The units digit is $\\boxed{0}$."
    )
    spans = label_spans(text)
    got = [(s["kind"], text[s["start"] : s["end"]], s["correct"]) for s in spans]
    assert got == [
        ("fork", "left", "left"),
        ("lock", "0", "0"),
        ("lock", "5", "5"),
        ("lock", "1", "0"),  # 5*8 = 40: a slip
        ("recheck", RECHECK, None),
        ("fork", "right", "right"),
        ("lock", "3", "3"),
        ("lock", "0", "0"),
    ]
    assert [s["start"] for s in spans] == sorted(s["start"] for s in spans)
    assert text[spans[1]["start"] - 1] == "="
    # the problem's spaced LaTeX is not a step; a two-digit number is not an operand
    assert label_spans("Find the units digit of $3 + 7$. 13+4=7") == []
    assert label_spans("") == []


def test_label_spans_agrees_with_generated_solutions():
    rows = make_problems(300, seed=13, levels=[1, 2, 3, 4])
    rng = random.Random(5)
    for r in rows:
        sol = worked_solution(r, rng, p_recheck=0.3)  # noise-free: every lock is right
        spans = label_spans(sol)
        n_chains = sol.count(RECHECK) + 1
        assert sum(s["kind"] == "fork" for s in spans) == n_chains
        assert sum(s["kind"] == "recheck" for s in spans) == n_chains - 1
        locks = [s for s in spans if s["kind"] == "lock"]
        assert len(locks) == n_chains * r["level"]
        assert all(sol[s["start"] : s["end"]] == s["correct"] for s in locks)


def test_adjacent_slips_are_off_by_one_at_rate_eps():
    """lock_slip="adjacent": a slip writes c - 1 or c + 1 (mod 10), half each, at rate eps."""
    eps = 0.25
    rows = make_problems(1500, seed=12, levels=[2, 3, 4, 5])
    rng = random.Random(5)
    n = wrong = 0
    offsets = {}
    for r in rows:
        sol = worked_solution(r, rng, p_recheck=0.2, lock_noise=eps, slip="adjacent")
        n, wrong = _tally_slips(sol, offsets, n, wrong)
    assert n > 4000
    assert abs(wrong / n - eps) <= _binom_bound(eps, n), (wrong / n, n)
    assert set(offsets) == {1, 9}  # +1 and -1 only
    assert abs(offsets[1] / wrong - 0.5) <= _binom_bound(0.5, wrong)


def test_lock_slip_is_validated_and_shapes_only_the_pretraining_solutions():
    base = {
        **SYN,
        "n_pretrain": 200,
        "n_train_prompts": 40,
        "n_eval_main": 40,
        "levels": [2, 3],
        "hard_levels": [3],
        "lock_noise": 0.3,
        "seed": 0,
    }
    u, a = build_splits({**base, "lock_slip": "uniform"}), build_splits({**base, "lock_slip": "adjacent"})
    for name in ("eval_main", "train_prompts"):
        assert u[name] == a[name]
    assert [r["problem"] for r in u["pretrain"]] == [r["problem"] for r in a["pretrain"]]
    assert [r["solution"] for r in u["pretrain"]] != [r["solution"] for r in a["pretrain"]]
    with pytest.raises(ValueError, match="lock_slip"):
        build_splits({**base, "lock_slip": "sideways"})
