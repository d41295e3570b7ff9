"""SLURM for real: a small config's DAG submitted through profiles/slurm (one sbatch job per rule
instance, snakemake-executor-plugin-slurm), with the site values given the way
profiles/slurm/README.md tells users to give them (a copy of site.example.yaml passed as
`--profile`), and its training job cancelled mid-run with a plain `scancel <jobid>`, as a user
types it (sacct: `CANCELLED by <uid>`).

The DAG is the smallest that kills and resumes a training job and evaluates what it trained: the
data, the tiny base's pretraining, the training samples, the SFT of one arm, and that arm's
generations and grades at one temperature (the files the comparison below reads); the whole
DAG's rules run locally in test_e2e. The test's own profile (the site file it writes) polls as a small DAG needs: the
first status check a second after a submission, not 40 (the plugin's default, right for GPU-hour
jobs).

Checks: `python -m ssd_math.cluster` accepts the run; the cancelled job is seen as failed within a
minute (profiles/slurm: `slurm-status-command: squeue`); rc 0; every submitted job COMPLETED in
`sacct` except the cancelled one, whose resubmission (profile `retries: 1`) COMPLETED and resumed
from its own saved state; a rerun builds nothing; and the trained model (its checkpoints and
training log), the generations and grades of it, and the base it was trained from, are
byte-identical to an uninterrupted plain `snakemake --cores 2` run of the same config.

Needs a cluster (`sinfo` on PATH, accounting with an association for this user): .ci/run starts
a one-node one. Skips without `sinfo`; under CI=true it fails instead.
"""

from __future__ import annotations

import concurrent.futures
import filecmp
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ssd_math import cluster

from conftest import ROOT, SMOKE, snakemake

pytestmark = pytest.mark.slow

ARM = "ssd"  # the arm whose training job is killed


def _need_slurm():
    ci = os.environ.get("CI") == "true"
    if shutil.which("sinfo") is None:
        if ci:
            pytest.fail("CI=true but `sinfo` is not on PATH: .ci/run must start the SLURM cluster")
        pytest.skip("no SLURM cluster here (`sinfo` not on PATH)")
    # SLURM's commands outlive a stopped cluster (local_slurm.sh stop leaves the packages)
    up = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=60)
    if up.returncode != 0:
        msg = f"`sinfo` cannot reach a SLURM controller: {up.stderr.strip()[-300:]}"
        pytest.fail(msg) if ci else pytest.skip(msg)
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        msg = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
        pytest.fail(msg) if os.environ.get("CI") == "true" else pytest.skip(msg)


def small_config(path: Path) -> Path:
    """The smoke config cut to one arm, one eval set, one temperature and no sweeps, noise runs or
    extra arms; SFT runs three epochs so that its job lives long enough after its first saved
    resume state to be cancelled."""
    c = yaml.safe_load(SMOKE.read_text())
    c["experiment"] = "slurm"
    c["arms"] = {ARM: c["arms"][ARM]}
    c["extra_arms"], c["noise_runs"] = {}, []
    c["probe"].update(t_eval=0.7, controls=[])
    c["eval"].update(sets=["eval_main"], t_grid=[0.7])
    c["eval"].pop("sweeps", None)
    rows = [{"model": "base", "temperature": 0.7}, {"model": ARM, "temperature": 0.7}]
    c["eval"]["passk"]["runs"] = rows
    c["report"]["table1"]["rows"] = rows
    c["sft"]["epochs"] = 3
    path.write_text(yaml.safe_dump(c, sort_keys=False))
    return path


