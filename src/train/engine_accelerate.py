"""bioinstruct's run on Hugging Face transformers' Trainer + PEFT under `accelerate launch`.

Written into a run folder by `bioinstruct train --engine accelerate` (as engine/train.py)
and started once per process by `accelerate launch` (DDP by default; FSDP or DeepSpeed
through an accelerate config file). It trains on the examples bioinstruct built
(engine/train.jsonl and engine/validation.jsonl: input_ids and labels, the prompt masked
with -100, exactly what bioinstruct's own trainer trains on) with the LoRA settings and the
schedule of engine/args.json, and keeps the run folder bioinstruct's own:

- status.json (queued, running, stopped, finished, failed; pid of the launcher; step and
  total), written atomically by the main process;
- metrics.jsonl, a line per optimizer step (step, epoch, loss, lr, grad_norm, tokens of all
  processes, tokens_per_s, elapsed_s, eta_s, mem_bytes of the main process) and per
  evaluation (step, epoch, val_loss);
- checkpoint-N/, the Trainer's own checkpoints (adapter, optimizer, scheduler, RNG);
- final/, the PEFT adapter.

Stopping: `bioinstruct runs stop` creates engine/stop. Every process looks for it at the end
of each step and the processes agree (an all-reduce), so they all checkpoint the same step
and stop together; SIGTERM and SIGINT do the same. `bioinstruct runs resume` starts the run
again, and it resumes from its newest checkpoint-N/.

Usage: accelerate launch [...] train.py RUN_DIR
"""
import json
import math
import os
import resource
import signal
import sys
import time
import traceback

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

run = os.path.abspath(sys.argv[1])
engine = os.path.join(run, "engine")
args = json.load(open(os.path.join(engine, "args.json")))
rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
main = rank == 0
launcher_pid = os.getppid()
asked = {"stop": False}


def ask_stop(*_):
    asked["stop"] = True


signal.signal(signal.SIGTERM, ask_stop)
signal.signal(signal.SIGINT, ask_stop)


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def status(state, step, total, error=None):
    if main:
        write_json(os.path.join(run, "status.json"), {
            "state": state, "pid": launcher_pid, "step": step, "total_steps": total,
            "error": error, "updated_unix_s": time.time(),
        })


def metric(line):
    if main:
        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")


def log(text):
    if main:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Examples(torch.utils.data.Dataset):
    def __init__(self, path):
        self.rows = [json.loads(l) for l in open(path) if l.strip()]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


tokens_seen = {"step": 0}


class CountingTrainer(Trainer):
    """The Trainer, counting the tokens (no padding) each optimizer step trains on."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        tokens_seen["step"] += int(inputs["attention_mask"].sum().item())
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


class Bioinstruct(TrainerCallback):
    """Writes status.json and metrics.jsonl the way bioinstruct's trainer does, and stops
    every process at the same step when asked."""

    def __init__(self):
        self.started = time.time()
        self.step_started = time.time()
        self.first_step = None
        self.last = None

    def on_train_begin(self, targs, state, control, **kw):
        self.first_step = state.global_step
        status("running", state.global_step, state.max_steps)
        log(f"training: {state.max_steps} steps on {world} process(es)")

    def on_step_begin(self, targs, state, control, **kw):
        self.step_started = time.time()

    def on_log(self, targs, state, control, logs=None, **kw):
        # The Trainer logs a step after its on_step_end: the step's line is written here.
        if not logs or "loss" not in logs or self.last is None:
            return
        tokens, seconds = self.last
        done = state.global_step - self.first_step
        elapsed = time.time() - self.started
        metric({
            "step": state.global_step,
            "epoch": state.epoch or 0.0,
            "loss": logs["loss"],
            "lr": logs.get("learning_rate", 0.0),
            "grad_norm": logs.get("grad_norm", 0.0),
            "tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "elapsed_s": elapsed,
            "eta_s": elapsed / max(done, 1) * (state.max_steps - state.global_step),
            "mem_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        })

    def on_step_end(self, targs, state, control, **kw):
        flags = torch.tensor([float(tokens_seen["step"]),
                              1.0 if asked["stop"] or os.path.exists(os.path.join(engine, "stop")) else 0.0])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags)
        tokens_seen["step"] = 0
        self.last = (int(flags[0].item()), max(time.time() - self.step_started, 1e-9))
        status("running", state.global_step, state.max_steps)
        if flags[1].item() > 0:
            log(f"stopping at step {state.global_step}: checkpointing")
            control.should_save = True
            control.should_training_stop = True
            asked["stop"] = True

    def on_evaluate(self, targs, state, control, metrics=None, **kw):
        if metrics and "eval_loss" in metrics:
            metric({"step": state.global_step, "epoch": state.epoch or 0.0, "val_loss": metrics["eval_loss"]})
            log(f"step {state.global_step}: validation loss {metrics['eval_loss']:.4f}")


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
        callbacks=[Bioinstruct()],
    )
    resume = newest_checkpoint()
    if resume:
        log(f"resuming from {os.path.basename(resume)}")
    elif len(validation):
        trainer.evaluate()
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    if asked["stop"]:
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
    try:
        before = json.load(open(os.path.join(run, "status.json")))
    except (OSError, ValueError):
        before = {}
    status("failed", before.get("step", 0), before.get("total_steps", 0), f"{type(e).__name__}: {e}")
    traceback.print_exc()
    sys.exit(1)
