#!/usr/bin/env bash
# Local-teacher benchmark: requests/s of `bioinstruct generate`'s local teacher on the
# generation test's settings (self-instruct prompts of about 950 tokens continued as text,
# stop "###", at most 200 tokens, temperature 0.7; examples/bench_teacher.rs), three ways on
# the same prompts and sampling seeds, interleaved in each round:
#   baseline  the code as it was when issue 14 was filed (BASELINE, a commit: 9a23c83),
#             built once in a worktree under target/bench-baseline/ with
#             scripts/bench_teacher_baseline.rs (the same requests through its `generate`);
#   whole     today's code, every prompt computed whole;
#   reuse     today's code as the local teacher runs it: the prompts' shared opening
#             computed once (model::PromptPrefix).
# Prints every round and the medians, and the ratios against the baseline.
#
# Environment: ROUNDS (3), REQUESTS (8 a round), BASELINE (9a23c83).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
requests=${REQUESTS:-8}
baseline=${BASELINE:-9a23c83}
gguf=$(realpath -m "${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}")

scripts/fetch-test-model.sh
cargo build --release --quiet --locked --example bench_teacher
tree=target/bench-baseline/$baseline
if [ ! -d "$tree" ]; then
  git worktree add --detach "$tree" "$baseline"
fi
cp scripts/bench_teacher_baseline.rs "$tree/examples/"
echo "building $baseline's teacher (once; several minutes on 2 cores)" >&2
(cd "$tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --quiet --locked \
  --example bench_teacher_baseline)
old=target/bench-baseline/target/release/examples/bench_teacher_baseline

out=$(mktemp)
trap 'rm -f "$out"' EXIT
lscpu | grep -m1 'Model name' >&2
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  "$old" "$gguf" "$requests" 1 | sed "s/^{\"round\":1,/{\"way\":\"baseline\",\"round\":$round,/" | tee -a "$out"
  target/release/examples/bench_teacher "$gguf" "$requests" 1 | grep '"prefix_reuse"' |
    sed "s/\"round\":1,/\"round\":$round,/; s/\"prefix_reuse\":false/\"way\":\"whole\"/; s/\"prefix_reuse\":true/\"way\":\"reuse\"/" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = {}
for way in ("baseline", "whole", "reuse"):
    r = [x for x in rows if x["way"] == way]
    med[way] = {k: statistics.median(x[k] for x in r)
                for k in ("requests_per_s", "prompt_seconds", "decode_seconds", "generated_tokens")}
    rates = ", ".join(f"{x['requests_per_s']:.3f}" for x in r)
    print(f"{way:9} requests/s {med[way]['requests_per_s']:.3f} [{rates}]  prompt {med[way]['prompt_seconds']:.1f} s"
          f"  decode {med[way]['decode_seconds']:.1f} s  generated {med[way]['generated_tokens']:.0f} tokens")
base = med["baseline"]["requests_per_s"]
print(json.dumps({"reuse_vs_baseline": med["reuse"]["requests_per_s"] / base,
                  "whole_vs_baseline": med["whole"]["requests_per_s"] / base,
                  "reuse_vs_whole": med["reuse"]["requests_per_s"] / med["whole"]["requests_per_s"]}))
PY
