"""Greedy continuation of a prompt by Hugging Face transformers + PEFT, for check-peft.sh.

Loads the base model from the same GGUF bioinstruct uses (transformers dequantizes it to
float32 and puts q/k rows back in Hugging Face's order), applies the LoRA adapter with
PeftModel.from_pretrained, renders the prompt with the model's chat template, and greedily
decodes. With --merged, also loads bioinstruct's merged model folder and decodes the same way.
Prints one JSON object: the new token ids and their text for each model.
"""
import argparse
import json
import os

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("gguf")
p.add_argument("adapter")
p.add_argument("prompt")
p.add_argument("--merged")
p.add_argument("--make-adapter", help="also save a PEFT-made adapter here and decode with it")
p.add_argument("--max-new-tokens", type=int, default=20)
a = p.parse_args()

torch.manual_seed(0)
folder, name = os.path.split(os.path.abspath(a.gguf))
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
ids = tok.apply_chat_template(
    [{"role": "user", "content": a.prompt}], add_generation_prompt=True, return_tensors="pt"
)
if not isinstance(ids, torch.Tensor):  # transformers 5 returns a BatchEncoding
    ids = ids["input_ids"]


def greedy(model):
    model.eval()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=a.max_new_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            pad_token_id=tok.eos_token_id,
        )
    new = out[0, ids.shape[1]:].tolist()
    return {"ids": new, "text": tok.decode(new, skip_special_tokens=True)}


def load_base():
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)


result = {"prompt_ids": ids[0].tolist(), "peft": greedy(PeftModel.from_pretrained(load_base(), a.adapter))}
if a.make_adapter:
    # An adapter made by PEFT itself: all seven projections, r = 4, random A and B (B scaled
    # down so the model stays fluent), saved with save_pretrained.
    from peft import LoraConfig, get_peft_model

    made = get_peft_model(load_base(), LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for n, prm in made.named_parameters():
            if "lora_B" in n:
                prm.mul_(0.5)
    made.save_pretrained(a.make_adapter)
    result["peft_made"] = greedy(made)
if a.merged:
    result["merged"] = greedy(AutoModelForCausalLM.from_pretrained(a.merged, torch_dtype=torch.float32))
print(json.dumps(result))
