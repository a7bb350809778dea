//! `proco._native`: the exact ProCo loss for Python, on host buffers.
//!
//! Every function takes and returns numpy arrays (the `proco` package moves torch tensors to
//! and from them); the mathematics is `proco-vmf`'s, the same code the Rust trainer runs:
//! the estimator ([`proco_vmf::estimator`]), the contrast logits and their gradient
//! ([`proco_vmf::contrast`]). Nothing here links LibTorch, and nothing panics on bad input:
//! every refusal is a `ValueError` saying what was wrong and what to pass instead. The
//! long computations release the GIL.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use numpy::ndarray::ArrayD;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use proco_vmf::contrast::{contrast_logits, contrast_logits_backward, contrast_logits_from_q, ContrastLogits, InterpolantCache, PairEvaluation};
use proco_vmf::estimator::{BatchStatistics, VmfEstimator};
use proco_vmf::parallel::ScopedThreads;
use proco_vmf::rows::NORM_TOLERANCE;
use proco_vmf::{bessel_order, FeatureRows, FixedOrderBessel};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rand::SeedableRng;

/// Smallest accepted temperature (as the Rust library's): |z|^2 / tau^2 stays far from
/// overflow.
const MIN_TEMPERATURE: f64 = 1e-6;

fn value_error(e: impl Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A 2-D feature array, float32 or float64, C-contiguous.
enum Features<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Features<'py> {
    fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Self::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
            return Ok(Self::F64(a));
        }
        let found = describe_array(obj);
        Err(value_error(format!("{what} must be a 2-D float32 or float64 array of shape (N, p), got {found}")))
    }

    /// The rows, their count N and dimension p.
    fn rows(&self, what: &str) -> PyResult<(FeatureRows<'_>, usize, usize)> {
        let not_contiguous = || value_error(format!("{what} must be C-contiguous (call .contiguous() on the tensor)"));
        let (rows, shape) = match self {
            Self::F32(a) => (FeatureRows::F32(c_order(a).ok_or_else(not_contiguous)?), a.shape()),
            Self::F64(a) => (FeatureRows::F64(c_order(a).ok_or_else(not_contiguous)?), a.shape()),
        };
        Ok((rows, shape[0], shape[1]))
    }
}

/// `dtype` and shape of an array, or the Python type of anything else (for messages).
fn describe_array(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<numpy::PyUntypedArray>() {
        Ok(a) => format!("an array of dtype {} and shape {:?}", a.dtype(), a.shape()),
        Err(_) => format!("an object of type {}", obj.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string())),
    }
}

/// Refuses features of dimension `p` for a loss built for `dim`.
fn check_dimension(p: usize, dim: usize) -> PyResult<()> {
    if p != dim {
        return Err(value_error(format!("features have dimension {p}, but this loss was built for contrast_dim = {dim}")));
    }
    Ok(())
}

/// Checks that `rows` are N >= 1 finite unit vectors of dimension `p`.
fn check_unit_rows(rows: FeatureRows<'_>, n: usize, p: usize, dim: usize) -> PyResult<()> {
    check_dimension(p, dim)?;
    if n == 0 {
        return Err(value_error("the batch is empty: pass at least one feature row"));
    }
    match rows.worst_norm_deviation(p) {
        Some(w) => check_norm_deviation(w),
        None => Err(value_error(format!("{} values do not make rows of dimension {p}", rows.len()))),
    }
}

/// Refuses features whose largest | |z_i| - 1 | is `worst` (NaN for non-finite entries) when
/// it exceeds the tolerance; for features whose norms were taken elsewhere (on a GPU).
#[pyfunction]
fn check_norm_deviation(worst: f64) -> PyResult<()> {
    if worst.is_nan() || worst.is_infinite() {
        return Err(value_error("features hold NaN or infinite values"));
    }
    if worst > NORM_TOLERANCE {
        return Err(value_error(format!(
            "a feature row has norm off from 1 by {worst:.3e} (tolerance {NORM_TOLERANCE:e}): pass L2-normalised features, e.g. torch.nn.functional.normalize(z, dim=1)"
        )));
    }
    Ok(())
}

/// The values of a C-contiguous array in order; `None` for any other layout (numpy's
/// `as_slice` also lends Fortran-ordered memory, which would be read transposed).
fn c_order<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(a: &'a numpy::PyReadonlyArray<'_, T, D>) -> Option<&'a [T]> {
    if a.is_c_contiguous() {
        a.as_slice().ok()
    } else {
        None
    }
}

