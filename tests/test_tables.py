"""Tables from graded eval files (ssd_math.tables) and of the training runs, the sample-size plan and
the measured cost (ssd_math.run_tables): numbers checked against hand counts and the stats module."""

import numpy as np
import polars as pl
import pytest

from ssd_math import stats
from ssd_math.io import write_jsonl
from ssd_math.stats import matrix
from ssd_math.tables import describe_eval_path, metrics_table, table1, table2


def _rows(correct, *, k=1, level=None, T=0.7, boxed=None, length=None):
    """correct: list over prompts of lists over samples (or scalars when k == 1)."""
    out = []
    for i, c in enumerate(correct):
        cs = c if isinstance(c, list) else [c]
        for j, cj in enumerate(cs):
            out.append(
                {
                    "prompt_id": f"p{i}",
                    "sample_index": j,
                    "correct": bool(cj),
                    "status": "correct" if cj else "incorrect",
                    "think_closed": True,
                    "boxed": True if boxed is None else boxed[i],
                    "length_stop": False if length is None else length[i],
                    "n_completion_tokens": 10 + i,
                    "level": level[i] if level else 1 + i % 2,
                    "source": "synthetic",
                    "sampling": {
                        "temperature": T,
                        "top_k": 20,
                        "top_p": 0.95,
                        "min_p": 0.0,
                        "presence_penalty": 0.0,
                        "max_new_tokens": 64,
                    },
                }
            )
    return out


def test_describe_eval_path(tmp_path):
    R = tmp_path
    assert describe_eval_path(R / "eval/base/eval_main/T0.7.jsonl", R) == {
        "model": "base",
        "arm": None,
        "evalset": "eval_main",
        "condition": "T0.7",
        "kind": "grid",
    }
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
    rows = [
        {"model": "base", "temperature": 0.7},
        {"model": "ssd", "temperature": 0.7},
        {"model": "base", "temperature": 1.0},
    ]
    df = table1(files, rows, ["eval_main"], "ssd", conf=0.95, n_boot=1000, seed=3, fmt_t=lambda t: f"{float(t):.1f}")
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


# ------------------------------------------------------------------------------------------------
# breakdowns, sweeps, checkpoints, noise summary, power, timings
# ------------------------------------------------------------------------------------------------

from ssd_math.run_tables import (  # noqa: E402
    checkpoint_table,
    noise_summary,
    power_table,
    timings_table,
)
from ssd_math.tables import sweep_table, table1_breakdown, table2_breakdown  # noqa: E402


def _eval(R, rel, correct, **kw):
    p = R / "eval" / rel
    write_jsonl(p, _rows(correct, **kw))
    return p


