"""The tiny base recipe across pretraining seeds x kernel settings (threads, ISA): is the base's accuracy a property
of the task, or of where (and on which kernels) pretraining stopped?

    . .venv/bin/activate && python bench/bench_seed_matrix.py [--quick] [--write-results]
    python bench/bench_seed_matrix.py --seeds 0,1 --threads 1,2,2:avx2 --set data.synthetic.lock_noise=0.3

One bench for the base recipe (bench/bench_tiny_base.py is a thin alias of this one). It reads
the embedded default config (``--config``, default ``config.yaml``; ``--set dotted.key=yaml``
overrides a knob for a tuning run) and builds everything through the library, as the pipeline
does:

* data, once: ``ssd_math.synth.build_splits(data.synthetic + seed)`` (the config's seed: the
  data are FIXED across cells), the tokenizer (``ssd_math.tokenizer.build_tokenizer`` on
  ``synth.tokenizer_corpus``), the init config dir (``ssd_math.modeling``) and the pretraining
  corpus (``synth.pretrain_records``), as rules build_tiny_init / render_pretrain_corpus;
* per cell (pretraining seed s, kernel setting t), in its own process: ``ssd_math.train.train``
  with the spec of rule pretrain_base (``model.pretrain`` + ``init_random``) but ``seed: s`` (the
  init weights and the data order), under ``torch.set_num_threads(T)`` and, for a setting
  ``T:ISA``, ATen / MKL / oneDNN capped at that instruction set (``ATEN_CPU_CAPABILITY``,
  ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``: the kernels another CPU runs, e.g.
  ``2:avx2`` on an AVX-512 machine; thread counts alone can give bit-identical weights);
  then the HF sampler
  (``ssd_math.hf_sampler.HFSampler``, ``sampler.batch_size``) on ``eval_main`` at T 0.6 / 0.7 /
  1.0 / 1.5 with the config's eval decoding (top-k 20, top-p 0.95) and ``eval.max_new_tokens``,
  graded by ``ssd_math.grading_pool.grade_rows`` (math-verify); and each arm's training sample
  (ssd, t13, topk5, naive: the config's arm settings, ``train_sampling.max_new_tokens``) on the
  600 ``train_prompts``, through ``ssd_math.filtering.filter_samples`` (the drop rate).

The per-request sampling seeds (``seed`` of the config, the condition and prompt) are the SAME in
every cell, so the cells are coupled: two bases that put the same probabilities on a prompt draw
the same completion. The spread across cells is therefore a spread of the *models*, not of the
sampling noise, and a binomial SE (~2.8 pp at n = 300, p ~ 0.6) is an upper bound on the
sampling part of it.

Cells run ``--jobs`` at a time (default 2 on 2 cores: two threads=1 cells fill it).
Each cell writes ``<work>/cells/s{seed}_t{threads}.json`` and is skipped when that exists and
matches the recipe (resumable; ``--force`` redoes). ``--write-results`` writes the section
``seed x threads matrix (... <recipe hash>)`` of bench/RESULTS.md (between its markers; one
section per recipe). ``--quick``: seeds 0,1,
threads 1,2, eval at T 0.7 and 1.0 only, arms ssd and naive only.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
MARK = "<!-- bench_seed_matrix:{} recipe {} -->"  # one section per recipe hash
EVAL_TS = (0.6, 0.7, 1.0, 1.5)
ARMS = ("ssd", "t13", "topk5", "naive")
GOALS = {"acc_lo": 0.50, "acc_hi": 0.80, "spread": 0.06, "len_stop": 0.02, "drop": 0.05}
#: A cell's kernel setting: ``T`` (T torch threads, the machine's own kernels) or ``T:ISA`` (T
#: threads with ATen, MKL and oneDNN capped at that instruction set: the kernels another CPU
#: would run, e.g. ``2:avx2`` on an AVX-512 machine stands in for an AVX2-only one).
ISA_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
}


def n_threads(label: str) -> int:
    return int(str(label).split(":")[0])


def isa_env(label: str) -> dict:
    """Environment of a cell's kernel setting (empty for the machine's own kernels)."""
    parts = str(label).split(":")
    if len(parts) == 1:
        return {}
    if parts[1] not in ISA_ENV:
        raise SystemExit(f"--threads {label}: unknown ISA {parts[1]!r} (known: {sorted(ISA_ENV)})")
    return ISA_ENV[parts[1]]


def slug(label: str) -> str:
    return str(label).replace(":", "-")


# ------------------------------------------------------------------------------------------
# config and machine
# ------------------------------------------------------------------------------------------


def load_cfg(path: Path, sets: list[str]) -> dict:
    from ssd_math.config import validate

    cfg = yaml.safe_load(Path(path).read_text())
    for kv in sets:
        key, _, val = kv.partition("=")
        d = cfg
        *head, last = key.split(".")
        for k in head:
            d = d.setdefault(k, {})
        d[last] = yaml.safe_load(val)
    return validate(cfg)


def recipe_of(cfg: dict) -> dict:
    """What a cell's result depends on (besides seed and threads)."""
    from ssd_math import derive

    return {k: cfg[k] for k in ("seed", "data", "prompt", "sampler", "train_sampling", "eval")} | {
        "model": {"tiny": cfg["model"]["tiny"], "pretrain": cfg["model"]["pretrain"]},
        "arms": {a: derive.arm_sampling(cfg, a).to_dict() for a in ARMS},
    }