# How the test's profile polls: the first status check 1 s after a submission and after every
# finished job (the plugin then adds 10 s per check that finds none finished, up to 180 s).
TEST_POLLING = {"slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 1}


def site_profile(path: Path, rules: set[str]) -> Path:
    """This cluster's site file, made from profiles/slurm/site.example.yaml as a user would: the
    account of this user's association, the default partition for CPU jobs and `gpu` (if there is
    one) for the GPU rules, and the threads the reference run gives each rule (profiles/default,
    else the rule's own, at most 2), so that the two runs compute the same floats. The example
    names rules of config/real.yaml; entries for rules this config lacks (the sweeps) are left out."""
    site = yaml.safe_load((ROOT / "profiles/slurm/site.example.yaml").read_text())
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assoc = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert assoc, f"no SLURM account association for user {user} (sacctmgr show assoc)"
    parts = cluster.sinfo_partitions()
    cpu = next(p.name for p in parts.values() if p.default)
    gpu = "gpu" if "gpu" in parts else cpu
    default_threads = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())["set-threads"]
    site["default-resources"].update(slurm_account=assoc[0], slurm_partition=cpu)
    site["set-resources"] = {
        r: {**v, **({"slurm_partition": gpu} if "slurm_partition" in v else {})}
        for r, v in site["set-resources"].items()
        if r in rules
    }
    site["set-threads"] = {r: default_threads.get(r, min(v, 2)) for r, v in site["set-threads"].items() if r in rules}
    site.update(TEST_POLLING)
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def _sm(wd: Path, cfg: Path, site: Path, *args: str, **kw) -> list[str]:
    return [
        str(Path(sys.executable).with_name("snakemake")),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(wd),
        "--configfile",
        str(cfg),
        "--profile",
        str(site),
        "--workflow-profile",
        str(ROOT / "profiles/slurm"),
        *args,
    ]


def _slurm_jobs(wd: Path, since: str) -> dict[str, str]:
    """{job id: state} of every allocation run in ``wd`` since ``since`` (sacct)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,State,WorkDir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {r[0]: r[1].split()[0] for r in rows if Path(r[2]).resolve() == wd.resolve()}


def _submitted(log: str) -> dict[str, str]:
    """{SLURM job id: rule} from the plugin's "submitted with SLURM jobid N (log: .../rule_<rule>/...)"
    lines (the local cluster's accounting does not store the job comment that names the rule)."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*?/slurm_logs/rule_([^/]+)/", log))


def _cancel_training_job(wd: Path, proc: subprocess.Popen, deadline_s: float) -> str:
    """Wait for ARM's training job to save its first resume state, cancel it with a plain
    `scancel <jobid>`, return its job id."""
    progress = wd / "results" / "train" / ARM / "resume" / "progress.json"
    t_end = time.time() + deadline_s
    while not progress.exists():
        assert proc.poll() is None, "the SLURM run ended before the training job saved any state"
        assert time.time() < t_end, f"no {progress} after {deadline_s} s"
        time.sleep(0.2)
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, check=True).stdout
    ids = [
        r.split("|")[0]
        for r in out.splitlines()
        if r.split("|")[1].startswith("rule_sft_") and r.split("|")[2] == "RUNNING"
    ]
    assert len(ids) == 1, f"expected one running sft job, squeue says:\n{out}"
    subprocess.run(["scancel", ids[0]], check=True)
    return ids[0]


def _seen_failed(log: Path, job: str, proc: subprocess.Popen, within_s: float) -> float:
    """Seconds until Snakemake's log says SLURM job ``job`` failed (the plugin's "SLURM-job
    '<id>' failed" line); fails the test after ``within_s``."""
    t0 = time.time()
    while f"SLURM-job '{job}' failed" not in log.read_text():
        if time.time() - t0 > within_s:
            proc.kill()
            pytest.fail(
                f"a plain `scancel {job}` was not seen as failed within {within_s:.0f} s: Snakemake "
                f"still waits for the job (sacct: {_sacct_state(job)!r}):\n{log.read_text()[-3000:]}"
            )
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    return time.time() - t0


def _sacct_state(job: str) -> str:
    return subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True, text=True
    ).stdout.strip()


