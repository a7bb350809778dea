//! Threaded, prefetching batch loader: a per-epoch sampler, per-sample seeded augmentation
//! into one f32 buffer per batch, and batches delivered in order.
//!
//! Reproducibility: the sample order of epoch e comes from a generator seeded with
//! (seed, e), and the augmentation of sample i in epoch e from one seeded with (seed, e, i), so
//! a run gives the same batches whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::data::decode::DecodedImage;
use crate::data::Dataset;
use crate::error::{ProcoError, Result};

/// Turns one image into `views()` normalised f32 CHW views of `height() x width()`.
pub trait SampleTransform: Send + Sync {
    /// Number of views produced per image (3 for ProCo: classification + two contrastive).
    fn views(&self) -> usize;
    /// Output height in pixels.
    fn height(&self) -> usize;
    /// Output width in pixels.
    fn width(&self) -> usize;
    /// Writes view v of `img` into `out[v]`, each a 3 x H x W slice.
    fn apply(&self, img: &RgbImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()>;
    /// The largest reduction (1, 2, 4 or 8) of a stored `width` x `height` image from which
    /// [`SampleTransform::apply_decoded`] still makes every view by downscaling alone, for
    /// the sample whose generator `rng` is (as `apply_decoded` will receive it; not advanced).
    /// The default, 1, asks for full-size images.
    fn reduction(&self, width: u32, height: u32, rng: &StdRng) -> u32 {
        let _ = (width, height, rng);
        1
    }
    /// [`SampleTransform::apply`] on an image decoded at a reduction that
    /// [`SampleTransform::reduction`] allowed. The default takes full-size images only.
    ///
    /// # Errors
    /// As `apply`; [`ProcoError::InvalidImages`] for a reduced image where the transform
    /// asked for none.
    fn apply_decoded(&self, img: &DecodedImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        if img.reduction != 1 {
            return Err(ProcoError::InvalidImages { reason: format!("this transform takes full-size images, got one decoded at 1/{}", img.reduction) });
        }
        self.apply(&img.pixels, rng, out)
    }
}

/// How batches are formed.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Drop the last incomplete batch (as the ProCo recipe does).
    pub drop_last: bool,
    /// Shuffle the sample order every epoch (training) or keep it (evaluation).
    pub shuffle: bool,
    /// Seed of the sampler and of the augmentation.
    pub seed: u64,
    /// Worker threads preparing batches.
    pub threads: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Decode JPEGs at a reduced scale in the DCT domain where the transform allows it (see
    /// [`SampleTransform::reduction`]); off, every image is decoded in full, as torchvision
    /// does.
    pub reduced_decode: bool,
    /// This process's part of every batch in data-parallel training: `Shard { rank, world }`
    /// takes the rank-th of `world` contiguous, near-equal slices of each batch of
    /// `batch_size` samples (the global batch), so the ranks together see exactly the
    /// batches of one process. [`Shard::WHOLE`] is the whole batch.
    pub shard: Shard,
}

/// One rank's slice of every batch (see [`LoaderConfig::shard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based rank.
    pub rank: usize,
    /// Number of ranks (at least 1).
    pub world: usize,
}

impl Shard {
    /// The whole batch: one process.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// The positions of this rank's samples in a batch of `len`.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let world = self.world.max(1);
        len * self.rank / world..len * (self.rank + 1) / world
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self { batch_size: 256, drop_last: true, shuffle: true, seed: 0, threads: 2, prefetch: 4, reduced_decode: true, shard: Shard::WHOLE }
    }
}

/// One batch: `views` is [V, N, 3, H, W] f32, `labels` is [N] int64, `indices` the dataset
/// indices of the samples.
#[derive(Debug)]
pub struct Batch {
    /// Augmented, normalised images.
    pub views: Tensor,
    /// Class labels.
    pub labels: Tensor,
    /// Which dataset samples are in the batch.
    pub indices: Vec<usize>,
}

/// A loader over a dataset with a transform (both shared with the worker threads; dynamic
/// dispatch costs nothing next to decoding and augmenting an image).
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    transform: Arc<dyn SampleTransform>,
    config: LoaderConfig,
}

