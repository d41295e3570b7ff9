"""ssd_math.layout owns the results layout: the rules, the planner and the tables read it; its
inverse parser reads back what its path builder wrote; validation fills the schema's defaults."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssd_math import derive
from ssd_math.config import validate
from ssd_math.layout import Layout, describe_eval_path
from ssd_math.schema import load_schema

from conftest import ROOT, SMOKE

KIND = {"grid": "grid", "passk": "passk", "checkpoints": "checkpoint", "sweep": "sweep"}


@pytest.fixture(scope="module")
def smoke():
    return validate(yaml.safe_load(SMOKE.read_text()))


def test_every_eval_file_parses_back_to_its_job(smoke, tmp_path):
    L = Layout(smoke, str(tmp_path / "results"))
    seen = []
    for job in L.generation_jobs():
        fam = job["family"]
        files = {
            "grid": lambda j: L.grid_files("eval", j["model"], j["evalset"]),
            "passk": lambda j: [L.passk_file("eval", j["model"], j["evalset"], j["t"], j["k"])],
            "checkpoints": lambda j: L.checkpoint_generated_files("eval", j["model"], j["evalset"]),
            "sweep": lambda j: L.sweep_generated_files("eval", j["evalset"]),
        }[fam](job)
        assert len(files) == len(job["conditions"])  # one output per decoding condition, in order
        for path, cond in zip(files, job["conditions"]):
            d = describe_eval_path(path, L.results)
            assert d["kind"] == KIND[fam] and d["evalset"] == job["evalset"]
            assert d["model"] == cond["model"]  # '<arm>/<ckpt>' for checkpoints
            if fam in ("grid", "passk"):
                assert d["condition"] == cond["condition"]
            seen.append(path)
    # eval_hard inside eval_main: its grid and sweep are cut from eval_main's, not generated
    assert L.subsets == {"eval_hard": "eval_main"}
    assert {(j["family"], j["evalset"]) for j in L.generation_jobs() if j["family"] in ("grid", "sweep")} == {
        ("grid", "eval_main"),
        ("sweep", "eval_main"),
    }
    for job in L.subset_jobs():
        for path in job["files"]:
            d = describe_eval_path(path, L.results)
            assert d["kind"] == KIND[job["family"]] and d["evalset"] == job["evalset"] == "eval_hard"
            seen.append(path)
    # files equal to a grid file are copies of it (rules reuse_grid_*), never generated again
    for r in L.reused_files():
        d, src = describe_eval_path(r["target"], L.results), describe_eval_path(r["source"], L.results)
        assert src["kind"] == "grid" and src["evalset"] == d["evalset"]
        assert src["model"] == d["model"].split("/")[0]
        seen.append(r["target"])
    # the job lists cover exactly the default DAG's eval targets, each once
    assert len(seen) == len(set(seen)) and sorted(seen) == sorted(L.all_eval_files())
    with pytest.raises(ValueError, match="not an eval file"):
        describe_eval_path(tmp_path / "results/eval/base/x.jsonl", L.results)


def _dry_run(configfile: Path, workdir: Path) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs, cur = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            cur = {"rule": m.group(1)}
            jobs.append(cur)
        elif cur is not None and line.startswith("    benchmark: "):
            cur["benchmark"] = line[len("    benchmark: ") :].strip()
    return jobs


@pytest.mark.slow  # a Snakemake dry run of the smoke config
def test_rules_declare_the_layout_job_lists(smoke, tmp_path):
    """What the planner prices (Layout's job lists) is what Snakemake schedules: the same
    generation, sampling and SFT jobs with the same benchmark files."""
    dag = _dry_run(SMOKE, tmp_path)
    L = Layout(smoke)
    rules = (
        "sample_train_shard",
        "sft",
        "generate_grid",
        "generate_passk",
        "generate_checkpoints",
        "generate_sweep",
        "subset_grid",
        "subset_sweep",
    )
    got = sorted((j["rule"], j["benchmark"]) for j in dag if j["rule"] in rules)
    want = sorted(
        [("sample_train_shard", s["benchmark"]) for a in L.arms for s in L.sample_jobs(a)]
        + [("sft", L.sft_job(a)["benchmark"]) for a in L.arms]
        + [(j["rule"], j["benchmark"]) for j in L.generation_jobs() + L.subset_jobs()]
    )
    assert any(r == "subset_grid" for r, _ in got)
    assert got == want


def test_validation_fills_schema_defaults(default):
    schema = load_schema()
    cfg = copy.deepcopy(default)
    del cfg["sampler"]["batch_size"]
    cfg["eval"]["grader"] = {}
    cfg.pop("noise_runs", None)
    cfg["report"]["title"] = "mine"
    validate(cfg)
    sam = schema["properties"]["sampler"]["properties"]
    grader = schema["properties"]["eval"]["properties"]["grader"]["properties"]
    assert cfg["sampler"]["batch_size"] == sam["batch_size"]["default"] == 64
    assert cfg["eval"]["grader"] == {
        "workers": grader["workers"]["default"],
        "timeout_s": grader["timeout_s"]["default"],
    }
    assert cfg["noise_runs"] == [] and cfg["report"]["title"] == "mine"  # a given value stays
    assert cfg["sft"]["checkpoint_steps"] == default["sft"]["checkpoint_steps"]
    assert cfg["sample_size"] == {"deltas": [0.02, 0.05, 0.10], "alpha": 0.05, "power": 0.8}
    assert cfg["runtime"]["accelerate_config"] == "envs/accelerate/cpu.yaml"
    for arm in cfg["arms"].values():  # named entries are not filled (their keys fall back to sft)
        assert "checkpoint_steps" not in (arm.get("sft") or {})


def test_rules_read_config_directly():
    """Each default once, in the schema: no rule file repeats one as config[...].get(key, default)."""
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        assert not re.search(r"config(\[[^\]]+\])+\.get\(\s*\"\w+\"\s*,", text), smk.name


def _rule_files() -> list[Path]:
    return [ROOT / m for m in re.findall(r'^include: "([^"]+)"', (ROOT / "Snakefile").read_text(), re.M)]


def _defined(text: str) -> set[str]:
    """Names a rule file defines at its top level (or inside a top-level if/else block), and its
    rules (read as rules.<name>)."""
    names, block = set(), ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            block = line
        m = re.match(r"^(?:    )?(?:def (\w+)|(\w+) = |rule (\w+):|(?:from \S+ )?import \S+ as (\w+))", line)
        if m and (not line.startswith(" ") or re.match(r"(if|elif|else)\b", block)):
            if m.group(3):
                names.add(f"rules.{m.group(3)}")
            else:
                names.add(m.group(1) or m.group(2) or m.group(4))
    return names


def _used(text: str) -> set[str]:
    code = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"\b\w+\b", code)) | {f"rules.{n}" for n in re.findall(r"\brules\.(\w+)", code)}


def test_no_rule_file_reads_a_name_a_later_file_defines():
    """Each rule file is self-contained: what it reads comes from itself, an earlier-included
    file or the library (e.g. common.smk may not read NOISE_RUNS from tables.smk)."""
    files = _rule_files()
    assert files[0].name == "common.smk" and len(files) >= 10
    texts = [f.read_text() for f in files]
    defs = [_defined(t) for t in texts]
    for i, f in enumerate(files):
        earlier = set().union(*defs[: i + 1])
        later = set().union(*defs[i + 1 :]) - earlier
        assert not (_used(texts[i]) & later), (f.name, sorted(_used(texts[i]) & later))


def test_reuse_identical_generations_and_training_data(smoke):
    """Layout decisions: an arm's final model at its T_eval on the hard set is its grid file; a
    sweep preset equal to a grid condition of the base is that grid file; an arm that differs from
    a default arm only in sft knobs trains on that arm's kept samples (no sampling of its own).
    reuse=False turns all three off (the planner's "before")."""
    cfg = copy.deepcopy(smoke)
    cfg["extra_arms"] = {
        **cfg.get("extra_arms", {}),
        "lrx": {**cfg["arms"]["ssd"], "sft": {"lr": 1.0e-3}},
        "hot": {**cfg["arms"]["ssd"], "temperature": 1.7},
    }
    cfg = validate(cfg)
    L = Layout(cfg)
    assert L.final_from_grid and "final" not in L.generated_ckpts
    assert all(
        c["model"].split("/")[1] != "final"
        for j in L.generation_jobs()
        if j["family"] == "checkpoints"
        for c in j["conditions"]
    )
    assert L.data_arm("lrx") == "ssd" and L.data_arm("hot") == "hot" and L.data_arm("ssd") == "ssd"
    for name, cond in L.sweep_from_grid.items():
        s = derive.sweep_samplings(cfg)[name]
        assert s == derive.eval_sampling(cfg, s.temperature) and cond in [f"T{t}" for t in L.tgrid]
        assert name not in L.generated_sweeps
    off = Layout(cfg, reuse=False)
    assert not off.final_from_grid and off.generated_ckpts == off.ckpts and not off.sweep_from_grid
    assert off.data_arm("lrx") == "lrx"
    # an arm whose T_eval is off the grid: every arm's final is generated again
    cfg2 = copy.deepcopy(cfg)
    cfg2["extra_arms"]["hot"]["t_eval"] = 0.65
    assert "final" in Layout(validate(cfg2)).generated_ckpts


@pytest.mark.slow  # three Snakemake starts (`--list-rules` parses the whole workflow)
@pytest.mark.parametrize("configfile", ["config.yaml", "config/real.yaml", "config/rehearsal.yaml"])
def test_every_rule_is_greppable(configfile, tmp_path):
    """`grep -n "rule NAME" rules/*.smk` finds every rule the workflow has: each is written out as
    `rule NAME:` (none made in a loop or from an f-string), so a name in a log, a profile's
    set-resources or `--forcerun` leads to its definition."""
    from ssd_math.cluster import parse_rule_names

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / configfile),
            "--list-rules",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    listed = parse_rule_names(proc.stdout)
    written = {
        m
        for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
        for m in re.findall(r"^\s*rule (\w+):", f.read_text(), re.M)
    }
    assert len(listed) > 20 and listed <= written, sorted(listed - written)


def test_generation_params_carry_each_conditions_decoding(smoke):
    """What a generation rule's `jobs` param holds (derive.sampling_params over Layout's names):
    each condition's decoding from its config section, as a plain dict (Snakemake reruns a job
    when its repr changes), the training shard's too; an unknown condition name is refused."""
    L = Layout(smoke)
    ev, dec = smoke["eval"], smoke["eval"]["decoding"]

    def want(section, t, cap, n, **over):
        return {
            "temperature": t,
            "top_k": section["top_k"],
            "top_p": section["top_p"],
            "min_p": section.get("min_p", 0.0),
            "presence_penalty": section.get("presence_penalty", 0.0),
            "max_new_tokens": cap,
            "n": n,
            **over,
        }

    presets = ev["sweeps"]["presets"]
    seen = set()
    for job in L.generation_jobs():
        params = derive.sampling_params(smoke, job["conditions"])
        assert [{k: v for k, v in g.items() if k != "sampling"} for g in params] == job["conditions"]
        for g in params:
            cond, s = g["condition"], g["sampling"]
            assert type(s) is dict
            if job["family"] == "sweep" and cond.startswith("preset-"):
                p = presets[cond[len("preset-") :]]
                assert s == want(p, p["temperature"], ev["max_new_tokens"], ev["samples_per_prompt"])
            elif job["family"] == "sweep":
                mp, t = re.fullmatch(r"minp([\d.]+)-T([\d.]+)", cond).groups()
                assert s == want(dec, float(t), ev["max_new_tokens"], ev["samples_per_prompt"], min_p=float(mp))
            else:
                n = int(job["k"]) if job["family"] == "passk" else ev["samples_per_prompt"]
                t = float(cond[1:].split("-k")[0])
                assert s == want(dec, t, ev["max_new_tokens"], n)
            seen.add(job["family"])
    assert seen == {"grid", "passk", "checkpoints", "sweep"}
    for arm, a in smoke["arms"].items():
        (g,) = derive.sampling_params(smoke, [L.train_generation(arm)])
        assert g["condition"] == f"train-{arm}" and g["model_dir"] == L.model_dir("base")
        assert g["sampling"] == want(a, a["temperature"], smoke["train_sampling"]["max_new_tokens"], 1)
    with pytest.raises(ValueError, match="unknown decoding condition 'T0.7-x'"):
        derive.condition_sampling(smoke, "T0.7-x")
