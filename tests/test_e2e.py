"""End to end: the real Snakemake DAG on the smoke config, in a temporary directory.

Runs every rule (data → tiny base → sampling → filter → SFT → eval → grading → tables →
figures → report) with real transformers models and real math-verify, then checks the
artifacts' contents, that a second run rebuilds nothing, and that changing one knob reruns only
what depends on it.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
from pathlib import Path

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


def test_eval_hard_grid_is_eval_mains_rows_of_its_prompts(run):
    """eval_hard is eval_main's rows at the hard levels: its T-grid and sweep files are eval_main's
    rows of those prompts (rules subset_grid / subset_sweep), with the parent named in the sidecar."""
    wd, _ = run
    hard_ids = {json.loads(x)["id"] for x in (wd / "results/data/eval_hard.jsonl").read_text().splitlines()}
    names = [f"{m}/{{s}}/T{t}" for m in ("base", "ssd") for t in ("0.7", "1.0")] + ["base/{s}/sweep/preset-precise"]
    for name in names:
        main, hard = (wd / f"results/generations/{name.format(s=s)}.jsonl" for s in ("eval_main", "eval_hard"))
        want = [json.loads(x) for x in main.read_text().splitlines()]
        want = [r for r in want if r["prompt_id"] in hard_ids]
        got = [json.loads(x) for x in hard.read_text().splitlines()]
        assert got == want and {r["prompt_id"] for r in got} == hard_ids, name
        meta = json.loads(hard.with_name(hard.name + ".meta.json").read_text())
        assert meta["rule"] == "subset_generations" and meta["subset_of"].endswith(
            f"{name.format(s='eval_main')}.jsonl"
        )
        assert (
            meta["n_rows"] == len(got)
            and meta["sampling"] == json.loads(main.with_name(main.name + ".meta.json").read_text())["sampling"]
        )


def test_sample_rows_and_filter(run):
    wd, _ = run
    rows = [json.loads(x) for x in (wd / "results/samples/ssd/samples.jsonl").read_text().splitlines()]
    n_prompts = len((wd / "results/data/train_prompts.jsonl").read_text().splitlines())
    assert len(rows) == n_prompts
    need = {
        "prompt_id",
        "sample_index",
        "prompt",
        "completion",
        "n_completion_tokens",
        "finish_reason",
        "seed",
        "sampling",
        "model",
        "condition",
    }
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


def test_every_graded_row_regrades_identically(run):
    """Each eval file's rows, regraded one by one (grading.grade_one), equal the graded file's --
    row for row, in the generation file's order (grade_files grades several files in one pool:
    a misaligned row would carry another completion's grade)."""
    from ssd_math.grading import grade_one

    wd, _ = run
    timeout = yaml.safe_load(SMOKE.read_text())["eval"]["grader"]["timeout_s"]
    graded_files = sorted((wd / "results/eval").rglob("*.jsonl"))
    assert len(graded_files) >= 20
    cache: dict = {}
    statuses = set()
    copies = [p for p in graded_files if not (wd / "results/generations" / p.relative_to(wd / "results/eval")).exists()]
    for path in copies:  # an eval file equal to a grid file's is a copy of it (rules reuse_grid_*)
        assert any(o.read_bytes() == path.read_bytes() for o in graded_files if o not in copies), path
    for path in [p for p in graded_files if p not in copies]:
        gen = _rows(wd / "results/generations" / path.relative_to(wd / "results/eval"))
        graded = _rows(path)
        assert len(graded) == len(gen) > 0, path
        for g, r in zip(gen, graded):
            assert {k: r[k] for k in g} == g, path  # the same row, in the same place
            key = (g["gold"], g["completion"])
            if key not in cache:
                cache[key] = grade_one(g["gold"], g["completion"], timeout)
            want = cache[key]
            got = {k: r[k] for k in ("extracted_answer", "status", "correct", "think_closed", "boxed")}
            assert got == {k: want[k] for k in got}, (path, g["prompt_id"], g["sample_index"])
            assert r["length_stop"] == (g["finish_reason"] == "length")
            statuses.add(r["status"])
    # the tiny smoke model mostly gives no answer, but not always: a shifted grade would show
    assert len(statuses) >= 2, statuses


