//! The authors' released checkpoints (`.pth.tar`: a torch zip archive whose pickle holds
//! `state_dict` with DataParallel's `module.` prefixes, `best_acc1`, the optimizer, and
//! pickled objects such as their `criterion_scl`) loaded into our networks, without running
//! any of the pickle's code ([`crate::pickle`]).


use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::model::{Arch, ClassifierKind, ModelConfig, Precision, TwoBranchNet};
use crate::pickle::{self, StorageKind, TensorRef, Value};

/// What an imported checkpoint held besides the weights.
#[derive(Debug)]
pub struct ImportedCheckpoint {
    /// The network rebuilt from the weights.
    pub config: ModelConfig,
    /// Number of classes of its classifier.
    pub num_classes: usize,
    /// Tensors by our variable names.
    pub tensors: BTreeMap<String, Tensor>,
    /// `epoch`, where the checkpoint has an integer one.
    pub epoch: Option<i64>,
    /// `best_acc1`, where it is a number or a one-element tensor.
    pub best_acc1: Option<f64>,
    /// The `arch` string, where present.
    pub arch_name: Option<String>,
    /// Top-level entries of the checkpoint and what each is.
    pub entries: Vec<(String, String)>,
    /// Every GLOBAL the pickle named that was not loaded (classes of pickled objects such as
    /// `criterion_scl`): recorded, never imported or called.
    pub opaque_globals: Vec<String>,
    /// State-dict keys that have no counterpart in our network and were left out
    /// (`num_batches_tracked`).
    pub skipped: Vec<String>,
}

fn bad(path: &Path, reason: impl Into<String>) -> ProcoError {
    ProcoError::Data { path: path.to_path_buf(), reason: reason.into() }
}

/// The records of a torch zip archive: `<root>/data.pkl` and `<root>/data/<key>`.
struct TorchArchive {
    path: PathBuf,
    zip: zip::ZipArchive<std::fs::File>,
    root: String,
}

