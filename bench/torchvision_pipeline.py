"""Throughput of the reference three-view CIFAR augmentation pipeline (torchvision + PIL in a
DataLoader), the baseline for `proco bench data`.

Same transforms as ProCo's CIFAR recipe: view 1 = RandomCrop(32, 4) + flip + AutoAugment
(CIFAR-10 policy) + Cutout(16) + normalise; views 2 and 3 = RandomResizedCrop(32, 0.08-1) +
flip + ColorJitter(0.4, 0.4, 0.4, 0.1) w.p. 0.8 + grayscale w.p. 0.2 + normalise. AutoAugment
is torchvision's CIFAR-10 policy (the same 25 sub-policies as the reference's own class).

Usage: python bench/torchvision_pipeline.py --data-dir data --workers 2 [--epochs 1]
Prints one line: `torchvision images/s: X`.
"""
import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class Cutout:
    """One square hole of side `length`, zeroed, centre uniform over the image (tensor input)."""

    def __init__(self, length=16):
        self.length = length

    def __call__(self, img):
        h, w = img.shape[1:]
        y, x = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(0, y - self.length // 2), min(h, y + self.length // 2)
        x0, x1 = max(0, x - self.length // 2), min(w, x + self.length // 2)
        img[:, y0:y1, x0:x1] = 0.0
        return img


def read_cifar10_train(root):
    parts = []
    for k in range(1, 6):
        raw = np.fromfile(os.path.join(root, "cifar-10-batches-bin", f"data_batch_{k}.bin"), dtype=np.uint8)
        parts.append(raw.reshape(-1, 3073))
    raw = np.concatenate(parts)
    labels = raw[:, 0].astype(np.int64)
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def long_tail_indices(labels, ratio=100.0, seed=0):
    n_max = len(labels) / 10
    counts = [int(n_max * (1.0 / ratio) ** (c / 9.0)) for c in range(10)]
    np.random.seed(seed)
    kept = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        kept.extend(idx[:n].tolist())
    return kept


def contrastive_view(size, mean, std):
    """ProCo's SimCLR-style view at `size` px (CIFAR and ImageNet-LT alike)."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.08, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class ThreeViews(Dataset):
    def __init__(self, images, labels, indices):
        self.images, self.labels, self.indices = images, labels, indices
        norm = transforms.Normalize(MEAN, STD)
        self.classify = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10),
            transforms.ToTensor(),
            Cutout(16),
            norm,
        ])
        self.contrast = contrastive_view(32, MEAN, STD)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = self.indices[i]
        img = Image.fromarray(self.images[j])
        return torch.stack([self.classify(img), self.contrast(img), self.contrast(img)]), self.labels[j]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    images, labels = read_cifar10_train(args.data_dir)
    ds = ThreeViews(images, labels, long_tail_indices(labels))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    seen = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for views, _ in loader:
            seen += views.shape[0]
    elapsed = time.perf_counter() - start
    print(f"torchvision images/s: {seen / elapsed:.1f} ({seen} images in {elapsed:.2f} s, {args.workers} workers)")


if __name__ == "__main__":
    main()
