#!/usr/bin/env bash
# README command 2: install what is missing into .venv, then run the tests: the quick tier by default,
# everything with --all (as CI does). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
tier=(-m "not slow")
args=()
for a in "$@"; do
  if [ "$a" = "--all" ]; then tier=(); else args+=("$a"); fi
done
python -m pytest -q --durations=15 "${tier[@]}" "${args[@]}"