def recipe_hash(cfg: dict) -> str:
    blob = json.dumps(recipe_of(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16") if f in flags]
    return {"model": model, "isa": isa, "cores": os.cpu_count()}


# ------------------------------------------------------------------------------------------
# shared data (built once, fixed across cells)
# ------------------------------------------------------------------------------------------


def prepare(cfg: dict, work: Path) -> dict:
    from ssd_math.io import read_json, write_json, write_jsonl
    from ssd_math.modeling import config_for_tokenizer, init_model_dir
    from ssd_math.synth import build_splits, pretrain_records, tokenizer_corpus
    from ssd_math.tokenizer import build_tokenizer

    done = work / "data" / "done.json"
    if done.exists() and read_json(done).get("recipe") == recipe_hash(cfg):
        return read_json(done)
    d = work / "data"
    d.mkdir(parents=True, exist_ok=True)
    instr = cfg["prompt"]["instruction"]
    t0 = time.perf_counter()
    splits = build_splits({**cfg["data"]["synthetic"], "seed": int(cfg["seed"])})
    tiny = dict(cfg["model"]["tiny"])
    tok = build_tokenizer(
        tokenizer_corpus(splits["pretrain"], instruction=instr), d / "init", vocab_size=int(tiny.pop("vocab_size"))
    )
    init_model_dir(d / "init", config_for_tokenizer(tok, **tiny), tok)
    recs = pretrain_records(splits["pretrain"], tok, instruction=instr)
    write_jsonl(d / "pretrain_sft.jsonl", recs)
    for name in ("eval_main", "train_prompts"):
        write_jsonl(d / f"{name}.jsonl", splits[name])
    ntok = sorted(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in recs)
    info = {
        "recipe": recipe_hash(cfg),
        "prep_s": time.perf_counter() - t0,
        "vocab": len(tok),
        "pretrain_rows": len(recs),
        "pretrain_tokens": {
            "mean": statistics.mean(ntok),
            "p95": ntok[int(0.95 * len(ntok))],
            "max": ntok[-1],
            "over_train_cap": sum(n > cfg["train_sampling"]["max_new_tokens"] for n in ntok) / len(ntok),
            "over_eval_cap": sum(n > cfg["eval"]["max_new_tokens"] for n in ntok) / len(ntok),
        },
    }
    write_json(done, info)
    return info


# ------------------------------------------------------------------------------------------
# one cell (runs in its own process: the thread count is per process)
# ------------------------------------------------------------------------------------------


def pretrain_spec(cfg: dict, work: Path, cell: Path, seed: int) -> dict:
    """The spec of rule pretrain_base (rules/model.smk get_pretrain_spec), with the cell's seed."""
    p = {k: v for k, v in cfg["model"]["pretrain"].items() if k != "checkpoint_steps"}
    return {
        **p,
        "init_dir": str(work / "data" / "init"),
        "init_random": True,
        "data": str(work / "data" / "pretrain_sft.jsonl"),
        "out_dir": str(cell / "model"),
        "checkpoints": {},
        "log": str(cell / "log.jsonl"),
        "resume_dir": str(cell / "resume"),
        "seed": int(seed),
        "instrument": {**p["instrument"], "enabled": False},
        "progress": False,
    }


def run_cell(cfg: dict, work: Path, seed: int, threads: str, quick: bool, checkpoints: list[int] = ()) -> dict:
    import shutil

    import torch

    from ssd_math import derive
    from ssd_math.filtering import filter_samples
    from ssd_math.grading_pool import grade_rows
    from ssd_math.hf_sampler import HFSampler
    from ssd_math.io import read_jsonl, write_json
    from ssd_math.prompting import render_prompt
    from ssd_math.stats import wilson_ci
    from ssd_math.train import train

    torch.set_num_threads(n_threads(threads))
    cell = work / "cells" / f"s{seed}_t{slug(threads)}"
    shutil.rmtree(cell, ignore_errors=True)
    cell.mkdir(parents=True)
    t0 = time.perf_counter()
    spec = pretrain_spec(cfg, work, cell, seed)
    spec["checkpoints"] = {str(k): str(cell / f"step{k}") for k in checkpoints}
    summary = train(spec)
    train_s = time.perf_counter() - t0
    log = read_jsonl(cell / "log.jsonl")
    tail = [r["loss"] for r in log[-10:] if "loss" in r]
    h = hashlib.sha256()
    for p in sorted((cell / "model").glob("*.safetensors")):
        h.update(p.read_bytes())

    sampler = HFSampler(cell / "model", batch_size=int(cfg["sampler"]["batch_size"]), threads=n_threads(threads))
    tok = sampler.tokenizer
    instr = cfg["prompt"]["instruction"]

    def requests(name):
        return [
            {**r, "prompt": render_prompt(tok, r["problem"], instruction=instr)}
            for r in read_jsonl(work / "data" / f"{name}.jsonl")
        ]

    base_seed = int(cfg["seed"])
    ev, tr = requests("eval_main"), requests("train_prompts")
    out = {
        "seed": seed,
        "threads": str(threads),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "recipe": recipe_hash(cfg),
        "train_s": train_s,
        "steps": summary.get("steps"),
        "final_loss_mean10": statistics.mean(tail) if tail else None,
        "weights_sha256": h.hexdigest()[:16],
        "eval": {},
        "arms": {},
    }
    t1 = time.perf_counter()
    for T in (0.7, 1.0) if quick else EVAL_TS:
        sp = derive.eval_sampling(cfg, T, n=1)
        rows = grade_rows(
            sampler.sample(ev, sampling=sp, condition=f"T{derive.fmt_t(T)}", base_seed=base_seed),
            workers=1,
            progress=False,
        )
        n, k = len(rows), sum(r["correct"] for r in rows)
        lo, hi = wilson_ci(k, n, 0.95)  # the record's wilson95 field
        out["eval"][str(T)] = {
            "n": n,
            "correct": k,
            "acc": k / n,
            "wilson95": [lo, hi],
            "length_stop": sum(r["length_stop"] for r in rows) / n,
            "rechecks_per_sample": sum(r["completion"].count("Wait, let me check again.") for r in rows) / n,
            "mean_tokens": statistics.mean(r["n_completion_tokens"] for r in rows),
            "acc_by_level": {
                str(L): statistics.mean(r["correct"] for r in rows if r["level"] == L)
                for L in sorted({r["level"] for r in rows})
            },
        }
    # convergence read: accuracy at T0.7 of the intermediate checkpoints (--checkpoints)
    sp07 = derive.eval_sampling(cfg, 0.7, n=1)
    out["checkpoints"] = {}
    for k in checkpoints:
        ck = HFSampler(cell / f"step{k}", batch_size=int(cfg["sampler"]["batch_size"]), threads=n_threads(threads))
        rows = grade_rows(
            ck.sample(ev, sampling=sp07, condition="T0.7", base_seed=base_seed), workers=1, progress=False
        )
        out["checkpoints"][str(k)] = sum(r["correct"] for r in rows) / len(rows)
    for arm in ("ssd", "naive") if quick else ARMS:
        a = derive.all_arms(cfg)[arm]
        sp = derive.arm_sampling(cfg, arm)
        rows = sampler.sample(tr, sampling=sp, condition=f"train-{arm}", base_seed=base_seed)
        _, _, fs = filter_samples(rows, filter_length_stop=True)
        out["arms"][arm] = {
            "n": fs["n_samples"],
            "length_stop_rate": fs["length_stop_rate"],
            "filter_on_in_config": bool(a["filter_length_stop"]),
            "sampling": sp.to_dict(),
        }
    out["sample_s"] = time.perf_counter() - t1
    write_json(work / "cells" / f"s{seed}_t{slug(threads)}.json", out)
    shutil.rmtree(cell / "resume", ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------
# the matrix
# ------------------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, seed: int, threads: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        __file__,
        "--cell",
        f"{seed},{threads}",
        "--config",
        str(args.config),
        "--work",
        str(args.work),
    ] + [x for kv in args.set for x in ("--set", kv)]
    if args.quick:
        cmd.append("--quick")
    if args.checkpoints:
        cmd += ["--checkpoints", args.checkpoints]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(n_threads(threads)),
        "MKL_NUM_THREADS": str(n_threads(threads)),
        "OMP_WAIT_POLICY": "PASSIVE",
        **isa_env(threads),
    }
    logf = Path(args.work) / "cells" / f"s{seed}_t{slug(threads)}.log"
    with open(logf, "w") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)


