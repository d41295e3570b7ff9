#!/usr/bin/env bash
# The linters, from the repository root; exits non-zero on the first tool with a finding:
#   ruff check (lint rules: pyproject.toml [tool.ruff.lint]), ruff format --check, snakefmt --check
#   on the Snakefile and rules/, and snakemake --lint on the default config.
# The linters are pinned in the `test` extra of pyproject.toml (pip install -e '.[test]').
#
# snakemake --lint findings that stay, by design (every other finding fails):
#   "Specify a conda environment or container for each rule": every rule runs in the one pinned
#     stack of pyproject.toml (envs/README.md); a per-rule conda env would be a second list of pins.
#   "Mixed rules and functions in same snakefile": each rules/<stage>.smk starts with the input and
#     params functions of its own rules (docs/architecture.md), next to the rules that use them.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
step() { echo "lint: $*"; }

step "ruff check"
ruff check . || status=1
step "ruff format --check"
ruff format --check . || status=1
step "snakefmt --check Snakefile rules/"
snakefmt --check Snakefile rules/ || status=1
step "snakemake --lint (config.yaml)"
lint_out="$(snakemake --lint --configfile config.yaml 2>&1 || true)"
if ! grep -q "^Lints for \|Congratulations" <<<"$lint_out"; then  # it did not get to linting
  echo "$lint_out" >&2
  echo "lint: snakemake --lint did not run" >&2
  status=1
fi
# each finding as "<rule or snakefile>: <lint>", the allowed ones left out
findings="$(awk '/^Lints for /{where=$0; sub(/^Lints for /, "", where); sub(/:$/, "", where)}
                 /^    \* /{line=$0; sub(/^    \* /, "", line); print where ": " line}' <<<"$lint_out" \
            | grep -Ev ': (Specify a conda environment or container for each rule\.|Mixed rules and functions in same snakefile\.):$' || true)"
if [[ -n "$findings" ]]; then
  echo "$findings" >&2
  echo "lint: snakemake --lint findings (above)" >&2
  status=1
fi
[[ $status -eq 0 ]] && echo "lint: clean"
exit $status
