"""Tests of ssd_math.grading with the real math-verify (no mocks).

The hostile-batch tests use worker processes with a 1.5 s per-item limit; the whole file runs
in ~10 s on 2 busy cores.
"""

from __future__ import annotations

import time

import pytest

from ssd_math.grading import (
    STATUSES,
    _grade_unique,
    extract_answer,
    grade_answer,
    grade_one,
    grade_rows,
    status_counts,
)

SOFT = 10.0  # in-process alarm for direct grade_answer calls (main thread of pytest)


# ------------------------------------------------------------------------------- extraction
def test_extract_last_boxed_after_think():
    ext = extract_answer(r"<think>try \boxed{3}</think> so the answer is \boxed{\frac{1}{2}}.")
    assert ext == {"think_closed": True, "boxed": True, "extracted_answer": r"\frac{1}{2}"}


def test_extract_ignores_boxed_inside_closed_think():
    ext = extract_answer(r"<think>maybe \boxed{3}</think> I am not sure.")
    assert ext == {"think_closed": True, "boxed": False, "extracted_answer": None}


def test_extract_unclosed_think_searches_everything():
    ext = extract_answer(r"<think>so \boxed{42} and then I kept going")
    assert ext == {"think_closed": False, "boxed": True, "extracted_answer": "42"}


def test_extract_nested_and_escaped_braces():
    ext = extract_answer(r"\boxed{\frac{a^{2}}{b_{1}}}")
    assert ext["extracted_answer"] == r"\frac{a^{2}}{b_{1}}"
    assert extract_answer(r"\boxed{\{1,2\}}")["extracted_answer"] == r"\{1,2\}"
    assert extract_answer(r"\boxed {7}")["extracted_answer"] == "7"


def test_extract_truncated_last_boxed_falls_back_to_previous():
    ext = extract_answer(r"\boxed{5} ... final: \boxed{\frac{1}{")
    assert ext["extracted_answer"] == "5" and ext["boxed"]


def test_extract_no_boxed():
    assert extract_answer("The answer is 5.") == {
        "think_closed": False, "boxed": False, "extracted_answer": None}
    assert extract_answer("")["extracted_answer"] is None


def test_extract_is_linear_on_hostile_text():
    t = time.perf_counter()
    ext = extract_answer(r"\boxed{" * 100_000)  # 700 kB of unclosed boxes
    ext2 = extract_answer("{" * 10_000 + r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_001)
    assert ext["extracted_answer"] is None
    assert ext2["extracted_answer"] == "{" * 10_000 + "1" + "}" * 10_000
    assert time.perf_counter() - t < 2.0


# --------------------------------------------------------------- grading (in this process)
@pytest.mark.parametrize(
    "gold, answer",
    [
        ("204", "204"),
        (r"\frac{1}{2}", "0.5"),
        ("0.5", r"\dfrac{1}{2}"),
        (r"\frac{1}{2}", "1/2"),
        (r"2^{25} \cdot 26!", r"2^{25}\cdot 26!"),
        (r"2^{25} \cdot 26!", r"26! \cdot 2^{25}"),
        (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}"),
        ("x+1", "1+x"),
        (r"$\frac{3}{4}$", r"\frac{6}{8}"),
    ],
)
def test_equivalent_answers_are_correct(gold, answer):
    assert grade_answer(gold, answer, SOFT) == {"status": "correct", "grade_error": None}


@pytest.mark.parametrize("gold, answer", [("3", "4"), (r"\frac{1}{2}", "0.49"), ("x+1", "x-1")])
def test_wrong_answers_are_incorrect(gold, answer):
    assert grade_answer(gold, answer, SOFT)["status"] == "incorrect"


def test_no_answer_and_gold_parse_error():
    assert grade_answer("3", None, SOFT)["status"] == "no_answer"
    assert grade_answer("3", "", SOFT)["status"] == "no_answer"  # \boxed{} parses to nothing
    assert grade_answer("", "3", SOFT)["status"] == "gold_parse_error"


