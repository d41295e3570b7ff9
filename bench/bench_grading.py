"""Benchmark: grading throughput on ordinary answers, and a batch with hostile answers.

Run (not under ``nice``: the figure is the grader's speed, and the load is printed beside it)::

    python bench/bench_grading.py [--rows 2000] [--workers 2] [--repeats 3]

1. Throughput (target >= 200 graded answers/s with 2 workers on 2 cores): ``--rows`` completions
   with ordinary answers, every (gold, completion) pair distinct so the pair cache does not help,
   in two workloads (:func:`workload`): every gold different, and 4 samples per prompt. Timed:
   ``grading_pool.grade_rows`` end to end (extraction, pool start-up, grading), wall and CPU time
   (this process + its workers) of ``--repeats`` runs after a warm-up run.
2. Hostile batch: the 31 ordinary rows of the tests with 5 resource-hostile answers (power tower,
   10k nested braces, 1 MB answer, ``(10^8)!``, ``2^{2^{33}}``) and 2 malformed ones interleaved,
   gold ``7``, hard limit ``--hostile-timeout`` s per item; prints the wall time and each bad
   item's status.

Rewrites the "## grading" section of bench/RESULTS.md (other sections are kept), with the CPU
model and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

from ssd_math.grading_pool import grade_rows, status_counts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CASES = HERE.parent / "tests" / "data" / "grading_cases.jsonl"
T = "<think>\nWorking.\n</think>\n\nThe answer is "

NORMAL = [  # (gold, boxed answer): the ordinary rows of tests/test_grading.py
    ("204", "204"),
    (r"\frac{1}{2}", "0.5"),
    ("0.5", r"\frac12"),
    (r"2^{25} \cdot 26!", r"2^{25}\cdot 26!"),
    (r"\sqrt{2}", r"\sqrt{2}"),
    (r"\frac{\pi}{4}", r"\pi/4"),
    ("12", "13"),
    (r"\frac{2}{3}", "0.66"),
    ("-5", "-5"),
    ("7", "7.0"),
    (r"3\sqrt{3}", r"\sqrt{27}"),
    ("(1,2)", "(1, 2)"),
    ("100", "99"),
    (r"\frac{7}{9}", r"\frac{14}{18}"),
    ("2", "x"),
] + [(str(n), str(n)) for n in range(10, 25)]
HOSTILE = ["9^{9^{9^{9^{9}}}}", "{" * 10_000 + "1" + "}" * 10_000, "1+" * 500_000 + "1", "(10^{8})!", "2^{2^{33}}"]
MALFORMED = [r"\frac{\left( 3}{", r"\sqrt[\begin{matrix}"]
HOSTILE_NAMES = [
    "power tower",
    "10k nested braces",
    "1 MB answer",
    "(10^8)!",
    "2^(2^33)",
    "malformed \\frac",
    "malformed \\sqrt[",
]


def cpu_model() -> str:
    from ssd_math.io import machine_info  # one owner of the machine facts

    return machine_info()["cpu_model"]


def _generated(i: int) -> tuple[str, list[str]]:
    """Gold number ``i`` of the generated set and four answers to it (two right in other forms,
    one wrong, one right in the gold's own form), all boxed after a closed think block."""
    a, b = 2 + i % 97, 3 + (i * 7) % 89
    kind = i % 5
    if kind == 0:
        g, ans = str(100 + i), [f"{100 + i}.0", f"{200 + 2 * i}/2", f"{101 + i}", f"{100 + i}"]
    elif kind == 1:
        g = rf"\frac{{{a}}}{{{b}}}"
        ans = [rf"\dfrac{{{2 * a}}}{{{2 * b}}}", f"{a}/{b}", rf"\frac{{{a + 1}}}{{{b}}}", g]
    elif kind == 2:
        g = rf"{a}\sqrt{{{b}}}"
        ans = [rf"\sqrt{{{a * a * b}}}", rf"{a} \sqrt{{{b}}}", rf"{a + 1}\sqrt{{{b}}}", g]
    elif kind == 3:
        g = f"({a},{b})"
        ans = [f"({a}, {b})", f"\\left({a},{b}\\right)", f"({b}, {a})", g]
    else:
        g = f"{a}, {b + 100}"
        ans = [f"{b + 100}, {a}", f"{a},{b + 100}", f"{a}", g]
    return g, [T + rf"\boxed{{{x}}}." for x in ans]


def workload(name: str, n: int) -> list[dict]:
    """``n`` rows. ``distinct``: every gold different (each item pays two parses; the real-data
    cases first, then generated golds, a third of the answers wrong). ``eval``: 4 samples per
    prompt (one gold, 4 different answers), as the eval grid grades them."""
    rows: list[dict] = []
    if name == "distinct":
        for line in CASES.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            rows.append({"gold": r["gold"], "completion": r["completion"]})
        i = 0
        while len(rows) < n:
            g, ans = _generated(i)
            rows.append({"gold": g, "completion": ans[i % 3]})
            i += 1
    else:
        i = 0
        while len(rows) < n:
            g, ans = _generated(i)
            rows.extend({"gold": g, "completion": c} for c in ans)
            i += 1
    return [{**r, "finish_reason": "stop"} for r in rows[:n]]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_throughput(rows, workers, repeats):
    """(wall times, CPU times of this process + its reaped workers, graded rows)."""
    grade_rows(rows[:50], workers=workers, timeout_s=5.0, progress=False)  # warm-up (imports)
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        c, t = _cpu(), time.perf_counter()
        out = grade_rows(rows, workers=workers, timeout_s=5.0, progress=False)
        walls.append(time.perf_counter() - t)
        cpus.append(_cpu() - c)
    return walls, cpus, out


def hostile_batch(workers, timeout_s):
    normal = [
        {"gold": g, "completion": rf"<think>work</think> The answer is \boxed{{{a}}}.", "finish_reason": "stop"}
        for g, a in NORMAL
    ]
    normal.append({"gold": "5", "completion": "<think>ran out of budget", "finish_reason": "length"})
    bad = [{"gold": "7", "completion": rf"\boxed{{{h}}}", "finish_reason": "stop"} for h in HOSTILE + MALFORMED]
    mixed, pos = [], []
    for i, r in enumerate(normal):
        mixed.append(r)
        if i % 4 == 1 and len(pos) < len(bad):
            pos.append(len(mixed))
            mixed.append(bad[len(pos) - 1])
    t = time.perf_counter()
    ref = grade_rows(normal, workers=workers, timeout_s=timeout_s, progress=False)
    t_normal = time.perf_counter() - t
    t = time.perf_counter()
    out = grade_rows(mixed, workers=workers, timeout_s=timeout_s, progress=False)
    wall = time.perf_counter() - t
    rest = [o for k, o in enumerate(out) if k not in set(pos)]
    same = sum(o["status"] == r["status"] for o, r in zip(rest, ref))
    return wall, t_normal, [out[p]["status"] for p in pos], same, len(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hostile-timeout", type=float, default=1.5)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()

    load0 = os.getloadavg()
    results = {}
    for name in ("distinct", "eval"):
        rows = workload(name, args.rows)
        n_pairs = len({(r["gold"], r["completion"]) for r in rows})
        n_golds = len({r["gold"] for r in rows})
        walls, cpus, out = time_throughput(rows, args.workers, args.repeats)
        results[name] = (n_pairs, n_golds, walls, cpus, status_counts(out))
    wall, t_normal, bad_status, same, n_ref = hostile_batch(args.workers, args.hostile_timeout)
    load1 = os.getloadavg()

    host = (
        f"{cpu_model()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after"
    )
    table = []
    for name, (n_pairs, n_golds, walls, cpus, counts) in results.items():
        best, med, cpu = min(walls), statistics.median(walls), statistics.median(cpus)
        per_core = args.rows / cpu
        st = " / ".join(
            str(counts[s]) for s in ("correct", "incorrect", "no_answer", "gold_parse_error", "timeout", "error")
        )
        table.append(
            f"| {name} | {args.rows} | {n_pairs} | {n_golds} | {best:.2f} | {med:.2f} | "
            f"{args.rows / best:.0f} | {cpu:.2f} | {per_core:.0f} | "
            f"{per_core * args.workers:.0f} | {st} |"
        )
    cpu_eval = statistics.median(results["eval"][3])
    cpu_dist = statistics.median(results["distinct"][3])
    bad_txt = ", ".join(f"{n}: `{s}`" for n, s in zip(HOSTILE_NAMES, bad_status))
    lines = [
        "## grading",
        "",
        f"`python bench/bench_grading.py --rows {args.rows} --workers {args.workers} --repeats "
        f"{args.repeats}` (not niced; {host}).",
        "",
        f"Throughput on ordinary answers, `grade_rows` end to end (extraction, pool start-up, "
        f"math-verify) with {args.workers} worker processes, after a warm-up run. Workloads: "
        f"**distinct** = every gold different (the {len(CASES.read_text().splitlines())} "
        "real-data cases of `tests/data/grading_cases.jsonl`, then generated integers, "
        "fractions, radicals, tuples and two-answer sets, a third wrong; each item parses both "
        "sides); **eval** = 4 samples per prompt as the eval grid grades them (one gold, four "
        "different answers: two right in other forms, one wrong, one in the gold's own form). "
        "The machine is shared, so wall time mostly measures the other jobs; CPU time (this "
        "process plus its reaped workers, `os.times()`) is the grader's own cost, and "
        '"2-core rate" = answers per CPU-second x workers is what 2 otherwise idle cores give.',
        "",
        "| workload | rows | distinct pairs | distinct golds | best wall (s) | median wall (s) | "
        "answers/s (best wall) | median CPU (s) | answers per CPU-s | 2-core rate (answers/s) | "
        "correct / incorrect / no_answer / gold_parse_error / timeout / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        f"Target >= 200 answers/s on 2 cores with 2 workers: eval workload "
        f"{args.rows / cpu_eval * args.workers:.0f}/s, distinct-gold workload "
        f"{args.rows / cpu_dist * args.workers:.0f}/s (by CPU time; {len(walls)} runs each).",
        "",
        f"Hostile batch: the {n_ref} ordinary rows of `tests/test_grading.py` with "
        f"{len(HOSTILE)} hostile and {len(MALFORMED)} malformed answers interleaved (gold `7`), "
        f"{args.workers} workers, hard limit {args.hostile_timeout:g} s per item: "
        f"**{wall:.2f} s** wall (the ordinary rows alone: {t_normal:.2f} s). Bad items: "
        f"{bad_txt}. Ordinary rows with the same status as in a clean batch: {same}/{n_ref}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.no_write:
        return
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n\n"
    pat = re.compile(r"^## grading\n.*?(?=^## |\Z)", re.S | re.M)
    new = pat.sub(lambda _: text + "\n", old) if pat.search(old) else old.rstrip() + "\n\n" + text
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new.rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