def run_matrix(args, cfg) -> list[dict]:
    from ssd_math.io import read_json

    work = Path(args.work)
    (work / "cells").mkdir(parents=True, exist_ok=True)
    cells = [(s, t) for s in args.seeds for t in args.threads]
    todo = []
    for s, t in cells:
        f = work / "cells" / f"s{s}_t{slug(t)}.json"
        if not args.force and f.exists() and read_json(f).get("recipe") == recipe_hash(cfg):
            continue
        todo.append((s, t))
    if args.report_only:
        todo = []
    print(f"{len(cells)} cells, {len(todo)} to run: {todo}", flush=True)
    t0 = time.perf_counter()
    # cells are independent processes: --jobs of them at a time (the thread count is what a
    # cell's numerics depend on, not what runs beside it); OMP_WAIT_POLICY=PASSIVE keeps a
    # 2-thread cell from burning its CPU share spin-waiting on a shared machine
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futs = {ex.submit(_spawn, args, s, t): (s, t) for s, t in todo}
        for f in cf.as_completed(futs):
            print(f"cell {futs[f]} rc {f.result().returncode} at {time.perf_counter() - t0:.0f}s", flush=True)
    out, missing = [], []
    for s, t in cells:
        f = work / "cells" / f"s{s}_t{slug(t)}.json"
        if not f.exists() or read_json(f).get("recipe") != recipe_hash(cfg):
            if not args.report_only:
                raise SystemExit(f"cell seed {s} threads {t} failed: see {f.with_suffix('.log')}")
            missing.append((s, t))
            continue
        out.append(read_json(f))
    if not out:
        raise SystemExit(f"no finished cell of this recipe in {work / 'cells'}")
    args.missing = missing
    return out


