"""ProCo on a detector's ROI classification head (the paper's long-tailed detection setting).

In a two-stage detector (Faster / Mask R-CNN) the box head turns each sampled proposal into a
pooled feature, here R x 1024 for R proposals over the batch, and classifies it into C object
classes plus background. ProCo adds a projection head on those ROI features and a
contrastive term over the foreground proposals, whose labels are the matched ground-truth
classes; the background proposals stay with the classifier alone (background has no
class-conditional vMF of its own to learn). The detection framework itself (RPN, ROI Align,
box regression, sampling) is not needed to show where the loss goes: this file fakes the
pooled ROI features and their matched labels with the shapes a detector produces.

    roi_features: (R, 1024)   from the box head (two FC layers after ROI Align)
    roi_labels:   (R,)        matched class in 0..C-1, or C for background
    cls_logits:   (R, C + 1)  the box predictor's classification output
    z:            (R_fg, 128) L2-normalised projections of the foreground ROIs

    loss = box-regression + CE(cls_logits, roi_labels) + alpha * CE(ProCo(z_fg) + log prior, y_fg)

    python detector_roi_head.py [--iterations 60]
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from proco import ProCoLoss


class RoiHeads(nn.Module):
    """A box head's classification side with a ProCo projection head beside it."""

    def __init__(self, roi_dim, num_classes, contrast_dim=128):
        super().__init__()
        self.cls_score = nn.Linear(roi_dim, num_classes + 1)  # + background
        self.projection = nn.Sequential(nn.Linear(roi_dim, roi_dim // 2), nn.ReLU(), nn.Linear(roi_dim // 2, contrast_dim))
        self.num_classes = num_classes

    def forward(self, roi_features):
        return self.cls_score(roi_features), F.normalize(self.projection(roi_features), dim=1)


def roi_losses(heads, criterion_scl, log_prior, roi_features, roi_labels, alpha=0.5):
    """The classification losses of one iteration: CE over C + 1 classes, and ProCo over the
    foreground ROIs (placed where the detector sums its ROI-head losses)."""
    cls_logits, z = heads(roi_features)
    loss_cls = F.cross_entropy(cls_logits, roi_labels)
    foreground = roi_labels < heads.num_classes
    z_fg, y_fg = z[foreground], roi_labels[foreground]
    if not foreground.any():
        # No foreground on this rank: the (empty) batch still joins the estimators' all-reduce
        # under torch.distributed, so the other ranks do not wait for it.
        if criterion_scl.training:
            criterion_scl.update(z_fg, y_fg)
        return loss_cls, loss_cls.new_zeros(())
    contrast = criterion_scl(z_fg, y_fg)  # (R_fg, C): updates the estimators in training mode
    loss_scl = F.cross_entropy(contrast + log_prior, y_fg)
    return loss_cls, alpha * loss_scl


def fake_rois(g, centres, instance_counts, rois=256, fg_fraction=0.25, roi_dim=1024):
    """Sampled proposals of one batch: 25% foreground drawn with the long-tailed class
    frequencies, the rest background, with features clustered by class."""
    c = len(instance_counts)
    n_fg = int(rois * fg_fraction)
    probs = torch.tensor(instance_counts, dtype=torch.float)
    y_fg = torch.multinomial(probs / probs.sum(), n_fg, replacement=True, generator=g)
    labels = torch.cat([y_fg, torch.full((rois - n_fg,), c)])
    x = centres[labels] + torch.randn(rois, roi_dim, generator=g)
    return F.relu(x), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    num_classes, roi_dim = 20, 1024
    instance_counts = [max(2, int(5000 * 200 ** (-j / (num_classes - 1)))) for j in range(num_classes)]
    centres = torch.randn(num_classes + 1, roi_dim, generator=g)
    heads = RoiHeads(roi_dim, num_classes)
    criterion_scl = ProCoLoss(contrast_dim=128, temperature=0.1, num_classes=num_classes)
    criterion_scl.cal_weight_for_classes(instance_counts)
    log_prior = torch.log(criterion_scl.weight)
    opt = torch.optim.SGD(heads.parameters(), lr=0.02, momentum=0.9)
    for it in range(args.iterations):
        if it % 20 == 0:
            criterion_scl._hook_before_epoch(it // 20)
        roi_features, roi_labels = fake_rois(g, centres, instance_counts)
        loss_cls, loss_scl = roi_losses(heads, criterion_scl, log_prior, roi_features, roi_labels)
        loss = loss_cls + loss_scl  # + the box-regression loss in a real detector
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 20 == 19:
            print(f"iteration {it + 1}: classification {loss_cls.item():.4f}, ProCo {loss_scl.item():.4f}")


if __name__ == "__main__":
    main()
