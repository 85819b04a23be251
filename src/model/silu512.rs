//! The MLP's `silu(gate) · up` in one pass with AVX-512, on CPUs that have it.
//!
//! candle 0.11.1 computes `silu` with a scalar `exp` per element on one thread, then the
//! product as a second pass: for SmolLM2-135M scoring a 330-token prompt that is 15 million
//! `exp` calls, serial, while the other core waits. Here `exp` is evaluated 16 lanes at a time
//! (Cephes' `expf`: `2^n · p(r)` with `r = x - n·ln 2` in two parts and a degree-5
//! polynomial, about 1 ulp), fused with the division and the product, split across candle's
//! thread pool. Results differ from candle's by a few ulp (the test bounds them).
//!
//! One of the modules where `unsafe` is allowed: the AVX-512 intrinsics and the disjoint
//! writes of the thread pool's work items.
#![allow(unsafe_code)]

/// Elements per work item.
const CHUNK: usize = 16 * 1024;

/// `N` outputs of `n` floats, filled by `f` a work item of [`CHUNK`] elements at a time on
/// candle's thread pool: `f(range, parts)` gets the item's range of `0..n` and each output's
/// floats in that range (the items' parts are disjoint).
fn for_each_chunk<const N: usize>(
    n: usize,
    f: impl Fn(std::ops::Range<usize>, [&mut [f32]; N]) + Sync,
) -> [Vec<f32>; N] {
    let mut outs: [Vec<f32>; N] = std::array::from_fn(|_| vec![0f32; n]);
    let addrs: [usize; N] = std::array::from_fn(|o| outs[o].as_mut_ptr() as usize);
    let work = |items: std::ops::Range<usize>| {
        for item in items {
            let range = item * CHUNK..((item + 1) * CHUNK).min(n);
            // SAFETY: the item's range lies inside each output (`n` floats), no other item
            // covers it, and the outputs outlive the blocking `execute_chunked`.
            let parts = addrs.map(|addr| unsafe {
                std::slice::from_raw_parts_mut((addr as *mut f32).add(range.start), range.len())
            });
            f(range, parts);
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), work);
    outs
}

/// `silu(gate[i]) · up[i]` (`silu(g) = g / (1 + e^-g)`), or `None` without AVX-512 (see
/// [`super::gemm512::available`]).
///
/// # Panics
/// When the slices differ in length.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Option<Vec<f32>> {
    if !super::gemm512::available() {
        return None;
    }
    assert_eq!(gate.len(), up.len(), "silu_mul: lengths differ");
    let [out] = for_each_chunk(gate.len(), |range, [dst]| {
        // SAFETY: AVX-512 F is available (checked above); the slices have one length.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::silu_mul(&gate[range.clone()], &up[range], dst);
        }
    });
    Some(out)
}

/// The gradients of `silu(gate[i]) · up[i]` given the output's gradient `grad`, in one pass
/// on all cores: `(∂/∂gate, ∂/∂up)` with `∂/∂gate = grad · up · σ(gate)·(1 + gate·(1 −
/// σ(gate)))` and `∂/∂up = grad · silu(gate)`; `None` without AVX-512.
///
/// # Panics
/// When the slices differ in length.
pub fn silu_mul_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    if !super::gemm512::available() {
        return None;
    }
    assert!(
        gate.len() == up.len() && up.len() == grad.len(),
        "silu_mul_backward: lengths differ"
    );
    let [d_gate, d_up] = for_each_chunk(gate.len(), |range, [d_gate, d_up]| {
        // SAFETY: AVX-512 F is available (checked above); the slices have one length.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::silu_mul_backward(
                &gate[range.clone()],
                &up[range.clone()],
                &grad[range],
                d_gate,
                d_up,
            );
        }
    });
    Some((d_gate, d_up))
}

/// `silu(gate) · up` as a candle op on two contiguous f32 CPU tensors of one shape, with its
/// backward (for training). Check [`super::gemm512::available`] before using it.
#[derive(Debug, Clone, Copy)]
pub struct SiluMul;

