"""Tests of ssd_math.problem_sources and ssd_math.problem_sets on the real problem files the repository ships (data/real/)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ssd_math import problem_sources as data
from ssd_math.io import DataError
from ssd_math.problem_sets import build_eval_sets, build_training_pool
from ssd_math.problem_sources import last_boxed, load_source, validate_rows

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "real"


def need(*names: str) -> None:
    """The shipped files are part of the repository: a missing one is a failure, not a skip."""
    missing = [n for n in names if not (DATA / n).exists()]
    if missing:
        pytest.fail(f"shipped real data files missing: {missing} (looked in {DATA})")


EVAL_SOURCES = [  # the shipped validation sources, in fill order (study §2; AIME 2025 and
    # HMMT Feb 2025 are hub sources in config/real.yaml, not shipped)
    {"name": "olympiadbench", "path": "olympiadbench.jsonl", "difficulty_rank": 5},
    {"name": "aime2024", "path": "aime2024.jsonl", "difficulty_rank": 7},
    {"name": "amc2023", "path": "amc2023.jsonl", "difficulty_rank": 3},
    {"name": "math500", "path": "math500.jsonl", "difficulty_rank": 1},
]


# ---------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "text, want",
    [
        (r"so the answer is $\boxed{42}$.", "42"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{x^{2}+\{1\}}", r"x^{2}+\{1\}"),
        (r"\fbox{7}", "7"),
        (r"\boxed {3, 4}", "3, 4"),
        ("no box here", None),
        (r"\boxed{unbalanced", None),
        (r"\boxed{}", None),
        (None, None),
    ],
)
def test_last_boxed(text, want):
    assert last_boxed(text) == want


# ---------------------------------------------------------------------------------- loading


def test_load_local_jsonl_real_file():
    need("aime2024.jsonl")
    rows = load_source({"name": "aime2024", "path": str(DATA / "aime2024.jsonl")})
    assert len(rows) == 30
    r = rows[0]
    assert set(r) >= {"id", "problem", "answer", "source", "level", "subject", "dataset"}
    assert r["source"] == "AIME 2024" and r["dataset"] == "aime2024"
    assert isinstance(r["answer"], str) and r["url"].startswith("https://")  # extras pass through


def test_load_relative_path_with_root():
    need("amc2023.jsonl")
    rows = load_source({"name": "amc", "path": "amc2023.jsonl"}, root=DATA)
    assert len(rows) == 40


def test_field_map_boxed_answers_and_counts(tmp_path):
    # a NuminaMath-CoT-shaped parquet: source (sub-corpus), problem, solution, messages
    df = pl.DataFrame(
        {
            "source": ["olympiads", "cn_k12", "amc_aime", "orca_math"],
            "problem": ["P1", "P2", "P3", "P4"],
            "solution": [
                r"... so $\boxed{\frac{1}{2}}$",
                "a proof, no box",
                r"\boxed{1} wait, \boxed{2}",
                r"\boxed{9}",
            ],
            "messages": [[{"role": "user", "content": "x"}]] * 4,
        }
    )
    path = tmp_path / "numina.parquet"
    df.write_parquet(path)
    spec = {
        "name": "numina",
        "path": str(path),
        "fields": {"id": None, "subset": "source"},
        "source_label": "NuminaMath-CoT",
        "answer_from_boxed": "solution",
        "extra_fields": [],
        "where": {"subset": ["olympiads", "cn_k12", "amc_aime"]},
    }
    rep: dict = {}
    rows = load_source(spec, report=rep)
    assert [r["answer"] for r in rows] == [r"\frac{1}{2}", "2"]
    assert [r["subset"] for r in rows] == ["olympiads", "amc_aime"]
    assert rows[0]["id"] == "numina-0" and rows[1]["id"] == "numina-2"
    assert all(r["source"] == "NuminaMath-CoT" for r in rows)
    assert "solution" not in rows[0] and "messages" not in rows[0]
    assert rep["n_read"] == 4 and rep["no_boxed_answer"] == 1 and rep["filtered_where"] == 1


def test_numeric_answers_and_levels_coerced(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a", "problem": "p", "answer": 27.0, "level": "Level 5"},
                {"id": "b", "problem": "q", "answer": 0.5, "level": "Level ?"},
            ]
        )
        + "\n"
    )
    rows = load_source({"name": "x", "path": str(path)})
    assert [r["answer"] for r in rows] == ["27", "0.5"]
    assert [r["level"] for r in rows] == [5, None]


def test_missing_local_file_names_dataset_and_key(tmp_path):
    with pytest.raises(DataError, match=r"'omni'.*'omni'\.path"):
        load_source({"name": "omni", "path": str(tmp_path / "nope.jsonl")})


def test_unreachable_hub_names_dataset_and_how_to_supply_local(tmp_path, monkeypatch):
    def offline(**kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(data, "_snapshot_download", offline)
    spec = {"name": "beyond_aime", "hub_id": "ByteDance-Seed/BeyondAIME", "revision": "0" * 40, "split": "test"}
    with pytest.raises(DataError) as exc:
        load_source(spec, cache_dir=tmp_path)
    msg = str(exc.value)
    assert "beyond_aime" in msg and "ByteDance-Seed/BeyondAIME" in msg
    assert "'beyond_aime'.path" in msg and "ConnectionError" in msg


def test_hub_without_pinned_revision_is_refused(tmp_path):
    with pytest.raises(DataError, match="revision"):
        load_source({"name": "omni", "hub_id": "KbsdJames/Omni-MATH", "split": "test"}, cache_dir=tmp_path)


def test_hub_download_is_cached_and_read_with_polars(tmp_path, monkeypatch):
    calls = []

    def fake(**kw):  # what snapshot_download leaves in local_dir for an Omni-MATH-like repo
        calls.append(kw)
        d = Path(kw["local_dir"])
        d.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "domain": ["Algebra"],
                "difficulty": 6.5,
                "problem": "Find x.",
                "solution": "...",
                "answer": "3",
                "source": "imo",
            },
            {
                "domain": ["Geometry"],
                "difficulty": 8.0,
                "problem": "Find y.",
                "solution": "...",
                "answer": "4",
                "source": "usamo",
            },
        ]
        (d / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(d)

    monkeypatch.setattr(data, "_snapshot_download", fake)
    spec = {
        "name": "omni_math",
        "hub_id": "KbsdJames/Omni-MATH",
        "revision": "a" * 40,
        "split": "test",
        "fields": {"id": None, "competition": "source"},
        "source_label": "Omni-MATH",
        "extra_fields": ["difficulty"],
    }
    rows = load_source(spec, cache_dir=tmp_path)
    assert [r["answer"] for r in rows] == ["3", "4"] and rows[1]["difficulty"] == 8.0
    assert calls[0]["repo_type"] == "dataset" and calls[0]["revision"] == "a" * 40
    rows2 = load_source(spec, cache_dir=tmp_path)  # marker present: no second download
    assert rows2 == rows and len(calls) == 1


# ---------------------------------------------------------------------------------- validation


def test_validate_rows_counts_every_reason():
    rows = [
        {"id": "1", "problem": "What is  1+1?", "answer": "2"},
        {"id": "2", "problem": "", "answer": "1"},
        {"id": "3", "problem": "Q3", "answer": ""},
        {"id": "1", "problem": "Q4", "answer": "4"},
        {"id": "5", "problem": "What is 1+1? ", "answer": "2"},
        {"problem": "Q6", "answer": "6"},
        {"id": "7", "problem": "Q7", "answer": 7},
    ]
    good, rep = validate_rows(rows, file="x.jsonl")
    assert [r["id"] for r in good] == ["1", "7"] and good[1]["answer"] == "7"
    assert rep["n_in"] == 7 and rep["n_out"] == 2
    assert rep["dropped"] == {
        "missing_problem": 1,
        "missing_answer": 1,
        "missing_id": 1,
        "problem_too_long": 0,
        "duplicate_id": 1,
        "duplicate_problem": 1,
    }
    assert rep["examples"]["duplicate_problem"] == ["row 5 (id '5'), same text as row 1 (id '1')"]
    assert rep["examples"]["missing_id"] == ["row 6"]
    json.dumps(rep)  # the rule writes it as JSON


def test_validate_rows_empty_raises_naming_file():
    with pytest.raises(DataError, match="broken.jsonl"):
        validate_rows([{"id": "1", "problem": " ", "answer": "1"}], file="broken.jsonl")


def test_real_files_are_clean():
    need("math_train.jsonl", "olympiadbench.jsonl")
    for f in sorted(DATA.glob("*.jsonl")):
        rows = load_source({"name": f.stem, "path": str(f)})
        good, rep = validate_rows(rows, file=f)
        assert rep["n_out"] == rep["n_in"] == len(rows), (f, rep)


# ---------------------------------------------------------------------------------- training pool


def test_training_pool_math_levels_4_5_real():
    need("math_train.jsonl")
    src = [{"name": "math_train", "path": str(DATA / "math_train.jsonl")}]
    rep: dict = {}
    pool = build_training_pool(src, levels=[4, 5], budget=4000, seed=0, report=rep)
    assert len(pool) == 3991  # 1690 L4 + 2301 L5: the whole level 4-5 pool < 4k budget
    assert {r["level"] for r in pool} == {4, 5}
    assert rep["short_of_budget"] == 9 and rep["sources"]["math_train"]["dropped_level"] == 3504
    assert all(r["answer"] for r in pool)  # gold kept (analysis only)


def test_training_pool_deterministic_and_nested():
    need("math_train.jsonl")
    src = [{"name": "math_train", "path": str(DATA / "math_train.jsonl")}]
    a = build_training_pool(src, levels=[4, 5], budget=500, seed=3)
    b = build_training_pool(src, levels=[4, 5], budget=500, seed=3)
    c = build_training_pool(src, levels=[4, 5], budget=1000, seed=3)
    d = build_training_pool(src, levels=[4, 5], budget=500, seed=4)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert {r["id"] for r in a} <= {r["id"] for r in c}
    assert {r["id"] for r in a} != {r["id"] for r in d}


def _numina_like(tmp_path, n=50):
    path = tmp_path / "numina.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"source": "olympiads", "problem": f"Numina {i}", "solution": rf"... \boxed{{{i}}}"})
            for i in range(n)
        )
        + "\n"
    )
    return {
        "name": "numina",
        "path": str(path),
        "fields": {"id": None, "subset": "source"},
        "source_label": "NuminaMath-CoT",
        "answer_from_boxed": "solution",
    }


def test_training_pool_mix_in_order_and_by_share(tmp_path):
    need("math_train.jsonl")
    math = {"name": "math_train", "path": str(DATA / "math_train.jsonl")}
    numina = _numina_like(tmp_path)
    # no shares: MATH L4-5 first (3991), NuminaMath (no levels, not level-filtered) fills the rest
    pool = build_training_pool([math, numina], levels=[4, 5], budget=4020, seed=0)
    assert sum(r["dataset"] == "numina" for r in pool) == 29
    # shares: 60/40 of 100
    pool = build_training_pool([{**math, "share": 3}, {**numina, "share": 2}], levels=[5], budget=100, seed=0)
    assert sum(r["dataset"] == "math_train" for r in pool) == 60
    assert sum(r["dataset"] == "numina" for r in pool) == 40


def test_training_pool_exclude_problems(tmp_path):
    need("math_train.jsonl")
    src = [{"name": "math_train", "path": str(DATA / "math_train.jsonl")}]
    full = build_training_pool(src, levels=[5], budget=None, seed=0)
    drop = [full[0]["problem"], "  " + full[1]["problem"].replace(" ", "  ")]
    rep: dict = {}
    pool = build_training_pool(src, levels=[5], budget=None, seed=0, exclude_problems=drop, report=rep)
    assert len(pool) == len(full) - 2
    assert rep["sources"]["math_train"]["dropped_excluded"] == 2


# ---------------------------------------------------------------------------------- eval sets


def test_eval_sets_real_sizes_composition_and_subset():
    need(*(s["path"] for s in EVAL_SOURCES))
    rep: dict = {}
    main, hard = build_eval_sets(EVAL_SOURCES, main_size=1000, hard_size=300, seed=0, root=DATA, report=rep)
    assert len(main) == 1000 and len(hard) == 300
    ids = [r["id"] for r in main]
    assert len(set(ids)) == 1000
    assert {r["id"] for r in hard} <= set(ids)
    # fill order: 675 + 30 + 40 = 745 rows, MATH-500 (500 rows) backfills the last 255
    assert rep["main_composition"] == {"olympiadbench": 675, "aime2024": 30, "amc2023": 40, "math500": 255}
    # rank rule: AIME (7), then OlympiadBench (5) fills the rest; no AMC (3) or MATH-500 (1)
    assert rep["hard_composition"] == {"olympiadbench": 270, "aime2024": 30}
    main2, hard2 = build_eval_sets(EVAL_SOURCES, main_size=1000, hard_size=300, seed=0, root=DATA)
    assert [r["id"] for r in main2] == ids and [r["id"] for r in hard2] == [r["id"] for r in hard]
    json.dumps(rep)


def test_eval_sets_quota_and_level_tiebreak():
    need("math500.jsonl", "aime2024.jsonl")
    srcs = [
        {"name": "aime2024", "path": "aime2024.jsonl", "difficulty_rank": 7, "quota": 10},
        {"name": "math500", "path": "math500.jsonl", "difficulty_rank": 1},
    ]
    main, hard = build_eval_sets(srcs, main_size=200, hard_size=60, seed=1, root=DATA)
    assert sum(r["eval_source"] == "aime2024" for r in main) == 10
    assert len(main) == 200
    hard_math = [r for r in hard if r["eval_source"] == "math500"]
    assert len(hard_math) == 50
    hard_ids = {r["id"] for r in hard}
    rest = [r["level"] for r in main if r["eval_source"] == "math500" and r["id"] not in hard_ids]
    assert min(r["level"] for r in hard_math) >= max(rest)  # the highest MATH levels first


def test_eval_sets_explicit_ids_rule():
    need("aime2024.jsonl", "amc2023.jsonl")
    srcs = [{"name": "aime2024", "path": "aime2024.jsonl"}, {"name": "amc2023", "path": "amc2023.jsonl"}]
    main, hard = build_eval_sets(
        srcs,
        main_size=70,
        hard_size=2,
        seed=0,
        root=DATA,
        hard_rule={"method": "ids", "ids": ["amc2023-12A-1", "aime2024-I-1"]},
    )
    assert {r["id"] for r in hard} == {"amc2023-12A-1", "aime2024-I-1"}
    with pytest.raises(DataError, match="not in the main set"):
        build_eval_sets(
            srcs, main_size=70, hard_size=1, seed=0, root=DATA, hard_rule={"method": "ids", "ids": ["nope"]}
        )
