//! Data-parallel training on torch.distributed's c10d engine: TCPStore rendezvous and
//! ProcessGroupGloo (CPU) or ProcessGroupNCCL (one GPU per rank), through the C++ shim in
//! `csrc/distributed.cpp`.
//!
//! Semantics (see [`crate::train::train`]): the recipe's batch is the global batch; rank r
//! takes the r-th slice of every global batch; gradients are averaged over ranks; the vMF
//! estimators are updated from the all-reduced per-class sums and counts, so every rank holds
//! the single-process estimator of the union batch; BatchNorm normalises with each rank's own
//! batch statistics and its running statistics follow rank 0's (DDP's defaults).
//!
//! Failure: every collective fails after the group's timeout. A rank that sees a collective
//! fail names the rank at fault from what the others publish in the store: an exit status
//! written by the launcher, a heartbeat that stopped (a killed or frozen process), or a
//! collective count that fell behind (a rank that hangs).

pub mod c10d;
pub mod launch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tch::{Device, Tensor};

pub use c10d::{Backend, ProcessGroup, ReduceOp, Store};

use crate::error::{ProcoError, Result};
use crate::estimator::BatchStatistics;

/// How often each rank publishes its heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A heartbeat older than this marks its rank as gone.
const HEARTBEAT_STALE: Duration = Duration::from_millis(2500);

/// Where this process sits in a data-parallel job, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldSpec {
    /// Global rank, 0..world_size.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank within this machine (selects the GPU).
    pub local_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// Whether the store is hosted by the launcher (torchrun's agent, the local launcher)
    /// rather than by rank 0.
    pub agent_store: bool,
    /// The launcher's restart count (TORCHELASTIC_RESTART_COUNT, 0 without one): the store
    /// keys of each attempt are apart, so a restarted job never meets a dead attempt's.
    pub attempt: u32,
}

impl WorldSpec {
    /// The job described by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    /// MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE), or `None` without WORLD_SIZE.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a missing or malformed variable.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let bad = |k: &str, v: &str, want: &str| ProcoError::InvalidConfig { reason: format!("the environment variable {k}={v:?} is not {want} (set by torchrun or another launcher)") };
        let number = |k: &str| -> Result<usize> {
            let v = var(k).ok_or_else(|| ProcoError::InvalidConfig { reason: format!("WORLD_SIZE is set but {k} is not; start the ranks with torchrun or a launcher that sets both") })?;
            v.trim().parse().map_err(|_| bad(k, &v, "a non-negative integer"))
        };
        let world_size = world.trim().parse::<usize>().map_err(|_| bad("WORLD_SIZE", &world, "a positive integer"))?;
        let rank = number("RANK")?;
        let local_rank = if var("LOCAL_RANK").is_some() { number("LOCAL_RANK")? } else { rank };
        if world_size == 0 || rank >= world_size {
            return Err(ProcoError::InvalidConfig { reason: format!("RANK {rank} is outside 0..WORLD_SIZE {world_size}") });
        }
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port.trim().parse::<u16>().map_err(|_| bad("MASTER_PORT", &port, "a port number"))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let attempt = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => v.trim().parse().map_err(|_| bad("TORCHELASTIC_RESTART_COUNT", &v, "a non-negative integer"))?,
            None => 0,
        };
        Ok(Some(Self { rank, world_size, local_rank, master_addr, master_port, agent_store, attempt }))
    }
}

