//! Data-parallel training on c10d's Gloo backend, two real processes on 127.0.0.1: each test
//! launches this test binary twice as ranks 0 and 1 (through `proco`'s own launcher, with
//! torchrun's variables), the ranks write what they computed, and the parent compares it with
//! one process computing the same thing on the union of the ranks' batches.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proco::distributed::launch::{launch_local, LocalLaunch};
use proco::distributed::{Backend, Distributed, ReduceOp, WorldSpec};
use proco::loader::Shard;
use proco::loss::{BranchPhases, LogPrior, LogitAdjustedCe, ProCoBranch};
use proco::tch::{nn, nn::Module, Device, Kind, Tensor};
use proco::{BatchStatistics, EstimatorPair};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKER: &str = "PROCO_TEST_WORKER";
const OUT: &str = "PROCO_TEST_OUT";

/// In a worker: this process's rank, the output directory and the group; else `None`.
fn worker(test: &str) -> Option<(usize, PathBuf, Distributed)> {
    if std::env::var(WORKER).ok()?.as_str() != test {
        return None;
    }
    let spec = WorldSpec::from_env().expect("torchrun variables").expect("WORLD_SIZE is set");
    let dist = Distributed::join(&spec, Backend::Gloo, Duration::from_secs(60)).expect("the group forms");
    Some((spec.rank, PathBuf::from(std::env::var(OUT).expect("output dir")), dist))
}

/// Runs `test` of this binary as `n` ranks; returns their output directory.
fn launch(test: &str, n: usize) -> PathBuf {
    let out = std::env::temp_dir().join(format!("proco-dist-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let launch = LocalLaunch {
        nproc: n,
        program: std::env::current_exe().unwrap(),
        args: [test, "--exact", "--nocapture", "--test-threads=1"].map(OsString::from).to_vec(),
        env: vec![(WORKER.into(), test.into()), (OUT.into(), out.clone().into())],
        port: 0,
        timeout: Duration::from_secs(60),
    };
    launch_local(&launch).unwrap_or_else(|e| panic!("the ranks of {test} failed: {e}"));
    out
}

fn write(dir: &Path, rank: usize, values: &[f64]) {
    std::fs::write(dir.join(format!("rank{rank}.json")), serde_json::to_string(values).unwrap()).unwrap();
}

fn read(dir: &Path, rank: usize) -> Vec<f64> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("rank{rank}.json"))).unwrap()).unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: largest difference {worst:e} exceeds {tol:e}");
}

