"""Grading many rows: :func:`ssd_math.grading.grade_answer` (math-verify) in a pool of worker
processes that survives hostile answers (a hard per-answer limit: an overrunning worker is killed
and replaced), with a cache of identical (gold, answer) pairs; the rule ``grade_*`` entry point
:func:`grade_files`.

Process model (decision: ``fork``)
----------------------------------
Workers are ``multiprocessing`` processes from the ``fork`` context. Why not ``spawn`` (or
``forkserver``): both re-import the caller's ``__main__`` in every worker -- a Snakemake
``script:`` would be re-executed (it has no ``if __name__ == "__main__"`` guard), and a ``-c`` or
stdin caller cannot be re-imported at all -- and every replacement worker would re-import sympy
(~1 s), which matters because hostile answers get workers killed. With ``fork`` a replacement is
a copy-on-write clone of the already warmed-up parent (math-verify is warmed up in the parent
once, before the first fork). The usual hazard of ``fork`` -- inheriting a lock held by another
thread of the parent -- is contained: the child only runs math-verify/sympy, CPython re-inits the
logging locks at fork, and our progress bar runs without tqdm's monitor thread. A fresh worker
still says "ready" before it gets an item, so start-up never counts against an item's limit. No
threads ever run math-verify.

Limits per item: the parent kills the worker ``timeout_s`` seconds after dispatch (hard limit).
Inside the worker a soft ``setitimer`` alarm fires at ``0.85 * timeout_s`` and raises a
BaseException (not caught by math-verify's ``except Exception``), so a hang in Python code is
reported as ``timeout`` by the worker itself. Either way the worker is not reused after a timeout
or error: an exception thrown into sympy at an arbitrary point can leave its caches or global
flags inconsistent, so the worker exits and a clean clone of the parent replaces it. Workers
also cap their address space (``max_memory_mb``) so a runaway big integer or a 1 MB answer
cannot exhaust the host: that ends as ``error`` (MemoryError) or ``timeout``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import multiprocessing.connection as mpc
import sys
import time
from collections import Counter

from .grading import STATUSES, SoftTimeout, extract_answer, grade_answer
from .io import read_jsonl, write_jsonl, write_meta


def _worker_main(conn, max_memory_mb: int | None) -> None:
    """Worker loop: warm up, say ready, then grade (key, gold, answer, soft_timeout) items."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices
    if max_memory_mb:
        try:
            import resource

            lim = int(max_memory_mb) << 20
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        except (ImportError, ValueError, OSError):
            pass
    grade_answer("\\frac{1}{2}", "0.5")  # warm math-verify's first-call caches
    conn.send(("ready", None, False))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        key, gold, answer, soft = msg
        try:
            res = grade_answer(gold, answer, soft)
        except BaseException as exc:  # e.g. the alarm landing in grade_answer's cleanup
            res = {
                "status": "timeout" if isinstance(exc, SoftTimeout) else "error",
                "grade_error": f"{type(exc).__name__}: {exc}"[:500],
            }
        # After a timeout or error, retire: an exception thrown into sympy at an arbitrary point
        # may leave its caches or global flags inconsistent. The parent forks a clean replacement.
        retire = res["status"] in ("timeout", "error")
        conn.send((key, res, retire))
        if retire:
            conn.close()
            return


# ----------------------------------------------------------------------------------------------
# The pool (parent process)
# ----------------------------------------------------------------------------------------------
# Why not pebble.ProcessPool (read: 5.2.3)? Its schedule(..., timeout=...) does kill and replace
# an overrunning worker, and an item whose worker a signal killed fails with ProcessExpired, but
# it cannot retire a worker after a given item: workers are recycled by task count only
# (max_tasks), so after an exception thrown into sympy (soft alarm, MemoryError, RecursionError)
# the same worker would grade the next items, and max_tasks=1 buys the guarantee with a fork per
# item, which costs far more than grading one. Its timeout also sends SIGTERM, whose Python
# handler cannot run while the worker is stuck in C, and waits 3 s before SIGKILL, with its
# manager thread (every other item's deadline, every replacement worker) waiting too.
class _Worker:
    def __init__(self, ctx, max_memory_mb):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, max_memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None  # key index in flight
        self.deadline = math.inf

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()  # SIGKILL
        self.proc.join(5)
        self.conn.close()