def summarize(res: list[dict]) -> dict:
    acc = [r["eval"]["0.7"]["acc"] for r in res]
    ls = {T: [r["eval"][T]["length_stop"] for r in res] for T in res[0]["eval"] if float(T) >= 1.0}
    drops = {a: [r["arms"][a]["length_stop_rate"] for r in res] for a in res[0]["arms"]}
    by_seed = {}
    for r in res:
        by_seed.setdefault(r["seed"], {})[str(r["threads"])] = r["eval"]["0.7"]["acc"]
    tdiff = [abs(v["1"] - v["2"]) for v in by_seed.values() if "1" in v and "2" in v]
    kdiff = [max(v.values()) - min(v.values()) for v in by_seed.values() if len(v) > 1]
    goals = {
        f"acc T0.7 in [{GOALS['acc_lo']:.0%}, {GOALS['acc_hi']:.0%}] in every cell": all(
            GOALS["acc_lo"] <= a <= GOALS["acc_hi"] for a in acc
        ),
        f"spread (max - min) of acc T0.7 <= {GOALS['spread'] * 100:.0f} pp": max(acc) - min(acc)
        <= GOALS["spread"] + 1e-12,
        f"length stops at every T >= 1.0 >= {GOALS['len_stop']:.0%} in every cell": all(
            min(v) >= GOALS["len_stop"] for v in ls.values()
        ),
        f"filter drop rate >= {GOALS['drop']:.0%} for every arm in every cell": all(
            min(v) >= GOALS["drop"] for v in drops.values()
        ),
    }
    return {
        "acc_min": min(acc),
        "acc_max": max(acc),
        "acc_mean": statistics.mean(acc),
        "spread": max(acc) - min(acc),
        "acc_sd": statistics.pstdev(acc),
        "thread_diff_max": max(tdiff) if tdiff else None,
        "thread_diff_mean": statistics.mean(tdiff) if tdiff else None,
        "kernel_diff_max": max(kdiff) if kdiff else None,
        "length_stop_min": {T: min(v) for T, v in ls.items()},
        "drop_min": {a: min(v) for a, v in drops.items()},
        "train_s_max": max(r["train_s"] for r in res),
        "identical_weights_across_threads": sum(
            len({r["weights_sha256"] for r in res if r["seed"] == s}) == 1 for s, v in by_seed.items() if len(v) > 1
        ),
        "seeds_with_both_threads": sum(len(v) > 1 for v in by_seed.values()),
        "goals": goals,
    }