/// Most elements of an array this module allocates (2^32: 32 GiB of float64). Larger requests
/// are refused with a ValueError instead of aborting the interpreter on a failed allocation.
const MAX_ARRAY_ELEMENTS: usize = 1 << 32;

/// `rows` x `columns`, refused when it overflows or passes [`MAX_ARRAY_ELEMENTS`].
fn array_elements(rows: usize, columns: usize, what: &str) -> PyResult<usize> {
    rows.checked_mul(columns)
        .filter(|&e| e <= MAX_ARRAY_ELEMENTS)
        .ok_or_else(|| value_error(format!("{what} would hold {rows} x {columns} values, more than {MAX_ARRAY_ELEMENTS}: use a smaller batch, class count or dimension")))
}

/// A C-contiguous float64 array's values.
fn f64_values<'a, D: numpy::ndarray::Dimension>(a: &'a numpy::PyReadonlyArray<'_, f64, D>, what: &str) -> PyResult<&'a [f64]> {
    c_order(a).ok_or_else(|| value_error(format!("{what} must be C-contiguous")))
}

/// The estimator held in `means` (C x p) and `counts` (C), checked.
fn estimator(means: &PyReadonlyArray2<'_, f64>, counts: &PyReadonlyArray1<'_, f64>) -> PyResult<VmfEstimator> {
    let (c, p) = (means.shape()[0], means.shape()[1]);
    VmfEstimator::from_state(c, p, f64_values(means, "estimator means")?.to_vec(), f64_values(counts, "estimator counts")?.to_vec()).map_err(value_error)
}

/// Class indices from an int64 array of N labels, each in 0..C.
fn class_indices(labels: &Bound<'_, PyAny>, n: usize, num_classes: usize) -> PyResult<Vec<usize>> {
    let labels = labels
        .extract::<PyReadonlyArray1<'_, i64>>()
        .map_err(|_| value_error(format!("labels must be a 1-D int64 array, got {}", describe_array(labels))))?;
    let values = c_order(&labels).ok_or_else(|| value_error("labels must be C-contiguous"))?;
    if values.len() != n {
        return Err(value_error(format!("{} labels for {n} feature rows", values.len())));
    }
    values
        .iter()
        .map(|&l| usize::try_from(l).ok().filter(|&l| l < num_classes).ok_or_else(|| value_error(format!("label {l} is outside 0..{num_classes} (num_classes = {num_classes})"))))
        .collect()
}

/// The initial running means of `num_classes` classes in dimension `dim`: 0.9 times
/// independent random unit vectors, from the seeded generator `seed`.
#[pyfunction]
fn initial_means<'py>(py: Python<'py>, num_classes: usize, dim: usize, seed: u64) -> PyResult<Bound<'py, PyArray2<f64>>> {
    array_elements(num_classes, dim, "the estimator means")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let est = VmfEstimator::new(num_classes, dim, &mut rng).map_err(value_error)?;
    PyArray1::from_slice(py, est.means()).reshape([num_classes, dim])
}

/// Per-class sums (C x p) and counts (C) of a batch of unit features (N x p, float32 or
/// float64) with int64 labels (N) in 0..num_classes.
#[pyfunction]
fn batch_statistics<'py>(py: Python<'py>, features: &Bound<'py, PyAny>, labels: &Bound<'py, PyAny>, num_classes: usize) -> PyResult<Statistics<'py>> {
    let features = Features::extract(features, "features")?;
    let (rows, n, p) = features.rows("features")?;
    check_unit_rows(rows, n, p, p)?;
    array_elements(num_classes, p, "the per-class sums")?;
    let labels = class_indices(labels, n, num_classes)?;
    let stats = BatchStatistics::from_rows(rows, &labels, num_classes, p).map_err(value_error)?;
    Ok((PyArray1::from_slice(py, stats.sums()).reshape([num_classes, p])?, PyArray1::from_slice(py, stats.counts())))
}