/// Store keys shared by the ranks and the launcher.
pub(crate) mod keys {
    /// The launcher's record of rank r's exit in `attempt` (its status, as text).
    pub fn exit(attempt: u32, rank: usize) -> String {
        format!("proco/{attempt}/exit/{rank}")
    }
    /// Rank r's heartbeat: "<unix milliseconds> <collectives started>".
    pub fn heartbeat(attempt: u32, rank: usize) -> String {
        format!("proco/{attempt}/heartbeat/{rank}")
    }
    /// The prefix of the process group's own keys.
    pub fn group(attempt: u32) -> String {
        format!("proco/{attempt}/pg/")
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The thread that publishes this rank's heartbeat through its own store client.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(mut store: Store, attempt: u32, rank: usize, collectives: Arc<AtomicU64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("proco-heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    let beat = format!("{} {}", unix_ms(), collectives.load(Ordering::SeqCst));
                    if store.set(&keys::heartbeat(attempt, rank), beat.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(HEARTBEAT);
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the store tells about the other ranks after a failed collective.
enum Fault {
    /// A rank exited, stopped its heartbeat or never started.
    Gone(String),
    /// Ranks alive but behind this one.
    Behind(String),
    /// Nothing known.
    None,
}

/// This process's membership of a data-parallel job: the process group, a store client
/// for diagnosis, and the heartbeat.
pub struct Distributed {
    spec: WorldSpec,
    timeout: Duration,
    group: Option<ProcessGroup>,
    store: Store,
    collectives: Arc<AtomicU64>,
    _heartbeat: Heartbeat,
    failed: bool,
    time: CollectiveTime,
    /// Where host values travel for a collective: CPU for Gloo, the rank's GPU for NCCL.
    device: Device,
}

/// Wall time spent in collectives since the group formed, waiting for slower ranks included.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectiveTime {
    /// Every collective.
    pub all: Duration,
    /// The gradient all-reduce of [`Distributed::average_gradients`] (flattening and copying
    /// back included).
    pub gradients: Duration,
}

impl Distributed {
    /// Joins the job: connects to (or, as rank 0 without a launcher's store, hosts) the store,
    /// starts the heartbeat and creates the process group. Collectives fail after `timeout`;
    /// rendezvous waits as long for the other ranks.
    ///
    /// # Errors
    /// [`ProcoError::Distributed`] when the store is unreachable or the group cannot form.
    pub fn join(spec: &WorldSpec, backend: Backend, timeout: Duration) -> Result<Self> {
        let err = |reason: String| ProcoError::Distributed { rank: spec.rank, reason };
        let (addr, port) = (spec.master_addr.as_str(), spec.master_port);
        let mut store = if spec.rank == 0 && !spec.agent_store {
            Store::serve(addr, port, spec.world_size, timeout)
        } else {
            Store::connect(addr, port, timeout)
        }
        .map_err(|e| err(format!("cannot reach the rendezvous store at {addr}:{port} ({e}); check MASTER_ADDR / MASTER_PORT and that rank 0 or the launcher runs")))?;
        let beat_store = Store::connect(addr, port, timeout).map_err(|e| err(format!("a second connection to the store at {addr}:{port} failed ({e})")))?;
        let collectives = Arc::new(AtomicU64::new(0));
        let heartbeat = Heartbeat::start(beat_store, spec.attempt, spec.rank, collectives.clone());
        let group = ProcessGroup::new(&mut store, &keys::group(spec.attempt), backend, spec.rank, spec.world_size, timeout)
            .map_err(|e| err(format!("the {backend:?} process group of {} ranks did not form ({e})", spec.world_size)))?;
        Ok(Self { spec: spec.clone(), timeout, group: Some(group), store, collectives, _heartbeat: heartbeat, failed: false, time: CollectiveTime::default(), device: collective_device(backend) })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.spec.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.spec.world_size
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time spent in collectives so far.
    pub fn collective_time(&self) -> CollectiveTime {
        self.time
    }

    fn run(&mut self, what: &str, f: impl FnOnce(&mut ProcessGroup) -> std::result::Result<(), String>) -> Result<()> {
        if self.failed {
            return Err(ProcoError::Distributed { rank: self.spec.rank, reason: format!("{what}: an earlier collective failed, so this group is unusable") });
        }
        self.collectives.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let Some(group) = self.group.as_mut() else { unreachable!("the group lives until drop") };
        let outcome = f(group);
        self.time.all += started.elapsed();
        match outcome {
            Ok(()) => Ok(()),
            Err(message) => {
                self.failed = true;
                Err(self.diagnose(what, &message, started.elapsed()))
            }
        }
    }

    /// All-reduces each tensor in place (same shapes and order on every rank).
    pub fn all_reduce(&mut self, tensors: &mut [Tensor], op: ReduceOp) -> Result<()> {
        self.run("all-reduce", |g| g.all_reduce(tensors, op))
    }

    /// Overwrites each tensor with rank `root`'s.
    pub fn broadcast(&mut self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        self.run("broadcast", |g| g.broadcast(tensors, root))
    }

    /// Waits for every rank.
    pub fn barrier(&mut self) -> Result<()> {
        self.run("barrier", |g| g.barrier())
    }

    /// Names what went wrong after a failed collective: a rank the launcher saw exit, a rank
    /// whose heartbeat stopped, a rank that fell behind, or the store itself being gone.
    fn diagnose(&mut self, what: &str, message: &str, waited: Duration) -> ProcoError {
        let (me, world) = (self.spec.rank, self.spec.world_size);
        let mine = self.collectives.load(Ordering::SeqCst);
        // A peer that just died may still have a fresh heartbeat: give it time to go stale.
        let deadline = Instant::now() + HEARTBEAT_STALE + HEARTBEAT;
        let reason = loop {
            match self.find_fault(me, world, mine) {
                // An exit or a stopped heartbeat is certain; a rank behind may just be about
                // to show one of them (its exit is recorded by the launcher a moment later).
                Ok(Fault::Gone(fault)) => break fault,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(HEARTBEAT / 2),
                Ok(Fault::Behind(fault)) => break fault,
                Ok(Fault::None) => break "no other rank is known to have failed".to_string(),
                Err(e) => {
                    break format!(
                        "the rendezvous store at {}:{} is unreachable too ({e}); it is hosted by {}, which has probably exited",
                        self.spec.master_addr,
                        self.spec.master_port,
                        if self.spec.agent_store { "the launcher" } else { "rank 0" }
                    )
                }
            }
        };
        ProcoError::Distributed {
            rank: me,
            reason: format!(
                "{what} #{mine} failed after {:.1} s (timeout {:.0} s): {reason}; LibTorch said: {message}. The last complete checkpoint is intact: fix the cause and resume",
                waited.as_secs_f64(),
                self.timeout.as_secs_f64()
            ),
        }
    }

    fn find_fault(&mut self, me: usize, world: usize, mine: u64) -> std::result::Result<Fault, String> {
        for r in (0..world).filter(|&r| r != me) {
            if self.store.check(&keys::exit(self.spec.attempt, r))? {
                let status = self.store.get(&keys::exit(self.spec.attempt, r), Duration::from_secs(1))?;
                return Ok(Fault::Gone(format!("rank {r} exited ({})", String::from_utf8_lossy(&status))));
            }
        }
        let now = unix_ms();
        let mut behind = Vec::new();
        for r in (0..world).filter(|&r| r != me) {
            if !self.store.check(&keys::heartbeat(self.spec.attempt, r))? {
                return Ok(Fault::Gone(format!("rank {r} never started (no heartbeat)")));
            }
            let beat = String::from_utf8_lossy(&self.store.get(&keys::heartbeat(self.spec.attempt, r), Duration::from_secs(1))?).into_owned();
            let mut parts = beat.split_whitespace().map(|s| s.parse::<u64>().unwrap_or(0));
            let (at, count) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            let age = Duration::from_millis(now.saturating_sub(at));
            if age > HEARTBEAT_STALE {
                return Ok(Fault::Gone(format!("rank {r} stopped responding (its last heartbeat is {:.1} s old: killed, crashed or frozen)", age.as_secs_f64())));
            }
            if count < mine {
                behind.push(format!("rank {r} (at collective #{count})"));
            }
        }
        if behind.is_empty() {
            return Ok(Fault::None);
        }
        Ok(Fault::Behind(format!("{} did not reach this collective: it hangs or runs a different code path", behind.join(", "))))
    }

    /// Fails on every rank, naming the disagreeing ranks, unless every rank passes the same
    /// `fingerprint` (of the recipe and the data) and `ok` (its own start succeeded).
    pub fn check_agreement(&mut self, fingerprint: u64, ok: bool) -> Result<()> {
        let (me, world) = (self.spec.rank, self.spec.world_size);
        // Per rank: the fingerprint's two 32-bit halves and the start flag, each rank writing
        // only its own slots, so that a sum all-reduce gathers them exactly.
        let mut slots = vec![0i64; 3 * world];
        slots[3 * me] = (fingerprint >> 32) as i64;
        slots[3 * me + 1] = (fingerprint & 0xffff_ffff) as i64;
        slots[3 * me + 2] = i64::from(ok);
        self.all_reduce_values(&mut slots, ReduceOp::Sum)?;
        let all = slots;
        let list = |ranks: Vec<usize>| ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        let failed: Vec<usize> = (0..world).filter(|&r| all[3 * r + 2] == 0).collect();
        if !failed.is_empty() {
            return Err(ProcoError::Distributed { rank: me, reason: format!("rank(s) {} could not start; see their errors", list(failed)) });
        }
        let differ: Vec<usize> = (1..world).filter(|&r| all[3 * r..3 * r + 2] != all[0..2]).collect();
        if !differ.is_empty() {
            return Err(ProcoError::Distributed {
                rank: me,
                reason: format!("rank(s) {} have another recipe or other data than rank 0 (their fingerprints differ); start every rank with the same flags and data", list(differ)),
            });
        }
        Ok(())
    }

    /// Sums every rank's statistics in place (one all-reduce of the sums and counts of all of
    /// `stats`, in f64): afterwards each holds the union batch's statistics.
    pub fn all_reduce_statistics(&mut self, stats: &mut [&mut BatchStatistics]) -> Result<()> {
        let mut flat: Vec<f64> = Vec::new();
        for s in stats.iter() {
            flat.extend_from_slice(s.sums());
            flat.extend_from_slice(s.counts());
        }
        self.all_reduce_values(&mut flat, ReduceOp::Sum)?;
        let reduced = flat;
        let mut at = 0;
        for s in stats.iter_mut() {
            let (ns, nc) = (s.sums().len(), s.counts().len());
            s.set(&reduced[at..at + ns], &reduced[at + ns..at + ns + nc])?;
            at += ns + nc;
        }
        Ok(())
    }

    /// Averages the gradients of `vars` over the ranks: flattened into buckets of at most
    /// `bucket_bytes` per dtype and device, all buckets all-reduced together (Gloo and NCCL
    /// pipeline them), divided by the world size and copied back. An undefined gradient
    /// counts as zero, and its variable gets the averaged gradient (so every rank updates every
    /// variable alike; the models here give every trainable variable a gradient each step).
    pub fn average_gradients(&mut self, vars: &[Tensor], bucket_bytes: usize) -> Result<()> {
        let started = Instant::now();
        let result = self.average_gradients_untimed(vars, bucket_bytes);
        self.time.gradients += started.elapsed();
        result
    }

    fn average_gradients_untimed(&mut self, vars: &[Tensor], bucket_bytes: usize) -> Result<()> {
        let world = self.spec.world_size as f64;
        let grads: Vec<Tensor> = vars.iter().map(|v| v.grad()).collect();
        let mut buckets: Vec<(Vec<usize>, usize)> = Vec::new();
        let mut key = None;
        for (i, v) in vars.iter().enumerate() {
            let bytes = v.numel() * v.kind().elt_size_in_bytes();
            let k = (v.kind(), v.device());
            match buckets.last_mut() {
                Some((members, size)) if key == Some(k) && *size + bytes <= bucket_bytes.max(1) => {
                    members.push(i);
                    *size += bytes;
                }
                _ => {
                    buckets.push((vec![i], bytes));
                    key = Some(k);
                }
            }
        }
        let mut flats = Vec::with_capacity(buckets.len());
        for (members, _) in &buckets {
            let parts: Vec<Tensor> = members
                .iter()
                .map(|&i| if grads[i].defined() { grads[i].f_reshape([-1]) } else { Tensor::f_zeros([vars[i].numel() as i64], (vars[i].kind(), vars[i].device())) })
                .collect::<std::result::Result<_, _>>()?;
            flats.push(Tensor::f_cat(&parts, 0)?);
        }
        self.all_reduce(&mut flats, ReduceOp::Sum)?;
        for ((members, _), flat) in buckets.iter().zip(&flats) {
            let mut at = 0i64;
            for &i in members {
                let n = vars[i].numel() as i64;
                let part = flat.f_narrow(0, at, n)?.f_view_as(&vars[i])?.f_div_scalar(world)?;
                at += n;
                let mut g = if grads[i].defined() { grads[i].shallow_clone() } else { zero_gradient(&vars[i])? };
                tch::no_grad(|| g.f_copy_(&part))?;
            }
        }
        Ok(())
    }

    /// Overwrites `tensors` (parameters, buffers, any state) with rank 0's.
    pub fn broadcast_from_leader(&mut self, tensors: &mut [Tensor]) -> Result<()> {
        // Gloo and NCCL broadcast contiguous tensors of the group's device kind.
        self.broadcast(tensors, 0)
    }

    /// Rank 0's `bytes` on every rank (others pass anything; their value is replaced).
    pub fn broadcast_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut len = [bytes.len() as i64];
        self.broadcast_values(&mut len)?;
        let mut data = vec![0u8; len[0].max(0) as usize];
        if self.spec.rank == 0 {
            data.copy_from_slice(bytes);
        }
        self.broadcast_values(&mut data)?;
        Ok(data)
    }

    /// All-reduces host values in place, through the group's device (NCCL takes CUDA tensors
    /// only).
    pub fn all_reduce_values<T: tch::kind::Element + Copy>(&mut self, values: &mut [T], op: ReduceOp) -> Result<()> {
        let mut t = [Tensor::f_from_slice(values)?.f_to_device(self.device)?];
        self.all_reduce(&mut t, op)?;
        values.copy_from_slice(&Vec::<T>::try_from(&t[0].f_to_device(Device::Cpu)?)?);
        Ok(())
    }

    /// Overwrites host values with rank 0's, through the group's device.
    pub fn broadcast_values<T: tch::kind::Element + Copy>(&mut self, values: &mut [T]) -> Result<()> {
        let mut t = [Tensor::f_from_slice(values)?.f_to_device(self.device)?];
        self.broadcast(&mut t, 0)?;
        values.copy_from_slice(&Vec::<T>::try_from(&t[0].f_to_device(Device::Cpu)?)?);
        Ok(())
    }
}

impl Drop for Distributed {
    fn drop(&mut self) {
        // After a failure a peer is gone: tearing the group down could block on it, and the
        // process is about to exit anyway.
        if self.failed {
            if let Some(g) = self.group.take() {
                std::mem::forget(g);
            }
        }
    }
}

/// The device kind the backend needs for tensors: CPU for Gloo, the rank's GPU for NCCL.
pub fn collective_device(backend: Backend) -> Device {
    match backend {
        Backend::Gloo => Device::Cpu,
        Backend::Nccl { device } => Device::Cuda(device),
    }
}

/// FNV-1a over bytes: a fingerprint to compare ranks' recipes and data (not cryptographic).
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Gives `var` a zero gradient (tch cannot assign one) and returns it.
fn zero_gradient(var: &Tensor) -> Result<Tensor> {
    var.f_mul_scalar(0.0)?.f_sum(var.kind())?.f_backward()?;
    Ok(var.f_grad()?)
}
