//! The authors' checkpoint layout loads into our networks with the same outputs, and no
//! pickle code ever runs. `bench/write_authors_checkpoint.py` writes the checkpoints with
//! `torch.save` from PyTorch models with the authors' parameter names, and the eval-mode
//! logits and projection features of a fixed batch; a second script writes malicious ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use proco::import::read_authors_checkpoint;
use proco::model::{Arch, ClassifierKind};
use proco::tch::{Device, Tensor};

#[path = "common/python.rs"]
mod python;
use python::python;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_python(args: &[&str]) {
    let out = Command::new(python()).args(args).output().expect("the project's Python (.venv, from scripts/setup.sh)");
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn floats(v: &serde_json::Value, key: &str) -> Vec<f64> {
    v[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn check_arch(dir: &Path, arch: &str, want_arch: Arch) {
    let path = dir.join(format!("{arch}.pth.tar"));
    let facts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{arch}.json"))).unwrap()).unwrap();
    let ckpt = read_authors_checkpoint(&path).unwrap();
    assert_eq!(ckpt.config.arch, want_arch);
    assert_eq!(ckpt.num_classes as u64, facts["num_classes"].as_u64().unwrap());
    assert_eq!(ckpt.config.feature_dim as u64, facts["feature_dim"].as_u64().unwrap());
    assert_eq!(ckpt.config.hidden_dim as u64, facts["hidden_dim"].as_u64().unwrap());
    assert_eq!(ckpt.config.classifier == ClassifierKind::Normed, facts["normed"].as_bool().unwrap());
    assert_eq!(ckpt.epoch, Some(200));
    assert_eq!(ckpt.best_acc1, Some(facts["best_acc1"].as_f64().unwrap()));
    assert_eq!(ckpt.arch_name.as_deref(), Some(arch));
    // The pickled loss object is recorded by name and never imported.
    assert!(ckpt.opaque_globals.iter().any(|g| g == "__main__.ProCoLoss"), "{:?}", ckpt.opaque_globals);
    assert!(!ckpt.skipped.is_empty() && ckpt.skipped.iter().all(|k| k.ends_with("num_batches_tracked")));
    let keys: Vec<&str> = ckpt.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["epoch", "arch", "state_dict", "best_acc1", "optimizer", "criterion_scl"]);

    let net = ckpt.network(Device::Cpu, &path).unwrap();
    let shape: Vec<i64> = facts["input_shape"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let x = Tensor::from_slice(&floats(&facts, "input").iter().map(|&v| v as f32).collect::<Vec<f32>>()).view(shape.as_slice());
    let (z, logits) = proco::tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    for (got, key) in [(logits, "logits"), (z, "features")] {
        let got = Vec::<f64>::try_from(got.to_kind(proco::tch::Kind::Double).flatten(0, -1)).unwrap();
        let want = floats(&facts, key);
        assert_eq!(got.len(), want.len(), "{arch} {key}");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        // f32 through 32 or 50 layers: agreement to 1e-4 of the largest value.
        assert!(worst <= 1e-4 * scale.max(1.0), "{arch} {key}: max |ours - PyTorch| = {worst} (scale {scale})");
        eprintln!("{arch} {key}: max |ours - PyTorch| {worst:.2e} of {scale:.3}");
    }
}

#[test]
fn the_authors_resnet32_checkpoint_gives_pytorchs_outputs() {
    let dir = temp("r32");
    run_python(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/write_authors_checkpoint.py"), dir.to_str().unwrap(), "resnet32"]);
    check_arch(&dir, "resnet32", Arch::Resnet32);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_authors_resnet50_and_resnext50_checkpoints_give_pytorchs_outputs() {
    let dir = temp("r50");
    run_python(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/write_authors_checkpoint.py"), dir.to_str().unwrap(), "resnet50", "resnext50"]);
    check_arch(&dir, "resnet50", Arch::Resnet50);
    check_arch(&dir, "resnext50", Arch::Resnext50);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Malicious checkpoints written with torch.save: an object whose `__reduce__` is
/// `os.system("touch MARKER")`, alone and as the state_dict; and a state_dict holding one.
const MALICIOUS: &str = r#"
import os, sys, torch
marker = sys.argv[2]
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))
d = sys.argv[1]
torch.save(Payload(), f"{d}/bare.pth.tar")
torch.save({"state_dict": Payload(), "best_acc1": 1.0}, f"{d}/as_state_dict.pth.tar")
torch.save({"state_dict": {"module.fc.weight": Payload()}}, f"{d}/in_state_dict.pth.tar")
torch.save({"model": {}}, f"{d}/no_state_dict.pth.tar")
# One stored element viewed as 2^34 (stride 0): building it would take 64 GiB.
torch.save({"state_dict": {"module.fc.weight": torch.zeros(1).expand(2**34)}}, f"{d}/expanded.pth.tar")
with open(f"{d}/not_a_zip.pth.tar", "wb") as f:
    f.write(b"\x80\x02}q\x00.")
"#;

#[test]
fn malicious_pickles_run_nothing_and_say_what_they_hold() {
    let dir = temp("evil");
    let marker = dir.join("MARKER");
    run_python(&["-c", MALICIOUS, dir.to_str().unwrap(), marker.to_str().unwrap()]);
    let err = |name: &str| read_authors_checkpoint(&dir.join(name)).unwrap_err().to_string();
    let bare = err("bare.pth.tar");
    assert!(bare.contains("instead of a dict") && bare.contains("posix.system") && bare.contains("never imported or called"), "{bare}");
    let as_sd = err("as_state_dict.pth.tar");
    assert!(as_sd.contains("state_dict is an object of posix.system"), "{as_sd}");
    let in_sd = err("in_state_dict.pth.tar");
    assert!(in_sd.contains("module.fc.weight") && in_sd.contains("not a tensor") && in_sd.contains("posix.system"), "{in_sd}");
    let none = err("no_state_dict.pth.tar");
    assert!(none.contains("has no state_dict") && none.contains("model"), "{none}");
    let expanded = err("expanded.pth.tar");
    assert!(expanded.contains("does not fit its storage"), "{expanded}");
    let legacy = err("not_a_zip.pth.tar");
    assert!(legacy.contains("not a torch zip archive"), "{legacy}");
    assert!(!marker.exists(), "pickle code ran: {} exists", marker.display());
    let _ = std::fs::remove_dir_all(&dir);
}
