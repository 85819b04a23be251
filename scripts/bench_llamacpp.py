"""llama.cpp's side of scripts/bench-generate.sh, through llama-cpp-python.

Usage: bench_llamacpp.py GGUF IDS_JSON NEW_TOKENS THREADS
Evaluates the prompt ids in one batch, then NEW_TOKENS greedy steps (argmax of the
logits, end tokens not special, like llama.cpp's --ignore-eos). Prints one JSON object.
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama

gguf, ids_path, new_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = json.load(open(ids_path))
llm = Llama(model_path=gguf, n_ctx=len(ids) + new_tokens + 8, n_batch=max(512, len(ids)),
            n_threads=threads, n_threads_batch=threads, verbose=False)

start = time.perf_counter()
llm.eval(ids)
prompt_s = time.perf_counter() - start

n_vocab = llm.n_vocab()


def last_logits():
    # llama-cpp-python 0.3 keeps no logits unless logits_all; read the last row from the
    # context, as its own (commented-out) code does.
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))


generated = []
start = time.perf_counter()
for _ in range(new_tokens):
    token = int(np.argmax(last_logits()))
    generated.append(token)
    llm.eval([token])
gen_s = time.perf_counter() - start

print(json.dumps({
    "engine": "llama.cpp",
    "prompt_tokens": len(ids), "prompt_s": prompt_s, "prompt_tps": len(ids) / prompt_s,
    "gen_tokens": new_tokens, "gen_s": gen_s, "gen_tps": new_tokens / gen_s,
    "first_tokens": generated[:8],
}))
