"""Per-step time of the ProCo loss inside PyTorch: the `proco` package against a PyTorch
implementation of the authors' numerics (bench/pytorch_reference.py: Miller's recurrence at
integer order, one tensor operation per step, float64).

One step = estimator update with the batch + contrast logits + logit-adjusted CE + backward to
the features, one view (as the issue's figures: 38.0 ms / 4,081 ms for the authors' module,
1.18 ms / 37.0 ms for the Rust library, at N 256, C 100, p 128 and N 256, C 1000, p 1024).
The two run in turn (A B A B ...), and the medians and their ratio are printed.

    .venv/bin/python bench/python_loss.py [--device cpu|cuda] [--rounds 5] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pytorch_reference as ref
import proco


def authors_step(estimators, z, y, log_prior, tau):
    p = z.shape[1]
    estimators.update(z, y)
    kappa, mu = estimators.previous.kappa_mu()
    centre = (kappa[:, None] * mu).to(z.dtype)
    kt = torch.norm(centre.unsqueeze(0) + z.unsqueeze(1) / tau, dim=2)
    nu = p / 2 - 1
    s = ref.MillerLogC.apply(kt, nu) - ref.MillerLogC.apply(kappa, nu).to(z.dtype).unsqueeze(0)
    F.cross_entropy(s + log_prior, y).backward()


def proco_step(crit, z, y, log_prior):
    F.cross_entropy(crit(z, y) + log_prior, y).backward()


def timed(fn, device, reps):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds (A B A B)")
    for n, c, p, tau in [(256, 100, 128, 0.1), (256, 1000, 1024, 0.07)]:
        g = torch.Generator().manual_seed(0)
        z = F.normalize(torch.randn(n, p, generator=g), dim=1).to(device).requires_grad_()
        y = torch.randint(0, c, (n,), generator=g).to(device)
        log_prior = torch.log(torch.linspace(1.0, 0.01, c)).to(device)
        crit = proco.ProCoLoss(p, tau, c).to(device)
        estimators = ref.EstimatorPair(c, p, device)
        ours_fn = lambda: proco_step(crit, z, y, log_prior)
        theirs_fn = lambda: authors_step(estimators, z, y, log_prior, tau)
        reps_theirs = 1 if c >= 1000 else 5
        ours_fn(), theirs_fn()  # warm-up
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(timed(ours_fn, device, 20))
            theirs.append(timed(theirs_fn, device, reps_theirs))
        a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        print(f"N {n}, C {c}, p {p}: proco {a:.2f} ms, authors' numerics {b:.1f} ms, ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
