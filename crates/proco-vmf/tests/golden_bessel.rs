//! log_bessel_i and bessel_ratio against every finite 50-digit entry of `bessel.json`.

mod support;

use proco_vmf::{bessel_ratio, log_bessel_i, log_bessel_i_minus_nu_log_x};
use support::{f, load, vec1};

const TOL: f64 = 1e-13;

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs()
    }
}

/// Checks one (nu, x) point; returns the worst relative error seen, panics past the tolerance.
fn check_point(nu: f64, x: f64, entry: &dyn Fn(&str) -> f64, worst: &mut [f64; 3]) {
    let cases = [
        ("logI", log_bessel_i(nu, x)),
        ("logI_minus_nu_logx", log_bessel_i_minus_nu_log_x(nu, x)),
        ("ratio", bessel_ratio(nu, x)),
    ];
    for (slot, (field, got)) in cases.into_iter().enumerate() {
        let want = entry(field);
        assert!(want.is_finite(), "golden {field} at nu={nu}, x={x} is not finite");
        let e = rel(got, want);
        assert!(e <= TOL, "{field}(nu={nu}, x={x}) = {got:e}, golden {want:e}, relative error {e:e}");
        worst[slot] = worst[slot].max(e);
    }
    let r = bessel_ratio(nu, x);
    assert!((0.0..1.0).contains(&r), "ratio(nu={nu}, x={x}) = {r} outside [0,1)");
}

#[test]
fn every_table_entry_within_1e13() {
    let golden = load("bessel.json");
    let table = golden["table"].as_array().expect("table");
    assert_eq!(table.len(), 10, "expected the 10 orders of the golden README");
    let mut worst = [0.0; 3];
    let mut n = 0;
    for row in table {
        let nu = f(&row["nu"]);
        let xs = vec1(&row["x"]);
        for (i, &x) in xs.iter().enumerate() {
            check_point(nu, x, &|field| f(&row[field][i]), &mut worst);
            n += 1;
        }
    }
    assert_eq!(n, 410);
    eprintln!("bessel.json table: {n} points, worst relative error logI {:e}, scaled {:e}, ratio {:e}", worst[0], worst[1], worst[2]);
}

#[test]
fn every_extra_point_within_1e13() {
    let golden = load("bessel.json");
    let extra = golden["extra_points"].as_array().expect("extra_points");
    assert!(!extra.is_empty());
    let mut worst = [0.0; 3];
    for e in extra {
        check_point(f(&e["nu"]), f(&e["x"]), &|field| f(&e[field]), &mut worst);
    }
    eprintln!("bessel.json extra points: {}, worst relative error {:?}", extra.len(), worst);
}
