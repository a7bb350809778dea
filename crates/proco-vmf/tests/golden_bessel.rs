//! log_bessel_i and bessel_ratio against every entry of `bessel.json`: every point of every
//! order of the table and every extra point, whatever their number.

mod support;

use proco_vmf::{bessel_ratio, log_bessel_i, log_bessel_i_minus_nu_log_x};
use support::{load, At};

const TOL: f64 = 1e-13;

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs()
    }
}

/// The three checked fields of one (nu, x) point, in the order of `worst`.
const FIELDS: [&str; 3] = ["logI", "logI_minus_nu_logx", "ratio"];

/// Checks one (nu, x) point against its golden values; panics past the tolerance.
fn check_point(nu: f64, x: f64, want: [f64; 3], here: &str, worst: &mut [f64; 3]) {
    let got = [log_bessel_i(nu, x), log_bessel_i_minus_nu_log_x(nu, x), bessel_ratio(nu, x)];
    for (slot, field) in FIELDS.iter().enumerate() {
        assert!(want[slot].is_finite(), "{here}: golden {field} at nu={nu}, x={x} is not finite");
        let e = rel(got[slot], want[slot]);
        assert!(e <= TOL, "{here}: {field}(nu={nu}, x={x}) = {:e}, golden {:e}, relative error {e:e}", got[slot], want[slot]);
        worst[slot] = worst[slot].max(e);
    }
    assert!((0.0..1.0).contains(&got[2]), "{here}: ratio(nu={nu}, x={x}) = {} outside [0,1)", got[2]);
}

#[test]
fn every_table_entry_within_1e13() {
    let golden = load("bessel.json");
    let (mut worst, mut points) = ([0.0; 3], 0);
    for row in golden.at().get("table").items() {
        let nu = row.get("nu").f64();
        let xs = row.get("x").vec_any();
        let columns = FIELDS.map(|field| row.get(field).vec(xs.len()));
        for (i, &x) in xs.iter().enumerate() {
            check_point(nu, x, [columns[0][i], columns[1][i], columns[2][i]], &format!("{} x[{i}]", row.here()), &mut worst);
            points += 1;
        }
    }
    eprintln!("bessel.json table: {points} points, worst relative error logI {:e}, scaled {:e}, ratio {:e}", worst[0], worst[1], worst[2]);
}

#[test]
fn every_extra_point_within_1e13() {
    let golden = load("bessel.json");
    let mut worst = [0.0; 3];
    let extra = golden.at().get("extra_points").items();
    for e in &extra {
        let want = FIELDS.map(|field| e.get(field).f64());
        check_point(e.get("nu").f64(), e.get("x").f64(), want, &e.here(), &mut worst);
    }
    eprintln!("bessel.json extra points: {}, worst relative error {worst:?}", extra.len());
}

/// The accessors the golden tests rely on refuse what they must refuse.
#[test]
fn golden_accessors_refuse_missing_and_short_fields() {
    let root: serde_json::Value = serde_json::json!({ "cases": [], "row": [1.0, 2.0], "m": [[1.0], [2.0, 3.0]] });
    let g = support::Golden { name: "inline".into(), root };
    let at: At = g.at();
    let fails = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    assert!(fails(&|| drop(at.get("cases").items())), "an empty case list must fail");
    assert!(fails(&|| drop(at.get("absent"))), "a missing field must fail");
    assert!(fails(&|| drop(at.get("row").vec(3))), "a short vector must fail");
    assert!(fails(&|| drop(at.get("m").matrix(2, 1))), "a ragged matrix must fail");
    assert!(fails(&|| { support::zip_exact(&[1, 2], &[1], "lengths").count(); }), "unequal lengths must fail");
    assert_eq!(at.get("row").vec(2), [1.0, 2.0]);
}

/// PROCO_GOLDEN_DIR: absolute as given, relative from the caller's directory (PWD), unset or
/// empty the repository's golden/.
#[test]
fn golden_dir_is_resolved_from_the_callers_directory() {
    use support::resolve_golden_dir;
    let tmp = std::env::temp_dir();
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(resolve_golden_dir(os("/some/set"), os(tmp.to_str().unwrap())), std::path::PathBuf::from("/some/set"));
    assert_eq!(resolve_golden_dir(os("../shared/golden"), os(tmp.to_str().unwrap())), tmp.join("../shared/golden"));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../golden");
    assert_eq!(resolve_golden_dir(None, os("/")), repo);
    assert_eq!(resolve_golden_dir(os(""), os("/")), repo);
    // A PWD that is not an absolute directory falls back to the working directory.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(resolve_golden_dir(os("set"), os("relative/pwd")), cwd.join("set"));
}
