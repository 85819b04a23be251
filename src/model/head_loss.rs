//! The output head and the masked cross-entropy in one pass over chunks of rows, for
//! training: the logits `[tokens, vocab]` are never held whole, and only the labelled
//! positions get any (the fused linear cross-entropy of Liger-Kernel, Hsu et al. 2024,
//! "Liger Kernel: Efficient Triton Kernels for LLM Training", section 3).
//!
//! For the labelled rows `h_i` of the final hidden states, in chunks of [`CHUNK`] rows: the
//! chunk's logits `z = h W^T` (`W` the frozen head `[vocab, hidden]`), then per row, in place,
//! `nll_i = logsumexp(z_i) − z_i[label_i]` and `z_i ← softmax(z_i) − onehot(label_i)` (the
//! gradient of `nll_i` with respect to `z_i`), then the chunk's input gradient `dh = z W`.
//! The loss's backward is that stored `dh` times the incoming gradient: the head's forward and
//! backward both run here, in the forward pass, as PyTorch's `torch.compile`d chunked losses do.
//!
//! SmolLM2's head is 49,152 × 576: at 256 positions the unfused path keeps 50 MB of logits
//! and makes as large a gradient, each a fresh allocation and several passes (max, exp, sum,
//! log, gather, softmax, scatter); here a chunk of 64 rows is 12.6 MB, in the L3 cache of
//! these CPUs, and a prompt position costs nothing.
//!
//! AVX-512 only ([`super::gemm512`] for both products, [`super::silu512`]'s `exp` for the
//! softmax); [`fused_head_nll_sum`] says `None` elsewhere, and callers take the unfused path.
//!
//! One of the modules where `unsafe` is allowed: the AVX-512 intrinsics and the disjoint
//! writes of the thread pool's work items.
#![allow(unsafe_code)]

use super::linear::{BaseWeight, Linear};
use candle_core::{DType, Result, Storage, Tensor};

/// Labelled rows a chunk holds: 64 × 49,152 logits are 12.6 MB.
pub const CHUNK: usize = 64;