def test_grade_one_combines_extraction_and_grading():
    r = grade_one(r"\frac{1}{2}", r"<think>hmm</think> \boxed{0.5}", SOFT)
    assert r["status"] == "correct" and r["correct"] and r["think_closed"] and r["boxed"]
    r = grade_one("3", "I give up", SOFT)
    assert r["status"] == "no_answer" and not r["correct"] and not r["boxed"]


def test_soft_alarm_reports_timeout_in_a_child():
    # Run in a forked child: an alarm thrown into sympy may leave its state inconsistent, and this
    # pytest process is the parent that grading workers are forked from.
    import multiprocessing as mp

    with mp.get_context("fork").Pool(1) as pool:
        t = time.perf_counter()
        r = pool.apply(grade_one, ("3", r"\boxed{9^{9^{9^{9^{9}}}}}", 0.5))
    assert r["status"] == "timeout" and r["boxed"] and not r["correct"]
    assert time.perf_counter() - t < 5


# ------------------------------------------------------------------------ the process pool
def _row(gold, completion, finish="stop", **kw):
    return {"gold": gold, "completion": completion, "finish_reason": finish, **kw}


# (gold, boxed answer, expected status): ~30 ordinary items
NORMAL = [
    ("204", "204", "correct"),
    (r"\frac{1}{2}", "0.5", "correct"),
    ("0.5", r"\frac12", "correct"),
    (r"2^{25} \cdot 26!", r"2^{25}\cdot 26!", "correct"),
    (r"\sqrt{2}", r"\sqrt{2}", "correct"),
    (r"\frac{\pi}{4}", r"\pi/4", "correct"),
    ("12", "13", "incorrect"),
    (r"\frac{2}{3}", "0.66", "incorrect"),
    ("-5", "-5", "correct"),
    ("7", "7.0", "correct"),
    (r"3\sqrt{3}", r"\sqrt{27}", "correct"),
    ("(1,2)", "(1, 2)", "correct"),
    ("100", "99", "incorrect"),
    (r"\frac{7}{9}", r"\frac{14}{18}", "correct"),
    ("2", "x", "incorrect"),
] + [(str(n), str(n), "correct") for n in range(10, 25)]  # repeated answers exercise the cache

HOSTILE = [
    "9^{9^{9^{9^{9}}}}",  # power tower
    "{" * 10_000 + "1" + "}" * 10_000,  # 10k nesting levels
    "1+" * 500_000 + "1",  # 1 MB answer
    "(10^{8})!",  # huge factorial
    "2^{2^{33}}",  # huge power
    r"\frac{\left( 3}{",  # malformed LaTeX
    r"\sqrt[\begin{matrix}",  # malformed LaTeX
]
N_MALFORMED = 2


def _normal_rows():
    rows = [_row(g, rf"<think>work</think> The answer is \boxed{{{a}}}.") for g, a, _ in NORMAL]
    rows.append(_row("5", "<think>ran out of budget", "length"))
    return rows


def test_grade_rows_fields_order_and_counts():
    rows = _normal_rows()
    for i, r in enumerate(rows):
        r["sample_index"] = i
    out = grade_rows(rows, workers=2, timeout_s=5.0, progress=False)
    assert [o["sample_index"] for o in out] == list(range(len(rows)))
    assert all(o is not r for o, r in zip(out, rows)) and "status" not in rows[0]
    for o, (_, _, expected) in zip(out, NORMAL):
        assert o["status"] == expected, o
        assert o["correct"] == (expected == "correct")
        assert o["think_closed"] and o["boxed"] and not o["length_stop"]
    last = out[-1]
    assert last["status"] == "no_answer" and last["length_stop"] and not last["think_closed"]
    c = status_counts(out)
    assert c["n"] == len(rows) and sum(c[s] for s in STATUSES) == len(rows)
    assert c["correct"] == sum(e == "correct" for *_, e in NORMAL) and c["length_stop"] == 1


