#!/usr/bin/env python3
"""Generate the reference pixels behind crates/proco/tests/augment_reference.rs.

Every augmentation op of `proco::augment` is run here through PIL / torchvision with fixed
parameters on a few synthetic images; the outputs are stored so the Rust tests compare pixels
without Python at test time.

Usage (from the repository root, with torchvision==0.28.0 in .venv):

    .venv/bin/python bench/gen_augment_refs.py

Writes crates/proco/tests/data/augment/:
    img{0,1,2}.png    the input images (RGB)
    cases.json        one entry per case: op name, parameters (floats as repr strings, parsed
                      exactly on the Rust side), input image, output size and byte offset into
                      outputs.bin
    outputs.bin       concatenated u8 outputs
    normalize.bin     ToTensor + Normalize output of img0 (f32 little-endian, CHW)
"""

import json
import math
import os

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image, ImageEnhance, ImageOps

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "proco", "tests", "data", "augment")

AFFINE = Image.Transform.AFFINE
NEAREST = Image.Resampling.NEAREST
BILINEAR = Image.Resampling.BILINEAR
BICUBIC = Image.Resampling.BICUBIC
RESAMPLE_NAMES = {"nearest": NEAREST, "bilinear": BILINEAR, "bicubic": BICUBIC}
GRAY = (128, 128, 128)
IMAGENET_FILL = (124, 116, 104)


def make_images():
    """Three synthetic photographs-like images: smooth gradients, blocks with edges, noise."""
    rng = np.random.default_rng(20240611)
    h, w = 32, 32
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img0 = np.stack(
        [
            40 + 180 * x / (w - 1),
            30 + 150 * y / (h - 1),
            128 + 90 * np.sin((x + y) / 5.0),
        ],
        axis=-1,
    )
    img0 += rng.normal(0, 12, size=img0.shape)
    # Low-contrast blocks with a disc: autocontrast/equalize have work to do.
    img1 = np.zeros((h, w, 3))
    img1[:, :] = (90, 110, 70)
    img1[4:20, 6:26] = (140, 80, 60)
    img1[(y - 22) ** 2 + (x - 12) ** 2 < 49] = (60, 150, 160)
    img1 += rng.normal(0, 6, size=img1.shape)
    # Non-square noise with a bright band: catches x/y mix-ups and saturation.
    h2, w2 = 28, 40
    img2 = rng.uniform(0, 255, size=(h2, w2, 3))
    img2[10:14, :, :] = 250
    imgs = [np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (img0, img1, img2)]
    return [Image.fromarray(a, "RGB") for a in imgs]


def rotate_with_fill(img, magnitude):
    # The CIFAR AutoAugment rotate: RGBA rotate (nearest) composited over gray.
    rot = img.convert("RGBA").rotate(magnitude)
    return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)


def affine(img, coeffs, resample, fill):
    return img.transform(img.size, AFFINE, tuple(coeffs), RESAMPLE_NAMES[resample], fillcolor=tuple(fill))


def solarize_add(img, add, thresh):
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * 3)


