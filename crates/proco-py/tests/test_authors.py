"""Against ProCo's Bessel numerics evaluated the authors' way (bench/pytorch_reference.py:
Miller's recurrence at integer order, the ratio clipped at 1): the same where those are right
(kt well below nu^2 / 8), and the documented difference where they are not."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import proco


def authors_logits(authors, z, means, tau):
    """s_ij = F(kt_ij) - F(kappa_j) with the authors' F (and its clipped derivative)."""
    p = z.shape[1]
    means = torch.from_numpy(means)
    r = means.norm(dim=1)
    kappa = (p * r / (1 - r * r)).clamp(max=1e5)
    centre = kappa[:, None] * means / r[:, None]
    kt = torch.norm(centre.unsqueeze(0) + z.unsqueeze(1) / tau, dim=2)
    nu = p / 2 - 1
    return authors.MillerLogC.apply(kt, nu) - authors.MillerLogC.apply(kappa, nu).unsqueeze(0), kt


def small_kappa_loss(p, c, norm, seed):
    crit = proco.ProCoLoss(p, 1.0, c, seed=seed)
    crit.previous_means = crit.previous_means / 0.9 * norm
    return crit


def test_same_logits_and_gradient_where_the_recurrence_is_right(authors):
    for p, c, norm in [(32, 5, 0.3), (128, 10, 0.5)]:
        crit = small_kappa_loss(p, c, norm, seed=p)
        g = torch.Generator().manual_seed(p)
        z = F.normalize(torch.randn(16, p, generator=g, dtype=torch.float64), dim=1)
        y = torch.randint(0, c, (16,), generator=g)
        ours_z, theirs_z = z.clone().requires_grad_(), z.clone().requires_grad_()
        ours = crit.logits(ours_z)
        theirs, kt = authors_logits(authors, theirs_z, crit.previous_means, 1.0)
        nu = p / 2 - 1
        assert kt.max() < nu * nu / 8, "this check is meant for kt below nu^2/8"
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        F.cross_entropy(ours, y).backward()
        F.cross_entropy(theirs, y).backward()
        torch.testing.assert_close(ours_z.grad, theirs_z.grad, rtol=1e-9, atol=1e-12)


def test_the_documented_difference_where_it_is_not(authors):
    """p = 128 (nu = 63, nu^2/8 = 496): the authors' ratio I_64/I_63 is off by 5e-3 at
    x = 2,000 and clipped to 1 at x = 5,000, where the exact value is 0.9875."""
    nu = 63
    x = torch.tensor([2000.0, 5000.0], dtype=torch.float64)
    log_n, log_n1 = authors.miller_log_ive(nu, x)
    theirs = torch.exp(log_n1 - log_n).clamp(max=1.0).numpy()
    ours = proco.bessel_ratio(nu, x.numpy())
    # Ours (golden-tested) lies within Amos's bounds on I_{nu+1}/I_nu; theirs does not.
    lower = x.numpy() / (nu + 1 + np.sqrt(x.numpy() ** 2 + (nu + 1) ** 2))
    upper = x.numpy() / (nu + 0.5 + np.sqrt(x.numpy() ** 2 + (nu + 0.5) ** 2))
    assert np.all((lower <= ours) & (ours <= upper)), ours
    assert abs(theirs[0] - ours[0]) > 1e-3, (theirs[0], ours[0])
    assert theirs[1] == 1.0 and abs(ours[1] - 0.9875) < 5e-4, (theirs[1], ours[1])


def test_p2_and_p3_are_finite_where_the_authors_are_not(authors):
    for p in (2, 3):
        crit = proco.ProCoLoss(p, 0.1, 4)
        z = F.normalize(torch.randn(6, p, dtype=torch.float64), dim=1)
        assert torch.isfinite(crit.logits(z)).all()
        # Their recurrence at integer order int(p/2 - 1) = 0 takes no step. The authors' module
        # then takes log(0) (logits -inf, a NaN loss); bench/pytorch_reference.py's port of it
        # has no value to return at all.
        with pytest.raises(TypeError):
            authors_logits(authors, z, crit.previous_means, 0.1)
