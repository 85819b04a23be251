#!/usr/bin/env bash
# lm-evaluation-harness (`--model local-completions`, pinned in
# scripts/lmeval-requirements.txt, a venv outside the checkout) pointed at `bioinstruct serve`
# scores the shared PubMedQA file as `bioinstruct eval run --mode loglikelihood` does on the same
# weights; scripts/check_serve_lmeval.py compares the two. Not part of scripts/test.sh: the
# venv holds PyTorch (lm-eval imports it), several GB.
#
# Environment: LIMIT (items, default 40), BIOINSTRUCT_TEST_GGUF (the model file).
set -euo pipefail
cd "$(dirname "$0")/.."

limit=${LIMIT:-40}
gguf=${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
pubmedqa=${BIOINSTRUCT_BENCHMARKS:-../shared/benchmarks}/pubmedqa/pqal_trainval.json
scripts/fetch-test-model.sh
source scripts/py-venv.sh
py_venv lmeval scripts/lmeval-requirements.txt
cargo build --release --quiet
bin=target/release/bioinstruct
lscpu | grep -m1 "Model name" || true

work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
export BIOINSTRUCT_HOME=$work/home HF_HUB_OFFLINE=1

"$bin" models export-tokenizer --model "$gguf" --out "$work/tokenizer"
"$bin" eval run --model "$gguf" --task pubmedqa --data "$pubmedqa" --mode loglikelihood \
  --limit "$limit" --out "$work/eval"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --model "$gguf" --port "$port" 2>"$work/serve.log" &
server=$!
for _ in $(seq 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
"$py" scripts/check_serve_lmeval.py "http://127.0.0.1:$port/v1/completions" "$work/tokenizer" \
  "$work/eval" "$work"
