"""The results layout: every artifact path, the target lists, the job lists and the inverse parser.

One owner for "where does X live". The rules (rules/*.smk) build their inputs, outputs, logs and
benchmarks with these functions (a wildcard is passed as its own pattern, e.g.
``layout.model_dir("{model}")``); the cost planner (:mod:`ssd_math.planner`) prices the jobs
:meth:`Layout.sample_jobs`, :meth:`Layout.sft_job` and :meth:`Layout.generation_jobs` list, with
the same benchmark paths the rules declare; the tables (:mod:`ssd_math.tables`) read what an eval
file is from its path with :func:`describe_eval_path`, the inverse of :meth:`Layout.gen_file`.

    <results>/data/{name}.jsonl                          train_prompts, eval_main, eval_hard, pretrain
    <results>/models/base | init | {arm}/{ckpt}          ckpt: step<N> (sft.checkpoint_steps) or final
    <results>/samples/{arm}/shard{i}.jsonl               sampled training data (temp), merged:
    <results>/samples/{arm}/samples|kept|dropped.jsonl, filter_summary.json
    <results>/train/{arm}/log.jsonl, resume/             per-step training log, resume state
    <results>/train/{arm}/noise_run/log.jsonl            noise runs (log only)
    <results>/{generations|eval}/{model}/{evalset}/T{t}.jsonl              T grid
    <results>/{generations|eval}/{model}/{evalset}/T{t}-k{k}.jsonl         pass@k runs
    <results>/{generations|eval}/{arm}/{evalset}/checkpoints/{ckpt}.jsonl  checkpoints at t_eval
    <results>/{generations|eval}/base/{evalset}/sweep/{name}.jsonl         baseline sweeps
    <results>/probe/positions.jsonl, probe/dists/{model}.jsonl             locks-and-forks probe
    <results>/tables/{name}.csv, figures/{name}.png, report/report.html
    <results>/logs/{stage}/...log, benchmarks/{stage}/...tsv               one of each per job
"""

from __future__ import annotations

import os
from pathlib import Path

from . import derive

BASE = derive.BASE
FAMILIES = ("grid", "passk", "checkpoints", "sweep")  # the eval generation rules: generate_<family>


def hard_set(cfg: dict) -> str:
    """The eval set of pass@k and the checkpoint evals: eval_hard when listed, else the first set."""
    sets = cfg["eval"]["sets"]
    return "eval_hard" if "eval_hard" in sets else sets[0]


def subset_sets(cfg: dict) -> dict[str, str]:
    """``{eval set: the set it is a subset of}``. eval_hard is eval_main's rows at the hard levels
    (same ids: ssd_math.synth.make_splits, ssd_math.prepare_real_data), so where both are evaluated the
    T grid and the sweeps are generated once, on eval_main, and eval_hard's files of those
    conditions are eval_main's rows of its prompts (rules subset_grid / subset_sweep): the same
    model, decoding and seeds, not a second sample. pass@k and the checkpoints run on eval_hard only."""
    sets = cfg["eval"]["sets"]
    return {"eval_hard": "eval_main"} if "eval_hard" in sets and "eval_main" in sets else {}


def device(cfg: dict) -> str:
    """The torch device of hf sampling/eval/probe jobs: runtime.device (a profile), else
    sampler.device (a validated config: its schema default filled in)."""
    return str(cfg["runtime"].get("device", cfg["sampler"]["device"]))


