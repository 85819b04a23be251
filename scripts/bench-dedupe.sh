#!/usr/bin/env bash
# Dedupe benchmark: `bioinstruct dedupe` (Alpaca's filters, ROUGE-L <= 0.7 against every kept
# instruction) on a deterministic corpus of 25,005 instruction-like sentences, and, in the same
# run, Python rouge-score's `_score_lcs` (what Alpaca's generate_instruction.py calls once per
# kept instruction) timed on a sample of pairs from the same corpus and extrapolated to the
# number of comparisons bioinstruct made.
#
# Environment: N (25005), SAMPLE (20000 Python comparisons). Uses the eval venv (rouge-score
# 0.1.2), built on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-25005}
sample=${SAMPLE:-20000}
# rouge-score 0.1.2, from the evaluation venv (scripts/eval-requirements.txt, outside the
# checkout: scripts/py-venv.sh).
source scripts/py-venv.sh
py_venv eval scripts/eval-requirements.txt
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/dedupe_corpus.py "$n" "$work/corpus.jsonl"
export BIOINSTRUCT_HOME=$work/home
start=$(date +%s.%N)
target/release/bioinstruct dedupe "$work/corpus.jsonl" --no-seeds --out-dir "$work/out" | tee "$work/ours.txt"
end=$(date +%s.%N)
"$py" scripts/rouge_reference.py "$work/corpus.jsonl" "$sample" > "$work/ref.json"
python3 - "$work/ours.txt" "$work/ref.json" "$start" "$end" "$(nproc)" <<'PY'
import json, re, sys
ours = open(sys.argv[1]).read()
ref = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3])
comparisons = int(re.search(r"(\d+) ROUGE-L comparisons", ours).group(1))
python_s = comparisons * ref["us_per_comparison"] / 1e6
print(f"\nbioinstruct dedupe: {comparisons:,} ROUGE-L comparisons, {wall:.2f} s wall (whole command, {sys.argv[5]} cores)")
print(f"rouge-score _score_lcs: {ref['us_per_comparison']:.1f} µs per comparison ({ref['comparisons']:,} timed);"
      f" the same comparisons would take {python_s:,.0f} s ({python_s / 3600:.2f} h) on one core")
print(f"speedup: {python_s / wall:,.0f}x (bioinstruct wall time vs rouge-score extrapolated)")
PY
