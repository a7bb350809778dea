//! A first-in first-out memory of earlier steps' contrastive features and their labels: the
//! optional queue that SupCon contrasts each batch against (as MoCo-style queues do), so that
//! a small batch still meets many negatives. Queued rows are detached: they enter the loss as
//! constants ([`ContrastSet`]) and get no gradient.
//!
//! The queue is part of a run's state: it is saved with every checkpoint and restored on
//! resume, so that a resumed run contrasts against exactly the rows the uninterrupted one did.

use tch::{Device, Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::loss::ContrastSet;

/// A FIFO of at most `capacity` unit feature rows (dimension `dim`) with their class labels,
/// oldest row first.
#[derive(Debug)]
pub struct FeatureQueue {
    capacity: usize,
    dim: usize,
    device: Device,
    /// `len x dim` features and `len` int64 labels, oldest first; `None` while empty (the
    /// first push fixes the features' kind).
    rows: Option<(Tensor, Tensor)>,
}

impl FeatureQueue {
    /// An empty queue of up to `capacity` rows (>= 1) of dimension `dim` (>= 1), kept on
    /// `device`.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a zero capacity or dimension.
    pub fn new(capacity: usize, dim: usize, device: Device) -> Result<Self> {
        if capacity == 0 || dim == 0 {
            return Err(ProcoError::InvalidConfig { reason: format!("a feature queue needs capacity {capacity} >= 1 and dimension {dim} >= 1") });
        }
        Ok(Self { capacity, dim, device, rows: None })
    }

    /// Most rows held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.rows.as_ref().map_or(0, |(f, _)| f.size()[0] as usize)
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The held rows as extra contrast samples; `None` while the queue is empty.
    pub fn contrast_set(&self) -> Option<ContrastSet<'_>> {
        self.rows.as_ref().map(|(features, labels)| ContrastSet { features, labels })
    }

    /// Appends `features` (K x dim, detached here) with their `labels` (K int64), dropping the
    /// oldest rows beyond the capacity (of a push larger than the capacity, its last
    /// `capacity` rows stay).
    ///
    /// # Errors
    /// [`ProcoError::InvalidFeatures`] / [`ProcoError::InvalidLabels`] for a shape that does
    /// not match the queue or the features, or labels that are not int64.
    pub fn push(&mut self, features: &Tensor, labels: &Tensor) -> Result<()> {
        let k = self.check_rows(features, labels)?;
        if k == 0 {
            return Ok(());
        }
        let features = features.f_detach()?.f_to_device(self.device)?;
        let labels = labels.f_detach()?.f_to_device(self.device)?;
        let (features, labels) = match &self.rows {
            Some((f, l)) => (Tensor::f_cat(&[f, &features.f_to_kind(f.kind())?], 0)?, Tensor::f_cat(&[l, &labels], 0)?),
            None => (features, labels),
        };
        let len = features.size()[0];
        let keep = len.min(self.capacity as i64);
        // Contiguous copies: the queue owns its memory, never a view of a step's features.
        let own = |t: &Tensor| -> Result<Tensor> {
            let kept = t.f_narrow(0, len - keep, keep)?;
            let mut copy = kept.f_empty_like()?;
            copy.f_copy_(&kept)?;
            Ok(copy)
        };
        self.rows = Some((own(&features)?, own(&labels)?));
        Ok(())
    }

    /// The held features and labels as CPU tensors (`len x dim`, `len`), for a checkpoint; an
    /// empty queue gives 0-row f32 features.
    ///
    /// # Errors
    /// A LibTorch error copying to the host.
    pub fn to_host(&self) -> Result<(Tensor, Tensor)> {
        match &self.rows {
            Some((f, l)) => Ok((f.f_to_device(Device::Cpu)?, l.f_to_device(Device::Cpu)?)),
            None => Ok((Tensor::f_zeros([0, self.dim as i64], (Kind::Float, Device::Cpu))?, Tensor::f_zeros([0], (Kind::Int64, Device::Cpu))?)),
        }
    }

    /// Replaces the held rows with `features` and `labels` as [`Self::to_host`] gave them.
    ///
    /// # Errors
    /// [`ProcoError::InvalidFeatures`] / [`ProcoError::InvalidLabels`] for shapes that do not
    /// match the queue, or more rows than its capacity (a queue saved by another recipe).
    pub fn restore(&mut self, features: &Tensor, labels: &Tensor) -> Result<()> {
        let k = self.check_rows(features, labels)?;
        if k > self.capacity {
            return Err(ProcoError::InvalidFeatures { reason: format!("{k} saved queue rows exceed the queue's capacity of {}", self.capacity) });
        }
        self.rows = None;
        self.push(features, labels)
    }

    /// Checks a K x dim feature matrix beside K int64 labels; returns K.
    fn check_rows(&self, features: &Tensor, labels: &Tensor) -> Result<usize> {
        let size = features.size();
        let [k, p] = size.as_slice() else {
            return Err(ProcoError::InvalidFeatures { reason: format!("queue rows must be K x {}, got shape {size:?}", self.dim) });
        };
        if *p != self.dim as i64 || !matches!(features.kind(), Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half) {
            return Err(ProcoError::InvalidFeatures { reason: format!("queue rows must be floating-point K x {}, got {:?} of shape {size:?}", self.dim, features.kind()) });
        }
        if labels.kind() != Kind::Int64 || labels.size() != [*k] {
            return Err(ProcoError::InvalidLabels { reason: format!("queue labels must be {k} int64 class indices, got {:?} of shape {:?}", labels.kind(), labels.size()) });
        }
        Ok(*k as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f32], dim: i64) -> Tensor {
        Tensor::from_slice(values).view([-1, dim])
    }

    fn held(q: &FeatureQueue) -> (Vec<f32>, Vec<i64>) {
        let (f, l) = q.to_host().unwrap();
        (Vec::<f32>::try_from(&f.flatten(0, -1)).unwrap(), Vec::<i64>::try_from(&l).unwrap())
    }

    #[test]
    fn keeps_the_newest_rows_oldest_first() {
        let mut q = FeatureQueue::new(3, 1, Device::Cpu).unwrap();
        assert!(q.is_empty() && q.contrast_set().is_none());
        q.push(&rows(&[1.0, 2.0], 1), &Tensor::from_slice(&[10i64, 20])).unwrap();
        assert_eq!(held(&q), (vec![1.0, 2.0], vec![10, 20]));
        q.push(&rows(&[3.0, 4.0], 1), &Tensor::from_slice(&[30i64, 40])).unwrap();
        assert_eq!(held(&q), (vec![2.0, 3.0, 4.0], vec![20, 30, 40]));
        // A push larger than the capacity keeps its own last rows.
        q.push(&rows(&[5.0, 6.0, 7.0, 8.0], 1), &Tensor::from_slice(&[5i64, 6, 7, 8])).unwrap();
        assert_eq!(held(&q), (vec![6.0, 7.0, 8.0], vec![6, 7, 8]));
        assert_eq!(q.len(), 3);
        assert_eq!(q.contrast_set().unwrap().features.size(), [3, 1]);
    }

    #[test]
    fn rows_are_detached_copies() {
        let mut q = FeatureQueue::new(4, 2, Device::Cpu).unwrap();
        let z = rows(&[0.6, 0.8, 1.0, 0.0], 2).set_requires_grad(true);
        q.push(&z, &Tensor::from_slice(&[0i64, 1])).unwrap();
        let set = q.contrast_set().unwrap();
        assert!(!set.features.requires_grad());
        tch::no_grad(|| {
            let _ = z.shallow_clone().fill_(9.0);
        });
        assert_eq!(held(&q).0, vec![0.6, 0.8, 1.0, 0.0], "the queue does not alias the step's features");
    }

    #[test]
    fn restores_what_it_saved() {
        let mut q = FeatureQueue::new(4, 2, Device::Cpu).unwrap();
        let (f0, l0) = q.to_host().unwrap();
        assert_eq!(f0.size(), [0, 2]);
        q.push(&rows(&[0.6, 0.8, 1.0, 0.0, 0.0, 1.0], 2), &Tensor::from_slice(&[2i64, 1, 0])).unwrap();
        let (f, l) = q.to_host().unwrap();
        let mut r = FeatureQueue::new(4, 2, Device::Cpu).unwrap();
        r.restore(&f, &l).unwrap();
        assert_eq!(held(&r), held(&q));
        r.restore(&f0, &l0).unwrap();
        assert!(r.is_empty());
        let mut small = FeatureQueue::new(2, 2, Device::Cpu).unwrap();
        assert!(small.restore(&f, &l).unwrap_err().to_string().contains("exceed the queue's capacity of 2"));
    }

    #[test]
    fn bad_rows_are_errors() {
        let mut q = FeatureQueue::new(4, 2, Device::Cpu).unwrap();
        assert!(FeatureQueue::new(0, 2, Device::Cpu).is_err());
        assert!(q.push(&rows(&[1.0, 0.0, 0.0], 3), &Tensor::from_slice(&[0i64])).is_err(), "dimension");
        assert!(q.push(&rows(&[1.0, 0.0], 2), &Tensor::from_slice(&[0i64, 1])).is_err(), "label count");
        assert!(q.push(&rows(&[1.0, 0.0], 2), &Tensor::from_slice(&[0i32])).is_err(), "label kind");
        assert!(q.push(&Tensor::from_slice(&[1i64, 0]).view([1, 2]), &Tensor::from_slice(&[0i64])).is_err(), "feature kind");
        assert!(q.is_empty());
    }
}
