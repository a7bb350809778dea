"""PyTorch reference for `proco bench --only train`: the same ResNet-32 + ProCo training step,
built with plain PyTorch and with ProCo's Bessel numerics evaluated the way the authors' code
does, timed the same way. Written from the method's description, not from the authors' code.

What it builds (identical to proco's `cifar10-lt-if100` recipe):
- CIFAR ResNet-32: 3x3 conv 16 + BN + ReLU, three stages of five BasicBlocks (16/32/64
  channels, stride 2 at stages 2 and 3, option-A shortcuts: subsample and zero-pad channels),
  global average pooling to 64 features; Kaiming-normal convolutions.
- Projection head Linear(64, 512) + BatchNorm1d + ReLU + Linear(512, 128), L2-normalised;
  classifier Linear(64, C).
- Loss = logit-adjusted CE of the classifier on view 1 + alpha * mean over views 2 and 3 of the
  logit-adjusted CE over ProCo's contrast logits; alpha = 1, tau = 0.1.
- vMF estimator: per-class count-weighted running means of the unit features (two estimators,
  the loss uses the one carried over from the previous epoch, both updated with every view),
  kappa = p R / (1 - R^2), clamped to 1e5.
- Contrast logits s_ij = F(kt_ij) - F(kappa_j), kt_ij = |kappa_j mu_j + z_i / tau|,
  F(x) = log I_nu(x) - nu log x, nu = p/2 - 1, evaluated the authors' way: Miller's backward
  recurrence in float64 started at order 2n, one tensor operation per step in a Python loop,
  normalised by torch.special.i0e, order truncated to n = int(p/2 - 1); the gradient is the
  recurrence's ratio I_{n+1}/I_n clipped at 1, through a custom autograd Function.
- SGD, momentum 0.9, weight decay 2e-4, lr 0.3 with 5 warm-up epochs (the benchmark steps use
  the first epoch's lr, 0.06).

With --resnet50, instead: the imagenet-lt-r50 step (torchvision's ResNet-50, cosine
classifier with scale 30, head Linear(2048, 2048) + BN + ReLU + Linear(2048, 1024), p = 1024,
tau = 0.07, 1000 classes with ImageNet-LT's prior profile, SGD lr 0.1, weight decay 5e-4) on
synthetic inputs at --image-size, batch --batch-size, the pair of `proco bench --only
train-imagenet`.

Usage: python bench/pytorch_reference.py [--device cpu|cuda] [--threads 2] [--steps 5]
       [--seconds 1] [--full-epoch --data-dir data]
       python bench/pytorch_reference.py --resnet50 [--batch-size 8] [--image-size 224] ...
Prints the same `name: value` lines as `proco bench --only train` (bench/compare.sh pairs them).
"""
import argparse
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 10
FEATURE_DIM = 128
HIDDEN_DIM = 512
TAU = 0.1
ALPHA = 1.0
LR, MOMENTUM, WEIGHT_DECAY, WARMUP_EPOCHS = 0.3, 0.9, 2e-4, 5
FIRST_EPOCH_LR = LR / WARMUP_EPOCHS
KAPPA_MAX = 1e5
INITIAL_MEAN_NORM = 0.9
BATCH_SIZES = (128, 256)
WARMUP_STEPS = 2
LOADER_WORKERS = 2
EVAL_BATCH_SIZE = 512


def cifar10_lt_counts():
    """Training images per class of CIFAR-10-LT at imbalance 100: 5000 * 0.01^(j/9), floored."""
    return [int(math.floor(5000 * 0.01 ** (j / 9))) for j in range(NUM_CLASSES)]


# ---------------------------------------------------------------- model

