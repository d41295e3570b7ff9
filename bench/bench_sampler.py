"""HF sampler throughput: the fast decode loop against naive batched ``model.generate``.

Same model, same prompts (eval_main rendered as the pipeline renders them:
``ssd_math.generate_prep.prompt_renderer`` + ``build_requests``), same batch, same sampling, one process:
the contenders run alternately (order flipped every round), ``--rounds`` rounds, and the headline
is the median over rounds of the per-round ratio of useful tokens/s (fast / naive). Useful tokens:
the generated tokens each row keeps (up to and including its eos); a round's time is the whole
``HFSampler.generate_batch`` call (tokenize, sample, decode rows).

Contenders:
* ``naive``   ``HFSampler`` with ``loop="generate"``: ``model.generate`` as it comes;
* ``fast``    ``HFSampler`` default (``ssd_math.hf_sampler.decode_batch``);
* ablations (``--levers``): the bare loop (finished rows kept in the batch, the plain
  ``DynamicLayer`` cache with torch.cat every step, sdpa decode, transformers' warpers over the
  whole vocabulary) plus one lever at a time, and the fast loop without the shared-prefix
  prefill, to show what each lever gives;
* ``--cb``: transformers' own continuous batching (``model.generate_batch``) once, for its
  tokens/s (its rows are not comparable: other RNG use, no presence penalty support).

Run (WITHOUT nice: alternating rounds keep the ratio fair under load; say the load)::

    python bench/bench_sampler.py                         # results/models/base, writes RESULTS.md
    python bench/bench_sampler.py --model DIR --rounds 5 --levers --cb

Writes its own section of bench/RESULTS.md (between its markers; other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO / "src"))

BEGIN, END = "<!-- bench_sampler:begin -->", "<!-- bench_sampler:end -->"


def cpu_model() -> str:
    from ssd_math.io import machine_info  # one owner of the machine facts

    return machine_info()["cpu_model"]


def load_requests(model_dir: Path, problems: Path, config_path: Path, n: int) -> list[dict]:
    import yaml

    from ssd_math.generate import read_problems
    from ssd_math.generate_prep import build_requests, prompt_renderer
    from ssd_math.problem_sources import check_rows

    cfg = yaml.safe_load(config_path.read_text())
    rows, _ = check_rows(read_problems(problems), file=problems)
    render, _ = prompt_renderer(model_dir, cfg["prompt"]["instruction"])
    return build_requests(rows[:n], render)


def timed(
    sampler,
    batch,
    sampling,
    *,
    loop: str,
    compact_frac: float,
    buffered: bool,
    attention: bool,
    seed: int,
    prefix: bool = True,
    fused: bool = True,
) -> dict:
    sampler.loop = loop
    sampler.compact_frac = compact_frac
    sampler.buffered_kv = buffered
    sampler.decode_attention = attention
    sampler.share_prefix = prefix
    sampler.fused_topk = fused
    sampler.stats = {k: 0 for k in sampler.stats}
    sampler.stats["seconds"] = 0.0
    t0 = time.perf_counter()
    rows = sampler.generate_batch(batch, sampling=sampling, condition="bench", base_seed=seed)
    dt = time.perf_counter() - t0
    useful = sum(r["n_completion_tokens"] for r in rows)
    return {
        "seconds": dt,
        "useful_tokens": useful,
        "tok_s": useful / dt,
        "positions": sampler.stats["positions"],
        "steps": sampler.stats["steps"],
        "useful_frac": useful / sampler.stats["positions"],
        "stop_frac": sum(r["finish_reason"] == "stop" for r in rows) / len(rows),
    }


def run_cb(sampler, batch, sampling) -> dict:
    """transformers' continuous batching on the same prompts, once (after a warm-up call)."""
    import torch
    from transformers import GenerationConfig

    tok = sampler.tokenizer
    ids = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in batch.requests]
    gc = GenerationConfig(
        do_sample=True,
        temperature=float(sampling.temperature),
        top_k=int(sampling.top_k),
        top_p=float(sampling.top_p),
        max_new_tokens=int(sampling.max_new_tokens),
        eos_token_id=sampler.eos_id,
        pad_token_id=tok.pad_token_id,
    )
    try:
        torch.manual_seed(0)
        sampler.model.generate_batch(ids[:8], generation_config=gc, progress_bar=False)
        t0 = time.perf_counter()
        out = sampler.model.generate_batch(ids, generation_config=gc, progress_bar=False)
        dt = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - report what it does, whatever it is
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    gen = [list(o.generated_tokens) for o in out.values()]
    useful = sum(len(g[: g.index(sampler.eos_id) + 1]) if sampler.eos_id in g else len(g) for g in gen)
    return {"seconds": dt, "useful_tokens": useful, "tok_s": useful / dt, "n_outputs": len(gen)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "results/models/base")
    ap.add_argument("--problems", type=Path, default=REPO / "results/data/eval_main.jsonl")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml", help="for the prompt instruction")
    ap.add_argument("--n-prompts", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--compact-frac", type=float, default=None, help="the fast loop's compact_frac (default: HFSampler's)"
    )
    ap.add_argument("--levers", action="store_true", help="also time the ablations")
    ap.add_argument("--cb", action="store_true", help="also time transformers' generate_batch")
    ap.add_argument("--note", default="", help="a sentence about the model/run for RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    ap.add_argument("--results", type=Path, default=ROOT / "RESULTS.md")
    a = ap.parse_args(argv)
    if a.rounds < 3:
        ap.error("--rounds must be >= 3 (the headline is a median)")
    if not (a.model / "config.json").exists():
        ap.error(f"--model {a.model}: no config.json (build it: snakemake --cores 2 results/models/base)")

    import torch

    from ssd_math.hf_sampler import Batch, HFSampler
    from ssd_math.sampler import SamplingConfig

    torch.set_num_threads(a.threads)
    reqs = load_requests(a.model, a.problems, a.config, a.n_prompts)[: a.batch_size]
    batch = Batch(0, 0, tuple(reqs))
    sampling = SamplingConfig(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, max_new_tokens=a.max_new_tokens)
    sampler = HFSampler(a.model, batch_size=a.batch_size, threads=a.threads)
    if sampler.loop != "decode_batch":
        print(f"the fast loop does not support this model: {sampler.loop_reason}", file=sys.stderr)
        return 2
    frac = sampler.compact_frac if a.compact_frac is None else a.compact_frac
    contenders = {
        "naive": dict(loop="generate", compact_frac=frac, buffered=True, attention=True),
        "fast": dict(loop="decode_batch", compact_frac=frac, buffered=True, attention=True),
    }
    if a.levers:  # each lever alone on top of the bare loop
        bare = dict(loop="decode_batch", compact_frac=2.0, buffered=False, attention=False, prefix=False, fused=False)
        contenders["bare loop (keeps finished rows, torch.cat cache, sdpa)"] = bare
        contenders["bare + drop finished rows"] = {**bare, "compact_frac": frac}
        contenders["bare + buffered KV"] = {**bare, "buffered": True}
        contenders["bare + GQA decode attention"] = {**bare, "attention": True}
        contenders["bare + top-k sampling (TopKTruncation)"] = {**bare, "fused": True}
        contenders["fast without the shared-prefix prefill"] = {**contenders["fast"], "prefix": False}
    # warm-up (one-time allocations, lazy imports), not timed
    small = Batch(0, 0, tuple(reqs[:8]))
    for c in contenders.values():
        timed(sampler, small, sampling, seed=0, **c)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(a.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            res = timed(sampler, batch, sampling, seed=1000 + r, **contenders[name])
            runs[name].append(res)
            print(
                f"round {r} {name:48s} {res['seconds']:6.2f} s {res['tok_s']:8.0f} tok/s "
                f"useful {res['useful_frac']:.2f}",
                flush=True,
            )
    cb = run_cb(sampler, batch, sampling) if a.cb else None
    load1 = os.getloadavg()
    ratios = [f["tok_s"] / n["tok_s"] for f, n in zip(runs["fast"], runs["naive"])]
    summary = {
        "cpu": cpu_model(),
        "ncpu": os.cpu_count(),
        "threads": a.threads,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": str(a.model),
        "params": sum(p.numel() for p in sampler.model.parameters()),
        "n_prompts": len(reqs),
        "sampling": sampling.to_dict(),
        "rounds": a.rounds,
        "compact_frac": frac,
        "load_before": load0,
        "load_after": load1,
        "wall_s": time.perf_counter() - t_start,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "runs": runs,
        "cb": cb,
        "note": a.note,
        "argv": _argv(argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if not a.no_write:
        write_results(a.results, summary)
    return 0


def _argv(argv) -> str:
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if "--note" in args:
        i = args.index("--note")
        del args[i : i + 2]
    return shlex.join(["python", "bench/bench_sampler.py", *args])


def _med(xs):
    return statistics.median(xs)


def write_results(path: Path, s: dict) -> None:
    sp = s["sampling"]
    lines = [
        BEGIN,
        "## sampler",
        "",
        f"`{s['argv']}` ({s['date']}): {s['cpu']}, {s['ncpu']} CPUs visible, "
        f"{s['threads']} torch threads, torch {s['torch']}, transformers {s['transformers']}; "
        f"load average {s['load_before'][0]:.1f} before / {s['load_after'][0]:.1f} after "
        "(machine shared with other jobs; the contenders alternate, order flipped each round).",
        f"Model `{s['model']}` ({s['params']:,} params, fp32); {s['n_prompts']} eval_main prompts "
        f"as the pipeline renders them, one batch of {s['n_prompts']}; T {sp['temperature']}, "
        f"top-k {sp['top_k']}, top-p {sp['top_p']}, {sp['max_new_tokens']} new tokens; "
        f"compact_frac {s['compact_frac']}." + (f" {s['note']}" if s.get("note") else ""),
        "Useful tokens: generated tokens kept per row (up to and including eos); time: the whole "
        "`HFSampler.generate_batch` call. `useful/computed`: useful tokens / row-positions the "
        "loop computed logits for.",
        "",
        "| contender | median s | median useful tok/s | tok/s per round | useful/computed | stop frac |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in s["runs"].items():
        lines.append(
            f"| {name} | {_med([r['seconds'] for r in rs]):.2f} | "
            f"{_med([r['tok_s'] for r in rs]):.0f} | "
            f"{', '.join(format(r['tok_s'], '.0f') for r in rs)} | "
            f"{_med([r['useful_frac'] for r in rs]):.2f} | "
            f"{_med([r['stop_frac'] for r in rs]):.2f} |"
        )
    lines += [
        "",
        f"**fast / naive = {s['ratio_median']:.2f}** (median of {len(s['ratios'])} "
        f"per-round ratios: {', '.join(f'{x:.2f}' for x in s['ratios'])}). Goal >= 3: "
        f"{'meets' if s['ratio_median'] >= 3 else 'misses'}.",
    ]
    if s["cb"] is not None:
        cb = s["cb"]
        lines += [
            "",
            "transformers continuous batching (`model.generate_batch`, once, same prompts "
            "and warpers): "
            + (
                f"error: {cb['error']}"
                if "error" in cb
                else f"{cb['seconds']:.2f} s, {cb['tok_s']:.0f} useful tok/s ({cb['n_outputs']} outputs)"
            )
            + ".",
        ]
    lines += [f"Bench wall time {s['wall_s']:.0f} s.", END]
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        i, j = text.index(BEGIN), text.index(END) + len(END)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
