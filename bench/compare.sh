#!/usr/bin/env bash
# Side by side on this machine, in one run: `proco bench --only train` (this build) and
# bench/pytorch_reference.py (the same ResNet-32 + ProCo step in PyTorch, ProCo's Bessel terms
# evaluated the authors' way), with the same device, the same number of LibTorch threads and
# the same timing rule. Prints both outputs, then a table of ratios ours / theirs.
# The data-pipeline figure is bench/data_pipeline.sh.
# Usage: bench/compare.sh [--device cpu|cuda] [--full-epoch] [--steps N] [--seconds S]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$PROCO_ROOT"
device=cpu
steps=5
seconds=1
full=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=${2:?--device needs cpu or cuda}; shift 2 ;;
        --full-epoch) full=(--full-epoch); shift ;;
        --steps) steps=${2:?--steps needs a number}; shift 2 ;;
        --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
        *) echo "usage: bench/compare.sh [--device cpu|cuda] [--full-epoch] [--steps N] [--seconds S]" >&2; exit 2 ;;
    esac
done
data_dir="${PROCO_DATA_DIR:-$PROCO_ROOT/data}"
if [ ${#full[@]} -gt 0 ]; then
    ./scripts/fetch-cifar10.sh >/dev/null
fi
python -c "import torchvision" 2>/dev/null || pip install --quiet --disable-pip-version-check torchvision==0.28.0
cargo build --release --quiet -p proco-cli
ours=$(mktemp)
theirs=$(mktemp)
trap 'rm -f "$ours" "$theirs"' EXIT
./target/release/proco bench --only train --device "$device" --steps "$steps" --seconds "$seconds" --data-dir "$data_dir" "${full[@]}" | tee "$ours"
threads=$(sed -n 's/.*, \([0-9][0-9]*\) LibTorch threads.*/\1/p' "$ours" | head -n 1)
echo
python bench/pytorch_reference.py --device "$device" --threads "${threads:-2}" --steps "$steps" --seconds "$seconds" --data-dir "$data_dir" "${full[@]}" | tee "$theirs"
echo
python - "$ours" "$theirs" <<'PY'
import re
import sys


def figures(path):
    out = {}
    for line in open(path):
        m = re.fullmatch(r"(.+): ([0-9]+(?:\.[0-9]+)?)", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


ours, theirs = figures(sys.argv[1]), figures(sys.argv[2])
width = max(len(k) for k in ours)
print(f"{'figure':<{width}}  {'proco':>10}  {'PyTorch':>10}  {'ours / theirs':>13}  {'proco faster by':>15}")
for key, a in ours.items():
    if key not in theirs:
        continue
    b = theirs[key]
    higher = "images/s" in key
    better = "higher is better" if higher else "lower is better"
    ratio = f"{a / b:.3f}x" if b > 0 else "-"
    speedup = (a / b if higher else b / a) if a > 0 and b > 0 else float("nan")
    print(f"{key:<{width}}  {a:>10.3f}  {b:>10.3f}  {ratio:>13}  {speedup:>14.1f}x  ({better})")
PY
