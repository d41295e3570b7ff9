"""ssd_math.findings and ssd_math.finding_sentences: the report's findings follow the tables' numbers,
and the provenance block (ssd_math.provenance).

Tables 1/2 and the level breakdown are built by the real ssd_math.tables functions from
constructed graded rows (so the schema is the one the DAG writes); the noise summary by the real
ssd_math.run_tables.noise_summary from a constructed per-step log; the checkpoint and probe tables are
written with the columns their builders write.
"""

from __future__ import annotations

import json
import subprocess

import polars as pl
import pytest

from ssd_math import finding_sentences as fs
from ssd_math import findings as fd
from ssd_math import fmt, io, run_tables, tables
from ssd_math.io import write_jsonl, write_meta
from ssd_math.provenance import git_state

NB = fmt.NBSP
STATS = {"conf": 0.95, "n_boot": 400, "seed": 7}
ROWS = [
    {"model": "base", "temperature": 0.7},
    {"model": "ssd", "temperature": 0.7},
    {"model": "base", "temperature": 1.0},
]
SETS = ["eval_main", "eval_hard"]


def plain(text: str) -> str:
    return text.replace(NB, " ").replace(fmt.MINUS, "-")


def graded(correct: list[int], *, k: int = 1, levels=None) -> list[dict]:
    """Rows of one graded eval file: prompt i has k samples, sample j correct = correct[i*k + j]."""
    n = len(correct) // k
    levels = levels or [1 + (i % 4) for i in range(n)]
    return [
        {
            "prompt_id": f"p{i}",
            "sample_index": j,
            "correct": bool(correct[i * k + j]),
            "level": levels[i],
            "source": "synthetic",
        }
        for i in range(n)
        for j in range(k)
    ]


def pattern(n: int, n_correct: int, offset: int = 0) -> list[int]:
    return [1 if (i + offset) % n < n_correct else 0 for i in range(n)]


def build(
    tmp_path,
    *,
    ssd: list[int],
    base07: list[int],
    base10: list[int],
    passk=None,
    noise_rows=None,
    ckpt=None,
    probe=None,
) -> dict:
    """Write the tables the findings read; returns {name: path}."""
    files, passk_files = {}, []
    for (m, t), c in {("base", "0.7"): base07, ("ssd", "0.7"): ssd, ("base", "1.0"): base10}.items():
        for s in SETS:
            p = tmp_path / f"{m}_{s}_T{t}.jsonl"
            write_jsonl(p, graded(c))
            files[(m, t, s)] = p
    out = {}
    t1 = tables.table1(files, ROWS, SETS, "ssd", **STATS)
    io.write_csv(t1, out.setdefault("table1", tmp_path / "table1.csv"))
    t1b = tables.table1_breakdown(files, ROWS, SETS, "ssd", **STATS)
    io.write_csv(t1b, out.setdefault("table1_breakdown", tmp_path / "table1_breakdown.csv"))
    pk = passk or {"base07": base07 * 2, "ssd": ssd * 2, "base10": base10 * 2}
    for name in ("base07", "ssd", "base10"):
        p = tmp_path / f"passk_{name}.jsonl"
        write_jsonl(p, graded(pk[name], k=2))
        passk_files.append(p)
    t2 = tables.table2(passk_files, ROWS, 2, "ssd", **STATS)
    io.write_csv(t2, out.setdefault("table2", tmp_path / "table2.csv"))
    log = tmp_path / "log.jsonl"
    write_jsonl(log, noise_rows or noise_log())
    io.write_csv(
        run_tables.noise_summary({"ssd": log}, {"ssd": {"optimizer_state": "fp32"}}),
        out.setdefault("noise_summary", tmp_path / "noise_summary.csv"),
    )
    pl.DataFrame(ckpt or ckpt_rows()).write_csv(out.setdefault("checkpoints", tmp_path / "checkpoints.csv"))
    if probe is not None:
        pl.DataFrame(probe).write_csv(out.setdefault("probe_deltas", tmp_path / "probe_deltas.csv"))
    return out


