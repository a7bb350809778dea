"""Swapping proco's exact loss into a training script written for the authors' ProCoLoss.

The authors' script builds its contrastive criterion as

    from loss.proco import ProCoLoss
    criterion_scl = ProCoLoss(contrast_dim=128, temperature=0.1, num_classes=num_classes).cuda()

The swap is the import line; nothing else changes:

    from proco import ProCoLoss

This file runs that training loop in miniature (two views per image, logit-adjusted CE on the
classifier plus alpha times ProCo's CE over the contrast logits, the epoch hook) on synthetic
long-tailed data, so it finishes in seconds on a CPU.

    python authors_swap.py [--epochs 3] [--device cpu|cuda]
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from proco import ProCoLoss  # was: from loss.proco import ProCoLoss
from two_branch import TwoBranch  # the toy network, beside this file


def long_tailed_data(num_classes, dim, head, imbalance, generator):
    """Gaussian clusters with head * imbalance^(-j/(C-1)) samples in class j."""
    centres = torch.randn(num_classes, dim, generator=generator) * 2.0
    counts = [max(1, int(head * imbalance ** (-j / (num_classes - 1)))) for j in range(num_classes)]
    x = torch.cat([centres[j] + torch.randn(n, dim, generator=generator) for j, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), j) for j, n in enumerate(counts)])
    return x, y, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    num_classes, dim, contrast_dim, alpha = 10, 32, 128, 1.0
    x, y, counts = long_tailed_data(num_classes, dim, head=500, imbalance=100, generator=g)
    model = TwoBranch(dim, num_classes, contrast_dim).to(args.device)
    criterion_scl = ProCoLoss(contrast_dim=contrast_dim, temperature=0.1, num_classes=num_classes).to(args.device)
    criterion_scl.cal_weight_for_classes(counts)
    log_prior = torch.log(criterion_scl.weight).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(args.epochs):
        criterion_scl._hook_before_epoch(epoch, args.epochs)
        order = torch.randperm(len(y), generator=g)
        total = 0.0
        for start in range(0, len(y), 128):
            idx = order[start : start + 128]
            xb, yb = x[idx].to(args.device), y[idx].to(args.device)
            # Two augmented views (here: noise); the classifier sees the first.
            view1, view2 = xb + 0.1 * torch.randn_like(xb), xb + 0.1 * torch.randn_like(xb)
            logits, z1 = model(view1)
            _, z2 = model(view2)
            loss_ce = F.cross_entropy(logits + log_prior, yb)
            contrast = [criterion_scl(z, yb) for z in (z1, z2)]
            loss_scl = sum(F.cross_entropy(s + log_prior, yb) for s in contrast) / 2
            loss = loss_ce + alpha * loss_scl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        kappa, _, _ = criterion_scl.concentrations()
        print(f"epoch {epoch}: loss {total / len(y):.4f}, median kappa {np.median(kappa):.1f}")


if __name__ == "__main__":
    main()
