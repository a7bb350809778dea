//! The inner loops of the ProCo pass that run over every (sample, class) pair: the dot
//! products behind kt, the gradient's weighted sums of class vectors, the Chebyshev
//! recurrences of the interpolated pair function and the softmax's exponentials.
//!
//! Why explicit SIMD: the compiler's auto-vectoriser turns the row blocking these loops need
//! into shuffles and spills (measured: slower than one row at a time). Each kernel has an
//! AVX-512F version (chosen at run time), an AVX2 + FMA version (the x86-64-v3 build) where
//! it pays, and a portable one; all perform the same operations in the same order (eight
//! partial sums per dot product, lane k summing coordinates k mod 8; a fixed reduction; fused
//! multiply-adds), so the results are bit-identical whichever runs, and the tests check every
//! form this CPU can run against the portable one.

/// Whether this CPU runs AVX-512F (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// The fixed reduction of eight partial sums plus the tail: neighbours first, the order in
/// which the AVX-512 form reduces eight accumulators at once without leaving registers.
#[inline(always)]
fn reduce(acc: &[f64; 8], tail: f64) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Sum over the coordinates past the last multiple of 8 of (a_k + b_k)^2.
#[inline(always)]
fn tail(a: &[f64], b: &[f64]) -> f64 {
    let whole = a.len() / 8 * 8;
    a[whole..].iter().zip(&b[whole..]).fold(0.0, |t, (x, y)| {
        let d = x + y;
        d.mul_add(d, t)
    })
}

/// |a + b| (a and b of equal length), the portable form every kernel reproduces.
pub(crate) fn norm_of_sum(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            let d = ca[k] + cb[k];
            acc[k] = d.mul_add(d, acc[k]);
        }
    }
    reduce(&acc, tail(a, b)).sqrt()
}

/// a . b (equal lengths), the portable form every dot-product kernel reproduces: lane k of
/// eight partial sums takes the coordinates k mod 8, one fused multiply-add each.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] = ca[k].mul_add(cb[k], acc[k]);
        }
    }
    reduce(&acc, dot_tail(a, b))
}

/// The coordinates past the last multiple of 8 of a . b, one fused multiply-add each.
#[inline(always)]
fn dot_tail(a: &[f64], b: &[f64]) -> f64 {
    let whole = a.len() / 8 * 8;
    a[whole..].iter().zip(&b[whole..]).fold(0.0, |t, (x, y)| x.mul_add(*y, t))
}

/// [`dot`] of four rows `z_r` with two vectors `v_c` (all of one length): out[r][c] = z_r . v_c,
/// each vector loaded once for all four rows.
pub(crate) fn dots4x2(z: [&[f64]; 4], v: [&[f64]; 2]) -> [[f64; 2]; 4] {
    let len = v[0].len();
    assert!(z.iter().chain(&v).all(|r| r.len() == len), "rows and vectors must have one length");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        return unsafe { x86::dots4x2_avx512(z, v) };
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: the build targets AVX2 + FMA; lengths checked above.
        let (a, b) = unsafe { (x86::dots2x2_avx2([z[0], z[1]], v), x86::dots2x2_avx2([z[2], z[3]], v)) };
        [a[0], a[1], b[0], b[1]]
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        z.map(|r| [dot(r, v[0]), dot(r, v[1])])
    }
}

/// [`dot`] of four rows `z_r` with four vectors `v_c` (all of one length): out[r][c] =
/// z_r . v_c, each vector and row loaded once for all sixteen products.
pub(crate) fn dots4x4(z: [&[f64]; 4], v: [&[f64]; 4]) -> [[f64; 4]; 4] {
    let len = v[0].len();
    assert!(z.iter().chain(&v).all(|r| r.len() == len), "rows and vectors must have one length");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        return unsafe { x86::dots4x4_avx512(z, v) };
    }
    let (a, b) = (dots4x2(z, [v[0], v[1]]), dots4x2(z, [v[2], v[3]]));
    std::array::from_fn(|r| [a[r][0], a[r][1], b[r][0], b[r][1]])
}