/// splitmix64: decorrelates the (seed, epoch, index) triples used as generator seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator of sample `index` in `epoch`.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ epoch) ^ index as u64))
}

impl Loader {
    /// A loader; fails on a zero batch size or thread count, or a batch larger than the dataset
    /// with `drop_last` (which would yield nothing).
    pub fn new(dataset: Arc<dyn Dataset>, transform: Arc<dyn SampleTransform>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 || config.threads == 0 {
            return Err(ProcoError::InvalidConfig { reason: "batch size and thread count must be at least 1".into() });
        }
        if config.shard.world == 0 || config.shard.rank >= config.shard.world {
            return Err(ProcoError::InvalidConfig { reason: format!("rank {} is outside a world of {}", config.shard.rank, config.shard.world) });
        }
        if config.drop_last && config.batch_size > dataset.len() {
            return Err(ProcoError::InvalidConfig {
                reason: format!("batch size {} exceeds the {} samples of the dataset, so drop_last leaves no batch", config.batch_size, dataset.len()),
            });
        }
        Ok(Self { dataset, transform, config })
    }

    /// The (global) batch size.
    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// Number of batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(mix(mix(self.config.seed) ^ epoch ^ 0x5a5a_5a5a)));
        }
        order
    }

    /// Starts the workers for `epoch` and returns the batches in order.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let order = Arc::new(self.order(epoch));
        let batches = self.batches_per_epoch();
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<(usize, Result<Batch>)>(self.config.prefetch.max(1));
        let workers = (0..self.config.threads.min(batches.max(1)))
            .map(|k| {
                let (dataset, transform, order, next, stop, tx) =
                    (self.dataset.clone(), self.transform.clone(), order.clone(), next.clone(), stop.clone(), tx.clone());
                let (bs, seed, reduced_decode, shard) = (self.config.batch_size, self.config.seed, self.config.reduced_decode, self.config.shard);
                // Named, so that `top -H` and profilers tell the loader's threads apart.
                let builder = std::thread::Builder::new().name(format!("proco-loader-{k}"));
                let work = move || loop {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= batches || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let batch = &order[b * bs..((b + 1) * bs).min(order.len())];
                    let idx = &batch[shard.range(batch.len())];
                    // A panicking transform must surface as an error of this batch, not as a
                    // silently missing batch.
                    let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_batch(&*dataset, &*transform, idx, seed, epoch, reduced_decode)))
                        .unwrap_or_else(|panic| {
                            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                            Err(ProcoError::InvalidConfig { reason: format!("preparing batch {b} panicked: {what}") })
                        });
                    let failed = batch.is_err();
                    if tx.send((b, batch)).is_err() || failed {
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                // As std::thread::spawn: a thread that cannot be created is a panic.
                builder.spawn(work).expect("the system refused to create a loader thread")
            })
            .collect();
        EpochBatches { rx, pending: BTreeMap::new(), next: 0, total: batches, stop, workers }
    }
}

