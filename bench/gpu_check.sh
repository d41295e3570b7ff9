#!/usr/bin/env bash
# SFT GPU check for a lent GPU machine (no registry there; its own torch): ssd_math.train's step on
# a random-initialised Qwen3.5-4B-shaped model at 16k and 33,792 tokens, instrumentation on then off;
# peak memory per phase, tokens/s, MFU, fla kernels, GPU name -> OUT_DIR/gpu_check_sft.json
# (bench/gpu_check_sft.py).
#
#   bash bench/gpu_check.sh --wheels           # here (PyPI reachable): fetch the small wheels into
#                                              #   bench/wheels/ (git-ignored), print list and size
#   run(command="bash bench/gpu_check.sh $OUT", carry=["bench/wheels"], timeout_s=540)   # lent GPU
#   bash bench/gpu_check.sh OUT_DIR --dry-run  # here: the same code on the CPU at tiny shapes
#
# The wheels: what ssd_math.train imports that the lent image (torch 2.11, transformers 5.17,
# accelerate 1.15, triton 3.6, Python 3.12) lacks at the pinned versions (pyproject.toml) -- transformers 5.19.0
# with the tokenizers/safetensors/regex it needs (huggingface-hub at the oldest transformers accepts,
# 1.31.0: fewer new dependencies for the image), flash-linear-attention + fla-core
# 0.6.0 (Triton kernels, pure Python) and einops. causal-conv1d is optional (an sdist: no wheel).
# Installed with --no-index --no-deps into OUT_DIR/site, put first on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(transformers==5.19.0 fla-core==0.6.0 flash-linear-attention==0.6.0 einops==0.8.1
        tokenizers==0.23.3 huggingface-hub==1.31.0 safetensors==0.8.0 regex==2025.11.3)
WDIR=bench/wheels
list_wheels() {
  ls -1 "$WDIR"/*.whl 2>/dev/null | while read -r w; do printf '  %s  %s\n' "$(du -k "$w" | cut -f1) KiB" "$(basename "$w")"; done
  echo "  total: $(du -ck "$WDIR"/*.whl 2>/dev/null | tail -1 | cut -f1) KiB (limit 65536 KiB)"
}
if [ "${1:-}" = "--wheels" ]; then
  mkdir -p "$WDIR"
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any -d "$WDIR" "${WHEELS[@]}"
  list_wheels
  exit 0
fi
OUT_DIR="${1:-${OUT:-$(mktemp -d)}}"
shift || true
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
mkdir -p "$OUT_DIR"
echo "carried wheels (bench/gpu_check.sh --wheels): ${WHEELS[*]}"
if [ -d "$WDIR" ]; then list_wheels; else echo "  (none fetched here: bench/gpu_check.sh --wheels)"; fi
if [ "$DRY" = 1 ]; then
  PY=python3
  [ -x .venv/bin/python ] && PY=.venv/bin/python
  exec timeout 480 "$PY" bench/gpu_check_sft.py "$OUT_DIR" --dry-run
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -d "$WDIR" ]; then
  python3 -m pip install -q --no-index --no-deps --target "$OUT_DIR/site" "$WDIR"/*.whl
  export PYTHONPATH="$OUT_DIR/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
# 480 s: the script stops starting runs at --budget-s 450 and a 4B run takes about a minute
timeout 480 python3 bench/gpu_check_sft.py "$OUT_DIR" --budget-s 400 2>&1 | tee "$OUT_DIR/gpu_check_sft.log"
