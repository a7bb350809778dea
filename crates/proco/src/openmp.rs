//! Independent host jobs run side by side on LibTorch's own OpenMP threads: two of them
//! ([`join`]), or any number claimed by the threads in turn ([`for_each`], [`OpenMpWorkers`]).
//!
//! Why: after each parallel tensor operation, LibTorch's GNU OpenMP worker keeps spinning on
//! the other core for milliseconds, waiting for the next one. A `std::thread` started in that
//! window competes with the spinner for the core and loses (measured on the two-view ProCo
//! pass at batch 256: 2.1x slower than one thread). Handing the second job to that worker
//! through GNU OpenMP's own entry point (`GOMP_parallel`) uses the core it already holds
//! (measured: 0.74x of one thread). The entry points are looked up at run time, so nothing is
//! linked (Intel's OpenMP runtime exports the same GNU entry points and serves them too):
//! where no such runtime is loaded, where it is limited to one thread, or inside another
//! parallel region, the jobs simply run one after the other ([`available`] says which).

use std::any::Any;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

type ParallelFn = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
type IntFn = unsafe extern "C" fn() -> c_int;

/// The GNU OpenMP entry points, if this process has them loaded.
struct Gomp {
    parallel: ParallelFn,
    max_threads: IntFn,
    in_parallel: IntFn,
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            extern "C" {
                fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
            }
            let find = |name: &std::ffi::CStr| {
                // SAFETY: dlsym with RTLD_DEFAULT (null on glibc) only searches the loaded
                // objects' symbol tables for a NUL-terminated name.
                let ptr = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
                (!ptr.is_null()).then_some(ptr)
            };
            let (parallel, max_threads, in_parallel) = (find(c"GOMP_parallel")?, find(c"omp_get_max_threads")?, find(c"omp_in_parallel")?);
            // SAFETY: these are libgomp's exported functions, whose C signatures are
            // void GOMP_parallel(void (*)(void *), void *, unsigned, unsigned) and
            // int omp_get_max_threads(void) and int omp_in_parallel(void).
            unsafe {
                Some(Gomp {
                    parallel: std::mem::transmute::<*mut c_void, ParallelFn>(parallel),
                    max_threads: std::mem::transmute::<*mut c_void, IntFn>(max_threads),
                    in_parallel: std::mem::transmute::<*mut c_void, IntFn>(in_parallel),
                })
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        {
            None
        }
    })
    .as_ref()
}

/// Whether [`join`] and [`for_each`] can run jobs side by side: an OpenMP runtime with the GNU
/// entry points is loaded, allows at least two threads, and the caller is not already inside
/// one of its parallel regions (nested regions would oversubscribe the cores).
pub fn available() -> bool {
    // SAFETY: plain libgomp queries.
    gomp().is_some_and(|g| unsafe { (g.max_threads)() >= 2 && (g.in_parallel)() == 0 })
}

/// A job and the slot for its outcome.
struct Job<'a, R> {
    work: Mutex<Option<Box<dyn FnOnce() -> R + Send + 'a>>>,
    result: Mutex<Option<std::thread::Result<R>>>,
}

impl<'a, R> Job<'a, R> {
    fn new(work: impl FnOnce() -> R + Send + 'a) -> Self {
        Self { work: Mutex::new(Some(Box::new(work))), result: Mutex::new(None) }
    }

    /// Runs the job unless it already ran; a panic is kept for the caller's thread.
    fn run(&self) {
        let work = self.work.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(work) = work {
            let outcome = catch_unwind(AssertUnwindSafe(work));
            *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        }
    }

    fn take(self) -> R {
        self.run();
        match self.result.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(Ok(value)) => value,
            Some(Err(panic)) => resume_unwind(panic),
            None => unreachable!("run() leaves an outcome"),
        }
    }
}

/// Runs `a` and `b`, on two OpenMP threads where available (see the module notes), and
/// returns both results; a panic in either is resumed here after both have finished. The jobs
/// go through [`for_each`], whose threads claim them in turn: a worker that wakes late (on a
/// busy or slowed core) costs nothing, the caller's thread simply runs both.
pub fn join<'a, RA: Send, RB: Send>(a: impl FnOnce() -> RA + Send + 'a, b: impl FnOnce() -> RB + Send + 'a) -> (RA, RB) {
    let (a, b) = (Job::new(a), Job::new(b));
    for_each(2, &|t| if t == 0 { a.run() } else { b.run() });
    (a.take(), b.take())
}

/// Context of one [`for_each`] region, shared by its threads.
struct Shared<'a> {
    job: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// The body every thread of a [`for_each`] region runs: it claims the next unstarted job until
