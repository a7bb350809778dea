//! The two inner loops of the ProCo pass that touch every (sample, class, coordinate): the
//! norms |a + b_r| behind kt and the gradient's weighted sums of class vectors.
//!
//! Why explicit SIMD: the compiler's auto-vectoriser turns the four-row blocking these loops
//! need into shuffles and spills (measured: slower than one row at a time). Each kernel has an
//! AVX-512F version (chosen at run time), an AVX2 + FMA version (the x86-64-v3 build) and a
//! portable one; all perform the same operations in the same order (eight partial sums per
//! norm, lane k summing coordinates k mod 8; a fixed reduction; fused multiply-adds), so the
//! results are bit-identical whichever runs.

/// Whether this CPU runs AVX-512F (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// The fixed reduction of eight partial sums plus the tail.
#[inline(always)]
fn reduce(acc: &[f64; 8], tail: f64) -> f64 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
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

/// |a + b_r| for four rows b_r (each as long as a): a is loaded once for the four.
pub(crate) fn norms_of_sums4(a: &[f64], b: [&[f64]; 4]) -> [f64; 4] {
    assert!(b.iter().all(|r| r.len() == a.len()), "rows must match the class vector's length");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present (checked at run time); lengths checked above.
        return unsafe { x86::norms4_avx512(a, b) };
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: the build targets AVX2 + FMA; lengths checked above.
        unsafe { x86::norms4_avx2(a, b) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        b.map(|r| norm_of_sum(a, r))
    }
}

