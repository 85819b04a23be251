//! Memory-mapped safetensors: the one place in the crate where `unsafe` is allowed.
//!
//! Mapping a 13 GB Llama-2-7B checkpoint instead of reading it keeps the host from holding
//! the file and the tensors at once. The test compares every tensor with the safe path
//! (`candle_core::safetensors::load`, which reads the file into memory).
#![allow(unsafe_code)]

use candle_core::safetensors::MmapedSafetensors;
use std::path::PathBuf;

/// Maps the safetensors shards `paths` (a single file, or every shard of a sharded
/// checkpoint).
///
/// # Errors
/// A file that cannot be opened, or whose header is not valid safetensors (a truncated
/// file, say).
pub fn map(paths: &[PathBuf]) -> candle_core::Result<MmapedSafetensors> {
    // SAFETY: `MmapedSafetensors::multi` maps the files read-only. Mapping is unsound only if
    // another process truncates or rewrites a file while it is mapped; model files in the
    // Hugging Face cache or a model folder are written once and not changed in place, which is
    // the same contract candle's own examples and mistral.rs rely on.
    unsafe { MmapedSafetensors::multi(paths) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    #[test]
    fn mapped_tensors_equal_the_safe_read() -> candle_core::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.safetensors");
        let device = Device::Cpu;
        let tensors: HashMap<String, Tensor> = [
            (
                "a".to_string(),
                Tensor::arange(0f32, 24., &device)?.reshape((2, 3, 4))?,
            ),
            ("b".to_string(), Tensor::ones((5,), DType::BF16, &device)?),
        ]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&tensors, &path)?;
        let mapped = map(std::slice::from_ref(&path))?;
        let read = candle_core::safetensors::load(&path, &device)?;
        for (name, t) in &read {
            let m = mapped.load(name, &device)?;
            assert_eq!(m.dims(), t.dims());
            assert_eq!(m.dtype(), t.dtype());
            let diff = (m.to_dtype(DType::F32)? - t.to_dtype(DType::F32)?)?
                .abs()?
                .sum_all()?;
            assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        }
        Ok(())
    }
}