def test_sweep_table_accuracy_equals_eval_file_mean(tmp_path):
    R = tmp_path
    files = {
        "base/eval_main/T0.7.jsonl": ([1, 1, 0, 1, 0], 0.7, 0.0),
        "base/eval_main/T1.0.jsonl": ([1, 0, 0, 0, 0], 1.0, 0.0),
        "base/eval_main/sweep/preset-precise.jsonl": ([1, 1, 1, 0, 0], 0.6, 0.0),
        "base/eval_main/sweep/minp0.05-T1.0.jsonl": ([1, 1, 1, 1, 0], 1.0, 0.05),
        "ssd/eval_main/T0.7.jsonl": ([1, 1, 1, 1, 1], 0.7, 0.0),  # not the base model: not in the table
    }
    paths = []
    for rel, (c, T, mp) in files.items():
        rows = _rows(c, T=T)
        for r in rows:
            r["sampling"]["min_p"] = mp
        p = R / "eval" / rel
        write_jsonl(p, rows)
        paths.append(p)
    m, _ = metrics_table(paths, R, conf=0.95, n_boot=200, seed=0)
    sw = sweep_table(m)
    assert sw.height == 4 and set(sw["family"]) == {"T grid", "preset", "min-p"}
    for row in sw.iter_rows(named=True):
        rows = [__import__("json").loads(x) for x in open(row["file"])]
        assert row["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    pre = sw.filter(pl.col("family") == "preset").row(0, named=True)
    assert pre["name"] == "precise" and pre["temperature"] == 0.6 and pre["accuracy_text"].startswith("60.0%")
    assert sw.filter(pl.col("family") == "min-p")["min_p"].to_list() == [0.05]
    assert sw.filter(pl.col("family") == "T grid")["temperature"].to_list() == [0.7, 1.0]


def test_table1_breakdown_equals_table1_on_each_level(tmp_path):
    R = tmp_path
    n = 40
    rng = np.random.default_rng(1)
    level = [1 + i % 2 for i in range(n)]
    base = (rng.random(n) < 0.5).astype(int)
    ssd = np.where(np.array(level) == 2, 1, base)  # SSD gains only on level 2 (the harder one)
    files = {}
    for model, T, arr in (("base", "0.7", base), ("ssd", "0.7", ssd)):
        files[(model, T, "eval_main")] = _eval(R, f"{model}/eval_main/T{T}.jsonl", list(arr), level=level, T=float(T))
    rows = [{"model": "base", "temperature": 0.7}, {"model": "ssd", "temperature": 0.7}]
    kw = dict(conf=0.95, n_boot=300, seed=2, fmt_t=lambda t: f"{float(t):.1f}")
    df = table1_breakdown(files, rows, ["eval_main"], "ssd", **kw)
    assert set(df["by"]) == {"level"}  # one source only: no source breakdown
    lv = df.filter(pl.col("row") == "Base @ T0.7").sort("group")
    lv1, lv2 = np.array(level) == 1, np.array(level) == 2
    assert lv["eval_main_n_prompts"].to_list() == [lv1.sum(), lv2.sum()]
    assert lv["eval_main_acc"].to_list() == pytest.approx([base[lv1].mean(), base[lv2].mean()])
    assert lv["eval_main_delta_pp"].to_list() == pytest.approx([0.0, 100 * (1 - base[lv2].mean())])
    # a level's row equals Table 1 computed on that level's prompts alone
    sub = {}
    for key, p in files.items():
        rr = [r for r in __import__("json").loads("[" + ",".join(open(p)) + "]") if r["level"] == 2]
        sub[key] = _eval(R, f"sub/{key[0]}/eval_main/T{key[1]}.jsonl", [int(r["correct"]) for r in rr], T=0.7)
    t = table1(sub, rows, ["eval_main"], "ssd", **kw)
    assert t["eval_main_delta_pp"][0] == pytest.approx(lv["eval_main_delta_pp"][1])
    assert t["eval_main_delta_lo_pp"][0] == pytest.approx(lv["eval_main_delta_lo_pp"][1])


def test_table2_breakdown_by_source(tmp_path):
    R = tmp_path
    runs = [{"model": "base", "temperature": 0.7}, {"model": "ssd", "temperature": 0.7}]
    base = [[1, 0], [0, 0], [1, 1], [0, 0]]
    ssd = [[1, 1], [0, 1], [1, 1], [0, 0]]
    files = []
    for run, arr in zip(runs, (base, ssd)):
        rows = _rows(arr, k=2, level=[4, 4, 5, 5])
        for r in rows:
            r["source"] = "a" if r["prompt_id"] in ("p0", "p1") else "b"
        p = R / f"eval/{run['model']}/eval_hard/T0.7-k2.jsonl"
        write_jsonl(p, rows)
        files.append(p)
    df = table2_breakdown(files, runs, 2, "ssd", conf=0.95, n_boot=200, seed=0)
    src_a = df.filter((pl.col("by") == "source") & (pl.col("group") == "a")).sort("row")
    # source a = prompts 0, 1: base solves 1/2, ssd 2/2
    assert src_a.filter(pl.col("model") == "base")["pass_at_k"][0] == pytest.approx(0.5)
    assert src_a.filter(pl.col("model") == "ssd")["pass_at_k"][0] == pytest.approx(1.0)
    assert src_a.filter(pl.col("model") == "base")["delta_pp"][0] == pytest.approx(50.0)
    assert set(df.filter(pl.col("by") == "level")["group"]) == {"4", "5"}


def _log(path, n=6, *, frac=0.05, g2=0.04, peak=2):
    rows = []
    for s in range(1, n + 1):
        rows.append(
            {
                "step": s,
                "loss": 1.0 / s,
                "ppl": float(np.exp(1.0 / s)),
                "lr": 1e-3 if s == peak else 1e-4,
                "grad_norm": 1.0 + s,
                "frac_changed": frac * s,
                "G2_ema": g2 if s > 1 else -0.01,
                "trS_ema": 2.0,
                "B_simple": 2.0 / g2,
                "gB_norm": 1.0,
                "B_small": 2,
                "B_big": 4,
                "dw_hist": {"edges_log10": [-3.0, -2.0], "counts": [5, 1, 2, 1, 1]},
            }
        )
    write_jsonl(path, rows)
    return rows


def test_checkpoint_table_rows_match_checkpoint_files(tmp_path):
    R = tmp_path
    paths = [_eval(R, "base/eval_hard/T0.7.jsonl", [0, 0, 1, 0])]
    acc = {"step2": [1, 0, 1, 0], "step4": [1, 1, 1, 0], "final": [1, 1, 1, 1]}
    for c, v in acc.items():
        paths.append(_eval(R, f"ssd/eval_hard/checkpoints/{c}.jsonl", v))
    m, _ = metrics_table(paths, R, conf=0.95, n_boot=200, seed=0)
    # step 0 is the base model's T-grid file at the checkpoints' decoding (T 0.7 here)
    log = _log(R / "ssd.log.jsonl", n=6)
    df = checkpoint_table(m, {"ssd": R / "ssd.log.jsonl"})
    assert df["checkpoint"].to_list() == ["base", "step2", "step4", "final"]
    assert df["step"].to_list() == [0, 2, 4, 6]
    assert df["accuracy"].to_list() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    r4 = df.filter(pl.col("checkpoint") == "step4").row(0, named=True)
    assert r4["frac_changed"] == pytest.approx(log[3]["frac_changed"]) and r4["lr"] == log[3]["lr"]
    assert r4["signal_norm"] == pytest.approx(0.2)
    lo, hi = stats.wilson_ci(3, 4, 0.95)
    assert r4["accuracy_lo"] == pytest.approx(lo) and r4["accuracy_hi"] == pytest.approx(hi)


def test_noise_summary_numbers(tmp_path):
    _log(tmp_path / "a.jsonl", n=6, frac=0.01, peak=2)
    _log(tmp_path / "b.jsonl", n=6, frac=0.0, peak=3)
    df = noise_summary(
        {"ssd": tmp_path / "a.jsonl", "bf16-state": tmp_path / "b.jsonl"},
        {"bf16-state": {"optimizer_state": "bf16", "lr": 5e-6}},
    )
    a, b = df.row(0, named=True), df.row(1, named=True)
    assert a["peak_lr_step"] == 2 and a["frac_changed_at_peak_lr"] == pytest.approx(0.02)
    assert a["frac_changed_mean"] == pytest.approx(0.01 * 3.5)
    assert a["frac_changed_mean_last_third"] == pytest.approx(0.01 * 5.5)
    assert a["signal_norm_last"] == pytest.approx(0.2) and a["ppl_last"] == pytest.approx(np.exp(1 / 6))
    assert b["optimizer_state"] == "bf16" and b["frac_changed_max"] == 0.0 and b["peak_lr_step"] == 3


def test_power_table_n_equals_formula(tmp_path):
    R = tmp_path
    x = [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1]]
    p = _eval(R, "base/eval_hard/T0.7-k4.jsonl", x, k=4)
    k1 = _eval(R, "base/eval_hard/T0.7.jsonl", [1, 0, 1, 0, 1, 0])  # k = 1: skipped
    df = power_table([p, k1], R, deltas=[0.05, 0.10], alpha=0.05, power=0.8)
    assert df.height == 2 and set(df["k"]) == {4}
    vd = stats.variance_decomposition(np.array(x))
    from scipy.stats import norm

    z = norm.ppf(0.975) + norm.ppf(0.8)
    for row in df.iter_rows(named=True):
        d = row["delta_pp"] / 100
        assert row["n_k1"] == int(np.ceil(2 * vd["total"] * z**2 / d**2))
        assert row["n_kk"] == int(np.ceil(2 * (vd["between"] + vd["within"] / 4) * z**2 / d**2))
        assert row["between_share"] == pytest.approx(vd["between_share"])


