"""bench/gpu_check_sft.py (bench/gpu_check.sh's check for a lent GPU machine): its --dry-run runs
the same code on the CPU at a tiny shape, and an out-of-memory error is a recorded result."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import ROOT


def _gc():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("gpu_check_sft", ROOT / "bench" / "gpu_check_sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_out_of_memory_is_a_result_naming_its_phase(tmp_path, monkeypatch):
    import torch

    from ssd_math import train as T

    gc = _gc()
    monkeypatch.setattr(gc.Meter, "__init__", lambda self, cuda: setattr(self, "cuda", True))
    monkeypatch.setattr(gc.Meter, "reset", lambda self: None)
    monkeypatch.setattr(gc.Meter, "peak", lambda self: 123_000_000)

    def oom_in_backward(spec):  # the phase wrapper (below) has entered the backward
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def fake_meter_phases(meter, phases, state):
        state["phase"] = "backward"
        phases["forward"] = {"peak_bytes": 80_000_000_000, "seconds": 1.0, "calls": 1}

    monkeypatch.setattr(gc, "meter_phases", fake_meter_phases)
    monkeypatch.setattr(T, "train", oom_in_backward)
    out = tmp_path / "rec.json"
    gc.run_one(gc.TINY, 64, True, out, steps=2)
    rec = json.loads(out.read_text())
    assert rec["oom"]["phase"] == "backward" and "out of memory" in rec["oom"]["message"]
    assert rec["steps_done"] == 0 and rec["phases"]["forward"]["peak_gb"] == 80.0 and rec["peak_gb"] == 80.0


def test_dry_run_writes_the_json_of_every_run(tmp_path):
    gc = _gc()
    assert gc.main([str(tmp_path), "--dry-run", "--lengths", "64", "--steps", "2"]) == 0
    res = json.loads((tmp_path / "gpu_check_sft.json").read_text())
    assert res["dry_run"] and res["gpu"] is None and res["fla_ran"] is False
    assert res["params"] > 0 and res["shape"] == gc.TINY
    assert [(r["tokens"], r["instrument"]) for r in res["runs"]] == [(64, True), (64, False)]
    for r in res["runs"]:
        assert r["steps_done"] == 2 and r["oom"] is None and r["tokens_per_s"] > 0
        assert {"forward", "backward", "optimizer"} <= set(r["phases"])
        assert ("tracker" in r["phases"]) == r["instrument"]
        assert all(p["peak_gb"] > 0 and p["calls"] > 0 for p in r["phases"].values())
        assert r["predicted_peak_gb"] > 0 and r["fla_fell_back"] is True