def cutout_reference(img, cy, cx, length):
    # The reference Cutout, with its random centre fixed, on the ToTensor output.
    t = F.to_tensor(img)
    h, w = t.shape[1], t.shape[2]
    mask = np.ones((h, w), np.float32)
    y1 = np.clip(cy - length // 2, 0, h)
    y2 = np.clip(cy + length // 2, 0, h)
    x1 = np.clip(cx - length // 2, 0, w)
    x2 = np.clip(cx + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    t = t * torch.from_numpy(mask).expand_as(t)
    return Image.fromarray((t * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")


def color_jitter(img, order, b, c, s, hue):
    for fn_id in order:
        if fn_id == 0 and b is not None:
            img = F.adjust_brightness(img, b)
        elif fn_id == 1 and c is not None:
            img = F.adjust_contrast(img, c)
        elif fn_id == 2 and s is not None:
            img = F.adjust_saturation(img, s)
        elif fn_id == 3 and hue is not None:
            img = F.adjust_hue(img, hue)
    return img


def cases():
    """(op, params, image index, function) for every reference case."""
    out = []

    def add(op, params, images, fn):
        for k in images:
            out.append((op, params, k, fn))

    all3 = (0, 1, 2)
    for f in (0.1, 0.55, 1.37, 1.9):
        add("brightness", {"factor": f}, all3, lambda im, f=f: ImageEnhance.Brightness(im).enhance(f))
    for f in (0.1, 0.7, 1.3, 1.9):
        add("contrast", {"factor": f}, all3, lambda im, f=f: ImageEnhance.Contrast(im).enhance(f))
    for f in (0.0, 0.4, 1.6):
        add("color", {"factor": f}, all3, lambda im, f=f: ImageEnhance.Color(im).enhance(f))
    for f in (0.1, 0.5, 1.9):
        add("sharpness", {"factor": f}, all3, lambda im, f=f: ImageEnhance.Sharpness(im).enhance(f))
    for hf in (-0.5, -0.1, -0.03, 0.05, 0.1, 0.5):
        add("hue", {"factor": hf}, all3, lambda im, hf=hf: F.adjust_hue(im, hf))
    add("grayscale", {}, all3, lambda im: F.rgb_to_grayscale(im, num_output_channels=3))
    for bits in (1, 4, 5, 6, 7, 8):
        add("posterize", {"bits": bits}, (0, 2), lambda im, b=bits: ImageOps.posterize(im, b))
    for thr in [float(v) for v in np.linspace(256, 0, 10)[[0, 1, 2, 5, 9]]] + [128.0]:
        add("solarize", {"threshold": thr}, (0, 2), lambda im, t=thr: ImageOps.solarize(im, t))
    for a in (30, 110):
        add("solarize_add", {"add": a, "threshold": 128}, (0, 2), lambda im, a=a: solarize_add(im, a, 128))
    add("invert", {}, (0, 2), ImageOps.invert)
    add("autocontrast", {}, all3, ImageOps.autocontrast)
    add("equalize", {}, all3, ImageOps.equalize)
    add("hflip", {}, (0, 2), F.hflip)

    # Affine transforms: CIFAR AutoAugment (shear bicubic, translate nearest, fill gray) and
    # RandAugment (bilinear or bicubic, fill = ImageNet mean).
    for m in (0.1, -0.3, float(np.linspace(0, 0.3, 10)[7])):
        for resample, fill in (("bicubic", GRAY), ("bilinear", IMAGENET_FILL)):
            cx = [1, m, 0, 0, 1, 0]
            cy = [1, 0, 0, m, 1, 0]
            p = {"resample": resample, "fill": list(fill)}
            add("affine", dict(p, coeffs=cx), all3, lambda im, c=cx, r=resample, fl=fill: affine(im, c, r, fl))
            add("affine", dict(p, coeffs=cy), all3, lambda im, c=cy, r=resample, fl=fill: affine(im, c, r, fl))
    tr = float(np.linspace(0, 150 / 331, 10)[9])
    for t in (tr * 32, -tr * 32, -8.2, 3.0, 0.5):
        for resample, fill in (("nearest", GRAY), ("bilinear", IMAGENET_FILL), ("bicubic", IMAGENET_FILL)):
            p = {"resample": resample, "fill": list(fill)}
            for c in ([1, 0, t, 0, 1, 0], [1, 0, 0, 0, 1, t]):
                add("affine", dict(p, coeffs=c), (0, 2), lambda im, c=c, r=resample, fl=fill: affine(im, c, r, fl))
    for deg in (float(np.linspace(0, 30, 10)[2]), 30.0, -13.3, 90.0, 180.0):
        add("rotate_gray", {"degrees": deg}, all3, lambda im, d=deg: rotate_with_fill(im, d))
    for deg in (-17.5, 29.1, 4.0):
        for resample in ("bilinear", "bicubic"):
            p = {"degrees": deg, "resample": resample, "fill": list(IMAGENET_FILL)}
            add("rotate", p, all3,
                lambda im, d=deg, r=resample: im.rotate(d, resample=RESAMPLE_NAMES[r], fillcolor=IMAGENET_FILL))

    # Resize (PIL bilinear with antialiasing) after a crop, as torchvision resized_crop does.
    for (top, left, h, w, oh, ow) in (
        (0, 0, 32, 32, 32, 32),
        (3, 5, 17, 11, 32, 32),
        (10, 0, 22, 32, 32, 32),
        (0, 0, 28, 40, 32, 32),
        (0, 0, 28, 40, 13, 9),
        (2, 7, 20, 30, 7, 24),
        (1, 1, 9, 25, 32, 32),
        (0, 0, 32, 32, 8, 30),
        (5, 3, 20, 20, 64, 64),
    ):
        def fn(im, top=top, left=left, h=h, w=w, oh=oh, ow=ow):
            if top + h > im.size[1] or left + w > im.size[0]:
                return None
            return F.resized_crop(im, top, left, h, w, [oh, ow], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        add("resized_crop", {"top": top, "left": left, "height": h, "width": w, "out_height": oh, "out_width": ow},
            all3, fn)

    # RandomCrop(32, padding=4): zero pad then crop at (top, left) of the padded image.
    for top, left in ((0, 0), (8, 8), (3, 5), (4, 4), (7, 1)):
        def fn(im, top=top, left=left):
            if im.size != (32, 32):
                return None
            return F.crop(F.pad(im, 4, fill=0), top, left, 32, 32)
        add("padded_crop", {"top": top, "left": left, "padding": 4, "size": 32}, all3, fn)

    for cy, cx in ((0, 0), (16, 16), (31, 5), (3, 29)):
        def fn(im, cy=cy, cx=cx):
            if im.size != (32, 32):
                return None
            return cutout_reference(im, cy, cx, 16)
        add("cutout", {"center_y": cy, "center_x": cx, "length": 16}, (0, 1), fn)

    for order, b, c, s, hue in (
        ([0, 1, 2, 3], 1.2, 0.7, 1.3, 0.05),
        ([3, 2, 1, 0], 0.65, 1.38, 0.61, -0.09),
        ([2, 0, 3, 1], 1.01, 0.99, 1.4, 0.0),
        ([1, 3, 0, 2], 0.8, 1.1, 0.9, None),
    ):
        add("color_jitter", {"order": order, "brightness": b, "contrast": c, "saturation": s, "hue": hue}, all3,
            lambda im, o=order, b=b, c=c, s=s, h=hue: color_jitter(im, o, b, c, s, h))
    return out


def encode_floats(v):
    """Floats as their shortest repr strings, so the Rust side parses them exactly."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, dict):
        return {k: encode_floats(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode_floats(x) for x in v]
    return v


def main():
    assert torchvision.__version__.startswith("0.28"), torchvision.__version__
    os.makedirs(OUT, exist_ok=True)
    imgs = make_images()
    for k, im in enumerate(imgs):
        im.save(os.path.join(OUT, f"img{k}.png"))

    blob = bytearray()
    manifest = []
    for op, params, k, fn in cases():
        res = fn(imgs[k].copy())
        if res is None:
            continue
        assert res.mode == "RGB", (op, res.mode)
        data = np.asarray(res, dtype=np.uint8).tobytes()
        manifest.append({
            "op": op,
            "params": encode_floats(params),
            "image": k,
            "width": res.size[0],
            "height": res.size[1],
            "offset": len(blob),
        })
        blob += data
    with open(os.path.join(OUT, "outputs.bin"), "wb") as fh:
        fh.write(blob)

    norm = F.normalize(F.to_tensor(imgs[0]), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    with open(os.path.join(OUT, "normalize.bin"), "wb") as fh:
        fh.write(norm.numpy().astype("<f4").tobytes())

    meta = {
        "generator": "bench/gen_augment_refs.py",
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
        "cases": manifest,
    }
    with open(os.path.join(OUT, "cases.json"), "w") as fh:
        json.dump(meta, fh, indent=0)
    print(f"{len(manifest)} cases, {len(blob)} bytes of outputs")


if __name__ == "__main__":
    main()