def noise_log(*, frac=0.06, b_simple=900.0, b_big=64, steps=6) -> list[dict]:
    return [
        {
            "step": s,
            "lr": [1e-4, 5e-4, 5e-4, 3e-4, 2e-4, 1e-4][s - 1],
            "frac_changed": frac,
            "ppl": 1.8,
            "loss": 0.6,
            "grad_norm": 2.0,
            "G2_ema": 0.04,
            "trS_ema": b_simple * 0.04,
            "B_simple": b_simple,
            "B_small": 8,
            "B_big": b_big,
        }
        for s in range(1, steps + 1)
    ]


def ckpt_rows(accs=(0.40, 0.50, 0.52), half=0.08, n=60) -> list[dict]:
    rows = [
        {
            "arm": "ssd",
            "checkpoint": "base",
            "step": 0,
            "evalset": "eval_hard",
            "condition": "T0.7",
            "n_prompts": n,
            "k": 1,
            "accuracy": 0.3,
            "accuracy_lo": 0.2,
            "accuracy_hi": 0.4,
        }
    ]
    for i, a in enumerate(accs, 1):
        rows.append(
            {
                "arm": "ssd",
                "checkpoint": f"step{i}",
                "step": i,
                "evalset": "eval_hard",
                "condition": "T0.7",
                "n_prompts": n,
                "k": 1,
                "accuracy": a,
                "accuracy_lo": a - half,
                "accuracy_hi": a + half,
            }
        )
    return rows


def find(items, key):
    hit = [f for f in items if f.key == key]
    assert hit, f"no finding {key!r} in {[f.key for f in items]}"
    return hit[0]


# ------------------------------------------------------------------------------------------------
# the wording follows the interval
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ssd_correct,word", [(54, "beats"), (30, "does not beat"), (6, "is worse than")])
def test_table1_wording_follows_the_real_tables(tmp_path, ssd_correct, word):
    n = 60
    paths = build(tmp_path, ssd=pattern(n, ssd_correct), base07=pattern(n, 30, offset=3), base10=pattern(n, 30))
    items = fd.findings(paths, ssd_arm="ssd", arms=["ssd"])
    f = find(items, "ssd_vs_matched")
    t1 = pl.read_csv(paths["table1"]).row(0, named=True)  # Base @ T0.7
    assert f.verdict == word
    assert f"ssd @ T0.7 {word} Base @ T0.7 on eval_main" in plain(f.text)
    # the sentence quotes the table's own delta, interval and n
    expect = (
        f"Δ {t1['eval_main_delta_pp']:+.1f} pp [{t1['eval_main_delta_lo_pp']:+.1f}, "
        f"{t1['eval_main_delta_hi_pp']:+.1f}], n = {n} prompts"
    )
    assert expect in plain(f.text)
    assert f.numbers["sets"]["eval_main"]["delta_pp"] == pytest.approx(t1["eval_main_delta_pp"])
    # the other base row is named by its temperature, not "matched"
    other = find(items, "ssd_vs_base_T1.0")
    assert "SSD vs the T1.0 baseline" in other.text and "Base @ T1.0 on eval_main" in plain(other.text)


def table1_row(lo, hi, est=-0.3, n=300) -> dict:
    r = {"row": "Base @ T0.7", "model": "base", "temperature": 0.7, "conf": 0.95}
    s = {"row": "ssd @ T0.7", "model": "ssd", "temperature": 0.7, "conf": 0.95}
    for x in (r, s):
        x.update({"eval_main_n_prompts": n, "eval_main_k": 1, "eval_main_delta_method": "paired bootstrap"})
    r.update({"eval_main_delta_pp": est, "eval_main_delta_lo_pp": lo, "eval_main_delta_hi_pp": hi})
    s.update({"eval_main_delta_pp": None, "eval_main_delta_lo_pp": None, "eval_main_delta_hi_pp": None})
    return [r, s]


