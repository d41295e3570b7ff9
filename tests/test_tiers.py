"""The test tiers mean what they say: `pytest -m "not slow"` (the developer loop) starts no
Snakemake and no vLLM engine; a test that does and is not marked slow fails (conftest.py's guard),
even when it catches the error. Checked on constructed test files run by a separate pytest with
this suite's conftest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from conftest import starts_snakemake

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    "args, runs",
    [
        (["/venv/bin/snakemake", "-s", "Snakefile", "-n"], True),
        (["snakemake", "--list-rules"], True),
        (["python", "-m", "snakemake", "--version"], True),
        (["python", "-c", "from snakemake.cli import main; main()"], True),
        ("cd /x && snakemake --cores 2", True),
        (["bash", "-c", "set -e; snakemake -n"], True),
        (["bash", "-c", "set -e\nPATH=/v/bin:$PATH /v/bin/snakemake -n"], True),
        (["bash", "-c", "source .ci/fresh_clone.sh --functions && ci_dry_command 'x && snakemake --cores 2'"], False),
        ("echo 'snakemake --cores 2' > README.md", False),
        (["python", "-m", "ssd_math.cluster", "--profile", "/tmp/snakemake_site.yaml"], False),
        (["git", "log", "--", "rules/snakemake_helpers.smk"], False),
        (["pip", "install", "snakemake-executor-plugin-slurm"], False),
    ],
)
def test_what_counts_as_starting_snakemake(args, runs):
    assert starts_snakemake(args) is runs


def test_a_fast_test_that_starts_snakemake_or_an_engine_fails(pytester):
    pytester.makeconftest((HERE / "conftest.py").read_text())
    fake = pytester.path / "bin" / "snakemake"  # stands in for the real one: prints, exits 0
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho ran\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    pytester.makepyfile(
        test_demo=f"""
import subprocess
import pytest

FAKE = {str(fake)!r}

def test_unmarked_runs_snakemake():
    subprocess.run([FAKE, "-n"], check=True)

def test_unmarked_catches_the_refusal():
    try:
        subprocess.run([FAKE, "--list-rules"])
    except Exception:
        pass

def test_unmarked_starts_an_engine():
    from ssd_math.vllm_sampler import VLLMSampler
    VLLMSampler("no-model-needed", dtype="auto")

def test_unmarked_runs_other_programs():
    assert subprocess.run(["echo", "snakemake-free"], capture_output=True, text=True).stdout

@pytest.fixture(scope="module")
def workflow():
    return subprocess.run([FAKE], capture_output=True, text=True).stdout

def test_unmarked_uses_a_workflow_fixture(workflow):
    assert workflow

@pytest.mark.slow
def test_slow_runs_snakemake():
    assert subprocess.run([FAKE], capture_output=True, text=True, check=True).stdout == "ran\\n"
"""
    )
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    out = res.stdout.str()
    res.assert_outcomes(passed=2, failed=3, errors=1)  # the fixture fails in setup
    for name in ("test_unmarked_runs_snakemake", "test_unmarked_catches_the_refusal", "test_unmarked_starts_an_engine"):
        assert f"FAILED test_demo.py::{name}" in out, out
    assert "ERROR test_demo.py::test_unmarked_uses_a_workflow_fixture" in out, out
    assert "PASSED test_demo.py::test_slow_runs_snakemake" in out
    assert "PASSED test_demo.py::test_unmarked_runs_other_programs" in out
    assert "is not marked slow but started Snakemake" in out
    assert "is not marked slow but started a vLLM engine (VLLMSampler)" in out
