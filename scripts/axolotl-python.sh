#!/usr/bin/env bash
# Prints the axolotl venv's python (scripts/axolotl-requirements.txt, built once outside the
# checkout by scripts/py-venv.sh): the Python that `bioinstruct train --engine axolotl
# --python` runs, as tests/engine.rs asks for it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/py-venv.sh" >&2
py_venv axolotl "$here/axolotl-requirements.txt" >&2
echo "$py"