def test_hostile_answers_do_not_break_the_batch(capsys):
    timeout_s, workers = 1.5, 2
    normal = _normal_rows()
    t = time.perf_counter()
    grade_rows(normal, workers=workers, timeout_s=timeout_s, progress=False)
    t_normal = time.perf_counter() - t

    hostile = [_row("7", rf"\boxed{{{h}}}") for h in HOSTILE]
    mixed, pos = [], []
    for i, r in enumerate(normal):  # interleave hostile items through the batch
        mixed.append(r)
        if i % 4 == 1 and len(pos) < len(hostile):
            pos.append(len(mixed))
            mixed.append(hostile[len(pos) - 1])
    assert len(pos) == len(hostile)
    t = time.perf_counter()
    out = grade_rows(mixed, workers=workers, timeout_s=timeout_s, progress=True)
    wall = time.perf_counter() - t
    assert "grading" in capsys.readouterr().err  # tqdm bar on stderr

    for j, p in enumerate(pos):
        allowed = {"timeout", "error", "no_answer"}
        if j >= len(HOSTILE) - N_MALFORMED:  # math-verify may salvage a fragment: never correct
            allowed.add("incorrect")
        assert out[p]["status"] in allowed, (HOSTILE[j][:40], out[p]["status"])
    rest = [o for k, o in enumerate(out) if k not in set(pos)]
    ref = grade_rows(normal, workers=workers, timeout_s=5.0, progress=False)
    diff = [(o["extracted_answer"], o["status"], o["grade_error"], r["status"])
            for o, r in zip(rest, ref) if o["status"] != r["status"]]
    assert not diff
    # Bound: every hostile item costs at most one timeout (+ a replacement worker), even run
    # serially; the 3 s margin covers fork/warm-up of replacements on a busy 2-core machine.
    bound = len(HOSTILE) * timeout_s + t_normal + 3.0
    with capsys.disabled():
        print(f"\n[hostile batch] n={len(mixed)} hostile={len(HOSTILE)} timeout_s={timeout_s} "
              f"workers={workers} wall={wall:.2f}s normal_only={t_normal:.2f}s bound={bound:.2f}s "
              f"statuses={status_counts(out)}")
    assert wall < bound


def test_hard_kill_replaces_worker():
    # Without the in-worker alarm every overrun must end in SIGKILL + a fresh worker; the items
    # after the hostile ones are still graded by the replacements.
    jobs = [("3", "9^{9^{9^{9^{9}}}}"), ("3", "(10^{8})!"), ("3", "3"), ("1/2", r"\frac{2}{4}"),
            ("3", "2^{2^{33}}"), ("4", "5")]
    t = time.perf_counter()
    res = _grade_unique(jobs, workers=2, timeout_s=1.5, progress=False, max_memory_mb=4096,
                        soft_fraction=None)
    wall = time.perf_counter() - t
    assert [r["status"] for r in res] == ["timeout", "timeout", "correct", "correct", "timeout",
                                          "incorrect"]
    assert "killed after" in res[0]["grade_error"]
    assert wall < 3 * 1.5 + 5.0


def test_missing_gold_is_gold_parse_error_not_wrong():
    rows = [{"gold": None, "completion": "</think> $\\boxed{None}$", "finish_reason": "stop"},
            {"gold": "", "completion": "</think> $\\boxed{3}$", "finish_reason": "stop"},
            {"gold": "3", "completion": "</think> $\\boxed{3}$", "finish_reason": "stop"}]
    out = grade_rows(rows, workers=1, timeout_s=5.0, progress=False)
    assert [r["status"] for r in out] == ["gold_parse_error", "gold_parse_error", "correct"]
    assert [r["correct"] for r in out] == [False, False, True]
    assert out[0]["grade_error"] == "no gold answer in the row"