/// N x p unit rows and labels of a union batch `k` (the same on every rank).
fn union_batch(k: u64, n: usize, p: usize, classes: usize) -> (Vec<f64>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(1000 + k);
    let mut rows = vec![0.0; n * p];
    for row in rows.chunks_exact_mut(p) {
        row.iter_mut().for_each(|v| *v = rng.random::<f64>() - 0.5);
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    // Skewed labels, with some classes absent from some ranks' slices.
    let labels = (0..n).map(|_| ((rng.random::<f64>().powi(2)) * classes as f64) as usize).collect();
    (rows, labels)
}

fn estimator_state(e: &EstimatorPair) -> Vec<f64> {
    [e.previous().means(), e.previous().counts(), e.current().means(), e.current().counts()].concat()
}

/// K steps (two views each, an epoch swap half-way) of the estimator pair, the union batch's
/// statistics on one process or each rank's slice all-reduced.
fn estimator_run(mut dist: Option<&mut Distributed>) -> Vec<f64> {
    let (n, p, classes, steps) = (24, 16, 7, 6);
    let mut estimators = EstimatorPair::new(classes, p, &mut StdRng::seed_from_u64(7)).unwrap();
    let shard = dist.as_ref().map_or(Shard::WHOLE, |d| Shard { rank: d.rank(), world: d.world_size() });
    for k in 0..steps {
        if k == steps / 2 {
            estimators.start_epoch(&mut StdRng::seed_from_u64(8)).unwrap();
        }
        let mut views = Vec::new();
        for v in 0..2 {
            let (rows, labels) = union_batch(10 * k + v, n, p, classes);
            let r = shard.range(n);
            views.push(BatchStatistics::from_host(&rows[r.start * p..r.end * p], &labels[r], classes, p).unwrap());
        }
        let [mut a, mut b] = <[BatchStatistics; 2]>::try_from(views).unwrap();
        if let Some(d) = dist.as_deref_mut() {
            d.all_reduce_statistics(&mut [&mut a, &mut b]).unwrap();
        }
        estimators.apply(&a).unwrap();
        estimators.apply(&b).unwrap();
    }
    estimator_state(&estimators)
}

#[test]
fn estimator_on_two_ranks_equals_one_process_on_the_union_batch() {
    const TEST: &str = "estimator_on_two_ranks_equals_one_process_on_the_union_batch";
    if let Some((rank, out, mut dist)) = worker(TEST) {
        write(&out, rank, &estimator_run(Some(&mut dist)));
        return;
    }
    let out = launch(TEST, 2);
    let single = estimator_run(None);
    for rank in 0..2 {
        assert_close(&format!("rank {rank}'s estimators"), &read(&out, rank), &single, 1e-12);
    }
    // The check can fail: one rank's statistics alone give another estimator.
    let alone = {
        let (n, p, classes) = (24, 16, 7);
        let mut e = EstimatorPair::new(classes, p, &mut StdRng::seed_from_u64(7)).unwrap();
        let (rows, labels) = union_batch(0, n, p, classes);
        e.apply(&BatchStatistics::from_host(&rows[..n / 2 * p], &labels[..n / 2], classes, p).unwrap()).unwrap();
        estimator_state(&e)
    };
    assert!(alone.iter().zip(&single).any(|(a, b)| (a - b).abs() > 1e-6));
    let _ = std::fs::remove_dir_all(out);
}

/// A small f64 network without BatchNorm: a classifier and a projection to unit features.
struct Mlp {
    vs: nn::VarStore,
    body: nn::Sequential,
    classifier: nn::Linear,
    head: nn::Linear,
}

fn mlp(d: i64, classes: i64, p: i64) -> Mlp {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let body = nn::seq().add(nn::linear(&root / "fc1", d, 32, Default::default())).add_fn(|x| x.tanh());
    let classifier = nn::linear(&root / "cls", 32, classes, Default::default());
    let head = nn::linear(&root / "head", 32, p, Default::default());
    vs.double();
    Mlp { vs, body, classifier, head }
}

/// One step's gradient (every trainable variable, flattened, in order) and the estimator
/// afterwards: CE on the classifier + the ProCo branch on two "views", over the union batch
/// (one process) or this rank's slice with statistics all-reduced and gradients averaged.
fn gradient_run(mut dist: Option<&mut Distributed>) -> Vec<f64> {
    let (n, d, classes, p) = (16i64, 10i64, 5usize, 8usize);
    tch::manual_seed(3);
    let net = mlp(d, classes as i64, p as i64);
    let mut rng = StdRng::seed_from_u64(11);
    let x: Vec<f64> = (0..3 * n * d).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    let y: Vec<i64> = (0..n).map(|i| i % classes as i64).collect();
    let shard = dist.as_ref().map_or(Shard::WHOLE, |d| Shard { rank: d.rank(), world: d.world_size() });
    let r = shard.range(n as usize);
    let (lo, m) = (r.start as i64, r.len() as i64);
    // Three views of the union batch, view-major; this rank's rows of each.
    let all = Tensor::from_slice(&x).view([3, n, d]);
    let xs = all.narrow(1, lo, m).reshape([3 * m, d]);
    let ys = Tensor::from_slice(&y).narrow(0, lo, m);
    let counts = vec![4.0, 3.0, 3.0, 3.0, 3.0];
    let prior = LogPrior::from_counts(&counts).unwrap();
    let ce = LogitAdjustedCe::new(prior.clone());
    let branch = ProCoBranch::new(p, 0.1, prior).unwrap();
    let mut estimators = EstimatorPair::new(classes, p, &mut StdRng::seed_from_u64(5)).unwrap();
    let h = net.body.forward(&xs);
    let logits = net.classifier.forward(&h.narrow(0, 0, m));
    let z = net.head.forward(&h);
    let z = &z / z.norm_scalaropt_dim(2, [1], true);
    let out = match dist.as_deref_mut() {
        Some(dd) => branch.forward_reduced(&z, &ys, &mut estimators, &mut BranchPhases::default(), &mut |s| dd.all_reduce_statistics(s)).unwrap(),
        None => branch.forward(&z, &ys, &mut estimators).unwrap(),
    };
    let loss = ce.loss(&logits, &ys).unwrap() + out.loss * 0.5;
    loss.backward();
    let vars = net.vs.trainable_variables();
    if let Some(dd) = dist.as_deref_mut() {
        dd.average_gradients(&vars, 1000).unwrap();
    }
    let mut flat: Vec<f64> = Vec::new();
    for v in &vars {
        flat.extend(Vec::<f64>::try_from(&v.grad().to_kind(Kind::Double).flatten(0, -1)).unwrap());
    }
    flat.extend(estimator_state(&estimators));
    flat
}

#[test]
fn averaged_gradients_equal_the_union_batch_gradient() {
    const TEST: &str = "averaged_gradients_equal_the_union_batch_gradient";
    if let Some((rank, out, mut dist)) = worker(TEST) {
        write(&out, rank, &gradient_run(Some(&mut dist)));
        return;
    }
    let out = launch(TEST, 2);
    let single = gradient_run(None);
    assert!(single.iter().any(|g| g.abs() > 1e-3), "the gradient is not trivially zero");
    for rank in 0..2 {
        assert_close(&format!("rank {rank}'s gradient and estimators"), &read(&out, rank), &single, 1e-12);
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn ranks_that_disagree_are_refused_and_collectives_reduce() {
    const TEST: &str = "ranks_that_disagree_are_refused_and_collectives_reduce";
    if let Some((rank, out, mut dist)) = worker(TEST) {
        // Max and min reductions and a broadcast, then an agreement check that rank 1 fails.
        let mut t = [Tensor::from_slice(&[rank as f64, -(rank as f64)])];
        dist.all_reduce(&mut t, ReduceOp::Max).unwrap();
        let max = Vec::<f64>::try_from(&t[0]).unwrap();
        let mut b = [Tensor::from_slice(&[10.0 + rank as f64])];
        dist.broadcast(&mut b, 0).unwrap();
        let bytes = dist.broadcast_bytes(if rank == 0 { b"leader" } else { b"other" }).unwrap();
        dist.check_agreement(42, true).unwrap();
        let refused = dist.check_agreement(if rank == 1 { 43 } else { 42 }, true).unwrap_err().to_string();
        let failed = dist.check_agreement(42, rank == 0).unwrap_err().to_string();
        let mut values = max;
        values.push(b[0].double_value(&[0]));
        values.push(f64::from(bytes == b"leader"));
        values.push(f64::from(refused.contains("rank(s) 1 have another recipe")));
        values.push(f64::from(failed.contains("rank(s) 1 could not start")));
        write(&out, rank, &values);
        return;
    }
    let out = launch(TEST, 2);
    for rank in 0..2 {
        assert_eq!(read(&out, rank), vec![1.0, 0.0, 10.0, 1.0, 1.0, 1.0], "rank {rank}");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn torchrun_variables_are_read_and_checked() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    assert_eq!(WorldSpec::from_vars(vars(&[])).unwrap(), None);
    let spec = WorldSpec::from_vars(vars(&[("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "10.0.0.2"), ("MASTER_PORT", "29400"), ("TORCHELASTIC_USE_AGENT_STORE", "True")])).unwrap().unwrap();
    assert_eq!(spec, WorldSpec { rank: 3, world_size: 4, local_rank: 1, master_addr: "10.0.0.2".into(), master_port: 29400, agent_store: true, attempt: 0 });
    for bad in [&[("WORLD_SIZE", "2")][..], &[("WORLD_SIZE", "2"), ("RANK", "2")], &[("WORLD_SIZE", "x"), ("RANK", "0")], &[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "99999")]] {
        let owned: Vec<(String, String)> = bad.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let err = WorldSpec::from_vars(|k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap_err().to_string();
        assert!(err.contains("RANK") || err.contains("WORLD_SIZE") || err.contains("MASTER_PORT"), "{err}");
    }
}

/// Where this LibTorch has a CUDA library, this test binary has it loaded (so CUDA and NCCL
/// register on a GPU machine): the linker's --as-needed must not have dropped it.
#[test]
fn test_binaries_load_libtorch_cuda_where_libtorch_has_it() {
    let Some(cuda) = option_env!("PROCO_LIBTORCH_CUDA") else {
        eprintln!("this LibTorch has no libtorch_cuda.so: nothing to link");
        return;
    };
    let maps = std::fs::read_to_string("/proc/self/maps").expect("the process's mappings");
    assert!(maps.contains("libtorch_cuda.so"), "{cuda} is not loaded by this test binary");
}
