//! Every image of a dataset decoded once, before a long run, with every problem collected
//! instead of the first one stopping the scan.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::data::Dataset;
use crate::error::ProcoError;

/// Decodes every sample of `dataset` on `threads` threads (at least one) and returns the
/// failures as (sample index, error), in index order. `progress` is called with the number
/// of samples done so far (from any thread, at least every 64 samples and at the end).
pub fn scan_images(dataset: &dyn Dataset, threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Vec<(usize, ProcoError)> {
    let done = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    crate::parallel::for_each_chunk(dataset.len(), 64, threads, &|range| {
        let mut found = Vec::new();
        for i in range.clone() {
            // A decoder panic on hostile data is a problem of that file, not of the scan.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dataset.image(i))) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => found.push((i, e)),
                Err(_) => found.push((i, ProcoError::Data { path: dataset.describe(i).into(), reason: "the decoder failed on this file (it panicked); replace the file or remove it from the dataset".into() })),
            }
        }
        if !found.is_empty() {
            problems.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
        }
        progress(done.fetch_add(range.len(), Ordering::Relaxed) + range.len());
    });
    let mut problems = problems.into_inner().unwrap_or_else(|p| p.into_inner());
    problems.sort_by_key(|(i, _)| *i);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use image::RgbImage;

    /// Sample i fails when i is a multiple of 7.
    struct Flaky(usize);

    impl Dataset for Flaky {
        fn len(&self) -> usize {
            self.0
        }
        fn num_classes(&self) -> usize {
            1
        }
        fn label(&self, _: usize) -> usize {
            0
        }
        fn image(&self, i: usize) -> Result<RgbImage> {
            if i % 7 == 0 {
                Err(ProcoError::InvalidConfig { reason: format!("bad {i}") })
            } else {
                Ok(RgbImage::new(1, 1))
            }
        }
    }

    #[test]
    fn every_failure_is_reported_in_order_whatever_the_threads() {
        for threads in [1, 3] {
            let last = AtomicUsize::new(0);
            let found = scan_images(&Flaky(300), threads, &|d| {
                last.fetch_max(d, Ordering::Relaxed);
            });
            assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..300).step_by(7).collect::<Vec<_>>());
            assert_eq!(last.load(Ordering::Relaxed), 300);
        }
        assert!(scan_images(&Flaky(0), 2, &|_| {}).is_empty());
    }
}
