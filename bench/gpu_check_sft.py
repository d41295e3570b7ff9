"""SFT GPU check: ``ssd_math.train``'s own optimizer step on a random-initialised model of
Qwen3.5-4B's exact text shape at the recipe's longest sequence (33,792 tokens) first, then 16,384,
then the longest step without instrumentation, then (time allowing) the longest length that fits by
bisection. Per phase the peak allocated and reserved memory against ``memory_model.sft_memory``'s
prediction for the same setup, tokens/s and MFU over a steady step, which function each Gated
DeltaNet layer called, the disk it leaves -> one JSON (``OUT_DIR/gpu_check.json``, rewritten after
every run, so a kill keeps what was measured).

    bash bench/gpu_check.sh OUT_DIR              # an offline GPU machine: one command, <= 9 minutes
    bash bench/gpu_check.sh OUT_DIR --dry-run    # any machine: the same code on the CPU, tiny shapes

Each run is one process (:func:`run_one`): ``ssd_math.train.train`` with init_random on the shape,
bf16 mixed precision (``ACCELERATE_MIXED_PRECISION=bf16``, as envs/accelerate/gpu1.yaml), gradient
checkpointing with ``checkpoint_sublayers`` (config/real.yaml), ``loss_chunk_tokens`` 1024,
``global_batch`` 2 of ``micro_batch`` 1 (the second micro-batch runs with whole gradients, as in
the real step), 2 optimizer steps (the second has the AdamW state: the recipe's peak; it is the
steady step timed). Phases are metered by wrapping the training code's own functions (forward =
``token_sum_loss``, backward = ``Accelerator.backward``, optimizer = ``AdamW.step``, tracker =
``WeightChangeTracker.before_step/after_step``): the peak of each is
``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` after a reset at its start (on the
CPU: the live tensor bytes of bench/bench_memory.py; nothing reserved). The final model is not
saved (a 4B model is 16.8 GB in fp32): the step is what is measured. An out-of-memory error is a
result (the phase it hit), not a crash; a run that would not end before ``--deadline-s`` is not
started, and one still running then is killed and recorded with what it had measured.

Kernels (:class:`KernelRecorder`): transformers 5.19's Qwen3.5 picks each Gated DeltaNet function
once, when its modeling module is imported (``use_kernel_func_from_hub_with_fallback``:
flash-linear-attention's ``chunk_gated_delta_rule`` where ``fla`` imports, else its own PyTorch
``torch_chunk_gated_delta_rule``; causal-conv1d's ``causal_conv1d_fn`` likewise) and keeps the
choice in the wrapper's closure. The recorder swaps that closure cell for a recording pass-through,
so each layer's record names the function object it actually called.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

# bf16 dense peak FLOP/s by GPU name (NVIDIA datasheets, no sparsity), the first match wins: the
# MFU denominator
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("B200", 2250e12),
]
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "vocab_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "tie_word_embeddings": True,
    "full_attention_interval": 4,
}
REAL_LENGTHS = (33792, 16384)  # config/real.yaml sft.max_len first, then half of it
DRY_LENGTHS = (128, 64)
LOSS_CHUNK = 1024
JSON_NAME = "gpu_check.json"
# the module-level functions of transformers' Qwen3.5 modeling that a Gated DeltaNet layer calls
# for a whole sequence (training), each chosen once at import between a package's kernel and the
# PyTorch reference
GDN_FUNCS = ("torch_chunk_gated_delta_rule", "causal_conv1d_fn")


# ------------------------------------------------------------------------------------------------
# which kernels ran
# ------------------------------------------------------------------------------------------------


def function_name(fn) -> str:
    """``module.qualname`` of a function object (what a record names)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def kernel_kind(name: str) -> str:
    """ "fla" (flash-linear-attention), "causal_conv1d", "reference" (transformers' PyTorch code)
    or "other", from a function's ``module.qualname``."""
    top = name.split(".", 1)[0]
    if top == "fla":
        return "fla"
    if top == "causal_conv1d":
        return "causal_conv1d"
    if top == "transformers":
        return "reference"
    return "other"


