"""`ProCoLoss`: the ProCo contrast logits as a `torch.nn.Module`, exact and on the host."""

import operator

import numpy as np
import torch
from torch import nn

from . import _native

_SEED_STRIDE = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1


def _check_tensor(features, dim, what="features"):
    """Refuses anything but a contiguous floating-point tensor of shape (N, dim), with a
    TypeError or ValueError saying what to pass."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, p), got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{what} must be 2-D of shape (N, p), got shape {tuple(features.shape)}")
    if features.shape[1] != dim:
        raise ValueError(f"{what} have dimension {features.shape[1]}, but this loss was built for contrast_dim = {dim}")
    if not features.is_floating_point():
        raise TypeError(f"{what} must be floating point (float32 or float64), got {features.dtype}")
    if not features.is_contiguous():
        raise ValueError(f"{what} must be contiguous: call .contiguous() on the tensor")
    if features.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{what} must be float16, bfloat16, float32 or float64, got {features.dtype}")


def _compute_dtype(features):
    """float32 for half-precision features (kappa^2 reaches 1e10, past float16's range)."""
    return features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32


def _host_features(features, dim, what="features"):
    """`features` (N x p, floating point, contiguous) as a float32 / float64 host array.

    CPU float32 / float64 tensors are shared, not copied; CUDA tensors are copied to the host;
    float16 / bfloat16 are widened to float32 (exactly).
    """
    _check_tensor(features, dim, what)
    return features.detach().to(_compute_dtype(features)).cpu().numpy()


def _host_labels(labels):
    """Integer class labels as a contiguous int64 host array."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D of shape (N,), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    return labels.detach().to("cpu", torch.int64).contiguous().numpy()


def _integer(value, message):
    """`value` as a Python int (numpy and torch integers too, not bool or float), else a
    ValueError with `message`."""
    if isinstance(value, bool):
        raise ValueError(f"{message}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{message}, got {value!r}") from None


def _follow_torch_threads(core):
    """The host pass uses as many threads as torch's intra-op pool (``torch.set_num_threads``),
    so that a process limited to k threads stays at k."""
    core.threads = max(1, torch.get_num_threads())


class _HostPassLogits(torch.autograd.Function):
    """s = F(|kappa mu + z / tau|) - logc with the exact gradient in z (the estimator is a
    constant, as in ProCo), both in one host pass over the N x C pairs each (small problems:
    N x C x p up to HOST_PASS_MAX_WORK)."""

    @staticmethod
    def forward(ctx, features, host, core, means, counts):
        # `host`: the features' host array when the caller already made it (forward in
        # training mode, which folds the same array into the estimators), else None.
        if host is None:
            host = _host_features(features, core.dim)
        _follow_torch_threads(core)
        logits, kt, ratio = core.logits(host, means, counts)
        ctx.core = core
        # `host` may share memory with `features` (CPU float32 / float64): saving `features`
        # lets autograd refuse a backward after an in-place change to them.
        ctx.save_for_backward(features)
        ctx.saved = (host, means, counts, kt, ratio)
        ctx.feature_device, ctx.feature_dtype = features.device, features.dtype
        return torch.from_numpy(logits).to(device=features.device, dtype=_compute_dtype(features))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logits):
        ctx.saved_tensors  # raises if the features were modified in place since forward
        host, means, counts, kt, ratio = ctx.saved
        upstream = grad_logits.detach().to("cpu", torch.float64).contiguous().numpy()
        _follow_torch_threads(ctx.core)
        grad = ctx.core.backward(host, means, counts, kt, ratio, upstream)
        return torch.from_numpy(grad).to(device=ctx.feature_device, dtype=ctx.feature_dtype), None, None, None, None


class _MatrixProductLogits(torch.autograd.Function):
    """The same logits and gradient for large problems (ImageNet-LT: C = 1000, p = 1024): the
    dot products are matrix products on the features' device, q = (2 / tau) z (kappa mu)^T +
    |z|^2 / tau^2 in float64 (kt^2 = kappa^2 + q reaches 1e10, and a float32 or TF32 product
    would put its rounding into kt), and only the N x C scalars visit the host, where kt = sqrt(kappa^2 + q), F
    and A are evaluated exactly. Backward: d L / d z = C (kappa mu) + rowsum(C) z / tau with
    C_ij = g_ij A_ij / (tau kt_ij), two more products on the device."""

    @staticmethod
    def forward(ctx, features, core, tau, kappa_mu, kappa, logc):
        kind, device = _compute_dtype(features), features.device
        z = features.detach().to(kind)
        deviation = (z.double().square().sum(dim=1).sqrt() - 1.0).abs().max().item()
        _native.check_norm_deviation(deviation)
        km = torch.from_numpy(kappa_mu).to(device=device)
        z64 = z.double()
        q = (z64 @ km.t()) * (2.0 / tau) + z64.square().sum(dim=1, keepdim=True) / (tau * tau)
        km = km.to(kind)
        _follow_torch_threads(core)
        logits, kt, ratio = core.logits_from_q(q.cpu().numpy(), kappa, logc)
        on = lambda a: torch.from_numpy(a).to(device=device, dtype=kind)
        ctx.save_for_backward(z, km, on(kt), on(ratio))
        ctx.tau, ctx.feature_dtype = tau, features.dtype
        return on(logits)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logits):
        z, km, kt, ratio = ctx.saved_tensors
        if not torch.isfinite(grad_logits).all():
            raise ValueError("the upstream gradient of the contrast logits holds NaN or infinite values")
        # A(0) = 0: a pair with kt = 0 contributes nothing.
        coef = torch.where(kt > 0, grad_logits.to(z.dtype) * ratio / (kt * ctx.tau), torch.zeros_like(kt))
        grad = coef @ km + coef.sum(dim=1, keepdim=True) * z / ctx.tau
        return grad.to(ctx.feature_dtype), None, None, None, None, None


def _all_reduce(sums, counts, device):
    """Sums the batch statistics over the ranks of torch.distributed, when it is running."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums, counts
    on = torch.device("cpu")
    if dist.get_backend() == "nccl":
        on = device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    flat = torch.cat([torch.from_numpy(sums).reshape(-1), torch.from_numpy(counts)]).to(on)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu().numpy()
    c, p = sums.shape
    return np.ascontiguousarray(flat[: c * p].reshape(c, p)), np.ascontiguousarray(flat[c * p :])


class ProCoLoss(nn.Module):
    """The ProCo contrast logits of Du et al. (TPAMI 2024), exact.

    Same constructor and forward as the authors' ``ProCoLoss``: ``contrast_dim`` p >= 2 (the
    projection head's output size), ``temperature`` tau (ProCo uses 0.1), ``num_classes`` C.
    ``seed`` fixes the estimators' random initial directions. Batches with N x C x p up to
    ``host_pass_max_work`` (default ``HOST_PASS_MAX_WORK``, 2^24: CIFAR-100 at batch 256 and
    p = 128) are computed in one host pass; larger ones (ImageNet-LT) take their dot products
    as matrix products on the features' device. Both give the same logits and gradient to
    rounding.

    The module keeps two vMF estimators on the host in float64 (running per-class means and
    counts): ``previous`` scores the logits; both take every training batch; at the start of
    an epoch (``_hook_before_epoch``) the finished epoch's ``current`` estimator becomes
    ``previous`` and a fresh one starts. They are saved by ``state_dict`` (as extra state) and
    stay on the host whatever device the module is moved to. Under torch.distributed the
    per-class statistics of every rank's batch are all-reduced, so every rank holds the
    estimator of the union batch.
    """

    def __init__(self, contrast_dim, temperature=1.0, num_classes=1000, *, seed=0, host_pass_max_work=None):
        super().__init__()
        num_classes = _integer(num_classes, "num_classes must be an integer >= 1")
        if num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        contrast_dim = _integer(contrast_dim, "contrast_dim must be an integer >= 2")
        self.core = _native.ProCoCore(contrast_dim, float(temperature))
        self.temperature = float(temperature)
        self.num_classes = num_classes
        self.feature_num = contrast_dim
        self.host_pass_max_work = _native.HOST_PASS_MAX_WORK if host_pass_max_work is None else int(host_pass_max_work)
        self.seed = int(seed) & _U64
        self._draws = 0
        self.register_buffer("weight", None, persistent=False)
        self.previous_means, self.previous_counts = self._fresh()
        self.current_means, self.current_counts = self._fresh()

    def _fresh(self):
        """A new estimator: means 0.9 times random unit vectors (draw number `_draws`), counts 0."""
        seed = (self.seed * _SEED_STRIDE + self._draws) & _U64
        self._draws += 1
        means = _native.initial_means(self.num_classes, self.feature_num, seed)
        return means, np.zeros(self.num_classes)

    def forward(self, features, labels=None, sup_logits=None, args=None):
        """Contrast logits (N x C) of L2-normalised ``features`` (N x p), differentiable in them.

        In training mode with ``labels`` (N integer class indices), both estimators first take
        the batch, as the authors' module does; the logits then use ``previous``.
        ``sup_logits`` and ``args`` are accepted for the authors' call signature and unused.
        """
        if labels is not None and self.training:
            # One host copy of the features serves the update and the host pass.
            host = _host_features(features, self.feature_num)
            self._fold(host, labels, features.device)
            return self._logits(features, host)
        return self.logits(features)

    def logits(self, features):
        """The contrast logits of ``features`` from the current ``previous`` estimator, without
        updating anything: a pure function of ``features`` (for gradcheck, or for callers who
        schedule their own estimator updates)."""
        return self._logits(features, None)

    def _logits(self, features, host):
        """`logits`, with the features' host array `host` when it is already made (else None)."""
        _check_tensor(features, self.feature_num)
        means, counts = self.previous_means.copy(), self.previous_counts.copy()
        if features.shape[0] * self.num_classes * self.feature_num <= self.host_pass_max_work:
            return _HostPassLogits.apply(features, host, self.core, means, counts)
        if features.shape[0] == 0:
            raise ValueError("the batch is empty: pass at least one feature row")
        kappa_mu, kappa, logc = self.core.class_terms(means, counts)
        return _MatrixProductLogits.apply(features, self.core, self.temperature, kappa_mu, kappa, logc)

    def update(self, features, labels):
        """Folds a batch (unit ``features`` N x p, ``labels`` N) into both estimators (after an
        all-reduce over torch.distributed's ranks, when it is running)."""
        self._fold(_host_features(features, self.feature_num), labels, features.device)

    def _fold(self, host, labels, device):
        """`update` of the features' host array `host` (from the features on `device`)."""
        host_labels = _host_labels(labels)
        if host.shape[0] == 0 and host_labels.shape[0] == 0:
            # An empty batch (a rank without foreground proposals, say) adds nothing, but it
            # still joins the ranks' all-reduce, so that no other rank waits for it forever.
            sums, counts = np.zeros((self.num_classes, self.feature_num)), np.zeros(self.num_classes)
        else:
            sums, counts = _native.batch_statistics(host, host_labels, self.num_classes)
        sums, counts = _all_reduce(sums, counts, device)
        _native.apply_statistics(self.current_means, self.current_counts, sums, counts)
        _native.apply_statistics(self.previous_means, self.previous_counts, sums, counts)

    def start_epoch(self):
        """The epoch swap: ``previous`` <- ``current``, and a fresh ``current``."""
        self.previous_means, self.previous_counts = self.current_means, self.current_counts
        self.current_means, self.current_counts = self._fresh()

    def _hook_before_epoch(self, epoch=None, epochs=None):
        """The authors' name for `start_epoch` (their training script calls it each epoch)."""
        self.start_epoch()

    def reload_memory(self):
        """Nothing to do: the authors' method of that name moves their estimators back to the
        GPU after a checkpoint is loaded; these stay on the host, and are restored as they
        were saved (``state_dict``, or pickling the whole module as their script does)."""

    def cal_weight_for_classes(self, cls_num_list):
        """``weight`` (1 x C): the training class frequencies, as the authors' module sets it."""
        counts = torch.as_tensor(cls_num_list, dtype=torch.float32).reshape(1, -1)
        if counts.shape[1] != self.num_classes or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError(f"cls_num_list must hold {self.num_classes} counts >= 0 with a positive sum")
        self.weight = counts / counts.sum()

    def concentrations(self, which="previous"):
        """(kappa, R, logc), each a float64 array over the classes, of one estimator."""
        means, counts = self._estimator(which)
        return _native.concentrations(means, counts)

    def _estimator(self, which):
        if which == "previous":
            return self.previous_means, self.previous_counts
        if which == "current":
            return self.current_means, self.current_counts
        raise ValueError(f"which must be 'previous' or 'current', got {which!r}")

    def get_extra_state(self):
        return {
            "previous_means": torch.from_numpy(self.previous_means.copy()),
            "previous_counts": torch.from_numpy(self.previous_counts.copy()),
            "current_means": torch.from_numpy(self.current_means.copy()),
            "current_counts": torch.from_numpy(self.current_counts.copy()),
            "seed": self.seed,
            "draws": self._draws,
        }

    def set_extra_state(self, state):
        keys = ("previous_means", "previous_counts", "current_means", "current_counts", "seed", "draws")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            raise ValueError(f"not a ProCoLoss state: expected the entries {', '.join(keys)}")
        arrays = {}
        for k in keys[:4]:
            t = state[k]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"ProCoLoss state entry {k} is not a floating-point tensor")
            arrays[k] = t.detach().to("cpu", torch.float64).contiguous().numpy().copy()
        want = {"means": (self.num_classes, self.feature_num), "counts": (self.num_classes,)}
        for k, a in arrays.items():
            shape = want[k.split("_")[1]]
            if a.shape != shape:
                raise ValueError(f"ProCoLoss state entry {k} has shape {a.shape}, expected {shape} for this loss")
        for which in ("previous", "current"):
            # Checked by the library (finite, counts >= 0, means of norm <= 1).
            _native.concentrations(arrays[f"{which}_means"], arrays[f"{which}_counts"])
        self.previous_means, self.previous_counts = arrays["previous_means"], arrays["previous_counts"]
        self.current_means, self.current_counts = arrays["current_means"], arrays["current_counts"]
        self.seed, self._draws = int(state["seed"]) & _U64, int(state["draws"])

    def extra_repr(self):
        return f"contrast_dim={self.feature_num}, temperature={self.temperature}, num_classes={self.num_classes}"
