//! The training loop: LoRA on a base model over tokenized examples, writing a run folder
//! ([`super::run`]) as it goes.
//!
//! Each optimizer step accumulates gradients over `gradient_accumulation_steps` micro-batches,
//! weighting every response token equally (each micro-batch's summed loss is divided by the
//! step's total response tokens), clips the global gradient norm, and applies AdamW at the
//! scheduled learning rate.
//!
//! The base model must be float (for GGUF, `gguf_compute = "float"`): quantized projections
//! pass no gradient to their input.

use super::config::TrainConfig;
use super::data::Example;
use super::optim::{batch_nll_sum, clip_grad_norm, collate, AdamW, AdamWParams, Schedule};
use super::run::{peak_rss_bytes, unix_now, Metric, RunDir, RunState, Status};
use crate::model::lora::Lora;
use crate::model::{LoadedModel, ModelError};
use candle_core::backprop::GradStore;
use std::path::Path;
use std::time::Instant;

/// Everything the loop needs to know besides the data: the run's configuration (`[lora]`,
/// `[optim]`, `[run]` and `[model] base`, written into the adapter's config as
/// `base_model_name_or_path`) and the padding token.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The padding token id.
    pub pad_id: u32,
}

impl TrainSettings {
    /// The settings a run configuration gives; `pad_id` pads batches.
    pub fn from_config(config: &TrainConfig, pad_id: u32) -> TrainSettings {
        TrainSettings {
            config: config.clone(),
            pad_id,
        }
    }

    /// AdamW's parameters: `lr` is the peak learning rate, the schedule sets the rest.
    pub fn adamw(&self) -> AdamWParams {
        AdamWParams {
            lr: self.config.optim.learning_rate,
            weight_decay: self.config.optim.weight_decay,
            ..AdamWParams::default()
        }
    }

    /// Examples per optimizer step.
    fn per_step(&self) -> usize {
        let o = &self.config.optim;
        o.micro_batch_size.max(1) * o.gradient_accumulation_steps.max(1)
    }

    /// Optimizer steps per epoch over `examples` training examples.
    fn steps_per_epoch(&self, examples: usize) -> usize {
        examples.div_ceil(self.per_step())
    }

    /// Optimizer steps of a whole run over `examples` training examples.
    pub fn total_steps(&self, examples: usize) -> usize {
        self.steps_per_epoch(examples) * self.config.optim.epochs.max(1)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Finished or stopped.
    pub state: RunState,
    /// Optimizer steps done.
    pub steps: usize,
    /// Validation loss before training, and at the end (when there is a validation split).
    pub val_loss: Option<(f64, f64)>,
}

/// A training failure, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model or adapter.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The run folder.
    #[error("run folder: {0}")]
    Io(#[from] std::io::Error),
    /// The run's status file.
    #[error(transparent)]
    Store(#[from] crate::data::StoreError),
    /// Nothing to train on, or impossible settings.
    #[error("{0}")]
    Settings(String),
}

/// The data order of an epoch: a seeded permutation (Fisher–Yates).
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng =
        crate::rng::XorShift64Star::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

/// Mean loss over the response tokens of `examples`, without gradients or dropout.
///
/// # Errors
/// Tensor errors.
pub fn evaluate(
    loaded: &LoadedModel,
    examples: &[Example],
    micro_batch_size: usize,
    pad_id: u32,
) -> candle_core::Result<f64> {
    let (mut nll, mut tokens) = (0f64, 0usize);
    for chunk in examples.chunks(micro_batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, loaded.model.device())?;
        nll += batch_nll_sum(&loaded.model, &batch, false)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        tokens += batch.loss_tokens;
    }
    Ok(nll / tokens.max(1) as f64)
}

fn save_checkpoint(
    dir: &Path,
    lora: &Lora,
    opt: &AdamW,
    loaded: &LoadedModel,
    base: &str,
    step: usize,
    elapsed_s: f64,
) -> Result<(), TrainError> {
    lora.save_peft(&loaded.model, dir, base)?;
    let (state, opt_step) = opt.state();
    let bytes = safetensors::serialize(state.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| TrainError::Settings(format!("optimizer state: {e}")))?;
    crate::data::replace_atomic(&dir.join("optimizer.safetensors"), &bytes)?;
    let trainer_state = serde_json::json!({
        "step": step,
        "optimizer_step": opt_step,
        "elapsed_s": elapsed_s,
    });
    crate::data::replace_atomic(
        &dir.join("trainer_state.json"),
        trainer_state.to_string().as_bytes(),
    )?;
    Ok(())
}

/// `trainer_state.json` of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
struct TrainerState {
    step: usize,
    optimizer_step: usize,
    #[serde(default)]
    elapsed_s: f64,
}

/// Restores adapter weights and optimizer state from checkpoint folder `dir`; returns the
/// trainer state.
fn restore_checkpoint(
    dir: &Path,
    lora: &Lora,
    opt: &mut AdamW,
    loaded: &LoadedModel,
) -> Result<TrainerState, TrainError> {
    let bad = |file: &str, e: String| {
        TrainError::Settings(format!("checkpoint {}: {e}", dir.join(file).display()))
    };
    let text = std::fs::read_to_string(dir.join("trainer_state.json"))
        .map_err(|e| bad("trainer_state.json", e.to_string()))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| bad("trainer_state.json", e.to_string()))?;
    lora.restore_peft(
        &loaded.model,
        &dir.join(crate::model::lora::ADAPTER_WEIGHTS),
    )?;
    let moments =
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), loaded.model.device())
            .map_err(|e| bad("optimizer.safetensors", e.to_string()))?;
    opt.restore(&moments, state.optimizer_step)
        .map_err(|e| bad("optimizer.safetensors", e.to_string()))?;
    Ok(state)
}

