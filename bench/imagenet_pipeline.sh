#!/usr/bin/env bash
# Side by side on this machine: proco's ImageNet-LT three-view pipeline (Rust loader threads)
# and the authors' torchvision/PIL pipeline in a DataLoader with the same number of workers,
# over a generated JPEG set of ImageNet size; then decoding alone: our decoders' megapixels
# per second next to PIL's (libjpeg-turbo), the limit of any pipeline on these files.
# Usage: bench/imagenet_pipeline.sh [workers=2] [epochs=1] [images=2000]
# With PROCO_BENCH_TURBOJPEG=1 the binary is built with the libjpeg-turbo feature (needs the
# system's libturbojpeg 2.x, Debian: libturbojpeg0-dev) and its decoder joins the comparison.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$PROCO_ROOT"
workers=${1:-2}
epochs=${2:-1}
images=${3:-2000}
set_dir="${PROCO_BENCH_JPEGS:-$PROCO_ROOT/target/bench-jpegs-$images}"
python -c "import torchvision" 2>/dev/null || pip install --quiet --disable-pip-version-check torchvision==0.28.0
python -c "import timm" 2>/dev/null || pip install --quiet --disable-pip-version-check timm==1.0.22
python -c "import PIL" 2>/dev/null || pip install --quiet --disable-pip-version-check pillow==13.0.0
if [ ! -f "$set_dir/ImageNet_LT_train.txt" ]; then
    python bench/gen_jpeg_set.py "$set_dir" --images "$images"
fi
if [ "${PROCO_BENCH_TURBOJPEG:-0}" = 1 ]; then
    cargo build --release --quiet -p proco-cli --features libjpeg-turbo
else
    cargo build --release --quiet -p proco-cli
fi
ours_out=$(./target/release/proco bench --only imagenet-data --threads "$workers" --epochs "$epochs" --data-dir "$set_dir" | tee /dev/stderr)
ours=$(sed -n 's/^proco images\/s: \([0-9.]*\).*/\1/p' <<<"$ours_out")
ours_mps=$(sed -n 's/^decode proco (zune-jpeg): \([0-9.]*\) MP\/s.*/\1/p' <<<"$ours_out")
theirs=$(python bench/torchvision_imagenet_pipeline.py --data-dir "$set_dir" --workers "$workers" --epochs "$epochs" | tee /dev/stderr | sed -n 's/^torchvision images\/s: \([0-9.]*\).*/\1/p')
pil_mps=$(python bench/torchvision_imagenet_pipeline.py --data-dir "$set_dir" --workers "$workers" --epochs "$epochs" --decode-only | tee /dev/stderr | sed -n 's/^PIL decode MP\/s: \([0-9.]*\).*/\1/p')
python -c "print(f'proco / torchvision three-view ImageNet pipeline: {float($ours) / float($theirs):.2f}x ({$ours} vs {$theirs} images/s, $workers workers)')"
python -c "print(f'decode only, proco / PIL (libjpeg-turbo): {float($ours_mps) / float($pil_mps):.2f}x ({$ours_mps} vs {$pil_mps} MP/s, $workers workers)')"
