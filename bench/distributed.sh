#!/usr/bin/env bash
# Data-parallel training speed on this machine: the ProCo CIFAR-10-LT recipe (ResNet-32) on a
# slice of the real training set, the same global batch, in one process and as N ranks
# (`proco train --nproc N`, Gloo on 127.0.0.1; on CUDA, pass `--device cuda` for NCCL).
# Prints training steps/s of the last epoch for each, and per step the time rank 0 spent in
# the gradient all-reduce and in all collectives (waiting for the slower rank included).
# Usage: bench/distributed.sh [ranks=2] [images=2000] [global batch=64] [epochs=2] [extra train flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$PROCO_ROOT"
ranks=${1:-2}
images=${2:-2000}
batch=${3:-64}
epochs=${4:-2}
shift $(( $# < 4 ? $# : 4 ))
data_dir="${PROCO_DATA_DIR:-$PROCO_ROOT/data}"
./scripts/fetch-cifar10.sh >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # name, extra flags...
    local name=$1; shift
    ./target/release/proco train --preset cifar10-lt-if100 --data-dir "$data_dir" --set "limit=$images" \
        --set "batch_size=$batch" --epochs "$epochs" --run-dir "$out/$name" "$@" >/dev/null
}
run single "$@"
run ranks --nproc "$ranks" "$@"
python - "$out" "$ranks" "$batch" <<'PY'
import json, sys
out, ranks, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def last(name):
    return [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")][-1]
one, many = last("single"), last("ranks")
s1, sn = one["images_per_sec"] / batch, many["images_per_sec"] / batch
steps = many["steps"]
print(f"1 process : {s1:.2f} steps/s ({one['images_per_sec']:.0f} images/s, global batch {batch})")
print(f"{ranks} ranks   : {sn:.2f} steps/s ({many['images_per_sec']:.0f} images/s, {batch // ranks} per rank); {sn / s1:.2f}x one process")
print(f"rank 0, per step: gradient all-reduce {1e3 * many['gradient_allreduce_seconds'] / steps:.1f} ms, "
      f"all collectives {1e3 * many['collective_seconds'] / steps:.1f} ms (evaluation's gathers included, waiting for the other rank included)")
PY