class KernelRecorder:
    """Records, per Gated DeltaNet layer (``layer_idx``), the function objects it calls for each
    of :data:`GDN_FUNCS`. Install before the model is built (the layer's ``forward`` is wrapped on
    the class); :meth:`summary` after it ran."""

    def __init__(self):
        self.calls: dict[int, dict[str, dict[str, int]]] = {}
        self.unresolved: list[str] = []
        self.forced: dict[str, dict] = {}
        self._undo: list = []
        self._layer = None

    def install(self, modeling=None, force_reference: bool = False) -> KernelRecorder:
        """``force_reference``: call transformers' PyTorch functions whatever was picked (the CPU:
        where triton imports, transformers picks flash-linear-attention there too, and its Triton
        kernels need a GPU)."""
        if modeling is None:
            from transformers.models.qwen3_5 import modeling_qwen3_5 as modeling
        for fname in GDN_FUNCS:
            wrapped = getattr(modeling, fname)
            cell = self._implementation_cell(wrapped)
            if cell is None:  # not transformers' fallback wrapper: record the module attribute
                self.unresolved.append(fname)
                setattr(modeling, fname, self._recording(fname, wrapped))
                self._undo.append(lambda m=modeling, f=fname, v=wrapped: setattr(m, f, v))
                continue
            picked = cell.cell_contents
            impl = picked
            if force_reference and getattr(wrapped, "__wrapped__", None) is not None:
                impl = wrapped.__wrapped__  # functools.wraps(torch_function)
                if impl is not picked:
                    self.forced[fname] = {"picked": function_name(picked), "called": function_name(impl)}
            cell.cell_contents = self._recording(fname, impl)
            self._undo.append(lambda c=cell, v=picked: setattr(c, "cell_contents", v))
        cls = modeling.Qwen3_5GatedDeltaNet
        orig = cls.forward
        rec = self

        def forward(self, *a, **kw):
            prev, rec._layer = rec._layer, self.layer_idx
            try:
                return orig(self, *a, **kw)
            finally:
                rec._layer = prev

        cls.forward = forward
        self._undo.append(lambda: setattr(cls, "forward", orig))
        return self

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    @staticmethod
    def _implementation_cell(wrapped):
        """The closure cell holding the function transformers' wrapper calls, or None."""
        fn = wrapped
        for _ in range(4):  # through decorators that keep __wrapped__
            code = getattr(fn, "__code__", None)
            if code is not None and "implementation" in code.co_freevars and fn.__closure__:
                return fn.__closure__[code.co_freevars.index("implementation")]
            fn = getattr(fn, "__wrapped__", None)
            if fn is None:
                break
        return None

    def _recording(self, fname: str, impl):
        name = function_name(impl)
        rec = self

        def call(*a, **kw):
            per = rec.calls.setdefault(-1 if rec._layer is None else rec._layer, {})
            per.setdefault(fname, {})
            per[fname][name] = per[fname].get(name, 0) + 1
            return impl(*a, **kw)

        call.__signature__ = _signature(impl)
        return call

    def summary(self) -> dict:
        """{"layers": {idx: {func: called function}}, "gated_delta_rule": "fla" | "reference" |
        "mixed" | "none", "causal_conv1d": likewise, "functions": {func: [names]}}."""
        layers = {
            str(i): {f: sorted(names) if len(names) > 1 else next(iter(names)) for f, names in per.items()}
            for i, per in sorted(self.calls.items())
        }

        def verdict(fname):
            kinds = {kernel_kind(n) for per in self.calls.values() for n in per.get(fname, {})}
            return "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"

        return {
            "layers": layers,
            "gated_delta_rule": verdict("torch_chunk_gated_delta_rule"),
            "causal_conv1d": verdict("causal_conv1d_fn"),
            "functions": {f: sorted({n for per in self.calls.values() for n in per.get(f, {})}) for f in GDN_FUNCS},
            "unresolved": self.unresolved,
            "forced_reference": self.forced,
        }


def _signature(fn):
    import inspect

    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# memory per phase
# ------------------------------------------------------------------------------------------------


class Meter:
    """Peak memory since :meth:`reset`: CUDA's allocator counters, or live tensor bytes on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        if not cuda:
            from bench_memory import live_bytes_mode

            self.mode = live_bytes_mode()
            self.mode.__enter__()

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.mode.peak = self.mode.cur

    def peak(self) -> tuple[int, int | None]:
        """(peak allocated bytes, peak reserved bytes or None on the CPU)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())
        return int(self.mode.peak), None


