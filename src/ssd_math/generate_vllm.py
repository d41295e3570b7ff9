"""Generation jobs on the vLLM backend (:func:`generate_jobs_vllm`, which
:func:`ssd_math.generate.generate_jobs` hands a job to when ``backend`` is ``vllm``): one engine
for the whole job, one submission of every request of a model folder's decoding conditions, and
resume per request: each row is appended to its output's partial file the moment its request
finishes, and a rerun keeps every finished (prompt id, sample index) row and submits the rest.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .generate_prep import _row_line, model_signature, open_sampler, prepare_requests
from .io import atomic_path, stable_hash, write_jsonl, write_meta
from .vllm_sampler import Work, engine_provenance

log = logging.getLogger(__name__)


def _read_partial_rows(path: Path, expected: set, fingerprint: str) -> dict[tuple, dict]:
    """Finished rows of a per-request partial file: ``{(prompt id, sample index): row}``.
    Rows outside ``expected``, repeats (the first is kept) and torn lines are dropped; a file
    whose header does not carry ``fingerprint`` yields nothing."""
    done: dict[tuple, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a kill mid-write
            if i == 0:
                if not (isinstance(row, dict) and row.get("_partial", {}).get("fingerprint") == fingerprint):
                    log.warning("%s: left by a run with other settings or another model; discarded", path)
                    return {}
                continue
            if not isinstance(row, dict):
                continue
            key = (str(row.get("prompt_id")), int(row.get("sample_index", -1)))
            if key in expected and key not in done:
                done[key] = row
    return done


def generate_jobs_vllm(
    jobs: Sequence[dict],
    problems: list[dict],
    outputs: Sequence[str | Path],
    *,
    common: dict,
    report: dict,
    problems_path,
    shard=None,
    progress: bool = True,
) -> list[int]:
    """The vLLM backend of :func:`generate_jobs`: ONE engine for the whole job, and one
    submission of every request of each model folder's jobs (decoding conditions)
    (:meth:`ssd_math.vllm_sampler.VLLMSampler.run`); the next model folder (the next checkpoint
    of the same arm) is swapped into the running engine (:meth:`VLLMSampler.load_weights`), and
    the engine is shut down when the job ends, whatever happened. Each row is appended to its
    output's ``<out>.partial`` the moment its request finishes (flushed at once, fsynced every
    ``FSYNC_S`` seconds and at the end), so a crash loses only the requests in flight; a rerun
    keeps the finished (prompt id, sample index) rows of every condition and submits only the
    rest. An output appears (sidecar first, then an atomic rename) when all of its rows exist,
    in request order; the partials are removed when every output of the job is written.
    ``jobs``' ``sampling``: :class:`SamplingConfig` (:func:`generate_jobs` builds them)."""

    base_seed = int(common["seed"])
    trust = bool(common.get("trust_remote_code", False))
    extra = dict(common.get("sampler_extra") or {})
    served_by = engine_provenance(extra)
    counts: dict[int, int] = {}
    groups: list[tuple[str, list[int]]] = []
    for j, job in enumerate(jobs):  # consecutive jobs of one model folder: one submission
        if groups and groups[-1][0] == job["model_dir"]:
            groups[-1][1].append(j)
        else:
            groups.append((job["model_dir"], [j]))
    sampler = None
    try:
        for model_dir, idx in groups:
            budget = max(jobs[j]["sampling"].max_new_tokens for j in idx)
            requests, thash, model_report = prepare_requests(
                problems, model_dir, common=common, max_new_tokens=budget, report=report
            )
            ident = {
                "model_dir": str(model_dir),
                "files": model_signature(model_dir),
                "backend": "vllm",
                "engine": extra,
            }
            state = {}
            for j in idx:
                job, out = jobs[j], Path(outputs[j])
                cfg = job["sampling"]
                expected = [(str(r["id"]), s) for r in requests for s in range(cfg.n)]
                fingerprint = stable_hash(
                    {
                        "requests": requests,
                        "sampling": cfg.to_dict(),
                        "condition": job["condition"],
                        "model": job["model"],
                        "base_seed": base_seed,
                        "identity": ident,
                        "mode": "requests",
                    }
                )
                partial = out.with_name(out.name + ".partial")
                done = _read_partial_rows(partial, set(expected), fingerprint)
                with atomic_path(partial) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(
                        _row_line(
                            {
                                "_partial": {
                                    "fingerprint": fingerprint,
                                    "out": out.name,
                                    "mode": "requests",
                                    "n_rows": len(expected),
                                }
                            }
                        )
                    )
                    fh.write("".join(_row_line(done[k]) for k in expected if k in done))
                if done:
                    log.info("%s: resuming, %d of %d rows already done", out, len(done), len(expected))
                meta = dict(
                    rule="generate",
                    model=job["model"],
                    model_dir=job["model_dir"],
                    condition=job["condition"],
                    sampling=cfg.to_dict(),
                    **served_by,
                    trust_remote_code=trust,
                    dtype=extra["dtype"],
                    base_seed=base_seed,
                    seeds={
                        "base_seed": base_seed,
                        "request_seed": "derive_seed(base_seed, prompt_id, sample_index, condition)",
                    },
                    reproducibility=(
                        "batch-invariant mode"
                        if extra.get("batch_invariant")
                        else "per-request seeds; logits depend on batching on GPU (docs/real_run.md)"
                    ),
                    prompt_template_hash=thash,
                    problems=str(problems_path),
                    shard=list(shard) if shard else None,
                    n_prompts=len(requests),
                    input_validation=model_report,
                    instruction=common["instruction"],
                )
                state[j] = {
                    "out": out,
                    "partial": partial,
                    "cfg": cfg,
                    "expected": expected,
                    "done": done,
                    "meta": meta,
                }

            def finish(j: int) -> None:  # called within this iteration: state is this model's
                st = state[j]  # noqa: B023
                rows = [st["done"][k] for k in st["expected"]]
                write_meta(st["out"], **{**st["meta"], "n_rows": len(rows)})
                counts[j] = write_jsonl(st["out"], rows)

            work = [
                Work(r, s, state[j]["cfg"], jobs[j]["condition"], tag=j)
                for j in idx
                for r in requests
                for s in range(state[j]["cfg"].n)
                if (str(r["id"]), s) not in state[j]["done"]
            ]
            for j in idx:
                if len(state[j]["done"]) == len(state[j]["expected"]):
                    finish(j)
            if not work:
                continue
            if sampler is None:
                sampler = open_sampler(common, model_dir, model_name=jobs[idx[0]]["model"])
            else:
                sampler.load_weights(model_dir, model_name=jobs[idx[0]]["model"])
            log.info("vllm: %d requests of %s (%d conditions)", len(work), model_dir, len(idx))
            handles = {j: open(state[j]["partial"], "a", encoding="utf-8") for j in idx}
            bar = tqdm(
                total=len(work),
                desc=f"{jobs[idx[0]]['model']} ({len(idx)} conditions)",
                unit="req",
                disable=not progress,
                mininterval=2.0,
            )
            last_sync = time.monotonic()
            try:
                for w, rows in sampler.run(work, base_seed=base_seed):
                    j = w.tag
                    fh = handles[j]
                    fh.write("".join(_row_line(r) for r in rows))
                    fh.flush()  # in the page cache: survives a crash of this process
                    for r in rows:
                        state[j]["done"][(str(r["prompt_id"]), int(r["sample_index"]))] = r
                    bar.update(1)
                    if time.monotonic() - last_sync > FSYNC_S:
                        for h in handles.values():
                            os.fsync(h.fileno())
                        last_sync = time.monotonic()
                    if len(state[j]["done"]) == len(state[j]["expected"]):
                        finish(j)
            finally:
                bar.close()
                for h in handles.values():
                    h.flush()
                    os.fsync(h.fileno())
                    h.close()
            missing = [str(outputs[j]) for j in idx if j not in counts]
            if missing:
                raise RuntimeError(f"the engine finished without every row of {missing}")
    finally:
        if sampler is not None:
            log.info("vllm throughput %s", json.dumps({"model": jobs[0]["model"], **sampler.throughput()}))
            sampler.close()
    for out in outputs:
        Path(out).with_name(Path(out).name + ".partial").unlink(missing_ok=True)
    return [counts[j] for j in range(len(jobs))]


#: seconds between fsyncs of the vLLM path's partial files (rows are flushed at once)
FSYNC_S = 2.0
