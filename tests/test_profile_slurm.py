"""The SLURM profile against the workflow, without a cluster: every set-resources/set-threads key
names a rule, every site value is marked SITE and lives outside the workflow profile, the README
pins the plugin version pyproject pins, and `python -m ssd_math.cluster` refuses what a
partition cannot run (tests/test_slurm.py runs the profile on a real cluster)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from ssd_math import cluster, gpu_driver

from conftest import ROOT

PROFILE = ROOT / "profiles/slurm/config.yaml"
SITE = ROOT / "profiles/slurm/site.example.yaml"
SITE_KEYS = ("default-resources", "set-resources", "set-threads")


def _snakemake(tmp: Path, *args: str) -> str:
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run(
        [
            str(exe),
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp),
            "--configfile",
            str(ROOT / "config/real.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def real_rules(tmp_path_factory):
    return cluster.parse_rule_names(_snakemake(tmp_path_factory.mktemp("rules"), "--list-rules"))


def test_workflow_profile_holds_no_site_value():
    """A workflow profile's key replaces the same key of the site profile whole: any of these here
    would silently drop the site file's."""
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert not set(SITE_KEYS) & set(prof), set(SITE_KEYS) & set(prof)
    assert prof["retries"] >= 1 and prof["rerun-incomplete"] is True  # a killed job is resubmitted, resumes
    # plugin 2.6.1 adds --ntasks-per-gpu=1 to every GPU job unless tasks_per_gpu is 0: each GPU
    # rule is one process (vLLM and accelerate launch their own workers)
    site = yaml.safe_load(SITE.read_text())["set-resources"]
    for rule in (
        "sample_train_shard",
        "sft",
        "noise_run",
        "generate_grid",
        "generate_passk",
        "generate_checkpoints",
        "generate_sweep",
        "probe_forward",
    ):
        assert site[rule]["tasks_per_gpu"] == 0, rule


@pytest.mark.slow  # the real recipe's rules: `snakemake --list-rules`
def test_every_profile_key_names_a_rule_of_the_real_recipe(real_rules):
    assert {"grade_grid", "grade_passk", "grade_checkpoints", "grade_sweep", "sft", "generate_grid"} <= real_rules
    assert cluster.check_profile_keys([SITE, PROFILE], real_rules) == []
    site = yaml.safe_load(SITE.read_text())
    # every rule that needs a GPU on the real recipe is sent to the GPU partition
    gpu_rules = {
        "sample_train_shard",
        "sft",
        "noise_run",
        "generate_grid",
        "generate_passk",
        "generate_checkpoints",
        "generate_sweep",
        "probe_forward",
    }
    assert {r for r, v in site["set-resources"].items() if "slurm_partition" in v} == gpu_rules


@pytest.mark.slow  # the real recipe's rules: `snakemake --list-rules`
def test_a_key_that_names_no_rule_is_refused(tmp_path, real_rules):
    bad = tmp_path / "site.yaml"
    bad.write_text(yaml.safe_dump({"set-resources": {"grade": {"mem_mb": 8000}}, "set-threads": {"grade_grid": 8}}))
    (msg,) = cluster.check_profile_keys([bad], real_rules)
    assert "`set-resources: grade` names no rule" in msg and "grade_grid" in msg


def test_every_site_value_is_marked_SITE():
    """Each value line under default-resources/set-resources/set-threads carries a SITE comment."""
    section, unmarked, n = None, [], 0
    for line in SITE.read_text().splitlines():
        if re.match(r"^[\w-]+:", line):
            section = line.split(":")[0]
            continue
        m = re.match(r"^\s+[\w-]+:\s*([^#\s][^#]*?)\s*(#.*)?$", line)
        if section in SITE_KEYS and m:
            n += 1
            if "SITE" not in (m.group(2) or ""):
                unmarked.append(line)
    assert n >= 30 and not unmarked, unmarked


def test_readme_pins_the_plugin_version_pyproject_pins():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["slurm"]
    (pin,) = [p for p in extra if p.startswith("snakemake-executor-plugin-slurm")]
    readme = (ROOT / "profiles/slurm/README.md").read_text()
    installs = re.findall(r"pip install '?(snakemake-executor-plugin-slurm\S*?)'?\s", readme)
    assert installs and set(installs) == {pin}, (installs, pin)


SINFO = """cpu*|2|19320|infinite|(null)
gpu|8|64000|2-00:00:00|gpu:h100:4
gpu|16|128000|2-00:00:00|gpu:h100:8
"""