def meter_phases(meter: Meter, phases: dict, state: dict, on_phase=lambda: None) -> None:
    """Wrap the training code's functions: each call's peak memory and time go to ``phases``."""
    import accelerate
    import torch

    from ssd_math import noise
    from ssd_math import train as T

    def wrap(owner, attr, name):
        orig = getattr(owner, attr)

        def run(*a, **kw):
            state["phase"] = name
            meter.reset()
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:  # also when it runs out of memory: the peak it reached is recorded
                alloc, reserved = meter.peak()
                ph = phases.setdefault(
                    name, {"peak_allocated_bytes": 0, "peak_reserved_bytes": None, "seconds": 0.0, "calls": 0}
                )
                ph["peak_allocated_bytes"] = max(ph["peak_allocated_bytes"], alloc)
                if reserved is not None:
                    ph["peak_reserved_bytes"] = max(ph["peak_reserved_bytes"] or 0, reserved)
                ph["seconds"] += time.perf_counter() - t0
                ph["calls"] += 1
                on_phase()

        setattr(owner, attr, run)

    wrap(T, "token_sum_loss", "forward")  # train_model's, wrapped where the step calls it
    wrap(accelerate.Accelerator, "backward", "backward")
    wrap(torch.optim.AdamW, "step", "optimizer")
    wrap(noise.WeightChangeTracker, "before_step", "tracker")
    wrap(noise.WeightChangeTracker, "after_step", "tracker")


def _gb(x) -> float | None:
    return None if x is None else round(x / 1e9, 6)


def _finish_phases(phases: dict) -> dict:
    return {
        n: {
            "peak_allocated_gb": _gb(p["peak_allocated_bytes"]),
            "peak_reserved_gb": _gb(p["peak_reserved_bytes"]),
            "seconds": round(p["seconds"], 3),
            "calls": p["calls"],
        }
        for n, p in phases.items()
    }


# ------------------------------------------------------------------------------------------------
# one run (a child process)
# ------------------------------------------------------------------------------------------------


def run_one(
    shape: dict, tokens: int, instrument: bool, out_json: Path, steps: int, workdir: Path | None = None
) -> dict:
    """In this process: train ``steps`` optimizer steps in ``workdir`` (a fresh temporary folder
    when None); write the run's record to ``out_json`` after every metered phase and at the end."""
    import torch

    from ssd_math import train as T
    from ssd_math.io import read_jsonl
    from ssd_math.tokenizer import build_tokenizer

    cuda = torch.cuda.is_available()
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gpu_check_run_"))
    tmp.mkdir(parents=True, exist_ok=True)
    init = tmp / "init"
    from ssd_math import memory_model

    memory_model.text_config(shape).save_pretrained(init)
    build_tokenizer(["Q: 0123456789 A:"], init)
    rows = [{"prompt": "Q: ", "completion": "7" * tokens, "finish_reason": "length"}] * (2 * steps)
    spec = {
        "init_dir": str(init),
        "init_random": True,
        "data": rows,
        "out_dir": str(tmp / "out"),
        "log": str(tmp / "log.jsonl"),
        "max_len": tokens,
        "global_batch": 2,
        "micro_batch": 1,
        "max_steps": steps,
        "warmup_steps": 1,
        "gradient_checkpointing": True,
        "checkpoint_sublayers": True,
        "loss_chunk_tokens": LOSS_CHUNK,
        "instrument": {"enabled": instrument},
        "progress": False,
    }
    rec: dict = {"tokens": tokens, "instrument": instrument, "steps_asked": steps, "phases": {}, "state": "running"}
    raw_phases: dict = {}

    def write():
        rec["phases"] = _finish_phases(raw_phases)
        tmp_json = out_json.with_name(out_json.name + ".tmp")
        tmp_json.write_text(json.dumps(rec))
        os.replace(tmp_json, out_json)

    meter = Meter(cuda)
    if cuda:
        free, total = torch.cuda.mem_get_info()
        rec["device"] = {
            "name": torch.cuda.get_device_name(0),
            "total_bytes": int(total),
            "free_bytes_at_start": int(free),
        }
    state = {"phase": "load"}
    meter_phases(meter, raw_phases, state, on_phase=write)
    kernels = KernelRecorder().install(force_reference=not cuda)

    def skip_save(model, tok, folder, **kw):
        rec["final_save"] = "skipped (the step is what is measured; no 16.8 GB fp32 model on disk)"

    T.save_model = skip_save  # train_state's, replaced where train() calls it
    write()
    t0 = time.perf_counter()
    try:
        T.train(spec)
        rec["oom"] = None
    except torch.OutOfMemoryError as e:  # a result: where it ran out
        rec["oom"] = {"phase": state["phase"], "message": str(e).splitlines()[0][:300]}
    except Exception as e:  # recorded with the phase it hit, then re-raised: a crash
        rec["error"] = {
            "phase": state["phase"],
            "message": f"{type(e).__name__}: {e}"[:500],
            "traceback": traceback.format_exc()[-1500:],
        }
        rec["state"] = "crashed"
        rec["kernels"] = kernels.summary()
        write()
        raise
    finally:
        kernels.uninstall()
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    logf = next((p for p in (tmp / "log.jsonl", tmp / "log.jsonl.partial") if p.exists()), None)
    log = read_jsonl(logf) if logf else []
    rec["steps_done"] = len(log)
    if log:
        steady = log[-1]  # the last step: kernels compiled and autotuned, AdamW state in place
        rec["steady_step"] = steady["step"]
        rec["tokens_per_s"] = steady["tokens_per_s"]
        rec["step_s"] = steady["step_s"]
        rec["step_tokens"] = steady["tokens"] - (log[-2]["tokens"] if len(log) > 1 else 0)
        rec["first_step_s"] = log[0]["step_s"]
    if cuda:
        stats = torch.cuda.memory_stats()
        rec["cuda_alloc_retries"] = int(stats.get("num_alloc_retries", 0))
        rec["cuda_ooms"] = int(stats.get("num_ooms", 0))
    rec["kernels"] = kernels.summary()
    rec["state"] = "done"
    write()
    return rec