class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = (c_out - c_in) // 2 if stride != 1 or c_in != c_out else None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.pad is None:
            shortcut = x
        else:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ResNet32(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, c_out in enumerate((16, 32, 64)):
            for b in range(5):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


class NormedLinear(nn.Module):
    """Cosine classifier: normalised features times normalised weight columns, times 30."""

    def __init__(self, f, c):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(f, c).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    def forward(self, x):
        return 30.0 * F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


def resnet50_backbone():
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.fc = nn.Identity()
    return net


class TwoBranchNet(nn.Module):
    """Backbone + classifier (CE branch, the only part used at inference) + projection head."""

    def __init__(self, num_classes, resnet50=False):
        super().__init__()
        self.backbone = resnet50_backbone() if resnet50 else ResNet32()
        width = 2048 if resnet50 else 64
        self.classifier = NormedLinear(width, num_classes) if resnet50 else nn.Linear(64, num_classes)
        self.head = nn.Sequential(nn.Linear(width, HIDDEN_DIM), nn.BatchNorm1d(HIDDEN_DIM), nn.ReLU(inplace=True),
                                  nn.Linear(HIDDEN_DIM, FEATURE_DIM))

    def forward(self, x):
        h = self.backbone(x)
        return F.normalize(self.head(h), dim=1), self.classifier(h)

    def logits(self, x):
        return self.classifier(self.backbone(x))


# ---------------------------------------------------------------- ProCo

def logit_adjusted_ce(logits, labels, log_prior):
    return F.cross_entropy(logits + log_prior, labels)


class VmfEstimator:
    """Count-weighted running mean of each class's unit features (float64, on the device)."""

    def __init__(self, num_classes, p, device, generator):
        means = torch.randn(num_classes, p, generator=generator, dtype=torch.float64)
        self.ave = (INITIAL_MEAN_NORM * means / means.norm(dim=1, keepdim=True)).to(device)
        self.amount = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.p = p

    def apply(self, sums, counts):
        w = torch.where(counts > 0, counts / (counts + self.amount), torch.zeros_like(counts))
        batch_mean = sums / counts.clamp(min=1.0)[:, None]
        self.ave = self.ave * (1.0 - w)[:, None] + batch_mean * w[:, None]
        self.amount = self.amount + counts

    def kappa_mu(self):
        r = self.ave.norm(dim=1)
        kappa = self.p * r / (1.0 - r * r)
        bad = ~torch.isfinite(kappa) | (kappa < 0)
        kappa = torch.where(bad, torch.full_like(kappa, KAPPA_MAX), kappa.clamp(max=KAPPA_MAX))
        return kappa, self.ave / r.clamp(min=1e-300)[:, None]


class EstimatorPair:
    """`previous` (used by the loss) and `current` (this epoch), both updated with every view."""

    def __init__(self, num_classes, p, device, seed=0):
        self.num_classes, self.p, self.device = num_classes, p, device
        self.generator = torch.Generator().manual_seed(seed)
        self.previous = VmfEstimator(num_classes, p, device, self.generator)
        self.current = VmfEstimator(num_classes, p, device, self.generator)

    def start_epoch(self):
        self.previous, self.current = self.current, VmfEstimator(self.num_classes, self.p, self.device, self.generator)

    def update(self, z, y):
        onehot = F.one_hot(y, self.num_classes).to(torch.float64)
        sums, counts = onehot.t() @ z.detach().to(torch.float64), onehot.sum(0)
        self.current.apply(sums, counts)
        self.previous.apply(sums, counts)


def miller_log_ive(order, x):
    """(log I_n(x) e^-x, log I_{n+1}(x) e^-x) for float64 x > 0, n = order >= 1: backward
    recurrence I_{i-1} = (2i/x) I_i + I_{i+1} from (I_{2n}, I_{2n+1}) = (1, 0) down to I_0,
    one tensor operation per step, normalised by the known I_0(x) e^-x (torch.special.i0e).
    Every 32 steps the values are rescaled so that small x cannot overflow."""
    two_over_x = 2.0 / x
    cur, nxt = torch.ones_like(x), torch.zeros_like(x)
    log_scale = torch.zeros_like(x)
    log_n = log_n1 = None
    for i in range(2 * order, 0, -1):
        cur, nxt = torch.addcmul(nxt, cur, two_over_x, value=float(i)), cur  # nxt = I_i
        if i == order + 1:
            log_n1 = torch.log(nxt) + log_scale
        elif i == order:
            log_n = torch.log(nxt) + log_scale
        if i % 32 == 0:
            log_scale = log_scale + torch.log(cur)
            nxt, cur = nxt / cur, torch.ones_like(cur)
    log_i0 = torch.log(cur) + log_scale
    log_i0e = torch.log(torch.special.i0e(x))
    return log_i0e + log_n - log_i0, log_i0e + log_n1 - log_i0


class MillerLogC(torch.autograd.Function):
    """F(x) = log I_n(x) - nu log(x + 1e-20) with n = int(nu) by the recurrence; backward
    multiplies by the recurrence's I_{n+1}/I_n clipped at 1."""

    @staticmethod
    def forward(ctx, x, nu):
        xd = x.detach().to(torch.float64)
        log_n, log_n1 = miller_log_ive(int(nu), xd)
        ctx.save_for_backward(torch.exp(log_n1 - log_n).clamp(max=1.0))
        return (log_n + xd - nu * torch.log(xd + 1e-20)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio.to(grad.dtype), None


def contrast_logits(z, estimator):
    kappa, mu = estimator.kappa_mu()
    nu = FEATURE_DIM / 2 - 1
    centre = (kappa[:, None] * mu).to(z.dtype)
    kt = torch.norm(centre.unsqueeze(0) + z.unsqueeze(1) / TAU, dim=2)
    return MillerLogC.apply(kt, nu) - MillerLogC.apply(kappa, nu).to(z.dtype).unsqueeze(0)


def proco_branch(z, y, estimators, log_prior):
    """Views 2 and 3 of the 3N stacked features: estimator update, contrast logits, their CE."""
    n = y.shape[0]
    losses, logits = [], []
    for v in (1, 2):
        zv = z[v * n:(v + 1) * n]
        estimators.update(zv, y)
        s = contrast_logits(zv, estimators.previous)
        losses.append(logit_adjusted_ce(s, y, log_prior))
        logits.append(s)
    return (losses[0] + losses[1]) / 2, logits


def train_step(model, opt, estimators, log_prior, x, y):
    n = y.shape[0]
    z, logits = model(x)
    logits1 = logits[:n]
    ce = logit_adjusted_ce(logits1, y, log_prior)
    proco, contrast = proco_branch(z, y, estimators, log_prior)
    loss = ce + ALPHA * proco
    if not math.isfinite(loss.item()):
        raise RuntimeError("training diverged")
    opt.zero_grad()
    loss.backward()
    opt.step()
    train_logits = logits1.detach() + (contrast[0].detach() + contrast[1].detach()) * (ALPHA / 2)
    correct = (train_logits.argmax(1) == y).sum().item()
    return ce.item(), proco.item(), correct


def make_training(device, log_prior_counts):
    torch.manual_seed(0)
    model = TwoBranchNet(NUM_CLASSES).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=FIRST_EPOCH_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    estimators = EstimatorPair(NUM_CLASSES, FEATURE_DIM, device)
    counts = torch.tensor(log_prior_counts, dtype=torch.float32)
    log_prior = torch.log(counts / counts.sum()).to(device).unsqueeze(0)
    return model, opt, estimators, log_prior


# ---------------------------------------------------------------- timing

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, steps, seconds):
    """WARMUP_STEPS untimed calls, then timed ones until `steps` calls and `seconds` seconds."""
    for _ in range(WARMUP_STEPS):
        fn()
    synchronize(device)
    start, reps = time.perf_counter(), 0
    while reps < max(1, steps) or time.perf_counter() - start < seconds:
        fn()
        reps += 1
    synchronize(device)
    return reps, time.perf_counter() - start


def imagenet_train_step_throughput(batch, size, device, steps, seconds):
    """The imagenet-lt-r50 step; the module constants are switched to that recipe by main()."""
    torch.manual_seed(0)
    model = TwoBranchNet(NUM_CLASSES, resnet50=True).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=MOMENTUM, weight_decay=5e-4)
    estimators = EstimatorPair(NUM_CLASSES, FEATURE_DIM, device)
    counts = torch.tensor([round(1280.0 * (5.0 / 1280.0) ** (j / 999.0)) for j in range(1000)], dtype=torch.float32)
    log_prior = torch.log(counts / counts.sum()).to(device).unsqueeze(0)
    model.train()
    x = torch.randn(3 * batch, 3, size, size, device=device)
    y = torch.randint(NUM_CLASSES, (batch,), device=device)
    reps, secs = timed(lambda: train_step(model, opt, estimators, log_prior, x, y), device, steps, seconds)
    return reps * batch / secs


