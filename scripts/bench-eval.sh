#!/usr/bin/env bash
# Evaluation benchmark: PubMedQA by loglikelihood, bioinstruct against lm-evaluation-harness
# (PyPI lm-eval, its Hugging Face backend), in the same run on the same machine:
# - the same weights: SmolLM2-135M-Instruct's GGUF dequantized to float32 by transformers and
#   saved as a Hugging Face folder, which both engines load;
# - the same items: the first N of the PubMedQA file, in file order;
# - the same prompt: lm-evaluation-harness's `Abstract: …\nQuestion: …\nAnswer:`, choices
#   " yes", " no", " maybe";
# - the same threads (THREADS, default all cores), batch size 1 for the harness (LM_EVAL_BATCH).
# Times each whole command (start-up, loading and scoring), prints both engines' acc and
# acc_norm, items/s, the ratio of wall times, and how many items' answers agree.
#
# Environment: N (500), THREADS (nproc), LM_EVAL_BATCH (1), PUBMEDQA (default:
# ../shared/benchmarks/pubmedqa/pqal_trainval.json, else `bioinstruct eval fetch pubmedqa`'s
# ori_pqal.json).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-500}
threads=${THREADS:-$(nproc)}
batch=${LM_EVAL_BATCH:-1}
gguf=$(realpath -m "${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}")  # fetched below

scripts/fetch-test-model.sh
source scripts/py-venv.sh
py_venv lmeval scripts/bench-eval-requirements.txt
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/bioinstruct

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BIOINSTRUCT_HOME=$work/home HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
data=${PUBMEDQA:-../shared/benchmarks/pubmedqa/pqal_trainval.json}
if [ ! -f "$data" ]; then
  # The one download of the run (the engines themselves run offline).
  HF_HUB_OFFLINE=0 "$bin" eval fetch pubmedqa >&2
  data=$work/home/cache/benchmarks/pubmedqa/ori_pqal.json
fi
"$py" scripts/bench_eval_prepare.py "$gguf" "$data" "$n" "$work"
items=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$work/pubmedqa.json")

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "PubMedQA, $items items, loglikelihood; $threads threads; CPU: $cpu" >&2

t0=$(date +%s.%N)
"$py" -m lm_eval --model hf --model_args "pretrained=$work/model,dtype=float32" \
  --tasks pubmedqa_local --include_path "$work/tasks" --device cpu --batch_size "$batch" \
  --output_path "$work/lm-eval" --log_samples > "$work/lm-eval.log" 2>&1 || { tail -40 "$work/lm-eval.log" >&2; exit 1; }
t1=$(date +%s.%N)
"$bin" eval run --task pubmedqa --data "$work/pubmedqa.json" --model "$work/model" \
  --out "$work/bioinstruct" > "$work/bioinstruct.log" 2>&1 || { tail -40 "$work/bioinstruct.log" >&2; exit 1; }
t2=$(date +%s.%N)

python3 - "$work" "$t0" "$t1" "$t2" <<'PY'
import glob, json, os, sys
work, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
results = json.load(open(glob.glob(os.path.join(work, "lm-eval", "**", "results_*.json"), recursive=True)[0]))
lm = results["results"]["pubmedqa_local"]
ours = json.load(open(os.path.join(work, "bioinstruct", "report.json")))["tasks"]["pubmedqa"]
n = ours["n"]
b = ours["models"]["base"]
samples = [json.loads(l) for l in open(glob.glob(os.path.join(work, "lm-eval", "**", "samples_pubmedqa_local_*.jsonl"), recursive=True)[0])]
lm_pred = {s["doc"]["id"]: ["yes", "no", "maybe"][max(range(3), key=lambda i: float(s["filtered_resps"][i][0]))] for s in samples}
our_pred = {json.loads(l)["id"]: json.loads(l)["prediction"] for l in open(os.path.join(work, "bioinstruct", "predictions", "pubmedqa", "base.jsonl"))}
agree = sum(lm_pred[k] == our_pred[k] for k in our_pred)
lm_s, our_s = t1 - t0, t2 - t1
print(f"{'engine':28} {'acc':>7} {'acc_norm':>9} {'wall s':>8} {'items/s':>8}")
print(f"{'lm-evaluation-harness (hf)':28} {lm['acc,none']:7.4f} {lm['acc_norm,none']:9.4f} {lm_s:8.1f} {n / lm_s:8.2f}")
print(f"{'bioinstruct eval run':28} {b['acc']:7.4f} {b['acc_norm']:9.4f} {our_s:8.1f} {n / our_s:8.2f}")
print(f"ratio (bioinstruct / lm-eval wall time): {our_s / lm_s:.2f}x; acc difference {100 * (b['acc'] - lm['acc,none']):+.1f} points; "
      f"the same answer on {agree} of {n} items")
PY
grep -h "computed" "$work/bioinstruct.log" >&2 || true
