#!/usr/bin/env python3
"""Checkpoints in the layout of the authors' released `.pth.tar` files, for the import tests.

    .venv/bin/python bench/write_authors_checkpoint.py OUT_DIR [resnet32 resnet50 resnext50]

For each architecture it writes OUT_DIR/<arch>.pth.tar with `torch.save` of
{'epoch', 'arch', 'state_dict' (DataParallel's `module.`-prefixed keys), 'best_acc1' (a
tensor), 'optimizer' (SGD state with momentum buffers), 'criterion_scl' (an instance of a
class defined here, as their pickled loss object)}, and OUT_DIR/<arch>.json with a fixed input
batch, the eval-mode logits and projection features of the model, and the checkpoint's facts.

The models are small PyTorch implementations of our own with the authors' parameter names
(`encoder.*`, `head.0/1/3`, `fc.weight`; torchvision-style ResNet names inside the encoder),
randomly initialised with non-trivial BatchNorm statistics so that every tensor matters.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class NormedLinear(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_in, c_out).uniform_(-1, 1))

    def forward(self, x):
        return 30.0 * F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


class CifarBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = (c_out - c_in) // 2 if (stride != 1 or c_in != c_out) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Option A: subsample and zero-pad the channels.
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class CifarResNet32(nn.Module):
    dim = 64

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c_in = 16
        for i, (c, s) in enumerate([(16, 1), (32, 2), (64, 2)]):
            blocks = []
            for k in range(5):
                blocks.append(CifarBlock(c_in, c, s if k == 0 else 1))
                c_in = c
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class Bottleneck(nn.Module):
    def __init__(self, c_in, planes, stride, groups, width_per_group):
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or c_in != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    dim = 2048

    def __init__(self, groups=1, width_per_group=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c_in = 64
        for i, (planes, n, s) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            blocks = []
            for k in range(n):
                blocks.append(Bottleneck(c_in, planes, s if k == 0 else 1, groups, width_per_group))
                c_in = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class Model(nn.Module):
    """The authors' two-branch model: encoder, MLP head, classifier `fc`."""

    def __init__(self, encoder, hidden, feat_dim, num_classes, normed):
        super().__init__()
        self.encoder = encoder
        d = encoder.dim
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, feat_dim))
        self.fc = NormedLinear(d, num_classes) if normed else nn.Linear(d, num_classes)

    def forward(self, x):
        h = self.encoder(x)
        return F.normalize(self.head(h), dim=1), self.fc(h)


class ProCoLoss(nn.Module):
    """Stands for the authors' pickled `criterion_scl` object: a class the loader must never
    import, with tensors in its state."""

    def __init__(self, num_classes, feat_dim):
        super().__init__()
        self.register_buffer("means", torch.randn(num_classes, feat_dim))
        self.temperature = 0.1


CONFIGS = {
    # arch: (encoder, hidden, feature dim, classes, normed classifier, input side)
    "resnet32": (lambda: CifarResNet32(), 512, 128, 10, False, 32),
    "resnet50": (lambda: ImageNetResNet(), 2048, 1024, 1000, True, 64),
    "resnext50": (lambda: ImageNetResNet(groups=32, width_per_group=4), 2048, 1024, 1000, True, 64),
}


def randomise_batchnorm(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.num_batches_tracked.fill_(7)


def write(out_dir, arch):
    make, hidden, feat_dim, classes, normed, side = CONFIGS[arch]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = Model(make(), hidden, feat_dim, classes, normed)
    randomise_batchnorm(model, gen)
    model.eval()
    x = torch.rand(2, 3, side, side, generator=gen) * 2 - 1
    with torch.no_grad():
        z, logits = model(x)
    wrapped = nn.DataParallel(model)  # `module.` prefixes, as their multi-GPU checkpoints
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    wrapped.train()
    feats, out = wrapped(x)
    (out.logsumexp(1).mean() + feats.sum() * 0).backward()
    opt.step()  # momentum buffers in the optimizer state
    # Restore the weights the reference logits were computed with (the step changed them).
    torch.manual_seed(0)
    fresh = Model(make(), hidden, feat_dim, classes, normed)
    randomise_batchnorm(fresh, torch.Generator().manual_seed(1))
    wrapped.module.load_state_dict(fresh.state_dict())
    best = torch.tensor(41.25)
    state = {
        "epoch": 200,
        "arch": arch,
        "state_dict": wrapped.state_dict(),
        "best_acc1": best,
        "optimizer": opt.state_dict(),
        "criterion_scl": ProCoLoss(classes, feat_dim),
    }
    path = f"{out_dir}/{arch}.pth.tar"
    torch.save(state, path)
    facts = {
        "arch": arch,
        "num_classes": classes,
        "feature_dim": feat_dim,
        "hidden_dim": hidden,
        "normed": normed,
        "epoch": 200,
        "best_acc1": best.item(),
        "input_shape": list(x.shape),
        "input": x.flatten().tolist(),
        "logits": logits.flatten().tolist(),
        "features": z.flatten().tolist(),
    }
    with open(f"{out_dir}/{arch}.json", "w") as f:
        json.dump(facts, f)
    print(f"wrote {path}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    archs = sys.argv[2:] or list(CONFIGS)
    for arch in archs:
        write(sys.argv[1], arch)


if __name__ == "__main__":
    main()
