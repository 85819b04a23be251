//! glibc malloc settings for the forward and backward passes' large, short-lived buffers.
//!
//! glibc serves every allocation above its mmap threshold (128 KiB at start, raised
//! dynamically up to 32 MiB as mmapped chunks are freed) with a fresh `mmap`, unmaps it when
//! it is freed, and trims the heap's free top back to the system past a trim threshold. A
//! training step allocates and frees hundreds of activations and gradients of 1 to 50 MB;
//! each new one page-faults in (the kernel zeroes every page) and each unmap costs a TLB
//! shootdown on every core, expensive in a VM. Fixing the mmap threshold at its maximum (32
//! MiB, so the dynamic rule no longer moves it) and never trimming keeps freed buffers in the
//! heap for the next pass. On SmolLM2-135M LoRA steps (`examples/bench_train`, seq 256, 2
//! cores of an AMD EPYC Zen 4) this took a step from 1.87–2.12 s to 1.48–1.59 s, the backward
//! from 1.21–1.43 s to 0.86–0.93 s, at the same peak RSS (1.61 GB); either setting alone was
//! slower than neither (glibc's `mallopt(3)`: setting one turns off the dynamic threshold).
//! Inference gains too: raising the threshold alone had taken SmolLM2-135M's PubMedQA
//! loglikelihood (8 items, from a Hugging Face folder) from 654k page faults and 1.33 items/s
//! to 183k and 1.57.
//!
//! The one module besides the kernels where `unsafe` is allowed: the `mallopt` call.
#![allow(unsafe_code)]

/// The largest mmap threshold glibc accepts on 64-bit targets (`HEAP_MAX_SIZE / 2`), bytes.
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Keeps freed buffers below 32 MiB in the heap for reuse and never trims the heap, with
/// glibc's `mallopt(M_MMAP_THRESHOLD)` and `mallopt(M_TRIM_THRESHOLD)`, unless the user set
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` (glibc's own environment knobs).
/// Returns whether both settings took. Does nothing (returns `false`) with another C
/// library. Call it at the start of `main`, before other threads allocate.
pub fn keep_freed_buffers() -> bool {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
    {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = MMAP_THRESHOLD;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_settings() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        {
            assert!(super::keep_freed_buffers());
        }
    }
}
