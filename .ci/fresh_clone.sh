#!/usr/bin/env bash
# Fresh-clone check: clone this repository's committed HEAD into an empty temporary folder
# (nothing beside it: no sibling data folder, no venv, no results) and run there exactly the two commands of
# README.md's Quick start (its first fenced block after "## Quick start"), read from the clone's
# own README, so the check follows the README.
#
#   bash .ci/fresh_clone.sh      line 1 (install + the default pipeline), then line 2 (the tests)
#   .ci/run                      sources this file for line 1; .ci/run itself holds line 2 verbatim
#                                and this file checks that it still equals the README's line 2
#
# Environment:
#   SSD_MATH_CI_DRY=1   dry mode, to test the clone/extract logic cheaply: each command's last
#                       step only, as `snakemake -n ...` / `pytest --collect-only -q ...`, in the
#                       caller's environment (no venv, no install; PYTHONPATH=<clone>/src)
#   SSD_MATH_CI_KEEP=1  keep the temporary folder (its path is printed)
# After it, $CI_CLONE is the clone (cwd), $CI_CMD1/$CI_CMD2 the README's lines, ci_run_line runs
# a line there (dry-mode aware).
set -euo pipefail

_ci_src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ci_sourced=0
[[ "${BASH_SOURCE[0]}" != "$0" ]] && _ci_sourced=1

ci_quickstart_commands() {  # README.md -> its Quick start block's command lines, one per line
  awk '/^## Quick start[[:space:]]*$/ { qs = 1; next }
       qs && !inblock && /^```/ { inblock = 1; next }
       inblock && /^```/ { exit }
       inblock && NF { print }' "$1"
}

ci_dry_command() {  # the last `&&` step of a Quick start line, as a dry run
  local last="${1##*&& }"
  case "$last" in
    snakemake*) echo "snakemake -n${last#snakemake}" ;;
    pytest*) echo "pytest --collect-only${last#pytest}" ;;
    *) echo "fresh_clone: no dry form for '$last'" >&2; return 2 ;;
  esac
}

ci_fresh_env() {  # a fresh machine: no virtualenv of the caller active or on PATH
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PATH="$(tr ':' '\n' <<<"$PATH" | grep -vxF "$VIRTUAL_ENV/bin" | paste -sd: -)"
    export PATH
  fi
  unset VIRTUAL_ENV PYTHONPATH
}

ci_run_line() {  # run one README line in the clone, as a user would type it (bash -c)
  local line="$1"
  if [[ -n "${SSD_MATH_CI_DRY:-}" ]]; then
    line="$(ci_dry_command "$line")"
    echo "fresh_clone [dry]: $line"
    (cd "$CI_CLONE" && PYTHONPATH="$CI_CLONE/src" bash -c "$line")
  else
    echo "fresh_clone: $line"
    (cd "$CI_CLONE" && ci_fresh_env && bash -c "$line")
  fi
}

# `source .ci/fresh_clone.sh --functions`: define the functions above and stop (tests use it)
if [[ "$_ci_sourced" == 1 && "${1:-}" == "--functions" ]]; then
  return 0
fi

if [[ -n "$(git -C "$_ci_src" status --porcelain --untracked-files=no)" ]]; then
  echo "fresh_clone: note: uncommitted changes in $_ci_src are not in the clone (HEAD only)" >&2
fi
_ci_head="$(git -C "$_ci_src" rev-parse HEAD)"
_ci_tmp="$(mktemp -d "${TMPDIR:-/tmp}/ssd-math-ci.XXXXXX")"
if [[ -z "${SSD_MATH_CI_KEEP:-}" ]]; then
  trap 'rm -rf "$_ci_tmp"' EXIT
fi
CI_CLONE="$_ci_tmp/ssd-math"
git clone --quiet --no-local --no-checkout "$_ci_src" "$CI_CLONE"
git -C "$CI_CLONE" checkout --quiet --detach "$_ci_head"
_ci_beside="$(ls -A "$_ci_tmp")"
if [[ "$_ci_beside" != "ssd-math" ]]; then
  echo "fresh_clone: the clone's folder is not alone: $_ci_beside" >&2
  exit 1
fi
echo "fresh_clone: $CI_CLONE at ${_ci_head:0:12} (nothing beside it)"

mapfile -t _ci_cmds < <(ci_quickstart_commands "$CI_CLONE/README.md")
if [[ "${#_ci_cmds[@]}" -ne 2 ]]; then
  echo "fresh_clone: README.md's Quick start block has ${#_ci_cmds[@]} command lines, expected 2 (pipeline, tests):" >&2
  printf '  %s\n' "${_ci_cmds[@]}" >&2
  exit 1
fi
CI_CMD1="${_ci_cmds[0]}"
CI_CMD2="${_ci_cmds[1]}"
if ! grep -qF -- "$CI_CMD2" "$CI_CLONE/.ci/run"; then
  echo "fresh_clone: .ci/run no longer holds the README's test line verbatim; update it to:" >&2
  echo "  $CI_CMD2" >&2
  exit 1
fi

_ci_t0=$SECONDS
ci_run_line "$CI_CMD1"
echo "fresh_clone: line 1 done in $((SECONDS - _ci_t0)) s"
cd "$CI_CLONE"
if [[ "$_ci_sourced" == 0 ]]; then
  _ci_t0=$SECONDS
  ci_run_line "$CI_CMD2"
  echo "fresh_clone: line 2 done in $((SECONDS - _ci_t0)) s"
fi