def _cpu_per_step(args, r) -> str:
    """Mean CPU seconds per optimizer step of a cell's pretraining (its log): the cost measure
    that a shared machine's load does not inflate the way it does wall time."""
    from ssd_math.io import read_jsonl

    f = Path(args.work) / "cells" / f"s{r['seed']}_t{slug(r['threads'])}" / "log.jsonl"
    rows = [x for x in read_jsonl(f) if "step_cpu_s" in x] if f.exists() else []
    return f"{statistics.mean(x['step_cpu_s'] for x in rows):.2f}" if rows else "n/a"


def render(args, cfg, prep, res, summ) -> str:
    import torch

    cpu = cpu_info()
    syn, pre = cfg["data"]["synthetic"], cfg["model"]["pretrain"]
    Ts = list(res[0]["eval"])
    arms = list(res[0]["arms"])
    cks = sorted({k for r in res for k in r.get("checkpoints", {})}, key=int)
    L = [
        MARK.format("begin", recipe_hash(cfg)),
        f"## seed x threads matrix (the tiny base recipe {recipe_hash(cfg)})",
        "",
        f"`python bench/bench_seed_matrix.py {' '.join(sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); CPU: {cpu['model']}, "
        f"{cpu['cores']} cores, ISA flags {', '.join(cpu['isa']) or 'none of avx2/avx512f/amx'}; "
        f"torch {torch.__version__}, threads per cell {sorted(set(args.threads))} "
        f"(`torch.set_num_threads`; {args.jobs} cells at a time); machine shared with "
        f"other jobs, so wall times are noisy. Recipe {recipe_hash(cfg)}:",
        "",
        f"- data (fixed across cells, seed {cfg['seed']}): levels {syn['levels']}, subjects "
        f"{syn.get('subjects')}, lock_noise ε = {syn.get('lock_noise', 0.0)} (slips: {syn.get('lock_slip', 'uniform')}), fork_shares "
        f"{syn.get('fork_shares')}, p_recheck {syn.get('p_recheck')}, {prep['pretrain_rows']} "
        f"pretraining solutions (completion tokens mean {prep['pretrain_tokens']['mean']:.1f}, "
        f"p95 {prep['pretrain_tokens']['p95']}, max {prep['pretrain_tokens']['max']}; "
        f"{prep['pretrain_tokens']['over_train_cap']:.1%} over the training cap "
        f"{cfg['train_sampling']['max_new_tokens']}, {prep['pretrain_tokens']['over_eval_cap']:.1%}"
        f" over the eval cap {cfg['eval']['max_new_tokens']})",
        f"- pretraining: {res[0]['steps']} optimizer steps x {pre['global_batch']} sequences, lr "
        f"{pre['lr']} ({pre['schedule']}, warmup {pre['warmup_steps']}, to {pre['min_lr']}); "
        f"varied: the pretraining seed (init weights + data order)",
        f"- eval: eval_main, n = {res[0]['eval']['0.7']['n']} per cell, top-k "
        f"{cfg['eval']['decoding']['top_k']}, top-p {cfg['eval']['decoding']['top_p']}, "
        f"{cfg['eval']['max_new_tokens']} new tokens, math-verify grading; accuracy = correct / n, "
        f"95% Wilson interval; arms {', '.join(arms)}: "
        f"{res[0]['arms'][arms[0]]['n']} train_prompts, one sample each, {cfg['train_sampling']['max_new_tokens']}-token cap, "
        f"drop = length-stop share (what `filtering.filter_samples` drops)",
        "- the per-request sampling seeds are the same in every cell (coupled cells: the spread "
        "is a spread of models; binomial SE at n = 300 is ~2.8 pp)",
        "",
        "| seed | threads | acc T0.7 [95% Wilson] | "
        + " | ".join(f"acc T{T}" for T in Ts if T != "0.7")
        + " | "
        + " | ".join(f"len-stop T{T}" for T in Ts if float(T) >= 1.0)
        + " | "
        + " | ".join(f"drop {a}" for a in arms)
        + " | "
        + "".join(f"acc T0.7 at step {k} | " for k in cks)
        + "final loss | pretrain s (cpu s/step) | weights |",
        "|" + "---|" * (5 + len(Ts) - 1 + sum(float(T) >= 1.0 for T in Ts) + len(arms) + 1 + len(cks)),
    ]
    for r in sorted(res, key=lambda r: (r["seed"], str(r["threads"]))):
        e = r["eval"]
        lo, hi = e["0.7"]["wilson95"]
        L.append(
            f"| {r['seed']} | {r['threads']} | {e['0.7']['acc']:.3f} [{lo:.3f}, {hi:.3f}] | "
            + " | ".join(f"{e[T]['acc']:.3f}" for T in Ts if T != "0.7")
            + " | "
            + " | ".join(f"{e[T]['length_stop']:.3f}" for T in Ts if float(T) >= 1.0)
            + " | "
            + " | ".join(f"{r['arms'][a]['length_stop_rate']:.3f}" for a in arms)
            + " | "
            + "".join(f"{r.get('checkpoints', {}).get(k, float('nan')):.3f} | " for k in cks)
            + f"{r['final_loss_mean10']:.4f} | {r['train_s']:.0f} ({_cpu_per_step(args, r)}) | "
            f"{r['weights_sha256'][:8]} |"
        )
    s = summ
    L += [
        "",
        f"- acc T0.7 over {len(res)} cells: mean {s['acc_mean']:.3f}, sd {s['acc_sd']:.3f}, "
        f"min {s['acc_min']:.3f}, max {s['acc_max']:.3f}: **spread (max - min) "
        f"{s['spread'] * 100:.1f} pp**; same seed, threads 1 vs 2: mean |diff| "
        + (
            f"{s['thread_diff_mean'] * 100:.1f} pp, max {s['thread_diff_max'] * 100:.1f} pp"
            if s["thread_diff_max"] is not None
            else "n/a"
        )
        + (
            ""
            if s["kernel_diff_max"] is None
            else f"; same seed across kernel settings (threads / ISA): max diff {s['kernel_diff_max'] * 100:.1f} pp"
        )
        + f"; seeds whose weights are bit-identical across kernel settings: "
        f"{s['identical_weights_across_threads']} of {s['seeds_with_both_threads']}",
        f"- pretraining wall per cell: max {s['train_s_max']:.0f} s",
        (
            f"- NOT RUN (requested, no finished result): {', '.join(f'seed {a} threads {b}' for a, b in args.missing)}"
            if getattr(args, "missing", None)
            else f"- all {len(res)} requested cells ran"
        ),
        "- goals (over the cells that ran): "
        + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in s["goals"].items()),
        MARK.format("end", recipe_hash(cfg)),
    ]
    return "\n".join(L) + "\n"


