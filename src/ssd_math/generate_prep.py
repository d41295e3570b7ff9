"""Generation jobs, per model: what both job loops start from (the hf loop of
:mod:`ssd_math.generate`, the vLLM loop of :mod:`ssd_math.generate_vllm`).

- the requests: each problem rendered with the model's own chat template, checked, and fitted to
  the model's context (:func:`prepare_requests`: a prompt that leaves less than the generation
  budget is dropped and recorded);
- the sampler of the configured backend (:func:`open_sampler`);
- the model folder's identity (:func:`model_signature`) and the line format of the partial files
  (:func:`_row_line`), which the resume fingerprints and files of both loops use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from .hf_sampler import HFSampler
from .io import DataError
from .prompting import render_prompt, template_hash
from .sampler import check_requests
from .tokenizer import load_tokenizer
from .vllm_sampler import VLLMSampler

log = logging.getLogger(__name__)


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


def _row_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"