impl TorchArchive {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(ProcoError::io_at(path))?;
        let zip = zip::ZipArchive::new(file).map_err(|e| {
            bad(path, format!("not a torch zip archive ({e}); checkpoints written by torch.save since PyTorch 1.6 are zip files (re-save an older one with a current PyTorch)"))
        })?;
        let pkl = zip.file_names().find(|n| n.ends_with("/data.pkl") || *n == "data.pkl").map(str::to_string).ok_or_else(|| bad(path, "the archive has no data.pkl: not a torch.save checkpoint"))?;
        let root = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
        Ok(Self { path: path.to_path_buf(), zip, root })
    }

    /// The bytes of record `name`, refusing more than `limit` (whatever the zip header says:
    /// a deflated record is read through the limit, so a compression bomb stops there).
    fn record(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let full = format!("{}{name}", self.root);
        let f = self.zip.by_name(&full).map_err(|e| bad(&self.path, format!("record {full}: {e}")))?;
        let declared = f.size();
        if declared > limit {
            return Err(bad(&self.path, format!("record {full} is {declared} bytes, more than the {limit} expected")));
        }
        let mut buf = Vec::with_capacity(declared.min(limit).min(1 << 26) as usize);
        f.take(limit + 1).read_to_end(&mut buf).map_err(|e| bad(&self.path, format!("record {full}: {e}")))?;
        if buf.len() as u64 > limit {
            return Err(bad(&self.path, format!("record {full} holds more than the {limit} bytes expected")));
        }
        Ok(buf)
    }

    /// A little-endian archive is required (every checkpoint written on x86 or ARM).
    fn check_byteorder(&mut self) -> Result<()> {
        match self.record("byteorder", 16) {
            Ok(b) if b != b"little" => Err(bad(&self.path, format!("big-endian tensors ({:?}) are not supported", String::from_utf8_lossy(&b)))),
            _ => Ok(()),
        }
    }

    /// The tensor `t` describes, as a contiguous f32 (float storages) or its own kind.
    fn tensor(&mut self, t: &TensorRef, storages: &mut BTreeMap<String, Tensor>) -> Result<Tensor> {
        let kind = match t.kind {
            StorageKind::Float => Kind::Float,
            StorageKind::Double => Kind::Double,
            StorageKind::Half => Kind::Half,
            StorageKind::BFloat16 => Kind::BFloat16,
            StorageKind::Long => Kind::Int64,
            StorageKind::Int => Kind::Int,
            StorageKind::Short => Kind::Int16,
            StorageKind::Char => Kind::Int8,
            StorageKind::Byte => Kind::Uint8,
            // Bytes other than 0 and 1 are not valid bools; no weight is one.
            StorageKind::Bool => return Err(bad(&self.path, "a bool tensor, which no network weight is")),
        };
        if !storages.contains_key(&t.storage_key) {
            let bytes_expected = t.storage_numel.checked_mul(t.kind.size()).ok_or_else(|| bad(&self.path, "a storage size overflows"))?;
            let bytes = self.record(&format!("data/{}", t.storage_key), bytes_expected as u64)?;
            if bytes.len() != bytes_expected {
                return Err(bad(&self.path, format!("storage {} holds {} bytes, not the {bytes_expected} its header says", t.storage_key, bytes.len())));
            }
            let s = Tensor::f_from_data_size(&bytes, &[t.storage_numel as i64], kind)?;
            storages.insert(t.storage_key.clone(), s);
        }
        let storage = &storages[&t.storage_key];
        // Two tensors naming one storage must agree on what it is.
        if storage.kind() != kind || storage.numel() != t.storage_numel {
            return Err(bad(&self.path, format!("storage {} is described twice, differently", t.storage_key)));
        }
        if fits_storage(t).map_err(|e| bad(&self.path, e))? == 0 {
            return Ok(Tensor::f_zeros(t.size.iter().map(|&n| n as i64).collect::<Vec<_>>(), (kind, Device::Cpu))?);
        }
        let size: Vec<i64> = t.size.iter().map(|&n| n as i64).collect();
        let stride: Vec<i64> = t.stride.iter().map(|&n| n as i64).collect();
        Ok(storage.f_as_strided(&size, &stride, Some(t.offset as i64))?.f_contiguous()?)
    }
}

/// The element count of the view `t`, if it holds at most its storage's elements (no stride-0
/// expansion into a huge tensor) and its furthest element lies inside the storage.
fn fits_storage(t: &TensorRef) -> std::result::Result<usize, String> {
    let numel = t.size.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
    let reach = t.size.iter().zip(&t.stride).try_fold(t.offset, |a, (&n, &s)| n.saturating_sub(1).checked_mul(s).and_then(|r| a.checked_add(r)));
    match (numel, reach) {
        (Some(0), _) => Ok(0),
        (Some(n), Some(r)) if n <= t.storage_numel && r < t.storage_numel => Ok(n),
        _ => Err(format!("a tensor of shape {:?} and strides {:?} does not fit its storage of {} elements", t.size, t.stride, t.storage_numel)),
    }
}

/// Our variable name of one of the authors' state-dict keys (after `module.`), or `None` for
/// keys without a counterpart (`num_batches_tracked`). `normed` says whether `fc.weight` is a
/// cosine classifier's.
fn our_name(key: &str, normed: bool) -> Option<String> {
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    if let Some(rest) = key.strip_prefix("encoder.") {
        return Some(format!("backbone.{rest}"));
    }
    for (theirs, ours) in [("head.0.", "head.fc1."), ("head.1.", "head.bn."), ("head.3.", "head.fc2.")] {
        if let Some(rest) = key.strip_prefix(theirs) {
            return Some(format!("{ours}{rest}"));
        }
    }
    match key {
        "fc.weight" if normed => Some("classifier.fc_normed".into()),
        "fc.weight" | "fc.bias" => Some(format!("classifier.{key}")),
        _ => None,
    }
}

