"""The memory-format effect in PyTorch itself: bench/pytorch_reference.py's ResNet-32 + ProCo
training step (batch 256, three views) and inference (batch 512) on this machine's CPU, in the
default NCHW layout and channels-last, alternating twice. Shows that the train-step gain of
`proco` over the authors' code comes from oneDNN's layout (and glibc malloc reuse, see
crates/proco/src/allocator.rs), which PyTorch users can also switch on; the authors' code
runs NCHW.

Usage: python bench/channels_last_pytorch.py   (2 threads, 2 warm-up + 4 timed steps each)
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as R  # noqa: E402

torch.set_num_threads(2)
dev = torch.device("cpu")


def bench(channels_last, batch=256, steps=4):
    model, opt, est, lp = R.make_training(dev, R.cifar10_lt_counts())
    x = torch.randn(3 * batch, 3, 32, 32)
    y = torch.randint(10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        R.train_step(model, opt, est, lp, x, y)
    t = time.perf_counter()
    for _ in range(steps):
        R.train_step(model, opt, est, lp, x, y)
    dt = (time.perf_counter() - t) / steps
    model.eval()
    with torch.no_grad():
        xe = x[:512].contiguous(memory_format=torch.channels_last) if channels_last else x[:512]
        model.logits(xe)
        t = time.perf_counter()
        for _ in range(3):
            model.logits(xe)
        de = (time.perf_counter() - t) / 3
    print(f"channels_last={channels_last} step {dt:.3f}s {batch / dt:.1f} img/s  eval {512 / de:.0f} img/s", flush=True)


for cl in [False, True, False, True]:
    bench(cl)
