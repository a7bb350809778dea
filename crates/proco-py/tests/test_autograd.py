"""The autograd Function: gradcheck in float64, and gradients of several views per step."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import proco


def trained(p, c, tau, seed=0, batches=3, n=16, host_pass_max_work=None):
    """A loss whose estimators have taken a few random batches."""
    g = torch.Generator().manual_seed(seed)
    crit = proco.ProCoLoss(p, tau, c, seed=seed, host_pass_max_work=host_pass_max_work)
    for _ in range(batches):
        z = F.normalize(torch.randn(n, p, generator=g, dtype=torch.float64), dim=1)
        crit.update(z, torch.randint(0, c, (n,), generator=g))
    return crit


@pytest.mark.parametrize("route", [None, 0], ids=["host-pass", "matrix-product"])
@pytest.mark.parametrize("p,c,tau", [(2, 3, 0.5), (3, 4, 0.1), (8, 5, 0.5), (32, 6, 0.1)])
def test_gradcheck_of_the_logits_in_float64(p, c, tau, route):
    crit = trained(p, c, tau, host_pass_max_work=route)
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(5, p, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    assert torch.autograd.gradcheck(crit.logits, (z,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_of_the_logit_adjusted_loss_in_eval_mode():
    crit = trained(16, 7, 0.07).eval()
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(9, 16, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    y = torch.randint(0, 7, (9,), generator=g)
    log_prior = torch.log(torch.linspace(1.0, 0.05, 7, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda t: F.cross_entropy(crit(t, y) + log_prior, y), (z,), eps=1e-6, atol=1e-7)


def test_each_view_keeps_the_estimator_it_was_scored_against():
    """Two views through forward before one backward (the estimator changes in between): each
    view's gradient is that of its own logits, computed here from a snapshot."""
    p, c = 16, 5
    crit = trained(p, c, 0.1)
    snapshot = trained(p, c, 0.1)
    g = torch.Generator().manual_seed(3)
    v1 = F.normalize(torch.randn(8, p, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    v2 = F.normalize(torch.randn(8, p, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    y = torch.randint(0, c, (8,), generator=g)
    (F.cross_entropy(crit(v1, y), y) + F.cross_entropy(crit(v2, y), y)).backward()

    snapshot.update(v1.detach(), y)
    w1 = v1.detach().clone().requires_grad_()
    F.cross_entropy(snapshot.logits(w1), y).backward()
    snapshot.update(v2.detach(), y)
    w2 = v2.detach().clone().requires_grad_()
    F.cross_entropy(snapshot.logits(w2), y).backward()
    torch.testing.assert_close(v1.grad, w1.grad, rtol=0, atol=0)
    torch.testing.assert_close(v2.grad, w2.grad, rtol=0, atol=0)


def test_float32_features_give_float32_logits_and_gradients_close_to_float64():
    crit = trained(32, 6, 0.1).eval()
    g = torch.Generator().manual_seed(4)
    z64 = F.normalize(torch.randn(12, 32, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 6, (12,), generator=g)
    out = []
    for dtype in (torch.float32, torch.float64):
        z = z64.to(dtype).requires_grad_()
        s = crit(z, y)
        assert s.dtype == dtype
        F.cross_entropy(s, y).backward()
        assert z.grad.dtype == dtype
        out.append((s.detach().double(), z.grad.double()))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-6)


def test_both_routes_give_the_same_logits_and_gradient():
    """N x C x p = 64 x 50 x 64 through the host pass and through the matrix products."""
    g = torch.Generator().manual_seed(5)
    z0 = F.normalize(torch.randn(64, 64, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 50, (64,), generator=g)
    out = []
    for route in (None, 0):
        crit = trained(64, 50, 0.07, host_pass_max_work=route)
        z = z0.clone().requires_grad_()
        s = crit(z, y)
        F.cross_entropy(s, y).backward()
        out.append((s.detach(), z.grad))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("host_pass_max_work", [None, 0], ids=["host-pass", "matrix-product"])
def test_the_pass_follows_torchs_thread_count_and_its_results_do_not(host_pass_max_work):
    """N x C = 512 x 300 pairs are enough work for two threads (65,536 pairs per thread); 1
    and 3 torch threads (so 1 and 2 pass threads) give the same logits and gradient to the
    last bit, on both routes."""
    g = torch.Generator().manual_seed(6)
    z0 = F.normalize(torch.randn(512, 16, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 300, (512,), generator=g)
    crit = trained(16, 300, 0.1, host_pass_max_work=host_pass_max_work)
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            z = z0.clone().requires_grad_()
            s = crit.logits(z)
            assert crit.core.threads == threads
            F.cross_entropy(s, y).backward()
            out.append((s.detach(), z.grad))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    with pytest.raises(ValueError, match="at least 1"):
        crit.core.threads = 0


def test_float32_logits_on_the_matrix_product_route_are_the_rounded_float64_logits():
    """Concentrated classes (p = 1024, kappa at its 1e5 clamp, tau 0.07: q = kt^2 - kappa^2 ~ 3e6): the
    dot products are taken in float64, so float32 features give the float64 logits of the same
    values rounded once, not float32 rounding of q magnified into kt."""
    g = torch.Generator().manual_seed(8)
    p, c = 1024, 20
    direction = F.normalize(torch.randn(c, p, generator=g, dtype=torch.float64), dim=1)
    crit = {route: proco.ProCoLoss(p, 0.07, c, host_pass_max_work=route) for route in (None, 0)}
    for loss in crit.values():
        loss.previous_means = direction.numpy().copy()  # R = 1: kappa = 1e5
        loss.previous_counts = np.full(c, 100.0)
    z = F.normalize(torch.randn(64, p, generator=g), dim=1)
    want = crit[None].logits(z.double())  # host pass, float64 features of the same values
    got = crit[0].logits(z)
    assert got.dtype == torch.float32
    err = (got.double() - want).abs().max().item()
    assert err <= 2 * np.finfo(np.float32).eps * want.abs().max().item(), err
