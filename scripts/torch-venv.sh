#!/usr/bin/env bash
# Builds .venv-torch: PyTorch (CPU use), transformers (which reads GGUF with `gguf_file=`) and
# Hugging Face PEFT, the reference stack the LoRA scripts compare bioinstruct against.
# Sourced by scripts/check-peft.sh and scripts/bench-train.sh; sets $py.
set -euo pipefail
venv=.venv-torch
py=$venv/bin/python
if ! "$py" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
  echo "installing torch, transformers, peft and gguf into $venv (a few GB, a few minutes)" >&2
  python3 -m venv "$venv"
  "$py" -m pip install -q --disable-pip-version-check --upgrade pip
  "$py" -m pip install -q --disable-pip-version-check \
    "torch>=2.4" "transformers>=4.46" "peft>=0.13" "gguf>=0.10" safetensors
fi
