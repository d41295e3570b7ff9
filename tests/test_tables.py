"""Tables from graded eval files: numbers checked against hand counts and the stats module."""

import numpy as np
import polars as pl
import pytest

from ssd_math import stats
from ssd_math.io import write_jsonl
from ssd_math.tables import describe_eval_path, matrix, metrics_table, table1, table2


def _rows(correct, *, k=1, level=None, T=0.7, boxed=None, length=None):
    """correct: list over prompts of lists over samples (or scalars when k == 1)."""
    out = []
    for i, c in enumerate(correct):
        cs = c if isinstance(c, list) else [c]
        for j, cj in enumerate(cs):
            out.append({
                "prompt_id": f"p{i}", "sample_index": j, "correct": bool(cj),
                "status": "correct" if cj else "incorrect",
                "think_closed": True, "boxed": True if boxed is None else boxed[i],
                "length_stop": False if length is None else length[i],
                "n_completion_tokens": 10 + i, "level": level[i] if level else 1 + i % 2, "source": "synthetic",
                "sampling": {"temperature": T, "top_k": 20, "top_p": 0.95, "min_p": 0.0,
                             "presence_penalty": 0.0, "max_new_tokens": 64},
            })
    return out


def test_describe_eval_path(tmp_path):
    R = tmp_path
    assert describe_eval_path(R / "eval/base/eval_main/T0.7.jsonl", R) == {
        "model": "base", "arm": None, "evalset": "eval_main", "condition": "T0.7", "kind": "grid"}
    assert describe_eval_path(R / "eval/ssd/eval_hard/T0.7-k4.jsonl", R)["kind"] == "passk"
    d = describe_eval_path(R / "eval/ssd/eval_hard/checkpoints/step4.jsonl", R)
    assert d["model"] == "ssd/step4" and d["kind"] == "checkpoint" and d["arm"] == "ssd"
    assert describe_eval_path(R / "eval/base/eval_main/sweep/preset-precise.jsonl", R)["kind"] == "sweep"


def test_matrix_orders_and_checks():
    rows = _rows([[1, 0], [1, 1], [0, 0]], k=2)
    ids, x = matrix(rows, "correct")
    assert ids == ["p0", "p1", "p2"] and x.tolist() == [[1, 0], [1, 1], [0, 0]]
    ids2, x2 = matrix(rows, "correct", prompt_ids=["p2", "p0", "p1"])
    assert x2.tolist() == [[0, 0], [1, 0], [1, 1]]


def test_metrics_rows_match_hand_counts(tmp_path):
    R = tmp_path
    correct = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    boxed = [True] * 8 + [False, False]
    length = [False] * 9 + [True]
    f = R / "eval/base/eval_main/T0.7.jsonl"
    write_jsonl(f, _rows(correct, boxed=boxed, length=length))
    m, b = metrics_table([f], R, conf=0.95, n_boot=500, seed=1)
    row = m.row(0, named=True)
    assert row["accuracy"] == pytest.approx(0.6) and row["boxed"] == pytest.approx(0.8)
    assert row["length_stop"] == pytest.approx(0.1) and row["n_prompts"] == 10 and row["k"] == 1
    lo, hi = stats.wilson_ci(6, 10, 0.95)
    assert row["accuracy_lo"] == pytest.approx(lo) and row["accuracy_hi"] == pytest.approx(hi)
    assert "Wilson" in row["method"] and row["n_correct"] == 6 and row["n_incorrect"] == 4
    lv = b.filter(pl.col("by") == "level").sort("group")
    # levels alternate 1, 2: level 1 = prompts 0,2,4,6,8 -> correct 1,0,0,1,1
    assert lv["accuracy"].to_list() == pytest.approx([0.6, 0.6])


def test_table1_delta_is_paired_and_signed(tmp_path):
    R = tmp_path
    n = 200
    rng = np.random.default_rng(0)
    base = rng.random(n) < 0.5
    ssd = base | (rng.random(n) < 0.2)  # SSD solves every prompt base solves, and more
    files = {}
    for model, T, arr in (("base", "0.7", base), ("ssd", "0.7", ssd), ("base", "1.0", base)):
        for s in ("eval_main",):
            p = R / f"eval/{model}/{s}/T{T}.jsonl"
            write_jsonl(p, _rows(list(arr.astype(int)), T=float(T)))
            files[(model, T, s)] = p
    rows = [{"model": "base", "temperature": 0.7}, {"model": "ssd", "temperature": 0.7},
            {"model": "base", "temperature": 1.0}]
    df = table1(files, rows, ["eval_main"], "ssd", conf=0.95, n_boot=1000, seed=3,
                fmt_t=lambda t: f"{float(t):.1f}")
    r0 = df.row(0, named=True)
    assert r0["eval_main_delta_pp"] == pytest.approx(100 * (ssd.mean() - base.mean()))
    assert r0["eval_main_delta_lo_pp"] > 0  # all discordant pairs favour SSD
    assert df.row(1, named=True)["eval_main_delta_text"] == "—"


def test_table2_pass_at_k(tmp_path):
    R = tmp_path
    k = 4
    base = [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    ssd = [[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    runs = [{"model": "base", "temperature": 0.7}, {"model": "ssd", "temperature": 0.7}]
    files = []
    for run, arr in zip(runs, (base, ssd)):
        p = R / f"eval/{run['model']}/eval_hard/T0.7-k4.jsonl"
        write_jsonl(p, _rows(arr, k=4))
        files.append(p)
    df = table2(files, runs, k, "ssd", conf=0.95, n_boot=500, seed=0)
    b, s = df.row(0, named=True), df.row(1, named=True)
    assert b["count"] == 2 and b["pass_at_k"] == pytest.approx(0.5) and b["text"].startswith("2/4 = 50.0%")
    assert s["count"] == 3 and s["pass_at_k"] == pytest.approx(0.75)
    assert b["delta_pp"] == pytest.approx(25.0)
