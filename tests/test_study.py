"""ssd_math.study: the study's claims beside this run's verdicts (rule study_table).

This run's side is built by the real ssd_math.findings / ssd_math.tables / ssd_math.run_tables
functions from
constructed graded rows and training logs (tests/test_findings.py's builders); the metrics table
is written with the columns ssd_math.tables.metrics_table writes.
"""

from __future__ import annotations

import re

import polars as pl
import pytest
from test_findings import build, noise_log, pattern, swamped_log

from ssd_math import findings as fd
from ssd_math import io, run_tables, study
from ssd_math.io import write_jsonl

from conftest import ROOT

CLAIMS = ROOT / "report" / "study_claims.yaml"
ARMS = {"ssd": {"t_eval": 0.7}, "naive": {"t_eval": 0.7}}


def run_side(tmp_path, *, ssd, base07, base10, noise: dict, metrics_rows=None):
    """findings.json, noise_summary.csv (arms and noise runs) and metrics.csv of one constructed run."""
    paths = build(tmp_path, ssd=ssd, base07=base07, base10=base10)
    logs, recipes = {}, {}
    for run, (rows, state) in noise.items():
        logs[run] = tmp_path / f"log_{run}.jsonl"
        write_jsonl(logs[run], rows)
        recipes[run] = {"optimizer_state": state, "lr": 5e-6 if run.endswith("-state") else 1e-4}
    io.write_csv(run_tables.noise_summary(logs, recipes), paths["noise_summary"])
    fd.write_findings(
        paths,
        tmp_path / "findings.md",
        tmp_path / "findings.json",
        ssd_arm="ssd",
        arms=[a for a in noise if a in ARMS],
        experiment="t",
        workdir=tmp_path,
    )
    metrics = tmp_path / "metrics.csv"
    pl.DataFrame(metrics_rows or [metric("ssd", 0.5)]).write_csv(metrics)
    return {"findings_json": tmp_path / "findings.json", "noise_summary": paths["noise_summary"], "metrics": metrics}


def metric(model, acc, half=0.05, n=300):
    return {
        "model": model,
        "arm": None,
        "evalset": "eval_main",
        "condition": "T0.7",
        "kind": "grid",
        "n_prompts": n,
        "k": 1,
        "accuracy": acc,
        "accuracy_lo": acc - half,
        "accuracy_hi": acc + half,
    }


def compare(tmp_path, arms=ARMS, **kw):
    return {
        r["key"]: r
        for r in study.compare(
            study.load_claims(CLAIMS), **run_side(tmp_path, **kw), arms=arms, ssd_arm="ssd", main_set="eval_main"
        ).iter_rows(named=True)
    }


NOISE = {
    "ssd": (noise_log(frac=0.06), "fp32"),
    "naive": (noise_log(frac=0.07), "fp32"),
    "bf16-state": (noise_log(frac=0.01), "bf16"),
    "fp32-state": (noise_log(frac=0.04), "fp32"),
}


def test_the_claims_file_names_every_finding_the_findings_write():
    """A claim read from findings.json names a key ssd_math.findings always writes (a verdict or
    'undecided'), so no claim can silently read nothing."""
    claims = study.load_claims(CLAIMS)
    keys = {k for k, *_ in fd.STUDY_FINDINGS}
    named = {c["run"]["finding"] for c in claims["claims"] if c["run"]["kind"] in ("finding", "contrast")}
    assert named <= keys
    # the weight-change finding's claims read its numbers from noise_summary.csv (bounds, not a word);
    # "harder problems gain more" is judged on the study's own comparison (300 set vs 1k set), not by level
    assert keys - named == {"noise_weights", "harder_problems"}
    assert {c["run"]["column"] for c in claims["claims"] if c["run"]["kind"] == "threshold"} == {
        "frac_changed_at_peak_lr",
        "frac_changed_mean_last_third",
    }
    assert all(c["section"].startswith("§") for c in claims["claims"])


