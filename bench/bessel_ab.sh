#!/usr/bin/env bash
# What exact Bessel maths changes in training: the ProCo CIFAR-10-LT recipe (IF 100) trained
# twice from the same seed, once with `bessel = "exact"` and once with `bessel = "authors"`
# (their recurrence, which drifts past kappa ~ nu^2/8 = 496 at p = 128), on a slice of the
# real training set for a short schedule. Prints, per epoch, test top-1 and the spread of the
# estimated kappa (p10 / median / max, and classes past nu^2/8) for both, side by side.
# Usage: bench/bessel_ab.sh [images=6000] [epochs=6] [out=runs/bessel-ab] [extra train flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$PROCO_ROOT"
images=${1:-6000}
epochs=${2:-6}
out=${3:-runs/bessel-ab}
shift $(( $# < 3 ? $# : 3 ))
data_dir="${PROCO_DATA_DIR:-$PROCO_ROOT/data}"
./scripts/fetch-cifar10.sh >/dev/null
for route in exact authors; do
    dir="$out/$route-limit$images-e$epochs"
    # A finished or interrupted run is resumed (and a finished one only re-read).
    resume=()
    [ -f "$dir/checkpoints/latest" ] && resume=(--resume)
    "${PROCO_BIN:-./target/release/proco}" train --preset cifar10-lt-if100 --data-dir "$data_dir" --set "limit=$images" \
        --epochs "$epochs" --set "bessel=$route" --run-dir "$dir" "${resume[@]}" "$@" >/dev/null
done
python - "$out" "$images" "$epochs" <<'PY'
import json, sys
out, images, epochs = sys.argv[1], sys.argv[2], sys.argv[3]
def load(route):
    with open(f"{out}/{route}-limit{images}-e{epochs}/metrics.jsonl") as f:
        return [json.loads(l) for l in f]
exact, authors = load("exact"), load("authors")
print(f"CIFAR-10-LT IF 100, {images} training images, {epochs} epochs, same seed: exact | authors")
print("epoch | top-1 exact | top-1 authors | kappa p10/median/max exact | authors | classes past nu^2/8 (exact, authors)")
for e, a in zip(exact, authors):
    k, ka = e["kappa"], a["kappa"]
    print(f"{e['epoch']:>5} | {e['val']['top1']:11.2f} | {a['val']['top1']:13.2f} | "
          f"{k['p10']:.0f}/{k['median']:.0f}/{k['max']:.0f} | {ka['p10']:.0f}/{ka['median']:.0f}/{ka['max']:.0f} | "
          f"{k['classes_past_drift']}, {ka['classes_past_drift']}")
print(f"last epoch: top-1 {exact[-1]['val']['top1']:.2f} (exact) vs {authors[-1]['val']['top1']:.2f} (authors), "
      f"difference {exact[-1]['val']['top1'] - authors[-1]['val']['top1']:+.2f} points; "
      f"ProCo loss {exact[-1]['proco_loss_train']:.4f} vs {authors[-1]['proco_loss_train']:.4f}")
PY
