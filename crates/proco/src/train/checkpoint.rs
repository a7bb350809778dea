//! Run checkpoints, written so that a crash at any moment leaves the previous one intact:
//! each epoch's files go into a fresh `checkpoints/epoch-NNNN` directory, then the one-line
//! `checkpoints/latest` pointer is replaced atomically (temp file + rename), and only then are
//! older epoch directories removed.
//!
//! Contents: `model.safetensors` (parameters and BatchNorm statistics), `optimizer.safetensors`
//! (momentum buffers), `estimator.safetensors` (the two vMF estimators, f64),
//! `queue.safetensors` (SupCon's memory queue, where the recipe keeps one), `state.json`
//! (next epoch, best epoch, class count). Random state needs no saving: every generator is
//! derived from the recipe's seed and the epoch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::estimator::{EstimatorPair, VmfEstimator};
use crate::train::loss_state::LossState;
use crate::model::TwoBranchNet;
use crate::train::accuracy::ShotAccuracy;
use crate::train::sgd::Sgd;

/// The best epoch so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestEpoch {
    /// 0-based epoch.
    pub epoch: usize,
    /// Its accuracies on the selecting split (val, else test).
    pub accuracy: ShotAccuracy,
    /// Its test accuracies, where a test split exists beside val.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<ShotAccuracy>,
}

/// Bookkeeping saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// First epoch still to run.
    pub next_epoch: usize,
    /// Number of classes of the model.
    pub num_classes: usize,
    /// Best epoch by top-1 on the selecting split.
    pub best: Option<BestEpoch>,
}


fn corrupt(path: &Path, e: impl std::fmt::Display) -> ProcoError {
    ProcoError::Data { path: path.to_path_buf(), reason: format!("unreadable checkpoint file ({e}); resume from another run or start afresh") }
}

fn estimator_tensors(prefix: &str, e: &VmfEstimator) -> Result<Vec<(String, Tensor)>> {
    let (c, p) = (e.num_classes() as i64, e.dim() as i64);
    Ok(vec![
        (format!("{prefix}.means"), Tensor::f_from_slice(e.means())?.f_view([c, p])?),
        (format!("{prefix}.counts"), Tensor::f_from_slice(e.counts())?),
    ])
}

fn estimator_from(tensors: &BTreeMap<String, Tensor>, prefix: &str, path: &Path) -> Result<VmfEstimator> {
    let get = |k: &str| tensors.get(&format!("{prefix}.{k}")).ok_or_else(|| corrupt(path, format!("missing {prefix}.{k}")));
    let means = get("means")?;
    let size = means.size();
    if size.len() != 2 {
        return Err(corrupt(path, "estimator means are not a matrix"));
    }
    let m = Vec::<f64>::try_from(&means.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
    let n = Vec::<f64>::try_from(&get("counts")?.f_to_kind(Kind::Double)?)?;
    Ok(VmfEstimator::from_state(size[0] as usize, size[1] as usize, m, n)?)
}

/// Flushes a file or directory to disk.
fn sync_path(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(ProcoError::io_at(path))
}

/// Flushes a directory entry list to disk (so renames inside it survive a power loss).
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_path(dir)
}

/// Flushes every file of a directory, then the directory itself.
pub fn sync_dir_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(ProcoError::io_at(dir))?.flatten() {
        if entry.path().is_file() {
            sync_path(&entry.path())?;
        }
    }
    sync_path(dir)
}

/// Writes named tensors to a safetensors file, each as a contiguous CPU copy: the weights
/// live channels-last (see `model::memory_format`) or on a GPU, and safetensors holds plain
/// row-major data. Loading copies back into the live layout.
pub fn write_tensors<'a>(named: impl IntoIterator<Item = (&'a String, &'a Tensor)>, path: &Path) -> Result<()> {
    let tensors: Vec<(&String, Tensor)> =
        named.into_iter().map(|(k, v)| Ok((k, v.f_to_device(Device::Cpu)?.f_contiguous()?))).collect::<Result<_>>()?;
    Tensor::write_safetensors(&tensors, path)?;
    Ok(())
}

/// Writes every variable of a network (parameters and BatchNorm statistics).
pub fn write_model(net: &TwoBranchNet, path: &Path) -> Result<()> {
    write_tensors(&net.vs.variables(), path)
}

