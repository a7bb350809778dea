//! Our TensorBoard event files read by TensorBoard's own reader (the `tensorboard` Python
//! package, installed into .venv by scripts/test.sh): every record's CRCs, the file version,
//! and each scalar's tag, step and value as TensorBoard shows them.

use std::process::Command;

use proco::train::events::TensorBoardWriter;

#[path = "common/python.rs"]
mod python;
use python::python;

/// Reads every event file in `dir` with TensorBoard's loader and accumulator, and prints one
/// JSON object: the file-version strings and, per scalar tag, its (step, value) pairs.
const READER: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d = sys.argv[1]
versions = []
for name in sorted(os.listdir(d)):
    if name.startswith("events.out.tfevents"):
        for event in EventFileLoader(os.path.join(d, name)).Load():
            if event.HasField("file_version"):
                versions.append(event.file_version)
acc = EventAccumulator(d, size_guidance={"scalars": 0})
acc.Reload()
scalars = {tag: [[s.step, s.value] for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps({"versions": versions, "scalars": scalars}))
"#;

fn read_with_tensorboard(dir: &std::path::Path) -> serde_json::Value {
    let out = Command::new(python()).arg("-c").arg(READER).arg(dir).output().unwrap_or_else(|e| {
        panic!("{} could not run ({e}); scripts/test.sh installs the tensorboard package into .venv", python().display())
    });
    assert!(out.status.success(), "TensorBoard's reader failed (is the tensorboard package installed? scripts/test.sh installs it):\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("reader output is JSON")
}

#[test]
fn tensorboard_reads_our_scalars() {
    let dir = std::env::temp_dir().join(format!("proco-tb-reader-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = TensorBoardWriter::create(&dir).unwrap();
    // Values exactly representable in f32, so TensorBoard's float32 is the written value.
    let epochs: [(i64, [f64; 3]); 3] = [(0, [12.5, 1.75, 0.3]), (1, [25.25, 1.5, 0.3]), (7, [-3.0, 1e-3_f32 as f64, 0.0])];
    for (step, [acc, loss, lr]) in epochs {
        w.scalars(step, &[("acc/val_top1", acc), ("loss/ce_train", loss), ("lr", lr), ("acc/val_few", f64::NAN)]).unwrap();
    }
    drop(w);
    let read = read_with_tensorboard(&dir);
    assert_eq!(read["versions"], serde_json::json!(["brain.Event:2"]), "{read}");
    let scalars = read["scalars"].as_object().expect("scalars");
    let mut tags: Vec<&str> = scalars.keys().map(String::as_str).collect();
    tags.sort_unstable();
    // The NaN one is left out, not written as a value.
    assert_eq!(tags, ["acc/val_top1", "loss/ce_train", "lr"], "{read}");
    for (k, tag) in ["acc/val_top1", "loss/ce_train", "lr"].iter().enumerate() {
        let series = scalars[*tag].as_array().unwrap();
        assert_eq!(series.len(), epochs.len(), "{tag}: {series:?}");
        for ((step, values), point) in epochs.iter().zip(series) {
            assert_eq!(point[0].as_i64(), Some(*step), "{tag}");
            assert_eq!(point[1].as_f64(), Some(values[k] as f32 as f64), "{tag} at step {step}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