/// none is left, so a worker that wakes late simply finds less to do.
unsafe extern "C" fn for_each_body(data: *mut c_void) {
    // SAFETY: `data` is the `Shared` that `for_each` passed to GOMP_parallel, alive until
    // GOMP_parallel returns (its end is a barrier for every thread of the region).
    let shared = unsafe { &*(data as *const Shared<'_>) };
    loop {
        let t = shared.next.fetch_add(1, Ordering::Relaxed);
        if t >= shared.tasks {
            break;
        }
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (shared.job)(t))) {
            shared.panic.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(panic);
        }
    }
}

/// Runs `job(0)`, ..., `job(tasks - 1)`, each once, on up to `tasks` OpenMP threads where
/// available (see the module notes), else one after the other; a panic in a job is resumed
/// here after all have finished.
pub fn for_each(tasks: usize, job: &(dyn Fn(usize) + Sync)) {
    let pool = gomp().filter(|_| available() && tasks > 1);
    let Some(gomp) = pool else {
        (0..tasks).for_each(job);
        return;
    };
    // SAFETY: a plain libgomp query.
    let threads = tasks.min(unsafe { (gomp.max_threads)() }.max(1) as usize);
    let shared = Shared { job, tasks, next: AtomicUsize::new(0), panic: Mutex::new(None) };
    // SAFETY: `for_each_body` reads `data` as the `Shared` passed here, which outlives the
    // call (GOMP_parallel returns only after every thread of the region has finished); the
    // job is `Sync`, so threads may call it concurrently.
    unsafe { (gomp.parallel)(for_each_body, &shared as *const Shared<'_> as *mut c_void, threads as c_uint, 0) };
    if let Some(panic) = shared.panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
        resume_unwind(panic);
    }
}

/// LibTorch's OpenMP workers as the runner of the ProCo pass's parallel jobs
/// ([`proco_vmf::parallel::Parallel`], through [`for_each`]): inside a LibTorch program they
/// are usually spinning on the other cores already, where freshly spawned threads would have
/// to compete with them. Where no GNU OpenMP runtime is found, the jobs go to spawned threads
/// ([`proco_vmf::parallel::ScopedThreads`]); where OpenMP is limited to one thread (for
/// example `tch::set_num_threads(1)`) or the caller is inside a parallel region, they run one
/// after the other. Called from a thread of the caller's own (not the one that runs
/// LibTorch's operations), libgomp starts a second team of workers for that thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMpWorkers;

impl proco_vmf::parallel::Parallel for OpenMpWorkers {
    fn run(&self, tasks: usize, job: &(dyn Fn(usize) + Sync)) {
        if gomp().is_some() {
            for_each(tasks, job);
        } else {
            proco_vmf::parallel::ScopedThreads.run(tasks, job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_jobs_run_and_return_their_results() {
        // Makes LibTorch load and start its OpenMP pool first, as in training.
        let _ = tch::Tensor::ones([1 << 16], (tch::Kind::Float, tch::Device::Cpu)).sum(tch::Kind::Float);
        let data: Vec<u64> = (0..100_000).collect();
        for _ in 0..50 {
            let (x, y) = join(|| data[..50_000].iter().sum::<u64>(), || data[50_000..].iter().map(|v| v * 2).sum::<u64>());
            assert_eq!((x, y), (1_249_975_000, 2 * 3_749_975_000));
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(gomp().is_some(), "LibTorch's GNU OpenMP should be found on this Linux build");
    }

    #[test]
    fn for_each_runs_every_job_once() {
        let _ = tch::Tensor::ones([1 << 16], (tch::Kind::Float, tch::Device::Cpu)).sum(tch::Kind::Float);
        for tasks in [0usize, 1, 2, 3, 7] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for_each(tasks, &|t| {
                counts[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{tasks} tasks");
        }
        let caught = catch_unwind(|| for_each(4, &|t| assert!(t < 2, "job {t} failed")));
        assert!(caught.is_err(), "two failing jobs: one panic resumed");

        // Nested inside a region: every job still runs once (one after the other).
        let counts: Vec<AtomicUsize> = (0..6).map(|_| AtomicUsize::new(0)).collect();
        let (inner_a, inner_b) = join(
            || {
                let nested = !available();
                for_each(3, &|t| {
                    counts[t].fetch_add(1, Ordering::Relaxed);
                });
                nested
            },
            || for_each(3, &|t| {
                counts[3 + t].fetch_add(1, Ordering::Relaxed);
            }),
        );
        assert!(inner_a, "inside a region, available() is false");
        let _ = inner_b;
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = catch_unwind(|| join(|| 1, || -> u32 { panic!("job b failed") }));
        assert!(caught.is_err());
    }
}
