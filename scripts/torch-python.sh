#!/usr/bin/env bash
# Prints the torch venv's python (scripts/torch-venv.sh builds it once, outside the checkout):
# the Python that `bioinstruct train --engine accelerate --python` runs, as tests/engine.rs
# asks for it.
set -euo pipefail
source "$(dirname "$0")/torch-venv.sh" >&2
echo "$py"