/// Folds batch statistics (`sums` C x p, `batch_counts` C) into the estimator held in
/// `means` (C x p) and `counts` (C), in place.
#[pyfunction]
fn apply_statistics(means: &Bound<'_, PyArray2<f64>>, counts: &Bound<'_, PyArray1<f64>>, sums: PyReadonlyArray2<'_, f64>, batch_counts: PyReadonlyArray1<'_, f64>) -> PyResult<()> {
    let mut est = estimator(&means.readonly(), &counts.readonly())?;
    let stats = BatchStatistics::from_sums(est.num_classes(), est.dim(), f64_values(&sums, "sums")?.to_vec(), f64_values(&batch_counts, "batch counts")?.to_vec())
        .map_err(value_error)?;
    est.apply(&stats).map_err(value_error)?;
    // `estimator` above read both through `f64_values`, so they are C-contiguous. A read-only
    // array, or one also passed as `sums` / `batch_counts`, cannot be borrowed for writing.
    let writable = |what: &'static str| move |_| value_error(format!("{what} must be a writeable array not also passed as another argument"));
    let mut m = means.try_readwrite().map_err(writable("estimator means"))?;
    m.as_slice_mut().map_err(|_| value_error("estimator means must be C-contiguous"))?.copy_from_slice(est.means());
    drop(m);
    let mut c = counts.try_readwrite().map_err(writable("estimator counts"))?;
    c.as_slice_mut().map_err(|_| value_error("estimator counts must be C-contiguous"))?.copy_from_slice(est.counts());
    Ok(())
}

/// kappa (after the reference's clamps), R = |m| and logc = log I_nu(kappa) - nu log kappa of
/// every class of the estimator in `means` (C x p) and `counts` (C).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn concentrations<'py>(py: Python<'py>, means: PyReadonlyArray2<'py, f64>, counts: PyReadonlyArray1<'py, f64>) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
    let conc = estimator(&means, &counts)?.concentrations();
    let column = |f: fn(&proco_vmf::estimator::ClassConcentration) -> f64| PyArray1::from_vec(py, conc.iter().map(f).collect());
    Ok((column(|c| c.kappa), column(|c| c.r), column(|c| c.logc)))
}

fn elementwise<'py>(py: Python<'py>, x: PyReadonlyArrayDyn<'py, f64>, f: impl Fn(f64) -> f64 + Send + Sync) -> Bound<'py, PyArrayDyn<f64>> {
    let x: ArrayD<f64> = x.as_array().to_owned();
    py.detach(|| x.mapv(f)).into_pyarray(py)
}

/// log I_nu(x) elementwise, exact in double precision; NaN where nu < 0, x < 0, nu is not
/// finite or x is NaN; -inf at x = 0 for nu > 0 (I_nu(0) = 0); +inf at x = +inf.
#[pyfunction]
fn log_bessel_i<'py>(py: Python<'py>, nu: f64, x: PyReadonlyArrayDyn<'py, f64>) -> Bound<'py, PyArrayDyn<f64>> {
    elementwise(py, x, move |v| proco_vmf::log_bessel_i(nu, v))
}

/// I_{nu+1}(x) / I_nu(x) elementwise, exact in double precision; NaN where the inputs are
/// outside the domain of [`log_bessel_i`].
#[pyfunction]
fn bessel_ratio<'py>(py: Python<'py>, nu: f64, x: PyReadonlyArrayDyn<'py, f64>) -> Bound<'py, PyArrayDyn<f64>> {
    elementwise(py, x, move |v| proco_vmf::bessel_ratio(nu, v))
}

/// The contrast logits and their gradient for features of dimension `dim` at temperature
/// `temperature`; the estimator is passed in on each call (the Python module owns it).
#[pyclass(module = "proco._native", frozen)]
struct ProCoCore {
    dim: usize,
    nu: f64,
    tau: f64,
    bessel: FixedOrderBessel,
    /// Certified interpolants kept between batches (never changes a result).
    cache: Mutex<InterpolantCache>,
    /// Most threads a pass uses (the Python module sets it to torch's intra-op thread count
    /// before each pass, so `torch.set_num_threads` governs both). Results do not depend on it.
    threads: AtomicUsize,
}

/// (logits s, kt, A), each an N x C float64 array.
type LogitArrays<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>);

/// (per-class sums C x p, per-class counts C) of a batch.
type Statistics<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<f64>>);

