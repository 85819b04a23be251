"""Scores PubMedQA through `bioinstruct serve` with lm-evaluation-harness and compares the
result with `bioinstruct eval run --mode loglikelihood` on the same items and weights
(scripts/check-serve-lmeval.sh runs both).

lm-eval reads the items from bioinstruct's predictions file (each line holds the item's
`context`, `choices` and `reference`), as a multiple-choice task whose continuations are
" " + choice: the pairs bioinstruct scores. Its `local-completions` model tokenizes them with
the tokenizer `bioinstruct models export-tokenizer` wrote, sends the token ids to
/v1/completions with echo and logprobs, and sums the continuation tokens' log-probabilities.

Usage: check_serve_lmeval.py COMPLETIONS_URL TOKENIZER_DIR EVAL_DIR WORK_DIR
Prints both accuracies, the largest per-choice log-likelihood difference, and exits
non-zero unless the accuracies are equal and every item's chosen answer is the same.
"""

import glob
import json
import os
import subprocess
import sys

url, tokenizer, eval_dir, work = sys.argv[1:5]
predictions = os.path.join(eval_dir, "predictions", "pubmedqa", "base.jsonl")
report = json.load(open(os.path.join(eval_dir, "report.json")))
ours = report["tasks"]["pubmedqa"]["models"]["base"]["acc"]
items = [json.loads(line) for line in open(predictions)]

tasks = os.path.join(work, "tasks")
os.makedirs(tasks, exist_ok=True)
with open(os.path.join(tasks, "bioinstruct_pubmedqa.yaml"), "w") as f:
    f.write(
        f"""task: bioinstruct_pubmedqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(predictions)}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: "{{{{choices.index(reference)}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""
    )
out = os.path.join(work, "lm-eval")
model_args = ",".join(
    [
        "model=base",
        f"base_url={url}",
        f"tokenizer={tokenizer}",
        "tokenized_requests=True",
        "num_concurrent=1",
        "max_retries=1",
        "max_length=8192",
    ]
)
env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
subprocess.run(
    [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
     "--tasks", "bioinstruct_pubmedqa", "--include_path", tasks, "--output_path", out,
     "--log_samples", "--batch_size", "1"],
    check=True,
    env=env,
)
results = json.load(open(sorted(glob.glob(os.path.join(out, "**", "results_*.json"), recursive=True))[-1]))
theirs = results["results"]["bioinstruct_pubmedqa"]["acc,none"]
samples = [json.loads(line) for line in open(sorted(glob.glob(os.path.join(out, "**", "samples_bioinstruct_pubmedqa_*.jsonl"), recursive=True))[-1])]
by_doc = {s["doc"]["id"]: s for s in samples}
largest = 0.0
disagree = []
for item in items:
    s = by_doc[item["id"]]
    lls = [float(r[0]) for r in s["filtered_resps"]]
    largest = max(largest, max(abs(a - b) for a, b in zip(lls, item["loglikelihoods"])))
    if max(range(len(lls)), key=lambda i: (lls[i], -i)) != max(
        range(len(lls)), key=lambda i: (item["loglikelihoods"][i], -i)
    ):
        disagree.append(item["id"])
print(f"items: {len(items)}")
print(f"acc: bioinstruct eval run {ours:.4f}, lm-eval local-completions via serve {theirs:.4f}")
print(f"largest per-choice log-likelihood difference: {largest:.2e}")
if disagree or abs(ours - theirs) > 1e-9:
    print(f"different answers: {disagree}")
    sys.exit(1)
print("same accuracy, same answer on every item")
