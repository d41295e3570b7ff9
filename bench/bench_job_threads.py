"""Generation jobs on 2 cores: one thread each side by side, or two threads each one at a time.

    python bench/bench_job_threads.py --clone <a finished run's clone> [--rules generate_grid] [--no-write]

In a clone where the default pipeline has run (``bench/bench_quickstart.py --keep`` leaves one),
reruns every job of the given generation rules (default: ``generate_grid``, 12 jobs) with
``snakemake --cores 2 -R <rules> --until <rules> --set-threads <rule>=T``, first with T = 2 (the
rule's own ask, capped at --cores: one job at a time), then T = 1 (two jobs side by side), and
times each whole rerun. After each it compares every output with the files the pipeline wrote
(byte for byte): the profile's ``set-threads: 1`` (profiles/default/config.yaml) is only a
runtime choice if the samples do not depend on the thread count. Writes the section
"job threads" of bench/RESULTS.md with the machine's CPU.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _results import write_section  # noqa: E402  (bench/_results.py)


def outputs(clone: Path, rules: list[str]) -> list[Path]:
    """The generation files the rules' jobs write (by the layout's names: T<t>, T<t>-k<k>,
    checkpoints/<ckpt>, sweep/<condition>; ssd_math.layout), sampled by them (sidecar rule
    "generate")."""
    fam = {
        "generate_grid": lambda p: (
            p.name.startswith("T") and "-k" not in p.name and p.parent.name not in ("checkpoints", "sweep")
        ),
        "generate_checkpoints": lambda p: p.parent.name == "checkpoints",
        "generate_sweep": lambda p: p.parent.name == "sweep",
        "generate_passk": lambda p: "-k" in p.name,
    }

    def generated(p: Path) -> bool:  # not a subset set's file (rules subset_*: cut, not sampled)
        meta = p.with_name(p.name + ".meta.json")
        return meta.exists() and json.loads(meta.read_text()).get("rule") == "generate"

    return sorted(
        p
        for p in (clone / "results" / "generations").rglob("*.jsonl")
        if any(fam[r](p) for r in rules) and generated(p)
    )


def rerun(clone: Path, rules: list[str], threads: int) -> float:
    cmd = [
        str(clone / ".venv/bin/snakemake"),
        "--cores",
        "2",
        "-R",
        *rules,
        "--until",
        *rules,
        "--quiet",
        "--set-threads",
        *[f"{r}={threads}" for r in rules],
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=clone, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"rerun with {threads} thread(s) failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clone", type=Path, required=True)
    ap.add_argument("--rules", nargs="+", default=["generate_grid"])
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from ssd_math.io import machine_info

    files = outputs(a.clone, a.rules)
    if not files:
        raise SystemExit(f"no outputs of {a.rules} under {a.clone}/results/generations: run the pipeline first")
    ref = Path(tempfile.mkdtemp(prefix="job-threads-ref-"))
    for p in files:
        dst = ref / p.relative_to(a.clone)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    rows, two = [], Path(tempfile.mkdtemp(prefix="job-threads-2-"))
    for threads in (2, 1):
        wall = rerun(a.clone, a.rules, threads)
        same = sum(filecmp.cmp(p, ref / p.relative_to(a.clone), shallow=False) for p in files)
        if threads == 2:
            for p in files:
                (two / p.relative_to(a.clone)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, two / p.relative_to(a.clone))
        same2 = sum(filecmp.cmp(p, two / p.relative_to(a.clone), shallow=False) for p in files)
        rows.append((threads, wall, same, same2))
        print(
            f"threads {threads}: {wall:.1f} s, {same}/{len(files)} files identical to the pipeline's, "
            f"{same2} to the 2-thread rerun's",
            flush=True,
        )
    shutil.rmtree(ref)
    shutil.rmtree(two)
    m = machine_info()
    commit = subprocess.run(
        ["git", "-C", str(a.clone), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "## job threads",
        "",
        f"`python bench/bench_job_threads.py --clone <clone> --rules {' '.join(a.rules)}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, clone at commit {commit}): every job "
        f"of {', '.join(a.rules)} rerun with `snakemake --cores 2 --set-threads <rule>=T`, once per T, "
        f"one run each. CPU: {m.get('cpu_model')}, {m.get('logical_cores')} logical cores.",
        "",
        "| threads per job | jobs at a time | wall s (all jobs) | outputs byte-identical to the pipeline's "
        "| ... to the 2-thread rerun's |",
        "|---|---|---|---|---|",
    ]
    for threads, wall, same, same2 in rows:
        lines.append(f"| {threads} | {2 // threads} | {wall:.0f} | {same} of {len(files)} | {same2} of {len(files)} |")
    t2, t1 = rows[0][1], rows[1][1]
    lines += [
        "",
        f"One thread each, side by side: {100 * (t2 - t1) / t2:.0f}% less wall time than two threads "
        "each, one at a time (each job's import of torch and transformers is single-threaded).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_write:
        write_section("job threads", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
