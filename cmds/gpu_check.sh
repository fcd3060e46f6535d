#!/usr/bin/env bash
# DuoDecoding against AR with the target on the GPU and the draft on the CPU cores, in a few minutes.
# For a machine that has torch (CUDA) and transformers but no network: llama-cpp-python comes from a
# wheel built elsewhere with portable CPU flags, e.g. on a machine with the same Python:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel --no-deps llama-cpp-python==0.3.36 -w wheels/
# and the other pure-Python packages from `pip download -r requirements.txt -d wheels/`.
#   bash cmds/gpu_check.sh [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-40}
if ! python -c "import llama_cpp" 2>/dev/null; then
  python -m pip install --no-index --find-links wheels/ llama-cpp-python gguf draftretriever fschat shortuuid
fi
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
print("GPU:", torch.cuda.get_device_name(0))
PY
card=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
out=results/gpu/$card
python -m src.eval.compare --bench demo --methods ar,sps-gguf,duodec,duodec-k1,duodec-tree,duodec-tree-full \
  --limit "$limit" --device cuda \
  --draft-threads "${DRAFT_THREADS:-8}" --out "$out"
python -m src.eval.report "$out"
