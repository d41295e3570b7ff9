"""The fresh-clone check (.ci/fresh_clone.sh, called by .ci/run): it reads the README's Quick
start commands, keeps .ci/run's test line equal to the README's, and runs the commands in a clone
of the committed HEAD with nothing beside it. Tested in its dry mode on small constructed
repositories (the real commands take ~15 minutes; the integrator runs .ci/run itself)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "fresh_clone.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("bash") is None, reason="needs git and bash"
)


def _bash(snippet: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", snippet], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def _functions(call: str) -> str:
    proc = _bash(f"source {SCRIPT} --functions && {call}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_readme_quick_start_is_what_ci_runs():
    lines = _functions("ci_quickstart_commands README.md").splitlines()
    assert len(lines) == 2, lines
    assert "snakemake" in lines[0] and "pytest" in lines[1]
    run = (ROOT / ".ci" / "run").read_text()
    assert lines[1] in run.splitlines()  # verbatim, a line of its own


README = """# demo

```bash
echo not this block
```

## Quick start

```bash
{cmd1}

{cmd2}
```

```bash
echo nor this one
```
"""


def test_extraction_and_dry_forms(tmp_path):
    (tmp_path / "README.md").write_text(README.format(cmd1="a && b && snakemake --cores 2", cmd2="c && pytest -q"))
    assert _functions(f"ci_quickstart_commands {tmp_path / 'README.md'}").splitlines() == [
        "a && b && snakemake --cores 2",
        "c && pytest -q",
    ]
    assert _functions("ci_dry_command 'x && snakemake --cores 2'") == "snakemake -n --cores 2\n"
    assert _functions("ci_dry_command 'x && y && pytest -q'") == "pytest --collect-only -q\n"
    proc = _bash(f"source {SCRIPT} --functions && ci_dry_command 'pip install x'")
    assert proc.returncode != 0 and "no dry form" in proc.stderr


TEST_LINE = "python3 -m venv .venv && pytest -q"


def _demo_repo(tmp_path: Path, run_line: str) -> Path:
    """A tiny repository shaped like this one: README Quick start, .ci/, a Snakefile, a test."""
    repo = tmp_path / "src-repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / ".ci" / "fresh_clone.sh")
    (repo / ".ci" / "run").write_text(f"#!/usr/bin/env bash\n{run_line}\n")
    (repo / "README.md").write_text(README.format(cmd1="pip install -e . && snakemake --cores 2", cmd2=TEST_LINE))
    (repo / "Snakefile").write_text(
        "import os\nassert not os.path.exists(os.path.join('..', 'shared')), 'not alone'\n"
        "rule all:\n    output: 'done.txt'\n    shell: 'touch {output}'\n"
    )
    (repo / "tests").mkdir()
    (repo / "tests" / "test_demo.py").write_text("def test_demo():\n    assert True\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "demo"], check=True)
    # uncommitted work must not reach the clone: only the committed HEAD is checked
    (repo / "tests" / "test_uncommitted.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "shared").mkdir()  # beside the source repo, as in CI: not beside the clone
    return repo


def test_dry_run_of_a_fresh_clone(tmp_path):
    repo = _demo_repo(tmp_path, TEST_LINE)
    proc = _bash("bash .ci/fresh_clone.sh", cwd=repo, env={"SSD_MATH_CI_DRY": "1", "TMPDIR": str(tmp_path)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "nothing beside it" in out
    assert "fresh_clone [dry]: snakemake -n --cores 2" in out and "1 of 1 steps" not in out
    assert "fresh_clone [dry]: pytest --collect-only -q" in out
    assert "test_demo.py::test_demo" in out and "test_uncommitted" not in out
    assert not (repo / "done.txt").exists()  # a dry run, in the clone, not the source
    assert not list(tmp_path.glob("ssd-math-ci.*"))  # the temporary clone is removed


def test_a_test_line_that_drifted_from_the_readme_fails(tmp_path):
    repo = _demo_repo(tmp_path, "pytest -q -x")  # .ci/run no longer holds the README's line
    proc = _bash("bash .ci/fresh_clone.sh", cwd=repo, env={"SSD_MATH_CI_DRY": "1", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "no longer holds the README's test line" in proc.stderr and TEST_LINE in proc.stderr
