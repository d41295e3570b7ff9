"""Generation jobs: turn problems into sample rows through a sampler, resumably.

Used by two kinds of rule: a *training-sample shard* (one arm's T_train settings over a slice of
the prompt pool) and an *eval generation job* (one model, one eval set, several decoding
conditions served by one model load / one engine start).

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

The vLLM backend resumes per request instead (:func:`generate_jobs_vllm`): one submission of
every request of all the job's conditions, rows appended to the partials as requests finish, a
rerun keeps every finished (prompt id, sample index) row of each condition and submits the rest.

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
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .hf_sampler import HFSampler
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
from .prompting import render_prompt, template_hash
from .sampler import SamplingConfig, check_requests
from .tokenizer import load_tokenizer
from .vllm_sampler import VLLMSampler, Work, engine_provenance

log = logging.getLogger(__name__)


def shard_slice(rows: Sequence[dict], shard: int, n_shards: int) -> list[dict]:
    """Contiguous, near-equal slice ``shard`` of ``n_shards`` (order preserved)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    n = len(rows)
    lo = (n * shard) // n_shards
    hi = (n * (shard + 1)) // n_shards
    return list(rows[lo:hi])


def build_requests(problems: Sequence[dict], render: Callable[[str], str]) -> list[dict]:
    """Problem rows -> sampler requests (the exact rendered prompt kept with each)."""
    out = []
    for p in problems:
        out.append(
            {
                "id": p["id"],
                "prompt": render(p["problem"]),
                "answer": p.get("answer"),
                "level": p.get("level"),
                "source": p.get("source"),
            }
        )
    return out


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


def _row_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


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


def prompt_renderer(
    model_dir: str | Path, instruction: str, *, trust_remote_code: bool = False
) -> tuple[Callable[[str], str], str]:
    """(render(problem) -> exact prompt text, template hash) from the model's own chat template."""
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    return (lambda problem: render_prompt(tok, problem, instruction=instruction)), template_hash(tok, instruction)


def make_sampler(backend: str, model_dir, **kw):
    """The sampler of ``backend`` ("hf": :class:`ssd_math.hf_sampler.HFSampler`; "vllm":
    :class:`ssd_math.vllm_sampler.VLLMSampler`). Each backend imports its engine (torch,
    vLLM) only when built, so importing this module stays light."""
    if backend == "hf":
        return HFSampler(model_dir, **kw)
    if backend == "vllm":
        return VLLMSampler(model_dir, **kw)
    raise ValueError(f"unknown sampler backend {backend!r} (use 'hf' or 'vllm')")


def open_sampler(common: dict, model_dir: str | Path, *, model_name: str, threads: int = 1):
    """The configured backend for one model: hf (transformers generate) or vllm (one engine).
    ``common["trust_remote_code"]`` (config ``model.trust_remote_code``, default False) reaches
    every ``from_pretrained`` / the vLLM engine; a model folder's own code never runs otherwise."""
    backend = common["backend"]
    extra = dict(common.get("sampler_extra") or {})
    trust = bool(common.get("trust_remote_code", False))
    if backend == "hf":
        return make_sampler(
            "hf",
            model_dir,
            device=common.get("device", "cpu"),
            batch_size=int(common["batch_size"]),
            model_name=model_name,
            threads=threads,
            trust_remote_code=trust,
        )
    # the engine seed: sampler.vllm.seed where set, else the experiment seed (per-request seeds
    # come from the experiment seed either way: ssd_math.sampler.request_seed)
    seed = int(extra.pop("seed", common["seed"]))
    return make_sampler("vllm", model_dir, model_name=model_name, seed=seed, trust_remote_code=trust, **extra)


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


