#!/usr/bin/env bash
# Upstream grid, baselines (Lookahead with upstream's level 5, window 7, guess 7): Llama-2-7b target; SpS drafts with vicuna-68m (HF, on the target's device).
cd "$(dirname "$0")/.." && source cmds/env.sh && source cmds/grid.sh
SHORT_QA_RAG=1 run_grid llama-2-7b "ar:ar" "sps:sps:--draft vicuna-68m --gamma 5" "pld:pld" "lookahead:lookahead:--level 5 --window 7 --guess 7" "rest:rest"
