#!/usr/bin/env bash
# Upstream grid, DuoDecoding: Vicuna-7b-v1.5 target, vicuna-68m GGUF draft on the CPU; this project's default, PEARL (the same rounds with the HF
# draft on the target's device), and the paper's scheme at upstream's gamma of 16.
cd "$(dirname "$0")/.." && source cmds/env.sh && source cmds/grid.sh
run_grid vicuna-7b-v1.5 "ar:ar" \
  "duodec:duodec:--draft vicuna-68m-gguf --gamma auto --draft-threads ${DRAFT_THREADS:-16}" \
  "pearl:pearl:--draft vicuna-68m --gamma 5" \
  "duodec-paper:duodec:--draft vicuna-68m-gguf --preset paper --gamma 16 \
--draft-threads ${DRAFT_THREADS:-16}"