def _make_context():
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices
    grade_answer("\\frac{1}{2}", "0.5")  # warm up once here; forked workers inherit it
    return mp.get_context("fork")


def _grade_unique(
    jobs: list[tuple[str, str]],
    *,
    workers: int,
    timeout_s: float,
    progress: bool,
    max_memory_mb: int | None,
    soft_fraction: float | None = 0.85,
    startup_timeout_s: float = 120.0,
) -> list[dict]:
    """Grade unique (gold, answer) pairs in worker processes; results in input order.

    ``soft_fraction``: the in-worker alarm fires at this fraction of ``timeout_s`` (None: no
    alarm, every overrun ends in a hard kill -- used by the tests of the kill path)."""
    results: list[dict | None] = [None] * len(jobs)
    if not jobs:
        return []
    ctx = _make_context()
    soft = soft_fraction * timeout_s if soft_fraction else None
    pending = list(range(len(jobs)))[::-1]  # pop() from the end = input order
    n_workers = max(1, min(workers, len(jobs)))
    pool = [_Worker(ctx, max_memory_mb) for _ in range(n_workers)]
    failed_starts = 0
    bar = None
    if progress:
        from tqdm import tqdm

        class _Bar(tqdm):
            monitor_interval = 0  # no monitor thread in a process that forks

        bar = _Bar(total=len(jobs), desc="grading", unit="ans", file=sys.stderr)

    def finish(i: int, res: dict) -> None:
        results[i] = res
        if bar is not None:
            bar.update(1)

    def replace(w: _Worker) -> _Worker:
        w.kill()
        return _Worker(ctx, max_memory_mb)

    try:
        while pending or any(w.job is not None for w in pool):
            # dispatch to idle, ready workers
            for w in pool:
                if w.ready and w.job is None and pending:
                    i = pending.pop()
                    gold, answer = jobs[i]
                    try:
                        w.conn.send((i, gold, answer, soft))
                    except OSError:  # the idle worker died: requeue, replace below
                        pending.append(i)
                        continue
                    w.job = i
                    w.deadline = time.monotonic() + timeout_s
            now = time.monotonic()
            wait_until = min(
                [w.deadline for w in pool if w.job is not None]
                + [w.started + startup_timeout_s for w in pool if not w.ready],
                default=now + 0.05,
            )
            ready = mpc.wait(
                [w.conn for w in pool] + [w.proc.sentinel for w in pool],
                timeout=max(0.0, wait_until - now),
            )
            now = time.monotonic()
            for k, w in enumerate(pool):
                died = w.proc.sentinel in ready
                if w.conn in ready:
                    try:
                        key, res, retire = w.conn.recv()
                    except Exception:  # EOF / truncated message: the worker died
                        died = True
                        w.proc.join(1.0)
                    else:
                        if key == "ready":
                            w.ready, failed_starts = True, 0
                        elif key == w.job:
                            w.job, w.deadline = None, math.inf
                            finish(key, res)
                        if retire:
                            pool[k] = replace(w)
                        continue
                if died and not w.proc.is_alive():
                    code = w.proc.exitcode
                    if w.job is not None:
                        finish(w.job, {"status": "error", "grade_error": f"worker died (exit code {code})"})
                    elif not w.ready:
                        failed_starts += 1
                        if failed_starts >= 3:
                            raise RuntimeError(f"grading workers fail to start (exit {code})")
                    pool[k] = replace(w)
                elif w.job is not None and now >= w.deadline:
                    finish(w.job, {"status": "timeout", "grade_error": f"killed after {timeout_s:g}s wall clock"})
                    pool[k] = replace(w)
                elif not w.ready and now >= w.started + startup_timeout_s:
                    raise RuntimeError(f"grading worker not ready after {startup_timeout_s}s")
    finally:
        for w in pool:
            if w.proc.is_alive() and w.job is None and w.ready:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            w.proc.join(0.5)
            w.kill()
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]


