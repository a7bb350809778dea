"""ProCo for PyTorch: the exact ProCo loss (Du, Wang, Song, Huang, TPAMI 2024).

`ProCoLoss` is a drop-in replacement for the authors' module of the same name (same
constructor, same ``forward(features, labels)`` returning the contrast logits, same epoch hook),
computed by the `proco` Rust library in exact double precision: the authors' Bessel recurrence
drifts once kt passes about nu^2 / 8 and is NaN for p = 2 or 3; ours does not.

    from proco import ProCoLoss            # instead of: from loss.proco import ProCoLoss

    criterion_scl = ProCoLoss(contrast_dim=128, temperature=0.1, num_classes=100)
    contrast_logits = criterion_scl(features, labels)   # N x C, differentiable in features
    loss_scl = F.cross_entropy(contrast_logits + log_prior, labels)
    ...
    criterion_scl._hook_before_epoch(epoch)            # at the start of each epoch

The mathematics runs on the host: CUDA features are copied to the host for the logits and
their gradient is copied back (see the README; BENCHMARKS.md lists what moves per step).
"""

from ._native import NORM_TOLERANCE
from .functional import bessel_ratio, log_bessel_i
from .loss import ProCoLoss

__all__ = ["ProCoLoss", "log_bessel_i", "bessel_ratio", "NORM_TOLERANCE"]
