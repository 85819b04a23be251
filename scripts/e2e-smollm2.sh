#!/usr/bin/env bash
# The end-to-end run of "What the workbench found on SmolLM2-135M" (README): from the 80
# seeds, generate tasks with the built-in SmolLM2 teacher, train SmolLM2-135M-Instruct on
# seeds plus the kept tasks, evaluate base and tuned on the three shared benchmarks, and run
# the category grid (reports/smollm2-135m/grid.toml), one cell of which trains on PubMedQA
# instructions made from the second half of the shared PubMedQA file (items 250-499) and is
# scored on items of the first.
#
# Every step is resumable: run the script again and each step goes on from its files (the
# generated tasks, the run's checkpoints, the evaluation cache, the grid's cells). Each
# step's wall time (and the CPU, `lscpu`'s model name) is appended to
# reports/smollm2-135m/timings.tsv. Usage: scripts/e2e-smollm2.sh [STEP...]
# (steps: generate train eval grid; default all).
set -euo pipefail
cd "$(dirname "$0")/.."

out=reports/smollm2-135m
bench=${BIOINSTRUCT_BENCHMARKS:-../shared/benchmarks}
export BIOINSTRUCT_HOME=${BIOINSTRUCT_HOME:-$HOME/.cache/bioinstruct/e2e-home}
export HF_HUB_OFFLINE=1
scripts/fetch-test-model.sh
model=$PWD/.models/SmolLM2-135M-Instruct.Q4_1.gguf
cargo build --release --locked
bin=$PWD/target/release/bioinstruct
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)

timed() { # STEP COMMAND...
  local step=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  printf '%s\t%s\t%s\t%s\n' "$step" "$((end - start))" "$cpu" "$(date -u +%FT%TZ)" >>"$out/timings.tsv"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(generate train eval grid)
mkdir -p "$out"
for step in "${steps[@]}"; do
  case $step in
    generate)
      timed generate "$bin" generate --teacher local --model "$model" --target 100 \
        --max-tokens 200 --out "$out/generated" ;;
    train)
      timed train "$bin" train --config "$out/train.toml" ;;
    eval)
      run=$(ls -d "$BIOINSTRUCT_HOME"/data/runs/*seeds-generated* | tail -1)
      timed eval "$bin" eval run --model "$model" --adapter "$run" --limit 40 --max-new-tokens 128 \
        --task pubmedqa --data "$bench/pubmedqa/pqal_trainval.json" \
        --task ncbi_disease --data "$bench/ncbi-disease/devel.tsv" \
        --task mts_dialog --data "$bench/mts-dialog/MTS-Dialog-ValidationSet.csv" \
        --out "$out/eval-seeds-generated" ;;
    grid)
      "$bin" data from-benchmark --task pubmedqa "$bench/pubmedqa/pqal_trainval.json" \
        --items 250.. --no-test-check -o "$out/pubmedqa-train-half.jsonl"
      timed grid "$bin" experiment run "$out/grid.toml"
      mkdir -p "$out/grid"
      cp "$BIOINSTRUCT_HOME/data/experiments/smollm2-grid/"{matrix.json,matrix.md,plan.json} "$out/grid/" ;;
    *) echo "unknown step $step (generate train eval grid)" >&2; exit 2 ;;
  esac
done