fn build_batch(dataset: &dyn Dataset, transform: &dyn SampleTransform, idx: &[usize], seed: u64, epoch: u64, reduced_decode: bool) -> Result<Batch> {
    let (v, h, w, n) = (transform.views(), transform.height(), transform.width(), idx.len());
    let per_view = 3 * h * w;
    // The transforms write straight into the batch tensor's storage: no staging buffer and
    // no copy into LibTorch afterwards. Allocated empty and zeroed here, on this thread:
    // LibTorch's own fill would run on an OpenMP team of this loader thread, whose workers
    // then spin for milliseconds on the cores the other loader threads need.
    let views = Tensor::f_empty([v as i64, n as i64, 3, h as i64, w as i64], (Kind::Float, Device::Cpu))?;
    let len = v * n * per_view;
    let labels: Vec<i64> = idx.iter().map(|&i| dataset.label(i) as i64).collect();
    if len > 0 {
        let data = views.data_ptr() as *mut f32;
        for (s, &i) in idx.iter().enumerate() {
            // Layout [V, N, 3, H, W]: view k of sample s starts at (k * n + s) * per_view.
            // Each sample's chunks are zeroed just before its transform writes them, so the
            // zeros are still in cache when they are overwritten (zeroing the whole batch
            // first sent every byte to memory twice).
            let mut out: Vec<&mut [f32]> = (0..v)
                .map(|k| {
                    // SAFETY: `views` is a freshly allocated, contiguous CPU f32 tensor of
                    // exactly `len` = v * n * per_view elements that nothing else references;
                    // chunk (k, s) lies inside it and is disjoint from every other chunk. It is
                    // zeroed through the raw pointer first (all-zero bytes are the f32 0.0), so
                    // the slice views initialised values; it lives only in this iteration,
                    // before `views` is moved out.
                    unsafe {
                        let chunk = data.add((k * n + s) * per_view);
                        std::ptr::write_bytes(chunk, 0, per_view);
                        std::slice::from_raw_parts_mut(chunk, per_view)
                    }
                })
                .collect();
            // A decoder or transform that panics on one sample is an error naming that sample.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
                let mut rng = sample_rng(seed, epoch, i);
                if reduced_decode {
                    let img = dataset.image_reduced(i, &|w, h| transform.reduction(w, h, &rng))?;
                    transform.apply_decoded(&img, &mut rng, &mut out)
                } else {
                    transform.apply(&dataset.image(i)?, &mut rng, &mut out)
                }
            }))
            .unwrap_or_else(|panic| {
                let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                Err(ProcoError::Data { path: dataset.describe(i).into(), reason: format!("preparing this sample panicked ({what}); replace the file or remove it from the dataset") })
            })?;
        }
    }
    Ok(Batch { views, labels: Tensor::f_from_slice(&labels)?, indices: idx.to_vec() })
}

