#!/usr/bin/env bash
# The paper's regime in one command, with cost-matched twins (no download): a Llama-2-7B-shaped twin of the
# demo target on the GPU (bf16), a vicuna-68m-shaped twin of the demo draft as Q5_K_M on the CPU cores, and
# the same draft twin in HF on the GPU for SpS as upstream runs it. Every method, interleaved question by
# question; answers and report.md in results/gpu/<card>/.
#   bash cmds/gpu_check.sh [--limit 20] [--budget 330]   # on a GPU machine; installs wheels/ when imports are missing
#   bash cmds/gpu_check.sh --cpu-smoke                  # the same script on the CPU: tiny twins, 2 prompts
# Speedups measured so are the paper regime's at the demo pair's acceptance, not Llama-2's.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's environment where cmds/test.sh or demo.sh made one; else the machine's python (a GPU image)
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
limit=20 budget=330 smoke=0
while [ $# -gt 0 ]; do
  case $1 in
    --limit) limit=$2; shift 2;;
    --budget) budget=$2; shift 2;;   # seconds of decoding; what was answered by then is reported
    --cpu-smoke) smoke=1; shift;;
    *) echo "error: unknown argument $1" >&2; exit 2;;
  esac
done

if ! "$py" -c "import llama_cpp, gguf, draftretriever, fastchat, shortuuid" 2>/dev/null; then
  [ -d wheels ] || { echo "error: packages missing and no wheels/: run cmds/bundle_offline.sh where pip works" >&2; exit 1; }
  site=${TMPDIR:-/tmp}/duodec-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ $smoke = 1 ]; then
  device=cpu target_shape=512x5x1024 draft_shape=256x5x512 limit=2 tokens=16 threads=1
  out=results/tmp/gpu-smoke
  rm -rf "$out"
else
  device=cuda target_shape=llama-2-7b draft_shape=vicuna-68m tokens=128
  cores=$(nproc)
  threads=${DRAFT_THREADS:-$(( cores > 3 ? cores - 2 : 1 ))}   # two cores stay with the target's thread
  card=$("$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
  out=results/gpu/$card
fi
twins=${TMPDIR:-/tmp}/duodec-twins
mkdir -p "$twins"
[ -f data/rest/demo.idx ] || "$py" -m src.tools.build_rest_datastore --tokenizer data/models/demo-target \
  --stdlib-train --out data/rest/demo.idx
[ -f "$twins/draft-$draft_shape.gguf" ] || "$py" -m src.tools.make_twin demo-draft "$twins/draft-$draft_shape" \
  --shape "$draft_shape" --gguf q5_k_m
methods=ar,sps,sps-gguf,pld,rest,duodec,duodec-paper,duodec-theta,duodec-thread
where=(--out "$out")
ls "$out"/*.jsonl >/dev/null 2>&1 && where=(--resume "$out")   # a rerun continues the first run
"$py" -m src.eval.compare --bench demo --methods "$methods" --limit "$limit" --max-new-tokens "$tokens" \
  --device "$device" --draft-threads "$threads" --time-budget "$budget" --warmup 1 \
  --target "twin:$target_shape:demo-target" --hf-draft "twin:$draft_shape:demo-draft" \
  --gguf-draft "$twins/draft-$draft_shape.gguf" "${where[@]}" --reference
echo "answers and report.md are in $out/"
