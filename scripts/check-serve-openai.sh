#!/usr/bin/env bash
# Drives a running `bioinstruct serve` with the official OpenAI Python client (pinned in
# scripts/serve-requirements.txt, installed once into a venv outside the checkout, see
# scripts/py-venv.sh): the models list, chat with and without streaming on every model
# served, and completions with echo and logprobs. Exits non-zero on the first mismatch.
#
# Usage: scripts/check-serve-openai.sh BASE_URL   (e.g. http://127.0.0.1:8000/v1)
#        scripts/check-serve-openai.sh --install  (build the venv only)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 BASE_URL | --install" >&2; exit 2; }
source "$here/py-venv.sh"
py_venv serve-openai "$here/serve-requirements.txt"
[ "$1" = --install ] && exit 0
exec "$py" "$here/serve_openai_check.py" "$1"