/// The architecture the weights are of.
fn infer_config(sd: &BTreeMap<String, Vec<usize>>, path: &Path) -> Result<(ModelConfig, usize)> {
    let shape = |k: &str| sd.get(k).cloned().ok_or_else(|| bad(path, format!("the state_dict has no {k}: not one of the authors' ResNet-32 / ResNet-50 / ResNeXt-50 two-branch models")));
    let conv1 = shape("encoder.conv1.weight")?;
    let arch = match conv1.as_slice() {
        [16, 3, 3, 3] => Arch::Resnet32,
        [64, 3, 7, 7] => match shape("encoder.layer1.0.conv2.weight")?.as_slice() {
            [64, 64, 3, 3] => Arch::Resnet50,
            [128, 4, 3, 3] => Arch::Resnext50,
            other => return Err(bad(path, format!("encoder.layer1.0.conv2.weight has shape {other:?}: neither ResNet-50 nor ResNeXt-50 32x4d"))),
        },
        other => return Err(bad(path, format!("encoder.conv1.weight has shape {other:?}: neither the CIFAR ResNet-32 (16x3x3x3) nor an ImageNet ResNet (64x3x7x7)"))),
    };
    let (hidden, f) = match shape("head.0.weight")?.as_slice() {
        [h, f] => (*h, *f),
        other => return Err(bad(path, format!("head.0.weight has shape {other:?}"))),
    };
    let feature_dim = match shape("head.3.weight")?.as_slice() {
        [p, h] if *h == hidden => *p,
        other => return Err(bad(path, format!("head.3.weight has shape {other:?}, expected p x {hidden}"))),
    };
    let fc = shape("fc.weight")?;
    let has_bias = sd.contains_key("fc.bias");
    let (classifier, classes) = match (fc.as_slice(), has_bias) {
        ([c, d], true) if *d == f => (ClassifierKind::Linear, *c),
        ([d, c], false) if *d == f => (ClassifierKind::Normed, *c),
        (other, _) => return Err(bad(path, format!("fc.weight has shape {other:?} (bias: {has_bias}): neither a linear nor a cosine classifier over {f} features"))),
    };
    Ok((ModelConfig { arch, classifier, hidden_dim: hidden, feature_dim, seed: 0, precision: Precision::Fp32, prototype_head: false }, classes))
}

