#!/usr/bin/env bash
# Compiles bioinstruct with candle's `cuda` feature on a machine without a GPU: the CUDA
# compiler and headers come from PyPI (scripts/cuda-requirements.txt, a venv outside the
# checkout, see scripts/py-venv.sh), and `cargo check --features cuda --all-targets` builds
# candle's PTX kernels with that nvcc and type-checks every CUDA code path of the project.
# It does not link a binary (the wheels ship no libcuda stub). Its build goes to
# target/cuda, apart from the CPU build.
#
# Environment: CUDA_COMPUTE_CAP (default 90, an H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/py-venv.sh
py_venv cuda scripts/cuda-requirements.txt
cuda_root=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
export CUDA_ROOT=$cuda_root CUDA_PATH=$cuda_root PATH="$cuda_root/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -2
start=$(date +%s)
cargo check --locked --features cuda --all-targets --target-dir target/cuda
echo "check-cuda: cargo check --features cuda passed in $(( $(date +%s) - start )) s"
