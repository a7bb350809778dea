//! Input checks shared by the estimator and the losses: they turn bad tensors into typed
//! errors before any arithmetic can turn them into silent NaNs.

use tch::{Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::host_tensor::cpu_slice;

pub use proco_vmf::rows::NORM_TOLERANCE;

/// The same for bfloat16, whose 8-bit mantissa alone rounds a unit row's norm by up to 2^-8.
pub const NORM_TOLERANCE_BF16: f64 = 1.0 / 128.0;

fn check_feature_tensor(features: &Tensor, p: usize) -> Result<i64> {
    let size = features.size();
    let bad = |reason: String| Err(ProcoError::InvalidFeatures { reason });
    if p == 0 {
        return bad("the feature dimension p must be at least 1".into());
    }
    if size.len() != 2 || size[1] != p as i64 {
        return bad(format!("expected shape [N, {p}], got {size:?}"));
    }
    if !matches!(features.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
        return bad(format!("expected a floating-point tensor, got {:?}", features.kind()));
    }
    if size[0] == 0 {
        return bad("the batch is empty".into());
    }
    Ok(size[0])
}

fn tolerance(kind: Kind) -> f64 {
    if kind == Kind::BFloat16 {
        NORM_TOLERANCE_BF16
    } else {
        NORM_TOLERANCE
    }
}

fn check_worst(worst: f64, kind: Kind) -> Result<()> {
    let bad = |reason: String| Err(ProcoError::InvalidFeatures { reason });
    if worst.is_nan() || worst.is_infinite() {
        return bad("some entries are NaN or infinite".into());
    }
    let tolerance = tolerance(kind);
    if worst > tolerance {
        return bad(format!("a row has norm off from 1 by {worst:.3e} (tolerance {tolerance:e})"));
    }
    Ok(())
}

/// Checks that `features` is N x p, floating point, finite, and made of unit rows.
/// Returns N. Costs one device-to-host synchronisation.
pub fn unit_features(features: &Tensor, p: usize) -> Result<i64> {
    let n = check_feature_tensor(features, p)?;
    let norms = features.detach().f_to_kind(Kind::Double)?.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?.f_sqrt()?;
    let worst = norms.f_sub_scalar(1.0)?.f_abs()?.f_max()?.f_double_value(&[])?;
    check_worst(worst, features.kind())?;
    Ok(n)
}

/// The same checks as [`unit_features`], made on a host copy of the features in f64, which is
/// returned (N x p row-major): for callers that compute on the host anyway, one transfer does
/// both jobs.
pub fn unit_features_to_host(features: &Tensor, p: usize) -> Result<Vec<f64>> {
    // SAFETY: the in-place view (if any) is copied out before this function returns, and no
    // code runs meanwhile that could write to the features.
    Ok(unsafe { unit_features_on_host(features, p) }?.into_f64())
}

pub use proco_vmf::FeatureRows;

/// Features on the host: checked unit rows from [`unit_features_on_host`], rows still to be
/// checked (with [`unit_rows`]) from [`features_on_host`].
#[derive(Debug)]
pub enum HostFeatures<'a> {
    /// A contiguous CPU f32 tensor's memory, read in place.
    InPlace(&'a [f32]),
    /// Any other tensor, copied to the host in f64.
    Copied(Vec<f64>),
}

impl HostFeatures<'_> {
    /// The rows.
    pub fn rows(&self) -> FeatureRows<'_> {
        match self {
            Self::InPlace(v) => FeatureRows::F32(v),
            Self::Copied(v) => FeatureRows::F64(v),
        }
    }

    /// The values in f64: widened from the tensor's memory, or the copy itself (no second
    /// copy).
    pub fn into_f64(self) -> Vec<f64> {
        match self {
            Self::InPlace(v) => FeatureRows::F32(v).to_f64().into_owned(),
            Self::Copied(v) => v,
        }
    }
}

/// The checks of [`unit_features`] on the host, without copying a contiguous CPU f32 tensor:
/// its memory is checked (and later read) in place; any other tensor is copied to f64.
/// [`unit_features_to_host`] is the safe, always-copying form.
///
/// # Safety
/// As [`features_on_host`]: nothing may write to the storage of `features` while the result
/// is alive.
pub unsafe fn unit_features_on_host(features: &Tensor, p: usize) -> Result<HostFeatures<'_>> {
    // SAFETY: the caller's contract is this function's.
    let host = unsafe { features_on_host(features, p) }?;
    unit_rows(host.rows(), p, features.kind())?;
    Ok(host)
}