def test_grade_files_keeps_rows_aligned_across_files(tmp_path):
    """grade_files grades several files in one pool and splits the grades back: every row of every
    file gets its own grade (files of different lengths, mixed outcomes, repeated pairs)."""
    from ssd_math.grading import grade_one
    from ssd_math.grading_pool import grade_files

    def row(pid, gold, ans):
        comp = "</think> no box" if ans is None else f"</think> so \\boxed{{{ans}}}"
        return {"prompt_id": pid, "sample_index": 0, "gold": gold, "completion": comp, "finish_reason": "stop"}

    files = {
        "a": [row("a0", "7", "7"), row("a1", "7", "3"), row("a2", "1/2", "0.5")],
        "b": [row("b0", "4", None)],
        "c": [row("c0", "9", "3^2"), row("c1", "2", "2"), row("c2", "5", "6"), row("c3", "7", "7")],
    }
    ins, outs = [], []
    for name, rows in files.items():
        ins.append(tmp_path / f"{name}.jsonl")
        ins[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
        outs.append(tmp_path / f"{name}.graded.jsonl")
    counts = grade_files(ins, outs, workers=2, timeout_s=5.0, progress=False)
    got = {n: [r["status"] for r in _rows(o)] for n, o in zip(files, outs)}
    assert got == {
        "a": ["correct", "incorrect", "correct"],
        "b": ["no_answer"],
        "c": ["correct", "correct", "incorrect", "correct"],
    }
    assert [c["n"] for c in counts] == [3, 1, 4] and [c["correct"] for c in counts] == [2, 0, 3]
    for o, rows in zip(outs, files.values()):
        for g, r in zip(rows, _rows(o)):
            assert {k: r[k] for k in g} == g
            assert r["status"] == grade_one(g["gold"], g["completion"], 5.0)["status"]


def test_every_sidecar_carries_the_run_config_hash(run):
    from ssd_math.io import config_hash

    wd, _ = run
    want = config_hash(yaml.safe_load(SMOKE.read_text()))
    res = wd / "results"
    sidecars = sorted(res.rglob("*.meta.json")) + sorted(res.rglob("meta.json"))
    hashes = {str(p.relative_to(res)): json.loads(p.read_text()).get("config_hash") for p in sidecars}
    assert len(hashes) >= 60
    assert {k: v for k, v in hashes.items() if v != want} == {}
    # every artifact of the data, samples, eval, tables, figures and report stages has one
    kinds = (".jsonl", ".csv", ".png", ".html", ".json")
    missing = [
        str(p.relative_to(res))
        for part in ("data", "samples", "generations", "eval", "tables", "figures", "report")
        for p in (res / part).rglob("*")
        if p.is_file()
        and p.suffix in kinds
        and not p.name.endswith("meta.json")
        and not p.with_name(p.name + ".meta.json").exists()
    ]
    assert missing == []
    models = [d for d in (res / "models").rglob("config.json")]
    assert models and all((d.parent / "meta.json").exists() for d in models)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _dry_run_jobs(wd: Path, cfg: dict, tmp_path: Path) -> set[tuple]:
    """{(rule, wildcards)} of the jobs `snakemake -n` would run with config ``cfg``."""
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))  # same key order: params compare equal
    out = snakemake(wd, "-n", configfile=changed).stdout
    jobs = set()
    for block in re.split(r"\n\s*\n", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        if m:
            w = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
            jobs.add((m.group(1), w.group(1) if w else ""))
    return jobs


# tables, figures and the report: downstream of every eval file / training log
ANALYSIS = {
    "metrics",
    "table1",
    "table2",
    "table1_breakdown",
    "table2_breakdown",
    "sweep_table",
    "checkpoint_table",
    "noise_summary",
    "power",
    "timings",
    "figure_a",
    "figure_b",
    "figure_c",
    "training_curves",
    "weight_change",
    "dw_hist",
    "train_ppl",
    "checkpoint_accuracy",
    "findings",
    "report_numbers",
    "probe_tables",
    "probe_scatter",
    "probe_fork_shares",
    "study_table",
    "report_parts",
    "report",
}


# stats.conf sets the intervals: every table and figure that prints one, the report, and
# `timings` (its inputs are the tables: once they exist every compute job has run). Not the power
# table (fixed planning alpha), nor the training/noise figures (no intervals).
EXPECT_STATS_RULES = {
    "all",
    "metrics",
    "table1",
    "table2",
    "table1_breakdown",
    "table2_breakdown",
    "sweep_table",
    "checkpoint_table",
    "timings",
    "figure_a",
    "figure_c",
    "checkpoint_accuracy",
    "findings",
    "report_numbers",
    "probe_tables",
    "probe_scatter",
    "probe_fork_shares",
    "study_table",
    "report_parts",
    "report",
}

# arms.ssd.temperature: the ssd arm's sampling, filter, training and every eval of its models,
# then every table, figure and the report -- and the noise run bf16-state, which trained on the
# ssd arm's kept samples only while it had the same sampling settings (ssd_math.layout
# Layout.noise_run_source_arm): with ssd at T 1.2 it samples its own training data at its own T 1.1.
EXPECT_SSD_JOBS = {
    *{("sample_train_shard", f"arm={a}, shard={i}") for a in ("ssd", "bf16-state") for i in (0, 1)},
    *{(r, f"arm={a}") for r in ("merge_shards", "filter_samples") for a in ("ssd", "bf16-state")},
    ("sft", "arm=ssd"),
    ("noise_run", "arm=bf16-state"),
    ("generate_grid", "model=ssd, evalset=eval_main"),
    ("subset_grid", "model=ssd, evalset=eval_hard"),
    *{("grade_grid", f"model=ssd, evalset={e}") for e in ("eval_main", "eval_hard")},
    *{(r, "arm=ssd, evalset=eval_hard") for r in ("generate_checkpoints", "grade_checkpoints", "reuse_grid_final")},
    *{(r, "model=ssd, evalset=eval_hard, t=0.7, k=2") for r in ("generate_passk", "grade_passk")},
    # the probe's carriers include ssd's generations at the probe's T: every model reads them again
    ("probe_positions", ""),
    *{("probe_forward", f"model={m}") for m in ("base", "ssd", "topk5")},
    *{(r, "") for r in ANALYSIS | {"all"}},
}


def test_changing_stats_conf_reruns_exactly_tables_figures_report(run, tmp_path):
    wd, _ = run
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["stats"]["conf"] = 0.9  # a statistics knob: only tables, figures and the report depend on it
    jobs = _dry_run_jobs(wd, cfg, tmp_path)
    assert {r for r, _ in jobs} == EXPECT_STATS_RULES, sorted(jobs)
    assert all(w == "" for _, w in jobs)


def test_stats_conf_labels_every_interval(run, tmp_path):
    """With stats.conf 0.9 (on a copy of the smoke run: only the tables, figures and report
    rerun) the report names the level it was computed at everywhere, captions included: 90%,
    never 95% (an estimate reads "95.0%", a level "95%"). The figures' own titles:
    test_figures.test_ci_labels_follow_the_tables_conf."""
    wd, _ = run
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)  # mtimes kept: only the changed param reruns jobs
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["stats"]["conf"] = 0.9
    changed = tmp_path / "conf90.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(copy, configfile=changed)
    html = (copy / "results/report/report.html").read_text(encoding="utf-8")
    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)))
    assert not re.search(r"(?<![\d.])95\s?%", text), re.findall(r".{0,60}(?<![\d.])95\s?%.{0,20}", text)
    assert len(re.findall(r"(?<![\d.])90%", text)) >= 10  # prose, captions, method notes, findings
    captions = re.findall(r"<(?:figcaption|caption)[^>]*>(.*?)</(?:figcaption|caption)>", html, flags=re.S)
    assert sum("90% CI" in c for c in captions) >= 8, captions


