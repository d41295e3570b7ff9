"""End to end: the real Snakemake DAG on the smoke config, in a temporary directory.

Runs every rule (data → tiny base → sampling → filter → SFT → eval → grading → tables →
figures → report) with real transformers models and real math-verify, then checks the
artifacts' contents, that a second run rebuilds nothing, and that changing one knob reruns only
what depends on it.
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
import yaml

from conftest import SMOKE, snakemake  # noqa: E402  (the smoke run is shared: conftest.smoke_run)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(smoke_run):
    return smoke_run


def test_report_rendered_with_tables_and_figure(run):
    wd, _ = run
    html = (wd / "results/report/report.html").read_text()
    meta = json.loads((wd / "results/report/report.html.meta.json").read_text())
    assert meta["engine"] in ("offline", "quarto")
    t1 = pl.read_csv(wd / "results/tables/table1.csv")
    t2 = pl.read_csv(wd / "results/tables/table2.csv")
    # the table text in the report is the table file's text
    for text in t1["eval_main_text"].to_list() + t2["text"].to_list():
        assert text in html
    assert "Table 1" in html and "Table 2" in html and "Figure C" in html
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) >= 2
    assert not re.search(r'(src|href)="https?://', html)  # self-contained


def test_tables_consistent_with_eval_files(run):
    wd, _ = run
    m = pl.read_csv(wd / "results/tables/metrics.csv")
    for row in m.iter_rows(named=True):
        rows = [json.loads(x) for x in (wd / row["file"]).read_text().splitlines()]
        acc = sum(r["correct"] for r in rows) / len(rows)
        assert row["accuracy"] == pytest.approx(acc)
        assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
        assert row["n_samples"] == len(rows)
    grid = m.filter(pl.col("kind") == "grid")
    assert set(grid["model"]) == {"base", "ssd", "topk5"}
    assert set(grid["temperature"]) == {0.7, 1.0}
    assert set(m["kind"]) >= {"grid", "passk", "checkpoint"}


def test_sample_rows_and_filter(run):
    wd, _ = run
    rows = [json.loads(x) for x in (wd / "results/samples/ssd/samples.jsonl").read_text().splitlines()]
    n_prompts = len((wd / "results/data/train_prompts.jsonl").read_text().splitlines())
    assert len(rows) == n_prompts
    need = {"prompt_id", "sample_index", "prompt", "completion", "n_completion_tokens", "finish_reason",
            "seed", "sampling", "model", "condition"}
    assert need <= set(rows[0])
    assert rows[0]["sampling"]["temperature"] == 1.1 and rows[0]["sampling"]["top_k"] == 20
    summary = json.loads((wd / "results/samples/ssd/filter_summary.json").read_text())
    kept = (wd / "results/samples/ssd/kept.jsonl").read_text().splitlines()
    n_length = sum(r["finish_reason"] == "length" for r in rows)
    assert summary["n_dropped"] == n_length and len(kept) == len(rows) - n_length


def test_training_artifacts(run):
    wd, _ = run
    log = [json.loads(x) for x in (wd / "results/train/ssd/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1))
    for ckpt in ("step1", "step2", "final"):
        assert (wd / f"results/models/ssd/{ckpt}/config.json").exists()
    assert {"loss", "lr", "grad_norm", "ppl"} <= set(log[0])


def test_second_run_rebuilds_nothing(run):
    wd, _ = run
    proc = snakemake(wd, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_knob_reruns_only_its_dependents(run, tmp_path):
    wd, _ = run
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["stats"]["conf"] = 0.9  # a statistics knob: only tables, figures and the report depend on it
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))  # same key order: params compare equal
    proc = snakemake(wd, "-n", configfile=changed)
    out = proc.stdout + proc.stderr
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    assert {"metrics", "table1", "table2", "report"} <= jobs
    assert not jobs & {"pretrain_base", "sample_train_shard", "sft", "generate_grid", "grade_grid"}
