#!/usr/bin/env bash
# README command 1: install what is missing, then run every method on the bundled demo pair,
# interleaved, on the CPU (target 1 thread, draft 1 thread), and print the comparison table.
#   bash cmds/demo.sh [--limit N] [--ablations] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
if [ ! -f data/models/demo-draft.gguf ]; then
  echo "demo pair missing: training it (about 30 minutes on 2 cores)"
  python -m src.tools.train_demo_pair
fi
if [ ! -f data/rest/demo.idx ]; then
  python -m src.tools.build_rest_datastore --tokenizer data/models/demo-target --stdlib-train --out data/rest/demo.idx
fi
out=results/demo-cpu
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2;;
    *) args+=("$1"); shift;;
  esac
done
python -m src.eval.compare --bench demo --device cpu --target-threads 1 --draft-threads 1 --out "$out" "${args[@]}"
python -m src.eval.report "$out"
echo "answers, table.md, report.md, speedup.png and acceptance.png are in $out/"
