#!/usr/bin/env python3
"""Generates the ProCo golden test vectors (bessel, loss cases, estimator sequences, Monte-Carlo
check, CIFAR-10-LT indices and their README) into one directory.

Every expected value is computed with mpmath at 50 significant digits from the exact float64
inputs stored in the files and rounded once to float64. Inputs are drawn from seeded
random.Random streams (normal variates by Box-Muller evaluated in mpmath, so they do not depend
on the platform's libm); the Monte-Carlo part uses random.Random and the math module with
math.fsum for every sum; numpy is used only for the LDAM-DRW CIFAR-10-LT selection, whose
protocol is defined by numpy's legacy RandomState.

    python3 scripts/golden/generate.py --out golden            # everything
    python3 scripts/golden/generate.py --only bessel,loss      # some parts (README is rebuilt
                                                               # from the files present in --out)
    python3 scripts/golden/generate.py --verify-against /work/shared/golden
        # recomputes the expected values of another golden set from its inputs and reports the
        # differences (writes nothing)

Re-running the same command reproduces the files byte for byte (same mpmath version; for
mc_check.json also the same libm, since its samples go through math.log/cos/sin).
"""

import argparse
import json
import math
import operator
import os
import random
import struct
import sys
import tempfile
import time
from fractions import Fraction

import mpmath
from mpmath import mp, mpf

DPS = 50
CHECK_DPS = 70
KAPPA_MAX = 1e5
FD_STEP = 1e-15
SCRIPT = "scripts/golden/generate.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTS = ("bessel", "loss", "estimator", "mc", "cifar", "readme")