/// The batches of one epoch, in order; dropping it stops the workers.
pub struct EpochBatches {
    rx: Receiver<(usize, Result<Batch>)>,
    pending: BTreeMap<usize, Result<Batch>>,
    next: usize,
    total: usize,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl EpochBatches {
    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(b);
            }
            match self.rx.recv() {
                Ok((_, Err(e))) => {
                    // Report a failed batch at once; the epoch ends with it.
                    self.next = self.total;
                    return Some(Err(e));
                }
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    self.next = self.total;
                    return Some(Err(ProcoError::InvalidConfig { reason: "a loader worker stopped unexpectedly".into() }));
                }
            }
        }
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock workers waiting on a full channel, then join them.
        while self.rx.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            while !w.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::InMemoryDataset;
    use rand::Rng;

    /// Writes the pixel values plus a random offset: exercises layout and per-sample seeding.
    struct Jitter;

    impl SampleTransform for Jitter {
        fn views(&self) -> usize {
            2
        }
        fn height(&self) -> usize {
            2
        }
        fn width(&self) -> usize {
            2
        }
        fn apply(&self, img: &RgbImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
            for (v, o) in out.iter_mut().enumerate() {
                for (k, x) in o.iter_mut().enumerate() {
                    *x = img.as_raw()[k % 12] as f32 + v as f32 * 1000.0 + rng.random::<f32>();
                }
            }
            Ok(())
        }
    }

    fn dataset(n: usize) -> Arc<InMemoryDataset> {
        let pixels: Vec<u8> = (0..n * 12).map(|i| (i / 12) as u8).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        Arc::new(InMemoryDataset::new(2, 2, pixels, labels, 3).unwrap())
    }

    fn collect(threads: usize, epoch: u64) -> Vec<(Vec<f32>, Vec<i64>, Vec<usize>)> {
        let config = LoaderConfig { batch_size: 4, drop_last: true, shuffle: true, seed: 9, threads, prefetch: 2, reduced_decode: true, shard: Shard::WHOLE };
        let loader = Loader::new(dataset(10), Arc::new(Jitter), config).unwrap();
        loader
            .epoch(epoch)
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.views.size(), [2, 4, 3, 2, 2]);
                (Vec::<f32>::try_from(&b.views.flatten(0, -1)).unwrap(), Vec::<i64>::try_from(&b.labels).unwrap(), b.indices)
            })
            .collect()
    }

    #[test]
    fn same_batches_whatever_the_thread_count() {
        let one = collect(1, 3);
        assert_eq!(one.len(), 2, "10 samples, batch 4, drop_last");
        assert_eq!(one, collect(3, 3));
        assert_ne!(one, collect(1, 4), "a new epoch reshuffles and re-augments");
        for (views, labels, indices) in &one {
            for (s, &i) in indices.iter().enumerate() {
                assert_eq!(labels[s], (i % 3) as i64);
                // View 1 of sample s starts at (1 * 4 + s) * 12 and holds pixel value i + 1000 + noise.
                let x = views[(4 + s) * 12];
                assert!(x >= i as f32 + 1000.0 && x < i as f32 + 1001.0, "{x} for sample {i}");
            }
        }
    }

    #[test]
    fn shards_split_every_batch_into_the_whole_batch() {
        // 10 samples, batch 4 (drop_last): each of 3 ranks gets its slice of each batch, the
        // same samples with the same augmentation as one process.
        let whole = collect(1, 3);
        let shards: Vec<Vec<Vec<usize>>> = (0..3)
            .map(|rank| {
                let config = LoaderConfig { batch_size: 4, drop_last: true, shuffle: true, seed: 9, threads: 2, prefetch: 2, reduced_decode: true, shard: Shard { rank, world: 3 } };
                let loader = Loader::new(dataset(10), Arc::new(Jitter), config).unwrap();
                loader
                    .epoch(3)
                    .zip(&whole)
                    .map(|(b, (views, _, indices))| {
                        let b = b.unwrap();
                        let r = Shard { rank, world: 3 }.range(4);
                        assert_eq!(b.indices, indices[r.clone()]);
                        // The view-0 pixels of this rank's samples are the whole batch's.
                        let mine = Vec::<f32>::try_from(&b.views.select(0, 0).flatten(0, -1)).unwrap();
                        assert_eq!(mine, views[r.start * 12..r.end * 12]);
                        b.indices
                    })
                    .collect()
            })
            .collect();
        for (k, (_, _, indices)) in whole.iter().enumerate() {
            let joined: Vec<usize> = shards.iter().flat_map(|s| s[k].clone()).collect();
            assert_eq!(&joined, indices, "batch {k}");
        }
        assert_eq!(Shard { rank: 1, world: 3 }.range(4), 1..2);
        assert!(Loader::new(dataset(10), Arc::new(Jitter), LoaderConfig { batch_size: 4, shard: Shard { rank: 2, world: 2 }, ..LoaderConfig::default() }).is_err());
    }

    /// Panics on the sample with dataset index 5.
    struct Faulty;

    impl SampleTransform for Faulty {
        fn views(&self) -> usize {
            1
        }
        fn height(&self) -> usize {
            2
        }
        fn width(&self) -> usize {
            2
        }
        fn apply(&self, img: &RgbImage, _rng: &mut StdRng, _out: &mut [&mut [f32]]) -> Result<()> {
            assert!(img.as_raw()[0] != 5, "bad sample");
            Ok(())
        }
    }

    #[test]
    fn a_panicking_transform_is_an_error_not_a_hang() {
        let config = LoaderConfig { batch_size: 2, drop_last: false, shuffle: false, seed: 0, threads: 2, prefetch: 1, reduced_decode: true, shard: Shard::WHOLE };
        let loader = Loader::new(dataset(10), Arc::new(Faulty), config).unwrap();
        let results: Vec<_> = loader.epoch(0).collect();
        let err = results.iter().find_map(|r| r.as_ref().err()).expect("an error").to_string();
        assert!(err.contains("bad sample") && err.contains("sample 5"), "{err}");
    }

    #[test]
    fn keeps_the_last_partial_batch_when_asked() {
        let config = LoaderConfig { batch_size: 4, drop_last: false, shuffle: false, seed: 0, threads: 2, prefetch: 1, reduced_decode: true, shard: Shard::WHOLE };
        let loader = Loader::new(dataset(10), Arc::new(Jitter), config).unwrap();
        let sizes: Vec<usize> = loader.epoch(0).map(|b| b.unwrap().indices.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let early = loader.epoch(1).next();
        assert!(early.is_some(), "dropping an epoch after one batch must not hang");
        assert!(Loader::new(dataset(3), Arc::new(Jitter), LoaderConfig { batch_size: 4, ..LoaderConfig::default() }).is_err());
    }
}