/// `Σ_i nll_i` over the positions whose label is not `ignore`, of the logits `h W^T` of the
/// frozen float head `head`, as a scalar f32 tensor whose gradient with respect to `h` is
/// `dh` (see the module docs); `None` when the fused path does not apply (no AVX-512, a head
/// that is not a plain f32 weight, one with an adapter, or `h` not f32 on the CPU), and the
/// caller computes `head.forward(h)` and the loss unfused.
///
/// `h` `[b, t, hidden]`, `labels` `[b, t]` i64 (a label per position: the next token, or
/// `ignore`). Without `gradient` (a validation loss), `dh` is not computed and the loss has
/// no backward.
///
/// # Errors
/// Shape mismatch, or a label outside the vocabulary.
pub fn fused_head_nll_sum(
    h: &Tensor,
    head: &Linear,
    labels: &Tensor,
    ignore: i64,
    gradient: bool,
) -> Result<Option<Tensor>> {
    let BaseWeight::Float(linear) = head.base() else {
        return Ok(None);
    };
    let weight = linear.weight();
    let usable = super::gemm512::available()
        && head.adapter().is_none()
        && h.device().is_cpu()
        && h.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.device().is_cpu();
    if !usable {
        return Ok(None);
    }
    let (vocab, hidden) = weight.dims2()?;
    let dims = h.dims().to_vec();
    if dims.last() != Some(&hidden) {
        candle_core::bail!(
            "fused head loss: hidden states {dims:?} do not fit the head [{vocab}, {hidden}]"
        );
    }
    let x = h.detach().flatten_all()?.to_vec1::<f32>()?;
    let labels = labels.flatten_all()?.to_vec1::<i64>()?;
    let n = x.len() / hidden;
    if labels.len() != n {
        candle_core::bail!("fused head loss: {} labels for {n} positions", labels.len());
    }
    let kept: Vec<(usize, usize)> = labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != ignore)
        .map(|(i, &l)| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l < vocab)
                .map(|l| (i, l))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("label {l} outside the vocabulary of {vocab}"))
                })
        })
        .collect::<Result<_>>()?;
    let (ws, wl) = weight.storage_and_layout();
    let (Storage::Cpu(candle_core::CpuStorage::F32(w)), Some((wa, wb))) =
        (&*ws, wl.contiguous_offsets())
    else {
        return Ok(None);
    };
    let w = &w[wa..wb];
    let mut dh = vec![0f32; if gradient { n * hidden } else { 0 }];
    let mut nll = 0f64;
    for rows in kept.chunks(CHUNK) {
        let c = rows.len();
        let mut xc = Vec::with_capacity(c * hidden);
        for &(i, _) in rows {
            xc.extend_from_slice(&x[i * hidden..(i + 1) * hidden]);
        }
        let Some(mut z) = super::gemm512::matmul_nt(&xc, w, c, vocab, hidden) else {
            return Ok(None);
        };
        let mut row_nll = vec![0f64; c];
        let z_addr = z.as_mut_ptr() as usize;
        let nll_addr = row_nll.as_mut_ptr() as usize;
        let work = |items: std::ops::Range<usize>| {
            for r in items {
                // SAFETY: AVX-512 F is available (gemm512 ran); row `r` of `z` and entry `r`
                // of `row_nll` belong to this item alone, and both outlive the blocking call.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let row =
                        std::slice::from_raw_parts_mut((z_addr as *mut f32).add(r * vocab), vocab);
                    *(nll_addr as *mut f64).add(r) = avx512::nll_and_gradient(row, rows[r].1);
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(c, work);
        nll += row_nll.iter().sum::<f64>();
        if !gradient {
            continue;
        }
        let Some(dx) = super::gemm512::matmul_nn(&z, w, c, hidden, vocab) else {
            return Ok(None);
        };
        for (r, &(i, _)) in rows.iter().enumerate() {
            dh[i * hidden..(i + 1) * hidden].copy_from_slice(&dx[r * hidden..(r + 1) * hidden]);
        }
    }
    let loss = Tensor::new(nll as f32, h.device())?;
    if !gradient {
        return Ok(Some(loss));
    }
    let dh = Tensor::from_vec(dh, dims, h.device())?;
    Ok(Some(super::autograd::attach(
        "fused-head-cross-entropy",
        h,
        loss,
        move |_x, _loss, g| dh.broadcast_mul(&g.to_dtype(DType::F32)?),
    )?))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::silu512::avx512::exp16;
    use std::arch::x86_64::*;

    /// For one row of logits `z` and its label: returns `logsumexp(z) − z[label]` and leaves
    /// `softmax(z) − onehot(label)` in `z`. The sum of exponentials runs on 16 lanes in f32,
    /// as candle's softmax does.
    ///
    /// # Safety
    /// AVX-512 F must be available; `label < z.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn nll_and_gradient(z: &mut [f32], label: usize) -> f64 {
        let n = z.len();
        let body = n - n % 16;
        let picked = z[label];
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(z.as_ptr().add(i)));
        }
        let mut max = _mm512_reduce_max_ps(m);
        for &v in &z[body..] {
            max = max.max(v);
        }
        let mv = _mm512_set1_ps(max);
        let mut s = _mm512_setzero_ps();
        for i in (0..body).step_by(16) {
            let p = z.as_mut_ptr().add(i);
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p), mv));
            _mm512_storeu_ps(p, e);
            s = _mm512_add_ps(s, e);
        }
        let mut sum = _mm512_reduce_add_ps(s);
        for v in &mut z[body..] {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = _mm512_set1_ps(1.0 / sum);
        for i in (0..body).step_by(16) {
            let p = z.as_mut_ptr().add(i);
            _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), inv));
        }
        for v in &mut z[body..] {
            *v /= sum;
        }
        z[label] -= 1.0;
        f64::from(max) + f64::from(sum).ln() - f64::from(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::IGNORE;

    /// The fused loss and its gradient equal the unfused head, `masked_nll_sum` and autograd,
    /// over more labelled rows than a chunk, a vocabulary that is no multiple of 16, and
    /// ignored positions.
    #[test]
    fn the_fused_head_loss_matches_logits_then_cross_entropy() -> Result<()> {
        if !super::super::gemm512::available() {
            eprintln!("no AVX-512 here: the fused path is not used");
            return Ok(());
        }
        let (b, t, hidden, vocab) = (2, 90, 48, 1003);
        let dev = candle_core::Device::Cpu;
        let weight = (Tensor::randn(0f32, 1.0, (vocab, hidden), &dev)? * 0.3)?;
        let head = Linear::from_weight(weight)?;
        let h = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, hidden), &dev)?)?;
        let labels: Vec<i64> = (0..b * t)
            .map(|i| {
                if i % 5 == 3 {
                    IGNORE
                } else {
                    (i * 37 % vocab) as i64
                }
            })
            .collect();
        let labels = Tensor::from_vec(labels, (b, t), &dev)?;

        let fused = fused_head_nll_sum(h.as_tensor(), &head, &labels, IGNORE, true)?
            .expect("the fused path applies");
        let plain = crate::train::optim::masked_nll_sum(&head.forward(h.as_tensor())?, &labels)?;
        let (f, p) = (fused.to_scalar::<f32>()?, plain.to_scalar::<f32>()?);
        assert!((f - p).abs() <= 1e-5 * p.abs(), "loss {f} against {p}");

        let scale = 0.37;
        let gf = (fused * scale)?.backward()?;
        let gp = (plain * scale)?.backward()?;
        let (gf, gp) = (
            gf.get(h.as_tensor()).expect("fused gradient"),
            gp.get(h.as_tensor()).expect("plain gradient"),
        );
        let diff = (gf - gp)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let size = gp.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff <= 1e-5 * size.max(1.0),
            "gradient differs by {diff} (largest {size})"
        );
        // Ignored positions get no gradient.
        let row = gf.get(0)?.get(3)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(row, 0.0);

        // Without the gradient: the same loss.
        let value = fused_head_nll_sum(h.as_tensor(), &head, &labels, IGNORE, false)?
            .expect("fused")
            .to_scalar::<f32>()?;
        assert_eq!(value, f);
        Ok(())
    }

    #[test]
    fn a_label_outside_the_vocabulary_is_an_error() -> Result<()> {
        if !super::super::gemm512::available() {
            return Ok(());
        }
        let dev = candle_core::Device::Cpu;
        let head = Linear::from_weight(Tensor::ones((20, 16), DType::F32, &dev)?)?;
        let h = Tensor::ones((1, 2, 16), DType::F32, &dev)?;
        let labels = Tensor::new(&[[3i64, 20]], &dev)?;
        let err = fused_head_nll_sum(&h, &head, &labels, IGNORE, true).expect_err("refused");
        assert!(err.to_string().contains("label 20"), "{err}");
        Ok(())
    }
}
