#!/usr/bin/env bash
# The real pair on the CPU: Qwen2.5-Coder-1.5B-Instruct (target, HF, 1 thread) and -0.5B-Instruct (draft:
# the official Q4_K_M GGUF in llama.cpp, 1 thread; bf16 HF for SpS and assisted generation). Fetches the pair
# if needed, then measures every method and peer, interleaved, over Spec-Bench's six categories and HumanEval,
# in the model's own chat template. Each call writes a new folder under results/qwen-coder-cpu/runs/.
#   bash cmds/real_cpu.sh [--per-category N] [--max-new-tokens N] [--limit N] [--time-budget S] [--resume DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cmds/env.sh
python -m src.tools.fetch_real_pair
# bf16 where the CPU computes it natively (AMX, AVX-512-BF16): verifying 8 tokens then costs about one
dtype=fp32
grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo && dtype=bf16
refs=()
[ -s results/qwen-coder-cpu/REFERENCES ] && refs=(--reference $(cat results/qwen-coder-cpu/REFERENCES))
python -m src.eval.compare --bench spec_bench_humaneval --per-category 4 --max-new-tokens 64 \
  --target qwen-coder-1.5b --hf-draft qwen-coder-0.5b --gguf-draft qwen-coder-0.5b-gguf --dtype "$dtype" \
  --device cpu --target-threads 1 --draft-threads 1 --warmup 1 --time-budget 4800 --under results/qwen-coder-cpu \
  "${refs[@]}" "$@"
