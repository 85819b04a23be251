//! Building a [`Llama`] from a GGUF file or from a folder of Hugging Face files
//! (`config.json`, `tokenizer.json`, `tokenizer_config.json`, safetensors, sharded or not).

use super::config::LlamaConfig;
use super::linear::Linear;
use super::llama::{Block, Llama};
use super::{tokenizer, LoadedModel, ModelError, ModelFiles};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::fs::File;
use std::path::{Path, PathBuf};

/// How the projections of a GGUF model are multiplied.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GgufCompute {
    /// Multiply the file's own quantized blocks (Q4_1 through this crate's AVX2 kernel on
    /// CPU, bit-identical to candle's; other types through candle's kernels).
    #[default]
    Keep,
    /// Requantize 4- and 5-bit blocks to Q8_0 at load: candle's Q8_0 kernels are SIMD,
    /// but requantizing moves weights by ~0.5% RMS (perplexity +4% on SmolLM2-135M).
    Q8_0,
    /// Dequantize everything to float (for training, and to compare with the float path).
    Float,
}

/// Where and how to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// CPU or a CUDA device.
    pub device: Device,
    /// Dtype of float weights and activations (f32 on CPU; bf16 suits a GPU).
    pub dtype: DType,
    /// GGUF projections: requantize, keep, or dequantize.
    pub gguf: GgufCompute,
}

impl LoadOptions {
    /// Options for the device named `device` (`cpu`, `cuda`, `cuda:N`): f32 on the CPU,
    /// bf16 on a GPU.
    ///
    /// # Errors
    /// [`ModelError::Device`] as [`crate::model::parse_device`].
    pub fn for_device(device: &str, gguf: GgufCompute) -> Result<LoadOptions, ModelError> {
        let device = crate::model::parse_device(device)?;
        let dtype = if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        };
        Ok(LoadOptions {
            device,
            dtype,
            gguf,
        })
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            gguf: GgufCompute::default(),
        }
    }
}

/// The parts of a checkpoint, by role, in either naming scheme.
enum Part {
    Embed,
    Norm,
    Head,
    Layer(usize, &'static str),
}

trait WeightSource {
    fn describe(&self) -> PathBuf;
    fn name(&self, part: &Part) -> String;
    fn has(&self, part: &Part) -> bool;
    fn float(&mut self, part: &Part) -> Result<Tensor, ModelError>;
    fn linear(&mut self, part: &Part) -> Result<Linear, ModelError>;
}

fn weights_err(path: PathBuf, problem: impl Into<String>) -> ModelError {
    ModelError::Weights {
        path,
        problem: problem.into(),
    }
}

struct Gguf {
    path: PathBuf,
    content: gguf_file::Content,
    file: File,
    options: LoadOptions,
}

impl Gguf {
    fn qtensor(&mut self, part: &Part) -> Result<QTensor, ModelError> {
        let name = self.name(part);
        self.content
            .tensor(&mut self.file, &name, &self.options.device)
            .map_err(|e| weights_err(self.path.clone(), format!("tensor {name}: {e}")))
    }
}

impl WeightSource for Gguf {
    fn describe(&self) -> PathBuf {
        self.path.clone()
    }

    fn name(&self, part: &Part) -> String {
        match part {
            Part::Embed => "token_embd.weight".into(),
            Part::Norm => "output_norm.weight".into(),
            Part::Head => "output.weight".into(),
            Part::Layer(i, p) => {
                let g = match *p {
                    "q_proj" => "attn_q",
                    "k_proj" => "attn_k",
                    "v_proj" => "attn_v",
                    "o_proj" => "attn_output",
                    "gate_proj" => "ffn_gate",
                    "up_proj" => "ffn_up",
                    "down_proj" => "ffn_down",
                    "input_layernorm" => "attn_norm",
                    _ => "ffn_norm",
                };
                format!("blk.{i}.{g}.weight")
            }
        }
    }

    fn has(&self, part: &Part) -> bool {
        self.content.tensor_infos.contains_key(&self.name(part))
    }