def grade_rows(
    rows: list[dict],
    *,
    workers: int = 2,
    timeout_s: float = 5.0,
    progress: bool = True,
    max_memory_mb: int | None = 4096,
) -> list[dict]:
    """Grade sample rows; return new rows (same order) with the graded-row fields added.

    Added fields: ``extracted_answer, status, correct, think_closed, boxed, n_boxes, length_stop,
    grade_error`` (``length_stop`` = ``finish_reason == "length"``; ``grade_error`` is None unless
    status is timeout/error). Identical (gold, extracted answer) pairs are graded once. Each item
    has a hard wall-clock limit of ``timeout_s`` seconds in a worker process (see module
    docstring); ``workers`` processes grade in parallel. Progress bar on stderr if ``progress``.
    """
    extracted = [extract_answer(r.get("completion") or "") for r in rows]
    key_index: dict[tuple[str, str], int] = {}
    jobs: list[tuple[str, str]] = []
    row_key: list[int | None] = []
    no_gold = {i for i, r in enumerate(rows) if r.get("gold") is None or not str(r.get("gold")).strip()}
    for i, (r, ext) in enumerate(zip(rows, extracted)):
        ans = ext["extracted_answer"]
        if ans is None or i in no_gold:
            row_key.append(None)
            continue
        key = (str(r["gold"]), ans)
        if key not in key_index:
            key_index[key] = len(jobs)
            jobs.append(key)
        row_key.append(key_index[key])
    graded = _grade_unique(jobs, workers=workers, timeout_s=timeout_s, progress=progress, max_memory_mb=max_memory_mb)
    out = []
    for i, (r, ext, ki) in enumerate(zip(rows, extracted, row_key)):
        if i in no_gold:  # never score a row without a gold answer as wrong: say why
            res = {"status": "gold_parse_error", "grade_error": "no gold answer in the row"}
        else:
            res = {"status": "no_answer", "grade_error": None} if ki is None else graded[ki]
        out.append(
            {
                **r,
                "extracted_answer": ext["extracted_answer"],
                "status": res["status"],
                "correct": res["status"] == "correct",
                "think_closed": ext["think_closed"],
                "boxed": ext["boxed"],
                "n_boxes": ext["n_boxes"],
                "length_stop": r.get("finish_reason") == "length",
                "grade_error": res["grade_error"],
            }
        )
    return out


def status_counts(rows: list[dict]) -> dict[str, int]:
    """Counts per status (every status present, zero-filled) plus ``n``, ``think_closed``,
    ``boxed``, ``length_stop`` counts. Unknown statuses are counted under their own name."""
    c = Counter(r["status"] for r in rows)
    out = {"n": len(rows), **{s: c.get(s, 0) for s in STATUSES}}
    out.update({s: n for s, n in c.items() if s not in STATUSES})
    for flag in ("think_closed", "boxed", "length_stop"):
        out[flag] = sum(bool(r.get(flag)) for r in rows)
    return out


def grade_files(
    samples_paths, out_paths, *, workers: int = 2, timeout_s: float = 5.0, progress: bool = True
) -> list[dict[str, int]]:
    """Grade several generation files with one worker pool; write each graded eval JSONL
    (atomic) with a provenance sidecar carrying its status counts; return the counts per file."""
    if len(samples_paths) != len(out_paths):
        raise ValueError(f"{len(samples_paths)} inputs but {len(out_paths)} outputs")
    per_file = []
    for path in samples_paths:
        rows = read_jsonl(path)
        if not rows:
            raise ValueError(f"{path}: no samples to grade (empty file)")
        per_file.append(rows)
    graded = grade_rows([r for rows in per_file for r in rows], workers=workers, timeout_s=timeout_s, progress=progress)
    out, start = [], 0
    for path, rows, dest in zip(samples_paths, per_file, out_paths):
        part = graded[start : start + len(rows)]
        start += len(rows)
        write_jsonl(dest, part)
        counts = status_counts(part)
        write_meta(
            dest,
            rule="grade",
            samples=str(path),
            grader="math-verify",
            workers=workers,
            timeout_s=timeout_s,
            status_counts=counts,
        )
        out.append(counts)
    return out


def grade_file(
    samples_path, out_path, *, workers: int = 2, timeout_s: float = 5.0, progress: bool = True
) -> dict[str, int]:
    """Grade one generation file (see :func:`grade_files`)."""
    return grade_files([samples_path], [out_path], workers=workers, timeout_s=timeout_s, progress=progress)[0]
