#!/usr/bin/env bash
# The project's test command: sets up what is missing, runs every test of the workspace in
# release mode, builds the Python package and runs its tests (pytest), and fails if any test
# fails or if no test ran at all.
#
#   ./scripts/test.sh           the whole suite (golden tests on the repository's golden/)
#   ./scripts/test.sh --golden  only the golden-vector tests (with PROCO_GOLDEN_DIR, another set)
#   ./scripts/test.sh --fuzz    the whole suite with 10,000 cases per parser property
#                               (PROCO_FUZZ_CASES, default 300, sets any other number)
#
# Golden vectors are read from $PROCO_GOLDEN_DIR when it is set (a relative path is taken
# from the directory this script is started in), else from golden/ in the repository.
set -euo pipefail
mode=all
for arg in "$@"; do
    case "$arg" in
        --golden) mode=golden ;;
        --fuzz) export PROCO_FUZZ_CASES="${PROCO_FUZZ_CASES:-10000}" ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "test.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${PROCO_GOLDEN_DIR:-}" ]; then
    # Resolved here, before the cd below and before cargo runs each test in its crate directory.
    PROCO_GOLDEN_DIR="$(CDPATH='' cd -- "$PROCO_GOLDEN_DIR" 2>/dev/null && pwd)" || {
        echo "test.sh: PROCO_GOLDEN_DIR=$PROCO_GOLDEN_DIR is not a directory" >&2
        exit 2
    }
    export PROCO_GOLDEN_DIR
    echo "test.sh: golden vectors from $PROCO_GOLDEN_DIR"
fi
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROCO_ROOT"
"$PROCO_ROOT/scripts/setup.sh"
ensure_test_requirements
targets=(--workspace)
if [ "$mode" = golden ]; then
    targets=(--workspace --test golden_bessel --test golden_loss --test golden_estimator --test mc_check --test long_tail_golden)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$( (grep -Eo 'test result: ok\. [0-9]+ passed' "$log" || true) | awk '{s += $4} END {print s + 0}')
if grep -Eq '[1-9][0-9]* (failed|ignored);' "$log"; then
    echo "test.sh: some tests failed or were ignored" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "test.sh: cargo test exited with status $status" >&2
    exit "$status"
fi
if [ "$passed" -eq 0 ]; then
    echo "test.sh: no test ran" >&2
    exit 1
fi
# The Python package (crates/proco-py): built into .venv, then its pytest suite (in --golden
# mode, its golden tests alone).
"$PROCO_ROOT/scripts/build-python.sh"
pytests=(crates/proco-py/tests)
if [ "$mode" = golden ]; then
    pytests=(crates/proco-py/tests/test_golden.py)
fi
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "${pytests[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "test.sh: the Python package's tests failed (pytest exit status $status)" >&2
    exit "$status"
fi
if grep -Eq '[0-9]+ (skipped|xfailed)' "$log"; then
    echo "test.sh: some Python tests were skipped" >&2
    exit 1
fi
py_passed=$( (grep -Eo '[0-9]+ passed' "$log" || true) | tail -1 | awk '{print $1 + 0}')
if [ "${py_passed:-0}" -eq 0 ]; then
    echo "test.sh: no Python test ran" >&2
    exit 1
fi
echo "test.sh: $passed tests passed, and $py_passed Python tests"