def log(msg):
    print(f"[golden] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Output: %.17g floats, the layout of the reference set (one-space indent, scalar lists on one
# line), atomic writes.
# ----------------------------------------------------------------------------------------------

def fmt_float(x):
    if not math.isfinite(x):
        return "null"
    return "%.17g" % x


def dumps(obj, indent=0):
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        pad = " " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if any(isinstance(v, (dict, list, tuple)) for v in obj):
            pad = " " * (indent + 1)
            return "[\n" + ",\n".join(pad + dumps(v, indent + 1) for v in obj) + "\n" + " " * indent + "]"
        return "[" + ", ".join(dumps(v, indent) for v in obj) + "]"
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return fmt_float(obj)
    if isinstance(obj, str):
        return json.dumps(obj)
    raise TypeError(f"cannot write {type(obj).__name__} {obj!r}")


def dumps_compact(obj):
    """One line, plain json.dumps (the layout of cifar10_lt_indices.json in the reference set; its
    only floats are the imbalance factors, written as the shortest repr)."""
    return json.dumps(obj, allow_nan=False)


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log(f"wrote {path} ({os.path.getsize(path)} bytes)")


# ----------------------------------------------------------------------------------------------
# Exact arithmetic helpers
# ----------------------------------------------------------------------------------------------

TWO_M1074 = mpf(2) ** -1074  # exact (a power of two)


def f64(x):
    """Rounds an mpf once to the nearest float64 (ties to even), subnormals included."""
    x = mpf(x)
    if not mpmath.isfinite(x):
        raise ValueError(f"non-finite value {x}")
    if x == 0:
        return 0.0
    if abs(x) < mpf(2) ** -1022:
        # Round directly to a multiple of 2^-1074 (float(x) would round twice here).
        sign, man, exp, bc = x._mpf_
        q = Fraction(man) * (Fraction(2) ** (exp + 1074))
        n = round(q)  # ties to even
        v = math.ldexp(n, -1074)
        return -v if sign else v
    v = float(x)  # mpmath rounds the full mantissa to nearest, once
    if math.isinf(v):
        raise OverflowError(f"{x} does not fit in a float64")
    return v


def f64s(v):
    return [f64(x) for x in v]


def f64m(m):
    return [[f64(x) for x in row] for row in m]


def fixed(vec):
    """A float64 vector as (integers, K): vec[k] == ints[k] * 2^-K exactly."""
    rs = [float(x).as_integer_ratio() for x in vec]
    K = max(d.bit_length() - 1 for _, d in rs)
    return [n << (K - (d.bit_length() - 1)) for n, d in rs], K


def fixed_dot(a, b):
    """Exact dot product of two fixed() vectors, rounded once to the current precision."""
    (ia, ka), (ib, kb) = a, b
    return mpmath.ldexp(mpf(sum(map(operator.mul, ia, ib))), -(ka + kb))


def exact_norm2_parts(a):
    """(S, K2) with |v|^2 = S * 2^-K2 exactly."""
    ia, ka = a
    return sum(x * x for x in ia), 2 * ka


def float_bits(x):
    return struct.unpack("<q", struct.pack("<d", x))[0]


def ulp_diff(a, b):
    ia, ib = float_bits(a), float_bits(b)
    if ia < 0:
        ia = -(ia & 0x7FFFFFFFFFFFFFFF)
    if ib < 0:
        ib = -(ib & 0x7FFFFFFFFFFFFFFF)
    return abs(ia - ib)


def rel(a, b):
    """|a-b|/|b| (|a-b| where b == 0)."""
    d = abs(a - b)
    return d / abs(b) if b != 0 else d


# ----------------------------------------------------------------------------------------------
# Seeded inputs. random.Random(seed).random() is stable across Python versions; normal variates
# are Box-Muller evaluated in mpmath (30 digits) and rounded, so no libm is involved.
# ----------------------------------------------------------------------------------------------

class Inputs:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self._spare = None

    def uniform(self, lo=0.0, hi=1.0):
        return lo + (hi - lo) * self.rng.random()

    def below(self, n):
        """An integer in [0, n) (floor(random() * n), exact in float64 for n < 2^53)."""
        return min(int(self.rng.random() * n), n - 1)

    def normal(self):
        if self._spare is not None:
            v, self._spare = self._spare, None
            return v
        u1 = 1.0 - self.rng.random()  # (0, 1]
        u2 = self.rng.random()
        with mp.workdps(30):
            r = mpmath.sqrt(-2 * mpmath.log(mpf(u1)))
            t = 2 * mpmath.pi * mpf(u2)
            g1, g2 = float(r * mpmath.cos(t)), float(r * mpmath.sin(t))
        self._spare = g2
        return g1

    def normals(self, n):
        return [self.normal() for _ in range(n)]

    def unit(self, p):
        while True:
            g = self.normals(p)
            n = math.sqrt(math.fsum(x * x for x in g))
            if n > 0:
                return [x / n for x in g]

    def shuffle(self, xs):
        for i in range(len(xs) - 1, 0, -1):
            j = self.below(i + 1)
            xs[i], xs[j] = xs[j], xs[i]

    def choice_weighted(self, weights):
        """An index drawn with probability weights[j]/sum (integer weights)."""
        total = sum(weights)
        r = self.below(total)
        cum = 0
        for j, w in enumerate(weights):
            cum += w
            if r < cum:
                return j
        return len(weights) - 1


def normalize(v):
    n = math.sqrt(math.fsum(x * x for x in v))
    return [x / n for x in v]


def lt_counts(n_max, C, imbalance=100):
    """floor(n_max * (1/imbalance)^(j/(C-1))), exactly (imbalance a power of 10)."""
    e10 = round(math.log10(imbalance))
    assert 10 ** e10 == imbalance
    out = []
    for j in range(C):
        if C == 1:
            out.append(n_max)
            continue
        e = Fraction(e10 * j, C - 1)  # the count is n_max * 10^-e
        if e.denominator == 1:
            out.append(n_max // 10 ** e.numerator)
        else:  # irrational, so no tie with an integer
            with mp.workdps(40):
                v = mpf(n_max) * mpf(10) ** (-mpf(e.numerator) / e.denominator)
                out.append(int(mpmath.floor(v)))
    return out


def r_for_kappa(kappa, p):
    """The R with p R / (1 - R^2) = kappa (float64)."""
    return 2.0 * kappa / (p + math.sqrt(p * p + 4.0 * kappa * kappa))


# ----------------------------------------------------------------------------------------------
# Bessel functions (mpmath at the current precision)
# ----------------------------------------------------------------------------------------------

def besseli(nu, x):
    """mpmath.besseli; where its large-x expansion does not reach the precision and the series
    fallback runs out of terms (e.g. nu = 1500, x ~ 3e4), the positive-term power series with
    enough terms."""
    try:
        return mpmath.besseli(nu, x)
    except mpmath.libmp.NoConvergence:
        return mpmath.besseli(nu, x, force_series=True, maxterms=10 ** 7)


def log_i(nu, x):
    return mpmath.log(besseli(nu, x))


def log_i_and_ratio(nu, x):
    a = besseli(nu, x)
    b = besseli(nu + 1, x)
    return mpmath.log(a), b / a


def bessel_fields(nu_f, x_f):
    """The four bessel.json fields at (nu, x), float64 inputs, as mpf."""
    nu, x = mpf(nu_f), mpf(x_f)
    li, ratio = log_i_and_ratio(nu, x)
    return {"logI": li, "log_ive": li - x, "logI_minus_nu_logx": li - nu * mpmath.log(x), "ratio": ratio}


def power_series(nu, x, dps=60):
    """log I_nu(x) and I_{nu+1}/I_nu by the direct (positive-term) power series."""
    with mp.workdps(dps):
        nu, x = mpf(nu), mpf(x)
        q = x * x / 4
        u, s, s1, k = mpf(1), mpf(0), mpf(0), 0
        tol = mpf(10) ** (-dps - 5)
        while True:
            s += u
            s1 += u / (nu + k + 1)
            k += 1
            u = u * q / (k * (nu + k))
            if k * (nu + k) > q and u < tol * s:  # terms decreasing and negligible
                break
            if k > 10 * (int(x) + 1000):
                raise RuntimeError("power series did not converge")
        li = nu * mpmath.log(x / 2) - mpmath.loggamma(nu + 1) + mpmath.log(s)
        return li, x / 2 * s1 / s


def hankel_log_i(nu, x, dps=60):
    """log I_nu(x) by the Hankel large-x expansion; (value, smallest term) or None."""
    with mp.workdps(dps):
        nu, x = mpf(nu), mpf(x)
        mu4 = 4 * nu * nu
        t, s, k, best = mpf(1), mpf(1), 0, mpf(1)
        while True:
            k += 1
            t = -t * (mu4 - (2 * k - 1) ** 2) / (8 * k * x)
            if t == 0:  # terminates (half-integer order)
                best = mpf(0)
                break
            if abs(t) > best:
                break
            best = abs(t)
            s += t
            if best < mpf(10) ** (-dps - 5):
                break
        return x - mpmath.log(2 * mpmath.pi * x) / 2 + mpmath.log(s), best


def half_integer_exact(nu, x):
    """log I_{n+1/2}(x) and the ratio from the finite closed form (both exponentials), evaluated
    at increasing precision until two evaluations agree to 1e-65."""
    n = int(nu - 0.5)
    assert n + 0.5 == nu

    def at(dps):
        with mp.workdps(dps):
            X = mpf(x)

            def logI(m):
                a = b = mpf(0)
                for k in range(m + 1):
                    c = mpmath.factorial(m + k) / (mpmath.factorial(k) * mpmath.factorial(m - k)) / (2 * X) ** k
                    a += (-1) ** k * c
                    b += c
                v = (mpmath.exp(X) * a + (-1) ** (m + 1) * mpmath.exp(-X) * b) / mpmath.sqrt(2 * mpmath.pi * X)
                return mpmath.log(v) if v > 0 else None

            l0, l1 = logI(n), logI(n + 1)
            if l0 is None or l1 is None:
                return None
            return l0, mpmath.exp(l1 - l0)

    dps = 80
    prev = at(dps)
    while True:
        dps *= 2
        cur = at(dps)
        if prev is not None and cur is not None:
            with mp.workdps(80):
                if abs(cur[0] - prev[0]) <= mpf(10) ** -65 * max(1, abs(cur[0])) and \
                        abs(cur[1] - prev[1]) <= mpf(10) ** -65 * cur[1]:
                    return cur
        if dps > 20000:
            raise RuntimeError("half-integer closed form did not settle")
        prev = cur


# ----------------------------------------------------------------------------------------------
# vMF concentration of one estimator class (exact from the float64 mean)
# ----------------------------------------------------------------------------------------------

def concentration_from_parts(S, K2, p, nu):
    """|m|^2 = S 2^-K2 exactly. Returns R, kappa, flag, logc (mpf, str)."""
    if S == 0:
        raise ValueError("a zero mean has no direction")
    R = mpmath.sqrt(mpmath.ldexp(mpf(S), -K2))
    D = (1 << K2) - S  # (1 - R^2) 2^K2, exact
    if D == 0:
        kappa, flag = mpf(KAPPA_MAX), "inf_set_to_max"
    else:
        kappa = p * R / mpmath.ldexp(mpf(D), -K2)
        if kappa < 0:
            kappa, flag = mpf(KAPPA_MAX), "negative_set_to_max"
        elif kappa > KAPPA_MAX:
            kappa, flag = mpf(KAPPA_MAX), "clamp_high"
        else:
            flag = "ok"
    logc = log_i(nu, kappa) - nu * mpmath.log(kappa)
    return R, kappa, flag, logc


def concentration(mean_fixed, p, nu):
    S, K2 = exact_norm2_parts(mean_fixed)
    return concentration_from_parts(S, K2, p, nu)


# ----------------------------------------------------------------------------------------------
# bessel.json
# ----------------------------------------------------------------------------------------------

BESSEL_NUS = [0, 0.5, 1, 1.5, 2.5, 7, 15, 31.5, 63, 127, 255, 511, 1023, 1500]
EXTRA_PS = [2, 3, 5, 16, 128, 1024, 3002]


def x_grid():
    """logspace(-6, 6, 41): 10^(-6 + 12 k/40), each correctly rounded from 50 digits."""
    with mp.workdps(DPS):
        return [f64(mpf(10) ** (mpf(-60 + 3 * k) / 10)) for k in range(41)]


def extra_point_xs(p):
    init = p * 90 / 19
    low = init - 1 / 0.07
    if low <= 0:
        low = 0.5
    return [init, 1e5, 1e5 + 1 / 0.07, low]


def gen_bessel():
    t0 = time.time()
    grid = x_grid()
    table = []
    with mp.workdps(DPS):
        hp = {}
        for nu in BESSEL_NUS:
            row = {"nu": nu, "x": grid}
            vals = [bessel_fields(nu, x) for x in grid]
            for k in ("logI", "log_ive", "logI_minus_nu_logx", "ratio"):
                row[k] = [f64(v[k]) for v in vals]
                hp[(nu, k)] = [v[k] for v in vals]
            table.append(row)
        extra = []
        for p in EXTRA_PS:
            nu = p / 2 - 1
            nu = int(nu) if nu == int(nu) else nu
            for x in extra_point_xs(p):
                v = bessel_fields(nu, x)
                extra.append({"nu": nu, "x": x, **{k: f64(v[k]) for k in ("logI", "log_ive", "logI_minus_nu_logx", "ratio")}})
    log(f"bessel: table and extra points at {DPS} digits in {time.time() - t0:.1f} s")
    ver = verify_bessel_values(table, extra, hp)
    log(f"bessel: verification done ({time.time() - t0:.1f} s total)")
    doc = {
        "description": (
            "Modified Bessel function of the first kind. logI = log I_nu(x); log_ive = log I_nu(x) - x; "
            "logI_minus_nu_logx = log I_nu(x) - nu*log(x) (the ProCo quantity, p = 2*nu+2); ratio = I_{nu+1}(x)/I_nu(x) "
            "(= d/dx logI_minus_nu_logx = vMF mean resultant length A_p(x)). Reference values: mpmath.besseli at 50 decimal "
            "digits on the exact float64 x, rounded once to float64. nus are the orders of p = 2, 3, 4, 5, 7, 16, 32, 65, 128, "
            "256, 512, 1024, 2048 and 3002; x_grid = logspace(-6, 6, 41) (each point 10^(-6+0.3k) correctly rounded). "
            "extra_points: for p in {2, 3, 5, 16, 128, 1024, 3002} the initial kappa p*90/19, the clamp 1e5, 1e5 + 1/0.07 and "
            "p*90/19 - 1/0.07 (0.5 where that is not positive: p = 2 and 3), all computed in float64. "
            "(The scipy_* double-precision columns of other golden sets are not produced here.)"),
        "generator": {"script": SCRIPT, "mpmath": mpmath.__version__, "dps": DPS},
        "verification": ver,
        "nus": BESSEL_NUS,
        "x_grid": grid,
        "table": table,
        "extra_points": extra,
    }
    return doc


def verify_bessel_values(table, extra, hp):
    """Independent evaluations of every table point (and the extra points)."""
    pts = [(row["nu"], x, k) for row in table for k, x in enumerate(row["x"])]
    with mp.workdps(DPS):
        ex_hp = [bessel_fields(e["nu"], e["x"]) for e in extra]

    def li_err(a, b):
        return abs(a - b) / max(abs(b), 1)

    out = {"description": (
        "Each table and extra point recomputed at 80 digits; independently by the direct power series (positive terms, "
        "60 digits; every point with x <= 2e4, plus 300 seeded random (nu, x) points with nu in nus and x log-uniform in "
        "[1e-3, 2e4]); by the Hankel large-x expansion for x >= 1e3 where its smallest term is < 1e-45 (60 digits); by the "
        "finite closed form of half-integer orders (both exponentials, precision raised until stable) for nu in "
        "{0.5, 1.5, 2.5, 31.5}; and the derivative identity d/dx logI_minus_nu_logx = ratio by mpmath.diff at 5 x values "
        "per nu. Numbers are max differences: for logI |a-b|/max(|logI|,1), for ratio |a-b|/|ratio|.")}
    t = time.time()
    m80_li = m80_r = mpf(0)
    with mp.workdps(80):
        for (nu, x, k) in pts:
            v = bessel_fields(nu, x)
            m80_li = max(m80_li, li_err(hp[(nu, "logI")][k], v["logI"]))
            m80_r = max(m80_r, rel(hp[(nu, "ratio")][k], v["ratio"]))
        for e, h in zip(extra, ex_hp):
            v = bessel_fields(e["nu"], e["x"])
            m80_li = max(m80_li, li_err(h["logI"], v["logI"]))
            m80_r = max(m80_r, rel(h["ratio"], v["ratio"]))
    out["max_rel_diff_logI_dps50_vs_dps80"] = float(m80_li)
    out["max_rel_diff_ratio_dps50_vs_dps80"] = float(m80_r)
    log(f"bessel: 80-digit recomputation {time.time() - t:.1f} s")

    t = time.time()
    ps_li = ps_r = mpf(0)
    n_ps = 0
    with mp.workdps(80):
        for (nu, x, k) in pts:
            if x <= 2e4:
                li, r = power_series(nu, x)
                ps_li = max(ps_li, li_err(hp[(nu, "logI")][k], li))
                ps_r = max(ps_r, rel(hp[(nu, "ratio")][k], r))
                n_ps += 1
        for e, h in zip(extra, ex_hp):
            if e["x"] <= 2e4:
                li, r = power_series(e["nu"], e["x"])
                ps_li = max(ps_li, li_err(h["logI"], li))
                ps_r = max(ps_r, rel(h["ratio"], r))
                n_ps += 1
    out["max_rel_diff_logI_vs_power_series"] = float(ps_li)
    out["max_rel_diff_ratio_vs_power_series"] = float(ps_r)
    out["power_series_points_used"] = n_ps
    gen = Inputs(20240601)
    rnd_li = rnd_r = mpf(0)
    for _ in range(300):
        nu = BESSEL_NUS[gen.below(len(BESSEL_NUS))]
        with mp.workdps(30):
            x = float(mpf(10) ** (-3 + mpf(gen.rng.random()) * (4 + mpmath.log10(2))))
        with mp.workdps(DPS):
            v = bessel_fields(nu, x)
        li, r = power_series(nu, x)
        with mp.workdps(80):
            rnd_li = max(rnd_li, li_err(v["logI"], li))
            rnd_r = max(rnd_r, rel(v["ratio"], r))
    out["max_rel_diff_logI_vs_power_series_random_points"] = float(rnd_li)
    out["max_rel_diff_ratio_vs_power_series_random_points"] = float(rnd_r)
    out["power_series_random_points_used"] = 300
    log(f"bessel: power series {time.time() - t:.1f} s")

    t = time.time()
    hk = mpf(0)
    n_hk = 0
    allpts = [(nu, x, hp[(nu, "logI")][k]) for (nu, x, k) in pts] + [(e["nu"], e["x"], h["logI"]) for e, h in zip(extra, ex_hp)]
    for (nu, x, li50) in allpts:
        if x >= 1e3:
            li, best = hankel_log_i(nu, x)
            if best < mpf(10) ** -45:
                with mp.workdps(80):
                    hk = max(hk, li_err(li50, li))
                n_hk += 1
    out["max_rel_diff_logI_vs_hankel"] = float(hk)
    out["hankel_points_used"] = n_hk
    log(f"bessel: Hankel {time.time() - t:.1f} s")

    t = time.time()
    cf_li = cf_r = mpf(0)
    n_cf = 0
    for (nu, x, k) in pts:
        if nu in (0.5, 1.5, 2.5, 31.5):
            li, r = half_integer_exact(nu, x)
            with mp.workdps(80):
                cf_li = max(cf_li, li_err(hp[(nu, "logI")][k], li))
                cf_r = max(cf_r, rel(hp[(nu, "ratio")][k], r))
            n_cf += 1
    out["max_rel_diff_logI_half_integer_closed_form"] = float(cf_li)
    out["max_rel_diff_ratio_half_integer_closed_form"] = float(cf_r)
    out["half_integer_closed_form_points_used"] = n_cf
    log(f"bessel: half-integer closed forms {time.time() - t:.1f} s")

    t = time.time()
    dd = mpf(0)
    for row in table:
        nu = row["nu"]
        for k in (4, 14, 20, 28, 34):
            x = row["x"][k]
            with mp.workdps(DPS):
                d = mpmath.diff(lambda s: log_i(mpf(nu), s) - nu * mpmath.log(s), mpf(x))
                dd = max(dd, rel(d, hp[(nu, "ratio")][k]))
    out["max_rel_diff_derivative_identity"] = float(dd)
    log(f"bessel: derivative identity {time.time() - t:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------
# The ProCo loss (one case, at the current precision)
# ----------------------------------------------------------------------------------------------

class LossCase:
    """Everything of one loss case that does not depend on the working precision."""

    def __init__(self, p, tau, means, features, labels, class_counts_train):
        self.p, self.tau = p, tau
        self.means, self.features, self.labels = means, features, labels
        self.counts_train = class_counts_train
        self.C, self.N = len(means), len(features)
        self.mfix = [fixed(m) for m in means]
        self.zfix = [fixed(z) for z in features]
        self.mz = [[sum(map(operator.mul, zi[0], mj[0])) for mj in self.mfix] for zi in self.zfix]  # exact ints
        self.zz = [exact_norm2_parts(zi) for zi in self.zfix]

    def compute(self, dps, grad=True):
        with mp.workdps(dps):
            return self._compute(grad)

    def _compute(self, want_grad):
        p, C, N = self.p, self.C, self.N
        nu = mpf(p) / 2 - 1
        tau = mpf(self.tau)
        conc = [concentration(m, p, nu) for m in self.mfix]
        R = [c[0] for c in conc]
        kappa = [c[1] for c in conc]
        logc = [c[3] for c in conc]
        total = sum(self.counts_train)
        logpi = [mpmath.log(mpf(n) / total) for n in self.counts_train]
        mz = [[mpmath.ldexp(mpf(self.mz[i][j]), -(self.zfix[i][1] + self.mfix[j][1])) for j in range(C)] for i in range(N)]
        zz = [mpmath.ldexp(mpf(S), -K2) for (S, K2) in self.zz]
        st = dict(nu=nu, tau=tau, R=R, kappa=kappa, logc=logc, logpi=logpi)
        kt, A, s = [], [], []
        for i in range(N):
            kr, ar, sr = [], [], []
            for j in range(C):
                k2 = kappa[j] ** 2 + 2 * kappa[j] * mz[i][j] / (R[j] * tau) + zz[i] / tau ** 2
                k = mpmath.sqrt(k2)
                li, ratio = log_i_and_ratio(nu, k)
                kr.append(k)
                ar.append(ratio)
                sr.append(li - nu * mpmath.log(k) - logc[j])
            kt.append(kr)
            A.append(ar)
            s.append(sr)
        prob, ce = [], []
        for i in range(N):
            v = [s[i][j] + logpi[j] for j in range(C)]
            lse = logsumexp(v)
            prob.append([mpmath.exp(x - lse) for x in v])
            ce.append(lse - v[self.labels[i]])
        loss = mpmath.fsum(ce) / N
        res = dict(conc=conc, logpi=logpi, kt=kt, A=A, s=s, prob=prob, ce=ce, loss=loss, mz=mz, zz=zz, st=st)
        if want_grad:
            g = [[(prob[i][j] - (1 if j == self.labels[i] else 0)) / N for j in range(C)] for i in range(N)]
            mcols = [[mpf(self.means[j][k]) for j in range(C)] for k in range(p)]
            grad = []
            for i in range(N):
                c = [g[i][j] * A[i][j] / kt[i][j] for j in range(C)]
                w = [c[j] * kappa[j] / R[j] for j in range(C)]
                sc = mpmath.fsum(c)
                zi = self.features[i]
                grad.append([(mpmath.fdot(w, mcols[k]) + mpf(zi[k]) / tau * sc) / tau for k in range(p)])
            res["g"] = g
            res["grad"] = grad
        return res

    def row_ce(self, st, i, mz_row, zz_i):
        """Cross-entropy of sample i for perturbed quadratic forms (current precision)."""
        nu, tau, R, kappa, logc, logpi = (st[k] for k in ("nu", "tau", "R", "kappa", "logc", "logpi"))
        v = []
        for j in range(self.C):
            k = mpmath.sqrt(kappa[j] ** 2 + 2 * kappa[j] * mz_row[j] / (R[j] * tau) + zz_i / tau ** 2)
            v.append(log_i(nu, k) - nu * mpmath.log(k) - logc[j] + logpi[j])
        return logsumexp(v) - v[self.labels[i]]


def logsumexp(v):
    m = max(v)
    return m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in v))


def fd_checks(case, res, coords, directions):
    """Central differences of the 50-digit loss (current precision = DPS)."""
    with mp.workdps(DPS):
        h = mpf(FD_STEP)
        st, mz, zz, grad = res["st"], res["mz"], res["zz"], res["grad"]
        N = case.N
        gmax = max(abs(x) for row in grad for x in row)
        crel = cabs = mpf(0)
        for (i, k) in coords:
            zik = mpf(case.features[i][k])
            vals = []
            for sgn in (1, -1):
                row = [mz[i][j] + sgn * h * mpf(case.means[j][k]) for j in range(case.C)]
                z2 = zz[i] + sgn * 2 * h * zik + h * h
                vals.append(case.row_ce(st, i, row, z2))
            fd = (vals[0] - vals[1]) / (2 * h * N)
            an = grad[i][k]
            crel = max(crel, rel(fd, an))
            cabs = max(cabs, abs(fd - an) / gmax)
        drel = mpf(0)
        for D in directions:
            dfix = [fixed(d) for d in D]
            an = mpmath.fsum(mpmath.fdot(grad[i], [mpf(x) for x in D[i]]) for i in range(N))
            tot = []
            for sgn in (1, -1):
                t = sgn * h
                ce = []
                for i in range(N):
                    row = [mz[i][j] + t * fixed_dot(dfix[i], case.mfix[j]) for j in range(case.C)]
                    z2 = zz[i] + 2 * t * fixed_dot(dfix[i], case.zfix[i]) + t * t * fixed_dot(dfix[i], dfix[i])
                    ce.append(case.row_ce(st, i, row, z2))
                tot.append(mpmath.fsum(ce) / N)
            fd = (tot[0] - tot[1]) / (2 * h)
            drel = max(drel, rel(fd, an))
    return {
        "step": FD_STEP,
        "precision_digits": DPS,
        "coordinate_checks": len(coords),
        "coordinate_max_rel_err": float(crel),
        "coordinate_max_abs_err_over_max_abs_grad": float(cabs),
        "directional_checks": len(directions),
        "directional_max_rel_err": float(drel),
    }


def precision_check(r50, r70):
    def mx(a, b):
        return float(max(rel(x, y) for x, y in zip(a, b)))

    flat = lambda m: [x for row in m for x in row]
    return {
        "max_rel_diff_contrast_logits": mx(flat(r50["s"]), flat(r70["s"])),
        "max_rel_diff_logc": mx([c[3] for c in r50["conc"]], [c[3] for c in r70["conc"]]),
        "rel_diff_loss": float(rel(r50["loss"], r70["loss"])),
        "max_rel_diff_grad": mx(flat(r50["grad"]), flat(r70["grad"])),
    }


def expected_of(case, res):
    with mp.workdps(DPS):
        return {
            "log_prior": f64s(res["logpi"]),
            "R": [f64(c[0]) for c in res["conc"]],
            "kappa": [f64(c[1]) for c in res["conc"]],
            "kappa_flag": [c[2] for c in res["conc"]],
            "logc": [f64(c[3]) for c in res["conc"]],
            "kt": f64m(res["kt"]),
            "bessel_ratio": f64m(res["A"]),
            "contrast_logits": f64m(res["s"]),
            "softmax_prob": f64m(res["prob"]),
            "per_sample_loss": f64s(res["ce"]),
            "loss": f64(res["loss"]),
            "loss_decimal": mpmath.nstr(res["loss"], 30),
            "grad_contrast_logits": f64m(res["g"]),
            "grad_features": f64m(res["grad"]),
        }


# Our loss cases: (name, note, seed, p, tau, C, N, n_max, specials, options)
LOSS_CASES = [
    ("p2_tau1.0_C4_N6", "p=2 (Bessel order 0), small-to-moderate kappa, all finite-difference coordinates checked",
     1001, 2, 1.0, 4, 6, 600, {}, dict(r=(0.2, 0.95))),
    ("p3_tau0.1_C5_N8_unseen", "p=3 (half-integer order 0.5); class 4 never seen by the estimator (count 0, initial mean 0.9*u)",
     1002, 3, 0.1, 5, 8, 800, {"unseen": 4}, dict(r=(0.3, 0.95))),
    ("p5_tau0.07_C6_N8_edge", "p=5 (order 1.5); class 5 never seen; class 1 has |m| = 1-1e-9 (kappa clamped to 1e5); "
     "class 3 has |m| = 1+1e-9 (kappa formula negative, set to 1e5)",
     1003, 5, 0.07, 6, 8, 1000, {"unseen": 5, "clamp": 1, "negative": 3}, dict(r=(0.3, 0.97))),
    ("p33_tau0.1_C7_N10_near_clamp", "p=33 (order 15.5); class 2 has kappa ~ 9e4 (just below the clamp); class 6 never seen",
     1004, 33, 0.1, 7, 10, 700, {"unseen": 6, "near_clamp": 2}, dict(r=(0.3, 0.95))),
    ("p16_tau0.07_C10_N16_edge", "all four special classes: class 8 never seen, class 0 clamped (|m| = 1-1e-9), class 4 "
     "negative (|m| = 1+1e-9), class 6 near the clamp (kappa ~ 9e4)",
     1005, 16, 0.07, 10, 16, 500, {"unseen": 8, "clamp": 0, "negative": 4, "near_clamp": 6}, dict(r=(0.2, 0.9))),
    ("p16_tau1.0_C4_N48_tiny_kappa", "very small kappa: |m| = 0.2, 0.05, 1e-3, 1e-5 (kappa 3.3 down to 1.6e-4), tau = 1, "
     "large batch", 1006, 16, 1.0, 4, 48, 400, {}, dict(rs=[0.2, 0.05, 1e-3, 1e-5])),
    ("p128_tau0.1_C10_N24_aligned", "CIFAR-10-like; features drawn around their class mean direction (cos ~ 0.85) so the "
     "logits are peaked; class 0 (head class) clamped with |m| = 1-1e-12",
     1007, 128, 0.1, 10, 24, 5000, {"clamp": 0}, dict(r=(0.4, 0.95), aligned=True, clamp_r=1 - 1e-12)),
    ("p128_tau0.07_C100_N32", "CIFAR-100-like; class 97 never seen; class 11 clamped (|m| = 1-1e-12); class 42 near the "
     "clamp (kappa ~ 9e4); class 63 negative (|m| = 1+1e-9)",
     1008, 128, 0.07, 100, 32, 500, {"unseen": 97, "clamp": 11, "near_clamp": 42, "negative": 63},
     dict(r=(0.3, 0.95), clamp_r=1 - 1e-12)),
    ("p1024_tau0.07_C80_N10", "ImageNet-LT-like feature dimension; class 79 never seen; class 2 clamped; class 40 near the "
     "clamp (kappa ~ 9e4)", 1009, 1024, 0.07, 80, 10, 1280, {"unseen": 79, "clamp": 2, "near_clamp": 40}, dict(r=(0.2, 0.95))),
    ("p1024_tau1.0_C6_N4", "large p with tau = 1 (kt close to kappa), includes small-R classes",
     1010, 1024, 1.0, 6, 4, 1000, {}, dict(r=(0.05, 0.6))),
    ("p3002_tau0.1_C4_N3", "very large p (Bessel order 1500); class 3 never seen (kappa ~ p*90/19 = 14220); class 0 clamped",
     1011, 3002, 0.1, 4, 3, 300, {"unseen": 3, "clamp": 0}, dict(r=(0.5, 0.9))),
]
SPECIAL_ORDER = ("unseen", "clamp", "negative", "near_clamp")


def build_loss_inputs(seed, p, tau, C, N, n_max, specials, opt):
    gen = Inputs(seed)
    by_class = {v: k for k, v in specials.items()}
    means, counts, dirs = [], [], []
    for j in range(C):
        u = gen.unit(p)
        dirs.append(u)
        kind = by_class.get(j)
        if kind == "unseen":
            r, n = 0.9, 0
        elif kind == "clamp":
            r, n = opt.get("clamp_r", 1 - 1e-9), 1 + gen.below(3000)
        elif kind == "negative":
            r, n = 1 + 1e-9, 1 + gen.below(3000)
        elif kind == "near_clamp":
            r, n = r_for_kappa(9e4, p), 1 + gen.below(3000)
        elif "rs" in opt:
            r, n = opt["rs"][j], 1 + gen.below(3000)
        else:
            lo, hi = opt["r"]
            r, n = gen.uniform(lo, hi), 1 + gen.below(3000)
        means.append([r * x for x in u])
        counts.append(n)
    counts_train = lt_counts(n_max, C)
    labels = [j for k, j in sorted(specials.items(), key=lambda kv: SPECIAL_ORDER.index(kv[0]))]
    while len(labels) < N:
        labels.append(gen.choice_weighted(counts_train))
    labels = labels[:N]
    gen.shuffle(labels)
    features = []
    for i in range(N):
        if opt.get("aligned"):
            sigma = math.sqrt((1 / (0.85 * 0.85) - 1) / p)
            g = gen.normals(p)
            features.append(normalize([d + sigma * e for d, e in zip(dirs[labels[i]], g)]))
        else:
            features.append(gen.unit(p))
    # Finite-difference coordinates: all for small cases, else 40 random + one per special-label sample.
    if N * p <= 48:
        coords = [(i, k) for i in range(N) for k in range(p)]
    else:
        seen = set()
        coords = []
        while len(coords) < 40:
            c = (gen.below(N), gen.below(p))
            if c not in seen:
                seen.add(c)
                coords.append(c)
        special_set = set(specials.values())
        for i in range(N):
            if labels[i] in special_set:
                coords.append((i, gen.below(p)))
    directions = []
    for _ in range(2):
        flat = normalize(gen.normals(N * p))
        directions.append([flat[i * p:(i + 1) * p] for i in range(N)])
    return means, counts, counts_train, features, labels, coords, directions


def gen_loss():
    cases = []
    for (name, note, seed, p, tau, C, N, n_max, specials, opt) in LOSS_CASES:
        t0 = time.time()
        means, counts, counts_train, features, labels, coords, dirs = build_loss_inputs(seed, p, tau, C, N, n_max, specials, opt)
        case = LossCase(p, tau, means, features, labels, counts_train)
        r50 = case.compute(DPS)
        t1 = time.time()
        fdc = fd_checks(case, r50, coords, dirs)
        t2 = time.time()
        r70 = case.compute(CHECK_DPS)
        t3 = time.time()
        nu = p / 2 - 1
        cases.append({
            "name": name, "note": note, "seed": seed, "p": p,
            "bessel_order": int(nu) if nu == int(nu) else nu,
            "tau": tau, "num_classes": C, "batch_size": N,
            "class_counts_train": counts_train,
            "estimator_state": {"means": means, "counts": counts},
            "features": features, "labels": labels,
            "special_classes": {k: specials[k] for k in SPECIAL_ORDER if k in specials},
            "expected": expected_of(case, r50),
            "checks": {"finite_differences": fdc, "precision_50_vs_70_digits": precision_check(r50, r70)},
        })
        log(f"loss: {name}: {t1 - t0:.1f} s values, {t2 - t1:.1f} s finite differences, {t3 - t2:.1f} s 70 digits "
            f"(loss {cases[-1]['expected']['loss']!r})")
    return {
        "description": LOSS_DESCRIPTION,
        "generator": {"script": SCRIPT, "mpmath": mpmath.__version__, "dps": DPS},
        "cases": cases,
    }


LOSS_DESCRIPTION = (
    "ProCo loss golden cases. Conventions: matrices are row-major nested lists; class index j in 0..num_classes-1; sample "
    "index i in 0..batch_size-1.\n"
    "Inputs per case: p (feature dim), tau (temperature), class_counts_train (long-tailed training counts, exponential "
    "profile n_j = floor(n_max*0.01^(j/(C-1))), imbalance 100) used ONLY for the logit-adjustment prior pi_j = n_j/sum(n); "
    "estimator_state.means (C x p running mean vectors m_j) and estimator_state.counts (C, number of samples the estimator "
    "has seen per class; not used by the loss, kept for completeness; count 0 = never seen, mean still the initial "
    "0.9*random unit vector); features (N x p, unit vectors up to float64 rounding; used exactly as given, NOT "
    "re-normalised); labels (N).\n"
    "The state is the one used to compute the logits (in the reference training code the estimator is first updated with "
    "the batch, then the logits are computed; here the state is given directly).\n"
    "Math: R_j = |m_j|, mu_j = m_j/R_j, kappa_j = p*R_j/(1-R_j^2) with kappa > 1e5 -> 1e5, kappa < 0 -> 1e5, 1-R^2 == 0 "
    "-> 1e5 (kappa_flag: ok | clamp_high | negative_set_to_max | inf_set_to_max; R is the exact norm of the float64 mean); "
    "nu = p/2-1 (half-integer for odd p); logc_j = log I_nu(kappa_j) - nu*log(kappa_j); kt_ij = |kappa_j*mu_j + z_i/tau|; "
    "contrast_logits s_ij = log I_nu(kt_ij) - nu*log(kt_ij) - logc_j ( = log E_{z'~vMF(mu_j,kappa_j)} exp(z_i.z'/tau) ); "
    "bessel_ratio A_ij = I_{nu+1}(kt_ij)/I_nu(kt_ij) = d s_ij / d kt_ij; log_prior_j = log pi_j; softmax_prob = "
    "softmax_j(s_ij + log_prior_j); per_sample_loss_i = -log softmax_prob[i][y_i]; loss = mean_i per_sample_loss_i; "
    "grad_contrast_logits = d loss / d s = (softmax_prob - onehot(y))/N; grad_features = d loss / d z (N x p) = sum_j "
    "grad_contrast_logits_ij * A_ij * (kappa_j*mu_j + z_i/tau)/(tau*kt_ij), with mu, kappa, logc treated as constants and "
    "z unconstrained (no projection onto the sphere).\n"
    "All expected values are computed with mpmath at 50 significant digits from the exact float64 inputs (dot products "
    "and norms exactly, in integer arithmetic) and rounded once to float64 (loss_decimal gives the loss to 30 digits, "
    "trailing zeros dropped). Conditioning notes for tolerances: kappa for classes with R close to 1 is ill-conditioned "
    "in float64 (relative condition number ~ 2/(1-R^2)); s_ij is a difference of O(kt) quantities, so a float64 "
    "implementation has absolute error ~ 1e-16*kt (kt up to ~1e5); softmax probabilities below ~1e-308 are stored as "
    "(subnormal or) 0.\n"
    "checks.finite_differences: central differences of the 50-digit loss with step 1e-15: coordinate checks (all "
    "coordinates when N*p <= 48, otherwise 40 seeded random ones plus one per sample whose label is a special class) and "
    "2 directional derivatives along seeded random unit directions of the whole N x p feature matrix; *_max_rel_err "
    "compares the analytic gradient with those differences. checks.precision_50_vs_70_digits: max relative change when "
    "the whole case is recomputed with 70 digits.")


# ----------------------------------------------------------------------------------------------
# Estimator sequences
# ----------------------------------------------------------------------------------------------

def derived_state(means, p):
    """R, kappa, kappa_flag, logc of a float64 state (exact norms)."""
    nu = mpf(p) / 2 - 1
    with mp.workdps(DPS):
        conc = [concentration(fixed(m), p, nu) for m in means]
        return {"R": [f64(c[0]) for c in conc], "kappa": [f64(c[1]) for c in conc],
                "kappa_flag": [c[2] for c in conc], "logc": [f64(c[3]) for c in conc]}


def estimator_step(p, C, means, counts, feats, labels):
    """The state after one batch: the new means exactly (integer arithmetic) from the float64 state,
    rounded once to float64; R, kappa, flag and logc are those of the stored (rounded) new means,
    so every expected state is self-consistent."""
    nb = [0] * C
    for y in labels:
        nb[y] += 1
    new_means, weights = [], []
    for j in range(C):
        if nb[j] == 0:
            new_means.append(list(means[j]))
            weights.append(0.0)
            continue
        mfix = fixed(means[j])
        rows = [fixed(feats[i]) for i in range(len(labels)) if labels[i] == j]
        K = max([mfix[1]] + [r[1] for r in rows])
        num = [counts[j] * (v << (K - mfix[1])) for v in mfix[0]]
        for ints, k in rows:
            for q in range(p):
                num[q] += ints[q] << (K - k)
        den = (counts[j] + nb[j]) << K  # new mean = num / den exactly
        new_means.append([n / den for n in num])  # int / int is correctly rounded
        weights.append(nb[j] / (nb[j] + counts[j]))  # likewise
    out = {
        "batch_class_counts": nb,
        "update_weight": weights,
        "means": new_means,
        "counts": [c + n for c, n in zip(counts, nb)],
    }
    out.update(derived_state(new_means, p))
    return out


ESTIMATOR_SEQUENCES = [
    dict(name="fresh_init_p8_C7", seed=4141, p=8, C=7, init="fresh",
         labels=[[0, 0, 1, 2, 3, 3, 4, 0, 3, 0], [0, 1, 1, 2, 4, 0, 4], [5, 0, 3, 1, 5, 2, 2, 3, 0, 4, 5, 1], [5, 3, 0, 2, 1]],
         note="starts from the ProCo initial state (counts 0, means = 0.9 * random unit vector); class 6 never appears "
              "(stays at its initial mean, kappa = p*R/(1-R^2) with R = |0.9*u| ~ 0.9, i.e. ~ p*90/19 = 37.89); classes 1, "
              "2 and 4 appear exactly once in step 0, so their mean becomes that unit feature, R = 1 up to float64 "
              "rounding, and kappa = 1e5 (the flag, clamp_high or negative_set_to_max, depends on the exact |z| and is "
              "informational only); class 5 is absent from steps 0 and 1 (weight 0, initial mean kept) and first appears "
              "in step 2 (weight 1); class 3 is absent from step 1; 4 steps with batch sizes 10, 7, 12, 5; step indices "
              "are 0-based"),
    dict(name="mid_training_p256_C12", seed=5252, p=256, C=12, init="mid", steps=[32, 24, 40, 16, 32],
         note="starts from a mid-training state (non-zero counts, |m| in [0.3, 0.95]; class 0 has count 10^6, so its "
              "update weights are ~1e-5); labels drawn from a long-tailed prior over classes 0..10; class 11 has count 0 "
              "initially (mean 0.9*u) and never appears; 5 steps"),
    dict(name="odd_p5_C5", seed=6363, p=5, C=5, init="odd",
         labels=[[0, 1, 1, 2, 0, 3, 1, 0, 2], [4, 0, 1, 2, 2, 0], [3, 0, 1, 4, 4, 2, 0, 1, 3, 0, 2]],
         note="odd p (Bessel order 1.5); class 3 starts with |m| = 1 - 1e-6 (kappa clamped to 1e5) and its first update "
              "brings kappa below the clamp (149); class 4 has count 0, appears once in step 1 (its mean becomes that unit "
              "feature, kappa = 1e5, flag informational) and twice in step 2; 3 steps with batch sizes 9, 6, 11"),
    dict(name="p2_C3", seed=7474, p=2, C=3, init="mid2",
         labels=[[0, 0, 1, 0, 2, 0], [1, 0, 0, 0], [2, 2, 0, 1, 0, 0, 0, 1], [0, 1]],
         note="p = 2 (Bessel order 0, circular data), small kappa; 4 steps with batch sizes 6, 4, 8, 2"),
]


def class_features(gen, dirs, labels, p, spread):
    out = []
    for y in labels:
        g = gen.normals(p)
        out.append(normalize([d + spread * e for d, e in zip(dirs[y], g)]))
    return out


def gen_estimator():
    seqs = []
    for spec in ESTIMATOR_SEQUENCES:
        t0 = time.time()
        gen = Inputs(spec["seed"])
        p, C = spec["p"], spec["C"]
        dirs = [gen.unit(p) for _ in range(C)]
        init = spec["init"]
        if init == "fresh":
            means = [[0.9 * x for x in gen.unit(p)] for _ in range(C)]
            counts = [0] * C
        elif init == "mid":
            means, counts = [], []
            for j in range(C):
                if j == C - 1:
                    means.append([0.9 * x for x in gen.unit(p)])
                    counts.append(0)
                    continue
                r = gen.uniform(0.3, 0.95)
                # the mean direction: near the class direction
                u = normalize([d + 0.5 / math.sqrt(p) * e for d, e in zip(dirs[j], gen.normals(p))])
                means.append([r * x for x in u])
                counts.append(10 ** 6 if j == 0 else 1 + gen.below(lt_counts(5000, C - 1)[j]))
        elif init == "odd":
            means, counts = [], []
            for j in range(C):
                if j == 4:
                    means.append([0.9 * x for x in gen.unit(p)])
                    counts.append(0)
                    continue
                r = 1 - 1e-6 if j == 3 else gen.uniform(0.4, 0.9)
                means.append([r * x for x in dirs[j]])
                counts.append(1 + gen.below(400))
        elif init == "mid2":
            means = [[gen.uniform(0.1, 0.6) * x for x in dirs[j]] for j in range(C)]
            counts = [1 + gen.below(50) for _ in range(C)]
        else:
            raise ValueError(init)
        if "labels" in spec:
            label_lists = spec["labels"]
        else:
            prior = lt_counts(1000, C - 1)
            label_lists = [[gen.choice_weighted(prior) for _ in range(n)] for n in spec["steps"]]
        spread = {2: 1.0, 5: 0.8}.get(p, 1.2 / math.sqrt(p) * 3)
        initial = {"means": means, "counts": counts, **derived_state(means, p)}
        steps = []
        for labels in label_lists:
            feats = class_features(gen, dirs, labels, p, spread)
            exp = estimator_step(p, C, means, counts, feats, labels)
            steps.append({"batch_features": feats, "batch_labels": labels, "expected": exp})
            means, counts = exp["means"], exp["counts"]
        seqs.append({"name": spec["name"], "note": spec["note"], "seed": spec["seed"], "p": p, "num_classes": C,
                     "initial_state": initial, "steps": steps})
        log(f"estimator: {spec['name']}: {len(steps)} steps in {time.time() - t0:.1f} s")
    return {
        "description": ESTIMATOR_DESCRIPTION,
        "generator": {"script": SCRIPT, "mpmath": mpmath.__version__, "dps": DPS},
        "sequences": seqs,
    }


ESTIMATOR_DESCRIPTION = (
    "Online vMF estimator sequences. Each sequence: p, num_classes, initial_state (means C x p, counts C, plus derived R, "
    "kappa, kappa_flag, logc of that state), then steps (their number differs between sequences), each a batch "
    "(batch_features N x p, batch_labels N) and the expected state after feeding that batch.\n"
    "Update rule per class j: n_b = number of samples of class j in the batch, batch_mean_j = mean of those features (as "
    "given, not re-normalised); if n_b == 0 the mean is unchanged (weight 0, also when counts_j == 0); else w_j = "
    "n_b/(n_b + counts_j), means_j <- means_j*(1-w_j) + batch_mean_j*w_j; counts_j <- counts_j + n_b. Then for every "
    "class: R_j = |means_j|, kappa_j = p*R_j/(1-R_j^2), kappa > 1e5 -> 1e5, kappa < 0 -> 1e5, 1-R^2 == 0 -> 1e5 "
    "(kappa_flag says which rule fired), logc_j = log I_{p/2-1}(kappa_j) - (p/2-1)*log(kappa_j).\n"
    "expected.update_weight is w_j (0 when n_b == 0); expected.batch_class_counts is n_b. Each step is computed exactly "
    "from the float64 state stored for the previous step (initial_state for step 0): the new means exactly in rational "
    "arithmetic, rounded once to float64; R, kappa, kappa_flag and logc are those of the stored float64 means (exact norm, "
    "mpmath at 50 digits, rounded once), like initial_state; so every step can be tested on its own. Note that the ProCo initial state (counts 0, means "
    "0.9*random unit vector) gives kappa = p*0.9/0.19 = p*90/19 up to float64 rounding of |0.9*u|, and a class whose "
    "first batch contains a single sample gets mean = that unit feature, R = 1 up to rounding, hence kappa = 1e5 by the "
    "clamp rules (its flag depends on the exact |z| and is informational).")


# ----------------------------------------------------------------------------------------------
# Monte-Carlo check (random.Random + math, math.fsum for every sum; closed forms in mpmath)
# ----------------------------------------------------------------------------------------------

MC_M = 100_000
MC_CONFIGS = [
    dict(p=3, seed=3131, kappa=[1.0, 4.0, 20.0, 120.0], n_max=2000),
    dict(p=5, seed=5151, kappa=[0.3, 3.0, 5 * 90 / 19, 150.0], n_max=800),
    dict(p=16, seed=1616, kappa=[1.5, 12.0, 16 * 90 / 19, 500.0], n_max=1000),
]
MC_TAUS = [0.1, 0.3, 1.0]
MC_CONVERGENCE = [100, 1000, 10000, 100000]


class NormalStream:
    """Box-Muller normals from random.Random (math.log/cos/sin)."""

    def __init__(self, rng):
        self.rand = rng.random
        self.buf = []

    def take(self, n):
        buf, rand = self.buf, self.rand
        while len(buf) < n:
            u1 = 1.0 - rand()
            u2 = rand()
            r = math.sqrt(-2.0 * math.log(u1))
            t = 2.0 * math.pi * u2
            buf.append(r * math.cos(t))
            buf.append(r * math.sin(t))
        out = buf[:n]
        del buf[:n]
        return out


def wood_samples(rng, normals, mu, kappa, M, anchors):
    """M samples of vMF(mu, kappa) by Wood (1994). Returns w = mu.z', the anchor dot products,
    the component sums, max |norm-1| and the number of proposals."""
    p = len(mu)
    pm1 = p - 1.0
    b = pm1 / (2.0 * kappa + math.sqrt(4.0 * kappa * kappa + pm1 * pm1))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + pm1 * math.log(1.0 - x0 * x0)
    fsum, sqrt, mlog, mul = math.fsum, math.sqrt, math.log, operator.mul
    rand = rng.random
    ws = []
    dots = [[] for _ in anchors]
    cols = [[] for _ in range(p)]
    max_norm_err = 0.0
    proposals = 0
    for _ in range(M):
        while True:
            proposals += 1
            g = normals.take(p)  # Z = (1 + u_1)/2 with u uniform on S^{p-1} is Beta((p-1)/2, (p-1)/2)
            u1 = g[0] / sqrt(fsum([x * x for x in g]))
            Z = 0.5 * (1.0 + u1)
            W = (1.0 - (1.0 + b) * Z) / (1.0 - (1.0 - b) * Z)
            U = 1.0 - rand()
            if kappa * W + pm1 * mlog(1.0 - x0 * W) - c >= mlog(U):
                break
        g = normals.take(p)  # uniform direction orthogonal to mu
        proj = fsum(map(mul, g, mu))
        v = [a - proj * m for a, m in zip(g, mu)]
        nv = sqrt(fsum([x * x for x in v]))
        s = sqrt(max(0.0, 1.0 - W * W)) / nv
        z = [W * m + s * a for m, a in zip(mu, v)]
        ws.append(fsum(map(mul, mu, z)))
        for a, d in zip(anchors, dots):
            d.append(fsum(map(mul, a, z)))
        for q in range(p):
            cols[q].append(z[q])
        max_norm_err = max(max_norm_err, abs(sqrt(fsum([x * x for x in z])) - 1.0))
    sums = [fsum(col) for col in cols]
    return ws, dots, sums, max_norm_err, proposals


def mean_se(xs):
    n = len(xs)
    m = math.fsum(xs) / n
    var = math.fsum([(x - m) ** 2 for x in xs]) / (n - 1)
    return m, math.sqrt(var / n)


def kolmogorov_pvalue(d, n):
    """Asymptotic Kolmogorov distribution with Stephens' small-sample correction."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    return min(1.0, max(0.0, 2.0 * math.fsum([(-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101)])))


def w_cdf(p, kappa):
    """The exact CDF of w = mu.z' for p = 3 and p = 5 (None otherwise)."""
    if p == 3:
        den = math.expm1(2.0 * kappa)
        return lambda w: math.expm1(kappa * (w + 1.0)) / den
    if p == 5:
        def G(t):  # e^{-kappa} * integral of e^{kappa t}(1-t^2) dt
            return math.exp(kappa * (t - 1.0)) * ((1.0 - t * t) / kappa + 2.0 * t / kappa ** 2 - 2.0 / kappa ** 3)
        g0, g1 = G(-1.0), G(1.0)
        return lambda w: (G(w) - g0) / (g1 - g0)
    return None


def closed_form_s(p, mu, kappa, z, tau):
    """kt and s = log C_p(kappa) - log C_p(kt) at the current precision (mu, z as given)."""
    nu = mpf(p) / 2 - 1
    K, T = mpf(kappa), mpf(tau)
    kt = mpmath.sqrt(mpmath.fsum((K * mpf(m) + mpf(a) / T) ** 2 for m, a in zip(mu, z)))
    logc = log_i(nu, K) - nu * mpmath.log(K)
    return kt, log_i(nu, kt) - nu * mpmath.log(kt) - logc


def mc_closed_forms(p, mu, kappa, anchor, label, tau, log_prior):
    with mp.workdps(DPS):
        kts, ss = [], []
        for j in range(len(mu)):
            kt, s = closed_form_s(p, mu[j], kappa[j], anchor, tau)
            kts.append(kt)
            ss.append(s)
        v = [s + lp for s, lp in zip(ss, log_prior)]
        loss = logsumexp(v) - v[label]
        return kts, ss, loss


def gen_mc():
    configs = []
    allz = []
    for cfg in MC_CONFIGS:
        t0 = time.time()
        p, C = cfg["p"], 4
        gen = Inputs(cfg["seed"])
        mu = [gen.unit(p) for _ in range(C)]
        kappa = cfg["kappa"]
        counts = lt_counts(cfg["n_max"], C)
        with mp.workdps(DPS):
            total = sum(counts)
            log_prior_mp = [mpmath.log(mpf(n) / total) for n in counts]
            log_prior = f64s(log_prior_mp)
        anchors = [(gen.unit(p), 0),
                   (normalize([m + 0.3 / math.sqrt(p) * e for m, e in zip(mu[3], gen.normals(p))]), 3),
                   (gen.unit(p), 2)]
        rng = random.Random(cfg["seed"] * 1000 + 7)
        normals = NormalStream(rng)
        samples = []
        checks = []
        for j in range(C):
            ws, dots, sums, nerr, props = wood_samples(rng, normals, mu[j], kappa[j], MC_M, [a for a, _ in anchors])
            samples.append(dots)
            mc, se = mean_se(ws)
            with mp.workdps(DPS):
                A = f64(besseli(mpf(p) / 2, mpf(kappa[j])) / besseli(mpf(p) / 2 - 1, mpf(kappa[j])))
            mbar = [s / MC_M for s in sums]
            along = math.fsum(map(operator.mul, mbar, mu[j]))
            perp = math.sqrt(math.fsum([(a - along * m) ** 2 for a, m in zip(mbar, mu[j])]))
            chk = {"cls": j, "kappa": kappa[j], "acceptance_rate": MC_M / props, "mean_cos_mc": mc, "mean_cos_se": se,
                   "mean_cos_exact_bessel_ratio": A, "mean_cos_z_score": (mc - A) / se,
                   "max_abs_unit_norm_error": nerr, "perp_mean_norm": perp,
                   "perp_mean_norm_expected_scale": math.sqrt((p - 1) * A / (kappa[j] * MC_M))}
            F = w_cdf(p, kappa[j])
            if F is not None:
                srt = sorted(ws)
                n = len(srt)
                d = 0.0
                for i, w in enumerate(srt):
                    f = F(w)
                    d = max(d, (i + 1) / n - f, f - i / n)
                chk[f"ks_test_w_first_{n}"] = {"statistic": d, "pvalue": kolmogorov_pvalue(d, n)}
            checks.append(chk)
        t1 = time.time()
        results = []
        for tau in MC_TAUS:
            anchors_out = []
            for ai, (a, label) in enumerate(anchors):
                kts, ss, loss_cf = mc_closed_forms(p, mu, kappa, a, label, tau, log_prior_mp)
                classes = []
                means, ses = [], []
                for j in range(C):
                    e = [math.exp(d / tau) for d in samples[j][ai]]
                    m, se = mean_se(e)
                    means.append(m)
                    ses.append(se)
                    s_cf = f64(ss[j])
                    lm, sel = math.log(m), se / m
                    conv = []
                    for Mc in MC_CONVERGENCE:
                        mm, ss_ = mean_se(e[:Mc])
                        conv.append({"M": Mc, "log_mean_mc": math.log(mm), "se_log": ss_ / mm, "abs_err": abs(math.log(mm) - s_cf)})
                    z = (lm - s_cf) / sel
                    allz.append(z)
                    classes.append({"cls": j, "kt": f64(kts[j]), "closed_form_s": s_cf, "mc_mean_exp": m, "mc_mean_exp_se": se,
                                    "mc_log_mean_exp": lm, "mc_log_mean_exp_se": sel, "z_score": z, "convergence": conv})
                pis = [math.exp(lp) for lp in log_prior]
                S = math.fsum([pi * m for pi, m in zip(pis, means)])
                loss_mc = -math.log(pis[label] * means[label] / S)
                grads = [pis[j] / S - (1.0 / means[j] if j == label else 0.0) for j in range(C)]
                loss_se = math.sqrt(math.fsum([(g * s) ** 2 for g, s in zip(grads, ses)]))
                lcf = f64(loss_cf)
                lz = (loss_mc - lcf) / loss_se
                allz.append(lz)
                anchors_out.append({"anchor": a, "label": label, "classes": classes, "loss_closed_form": lcf,
                                    "loss_mc": loss_mc, "loss_mc_se": loss_se, "loss_z_score": lz})
            results.append({"tau": tau, "anchors": anchors_out})
        configs.append({"p": p, "num_classes": C, "seed": cfg["seed"], "mu": mu, "kappa": kappa, "class_counts": counts,
                        "log_prior": log_prior, "samples_per_class": MC_M, "sampler_checks": checks, "results": results})
        log(f"mc: p={p}: sampling {t1 - t0:.1f} s, estimates {time.time() - t1:.1f} s")
    n = len(allz)
    chi2 = math.fsum([z * z for z in allz])
    with mp.workdps(30):
        pval = float(mpmath.gammainc(mpf(n) / 2, mpf(chi2) / 2, mpmath.inf, regularized=True))
    summary = {"n_comparisons": n, "max_abs_z": max(abs(z) for z in allz), "mean_z": math.fsum(allz) / n,
               "rms_z": math.sqrt(chi2 / n), "chi2_pvalue": pval}
    return {
        "description": MC_DESCRIPTION,
        "generator": {"script": SCRIPT, "mpmath": mpmath.__version__, "dps": DPS,
                      "rng": "random.Random(seed*1000+7) (MT19937); normals by Box-Muller with math.log/cos/sin; sums by "
                             "math.fsum; samples are not stored"},
        "summary": summary,
        "configs": configs,
    }


MC_DESCRIPTION = (
    "Monte-Carlo validation of the ProCo closed form. For each config (p = 3, 5 and 16, 4 classes with given unit mean "
    "directions mu and concentrations kappa, long-tailed priors from class_counts), M = 1e5 points per class are drawn "
    "from vMF(mu_j, kappa_j) with Wood's (1994) rejection sampler in float64 (Z ~ Beta((p-1)/2,(p-1)/2) as (1+u_1)/2 for u "
    "uniform on S^{p-1}; the tangent direction is a Gaussian vector projected orthogonally to mu and normalised). For each "
    "temperature tau and each anchor feature z (unit vector) and class j: closed_form_s = log I_nu(kt) - nu*log(kt) - "
    "[log I_nu(kappa_j) - nu*log(kappa_j)], nu = p/2-1, kt = |kappa_j*mu_j + z/tau| (= log C_p(kappa_j) - log C_p(kt) = "
    "log E exp(z.z'/tau), mpmath 50 digits, mu and z used as given); log_prior_j = log(class_counts_j/sum) (50 digits, "
    "rounded) and loss_closed_form uses the exact log prior; mc_mean_exp = (1/M) sum_m exp(z.z'_m/tau) with "
    "standard error mc_mean_exp_se; mc_log_mean_exp = log of it with delta-method SE mc_log_mean_exp_se = se/mean; "
    "z_score = (mc_log_mean_exp - closed_form_s)/mc_log_mean_exp_se; convergence lists the same for the first M samples, "
    "M = 1e2..1e5 (abs_err should shrink like 1/sqrt(M)). Per anchor (with a label y): loss_closed_form = -log "
    "softmax(s + log_prior)[y] (the ProCo loss) and loss_mc = -log( pi_y*mean_y / sum_j pi_j*mean_j ) (finite-sample "
    "supervised-contrastive form with M contrast samples per class), loss_mc_se by the delta method. The anchors are a "
    "random unit vector (label 0), a vector near mu_3 (label 3) and another random unit vector (label 2). sampler_checks "
    "validate the sampler: mean of mu.z' vs the exact mean resultant length A_p(kappa) = I_{p/2}(kappa)/I_{p/2-1}(kappa); "
    "norm of the component of the sample mean orthogonal to mu (should be of the order of perp_mean_norm_expected_scale "
    "= sqrt((p-1) A_p/(kappa M))); for p = 3 and p = 5 a Kolmogorov-Smirnov test of w = mu.z' against its exact CDF "
    "(p = 3: (e^{kappa(w+1)}-1)/(e^{2 kappa}-1); p = 5: the closed-form integral of e^{kappa t}(1-t^2)), p-value from the "
    "asymptotic Kolmogorov distribution with Stephens' correction. summary aggregates all z-scores (note: the same "
    "samples are reused across anchors and temperatures, so the z-scores are not independent and the chi2 p-value is only "
    "indicative).")


# ----------------------------------------------------------------------------------------------
# CIFAR-10-LT indices (LDAM-DRW protocol; numpy legacy RandomState)
# ----------------------------------------------------------------------------------------------

CIFAR_PROTOCOL = (
    "Which training images the LDAM-DRW long-tail protocol keeps (numpy RandomState seed 0).\n\n"
    "For CIFAR-10/100 train sets in official order: img_max = len/C; n_c = int(img_max * IF**(c/(C-1)));\n"
    "np.random.seed(0); for c in 0..C-1 (ascending): idx = where(labels==c); np.random.shuffle(idx); keep idx[:n_c].")


def read_cifar10_labels(d):
    labels = []
    for b in range(1, 6):
        path = os.path.join(d, f"data_batch_{b}.bin")
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != 10000 * 3073:
            raise ValueError(f"{path}: {len(data)} bytes, expected {10000 * 3073}")
        labels.extend(data[0::3073])
    if any(l > 9 for l in labels):
        raise ValueError("CIFAR-10 labels must be 0..9")
    return labels


def gen_cifar(cifar_dir):
    import numpy as np
    t0 = time.time()
    labels = read_cifar10_labels(cifar_dir)
    targets = np.array(labels, dtype=np.int64)
    C = 10
    img_max = len(labels) / C
    cases = []
    for imb_factor, ratio in ((0.01, 100), (0.02, 50), (0.1, 10)):
        counts = [int(img_max * (imb_factor ** (c / (C - 1.0)))) for c in range(C)]  # the reference's float64 formula
        with mp.workdps(40):  # the same counts exactly (guards against a libm pow surprise)
            exact = [int(mpmath.floor(mpf(img_max) / mpf(ratio) ** (mpf(c) / (C - 1)) + mpf(10) ** -30)) for c in range(C)]
        if counts != exact:
            raise RuntimeError(f"IF {imb_factor}: float64 counts {counts} differ from exact {exact}")
        np.random.seed(0)
        kept = []
        for c, n in zip(np.unique(targets), counts):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            kept.append([int(i) for i in idx[:n]])
        cases.append({"imb_factor": imb_factor, "imbalance_ratio": ratio, "class_counts": counts, "total": sum(counts),
                      "kept_indices_per_class": kept})
    log(f"cifar: selections in {time.time() - t0:.1f} s (numpy {np.__version__})")
    return {"dataset": "cifar10", "num_train": len(labels), "protocol": CIFAR_PROTOCOL, "cases": cases}


# ----------------------------------------------------------------------------------------------
# README (built from the files in the output directory)
# ----------------------------------------------------------------------------------------------

def g(x, d=2):
    return "%.*g" % (d, x)


def kfmt(x):
    """Compact kappa for the README table: 0.00016, 3.3, 218, 1e5."""
    if x < 100:
        return "%.2g" % x
    if x < 1e4:
        return "%d" % round(x)
    m, e = ("%.2g" % x).split("e+")
    return f"{m}e{int(e)}"


def md_cell(text):
    return text.replace("|", "\\|")


def build_readme(out):
    def load(name):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    bes, loss, est, mc, cif = (load(n) for n in ("bessel.json", "proco_loss_cases.json", "estimator_cases.json",
                                                "mc_check.json", "cifar10_lt_indices.json"))
    L = []
    w = L.append
    w("# ProCo golden test vectors (our set)")
    w("")
    w("Reference data for the ProCo loss (Probabilistic Contrastive Learning for long-tailed recognition, TPAMI 2024),")
    w("written by `scripts/golden/generate.py`. Every expected value comes from our own implementation of the formulas")
    w("below, computed with mpmath at 50 significant digits on the exact float64 inputs stored in the files, then rounded")
    w("once to float64. No code from the reference repository went into these values.")
    w("")
    w("Regenerate (byte-for-byte identical with mpmath 1.3.0; needs CIFAR-10 in `data/`, see `scripts/fetch-cifar10.sh`):")
    w("")
    w("    scripts/golden.sh            # = .venv/bin/python scripts/golden/generate.py --out golden")
    w("")
    w("`--only bessel,loss,estimator,mc,cifar,readme` regenerates some parts; `--verify-against DIR` recomputes the")
    w("expected values of another golden set (same schema) from its inputs and reports the differences.")
    w("")
    w("General conventions")
    w("- Plain JSON. Every float is written with `%.17g` (17 significant digits, trailing zeros dropped),")
    w("  so it parses back to exactly the same f64. Floats that happen to be whole numbers may be written")
    w("  without a decimal point (`500`), so parse them as f64. Non-finite values never occur. (cifar10_lt_indices.json")
    w("  is one line of plain `json.dumps`; its only floats, the imbalance factors, are written as the shortest repr.)")
    w("- Matrices are nested lists in row-major order: `[row][col]`. Class indices `j` and sample indices")
    w("  `i` start at 0.")
    w("- Each file except `cifar10_lt_indices.json` has a top-level `description` string that gives its exact semantics.")
    w("- Inputs come from seeded `random.Random` streams (normal variates by Box-Muller evaluated in mpmath, so they do")
    w("  not depend on the platform's libm). Dot products and norms of float64 vectors are computed exactly (integer")
    w("  arithmetic) before the 50-digit evaluation.")
    w("")
    w("## The math (as implemented)")
    w("- `nu = p/2 - 1` (a half-integer when p is odd). `I_nu` is the modified Bessel function of the first kind.")
    w("- Estimator state per class: running mean `m_j` and count `n_j`. `R_j = |m_j|`, `mu_j = m_j/R_j`,")
    w("  `kappa_j = p R_j/(1-R_j^2)`. Then `kappa > 1e5 -> 1e5`, `kappa < 0 -> 1e5`, and `1-R^2 == 0 -> 1e5`")
    w("  (R is the exact norm of the float64 mean, so the flag says on which side of 1 it lies).")
    w("- `logc_j = log I_nu(kappa_j) - nu log kappa_j`.")
    w("- `kt_ij = |kappa_j mu_j + z_i/tau|`, and the contrast logit is")
    w("  `s_ij = log I_nu(kt_ij) - nu log kt_ij - logc_j` (= log E_{z'~vMF_j} exp(z_i.z'/tau)).")
    w("- `loss = mean_i CE(s_i + log pi, y_i)`, where `pi_j = n_train_j / sum n_train`.")
    w("- `d s_ij / d kt_ij = A_ij = I_{nu+1}(kt_ij)/I_nu(kt_ij)`.")
    w("  `d loss/d z_i = sum_j (softmax_ij - [j==y_i])/N * A_ij * (kappa_j mu_j + z_i/tau)/(tau kt_ij)`,")
    w("  with mu, kappa and logc held constant and z unconstrained (the gradient is not projected onto the sphere).")
    w("- Estimator update: `w_j = n_batch_j/(n_batch_j + n_j)` (0 if the class is absent from the batch),")
    w("  `m_j <- m_j (1-w_j) + batch_mean_j w_j`, `n_j <- n_j + n_batch_j`. The initial state is")
    w("  `m_j = 0.9 * random unit vector`, `n_j = 0`.")
    w("")
    if bes:
        v = bes["verification"]
        w("## bessel.json")
        w(f"- `nus`: {json.dumps(bes['nus'])} (p = 2, 3, 4, 5, 7, 16, 32, 65, 128, 256, 512, 1024, 2048, 3002).")
        w(f"  `x_grid`: {len(bes['x_grid'])} points, `logspace(-6, 6, 41)` (each 10^(-6+0.3k) correctly rounded).")
        w("- `table[k]` (one per nu): `nu`, `x[41]`, `logI` = log I_nu(x), `log_ive` = log I_nu(x) - x,")
        w("  `logI_minus_nu_logx` = log I_nu(x) - nu log x (the ProCo quantity), and `ratio` = I_{nu+1}(x)/I_nu(x).")
        w("  The double-precision `scipy_*` columns of other golden sets are not produced (they would tie the files to a")
        w("  scipy version).")
        w(f"- `extra_points` ({len(bes['extra_points'])}): (nu, x) pairs that matter for ProCo, with the same fields: the")
        w("  initial kappa p*90/19, the clamp 1e5, 1e5 + 1/0.07, and p*90/19 - 1/0.07 (0.5 where that is not positive,")
        w("  p = 2 and 3), for p in {2, 3, 5, 16, 128, 1024, 3002}.")
        w("- `verification`: max differences against independent evaluations (logI: |a-b|/max(|logI|,1); ratio: relative):")
        w(f"  - recomputation at 80 digits: logI {g(v['max_rel_diff_logI_dps50_vs_dps80'])}, ratio "
          f"{g(v['max_rel_diff_ratio_dps50_vs_dps80'])};")
        w(f"  - direct power series ({v['power_series_points_used']} points with x <= 2e4): logI "
          f"{g(v['max_rel_diff_logI_vs_power_series'])}, ratio {g(v['max_rel_diff_ratio_vs_power_series'])}; and at "
          f"{v['power_series_random_points_used']} random (nu, x) points: logI "
          f"{g(v['max_rel_diff_logI_vs_power_series_random_points'])}, ratio "
          f"{g(v['max_rel_diff_ratio_vs_power_series_random_points'])};")
        w(f"  - Hankel asymptotic series ({v['hankel_points_used']} points with x >= 1e3): "
          f"{g(v['max_rel_diff_logI_vs_hankel'])};")
        w(f"  - closed form of half-integer orders 0.5, 1.5, 2.5, 31.5 ({v['half_integer_closed_form_points_used']} points): "
          f"logI {g(v['max_rel_diff_logI_half_integer_closed_form'])}, ratio "
          f"{g(v['max_rel_diff_ratio_half_integer_closed_form'])};")
        w(f"  - the derivative identity d/dx logI_minus_nu_logx = ratio: {g(v['max_rel_diff_derivative_identity'])}.")
        w("")
    if loss:
        cases = loss["cases"]
        w("## proco_loss_cases.json")
        w("`cases[]`. Inputs of each case:")
        w("- `name`, `note`, `seed`, `p`, `bessel_order` (= p/2-1), `tau`, `num_classes` C, `batch_size` N.")
        w("- `class_counts_train`: the long-tailed prior counts, `floor(n_max*0.01^(j/(C-1)))` (imbalance 100).")
        w("- `estimator_state.means` (C x p) and `estimator_state.counts` (C). The state is used as given to compute")
        w("  the logits; the reference code would first update it with the batch.")
        w("- `features` (N x p): unit vectors up to float64 rounding, used exactly as given.")
        w("- `labels` (N). Every special class is the label of at least one sample.")
        w("- `special_classes` maps `unseen`, `clamp`, `negative` and `near_clamp` to class indices:")
        w("  - `unseen`: count 0, mean still 0.9*u, kappa ~ p*90/19.")
        w("  - `clamp`: |m| = 1-1e-9 (1-1e-12 for the p=128 cases), so kappa is clamped to 1e5.")
        w("  - `negative`: |m| = 1+1e-9, so the formula gives kappa < 0 and kappa is set to 1e5.")
        w("  - `near_clamp`: kappa ~ 9e4.")
        w("")
        w("Expected values in `expected`:")
        w("- `log_prior` (C), `R` (C), `kappa` (C).")
        w("- `kappa_flag` (C): one of `ok`, `clamp_high`, `negative_set_to_max`, `inf_set_to_max`.")
        w("- `logc` (C), `kt` (N x C), `bessel_ratio` (A, N x C), `contrast_logits` (s, N x C), `softmax_prob` (N x C).")
        w("- `per_sample_loss` (N), `loss`, and `loss_decimal` (30 digits, trailing zeros dropped).")
        w("- `grad_contrast_logits` (N x C) = (softmax - onehot)/N, and `grad_features` (N x p) = d loss/d z.")
        w("")
        w("`checks` holds two self-checks:")
        w("- `finite_differences`: central differences of the 50-digit loss with h = 1e-15. They cover coordinates")
        w("  (all of them when N*p <= 48, otherwise 40 random ones plus one per sample whose label is a special class) and")
        w("  2 directional derivatives along random directions of the full N x p feature matrix.")
        w("- `precision_50_vs_70_digits`: how much the values change when the whole case is recomputed at 70 digits.")
        w("")
        w("| case | p | tau | C | N | special | kappa range | loss |")
        w("|---|---|---|---|---|---|---|---|")
        for c in cases:
            sp = ", ".join(f"{k} {v}" for k, v in c["special_classes"].items()) or "-"
            ks = c["expected"]["kappa"]
            w(f"| {c['name']} | {c['p']} | {float(c['tau'])!r} | {c['num_classes']} | "
              f"{c['batch_size']} | {sp} | {kfmt(min(ks))}..{kfmt(max(ks))} | {fmt_float(c['expected']['loss'])} |")
        fd = [c["checks"]["finite_differences"] for c in cases]
        pc = [c["checks"]["precision_50_vs_70_digits"] for c in cases]
        w("")
        w("Self-check results. Finite differences vs the analytic gradient: max relative error "
          f"{g(max(f['coordinate_max_rel_err'] for f in fd))} (coordinates, "
          f"{sum(f['coordinate_checks'] for f in fd)} in all; the largest ones are at tiny gradient components, the "
          f"error over max|grad| is at most {g(max(f['coordinate_max_abs_err_over_max_abs_grad'] for f in fd))}) and "
          f"{g(max(f['directional_max_rel_err'] for f in fd))} (directional). 50 vs 70 digits: {g(max(max(x.values()) for x in pc))} or better.")
        w("")
        w("Suggested tolerances for an f64 implementation:")
        w("- s: absolute error about 1e-16 * kt, i.e. up to ~2e-11 when kt ~ 1e5.")
        w("- loss: relative 1e-10.")
        w("- kappa: relative about 1e-16 * 2/(1-R^2) (ill-conditioned near the clamp, e.g. the near_clamp classes).")
        w("- grad_features: compare against max|grad| (abs 1e-10 * max|grad|). Individual small components can")
        w("  differ relatively by much more.")
        w("")
    if est:
        w("## estimator_cases.json")
        w("`sequences[]`. Each sequence has `name`, `note`, `seed`, `p`, `num_classes`, and `initial_state`: `means`,")
        w("`counts`, plus the derived `R`, `kappa`, `kappa_flag` and `logc`. It then has `steps` (their number differs")
        w("between sequences; do not assume one). Each step gives `batch_features` (N x p) and `batch_labels` (N). Its")
        w("`expected` holds the state after that batch: `batch_class_counts`, `update_weight` (w_j), `means`, `counts`, `R`,")
        w("`kappa`, `kappa_flag` and `logc`. Each step is computed from the float64 state stored for the previous step, so")
        w("every step can be tested on its own. The new mean is exact (rational arithmetic) and rounded once; R, kappa, the")
        w("flag and logc are those of the stored float64 mean (as for `initial_state`).")
        w("")
        w("| sequence | p | C | steps (batch sizes) | note |")
        w("|---|---|---|---|---|")
        for s in est["sequences"]:
            w(f"| {s['name']} | {s['p']} | {s['num_classes']} | {len(s['steps'])} "
              f"({', '.join(str(len(st['batch_labels'])) for st in s['steps'])}) | {md_cell(s['note'])} |")
        w("")
    if mc:
        sm = mc["summary"]
        w("## mc_check.json")
        ps = ", ".join(str(c["p"]) for c in mc["configs"])
        w(f"A Monte-Carlo validation of the closed form with p = {ps}, 4 classes each. Per config:")
        w("- `p`, `num_classes`, `seed`, `mu`, `kappa`, `class_counts`, `log_prior`, `samples_per_class`.")
        w(f"- M = {mc['configs'][0]['samples_per_class']} samples per class drawn with Wood's (1994) algorithm in float64")
        w("  from `random.Random` (samples not stored).")
        w("- `sampler_checks`: the mean of mu.z against the exact A_p(kappa), the orthogonal part of the sample mean, and")
        w("  for p = 3 and p = 5 a Kolmogorov-Smirnov test against the exact CDF of mu.z.")
        w("")
        taus = ", ".join(repr(float(r["tau"])) for r in mc["configs"][0]["results"])
        w(f"`results[tau][anchor]` is given for tau in {{{taus}}} and 3 anchor features, each with a label. Per class:")
        w("- `kt`, `closed_form_s`.")
        w("- `mc_mean_exp` +- `mc_mean_exp_se`, `mc_log_mean_exp` +- `mc_log_mean_exp_se` and its `z_score`.")
        w("- `convergence` (M = 1e2..1e5).")
        w("")
        w("Per anchor: `loss_closed_form`, and `loss_mc` +- `loss_mc_se` (finite-sample form")
        w("-log(pi_y mean_y / sum_j pi_j mean_j)) with `loss_z_score`.")
        w("")
        scz = [abs(c["mean_cos_z_score"]) for cfg in mc["configs"] for c in cfg["sampler_checks"]]
        ksp = [v["pvalue"] for cfg in mc["configs"] for c in cfg["sampler_checks"] for k, v in c.items() if k.startswith("ks_test")]
        w(f"`summary`: {sm['n_comparisons']} comparisons, max |z| = {sm['max_abs_z']:.2f}, rms z = {sm['rms_z']:.2f}. The "
          f"z-scores share samples, so their chi2 p-value ({sm['chi2_pvalue']:.2f}) is only indicative. Sampler checks: "
          f"max |z| of the mean cosine {max(scz):.2f}, KS p-values {min(ksp):.2f} to {max(ksp):.2f}.")
        w("")
        w("`mc_check.json` depends on the platform's libm (math.log/cos/sin in the sampler): on another libm its Monte-Carlo")
        w("numbers may differ in the last digits; the closed-form values do not.")
        w("")
    if cif:
        w("## cifar10_lt_indices.json")
        w("The LDAM-DRW CIFAR-10-LT selection, from the official CIFAR-10 training labels (data_batch_1..5 in order):")
        w("")
        for line in cif["protocol"].split("\n"):
            w(f"    {line}" if line else "")
        w("")
        w("`cases[]`: `imb_factor`, `imbalance_ratio`, `class_counts`, `total` and `kept_indices_per_class` (the kept")
        w("indices of each class in the order the shuffle leaves them). numpy's legacy RandomState stream is stable")
        w("across numpy versions.")
        w("")
        w("| IF | class counts | total |")
        w("|---|---|---|")
        for c in cif["cases"]:
            w(f"| {c['imbalance_ratio']} | {', '.join(map(str, c['class_counts']))} | {c['total']} |")
        w("")
    w("## Known differences from the reference implementation (LeapLabTHU/ProCo)")
    w("These vectors follow the mathematical definition, not the reference's numerics (Miller backward recurrence from")
    w("index 2*nu with order int(p/2-1)): for p = 2 and 3 the reference gives -inf/NaN, for other odd p it truncates the")
    w("order, and it loses accuracy once x is large compared with nu^2/8. Expect disagreements with the reference wherever")
    w("kappa or kt is large compared with nu^2, or wherever p is odd or p < 4.")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------------
# --verify-against: recompute another set's expected values from its inputs
# ----------------------------------------------------------------------------------------------

class Diff:
    def __init__(self, name):
        self.name, self.n, self.same, self.max_rel, self.max_ulp, self.max_abs = name, 0, 0, 0.0, 0, 0.0
        self.where = ""
        self.mismatch = []

    def add(self, got, want, where=""):
        if isinstance(got, (list, tuple)):
            for k, (a, b) in enumerate(zip(got, want)):
                self.add(a, b, f"{where}[{k}]")
            if len(got) != len(want):
                self.mismatch.append(f"{where}: length {len(got)} vs {len(want)}")
            return
        if isinstance(got, str) or isinstance(want, str):
            self.n += 1
            if got == want:
                self.same += 1
            else:
                self.mismatch.append(f"{where}: {got!r} vs {want!r}")
            return
        got, want = float(got), float(want)
        self.n += 1
        if got == want:
            self.same += 1
            return
        r = rel(got, want)
        u = ulp_diff(got, want)
        if r > self.max_rel:
            self.max_rel, self.where = r, where
        self.max_ulp = max(self.max_ulp, u)
        self.max_abs = max(self.max_abs, abs(got - want))

    def line(self):
        s = (f"  {self.name:<34} {self.n:>7} values, {self.same:>7} identical, max rel diff {self.max_rel:.2g}, "
             f"max {self.max_ulp} ulp" + (f" (at {self.where})" if self.where else ""))
        for m in self.mismatch[:5]:
            s += f"\n      MISMATCH {m}"
        if len(self.mismatch) > 5:
            s += f"\n      ... {len(self.mismatch) - 5} more mismatches"
        return s


def verify_against(d, parts, max_loss_cases):
    def load(name):
        with open(os.path.join(d, name)) as f:
            return json.load(f)

    report = []
    if "bessel" in parts:
        t = time.time()
        b = load("bessel.json")
        diffs = {k: Diff(f"bessel {k}") for k in ("logI", "log_ive", "logI_minus_nu_logx", "ratio")}
        with mp.workdps(DPS):
            for row in b["table"]:
                for k, x in enumerate(row["x"]):
                    v = bessel_fields(row["nu"], x)
                    for f, dd in diffs.items():
                        dd.add(f64(v[f]), row[f][k], f"nu={row['nu']} x={x!r}")
            for e in b["extra_points"]:
                v = bessel_fields(e["nu"], e["x"])
                for f, dd in diffs.items():
                    dd.add(f64(v[f]), e[f], f"extra nu={e['nu']} x={e['x']!r}")
        report.append(f"bessel.json ({time.time() - t:.1f} s)")
        report += [dd.line() for dd in diffs.values()]
        g_ = Diff("bessel x_grid (ours vs theirs)")
        g_.add(x_grid(), b["x_grid"])
        report.append(g_.line())
    if "loss" in parts:
        lo = load("proco_loss_cases.json")
        keys = ("log_prior", "R", "kappa", "kappa_flag", "logc", "kt", "bessel_ratio", "contrast_logits", "softmax_prob",
                "per_sample_loss", "loss", "loss_decimal", "grad_contrast_logits", "grad_features")
        tot = {k: Diff(f"loss {k}") for k in keys}
        cnt = Diff("loss class_counts_train (lt_counts)")
        report.append("proco_loss_cases.json")
        for ci, c in enumerate(lo["cases"]):
            if ci >= max_loss_cases:
                report.append(f"  (remaining {len(lo['cases']) - ci} cases skipped: --verify-max-loss-cases)")
                break
            t = time.time()
            case = LossCase(c["p"], c["tau"], c["estimator_state"]["means"], c["features"], c["labels"],
                            c["class_counts_train"])
            mine = expected_of(case, case.compute(DPS))
            per = {k: Diff(k) for k in keys}
            for k in keys:
                per[k].add(mine[k], c["expected"][k], f"{c['name']} {k}")
                tot[k].add(mine[k], c["expected"][k], f"{c['name']} {k}")
            cnt.add(lt_counts(c["class_counts_train"][0], c["num_classes"]), c["class_counts_train"], c["name"])
            worst = max(per.values(), key=lambda x: x.max_rel)
            ident = sum(x.same for x in per.values())
            n = sum(x.n for x in per.values())
            report.append(f"  {c['name']:<34} {n} values, {ident} identical, worst {worst.name} rel {worst.max_rel:.2g} "
                          f"({max(x.max_ulp for x in per.values())} ulp max) [{time.time() - t:.1f} s]")
        report += [dd.line() for dd in tot.values()]
        report.append(cnt.line())
    if "estimator" in parts:
        t = time.time()
        es = load("estimator_cases.json")
        keys = ("R", "kappa", "kappa_flag", "logc")
        tot = {k: Diff(f"estimator {k}") for k in ("batch_class_counts", "update_weight", "means", "counts") + keys}
        for s in es["sequences"]:
            p, C = s["p"], s["num_classes"]
            ini = s["initial_state"]
            dv = derived_state(ini["means"], p)
            for k in keys:
                tot[k].add(dv[k], ini[k], f"{s['name']} initial {k}")
            prev = ini
            for si, st in enumerate(s["steps"]):
                counts = [int(x) for x in prev["counts"]]
                mine = estimator_step(p, C, prev["means"], counts, st["batch_features"], st["batch_labels"])
                for k in tot:
                    tot[k].add(mine[k], st["expected"][k], f"{s['name']} step {si} {k}")
                prev = st["expected"]
        report.append(f"estimator_cases.json ({time.time() - t:.1f} s)")
        report += [dd.line() for dd in tot.values()]
    if "mc" in parts:
        t = time.time()
        m = load("mc_check.json")
        ds = {k: Diff(f"mc {k}") for k in ("log_prior", "mean_cos_exact_bessel_ratio", "kt", "closed_form_s",
                                            "loss_closed_form")}
        for cfg in m["configs"]:
            p = cfg["p"]
            with mp.workdps(DPS):
                total = sum(cfg["class_counts"])
                lp_mp = [mpmath.log(mpf(n) / total) for n in cfg["class_counts"]]
                ds["log_prior"].add(f64s(lp_mp), cfg["log_prior"])
                for chk in cfg["sampler_checks"]:
                    k = mpf(chk["kappa"])
                    ds["mean_cos_exact_bessel_ratio"].add(
                        f64(besseli(mpf(p) / 2, k) / besseli(mpf(p) / 2 - 1, k)), chk["mean_cos_exact_bessel_ratio"])
            for r in cfg["results"]:
                for a in r["anchors"]:
                    kts, ss, lcf = mc_closed_forms(p, cfg["mu"], cfg["kappa"], a["anchor"], a["label"], r["tau"], lp_mp)
                    for cl in a["classes"]:
                        j = cl["cls"]
                        ds["kt"].add(f64(kts[j]), cl["kt"])
                        ds["closed_form_s"].add(f64(ss[j]), cl["closed_form_s"])
                    ds["loss_closed_form"].add(f64(lcf), a["loss_closed_form"])
        report.append(f"mc_check.json closed forms ({time.time() - t:.1f} s)")
        report += [dd.line() for dd in ds.values()]
    return report


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "golden"), help="output directory (default: golden/ at the repo root)")
    data_dir = os.environ.get("PROCO_DATA_DIR") or os.path.join(REPO_ROOT, "data")
    ap.add_argument("--cifar-dir", default=os.path.join(data_dir, "cifar-10-batches-bin"),
                    help="directory with CIFAR-10 data_batch_1.bin..data_batch_5.bin (default: $PROCO_DATA_DIR or data/, "
                         "then cifar-10-batches-bin, where scripts/fetch-cifar10.sh installs it)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to (re)generate: {','.join(PARTS)}")
    ap.add_argument("--verify-against", metavar="DIR", help="recompute DIR's expected values from its inputs; writes nothing")
    ap.add_argument("--verify-max-loss-cases", type=int, default=1000, help="with --verify-against: check at most this many loss cases")
    args = ap.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")
    if mpmath.__version__ != "1.3.0":
        log(f"warning: mpmath {mpmath.__version__} (the files were made with 1.3.0; last digits may differ)")
    mp.dps = DPS
    t_all = time.time()
    if args.verify_against:
        for line in verify_against(args.verify_against, parts, args.verify_max_loss_cases):
            print(line, flush=True)
        log(f"verification done in {time.time() - t_all:.1f} s")
        return
    if "cifar" in parts and not os.path.exists(os.path.join(args.cifar_dir, "data_batch_1.bin")):
        sys.exit(f"generate.py: CIFAR-10 not found in {args.cifar_dir} (run scripts/fetch-cifar10.sh, pass --cifar-dir, "
                 f"or leave 'cifar' out of --only)")
    jobs = [("bessel", "bessel.json", gen_bessel, dumps), ("loss", "proco_loss_cases.json", gen_loss, dumps),
            ("estimator", "estimator_cases.json", gen_estimator, dumps), ("mc", "mc_check.json", gen_mc, dumps),
            ("cifar", "cifar10_lt_indices.json", lambda: gen_cifar(args.cifar_dir), dumps_compact)]
    timings = []
    for part, fname, fn, writer in jobs:
        if part not in parts:
            continue
        t = time.time()
        log(f"{part}: start")
        doc = fn()
        text = writer(doc) + ("\n" if writer is dumps else "")
        write_atomic(os.path.join(args.out, fname), text)
        timings.append((part, time.time() - t))
        log(f"{part}: done in {timings[-1][1]:.1f} s")
    if "readme" in parts:
        write_atomic(os.path.join(args.out, "README.md"), build_readme(args.out))
    log("timings: " + ", ".join(f"{p} {s:.1f} s" for p, s in timings) + f"; total {time.time() - t_all:.1f} s")


if __name__ == "__main__":
    main()
