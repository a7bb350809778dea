#!/usr/bin/env bash
# Side by side on this machine: proco's three-view CIFAR-10-LT pipeline (Rust threads) and the
# reference torchvision/PIL pipeline in a DataLoader, same transforms, same batch size, same
# number of workers. Prints both throughputs and their ratio.
# Usage: bench/data_pipeline.sh [workers=2] [epochs=2]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$PROCO_ROOT"
workers=${1:-2}
epochs=${2:-2}
data_dir="${PROCO_DATA_DIR:-$PROCO_ROOT/data}"
./scripts/fetch-cifar10.sh >/dev/null
python -c "import torchvision" 2>/dev/null || pip install --quiet --disable-pip-version-check torchvision==0.28.0
ours=$(./target/release/proco bench --only data --threads "$workers" --epochs "$epochs" --data-dir "$data_dir" | tee /dev/stderr | sed -n 's/^proco images\/s: \([0-9.]*\).*/\1/p')
theirs=$(python bench/torchvision_pipeline.py --data-dir "$data_dir" --workers "$workers" --epochs "$epochs" | tee /dev/stderr | sed -n 's/^torchvision images\/s: \([0-9.]*\).*/\1/p')
python -c "print(f'proco / torchvision throughput: {float($ours) / float($theirs):.2f}x ({$ours} vs {$theirs} images/s, $workers workers)')"