    fn float(&mut self, part: &Part) -> Result<Tensor, ModelError> {
        let q = self.qtensor(part)?;
        let t = q.dequantize(&self.options.device)?;
        Ok(t.to_dtype(self.options.dtype)?)
    }

    fn linear(&mut self, part: &Part) -> Result<Linear, ModelError> {
        let q = self.qtensor(part)?;
        let (out, inp) = q
            .shape()
            .dims2()
            .map_err(|e| weights_err(self.path.clone(), format!("{}: {e}", self.name(part))))?;
        let device = self.options.device.clone();
        let requantize = matches!(
            q.dtype(),
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        ) && inp % GgmlDType::Q8_0.block_size() == 0;
        match self.options.gguf {
            GgufCompute::Float => Ok(Linear::from_weight(
                q.dequantize(&device)?.to_dtype(self.options.dtype)?,
            )?),
            GgufCompute::Q8_0 if requantize => {
                let q8 = QTensor::quantize(&q.dequantize(&device)?, GgmlDType::Q8_0)?;
                Ok(q8_0_linear(q8, out, inp, &device)?)
            }
            _ if q.dtype() == GgmlDType::Q4_1 && device.is_cpu() => Ok(Linear::from_q4_1(
                crate::model::q4_1::Q4_1Matrix::from_ggml_bytes(&q.data()?, out, inp)?,
            )),
            _ if q.dtype() == GgmlDType::Q8_0 => Ok(q8_0_linear(q, out, inp, &device)?),
            _ => Ok(Linear::from_qmatmul(QMatMul::from_qtensor(q)?, out, inp)),
        }
    }
}

/// A Q8_0 projection: [`crate::model::q8_0`]'s kernel on a CPU with AVX-512 VNNI, candle's
/// elsewhere.
fn q8_0_linear(
    q: QTensor,
    out: usize,
    inp: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Linear> {
    if device.is_cpu() {
        if let Some(m) = crate::model::q8_0::Q8_0Matrix::from_ggml_bytes(&q.data()?, out, inp)? {
            return Ok(Linear::from_q8_0(m));
        }
    }
    Ok(Linear::from_qmatmul(QMatMul::from_qtensor(q)?, out, inp))
}

struct Safetensors {
    paths: Vec<PathBuf>,
    st: MmapedSafetensors,
    options: LoadOptions,
}

impl WeightSource for Safetensors {
    fn describe(&self) -> PathBuf {
        self.paths.first().cloned().unwrap_or_default()
    }

    fn name(&self, part: &Part) -> String {
        match part {
            Part::Embed => "model.embed_tokens.weight".into(),
            Part::Norm => "model.norm.weight".into(),
            Part::Head => "lm_head.weight".into(),
            Part::Layer(i, p) if p.ends_with("layernorm") => format!("model.layers.{i}.{p}.weight"),
            Part::Layer(i, p) if ["gate_proj", "up_proj", "down_proj"].contains(p) => {
                format!("model.layers.{i}.mlp.{p}.weight")
            }
            Part::Layer(i, p) => format!("model.layers.{i}.self_attn.{p}.weight"),
        }
    }

    fn has(&self, part: &Part) -> bool {
        self.st.get(&self.name(part)).is_ok()
    }

    fn float(&mut self, part: &Part) -> Result<Tensor, ModelError> {
        let name = self.name(part);
        let t = self
            .st
            .load(&name, &self.options.device)
            .map_err(|e| weights_err(self.describe(), format!("tensor {name}: {e}")))?;
        Ok(t.to_dtype(self.options.dtype)?)
    }

    fn linear(&mut self, part: &Part) -> Result<Linear, ModelError> {
        Ok(Linear::from_weight(self.float(part)?)?)
    }
}

fn check_shape(
    src: &dyn WeightSource,
    part: &Part,
    got: &[usize],
    want: &[usize],
) -> Result<(), ModelError> {
    if got == want {
        Ok(())
    } else {
        Err(weights_err(
            src.describe(),
            format!(
                "tensor {} has shape {got:?}, the config implies {want:?}",
                src.name(part)
            ),
        ))
    }
}

fn build(config: LlamaConfig, src: &mut dyn WeightSource) -> Result<Llama, ModelError> {
    let c = config.clone();
    let embed = src.float(&Part::Embed)?;
    check_shape(
        src,
        &Part::Embed,
        embed.dims(),
        &[c.vocab_size, c.hidden_size],
    )?;
    let q_out = c.num_heads * c.head_dim;
    let kv_out = c.num_kv_heads * c.head_dim;
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let mut linear =
            |name: &'static str, out: usize, inp: usize| -> Result<Linear, ModelError> {
                let part = Part::Layer(i, name);
                let l = src.linear(&part)?;
                check_shape(
                    src,
                    &part,
                    &[l.out_features(), l.in_features()],
                    &[out, inp],
                )?;
                Ok(l)
            };
        let q_proj = linear("q_proj", q_out, c.hidden_size)?;
        let k_proj = linear("k_proj", kv_out, c.hidden_size)?;
        let v_proj = linear("v_proj", kv_out, c.hidden_size)?;
        let o_proj = linear("o_proj", c.hidden_size, q_out)?;
        let gate_proj = linear("gate_proj", c.intermediate_size, c.hidden_size)?;
        let up_proj = linear("up_proj", c.intermediate_size, c.hidden_size)?;
        let down_proj = linear("down_proj", c.hidden_size, c.intermediate_size)?;
        let mut norm = |name: &'static str| -> Result<Tensor, ModelError> {
            let part = Part::Layer(i, name);
            let t = src.float(&part)?;
            check_shape(src, &part, t.dims(), &[c.hidden_size])?;
            Ok(t)
        };
        layers.push(Block {
            input_layernorm: norm("input_layernorm")?,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            gate_proj,
            up_proj,
            down_proj,
        });
    }
    let norm = src.float(&Part::Norm)?;
    check_shape(src, &Part::Norm, norm.dims(), &[c.hidden_size])?;
    let lm_head = if src.has(&Part::Head) {
        src.linear(&Part::Head)?
    } else {
        // Tied: the output head is the embedding matrix (quantized, for GGUF).
        src.linear(&Part::Embed)?
    };
    Ok(Llama::new(config, embed, layers, norm, lm_head)?)
}