@pytest.mark.parametrize(
    "lo,hi,est,word",
    [(-5.0, 4.3, -0.3, "does not beat"), (0.1, 9.0, 4.5, "beats"), (-9.0, -0.1, -4.5, "is worse than")],
)
def test_wording_flips_at_zero(tmp_path, lo, hi, est, word):
    p = tmp_path / "table1.csv"
    pl.DataFrame(table1_row(lo, hi, est), infer_schema_length=None).write_csv(p)
    f = find(fd.findings({"table1": p}, ssd_arm="ssd", arms=["ssd"]), "ssd_vs_matched")
    text = f.text
    assert f"{word} Base @ T0.7 on eval_main (Δ {_s(est)} pp [{_s(lo)}, {_s(hi)}], n = 300 prompts)" in text.replace(
        NB, " "
    )
    assert f.verdict == word


def _s(x: float) -> str:
    return f"{x:+.1f}".replace("-", fmt.MINUS)


def test_verdict_and_formats():
    assert fs.verdict(-0.1, 0.1) == "does not beat"
    assert fs.verdict(0.0, 1.0) == "does not beat"  # an interval touching 0 does not exclude it
    assert fs.verdict(0.01, 1.0) == "beats"
    assert fs.verdict(-1.0, -0.01) == "is worse than"
    assert fs.fmt_rate(0.357, 0.286, 0.435) == f"35.7%{NB}[28.6,{NB}43.5]"
    assert " " not in fs.fmt_pp(-0.3, -5.0, 4.3)  # never a breakable space inside an interval
    with pytest.raises(ValueError):
        fs.verdict(None, 1.0)


def test_passk_wording(tmp_path):
    n = 60
    same = pattern(2 * n, 60)
    paths = build(
        tmp_path,
        ssd=pattern(n, 30),
        base07=pattern(n, 30),
        base10=pattern(n, 30),
        passk={"base07": same, "ssd": same, "base10": pattern(2 * n, 118)},
    )
    items = fd.findings(paths, ssd_arm="ssd", arms=["ssd"])
    moved = find(items, "passk_vs_base_T0.7")
    assert moved.verdict == "does not beat" and "pass@2 on the hard set does not move" in moved.text
    assert "n = 60 prompts × 2 samples" in plain(moved.text)
    worse = find(items, "passk_vs_base_T1.0")
    t2 = pl.read_csv(paths["table2"]).filter(pl.col("temperature") == 1.0).row(0, named=True)
    assert t2["delta_hi_pp"] < 0 and worse.verdict == "is worse than" and "falls" in worse.text


def breakdown(tmp_path, hard, easy) -> dict:
    rows = []
    for lvl, (est, lo, hi) in ((1, easy), (4, hard)):
        for r in table1_row(lo, hi, est, n=75):
            rows.append({"by": "level", "group": str(lvl), **r})
    p = tmp_path / "t1b.csv"
    pl.DataFrame(rows, infer_schema_length=None).write_csv(p)
    t1 = tmp_path / "table1.csv"
    pl.DataFrame(table1_row(-1, 1, 0), infer_schema_length=None).write_csv(t1)
    return {"table1": t1, "table1_breakdown": p}


def test_harder_problems_need_separated_intervals(tmp_path):
    f = find(
        fd.findings(breakdown(tmp_path, hard=(10, 5, 15), easy=(0, -2, 2)), ssd_arm="ssd", arms=["ssd"]),
        "harder_problems",
    )
    assert f.verdict == "more" and f.text.startswith("**Harder problems.** Harder problems gain more")
    assert "level 4: Δ +10.0 pp [+5.0, +15.0], n = 75 prompts" in plain(f.text)
    f = find(
        fd.findings(breakdown(tmp_path, hard=(3, -1, 7), easy=(0, -2, 2)), ssd_arm="ssd", arms=["ssd"]),
        "harder_problems",
    )
    assert f.verdict == "not distinguishable" and "do not show that harder problems gain more" in f.text
    assert "the intervals overlap" in f.text


@pytest.mark.parametrize("b_simple,b_big,word", [(900.0, 64, "noise-dominated"), (20.0, 64, "signal-dominated")])
def test_gradient_signal_wording(tmp_path, b_simple, b_big, word):
    paths = build(
        tmp_path,
        ssd=pattern(20, 10),
        base07=pattern(20, 10),
        base10=pattern(20, 10),
        noise_rows=noise_log(b_simple=b_simple, b_big=b_big),
    )
    f = find(fd.findings(paths, ssd_arm="ssd", arms=["ssd"]), "noise_gradient")
    assert f.verdict == word and f"gradient is {word}" in f.text
    assert f"B_simple = {b_simple:.3g} sequences" in plain(f.text)
    assert f.numbers["ssd"]["signal_norm"] == pytest.approx(0.2)  # sqrt(G2_ema = 0.04)