/// grad_r = w_r z_r + sum_j c_rj v_j for two rows at once: `z` holds the two rows (2 x p),
/// `v` the C class vectors (C x p), `c` the two rows' C coefficients (2 x C), `w` the rows'
/// own weights; written to `out` (2 x p). The sum runs over j in order, one fused
/// multiply-add per term.
pub(crate) fn weighted_sums2(z: &[f64], v: &[f64], c: &[f64], w: [f64; 2], out: &mut [f64]) {
    let p = out.len() / 2;
    let classes = c.len() / 2;
    assert!(z.len() == 2 * p && c.len() == 2 * classes && v.len() == classes * p, "inconsistent lengths");
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{reduce, tail, weighted_sums_portable};

    /// AVX-512F [`super::norms_of_sums4`]: lane k of one register per row holds partial sum k.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn norms4_avx512(a: &[f64], b: [&[f64]; 4]) -> [f64; 4] {
        let whole = a.len() / 8 * 8;
        let mut acc = [_mm512_setzero_pd(); 4];
        let mut k = 0;
        while k < whole {
            let va = _mm512_loadu_pd(a.as_ptr().add(k));
            for r in 0..4 {
                let d = _mm512_add_pd(va, _mm512_loadu_pd(b[r].as_ptr().add(k)));
                acc[r] = _mm512_fmadd_pd(d, d, acc[r]);
            }
            k += 8;
        }
        let mut out = [0.0; 4];
        for r in 0..4 {
            let mut lanes = [0.0; 8];
            _mm512_storeu_pd(lanes.as_mut_ptr(), acc[r]);
            out[r] = reduce(&lanes, tail(a, b[r])).sqrt();
        }
        out
    }

    /// AVX2 + FMA [`super::norms_of_sums4`]: partial sums 0-3 in one register, 4-7 in another.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn norms4_avx2(a: &[f64], b: [&[f64]; 4]) -> [f64; 4] {
        let whole = a.len() / 8 * 8;
        let mut lo = [_mm256_setzero_pd(); 4];
        let mut hi = [_mm256_setzero_pd(); 4];
        let mut k = 0;
        while k < whole {
            let (a0, a1) = (_mm256_loadu_pd(a.as_ptr().add(k)), _mm256_loadu_pd(a.as_ptr().add(k + 4)));
            for r in 0..4 {
                let d0 = _mm256_add_pd(a0, _mm256_loadu_pd(b[r].as_ptr().add(k)));
                let d1 = _mm256_add_pd(a1, _mm256_loadu_pd(b[r].as_ptr().add(k + 4)));
                lo[r] = _mm256_fmadd_pd(d0, d0, lo[r]);
                hi[r] = _mm256_fmadd_pd(d1, d1, hi[r]);
            }
            k += 8;
        }
        let mut out = [0.0; 4];
        for r in 0..4 {
            let mut lanes = [0.0; 8];
            _mm256_storeu_pd(lanes.as_mut_ptr(), lo[r]);
            _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi[r]);
            out[r] = reduce(&lanes, tail(a, b[r])).sqrt();
        }
        out
    }

    /// AVX-512F [`super::weighted_sums2`], 16 coordinates of both rows per pass over the classes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sums2_avx512(z: &[f64], v: &[f64], c: &[f64], w: [f64; 2], out: &mut [f64]) {
        let p = out.len() / 2;
        let classes = c.len() / 2;
        let whole = p / 16 * 16;
        let (w0, w1) = (_mm512_set1_pd(w[0]), _mm512_set1_pd(w[1]));
        let mut k = 0;
        while k < whole {
            let mut g00 = _mm512_mul_pd(w0, _mm512_loadu_pd(z.as_ptr().add(k)));
            let mut g01 = _mm512_mul_pd(w0, _mm512_loadu_pd(z.as_ptr().add(k + 8)));
            let mut g10 = _mm512_mul_pd(w1, _mm512_loadu_pd(z.as_ptr().add(p + k)));
            let mut g11 = _mm512_mul_pd(w1, _mm512_loadu_pd(z.as_ptr().add(p + k + 8)));
            for j in 0..classes {
                let (v0, v1) = (_mm512_loadu_pd(v.as_ptr().add(j * p + k)), _mm512_loadu_pd(v.as_ptr().add(j * p + k + 8)));
                let (c0, c1) = (_mm512_set1_pd(*c.get_unchecked(j)), _mm512_set1_pd(*c.get_unchecked(classes + j)));
                g00 = _mm512_fmadd_pd(c0, v0, g00);
                g01 = _mm512_fmadd_pd(c0, v1, g01);
                g10 = _mm512_fmadd_pd(c1, v0, g10);
                g11 = _mm512_fmadd_pd(c1, v1, g11);
            }
            _mm512_storeu_pd(out.as_mut_ptr().add(k), g00);
            _mm512_storeu_pd(out.as_mut_ptr().add(k + 8), g01);
            _mm512_storeu_pd(out.as_mut_ptr().add(p + k), g10);
            _mm512_storeu_pd(out.as_mut_ptr().add(p + k + 8), g11);
            k += 16;
        }
        weighted_sums_portable(z, v, c, &w, out, whole);
    }

    /// AVX2 + FMA [`super::weighted_sums2`], 8 coordinates of both rows per pass over the classes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sums2_avx2(z: &[f64], v: &[f64], c: &[f64], w: [f64; 2], out: &mut [f64]) {
        let p = out.len() / 2;
        let classes = c.len() / 2;
        let whole = p / 8 * 8;
        let (w0, w1) = (_mm256_set1_pd(w[0]), _mm256_set1_pd(w[1]));
        let mut k = 0;
        while k < whole {
            let mut g00 = _mm256_mul_pd(w0, _mm256_loadu_pd(z.as_ptr().add(k)));
            let mut g01 = _mm256_mul_pd(w0, _mm256_loadu_pd(z.as_ptr().add(k + 4)));
            let mut g10 = _mm256_mul_pd(w1, _mm256_loadu_pd(z.as_ptr().add(p + k)));
            let mut g11 = _mm256_mul_pd(w1, _mm256_loadu_pd(z.as_ptr().add(p + k + 4)));
            for j in 0..classes {
                let (v0, v1) = (_mm256_loadu_pd(v.as_ptr().add(j * p + k)), _mm256_loadu_pd(v.as_ptr().add(j * p + k + 4)));
                let (c0, c1) = (_mm256_set1_pd(*c.get_unchecked(j)), _mm256_set1_pd(*c.get_unchecked(classes + j)));
                g00 = _mm256_fmadd_pd(c0, v0, g00);
                g01 = _mm256_fmadd_pd(c0, v1, g01);
                g10 = _mm256_fmadd_pd(c1, v0, g10);
                g11 = _mm256_fmadd_pd(c1, v1, g11);
            }
            _mm256_storeu_pd(out.as_mut_ptr().add(k), g00);
            _mm256_storeu_pd(out.as_mut_ptr().add(k + 4), g01);
            _mm256_storeu_pd(out.as_mut_ptr().add(p + k), g10);
            _mm256_storeu_pd(out.as_mut_ptr().add(p + k + 4), g11);
            k += 8;
        }
        weighted_sums_portable(z, v, c, &w, out, whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: f64) -> Vec<f64> {
        (0..len).map(|i| ((i as f64 + 1.0) * seed).sin() * 3.0).collect()
    }

    #[test]
    fn blocked_norms_equal_the_portable_form_bit_for_bit() {
        for p in [1usize, 3, 8, 13, 128, 1024] {
            let a = data(p, 0.37);
            let rows: Vec<Vec<f64>> = (0..4).map(|r| data(p, 0.11 + r as f64 * 0.05)).collect();
            let b = [rows[0].as_slice(), &rows[1], &rows[2], &rows[3]];
            let got = norms_of_sums4(&a, b);
            // Every compiled form this CPU can run, not only the one dispatch picks.
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            // SAFETY: the build targets AVX2 + FMA.
            assert_eq!(unsafe { x86::norms4_avx2(&a, b) }, got, "AVX2 form, p={p}");
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: AVX-512F is present.
                assert_eq!(unsafe { x86::norms4_avx512(&a, b) }, got, "AVX-512 form, p={p}");
            }
            for r in 0..4 {
                assert_eq!(got[r], norm_of_sum(&a, &rows[r]), "p={p} row {r}");
                let direct = a.iter().zip(&rows[r]).map(|(x, y)| (x + y) * (x + y)).sum::<f64>().sqrt();
                assert!((got[r] - direct).abs() <= 1e-14 * direct, "p={p} row {r}: {} vs {direct}", got[r]);
            }
        }
    }

    #[test]
    fn weighted_sums_equal_the_portable_form_bit_for_bit() {
        for (p, classes) in [(1usize, 1usize), (7, 3), (16, 10), (128, 10), (130, 100)] {
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
