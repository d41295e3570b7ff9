"""Generation jobs: turn problems into sample rows through a sampler, resumably.

Used by two kinds of rule: a *training-sample shard* (one arm's T_train settings over a slice of
the prompt pool) and an *eval generation job* (one model, one eval set, several decoding
conditions served by one model load / one engine start). This module runs a job: its input
rows, shards, the hf loop with its partial-file resume, and the command line; each model's
requests and sampler come from :mod:`ssd_math.generate_prep`, the vLLM loop is
:mod:`ssd_math.generate_vllm`.

Resume contract: requests are chunked into batches of fixed composition (independent of what was
already done) and each batch is seeded from its own identity, so the rows of a batch do not depend
on which other batches ran. Finished batches are appended to ``<out>.partial`` (one write and an
fsync per batch); on restart, complete batches are kept and skipped, an incomplete tail (a kill
mid-write) is discarded, and the declared output appears (atomic rename) only when every batch is
done. Killed at any point and rerun, a job ends with exactly the rows of an uninterrupted run.

The partial file starts with a header line holding a fingerprint of everything the rows depend on
(requests, sampling, condition, model name, base seed, batch size, and the model folder's files by
name/size/mtime): a partial left by a killed run with other settings or another model is discarded,
never mixed in. The sidecar (``<out>.meta.json``) is written just before the output's rename, so
an output never appears without its provenance. In a multi-output job (:func:`generate_jobs`) every
condition's partial is kept until the whole job is done: when a failed job's finished outputs are
deleted by Snakemake, the rerun rebuilds them from their partials without sampling again.

The vLLM backend resumes per request instead (:func:`ssd_math.generate_vllm.generate_jobs_vllm`):
one submission of every request of all the job's conditions, rows appended to the partials as
requests finish, a rerun keeps every finished (prompt id, sample index) row of each condition and
submits the rest.

Input rows (:func:`ssd_math.problem_sources.check_rows`, the rule data preparation applies too): a malformed
JSON line is an error naming the file and line; an empty file, or one with no valid row, is an
error naming the file. Rows without an id, without
problem text, **without a gold answer**, and repeated ids (the first is kept) are dropped before
sampling, counted, logged with their line numbers and recorded in every output's sidecar
(``input_validation``). A row without a gold answer is dropped rather than carried: it cannot be
graded, and carrying it would put an ungradable row into an accuracy denominator as "wrong"; a gold
answer that is present but unparseable is graded as ``gold_parse_error`` (ssd_math.grading) and
counted, never scored. A repeated problem text under another id is dropped too (the first
is kept): it would count one problem twice in an accuracy and narrow its interval.

Command line (one real job as a process; the rules call :func:`generate_jobs` directly)::

    python -m ssd_math.generate --jobs-json JOBS --problems P.jsonl --outputs O1 [O2 ...]
        --common-json COMMON [--shard I N] [--threads T]

``JOBS`` / ``COMMON``: JSON text or a path to a JSON file (see :func:`generate_jobs`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .generate_prep import _row_line, model_signature, open_sampler, prepare_requests
from .generate_vllm import generate_jobs_vllm
from .io import (
    DataError,
    atomic_path,
    meta_path,
    read_json,
    read_jsonl,
    read_jsonl_lines,
    stable_hash,
    write_jsonl,
    write_meta,
)
from .problem_sources import check_rows
from .sampler import SamplingConfig

log = logging.getLogger(__name__)


def shard_slice(rows: Sequence[dict], shard: int, n_shards: int) -> list[dict]:
    """Contiguous, near-equal slice ``shard`` of ``n_shards`` (order preserved)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    n = len(rows)
    lo = (n * shard) // n_shards
    hi = (n * (shard + 1)) // n_shards
    return list(rows[lo:hi])


