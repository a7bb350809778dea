//! Process-wide memory-allocator settings for training.
//!
//! Why: a training step allocates and frees the same large activation buffers every step
//! (ResNet-32 at batch 256 with three views: tensors of 50 MB and more). glibc's malloc serves
//! requests above its mmap threshold (at most 32 MiB) with fresh `mmap`s and returns them with
//! `munmap` on free, and trims the heap top back to the system; so every step page-faults and
//! zero-fills its activations again, which costs ~30% of a CPU training step here
//! (BENCHMARKS.md). Keeping freed memory in the heap makes the steady state fault-free. The
//! price is resident memory: freed buffers stay mapped, and fragmentation of the heap adds to
//! the step's high-water mark (ResNet-32 at batch 256: peak RSS 3.0 GiB -> 3.6-4.6 GiB).

/// Tells glibc's malloc to serve every size from the heap and to trim it only when 2 GiB lie
/// free at its top, so freed buffers are reused rather than unmapped, and to keep one arena
/// for all threads: a thread's own arena grows in 64 MiB heaps, so a larger block allocated
/// there (a loader thread's batch of three 224 px views, 115 MB at batch 64) falls back to a
/// fresh `mmap` whatever the settings, and every batch page-faults and zero-fills anew
/// (measured: 7% of the ImageNet three-view pipeline in the kernel). Allocations here are few
/// and large, so one arena's lock costs nothing measurable. Call once, early in `main`. Returns whether the
/// settings were applied: true on Linux with glibc, false elsewhere (a no-op; other
/// allocators manage this themselves).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4, M_ARENA_MAX = -8.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        const M_ARENA_MAX: c_int = -8;
        // SAFETY: mallopt only changes allocator parameters; the values are valid for them.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 && mallopt(M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    // Changes the allocator of this whole test binary, which is harmless: only when memory
    // goes back to the system changes, not what any allocation returns.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn settings_are_accepted_on_glibc() {
        assert!(super::retain_freed_memory());
        let big = vec![1u8; 64 << 20];
        assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    }
}
