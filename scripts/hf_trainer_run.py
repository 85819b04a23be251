"""A real Hugging Face Trainer run on a tiny Llama, for the tests of `bioinstruct runs watch`.

Builds a 2-layer LlamaForCausalLM from a LlamaConfig (random weights, vocabulary 64; nothing
downloaded), and trains it with transformers' Trainer on random token sequences: MAX_STEPS
steps, a log entry every step, an evaluation every 4 steps, a checkpoint (trainer_state.json)
every 2 steps, each step slowed by STEP_DELAY seconds so that a watcher sees it live.

Usage: hf_trainer_run.py OUTPUT_DIR [MAX_STEPS] [STEP_DELAY]
"""
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

out = sys.argv[1]
max_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
torch.manual_seed(0)

config = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)
model = LlamaForCausalLM(config)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        # A repeating pattern with noise, so the loss falls.
        base = torch.arange(16) % 8
        self.rows = [(base + torch.randint(0, 2, (16,), generator=g)) % 64 for _ in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(delay)


args = TrainingArguments(
    output_dir=out, max_steps=max_steps, per_device_train_batch_size=4, learning_rate=5e-3,
    logging_steps=1, eval_strategy="steps", eval_steps=4, save_steps=2, save_strategy="steps",
    report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
)
trainer = Trainer(model=model, args=args, train_dataset=Tokens(64, 1), eval_dataset=Tokens(8, 2),
                  callbacks=[Slow()])
trainer.train()
trainer.save_state()
