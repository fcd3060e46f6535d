#!/usr/bin/env bash
# The real pair on the CPU: Qwen2.5-Coder-1.5B-Instruct (target, HF) and -0.5B-Instruct (draft: the official
# Q4_K_M GGUF in llama.cpp; bf16 HF for SpS and assisted generation). Fetches the pair if needed, then measures
# the methods and peers, interleaved, over Spec-Bench's six categories and HumanEval (4 questions each, MT-bench's
# second turns included, 64 new tokens), in the model's own chat template, in both cores regimes:
#   split  (the headline): the target owns one core, the draft the other; every row of the paper's table and the
#          transformers peers (transformers' plain generate is AR: add it with --methods);
#   shared: every method may use both cores; the rows a CPU-only user would choose between.
# Each regime writes a new folder under results/qwen-coder-cpu/runs/ (about 100 + 40 minutes on 2 cores;
# --per-category 2 halves it).
#   bash cmds/real_cpu.sh [--cores split|shared] [--per-category N] [--max-new-tokens N] [--limit N]
#                         [--time-budget S] [--resume DIR --cores REGIME]
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
  if [ "$regime" = split ]; then
    rows=(--methods ar,hf-assisted,hf-lookup,sps,sps-gguf,pld,lookahead,rest,pearl,duodec --time-budget 6600)
  else
    rows=(--methods ar,hf-lookup,sps-gguf,pld,lookahead,pearl,duodec --time-budget 2700)
  fi
  python -m src.eval.compare --bench spec_bench_humaneval --per-category 4 --max-new-tokens 64 \
    --target qwen-coder-1.5b --hf-draft qwen-coder-0.5b --gguf-draft qwen-coder-0.5b-gguf --dtype "$dtype" \
    --device cpu --cores "$regime" --target-threads 1 --draft-threads 1 --warmup 1 --under results/qwen-coder-cpu \
    "${rows[@]}" "${refs[@]}" "${args[@]}"
done