def test_a_run_like_the_study_agrees_claim_by_claim(tmp_path):
    # SSD beats base@T1.0 (+35 pp), ties base@T0.7; pass@2 flat; noise numbers inside the bounds
    got = compare(
        tmp_path,
        ssd=pattern(40, 30),
        base07=pattern(40, 30, 1),
        base10=pattern(40, 16),
        noise=NOISE,
        metrics_rows=[metric("ssd", 0.5), metric("naive", 0.52)],
    )
    assert got["t1_ssd_vs_base_t10_main"]["run_verdict"] == "beats"
    assert got["t1_ssd_vs_base_t10_main"]["agrees"] == "yes"
    assert got["t1_ssd_vs_base_t10_main"]["run_estimate"].startswith("Δ\u00a0+35.0\u00a0pp")
    assert got["t1_ssd_vs_matched_main"]["agrees"] == "yes"
    assert got["t2_passk"]["agrees"] == "yes"
    assert got["weights_peak"]["run_verdict"] == "inside" and got["weights_peak"]["agrees"] == "yes"
    assert got["weights_peak"]["run_estimate"] == "6.0%–7.0% (study bound 0.0%–10.0%)"
    assert got["weights_floor"]["agrees"] == "yes"
    assert got["bf16_state"]["run_estimate"] == "bf16-state 1.00% vs fp32-state 4.00% per step"
    assert got["bf16_state"]["agrees"] == "yes"
    assert got["gradient_noise"]["agrees"] == "yes"  # B_simple 900 > batch 64
    assert got["checkpoints_flat"]["agrees"] == "yes"
    # the sweeps' arms are not this run's arms; no arm varies the batch; no probe table
    for k in ("sweep_lr", "sweep_batch", "sweep_length", "sweep_data3x", "locks_sharpen"):
        assert got[k]["agrees"] == "cannot decide" and got[k]["why"], k
    assert "arm lr-high is not among this run's arms" in got["sweep_lr"]["why"]
    assert got["sweep_batch"]["why"] == "no arm of this config varies it"
    assert got["locks_sharpen"]["why"].startswith("Locks and forks. This run cannot decide it")
    # the study's published numbers (docs/study.md §5), its verdict by them the same as its words
    assert got["t1_ssd_vs_base_t10_main"]["study_estimate"] == "Δ\u00a0+2.40\u00a0pp\u00a0[+0.30,\u00a0+4.50]"
    assert got["t1_ssd_vs_base_t10_main"]["study_verdict_by_numbers"] == "beats"
    assert got["t2_passk"]["study_estimate"] == "Δ\u00a0\u22120.67\u00a0pp\u00a0[\u22123.33,\u00a0+2.00]"
    assert got["t1_ssd_vs_base_t10_main"]["overlap"] == "do not overlap"  # +35 pp [..] vs +2.40 [+0.30, +4.50]
    assert got["t1_ssd_vs_matched_main"]["overlap"] == "overlap"
    assert got["weights_peak"]["study_estimate"] == "< 10%"
    assert got["sweep_lr"]["study_estimate"] == "not stated (verdict only)"
    assert got["weights_peak"]["disagreement"] is None


def test_harder_problems_judged_on_the_studys_comparison(tmp_path):
    """The study's own evidence (+3.01 [−1.00, +7.36] on the 300 set vs +1.90 [−0.20, +4.10] on
    the 1k set) overlaps, so by the rule the run follows it reads "not distinguishable"; a run
    that reads the same agrees, one whose hard-set gain lies wholly above agrees with the words."""
    flat = compare(tmp_path / "a", ssd=pattern(40, 20), base07=pattern(40, 20), base10=pattern(40, 20), noise=NOISE)
    h = flat["harder_gain_more"]
    assert h["study_verdict"] == "more" and h["study_verdict_by_numbers"] == "not distinguishable"
    assert (
        h["study_estimate"].startswith("300 set Δ\u00a0+3.01\u00a0pp")
        and " vs 1k set Δ\u00a0+1.90" in h["study_estimate"]
    )
    assert h["run_verdict"] == "not distinguishable" and h["agrees"] == "yes"
    assert h["run_estimate"].startswith("eval_hard Δ\u00a0+0.0\u00a0pp") and " vs eval_main " in h["run_estimate"]


