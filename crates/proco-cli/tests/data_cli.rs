//! `proco data show` and `proco data fetch` through the real binary.

use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> PathBuf {
    std::env::var_os("PROCO_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

fn proco(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proco")).args(args).env("RUST_BACKTRACE", "0").output().expect("the proco binary runs")
}

#[test]
fn show_prints_the_histogram_and_draws_it() {
    let png = std::env::temp_dir().join(format!("proco-hist-{}.png", std::process::id()));
    let data = data_dir();
    let out = proco(&["data", "show", "--dataset", "cifar10", "--imbalance", "100", "--data-dir", data.to_str().unwrap(), "--png", png.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("12406 images in 10 classes"), "{text}");
    assert!(text.contains("airplane") && text.contains("5000") && text.contains("truck") && text.contains("50 "), "{text}");
    assert!(text.contains("many-shot (>100): 8 classes, medium (20-100): 2, few (<20): 0"), "{text}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_file(&png).unwrap();
}

#[test]
fn fetch_names_the_known_archives() {
    let out = proco(&["data", "fetch", "--archive", "cifar1000", "--data-dir", "/nonexistent"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cifar10-binary") && err.contains("cifar100-python"), "{err}");
}
