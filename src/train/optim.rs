//! The pieces of an optimisation step: learning-rate schedules, the masked language-model
//! loss, right-padded batches, global gradient-norm clipping, and AdamW with a state that
//! can be saved and restored (for resuming a run).

use super::data::{Example, IGNORE};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
/// A fused cross-entropy: the forward is `logsumexp(z) − z[label]` per position, computed
/// outside the graph, and the backward is the closed form `g · keep · (softmax(z) −
/// onehot(label))` (softmax by candle's fused kernel) instead of autograd through a composed
/// log-softmax and gather over the whole `[b·t, vocab]` matrix.
///
/// # Errors
/// Shape mismatch.
pub fn masked_nll_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let vocab = logits.dim(D::Minus1)?;
    let z = logits.detach().reshape(((), vocab))?;
    let labels = labels.flatten_all()?;
    let keep = labels.ne(IGNORE)?; // u8 [n]
    let safe = keep
        .where_cond(&labels, &labels.zeros_like()?)?
        .to_dtype(DType::U32)?
        .unsqueeze(1)?; // [n, 1]
    let keep = keep.to_dtype(logits.dtype())?.unsqueeze(1)?; // [n, 1]
    let max = z.max_keepdim(1)?;
    let lse = (z.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + &max)?;
    let picked = z.gather(&safe, 1)?;
    let loss = ((lse - picked)? * &keep)?.sum_all()?;
    crate::model::autograd::attach("cross-entropy", logits, loss, move |x, _loss, g| {
        let dims = x.dims().to_vec();
        let z = x.detach().reshape(((), vocab))?;
        let scale = keep.broadcast_mul(&g.reshape((1, 1))?)?; // [n, 1]
        let p = crate::model::autograd::softmax_last_dim(&z)?.broadcast_mul(&scale)?;
        p.scatter_add(&safe, &scale.neg()?, 1)?.reshape(dims)
    })
}

/// The summed negative log-likelihood of `batch`'s labels under `model` (the training
/// forward, [`crate::model::llama::Llama::forward_hidden_all`]), with its gradient when
/// `gradient`: on CPUs with AVX-512 the output head and the loss run fused over chunks of
/// labelled rows ([`crate::model::head_loss`]: no `[tokens, vocab]` logits, none for prompt
/// positions); elsewhere the logits, then [`masked_nll_sum`]. A scalar in the logits' dtype.
///
/// # Errors
/// Tensor errors.
pub fn batch_nll_sum(
    model: &crate::model::llama::Llama,
    batch: &Batch,
    gradient: bool,
) -> Result<Tensor> {
    let h = model.forward_hidden_all(&batch.input_ids, Some(&batch.attention_mask))?;
    if let Some(loss) = crate::model::head_loss::fused_head_nll_sum(
        &h,
        &model.lm_head,
        &batch.labels,
        IGNORE,
        gradient,
    )? {
        return Ok(loss);
    }
    masked_nll_sum(&model.logits_of(&h)?, &batch.labels)
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

/// AdamW hyper-parameters (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWParams {
    /// Learning rate (the schedule sets it every step).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW (Loshchilov & Hutter 2019) with exactly `candle_nn::AdamW`'s arithmetic (itself
/// PyTorch's update), but with a state that [`AdamW::state`] exports and
/// [`AdamW::restore`] puts back: `candle_nn::AdamW` keeps its moments private, and a resumed
/// run must continue from them.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: usize,
    /// Hyper-parameters.
    pub params: AdamWParams,
}

