#!/usr/bin/env bash
# Two commits measured on this host, alternating (A B A B ...), on the demo pair in the split regime, so that a slow
# spell of the host falls on both; prints each method's speedup over AR per run and each commit's median.
# Each commit runs from its own git worktree (under results/tmp/) with this checkout's .venv.
#   bash cmds/ab_demo.sh OLD NEW [--rounds 3] [--limit 40] [--methods ar,sps-gguf,pld,duodec]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
[ $# -ge 2 ] || { echo "usage: bash cmds/ab_demo.sh OLD NEW [--rounds N] [--limit N] [--methods LIST]" >&2; exit 2; }
old=$(git rev-parse --short "$1") new=$(git rev-parse --short "$2")
shift 2
rounds=3 limit=40 methods=ar,sps-gguf,pld,duodec
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
python -m src.tools.build_rest_datastore --demo
out=results/demo-cpu/ab/$(date +%Y%m%d-%H%M%S)-$old-$new
mkdir -p "$out"
for c in "$old" "$new"; do
  tree=results/tmp/ab/$c
  [ -d "$tree" ] || git worktree add --detach "$tree" "$c" >/dev/null
  ln -sfn "$PWD/.venv" "$tree/.venv"
  mkdir -p "$tree/data/rest" && ln -sf "$PWD/data/rest/demo.idx" "$tree/data/rest/demo.idx"
done
a=() b=()
for i in $(seq "$rounds"); do
  for c in "$old" "$new"; do
    run=$PWD/$out/$c-$i
    (cd "results/tmp/ab/$c" && python -m src.eval.compare --bench demo --device cpu --cores split --target-threads 1 \
      --draft-threads 1 --limit "$limit" --methods "$methods" --out "$run" > "$run.log" 2>&1)
    if [ "$c" = "$old" ]; then a+=("$run"); else b+=("$run"); fi
  done
done
python -m src.eval.ab --a "${a[@]}" --b "${b[@]}" --labels "$old" "$new" | tee "$out/ab.md"
