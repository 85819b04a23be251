//! LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
//! arXiv:2106.09685), saved and loaded in Hugging Face PEFT's format.
//!
//! A target projection `W` `[out, in]` gets `lora_A` `[r, in]` and `lora_B` `[out, r]`:
//! `y = W x + scale · B (A dropout(x))`, `scale = lora_alpha / r` (or `lora_alpha / √r` with
//! rsLoRA, Kalajdzievski 2023). As in PEFT, `A` starts Kaiming-uniform (`a = √5`, so
//! `U(-1/√in, 1/√in)`) and `B` at zero, so a new adapter leaves the model unchanged.
//! Dropout applies on the LoRA path only, and only while training. Base weights stay plain
//! tensors; only `A` and `B` are [`Var`]s.
//!
//! GGUF files converted by llama.cpp store `q_proj` and `k_proj` with the rows of each head
//! permuted (pairs interleaved, for llama.cpp's RoPE). Adapters are always saved in Hugging
//! Face's row order: `lora_B` of q/k is permuted on the way in and back on the way out, so
//! an adapter trained on a GGUF model loads in PEFT on the Hugging Face model, and the
//! reverse (tests/lora.rs checks both layouts give the same logits).

use super::config::RopeLayout;
use super::linear::Adapter;
use super::llama::{Llama, PROJECTIONS};
use super::ModelError;
use crate::data::replace_atomic;
use crate::rng::XorShift64Star;
use candle_core::{DType, Device, Result as CandleResult, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `target_modules` value that selects every projection of every block.
pub const ALL_LINEAR: &str = "all-linear";
/// PEFT's weights file in an adapter folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's config file in an adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// LoRA hyper-parameters, with PEFT's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub r: usize,
    /// `lora_alpha`: the update is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout probability on the LoRA path while training.
    pub lora_dropout: f32,
    /// Projections to adapt (`q_proj`, …, `down_proj`), or `["all-linear"]`.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `lora_alpha / √r` instead.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// Every problem with these values, as `field: problem`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.r == 0 {
            p.push("r: must be at least 1".to_string());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            p.push(format!(
                "lora_dropout: {} is not in [0, 1)",
                self.lora_dropout
            ));
        }
        if self.lora_alpha.is_nan() || self.lora_alpha <= 0.0 {
            p.push(format!("lora_alpha: {} must be positive", self.lora_alpha));
        }
        if self.target_modules.is_empty() {
            p.push("target_modules: is empty".to_string());
        }
        for m in &self.target_modules {
            if m != ALL_LINEAR && !PROJECTIONS.contains(&m.as_str()) {
                p.push(format!(
                    "target_modules: unknown module {m:?} (known: {}, or {ALL_LINEAR})",
                    PROJECTIONS.join(", ")
                ));
            }
        }
        p
    }

    /// The projection names adapted.
    pub fn targets(&self) -> Vec<&'static str> {
        PROJECTIONS
            .iter()
            .copied()
            .filter(|p| {
                self.target_modules
                    .iter()
                    .any(|m| m == ALL_LINEAR || m == p)
            })
            .collect()
    }

    /// Trainable parameters these settings give `model`: `r · (in + out)` per adapted
    /// projection.
    pub fn parameter_count(&self, model: &Llama) -> usize {
        let targets = self.targets();
        model
            .layers
            .iter()
            .flat_map(|b| b.projections())
            .filter(|(name, _)| targets.contains(name))
            .map(|(_, l)| self.r * (l.in_features() + l.out_features()))
            .sum()
    }

    /// The factor on `B A x`: `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// One adapted projection: `scale · B (A dropout(x))`.
#[derive(Debug)]
pub struct LoraLayer {
    /// `[r, in]`.
    pub lora_a: Tensor,
    /// `[out, r]`, in the model's own row order.
    pub lora_b: Tensor,
    scale: f64,
    dropout: f32,
    training: Arc<AtomicBool>,
    rng: Arc<Mutex<XorShift64Star>>,
}