def test_timings_table_sums_per_stage(tmp_path):
    root = tmp_path / "benchmarks"
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, s, cpu in (("train/ssd.tsv", 20.0, 35.0), ("train/t13.tsv", 10.0, 15.0), ("grade/a/b/T0.7.tsv", 2.0, 1.0)):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(head + f"{s}\t0:00:{int(s):02d}\t100.0\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    df = timings_table(sorted(root.rglob("*.tsv")), root)
    tr = df.filter(pl.col("stage") == "train").row(0, named=True)
    assert tr["jobs"] == 2 and tr["wall_s"] == pytest.approx(30.0) and tr["cpu_s"] == pytest.approx(50.0)
    assert tr["slowest"] == "train/ssd"
    tot = df.filter(pl.col("stage") == "total").row(0, named=True)
    assert tot["jobs"] == 3 and tot["wall_s"] == pytest.approx(32.0)


def test_report_numbers_are_what_the_prose_quotes():
    """report_numbers (rule report_numbers) computes the prose's numbers from the tables: the
    interval level of Table 1, its first eval set, the min-p sweep's T and the best base
    condition on that set (by accuracy, not by row order or on another set)."""
    from ssd_math.tables import report_numbers

    t1 = pl.DataFrame({"row": ["base @ 0.7"], "eval_main_acc": [0.5], "eval_hard_acc": [0.2], "conf": [0.95]})
    sweeps = pl.DataFrame(
        {
            "evalset": ["eval_hard", "eval_main", "eval_main", "eval_main"],
            "family": ["T grid", "T grid", "min-p", "preset"],
            "condition": ["T1.0", "T0.7", "T0.9-minp0.1", "preset-card"],
            "temperature": [1.0, 0.7, 0.9, 0.6],
            "accuracy": [0.99, 0.40, 0.55, 0.50],
            "accuracy_text": ["99.0% [..]", "40.0% [..]", "55.0% [30.0, 70.0]", "50.0% [..]"],
        }
    )
    got = report_numbers(t1, sweeps)
    assert got == {
        "conf_label": "95%",
        "main_evalset": "eval_main",
        "minp_temperature": 0.9,
        "best_base": {"condition": "T0.9-minp0.1", "accuracy_text": "55.0% [30.0, 70.0]"},
    }
    no_minp = report_numbers(t1.with_columns(pl.lit(0.9).alias("conf")), sweeps.filter(pl.col("family") != "min-p"))
    assert no_minp["minp_temperature"] is None and no_minp["conf_label"] == "90%"
    assert no_minp["best_base"]["condition"] == "preset-card"
