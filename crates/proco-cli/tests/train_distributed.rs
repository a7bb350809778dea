//! Data-parallel training through the real binary on real CIFAR-10 (a small slice), 2 ranks on
//! Gloo over 127.0.0.1: `--nproc 2` trains and writes one run directory, a resume on 1 rank
//! continues it; killing or freezing a rank makes the other exit naming it, leaving a valid
//! checkpoint; ranks started with different recipes are refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{data_dir, proco};

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-dist-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `proco train` on 600 CIFAR-10-LT images, global batch 32.
fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let data = data_dir();
    let mut args: Vec<String> = ["train", "--preset", "cifar10-lt-if100", "--set", "limit=600", "--set", "batch_size=32", "--run-dir"].map(String::from).to_vec();
    args.push(dir.display().to_string());
    args.extend(["--data-dir".to_string(), data.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    proco(&args)
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The next epoch of the latest checkpoint, after checking that its files are complete.
fn checkpoint_epoch(dir: &Path) -> usize {
    let name = std::fs::read_to_string(dir.join("checkpoints/latest")).expect("a latest pointer");
    let ckpt = dir.join("checkpoints").join(name.trim());
    for f in ["model.safetensors", "optimizer.safetensors", "estimator.safetensors", "state.json"] {
        assert!(ckpt.join(f).is_file(), "{} lacks {f}", ckpt.display());
    }
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap()).unwrap();
    state["next_epoch"].as_u64().unwrap() as usize
}

#[test]
fn two_ranks_train_then_one_rank_resumes() {
    let dir = run_dir("resume");
    let out = run(&train_args(&dir, &["--epochs", "3", "--stop-after", "2", "--nproc", "2"]));
    let t = text(&out);
    assert!(out.status.success(), "2-rank training failed:\n{t}");
    // Only rank 0 prints and writes: one header, one line per epoch, one metrics record each.
    assert_eq!(t.matches("proco train:").count(), 1, "{t}");
    assert!(t.contains("2 ranks of batch 16"), "{t}");
    assert_eq!(t.matches("epoch   ").count(), 2, "{t}");
    assert_eq!(metrics(&dir).len(), 2);
    assert_eq!(checkpoint_epoch(&dir), 2);
    // Every image of every epoch: the 600-image slice holds 18 batches of 32.
    let seen: Vec<f64> = metrics(&dir).iter().map(|r| r["train_top1"].as_f64().unwrap()).collect();
    assert!(seen.iter().all(|a| (0.0..=100.0).contains(a)), "{seen:?}");

    let out = run(&train_args(&dir, &["--epochs", "3", "--resume"]));
    assert!(out.status.success(), "resume on 1 rank failed:\n{}", text(&out));
    let records = metrics(&dir);
    assert_eq!(records.iter().map(|r| r["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(checkpoint_epoch(&dir), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pid of the worker of `rank` among the children of `launcher` (by its RANK variable).
fn worker_pid(launcher: u32, rank: usize) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == format!("RANK={rank}").as_bytes()))
    })
}

/// Starts a 2-rank run and waits for its first checkpoint.
fn start_two_ranks(dir: &Path, extra: &[&str]) -> Child {
    let mut args = train_args(dir, &["--epochs", "30", "--nproc", "2"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_proco")).args(&args).env("RUST_BACKTRACE", "0").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !dir.join("checkpoints/latest").exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn killing_one_rank_stops_the_other_with_the_error_and_leaves_a_valid_checkpoint() {
    let dir = run_dir("kill");
    let child = start_two_ranks(&dir, &[]);
    let victim = worker_pid(child.id(), 1).expect("rank 1's process");
    signal(victim, "-KILL");
    let killed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "the launcher succeeded after a rank was killed:\n{t}");
    assert!(killed.elapsed() < Duration::from_secs(60), "took {:?} to stop", killed.elapsed());
    // Rank 0's own error names rank 1; the launcher reports it too.
    assert!(t.contains("rank 0:") && t.contains("rank 1 exited (signal 9 (killed))"), "{t}");
    assert!(t.contains("The last complete checkpoint is intact"), "{t}");
    // The checkpoint is complete and resumes on one rank.
    let next = checkpoint_epoch(&dir);
    let out = run(&train_args(&dir, &["--epochs", "30", "--resume", "--stop-after", &(next + 1).to_string()]));
    assert!(out.status.success(), "resume after the kill failed:\n{}", text(&out));
    assert_eq!(checkpoint_epoch(&dir), next + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_frozen_rank_is_named_within_the_timeout() {
    let dir = run_dir("freeze");
    let child = start_two_ranks(&dir, &["--dist-timeout", "8"]);
    let victim = worker_pid(child.id(), 1).expect("rank 1's process");
    signal(victim, "-STOP");
    let frozen = Instant::now();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    // 8 s timeout + a heartbeat's staleness + the launcher's 10 s before it kills the frozen rank.
    assert!(frozen.elapsed() < Duration::from_secs(40), "took {:?} to stop", frozen.elapsed());
    assert!(t.contains("rank 1 stopped responding"), "{t}");
    checkpoint_epoch(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_with_different_recipes_are_refused_at_start() {
    let dir = run_dir("disagree");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| {
            let lr = if rank == 0 { "lr=0.1" } else { "lr=0.2" };
            Command::new(env!("CARGO_BIN_EXE_proco"))
                .args(train_args(&dir, &["--epochs", "2", "--set", lr]))
                .envs([("RANK", rank.to_string()), ("WORLD_SIZE", "2".into()), ("MASTER_ADDR", "127.0.0.1".into()), ("MASTER_PORT", port.clone()), ("RUST_BACKTRACE", "0".into())])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "rank {rank} started:\n{t}");
        assert!(t.contains("rank(s) 1 have another recipe or other data than rank 0"), "rank {rank}:\n{t}");
    }
    assert!(metrics(&dir).is_empty(), "a refused run wrote metrics");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_that_does_not_split_over_the_ranks_is_refused() {
    let dir = run_dir("split");
    let out = run(&train_args(&dir, &["--epochs", "2", "--nproc", "3"]));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("batch_size 32 (the global batch) does not divide by the 3 ranks"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// torchrun (from the project's environment, where the test command runs) starts the binary as
/// its workers: they read its variables and use its agent's store.
#[test]
fn torchrun_starts_the_binary_as_its_ranks() {
    let Some(venv) = std::env::var_os("VIRTUAL_ENV") else {
        eprintln!("no VIRTUAL_ENV: run through scripts/test.sh for torchrun");
        return;
    };
    let torchrun = PathBuf::from(venv).join("bin/torchrun");
    assert!(torchrun.is_file(), "{} is missing: the project's environment has torch, which ships torchrun", torchrun.display());
    let dir = run_dir("torchrun");
    let out = Command::new(&torchrun)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python", env!("CARGO_BIN_EXE_proco")])
        .args(train_args(&dir, &["--epochs", "1"]))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "torchrun failed:\n{t}");
    assert!(t.contains("2 ranks of batch 16"), "{t}");
    assert_eq!(metrics(&dir).len(), 1);
    assert_eq!(checkpoint_epoch(&dir), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
