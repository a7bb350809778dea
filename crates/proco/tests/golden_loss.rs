//! The ProCo loss against every case of `proco_loss_cases.json`: estimator-derived R, kappa,
//! flags and logc; kt, Bessel ratios, contrast logits, softmax, per-sample and mean loss; and
//! d loss / d features through LibTorch's autograd, in f64 and in f32.

#[path = "../../proco-vmf/tests/support/mod.rs"]
mod support;

use proco::tch::{Kind, Tensor};
use proco::{LogPrior, ProCoLoss, VmfEstimator};
use support::{load, zip_exact, At};

/// One case's inputs, and where its expected values are.
struct Case<'a> {
    name: String,
    p: usize,
    tau: f64,
    c: usize,
    n: usize,
    estimator: VmfEstimator,
    prior: LogPrior,
    features: Vec<f64>,
    labels: Vec<i64>,
    expected: At<'a>,
}

impl Case<'_> {
    /// An N x C matrix of the expected values, flattened.
    fn nc(&self, key: &str) -> Vec<f64> {
        self.expected.get(key).matrix(self.n, self.c)
    }

    /// A C-vector of the expected values.
    fn per_class(&self, key: &str) -> Vec<f64> {
        self.expected.get(key).vec(self.c)
    }

    /// How far each class's kappa may be from the golden value, relative: kappa = p R / (1 - R^2)
    /// magnifies R's few-ulp rounding by 2 / (1 - R^2) (README: ill-conditioned near the clamp),
    /// except where kappa was set to the clamp 1e5, an exact constant (flag other than `ok`).
    fn kappa_rel_err(&self) -> Vec<f64> {
        let r = self.per_class("R");
        let flags = self.expected.get("kappa_flag").strs(self.c);
        (0..self.c).map(|j| if flags[j] == "ok" { 1e-15 + 4e-16 * 2.0 / (1.0 - r[j] * r[j]).abs() } else { 0.0 }).collect()
    }

    /// [`Case::kappa_rel_err`] in absolute terms.
    fn kappa_err(&self) -> Vec<f64> {
        let kappa = self.per_class("kappa");
        self.kappa_rel_err().iter().zip(&kappa).map(|(e, k)| e * k).collect()
    }
}

/// Every case of the file (at least one), with every input checked against the case's sizes.
fn cases(golden: &support::Golden) -> Vec<Case<'_>> {
    golden
        .at()
        .get("cases")
        .items()
        .into_iter()
        .map(|case| {
            let (p, c, n) = (case.get("p").usize(), case.get("num_classes").usize(), case.get("batch_size").usize());
            assert_eq!(case.get("bessel_order").f64(), p as f64 / 2.0 - 1.0, "{}: the order is p/2 - 1", case.here());
            let state = case.get("estimator_state");
            let estimator = VmfEstimator::from_state(c, p, state.get("means").matrix(c, p), state.get("counts").vec(c))
                .unwrap_or_else(|e| panic!("{}: estimator state refused: {e}", case.here()));
            Case {
                name: case.get("name").str().to_string(),
                p,
                tau: case.get("tau").f64(),
                c,
                n,
                estimator,
                prior: LogPrior::from_counts(&case.get("class_counts_train").vec(c)).expect("prior"),
                features: case.get("features").matrix(n, p),
                labels: case.get("labels").ints(n),
                expected: case.get("expected"),
            }
        })
        .collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn estimator_derived_parameters() {
    let golden = load("proco_loss_cases.json");
    for case in cases(&golden) {
        let conc = case.estimator.concentrations();
        let (r, kappa, logc) = (case.per_class("R"), case.per_class("kappa"), case.per_class("logc"));
        let prior = case.per_class("log_prior");
        let flags = case.expected.get("kappa_flag").strs(case.c);
        let kappa_rel_err = case.kappa_rel_err();
        for j in 0..case.c {
            let cj = conc[j];
            // |m| sums p squares: a few ulps.
            assert!((cj.r - r[j]).abs() <= 2e-15 * r[j], "{} class {j}: R {} vs {}", case.name, cj.r, r[j]);
            let tol = kappa_rel_err[j].max(1e-15);
            assert!((cj.kappa - kappa[j]).abs() <= tol * kappa[j], "{} class {j}: kappa {} vs {}", case.name, cj.kappa, kappa[j]);
            assert_eq!(cj.flag.as_str(), flags[j], "{} class {j}", case.name);
            assert!((cj.logc - logc[j]).abs() <= 1e-13 * logc[j].abs().max(1.0) + 2e-16 * kappa[j] * tol / 1e-15,
                "{} class {j}: logc {} vs {}", case.name, cj.logc, logc[j]);
            assert!((case.prior.values()[j] - prior[j]).abs() <= 1e-15 * prior[j].abs().max(1.0));
        }
    }
}

