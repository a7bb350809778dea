"""The toy two-branch network the examples train: a backbone, a linear classifier on it, and a
projection head whose output is L2-normalised for ProCo (the authors' layout in miniature)."""

import torch.nn as nn
import torch.nn.functional as F


class TwoBranch(nn.Module):
    """Backbone, a linear classifier, and a projection head with L2-normalised output."""

    def __init__(self, dim, num_classes, contrast_dim):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.classifier = nn.Linear(64, num_classes)
        self.head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, contrast_dim))

    def forward(self, x):
        """(classifier logits, unit projection features) of a batch `x` (N x dim)."""
        h = self.backbone(x)
        return self.classifier(h), F.normalize(self.head(h), dim=1)
