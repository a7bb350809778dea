"""Every golden case (logits, loss, gradient, estimator updates, Bessel table) through the
package, within the Rust tests' tolerances."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import proco
from proco import _native

EPS = np.finfo(np.float64).eps


# The two routes: one host pass (the default at these sizes), and the matrix-product route.
ROUTES = {"host-pass": None, "matrix-product": 0}


def loss_for(case, route="host-pass"):
    """A ProCoLoss holding the case's estimator state as its `previous` estimator."""
    crit = proco.ProCoLoss(case["p"], case["tau"], case["num_classes"], host_pass_max_work=ROUTES[route])
    state = case["estimator_state"]
    crit.previous_means = np.array(state["means"], dtype=np.float64)
    crit.previous_counts = np.array(state["counts"], dtype=np.float64)
    return crit


def kappa_err(case):
    """As golden_loss.rs: kappa's conditioning 2 / (1 - R^2), exact where it was clamped."""
    e = case["expected"]
    r, k = np.array(e["R"]), np.array(e["kappa"])
    ok = np.array([f == "ok" for f in e["kappa_flag"]])
    return np.where(ok, 1e-15 + 4e-16 * 2.0 / np.abs(1.0 - r * r), 0.0) * k


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_loss_case_logits_loss_and_gradient(golden, route):
    cases = golden("proco_loss_cases.json")["cases"]
    assert cases, "no golden loss cases"
    for case in cases:
        e = case["expected"]
        crit = loss_for(case, route)
        z = torch.tensor(case["features"], dtype=torch.float64, requires_grad=True)
        y = torch.tensor(case["labels"])
        s = crit.logits(z)
        kt, want_s = np.array(e["kt"]), np.array(e["contrast_logits"])
        kappa, kerr = np.array(e["kappa"]), kappa_err(case)
        nu = case["p"] / 2 - 1
        f_scale = np.abs(proco.log_bessel_i(nu, kt) - nu * np.log(kt)) + np.abs(proco.log_bessel_i(nu, kappa) - nu * np.log(kappa))[None, :]
        tol_s = 1e-15 * kt + 8 * EPS * f_scale + 1e-14 + 2 * kerr[None, :]
        err = np.abs(s.detach().numpy() - want_s)
        assert (err <= tol_s).all(), f"{case['name']}: logits off by up to {err.max():e}"

        got_kappa, _, _ = crit.concentrations()
        assert np.all(np.abs(got_kappa - kappa) <= np.maximum(kerr, 1e-15 * kappa)), case["name"]

        log_prior = torch.tensor(e["log_prior"], dtype=torch.float64)
        loss = F.cross_entropy(s + log_prior, y)
        assert abs(loss.item() - e["loss"]) <= 1e-10 * abs(e["loss"]), f"{case['name']}: loss {loss.item()} vs {e['loss']}"
        loss.backward()
        want_g = np.array(e["grad_features"])
        scale = np.abs(want_g).max()
        g_err = np.abs(z.grad.numpy() - want_g).max() / scale
        assert g_err <= 1e-10, f"{case['name']}: gradient error {g_err:e} of max |grad| {scale:e}"


def test_every_estimator_step_updates_as_the_golden_sequence(golden):
    sequences = golden("estimator_cases.json")["sequences"]
    assert sequences, "no golden estimator sequences"
    steps = 0
    for seq in sequences:
        p, c = seq["p"], seq["num_classes"]
        state = seq["initial_state"]
        for k, step in enumerate(seq["steps"]):
            crit = proco.ProCoLoss(p, 0.1, c)
            crit.previous_means = np.array(state["means"], dtype=np.float64)
            crit.previous_counts = np.array(state["counts"], dtype=np.float64)
            crit.current_means, crit.current_counts = crit.previous_means.copy(), crit.previous_counts.copy()
            crit.update(torch.tensor(step["batch_features"], dtype=torch.float64), torch.tensor(step["batch_labels"]))
            want = step["expected"]
            for which in ("previous", "current"):
                means, counts = crit._estimator(which)
                np.testing.assert_allclose(means, np.array(want["means"]), rtol=0, atol=4 * EPS, err_msg=f"{seq['name']} step {k}")
                np.testing.assert_array_equal(counts, np.array(want["counts"], dtype=np.float64))
            kappa, r, logc = crit.concentrations()
            # kappa's conditioning 2 / (1 - R^2), as golden_loss.rs; exact where it was clamped.
            ok = np.array([f == "ok" for f in want["kappa_flag"]])
            rr = np.where(ok, np.array(want["R"]), 0.0)
            tol = np.where(ok, 1e-15 + 4e-16 * 2.0 / np.abs(1.0 - rr * rr), 1e-15)
            want_kappa = np.array(want["kappa"])
            assert np.all(np.abs(kappa - want_kappa) <= tol * want_kappa), f"{seq['name']} step {k}: kappa"
            state = {"means": want["means"], "counts": want["counts"]}
            steps += 1
    assert steps > 0


def rel(got, want):
    """Relative error as golden_bessel.rs computes it (0 where equal, e.g. both -inf)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(got == want, 0.0, np.abs(got - want) / np.abs(want))


def test_bessel_table(golden):
    """Every table entry and extra point within golden_bessel.rs's 1e-13 (relative)."""
    table = golden("bessel.json")
    rows = list(table["table"]) + [dict(p, x=[p["x"]], logI=[p["logI"]], ratio=[p["ratio"]]) for p in table["extra_points"]]
    assert rows
    points = 0
    for row in rows:
        nu, x = row["nu"], np.array(row["x"], dtype=np.float64)
        log_i, ratio = np.array(row["logI"]), np.array(row["ratio"])
        got_log_i, got_ratio = proco.log_bessel_i(nu, x), proco.bessel_ratio(nu, x)
        assert rel(got_log_i, log_i).max() <= 1e-13, f"nu {nu}: log I off by {rel(got_log_i, log_i).max():e}"
        assert rel(got_ratio, ratio).max() <= 1e-13, f"nu {nu}: ratio off by {rel(got_ratio, ratio).max():e}"
        points += len(x)
    assert points >= 41
    # Scalars and tensors too.
    assert isinstance(proco.log_bessel_i(63, 10.0), float)
    t = proco.bessel_ratio(63, torch.tensor([[1.0, 1e4]], dtype=torch.float32))
    assert t.dtype == torch.float64 and t.shape == (1, 2)
