#!/usr/bin/env bash
# Keypress-to-screen latency of the workbench in tmux (a benchmark, not a test; see
# scripts/bench_latency.py for how each figure is measured):
#   1. both Chat columns streaming SmolLM2-135M-Instruct (the tuned one with a checkpoint of
#      the run below) while a LoRA run on the same model trains in the background;
#   2. RECORDS (25,005, the paper's size) seed records and kept generated tasks: moving,
#      searching, and a run appending 100 tasks.
# Prints the CPU, then count, median, 90th percentile and maximum of each action.
#
# Environment: RECORDS (25005).
set -euo pipefail
cd "$(dirname "$0")/.."

records=${RECORDS:-25005}
command -v tmux >/dev/null || { echo "bench-latency.sh needs tmux" >&2; exit 1; }
scripts/fetch-test-model.sh
gguf=$(realpath "${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}")
cargo build --release --quiet
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/bioinstruct")
lscpu | grep -m1 "Model name" || true
echo "cores: $(nproc)"

work=$(mktemp -d)
cleanup() {
  if [ -n "${run_id:-}" ]; then
    BIOINSTRUCT_HOME="$work/stream" "$bin" runs stop "$run_id" --wait >/dev/null 2>&1 || true
  fi
  tmux kill-session -t bioinstruct-latency 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. A LoRA run that checkpoints after every step and goes on for a long time.
mkdir -p "$work/stream"
sed -e "s|base = \"HuggingFaceTB/SmolLM2-135M-Instruct\"|base = \"$gguf\"|" \
    -e "s|epochs = 3|epochs = 50|" \
    -e "s|gradient_accumulation_steps = 4|gradient_accumulation_steps = 1|" \
    -e "s|checkpoint_every = 20|checkpoint_every = 1|" \
    -e "s|eval_every = 10|eval_every = 0|" \
    configs/smollm2-135m-cpu.toml > "$work/stream/run.toml"
mkdir -p "$work/stream/config"
printf '[model]\nbase = "%s"\n[generation]\nmax_new_tokens = 1024\n' "$gguf" \
  > "$work/stream/config/config.toml"
export HF_HUB_OFFLINE=1
out=$(BIOINSTRUCT_HOME="$work/stream" "$bin" train --config "$work/stream/run.toml" --detach)
run_id=$(echo "$out" | awk 'NR==1 {sub(":", "", $2); print $2}')
echo "training $run_id in the background"
for _ in $(seq 600); do
  ls "$work"/stream/data/runs/"$run_id"/checkpoint-*/adapter_config.json >/dev/null 2>&1 && break
  sleep 0.5
done
python3 scripts/bench_latency.py stream "$bin" "$work/stream"
BIOINSTRUCT_HOME="$work/stream" "$bin" runs stop "$run_id" --wait >/dev/null 2>&1 || true
run_id=

# 2. The paper's scale.
mkdir -p "$work/scale"
python3 scripts/bench_latency.py scale "$bin" "$work/scale" "$records"
