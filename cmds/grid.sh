# Sourced by the upstream-grid scripts: run_grid TARGET_NAME SPS_DRAFT METHOD_SPECS...
# A METHOD_SPEC is "label:method[:extra flags]". Every bench of the study; 128 new tokens
# (32 for qa and rag when SHORT_QA_RAG=1, as upstream's Llama scripts), 10 warm-up questions, greedy.
# A smoke size: GRID_LIMIT=N questions per bench, GRID_TOKENS=N new tokens, GRID_BENCHES="qa humaneval" some benches.
set -euo pipefail
BENCHES=${GRID_BENCHES:-"mt_bench translation summarization qa math_reasoning rag humaneval"}

run_grid() {
  local target=$1; shift
  python -m src.utils check "$target" "$@"
  for bench in $BENCHES; do
    local n=128
    if [ "${SHORT_QA_RAG:-0}" = 1 ] && { [ "$bench" = qa ] || [ "$bench" = rag ]; }; then n=32; fi
    n=${GRID_TOKENS:-$n}
    local size_flags=(--warmup "${GRID_WARMUP:-10}")
    [ -n "${GRID_LIMIT:-}" ] && size_flags+=(--limit "$GRID_LIMIT")
    local template_flags=()
    [ "$bench" = humaneval ] && template_flags=(--template raw)
    for spec in "$@"; do
      IFS=: read -r label method extra <<< "$spec"
      # shellcheck disable=SC2086
      python -m src.eval.inference --method "$method" --target "$target" --bench "$bench" \
        --answer-file "${GRID_OUT:-results}/$target/$bench/$label.jsonl" --max-new-tokens "$n" \
        "${size_flags[@]}" "${template_flags[@]}" $extra
    done
    for spec in "$@"; do
      IFS=: read -r label _ <<< "$spec"
      [ "$label" = ar ] && continue
      python -m src.eval.speed --file-path "${GRID_OUT:-results}/$target/$bench/$label.jsonl" \
        --base-path "${GRID_OUT:-results}/$target/$bench/ar.jsonl"
    done
  done
}