/// [`dot`] of each of four rows (of one length) with itself: four squared norms at once.
pub(crate) fn squared_norms4(z: [&[f64]; 4]) -> [f64; 4] {
    let len = z[0].len();
    assert!(z.iter().all(|r| r.len() == len), "rows must have one length");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        return unsafe { x86::squared_norms4_avx512(z) };
    }
    z.map(|r| dot(r, r))
}

/// grad_r = w_r z_r + sum_j c_rj v_j for two rows at once: `z` holds the two rows (2 x p),
/// `v` the C class vectors (C x p), `c` the two rows' C coefficients (2 x C), `w` the rows'
/// own weights; written to `out` (2 x p). The sum runs over j in order, one fused
/// multiply-add per term.
pub(crate) fn weighted_sums2(z: &[f64], v: &[f64], c: &[f64], w: [f64; 2], out: &mut [f64]) {
    let p = out.len() / 2;
    let classes = c.len() / 2;
    assert!(out.len() == 2 * p && z.len() == 2 * p && c.len() == 2 * classes && v.len() == classes * p, "inconsistent lengths");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        return unsafe { x86::weighted_sums2_avx512(z, v, c, w, out) };
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: the build targets AVX2 + FMA; lengths checked above.
        unsafe { x86::weighted_sums2_avx2(z, v, c, w, out) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        weighted_sums_portable(z, v, c, &w, out, 0)
    }
}

/// grad = w z + sum_j c_j v_j for one row, the portable form of [`weighted_sums2`].
pub(crate) fn weighted_sum(z: &[f64], v: &[f64], c: &[f64], w: f64, out: &mut [f64]) {
    weighted_sums_portable(z, v, c, &[w], out, 0);
}

/// The portable form of [`weighted_sums2`] for `w.len()` rows, from coordinate `from` on.
#[inline(always)]
fn weighted_sums_portable(z: &[f64], v: &[f64], c: &[f64], w: &[f64], out: &mut [f64], from: usize) {
    let rows = w.len();
    let p = out.len() / rows;
    let classes = c.len() / rows;
    for (r, &wr) in w.iter().enumerate() {
        for k in from..p {
            out[r * p + k] = (0..classes).fold(wr * z[r * p + k], |g, j| c[r * classes + j].mul_add(v[j * p + k], g));
        }
    }
}

/// Values at points t (given as `two_t` = 2t, each in [-2, 2]) of two Chebyshev series
/// sum_m c_m T_m(t), `prim` (one coefficient more than `a`) and `a`, by Clenshaw's recurrence
/// in fused multiply-adds, written to `p_out` and `a_out` (as long as `two_t`). Points are
/// independent, so they run in SIMD lanes, several registers at once to hide the
/// recurrence's latency.
pub(crate) fn clenshaw_pair(prim: &[f64], a: &[f64], two_t: &[f64], p_out: &mut [f64], a_out: &mut [f64]) {
    assert!(prim.len() == a.len() + 1 && a.len() >= 2, "prim needs one coefficient more than a");
    assert!(p_out.len() == two_t.len() && a_out.len() == two_t.len(), "outputs must match the points");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        let done = unsafe { x86::clenshaw_pair_avx512(prim, a, two_t, p_out, a_out) };
        return clenshaw_pair_portable(prim, a, two_t, p_out, a_out, done);
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: the build targets AVX2 + FMA; lengths checked above.
        let done = unsafe { x86::clenshaw_pair_avx2(prim, a, two_t, p_out, a_out) };
        clenshaw_pair_portable(prim, a, two_t, p_out, a_out, done)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        clenshaw_pair_portable(prim, a, two_t, p_out, a_out, 0)
    }
}

