#!/usr/bin/env bash
# DuoDecoding beside a background load (a busy core; then one that comes and goes), on the demo pair:
# prints DuoDecoding against SpS-GGUF and AR per condition. Each call writes results/load-cpu/runs/<date>-<host>/.
#   bash cmds/load_cpu.sh [--limit 40] [--period 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
python -m src.tools.build_rest_datastore --demo
python -m src.tools.bench_load "$@"
