"""Benchmark: the probe's jobs (rules/probe.smk) at the embedded default's sizes (target: all of
them <= 90 s on 2 cores).

Builds what the default run would hand the probe: a model of the default tiny architecture
(config.yaml model.tiny; random weights: the cost does not depend on them), the task's tokenizer,
and one graded T1.5 eval file per generator (base + every default arm, eval_main's size, worked
solutions as completions). Then runs the library function of each probe rule as the rule does:
``build_positions`` once, ``forward_model`` once per model, ``analyse`` + ``write_tables`` once (the
config's stats: n_boot resamples), and the two figures. Each step is timed in a fresh process, like
a Snakemake job (interpreter + imports included): wall and CPU time (user + sys of the child).

Run: ``python bench/bench_probe.py``. Prints the timings and rewrites the "probe" section of
bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _results import write_section  # bench/_results.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    from ssd_math.io import machine_info  # one owner of the machine facts

    return machine_info()["cpu_model"]


def _child(code: str) -> tuple[float, float]:
    """(wall s, CPU s) of ``python -c code`` in a fresh process (1 torch thread, like a rule)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def setup(d: Path, cfg: dict) -> dict:
    from ssd_math import derive, synth
    from ssd_math import probe_forward as P
    from ssd_math.io import write_jsonl
    from ssd_math.modeling import config_for_tokenizer, init_model_dir
    from ssd_math.prompting import render_prompt
    from ssd_math.tokenizer import build_tokenizer

    syn = cfg["data"]["synthetic"]
    sp = synth.build_splits(
        {
            **{k: syn[k] for k in ("levels", "hard_levels", "subjects", "p_recheck", "n_eval_main")},
            "n_pretrain": 2000,
            "n_train_prompts": 10,
            "seed": cfg["seed"],
        }
    )
    tok = build_tokenizer(
        synth.tokenizer_corpus(sp["pretrain"], instruction=cfg["prompt"]["instruction"]),
        d / "tok",
        vocab_size=cfg["model"]["tiny"]["vocab_size"],
    )
    t = cfg["model"]["tiny"]
    mcfg = config_for_tokenizer(
        tok,
        hidden=t["hidden"],
        layers=t["layers"],
        heads=t["heads"],
        kv_heads=t["kv_heads"],
        intermediate=t["intermediate"],
        max_pos=t["max_pos"],
    )
    mdir = init_model_dir(d / "model", mcfg, tok, with_weights=True, seed=0)
    s = derive.probe_settings(cfg)
    models = ["base", *s["arms"]]
    evals = {}
    for g, m in enumerate(models):
        rng = random.Random(g)
        rows = []
        for r in sp["eval_main"]:
            prompt = render_prompt(tok, r["problem"], instruction=cfg["prompt"]["instruction"])
            comp = synth.completion_after_prompt(prompt, synth.worked_solution(r, rng, p_recheck=0.3))
            rows.append(
                {
                    "prompt_id": r["id"],
                    "sample_index": 0,
                    "prompt": prompt,
                    "completion": comp,
                    "n_completion_tokens": len(tok(comp)["input_ids"]),
                    "correct": rng.random() < 0.5,
                    "finish_reason": "stop",
                }
            )
        evals[m] = str(d / f"eval_{m}.jsonl")
        write_jsonl(evals[m], rows)
    return {
        "model_dir": str(mdir),
        "models": models,
        "evals": evals,
        "probe": s,
        "views": P.views(cfg),
        "stats": cfg["stats"],
    }


