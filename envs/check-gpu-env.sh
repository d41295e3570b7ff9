#!/usr/bin/env bash
# Does envs/vllm.yaml's pip list resolve, for the GPU env's Python 3.12 on x86-64 Linux?
# Runs pip's resolver for that target from any machine (no GPU, nothing installed):
#
#   bash envs/check-gpu-env.sh          # prints "resolves: N packages" or pip's conflict, exit 0/1
#
# A cross-target resolution takes wheels only; the one sdist in the tree (connection_pool, a pure
# Python dependency of snakemake) is built into a wheel first, as pip would on the GPU machine.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 - "$REPO/envs/vllm.yaml" > "$tmp/reqs.txt" <<'PY'
import sys, yaml
env = yaml.safe_load(open(sys.argv[1]))
print("\n".join(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)))
PY
python3 -m pip wheel -q --no-deps connection_pool==0.0.3 -w "$tmp/wheels" 2>/dev/null
plat=(); for n in $(seq 17 39); do plat+=(--platform "manylinux_2_${n}_x86_64"); done
if python3 -m pip install --dry-run --ignore-installed --quiet --python-version 3.12 \
     --only-binary=:all: "${plat[@]}" --platform manylinux2014_x86_64 --platform linux_x86_64 \
     --find-links "$tmp/wheels" --target "$tmp/target" --report "$tmp/report.json" \
     -r "$tmp/reqs.txt" 2> "$tmp/err"; then
  python3 - "$tmp/report.json" <<'PY'
import json, sys
inst = json.load(open(sys.argv[1]))["install"]
v = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in inst}
print(f"envs/vllm.yaml resolves for Python 3.12 x86-64: {len(inst)} packages; "
      + ", ".join(f"{n} {v[n]}" for n in ("vllm", "torch", "transformers", "numpy", "flash-linear-attention",
                                           "snakemake-executor-plugin-slurm") if n in v))
PY
else
  grep -v "is ignored" "$tmp/err" | tail -20
  exit 1
fi
