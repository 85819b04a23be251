//! The pieces of an optimisation step: learning-rate schedules, the masked language-model
//! loss, right-padded batches, and global gradient-norm clipping. The optimizer itself is
//! `candle_nn::AdamW`.

use super::data::{Example, IGNORE};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};

/// The learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Half a cosine from the peak down to 0.
    #[default]
    Cosine,
    /// A straight line from the peak down to 0.
    Linear,
    /// The peak throughout.
    Constant,
}

/// Linear warmup from 0 to `peak_lr` over `warmup_steps`, then `kind` until `total_steps`:
/// Hugging Face transformers' `get_cosine_schedule_with_warmup` (num_cycles 0.5),
/// `get_linear_schedule_with_warmup` and `get_constant_schedule_with_warmup`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The learning rate after warmup.
    pub peak_lr: f64,
    /// Optimizer steps of warmup.
    pub warmup_steps: usize,
    /// Optimizer steps in the run.
    pub total_steps: usize,
    /// The curve after warmup.
    pub kind: ScheduleKind,
}

impl Schedule {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let factor = if step < self.warmup_steps {
            s / w.max(1.0)
        } else {
            let progress = (s - w) / (t - w).max(1.0);
            match self.kind {
                ScheduleKind::Cosine => {
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
                ScheduleKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
                ScheduleKind::Constant => 1.0,
            }
        };
        self.peak_lr * factor
    }
}

/// A right-padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[b, t]` (u32), padding after each example.
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding, `[b, t]` (u32).
    pub attention_mask: Tensor,
    /// Targets `[b, t]` (i64), [`IGNORE`] on prompt and padding positions.
    pub labels: Tensor,
    /// Positions that carry loss.
    pub loss_tokens: usize,
    /// Real (non-padding) tokens.
    pub tokens: usize,
}

/// Pads `examples` on the right to the longest one.
///
/// # Errors
/// Tensor errors.
pub fn collate(examples: &[&Example], pad_id: u32, device: &Device) -> Result<Batch> {
    let t = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let b = examples.len();
    let (mut ids, mut mask, mut labels) = (
        Vec::with_capacity(b * t),
        Vec::with_capacity(b * t),
        Vec::with_capacity(b * t),
    );
    for e in examples {
        let pad = t - e.input_ids.len();
        ids.extend(
            e.input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, pad)),
        );
        mask.extend(
            std::iter::repeat_n(1u32, e.input_ids.len()).chain(std::iter::repeat_n(0, pad)),
        );
        labels.extend(
            e.labels
                .iter()
                .copied()
                .chain(std::iter::repeat_n(IGNORE, pad)),
        );
    }
    Ok(Batch {
        loss_tokens: labels.iter().filter(|&&l| l != IGNORE).count(),
        tokens: examples.iter().map(|e| e.input_ids.len()).sum(),
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        attention_mask: Tensor::from_vec(mask, (b, t), device)?,
        labels: Tensor::from_vec(labels, (b, t), device)?,
    })
}

/// Sum of the negative log-likelihoods of the labelled positions (labels [`IGNORE`] skip),
/// as a scalar in the logits' dtype. Divide by the number of labelled tokens for the mean.
///
/// `logits` `[b, t, vocab]`, `labels` `[b, t]` i64.
///
/// # Errors
/// Shape mismatch.
pub fn masked_nll_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let keep = labels.ne(IGNORE)?; // u8 [b, t]
    let safe = keep.where_cond(labels, &labels.zeros_like()?)?;
    let picked = logp
        .gather(&safe.to_dtype(DType::U32)?.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    (picked * keep.to_dtype(logits.dtype())?)?.sum_all()?.neg()
}

/// The global L2 norm of the gradients of `vars`; when it exceeds `max_norm`, every gradient
/// is scaled by `max_norm / norm` (PyTorch's `clip_grad_norm_`). Returns the norm before
/// clipping.
///
/// # Errors
/// Tensor errors.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * factor)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_the_transformers_formulas() {
        // Expected values from transformers' lr_lambda definitions with warmup 10, total 110.
        let s = |kind| Schedule {
            peak_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            kind,
        };
        let cos = s(ScheduleKind::Cosine);
        assert_eq!(cos.lr(0), 0.0);
        assert!((cos.lr(5) - 0.5).abs() < 1e-12);
        assert!((cos.lr(10) - 1.0).abs() < 1e-12);
        assert!((cos.lr(60) - 0.5).abs() < 1e-12); // half way through the cosine
        assert!(cos.lr(110).abs() < 1e-12);
        let lin = s(ScheduleKind::Linear);
        assert!((lin.lr(35) - 0.75).abs() < 1e-12);
        assert_eq!(lin.lr(200), 0.0);
        assert_eq!(s(ScheduleKind::Constant).lr(100), 1.0);
    }

    #[test]
    fn the_masked_loss_skips_ignored_positions() -> Result<()> {
        let dev = Device::Cpu;
        // Two positions over a 3-token vocabulary; only the first is labelled (token 2).
        let logits = Tensor::new(&[[[1f32, 2., 3.], [0., 0., 9.]]], &dev)?;
        let labels = Tensor::new(&[[2i64, IGNORE]], &dev)?;
        let nll = masked_nll_sum(&logits, &labels)?.to_scalar::<f32>()?;
        let expected = -(3f32 - (1f32.exp() + 2f32.exp() + 3f32.exp()).ln());
        assert!((nll - expected).abs() < 1e-6, "{nll} vs {expected}");
        Ok(())
    }

    #[test]
    fn clipping_scales_to_the_maximum_norm() -> Result<()> {
        let v = Var::new(&[3f32, 4.], &Device::Cpu)?;
        let loss = (v.as_tensor().sqr()?.sum_all()? * 0.5)?; // gradient = v = (3, 4), norm 5
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, std::slice::from_ref(&v), 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let g = grads
            .get(v.as_tensor())
            .map(|g| g.to_vec1::<f32>())
            .transpose()?
            .unwrap_or_default();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
        Ok(())
    }
}