def write_results(text: str, recipe: str) -> None:
    path = ROOT / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = MARK.format("begin", recipe), MARK.format("end", recipe)
    if begin in old and end in old:
        i, j = old.index(begin), old.index(end) + len(end)
        new = old[:i] + text.rstrip("\n") + old[j:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    from ssd_math.io import write_text

    write_text(path, new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="pretraining seeds")
    ap.add_argument(
        "--threads",
        default="1,2,2:avx2",
        help="kernel settings: T (threads) or T:ISA (ISA caps: " + ", ".join(ISA_ENV) + ")",
    )
    ap.add_argument("--jobs", type=int, default=2, help="cells run this many at a time")
    ap.add_argument("--work", default=str(ROOT / "_scratch" / "seed_matrix"))
    ap.add_argument("--quick", action="store_true", help="seeds 0,1; eval T 0.7 and 1.0; arms ssd and naive")
    ap.add_argument("--force", action="store_true", help="rerun cells that already have results")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: summarize the finished cells (the section names the missing)",
    )
    ap.add_argument(
        "--checkpoints", default="", help="optimizer steps (e.g. 150,225) also evaluated at T0.7: a convergence read"
    )
    ap.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick and a.seeds == ap.get_default("seeds"):
        a.seeds = "0,1"
    a.seeds = [int(x) for x in a.seeds.split(",")]
    a.threads = [x.strip() for x in a.threads.split(",")]
    for t in a.threads:
        n_threads(t), isa_env(t)
    cfg = load_cfg(Path(a.config), a.set)
    work = Path(a.work)
    if a.cell:
        s, t = a.cell.split(",")
        s = int(s)
        r = run_cell(cfg, work, s, t, a.quick, [int(x) for x in a.checkpoints.split(",") if x.strip()])
        print(json.dumps(r, indent=1))
        return 0
    prep = prepare(cfg, work)
    print("data:", json.dumps(prep), flush=True)
    res = run_matrix(a, cfg)
    summ = summarize(res)
    text = render(a, cfg, prep, res, summ)
    print(text)
    if a.write_results:
        write_results(text, recipe_hash(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