impl AdamW {
    /// An optimizer over `vars` with zero moments.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<AdamW> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            first: vars.iter().map(zeros).collect::<Result<_>>()?,
            second: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            step: 0,
            params,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Sets the learning rate for the next step.
    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// One update from `grads` (variables without a gradient are left alone).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let scale_m = 1f64 / (1f64 - p.beta1.powi(self.step as i32));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(self.step as i32));
        for ((var, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let next_m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let next_v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = (var.as_tensor() * (1f64 - p.lr * p.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            var.set(&(decayed - (update * p.lr)?)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }

    /// The moments as named tensors (`first.N`, `second.N` in variable order) and the step
    /// count, for a checkpoint.
    pub fn state(&self) -> (HashMap<String, Tensor>, usize) {
        let mut t = HashMap::new();
        for (i, (m, v)) in self.first.iter().zip(&self.second).enumerate() {
            t.insert(format!("first.{i}"), m.clone());
            t.insert(format!("second.{i}"), v.clone());
        }
        (t, self.step)
    }

    /// Puts back a state from [`AdamW::state`] (same variables, same order).
    ///
    /// # Errors
    /// A missing tensor or a shape that does not match its variable.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, var) in self.vars.iter().enumerate() {
            for (name, slot) in [
                ("first", &mut self.first[i]),
                ("second", &mut self.second[i]),
            ] {
                let key = format!("{name}.{i}");
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state lacks {key}"))
                })?;
                if t.dims() != var.as_tensor().dims() {
                    candle_core::bail!(
                        "optimizer state {key} has shape {:?}, its variable {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    );
                }
                *slot = t
                    .to_dtype(var.as_tensor().dtype())?
                    .to_device(var.as_tensor().device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quadratic_grads(vars: &[Var], round: usize) -> Result<GradStore> {
        // loss = Σ (v - target)², target varying by round, so gradients change every step.
        let mut loss = Tensor::new(0f32, &Device::Cpu)?;
        for v in vars {
            let target = (v.as_tensor().ones_like()? * (round as f64 * 0.3 - 0.5))?;
            loss = (loss + (v.as_tensor() - target)?.sqr()?.sum_all()?)?;
        }
        loss.backward()
    }

    #[test]
    fn adamw_matches_candle_nn_step_for_step() -> Result<()> {
        use candle_nn::Optimizer;
        let init = [
            Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?,
            Tensor::new(&[[0.1f32, 0.2], [0.3, -0.4]], &Device::Cpu)?,
        ];
        let ours_vars: Vec<Var> = init.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let theirs_vars: Vec<Var> = init.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let params = AdamWParams {
            lr: 0.05,
            weight_decay: 0.1,
            ..AdamWParams::default()
        };
        let mut ours = AdamW::new(ours_vars.clone(), params)?;
        let mut theirs = candle_nn::AdamW::new(
            theirs_vars.clone(),
            candle_nn::ParamsAdamW {
                lr: 0.05,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
            },
        )?;
        for round in 0..6 {
            ours.step(&quadratic_grads(&ours_vars, round)?)?;
            theirs.step(&quadratic_grads(&theirs_vars, round)?)?;
        }
        for (a, b) in ours_vars.iter().zip(&theirs_vars) {
            let d = (a.as_tensor() - b.as_tensor())?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(d, 0.0);
        }
        Ok(())
    }

    #[test]
    fn a_restored_state_continues_like_the_original() -> Result<()> {
        let start = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu)?;
        let a = Var::from_tensor(&start)?;
        let mut opt = AdamW::new(vec![a.clone()], AdamWParams::default())?;
        for round in 0..3 {
            opt.step(&quadratic_grads(std::slice::from_ref(&a), round)?)?;
        }
        let (state, step) = opt.state();
        let saved = a.as_tensor().copy()?;
        for round in 3..6 {
            opt.step(&quadratic_grads(std::slice::from_ref(&a), round)?)?;
        }
        let b = Var::from_tensor(&saved)?;
        let mut resumed = AdamW::new(vec![b.clone()], AdamWParams::default())?;
        resumed.restore(&state, step)?;
        for round in 3..6 {
            resumed.step(&quadratic_grads(std::slice::from_ref(&b), round)?)?;
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>()?,
            b.as_tensor().to_vec1::<f32>()?
        );
        assert_eq!(resumed.step_count(), 6);
        Ok(())
    }

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
    fn the_fused_loss_has_the_gradient_of_log_softmax_and_gather() -> Result<()> {
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..2 * 3 * 5)
            .map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.2)
            .collect();
        let z = Var::from_vec(values, (2, 3, 5), &dev)?;
        let labels = Tensor::new(&[[4i64, IGNORE, 0], [2, 2, IGNORE]], &dev)?;
        // Weighted, so the incoming gradient is not 1.
        let ours = (masked_nll_sum(z.as_tensor(), &labels)? * 0.7)?;
        let g_ours = ours.backward()?;
        let logp = candle_nn::ops::log_softmax(z.as_tensor(), D::Minus1)?;
        let keep = labels.ne(IGNORE)?;
        let safe = keep.where_cond(&labels, &labels.zeros_like()?)?;
        let picked = logp
            .gather(&safe.to_dtype(DType::U32)?.unsqueeze(D::Minus1)?, D::Minus1)?
            .squeeze(D::Minus1)?;
        let reference = ((picked * keep.to_dtype(DType::F32)?)?.sum_all()?.neg()? * 0.7)?;
        let g_ref = reference.backward()?;
        let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        assert!(diff(&ours, &reference)? < 1e-5);
        let (a, b) = (
            g_ours.get(z.as_tensor()).expect("gradient"),
            g_ref.get(z.as_tensor()).expect("gradient"),
        );
        assert!(diff(a, b)? < 1e-6, "{a} vs {b}");
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
