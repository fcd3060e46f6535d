#!/usr/bin/env bash
# README command 1: install what is missing, then measure every method on the bundled demo pair on this
# machine, interleaved, on the CPU (split cores: the target on 1 thread, the draft on 1 other; --cores shared:
# every method on every core), and print the table beside the committed reference runs. Each call writes a
# new folder under results/demo-cpu/runs/.
#   bash cmds/demo.sh [--limit N] [--ablations] [--out DIR | --resume DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
if [ ! -f data/models/demo-draft.gguf ]; then
  echo "demo pair missing: training it (about 30 minutes on 2 cores)"
  python -m src.tools.train_demo_pair
fi
python -m src.tools.build_rest_datastore --demo
python -m src.eval.compare --bench demo --device cpu --cores split --target-threads 1 --draft-threads 1 \
  --reference $(cat results/demo-cpu/REFERENCES) "$@"