# ------------------------------------------------------------------------------------------------
# the check (the parent process)
# ------------------------------------------------------------------------------------------------


def environment() -> dict:
    from importlib import metadata

    import torch
    import transformers
    from transformers.utils.import_utils import is_causal_conv1d_available, is_flash_linear_attention_available

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    # no CUDA context in this process (it would hold GPU memory the runs then lack): the name and
    # size from nvidia-smi here, the runs report what torch sees (run_one's "device")
    gpu, mem = None, None
    if torch.cuda.is_available() and shutil.which("nvidia-smi"):
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if q:
            name, _, mib = q.rpartition(",")
            gpu, mem = name.strip(), round(float(mib) * 2**20 / 1e9, 1)
    return {
        "gpu": gpu,
        "gpu_memory_gb": mem,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": version("accelerate"),
        "flash_linear_attention": version("flash-linear-attention"),
        "fla_core": version("fla-core"),
        "triton": version("triton"),
        "causal_conv1d": version("causal-conv1d"),
        "flash_linear_attention_available": bool(is_flash_linear_attention_available()),
        "causal_conv1d_available": bool(is_causal_conv1d_available()),
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }


def flops_per_token(shape: dict, params: int, tokens: int) -> float:
    """Model FLOPs per trained token (the MFU convention: recompute not counted): 6 x parameters,
    plus causal attention of the full-attention layers, 6 x tokens x heads x head_dim each."""
    n_full = shape["num_hidden_layers"] // shape.get("full_attention_interval", 4)
    return 6.0 * params + 6.0 * n_full * tokens * shape["num_attention_heads"] * shape["head_dim"]


def peak_flops(gpu: str | None) -> float | None:
    return next((v for k, v in PEAK_BF16 if gpu and k in gpu), None)


def phase_predictions(pred: dict) -> dict:
    """The plan's bytes live in each phase, from ``memory_model.sft_memory``'s terms: backward = its
    peak (the plan puts the peak in the last layer's backward); forward = the fp32 state (weights,
    gradients, AdamW), every checkpointed layer input, the final hidden state and one loss chunk;
    optimizer = the fp32 state; tracker = the fp32 state plus its host copy where host memory is
    the device's (the CPU)."""
    t = {
        k: pred["terms"].get(k, 0.0)
        for k in (
            "weights_fp32",
            "grads_fp32",
            "adamw_fp32",
            "checkpointed_inputs",
            "hidden_out_and_grad",
            "loss_chunk",
            "tracker_host_copy",
        )
    }
    state = t["weights_fp32"] + t["grads_fp32"] + t["adamw_fp32"]
    return {
        "forward": state + t["checkpointed_inputs"] + t["hidden_out_and_grad"] + t["loss_chunk"],
        "backward": pred["peak"],
        "optimizer": state,
        "tracker": state + t["tracker_host_copy"],
    }


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class Terminated(Exception):
    """SIGTERM (the outer time limit): the run in flight is recorded before the check stops."""