def _eval_files(cfg: Path) -> list[str]:
    """Every graded file of the config (layout.Layout.all_eval_files)."""
    from ssd_math.config import validate
    from ssd_math.layout import Layout

    return Layout(validate(yaml.safe_load(cfg.read_text()))).all_eval_files()


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_a_training_job_cancelled_on_slurm_resumes_to_the_same_bytes(tmp_path):
    _need_slurm()
    cfg = small_config(tmp_path / "small.yaml")
    ref, wd = tmp_path / "ref", tmp_path / "slurm"
    ref.mkdir(), wd.mkdir()
    rules = cluster.parse_rule_names(
        subprocess.run(
            [
                str(Path(sys.executable).with_name("snakemake")),
                "-s",
                str(ROOT / "Snakefile"),
                "--directory",
                str(wd),
                "--configfile",
                str(cfg),
                "--list-rules",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    site = site_profile(tmp_path / "site.yaml", rules)

    # The reference: the same config, uninterrupted, without SLURM (profiles/default, 2 cores), up
    # to the grades of ARM's model at one temperature (the files compared below); the SLURM run
    # builds exactly these. It runs beside the SLURM run (a thread): most of the SLURM run's time
    # is waiting for the scheduler and the status checks.
    targets = [
        f
        for f in _eval_files(cfg)
        if f.startswith(f"results/eval/{ARM}/") and "/checkpoints/" not in f and not re.search(r"-k\d+\.jsonl$", f)
    ]
    assert targets == [f"results/eval/{ARM}/eval_main/T0.7.jsonl"], targets
    reference = concurrent.futures.ThreadPoolExecutor(1).submit(snakemake, ref, *targets, configfile=cfg)

    # The check the README asks for before a run: it must accept this one.
    chk = subprocess.run(
        [sys.executable, "-m", "ssd_math.cluster", *_sm(wd, cfg, site)[1:]], capture_output=True, text=True, cwd=ROOT
    )
    assert chk.returncode == 0, chk.stdout[-3000:] + chk.stderr[-3000:]
    dry = subprocess.run(_sm(wd, cfg, site, "-n", *targets), capture_output=True, text=True, check=True).stdout
    local = cluster.local_rules(ROOT / "Snakefile")
    expected = [j for j in cluster.parse_dryrun(dry) if j.rule not in local]
    assert any(j.rule == "sft" for j in expected)

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
    log = tmp_path / "slurm.log"
    with log.open("w") as fh:
        # the jobs run the `python` of the environment they are submitted from (sbatch exports
        # it): this venv's, as when a user submits from an activated env
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        proc = subprocess.Popen(_sm(wd, cfg, site, *targets), stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            cancelled = _cancel_training_job(wd, proc, deadline_s=1800)
            seen_s = _seen_failed(log, cancelled, proc, within_s=60)
            rc = proc.wait(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 0, text[-6000:]
    reference.result(timeout=1800)
    print(f"\nplain scancel of sft job {cancelled}: seen as failed after {seen_s:.1f} s")

    # sacct: every submitted job COMPLETED, but the cancelled one, which was resubmitted once
    states, submitted = _slurm_jobs(wd, since), _submitted(text)
    assert set(states) == set(submitted), (states, submitted)
    assert submitted[cancelled] == "sft" and states.pop(cancelled) == "CANCELLED", (cancelled, states)
    assert set(states.values()) == {"COMPLETED"}, states
    assert sorted(submitted[j] for j in states) == sorted(j.rule for j in expected)
    print(f"{len(states)} SLURM jobs COMPLETED in sacct; sft job {cancelled} cancelled and resubmitted")

    # the resubmitted training job resumed from the state the cancelled one saved
    summary = json.loads((wd / f"results/logs/train/{ARM}.log").read_text().strip().splitlines()[-1])
    assert summary["resumed_from"] >= 1, summary
    again = subprocess.run(_sm(wd, cfg, site, "-n", *targets), capture_output=True, text=True, check=True)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]

    # byte for byte: the base (pretrained in a SLURM job), the cancelled job's outputs (models and
    # training log), and the generations and grades of its model (the provenance sidecars,
    # meta.json, record where and when a file was made: not compared)
    for sub in ("models/base", f"models/{ARM}", f"generations/{ARM}", f"eval/{ARM}"):
        a, b = ref / "results" / sub, wd / "results" / sub
        files = [f for f in _tree(a) if not f.endswith("meta.json")]
        assert files and files == [f for f in _tree(b) if not f.endswith("meta.json")], sub
        _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
        assert not mismatch and not errors, f"{sub}: {mismatch or errors} differ from the uninterrupted run"
    # the training log, step by step, but for what it measures of the machine (times, speed, memory)
    machine = {"elapsed_s", "step_s", "step_cpu_s", "tokens_per_s", "mem_mb"}
    rows = [
        [
            {k: v for k, v in json.loads(line).items() if k not in machine}
            for line in (d / f"results/train/{ARM}/log.jsonl").read_text().splitlines()
        ]
        for d in (ref, wd)
    ]
    assert len(rows[0]) == len(rows[1]) > 2
    assert rows[0] == rows[1]
