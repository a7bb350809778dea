# Sourced by the other scripts: points the build at the LibTorch of the project's virtual
# environment (.venv, created by scripts/setup.sh).
PROCO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$PROCO_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1

# Installs scripts/test-requirements.txt into .venv unless every package listed there is
# present at its pinned version (a line without a pin only needs the package present): what
# the tests and the golden generator need beyond setup.sh (TensorBoard's event reader, mpmath).
ensure_test_requirements() {
    local req="$PROCO_ROOT/scripts/test-requirements.txt"
    if ! "$VIRTUAL_ENV/bin/python" - "$req" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    name, _, pin = line.strip().partition("==")
    if name and version(name) != (pin or version(name)):  # version() raises when absent
        sys.exit(1)
PY
        echo "setup: installing the test requirements into .venv (scripts/test-requirements.txt)"
        "$VIRTUAL_ENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    fi
}

# Where .venv's torch has CUDA, installs the header-only pip packages that the NCCL backend's
# build needs (crates/proco/build.rs) at the CUDA version torch was built with.
ensure_cuda_headers() {
    local cuda
    cuda="$("$VIRTUAL_ENV/bin/python" -c "import torch; print(torch.version.cuda or '')")"
    [ -n "$cuda" ] || return 0
    local site
    site="$("$VIRTUAL_ENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
    if [ ! -e "$site/nvidia/cu${cuda%%.*}/include/crt/host_config.h" ] || [ ! -e "$site/nvidia/cu${cuda%%.*}/include/nv/target" ]; then
        echo "setup: installing the CUDA $cuda crt and CCCL headers into .venv (for the NCCL backend)"
        "$VIRTUAL_ENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "nvidia-cuda-crt==$cuda.*" "nvidia-cuda-cccl==$cuda.*"
    fi
}