/// [`unit_features_on_host`] without the norm check, for callers that check the rows in
/// parts ([`unit_rows`], for example on several threads): the shape and dtype are checked,
/// the values are not.
///
/// # Safety
/// A contiguous CPU f32 tensor is lent in place ([`HostFeatures::InPlace`]): nothing may
/// write to its storage, through `features` or any tensor sharing it (a `shallow_clone`, a
/// view, an in-place op, another thread), while the result is alive. The borrow of
/// `features` alone cannot ensure that, since tch lets shared handles mutate the storage.
/// Safe code cannot call it:
///
/// ```compile_fail,E0133
/// let t = proco::tch::Tensor::from_slice(&[0.6f32, 0.8]).view([1, 2]);
/// let host = proco::validate::features_on_host(&t, 2);
/// ```
pub unsafe fn features_on_host(features: &Tensor, p: usize) -> Result<HostFeatures<'_>> {
    let n = check_feature_tensor(features, p)? as usize;
    let numel = n * p;
    // SAFETY: the caller guarantees that nothing writes to the storage while the view lives.
    if let Some(src) = unsafe { cpu_slice::<f32>(features, Kind::Float) } {
        return Ok(HostFeatures::InPlace(src));
    }
    // SAFETY: the f64 slice is copied before this function returns.
    let values = if let Some(src) = unsafe { cpu_slice::<f64>(features, Kind::Double) } {
        src.to_vec()
    } else if features.kind() == Kind::Double {
        let mut values = vec![0.0; numel];
        features.detach().f_copy_data(&mut values, numel)?;
        values
    } else {
        // f32 travels as f32 (half the bytes) and widens here; f16 / bf16 widen to f32 first.
        let mut narrow = vec![0.0f32; numel];
        features.detach().f_to_kind(Kind::Float)?.f_copy_data(&mut narrow, numel)?;
        narrow.into_iter().map(f64::from).collect()
    };
    Ok(HostFeatures::Copied(values))
}

/// Checks that `rows` (p values each, taken from a tensor of dtype `kind`, which sets the
/// tolerance) are finite unit vectors, each norm computed in f64 exactly as of the row's
/// widened copy.
pub fn unit_rows(rows: FeatureRows<'_>, p: usize, kind: Kind) -> Result<()> {
    let worst = rows
        .worst_norm_deviation(p)
        .ok_or_else(|| ProcoError::InvalidFeatures { reason: format!("{} values do not make rows of dimension p = {p}", rows.len()) })?;
    check_worst(worst, kind)
}

/// Checks that `labels` is an int64 vector of length `n` with values in 0..num_classes, and
/// returns them on the host as class indices.
pub fn labels(labels: &Tensor, n: i64, num_classes: usize) -> Result<Vec<usize>> {
    let bad = |reason: String| Err(ProcoError::InvalidLabels { reason });
    if labels.kind() != Kind::Int64 {
        return bad(format!("expected int64 class indices, got {:?}", labels.kind()));
    }
    if labels.size() != [n] {
        return bad(format!("expected shape [{n}] to match the features, got {:?}", labels.size()));
    }
    let copied;
    // SAFETY: the labels are only read, and copied here before anything else runs.
    let host: &[i64] = match unsafe { cpu_slice::<i64>(labels, Kind::Int64) } {
        Some(host) => host,
        None => {
            copied = Vec::<i64>::try_from(&labels.f_to_device(tch::Device::Cpu)?)?;
            &copied
        }
    };
    if let Some(&l) = host.iter().find(|&&l| l < 0 || l >= num_classes as i64) {
        return bad(format!("label {l} is outside 0..{num_classes}; the dataset and the model disagree on the number of classes"));
    }
    Ok(host.iter().map(|&l| l as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn host_copy_checks_shape_norms_and_finiteness() {
        let unit = Tensor::from_slice(&[0.6f32, 0.8, 1.0, 0.0]).view([2, 2]);
        assert_eq!(unit_features_to_host(&unit, 2).unwrap(), vec![0.6f32 as f64, 0.8f32 as f64, 1.0, 0.0]);
        let long = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 2]);
        assert!(matches!(unit_features_to_host(&long, 2), Err(ProcoError::InvalidFeatures { .. })));
        let nan = Tensor::from_slice(&[f64::NAN, 0.0]).view([1, 2]);
        assert!(matches!(unit_features_to_host(&nan, 2), Err(ProcoError::InvalidFeatures { .. })));
        let empty_dim = Tensor::zeros([3, 0], (Kind::Float, Device::Cpu));
        assert!(matches!(unit_features_to_host(&empty_dim, 0), Err(ProcoError::InvalidFeatures { .. })));
        assert!(matches!(unit_features_to_host(&unit, 3), Err(ProcoError::InvalidFeatures { .. })));
    }

    #[test]
    fn cpu_f32_features_are_checked_in_place_and_others_copied() {
        let values = [0.6f32, 0.8, 0.0, 1.0, -1.0, 0.0];
        let unit = Tensor::from_slice(&values).view([3, 2]);
        // SAFETY: nothing writes to the test's tensors.
        let host = unsafe { unit_features_on_host(&unit, 2) }.unwrap();
        assert!(matches!(host, HostFeatures::InPlace(_)));
        assert_eq!(host.rows(), FeatureRows::F32(&values));
        assert_eq!(host.rows().to_f64().into_owned(), unit_features_to_host(&unit, 2).unwrap());
        let (a, b) = host.rows().split_at(2);
        assert_eq!((a.len(), b.len()), (2, 4));
        // Not contiguous: copied, same values.
        let strided = Tensor::from_slice(&[0.6f32, 0.0, 0.8, 1.0]).view([2, 2]).tr();
        assert!(matches!(unsafe { unit_features_on_host(&strided, 2) }.unwrap(), HostFeatures::Copied(_)));
        // The in-place path refuses what the copying one refuses.
        for bad in [[0.6f32, 0.8, 2.0, 0.0], [f32::NAN, 1.0, 1.0, 0.0], [f32::INFINITY, 0.0, 1.0, 0.0]] {
            let t = Tensor::from_slice(&bad).view([2, 2]);
            assert!(matches!(unsafe { unit_features_on_host(&t, 2) }, Err(ProcoError::InvalidFeatures { .. })), "{bad:?}");
        }
    }
}