def _terminate(signum, frame):
    raise Terminated(f"signal {signum}")


class Check:
    """The sequence of runs, the JSON after each, the bisection, the deadline."""

    def __init__(self, args):
        from ssd_math import memory_model

        self.args, self.memory_model = args, memory_model
        self.t0 = time.perf_counter()
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.shape = TINY if args.dry_run else memory_model.QWEN35_4B_TEXT
        self.env = environment()
        import torch

        self.cuda = torch.cuda.is_available()
        self.sizes = memory_model.model_sizes(self.shape)
        self.kernels = "fla" if self.env["flash_linear_attention_available"] else "reference"
        # a CPU computation: through transformers' own functions, whatever kernels were picked
        # (the "fla" setting swaps in what fla's kernel saves itself)
        rec = KernelRecorder().install(force_reference=True)
        self.plan_error = None
        try:
            self.layer = memory_model.layer_saved_bytes(self.shape, kernels=self.kernels, sublayers=True)
        except Exception as e:  # noqa: BLE001 - the check measures without a plan rather than not at all
            self.layer, self.plan_error = None, f"{type(e).__name__}: {e}"
        finally:
            rec.uninstall()
        self.result = {
            "check": "bench/gpu_check_sft.py",
            "dry_run": args.dry_run,
            "complete": False,
            **self.env,
            "shape": self.shape,
            "params": self.sizes["params"],
            "setup": {
                "global_batch": 2,
                "micro_batch": 1,
                "steps": args.steps,
                "loss_chunk_tokens": LOSS_CHUNK,
                "gradient_checkpointing": True,
                "checkpoint_sublayers": True,
                "mixed_precision": "bf16",
                "planner_kernels": self.kernels,
            },
            "deadline_s": args.deadline_s,
            "runs": [],
            "disk": {"path": str(self.scratch), "free_gb_start": _gb(disk_free(self.scratch))},
        }
        self.write()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def write(self) -> None:
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        self.result["plan_error"] = self.plan_error
        tmp = self.out / (JSON_NAME + ".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        os.replace(tmp, self.out / JSON_NAME)

    def predict(self, tokens: int, instrument: bool) -> dict:
        """``memory_model.sft_memory`` for this run's setup; {} with the reason in ``plan_error`` when
        the plan cannot be computed (a run's measurements are kept either way)."""
        if self.layer is None:
            return {}
        try:
            pred = self.memory_model.sft_memory(
                self.shape,
                tokens,
                sizes=self.sizes,
                layer=self.layer,
                instrumented=instrument,
                chunk_tokens=LOSS_CHUNK,
                host_is_device=not self.cuda,
                kernels=self.kernels,
                sublayers=True,
            )
            return {"peak": pred["peak"], "terms": pred["terms"], "phases": phase_predictions(pred)}
        except Exception as e:  # noqa: BLE001 - as above
            self.plan_error = f"{type(e).__name__}: {e}"
            return {}

    def estimate_s(self) -> float | None:
        """Seconds the next run is expected to take: the longest run after the first (which
        compiles and autotunes the kernels), else the first."""
        done = [r["wall_total_s"] for r in self.result["runs"] if "wall_total_s" in r]
        return max(done[1:] or done) if done else None

    def run(self, tokens: int, instrument: bool, why: str) -> dict:
        i = len(self.result["runs"])
        base = {"tokens": tokens, "instrument": instrument, "why": why}
        left = self.args.deadline_s - self.elapsed()
        est = self.estimate_s()
        if left <= 0 or (est is not None and est > left):
            rec = {**base, "skipped": f"{left:.0f} s left before the deadline, a run takes ~{est or 0:.0f} s"}
            self.result["runs"].append(rec)
            self.write()
            print(json.dumps(rec), flush=True)
            return rec
        rec_path = self.scratch / f"run{i}.json"
        work = self.scratch / f"run{i}"
        env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16", "PYTHONUNBUFFERED": "1"}
        if not self.cuda:
            env["ACCELERATE_USE_CPU"] = "True"
        cmd = [
            sys.executable,
            __file__,
            str(self.out),
            "--steps",
            str(self.args.steps),
            "--one",
            json.dumps([self.shape, tokens, instrument, str(rec_path), str(work)]),
        ]
        print(f"--- run {i}: {tokens} tokens, instrumentation {'on' if instrument else 'off'} ({why})", flush=True)
        t = time.perf_counter()
        rc, killed, stop = None, None, None
        try:
            rc = subprocess.run(cmd, env=env, timeout=max(1.0, left)).returncode
        except subprocess.TimeoutExpired:  # subprocess.run has killed it
            killed = f"still running at the deadline ({self.args.deadline_s:.0f} s): killed"
        except Terminated as e:  # the same: recorded, then the check stops
            killed, stop = "the check was terminated during this run", e
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else {"phases": {}}
        rec.update(base)
        rec["wall_total_s"] = round(time.perf_counter() - t, 1)
        if killed:
            rec["killed"] = killed
        elif rc:
            rec["crashed"] = rc
        pred = self.predict(tokens, instrument)
        rec["predicted_peak_gb"] = _gb(pred.get("peak"))
        rec["predicted_terms_gb"] = {k: _gb(v) for k, v in pred.get("terms", {}).items()}
        for name, ph in rec.get("phases", {}).items():
            ph["predicted_gb"] = _gb(pred.get("phases", {}).get(name))
            if ph["predicted_gb"]:
                ph["allocated_over_predicted"] = round(ph["peak_allocated_gb"] / ph["predicted_gb"], 3)
        allocs = [p["peak_allocated_gb"] for p in rec.get("phases", {}).values()]
        reserved = [p["peak_reserved_gb"] for p in rec.get("phases", {}).values() if p["peak_reserved_gb"]]
        rec["peak_allocated_gb"] = max(allocs, default=None)
        rec["peak_reserved_gb"] = max(reserved, default=None)
        if rec["peak_allocated_gb"] and rec["predicted_peak_gb"]:
            rec["allocated_over_predicted"] = round(rec["peak_allocated_gb"] / rec["predicted_peak_gb"], 3)
        dev = rec.get("device") or {}
        if dev and not self.env["gpu"]:
            self.result["gpu"] = self.env["gpu"] = dev["name"]
        pf = peak_flops(self.env["gpu"])
        if rec.get("tokens_per_s") and pf:
            rec["mfu"] = round(rec["tokens_per_s"] * flops_per_token(self.shape, self.sizes["params"], tokens) / pf, 4)
        rec["scratch_bytes_before_cleanup"] = tree_bytes(work)
        shutil.rmtree(work, ignore_errors=True)
        rec_path.unlink(missing_ok=True)
        rec["disk_free_gb_after"] = _gb(disk_free(self.scratch))
        rec["fits"] = self.fits(rec)
        self.result["runs"].append(rec)
        self.write()
        if stop is not None:
            raise stop
        print(
            json.dumps(
                {
                    k: rec.get(k)
                    for k in (
                        "tokens",
                        "instrument",
                        "state",
                        "steps_done",
                        "peak_allocated_gb",
                        "peak_reserved_gb",
                        "predicted_peak_gb",
                        "tokens_per_s",
                        "mfu",
                        "oom",
                        "crashed",
                        "killed",
                        "fits",
                    )
                }
                | {"gated_delta_rule": (rec.get("kernels") or {}).get("gated_delta_rule")}
            ),
            flush=True,
        )
        return rec

    def fits(self, rec: dict) -> bool | None:
        """Whether the run's step fit: it finished with no out-of-memory error (and, with
        ``--capacity-gb``, its peak within that); None when it did not finish for another reason."""
        if rec.get("oom"):
            return False
        if rec.get("state") != "done" or rec.get("steps_done", 0) < self.args.steps:
            return None
        cap = self.args.capacity_gb
        peak = rec.get("peak_reserved_gb") or rec.get("peak_allocated_gb")
        return not (cap is not None and peak is not None and peak > cap)

    def bisect(self) -> None:
        """The longest length that fits (instrumented, as the recipe runs), between the longest
        that fitted and the shortest that did not, to ``--bisect-step`` tokens, while time allows.
        The first probe past the fitted lengths is the plan's longest fit on this device."""
        step = self.args.bisect_step
        runs = [r for r in self.result["runs"] if r.get("instrument")]
        ok = [r["tokens"] for r in runs if r.get("fits") is True]
        bad = [r["tokens"] for r in runs if r.get("fits") is False]
        lo, hi = max(ok, default=0), min(bad, default=None)
        if not lo:
            return
        if hi is None:
            cap = (
                self.args.capacity_gb * 1e9
                if self.args.capacity_gb
                else self._device_bytes() - self.memory_model.CUDA_RESERVE
            )
            try:
                planned = self.memory_model.max_fitting_tokens(
                    self.shape,
                    cap,
                    step=step,
                    sizes=self.sizes,
                    layer=self.layer,
                    instrumented=True,
                    chunk_tokens=LOSS_CHUNK,
                    host_is_device=not self.cuda,
                    kernels=self.kernels,
                    sublayers=True,
                )
            except Exception as e:  # noqa: BLE001 - bisect from the measured lengths alone
                self.plan_error, planned = f"{type(e).__name__}: {e}", None
            self.result["planned_longest_fit"] = planned
            guess = max(planned or 0, lo + step)
        while True:
            if hi is not None:
                if hi - lo <= step:
                    break
                guess = (lo + hi) // 2 // step * step
                if guess <= lo:
                    break
            rec = self.run(guess, True, "bisection")
            if rec.get("skipped") or rec.get("fits") is None:
                break
            if rec["fits"]:
                lo = guess
                if hi is None:
                    guess = guess + max(step, guess // 4) // step * step
            else:
                hi = guess
        self.result["longest_fit"] = {"tokens": lo, "first_not_fitting": hi, "resolution": step}
        self.write()

    def _device_bytes(self) -> float:
        """The device's memory as the runs saw it (torch.cuda.mem_get_info's total)."""
        seen = [r["device"]["total_bytes"] for r in self.result["runs"] if r.get("device")]
        return float(seen[0]) if seen else float(self.memory_model.H100_BYTES)

    def main(self) -> int:
        lengths = (
            [int(x) for x in self.args.lengths.split(",")]
            if self.args.lengths
            else list(DRY_LENGTHS if self.args.dry_run else REAL_LENGTHS)
        )
        print(json.dumps(self.env), flush=True)
        signal.signal(signal.SIGTERM, _terminate)
        try:
            self.runs(lengths)
        except Terminated:
            self.result["terminated"] = True
            self.write()
            return 1
        self.finish()
        return 1 if any(r.get("crashed") for r in self.result["runs"]) else 0

    def runs(self, lengths: list[int]) -> None:
        self.run(lengths[0], True, "the recipe's longest step, instrumented")
        for tokens in lengths[1:]:
            self.run(tokens, True, "a shorter step, instrumented")
        if not self.args.no_uninstrumented:
            self.run(lengths[0], False, "the longest step without instrumentation (its cost)")
        if self.args.bisect:
            self.bisect()

    def finish(self) -> None:
        kinds = {(r.get("kernels") or {}).get("gated_delta_rule") for r in self.result["runs"]} - {None}
        self.result["kernel_gated_delta_rule"] = kinds.pop() if len(kinds) == 1 else sorted(kinds) or None
        kinds = {(r.get("kernels") or {}).get("causal_conv1d") for r in self.result["runs"]} - {None}
        self.result["kernel_causal_conv1d"] = kinds.pop() if len(kinds) == 1 else sorted(kinds) or None
        own = self.args.scratch is None
        self.result["disk"]["scratch_bytes_left"] = 0 if own else tree_bytes(self.scratch)
        if own:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.result["disk"]["free_gb_end"] = _gb(disk_free(self.scratch if self.scratch.exists() else self.out))
        self.result["disk"]["model_saved"] = False
        self.result["complete"] = True
        self.write()
        print(f"wrote {self.out / JSON_NAME}", flush=True)


def report(res: dict) -> str:
    """The "SFT GPU check" section of bench/RESULTS.md, from a gpu_check.json."""

    def f(x, nd=1):
        return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)

    def outcome(r):
        if r.get("skipped"):
            return "skipped: " + r["skipped"]
        if r.get("oom"):
            return f"out of memory in {r['oom']['phase']}"
        if r.get("killed"):
            return "killed at the deadline"
        if r.get("crashed"):
            return f"crashed ({(r.get('error') or {}).get('message', 'exit ' + str(r['crashed']))})"
        return "fits" if r.get("fits") else "did not finish"

    disk = res.get("disk", {})
    lines = [
        "## SFT GPU check",
        "",
        f"`bash bench/gpu_check.sh OUT` then `python bench/gpu_check_sft.py --report OUT/gpu_check.json`"
        f"{' (a CPU dry run)' if res.get('dry_run') else ''}: {res.get('gpu') or 'CPU'}"
        f" ({f(res.get('gpu_memory_gb'))} GB), torch {res.get('torch')} (CUDA {res.get('cuda')}),"
        f" transformers {res.get('transformers')}, flash-linear-attention {res.get('flash_linear_attention')},"
        f" causal-conv1d {res.get('causal_conv1d')}. A random-initialised model of shape"
        f" {res.get('shape', {}).get('hidden_size')} x {res.get('shape', {}).get('num_hidden_layers')}"
        f" ({res.get('params', 0) / 1e9:.3f} B parameters); global batch 2 of 1 sequence, 2 optimizer"
        " steps, bf16 autocast, checkpoint_sublayers, loss chunk 1024. Peaks: torch.cuda.max_memory_allocated"
        " / max_memory_reserved per phase (the max over its calls); predicted: memory_model.sft_memory (its"
        " peak for the backward; its terms live in the other phases). tokens/s and MFU: the last step"
        " (6 x parameters + causal attention FLOPs per token over the GPU's dense bf16 peak).",
        "",
        "| tokens | instrumented | forward GB | backward GB | optimizer GB | tracker GB | peak allocated GB"
        " | peak reserved GB | predicted GB | allocated / predicted | tokens/s | MFU | Gated DeltaNet | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("runs", []):
        ph = r.get("phases", {})
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r["tokens"]),
                    "yes" if r.get("instrument") else "no",
                    *(
                        f(ph.get(n, {}).get("peak_allocated_gb"), 2)
                        for n in ("forward", "backward", "optimizer", "tracker")
                    ),
                    f(r.get("peak_allocated_gb"), 2),
                    f(r.get("peak_reserved_gb"), 2),
                    f(r.get("predicted_peak_gb"), 2),
                    f(r.get("allocated_over_predicted"), 3),
                    f(r.get("tokens_per_s"), 0),
                    f(r.get("mfu"), 3),
                    (r.get("kernels") or {}).get("gated_delta_rule") or "-",
                    outcome(r),
                ]
            )
            + " |"
        )
    lf = res.get("longest_fit")
    lines += [
        "",
        f"Gated DeltaNet: {res.get('kernel_gated_delta_rule')}, short convolution:"
        f" {res.get('kernel_causal_conv1d')} (the function objects the layers called)."
        + (
            f" Longest length that fits: {lf['tokens']} tokens ({lf['first_not_fitting']} did not;"
            f" the plan's longest fit {res.get('planned_longest_fit')})."
            if lf
            else ""
        )
        + f" Disk free {f(disk.get('free_gb_start'))} GB before, {f(disk.get('free_gb_end'))} GB after"
        f" (no model saved). {'Complete' if res.get('complete') else 'Incomplete (killed)'},"
        f" {f(res.get('elapsed_s'), 0)} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument(
        "--report",
        metavar="GPU_CHECK_JSON",
        help="write bench/RESULTS.md's section 'SFT GPU check' from this JSON, run nothing",
    )
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, short lengths")
    ap.add_argument(
        "--lengths",
        default=None,
        help=f"tokens per sequence, longest first (default {REAL_LENGTHS}; dry run {DRY_LENGTHS})",
    )
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=480.0,
        help="no run is started that would not end by then; one still running is killed",
    )
    ap.add_argument("--no-uninstrumented", action="store_true", help="skip the run without instrumentation")
    ap.add_argument(
        "--bisect",
        dest="bisect",
        action="store_true",
        default=None,
        help="search the longest length that fits (default: on a GPU, off in a dry run)",
    )
    ap.add_argument("--no-bisect", dest="bisect", action="store_false")
    ap.add_argument("--bisect-step", type=int, default=None, help="tokens (default 1024; dry run 16)")
    ap.add_argument(
        "--capacity-gb",
        type=float,
        default=None,
        help="a step fits only with its peak within this (the device's own limit otherwise)",
    )
    ap.add_argument("--scratch", default=None, help="folder for the runs (default: a new temporary one, removed)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.report:
        from _results import write_section

        write_section("SFT GPU check", report(json.loads(Path(args.report).read_text())))
        return 0
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    if args.one:
        shape, tokens, inst, path, work = json.loads(args.one)
        run_one(shape, tokens, inst, Path(path), args.steps, Path(work))
        return 0
    if args.bisect is None:
        args.bisect = not args.dry_run
    if args.bisect_step is None:
        args.bisect_step = 16 if args.dry_run else 1024
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