impl candle_core::CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        let (a, b) = (
            super::f32_slice(s1, l1, "silu-mul: gate")?,
            super::f32_slice(s2, l2, "silu-mul: up")?,
        );
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "silu-mul: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let out = silu_mul(a, b)
            .ok_or_else(|| candle_core::Error::Msg("silu-mul needs AVX-512".into()))?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// `∂/∂gate = g · up · σ(gate)·(1 + gate·(1 − σ(gate)))`, `∂/∂up = g · silu(gate)`.
    fn bwd(
        &self,
        gate: &candle_core::Tensor,
        up: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
        // Detached: gradients computed from tensors that carry a graph would carry it on.
        let (gate, up, grad) = (
            gate.detach().contiguous()?,
            up.detach().contiguous()?,
            grad.detach().contiguous()?,
        );
        let guards = [&gate, &up, &grad].map(|t| t.storage_and_layout());
        let slices = guards
            .iter()
            .map(|(storage, layout)| {
                super::tensor_f32(storage, layout, "silu-mul backward: an input")
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (d_gate, d_up) = silu_mul_backward(slices[0], slices[1], slices[2])
            .ok_or_else(|| candle_core::Error::Msg("silu-mul needs AVX-512".into()))?;
        let (d_gate, d_up) = (
            candle_core::Tensor::from_vec(d_gate, gate.shape(), gate.device())?,
            candle_core::Tensor::from_vec(d_up, up.shape(), up.device())?,
        );
        Ok((Some(d_gate), Some(d_up)))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// Cephes' `expf` on 16 lanes (inputs clamped to ±88.37, where f32 `exp` saturates).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::model) unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-88.376_26)),
            _mm512_set1_ps(88.376_26),
        );
        // n = round(x / ln 2)
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // r = x - n·ln 2, with ln 2 in two parts for precision
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(p, n)
    }

    /// `d_gate[i] = grad[i] · up[i] · σ·(1 + gate[i]·(1 − σ))` and `d_up[i] = grad[i] ·
    /// gate[i] · σ`, `σ = 1 / (1 + e^-gate[i])`.
    ///
    /// # Safety
    /// AVX-512 F must be available; the five slices have the same length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul_backward(
        gate: &[f32],
        up: &[f32],
        grad: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) {
        let n = gate.len();
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let left = (n - i).min(16);
            let mask: __mmask16 = if left == 16 {
                u16::MAX
            } else {
                (1u16 << left) - 1
            };
            // SAFETY: masked loads and stores touch only lanes i..i+left, inside all five.
            unsafe {
                let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
                let dy = _mm512_maskz_loadu_ps(mask, grad.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
                let sig = _mm512_div_ps(one, _mm512_add_ps(one, e));
                let silu = _mm512_mul_ps(g, sig);
                // σ·(1 + g·(1 − σ)) = σ + silu·(1 − σ).
                let dsilu = _mm512_fmadd_ps(silu, _mm512_sub_ps(one, sig), sig);
                let dyu = _mm512_mul_ps(dy, u);
                _mm512_mask_storeu_ps(d_gate.as_mut_ptr().add(i), mask, _mm512_mul_ps(dyu, dsilu));
                _mm512_mask_storeu_ps(d_up.as_mut_ptr().add(i), mask, _mm512_mul_ps(dy, silu));
            }
            i += 16;
        }
    }

    /// `dst[i] = gate[i] / (1 + e^-gate[i]) · up[i]`.
    ///
    /// # Safety
    /// AVX-512 F must be available; the three slices have the same length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul(gate: &[f32], up: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let left = (n - i).min(16);
            let mask: __mmask16 = if left == 16 {
                u16::MAX
            } else {
                (1u16 << left) - 1
            };
            // SAFETY: masked loads and stores touch only lanes i..i+left, inside all three.
            unsafe {
                let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
                let s = _mm512_div_ps(g, _mm512_add_ps(one, e));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), mask, _mm512_mul_ps(s, u));
            }
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn fused_silu_times_up_matches_candle_within_a_few_ulp() -> candle_core::Result<()> {
        let n = 40_000 + 7; // several work items and a masked tail
        let mut rng = crate::rng::XorShift64Star::new(3);
        let mut gate = rng.uniform(n, 12.0);
        gate[0] = -100.0;
        gate[1] = 100.0;
        gate[2] = 0.0;
        let up = rng.uniform(n, 2.0);
        let Some(ours) = silu_mul(&gate, &up) else {
            return Ok(());
        };
        let g = Tensor::from_vec(gate.clone(), n, &Device::Cpu)?;
        let u = Tensor::from_vec(up.clone(), n, &Device::Cpu)?;
        let want = (candle_nn::ops::silu(&g)? * u)?.to_vec1::<f32>()?;
        for i in 0..n {
            let tol = 4.0 * f32::EPSILON * want[i].abs() + 1e-30;
            assert!(
                (ours[i] - want[i]).abs() <= tol,
                "gate {} up {}: {} against candle's {}",
                gate[i],
                up[i],
                ours[i],
                want[i]
            );
        }
        Ok(())
    }

    #[test]
    fn the_backward_matches_the_composed_ops() -> candle_core::Result<()> {
        if !crate::model::gemm512::available() {
            return Ok(());
        }
        // Several work items and a masked tail; saturating gates too.
        let n = 2 * CHUNK + 7;
        let mut rng = crate::rng::XorShift64Star::new(9);
        let mut gate = rng.uniform(n, 6.0);
        gate[0] = -100.0;
        gate[1] = 100.0;
        let g = candle_core::Var::from_vec(gate, n, &Device::Cpu)?;
        let u = candle_core::Var::from_vec(rng.uniform(n, 2.0), n, &Device::Cpu)?;
        let w = Tensor::from_vec(rng.uniform(n, 1.0), n, &Device::Cpu)?;
        let fused = (g.as_tensor().apply_op2(u.as_tensor(), SiluMul)? * &w)?
            .sum_all()?
            .backward()?;
        let composed = ((candle_nn::ops::silu(g.as_tensor())? * u.as_tensor())? * &w)?
            .sum_all()?
            .backward()?;
        for v in [&g, &u] {
            let a = fused.get(v.as_tensor()).expect("grad").to_vec1::<f32>()?;
            let b = composed
                .get(v.as_tensor())
                .expect("grad")
                .to_vec1::<f32>()?;
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} against {y}");
            }
        }
        Ok(())
    }
}