/// The (logits, kt, A) arrays, each N x C, of a pass's output.
fn logit_arrays(py: Python<'_>, out: ContrastLogits, n: usize, c: usize) -> PyResult<LogitArrays<'_>> {
    let matrix = |v: Vec<f64>| PyArray1::from_vec(py, v).reshape([n, c]);
    Ok((matrix(out.logits)?, matrix(out.kt)?, matrix(out.ratio)?))
}

/// Fewest (sample, class) pairs per thread of a pass started from Python. The library's
/// [`proco_vmf::contrast::MIN_PAIRS_PER_THREAD`] (8,192) suits jobs run on LibTorch's own
/// OpenMP workers; here the pass spawns its threads while torch's workers still spin after the
/// last tensor operation, so a second thread must carry more work to pay. Measured on 2 cores
/// (whole step, torch at 2 threads): 25,600 pairs 2.3 ms on 1 thread against 3.9 ms on 2;
/// 102,400 pairs 9.2 against 9.6; 256,000 pairs 109 against 99.
const SPAWNED_THREAD_MIN_PAIRS: usize = 1 << 16;

impl ProCoCore {
    /// Threads for a pass over `pairs` (sample, class) pairs: at most [`Self::threads`], one
    /// per [`SPAWNED_THREAD_MIN_PAIRS`], at least one.
    fn pass_threads(&self, pairs: usize) -> usize {
        self.threads().min(pairs / SPAWNED_THREAD_MIN_PAIRS).max(1)
    }
}

#[pymethods]
impl ProCoCore {
    #[new]
    fn new(dim: usize, temperature: f64) -> PyResult<Self> {
        let nu = bessel_order(dim).map_err(value_error)?;
        if !(temperature.is_finite() && temperature >= MIN_TEMPERATURE) {
            return Err(value_error(format!("temperature = {temperature} must be finite and >= {MIN_TEMPERATURE:e} (ProCo uses 0.1)")));
        }
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        Ok(Self { dim, nu, tau: temperature, bessel: FixedOrderBessel::new(nu), cache: Mutex::new(InterpolantCache::new()), threads: AtomicUsize::new(threads) })
    }

    /// The feature dimension p.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// Pickling (`torch.save` of a whole ProCoLoss, `copy.deepcopy`): rebuilt from (dim,
    /// temperature); the interpolant cache starts empty (it never changes a result).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, pyo3::types::PyType>, (usize, f64))> {
        let core = slf.get();
        Ok((slf.get_type(), (core.dim, core.tau)))
    }

    /// Most threads a pass uses (>= 1; default: the machine's available parallelism).
    #[getter]
    fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// Sets the most threads a pass uses; 0 is refused.
    #[setter]
    fn set_threads(&self, threads: usize) -> PyResult<()> {
        if threads == 0 {
            return Err(value_error("threads must be at least 1"));
        }
        self.threads.store(threads, Ordering::Relaxed);
        Ok(())
    }

    /// (logits s, kt, A), each N x C float64, of unit `features` (N x p) against the estimator
    /// in `means` (C x p) and `counts` (C).
    fn logits<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyAny>,
        means: PyReadonlyArray2<'py, f64>,
        counts: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<LogitArrays<'py>> {
        let features = Features::extract(features, "features")?;
        let (rows, n, p) = features.rows("features")?;
        check_unit_rows(rows, n, p, self.dim)?;
        let terms = self.estimator_terms(&means, &counts)?;
        let c = terms.kappa.len();
        array_elements(n, c, "the contrast logits")?;
        let zeros = vec![0.0; c];
        let exact = |x: f64| self.bessel.log_i_minus_nu_log_x_and_ratio(x);
        let out = py
            .detach(|| {
                let evaluation = PairEvaluation { exact: &exact, nu: self.nu, max_threads: self.pass_threads(n.saturating_mul(c)), parallel: &ScopedThreads };
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                contrast_logits(rows, p, terms.with_prior(&zeros), self.tau, &evaluation, Some(&mut cache))
            })
            .map_err(value_error)?;
        logit_arrays(py, out, n, c)
    }

    /// (kappa_j mu_j (C x p), kappa_j (C), logc_j (C)) of the estimator in `means` (C x p) and
    /// `counts` (C): the class terms of the matrix-product route.
    #[allow(clippy::type_complexity)]
    fn class_terms<'py>(
        &self,
        py: Python<'py>,
        means: PyReadonlyArray2<'py, f64>,
        counts: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<(Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
        let terms = self.estimator_terms(&means, &counts)?;
        let c = terms.kappa.len();
        Ok((PyArray1::from_vec(py, terms.kappa_mu).reshape([c, self.dim])?, PyArray1::from_vec(py, terms.kappa), PyArray1::from_vec(py, terms.logc)))
    }

    /// (logits s, kt, A), each N x C float64, from q = kt^2 - kappa^2 (N x C float64, the
    /// matrix product (2 / tau) z (kappa mu)^T + |z|^2 / tau^2 made by torch) and the class
    /// terms `kappa`, `logc` that [`ProCoCore::class_terms`] returned.
    fn logits_from_q<'py>(
        &self,
        py: Python<'py>,
        q: PyReadonlyArray2<'py, f64>,
        kappa: PyReadonlyArray1<'py, f64>,
        logc: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<LogitArrays<'py>> {
        let (n, c) = (q.shape()[0], q.shape()[1]);
        let (qv, kappa, logc) = (f64_values(&q, "q")?, f64_values(&kappa, "kappa")?, f64_values(&logc, "logc")?);
        if kappa.len() != c {
            return Err(value_error(format!("q has {c} columns but there are {} classes", kappa.len())));
        }
        if qv.iter().any(|v| !v.is_finite()) {
            return Err(value_error("q holds NaN or infinite values"));
        }
        let exact = |x: f64| self.bessel.log_i_minus_nu_log_x_and_ratio(x);
        let out = py
            .detach(|| {
                let evaluation = PairEvaluation { exact: &exact, nu: self.nu, max_threads: self.pass_threads(n.saturating_mul(c)), parallel: &ScopedThreads };
                contrast_logits_from_q(qv, kappa, logc, &evaluation)
            })
            .map_err(value_error)?;
        logit_arrays(py, out, n, c)
    }

    /// d L / d features (N x p float64) for the upstream gradient `grad_logits` = d L / d s
    /// (N x C) of the logits that [`ProCoCore::logits`] returned with `kt` and `ratio` for the
    /// same features and estimator.
    #[allow(clippy::too_many_arguments)]
    fn backward<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyAny>,
        means: PyReadonlyArray2<'py, f64>,
        counts: PyReadonlyArray1<'py, f64>,
        kt: PyReadonlyArray2<'py, f64>,
        ratio: PyReadonlyArray2<'py, f64>,
        grad_logits: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let features = Features::extract(features, "features")?;
        let (rows, n, p) = features.rows("features")?;
        check_dimension(p, self.dim)?;
        let terms = self.estimator_terms(&means, &counts)?;
        let (kt, ratio, grad_logits) = (f64_values(&kt, "kt")?, f64_values(&ratio, "ratio")?, f64_values(&grad_logits, "the upstream gradient")?);
        if grad_logits.iter().any(|g| !g.is_finite()) {
            return Err(value_error("the upstream gradient of the contrast logits holds NaN or infinite values"));
        }
        let grad = py
            .detach(|| contrast_logits_backward(rows, p, &terms.kappa_mu, self.tau, kt, ratio, grad_logits, self.pass_threads(n.saturating_mul(terms.kappa.len())), &ScopedThreads))
            .map_err(value_error)?;
        PyArray1::from_vec(py, grad).reshape([n, p])
    }
}

