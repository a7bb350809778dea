//! Feature rows in f32 or f64, read where they lie.
//!
//! Why: training features are f32 and the ProCo pass computes in f64. Widening a whole batch
//! first costs a pass and a buffer as large as the batch (measured: ~6 us of a ~60 us view at
//! N = 256, p = 128); widening a few rows at a time into a buffer that stays in L1, where they
//! are used, costs only the conversions. Widening f32 to f64 is exact, so every result is the
//! same as from a widened copy.

use std::borrow::Cow;

/// Largest accepted deviation of a feature row's norm from 1 for f64, f32 and f16 features:
/// generous enough for normalised features rounded to f16, tight enough to catch
/// un-normalised ones.
pub const NORM_TOLERANCE: f64 = 1e-3;

/// N x p row-major feature values, f32 or f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureRows<'a> {
    /// f32 values (widening them to f64 is exact).
    F32(&'a [f32]),
    /// f64 values.
    F64(&'a [f64]),
}

impl<'a> FeatureRows<'a> {
    /// The largest | |z_i| - 1 | over the rows of dimension `p`, each norm computed in f64 as
    /// of the row's widened copy; NaN if any entry is NaN or infinite (a NaN or infinite
    /// entry makes its row's sum of squares NaN or infinite, and the fold keeps a NaN once
    /// seen, so one pass checks finiteness and norms together). `None` if the values do not
    /// make whole rows of a positive `p`.
    pub fn worst_norm_deviation(&self, p: usize) -> Option<f64> {
        if p == 0 || !self.len().is_multiple_of(p) {
            return None;
        }
        let deviation = |sq: f64| (sq.sqrt() - 1.0).abs();
        Some(match self {
            FeatureRows::F32(v) => v.chunks_exact(p).map(|row| deviation(squared_norm(row))).fold(0.0, worse),
            FeatureRows::F64(v) => v.chunks_exact(p).map(|row| deviation(squared_norm(row))).fold(0.0, worse),
        })
    }

    /// Number of values (N x p).
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `mid` values and the rest (`mid` clamped to the length).
    pub fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Self::F32(v) => {
                let (a, b) = v.split_at(mid.min(v.len()));
                (Self::F32(a), Self::F32(b))
            }
            Self::F64(v) => {
                let (a, b) = v.split_at(mid.min(v.len()));
                (Self::F64(a), Self::F64(b))
            }
        }
    }

    /// The values in f64: borrowed, or widened (exactly) into a new vector.
    pub fn to_f64(self) -> Cow<'a, [f64]> {
        match self {
            Self::F32(v) => Cow::Owned(v.iter().map(|&x| f64::from(x)).collect()),
            Self::F64(v) => Cow::Borrowed(v),
        }
    }

    /// Values `range` in f64: borrowed from f64 rows, widened into `buffer` from f32 ones.
    /// Panics if the range runs past the end, as slicing does.
    pub fn f64_range<'b>(&'b self, range: std::ops::Range<usize>, buffer: &'b mut Vec<f64>) -> &'b [f64] {
        match self {
            Self::F64(v) => &v[range],
            Self::F32(v) => {
                let src = &v[range];
                // Sized first, then converted in a plain loop, which vectorises.
                buffer.resize(src.len(), 0.0);
                buffer.iter_mut().zip(src).for_each(|(d, &x)| *d = f64::from(x));
                buffer
            }
        }
    }
}

/// The larger deviation, NaN winning (so one NaN entry anywhere fails the check).
fn worse(worst: f64, d: f64) -> f64 {
    if d > worst || d.is_nan() {
        d
    } else {
        worst
    }
}

/// Sum of squares in f64 with eight partial sums, so that it vectorises (the check runs on
/// every training step); f32 values are widened first.
fn squared_norm<T: Copy + Into<f64>>(row: &[T]) -> f64 {
    let mut acc = [0.0; 8];
    let chunks = row.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| v.into() * v.into()).sum();
    for c in chunks {
        for k in 0..8 {
            let v: f64 = c[k].into();
            acc[k] += v * v;
        }
    }
    acc.iter().sum::<f64>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_rows_give_what_their_widened_copy_gives() {
        let p = 13;
        let narrow: Vec<f32> = (0..7 * p).map(|i| ((i as f32) * 0.37).sin()).collect();
        let wide: Vec<f64> = narrow.iter().map(|&v| f64::from(v)).collect();
        let a = FeatureRows::F32(&narrow);
        let mut wide_buffer = Vec::new();
        assert_eq!(FeatureRows::F64(&wide).f64_range(3..9, &mut wide_buffer), &wide[3..9]);
        let mut buffer = Vec::new();
        assert_eq!(a.f64_range(5..20, &mut buffer), &wide[5..20]);
        assert_eq!(a.to_f64().into_owned(), wide);
        let (x, y) = a.split_at(2 * p);
        assert_eq!((x.len(), y.len()), (2 * p, 5 * p));
    }
}
