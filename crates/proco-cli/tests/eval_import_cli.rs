//! `proco eval --import` through the real binary: one of the authors' checkpoint layouts
//! (written by bench/write_authors_checkpoint.py with torch.save) is evaluated on real
//! CIFAR-10 and reported with its figures; a malicious one runs nothing and is refused.

use std::path::PathBuf;
use std::process::Command;

mod support;
use support::{data_dir, proco};

fn python() -> PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    venv.join("bin/python")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn an_authors_checkpoint_is_evaluated_with_its_figures() {
    let dir = temp("import");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/write_authors_checkpoint.py");
    let out = Command::new(python()).args([script, dir.to_str().unwrap(), "resnet32"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join("resnet32.pth.tar");
    let data = data_dir();
    let run = proco(&["eval", "--import", file.to_str().unwrap(), "--dataset", "cifar10", "--data-dir", data.to_str().unwrap(), "--out", dir.join("eval").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}\n{}", String::from_utf8_lossy(&run.stderr));
    for want in ["Resnet32", "best_acc1 41.25", "__main__.ProCoLoss", "test (10000 images): top-1", "many", "ECE", "most frequent confusions"] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    for f in ["reliability.svg", "per_class_accuracy.svg", "confusion_matrix.svg", "evaluation.json"] {
        assert!(dir.join("eval/test").join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval/test/evaluation.json")).unwrap()).unwrap();
    assert_eq!(report["class_names"][0], "airplane");
    assert_eq!(report["calibration"]["bins"].as_array().unwrap().len(), 15);
    let total: u64 = report["confusion"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, 10000);

    // The wrong dataset for its classifier, and a missing --dataset, are clear errors.
    let wrong = proco(&["eval", "--import", file.to_str().unwrap(), "--dataset", "cifar100", "--data-dir", "/nonexistent"]);
    assert!(!wrong.status.success());
    let bare = proco(&["eval", "--import", file.to_str().unwrap()]);
    assert!(!bare.status.success() && String::from_utf8_lossy(&bare.stderr).contains("--dataset"));

    // A pickle that would run os.system: nothing runs, and the error says what it holds.
    let marker = dir.join("MARKER");
    let evil = dir.join("evil.pth.tar");
    let code = format!("import os, torch\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch {}',))\ntorch.save({{'state_dict': P()}}, '{}')", marker.display(), evil.display());
    assert!(Command::new(python()).args(["-c", &code]).status().unwrap().success());
    let run = proco(&["eval", "--import", evil.to_str().unwrap(), "--dataset", "cifar10", "--data-dir", data.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("posix.system") && err.contains("never imported or called"), "{err}");
    assert!(!marker.exists(), "pickle code ran");
    let _ = std::fs::remove_dir_all(&dir);
}
