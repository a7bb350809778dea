#!/usr/bin/env bash
# The project's test command: sets up what is missing, runs every test of the workspace in
# release mode, and fails if any test fails or if no test ran at all.
# Golden vectors are read from $PROCO_GOLDEN_DIR (default: ../shared/golden beside the checkout).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROCO_ROOT"
"$PROCO_ROOT/scripts/setup.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace 2>&1 | tee "$log"
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
echo "test.sh: $passed tests passed"
