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
# the tests run side by side, one worker per core (pytest-xdist), the longest first (tests/conftest.py)
python -m pytest -q -n auto --dist worksteal --durations=15 "${tier[@]}" "${args[@]}"