/// The portable form of [`clenshaw_pair`], for the points from index `from` on.
#[inline(always)]
fn clenshaw_pair_portable(prim: &[f64], a: &[f64], two_t: &[f64], p_out: &mut [f64], a_out: &mut [f64], from: usize) {
    let top = a.len();
    for i in from..two_t.len() {
        let tt = two_t[i];
        let (mut p1, mut p2, mut a1, mut a2) = (prim[top], 0.0, 0.0, 0.0);
        for m in (1..top).rev() {
            (p1, p2) = (tt.mul_add(p1, prim[m] - p2), p1);
            (a1, a2) = (tt.mul_add(a1, a[m] - a2), a1);
        }
        let t = 0.5 * tt;
        p_out[i] = t.mul_add(p1, prim[0] - p2);
        a_out[i] = t.mul_add(a1, a[0] - a2);
    }
}

/// e^x for x <= 0 (or NaN, which propagates), to within 2 ulps for x >= -708 and as 0 below
/// (where e^x < 3.4e-308): the softmax's exponentials, in place.
///
/// Why not `f64::exp`: a libm call per (sample, class) pair was a fifth of the ProCo pass.
/// This is a branch-free Cody-Waite reduction x = n ln 2 + r and a degree-13 Taylor polynomial
/// on |r| <= ln(2)/2 (truncation 4e-18), with 2^n built from the exponent bits; written as a
/// plain loop of such steps, the compiler vectorises it (identical results in every lane).
pub(crate) fn exp_nonpositive_in_place(values: &mut [f64]) {
    for v in values.iter_mut() {
        *v = exp_nonpositive(*v);
    }
}

