#!/usr/bin/env bash
# Builds the proco binary against another PyTorch release's LibTorch than the project's own
# (torch 2.13.0 with tch 0.26), for machines that have that release installed, such as a GPU
# machine with torch 2.11. Each release needs the tch / torch-sys pair generated for it, so this
# builds a copy of the workspace with that pair, in its own virtual environment and target dir:
#
#   scripts/build-for-torch.sh 2.11.0
#
# makes .venv-torch2.11 (pip torch==2.11.0 with its CUDA libraries, ~5 GB, and the header
# packages of the NCCL backend), target/torch-2.11/workspace (the copy) and the stripped
# binary target/torch-2.11/proco. Run it there with that machine's LibTorch on the library path:
#   LD_LIBRARY_PATH=$(python -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')") ./proco ...
# Supported: 2.11.x (tch 0.24) and 2.13.x (tch 0.26, the default build). `--check` also runs
# the copy's distributed, resume and golden-gradient tests against that LibTorch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=${1:?usage: scripts/build-for-torch.sh TORCH_VERSION [--check], e.g. 2.11.0}
check=${2:-}
minor=$(echo "$version" | cut -d. -f1-2)
case "$minor" in
    2.11) tch=0.24.0 ;;
    2.13) tch=0.26.0 ;;
    *) echo "build-for-torch: torch $version is not supported (2.11.x with tch 0.24, 2.13.x with tch 0.26)" >&2; exit 2 ;;
esac
venv="$ROOT/.venv-torch$minor"
out="$ROOT/target/torch-$minor"
work="$out/workspace"

if [ ! -x "$venv/bin/python" ]; then
    echo "build-for-torch: creating $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$version' else 1)" 2>/dev/null; then
    echo "build-for-torch: installing torch==$version into $venv (about 5 GB with its CUDA libraries)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$version" numpy
fi
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# The NCCL backend's headers (see scripts/env.sh).
source "$ROOT/scripts/env.sh"
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
ensure_cuda_headers

echo "build-for-torch: copying the workspace to $work with tch $tch"
mkdir -p "$work"
rm -rf "$work/crates"
cp -r "$ROOT/crates" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$ROOT/.cargo" "$work/"
sed -i -E "s/^tch = \"[^\"]*\"/tch = \"=$tch\"/; s/^torch-sys = \"[^\"]*\"/torch-sys = \"=$tch\"/" "$work/Cargo.toml"
grep -q "^tch = \"=$tch\"" "$work/Cargo.toml" || { echo "build-for-torch: could not pin tch in $work/Cargo.toml" >&2; exit 1; }
cd "$work"
export CARGO_TARGET_DIR="$out/target"
cargo build --release -p proco-cli
cp "$CARGO_TARGET_DIR/release/proco" "$out/proco"
strip "$out/proco"
echo "build-for-torch: $out/proco ($(du -h "$out/proco" | cut -f1)) links:"
ldd "$out/proco" | grep -E "libtorch|libc10" | sed 's/^/    /'
"$out/proco" --version
if [ "$check" = "--check" ]; then
    # Gloo in two processes, resume bit-exactness, and the golden loss gradients through the
    # host-gradient autograd node (the code that differs between releases).
    PROCO_GOLDEN_DIR="$ROOT/golden" cargo test --release -p proco --test distributed --test train_resume --test golden_loss
fi
