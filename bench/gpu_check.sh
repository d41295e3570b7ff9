#!/usr/bin/env bash
# The SFT GPU check (bench/gpu_check_sft.py) for an offline GPU machine (no package registry) with
# one H100 or H200 and its own Python 3.12, torch 2.11 + CUDA 13, transformers 5.17, accelerate
# 1.15 and triton 3.6: ssd_math.train's step on a random-initialised Qwen3.5-4B-shaped model at
# 33,792 tokens first, then 16,384; per phase the peak memory against the plan, tokens/s, MFU,
# the function each Gated DeltaNet layer called, the disk left -> OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.log, and nothing else in OUT_DIR. At most 9 minutes.
#
#   bash bench/gpu_check.sh --wheels            # where PyPI is reachable: the wheels below into
#                                               #   bench/wheels/ (git-ignored), listed with their size
#   bash bench/gpu_check.sh OUT_DIR             # on the GPU machine, with bench/wheels copied along
#   bash bench/gpu_check.sh OUT_DIR --dry-run   # any machine: the same path on the CPU, tiny shapes
#
# Further arguments go to bench/gpu_check_sft.py (--lengths, --no-bisect, ...).
# The wheels (at most 64 MiB together): what the check imports that the GPU machine's image lacks at
# the versions this project pins (pyproject.toml): transformers 5.19.0; flash-linear-attention and
# fla-core 0.6.0 (Triton kernels, pure Python); jsonschema 4.26.0 (ssd_math.config validates every
# training spec with it) with referencing, jsonschema-specifications and rpds-py (compiled: the
# cp312 manylinux wheel). The image's tokenizers 0.23.2, huggingface-hub 1.33.0, safetensors 0.8.0,
# regex, einops and attrs satisfy what these require. causal-conv1d is not carried (an sdist that
# compiles CUDA code): transformers then runs its F.conv1d fallback, and the JSON says which ran.
# The wheels are installed with --no-index --no-deps into a scratch folder (removed at the end),
# never into OUT_DIR. GPU_CHECK_WHEELS names another wheel folder; GPU_CHECK_WHEELS_PYTHON another
# Python version for --wheels (a CPU dry run under a local interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(transformers==5.19.0 fla-core==0.6.0 flash-linear-attention==0.6.0
        jsonschema==4.26.0 referencing==0.37.0 jsonschema-specifications==2025.9.1 rpds-py==2026.9.1)
WDIR="${GPU_CHECK_WHEELS:-bench/wheels}"
LIMIT_KIB=65536
# the check's own deadline (no run started that would not end by then) and the hard limit; with
# the install before it the whole command stays under 9 minutes
DEADLINE_S=470
HARD_S=500

have_wheels() { compgen -G "$WDIR/*.whl" >/dev/null; }
list_wheels() {
  local w total
  for w in "$WDIR"/*.whl; do printf '  %6s KiB  %s\n' "$(du -k "$w" | cut -f1)" "$(basename "$w")"; done
  total=$(du -ck "$WDIR"/*.whl | tail -1 | cut -f1)
  echo "  total: $total KiB (limit $LIMIT_KIB KiB)"
  if [ "$total" -gt "$LIMIT_KIB" ]; then echo "the wheels in $WDIR are over $LIMIT_KIB KiB" >&2; return 1; fi
}

if [ "${1:-}" = "--wheels" ]; then
  PYV="${GPU_CHECK_WHEELS_PYTHON:-3.12}"
  mkdir -p "$WDIR"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --abi "cp${PYV/./}" --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any -d "$WDIR" "${WHEELS[@]}"
  list_wheels
  exit 0
fi

if [ $# -lt 1 ] || [ "${1#--}" != "$1" ]; then
  echo "usage: bash bench/gpu_check.sh OUT_DIR [--dry-run] [gpu_check_sft.py options] | --wheels" >&2
  exit 2
fi
OUT_DIR="$1"
shift
mkdir -p "$OUT_DIR"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

check() {
  echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), scratch $SCRATCH"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  df -h "$SCRATCH" | tail -1 | awk '{print "disk free where the runs write: " $4 " of " $2}'
  local pyv site="$SCRATCH/site"
  if have_wheels; then
    echo "carried wheels ($WDIR):"
    list_wheels
    pyv=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    for w in "$WDIR"/*.whl; do
      case "$(basename "$w")" in
        *-cp3[0-9]*-*) case "$(basename "$w")" in *"-$pyv-"*) ;; *)
          echo "$(basename "$w") is not for this python3 ($pyv): fetch the wheels for it with" \
               "GPU_CHECK_WHEELS_PYTHON=<its version> GPU_CHECK_WHEELS=<folder> bash bench/gpu_check.sh --wheels" >&2
          return 2 ;; esac ;;
      esac
    done
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WDIR"/*.whl
    export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no wheels in $WDIR (bash bench/gpu_check.sh --wheels): this environment's own packages"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # the allocator setting of the training jobs (docs/memory_plan.md): variable-length micro-batches
  export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  export HF_HUB_OFFLINE=1  # nothing to fetch: random weights, a tokenizer built on the spot
  timeout -k 10 "$HARD_S" python3 bench/gpu_check_sft.py "$OUT_DIR" --deadline-s "$DEADLINE_S" \
    --scratch "$SCRATCH/runs" "$@"
}

set -o pipefail
check "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
