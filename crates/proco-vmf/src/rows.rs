//! Feature rows in f32 or f64, read where they lie.
//!
//! Why: training features are f32 and the ProCo pass computes in f64. Widening a whole batch
//! first costs a pass and a buffer as large as the batch (measured: ~6 us of a ~60 us view at
//! N = 256, p = 128); widening a few rows at a time into a buffer that stays in L1, where they
//! are used, costs only the conversions. Widening f32 to f64 is exact, so every result is the
//! same as from a widened copy.

use std::borrow::Cow;

/// N x p row-major feature values, f32 or f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureRows<'a> {
    /// f32 values (widening them to f64 is exact).
    F32(&'a [f32]),
    /// f64 values.
    F64(&'a [f64]),
}

impl<'a> FeatureRows<'a> {
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
