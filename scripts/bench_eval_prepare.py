"""Prepares both sides of scripts/bench-eval.sh from the same sources.

- The SmolLM2 GGUF dequantized to float32 by transformers, saved as a Hugging Face folder
  (model.safetensors, config.json, tokenizer files): the weights both engines load.
- The first N items of a PubMedQA file (ori_pqal.json format, file order) twice: as the same
  format for bioinstruct, and as JSONL (one object per item, CONTEXTS joined by newlines) for
  lm-evaluation-harness's `dataset_path: json`.
- lm-evaluation-harness's task YAML with its pubmedqa prompt:
  `Abstract: {contexts}\nQuestion: {question}\nAnswer:`, choices yes/no/maybe.

Usage: bench_eval_prepare.py GGUF PUBMEDQA_JSON N WORK_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, data, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
folder, name = os.path.split(os.path.abspath(gguf))
model_dir = os.path.join(work, "model")
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
# transformers refuses save_pretrained for a model read from GGUF: write the dequantized
# tensors and the config ourselves (the tied output head is the embedding, stored once).
os.makedirs(model_dir, exist_ok=True)
state = {k: v.contiguous() for k, v in model.state_dict().items()}
if model.config.tie_word_embeddings:
    state.pop("lm_head.weight", None)
save_file(state, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
config = model.config.to_dict()
config.pop("quantization_config", None)
config["torch_dtype"] = config["dtype"] = "float32"
config["architectures"] = [type(model).__name__]
config = {k: v for k, v in config.items() if v is not None}
json.dump(config, open(os.path.join(model_dir, "config.json"), "w"), indent=1)
AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(model_dir)

items = list(json.load(open(data)).items())[:n]
json.dump(dict(items), open(os.path.join(work, "pubmedqa.json"), "w"))
with open(os.path.join(work, "pubmedqa.jsonl"), "w") as f:
    for pmid, v in items:
        f.write(json.dumps({"id": pmid, "question": v["QUESTION"], "abstract": "\n".join(v["CONTEXTS"]),
                            "final_decision": v["final_decision"]}) + "\n")
tasks = os.path.join(work, "tasks")
os.makedirs(tasks, exist_ok=True)
with open(os.path.join(tasks, "pubmedqa_local.yaml"), "w") as f:
    f.write(f"""task: pubmedqa_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {os.path.join(work, "pubmedqa.jsonl")}
test_split: test
output_type: multiple_choice
doc_to_text: "Abstract: {{{{abstract}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_target: final_decision
doc_to_choice: ["yes", "no", "maybe"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
print(f"{len(items)} items; model in {model_dir}", file=sys.stderr)
