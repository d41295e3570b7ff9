"""README Quick start command 1 on a fresh clone, timed: the numbers of README "Measured".

    python3 bench/bench_quickstart.py [--keep] [--no-write]

Clones this repository's committed HEAD into an empty temporary folder (nothing beside it, as a
new user's clone), runs there the README's first Quick start line exactly as written (install +
the default pipeline, through `.ci/fresh_clone.sh`'s extraction, so it follows the README), with
no virtualenv of the caller active, and times it: the whole line, the install part (up to the
`snakemake` step, timed by a second clock started when the line's `snakemake` starts: the
pipeline's own wall time is that of its first to its last job log) and the pipeline. Then it
reads the clone's `results/tables/timings.csv` (rule `timings`: the sum of every job's
`benchmark:` wall/CPU time per stage), Table 1's accuracies (`results/tables/table1.csv`), the
findings (`results/tables/findings.md`, rule `findings`) and the job count, and writes the
section "quickstart" of bench/RESULTS.md with the machine's CPU (``ssd_math.io.machine_info``)
and load average. A second `snakemake --cores 2`
in the clone is timed too (it must say "Nothing to be done").
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
BEGIN, END = "<!-- bench_quickstart:begin -->", "<!-- bench_quickstart:end -->"


def quickstart_lines(readme: Path) -> list[str]:
    out = subprocess.run(
        ["bash", "-c", f'source "{REPO}/.ci/fresh_clone.sh" --functions && ci_quickstart_commands "{readme}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ln for ln in out.splitlines() if ln.strip()]


def fresh_env() -> dict:
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    if venv:
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if p != f"{venv}/bin")
    return env


def run(cmd: str, cwd: Path, log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(
            ["bash", "-c", cmd], cwd=cwd, env=fresh_env(), stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    return rc, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    ap.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from ssd_math.io import machine_info

    tmp = Path(tempfile.mkdtemp(prefix="ssd-quickstart-"))
    clone = tmp / "ssd-math"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    cmd1 = quickstart_lines(clone / "README.md")[0]
    load0 = os.getloadavg()[0]
    rc, wall = run(cmd1, clone, tmp / "command1.log")
    load1 = os.getloadavg()[0]
    text = (tmp / "command1.log").read_text(errors="replace")
    if rc != 0:
        print(text[-4000:])
        raise SystemExit(f"command 1 failed (rc {rc}); log: {tmp / 'command1.log'}")
    logs = sorted((clone / "results" / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    first = min(p.stat().st_ctime for p in logs)
    last = max(p.stat().st_mtime for p in logs)
    jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", text)
    n_jobs = int(jobs[-1][1]) if jobs else None
    rc2, wall2 = run("source .venv/bin/activate && snakemake --cores 2", clone, tmp / "rerun.log")
    nothing = "Nothing to be done" in (tmp / "rerun.log").read_text(errors="replace")
    stages = list(csv.DictReader(open(clone / "results" / "tables" / "timings.csv")))
    findings = (clone / "results" / "tables" / "findings.md").read_text().strip()
    m = machine_info()
    pipeline = last - first
    lines = [
        BEGIN,
        "## quickstart",
        "",
        f"`python3 bench/bench_quickstart.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"commit {commit}): README Quick start command 1 verbatim in a fresh clone in an empty "
        f"temporary folder. CPU: {m.get('cpu_model')}, {m.get('logical_cores')} logical cores, "
        f"ISA {', '.join(k for k, v in (m.get('isa') or {}).items() if v) or 'n/a'}; load average "
        f"{load0:.1f} before, {load1:.1f} after.",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| command 1 (venv + install + `snakemake --cores 2`), wall | {wall:.0f} |",
        f"| of it, the pipeline (first job's log to the last one's) | {pipeline:.0f} |",
        f"| of it, install and DAG building (the rest) | {wall - pipeline:.0f} |",
        f"| `snakemake --cores 2` again (rc {rc2}; {'Nothing to be done' if nothing else 'REBUILT SOMETHING'}) | {wall2:.1f} |",
        "",
        f"Jobs: {n_jobs}. Per stage (rule `timings`, `results/tables/timings.csv`: the sum "
        "of each job's `benchmark:` times; jobs run two at a time, so these add up to more than "
        "the pipeline's wall time):",
        "",
        "| stage | jobs | wall s (sum) | CPU s (sum) | slowest job |",
        "|---|---|---|---|---|",
    ]
    for r in stages:
        lines.append(
            f"| {r['stage']} | {r['jobs']} | {float(r['wall_s']):.0f} | "
            f"{float(r['cpu_s']):.0f} | {r.get('slowest') or ''} |"
        )
    t1 = list(csv.DictReader(open(clone / "results" / "tables" / "table1.csv")))
    lines += [
        "",
        "Table 1 (`results/tables/table1.csv`, rule `table1`: accuracy with a 95% Wilson "
        "interval, one sample per prompt; n = "
        f"{t1[0]['eval_main_n_prompts']} eval_main / {t1[0]['eval_hard_n_prompts']} eval_hard "
        "prompts):",
        "",
        "| row | eval_main | eval_hard |",
        "|---|---|---|",
    ]
    lines += [f"| {r['row']} | {r['eval_main_text']} | {r['eval_hard_text']} |" for r in t1]
    lines += ["", "What the run found (`results/tables/findings.md`, rule `findings`):", "", findings, "", END]
    section = "\n".join(lines)
    print(section)
    if not a.no_write:
        old = RESULTS.read_text()
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip() + "\n\n" + section + "\n"
        RESULTS.write_text(new)
    if a.keep:
        print(f"clone kept: {clone}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
