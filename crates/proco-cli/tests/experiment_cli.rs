//! `proco experiment batch-size` through the real binary on a slice of real CIFAR-10-LT: a
//! tiny grid writes its table, CSV and chart; a second call with more batch sizes reuses the
//! finished cells instead of training them again; bad lists are refused clearly.

use std::path::PathBuf;

mod support;
use support::{data_dir, proco};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn grid(out: &PathBuf, batch_sizes: &str) -> String {
    let data = data_dir();
    let args = [
        "experiment", "batch-size", "--dataset", "cifar10", "--imbalance", "100", "--batch-sizes", batch_sizes, "--methods", "proco,supcon",
        "--epochs", "1", "--linear-epochs", "1", "--limit", "200", "--set", "linear_batch_size=32", "--out", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap(),
    ];
    let run = proco(&args);
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "experiment failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    stdout
}

#[test]
fn a_tiny_grid_writes_its_table_and_chart_and_resumes_by_cell() {
    let out = out_dir("grid");
    let first = grid(&out, "16");
    assert!(first.contains("[1/2 proco b16]") && first.contains("[2/2 supcon b16]"), "{first}");
    let lines_before = std::fs::read_to_string(out.join("proco-b16/metrics.jsonl")).unwrap();

    // More batch sizes: the b16 cells are found finished and read back, b8 is trained.
    let second = grid(&out, "8,16");
    assert!(second.contains("proco-b16 (2 epochs done)") && second.contains("proco-b8 (starting)"), "{second}");
    assert_eq!(std::fs::read_to_string(out.join("proco-b16/metrics.jsonl")).unwrap(), lines_before, "a finished cell is not trained again");

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for r in &rows {
        let top1: f64 = r[3].parse().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{csv}");
        // lr scales with the batch from 0.3 at 256.
        let (b, lr): (f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        assert!((lr - 0.3 * b / 256.0).abs() < 1e-12, "{csv}");
    }
    assert_eq!(rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(), [("proco", "8"), ("proco", "16"), ("supcon", "8"), ("supcon", "16")]);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| method | 8 | 16 |") && md.contains("| proco |") && md.contains("| supcon |"), "{md}");
    let svg = std::fs::read_to_string(out.join("accuracy_vs_batch_size.svg")).unwrap();
    assert!(svg.contains("stage-1 batch size") && svg.contains("supcon"), "chart without axis title or legend");
    // Other settings in the same directory are refused, not mixed in.
    let data = data_dir();
    let other = proco(&["experiment", "batch-size", "--dataset", "cifar10", "--batch-sizes", "8", "--methods", "proco", "--epochs", "2", "--linear-epochs", "1", "--limit", "200", "--set", "linear_batch_size=32", "--out", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("recipe differs"), "{err}");
    // Each cell is a two-stage run: stage 1 is not evaluated, the linear stage is.
    let cell = std::fs::read_to_string(out.join("supcon-b8/metrics.jsonl")).unwrap();
    let stages: Vec<serde_json::Value> = cell.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stages.iter().map(|r| r["stage"].as_str().unwrap()).collect::<Vec<_>>(), ["representation", "linear"]);
    assert!(stages[0].get("val").is_none() && stages[1]["val"]["top1"].is_number());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_grids_are_refused_clearly() {
    let out = out_dir("badgrid");
    let data = data_dir();
    let (o, d) = (out.to_str().unwrap(), data.to_str().unwrap());
    for (args, expect) in [
        (vec!["--methods", "proco,none"], "method none"),
        (vec!["--methods", "simclr"], "unknown method `simclr`"),
        (vec!["--batch-sizes", "1,32"], "at least 2 samples"),
        (vec!["--batch-sizes", "32,32"], "listed twice"),
    ] {
        let mut all = vec!["experiment", "batch-size", "--dataset", "cifar10", "--epochs", "1", "--out", o, "--data-dir", d];
        all.extend(args);
        let run = proco(&all);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(expect), "expected `{expect}`: {err}");
    }
}
