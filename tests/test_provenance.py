"""The ``machine`` block of every provenance sidecar (ssd_math.io.machine_info): CPU model, the
ISA flags that change torch's kernels, cores, torch's BLAS/oneDNN build and thread count, GPUs.
The parsers take text, so they are tested on constructed /proc/cpuinfo and torch build texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ssd_math import io as sio
from ssd_math.io import ISA_FLAGS, machine_info, parse_cpuinfo, parse_torch_config, write_meta

# Two processors of an AVX2-only desktop part (no AVX-512, no AMX); flags trimmed.
AVX2_ONLY = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 avx512_fp16 adx

processor\t: 1
model name\t: Some Other Model
flags\t\t: fpu avx2 avx512f amx_tile
"""

# A Sapphire Rapids server part: AVX-512 with bf16, and the three AMX extensions.
AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16
CPU implementer\t: 0x41
"""

TORCH_MKL = """PyTorch built with:
  - GCC 13.3
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture applications
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - CPU capability usage: AVX512
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl, TORCH_VERSION=2.13.0, USE_MKL=ON, USE_MKLDNN=ON,
"""

TORCH_OPENBLAS = """PyTorch built with:
  - GCC 11.2
  - Intel(R) MKL-DNN v3.5.3 (Git Hash 66f0cb9eb66affd2da3bf5f8d897376f04aae6af)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - LAPACK is enabled (usually provided by MKL)
  - CPU capability usage: NO AVX
  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release, LAPACK_INFO=open, USE_MKL=OFF, USE_MKLDNN=ON,
"""


def test_cpuinfo_avx2_only():
    info = parse_cpuinfo(AVX2_ONLY)
    assert info["cpu_model"] == "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"  # the first processor
    # the first processor's flags only: processor 1's avx512f/amx_tile do not leak in
    assert info["isa"] == {
        "avx2": True,
        "avx512f": False,
        "avx512_bf16": False,
        "amx_tile": False,
        "amx_bf16": False,
        "amx_int8": False,
    }


def test_cpuinfo_amx():
    info = parse_cpuinfo(AMX)
    assert info["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["isa"] == dict.fromkeys(ISA_FLAGS, True)


def test_cpuinfo_arm_and_empty():
    assert parse_cpuinfo(ARM) == {"cpu_model": None, "isa": dict.fromkeys(ISA_FLAGS, False)}
    assert parse_cpuinfo("") == {"cpu_model": None, "isa": dict.fromkeys(ISA_FLAGS, False)}


def test_torch_build_text():
    assert parse_torch_config(TORCH_MKL) == {
        "blas": "mkl",
        "lapack": "mkl",
        "mkl_version": "2024.2",
        "onednn_version": "v3.12.0",
        "cpu_capability_built": "AVX512",
    }
    assert parse_torch_config(TORCH_OPENBLAS) == {
        "blas": "open",
        "lapack": "open",
        "mkl_version": None,
        "onednn_version": "v3.5.3",
        "cpu_capability_built": "NO AVX",
    }
    assert parse_torch_config("") == dict.fromkeys(
        ("blas", "lapack", "mkl_version", "onednn_version", "cpu_capability_built")
    )


def test_sidecar_has_the_machine_block(tmp_path):
    art = tmp_path / "x.jsonl"
    art.write_text("{}\n")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        m1 = json.loads(write_meta(art, rule="t").read_text())["machine"]
        torch.set_num_threads(2)
        m2 = json.loads(write_meta(art, rule="t").read_text())["machine"]
    finally:
        torch.set_num_threads(old)
    assert set(m1) == {"cpu_model", "arch", "isa", "logical_cores", "usable_cores", "torch", "gpus"}
    assert set(m1["isa"]) == set(ISA_FLAGS) and all(isinstance(v, bool) for v in m1["isa"].values())
    assert m1["logical_cores"] == os.cpu_count() and 1 <= m1["usable_cores"] <= os.cpu_count()
    assert m1["cpu_model"]
    t = m1["torch"]
    assert t["version"] == torch.__version__
    assert t["mkldnn_available"] == torch.backends.mkldnn.is_available()
    assert t["mkl_available"] == torch.backends.mkl.is_available()
    assert t["blas"] and t["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # the thread count is read when the sidecar is written, not cached
    assert (m1["torch"]["intra_op_threads"], m2["torch"]["intra_op_threads"]) == (1, 2)
    assert m1["gpus"] == (
        None
        if not torch.cuda.is_available()
        else [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    )


def test_isa_flags_agree_with_the_kernels_torch_dispatches_to():
    """Two independent readings of this CPU: /proc/cpuinfo's flags and torch's own dispatch."""
    m = machine_info()
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        assert m["isa"]["avx512f"] and m["isa"]["avx2"]
    elif cap == "AVX2":
        assert m["isa"]["avx2"] and not m["isa"]["avx512f"]
    else:
        pytest.skip(f"torch dispatches to {cap} here")


def test_static_part_is_computed_once(monkeypatch):
    calls = []
    real = sio._read_cpuinfo
    monkeypatch.setattr(sio, "_read_cpuinfo", lambda: calls.append(1) or real())
    sio._static_machine.cache_clear()
    try:
        a, b = machine_info(), machine_info()
    finally:
        sio._static_machine.cache_clear()
    assert a == b and len(calls) == 1


def test_machine_info_does_not_import_torch():
    """A job that never imported torch (grading, tables) gets no torch import from its sidecar."""
    code = (
        "import json, sys; from ssd_math.io import machine_info; m = machine_info(); "
        "print(json.dumps({'m': m, 'torch': 'torch' in sys.modules}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch"] is False and out["m"]["torch"] is None and out["m"]["gpus"] is None
    assert out["m"]["isa"] == machine_info()["isa"]


def test_gpu_names_with_cuda(monkeypatch):
    """CUDA cannot run here: a stand-in torch module with two devices (the attributes
    machine_info reads, as torch 2.13 spells them) checks the GPU and torch fields."""
    from types import SimpleNamespace as NS

    calls = []

    def name(i):
        calls.append(i)
        return ["NVIDIA H200", "NVIDIA H100 80GB HBM3"][i]

    fake = NS(
        __version__="2.13.0+cu130",
        version=NS(cuda="13.0"),
        __config__=NS(show=lambda: TORCH_MKL),
        backends=NS(
            cpu=NS(get_cpu_capability=lambda: "AVX512"),
            mkl=NS(is_available=lambda: True),
            mkldnn=NS(is_available=lambda: True),
        ),
        get_num_threads=lambda: 7,
        get_num_interop_threads=lambda: 3,
        cuda=NS(is_available=lambda: True, device_count=lambda: 2, get_device_name=name),
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(sio, "_GPU_NAMES", None)
    m = machine_info()
    assert m["gpus"] == ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]
    assert m["torch"]["version"] == "2.13.0+cu130" and m["torch"]["blas"] == "mkl"
    assert (m["torch"]["intra_op_threads"], m["torch"]["inter_op_threads"]) == (7, 3)
    assert sio.accelerator_info()["gpus"] == m["gpus"]
    assert calls == [0, 1]  # device names are asked once per process
