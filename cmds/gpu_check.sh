#!/usr/bin/env bash
# The paper's regime in one command, with cost-matched twins (no download): a Llama-2-7B-shaped twin of the
# demo target on the GPU (bf16), a vicuna-68m-shaped twin of the demo draft as Q5_K_M on the CPU cores, and
# the same draft twin in HF on the GPU for SpS as upstream runs it. Every method, interleaved question by
# question; answers and report.md in results/gpu/<card>/, and, where $OUT is set (the device tool), copied
# there as they are written: $OUT/log.txt, $OUT/report.md, $OUT/run.tgz (the run folder, every 15 s).
#   bash cmds/gpu_check.sh [--limit 20] [--budget 240] [--resume]   # on a GPU machine; installs wheels/ when
#                                                   # imports are missing; --resume continues the newest run here
#   bash cmds/gpu_check.sh --cpu-smoke                  # the same script on the CPU: tiny twins, 2 prompts
#   bash cmds/gpu_check.sh --rehearse [--quick]         # the whole device call rehearsed here (cmds/gpu_rehearse.sh)
# The device call (docs/gpu.md): command "bash cmds/gpu_check.sh", carry ["wheels", "data/rest"], timeout_s 420.
# Speedups measured so are the paper regime's at the demo pair's acceptance, not Llama-2's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = --rehearse ] && exec bash cmds/gpu_rehearse.sh "${@:2}"
# the project's environment where cmds/test.sh or demo.sh made one; else the machine's python (a GPU image)
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
limit=20 budget=240 smoke=0 resume=0
while [ $# -gt 0 ]; do
  case $1 in
    --limit) limit=$2; shift 2;;
    --budget) budget=$2; shift 2;;   # seconds of decoding; what was answered by then is reported
    --cpu-smoke) smoke=1; shift;;
    --resume) resume=1; shift;;
    *) echo "error: unknown argument $1" >&2; exit 2;;
  esac
done
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/log.txt") 2>&1   # the log comes back even if the call is stopped at its limit
fi
started=$SECONDS
stage() { echo "[gpu_check $((SECONDS - started)) s] $*"; }

imports="import llama_cpp, gguf, draftretriever, fastchat, shortuuid, transformers, accelerate, src.backends.draft as d; d.init_backend()"
if ! "$py" -c "$imports" 2>/dev/null; then
  [ -d wheels ] || { echo "error: packages missing and no wheels/: run cmds/bundle_offline.sh where pip works" >&2; exit 1; }
  site=${TMPDIR:-/tmp}/duodec-site
  # by name from wheels/, so pip takes the build that fits this Python (a rehearsal adds its own Python's)
  names=$(ls wheels/*.whl | xargs -n1 basename | sed 's/-[0-9].*//' | sort -u)
  # shellcheck disable=SC2086
  "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" --find-links wheels $names
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  if ! err=$("$py" -c "$imports" 2>&1); then
    echo "error: after installing wheels/, an import still fails: $(echo "$err" | tail -1)" >&2
    exit 1
  fi
fi
stage "imports ok: $("$py" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)')"

if [ $smoke = 1 ]; then
  device=cpu target_shape=512x5x1024 draft_shape=256x5x512 limit=2 tokens=16 threads=(--draft-threads 1)
  out=results/tmp/gpu-smoke
  rm -rf "$out"
else
  device=cuda target_shape=llama-2-7b draft_shape=vicuna-68m tokens=128
  threads=()   # the draft's threads: the fastest of a short sweep at start-up, recorded in every answer
  [ -n "${DRAFT_THREADS:-}" ] && threads=(--draft-threads "$DRAFT_THREADS")
  card=$("$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
  # a new folder each call, so a committed earlier run is never continued by accident
  out=results/gpu/$card/runs/$(date +%Y%m%d-%H%M%S)
  [ $resume = 1 ] && out=$(ls -d results/gpu/"$card"/runs/* 2>/dev/null | tail -1)
  [ -n "$out" ] || { echo "error: --resume: no earlier run in results/gpu/$card/runs/" >&2; exit 2; }
fi
twins=${TMPDIR:-/tmp}/duodec-twins
mkdir -p "$twins"
# REST's datastore travels (data/rest is carried): built here, from this Python's standard library, it
# would differ from the one the CPU runs used
"$py" -m src.tools.build_rest_datastore --demo
[ -f "$twins/draft-$draft_shape.gguf" ] || "$py" -m src.tools.make_twin demo-draft "$twins/draft-$draft_shape" \
  --shape "$draft_shape" --gguf q5_k_m
stage "datastore and draft twin ready"

snapshot() {   # the run folder into $OUT, whole files only
  [ -n "${OUT:-}" ] && [ -d "$out" ] || return 0
  tar czf "$OUT/run.tgz.part" --exclude='.*.lock' -C "$(dirname "$out")" "$(basename "$out")" &&
    mv "$OUT/run.tgz.part" "$OUT/run.tgz"
  [ -f "$out/report.md" ] && cp "$out/report.md" "$OUT/report.md"
  return 0
}
if [ -n "${OUT:-}" ]; then
  ( while sleep 15; do snapshot; done ) &
  copier=$!
  trap 'kill $copier 2>/dev/null; snapshot' EXIT
fi

methods=ar,sps,sps-gguf,pld,lookahead,rest,pearl,duodec,duodec-paper,duodec-previous,duodec-no-catch-up
where=(--out "$out")
[ $resume = 1 ] && where=(--resume "$out")
stage "decoding for at most $budget s"
"$py" -m src.eval.compare --bench demo --methods "$methods" --limit "$limit" --max-new-tokens "$tokens" \
  --device "$device" --cores split "${threads[@]}" --time-budget "$budget" --warmup 1 \
  --target "twin:$target_shape:demo-target" --hf-draft "twin:$draft_shape:demo-draft" \
  --gguf-draft "$twins/draft-$draft_shape.gguf" "${where[@]}" --reference
stage "done: answers and report.md are in $out/"
