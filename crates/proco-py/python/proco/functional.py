"""Exact Bessel functions of large order, vectorised over numpy arrays and torch tensors."""

import numpy as np
import torch

from . import _native


def _elementwise(fn, nu, x):
    nu = float(nu)
    if isinstance(x, torch.Tensor):
        host = x.detach().to("cpu", torch.float64).contiguous().numpy()
        return torch.from_numpy(fn(nu, host)).to(x.device)
    arr = np.asarray(x, dtype=np.float64, order="C")
    out = fn(nu, arr)
    return out if arr.ndim else float(out)


def log_bessel_i(nu, x):
    """log I_nu(x), elementwise, exact in double precision.

    `x` is a number, a numpy array or a torch tensor (any device; the result is float64 on the
    same device, or a float for a number). NaN where nu < 0, x < 0, nu is not finite or x is
    NaN; -inf at x = 0 for nu > 0; +inf at x = +inf. Not differentiable through autograd.
    """
    return _elementwise(_native.log_bessel_i, nu, x)


def bessel_ratio(nu, x):
    """I_{nu+1}(x) / I_nu(x), elementwise, exact in double precision.

    The derivative of log I_nu(x) - nu log x. Inputs as for `log_bessel_i`; NaN where it is
    NaN, 0 at x = 0, 1 at x = +inf.
    """
    return _elementwise(_native.bessel_ratio, nu, x)