@pytest.mark.parametrize(
    "frac,head", [(0.06, "Most stored weights do not change"), (0.8, "Most stored weights change")]
)
def test_weight_change_wording(tmp_path, frac, head):
    paths = build(
        tmp_path, ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10), noise_rows=noise_log(frac=frac)
    )
    f = find(fd.findings(paths, ssd_arm="ssd", arms=["ssd"]), "noise_weights")
    assert head in f.text and f"{100 * frac:.1f}% at the peak-LR step" in f.text
    assert "(n = 6 steps)" in plain(f.text)


def test_checkpoint_flatness(tmp_path):
    kw = dict(ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10))
    f = find(fd.findings(build(tmp_path, **kw), ssd_arm="ssd", arms=["ssd"]), "noise_checkpoints")
    assert f.verdict == "flat" and "Accuracy is flat across checkpoints" in f.text
    assert "3 checkpoints from 40.0% to 52.0%" in f.text and "n = 60 prompts" in plain(f.text)
    f = find(
        fd.findings(
            build(tmp_path, ckpt=ckpt_rows(accs=(0.2, 0.5, 0.8), half=0.05), **kw), ssd_arm="ssd", arms=["ssd"]
        ),
        "noise_checkpoints",
    )
    assert f.verdict == "not flat"


def test_locks_and_forks_hook(tmp_path):
    kw = dict(ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10))
    f = find(fd.findings(build(tmp_path, **kw), ssd_arm="ssd", arms=["ssd"]), "locks_and_forks")
    assert f.verdict == "undecided"  # no probe table: a sentence saying the run cannot decide
    assert f.text == (
        "**Locks and forks.** This run cannot decide it: the table it is read from "
        "(probe_deltas) was not built in this run (it needs nucleus-size deltas with "
        "intervals at probed positions (rules/probe.smk))."
    )
    probe = [
        {
            "arm": "ssd",
            "view": "ref",
            "class": c,
            "metric": "nucleus",
            "delta": d,
            "lo": lo,
            "hi": hi,
            "n_positions": 40,
            "n_prompts": 12,
            "base_mean": 12.0,
        }
        for c, d, lo, hi in (("lock:strict", -2.0, -3.0, -1.0), ("fork", 0.2, -0.5, 0.9), ("mixed", 1.0, 0.5, 1.5))
    ]
    probe.append({**probe[0], "metric": "tail", "delta": 0.05, "lo": 0.01, "hi": 0.09, "base_mean": 0.2})
    f = find(fd.findings(build(tmp_path, probe=probe, **kw), ssd_arm="ssd", arms=["ssd"]), "locks_and_forks")
    assert "at lock:strict positions it shrinks" in f.text and "at fork positions it does not change" in f.text
    assert f.text.count("lock:strict") == 1 and "grows" not in f.text  # the nucleus rows only
    assert "mixed" not in f.text and f.numbers["classes"]["mixed"]["verdict"] == "grows"
    assert "n = 40 positions in 12 prompts" in plain(f.text)
    assert f.verdict == "shrinks"  # the study's claim is about strict locks


# ------------------------------------------------------------------------------------------------
# provenance and the written files
# ------------------------------------------------------------------------------------------------


def test_git_state(tmp_path):
    st = git_state(tmp_path)
    assert st["commit"] is None and st["dirty"] is None and st["error"]
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False, "error": None}
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path)["dirty"] is True


