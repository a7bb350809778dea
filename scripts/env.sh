# Sourced by the other scripts: points the build at the LibTorch of the project's virtual
# environment (.venv, created by scripts/setup.sh).
PROCO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$PROCO_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