def test_parse_sinfo_takes_each_partitions_largest_node():
    p = cluster.parse_sinfo(SINFO)
    assert (p["cpu"].cpus, p["cpu"].mem_mb, p["cpu"].default, p["cpu"].gpus) == (2, 19320, True, False)
    assert (p["gpu"].cpus, p["gpu"].mem_mb, p["gpu"].time_min, p["gpu"].gpus) == (16, 128000, 2880, True)
    assert [cluster.parse_time(s) for s in ("30", "1:30", "2:00:00", "1-12", "infinite")] == [
        30,
        1.5,
        120,
        2160,
        float("inf"),
    ]


def _job(rule, threads=1, **res):
    return cluster.Job(rule, threads, {k: str(v) for k, v in res.items()}, has_output=True)


def test_check_jobs_names_the_rule_and_the_key_for_each_problem():
    parts = cluster.parse_sinfo(SINFO)
    ok = [_job("sft", 16, slurm_partition="gpu", mem_mb=128000, runtime=1440, gpu=8), _job("table1", 2, mem_mb=4000)]
    assert cluster.check_jobs(ok, parts) == []
    probs = cluster.check_jobs(
        [
            _job("generate_grid", 17, slurm_partition="gpu"),  # one thread more than the largest node
            _job("grade_grid", 1, mem_mb=19321),  # default partition: cpu
            _job("sft", 1, slurm_partition="gpu", runtime=2881),
            _job("probe_forward", 1, gpu=1),  # a GPU job left on the cpu partition
            _job("report", 1, slurm_partition="gpu2"),
            _job("metrics", 1, slurm_account="SITE-account"),
            _job("table2", 1, slurm_account="SITE-account"),
        ],
        parts,
    )
    assert len(probs) == 6, probs
    want = [
        "slurm_account=SITE-account is still a placeholder",
        "rules metrics, table2",
        "rule generate_grid asks for 17 threads",
        "`set-threads: generate_grid: 16`",
        "rule grade_grid asks for mem_mb=19321",
        "at most 19320 MB",
        "rule sft asks for runtime=2881 min",
        "rule probe_forward asks for gpu=1",
        "Invalid generic resource",
        "slurm_partition=gpu2 is not a partition",
    ]
    text = "\n".join(probs)
    assert all(w in text for w in want), [w for w in want if w not in text]


def test_parse_dryrun_reads_threads_and_resources():
    text = """
rule sft:
    input: a
    output: results/models/ssd/final
    jobid: 3
    threads: 8
    resources: tmpdir=/tmp, mem_mb=4000, mem=4 GB, slurm_partition=gpu, runtime=1440, gpu=1
localrule fetch_base:
    output: b
rule all:
    input: results/report/report.html
    resources: tmpdir=/tmp
rule table1:
    output: t
    resources: mem_mb=4000
"""
    jobs = cluster.parse_dryrun(text)
    assert [(j.rule, j.threads) for j in jobs] == [("sft", 8), ("table1", 1)]
    assert jobs[0].resources["slurm_partition"] == "gpu" and jobs[0].resources["mem"] == "4 GB"


@pytest.mark.slow  # a Snakemake dry run of the real recipe
def test_shipped_profile_alone_on_a_small_node_is_refused_with_the_rule_and_key(tmp_path):
    """Without a site file the generation rules keep their own 16 threads: on 2-CPU nodes the check
    says which rules and which key, instead of a job PENDING forever."""
    dry = _snakemake(
        tmp_path, "--workflow-profile", str(ROOT / "profiles/slurm"), "--cores", cluster.UNCAPPED_CORES, "-n"
    )
    jobs = [j for j in cluster.parse_dryrun(dry) if j.rule not in cluster.local_rules(ROOT / "Snakefile")]
    assert "fetch_base" not in {j.rule for j in jobs} and "sft" in {j.rule for j in jobs}
    text = "\n".join(cluster.check_jobs(jobs, cluster.parse_sinfo("cpu*|2|19320|infinite|(null)\n")))
    for rule in ("sample_train_shard", "generate_grid", "generate_passk", "generate_checkpoints"):
        assert f"rule {rule} asks for 16 threads" in text and f"`set-threads: {rule}: 2`" in text, rule


class _Resources(dict):
    """What the plugin reads of a job's resources: attribute and .get access."""

    __getattr__ = dict.get


