//! Model hyper-parameters: a serde mirror of Hugging Face's `config.json` for Llama-family
//! models, the same read from GGUF metadata (`llama.*` keys), and the resolved form the
//! forward pass uses.

use super::ModelError;
use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `eos_token_id` is one id or a list in `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids (Llama 3).
    Many(Vec<u32>),
}

impl TokenIds {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` in `config.json`. Only Llama 3's frequency scaling is supported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `llama3` (older files say `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Context extension factor.
    pub factor: f64,
    /// Llama 3: wavelengths above `original / low_freq_factor` are divided by `factor`.
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    /// Llama 3: wavelengths below `original / high_freq_factor` are kept.
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    /// Llama 3: the context the model was pre-trained with.
    #[serde(default = "eight_k")]
    pub original_max_position_embeddings: usize,
}

/// `rope_parameters` in a `config.json` written by transformers 5 (`rope_theta`, `rope_type`
/// and, for `llama3`, the scaling fields of [`RopeScaling`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// RoPE base frequency.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `default` or `llama3` (older files say `type`).
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// Context extension factor.
    #[serde(default)]
    pub factor: Option<f64>,
    /// As [`RopeScaling::low_freq_factor`].
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    /// As [`RopeScaling::high_freq_factor`].
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    /// As [`RopeScaling::original_max_position_embeddings`].
    #[serde(default = "eight_k")]
    pub original_max_position_embeddings: usize,
}

impl RopeParameters {
    /// The scaling these parameters describe, if any (`default` means none).
    fn scaling(&self) -> Option<RopeScaling> {
        let kind = self.rope_type.as_deref().unwrap_or("default");
        (kind != "default").then(|| RopeScaling {
            rope_type: kind.to_string(),
            factor: self.factor.unwrap_or(1.0),
            low_freq_factor: self.low_freq_factor,
            high_freq_factor: self.high_freq_factor,
            original_max_position_embeddings: self.original_max_position_embeddings,
        })
    }
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn eight_k() -> usize {
    8192
}
fn four_k() -> usize {
    4096
}

/// The fields of a Llama-family `config.json` that the forward pass needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfConfig {
    /// E.g. `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `llama` or `mistral`.
    #[serde(default)]
    pub model_type: String,
    /// Width of the residual stream (d_model).
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency (10,000 when neither this nor `rope_parameters` gives it).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (Llama 3.1+).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5's `rope_parameters`: the base frequency and the scaling in one table.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Longest context the model supports, in tokens.
    #[serde(default = "four_k")]
    pub max_position_embeddings: usize,
    /// Whether the output head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Mistral's sliding attention window, in tokens (the context is capped to it).
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

/// How RoPE pairs the dimensions of a head: Hugging Face checkpoints rotate the two halves
/// (`rotate_half`, candle's `rope`); llama.cpp's GGUF conversion permutes the q/k weights
/// so that adjacent pairs rotate (candle's `rope_i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeLayout {
    /// Pairs (i, i + d/2).
    Halves,
    /// Pairs (2i, 2i + 1).
    Interleaved,
}

/// The resolved hyper-parameters of a Llama-family model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Llama 3 RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Dimension pairing of RoPE.
    pub rope_layout: RopeLayout,
    /// Longest context, in tokens.
    pub max_context: usize,
    /// Whether the output head is the embedding matrix.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
}

/// The architectures whose forward pass this crate implements.
pub const SUPPORTED_ARCHITECTURES: [&str; 2] = ["llama", "mistral"];

