//! End to end through the real binary on real data: `proco train` on a slice of CIFAR-10-LT
//! for a few hundred steps must learn (test accuracy far above the 10% of chance, training loss
//! going down) and write its run directory; `proco eval` must read it back; bad input must fail
//! with a clear message. Needs CIFAR-10 under data/ (scripts/fetch-cifar10.sh, run by the test
//! command) or $PROCO_DATA_DIR.

use std::path::PathBuf;

mod support;
use support::{data_dir, proco, walk};

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn learns_on_a_real_cifar10_lt_slice() {
    let data = data_dir();
    assert!(data.join("cifar-10-batches-bin").is_dir(), "CIFAR-10 is needed under {} (run scripts/fetch-cifar10.sh)", data.display());
    let dir = run_dir("learn");
    // About 2000 long-tailed training images, batch 32: 62 steps per epoch, 5 epochs = 310 steps.
    // The size and batch come from a --config file (`limit` is an optional recipe field).
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.with_extension("toml");
    std::fs::write(&config, "limit = 2000\nbatch_size = 32\n").unwrap();
    let out = proco(&[
        "train", "--preset", "cifar10-lt-if100", "--epochs", "5", "--config", config.to_str().unwrap(),
        "--set", "lr=0.1", "--run-dir", dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "train failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");

    let saved: toml::Table = std::fs::read_to_string(dir.join("recipe.toml")).unwrap().parse().unwrap();
    assert_eq!((saved["limit"].as_integer(), saved["batch_size"].as_integer()), (Some(2000), Some(32)), "{saved}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    let ce: Vec<f64> = records.iter().map(|r| r["ce_loss_train"].as_f64().unwrap()).collect();
    // Epoch means of the classifier's CE: down by over 10% and never up by more than noise.
    assert!(ce[4] < 0.9 * ce[0], "training CE did not go down: {ce:?}");
    assert!(ce.windows(2).all(|w| w[1] < w[0] + 0.05), "training CE went up: {ce:?}");
    let best = records.iter().map(|r| r["val"]["top1"].as_f64().unwrap()).fold(0.0, f64::max);
    // 310 steps of 32 heavily augmented images (~10k samples) is where the authors' own run
    // sits at about 20% (their epoch 0-1 on the full set, ../shared/reference). On 2000 test
    // images chance is 10% +- 0.7%, so 18% is more than 10 standard deviations above it.
    assert!(best >= 18.0, "best test top-1 {best}% is not far above chance (10%)");

    let eval = proco(&["eval", "--checkpoint", dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&eval.stdout);
    assert!(eval.status.success() && text.contains("top-1") && text.contains("many") && text.contains("ECE"), "{text}\n{}", String::from_utf8_lossy(&eval.stderr));
    for f in ["reliability.svg", "per_class_accuracy.svg", "confusion_matrix.svg", "evaluation.json"] {
        assert!(dir.join("eval/test").join(f).is_file(), "eval wrote no {f}");
    }
    // Every epoch's metrics carry the calibration error of the selecting split.
    assert!(records.iter().all(|r| r["val_ece"].as_f64().is_some_and(|e| (0.0..=100.0).contains(&e))), "val_ece missing");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&config);
}

/// A tiny `limit` (set with `--set`) still keeps every class in the test slice (the limit cuts
/// by class, at least one image each), the run resumes and evaluates, and no file holds a
/// NaN. (A class without evaluation images is tested on an image folder in train_images.rs.)
#[test]
fn a_tiny_limit_keeps_every_class_and_survives_resume_and_eval() {
    let data = data_dir();
    let dir = run_dir("emptyclass");
    let (d, dd) = (dir.to_str().unwrap(), data.to_str().unwrap());
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--preset", "cifar10-lt-if100", "--epochs", "2", "--set", "limit=20", "--set", "batch_size=8", "--run-dir", d, "--data-dir", dd];
        args.extend_from_slice(extra);
        let out = proco(&args);
        assert!(out.status.success(), "train {extra:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    train(&["--stop-after", "1"]);
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    let per_class = first["val"]["per_class"].as_array().expect("per-class accuracies");
    assert_eq!(per_class.len(), 10);
    assert!(per_class.iter().all(|a| a.as_f64().is_some_and(|v| (0.0..=100.0).contains(&v))), "every class has a test image: {per_class:?}");
    train(&["--resume"]);
    let eval = proco(&["eval", "--checkpoint", d, "--data-dir", dd]);
    assert!(eval.status.success(), "eval failed: {}", String::from_utf8_lossy(&eval.stderr));
    for entry in walk(&dir) {
        if let Ok(text) = std::fs::read_to_string(&entry) {
            assert!(!text.contains("NaN") && !text.contains("nan"), "{} holds a NaN", entry.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_data_directory_is_a_clear_error() {
    let dir = run_dir("nodata");
    let out = proco(&["train", "--preset", "cifar10-lt-if100", "--data-dir", "/nonexistent/proco-data", "--run-dir", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/proco-data") && err.contains("fetch"), "{err}");
    let out = proco(&["train", "--preset", "no-such-preset"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cifar10-lt-if100"));
    let out = proco(&["train", "--set", "learning_rate=0.1", "--data-dir", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("learning_rate"));
    // `limit` is a recipe field like any other: accepted, so the run gets as far as the data.
    let out = proco(&["train", "--set", "limit=100", "--data-dir", "/nonexistent/proco-data", "--run-dir", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/proco-data") && !err.contains("unknown"), "{err}");
    let out = proco(&["train", "--device", "cuda:7", "--data-dir", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUDA"));
}