def train_step_throughput(batch, device, steps, seconds):
    model, opt, estimators, log_prior = make_training(device, cifar10_lt_counts())
    model.train()
    x = torch.randn(3 * batch, 3, 32, 32, device=device)
    y = torch.randint(NUM_CLASSES, (batch,), device=device)
    reps, secs = timed(lambda: train_step(model, opt, estimators, log_prior, x, y), device, steps, seconds)
    return reps * batch / secs


def inference_throughput(batch, device, steps, seconds):
    model, _, _, _ = make_training(device, cifar10_lt_counts())
    model.eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    with torch.no_grad():
        reps, secs = timed(lambda: model.logits(x), device, steps, seconds)
    return reps * batch / secs


def proco_step_time(batch, device, steps, seconds):
    _, _, estimators, log_prior = make_training(device, cifar10_lt_counts())
    base = F.normalize(torch.randn(3 * batch, FEATURE_DIM, device=device), dim=1)
    y = torch.randint(NUM_CLASSES, (batch,), device=device)

    def step():
        z = base.detach().requires_grad_(True)
        loss, _ = proco_branch(z, y, estimators, log_prior)
        loss.backward()
        z.grad.sum().item()

    reps, secs = timed(step, device, steps, seconds)
    return secs / reps


# ---------------------------------------------------------------- full epoch