/// The seed of the dropout masks of one micro-batch: a function of the run's seed, the
/// optimizer step and the micro-batch alone, so that a resumed run draws what an
/// uninterrupted one would.
fn dropout_seed(seed: u64, step: usize, micro: usize) -> u64 {
    seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (micro as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Trains a LoRA adapter on `train`, evaluating on `validation`, recording everything in
/// `run`. `on_step` gets each optimizer step's metric as it is recorded (for progress
/// display) and returns whether to stop; when it says yes the run checkpoints and ends as
/// [`RunState::Stopped`].
///
/// With `resume_from` (a `checkpoint-<step>/` folder of this run), the adapter, the AdamW
/// moments, the step (and so the schedule) and the elapsed time are restored, the data
/// order of the epoch is replayed from `(seed, epoch)` and the steps already done are
/// skipped; metrics recorded after the checkpoint (by a run that was killed) are dropped,
/// so `metrics.jsonl` reads as one uninterrupted run.
///
/// # Errors
/// [`TrainError`]; the status file then says `failed` with the message.
pub fn train(
    loaded: &mut LoadedModel,
    train: &[Example],
    validation: &[Example],
    s: &TrainSettings,
    run: &RunDir,
    on_step: &dyn Fn(&Metric) -> bool,
    resume_from: Option<&Path>,
) -> Result<TrainOutcome, TrainError> {
    let result = train_inner(loaded, train, validation, s, run, on_step, resume_from);
    if let Err(e) = &result {
        let _ = run.log(&format!("failed: {e}"));
        let mut status = run.read_status().unwrap_or(Status {
            state: RunState::Failed,
            pid: std::process::id(),
            step: 0,
            total_steps: 0,
            error: None,
            updated_unix_s: 0.0,
        });
        status.state = RunState::Failed;
        status.error = Some(e.to_string());
        status.updated_unix_s = unix_now();
        let _ = run.write_status(&status);
    }
    result
}

fn train_inner(
    loaded: &mut LoadedModel,
    train: &[Example],
    validation: &[Example],
    s: &TrainSettings,
    run: &RunDir,
    on_step: &dyn Fn(&Metric) -> bool,
    resume_from: Option<&Path>,
) -> Result<TrainOutcome, TrainError> {
    if train.is_empty() {
        return Err(TrainError::Settings("no training example".into()));
    }
    let (o, r) = (&s.config.optim, &s.config.run);
    let per_step = s.per_step();
    let steps_per_epoch = s.steps_per_epoch(train.len());
    let total_steps = s.total_steps(train.len());
    let schedule = Schedule {
        peak_lr: o.learning_rate,
        warmup_steps: o.warmup_steps,
        total_steps,
        kind: o.schedule,
    };
    let lora = Lora::init(&mut loaded.model, &s.config.lora, r.seed)?;
    run.log(&format!(
        "LoRA r={} alpha={} on {}: {} trainable parameters in {} modules",
        s.config.lora.r,
        s.config.lora.lora_alpha,
        s.config.lora.targets().join(","),
        lora.parameter_count(),
        lora.modules.len()
    ))?;
    let vars = lora.vars();
    let mut opt = AdamW::new(vars.clone(), s.adamw())?;
    let (mut step, elapsed_before) = match resume_from {
        None => (0, 0.0),
        Some(dir) => {
            let state = restore_checkpoint(dir, &lora, &mut opt, loaded)?;
            if state.step > total_steps {
                return Err(TrainError::Settings(format!(
                    "checkpoint {} is at step {} of a run of {total_steps} steps: the data changed",
                    dir.display(),
                    state.step
                )));
            }
            run.retain_metrics(|m| m.step() <= state.step)?;
            run.log(&format!(
                "resumed from {} at step {} of {total_steps}",
                dir.display(),
                state.step
            ))?;
            (state.step, state.elapsed_s)
        }
    };
    let mut status = Status {
        state: RunState::Running,
        pid: std::process::id(),
        step,
        total_steps,
        error: None,
        updated_unix_s: unix_now(),
    };
    run.write_status(&status)?;

    let eval =
        |loaded: &LoadedModel, lora: &Lora, step: usize| -> Result<Option<f64>, TrainError> {
            if validation.is_empty() {
                return Ok(None);
            }
            lora.set_training(false);
            let loss = evaluate(loaded, validation, o.micro_batch_size, s.pad_id)?;
            lora.set_training(true);
            run.append_metric(&Metric::Eval {
                step,
                epoch: step as f64 / steps_per_epoch as f64,
                val_loss: loss,
            })?;
            Ok(Some(loss))
        };
    let first_val = if step == 0 {
        eval(loaded, &lora, 0)?
    } else {
        run.read_metrics()?.iter().find_map(|m| match m {
            Metric::Eval { val_loss, .. } => Some(*val_loss),
            Metric::Step { .. } => None,
        })
    };
    let start = Instant::now();
    let first_step = step;
    for epoch in step / steps_per_epoch..o.epochs.max(1) {
        let order = epoch_order(train.len(), r.seed, epoch);
        let done_in_epoch = step - epoch * steps_per_epoch;
        for chunk in order.chunks(per_step).skip(done_in_epoch) {
            let step_start = Instant::now();
            let examples: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
            let step_loss_tokens: usize = examples
                .iter()
                .map(|e| e.loss_tokens())
                .sum::<usize>()
                .max(1);
            let (mut grads, mut loss_sum, mut tokens): (Option<GradStore>, f64, usize) =
                (None, 0.0, 0);
            for (m, micro) in examples.chunks(o.micro_batch_size.max(1)).enumerate() {
                lora.reseed_dropout(dropout_seed(r.seed, step, m));
                let batch = collate(micro, s.pad_id, loaded.model.device())?;
                let nll = batch_nll_sum(&loaded.model, &batch, true)?;
                loss_sum += nll.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                tokens += batch.tokens;
                let g = (nll / step_loss_tokens as f64)?.backward()?;
                grads = Some(match grads {
                    None => g,
                    Some(mut total) => {
                        for v in &vars {
                            if let Some(add) = g.get(v.as_tensor()) {
                                let sum = match total.remove(v.as_tensor()) {
                                    Some(t) => (t + add)?,
                                    None => add.clone(),
                                };
                                total.insert(v.as_tensor(), sum);
                            }
                        }
                        total
                    }
                });
            }
            let Some(mut grads) = grads else { continue };
            let grad_norm = clip_grad_norm(&mut grads, &vars, o.max_grad_norm)?;
            let lr = schedule.lr(step);
            opt.set_lr(lr);
            opt.step(&grads)?;
            step += 1;
            let elapsed = elapsed_before + start.elapsed().as_secs_f64();
            let metric = Metric::Step {
                step,
                epoch: step as f64 / steps_per_epoch as f64,
                loss: loss_sum / step_loss_tokens as f64,
                lr,
                grad_norm,
                tokens,
                tokens_per_s: tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: elapsed,
                eta_s: start.elapsed().as_secs_f64() / (step - first_step) as f64
                    * (total_steps - step) as f64,
                mem_bytes: peak_rss_bytes(),
            };
            run.append_metric(&metric)?;
            status.step = step;
            status.updated_unix_s = unix_now();
            if r.eval_every > 0 && step % r.eval_every == 0 && step < total_steps {
                eval(loaded, &lora, step)?;
            }
            let stop = on_step(&metric);
            if stop {
                status.state = RunState::Stopping;
            }
            run.write_status(&status)?;
            if stop
                || (r.checkpoint_every > 0 && step % r.checkpoint_every == 0 && step < total_steps)
            {
                run.write_checkpoint::<TrainError>(step, |dir| {
                    save_checkpoint(
                        dir,
                        &lora,
                        &opt,
                        loaded,
                        &s.config.model.base,
                        step,
                        elapsed,
                    )
                })?;
                run.log(&format!("checkpoint at step {step}"))?;
            }
            if stop {
                status.state = RunState::Stopped;
                status.updated_unix_s = unix_now();
                run.write_status(&status)?;
                run.log(&format!("stopped at step {step} of {total_steps}"))?;
                return Ok(TrainOutcome {
                    state: RunState::Stopped,
                    steps: step,
                    val_loss: None,
                });
            }
        }
    }
    let last_val = eval(loaded, &lora, step)?;
    let final_dir = run.path.join("final");
    lora.save_peft(&loaded.model, &final_dir, &s.config.model.base)?;
    status.state = RunState::Finished;
    status.updated_unix_s = unix_now();
    run.write_status(&status)?;
    run.log(&format!(
        "finished: {step} steps; adapter in {}",
        final_dir.display()
    ))?;
    Ok(TrainOutcome {
        state: RunState::Finished,
        steps: step,
        val_loss: first_val.zip(last_val),
    })
}
