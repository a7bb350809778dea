//! One work-sharing loop for the library's CPU-parallel scans (decoding a whole dataset,
//! decoding benchmarks): scoped threads take the next chunk of indices as they finish one.
//! Hand-written because it is a dozen lines over `std::thread::scope`; a thread-pool crate
//! would add a second pool beside the loader's threads and LibTorch's.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls `work` on the chunks `0..chunk`, `chunk..2 chunk`, ... of `0..n` (the last one
/// shorter), each exactly once, from `threads` scoped threads (at least one, and no more than
/// there are chunks), and returns when all are done. A `chunk` of 0 counts as 1. A panic in
/// `work` propagates to the caller once the threads have stopped, as `std::thread::scope`'s
/// do; callers that must survive one catch it inside `work`.
pub fn for_each_chunk(n: usize, chunk: usize, threads: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
    let chunk = chunk.max(1);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(n.div_ceil(chunk).max(1)) {
            scope.spawn(|| loop {
                let start = next.fetch_add(chunk, Ordering::Relaxed);
                if start >= n {
                    return;
                }
                work(start..(start + chunk).min(n));
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_index_is_visited_once() {
        for (n, chunk, threads) in [(0, 4, 2), (1, 64, 3), (100, 7, 2), (64, 64, 8), (1000, 1, 4), (10, 0, 2)] {
            let seen = Mutex::new(vec![0u32; n]);
            for_each_chunk(n, chunk, threads, &|range| {
                assert!(range.len() <= chunk.max(1) && !range.is_empty());
                let mut s = seen.lock().unwrap();
                range.for_each(|i| s[i] += 1);
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "n {n} chunk {chunk} threads {threads}");
        }
    }
}
