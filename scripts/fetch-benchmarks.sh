#!/usr/bin/env bash
# For a checkout without ../shared/benchmarks (a user's own clone): downloads the publishers'
# files with `bioinstruct eval fetch` (pinned by commit and SHA-256) and lays out the same
# three files the tests read from ../shared/benchmarks:
#   pubmedqa/pqal_trainval.json  (ori_pqal.json without test_ground_truth.json's 500 test ids)
#   ncbi-disease/devel.tsv
#   mts-dialog/MTS-Dialog-ValidationSet.csv
# in a cache folder outside the checkout (~/.cache/bioinstruct/test-benchmarks), once. Prints
# the folder, for BIOINSTRUCT_BENCHMARKS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${XDG_CACHE_HOME:-$HOME/.cache}/bioinstruct/test-benchmarks
if [ ! -f "$root/.complete" ]; then
  home=$root/home
  BIOINSTRUCT_HOME=$home cargo run --quiet --locked -- eval fetch all >&2
  src=$home/cache/benchmarks
  mkdir -p "$root/pubmedqa" "$root/ncbi-disease" "$root/mts-dialog"
  python3 - "$src/pubmedqa/ori_pqal.json" "$src/pubmedqa/test_ground_truth.json" "$root/pubmedqa/pqal_trainval.json" <<'PY'
import json, sys
items, test = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
json.dump({k: v for k, v in items.items() if k not in test}, open(sys.argv[3], "w"), indent=1)
PY
  cp "$src/ncbi_disease/devel.tsv" "$root/ncbi-disease/devel.tsv"
  cp "$src/mts_dialog/MTS-Dialog-ValidationSet.csv" "$root/mts-dialog/MTS-Dialog-ValidationSet.csv"
  touch "$root/.complete"
fi
echo "$root"