/// Writes the checkpoint of a finished epoch and makes it the latest.
pub fn save(run_dir: &Path, net: &TwoBranchNet, sgd: &Sgd, loss: &LossState, state: &TrainState) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    let dir = root.join(format!("epoch-{:04}", state.next_epoch));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(ProcoError::io_at(&dir))?;
    write_model(net, &dir.join("model.safetensors"))?;
    write_tensors(sgd.buffers(), &dir.join("optimizer.safetensors"))?;
    let mut est = estimator_tensors("previous", loss.estimators.previous())?;
    est.extend(estimator_tensors("current", loss.estimators.current())?);
    Tensor::write_safetensors(&est, dir.join("estimator.safetensors"))?;
    if let Some(queue) = &loss.queue {
        let (features, labels) = queue.to_host()?;
        Tensor::write_safetensors(&[("features", features), ("labels", labels)], dir.join(QUEUE_FILE))?;
    }
    let state_path = dir.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| corrupt(&state_path, e))?;
    fs::write(&state_path, text).map_err(ProcoError::io_at(&state_path))?;
    sync_dir_tree(&dir)?;

    let pointer = root.join("latest");
    let tmp = root.join("latest.tmp");
    fs::write(&tmp, dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).map_err(ProcoError::io_at(&tmp))?;
    sync_path(&tmp)?;
    fs::rename(&tmp, &pointer).map_err(ProcoError::io_at(&pointer))?;
    sync_dir(&root)?;
    for entry in fs::read_dir(&root).map_err(ProcoError::io_at(&root))?.flatten() {
        let p = entry.path();
        if p.is_dir() && p != dir {
            let _ = fs::remove_dir_all(p);
        }
    }
    Ok(dir)
}

/// The latest checkpoint directory of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let pointer = run_dir.join("checkpoints/latest");
    match fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = run_dir.join("checkpoints").join(name.trim());
            if dir.is_dir() {
                Ok(Some(dir))
            } else {
                Err(corrupt(&pointer, format!("it names {} which does not exist", dir.display())))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProcoError::Io { path: pointer, source: e }),
    }
}

/// Reads a checkpoint's bookkeeping.
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = fs::read_to_string(&path).map_err(ProcoError::io_at(&path))?;
    serde_json::from_str(&text).map_err(|e| corrupt(&path, e))
}

/// Loads the model weights of a checkpoint into `net`, refusing a class-count mismatch.
pub fn load_model(dir: &Path, net: &mut TwoBranchNet) -> Result<TrainState> {
    let state = load_state(dir)?;
    if state.num_classes != net.num_classes() {
        return Err(ProcoError::InvalidConfig {
            reason: format!(
                "the checkpoint {} has {} classes but the dataset has {}; evaluate it on the dataset it was trained on",
                dir.display(),
                state.num_classes,
                net.num_classes()
            ),
        });
    }
    let path = dir.join("model.safetensors");
    net.vs.load(&path).map_err(|e| corrupt(&path, e))?;
    crate::model::memory_format::convert_var_store(&net.vs)?;
    Ok(state)
}

/// The file of SupCon's memory queue in a checkpoint.
const QUEUE_FILE: &str = "queue.safetensors";

/// Loads everything needed to continue training: the weights into `net`, the momentum into
/// `sgd`, the estimators (and the queue, where `loss` keeps one) into `loss`.
pub fn load_all(dir: &Path, net: &mut TwoBranchNet, sgd: &mut Sgd, loss: &mut LossState) -> Result<TrainState> {
    let state = load_model(dir, net)?;
    let device = net.vs.device();
    let opt_path = dir.join("optimizer.safetensors");
    let buffers = Tensor::read_safetensors(&opt_path).map_err(|e| corrupt(&opt_path, e))?;
    let buffers = buffers.into_iter().map(|(k, v)| v.f_to_device(device).map(|v| (k, v))).collect::<Result<BTreeMap<_, _>, _>>()?;
    sgd.set_buffers(buffers);
    let est_path = dir.join("estimator.safetensors");
    let est: BTreeMap<String, Tensor> = Tensor::read_safetensors(&est_path).map_err(|e| corrupt(&est_path, e))?.into_iter().collect();
    loss.estimators = EstimatorPair::from_parts(estimator_from(&est, "previous", &est_path)?, estimator_from(&est, "current", &est_path)?);
    if let Some(queue) = loss.queue.as_mut() {
        let path = dir.join(QUEUE_FILE);
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path).map_err(|e| corrupt(&path, e))?.into_iter().collect();
        let (Some(features), Some(labels)) = (saved.get("features"), saved.get("labels")) else {
            return Err(corrupt(&path, "the queue's features or labels are missing"));
        };
        queue.restore(features, labels).map_err(|e| corrupt(&path, e))?;
    }
    Ok(state)
}
