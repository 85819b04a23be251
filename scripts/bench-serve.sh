#!/usr/bin/env bash
# Serving benchmark: `bioinstruct serve` against llama.cpp's server (PyPI
# llama-cpp-python[server], the venv of scripts/teacher-server.sh) on the same GGUF
# (SmolLM2-135M-Instruct Q4_1) with the same threads, in the same run: CLIENTS concurrent
# streaming clients, REQUESTS chat requests of MAX_TOKENS generated tokens each (greedy).
# Prints the CPU, each server's figures (scripts/bench_serve.py) and the ratios.
#
# llama.cpp's server runs one request at a time (llama-cpp-python's server holds one
# context); it is started with --interrupt_requests False so that a new request waits
# instead of cutting off the one in progress, and every response completes.
#
# Environment: CLIENTS (8), REQUESTS (64), MAX_TOKENS (128), THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${CLIENTS:-8}
requests=${REQUESTS:-64}
max_tokens=${MAX_TOKENS:-128}
threads=${THREADS:-$(nproc)}
gguf=${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}

scripts/teacher-server.sh --install
source scripts/py-venv.sh
py_venv llamacpp scripts/llamacpp-requirements.txt native
llamacpp_py=$py
py_venv serve-openai scripts/serve-requirements.txt
client_py=$py
cargo build --release --quiet
lscpu | grep -m1 "Model name" || true
echo "cores: $(nproc); threads: $threads; $clients clients, $requests requests of $max_tokens tokens"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
pids=()
work=$(mktemp -d)
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(free_port)
RAYON_NUM_THREADS=$threads BIOINSTRUCT_HOME="$work/home" target/release/bioinstruct serve \
  --model "$gguf" --port "$port" --max-running "$clients" 2>"$work/serve.log" &
pids+=($!)
wait_port "$port"
"$client_py" scripts/bench_serve.py bioinstruct "http://127.0.0.1:$port/v1" base \
  "$clients" "$requests" "$max_tokens" | tee -a "$work/results.jsonl"
kill "${pids[0]}"

port=$(free_port)
"$llamacpp_py" -m llama_cpp.server --model "$gguf" --model_alias default --host 127.0.0.1 \
  --port "$port" --n_ctx 4096 --n_threads "$threads" --interrupt_requests False \
  >"$work/llamacpp.log" 2>&1 &
pids+=($!)
wait_port "$port"
"$client_py" scripts/bench_serve.py llama.cpp "http://127.0.0.1:$port/v1" default \
  "$clients" "$requests" "$max_tokens" | tee -a "$work/results.jsonl"

python3 - "$work/results.jsonl" <<'PY'
import json, sys
r = {x["server"]: x for x in map(json.loads, open(sys.argv[1]))}
b, l = r["bioinstruct"], r["llama.cpp"]
print(f"aggregate tokens/s: bioinstruct {b['tokens_per_s']}, llama.cpp {l['tokens_per_s']}: "
      f"{b['tokens_per_s'] / l['tokens_per_s']:.2f}x")
print(f"time to first token p50: {b['ttft_p50_s']} s vs {l['ttft_p50_s']} s; "
      f"p99: {b['ttft_p99_s']} s vs {l['ttft_p99_s']} s")
print(f"complete responses: bioinstruct {b['complete']}/{b['requests']}, "
      f"llama.cpp {l['complete']}/{l['requests']}")
PY
