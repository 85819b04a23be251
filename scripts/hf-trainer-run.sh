#!/usr/bin/env bash
# A real Hugging Face Trainer run on a tiny Llama (scripts/hf_trainer_run.py), in the torch
# venv (scripts/torch-venv.sh, built once outside the checkout): what tests/watch.rs follows
# with `bioinstruct runs watch`. `--install` only builds the venv.
#
# Usage: scripts/hf-trainer-run.sh OUTPUT_DIR [MAX_STEPS] [STEP_DELAY] | --install
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/torch-venv.sh"
[ "${1:-}" = --install ] && exit 0
exec "$py" "$here/hf_trainer_run.py" "$@"