def test_write_findings_and_provenance(tmp_path, monkeypatch):
    paths = build(tmp_path, ssd=pattern(40, 36), base07=pattern(40, 20), base10=pattern(40, 10))
    monkeypatch.setenv("SSD_MATH_CONFIG_HASH", "abc123")
    for p in paths.values():
        write_meta(p, rule="t")
    model = tmp_path / "model"
    model.mkdir()
    (model / "meta.json").write_text(
        json.dumps(
            {
                "config_hash": "abc123",
                "packages": {"torch": "2.13.0"},
                "machine": {
                    "cpu_model": "Test CPU",
                    "logical_cores": 8,
                    "usable_cores": 4,
                    "gpus": ["NVIDIA H200"],
                    "torch": {"version": "2.13.0", "blas": "mkl"},
                },
            }
        )
    )
    md, js = tmp_path / "out" / "findings.md", tmp_path / "out" / "findings.json"
    obj = fd.write_findings(
        paths, md, js, ssd_arm="ssd", arms=["ssd"], experiment="exp-x", workdir=tmp_path, provenance_inputs=[model]
    )
    text = md.read_text()
    assert text.count("\n- ") + text.startswith("- ") == len(obj["findings"]) >= 6
    assert json.loads(js.read_text()) == json.loads(json.dumps(obj))
    assert "beats Base @ T0.7 on eval_main" in plain(text)  # 90% vs 50% on 40 prompts
    pv = obj["provenance"]
    assert pv["config_hash"] == ["abc123"] and pv["experiment"] == "exp-x"
    assert pv["n_sidecars"] == len(paths) + 1
    gpu = [m for m in pv["machines"] if m["gpus"]]
    assert gpu and gpu[0]["cpu_model"] == "Test CPU" and gpu[0]["torch"]["blas"] == "mkl"
    assert pv["git"]["commit"] is None and pv["git"]["error"]


def test_many_runs_give_ranges_not_a_list(tmp_path):
    """More than MAX_LISTED_RUNS runs: the noise-trap and checkpoint sentences give ranges over
    the runs and name them (the per-run numbers stay in findings.json), and the gradient verdict
    groups the runs by verdict."""
    kw = dict(ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10))
    paths = build(tmp_path, **kw)
    logs = {}
    for arm, frac, b in (("ssd", 0.06, 900.0), ("t13", 0.10, 20.0), ("topk5", 0.08, 30.0)):
        logs[arm] = tmp_path / f"log_{arm}.jsonl"
        write_jsonl(logs[arm], noise_log(frac=frac, b_simple=b))
    io.write_csv(run_tables.noise_summary(logs, {a: {"optimizer_state": "fp32"} for a in logs}), paths["noise_summary"])
    ck = ckpt_rows()
    for arm, shift in (("t13", 0.05), ("topk5", -0.05)):
        ck += [{**r, "arm": arm, "accuracy": r["accuracy"] + shift} for r in ckpt_rows()]
    pl.DataFrame(ck).write_csv(paths["checkpoints"])
    got = fd.findings(paths, ssd_arm="ssd", arms=list(logs))
    w = plain(find(got, "noise_weights").text)
    assert "6.0%–10.0% at the peak-LR step" in w and "across the 3 runs (ssd, t13, topk5; n = 6 steps each)" in w
    g = find(got, "noise_gradient")
    assert g.verdict == "mixed"
    gt = plain(g.text)
    assert "noise-dominated for ssd (B_simple = 900 sequences > the batch of 64)" in gt
    assert "signal-dominated for t13, topk5 (B_simple = 20–30 sequences ≤ the batch of 64)" in gt
    assert set(g.numbers) == {"ssd", "t13", "topk5"}
    c = plain(find(got, "noise_checkpoints").text)
    assert "across the 3 arms (ssd, t13, topk5; 3 checkpoints each) accuracy stays within 35.0%–57.0%" in c


# ------------------------------------------------------------------------------------------------
# no finding vanishes
# ------------------------------------------------------------------------------------------------


def swamped_log(*, g2=-0.004, trs=3.2, steps=6) -> list[dict]:
    """A log whose EMA of |G|² is negative at every step: noise.py leaves B_simple undefined."""
    return [{**r, "G2_ema": g2, "trS_ema": trs, "B_simple": None} for r in noise_log(steps=steps)]


