#!/usr/bin/env bash
# Upstream grid, DuoDecoding: Llama-2-7b target, vicuna-68m GGUF draft on the CPU; this project's default, PEARL (the same rounds with the HF
# draft on the target's device), and the paper's scheme at upstream's gamma of 24.
cd "$(dirname "$0")/.." && source cmds/env.sh && source cmds/grid.sh
SHORT_QA_RAG=1 run_grid llama-2-7b "ar:ar" \
  "duodec:duodec:--draft vicuna-68m-gguf --gamma auto --draft-threads ${DRAFT_THREADS:-16}" \
  "pearl:pearl:--draft vicuna-68m --gamma 5" \
  "duodec-paper:duodec:--draft vicuna-68m-gguf --preset paper --gamma 24 \
--draft-threads ${DRAFT_THREADS:-16}"
