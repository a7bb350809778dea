#!/usr/bin/env bash
# Builds the Python package `proco` (crates/proco-py: PyO3 + maturin, an abi3 wheel for
# CPython 3.9+, no LibTorch link) and installs it into the project's .venv.
#
#   ./scripts/build-python.sh          release wheel into target/wheels, installed into .venv
#   ./scripts/build-python.sh --debug  the same, unoptimised (faster to build, slow to run)
#
# Needs .venv (./scripts/setup.sh makes it); installs maturin into it when missing.
set -euo pipefail
profile=--release
for arg in "$@"; do
    case "$arg" in
        --debug) profile= ;;
        -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-python.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROCO_ROOT"
if [ ! -x .venv/bin/python ]; then
    echo "build-python.sh: .venv is missing; run ./scripts/setup.sh first" >&2
    exit 1
fi
if [ ! -x .venv/bin/maturin ]; then
    echo "build-python.sh: installing maturin into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "maturin>=1.9,<2"
fi
wheels="$PROCO_ROOT/target/wheels"
rm -f "$wheels"/proco-*.whl
# Its own target directory: the extension is built outside the main workspace.
CARGO_TARGET_DIR="$PROCO_ROOT/target/proco-py" .venv/bin/maturin build $profile --quiet \
    --manifest-path crates/proco-py/Cargo.toml --interpreter .venv/bin/python --out "$wheels"
wheel=$(ls "$wheels"/proco-*.whl)
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"
echo "build-python.sh: installed $(basename "$wheel") into .venv"
