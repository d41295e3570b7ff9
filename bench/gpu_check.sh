#!/usr/bin/env bash
# GPU check (issue: "GPU check when lent"): the tiny pipeline's transformers sampling backend and
# its training loop on one CUDA GPU, with tokens/s. Needs torch (CUDA), transformers, accelerate,
# tokenizers, safetensors, tqdm, PyYAML (the GPU image has them; the package is used from src/,
# not installed). Writes OUT_DIR/gpu_check.json (+ logs) and prints it.
#
#   bash bench/gpu_check.sh [OUT_DIR] [--steps N]
#   bash bench/gpu_check.sh /tmp/gc --cpu-smoke     # the same steps, tiny, on CPU (no GPU needed)
#
# On the lent device machine:  run(command="bash bench/gpu_check.sh $OUT", timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-$(mktemp -d)}}"
shift || true
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
timeout 400 python3 bench/gpu_check.py "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