/// Which route `ProCoLoss::loss` takes: the one-pass host computation, or the device route
/// through `contrast_logits` and autograd (what large batches use).
#[derive(Debug, Clone, Copy)]
enum Route {
    Host,
    Device,
}

/// Runs one case in the given dtype and returns (max |s - s*|/scale, loss relative error,
/// max |grad - grad*| / max |grad*|), asserting the host-side quantities on the way.
fn run_case(case: &Case, kind: Kind, route: Route) -> (f64, f64, f64) {
    let (n, p, c) = (case.n as i64, case.p as i64, case.c as i64);
    let z = Tensor::from_slice(&case.features).view([n, p]).to_kind(kind).set_requires_grad(true);
    let y = Tensor::from_slice(&case.labels);
    let max_work = match route {
        Route::Host => usize::MAX,
        Route::Device => 0,
    };
    let loss_fn = ProCoLoss::new(case.p, case.tau).unwrap().with_host_pass_max_work(max_work);
    assert_eq!(loss_fn.uses_host_pass(case.n, case.c), matches!(route, Route::Host));
    let s = loss_fn.contrast_logits(&z, &case.estimator).unwrap();
    assert_eq!(s.logits.size(), [n, c]);
    assert_eq!(s.logits.kind(), kind);

    let (kt, ratio, logits) = (case.nc("kt"), case.nc("bessel_ratio"), case.nc("contrast_logits"));
    // kt inherits kappa's own conditioning (README), on top of its rounding.
    let (kappa, kappa_err) = (case.per_class("kappa"), case.kappa_err());
    let got_s = Vec::<f64>::try_from(&s.logits.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap();
    for (what, got) in [("logits", got_s.len()), ("kt", s.kt.len()), ("ratio", s.ratio.len())] {
        assert_eq!(got, kt.len(), "{}: {what} has {got} values for N x C = {}", case.name, kt.len());
    }
    let mut worst_s: f64 = 0.0;
    for i in 0..kt.len() {
        // README: kt and s good to "about 1e-16 * kt" in f64. kt^2 = kappa^2 + q is formed from
        // a matrix product in the features' precision, which rounds it to a few ulps of its
        // largest term, eps (kappa + 1/tau)^2, i.e. eps (kappa + 1/tau)^2 / (2 kt) in kt: about
        // eps kt, and more where kappa mu and z / tau nearly cancel (kt small against
        // kappa + 1/tau). f32 features also carry 6e-8 relative rounding, magnified by 1/tau.
        let unit = if kind == Kind::Double { 1e-15 } else { 2e-7 / case.tau };
        let eps = if kind == Kind::Double { f64::EPSILON } else { f64::from(f32::EPSILON) };
        let rounding = 4.0 * eps * (kappa[i % case.c] + 1.0 / case.tau).powi(2) / kt[i].max(1e-300);
        let tol_kt = if kind == Kind::Double { unit * kt[i] + 1e-14 } else { unit } + kappa_err[i % case.c] + rounding;
        assert!((s.kt[i] - kt[i]).abs() <= tol_kt, "{} {kind:?} kt[{i}] {} vs {} (tolerance {tol_kt:e})", case.name, s.kt[i], kt[i]);
        // A = I_{nu+1} / I_nu is concave with A(0) = 0, so dA/dkt <= A / kt: kt's error moves A
        // by at most tol_kt A / kt.
        let tol_ratio = if kind == Kind::Double { 1e-13 } else { 1e-5 };
        let tol_a = tol_ratio * ratio[i].max(1e-300) + 1e-300 + tol_kt * ratio[i] / kt[i].max(1e-300);
        assert!((s.ratio[i] - ratio[i]).abs() <= tol_a, "{} {kind:?} ratio[{i}] {} vs {}", case.name, s.ratio[i], ratio[i]);
        assert!((0.0..1.0).contains(&s.ratio[i]));
        worst_s = worst_s.max((got_s[i] - logits[i]).abs() / (1.0 + 1e-16 / unit * kt[i]).max(1.0));
        // s = F(kt) - F(kappa) with F = log I_nu - nu log: the subtraction itself is only as
        // good as a few ulps of |F| (~ nu log kt at large order), the README's "1e-16 kt" for large kt.
        let nu = case.p as f64 / 2.0 - 1.0;
        let f_scale = proco_vmf::log_bessel_i_minus_nu_log_x(nu, kt[i]).abs()
            + proco_vmf::log_bessel_i_minus_nu_log_x(nu, kappa[i % case.c]).abs();
        // ... plus kt's own error times ds/dkt = A.
        let tol_s = ratio[i] * tol_kt
            + if kind == Kind::Double { 1e-15 * kt[i] + 8.0 * f64::EPSILON * f_scale + 1e-14 } else { 2e-5 * (1.0 + logits[i].abs()) };
        assert!((got_s[i] - logits[i]).abs() <= tol_s, "{} {kind:?} s[{i}] {} vs {}", case.name, got_s[i], logits[i]);
    }

    let loss = loss_fn.loss(&z, &y, &case.estimator, &case.prior).unwrap();
    let want_loss = case.expected.get("loss").f64();
    let loss_err = (loss.double_value(&[]) - want_loss).abs() / want_loss.abs();
    let tol_loss = if kind == Kind::Double { 1e-10 } else { 1e-5 };
    assert!(loss_err <= tol_loss, "{} {kind:?} {route:?} loss {} vs {want_loss} (rel {loss_err:e})", case.name, loss.double_value(&[]));

    loss.backward();
    let grad = Vec::<f64>::try_from(&z.grad().to_kind(Kind::Double).flatten(0, -1)).unwrap();
    let want_grad = case.expected.get("grad_features").matrix(case.n, case.p);
    let scale = max_abs(&want_grad);
    assert!(grad.iter().all(|g| g.is_finite()), "{} {kind:?} {route:?}: non-finite gradient", case.name);
    let grad_err = zip_exact(&grad, &want_grad, &format!("{} gradient", case.name)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale;
    let tol_grad = if kind == Kind::Double { 1e-10 } else { 1e-4 };
    assert!(grad_err <= tol_grad, "{} {kind:?} {route:?} grad error {grad_err:e} of max |grad| {scale:e}", case.name);
    (worst_s, loss_err, grad_err)
}

#[test]
fn logits_loss_and_gradient_in_f64() {
    let golden = load("proco_loss_cases.json");
    for case in cases(&golden) {
        for route in [Route::Host, Route::Device] {
            let (s, l, g) = run_case(&case, Kind::Double, route);
            eprintln!("{:<32} f64 {route:?}: s {s:.1e}  loss {l:.1e}  grad {g:.1e}", case.name);
        }
    }
}

#[test]
fn logits_loss_and_gradient_in_f32() {
    let golden = load("proco_loss_cases.json");
    for case in cases(&golden) {
        for route in [Route::Host, Route::Device] {
            let (s, l, g) = run_case(&case, Kind::Float, route);
            eprintln!("{:<32} f32 {route:?}: s {s:.1e}  loss {l:.1e}  grad {g:.1e}", case.name);
        }
    }
}

#[test]
fn softmax_and_per_sample_loss() {
    let golden = load("proco_loss_cases.json");
    for case in cases(&golden) {
        let (n, p) = (case.n as i64, case.p as i64);
        let z = Tensor::from_slice(&case.features).view([n, p]);
        let s = ProCoLoss::new(case.p, case.tau).unwrap().contrast_logits(&z, &case.estimator).unwrap();
        let prior = case.prior.to_tensor(Kind::Double, z.device()).unwrap();
        let softmax = (&s.logits + prior).softmax(-1, Kind::Double);
        let got = Vec::<f64>::try_from(&softmax.flatten(0, -1)).unwrap();
        let want = case.nc("softmax_prob");
        for (a, b) in zip_exact(&got, &want, &format!("{} softmax", case.name)) {
            assert!((a - b).abs() <= 1e-10 * b.max(1e-3), "{}: softmax {a} vs {b}", case.name);
        }
        // d loss / d s = (softmax - onehot) / N, from our softmax.
        let want_grad = case.nc("grad_contrast_logits");
        for (k, (a, b)) in zip_exact(&got, &want_grad, &format!("{} grad_contrast_logits", case.name)).enumerate() {
            let onehot = f64::from(u8::from(case.labels[k / case.c] == (k % case.c) as i64));
            let g = (a - onehot) / case.n as f64;
            assert!((g - b).abs() <= 1e-10 * b.abs().max(1e-3 / case.n as f64), "{}: d loss/d s[{k}] {g} vs {b}", case.name);
        }
        let y = Tensor::from_slice(&case.labels);
        let per = proco::LogitAdjustedCe::new(case.prior.clone()).per_sample(&s.logits, &y).unwrap();
        let got = Vec::<f64>::try_from(&per).unwrap();
        let want = case.expected.get("per_sample_loss").vec(case.n);
        for (a, b) in zip_exact(&got, &want, &format!("{} per-sample loss", case.name)) {
            assert!((a - b).abs() <= 1e-10 * b.abs().max(1.0), "{}: per-sample loss {a} vs {b}", case.name);
        }
    }
}

/// The host pass's own kt, ratio and logits (its logits come from the per-class interpolants
/// where N >= 32, from exact evaluation otherwise) against the golden values, in f64.
#[test]
fn host_pass_logits_kt_and_ratio() {
    let golden = load("proco_loss_cases.json");
    for case in cases(&golden) {
        let loss_fn = ProCoLoss::new(case.p, case.tau).unwrap();
        let labels: Vec<usize> = case.labels.iter().map(|&l| l as usize).collect();
        let out = loss_fn.host_loss(&case.features, &labels, &case.estimator, &case.prior).unwrap();
        let (kt, ratio, logits) = (case.nc("kt"), case.nc("bessel_ratio"), case.nc("contrast_logits"));
        let (kappa, kappa_err) = (case.per_class("kappa"), case.kappa_err());
        for (what, got) in [("logits", out.logits.len()), ("kt", out.kt.len()), ("ratio", out.ratio.len())] {
            assert_eq!(got, kt.len(), "{}: host pass {what} has {got} values for N x C = {}", case.name, kt.len());
        }
        let nu = case.p as f64 / 2.0 - 1.0;
        for i in 0..kt.len() {
            let j = i % case.c;
            // kt is the norm of kappa mu + z / tau itself: a few ulps, plus kappa's conditioning.
            assert!((out.kt[i] - kt[i]).abs() <= 1e-15 * kt[i] + 1e-14 + kappa_err[j], "{} kt[{i}] {} vs {}", case.name, out.kt[i], kt[i]);
            // Interpolated ratios are within 16 ulps of max A (A <= 1) of the exact ones.
            assert!((out.ratio[i] - ratio[i]).abs() <= 1e-13 * ratio[i].max(0.05), "{} ratio[{i}] {} vs {}", case.name, out.ratio[i], ratio[i]);
            // As the device route's tolerance: the exact F values round at ulps of |F|.
            let f_scale = proco_vmf::log_bessel_i_minus_nu_log_x(nu, kt[i]).abs() + proco_vmf::log_bessel_i_minus_nu_log_x(nu, kappa[j]).abs();
            // kappa's own error moves s = F(kt) - F(kappa) by at most 2 kappa_err (|ds/dkappa| <= 2).
            let tol_s = 1e-15 * kt[i] + 8.0 * f64::EPSILON * f_scale + 1e-14 + 2.0 * kappa_err[j];
            assert!((out.logits[i] - logits[i]).abs() <= tol_s, "{} s[{i}] {} vs {}", case.name, out.logits[i], logits[i]);
        }
        let want_loss = case.expected.get("loss").f64();
        assert!((out.loss - want_loss).abs() <= 1e-10 * want_loss.abs(), "{} loss {} vs {want_loss}", case.name, out.loss);
    }
}