def main() -> None:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ctx = setup(d, cfg)
        (d / "ctx.json").write_text(json.dumps(ctx))
        pre = (
            f"import json, sys; from pathlib import Path; d = Path({str(d)!r}); "
            "c = json.loads((d / 'ctx.json').read_text());"
        )
        steps = [
            (
                "probe_positions",
                pre + "from ssd_math.probe_positions import build_positions; from ssd_math.synth import label_spans;"
                "build_positions(c['evals'], c['model_dir'], d / 'pos.jsonl', probe=c['probe'], seed=1234, label_spans=label_spans)",
            )
        ]
        for m in ctx["models"]:
            steps.append(
                (
                    f"probe_forward[{m}]",
                    pre + "from ssd_math.probe_forward import forward_model;"
                    f"forward_model(d / 'pos.jsonl', c['model_dir'], d / 'dists_{m}.jsonl', model_name={m!r},"
                    "views_=c['views'], temperature=c['probe']['temperature'], top_n=c['probe']['top_n'],"
                    "max_batch_tokens=32768)",
                )
            )
        names = ["deltas", "positions", "examples", "truth", "truth_effect", "fork_shares", "controls"]
        steps.append(
            (
                "probe_tables",
                pre + "from ssd_math.probe_analysis import analyse, write_tables;"
                "t = analyse(d / 'pos.jsonl', {m: d / f'dists_{m}.jsonl' for m in c['models']}, probe=c['probe'],"
                "views_=c['views'], stats_cfg=c['stats'], share_files={(m, '1.5'): c['evals'][m] for m in c['models']},"
                "accuracy_files={(m, 'eval_main', '1.5'): c['evals'][m] for m in c['models']});"
                f"write_tables(t, {{n: d / f'probe_{{n}}.csv' for n in {names!r}}})",
            )
        )
        steps.append(
            (
                "probe_scatter",
                pre + "from ssd_math.figures_probe import probe_scatter;"
                "probe_scatter(d / 'probe_positions.csv', d / 's.png', models=['base', c['probe']['compare_arm']])",
            )
        )
        steps.append(
            (
                "probe_fork_shares",
                pre + "from ssd_math.figures_probe import probe_fork_shares;"
                "probe_fork_shares(d / 'probe_fork_shares.csv', d / 'probe_truth_effect.csv', d / 'f.png')",
            )
        )
        rows = [(name, *_child(code)) for name, code in steps]
        carriers = [json.loads(x) for x in (d / "pos.jsonl").read_text().splitlines()]
        n_pos = sum(len(c["positions"]) for c in carriers)
        imp = _child(
            "import torch, transformers, polars, matplotlib, ssd_math.probe_positions, ssd_math.probe_forward, ssd_math.probe_analysis"
        )
    total_wall, total_cpu = sum(r[1] for r in rows), sum(r[2] for r in rows)
    t = cfg["model"]["tiny"]
    lines = [
        "## probe",
        "",
        f"`python bench/bench_probe.py` ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {_cpu_model()}, "
        f"{os.cpu_count()} CPUs visible, 1 torch thread per job; machine shared with other jobs, so CPU "
        "time is the number to read). The probe's jobs at the embedded default's sizes: "
        f"{len(ctx['models'])} models (base + {len(ctx['models']) - 1} arms, default tiny architecture "
        f"hidden {t['hidden']} x {t['layers']} layers, random weights), {len(carriers)} carriers "
        f"({ctx['probe']['carriers']['per_generator']} per generator), {n_pos} positions, "
        f"{len(ctx['views'])} views, stats n_boot {ctx['stats']['n_boot']}. Each job in a fresh process "
        f"(interpreter + imports: {imp[0]:.1f} s wall / {imp[1]:.1f} s CPU of each). Target: all probe jobs <= 90 s on 2 cores.",
        "",
        "| job | wall (s) | CPU (s) |",
        "|---|---|---|",
        *[f"| {n} | {w:.1f} | {c:.1f} |" for n, w, c in rows],
        f"| **total** | {total_wall:.1f} | {total_cpu:.1f} |",
        "",
        f"On 2 cores the jobs run two at a time: about {total_cpu / 2:.0f} s of elapsed time when the CPUs are "
        f"free (total CPU / 2; the forward jobs are independent), {'within' if total_cpu / 2 <= 90 else 'OVER'} "
        "the 90 s target.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("probe", text)


if __name__ == "__main__":
    main()
