#!/usr/bin/env bash
# Recomputes every metric of an evaluation folder (what `bioinstruct eval run --out DIR`
# wrote) from its predictions files with the reference tools: scikit-learn (as PubMedQA's
# evaluation.py), seqeval and rouge-score, pinned in scripts/eval-requirements.txt and
# installed once into a venv outside the checkout (see scripts/py-venv.sh). Each metric must
# equal the report's to 1e-6 (TOLERANCE). Exits non-zero on any difference.
#
# Usage: scripts/check-eval.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
source "$here/py-venv.sh"
py_venv eval "$here/eval-requirements.txt"
exec "$py" "$here/check_eval.py" "$1" "${TOLERANCE:-1e-6}"
