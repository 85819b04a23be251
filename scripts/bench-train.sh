#!/usr/bin/env bash
# Training benchmark: LoRA steps of bioinstruct (candle) against PyTorch + transformers + PEFT
# in the same run, on the same machine, with identical settings: SmolLM2-135M-Instruct from
# the same GGUF dequantized to float32, r=8, lora_alpha=16, lora_dropout=0.05, q_proj+v_proj,
# one sequence of SEQ tokens (the same ids on both sides), batch 1, AdamW lr 2e-4, gradient
# clipping at 1.0, the same number of threads. Each round runs both engines (interleaved);
# each engine does WARMUP steps, then STEPS timed ones. Prints every run, the medians of the
# per-round medians, and the ratios (bioinstruct / PyTorch: below 1 is faster or smaller).
#
# Environment: ROUNDS (3), STEPS (6), WARMUP (2), SEQ (256), THREADS (all cores), TARGETS (the
# adapted projections, comma-separated: q_proj,v_proj; all seven with
# TARGETS=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj), DEVICE
# (cpu; cuda:0 trains both in bf16 on the GPU, in a build with `--features cuda`, which
# CARGO_FEATURES=cuda asks for).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
steps=${STEPS:-6}
warmup=${WARMUP:-2}
seq_len=${SEQ:-256}
threads=${THREADS:-$(nproc)}
gguf=$(realpath -m "${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}")  # fetched below

scripts/fetch-test-model.sh
source scripts/torch-venv.sh
device=${DEVICE:-cpu}
features=()
[ -n "${CARGO_FEATURES:-}" ] && features=(--features "$CARGO_FEATURES")
cargo build --release --quiet "${features[@]}" --example bench_train
export BIOINSTRUCT_BENCH_DEVICE=$device
bench=${CARGO_TARGET_DIR:-target}/release/examples/bench_train
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bench" ids "$gguf" "$seq_len" > "$work/ids.json"

results=$work/results.jsonl
for round in $(seq 1 "$rounds"); do
  "$bench" run "$gguf" "$work/ids.json" "$steps" "$warmup" | tee -a "$results"
  "$py" scripts/bench_train_peft.py "$gguf" "$work/ids.json" "$steps" "$warmup" "$threads" "$device" 2>/dev/null | tee -a "$results"
done

python3 - "$results" "$threads" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
engines = sorted({r["engine"] for r in runs}, key=lambda e: not e.startswith("bioinstruct"))
keys = ("step_s", "forward_s", "backward_s", "optimizer_s", "tokens_per_s", "peak_rss_bytes")
med = {e: {k: statistics.median(r[k] for r in runs if r["engine"] == e) for k in keys} for e in engines}
ours, ref = engines
print(f"\nmedians over {len(runs) // 2} interleaved rounds; seq {runs[0]['seq']}, batch 1, {sys.argv[2]} threads:")
for e in engines:
    m = med[e]
    print(f"  {e:34} step {m['step_s']:.3f} s (forward {m['forward_s']:.3f}, backward {m['backward_s']:.3f}, "
          f"optimizer {m['optimizer_s']:.3f}); {m['tokens_per_s']:.0f} tokens/s; peak RSS {m['peak_rss_bytes'] / 1e9:.2f} GB")
r = {k: med[ours][k] / med[ref][k] for k in keys}
print(f"  ratio (bioinstruct / PyTorch+PEFT): step time {r['step_s']:.2f}x (forward {r['forward_s']:.2f}x, "
      f"backward {r['backward_s']:.2f}x), tokens/s {r['tokens_per_s']:.2f}x, peak RSS {r['peak_rss_bytes']:.2f}x")
first = {e: [r["losses"][0] for r in runs if r["engine"] == e][0] for e in engines}
print(f"  first-step loss: bioinstruct {first[ours]:.4f}, PyTorch {first[ref]:.4f}")
PY
