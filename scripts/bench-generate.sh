#!/usr/bin/env bash
# Generation benchmark: bioinstruct's forward pass against llama.cpp (llama-cpp-python, built
# into a venv outside the checkout by scripts/teacher-server.sh) on the same GGUF (SmolLM2-135M-Instruct Q4_1), the same prompt
# token ids, the same number of greedy tokens (end tokens ignored), and the same number of
# threads. Rounds are interleaved; prints each run, the medians, and the ratios.
#
# Environment: ROUNDS (default 3), NEW_TOKENS (128), THREADS (all cores), COMPUTE (the
# bioinstruct GGUF mode: keep, q8_0 or float; default keep).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
new_tokens=${NEW_TOKENS:-128}
threads=${THREADS:-$(nproc)}
compute=${COMPUTE:-keep}
gguf=${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}

# Builds llama-cpp-python the first time (scripts/py-venv.sh), and fetches the model.
scripts/teacher-server.sh --install
source scripts/py-venv.sh
py_venv llamacpp scripts/llamacpp-requirements.txt native
cargo build --release --quiet --example bench_generate
export RAYON_NUM_THREADS=$threads

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The prompt, through the model's chat template, tokenized once by bioinstruct; both
# engines get exactly these ids.
cargo run --release --quiet --example bench_prompt_ids -- "$gguf" > "$work/ids.json"

results=$work/results.jsonl
for round in $(seq 1 "$rounds"); do
  target/release/examples/bench_generate "$gguf" "$work/ids.json" "$new_tokens" "$compute" | tee -a "$results"
  "$py" scripts/bench_llamacpp.py "$gguf" "$work/ids.json" "$new_tokens" "$threads" | tee -a "$results"
done

python3 - "$results" "$threads" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
engines = sorted({r["engine"] for r in runs}, key=lambda e: e != "llama.cpp")
med = {e: {k: statistics.median(r[k] for r in runs if r["engine"] == e) for k in ("prompt_tps", "gen_tps")} for e in engines}
print(f"\nmedians over {len(runs) // len(engines)} interleaved rounds, {runs[0]['prompt_tokens']} prompt tokens, "
      f"{runs[0]['gen_tokens']} generated, {sys.argv[2]} threads:")
for e in engines:
    print(f"  {e:28} prompt {med[e]['prompt_tps']:8.1f} tokens/s   generation {med[e]['gen_tps']:7.1f} tokens/s")
ours = [e for e in engines if e != "llama.cpp"][0]
print(f"  ratio (bioinstruct / llama.cpp): prompt {med[ours]['prompt_tps'] / med['llama.cpp']['prompt_tps']:.2f}x   "
      f"generation {med[ours]['gen_tps'] / med['llama.cpp']['gen_tps']:.2f}x")
PY
