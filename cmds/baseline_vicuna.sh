#!/usr/bin/env bash
# Upstream grid, baselines (Lookahead with upstream's level 5, window 7, guess 7): Vicuna-7b-v1.5 target; SpS drafts with vicuna-68m (HF, on the target's device).
cd "$(dirname "$0")/.." && source cmds/env.sh && source cmds/grid.sh
run_grid vicuna-7b-v1.5 "ar:ar" "sps:sps:--draft vicuna-68m --gamma 5" "pld:pld" "lookahead:lookahead:--level 5 --window 7 --guess 7" "rest:rest"
