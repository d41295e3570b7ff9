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
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .io import atomic_path, read_jsonl, write_jsonl, write_meta

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
        out.append({
            "id": p["id"],
            "prompt": render(p["problem"]),
            "answer": p.get("answer"),
            "level": p.get("level"),
            "source": p.get("source"),
        })
    return out


def _batches(requests: Sequence[dict], batch_size: int) -> list[list[dict]]:
    return [list(requests[i:i + batch_size]) for i in range(0, len(requests), batch_size)]


def _read_partial(path: Path, batch_sizes: list[int], n: int) -> dict[int, list[dict]]:
    """Complete batches from a partial file: {batch index: rows}. Incomplete ones are dropped."""
    done: dict[int, list[dict]] = {}
    if not path.exists():
        return done
    by_batch: dict[int, list[dict]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a kill mid-write
            by_batch.setdefault(int(row["_batch"]), []).append(row)
    for b, rows in by_batch.items():
        if b < len(batch_sizes) and len(rows) == batch_sizes[b] * n:
            done[b] = rows
    return done


def run_condition(sampler, requests: Sequence[dict], out_path: str | Path, *, sampling: dict,
                  condition: str, model: str, base_seed: int, batch_size: int,
                  progress: bool = True) -> int:
    """Sample every request under one decoding condition into ``out_path``; resumable.

    ``sampler.sample(batch, sampling=SamplingConfig, condition=..., base_seed=...)`` must return
    the rows of exactly that batch (contracts.md "Sample row"); with the hf backend the chunk
    size equals the sampler's batch size, so each call is one seeded generate() batch."""
    from .sampler import SamplingConfig

    cfg = SamplingConfig.from_dict(sampling)
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    batches = _batches(requests, batch_size)
    n = int(sampling.get("n", 1))
    done = _read_partial(partial, [len(b) for b in batches], n)
    if done:
        log.info("%s: resuming, %d of %d batches already done", out_path, len(done), len(batches))
        # rewrite the partial file with only the complete batches (drops a torn tail)
        with atomic_path(partial) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for b in sorted(done):
                for row in done[b]:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    todo = [b for b in range(len(batches)) if b not in done]
    bar = tqdm(total=len(batches), initial=len(done), desc=f"{model} {condition}",
               unit="batch", disable=not progress, mininterval=2.0)
    with open(partial, "a", encoding="utf-8") as fh:
        for b in todo:
            rows = list(sampler.sample(batches[b], sampling=cfg, condition=condition,
                                       base_seed=base_seed))
            expected = len(batches[b]) * n
            if len(rows) != expected:
                raise RuntimeError(f"sampler returned {len(rows)} rows for batch {b}, expected {expected}")
            blob = "".join(json.dumps({**r, "_batch": b}, ensure_ascii=False) + "\n" for r in rows)
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
            done[b] = rows
            bar.update(1)
    bar.close()
    rows = [{k: v for k, v in r.items() if k != "_batch"} for b in sorted(done) for r in done[b]]
    count = write_jsonl(out_path, rows)
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


def prompt_renderer(model_dir: str | Path, instruction: str, *, trust_remote_code: bool = False
                    ) -> tuple[Callable[[str], str], str]:
    """(render(problem) -> exact prompt text, template hash) from the model's own chat template."""
    from transformers import AutoTokenizer

    from .prompting import render_prompt, template_hash

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return (lambda problem: render_prompt(tok, problem, instruction=instruction)), template_hash(tok, instruction)


def open_sampler(common: dict, model_dir: str | Path, *, model_name: str, threads: int = 1):
    """The configured backend for one model: hf (transformers generate) or vllm (one engine)."""
    from .sampler import make_sampler

    backend = common["backend"]
    extra = dict(common.get("sampler_extra") or {})
    if backend == "hf":
        return make_sampler("hf", model_dir, device=common.get("device", "cpu"),
                            batch_size=int(common.get("batch_size", 64)), model_name=model_name,
                            threads=threads)
    return make_sampler("vllm", model_dir, model_name=model_name, seed=int(common["seed"]),
                        trust_remote_code=bool(common.get("trust_remote_code", False)), **extra)


def generate_jobs(jobs: Sequence[dict], problems_path: str | Path, outputs: Sequence[str | Path], *,
                  common: dict, threads: int = 1, shard: tuple[int, int] | None = None) -> list[int]:
    """Run generation jobs ``[{model, model_dir, condition, sampling}]`` -> ``outputs`` (same order).

    One sampler (one model load / engine start) serves consecutive jobs of the same model dir.
    ``common``: instruction, backend, batch_size, device, seed, sampler_extra, trust_remote_code.
    """
    import torch

    if len(jobs) != len(outputs):
        raise ValueError(f"{len(jobs)} jobs but {len(outputs)} outputs")
    torch.set_num_threads(max(1, int(threads)))
    problems = read_jsonl(problems_path)
    if not problems:
        raise ValueError(f"{problems_path}: no problems to sample (empty file)")
    if shard is not None:
        problems = shard_slice(problems, *shard)
    counts = []
    current_dir, sampler, requests, thash = None, None, None, None
    for job, out in zip(jobs, outputs):
        if job["model_dir"] != current_dir:
            current_dir = job["model_dir"]
            sampler = open_sampler(common, current_dir, model_name=job["model"], threads=threads)
            render, thash = prompt_renderer(current_dir, common["instruction"],
                                            trust_remote_code=common.get("trust_remote_code", False))
            requests = build_requests(problems, render)
        n = run_condition(sampler, requests, out, sampling=job["sampling"], condition=job["condition"],
                          model=job["model"], base_seed=int(common["seed"]),
                          batch_size=int(common.get("batch_size", 64)))
        write_meta(out, rule="generate", model=job["model"], model_dir=job["model_dir"],
                   condition=job["condition"], sampling=job["sampling"], backend=common["backend"],
                   base_seed=common["seed"], prompt_template_hash=thash, n_rows=n,
                   problems=str(problems_path), shard=list(shard) if shard else None,
                   instruction=common["instruction"])
        counts.append(n)
    return counts