#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    // 1.5 * 2^52: adding it rounds to an integer, which then sits in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    // 1 / k! for k = 13 down to 0.
    const TAYLOR: [f64; 14] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let shifted = x.mul_add(std::f64::consts::LOG2_E, SHIFT);
    let n = shifted - SHIFT;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let poly = TAYLOR[1..].iter().fold(TAYLOR[0], |acc, &c| acc.mul_add(r, c));
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    if x < -708.0 {
        0.0
    } else {
        poly * scale
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{dot_tail, reduce, weighted_sums_portable};

    /// Generates the SIMD forms of [`super::clenshaw_pair`]: `$g` registers of `$lanes` points
    /// per pass (enough independent chains to keep the FMA units busy). Returns how many
    /// points were done (a multiple of `$g * $lanes`); the caller finishes the rest.
    macro_rules! clenshaw_simd {
        ($name:ident, $feat:literal, $lanes:literal, $g:literal, $set1:ident, $load:ident, $store:ident, $fmadd:ident, $sub:ident, $mul:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(prim: &[f64], a: &[f64], two_t: &[f64], p_out: &mut [f64], a_out: &mut [f64]) -> usize {
                let top = a.len();
                let step = $g * $lanes;
                let whole = two_t.len() / step * step;
                let half = $set1(0.5);
                let mut i = 0;
                while i < whole {
                    let mut tt = [$set1(0.0); $g];
                    for g in 0..$g {
                        tt[g] = $load(two_t.as_ptr().add(i + g * $lanes));
                    }
                    let mut p1 = [$set1(*prim.get_unchecked(top)); $g];
                    let mut p2 = [$set1(0.0); $g];
                    let mut a1 = [$set1(0.0); $g];
                    let mut a2 = [$set1(0.0); $g];
                    for m in (1..top).rev() {
                        let (cp, ca) = ($set1(*prim.get_unchecked(m)), $set1(*a.get_unchecked(m)));
                        for g in 0..$g {
                            let np = $fmadd(tt[g], p1[g], $sub(cp, p2[g]));
                            p2[g] = p1[g];
                            p1[g] = np;
                            let na = $fmadd(tt[g], a1[g], $sub(ca, a2[g]));
                            a2[g] = a1[g];
                            a1[g] = na;
                        }
                    }
                    let (c0p, c0a) = ($set1(*prim.get_unchecked(0)), $set1(*a.get_unchecked(0)));
                    for g in 0..$g {
                        let t = $mul(half, tt[g]);
                        $store(p_out.as_mut_ptr().add(i + g * $lanes), $fmadd(t, p1[g], $sub(c0p, p2[g])));
                        $store(a_out.as_mut_ptr().add(i + g * $lanes), $fmadd(t, a1[g], $sub(c0a, a2[g])));
                    }
                    i += step;
                }
                whole
            }
        };
    }

    clenshaw_simd!(clenshaw_pair_avx512, "avx512f", 8, 4, _mm512_set1_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_fmadd_pd, _mm512_sub_pd, _mm512_mul_pd);
    #[cfg(all(target_feature = "avx2", target_feature = "fma"))]
    clenshaw_simd!(clenshaw_pair_avx2, "avx2,fma", 4, 4, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_fmadd_pd, _mm256_sub_pd, _mm256_mul_pd);


    /// Eight registers of eight partial sums each reduced to one register holding their eight
    /// sums, in order: neighbouring lanes, then pairs, then halves (the order of `reduce`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce8_avx512(acc: [__m512d; 8]) -> __m512d {
        let pair = |x: __m512d, y: __m512d| _mm512_add_pd(_mm512_unpacklo_pd(x, y), _mm512_unpackhi_pd(x, y));
        let (a01, a23) = (pair(acc[0], acc[1]), pair(acc[2], acc[3]));
        let (a45, a67) = (pair(acc[4], acc[5]), pair(acc[6], acc[7]));
        let (even, odd) = (_mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2));
        let quad = |x: __m512d, y: __m512d| _mm512_add_pd(_mm512_permutex2var_pd(x, even, y), _mm512_permutex2var_pd(x, odd, y));
        let (b0, b1) = (quad(a01, a23), quad(a45, a67));
        let (low, high) = (_mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0), _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4));
        _mm512_add_pd(_mm512_permutex2var_pd(b0, low, b1), _mm512_permutex2var_pd(b0, high, b1))
    }

    /// Generates the AVX-512F dot products of four rows with `$k` vectors: one register of
    /// eight partial sums per (row, vector), reduced in registers.
    macro_rules! dots_avx512 {
        ($name:ident, $k:literal) => {
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(z: [&[f64]; 4], v: [&[f64]; $k]) -> [[f64; $k]; 4] {
                let len = v[0].len();
                let whole = len / 8 * 8;
                let mut acc = [[_mm512_setzero_pd(); $k]; 4];
                let mut k = 0;
                while k < whole {
                    let mut vc = [_mm512_setzero_pd(); $k];
                    for c in 0..$k {
                        vc[c] = _mm512_loadu_pd(v[c].as_ptr().add(k));
                    }
                    for r in 0..4 {
                        let zr = _mm512_loadu_pd(z[r].as_ptr().add(k));
                        for c in 0..$k {
                            acc[r][c] = _mm512_fmadd_pd(zr, vc[c], acc[r][c]);
                        }
                    }
                    k += 8;
                }
                let mut lanes = [0.0; 4 * $k];
                // Accumulators (r, c) in row-major order, eight per reduction.
                for group in 0..$k / 2 {
                    let regs: [__m512d; 8] = std::array::from_fn(|g| {
                        let flat = group * 8 + g;
                        acc[flat / $k][flat % $k]
                    });
                    _mm512_storeu_pd(lanes.as_mut_ptr().add(group * 8), reduce8_avx512(regs));
                }
                let mut out = [[0.0; $k]; 4];
                for r in 0..4 {
                    for c in 0..$k {
                        out[r][c] = lanes[r * $k + c] + dot_tail(z[r], v[c]);
                    }
                }
                out
            }
        };
    }

    dots_avx512!(dots4x2_avx512, 2);
    dots_avx512!(dots4x4_avx512, 4);

    /// AVX-512F [`super::squared_norms4`]: one register of eight partial sums per row.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn squared_norms4_avx512(z: [&[f64]; 4]) -> [f64; 4] {
        let whole = z[0].len() / 8 * 8;
        let mut acc = [_mm512_setzero_pd(); 4];
        let mut k = 0;
        while k < whole {
            for r in 0..4 {
                let zr = _mm512_loadu_pd(z[r].as_ptr().add(k));
                acc[r] = _mm512_fmadd_pd(zr, zr, acc[r]);
            }
            k += 8;
        }
        let mut out = [0.0; 4];
        for r in 0..4 {
            let mut lanes = [0.0; 8];
            _mm512_storeu_pd(lanes.as_mut_ptr(), acc[r]);
            out[r] = reduce(&lanes, dot_tail(z[r], z[r]));
        }
        out
    }

    /// AVX2 + FMA dots of two rows with two vectors: partial sums 0-3 and 4-7 in two registers.
    #[cfg(all(target_feature = "avx2", target_feature = "fma"))]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots2x2_avx2(z: [&[f64]; 2], v: [&[f64]; 2]) -> [[f64; 2]; 2] {
        let len = v[0].len();
        let whole = len / 8 * 8;
        let mut lo = [[_mm256_setzero_pd(); 2]; 2];
        let mut hi = [[_mm256_setzero_pd(); 2]; 2];
        let mut k = 0;
        while k < whole {
            let v0 = (_mm256_loadu_pd(v[0].as_ptr().add(k)), _mm256_loadu_pd(v[0].as_ptr().add(k + 4)));
            let v1 = (_mm256_loadu_pd(v[1].as_ptr().add(k)), _mm256_loadu_pd(v[1].as_ptr().add(k + 4)));
            for r in 0..2 {
                let (z0, z1) = (_mm256_loadu_pd(z[r].as_ptr().add(k)), _mm256_loadu_pd(z[r].as_ptr().add(k + 4)));
                lo[r][0] = _mm256_fmadd_pd(z0, v0.0, lo[r][0]);
                hi[r][0] = _mm256_fmadd_pd(z1, v0.1, hi[r][0]);
                lo[r][1] = _mm256_fmadd_pd(z0, v1.0, lo[r][1]);
                hi[r][1] = _mm256_fmadd_pd(z1, v1.1, hi[r][1]);
            }
            k += 8;
        }
        let mut out = [[0.0; 2]; 2];
        for r in 0..2 {
            for c in 0..2 {
                let mut lanes = [0.0; 8];
                _mm256_storeu_pd(lanes.as_mut_ptr(), lo[r][c]);
                _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi[r][c]);
                out[r][c] = reduce(&lanes, dot_tail(z[r], v[c]));
            }
        }
        out
    }

    /// Generates the SIMD forms of [`super::weighted_sums2`]: four registers of `$lanes`
    /// coordinates per row, for both rows, per pass over the classes (eight independent
    /// chains of fused multiply-adds, enough to cover their latency on two FMA units), then
    /// one register per row; the coordinates past the last multiple of `$lanes` go to the
    /// portable form.
    macro_rules! weighted_sums_simd {
        ($name:ident, $feat:literal, $lanes:literal, $set1:ident, $load:ident, $store:ident, $mul:ident, $fmadd:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(z: &[f64], v: &[f64], c: &[f64], w: [f64; 2], out: &mut [f64]) {
                const REGS: usize = 4;
                let p = out.len() / 2;
                let classes = c.len() / 2;
                let whole = p / (REGS * $lanes) * (REGS * $lanes);
                let (w0, w1) = ($set1(w[0]), $set1(w[1]));
                let mut k = 0;
                while k < whole {
                    let mut g0 = [$set1(0.0); REGS];
                    let mut g1 = [$set1(0.0); REGS];
                    for r in 0..REGS {
                        g0[r] = $mul(w0, $load(z.as_ptr().add(k + r * $lanes)));
                        g1[r] = $mul(w1, $load(z.as_ptr().add(p + k + r * $lanes)));
                    }
                    for j in 0..classes {
                        let (c0, c1) = ($set1(*c.get_unchecked(j)), $set1(*c.get_unchecked(classes + j)));
                        for r in 0..REGS {
                            let vr = $load(v.as_ptr().add(j * p + k + r * $lanes));
                            g0[r] = $fmadd(c0, vr, g0[r]);
                            g1[r] = $fmadd(c1, vr, g1[r]);
                        }
                    }
                    for r in 0..REGS {
                        $store(out.as_mut_ptr().add(k + r * $lanes), g0[r]);
                        $store(out.as_mut_ptr().add(p + k + r * $lanes), g1[r]);
                    }
                    k += REGS * $lanes;
                }
                // Then one register per row for what is left in whole registers.
                let single = p / $lanes * $lanes;
                while k < single {
                    let mut g0 = $mul(w0, $load(z.as_ptr().add(k)));
                    let mut g1 = $mul(w1, $load(z.as_ptr().add(p + k)));
                    for j in 0..classes {
                        let vr = $load(v.as_ptr().add(j * p + k));
                        g0 = $fmadd($set1(*c.get_unchecked(j)), vr, g0);
                        g1 = $fmadd($set1(*c.get_unchecked(classes + j)), vr, g1);
                    }
                    $store(out.as_mut_ptr().add(k), g0);
                    $store(out.as_mut_ptr().add(p + k), g1);
                    k += $lanes;
                }
                weighted_sums_portable(z, v, c, &w, out, single);
            }
        };
    }

    weighted_sums_simd!(weighted_sums2_avx512, "avx512f", 8, _mm512_set1_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_mul_pd, _mm512_fmadd_pd);
    #[cfg(all(target_feature = "avx2", target_feature = "fma"))]
    weighted_sums_simd!(weighted_sums2_avx2, "avx2,fma", 4, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_mul_pd, _mm256_fmadd_pd);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: f64) -> Vec<f64> {
        (0..len).map(|i| ((i as f64 + 1.0) * seed).sin() * 3.0).collect()
    }

    #[test]
    fn norm_of_sum_is_the_norm() {
        for p in [1usize, 3, 8, 13, 128, 1024] {
            let (a, b) = (data(p, 0.37), data(p, 0.11));
            let direct = a.iter().zip(&b).map(|(x, y)| (x + y) * (x + y)).sum::<f64>().sqrt();
            assert!((norm_of_sum(&a, &b) - direct).abs() <= 1e-14 * direct, "p={p}");
        }
    }

    #[test]
    fn clenshaw_forms_agree_bit_for_bit_and_sum_the_series() {
        let prim = data(26, 0.31);
        let a = data(25, 0.17);
        for n in [0usize, 1, 5, 16, 31, 32, 100] {
            let two_t: Vec<f64> = (0..n).map(|i| 2.0 * (((i as f64) * 0.7).sin())).collect();
            let (mut p, mut q) = (vec![0.0; n], vec![0.0; n]);
            clenshaw_pair(&prim, &a, &two_t, &mut p, &mut q);
            let (mut pw, mut qw) = (vec![0.0; n], vec![0.0; n]);
            clenshaw_pair_portable(&prim, &a, &two_t, &mut pw, &mut qw, 0);
            assert_eq!((&p, &q), (&pw, &qw), "n={n}");
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            {
                let (mut p2, mut q2) = (vec![0.0; n], vec![0.0; n]);
                // SAFETY: the build targets AVX2 + FMA.
                let done = unsafe { x86::clenshaw_pair_avx2(&prim, &a, &two_t, &mut p2, &mut q2) };
                clenshaw_pair_portable(&prim, &a, &two_t, &mut p2, &mut q2, done);
                assert_eq!((&p2, &q2), (&pw, &qw), "AVX2 form, n={n}");
            }
            for (i, &tt) in two_t.iter().enumerate() {
                // Direct sum with T_m(t) = cos(m acos t).
                let theta = (0.5 * tt).acos();
                let direct = |c: &[f64]| c.iter().enumerate().map(|(m, cm)| cm * (m as f64 * theta).cos()).sum::<f64>();
                assert!((p[i] - direct(&prim)).abs() < 1e-12 && (q[i] - direct(&a)).abs() < 1e-12, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn blocked_dots_equal_the_portable_form_bit_for_bit() {
        for p in [1usize, 5, 8, 13, 128, 1024] {
            let rows: Vec<Vec<f64>> = (0..4).map(|r| data(p, 0.13 + r as f64 * 0.07)).collect();
            let (v0, v1) = (data(p, 0.29), data(p, 0.53));
            let z = [rows[0].as_slice(), &rows[1], &rows[2], &rows[3]];
            let got = dots4x2(z, [&v0, &v1]);
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            {
                // SAFETY: the build targets AVX2 + FMA.
                let (a, b) = unsafe { (x86::dots2x2_avx2([z[0], z[1]], [&v0, &v1]), x86::dots2x2_avx2([z[2], z[3]], [&v0, &v1])) };
                assert_eq!([a[0], a[1], b[0], b[1]], got, "AVX2 form, p={p}");
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: AVX-512F is present.
                assert_eq!(unsafe { x86::dots4x2_avx512(z, [&v0, &v1]) }, got, "AVX-512 form, p={p}");
            }
            let (v2, v3) = (data(p, 0.71), data(p, 0.97));
            let four = dots4x4(z, [&v0, &v1, &v2, &v3]);
            for r in 0..4 {
                assert_eq!(four[r], [dot(z[r], &v0), dot(z[r], &v1), dot(z[r], &v2), dot(z[r], &v3)], "dots4x4, p={p} row {r}");
            }
            let norms = squared_norms4(z);
            for r in 0..4 {
                assert_eq!(norms[r], dot(z[r], z[r]), "p={p} row {r}");
                assert_eq!(got[r], [dot(z[r], &v0), dot(z[r], &v1)], "p={p} row {r}");
                let direct: f64 = z[r].iter().zip(&v1).map(|(x, y)| x * y).sum();
                assert!((got[r][1] - direct).abs() <= 1e-13 * z[r].iter().zip(&v1).map(|(x, y)| (x * y).abs()).sum::<f64>(), "p={p}");
            }
        }
    }

    #[test]
    fn exponential_is_within_two_ulps_of_libm() {
        let mut xs: Vec<f64> = (0..20_000).map(|i| -(i as f64) * 0.0354).collect();
        xs.extend([0.0, -0.0, -1e-300, -0.3465735902799726, -0.34657359027997264, -707.9, -708.0, -708.1, -745.2, -1e300, f64::NEG_INFINITY]);
        let mut got = xs.clone();
        exp_nonpositive_in_place(&mut got);
        for (&x, &e) in xs.iter().zip(&got) {
            let want = x.exp();
            if x < -708.0 {
                assert!(e == 0.0 && want < 3.4e-308, "x={x}: {e}");
            } else {
                assert!((e - want).abs() <= 2.0 * f64::EPSILON * want, "x={x}: {e} vs {want}");
            }
        }
        let mut nan = [f64::NAN];
        exp_nonpositive_in_place(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn weighted_sums_equal_the_portable_form_bit_for_bit() {
        for (p, classes) in [(1usize, 1usize), (7, 3), (16, 10), (24, 4), (48, 5), (128, 10), (130, 100), (1000, 3)] {
            let z = data(2 * p, 0.21);
            let v = data(classes * p, 0.43);
            let c = data(2 * classes, 0.77);
            let mut got = vec![0.0; 2 * p];
            weighted_sums2(&z, &v, &c, [0.5, -2.0], &mut got);
            let mut want = vec![0.0; 2 * p];
            weighted_sums_portable(&z, &v, &c, &[0.5, -2.0], &mut want, 0);
            assert_eq!(got, want, "p={p} C={classes}");
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            {
                let mut avx2 = vec![0.0; 2 * p];
                // SAFETY: the build targets AVX2 + FMA.
                unsafe { x86::weighted_sums2_avx2(&z, &v, &c, [0.5, -2.0], &mut avx2) };
                assert_eq!(avx2, want, "AVX2 form, p={p} C={classes}");
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                let mut avx512 = vec![0.0; 2 * p];
                // SAFETY: AVX-512F is present.
                unsafe { x86::weighted_sums2_avx512(&z, &v, &c, [0.5, -2.0], &mut avx512) };
                assert_eq!(avx512, want, "AVX-512 form, p={p} C={classes}");
            }
            let mut one = vec![0.0; p];
            weighted_sum(&z[p..], &v, &c[classes..], -2.0, &mut one);
            assert_eq!(one, want[p..], "p={p} C={classes}, one row");
        }
    }
}