/// Reads one of the authors' checkpoints. Never runs pickle code: objects other than tensors
/// and containers are recorded in [`ImportedCheckpoint::opaque_globals`].
///
/// # Errors
/// [`ProcoError::Data`] naming the file for: not a torch zip archive, a pickle that cannot
/// be read, no `state_dict` or one that is not a dict of tensors (saying what was found
/// instead), weights of an architecture we do not have, or a storage that is short.
pub fn read_authors_checkpoint(path: &Path) -> Result<ImportedCheckpoint> {
    let mut archive = TorchArchive::open(path)?;
    archive.check_byteorder()?;
    let pkl = archive.record("data.pkl", 1 << 30)?;
    let root = pickle::load(&pkl).map_err(|e| bad(path, format!("unreadable pickle: {e}")))?;
    let opaque_globals = root.opaque_globals();
    let found = |v: &Value| {
        let g = v.opaque_globals();
        if g.is_empty() { v.describe() } else { format!("{} (with opaque objects of {}, never imported or called)", v.describe(), g.join(", ")) }
    };
    let Value::Dict(items) = &root else {
        return Err(bad(path, format!("the checkpoint holds {} instead of a dict with a state_dict", found(&root))));
    };
    let entries: Vec<(String, String)> = items.iter().map(|(k, v)| (match k { Value::Str(s) => s.clone(), other => other.describe() }, v.describe())).collect();
    let sd = root.get("state_dict").ok_or_else(|| {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        bad(path, format!("the checkpoint has no state_dict (its entries: {}){}", keys.join(", "), if opaque_globals.is_empty() { String::new() } else { format!("; it names {} (never imported or called)", opaque_globals.join(", ")) }))
    })?;
    let Value::Dict(sd_items) = sd else {
        return Err(bad(path, format!("state_dict is {}, not a dict of tensors", found(sd))));
    };
    let mut refs: BTreeMap<String, TensorRef> = BTreeMap::new();
    for (k, v) in sd_items {
        let (Value::Str(k), Value::Tensor(t)) = (k, v) else {
            return Err(bad(path, format!("state_dict entry {} is {}, not a tensor", k.describe(), found(v))));
        };
        fits_storage(t).map_err(|e| bad(path, format!("state_dict entry {k}: {e}")))?;
        let short = k.strip_prefix("module.").unwrap_or(k);
        if refs.insert(short.to_string(), t.clone()).is_some() {
            return Err(bad(path, format!("state_dict holds {short} twice (with and without the module. prefix)")));
        }
    }
    let shapes: BTreeMap<String, Vec<usize>> = refs.iter().map(|(k, t)| (k.clone(), t.size.clone())).collect();
    let (config, num_classes) = infer_config(&shapes, path)?;
    let normed = config.classifier == ClassifierKind::Normed;
    let (mut tensors, mut skipped, mut storages) = (BTreeMap::new(), Vec::new(), BTreeMap::new());
    for (k, t) in &refs {
        match our_name(k, normed) {
            Some(name) => {
                let tensor = archive.tensor(t, &mut storages)?;
                let tensor = if tensor.kind() == Kind::Float { tensor } else { tensor.f_to_kind(Kind::Float)? };
                tensors.insert(name, tensor);
            }
            None if k.ends_with("num_batches_tracked") => skipped.push(k.clone()),
            None => return Err(bad(path, format!("state_dict key {k} has no counterpart in our {:?} network", config.arch))),
        }
    }
    let best_acc1 = match root.get("best_acc1") {
        Some(Value::Float(f)) => Some(*f),
        Some(Value::Int(i)) => Some(*i as f64),
        Some(Value::Tensor(t)) if t.size.iter().all(|&n| n == 1) => Some(archive.tensor(t, &mut storages)?.f_to_kind(Kind::Double)?.f_double_value(&[])?),
        _ => None,
    };
    let epoch = match root.get("epoch") {
        Some(Value::Int(e)) => Some(*e),
        _ => None,
    };
    let arch_name = match root.get("arch") {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(ImportedCheckpoint { config, num_classes, tensors, epoch, best_acc1, arch_name, entries, opaque_globals, skipped })
}

impl ImportedCheckpoint {
    /// Our network with these weights, on `device`.
    ///
    /// # Errors
    /// [`ProcoError::Data`] naming `path` when a variable of our network is missing from the
    /// checkpoint or has another shape.
    pub fn network(&self, device: Device, path: &Path) -> Result<TwoBranchNet> {
        let net = TwoBranchNet::new(&self.config, self.num_classes, device)?;
        let mut missing = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in net.vs.variables() {
                match self.tensors.get(&name) {
                    Some(t) if t.size() == var.size() => {
                        var.f_copy_(t)?;
                    }
                    Some(t) => return Err(bad(path, format!("{name}: the checkpoint's tensor has shape {:?}, our network's {:?}", t.size(), var.size()))),
                    None => missing.push(name),
                }
            }
            Ok(())
        })?;
        if !missing.is_empty() {
            missing.sort();
            return Err(bad(path, format!("the checkpoint lacks {} of our variables: {}", missing.len(), missing.join(", "))));
        }
        let unused: Vec<&String> = self.tensors.keys().filter(|k| !net.vs.variables().contains_key(*k)).collect();
        if !unused.is_empty() {
            return Err(bad(path, format!("checkpoint tensors without a place in our network: {unused:?}")));
        }
        // copy_ keeps each variable's own (channels-last) layout.
        Ok(net)
    }
}
