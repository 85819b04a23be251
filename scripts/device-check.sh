#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU: bioinstruct built with candle's `cuda`
# feature, run on it, one summary table at the end. Meant to finish within 10 minutes (most
# of it the first build of candle's CUDA kernels).
#
#   1. builds the binary and examples/device_check with `--features cuda` (release, in
#      target/cuda-release);
#   2. examples/device_check: logits of a clinical paragraph on the CPU (f32) against the GPU
#      (bf16): perplexity within 3%, the same top-1 token at >= 95% of positions; generation
#      tokens/s on the GPU (the file's Q4_1 blocks, candle's quantized CUDA kernels) and on
#      the CPU;
#   3. a short LoRA run on the GPU (the bundled seeds, 1 epoch, r 8 on q_proj and v_proj):
#      its validation loss must fall; its adapter is then loaded on the CPU by
#      `bioinstruct chat --adapter --device cpu`, which must answer;
#   4. the LoRA step benchmark against PyTorch + PEFT on the same GPU (scripts/bench-train.sh
#      with DEVICE), when a Python with torch built for CUDA can be had (scripts/torch-venv.sh
#      builds one from PyPI; SKIP_PEFT=1 leaves it out).
#
# Needs the CUDA toolkit (nvcc on PATH, or CUDA_ROOT) and the driver. Environment: DEVICE
# (cuda:0; `cpu` is a dry run of this script on a machine without a GPU: the same steps,
# built without `cuda`, CPU against CPU), CUDA_COMPUTE_CAP (read from nvidia-smi when unset),
# SKIP_PEFT.
# Exit status: 0 when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

device=${DEVICE:-cuda:0}
features=(--features cuda)
target=target/cuda-release
if [ "$device" = cpu ]; then
  echo "device-check: DEVICE=cpu, a dry run without a GPU" >&2
  features=()
  target=target
else
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "device-check: no NVIDIA GPU here (nvidia-smi finds none); nothing was run" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
    export CUDA_COMPUTE_CAP
  fi
fi
scripts/fetch-test-model.sh
gguf=$(realpath .models/SmolLM2-135M-Instruct.Q4_1.gguf)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BIOINSTRUCT_HOME=$work/home HF_HUB_OFFLINE=1
rows=()
status=0
row() { rows+=("${1//|//}|${2//|//}|$3"); [ "$3" = pass ] || [ "$3" = skipped ] || status=1; }

start=$(date +%s)
cargo build --locked --release "${features[@]}" --target-dir "$target" --bin bioinstruct --example device_check
bin=$target/release/bioinstruct
row "build ${features[*]:-(CPU)}" "$(( $(date +%s) - start )) s" pass

# 2. Logits and generation.
if "$target/release/examples/device_check" "$gguf" "$device" > "$work/checks.jsonl"; then ok=pass; else ok=fail; fi
cat "$work/checks.jsonl"
while IFS='|' read -r name figure verdict; do
  row "$name" "$figure" "$verdict"
done < <(python3 - "$work/checks.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    c = json.loads(line)
    verdict = "pass" if c["pass"] else "fail"
    if c["check"] == "logits":
        print(f"logits CPU f32 vs {c['device']} {c['dtype']}|perplexity {c['perplexity_cpu']:.3f} vs {c['perplexity_device']:.3f} ({100*c['perplexity_rel']:.2f}%), top-1 {100*c['top1_agreement']:.1f}%, largest logit difference {c['max_abs_logit_diff']:.3f}|{verdict}")
    else:
        print(f"{c['check']} ({c['device']})|prompt {c['prompt_tokens_per_s']:.0f} tokens/s, generation {c['generation_tokens_per_s']:.1f} tokens/s|{verdict}")
PY
)
[ "$ok" = pass ] || status=1

# 3. A short LoRA run on the GPU, its adapter on the CPU.
cat > "$work/run.toml" <<EOF
[model]
base = "$gguf"
device = "$device"
[data]
files = ["seeds"]
max_seq_len = 256
validation_fraction = 0.1
[lora]
r = 8
lora_alpha = 16
target_modules = ["q_proj", "v_proj"]
[optim]
learning_rate = 1e-3
epochs = 1
micro_batch_size = 4
warmup_steps = 2
[run]
output_dir = "$work/runs"
checkpoint_every = 0
EOF
"$bin" seeds list > /dev/null # the workspace's seed file
start=$(date +%s)
if "$bin" train --config "$work/run.toml" > "$work/train.log" 2>&1; then
  run_dir=$(find "$work/runs" -mindepth 1 -maxdepth 1 -type d | head -1)
  verdict_loss=$(python3 - "$run_dir/metrics.jsonl" <<'PY'
import json, sys
vals = [m["val_loss"] for m in map(json.loads, open(sys.argv[1])) if "val_loss" in m]
ok = len(vals) >= 2 and vals[-1] < vals[0]
print(f"validation loss {vals[0]:.4f} -> {vals[-1]:.4f}|{'pass' if ok else 'fail'}" if vals else "no validation loss|fail")
PY
)
  row "LoRA run on $device ($(( $(date +%s) - start )) s)" "${verdict_loss%|*}" "${verdict_loss##*|}"
  if reply=$("$bin" chat --model "$gguf" --device cpu --adapter "$run_dir/final" --temperature 0 \
      --max-new-tokens 24 "What is sepsis?" 2>"$work/chat.err") && [ -n "$reply" ]; then
    row "its adapter in chat on the CPU" "$(echo "$reply" | head -1 | tr -d '|' | cut -c1-60)" pass
  else
    row "its adapter in chat on the CPU" "$(tail -1 "$work/chat.err")" fail
  fi
else
  tail -20 "$work/train.log"
  row "LoRA run on $device" "$(tail -1 "$work/train.log" | cut -c1-80)" fail
fi

# 4. The LoRA step against PyTorch + PEFT on the same GPU.
if [ -n "${SKIP_PEFT:-}" ]; then
  row "LoRA step vs PyTorch + PEFT" "SKIP_PEFT set" skipped
elif DEVICE=$device CARGO_FEATURES=${features[1]:-} CARGO_TARGET_DIR=$target ROUNDS=2 scripts/bench-train.sh > "$work/bench.log" 2>&1; then
  row "LoRA step vs PyTorch + PEFT ($device, bf16)" "$(grep -m1 -i 'ratio' "$work/bench.log" | tr -s ' ' | cut -c1-90)" pass
  tail -8 "$work/bench.log"
else
  row "LoRA step vs PyTorch + PEFT" "$(tail -1 "$work/bench.log" | cut -c1-80)" fail
fi

echo
printf '| %-44s | %-80s | %-7s |\n' check result verdict
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..82})" "$(printf -- '-%.0s' {1..9})"
for r in "${rows[@]}"; do
  IFS='|' read -r name figure verdict <<< "$r"
  printf '| %-44s | %-80s | %-7s |\n' "$name" "$figure" "$verdict"
done
exit $status