def test_changing_an_arm_temperature_reruns_exactly_its_chain(run, tmp_path):
    wd, _ = run
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["arms"]["ssd"]["temperature"] = 1.2
    jobs = _dry_run_jobs(wd, cfg, tmp_path)
    assert jobs == EXPECT_SSD_JOBS, sorted(jobs ^ EXPECT_SSD_JOBS)


def test_changing_an_arm_learning_rate_reruns_its_training_and_evals(run, tmp_path):
    """A training knob reruns the arm's training and everything downstream of its models, not its
    sampling. The training spec is a params function of the wildcards only: Snakemake leaves a
    params function that takes input/output out of its params rerun trigger, and then an edited
    sft.lr reran nothing but the tables that print it."""
    wd, _ = run
    cfg = yaml.safe_load(SMOKE.read_text())
    arm = cfg["arms"]["ssd"]
    arm["sft"] = {**(arm.get("sft") or {}), "lr": cfg["sft"]["lr"] / 2}
    jobs = _dry_run_jobs(wd, cfg, tmp_path)
    sampling = {"sample_train_shard", "merge_shards", "filter_samples", "noise_run"}
    expect = {(r, w) for r, w in EXPECT_SSD_JOBS if r not in sampling}
    assert jobs == expect, sorted(jobs ^ expect)