def model_context(model_dir: str | Path, sampler_extra: dict | None = None) -> tuple[int | None, str]:
    """(tokens of the model's context, where that number comes from): its config.json's
    ``max_position_embeddings`` (``text_config``'s for a multimodal config), or vLLM's
    ``max_model_len`` when set and smaller. ``(None, ...)`` when the folder has no config.json."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return None, "no config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    n = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings")
    limit, source = (int(n), "max_position_embeddings") if n else (None, "no max_position_embeddings")
    mml = (sampler_extra or {}).get("max_model_len")
    if mml and (limit is None or int(mml) < limit):
        limit, source = int(mml), "sampler.vllm.max_model_len"
    return limit, source


def fit_context(
    requests: Sequence[dict],
    n_tokens: Callable[[str], int],
    *,
    context: int | None,
    max_new_tokens: int,
    report: dict,
    source: str = "max_position_embeddings",
    max_examples: int = 10,
) -> tuple[list[dict], dict]:
    """Drop the requests whose rendered prompt plus the generation budget does not fit the
    model's context (``n_tokens(prompt) + max_new_tokens > context``): such a sample could not
    get its full budget, so its length stop (and its grade) would be an artifact of the prompt.
    Returns (kept requests, a copy of the ``problem_sources.check_rows`` report with them counted under
    ``dropped.prompt_too_long`` and the rule under ``context``). Raises :class:`DataError`
    naming the file when none is left."""
    rep = json.loads(json.dumps(report))
    rep["context"] = {
        "limit": context,
        "source": source,
        "max_new_tokens": int(max_new_tokens),
        "rule": "drop when prompt tokens + max_new_tokens > limit",
    }
    if context is None:
        return list(requests), rep
    budget = context - int(max_new_tokens)
    kept, examples, n_drop = [], [], 0
    for r in requests:
        n = n_tokens(r["prompt"])
        if n > budget:
            n_drop += 1
            if len(examples) < max_examples:
                examples.append(f"id {r['id']!r}: {n} prompt tokens + {max_new_tokens} > {context}")
            continue
        kept.append(r)
    rep["dropped"]["prompt_too_long"] = rep["dropped"].get("prompt_too_long", 0) + n_drop
    if examples:
        rep["examples"].setdefault("prompt_too_long", []).extend(examples)
        log.warning(
            "%s: dropped %d prompt(s) that do not fit the context (%d tokens, %s) with max_new_tokens %d: %s",
            rep["file"],
            n_drop,
            context,
            source,
            max_new_tokens,
            "; ".join(examples[:3]),
        )
    rep["n_out"] = rep["n_out"] - n_drop if rep.get("n_out") is not None else len(kept)
    if requests and not kept:
        raise DataError(
            f"{rep['file']}: no prompt fits the model's context ({context} tokens, "
            f"{source}) with max_new_tokens {max_new_tokens}: {'; '.join(examples[:3])}"
        )
    return kept, rep


def prompt_token_counter(model_dir: str | Path, *, trust_remote_code: bool = False) -> Callable[[str], int]:
    """Tokens of a rendered prompt (the text carries its special tokens: none are added)."""

    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def prepare_requests(
    problems: Sequence[dict], model_dir: str | Path, *, common: dict, max_new_tokens: int, report: dict
) -> tuple[list[dict], str, dict]:
    """The requests of one model, the same for both backends: each problem rendered with the
    model's own chat template (:func:`prompt_renderer`), checked (ids once each), and fitted to
    the model's context (:func:`fit_context`: a prompt that leaves less than ``max_new_tokens``
    is dropped and recorded). Returns (requests, template hash, the input-validation report
    with the context drops). Seeds are per request and come from the contract
    (:func:`ssd_math.sampler.request_seed`) when the backend samples."""

    trust = bool(common.get("trust_remote_code", False))
    render, thash = prompt_renderer(model_dir, common["instruction"], trust_remote_code=trust)
    requests = build_requests(problems, render)
    check_requests(requests)
    context, ctx_source = model_context(model_dir, common.get("sampler_extra"))
    counter = prompt_token_counter(model_dir, trust_remote_code=trust) if context is not None else None
    requests, model_report = fit_context(
        requests, counter, context=context, max_new_tokens=max_new_tokens, report=report, source=ctx_source
    )
    return requests, thash, model_report


def model_signature(model_dir: str | Path) -> list:
    """(relative name, size, mtime_ns) of a model folder's files: a cheap identity for the
    partial-file fingerprint (a retrained model invalidates a killed run's partial rows)."""
    root = Path(model_dir)
    if not root.is_dir():
        return [str(root)]
    return sorted(
        [str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns]
        for f in root.rglob("*")
        if f.is_file() and f.name != "meta.json"
    )


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
# the vLLM path: one submission per generation job, rows persisted as requests finish
# ----------------------------------------------------------------------------------------------


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
