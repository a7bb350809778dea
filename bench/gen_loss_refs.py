#!/usr/bin/env python3
"""Reference values for the classifier and contrastive losses, from small PyTorch
implementations of our own written from the papers' formulas, anchor by anchor (no masks, so
they share no code path with the vectorised Rust versions). Float64 throughout.

    .venv/bin/python bench/gen_loss_refs.py crates/proco/tests/data/losses/losses.json

The Rust test `crates/proco/tests/loss_reference.rs` reads the file: fixed inputs, each loss
and its gradient with respect to every input.

- CE, logit-adjusted CE (Menon et al. 2021: CE(logits + tau log pi)), Balanced Softmax (Ren et
  al. 2020: CE(logits + log n_j)).
- SupCon (Khosla et al. 2020), L_out (mean over positives of log-probabilities) and L_in (log
  of the mean positive probability), over a batch and optional extra contrast samples that
  are never anchors and carry no gradient.
- BCL (Zhu et al. 2022): the batch's 2N views and C class prototypes; each contrast sample's
  exp-similarity divided by its class's count in the batch (the anchor excluded from its own
  class's count).
"""
import json
import math
import sys

import torch

torch.set_default_dtype(torch.float64)


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def ce_family(logits, labels, shift):
    losses = []
    for i in range(logits.shape[0]):
        row = logits[i] + shift
        losses.append(torch.logsumexp(row, 0) - row[labels[i]])
    return torch.stack(losses).mean()


def supcon(features, labels, extra_f, extra_y, tau, variant):
    contrast = [(features[a], int(labels[a]), a) for a in range(features.shape[0])]
    contrast += [(extra_f[m].detach(), int(extra_y[m]), None) for m in range(extra_f.shape[0])]
    losses = []
    for i in range(features.shape[0]):
        zi, yi = features[i], int(labels[i])
        others = [(z, y) for (z, y, idx) in contrast if idx != i]
        log_den = torch.logsumexp(torch.stack([zi @ z / tau for z, _ in others]), 0)
        pos = [zi @ z / tau for z, y in others if y == yi]
        if not pos:
            continue
        pos = torch.stack(pos)
        if variant == "mean-of-logs":
            losses.append(-(pos - log_den).mean())
        else:
            losses.append(-(torch.logsumexp(pos, 0) - math.log(len(pos)) - log_den))
    return torch.stack(losses).mean() if losses else features.sum() * 0.0


def bcl(views, labels, prototypes, tau):
    n = labels.shape[0]
    c = prototypes.shape[0]
    samples = [(views[a], int(labels[a % n])) for a in range(2 * n)]
    samples += [(prototypes[j], j) for j in range(c)]
    count = [sum(1 for _, y in samples if y == j) for j in range(c)]
    losses = []
    for i in range(2 * n):
        zi, yi = samples[i]
        den = 0.0
        for a, (z, y) in enumerate(samples):
            if a == i:
                continue
            den = den + torch.exp(zi @ z / tau) / (count[y] - (1 if y == yi else 0))
        pos = [zi @ z / tau for a, (z, y) in enumerate(samples) if a != i and y == yi]
        losses.append(-(torch.stack(pos) - torch.log(den)).mean())
    return torch.stack(losses).mean()


def tensor_json(t):
    return {"shape": list(t.shape), "values": [float(v) for v in t.detach().reshape(-1)]}


def grad_of(loss, inputs):
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def main(out):
    g = torch.Generator().manual_seed(20240306)
    cases = []

    counts = torch.tensor([500.0, 180.0, 64.0, 23.0, 8.0, 3.0, 1.0])
    n, c = 16, counts.numel()
    logits = (torch.randn(n, c, generator=g) * 3.0).requires_grad_(True)
    labels = torch.randint(0, c, (n,), generator=g)
    log_prior = torch.log(counts / counts.sum())
    for name, shift in [("ce", torch.zeros(c)), ("logit-adjusted", log_prior), ("balanced-softmax", torch.log(counts))]:
        loss = ce_family(logits, labels, shift)
        (dl,) = grad_of(loss, [logits])
        cases.append({"loss": name, "class_counts": counts.tolist(), "logits": tensor_json(logits),
                      "labels": labels.tolist(), "value": loss.item(), "grad_logits": tensor_json(dl)})

    for tau, p, nb, nc, extra, variant in [(0.1, 8, 12, 4, 0, "mean-of-logs"), (0.5, 8, 12, 4, 10, "mean-of-logs"),
                                            (0.07, 16, 10, 6, 0, "mean-of-logs"), (0.5, 8, 12, 4, 10, "log-of-mean")]:
        f = unit(torch.randn(2 * nb, p, generator=g)).requires_grad_(True)
        y = torch.randint(0, nc, (nb,), generator=g).repeat(2)
        ef = unit(torch.randn(extra, p, generator=g))
        ey = torch.randint(0, nc, (extra,), generator=g)
        loss = supcon(f, y, ef, ey, tau, variant)
        (df,) = grad_of(loss, [f])
        cases.append({"loss": "supcon", "positives": variant, "tau": tau, "num_classes": nc, "features": tensor_json(f),
                      "labels": y.tolist(), "extra_features": tensor_json(ef), "extra_labels": ey.tolist(),
                      "value": loss.item(), "grad_features": tensor_json(df)})

    for tau, p, nb, nc in [(0.1, 8, 12, 5), (0.07, 16, 9, 12)]:
        v = unit(torch.randn(2 * nb, p, generator=g)).requires_grad_(True)
        y = torch.randint(0, nc, (nb,), generator=g)
        protos = unit(torch.randn(nc, p, generator=g)).requires_grad_(True)
        loss = bcl(v, y, protos, tau)
        dv, dp = grad_of(loss, [v, protos])
        cases.append({"loss": "bcl", "tau": tau, "views": tensor_json(v), "labels": y.tolist(),
                      "prototypes": tensor_json(protos), "value": loss.item(),
                      "grad_views": tensor_json(dv), "grad_prototypes": tensor_json(dp)})

    doc = {"generator": "bench/gen_loss_refs.py", "torch": torch.__version__, "cases": cases}
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"{out}: {len(cases)} cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/proco/tests/data/losses/losses.json")