def test_negative_signal_estimate_still_gives_the_gradient_finding(tmp_path):
    """EMA of |G|² < 0 for every run (B_simple undefined): the finding says the noise swamps the
    signal at that batch size, with the numbers, instead of vanishing."""
    paths = build(
        tmp_path, ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10), noise_rows=swamped_log()
    )
    f = find(fd.findings(paths, ssd_arm="ssd", arms=["ssd"]), "noise_gradient")
    assert f.verdict == "noise-dominated"
    assert plain(f.text) == (
        "**Noise trap: gradient signal.** Each step's gradient is noise-dominated at the last step: "
        "ssd: the EMA of |G|² = -0.004 ≤ 0 against tr(Σ) = 3.2 after n = 6 steps, so the noise swamps "
        "the signal at the batch of 64 (B_simple is undefined: no batch size would make the signal "
        "dominate) (two-batch estimator of McCandlish et al. 2018, EMA-smoothed; no interval)."
    )
    assert f.numbers["ssd"]["G2_ema"] == pytest.approx(-0.004) and f.numbers["ssd"]["B_simple"] is None


def test_many_runs_with_a_negative_signal_estimate(tmp_path):
    """Three runs, the default arms' case on a CPU where every EMA of |G|² ended negative."""
    paths = build(tmp_path, ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10))
    logs = {}
    for arm, g2 in (("ssd", -0.004), ("naive", -0.002), ("filter-only", 0.04)):
        logs[arm] = tmp_path / f"log_{arm}.jsonl"
        write_jsonl(logs[arm], swamped_log(g2=g2) if g2 < 0 else noise_log(b_simple=900.0))
    io.write_csv(run_tables.noise_summary(logs, {a: {"optimizer_state": "fp32"} for a in logs}), paths["noise_summary"])
    g = find(fd.findings(paths, ssd_arm="ssd", arms=list(logs)), "noise_gradient")
    assert g.verdict == "noise-dominated"
    gt = plain(g.text)
    assert "noise-dominated for filter-only (B_simple = 900 sequences > the batch of 64)" in gt
    assert (
        "noise-dominated for ssd, naive: the EMA of |G|² is -0.004–-0.002 ≤ 0 against tr(Σ) = 3.2, "
        "so the noise swamps the signal at the batch of 64 (B_simple is undefined)"
    ) in gt


def test_every_study_finding_appears_with_a_verdict_or_a_reason(tmp_path):
    """Tables that support nothing but Table 1's matched row: every other finding of the study is
    still there, verdict 'undecided', naming the table and what it lacks."""
    kw = dict(ssd=pattern(20, 10), base07=pattern(20, 10), base10=pattern(20, 10))
    paths = build(tmp_path, **kw)
    t1 = pl.read_csv(paths["table1"])
    t1.filter(pl.col("row") != "Base @ T1.0").write_csv(paths["table1"])
    pl.DataFrame(ckpt_rows()[:2]).write_csv(paths["checkpoints"])  # one trained checkpoint only
    write_jsonl(
        tmp_path / "log.jsonl",
        [{k: v for k, v in r.items() if k not in ("G2_ema", "trS_ema", "B_simple")} for r in noise_log()],
    )
    io.write_csv(run_tables.noise_summary({"ssd": tmp_path / "log.jsonl"}), paths["noise_summary"])
    got = fd.findings({**paths, "table2": tmp_path / "missing.csv"}, ssd_arm="ssd", arms=["ssd"])
    assert [f.key for f in got][: len(fd.STUDY_FINDINGS)] == [k for k, *_ in fd.STUDY_FINDINGS]
    by = {f.key: f for f in got}
    assert by["ssd_vs_matched"].verdict == "does not beat"
    assert by["noise_weights"].verdict == "most values unchanged"
    undecided = {k for k, f in by.items() if f.verdict == "undecided"}
    assert undecided == {
        "ssd_vs_base_T1.0",
        "passk_vs_base_T0.7",
        "noise_gradient",
        "noise_checkpoints",
        "locks_and_forks",
    }
    assert "(table2) was not built in this run" in by["passk_vs_base_T0.7"].text
    assert by["ssd_vs_base_T1.0"].text.endswith("(table1) does not hold a Base @ T1.0 row (report.table1.rows).")
    assert "(noise_summary) does not hold the two-batch |G|² and tr(Σ) estimates" in by["noise_gradient"].text
    assert all("cannot decide" in by[k].text for k in undecided)
    assert fd.render_markdown(got).count("\n- ") == len(got) - 1
