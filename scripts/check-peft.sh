#!/usr/bin/env bash
# PEFT interoperability check, on SmolLM2-135M-Instruct from the same GGUF (dequantized to
# float32 on both sides), greedy, first 20 tokens:
# - an adapter saved by bioinstruct, loaded by Hugging Face PEFT, continues the prompt as
#   `bioinstruct chat --adapter` does;
# - the folder `bioinstruct adapters merge` writes, loaded by transformers, does too;
# - an adapter made and saved by PEFT (all seven projections) gives in `bioinstruct chat
#   --adapter` what it gives in PEFT.
#
# Usage: scripts/check-peft.sh [ADAPTER_DIR]
# Without ADAPTER_DIR, trains one first (1 epoch on the seeds at a high learning rate, about
# two minutes on 2 cores) so that the adapter visibly changes the model.
# Environment: PROMPT, NEW_TOKENS (20). Exits non-zero when the continuations differ.
set -euo pipefail
cd "$(dirname "$0")/.."
new_tokens=${NEW_TOKENS:-20}
prompt=${PROMPT:-"List three first-line treatments for type 2 diabetes."}
gguf=$(realpath -m "${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}")  # fetched below

scripts/fetch-test-model.sh
source scripts/torch-venv.sh
cargo build --release --quiet
bin=target/release/bioinstruct
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BIOINSTRUCT_HOME=$work/home HF_HUB_OFFLINE=1

adapter=${1:-}
if [ -z "$adapter" ]; then
  cat > "$work/run.toml" <<TOML
[model]
base = "$gguf"
[optim]
learning_rate = 2e-3
epochs = 1
warmup_steps = 2
[run]
output_dir = "$work/runs"
checkpoint_every = 0
TOML
  "$bin" train --config "$work/run.toml"
  adapter=$(ls -d "$work"/runs/*/final)
fi

ours=$("$bin" chat --model "$gguf" --gguf-compute float --adapter "$adapter" \
  --temperature 0 --repetition-penalty 1.0 --max-new-tokens "$new_tokens" "$prompt" 2>/dev/null)
base_only=$("$bin" chat --model "$gguf" --gguf-compute float \
  --temperature 0 --repetition-penalty 1.0 --max-new-tokens "$new_tokens" "$prompt" 2>/dev/null)
"$bin" adapters merge "$adapter" --base "$gguf" --out "$work/merged"
"$py" scripts/peft_check.py "$gguf" "$adapter" "$prompt" --merged "$work/merged" \
  --make-adapter "$work/peft-made" --max-new-tokens "$new_tokens" > "$work/peft.json"
ours_on_peft_made=$("$bin" chat --model "$gguf" --gguf-compute float --adapter "$work/peft-made" \
  --temperature 0 --repetition-penalty 1.0 --max-new-tokens "$new_tokens" "$prompt" 2>/dev/null)

python3 - "$work/peft.json" "$ours" "$base_only" "$ours_on_peft_made" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ours, base, ours_made = (a.strip() for a in sys.argv[2:5])
peft, merged, made = (r[k]["text"].strip() for k in ("peft", "merged", "peft_made"))
print(f"base model alone:                 {base!r}")
print(f"bioinstruct chat --adapter:       {ours!r}")
print(f"PEFT on transformers:             {peft!r}")
print(f"merged folder, transformers:      {merged!r}")
print(f"PEFT-made adapter, in PEFT:       {made!r}")
print(f"PEFT-made adapter, in bioinstruct: {ours_made!r}")
print("our adapter changes the output:   " + ("yes" if ours != base else "NO (weak check)"))
print("PEFT's adapter changes the output: " + ("yes" if made != base else "NO (weak check)"))
ok = ours == peft == merged and made == ours_made
print("same greedy continuations:        " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
PY
