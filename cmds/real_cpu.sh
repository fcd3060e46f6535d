#!/usr/bin/env bash
# The real pair on the CPU: Qwen2.5-Coder-1.5B-Instruct (target, HF) and -0.5B-Instruct (draft: the official
# Q4_K_M GGUF in llama.cpp; bf16 HF for SpS and assisted generation). Fetches the pair if needed, then measures
# the methods, interleaved, over Spec-Bench's six categories and HumanEval (the test split: questions 10-13 of
# each, 0-based, which no default was chosen on; MT-bench's second turns included; 64 new tokens), in the model's
# own chat template, in both cores regimes:
#   split  (the headline): the target owns one core, the draft the other;
#   shared: every method may use both cores.
# Rows: AR, SpS-GGUF, PLD, the paper's preset, DuoDecoding and its previous default, --catch-up 0 (--methods: the
# transformers peers, REST, Lookahead, PEARL). Each regime writes a new folder under results/qwen-coder-cpu/runs/
# (about 30 minutes each on 2 cores). Defaults are chosen with --split dev (the first 4 of each category).
#   bash cmds/real_cpu.sh [--cores split|shared] [--split dev|test] [--per-category N] [--temperature T]
#                         [--methods LIST] [--time-budget S] [--resume DIR --cores REGIME]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
regimes=(split shared)
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) regimes=("$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ " ${args[*]} " == *" --resume "* ]] && [ ${#regimes[@]} -ne 1 ]; then
  echo "error: --resume continues one regime's run: give --cores split|shared with it" >&2
  exit 2
fi
python -m src.tools.fetch_real_pair
# bf16 where the CPU computes it natively (AMX, AVX-512-BF16): verifying 8 tokens then costs about one
dtype=fp32
grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo && dtype=bf16
for regime in "${regimes[@]}"; do
  refs=()
  [ -s "results/qwen-coder-cpu/REFERENCES-$regime" ] && refs=(--reference $(cat "results/qwen-coder-cpu/REFERENCES-$regime"))
  rows=()
  [[ " ${args[*]} " == *" --methods "* ]] || rows=(--methods ar,sps-gguf,pld,duodec-paper,duodec,duodec-no-catch-up)
  split=()
  [[ " ${args[*]} " == *" --split "* ]] || split=(--split test)
  python -m src.eval.compare --bench spec_bench_humaneval --max-new-tokens 64 "${split[@]}" \
    --target qwen-coder-1.5b --hf-draft qwen-coder-0.5b --gguf-draft qwen-coder-0.5b-gguf --dtype "$dtype" \
    --device cpu --cores "$regime" --target-threads 1 --draft-threads 1 --warmup 1 --under results/qwen-coder-cpu \
    "${rows[@]}" "${refs[@]}" "${args[@]}"
done
