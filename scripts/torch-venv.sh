#!/usr/bin/env bash
# The torch venv: PyTorch (CPU use), transformers (which reads GGUF with `gguf_file=`) and
# Hugging Face PEFT, pinned in scripts/torch-requirements.txt, the reference stack the LoRA
# scripts compare bioinstruct against; built once outside the checkout (scripts/py-venv.sh).
# Sourced by scripts/check-peft.sh and scripts/bench-train.sh; sets $py.
source "$(dirname "${BASH_SOURCE[0]}")/py-venv.sh"
py_venv torch "$(dirname "${BASH_SOURCE[0]}")/torch-requirements.txt"