impl ProCoCore {
    fn estimator_terms(&self, means: &PyReadonlyArray2<'_, f64>, counts: &PyReadonlyArray1<'_, f64>) -> PyResult<proco_vmf::estimator::OwnedClassTerms> {
        let est = estimator(means, counts)?;
        if est.dim() != self.dim {
            return Err(value_error(format!("the estimator holds {}-dimensional means, but this loss was built for contrast_dim = {}", est.dim(), self.dim)));
        }
        Ok(est.class_terms())
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ProCoCore>()?;
    m.add_function(wrap_pyfunction!(initial_means, m)?)?;
    m.add_function(wrap_pyfunction!(check_norm_deviation, m)?)?;
    m.add_function(wrap_pyfunction!(batch_statistics, m)?)?;
    m.add_function(wrap_pyfunction!(apply_statistics, m)?)?;
    m.add_function(wrap_pyfunction!(concentrations, m)?)?;
    m.add_function(wrap_pyfunction!(log_bessel_i, m)?)?;
    m.add_function(wrap_pyfunction!(bessel_ratio, m)?)?;
    m.add("NORM_TOLERANCE", NORM_TOLERANCE)?;
    m.add("HOST_PASS_MAX_WORK", proco_vmf::contrast::HOST_PASS_MAX_WORK)?;
    Ok(())
}
