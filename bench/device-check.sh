#!/usr/bin/env bash
# One prepared run on a lent GPU machine (at most about 8 minutes; everything it prints also
# goes to $OUT/device-check.log, and each part's output to its own file in $OUT):
#   1. `proco bench --only train --device "$device"` (ResNet-32 + ProCo at CIFAR size: training
#      steps and inference) next to bench/pytorch_reference.py on the same GPU; the same for
#      the ResNet-50 ImageNet-LT step at 224 (`--only train-imagenet`, `--resnet50`);
#   2. the first 10 epochs of the 200-epoch CIFAR-10-LT recipe (per-epoch seconds, top-1);
#   3. a world-size-1 NCCL run (torchrun's variables, rank 0 of 1) for 1 epoch.
#
# Prepare here (this machine), then carry the binary and the data (about 60 MB):
#   scripts/build-for-torch.sh 2.11.0        # the device's torch; makes target/torch-2.11/proco
#   mkdir -p device && cp target/torch-2.11/proco device/
#   target/release/proco data subset --dataset cifar10 --imbalance 100 --test-images 5000 \
#       --data-dir data --out device/cifar10-lt-if100
# and on the device (run tool, carry ["device"]):
#   bash bench/device-check.sh device/proco device/cifar10-lt-if100
# The test figures of part 2 are over the subset's 5,000 test images (the first half of the
# test set), not all 10,000.
set -uo pipefail
bin=${1:?usage: bench/device-check.sh PROCO_BINARY CIFAR_LT_SUBSET_DIR}
data=${2:?usage: bench/device-check.sh PROCO_BINARY CIFAR_LT_SUBSET_DIR}
out=${OUT:-device-check-out}
# DEVICE=cpu runs the same parts on the CPU (Gloo for part 3): a dry run of this script.
device=${DEVICE:-cuda}
mkdir -p "$out"
log="$out/device-check.log"
exec > >(tee -a "$log") 2>&1
started=$(date +%s)
python=${PYTHON:-python3}
# The device's LibTorch: the binary was built against the same release (build-for-torch.sh).
torch_lib=$("$python" -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chmod +x "$bin"
elapsed() { echo "[$(( $(date +%s) - started )) s]"; }
part() { # name, seconds, command...
    local name=$1 limit=$2; shift 2
    echo; echo "== $name $(elapsed)"
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    cat "$out/$name.txt"
    echo "-- $name: exit $rc $(elapsed)"
}
echo "device check: $(date -u), $("$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
"$bin" --version
ldd "$bin" | grep -E "libtorch|libc10"

# 1. Training step and inference, ours next to PyTorch's, same GPU.
part bench-train 45 "$bin" bench --only train --device "$device" --steps 20 --seconds 2
part reference-train 45 "$python" bench/pytorch_reference.py --device "$device" --steps 20 --seconds 2
part bench-r50 45 "$bin" bench --only train-imagenet --device "$device" --batch-size 64 --image-size 224 --steps 10
part reference-r50 45 "$python" bench/pytorch_reference.py --device "$device" --resnet50 --batch-size 64 --image-size 224 --steps 10

# 2. The first 10 epochs of the 200-epoch CIFAR-10-LT recipe.
part cifar10-lt-10-epochs 200 "$bin" train --preset cifar10-lt-if100 --device "$device" --data-dir "$data" --stop-after 10 --run-dir "$out/run-cifar"
cp "$out/run-cifar/metrics.jsonl" "$out/cifar10-lt-metrics.jsonl" 2>/dev/null

# 3. World size 1 on NCCL: rank 0 of 1 through torchrun's variables.
part nccl-world-1 60 env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29512 "$bin" train --preset cifar10-lt-if100 --device "$device" --data-dir "$data" --stop-after 1 --run-dir "$out/run-nccl"
cp "$out/run-nccl/metrics.jsonl" "$out/nccl-metrics.jsonl" 2>/dev/null
rm -rf "$out/run-cifar/checkpoints" "$out/run-nccl/checkpoints" "$out/run-cifar/best" "$out/run-nccl/best"
echo; echo "device check done $(elapsed)"
