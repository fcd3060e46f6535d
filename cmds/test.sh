#!/usr/bin/env bash
# README command 2: install what is missing into .venv, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
python -m pytest -q "$@"