def read_cifar10_test(root):
    raw = np.fromfile(os.path.join(root, "cifar-10-batches-bin", "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), raw[:, 0].astype(np.int64)


class TestView(Dataset):
    def __init__(self, images, labels):
        # Only --full-epoch needs torchvision and PIL: the step timings run without them.
        from torchvision import transforms
        from torchvision_pipeline import MEAN, STD

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def full_epoch(data_dir, device):
    """First epoch of the recipe on CIFAR-10-LT IF 100 (torchvision pipeline of
    bench/torchvision_pipeline.py, batch 256, drop_last, 2 workers), then evaluation on the 10k
    test images. Returns (seconds, training images, test top-1 %)."""
    from torchvision_pipeline import ThreeViews, long_tail_indices, read_cifar10_train

    images, labels = read_cifar10_train(data_dir)
    kept = long_tail_indices(labels)
    counts = np.bincount(labels[kept], minlength=NUM_CLASSES).tolist()
    test_images, test_labels = read_cifar10_test(data_dir)
    model, opt, estimators, log_prior = make_training(device, counts)
    estimators.start_epoch()
    train_loader = DataLoader(ThreeViews(images, labels, kept), batch_size=256, shuffle=True, drop_last=True,
                              num_workers=LOADER_WORKERS)
    test_loader = DataLoader(TestView(test_images, test_labels), batch_size=EVAL_BATCH_SIZE, shuffle=False,
                             num_workers=LOADER_WORKERS)
    start = time.perf_counter()
    model.train()
    for views, y in train_loader:
        n = views.shape[0]
        x = views.transpose(0, 1).reshape(3 * n, 3, 32, 32).to(device)
        train_step(model, opt, estimators, log_prior, x, y.to(device))
    model.eval()
    hits = 0
    with torch.no_grad():
        for x, y in test_loader:
            hits += (model.logits(x.to(device)).argmax(1).cpu() == y).sum().item()
    synchronize(device)
    return time.perf_counter() - start, len(kept), 100.0 * hits / len(test_labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--full-epoch", action="store_true")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--resnet50", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.resnet50:
        global NUM_CLASSES, FEATURE_DIM, HIDDEN_DIM, TAU, WARMUP_STEPS
        NUM_CLASSES, FEATURE_DIM, HIDDEN_DIM, TAU, WARMUP_STEPS = 1000, 1024, 2048, 0.07, 1
        print(f"PyTorch {torch.__version__} reference, imagenet-lt-r50 step at {args.image_size} px: device {device}, "
              f"{torch.get_num_threads()} threads, {WARMUP_STEPS} warm-up step, then at least {args.steps} steps and {args.seconds} s")
        ips = imagenet_train_step_throughput(args.batch_size, args.image_size, device, args.steps, args.seconds)
        print(f"resnet50 train step images/s, batch {args.batch_size}: {ips:.2f}")
        print(f"peak RSS MiB: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
        return
    print(f"PyTorch {torch.__version__} reference: device {device}, {torch.get_num_threads()} threads, "
          f"{WARMUP_STEPS} warm-up steps, then at least {args.steps} steps and {args.seconds} s")
    for b in BATCH_SIZES:
        print(f"train step images/s, batch {b}: {train_step_throughput(b, device, args.steps, args.seconds):.1f}", flush=True)
    for b in BATCH_SIZES:
        print(f"inference images/s, batch {b}: {inference_throughput(b, device, args.steps, args.seconds):.1f}", flush=True)
    for b in BATCH_SIZES:
        print(f"ProCo loss + estimator ms/step, batch {b}: {proco_step_time(b, device, args.steps, args.seconds) * 1e3:.3f}",
              flush=True)
    if args.full_epoch:
        seconds, n_train, top1 = full_epoch(args.data_dir, device)
        print(f"full epoch: {n_train} training images in batches of 256, {LOADER_WORKERS} DataLoader workers, "
              f"lr {FIRST_EPOCH_LR}, then {EVAL_BATCH_SIZE}-image test batches; test top-1 after it {top1:.2f}%")
        print(f"full epoch seconds: {seconds:.1f}")
    print(f"peak RSS MiB: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()
