"""What a training run leaves on disk and how it resumes (:mod:`ssd_math.train`'s files): the model
folders, the resume state, and the step log as it grows.

Checkpoints and resume (the resume contract)
    At each step in ``checkpoints`` ({step: folder}) the model is saved (save_pretrained +
    tokenizer into a temporary folder, then renamed; in ``save_dtype``, the served dtype, when
    set: the fp32 master weights are then only in the resume state) and, when ``resume_dir`` is set, the full
    training state too (accelerate's ``save_state``, into a temporary folder then renamed): model
    and optimizer state, scheduler, noise-estimator EMA, RNG states (python, numpy, torch, CUDA;
    per process), and in ``progress.json`` the data position (= the optimizer step; the data
    order is a function of (seed, epoch) only), elapsed time, log length and the state's format
    (a state of another format is refused; the weight-change tracker keeps nothing between
    steps). On start, an
    existing resume state is restored and training continues at the next step; the log is
    truncated to that step so no row is duplicated (the log grows in ``<log>.partial`` and is
    renamed onto ``log`` at the end). A killed and rerun CPU run ends with weights
    equal (bitwise) to an uninterrupted run's. A spec that differs from the one that wrote the
    resume state in anything that changes training fails fast. The state keeps hard links of the
    checkpoint folders written so far and a resume puts back any Snakemake deleted (it deletes a
    rerun job's declared outputs); a finished run removes its resume state, so a forced rerun
    starts over. ``interrupt_after_step`` (the resume drill of config/gpu-smoke.yaml) stops a
    run with exit code 75 right after that step's resume state is saved, as a preempted job
    would; run again, it resumes there and never stops again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from ssd_math.io import atomic_path, file_sha256, read_json, stable_hash, write_json, write_meta

_SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# progress.json "format" of a resume state: 1 (no key) = the hand-written state.pt + rng_<i>.pt,
# 2 = accelerate's save_state folder (model, optimizer.bin, random_states_<i>.pkl, custom_checkpoint_<i>.pkl)
RESUME_FORMAT = 2


def save_model(model, tok, folder: str | Path, state_dict=None, save_dtype: str | None = None, **meta) -> None:
    """save_pretrained + tokenizer into a temporary folder, then rename onto ``folder``.
    ``state_dict``: the full weights when the model is sharded (accelerator.get_state_dict).
    ``save_dtype``: the dtype the folder holds (the served dtype: bf16 for the real recipe, half
    the disk of the fp32 master weights, which only the resume state keeps); None = as trained."""
    sd = state_dict
    if save_dtype is not None:
        sd = cast_state_dict(model.state_dict() if sd is None else sd, _SAVE_DTYPES[save_dtype])
    with atomic_path(folder, is_dir=True) as tmp:
        model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        if save_dtype is not None:
            # save_pretrained writes the parameters' dtype (fp32); config.json says what it holds
            cfg_path = Path(tmp) / "config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            cfg["dtype"] = save_dtype
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tok.save_pretrained(tmp)
        write_meta(tmp, artifact=str(folder), saved_dtype=save_dtype or "float32", **meta)


def cast_state_dict(sd: dict, dtype: torch.dtype) -> dict:
    """``sd``'s floating tensors in ``dtype`` on the CPU, one tensor at a time (no second copy of the
    model on the accelerator). Tensors that share storage (tied embeddings) stay one tensor, so
    save_pretrained drops the tied key as it does for the model's own state dict."""
    out, seen = {}, {}
    for k, v in sd.items():
        if not torch.is_floating_point(v):
            out[k] = v
            continue
        key = (v.device, v.data_ptr(), tuple(v.shape), v.dtype)
        if key not in seen:
            seen[key] = v.detach().to("cpu", dtype=dtype, copy=True)
        out[k] = seen[key]
    return out