def test_a_weight_change_no_at_another_lr_is_of_scale(tmp_path):
    """The default's peak LR (1e-4, 20× the study's 5e-6) makes its weight-change fraction a
    different scale: the "no" says so with the numbers (bf16's spacing 2⁻⁸: |w| < lr · 2⁹)."""
    noise = {"ssd": (noise_log(frac=0.6), "fp32"), "naive": (noise_log(frac=0.65), "fp32")}
    got = compare(tmp_path, ssd=pattern(40, 20), base07=pattern(40, 20), base10=pattern(40, 20), noise=noise)
    w = got["weights_peak"]
    assert w["agrees"] == "no"
    lr = pl.read_csv(tmp_path / "noise_summary.csv")["peak_lr"][0]
    ratio = lr / 5e-6
    assert w["disagreement"].startswith(
        f"of scale: peak LR {lr:.3g} = {ratio:.3g}× the study's 5e-6".replace("e-0", "e-")
    )
    assert f"= {lr * 512:.3g} here, 0.00256 in the study" in w["disagreement"]
    # the report's table: the cell names the kind, the note under it the numbers
    md = study.render_markdown(pl.DataFrame([w]), {"source": "s", "absolute_numbers": "n"}, absolute_comparable=False)
    assert re.search(r"\| no\\, of scale \\\(1 below\\\) +\|", md), md  # pipe_table escapes punctuation
    assert f"*Of scale:* (1) {w['claim']}: peak LR {lr:.3g}" in md
    # a verdict the study's scale does not explain is one of mechanism
    assert got["t1_ssd_vs_base_t10_main"]["agrees"] == "no"
    assert got["t1_ssd_vs_base_t10_main"]["disagreement"] == "of mechanism"


def test_a_run_unlike_the_study_disagrees(tmp_path):
    # SSD worse than base@T1.0; the weights change a lot; the gradient is signal-dominated
    noise = {
        "ssd": (noise_log(frac=0.6, b_simple=20.0), "fp32"),
        "bf16-state": (noise_log(frac=0.05), "bf16"),
        "fp32-state": (noise_log(frac=0.04), "fp32"),
    }
    got = compare(tmp_path, ssd=pattern(40, 10), base07=pattern(40, 10, 1), base10=pattern(40, 30), noise=noise)
    assert got["t1_ssd_vs_base_t10_main"]["run_verdict"] == "is worse than"
    assert got["t1_ssd_vs_base_t10_main"]["agrees"] == "no"
    assert got["weights_peak"]["run_verdict"] == "outside" and got["weights_peak"]["agrees"] == "no"
    assert got["gradient_noise"]["run_verdict"] == "signal-dominated" and got["gradient_noise"]["agrees"] == "no"
    assert got["bf16_state"]["run_verdict"] == "does not collapse" and got["bf16_state"]["agrees"] == "no"


def test_a_negative_signal_estimate_is_a_verdict_not_a_gap(tmp_path):
    noise = {"ssd": (swamped_log(), "fp32"), "naive": (swamped_log(g2=-0.001), "fp32")}
    got = compare(tmp_path, ssd=pattern(40, 20), base07=pattern(40, 20), base10=pattern(40, 20), noise=noise)
    g = got["gradient_noise"]
    assert g["run_verdict"] == "noise-dominated" and g["agrees"] == "yes"
    assert g["run_estimate"] == "EMA |G|² \u22120.004–\u22120.001 ≤ 0 (2 of 2 runs) vs batch 64"
    assert got["bf16_state"]["agrees"] == "cannot decide"  # no log-only noise runs in this run


