//! A local launcher, as `torchrun --standalone --nproc-per-node N`: hosts the rendezvous store,
//! starts N copies of a command with torchrun's environment variables, and watches them.
//!
//! When a worker fails, the launcher records its exit in the store (so the other ranks can
//! name it in their errors), gives the others 10 s to notice and exit (a dead peer fails their
//! next collective at once), then kills whichever are left.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::{keys, Store};
use crate::error::{ProcoError, Result};

/// What to launch.
#[derive(Debug, Clone)]
pub struct LocalLaunch {
    /// Number of worker processes (ranks 0..nproc on this machine).
    pub nproc: usize,
    /// The worker program.
    pub program: PathBuf,
    /// Its arguments (the same for every rank).
    pub args: Vec<OsString>,
    /// Environment variables for every worker, beside torchrun's.
    pub env: Vec<(OsString, OsString)>,
    /// Port of the store (0: any free port).
    pub port: u16,
    /// How long the store waits for the workers to connect.
    pub timeout: Duration,
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    /// Its rank.
    pub rank: usize,
    /// Exit status as text ("exit status 1", "signal 9 (killed)").
    pub status: String,
    /// Whether it succeeded.
    pub success: bool,
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                9 => " (killed)",
                11 => " (segmentation fault)",
                6 => " (aborted)",
                15 => " (terminated)",
                2 => " (interrupted)",
                _ => "",
            };
            return format!("signal {sig}{name}");
        }
    }
    status.code().map_or_else(|| "unknown status".to_string(), |c| format!("exit status {c}"))
}

/// Runs the workers to completion. Succeeds when every worker exits 0.
///
/// # Errors
/// [`ProcoError::Distributed`] (rank: the first that failed) naming the failed rank and its
/// status; [`ProcoError::InvalidConfig`] for `nproc` 0 or a program that cannot start.
pub fn launch_local(launch: &LocalLaunch) -> Result<Vec<WorkerExit>> {
    if launch.nproc == 0 {
        return Err(ProcoError::InvalidConfig { reason: "the number of processes must be at least 1".into() });
    }
    let mut store = Store::serve("127.0.0.1", launch.port, launch.nproc, launch.timeout)
        .map_err(|e| ProcoError::InvalidConfig { reason: format!("cannot host the rendezvous store on 127.0.0.1:{} ({e}); choose another port", launch.port) })?;
    let port = store.port();
    let mut children: Vec<Option<Child>> = Vec::with_capacity(launch.nproc);
    for rank in 0..launch.nproc {
        let mut command = Command::new(&launch.program);
        // A worker dies with the launcher, whatever ends the launcher (as torchrun's workers
        // do): no orphan keeps training and writing the run directory.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches only the child's own state.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", launch.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", launch.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .spawn();
        match child {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                kill_all(&mut children);
                return Err(ProcoError::InvalidConfig { reason: format!("cannot start worker {rank} ({}): {e}", launch.program.display()) });
            }
        }
    }
    let mut exits: Vec<Option<WorkerExit>> = vec![None; launch.nproc];
    let mut first_failure: Option<(usize, Instant)> = None;
    // The others were given their collective timeout before this failure; a failed peer
    // fails their next collective at once, so a rank still running after this is stuck.
    let grace = Duration::from_secs(10);
    loop {
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                let text = describe(status);
                if !status.success() {
                    let _ = store.set(&keys::exit(0, rank), text.as_bytes());
                    first_failure.get_or_insert((rank, Instant::now()));
                }
                exits[rank] = Some(WorkerExit { rank, status: text, success: status.success() });
                *slot = None;
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if let Some((_, at)) = first_failure {
            if at.elapsed() > grace {
                for (rank, slot) in children.iter_mut().enumerate() {
                    if let Some(mut c) = slot.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                        exits[rank] = Some(WorkerExit { rank, status: format!("killed by the launcher {:.0} s after rank {} failed", grace.as_secs_f64(), first_failure.map_or(0, |f| f.0)), success: false });
                    }
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exits: Vec<WorkerExit> = exits.into_iter().enumerate().map(|(rank, e)| e.unwrap_or(WorkerExit { rank, status: "unknown".into(), success: false })).collect();
    if let Some((rank, _)) = first_failure {
        let others: Vec<String> = exits.iter().filter(|e| e.rank != rank).map(|e| format!("rank {}: {}", e.rank, e.status)).collect();
        return Err(ProcoError::Distributed {
            rank,
            reason: format!("worker failed with {} (the others: {}); see its error above", exits[rank].status, if others.is_empty() { "none".into() } else { others.join(", ") }),
        });
    }
    Ok(exits)
}

fn kill_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().filter_map(Option::take) {
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
}
