"""Tests of ssd_math.grading with the real math-verify (no mocks).

``tests/data/grading_cases.jsonl``: (gold, completion, expected status) rows made from the real
eval files (OlympiadBench multi-answer rows, AIME, HMMT, MATH-500, MATH train), each with its
source id and a one-line reason. The pool tests assert statuses, never wall times: per-item limits
are generous (a loaded 2-core machine must not turn an ordinary answer into a timeout); the
speed figures come from bench/bench_grading.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from ssd_math import grading, grading_pool
from ssd_math.grading import (
    ANSWER_KINDS,
    STATUSES,
    answer_kind,
    extract_answer,
    grade_answer,
    grade_one,
    normalize_answer,
)
from ssd_math.grading_pool import _grade_unique, grade_rows, status_counts

SOFT = 10.0  # in-process alarm for direct grade_answer calls (main thread of pytest)
CASES = Path(__file__).parent / "data" / "grading_cases.jsonl"


# ------------------------------------------------------------------------------- extraction
def _ext(answer, n_boxes=1, think_closed=False):
    return {"think_closed": think_closed, "boxed": answer is not None, "n_boxes": n_boxes, "extracted_answer": answer}


def test_extract_last_boxed_after_think():
    ext = extract_answer(r"<think>try \boxed{3}</think> so the answer is \boxed{\frac{1}{2}}.")
    assert ext == _ext(r"\frac{1}{2}", think_closed=True)


def test_extract_ignores_boxed_inside_closed_think():
    ext = extract_answer(r"<think>maybe \boxed{3}</think> I am not sure.")
    assert ext == _ext(None, 0, think_closed=True)


def test_extract_unclosed_think_searches_everything():
    assert extract_answer(r"<think>so \boxed{42} and then I kept going") == _ext("42")


def test_extract_nested_and_escaped_braces():
    ext = extract_answer(r"\boxed{\frac{a^{2}}{b_{1}}}")
    assert ext["extracted_answer"] == r"\frac{a^{2}}{b_{1}}"
    assert extract_answer(r"\boxed{\{1,2\}}")["extracted_answer"] == r"\{1,2\}"
    assert extract_answer(r"\boxed {7}")["extracted_answer"] == "7"
    assert extract_answer(r"\boxed{\boxed{3}}") == _ext("3")  # the inner box; the outer one encloses it


def test_extract_truncated_last_boxed_falls_back_to_previous():
    ext = extract_answer(r"\boxed{5} ... final: \boxed{\frac{1}{")
    assert ext["extracted_answer"] == "5" and ext["boxed"]


def test_extract_no_boxed():
    assert extract_answer("The answer is 5.") == _ext(None, 0)
    assert extract_answer("")["extracted_answer"] is None
    assert extract_answer(r"</think>\boxed{}") == _ext("", think_closed=True)  # empty box


@pytest.mark.parametrize(
    "text, answer, n",
    [
        # math-verify's rule: boxes within 10 characters, or within 70 with a separator, join
        (r"\boxed{(1, 2)}, \boxed{(2, 1)}", "(1, 2), (2, 1)", 2),
        (r"\boxed{1} and \boxed{2} and \boxed{3}", "1, 2, 3", 3),
        (r"$\boxed{1}$, $\boxed{3}$", "1, 3", 2),
        (r"\boxed{1}\boxed{1}", "1", 1),  # consecutive repeats count once
        (r"\boxed{2}; the other solution is \boxed{-2}", "2, -2", 2),  # 29 chars with ';'
        (
            r"\boxed{2} was a guess, but after checking all the remaining cases the answer is \boxed{3}",
            "3",
            1,
        ),  # 70+ characters apart: the earlier box is a draft
        (r"\boxed{2} is wrong and \boxed{2}", "2", 1),
        (r"\fbox{7}", "7", 1),
        (r"so $\boxed 42$.", "42", 1),
        (r"\boxed 4.5.", "4.5", 1),
        (r"\boxed x", None, 0),  # only a number may follow \boxed without braces
        (r"\boxedfoo{3}", None, 0),
    ],
)
def test_extract_several_boxes_and_box_forms(text, answer, n):
    ext = extract_answer(text)
    assert (ext["extracted_answer"], ext["n_boxes"]) == (answer, n)


def test_extract_is_linear_on_hostile_text():
    # A quadratic scan of these inputs runs for hours; the bound is generous for a loaded machine.
    t = time.perf_counter()
    ext = extract_answer(r"\boxed{" * 100_000)  # 700 kB of unclosed boxes
    ext2 = extract_answer("{" * 10_000 + r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_001)
    ext3 = extract_answer(r"\boxed{1}, " * 50_000)  # 50k joinable boxes, all equal
    assert ext["extracted_answer"] is None
    assert ext2["extracted_answer"] == "{" * 10_000 + "1" + "}" * 10_000
    assert (ext3["extracted_answer"], ext3["n_boxes"]) == ("1", 1)
    assert time.perf_counter() - t < 30.0


def test_data_last_boxed_uses_the_grader_box_syntax():
    from ssd_math.problem_sources import last_boxed

    text = r"\boxed{1} and \boxed{2}, then \fbox{\frac{1}{2}} and \boxed{"
    spans = grading.boxed_spans(text)
    assert [c for *_, c in spans] == ["1", "2", r"\frac{1}{2}"]
    assert last_boxed(text) == r"\frac{1}{2}"  # the last complete box only, not the joined run
    assert last_boxed(r"\boxed 12") == "12" and last_boxed(r"\boxed{ }") is None


# ------------------------------------------------------------------ normalisation and kinds
@pytest.mark.parametrize(
    "raw, norm",
    [
        (r"1\,000", "1000"),
        ("1 000 000", "1000000"),
        (r"10\;080", "10080"),
        ("1\u2009234", "1234"),
        (r"11\,111\,111\,100", "11111111100"),
        ("1, 000", "1, 000"),  # comma + space: two answers, not a number
        ("12 3456", "12 3456"),
        ("0.123 456", "0.123 456"),
        ("1 23", "1 23"),  # not digit groups
        (r"25\%", "25"),
        (r"80 \%", "80"),
        (r"80\,\%", "80"),
        ("4.2%", "4.2"),
        ("5.", "5"),
        (r"$\frac{1}{2}$", r"\frac{1}{2}"),
        (r"(-\infty, 0) \cup\{1\}.", r"(-\infty, 0) \cup\{1\}"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize(
    "gold, kind",
    [
        ("204", "integer"),
        ("-984", "integer"),
        (r"10,\!080", "integer"),
        (r"90^\circ", "integer"),
        (r"64\%", "integer"),
        (r"\$32,\!348", "integer"),
        ("4.2", "decimal"),
        (r"5.4 \text{ cents}", "decimal"),
        (r"\frac{1311}{2017}", "fraction"),
        (r"\dfrac{7}{3}", "fraction"),
        (r"\frac{270}7\text{ degrees}", "fraction"),
        (r"2^{25} \cdot 26!", "expression"),
        (r"\frac{9 \sqrt{23}}{23}", "expression"),
        (r"\frac{1}{2 n+2}", "expression"),
        ("(1,8,19), (2,7,13), (4,5,7)", "set"),
        ("1, 3, 5", "set"),
        (r"5,\,-11", "set"),
        (r"\{1\pm\sqrt{5},-2\}", "set"),
        ("f(x)=x,f(x)=-x", "set"),
        ("(2,251,252)", "tuple"),
        ("(2,4)", "tuple"),
        (r"(4, \log _{10} 2)", "tuple"),
        (r"[\frac{1}{2}, 8]", "interval"),
        (r"(-\infty,-5)", "interval"),
        (r"(-\infty, 0]", "interval"),
        (r"(-\infty, 0) \cup\{1\}.", "interval"),
        (r"x \in [-2,7]", "interval"),
        ("x=5", "equation"),
        ("y = 2x + 3", "equation"),
        (r"\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \end{pmatrix}", "matrix"),
        (r"\text{Evelyn}", "text"),
        (r"\text{(C)}", "text"),
        ("see the proof", "text"),
        (None, "missing"),
        ("  ", "missing"),
    ],
)
def test_answer_kind(gold, kind):
    assert kind in ANSWER_KINDS and answer_kind(gold) == kind


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


@pytest.mark.parametrize("gold", [r"\frac{", "???", "see the proof", "t(0,4]"])
def test_unparseable_gold_is_gold_parse_error_even_for_the_same_string(gold):
    # math-verify's parse returns only the raw string for these (prose: a product of letters);
    # the model must not be scored against them, whatever it answers.
    for answer in ("5", gold):
        res = grade_answer(gold, answer, SOFT)
        assert res["status"] == "gold_parse_error" and res["grade_error"], (gold, answer, res)


def test_answer_that_parses_to_nothing_is_no_answer():
    res = grade_answer("3", "???", SOFT)
    assert res["status"] == "no_answer" and "parsed no expression" in res["grade_error"]


# ------------------------------------------------------------ the real-data case file
def _cases():
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def graded_cases():
    rows = _cases()
    return rows, grade_rows(rows, workers=2, timeout_s=30.0, progress=False)


def test_case_file_covers_what_it_must():
    rows = _cases()
    assert len(rows) >= 100
    assert all(set(r) >= {"id", "source", "gold", "completion", "expected_status", "reason"} for r in rows)
    c = Counter(r["expected_status"] for r in rows)
    assert {"correct", "incorrect", "no_answer", "gold_parse_error"} <= set(c)
    assert sum(r.get("expected_n_boxes", 0) > 1 for r in rows) >= 20  # several boxes
    kinds = Counter(answer_kind(r["gold"]) for r in rows)
    assert {"integer", "fraction", "expression", "set", "tuple", "interval", "equation", "text", "matrix"} <= set(kinds)


def test_real_cases_grade_as_expected(graded_cases):
    rows, out = graded_cases
    wrong = [
        (r["id"], r["gold"], o["extracted_answer"], o["status"], r["expected_status"], r["reason"])
        for r, o in zip(rows, out)
        if o["status"] != r["expected_status"]
    ]
    assert not wrong, "\n".join(map(str, wrong))
    boxes = [
        (r["id"], o["n_boxes"], r["expected_n_boxes"])
        for r, o in zip(rows, out)
        if "expected_n_boxes" in r and o["n_boxes"] != r["expected_n_boxes"]
    ]
    assert not boxes
    assert all(o["correct"] == (o["status"] == "correct") for o in out)


def test_metrics_breakdown_by_answer_kind_and_status(tmp_path, graded_cases):
    from ssd_math.io import write_jsonl
    from ssd_math.tables import metrics_table

    _, out = graded_cases
    rows = [
        {**o, "prompt_id": f"p{i}", "sample_index": 0, "n_completion_tokens": 10, "level": None, "source": "s"}
        for i, o in enumerate(out)
    ]
    f = tmp_path / "eval" / "base" / "eval_main" / "T0.7.jsonl"
    write_jsonl(f, rows)
    m, b = metrics_table([f], tmp_path, conf=0.95, n_boot=100, seed=0)
    total = Counter(o["status"] for o in out)
    assert [m[f"n_{s}"][0] for s in STATUSES] == [total.get(s, 0) for s in STATUSES]
    kb = b.filter(b["by"] == "answer_kind")
    for kind, n in Counter(answer_kind(o["gold"]) for o in out).items():
        g = kb.filter(kb["group"] == kind).row(0, named=True)
        sub = [o for o in out if answer_kind(o["gold"]) == kind]
        assert g["n_prompts"] == n == sum(g[f"n_{s}"] for s in STATUSES)
        assert g["n_correct"] == sum(o["status"] == "correct" for o in sub)
        assert g["accuracy"] == pytest.approx(g["n_correct"] / n)


def test_tables_use_the_grading_statuses():
    from ssd_math import tables

    assert tables.STATUSES is grading.STATUSES


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
        r = pool.apply_async(grade_one, ("3", r"\boxed{9^{9^{9^{9^{9}}}}}", 0.5)).get(120)
    # without the alarm the power tower never finishes: .get(120) would raise TimeoutError
    assert r["status"] == "timeout" and r["boxed"] and not r["correct"]
    assert "soft timeout" in r["grade_error"] and time.perf_counter() - t < 120


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
] + [(str(n), str(n), "correct") for n in range(10, 25)]

# Resource-hostile answers: each must end `timeout` or `error` (README), never anything else.
HOSTILE = [
    "9^{9^{9^{9^{9}}}}",  # power tower
    "{" * 10_000 + "1" + "}" * 10_000,  # 10k nesting levels
    "1+" * 500_000 + "1",  # 1 MB answer
    "(10^{8})!",  # huge factorial
    "2^{2^{33}}",  # huge power
]
# Malformed LaTeX is not hostile: each has one exact status.
MALFORMED = [
    (r"\frac{\left( 3}{", "no_answer"),  # unbalanced braces: no complete box
    (r"\sqrt[\begin{matrix}", "no_answer"),  # a complete box math-verify parses nothing from
]
LIMIT_S = 4.0  # per item: hostile items run into it, ordinary ones (~10 ms) never do, even loaded


def _normal_rows():
    rows = [_row(g, rf"<think>work</think> The answer is \boxed{{{a}}}.") for g, a, _ in NORMAL]
    rows.append(_row("5", "<think>ran out of budget", "length"))
    return rows


def test_grade_rows_fields_order_and_counts():
    rows = _normal_rows()
    for i, r in enumerate(rows):
        r["sample_index"] = i
    out = grade_rows(rows, workers=2, timeout_s=LIMIT_S, progress=False)
    assert [o["sample_index"] for o in out] == list(range(len(rows)))
    assert all(o is not r for o, r in zip(out, rows)) and "status" not in rows[0]
    for o, (_, _, expected) in zip(out, NORMAL):
        assert o["status"] == expected, o
        assert o["correct"] == (expected == "correct")
        assert o["think_closed"] and o["boxed"] and o["n_boxes"] == 1 and not o["length_stop"]
    last = out[-1]
    assert last["status"] == "no_answer" and last["length_stop"] and not last["think_closed"]
    assert last["n_boxes"] == 0
    c = status_counts(out)
    assert c["n"] == len(rows) and sum(c[s] for s in STATUSES) == len(rows)
    assert c["correct"] == sum(e == "correct" for *_, e in NORMAL) and c["length_stop"] == 1


def test_identical_pairs_are_graded_once(monkeypatch):
    # 90 rows, 3 distinct (gold, extracted answer) pairs + rows that need no grading.
    seen: list[list] = []
    real = grading_pool._grade_unique

    def spy(jobs, **kw):
        seen.append(list(jobs))
        return real(jobs, **kw)

    monkeypatch.setattr(grading_pool, "_grade_unique", spy)
    rows = []
    for i in range(30):
        rows.append(_row("7", rf"</think> \boxed{{7}} (try {i})"))  # same pair, other completions
        rows.append(_row("7", r"<think>\boxed{7}</think> so \boxed{8}"))
        rows.append(_row(r"\frac{1}{2}", r"\boxed{1/2}" if i % 2 else "no box"))
    out = grade_rows(rows, workers=2, timeout_s=LIMIT_S, progress=False)
    assert len(seen) == 1 and sorted(seen[0]) == sorted([("7", "7"), ("7", "8"), (r"\frac{1}{2}", "1/2")])
    assert [o["status"] for o in out[:6]] == ["correct", "incorrect", "no_answer", "correct", "incorrect", "correct"]
    assert Counter(o["status"] for o in out) == {"correct": 45, "incorrect": 30, "no_answer": 15}


def test_hostile_answers_do_not_break_the_batch(capsys):
    normal = _normal_rows()
    bad = [(_row("7", rf"\boxed{{{h}}}"), {"timeout", "error"}) for h in HOSTILE]
    bad += [(_row("7", rf"\boxed{{{m}}}"), {st}) for m, st in MALFORMED]
    mixed, pos = [], []
    for i, r in enumerate(normal):  # interleave the bad items through the batch
        mixed.append(r)
        if i % 4 == 1 and len(pos) < len(bad):
            pos.append(len(mixed))
            mixed.append(bad[len(pos) - 1][0])
    assert len(pos) == len(bad)
    out = grade_rows(mixed, workers=2, timeout_s=LIMIT_S, progress=True)
    assert "grading" in capsys.readouterr().err  # tqdm bar on stderr

    got = [(mixed[p]["completion"][:40], out[p]["status"]) for p in pos]
    assert all(out[p]["status"] in allowed for p, (_, allowed) in zip(pos, bad)), got
    for p in pos[: len(HOSTILE)]:
        assert out[p]["grade_error"] and not out[p]["correct"]
    rest = [o for k, o in enumerate(out) if k not in set(pos)]
    ref = grade_rows(normal, workers=2, timeout_s=LIMIT_S, progress=False)
    diff = [
        (o["extracted_answer"], o["status"], o["grade_error"], r["status"])
        for o, r in zip(rest, ref)
        if o["status"] != r["status"]
    ]
    assert not diff


def test_hard_kill_replaces_worker():
    # Without the in-worker alarm every overrun must end in SIGKILL + a fresh worker; the items
    # after the hostile ones are still graded by the replacements.
    jobs = [
        ("3", "9^{9^{9^{9^{9}}}}"),
        ("3", "(10^{8})!"),
        ("3", "3"),
        ("1/2", r"\frac{2}{4}"),
        ("3", "2^{2^{33}}"),
        ("4", "5"),
    ]
    res = _grade_unique(jobs, workers=2, timeout_s=LIMIT_S, progress=False, max_memory_mb=4096, soft_fraction=None)
    assert [r["status"] for r in res] == ["timeout", "timeout", "correct", "correct", "timeout", "incorrect"]
    assert all("killed after" in res[i]["grade_error"] for i in (0, 1, 4))


def test_missing_gold_is_gold_parse_error_not_wrong():
    rows = [
        {"gold": None, "completion": "</think> $\\boxed{None}$", "finish_reason": "stop"},
        {"gold": "", "completion": "</think> $\\boxed{3}$", "finish_reason": "stop"},
        {"gold": "3", "completion": "</think> $\\boxed{3}$", "finish_reason": "stop"},
    ]
    out = grade_rows(rows, workers=1, timeout_s=LIMIT_S, progress=False)
    assert [r["status"] for r in out] == ["gold_parse_error", "gold_parse_error", "correct"]
    assert [r["correct"] for r in out] == [False, False, True]
    assert out[0]["grade_error"] == "no gold answer in the row"


# ------------------------------------------------------------------------------------------------
# upright constants and operator names (\mathrm{e}, \operatorname{sin}): graded as math graders do
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, answer",
    [
        (r"1 - \frac{1}{\mathrm{e}}", r"1 - \frac{1}{e}"),  # math-verify alone: no expression in the gold
        (r"1 - \frac{1}{\mathrm{e}}", "1-1/e"),
        (r"e^{2}", r"\mathrm{e}^2"),  # math-verify alone: symbol e squared != exp(2)
        (r"\mathrm{e}^2", r"e^{2}"),
        (r"{\rm e}^3", r"e^3"),
        (r"\operatorname{e}^{-1}", r"\frac{1}{e}"),
        (r"2\mathrm{i}", "2i"),  # math-verify alone: \text{i} after 2 is cut as a unit
        (r"\operatorname{sin} x", r"\sin x"),
        (r"\mathrm{\ln}\, 2", r"\ln 2"),
        (r"\mathrm{\pi}/2", r"\frac{\pi}{2}"),
    ],
)
def test_upright_constants_and_operators_are_correct(gold, answer):
    assert grade_answer(gold, answer)["status"] == "correct"


@pytest.mark.parametrize(
    "gold, answer",
    [(r"1 - \frac{1}{\mathrm{e}}", r"1 - \frac{1}{2}"), (r"e^{2}", r"\mathrm{e}^3"), (r"\mathrm{e}", "2.71")],
)
def test_upright_constants_still_grade_wrong_answers_incorrect(gold, answer):
    assert grade_answer(gold, answer)["status"] == "incorrect"


@pytest.mark.parametrize(
    "raw, unwrapped",
    [
        (r"1 - \frac{1}{\mathrm{e}}", r"1 - \frac{1}{e}"),
        (r"\operatorname{sin}(x)", r"\sin (x)"),
        (r"5\,\mathrm{cm}", r"5\,\mathrm{cm}"),  # a unit stays (math-verify drops it)
        (r"3\mathrm{m}", r"3\mathrm{m}"),  # a one-letter unit too: only e and i are constants
        (r"\operatorname{floor}(x)", r"\operatorname{floor}(x)"),  # latex2sympy parses it itself
        (r"\mathbf{2340}", r"\mathbf{2340}"),
    ],
)
def test_unwrap_upright(raw, unwrapped):
    assert grading.unwrap_upright(raw) == unwrapped


def test_units_are_still_dropped_after_unwrapping():
    assert grade_answer(r"5", r"5\,\mathrm{cm}")["status"] == "correct"
    assert grade_answer(r"12", r"12 \mathrm{m}")["status"] == "correct"