/// Inverted dropout with a mask drawn from `rng`: each element is zeroed with probability
/// `p` and the rest scaled by `1 / (1 - p)` (as `torch.nn.Dropout`). A seeded generator,
/// unlike candle's, makes a resumed run draw the masks an uninterrupted one draws.
fn seeded_dropout(x: &Tensor, p: f32, rng: &Mutex<XorShift64Star>) -> CandleResult<Tensor> {
    let keep = 1.0 / (1.0 - p);
    // An element is dropped when a 32-bit draw falls below p · 2^32; each 64-bit draw
    // decides two elements.
    let threshold = (f64::from(p) * 4_294_967_296.0) as u64;
    let n = x.elem_count();
    let mut mask: Vec<f32> = Vec::with_capacity(n + 1);
    {
        let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
        while mask.len() < n {
            let bits = rng.next_u64();
            for half in [bits & 0xFFFF_FFFF, bits >> 32] {
                mask.push(if half < threshold { 0.0 } else { keep });
            }
        }
    }
    mask.truncate(n);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

impl LoraLayer {
    /// `A dropout(x)`: `[.., r]`.
    fn down(&self, x: &Tensor) -> CandleResult<Tensor> {
        let x = if self.dropout > 0.0 && self.training.load(Ordering::Relaxed) {
            seeded_dropout(x, self.dropout, &self.rng)?
        } else {
            x.clone()
        };
        x.broadcast_matmul(&self.lora_a.t()?)
    }
}

impl Adapter for LoraLayer {
    fn forward(&self, x: &Tensor) -> CandleResult<Tensor> {
        self.down(x)?.broadcast_matmul(&self.lora_b.t()?)? * self.scale
    }

    fn low_rank(&self, x: &Tensor) -> CandleResult<Option<crate::model::linear::LowRank>> {
        Ok(Some(crate::model::linear::LowRank {
            u: self.down(x)?,
            b: self.lora_b.clone(),
            scale: self.scale,
        }))
    }
}

/// One adapted projection's parameters.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// PEFT module path, e.g. `model.layers.3.self_attn.q_proj`.
    pub path: String,
    /// `[r, in]`.
    pub lora_a: Var,
    /// `[out, r]`, in the model's own row order.
    pub lora_b: Var,
}

/// The adapters attached to a model.
#[derive(Debug, Clone)]
pub struct Lora {
    /// Hyper-parameters.
    pub config: LoraConfig,
    /// Every adapted projection, in model order.
    pub modules: Vec<LoraModule>,
    training: Arc<AtomicBool>,
    rng: Arc<Mutex<XorShift64Star>>,
}