def _submit_string(job: cluster.Job) -> str:
    """The sbatch command snakemake-executor-plugin-slurm 2.6.1 builds for a job (its
    run_job: get_submit_command, then set_gres_string)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = _Resources({k: (int(v) if v.isdigit() else v.strip("'\"")) for k, v in job.resources.items()})
    fake = SimpleNamespace(resources=res, threads=job.threads, name=job.rule, is_group=lambda: False)
    params = {
        "run_uuid": "u",
        "slurm_logfile": "l",
        "comment_str": f"rule_{job.rule}",
        "account": "",
        "partition": "",
        "workdir": "/w",
    }
    return get_submit_command(fake, params) + set_gres_string(fake)


@pytest.mark.slow
def test_multi_gpu_training_is_submitted_to_one_node(tmp_path):
    """FSDP over 4 GPUs is one process group on one node (accelerate launch spawns the 4
    processes there; the jobstep runs `srun --nodes=1`): the sbatch line must say --nodes=1,
    which the plugin adds only for a `nodes` resource. Every GPU job gets it."""
    dry = _snakemake(
        tmp_path,
        "--cores",
        cluster.UNCAPPED_CORES,
        "-n",
        "--config",
        "runtime={accelerate_config: envs/accelerate/fsdp.yaml, device: cuda}",
    )
    jobs = {j.rule: j for j in cluster.parse_dryrun(dry)}
    sft = _submit_string(jobs["sft"])
    assert "--gpus=4" in sft
    assert re.search(r"--nodes=1(\s|$)", sft), sft
    for rule in ("sample_train_shard", "generate_grid", "probe_forward"):
        gen = _submit_string(jobs[rule])
        assert re.search(r"--nodes=1(\s|$)", gen), gen
    cpu_jobs = [j for j in jobs.values() if not int(j.resources.get("gpu", "0") or 0)]
    assert cpu_jobs and not any("nodes" in j.resources for j in cpu_jobs)


def _fake_smi(folder: Path, version: str, rc: int = 0) -> dict:
    """An `nvidia-smi` that reports ``version`` for two GPUs; the environment with it first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(
        f"#!/bin/sh\n[ \"$1\" = --query-gpu=driver_version ] || exit 9\necho '{version}'\necho '{version}'\nexit {rc}\n"
    )
    smi.chmod(0o755)
    import os

    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    "version,ok", [("550.54.15", False), ("575.57.08", False), ("580.65.06", True), ("590.44.01", True)]
)
def test_driver_check_reads_nvidia_smi(tmp_path, monkeypatch, version, ok):
    env = _fake_smi(tmp_path / "bin", version)
    monkeypatch.setenv("PATH", env["PATH"])
    problem = gpu_driver.cuda_driver_problem()
    if ok:
        assert problem is None
    else:
        assert f"NVIDIA driver {version} is too old" in problem
        assert "torch 2.13.0 built for CUDA 13.0" in problem and "driver >= 580" in problem


def test_driver_check_stops_the_cluster_check_and_the_gpu_jobs(tmp_path):
    """An old driver stops `python -m ssd_math.cluster` before anything else, the training launch
    command of a GPU config before accelerate starts, and a GPU rule's script (rule_log) before
    its work; a CPU job is not checked. A good driver lets the command run."""
    import os

    from ssd_math import launcher
    from ssd_math.rulelog import rule_log

    old = _fake_smi(tmp_path / "old", "535.104.05")
    new = _fake_smi(tmp_path / "new", "580.95.05")
    proc = subprocess.run(
        [sys.executable, "-m", "ssd_math.cluster", "--configfile", str(ROOT / "config/real.yaml")],
        env=old,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "NVIDIA driver 535.104.05 is too old" in proc.stderr, proc.stderr
    assert "SLURM jobs" not in proc.stdout  # stopped before the dry run
    cmd = launcher.train_launcher(ROOT / "envs/accelerate/gpu1.yaml", python=sys.executable)
    marker = tmp_path / "launched"
    gpu_cmd = cmd.split(" accelerate launch ", 1)[0] + f" touch {marker}"  # the launch replaced by a marker
    for env, rc in ((old, 1), (new, 0)):
        p = subprocess.run(["bash", "-c", gpu_cmd], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == rc and marker.exists() == (rc == 0), p.stderr
    assert "driver >= 580" in subprocess.run(["bash", "-c", gpu_cmd], env=old, capture_output=True, text=True).stderr

    class Job:  # what rule_log reads of Snakemake's `snakemake` object
        def __init__(self, gpu):
            self.log, self.output, self.rule = [str(tmp_path / f"gpu{gpu}.log")], [], "generate_grid"
            self.resources = {"gpu": gpu}

    saved = os.environ["PATH"]
    os.environ["PATH"] = old["PATH"]
    try:
        with pytest.raises(RuntimeError, match="NVIDIA driver 535.104.05 is too old"):
            with rule_log(Job(1)):
                raise AssertionError("the job body must not run")
        assert "is too old" in (tmp_path / "gpu1.log").read_text()
        with rule_log(Job(0)):
            ran = True
        assert ran
    finally:
        os.environ["PATH"] = saved
