"""Bad input raises a Python exception that says what was wrong; nothing aborts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import proco
from proco import _native


@pytest.fixture(params=[None, 0], ids=["host-pass", "matrix-product"])
def crit(request):
    return proco.ProCoLoss(8, 0.1, 4, host_pass_max_work=request.param)


def unit(n, p=8, dtype=torch.float32):
    return F.normalize(torch.randn(n, p, dtype=dtype), dim=1)


@pytest.mark.parametrize(
    "features,labels,error,message",
    [
        (torch.full((3, 8), float("nan")), [0, 1, 2], ValueError, "NaN or infinite"),
        (torch.randn(3, 8) * 5, [0, 1, 2], ValueError, "norm off from 1"),
        (unit(3, 7), [0, 1, 2], ValueError, "contrast_dim = 8"),
        (torch.randn(8), [0], ValueError, "2-D"),
        (torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64), ValueError, "empty"),
        (unit(3), [0, 1, 4], ValueError, "label 4 is outside 0..4"),
        (unit(3), [0, -1, 2], ValueError, "label -1 is outside 0..4"),
        (unit(3), [0, 1], ValueError, "2 labels for 3 feature rows"),
        (unit(3), [[0, 1, 2]], ValueError, "1-D"),
        (unit(3), [0.0, 1.0, 2.0], TypeError, "integer class indices"),
        (unit(8, 3).t(), list(range(3)), ValueError, "contiguous"),
        (torch.ones(3, 8, dtype=torch.int64), [0, 1, 2], TypeError, "floating point"),
        (np.ones((3, 8)), [0, 1, 2], TypeError, "torch.Tensor"),
    ],
)
def test_bad_batches_raise(crit, features, labels, error, message):
    with pytest.raises(error, match=message):
        crit(features, torch.as_tensor(labels))
    if "label" not in message and "1-D" not in message and "integer" not in message:
        # The features alone, through the route's own logits (no estimator update first).
        with pytest.raises(error, match=message):
            crit.logits(features)


def test_bad_features_raise_in_logits_and_in_eval_mode_too(crit):
    crit.eval()
    with pytest.raises(ValueError, match="NaN or infinite"):
        crit.logits(torch.full((2, 8), float("inf")))
    with pytest.raises(ValueError, match="norm off from 1"):
        crit(torch.randn(2, 8) * 3)


@pytest.mark.parametrize(
    "args,message",
    [
        ((1, 0.1, 4), "p >= 2"),
        ((8, 0.0, 4), "temperature"),
        ((8, float("nan"), 4), "temperature"),
        ((8, 0.1, 0), "num_classes"),
        ((8.5, 0.1, 4), "contrast_dim"),
    ],
)
def test_bad_constructor_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        proco.ProCoLoss(*args)


def test_bad_states_are_refused(crit):
    good = crit.state_dict()
    state = dict(good["_extra_state"])
    for key, value, message in [
        ("previous_means", torch.zeros(3, 8, dtype=torch.float64), "shape"),
        ("current_counts", torch.full((4,), -1.0, dtype=torch.float64), "negative"),
        ("previous_means", torch.full((4, 8), 2.0, dtype=torch.float64), "norm"),
        ("previous_means", torch.full((4, 8), float("nan"), dtype=torch.float64), "non-finite"),
        ("current_means", [1, 2], "floating-point tensor"),
    ]:
        bad = dict(state, **{key: value})
        with pytest.raises(ValueError, match=message):
            crit.set_extra_state(bad)
    with pytest.raises(ValueError, match="not a ProCoLoss state"):
        crit.set_extra_state({"previous_means": 1})
    # A refused state leaves the loss as it was.
    assert torch.equal(crit.state_dict()["_extra_state"]["previous_means"], state["previous_means"])


def test_a_non_finite_upstream_gradient_raises(crit):
    z = unit(3, dtype=torch.float64).requires_grad_()
    s = crit.logits(z)
    with pytest.raises(ValueError, match="upstream gradient"):
        s.backward(torch.full_like(s, float("nan")))


def test_the_native_functions_check_their_arrays():
    with pytest.raises(ValueError, match="float32 or float64"):
        _native.batch_statistics(np.ones((2, 8), dtype=np.int32), np.zeros(2, dtype=np.int64), 3)
    with pytest.raises(ValueError, match="int64"):
        _native.batch_statistics(np.eye(2, 8), np.zeros(2, dtype=np.int32), 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        _native.batch_statistics(np.eye(8, 2).T, np.zeros(2, dtype=np.int64), 3)
    means, counts = _native.initial_means(3, 8, 0), np.zeros(3)
    with pytest.raises(ValueError, match="batch statistics"):
        _native.apply_statistics(means, counts, np.zeros((3, 8)), np.array([1.0, 0.5, 0.0]))
    sums, batch_counts = np.zeros((3, 8)), np.zeros(3)
    frozen = means.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _native.apply_statistics(frozen, counts, sums, batch_counts)
    with pytest.raises(ValueError, match="writeable"):  # the same array as means and sums
        _native.apply_statistics(sums, counts, sums, batch_counts)
    # Sizes past 2^32 elements are refused before anything is allocated.
    with pytest.raises(ValueError, match="more than"):
        _native.initial_means(1 << 20, 1 << 13, 0)
    with pytest.raises(ValueError, match="more than"):
        _native.batch_statistics(np.eye(2, 8), np.zeros(2, dtype=np.int64), 1 << 30)
    with pytest.raises(ValueError, match="more than"):
        _native.initial_means(1 << 40, 1 << 40, 0)