/// The rows of a q/k projection (or its `lora_B`) `[heads · head_dim, …]` between Hugging
/// Face's order and llama.cpp's GGUF order, which interleaves each head's two halves
/// (`permute` in llama.cpp's `convert_hf_to_gguf.py`). `to_gguf` picks the direction.
pub fn permute_head_rows(t: &Tensor, heads: usize, to_gguf: bool) -> CandleResult<Tensor> {
    let (rows, cols) = t.dims2()?;
    let half = rows / heads / 2;
    let split = if to_gguf {
        (heads, 2, half, cols)
    } else {
        (heads, half, 2, cols)
    };
    t.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Whether a module's `lora_B` rows need [`permute_head_rows`] for this model, and with how
/// many heads.
fn permuted_heads(model: &Llama, path: &str) -> Option<usize> {
    if model.config.rope_layout != RopeLayout::Interleaved {
        return None;
    }
    if path.ends_with("q_proj") {
        Some(model.config.num_heads)
    } else if path.ends_with("k_proj") {
        Some(model.config.num_kv_heads)
    } else {
        None
    }
}

/// Makes `a` and `b` the variables of projection `path`'s adapter; the layer shares their
/// storage, so optimizer updates and restores reach the forward pass.
fn attach(
    model: &mut Llama,
    path: String,
    (a, b): (Tensor, Tensor),
    config: &LoraConfig,
    training: &Arc<AtomicBool>,
    rng: &Arc<Mutex<XorShift64Star>>,
) -> CandleResult<LoraModule> {
    let (lora_a, lora_b) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
    for (name, linear) in model.projections_mut() {
        if name == path {
            linear.set_adapter(Some(Arc::new(LoraLayer {
                lora_a: lora_a.as_tensor().clone(),
                lora_b: lora_b.as_tensor().clone(),
                scale: config.scale(),
                dropout: config.lora_dropout,
                training: training.clone(),
                rng: rng.clone(),
            })));
        }
    }
    Ok(LoraModule {
        path,
        lora_a,
        lora_b,
    })
}

impl Lora {
    /// Attaches fresh adapters (A Kaiming-uniform from `seed`, B zero) to every target
    /// projection of `model`.
    ///
    /// # Errors
    /// [`ModelError::Lora`] listing every problem of `config`, or a tensor error.
    pub fn init(model: &mut Llama, config: &LoraConfig, seed: u64) -> Result<Lora, ModelError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ModelError::Lora(problems.join("; ")));
        }
        let targets = config.targets();
        let device = model.device().clone();
        let training = Arc::new(AtomicBool::new(true));
        let rng = Arc::new(Mutex::new(XorShift64Star::new(seed)));
        let mut plan = Vec::new();
        for (path, linear) in model.projections_mut() {
            if targets.iter().any(|t| path.ends_with(t)) {
                plan.push((path, linear.in_features(), linear.out_features()));
            }
        }
        let mut modules = Vec::with_capacity(plan.len());
        for (i, (path, inp, out)) in plan.into_iter().enumerate() {
            let bound = 1.0 / (inp as f32).sqrt();
            let dtype = model.dtype();
            let a = Tensor::from_vec(
                XorShift64Star::new(seed.wrapping_add(i as u64)).uniform(config.r * inp, bound),
                (config.r, inp),
                &device,
            )?
            .to_dtype(dtype)?;
            let b = Tensor::zeros((out, config.r), dtype, &device)?;
            modules.push(attach(model, path, (a, b), config, &training, &rng)?);
        }
        Ok(Lora {
            config: config.clone(),
            modules,
            training,
            rng,
        })
    }

    /// Switches dropout on (training) or off (evaluation, generation).
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// Restarts the dropout masks' generator from `seed` (the trainer derives one from the
    /// run's seed, the step and the micro-batch, so that masks do not depend on history).
    pub fn reseed_dropout(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = XorShift64Star::new(seed);
    }

    /// Overwrites `lora_A` and `lora_B` with those of a PEFT adapter file (as written by
    /// [`Lora::save_peft`]), for resuming training: every module of this adapter must be
    /// there with its shape.
    ///
    /// # Errors
    /// [`ModelError::Weights`] naming the file and the missing or misshapen tensor.
    pub fn restore_peft(&self, model: &Llama, weights_path: &Path) -> Result<(), ModelError> {
        let werr = |problem: String| ModelError::Weights {
            path: weights_path.to_path_buf(),
            problem,
        };
        let tensors = candle_core::safetensors::load(weights_path, &Device::Cpu)
            .map_err(|e| werr(e.to_string()))?;
        for m in &self.modules {
            for (part, var) in [("lora_A", &m.lora_a), ("lora_B", &m.lora_b)] {
                let name = format!("base_model.model.{}.{part}.weight", m.path);
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| werr(format!("{name} is missing")))?;
                if t.dims() != var.dims() {
                    return Err(werr(format!(
                        "{name} is {:?}, the adapter needs {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                let mut t = t.to_dtype(var.dtype())?.to_device(var.device())?;
                if part == "lora_B" {
                    if let Some(heads) = permuted_heads(model, &m.path) {
                        t = permute_head_rows(&t, heads, true)?;
                    }
                }
                var.set(&t)?;
            }
        }
        Ok(())
    }

    /// The trainable tensors, for the optimizer.
    pub fn vars(&self) -> Vec<Var> {
        self.modules
            .iter()
            .flat_map(|m| [m.lora_a.clone(), m.lora_b.clone()])
            .collect()
    }

    /// Trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.modules
            .iter()
            .map(|m| m.lora_a.elem_count() + m.lora_b.elem_count())
            .sum()
    }

    /// Writes `adapter_model.safetensors` (PEFT names: `base_model.model.<path>.lora_A.weight`
    /// `[r, in]`, `….lora_B.weight` `[out, r]`, Hugging Face row order) and
    /// `adapter_config.json` into `dir`, each atomically.
    ///
    /// # Errors
    /// A tensor error, or [`ModelError::Weights`] naming the file that could not be written.
    pub fn save_peft(&self, model: &Llama, dir: &Path, base_model: &str) -> Result<(), ModelError> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for m in &self.modules {
            let b = match permuted_heads(model, &m.path) {
                Some(heads) => permute_head_rows(m.lora_b.as_tensor(), heads, false)?,
                None => m.lora_b.as_tensor().clone(),
            };
            tensors.insert(
                format!("base_model.model.{}.lora_A.weight", m.path),
                m.lora_a.as_tensor().to_dtype(DType::F32)?,
            );
            tensors.insert(
                format!("base_model.model.{}.lora_B.weight", m.path),
                b.to_dtype(DType::F32)?,
            );
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        let werr = |path: &Path, e: String| ModelError::Weights {
            path: path.to_path_buf(),
            problem: e,
        };
        let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| werr(&weights_path, e.to_string()))?;
        replace_atomic(&weights_path, &bytes).map_err(|e| werr(&weights_path, e.to_string()))?;
        let c = &self.config;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": c.r,
            "lora_alpha": c.lora_alpha,
            "lora_dropout": c.lora_dropout,
            "target_modules": c.targets(),
            "use_rslora": c.use_rslora,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_dora": false,
        });
        let config_path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        replace_atomic(&config_path, text.as_bytes()).map_err(|e| werr(&config_path, e.to_string()))
    }

    /// Loads a PEFT LoRA adapter folder onto `model` for inference (dropout off).
    ///
    /// # Errors
    /// [`ModelError`] naming the file: no config or weights, not LoRA, a module the model
    /// lacks, or a tensor of the wrong shape.
    pub fn load_peft(model: &mut Llama, dir: &Path) -> Result<Lora, ModelError> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let cerr = |problem: String| ModelError::Config {
            path: config_path.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|e| cerr(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| cerr(e.to_string()))?;
        if v.get("peft_type").and_then(|t| t.as_str()) != Some("LORA") {
            return Err(cerr("peft_type is not \"LORA\"".into()));
        }
        let targets = match v.get("target_modules") {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            _ => return Err(cerr("target_modules is missing".into())),
        };
        let config = LoraConfig {
            r: v.get("r")
                .and_then(|r| r.as_u64())
                .ok_or_else(|| cerr("r is missing".into()))? as usize,
            lora_alpha: v
                .get("lora_alpha")
                .and_then(|a| a.as_f64())
                .ok_or_else(|| cerr("lora_alpha is missing".into()))?,
            lora_dropout: v
                .get("lora_dropout")
                .and_then(|d| d.as_f64())
                .unwrap_or(0.0) as f32,
            target_modules: targets,
            use_rslora: v
                .get("use_rslora")
                .and_then(|u| u.as_bool())
                .unwrap_or(false),
        };
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(cerr(problems.join("; ")));
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        let werr = |problem: String| ModelError::Weights {
            path: weights_path.clone(),
            problem,
        };
        let device = model.device().clone();
        let mut tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| werr(e.to_string()))?;
        let training = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(XorShift64Star::new(0)));
        let mut paths: Vec<(String, usize, usize)> = Vec::new();
        for (path, linear) in model.projections_mut() {
            paths.push((path, linear.in_features(), linear.out_features()));
        }
        let mut modules = Vec::new();
        for (path, inp, out) in paths {
            let take = |tensors: &mut HashMap<String, Tensor>, part: &str| {
                tensors
                    .remove(&format!("base_model.model.{path}.{part}.weight"))
                    .or_else(|| {
                        tensors.remove(&format!("base_model.model.{path}.{part}.default.weight"))
                    })
            };
            let (Some(a), Some(b)) = (take(&mut tensors, "lora_A"), take(&mut tensors, "lora_B"))
            else {
                continue;
            };
            if a.dims() != [config.r, inp] || b.dims() != [out, config.r] {
                return Err(werr(format!(
                    "{path}: lora_A {:?} and lora_B {:?} do not fit r = {} and the projection [{out}, {inp}]",
                    a.dims(),
                    b.dims(),
                    config.r
                )));
            }
            let a = a.to_dtype(model.dtype())?.to_device(&device)?;
            let mut b = b.to_dtype(model.dtype())?.to_device(&device)?;
            if let Some(heads) = permuted_heads(model, &path) {
                b = permute_head_rows(&b, heads, true)?;
            }
            modules.push(attach(model, path, (a, b), &config, &training, &rng)?);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(werr(format!(
                "tensor {extra} matches no projection of this model"
            )));
        }
        if modules.is_empty() {
            return Err(werr("no LoRA tensors".into()));
        }
        Ok(Lora {
            config,
            modules,
            training,
            rng,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_dropout_drops_its_share_scales_the_rest_and_repeats_by_seed() -> CandleResult<()> {
        let x = Tensor::ones(20_000, DType::F32, &Device::Cpu)?;
        let draw = |seed| {
            seeded_dropout(&x, 0.25, &Mutex::new(XorShift64Star::new(seed)))?.to_vec1::<f32>()
        };
        let a = draw(1)?;
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        assert_eq!(a, draw(1)?);
        assert_ne!(a, draw(2)?);
        Ok(())
    }
}
