"""PyTorch + transformers + PEFT side of scripts/bench-train.sh.

Loads the same GGUF (transformers dequantizes it to float32), wraps it with PEFT LoRA
(r=8, lora_alpha=16, lora_dropout=0.05, q_proj+v_proj), and runs WARMUP then STEPS optimizer
steps of batch 1 on the given token ids (labels = input_ids, so loss on every next token),
with torch.optim.AdamW(lr=2e-4) and clip_grad_norm_(1.0). Prints one JSON object with the
median seconds per step and per phase, tokens/s, and the peak RSS of the training steps
(the peak is reset after loading by writing 5 to /proc/self/clear_refs).

On DEVICE cuda (or cuda:N) the model is bf16 (as bioinstruct loads it on a GPU), every
phase ends with torch.cuda.synchronize(), and the JSON adds the peak GPU memory allocated.

Usage: bench_train_peft.py GGUF IDS_JSON STEPS WARMUP THREADS [DEVICE]
"""
import json
import os
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

gguf, ids_path, steps, warmup, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
# The adapted projections, as bench_train's: TARGETS (comma-separated; default q_proj,v_proj).
targets = os.environ.get("TARGETS", "q_proj,v_proj").split(",")
cuda = device.startswith("cuda")
dtype = torch.bfloat16 if cuda else torch.float32
torch.set_num_threads(threads)
torch.manual_seed(0)


def sync():
    if cuda:
        torch.cuda.synchronize()


def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


t = time.perf_counter()
folder, name = os.path.split(os.path.abspath(gguf))
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=dtype).to(device)
model = get_peft_model(
    model,
    LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets, task_type="CAUSAL_LM"),
)
model.train()
ids = torch.tensor([json.load(open(ids_path))], device=device)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
load_s = time.perf_counter() - t
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
if cuda:
    torch.cuda.reset_peak_memory_stats()

step_s, fwd_s, bwd_s, opt_s, losses = [], [], [], [], []
for i in range(warmup + steps):
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    sync()
    t1 = time.perf_counter()
    loss.backward()
    sync()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    t3 = time.perf_counter()
    if i >= warmup:
        step_s.append(t3 - t0)
        fwd_s.append(t1 - t0)
        bwd_s.append(t2 - t1)
        opt_s.append(t3 - t2)
    losses.append(loss.item())

step = statistics.median(step_s)
print(json.dumps({
    "engine": f"PyTorch {torch.__version__} + PEFT",
    "device": device,
    "seq": ids.shape[1],
    "load_s": load_s,
    "step_s": step,
    "forward_s": statistics.median(fwd_s),
    "backward_s": statistics.median(bwd_s),
    "optimizer_s": statistics.median(opt_s),
    "tokens_per_s": ids.shape[1] / step,
    "peak_rss_bytes": peak_rss(),
    "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    "losses": losses,
}))
