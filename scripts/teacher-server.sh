#!/usr/bin/env bash
# A real OpenAI-compatible teacher on loopback: llama.cpp's server (PyPI llama-cpp-python,
# built the first time into a venv outside the checkout (scripts/py-venv.sh): compiling
# llama.cpp takes several minutes)
# serving the SmolLM2-135M-Instruct GGUF that scripts/fetch-test-model.sh fetches.
#
#   scripts/teacher-server.sh --install   build the venv and fetch the model, then exit
#   scripts/teacher-server.sh [PORT]      serve on 127.0.0.1:PORT (default 8080) until killed
#
# Then: bioinstruct generate --teacher llamacpp --target 20 (the built-in llamacpp teacher
# points at 127.0.0.1:8080). tests/real_generate.rs starts it on a free port.
# Environment: THREADS (default: all cores), BIOINSTRUCT_TEST_GGUF (the model file).
set -euo pipefail
cd "$(dirname "$0")/.."

gguf=${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}

# llama-cpp-python[server] (scripts/llamacpp-requirements.txt) compiles llama.cpp on install.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
source scripts/py-venv.sh
py_venv llamacpp scripts/llamacpp-requirements.txt native
scripts/fetch-test-model.sh >&2

if [ "${1:-}" = "--install" ]; then
  exit 0
fi
port=${1:-8080}
exec "$py" -m llama_cpp.server --model "$gguf" --model_alias default \
  --host 127.0.0.1 --port "$port" --n_ctx 4096 --n_threads "${THREADS:-$(nproc)}"