def full_weights(accelerator, model) -> dict:
    """The whole model's weights from FSDP2 shards (every process calls; the main one gets them,
    on CPU), via accelerate's own gathering (torch.distributed.checkpoint full_state_dict).
    Tied parameters (Qwen3.5's lm_head = embed_tokens) are gathered as separate copies; they are
    made one tensor again so that save_pretrained drops the tied key as it does unsharded."""
    sd = accelerator.get_state_dict(model)
    names_of: dict[int, list[str]] = {}
    for name, p in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    for first, *tied in names_of.values():
        for name in tied:
            if first in sd and name in sd:
                sd[name] = sd[first]
    return sd


def _inner(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer."""
    return getattr(optimizer, "optimizer", optimizer)


def _link_tree(src, dst) -> None:
    """Copy a folder as hard links (no second copy of the weights on disk; a plain copy where
    links are refused), atomically: into a temporary name, then renamed."""

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link)
    os.replace(tmp, dst)


# keys that do not change the trained weights (may differ between a run and its resume);
# max_steps is not one of them: it sets the number of steps, hence the LR schedule
_RESUME_NEUTRAL = {"checkpoints", "log", "resume_dir", "out_dir", "progress", "save_dtype", "interrupt_after_step"}


def training_spec_hash(s: dict) -> str:
    """The hash of everything in the spec that changes the trained weights (the data file's
    content included): a resume state written under another hash is refused."""
    return stable_hash(
        {
            **{k: v for k, v in s.items() if k not in _RESUME_NEUTRAL},
            "data_sha256": file_sha256(s["data"]) if isinstance(s["data"], (str, os.PathLike)) else None,
        }
    )


def save_resume(
    resume_dir, accelerator, step: int, elapsed: float, tokens: int, spec_hash: str, checkpoints: dict | None = None
) -> None:
    """accelerate's ``save_state`` (model, optimizer, RNG states of every process, and the objects
    registered for checkpointing: the scheduler and the noise estimator), plus ``progress.json``
    and the checkpoint folders written so far (``checkpoints``: {step: folder}) as hard links
    (``checkpoints/<step>``): Snakemake deletes a rerun job's declared outputs, and a resumed run
    restores them from here (:func:`restore_resume_state`). save_state writes into the folder it
    is given, in place: it is given a temporary folder that the main process renames."""
    resume_dir = Path(resume_dir)
    tmp = resume_dir.with_name(f".{resume_dir.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)  # every process (FSDP2 gathers the full state onto the main one)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(
            tmp / "progress.json",
            {
                "format": RESUME_FORMAT,
                "step": step,
                "log_rows": step,
                "elapsed_s": elapsed,
                "tokens": tokens,
                "spec_hash": spec_hash,
            },
        )
        for k, folder in sorted((checkpoints or {}).items()):
            if k <= step:
                _link_tree(folder, tmp / "checkpoints" / str(k))
        for f in (f for f in tmp.iterdir() if f.is_file()):  # durable before the rename
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = resume_dir.with_name(f".{resume_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if resume_dir.exists():
            os.replace(resume_dir, old)
        os.replace(tmp, resume_dir)  # a crash between the two renames leaves .old: restored on start
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def restore_resume_state(
    rdir: Path | None, spec_hash: str, accelerator, checkpoints: dict | None = None, live_log: Path | None = None
) -> tuple[int, float, int]:
    """Restore the training state in ``rdir`` when there is one (accelerate's ``load_state``: the
    prepared model and optimizer, the RNG states, the registered scheduler and noise estimator);
    (optimizer steps done, elapsed seconds, tokens seen) -- (0, 0.0, 0) on a fresh start.
    Checkpoint folders at or before its step (``checkpoints``: {step: folder}) that are gone --
    Snakemake deletes a rerun job's declared outputs -- are put back from the state's links; a
    state that cannot finish the run as an uninterrupted one would (a checkpoint with no link, or
    fewer rows in ``live_log`` than its step) is not resumed: training starts over. A state of
    another format (``progress.json`` "format"; none: format 1, ``state.pt``) is refused."""
    if rdir is None:
        return 0, 0.0, 0
    old = rdir.with_name(f".{rdir.name}.old")  # a save killed between its two renames
    if accelerator.is_main_process and not (rdir / "progress.json").exists() and (old / "progress.json").exists():
        shutil.rmtree(rdir, ignore_errors=True)
        os.replace(old, rdir)
    accelerator.wait_for_everyone()
    if not (rdir / "progress.json").exists():
        return 0, 0.0, 0
    prog = read_json(rdir / "progress.json")
    if prog.get("format", 1) != RESUME_FORMAT:
        raise ValueError(
            f"resume state in {rdir} has format {prog.get('format', 1)} (an older "
            f"ssd_math.train's); this one reads format {RESUME_FORMAT} (accelerate's "
            "save_state): delete it to start over"
        )
    if prog["spec_hash"] != spec_hash:
        raise ValueError(f"resume state in {rdir} was written by a different training spec; delete it to start over")
    missing = {k: Path(f) for k, f in (checkpoints or {}).items() if k <= prog["step"] and not Path(f).exists()}
    lost = [str(f) for k, f in sorted(missing.items()) if not (rdir / "checkpoints" / str(k)).is_dir()]
    rows = (
        sum(1 for ln in live_log.read_text(encoding="utf-8").splitlines() if ln.strip())
        if live_log is not None and live_log.exists()
        else 0
    )
    if lost or (live_log is not None and rows < prog["step"]):
        why = (
            f"checkpoint(s) {', '.join(lost)} are gone"
            if lost
            else f"its log {live_log} has {rows} of {prog['step']} rows"
        )
        print(f"resume state in {rdir} is at step {prog['step']}, but {why}: starting over", file=sys.stderr)
        return 0, 0.0, 0
    accelerator.wait_for_everyone()  # every process has decided before the folders come back
    if accelerator.is_main_process:
        for k, folder in sorted(missing.items()):
            _link_tree(rdir / "checkpoints" / str(k), folder)
    accelerator.wait_for_everyone()
    # On the CPU first, memory-mapped: the weights through safetensors (mmap), the optimizer state
    # through torch.load(mmap=True), then copied into place. map_location "cpu" explicitly:
    # accelerate's default with several GPU processes, "on_device", would put a second copy of the
    # weights on the GPU beside the model's (docs/memory_plan.md "Resume"; FSDP2 ignores it: the
    # main process reads the full state and broadcasts it tensor by tensor).
    accelerator.load_state(rdir, map_location="cpu", load_kwargs={"mmap": True})
    return prog["step"], prog["elapsed_s"], prog["tokens"]


def drop_resume_state(rdir: Path | None) -> None:
    """A finished run's resume state served a killed run only: removed, so that a forced rerun
    starts over and a 4B run's full optimizer state does not stay on disk."""
    if rdir is not None:
        shutil.rmtree(rdir, ignore_errors=True)


def partial_log(log: str | None) -> Path | None:
    """The live log a run appends to, ``<log>.partial`` (undeclared, so a rerun keeps it)."""
    return Path(log).with_name(Path(log).name + ".partial") if log else None


def open_step_log(log: str | None, start_step: int, is_main: bool):
    """(declared log path, live ``<log>.partial`` path, its open handle on the main process).

    The log grows in ``<log>.partial`` (appended, fsynced per step) and is renamed onto the
    declared log only when training ends: a killed job leaves no log that looks complete, and the
    partial (which Snakemake does not delete, being undeclared) survives for the resume, truncated
    to the resumed step."""
    log_path = Path(log) if log else None
    live_log = partial_log(log)
    if live_log is None or not is_main:
        return log_path, live_log, None
    live_log.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    if start_step:
        truncate_log(live_log, start_step)
    else:
        live_log.unlink(missing_ok=True)
    return log_path, live_log, open(live_log, "a", encoding="utf-8")


def truncate_log(path: Path, n_rows: int) -> None:
    """Keep the first ``n_rows`` rows of the log (rows past the resume point are redone)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in lines[:n_rows]), encoding="utf-8")


def append_row(fh, row: dict) -> None:
    fh.write(json.dumps(row) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
