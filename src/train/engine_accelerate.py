"""bioinstruct's run on Hugging Face transformers' Trainer + PEFT under `accelerate launch`.

Written into a run folder by `bioinstruct train --engine accelerate` (as engine/train.py)
and started once per process by `accelerate launch` (DDP by default; FSDP or DeepSpeed
through an accelerate config file). It trains on the examples bioinstruct built
(engine/train.jsonl and engine/validation.jsonl: input_ids and labels, the prompt masked
with -100, exactly what bioinstruct's own trainer trains on) with the LoRA settings and the
schedule of engine/args.json, and keeps the run folder bioinstruct's own: status.json and
metrics.jsonl through engine/bioinstruct_callback.py, checkpoint-N/ (the Trainer's own
checkpoints: adapter, optimizer, scheduler, RNG) and final/ (the PEFT adapter).

Stopping: `bioinstruct runs stop` creates engine/stop; every process checkpoints the same
step and ends (see bioinstruct_callback.py). `bioinstruct runs resume` starts the run again,
and it resumes from its newest checkpoint-N/.

Usage: accelerate launch [...] train.py RUN_DIR
"""
import json
import os
import sys
import traceback

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

import bioinstruct_callback as bc
from bioinstruct_callback import log, status

bc.init(sys.argv[1])
run = bc.run
engine = bc.engine
args = json.load(open(os.path.join(engine, "args.json")))
main = bc.main


class Examples(torch.utils.data.Dataset):
    def __init__(self, path):
        self.rows = [json.loads(l) for l in open(path) if l.strip()]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class CountingTrainer(Trainer):
    """The Trainer, counting the tokens (no padding) each optimizer step trains on."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        bc.count_tokens(inputs)
        return super().training_step(model, inputs, num_items_in_batch)


def collate(rows):
    """Pads to the longest row: input_ids with the pad token, labels with -100."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = args["pad_token_id"]
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def newest_checkpoint():
    found = [(int(n.split("-")[1]), n) for n in os.listdir(run)
             if n.startswith("checkpoint-") and n.split("-")[1].isdigit()
             and os.path.exists(os.path.join(run, n, "trainer_state.json"))]
    return os.path.join(run, max(found)[1]) if found else None


def main_run():
    torch.manual_seed(args["seed"])
    kwargs = {"torch_dtype": torch.float32}
    if args.get("gguf_file"):
        kwargs["gguf_file"] = args["gguf_file"]
    model = AutoModelForCausalLM.from_pretrained(args["model"], **kwargs)
    if args.get("gguf_file"):
        # transformers dequantizes a GGUF to float32 on load, but marks the model quantized,
        # which the Trainer refuses to train; the weights are plain floats by now.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    lora = args["lora"]
    model = get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
        target_modules=lora["target_modules"], use_rslora=lora["use_rslora"], task_type="CAUSAL_LM",
    ))
    o = args["optim"]
    every = args["eval_every"]
    save = args["checkpoint_every"]
    targs = TrainingArguments(
        output_dir=run, num_train_epochs=o["epochs"], per_device_train_batch_size=o["micro_batch_size"],
        per_device_eval_batch_size=o["micro_batch_size"],
        gradient_accumulation_steps=o["gradient_accumulation_steps"], learning_rate=o["learning_rate"],
        lr_scheduler_type={"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[o["schedule"]],
        warmup_steps=o["warmup_steps"], max_grad_norm=o["max_grad_norm"] or 1e9, weight_decay=o["weight_decay"],
        logging_steps=1, eval_strategy="steps" if every else "no", eval_steps=every or None,
        save_strategy="steps" if save else "no", save_steps=save or 500, seed=args["seed"],
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, use_cpu=args["cpu"],
        remove_unused_columns=False, ddp_find_unused_parameters=False,
    )
    validation = Examples(os.path.join(engine, "validation.jsonl"))
    trainer = CountingTrainer(
        model=model, args=targs, train_dataset=Examples(os.path.join(engine, "train.jsonl")),
        eval_dataset=validation if len(validation) else None, data_collator=collate,
        callbacks=[bc.Bioinstruct()],
    )
    resume = newest_checkpoint()
    if resume:
        log(f"resuming from {os.path.basename(resume)}")
    elif len(validation):
        trainer.evaluate()
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    if bc.asked["stop"]:
        status("stopped", state.global_step, state.max_steps)
        log(f"stopped at step {state.global_step}; `bioinstruct runs resume` goes on")
        return
    if len(validation) and not every:
        trainer.evaluate()
    if main:
        model.save_pretrained(os.path.join(run, "final"))
    status("finished", state.global_step, state.max_steps)
    log(f"finished: adapter in {os.path.join(run, 'final')}")


try:
    main_run()
except Exception as e:  # the run records why it failed, whole
    bc.fail(e)
    traceback.print_exc()
    sys.exit(1)
