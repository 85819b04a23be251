"""bioinstruct's run folder, kept by a Hugging Face Trainer callback.

Written into a run folder by `bioinstruct train --engine accelerate|axolotl` (as
engine/bioinstruct_callback.py) and imported by the engine's training script, so a run on
transformers' Trainer (directly, or inside axolotl) keeps the folder the workbench reads:

- status.json (queued, running, stopped, finished, failed; pid of the launcher; step and
  total), written atomically by the main process;
- metrics.jsonl, a line per optimizer step (step, epoch, loss, lr, grad_norm, tokens of all
  processes, tokens_per_s, elapsed_s, eta_s, mem_bytes of the main process) and per
  evaluation (step, epoch, val_loss).

Stopping: `bioinstruct runs stop` creates engine/stop. Every process looks for it at the end
of each step and the processes agree (an all-reduce), so they all checkpoint the same step
and stop together; SIGTERM and SIGINT do the same.

Call `init(RUN_DIR)` once per process before training.
"""
import json
import os
import resource
import signal
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

run = None
engine = None
main = True
launcher_pid = os.getppid()
asked = {"stop": False}
tokens_seen = {"step": 0}
# How training ended, for a script that writes the last status once its engine returns:
# (state, step, total_steps), set by the callback's on_train_end.
ended = {"outcome": None}


def ask_stop(*_):
    asked["stop"] = True


def init(run_dir):
    """Points this module at RUN_DIR and turns SIGTERM and SIGINT into a stop request."""
    global run, engine, main
    run = os.path.abspath(run_dir)
    engine = os.path.join(run, "engine")
    main = int(os.environ.get("RANK", "0")) == 0
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


def fail(error):
    """Records that the run failed, keeping the step it had reached."""
    try:
        before = json.load(open(os.path.join(run, "status.json")))
    except (OSError, ValueError):
        before = {}
    status("failed", before.get("step", 0), before.get("total_steps", 0),
           f"{type(error).__name__}: {error}")


def metric(line):
    if main:
        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")


def log(text):
    if main:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def count_tokens(inputs):
    """Adds a micro-batch's tokens (no padding) to the current optimizer step's count."""
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dtype in (torch.bool, torch.int32, torch.int64) and mask.dim() == 2:
        tokens_seen["step"] += int(mask.sum().item())
    else:
        tokens_seen["step"] += int(inputs["input_ids"].numel())


def number(value):
    """A logged value as a float (axolotl logs some as strings); 0 when absent."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class Bioinstruct(TrainerCallback):
    """Writes status.json and metrics.jsonl the way bioinstruct's trainer does, and stops
    every process at the same step when asked. With `finish_on_train_end`, the end of
    training also saves the adapter to final/ (unless stopped) and records the outcome in
    `ended` (for engines that train inside their own entry point; the script writes the
    last status once the engine has returned, so a relaunch never races its predecessor)."""

    def __init__(self, finish_on_train_end=False):
        self.finish_on_train_end = finish_on_train_end
        self.started = time.time()
        self.step_started = time.time()
        self.first_step = None
        self.last = None

    def on_train_begin(self, targs, state, control, **kw):
        self.first_step = state.global_step
        status("running", state.global_step, state.max_steps)
        if state.global_step:
            log(f"resuming at step {state.global_step}")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
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
            "loss": number(logs["loss"]),
            "lr": number(logs.get("learning_rate")),
            "grad_norm": number(logs.get("grad_norm")),
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
            loss = number(metrics["eval_loss"])
            metric({"step": state.global_step, "epoch": state.epoch or 0.0, "val_loss": loss})
            log(f"step {state.global_step}: validation loss {loss:.4f}")

    def on_train_end(self, targs, state, control, model=None, **kw):
        if not self.finish_on_train_end:
            return
        if asked["stop"]:
            ended["outcome"] = ("stopped", state.global_step, state.max_steps)
            return
        if main and model is not None:
            model.save_pretrained(os.path.join(run, "final"))
        ended["outcome"] = ("finished", state.global_step, state.max_steps)
