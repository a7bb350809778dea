"""Throughput of the authors' ImageNet-LT three-view pipeline in torchvision + PIL, in a
DataLoader: the baseline of `proco bench --only imagenet-data`.

View 1: RandomResizedCrop(224, scale=(0.08, 1)), RandomHorizontalFlip, ColorJitter(0.4, 0.4,
0.4, 0), RandAugment rand-n2-m10-mstd0.5 (timm's rand_augment_transform, which the authors'
randaugment.py copies), ToTensor, Normalize. Views 2 and 3: RandomResizedCrop(224),
RandomHorizontalFlip, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
RandomGrayscale(0.2), ToTensor, Normalize. Images read with Image.open(path).convert("RGB").

With --decode-only, each worker only decodes (Image.open + convert("RGB"), PIL's bundled
libjpeg-turbo) and returns the pixel count: decoding megapixels per second, the limit any
pipeline on these files reaches.

Usage: python bench/torchvision_imagenet_pipeline.py --data-dir DIR --workers 2 [--epochs 1]
       [--batch-size 64] [--decode-only]
"""
import argparse
import os
import time

import sys

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_pipeline import contrastive_view  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_list(root):
    with open(os.path.join(root, "ImageNet_LT_train.txt")) as f:
        rows = [line.rsplit(None, 1) for line in f if line.strip()]
    return [(os.path.join(root, p), int(l)) for p, l in rows]


class ThreeViews(Dataset):
    def __init__(self, samples):
        from timm.data.auto_augment import rand_augment_transform

        self.samples = samples
        norm = transforms.Normalize(MEAN, STD)
        ra_params = dict(translate_const=int(224 * 0.45), img_mean=tuple(round(255 * x) for x in MEAN))
        self.classify = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.4, 0.4, 0.4, 0.0),
            rand_augment_transform("rand-n2-m10-mstd0.5", ra_params),
            transforms.ToTensor(),
            norm,
        ])
        self.contrast = contrastive_view(224, MEAN, STD)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return torch.stack([self.classify(img), self.contrast(img), self.contrast(img)]), label


class DecodeOnly(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        with open(self.samples[i][0], "rb") as f:
            img = Image.open(f).convert("RGB")
        return img.size[0] * img.size[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--decode-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    samples = read_list(args.data_dir)
    ds = DecodeOnly(samples) if args.decode_only else ThreeViews(samples)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=False,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    seen, pixels = 0, 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            if args.decode_only:
                seen += len(batch)
                pixels += int(batch.sum())
            else:
                seen += batch[0].shape[0]
    elapsed = time.perf_counter() - start
    if args.decode_only:
        print(f"PIL decode MP/s: {pixels / elapsed / 1e6:.1f} ({seen} images, {pixels / 1e6:.0f} MP in {elapsed:.2f} s, {args.workers} workers)")
    else:
        print(f"torchvision images/s: {seen / elapsed:.1f} ({seen} images in {elapsed:.2f} s, {args.workers} workers)")


if __name__ == "__main__":
    main()