class Layout:
    """Paths under ``results`` (default: the config's ``results``) and the job lists of a
    validated config (:func:`ssd_math.config.validate`: schema defaults filled in)."""

    def __init__(self, cfg: dict, results: str | None = None, *, reuse: bool = True):
        self.cfg = cfg
        self.results = R = str(results or cfg["results"])
        self.R = R
        self.arms = list(cfg["arms"])  # built by default
        self.all_arms = derive.all_arms(cfg)  # default + extra arms (extra ones only when targeted)
        self.models = derive.final_models(cfg)  # base + every default arm's final model
        self.eval_sets = list(cfg["eval"]["sets"])
        self.tgrid = [derive.fmt_t(t) for t in cfg["eval"]["t_grid"]]
        self.ckpts = derive.checkpoint_names(cfg)  # step<N> ... final
        self.n_shards = int(cfg["train_sampling"]["n_shards"])
        sweeps = derive.sweep_samplings(cfg)
        self.sweeps = list(sweeps)  # names of the baseline sweep conditions
        self.hard_set = hard_set(cfg)
        self.subsets = subset_sets(cfg)  # {eval_hard: eval_main}: grid and sweeps taken from eval_main
        self.generated_sets = [s for s in self.eval_sets if s not in self.subsets]
        self.noise_runs = list(cfg["noise_runs"])  # extra arms trained for their log only
        # --- no generation twice (same model, prompts, decoding, seeds): reuse the file ---
        # An arm's final model at its T_eval on the hard set is its T-grid file there: the
        # checkpoint evals take it from the grid (rule reuse_grid_final) when every arm's T_eval
        # is on the grid (one rule pattern for every arm), else they generate it.
        # ``reuse=False``: every job generates its own file (the planner's "before" column)
        self.reuse = reuse
        self.final_from_grid = reuse and all(derive.fmt_t(a["t_eval"]) in self.tgrid for a in self.all_arms.values())
        self.generated_ckpts = [c for c in self.ckpts if not (c == "final" and self.final_from_grid)]
        # Sweep conditions equal to a T-grid condition of the base (e.g. preset-precise = T0.6)
        # are that grid file (rule reuse_grid_sweep), not generated again.
        self.sweep_from_grid = {
            name: f"T{derive.fmt_t(s.temperature)}"
            for name, s in sweeps.items()
            if reuse and derive.fmt_t(s.temperature) in self.tgrid and s == derive.eval_sampling(cfg, s.temperature)
        }
        self.generated_sweeps = [n for n in self.sweeps if n not in self.sweep_from_grid]

    # --- logs and benchmarks (one of each per job) ----------------------------------------------

    def log(self, *parts: str) -> str:
        return os.path.join(self.R, "logs", *parts) + ".log"

    def bench(self, *parts: str) -> str:
        return os.path.join(self.benchmarks_dir(), *parts) + ".tsv"

    def benchmarks_dir(self) -> str:
        return f"{self.R}/benchmarks"

    # --- data, models, samples, training --------------------------------------------------------

    def data(self, name: str, ext: str = "jsonl") -> str:
        return f"{self.R}/data/{name}.{ext}"

    def model_dir(self, model: str) -> str:
        """Folder of a model by name: 'base', 'init', an arm (its final model), or '<arm>/<ckpt>'."""
        if model in (BASE, "init"):
            return f"{self.R}/models/{model}"
        if "/" in model:
            arm, ckpt = model.split("/")
            return self.checkpoint_dir(arm, ckpt)
        return self.checkpoint_dir(model, "final")

    def checkpoint_dir(self, arm: str, ckpt: str) -> str:
        return f"{self.R}/models/{arm}/{ckpt}"

    def checkpoint_dirs(self, arm: str) -> list[str]:
        return [self.checkpoint_dir(arm, c) for c in self.ckpts]

    def samples(self, arm: str, name: str = "samples", ext: str = "jsonl") -> str:
        """samples/<arm>/<name>.<ext>: shard<i>, samples, kept, dropped (jsonl), filter_summary (json)."""
        return f"{self.R}/samples/{arm}/{name}.{ext}"

    def train_dir(self, arm: str) -> str:
        return f"{self.R}/train/{arm}"

    def train_log(self, arm: str) -> str:
        return f"{self.train_dir(arm)}/log.jsonl"

    def resume_dir(self, arm: str) -> str:
        return f"{self.train_dir(arm)}/resume"

    def noise_run_log(self, arm: str) -> str:
        return f"{self.train_dir(arm)}/noise_run/log.jsonl"

    def noise_run_scratch(self, arm: str) -> str:
        return f"{self.train_dir(arm)}/noise_run/scratch-model"

    def real_cache_dir(self) -> str:
        return self.cfg["data"]["real"].get("cache_dir") or f"{self.R}/cache/datasets"

    # --- generations and graded evals ------------------------------------------------------------

    def gen_file(self, stage: str, model: str, evalset: str, name: str) -> str:
        """<stage>/<model>/<evalset>/<name>.jsonl; ``name``: T<t>, T<t>-k<k>, checkpoints/<ckpt>,
        sweep/<condition>. The inverse is :func:`describe_eval_path`."""
        return f"{self.R}/{stage}/{model}/{evalset}/{name}.jsonl"

    def grid_files(self, stage: str, model: str, evalset: str) -> list[str]:
        return [self.gen_file(stage, model, evalset, f"T{t}") for t in self.tgrid]

    def passk_file(self, stage: str, model: str, evalset: str, t: str, k) -> str:
        return self.gen_file(stage, model, evalset, f"T{t}-k{k}")

    def checkpoint_files(self, stage: str, arm: str, evalset: str) -> list[str]:
        return [self.gen_file(stage, arm, evalset, f"checkpoints/{c}") for c in self.ckpts]

    def checkpoint_generated_files(self, stage: str, arm: str, evalset: str) -> list[str]:
        """The checkpoint files rule generate_checkpoints writes (``final`` comes from the grid
        when :attr:`final_from_grid`)."""
        return [self.gen_file(stage, arm, evalset, f"checkpoints/{c}") for c in self.generated_ckpts]

    def sweep_files(self, stage: str, evalset: str) -> list[str]:
        return [self.gen_file(stage, BASE, evalset, f"sweep/{name}") for name in self.sweeps]

    def sweep_generated_files(self, stage: str, evalset: str) -> list[str]:
        """The sweep files rule generate_sweep (and subset_sweep) writes: not those equal to a
        grid condition (:attr:`sweep_from_grid`)."""
        return [self.gen_file(stage, BASE, evalset, f"sweep/{name}") for name in self.generated_sweeps]

    def reused_files(self) -> list[dict]:
        """The graded eval files that are copies of a T-grid file (same model, prompts, decoding
        and seeds): ``{rule, source, target}`` for rules reuse_grid_final / reuse_grid_sweep."""
        out = []
        if self.final_from_grid:
            for arm in self.arms:
                te = derive.fmt_t(self.all_arms[arm]["t_eval"])
                out.append(
                    {
                        "rule": "reuse_grid_final",
                        "source": self.gen_file("eval", arm, self.hard_set, f"T{te}"),
                        "target": self.gen_file("eval", arm, self.hard_set, "checkpoints/final"),
                    }
                )
        for es in self.eval_sets:
            for name, cond in self.sweep_from_grid.items():
                out.append(
                    {
                        "rule": "reuse_grid_sweep",
                        "source": self.gen_file("eval", BASE, es, cond),
                        "target": self.gen_file("eval", BASE, es, f"sweep/{name}"),
                    }
                )
        return out

    def reused_source(self, target: str) -> str:
        """The grid file a reused eval file is copied from (rules reuse_grid_*)."""
        for r in self.reused_files_any():
            if os.path.normpath(r["target"]) == os.path.normpath(target):
                return r["source"]
        raise ValueError(f"{target}: not a reused eval file")

    def reused_files_any(self) -> list[dict]:
        """:meth:`reused_files` for every arm, extra arms included (built when targeted)."""
        out = self.reused_files()
        if self.final_from_grid:
            for arm in self.all_arms:
                if arm not in self.arms:
                    te = derive.fmt_t(self.all_arms[arm]["t_eval"])
                    out.append(
                        {
                            "rule": "reuse_grid_final",
                            "source": self.gen_file("eval", arm, self.hard_set, f"T{te}"),
                            "target": self.gen_file("eval", arm, self.hard_set, "checkpoints/final"),
                        }
                    )
        return out

    def graded(self, generation_file: str) -> str:
        """The graded eval file of a generations/ file: the same path under eval/."""
        return generation_file.replace(f"{self.R}/generations/", f"{self.R}/eval/", 1)

    def probe_file(self, name: str) -> str:
        return f"{self.R}/probe/{name}.jsonl"

    def table(self, name: str, ext: str = "csv") -> str:
        return f"{self.R}/tables/{name}.{ext}"

    def figure(self, name: str) -> str:
        return f"{self.R}/figures/{name}.png"

    @staticmethod
    def results_of(path: str) -> str:
        """The results folder of an artifact ``<results>/<kind>/<file>`` (a table, the plan, the
        report): what a rule that reads the whole folder passes its script, taken from its own
        output, so it stays right where Snakemake prefixes paths (remote storage)."""
        return os.path.dirname(os.path.dirname(path))

    def plan_file(self, ext: str) -> str:
        return f"{self.R}/plan/cost_plan.{ext}"

    def report(self) -> str:
        return f"{self.R}/report/report.html"

    # --- target lists (what the default DAG builds) -----------------------------------------------

    def grid_eval_files(self) -> list[str]:
        return [f for m in self.models for s in self.eval_sets for f in self.grid_files("eval", m, s)]

    def passk_eval_files(self) -> list[str]:
        k = self.cfg["eval"]["passk"]["k"]
        return [
            self.passk_file("eval", run["model"], self.hard_set, derive.fmt_t(run["temperature"]), k)
            for run in self.cfg["eval"]["passk"]["runs"]
        ]

    def checkpoint_eval_files(self) -> list[str]:
        return [f for arm in self.arms for f in self.checkpoint_files("eval", arm, self.hard_set)]

    def sweep_eval_files(self) -> list[str]:
        return [f for s in self.eval_sets for f in self.sweep_files("eval", s)]

    def all_eval_files(self) -> list[str]:
        return self.grid_eval_files() + self.passk_eval_files() + self.checkpoint_eval_files() + self.sweep_eval_files()

    def table1_files(self) -> list[str]:
        """Graded files of Table 1's rows on every eval set."""
        rows = self.cfg["report"]["table1"]["rows"]
        return [
            self.gen_file("eval", r["model"], s, f"T{derive.fmt_t(r['temperature'])}")
            for r in rows
            for s in self.eval_sets
        ]

    def train_logs(self) -> list[str]:
        return [self.train_log(arm) for arm in self.arms]

    def noise_trap_logs(self) -> dict[str, str]:
        """{run name: its training log}: every default arm, then every noise run."""
        return {**{a: self.train_log(a) for a in self.arms}, **{a: self.noise_run_log(a) for a in self.noise_runs}}

    def data_arm(self, arm: str) -> str:
        """The arm whose kept samples ``arm`` trains on: the first default arm with the same
        training-data sampling (T, top-k, top-p, cap, samples per prompt) and length filter, else
        itself. A training-only arm (one that differs from ``ssd`` only in ``sft:`` knobs: the LR,
        batch and schedule sweeps) trains on ``ssd``'s kept samples -- the same data, no sampling
        job of its own -- so a sweep varies the knob alone."""
        if not self.reuse:
            return arm
        same = [
            a
            for a in self.arms
            if derive.arm_sampling(self.cfg, a) == derive.arm_sampling(self.cfg, arm)
            and self.all_arms[a]["filter_length_stop"] == self.all_arms[arm]["filter_length_stop"]
        ]
        return same[0] if same else arm

    def noise_run_source_arm(self, arm: str) -> str:
        """The default arm whose kept samples a noise run trains on (:meth:`data_arm`)."""
        return self.data_arm(arm)

    # --- jobs (the rules' units of work; the planner prices the same list) ------------------------

    def sample_key(self, arm: str, shard) -> tuple[str, ...]:
        """log/benchmark name parts of one sampling shard job."""
        return ("samples", arm, f"shard{shard}")

    def sft_key(self, arm: str) -> tuple[str, ...]:
        return ("train", arm)

    def generate_key(self, family: str, model: str, evalset: str, t: str = "", k="") -> tuple[str, ...]:
        """log/benchmark name parts of one eval generation job (rule generate_<family>)."""
        return ("generate", model, evalset, f"T{t}-k{k}" if family == "passk" else family)

    def generations(self, family: str, model: str, t: str = "", k="") -> list[dict]:
        """The conditions one generate_<family> job serves, in the order of its outputs:
        ``[{model, model_dir, condition}]`` (``model`` is the arm for checkpoints; a condition's
        decoding: :func:`ssd_math.derive.condition_sampling`)."""
        if family == "grid":
            return [{"model": model, "model_dir": self.model_dir(model), "condition": f"T{tt}"} for tt in self.tgrid]
        if family == "passk":
            return [{"model": model, "model_dir": self.model_dir(model), "condition": f"T{t}-k{k}"}]
        if family == "checkpoints":
            te = derive.fmt_t(self.all_arms[model]["t_eval"])
            return [
                {"model": f"{model}/{c}", "model_dir": self.checkpoint_dir(model, c), "condition": f"T{te}"}
                for c in self.generated_ckpts
            ]
        if family == "sweep":
            return [
                {"model": BASE, "model_dir": self.model_dir(BASE), "condition": name} for name in self.generated_sweeps
            ]
        raise ValueError(f"unknown generation family {family!r} (one of {FAMILIES})")

    def train_generation(self, arm: str) -> dict:
        """What rule sample_train_shard generates: the frozen base under the arm's training
        condition ``train-<arm>``, as :meth:`generations` lists it."""
        return {"model": BASE, "model_dir": self.model_dir(BASE), "condition": f"train-{arm}"}

    def sample_jobs(self, arm: str) -> list[dict]:
        """``[{arm, shard, benchmark}]``: the sampling shards of one arm."""
        return [
            {"arm": arm, "shard": i, "benchmark": self.bench(*self.sample_key(arm, i))} for i in range(self.n_shards)
        ]

    def sft_job(self, arm: str) -> dict:
        return {"arm": arm, "benchmark": self.bench(*self.sft_key(arm))}

    def generation_jobs(self) -> list[dict]:
        """Every eval generation job of the default DAG, in rule order (grid, passk, checkpoints,
        sweep): ``{rule, family, model, evalset, t, k, conditions, benchmark}``. The grid and
        sweeps of a subset set (:func:`subset_sets`) are not generated: rules subset_*."""
        jobs: list[dict] = []

        def add(family, model, evalset, t="", k=""):
            jobs.append(
                {
                    "rule": f"generate_{family}",
                    "family": family,
                    "model": model,
                    "evalset": evalset,
                    "t": t,
                    "k": k,
                    "conditions": self.generations(family, model, t, k),
                    "benchmark": self.bench(*self.generate_key(family, model, evalset, t, k)),
                }
            )

        for model in self.models:
            for es in self.generated_sets:
                add("grid", model, es)
        kp = self.cfg["eval"]["passk"]["k"]
        for run in self.cfg["eval"]["passk"]["runs"]:
            add("passk", run["model"], self.hard_set, derive.fmt_t(run["temperature"]), kp)
        if self.generated_ckpts:
            for arm in self.arms:
                add("checkpoints", arm, self.hard_set)
        if self.generated_sweeps:
            for es in self.generated_sets:
                add("sweep", BASE, es)
        return jobs

    def subset_key(self, family: str, model: str, evalset: str) -> tuple[str, ...]:
        """log/benchmark name parts of one subset job (rule subset_<family>: grid or sweep)."""
        return ("subset", model, evalset, family)

    def subset_jobs(self) -> list[dict]:
        """The jobs that cut a subset set's grid and sweep files from its parent's (rules
        subset_grid, subset_sweep): ``{rule, family, model, evalset, parent, files, benchmark}``;
        ``files``: the graded eval files they lead to (with :meth:`generation_jobs`, every eval file)."""
        jobs = []
        for es, parent in self.subsets.items():
            for model in self.models:
                jobs.append(
                    {
                        "rule": "subset_grid",
                        "family": "grid",
                        "model": model,
                        "evalset": es,
                        "parent": parent,
                        "files": self.grid_files("eval", model, es),
                        "benchmark": self.bench(*self.subset_key("grid", model, es)),
                    }
                )
            if self.generated_sweeps:
                jobs.append(
                    {
                        "rule": "subset_sweep",
                        "family": "sweep",
                        "model": BASE,
                        "evalset": es,
                        "parent": parent,
                        "files": self.sweep_generated_files("eval", es),
                        "benchmark": self.bench(*self.subset_key("sweep", BASE, es)),
                    }
                )
        return jobs


def describe_eval_path(path: str | Path, results: str | Path) -> dict:
    """What an eval file is, from where it sits (the inverse of :meth:`Layout.gen_file`):
    ``{model, arm, evalset, condition, kind}``, kind grid / passk / checkpoint / sweep."""
    rel = Path(path).resolve().relative_to((Path(results) / "eval").resolve())
    parts = rel.with_suffix("").parts
    if len(parts) == 4 and parts[2] == "checkpoints":
        return {
            "model": f"{parts[0]}/{parts[3]}",
            "arm": parts[0],
            "evalset": parts[1],
            "condition": parts[3],
            "kind": "checkpoint",
        }
    if len(parts) == 4 and parts[2] == "sweep":
        return {"model": parts[0], "arm": None, "evalset": parts[1], "condition": parts[3], "kind": "sweep"}
    if len(parts) == 3:
        kind = "passk" if "-k" in parts[2] else "grid"
        return {"model": parts[0], "arm": None, "evalset": parts[1], "condition": parts[2], "kind": kind}
    raise ValueError(f"{path}: not an eval file path under {results}/eval")