def test_a_sweep_arm_in_the_run_is_compared_with_ssd(tmp_path):
    arms = {**ARMS, "data3x": {"t_eval": 0.7}, "long": {"t_eval": 0.7}}
    got = compare(
        tmp_path,
        arms=arms,
        ssd=pattern(40, 20),
        base07=pattern(40, 20),
        base10=pattern(40, 20),
        noise=NOISE,
        metrics_rows=[metric("ssd", 0.5), metric("data3x", 0.53), metric("long", 0.7)],
    )
    assert got["sweep_data3x"]["run_verdict"] == "no effect" and got["sweep_data3x"]["agrees"] == "yes"
    assert (
        got["sweep_data3x"]["run_estimate"]
        == "data3x 53.0% [48.0,\u00a058.0] vs ssd 50.0% [45.0,\u00a055.0] on eval_main @ T0.7"
    )
    assert got["sweep_length"]["run_verdict"] == "an effect" and got["sweep_length"]["agrees"] == "no"


def test_the_markdown_table_has_every_claim_and_the_comparability_note(tmp_path):
    sides = run_side(tmp_path, ssd=pattern(40, 20), base07=pattern(40, 20), base10=pattern(40, 20), noise=NOISE)
    df = study.write_study_table(
        CLAIMS,
        tmp_path / "s.csv",
        tmp_path / "s.md",
        **sides,
        arms=ARMS,
        ssd_arm="ssd",
        main_set="eval_main",
        absolute_comparable=False,
    )
    md = (tmp_path / "s.md").read_text()
    claims = study.load_claims(CLAIMS)["claims"]
    assert df.height == len(claims) and pl.read_csv(tmp_path / "s.csv").height == len(claims)
    assert md.count("\n|") >= len(claims) + 1  # header rule + one row per claim
    assert "*Not comparable:* the absolute numbers." in md
    assert "| arm lr\\-high not built " in md  # the short reason (pipe_table escapes '-')
    counts = {k: int((df["agrees"] == k).sum()) for k in ("yes", "no", "cannot decide")}
    assert f"*{counts['yes']} of {len(claims)} claims agree, {counts['no']} disagree, " in md
    study.write_study_table(
        CLAIMS,
        tmp_path / "s.csv",
        tmp_path / "r.md",
        **sides,
        arms=ARMS,
        ssd_arm="ssd",
        main_set="eval_main",
        absolute_comparable=True,
    )
    real = (tmp_path / "r.md").read_text()
    assert "Not comparable" not in real
    # the comparable recipe says, per row with both intervals, whether they overlap
    assert real.count("intervals overlap") + real.count("intervals do not overlap") == 5
    assert "intervals" not in md.split(":::")[1]  # the tiny default: not comparable, not said
    assert md.startswith("::: {.study-table .column-page-right}\n")


def test_a_bad_study_interval_is_named(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text(
        "source: x\nclaims:\n  - {key: k, claim: c, section: s, study: {estimate: 5, lo: 1, hi: 2, verdict: v},"
        " run: {kind: finding, finding: f}}\n"
    )
    with pytest.raises(ValueError, match=r"claims\[0\] \(k\)\.study: estimate, lo, hi .* \[5, 1, 2\]"):
        study.load_claims(bad)


def test_a_bad_claims_file_is_named(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text("source: x\nclaims:\n  - {key: k, claim: c, section: s, study: {verdict: v}, run: {kind: vibes}}\n")
    with pytest.raises(ValueError, match=r"claims\.yaml: claims\[0\] \(k\)\.run\.kind = 'vibes'"):
        study.load_claims(bad)


def test_the_strict_lock_finding_reads_its_signed_nucleus_change():
    # the locks-and-forks finding as findings.json holds it (a decided verdict with per-class numbers)
    claim = next(c for c in study.load_claims(CLAIMS)["claims"] if c["key"] == "locks_sharpen")
    strict = {"base_mean": 12.345, "delta": -0.031, "lo": -0.042, "hi": -0.018, "n_positions": 812}
    ctx = {"findings": {"locks_and_forks": {"verdict": "shrinks", "numbers": {"classes": {"lock:strict": strict}}}}}
    row = study.RUN_READERS["finding"](claim, ctx)
    assert row["run_verdict"] == "shrinks"
    assert row["run_estimate"] == "12.35 tokens at base, Δ\u00a0\u22120.03 [\u22120.04,\u00a0\u22120.02]"
    assert row["run_n"] == "812 positions"
