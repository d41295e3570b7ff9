#!/usr/bin/env bash
# GPU check: the rehearsal (config/rehearsal.yaml) on one CUDA GPU with vLLM, training with
# gradient checkpointing + chunked loss + flash-linear-attention kernels; tokens/s and peak memory
# -> OUT_DIR/gpu_check.json, OUT_DIR/plan_rates.yaml, bench/RESULTS.md (bench/gpu_check.py).
#
#   bash bench/gpu_check_rehearsal.sh [OUT_DIR] [--dry-run]
#
# It installs the GPU environment (envs/vllm.yaml's pip list, vLLM included), so it needs a
# package registry; on an offline GPU machine (no package registry) run bench/gpu_check.sh, the
# SFT check, instead. --dry-run (any machine): prints the install commands, writes the variant
# config and lists the DAG (snakemake -n); installs and runs nothing. SKIP_INSTALL=1 uses the
# current environment (vLLM already there).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-$(mktemp -d)}"
shift || true
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
mkdir -p "$OUT_DIR"
VENV="${GPU_VENV:-$OUT_DIR/.venv-gpu}"
# envs/vllm.yaml's pip list (vLLM brings its CUDA torch and transformers), the fast Gated DeltaNet
# kernels transformers' Qwen3.5 picks up when importable, then this package without dependencies
PIP_PKGS=$(python3 - <<'PY'
import yaml
env = yaml.safe_load(open("envs/vllm.yaml"))
pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
print(" ".join(p for p in pip if not p.startswith("snakemake-executor")))
PY
)
INSTALL=("python3 -m venv $VENV"
         "$VENV/bin/pip install -q $PIP_PKGS"
         "$VENV/bin/pip install -q --no-deps flash-linear-attention==0.6.0 fla-core==0.6.0"
         "$VENV/bin/pip install -q --no-deps -e .")
if [ "$DRY" = 1 ]; then
  printf 'would run: %s\n' "${INSTALL[@]}"
  PY=python3
  [ -x .venv/bin/python ] && PY=.venv/bin/python
  exec timeout 300 "$PY" bench/gpu_check.py "$OUT_DIR" --dry-run
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  t0=$(date +%s)
  for c in "${INSTALL[@]}"; do echo "+ $c"; eval "$c"; done
  echo "install: $(( $(date +%s) - t0 )) s"
  PY="$VENV/bin/python"
else
  PY=python3
fi
export PYTHONUNBUFFERED=1 PATH="$(dirname "$PY"):$PATH"
"$PY" -c "import torch, vllm, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__, 'transformers', transformers.__version__)"
timeout 420 "$PY" bench/gpu_check.py "$OUT_DIR" 2>&1 | tee "$OUT_DIR/gpu_check.log"