fn metadata_string(ct: &gguf_file::Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

/// Loads a GGUF model: weights, tokenizer and chat template from its metadata.
///
/// # Errors
/// [`ModelError`] naming the file: not GGUF, truncated, an unsupported architecture or
/// tokenizer, or a tensor of the wrong shape.
pub fn load_gguf(path: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let mut file = File::open(path).map_err(|e| weights_err(path.to_path_buf(), e.to_string()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| weights_err(path.to_path_buf(), format!("not a readable GGUF file: {e}")))?;
    let config = LlamaConfig::from_gguf(path, &content)?;
    let tokenizer = tokenizer::from_gguf(path, &content)?;
    let chat_template = metadata_string(&content, "tokenizer.chat_template");
    let name = metadata_string(&content, "general.name");
    let mut src = Gguf {
        path: path.to_path_buf(),
        content,
        file,
        options: options.clone(),
    };
    let model = build(config, &mut src)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name: name.unwrap_or_else(|| path.display().to_string()),
        source: path.to_path_buf(),
    })
}

/// Loads a model from Hugging Face files.
///
/// # Errors
/// [`ModelError`] naming the file at fault.
pub fn load_files(files: &ModelFiles, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let config = LlamaConfig::from_hf_file(&files.config)?;
    let tokenizer = tokenizer::from_file(&files.tokenizer)?;
    let chat_template = match &files.tokenizer_config {
        Some(p) => super::template::chat_template_from_tokenizer_config(p)?,
        None => None,
    };
    let st = super::mmap::map(&files.weights).map_err(|e| {
        weights_err(
            files.weights.first().cloned().unwrap_or_default(),
            e.to_string(),
        )
    })?;
    let mut src = Safetensors {
        paths: files.weights.clone(),
        st,
        options: options.clone(),
    };
    let model = build(config, &mut src)?;
    let folder = files
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name: folder.display().to_string(),
        source: folder,
    })
}