impl LlamaConfig {
    /// Reads and checks `config.json`.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the file: unreadable, not JSON, a missing field, or an
    /// unsupported architecture.
    pub fn from_hf_file(path: &Path) -> Result<LlamaConfig, ModelError> {
        let err = |problem: String| ModelError::Config {
            path: path.to_path_buf(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let hf: HfConfig = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        Self::from_hf(&hf).map_err(err)
    }

    /// Resolves a parsed `config.json`.
    ///
    /// # Errors
    /// A description of what is unsupported or inconsistent.
    pub fn from_hf(hf: &HfConfig) -> Result<LlamaConfig, String> {
        let arch = if hf.model_type.is_empty() {
            hf.architectures
                .first()
                .map(|a| a.trim_end_matches("ForCausalLM").to_lowercase())
                .unwrap_or_default()
        } else {
            hf.model_type.clone()
        };
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(format!(
                "architecture {arch:?} is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ));
        }
        let rope_scaling = hf.rope_scaling.clone().or_else(|| {
            hf.rope_parameters
                .as_ref()
                .and_then(RopeParameters::scaling)
        });
        let rope_theta = hf
            .rope_theta
            .or_else(|| hf.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0);
        if let Some(s) = &rope_scaling {
            if s.rope_type != "llama3" && s.rope_type != "default" {
                return Err(format!(
                    "rope_scaling type {:?} is not supported (llama3 only)",
                    s.rope_type
                ));
            }
        }
        let config = LlamaConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            num_layers: hf.num_hidden_layers,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta,
            rope_scaling: rope_scaling.filter(|s| s.rope_type == "llama3"),
            rope_layout: RopeLayout::Halves,
            max_context: hf.sliding_window.map_or(hf.max_position_embeddings, |w| {
                w.min(hf.max_position_embeddings)
            }),
            tied_embeddings: hf.tie_word_embeddings,
            bos_token_id: hf.bos_token_id,
            eos_token_ids: hf
                .eos_token_id
                .as_ref()
                .map(TokenIds::to_vec)
                .unwrap_or_default(),
        };
        config.check()?;
        Ok(config)
    }

    /// Reads the hyper-parameters of a GGUF file (`general.architecture = llama`).
    ///
    /// # Errors
    /// [`ModelError::Config`] naming `path` for another architecture or a missing key.
    pub fn from_gguf(path: &Path, ct: &gguf_file::Content) -> Result<LlamaConfig, ModelError> {
        let err = |problem: String| ModelError::Config {
            path: path.to_path_buf(),
            problem,
        };
        let get = |key: &str| {
            ct.metadata
                .get(key)
                .ok_or_else(|| err(format!("GGUF metadata lacks {key}")))
        };
        let num = |key: &str| -> Result<usize, ModelError> {
            get(key)?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| err(format!("{key}: {e}")))
        };
        let arch = get("general.architecture")?
            .to_string()
            .map_err(|e| err(e.to_string()))?
            .clone();
        if arch != "llama" {
            return Err(err(format!(
                "architecture {arch:?} is not supported (supported: llama)"
            )));
        }
        let hidden_size = num("llama.embedding_length")?;
        let num_heads = num("llama.attention.head_count")?;
        let vocab_size = match ct.metadata.get("llama.vocab_size") {
            Some(v) => v.to_u32().map_err(|e| err(e.to_string()))? as usize,
            None => ct
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(Vec::len)
                .ok_or_else(|| {
                    err("GGUF metadata lacks llama.vocab_size and the token list".into())
                })?,
        };
        let f = |key: &str, default: f64| -> f64 {
            ct.metadata
                .get(key)
                .and_then(|v| v.to_f32().ok())
                .map_or(default, f64::from)
        };
        let id = |key: &str| ct.metadata.get(key).and_then(|v| v.to_u32().ok());
        let config = LlamaConfig {
            hidden_size,
            intermediate_size: num("llama.feed_forward_length")?,
            num_heads,
            num_kv_heads: num("llama.attention.head_count_kv").unwrap_or(num_heads),
            head_dim: num("llama.rope.dimension_count").unwrap_or(hidden_size / num_heads.max(1)),
            num_layers: num("llama.block_count")?,
            vocab_size,
            rms_norm_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: f("llama.rope.freq_base", 10_000.0),
            rope_scaling: None,
            rope_layout: RopeLayout::Interleaved,
            max_context: num("llama.context_length").unwrap_or(4096),
            tied_embeddings: !ct.tensor_infos.contains_key("output.weight"),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
        };
        config.check().map_err(err)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return Err(format!(
                "{} attention heads cannot be grouped over {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }

    /// Inverse RoPE frequencies, one per dimension pair: `theta^(-2i/d)`, with Llama 3
    /// scaling (Meta's `apply_scaling` in llama3 `model.py`) when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let Some(s) = &self.rope_scaling else {
                    // In f32, as candle-transformers' llama and quantized_llama compute it.
                    return 1f32 / (self.rope_theta as f32).powf(2.0 * i as f32 / d as f32);
                };
                let f = 1.0 / self.rope_theta.powf(2.0 * i as f64 / d);
                let original = s.original_max_position_embeddings as f64;
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let low = original / s.low_freq_factor;
                let high = original / s.high_freq_factor;
                let scaled = if wavelen < high {
                    f
                } else if wavelen > low {
                    f / s.factor
                } else {
                    let smooth = (original / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                scaled as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> LlamaConfig {
        let text = format!(
            r#"{{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2, "rms_norm_eps": 1e-5, "vocab_size": 10{extra}}}"#
        );
        let hf: HfConfig = serde_json::from_str(&text).expect("config");
        LlamaConfig::from_hf(&hf).expect("resolves")
    }

    #[test]
    fn transformers_5_rope_parameters_give_theta_and_scaling() {
        assert_eq!(parse("").rope_theta, 10_000.0);
        assert_eq!(parse(r#", "rope_theta": 500000.0"#).rope_theta, 500_000.0);
        let c = parse(r#", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}"#);
        assert_eq!((c.rope_theta, c.rope_scaling), (100_000.0, None));
        let c = parse(
            r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}"#,
        );
        assert_eq!(c.rope_theta, 500_000.0);
        assert_eq!(c.rope_scaling.map(|s| s.factor), Some(8.0));
    }
}
