"""ProCo in a FixMatch-style semi-supervised step (the paper's long-tailed SSL extension).

Each step has a labelled batch and an unlabelled batch. The unlabelled images get a weak and a
strong view; where the classifier is confident on the weak view (max softmax >= threshold),
its prediction is a pseudo-label. Those confident unlabelled features join the labelled ones:
they update ProCo's class-conditional vMF estimators, and their strong views enter the ProCo
loss with the pseudo-labels, as labelled features do with theirs.

    loss = CE(labelled) + lambda_u * CE(strong, pseudo-label)[confident]
           + alpha * ProCo(labelled + confident unlabelled)

Synthetic long-tailed data with 10% of the labels, so it runs in seconds on a CPU.

    python fixmatch_ssl.py [--steps 150] [--threshold 0.95]
"""

import argparse

import torch
import torch.nn.functional as F

from two_branch import TwoBranch  # the toy network, beside this file
from proco import ProCoLoss


def weak(x):
    return x + 0.05 * torch.randn_like(x)


def strong(x):
    return x * (torch.rand_like(x) > 0.2) + 0.3 * torch.randn_like(x)


def ssl_step(model, criterion_scl, log_prior, labelled, unlabelled, threshold, lambda_u=1.0, alpha=1.0):
    """One FixMatch + ProCo step; returns the loss and how many pseudo-labels were confident."""
    (xl, yl), xu = labelled, unlabelled
    logits_l, z_l = model(weak(xl))
    with torch.no_grad():
        probs = F.softmax(model(weak(xu))[0], dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = confidence >= threshold
    logits_s, z_s = model(strong(xu))
    loss_l = F.cross_entropy(logits_l + log_prior, yl)
    loss_u = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()
    # ProCo over labelled features and the confident unlabelled ones (strong views): the
    # estimator takes both, with the pseudo-labels standing in for labels.
    z = torch.cat([z_l, z_s[mask]])
    y = torch.cat([yl, pseudo[mask]])
    contrast = criterion_scl(z, y)
    loss_scl = F.cross_entropy(contrast + log_prior, y)
    return loss_l + lambda_u * loss_u + alpha * loss_scl, int(mask.sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    num_classes, dim = 8, 32
    centres = torch.randn(num_classes, dim, generator=g) * 2.0
    counts = [max(4, int(400 * 50 ** (-j / (num_classes - 1)))) for j in range(num_classes)]
    x = torch.cat([centres[j] + torch.randn(n, dim, generator=g) for j, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), j) for j, n in enumerate(counts)])
    labelled = torch.rand(len(y), generator=g) < 0.1
    xl_all, yl_all, xu_all = x[labelled], y[labelled], x[~labelled]

    model = TwoBranch(dim, num_classes, 64)
    criterion_scl = ProCoLoss(contrast_dim=64, temperature=0.1, num_classes=num_classes)
    criterion_scl.cal_weight_for_classes(torch.bincount(yl_all, minlength=num_classes).clamp(min=1).tolist())
    log_prior = torch.log(criterion_scl.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps_per_epoch = 50
    for step in range(args.steps):
        if step % steps_per_epoch == 0:
            criterion_scl._hook_before_epoch(step // steps_per_epoch)
        li = torch.randint(0, len(yl_all), (32,), generator=g)
        ui = torch.randint(0, len(xu_all), (96,), generator=g)
        loss, confident = ssl_step(model, criterion_scl, log_prior, (xl_all[li], yl_all[li]), xu_all[ui], args.threshold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49 or step == args.steps - 1:
            with torch.no_grad():
                acc = (model(x[~labelled])[0].argmax(1) == y[~labelled]).float().mean().item()
            print(f"step {step + 1}: loss {loss.item():.4f}, confident pseudo-labels {confident}/96, unlabelled accuracy {100 * acc:.1f}%")


if __name__ == "__main__":
    main()