def _batches(requests: Sequence[dict], batch_size: int) -> list[list[dict]]:
    return [list(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]


def _batch_keys(batch: Sequence[dict], n: int) -> set[tuple[str, int]]:
    return {(str(r["id"]), s) for r in batch for s in range(n)}


def _read_partial(
    path: Path, batches: list[list[dict]], n: int, fingerprint: str | None = None
) -> dict[int, list[dict]]:
    """Complete batches from a partial file: {batch index: rows}.

    A batch counts only when its rows are exactly its (prompt id, sample index) pairs, once each;
    incomplete batches and undecodable (torn) lines are dropped. A file whose header does not
    carry ``fingerprint`` (other settings, another model) yields nothing."""
    done: dict[int, list[dict]] = {}
    if not path.exists():
        return done
    by_batch: dict[int, list[dict]] = {}
    header_ok = fingerprint is None
    torn = 0
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn += 1  # a torn line from a kill mid-write
                continue
            if i == 0 and isinstance(row, dict) and "_partial" in row:
                header_ok = fingerprint is None or row["_partial"].get("fingerprint") == fingerprint
                continue
            if not isinstance(row, dict) or "_batch" not in row:
                torn += 1
                continue
            by_batch.setdefault(int(row["_batch"]), []).append(row)
    if not header_ok:
        log.warning("%s: left by a run with other settings or another model; discarded", path)
        return done
    for b, rows in by_batch.items():
        if b >= len(batches):
            continue
        keys = [(str(r.get("prompt_id")), int(r.get("sample_index", -1))) for r in rows]
        if len(keys) == len(set(keys)) and set(keys) == _batch_keys(batches[b], n):
            done[b] = rows
    if torn:
        log.info("%s: %d torn line(s) dropped", path, torn)
    return done


def run_condition(
    sampler,
    requests: Sequence[dict],
    out_path: str | Path,
    *,
    sampling: SamplingConfig,
    condition: str,
    model: str,
    base_seed: int,
    batch_size: int,
    progress: bool = True,
    identity: dict | None = None,
    meta: dict | None = None,
    keep_partial: bool = False,
) -> int:
    """Sample every request under one decoding condition into ``out_path``; resumable.

    ``sampler.sample(batch, sampling=SamplingConfig, condition=..., base_seed=...)`` must return
    the rows of exactly that batch (contracts.md "Sample row"); with the hf backend the chunk
    size equals the sampler's batch size, so each call is one seeded generate() batch.
    ``identity``: anything else the rows depend on (e.g. the model folder's file signature), put
    into the partial file's fingerprint. ``meta``: sidecar fields, written just before the
    output appears. ``keep_partial``: leave ``<out>.partial`` in place (the caller removes it)."""
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    batches = _batches(requests, batch_size)
    n = sampling.n
    fingerprint = stable_hash(
        {
            "requests": list(requests),
            "sampling": sampling.to_dict(),
            "condition": condition,
            "model": model,
            "base_seed": int(base_seed),
            "batch_size": int(batch_size),
            "identity": identity or {},
        }
    )
    header = _row_line(
        {
            "_partial": {
                "fingerprint": fingerprint,
                "out": out_path.name,
                "n_batches": len(batches),
                "batch_size": int(batch_size),
                "n": n,
            }
        }
    )
    done = _read_partial(partial, batches, n, fingerprint)
    if done:
        log.info("%s: resuming, %d of %d batches already done", out_path, len(done), len(batches))
    # (re)start the partial file: header + the complete batches only (drops a torn tail, a
    # partly written batch, or a stale file from other settings), replaced atomically
    with atomic_path(partial) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(header)
        for b in sorted(done):
            fh.write("".join(_row_line({**r, "_batch": b}) for r in done[b]))
    done = {b: [{k: v for k, v in r.items() if k != "_batch"} for r in rows] for b, rows in done.items()}
    todo = [b for b in range(len(batches)) if b not in done]
    bar = tqdm(
        total=len(batches),
        initial=len(done),
        desc=f"{model} {condition}",
        unit="batch",
        disable=not progress,
        mininterval=2.0,
    )
    with open(partial, "a", encoding="utf-8") as fh:
        for b in todo:
            rows = list(sampler.sample(batches[b], sampling=sampling, condition=condition, base_seed=base_seed))
            keys = [(str(r["prompt_id"]), int(r["sample_index"])) for r in rows]
            if len(keys) != len(set(keys)) or set(keys) != _batch_keys(batches[b], n):
                raise RuntimeError(
                    f"sampler returned {len(rows)} rows for batch {b}, expected "
                    f"{len(batches[b]) * n} (each prompt id x sample index once)"
                )
            fh.write("".join(_row_line({**r, "_batch": b}) for r in rows))  # one write per batch
            fh.flush()
            os.fsync(fh.fileno())
            done[b] = rows
            bar.update(1)
    bar.close()
    rows = [r for b in sorted(done) for r in done[b]]
    if meta is not None:
        write_meta(out_path, **{**meta, "n_rows": len(rows)})
    count = write_jsonl(out_path, rows)
    if not keep_partial:
        partial.unlink(missing_ok=True)
    return count


def merge_shards(shards: Sequence[str | Path], out_path: str | Path) -> int:
    """Concatenate shard files in order; duplicate (prompt_id, sample_index) is an error."""
    rows: list[dict] = []
    seen: set = set()
    for path in shards:
        for r in read_jsonl(path):
            key = (r["prompt_id"], r["sample_index"])
            if key in seen:
                raise ValueError(f"{path}: duplicate sample {key} across shards")
            seen.add(key)
            rows.append(r)
    n = write_jsonl(out_path, rows)
    write_meta(out_path, rule="merge_shards", shards=[str(s) for s in shards], n_rows=n)
    return n


def subset_generations(
    sources: Sequence[str | Path], problems_path: str | Path, outputs: Sequence[str | Path]
) -> list[int]:
    """Each output: the rows of its source (a generation file of the parent eval set) whose
    prompt is one of ``problems_path``'s (a subset eval set, :func:`ssd_math.layout.subset_sets`),
    in the source's order, with the source's sidecar plus ``subset_of`` and ``problems``.

    The problems are checked as generation checks them (:func:`ssd_math.problem_sources.check_rows`); a
    problem with no rows in a source is a :class:`DataError` naming the source, the count and the
    first ids (the set is then not a subset of the parent: generate it instead)."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    problems, _ = check_rows(read_problems(problems_path), file=problems_path)
    ids = {p["id"] for p in problems}
    counts = []
    for src, out in zip(sources, outputs):
        rows = [r for r in read_jsonl(src) if r["prompt_id"] in ids]
        missing = sorted(ids - {r["prompt_id"] for r in rows})
        if missing:
            raise DataError(
                f"{src}: no generations for {len(missing)} of the {len(ids)} problems of "
                f"{problems_path} (first: {', '.join(map(str, missing[:3]))}): that set is "
                "not a subset of the one generated"
            )
        src_meta = meta_path(src)
        fields = read_json(src_meta) if src_meta.exists() else {}
        fields.pop("artifact", None)  # the rest (machine, seeds, sampling) is where the rows came from
        n = write_jsonl(out, rows)
        write_meta(
            out,
            **{
                **fields,
                "rule": "subset_generations",
                "subset_of": str(src),
                "problems": str(problems_path),
                "n_prompts": len(ids),
                "n_rows": n,
            },
        )
        counts.append(n)
    return counts


# ----------------------------------------------------------------------------------------------
# input rows
# ----------------------------------------------------------------------------------------------


def read_problems(path: str | Path) -> list[tuple[int, dict]]:
    """``[(line number, row)]`` of a problems JSONL file. A line that is not a JSON object is a
    :class:`DataError` naming the file and the line; an empty file is one naming the file."""
    out, bad = read_jsonl_lines(path)
    if bad:
        lineno, why = bad[0]
        raise DataError(f"{path}: line {lineno}: {why}")
    if not out:
        raise DataError(f"{path}: no problems to sample (empty file)")
    return out


def generate_jobs(
    jobs: Sequence[dict],
    problems_path: str | Path,
    outputs: Sequence[str | Path],
    *,
    common: dict,
    threads: int = 1,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> list[int]:
    """Run generation jobs ``[{model, model_dir, condition, sampling}]`` -> ``outputs`` (same order).

    ``sampling``: the fields of :class:`ssd_math.sampler.SamplingConfig` as a dict (a rule's params,
    :func:`ssd_math.derive.sampling_params`), made the type here, once per job.

    One sampler (one model load / engine start) serves consecutive jobs of the same model dir.
    ``common``: instruction, backend, batch_size, device, seed, sampler_extra, trust_remote_code.
    Problem rows are checked first (:func:`ssd_math.problem_sources.check_rows`) and the whole file is validated
    before sharding, so every shard sees the same row list. Resumable (module docstring).
    """
    import torch

    if len(jobs) != len(outputs):
        raise ValueError(f"{len(jobs)} jobs but {len(outputs)} outputs")
    if len(set(map(str, outputs))) != len(outputs):
        raise ValueError(f"duplicate outputs in {list(map(str, outputs))}")
    jobs = [{**job, "sampling": SamplingConfig.from_dict(job["sampling"])} for job in jobs]
    problems, report = check_rows(read_problems(problems_path), file=problems_path)
    torch.set_num_threads(max(1, int(threads)))
    if shard is not None:
        problems = shard_slice(problems, *shard)
    trust = bool(common.get("trust_remote_code", False))
    if common["backend"] == "vllm":
        return generate_jobs_vllm(
            jobs,
            problems,
            outputs,
            common=common,
            report=report,
            problems_path=problems_path,
            shard=shard,
            progress=progress,
        )
    batch_size = int(common["batch_size"])  # sampler.batch_size: the hf backend's batches
    counts = []
    current_dir, sampler, requests, thash, ident = None, None, None, None, None
    for job, out in zip(jobs, outputs):
        if job["model_dir"] != current_dir:
            current_dir = job["model_dir"]
            sampler = open_sampler(common, current_dir, model_name=job["model"], threads=threads)
            budget = max(j["sampling"].max_new_tokens for j in jobs if j["model_dir"] == current_dir)
            requests, thash, model_report = prepare_requests(
                problems, current_dir, common=common, max_new_tokens=budget, report=report
            )
            ident = {"model_dir": str(current_dir), "files": model_signature(current_dir), "backend": common["backend"]}
            if getattr(sampler, "loop", None):  # hf: decode_batch or generate (other RNG use)
                ident["hf_loop"] = sampler.loop
        meta = dict(
            rule="generate",
            model=job["model"],
            model_dir=job["model_dir"],
            condition=job["condition"],
            sampling=job["sampling"].to_dict(),
            backend=common["backend"],
            batch_size=batch_size,
            device=common.get("device", "cpu"),
            trust_remote_code=trust,
            threads=int(threads),
            hf_loop=getattr(sampler, "loop", None),
            dtype=sampler.dtype,
            base_seed=int(common["seed"]),
            seeds={
                "base_seed": int(common["seed"]),
                "request_seed": "derive_seed(base_seed, prompt_id, sample_index, condition)",
                "hf_batch_seed": "derive_seed(base_seed, condition, first prompt_id, sample_index)",
            },
            prompt_template_hash=thash,
            problems=str(problems_path),
            shard=list(shard) if shard else None,
            n_prompts=len(requests),
            input_validation=model_report,
            instruction=common["instruction"],
        )
        n = run_condition(
            sampler,
            requests,
            out,
            sampling=job["sampling"],
            condition=job["condition"],
            model=job["model"],
            base_seed=int(common["seed"]),
            batch_size=batch_size,
            progress=progress,
            identity=ident,
            meta=meta,
            keep_partial=True,
        )
        counts.append(n)
    for out in outputs:  # every output is complete: the partials are no longer needed
        Path(out).with_name(Path(out).name + ".partial").unlink(missing_ok=True)
    return counts


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _json_arg(value: str):
    text = value.strip()
    if text[:1] in "[{":
        return json.loads(text)
    with open(value, encoding="utf-8") as fh:
        return json.load(fh)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m ssd_math.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs-json", required=True, help="jobs list: JSON text or a .json file")
    ap.add_argument("--problems", required=True, help="problems JSONL")
    ap.add_argument("--outputs", required=True, nargs="+", help="one output per job")
    ap.add_argument("--common-json", required=True, help="common settings: JSON text or a file")
    ap.add_argument("--shard", nargs=2, type=int, metavar=("I", "N"), default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jobs = _json_arg(a.jobs_json)
    if isinstance(jobs, dict):
        jobs = [jobs]
    counts = generate_jobs(
        jobs,
        a.problems,
        a.outputs,
        common=_json_arg(a.common_json),
        threads=a.threads,
        shard=tuple(a.shard) if a.shard else None,
        progress=not a.no_progress,
    )
    print(json.dumps({"outputs": list(a.outputs), "counts": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
