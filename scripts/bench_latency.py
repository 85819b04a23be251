"""Keypress-to-screen latency of the workbench in tmux, end to end (scripts/bench-latency.sh).

Each measurement sends one key with `tmux send-keys` and polls `tmux capture-pane` until the
screen shows its effect; the time from the send to the first capture that shows it is the
latency (capture resolution: a few milliseconds). Two scenarios:

  scale   25,005 seed records and 25,005 kept generated tasks: `j` in the Seeds pane, a
          character typed into the search, `j` in the Generated pane, and a run appending 100
          tasks (until the kept count on screen moves).
  stream  both Chat columns streaming a long reply from the real SmolLM2-135M model (the tuned
          one with a checkpoint of the run below) while a LoRA run trains on the same 2 cores:
          characters typed into the chat input, until each shows there.

Usage: bench_latency.py scale|stream BIN HOME [RECORDS]. Prints one line per action: count,
median, 90th percentile and maximum in milliseconds.
"""

import json
import os
import statistics
import subprocess
import sys
import time

SESSION = "bioinstruct-latency"


def tmux(*args):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def capture(escapes=False):
    """The screen's text; with `escapes`, its colours and attributes too (a selection that
    moves changes only those)."""
    return tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", SESSION)


def wait_for(needle, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = capture()
        if needle in screen:
            return screen
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {needle!r}; screen:\n{capture()}")


def measure(send, shown, timeout=5.0, escapes=False):
    """Seconds from `send()` to the first screen for which `shown(screen)` holds."""
    start = time.perf_counter()
    send()
    while True:
        screen = capture(escapes)
        if shown(screen):
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return timeout


def key(k):
    return lambda: tmux("send-keys", "-t", SESSION, k)


def literal(text):
    return lambda: tmux("send-keys", "-t", SESSION, "-l", text)


def presses(k, count):
    """Latencies of `count` presses of `k`, each until the screen (attributes included)
    changes."""
    runs = []
    for _ in range(count):
        before = capture(escapes=True)
        runs.append(measure(key(k), lambda s, b=before: s != b, escapes=True))
    return runs


def report(name, seconds):
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    print(f"{name:<58} n={len(ms):3d}  median {statistics.median(ms):7.1f} ms"
          f"  p90 {p90:7.1f} ms  max {ms[-1]:7.1f} ms", flush=True)


def record(i, prefix):
    words = ["aspirin", "sepsis", "insulin", "biopsy", "anemia", "stroke", "lupus", "warfarin"]
    w = lambda k: words[(i * 7 + k * 3) % len(words)]
    return {
        "id": f"{prefix}-{i:06d}", "category": ["qa", "ie", "gen", "other"][i % 4],
        "task": "self_instruct",
        "instruction": f"Explain how {w(0)} relates to {w(1)} and {w(2)} in case {i}.",
        "input": f"A patient on {w(3)} with {w(4)}.",
        "output": f"An answer about {w(5)} for case {i}.",
        "similarity": {"max_rouge_l": 0.3, "mean_rouge_l": 0.1,
                       "most_similar": [{"id": "seed-000001", "rouge_l": 0.3}]},
    }


def start(binary, home):
    tmux("kill-session", "-t", SESSION)
    command = f"env BIOINSTRUCT_HOME='{home}' HF_HUB_OFFLINE=1 '{binary}'"
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command)


def scale(binary, home, n):
    data = os.path.join(home, "data")
    gen = os.path.join(data, "generated")
    os.makedirs(gen, exist_ok=True)
    with open(os.path.join(data, "seeds.jsonl"), "w") as f:
        for i in range(1, n + 1):
            r = record(i, "seed")
            del r["similarity"]
            f.write(json.dumps(r) + "\n")
    kept = os.path.join(gen, "generated.jsonl")
    with open(kept, "w") as f:
        for i in range(1, n + 1):
            f.write(json.dumps(record(i, "gen")) + "\n")
    print(f"scale: {n} seed records, {n} kept tasks, 120x40")
    start(binary, home)
    wait_for("seed-000001")
    time.sleep(1.0)
    report("Seeds pane: j (next record)", presses("j", 30))
    tmux("send-keys", "-t", SESSION, "/")
    time.sleep(0.3)
    runs = []
    for ch in "warfarin and lupus":
        before = capture(escapes=True)
        runs.append(measure(literal(ch), lambda s, b=before: s != b, escapes=True))
    report("Seeds pane: a character typed into the search", runs)
    tmux("send-keys", "-t", SESSION, "Escape")
    time.sleep(0.3)
    tmux("send-keys", "-t", SESSION, "BTab")
    wait_for(f"Kept {n}")
    time.sleep(1.0)
    report("Generated pane: j (next task)", presses("j", 30))
    runs = []
    total = n
    for _ in range(10):
        lines = "".join(json.dumps(record(total + k + 1, "gen")) + "\n" for k in range(100))
        total += 100

        def append(lines=lines):
            with open(kept, "a") as f:
                f.write(lines)

        runs.append(measure(append, lambda s, t=total: f"Kept {t}" in s))
    report("Generated pane: a run appends 100 tasks (until shown)", runs)
    tmux("send-keys", "-t", SESSION, "q")
    time.sleep(0.5)
    tmux("kill-session", "-t", SESSION)


def stream(binary, home):
    print("stream: both chat columns streaming, a LoRA run training, 120x40")
    start(binary, home)
    wait_for("seed-")
    tmux("send-keys", "-t", SESSION, "Tab")
    tmux("send-keys", "-t", SESSION, "Tab")
    wait_for("Ready.", timeout=300)
    screen = capture()
    if "checkpoint-" not in screen and "final" not in screen:
        sys.exit(f"the tuned column has no adapter:\n{screen}")
    prompt = "Write a long, detailed discharge summary for a patient treated for pneumonia."
    tmux("send-keys", "-t", SESSION, "-l", prompt)
    tmux("send-keys", "-t", SESSION, "Enter")
    wait_for("streaming")
    time.sleep(2.0)
    runs = []
    typed = ""
    for ch in "how long should the antibiotics run":
        typed += ch
        if ch == " ":
            # A space at the end of a line is not visible in a capture: measure letters only.
            tmux("send-keys", "-t", SESSION, "-l", ch)
            continue
        screen = capture()
        if screen.count("streaming") < 2:
            break
        runs.append(measure(literal(ch), lambda s, t=typed: t in s))
    report("Chat pane: a character typed while both columns stream", runs)
    tmux("send-keys", "-t", SESSION, "Escape")
    time.sleep(0.5)
    tmux("send-keys", "-t", SESSION, "C-c")
    time.sleep(0.5)
    tmux("kill-session", "-t", SESSION)


if __name__ == "__main__":
    mode, binary, home = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "scale":
        scale(binary, home, int(sys.argv[4]) if len(sys.argv) > 4 else 25005)
    else:
        stream(binary, home)
