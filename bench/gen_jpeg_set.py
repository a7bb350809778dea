"""Writes a JPEG set of realistic ImageNet size for the pipeline benchmarks: N images near
500 x 375 (ImageNet's common shapes: 500x375, 375x500, 500x333, 333x500, 400x300...), quality
90, photo-like content (smooth gradients, overlapping shapes, sensor-like noise) so that files
weigh what ImageNet's do (about 110 KB on average), in class folders, with an
ImageNet_LT_train.txt list (paths relative to the output directory) over 20 classes.

With --scale S every side is S times larger (1.6: iNaturalist's 800-pixel images; 6: a
camera's 3000 x 2250 photos), the set that DCT-domain reduced decoding is for.

Usage: python bench/gen_jpeg_set.py OUT_DIR [--images 2000] [--seed 0] [--scale 1]
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = [(500, 375), (375, 500), (500, 333), (333, 500), (400, 300), (500, 400), (450, 338), (500, 500)]


def photo(rng, w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 60 * np.sin(a * x / 40 + b * y / 50 + d * 3) + rng.uniform(-40, 40)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(8, 20)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(20, w // 2), y0 + rng.integers(20, h // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(0.5))
    noisy = np.asarray(img, np.float32) + rng.normal(0, 24, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    lines, total = [], 0
    for i in range(args.images):
        c = i % 20
        w, h = SHAPES[rng.integers(len(SHAPES))]
        w, h = round(w * args.scale), round(h * args.scale)
        rel = f"train/n{c:04d}/img_{i:05d}.JPEG"
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        photo(rng, w, h).save(path, quality=90)
        total += os.path.getsize(path)
        lines.append(f"{rel} {c}\n")
    with open(os.path.join(args.out, "ImageNet_LT_train.txt"), "w") as f:
        f.writelines(lines)
    print(f"{args.images} JPEGs in {args.out}, {total / args.images / 1e3:.0f} KB on average")


if __name__ == "__main__":
    main()
