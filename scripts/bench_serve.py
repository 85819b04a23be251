"""Load test of an OpenAI-compatible server (scripts/bench-serve.sh): CLIENTS concurrent
streaming clients share REQUESTS chat requests of MAX_TOKENS tokens each (greedy), and the
run reports aggregate generated tokens/s (generated tokens over the wall time of the whole
run), time to first token (from sending a request to its first content chunk) at p50 and
p99, and how many responses were complete (a finish_reason, then `data: [DONE]`).

Generated tokens are the responses' `usage.completion_tokens` when the server sends usage
(stream_options.include_usage), else their content chunks (one a token in both servers).

Usage: bench_serve.py NAME BASE_URL MODEL CLIENTS REQUESTS MAX_TOKENS. Prints one JSON line.
"""

import json
import statistics
import sys
import threading
import time

import httpx

name, base_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
clients, requests, max_tokens = (int(x) for x in sys.argv[4:7])
topics = ["asthma", "diabetes", "sepsis", "anemia", "migraine", "gout", "psoriasis", "angina"]

lock = threading.Lock()
next_request = 0
results = []


def one(client, i):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a detailed patient leaflet about {topics[i % len(topics)]}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    finish = None
    done = False
    with client.stream("POST", f"{base_url}/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                if c.get("delta", {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - start
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
    return {
        "tokens": usage if usage is not None else chunks,
        "ttft": first if first is not None else time.perf_counter() - start,
        "complete": done and finish is not None,
    }


def worker():
    global next_request
    with httpx.Client() as client:
        while True:
            with lock:
                if next_request >= requests:
                    return
                i = next_request
                next_request += 1
            r = one(client, i)
            with lock:
                results.append(r)


start = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - start
ttft = sorted(r["ttft"] for r in results)
p99 = ttft[min(len(ttft) - 1, int(round(0.99 * (len(ttft) - 1))))]
print(json.dumps({
    "server": name,
    "requests": len(results),
    "complete": sum(r["complete"] for r in results),
    "generated_tokens": sum(r["tokens"] for r in results),
    "wall_s": round(wall, 2),
    "tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 2),
    "ttft_p50_s": round(statistics.median(ttft), 3),
    "ttft_p99_s": round(p99, 3),
}), flush=True)
