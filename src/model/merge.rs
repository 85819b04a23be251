//! Merging a LoRA adapter into its base model: `W' = W + scale · B A` for every adapted
//! projection (Hu et al. 2021, section 4.1: "we can explicitly compute and store W = W0 + BA
//! and perform inference as usual"; PEFT's `merge_and_unload`), written as a Hugging Face
//! model folder other tools load: `model.safetensors`, `config.json`, `tokenizer.json` and,
//! when the model has a chat template, `tokenizer_config.json`.
//!
//! Tensor names and row order are Hugging Face's (`model.layers.N.self_attn.q_proj.weight`
//! `[out, in]`, ...): a GGUF base model's q/k rows are put back from llama.cpp's order.

use super::config::RopeLayout;
use super::linear::BaseWeight;
use super::lora::{permute_head_rows, Lora};
use super::{LoadedModel, ModelError};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The base weight `[out, in]` of a float projection.
fn float_weight(linear: &super::Linear, name: &str) -> Result<Tensor, ModelError> {
    match linear.base() {
        BaseWeight::Float(l) => Ok(l.weight().clone()),
        _ => Err(ModelError::Lora(format!(
            "{name} is quantized: load the base model with gguf_compute = \"float\" to merge"
        ))),
    }
}

/// Every weight of `loaded` with `lora` merged in (none: the base model's own weights), under
/// Hugging Face's names and row order.
///
/// # Errors
/// A quantized projection ([`ModelError::Lora`]), or a tensor error.
pub fn merged_tensors(
    loaded: &LoadedModel,
    lora: Option<&Lora>,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let model = &loaded.model;
    let c = &model.config;
    let scale = lora.map_or(1.0, |l| l.config.scale());
    let deltas: HashMap<&str, (&Tensor, &Tensor)> = lora
        .iter()
        .flat_map(|l| &l.modules)
        .map(|m| {
            (
                m.path.as_str(),
                (m.lora_a.as_tensor(), m.lora_b.as_tensor()),
            )
        })
        .collect();
    let mut out = HashMap::new();
    out.insert(
        "model.embed_tokens.weight".to_string(),
        model.embed_tokens.clone(),
    );
    out.insert("model.norm.weight".to_string(), model.norm.clone());
    if !c.tied_embeddings {
        out.insert(
            "lm_head.weight".to_string(),
            float_weight(&model.lm_head, "lm_head")?,
        );
    }
    for (i, block) in model.layers.iter().enumerate() {
        let prefix = format!("model.layers.{i}");
        out.insert(
            format!("{prefix}.input_layernorm.weight"),
            block.input_layernorm.clone(),
        );
        out.insert(
            format!("{prefix}.post_attention_layernorm.weight"),
            block.post_attention_layernorm.clone(),
        );
        for (name, linear) in block.projections() {
            let path = super::llama::module_path(i, name);
            let mut w = float_weight(linear, &path)?;
            if let Some((a, b)) = deltas.get(path.as_str()) {
                // B A in f32 whatever the model's dtype, then back.
                let delta = b
                    .to_dtype(candle_core::DType::F32)?
                    .matmul(&a.to_dtype(candle_core::DType::F32)?)?;
                w = (w.to_dtype(candle_core::DType::F32)? + (delta * scale)?)?
                    .to_dtype(w.dtype())?;
            }
            if c.rope_layout == RopeLayout::Interleaved && (name == "q_proj" || name == "k_proj") {
                let heads = if name == "q_proj" {
                    c.num_heads
                } else {
                    c.num_kv_heads
                };
                w = permute_head_rows(&w, heads, false)?;
            }
            out.insert(format!("{path}.weight"), w);
        }
    }
    Ok(out)
}

/// `config.json` for the merged model (`LlamaForCausalLM`).
fn hf_config(loaded: &LoadedModel) -> serde_json::Value {
    let c = &loaded.model.config;
    let dtype = match loaded.model.dtype() {
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::F16 => "float16",
        _ => "float32",
    };
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "num_hidden_layers": c.num_layers,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling,
        "max_position_embeddings": c.max_context,
        "tie_word_embeddings": c.tied_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": match c.eos_token_ids.as_slice() {
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        },
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": dtype,
    })
}

/// Writes `loaded`'s tokenizer into `dir` (which must exist) as Hugging Face lays it out:
/// `tokenizer.json`, and `tokenizer_config.json` (`tokenizer_class`
/// `PreTrainedTokenizerFast`, BOS and EOS, the chat template when the model has one), each
/// fsynced. For a GGUF model this is the tokenizer rebuilt from its metadata (see
/// [`super::tokenizer::from_gguf`]), so tools that load tokenizers with `transformers`
/// (lm-evaluation-harness) tokenize as bioinstruct does.
///
/// # Errors
/// [`ModelError::Weights`] naming the file that cannot be written.
pub fn write_tokenizer_files(loaded: &LoadedModel, dir: &Path) -> Result<(), ModelError> {
    let werr = |path: &Path, problem: String| ModelError::Weights {
        path: path.to_path_buf(),
        problem,
    };
    let sync = |path: &Path| -> Result<(), ModelError> {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| werr(path, e.to_string()))
    };
    let tokenizer = dir.join("tokenizer.json");
    loaded
        .tokenizer
        .save(&tokenizer, false)
        .map_err(|e| werr(&tokenizer, e.to_string()))?;
    sync(&tokenizer)?;
    let token = |id: Option<u32>| id.and_then(|id| loaded.tokenizer.id_to_token(id));
    let mut tc = serde_json::json!({
        "bos_token": token(loaded.model.config.bos_token_id),
        "eos_token": token(loaded.model.config.eos_token_ids.first().copied()),
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(template) = &loaded.chat_template {
        tc["chat_template"] = serde_json::json!(template);
    }
    let path = dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&tc).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| werr(&path, e.to_string()))?;
    sync(&path)
}

/// Writes `loaded` with `lora` merged (none: the base model alone, e.g. a GGUF base for a
/// trainer that loads Hugging Face folders) as a Hugging Face model folder `out`, which must not
/// exist: the files are written into `<out>.tmp/` (each fsynced) and the folder renamed into
/// place, so a crash never leaves a half-written model under `out`.
///
/// # Errors
/// [`ModelError::Weights`] naming `out` when it exists or a file cannot be written; a
/// quantized projection; a tensor error.
pub fn write_merged(
    loaded: &LoadedModel,
    lora: Option<&Lora>,
    out: &Path,
) -> Result<(), ModelError> {
    let werr = |path: &Path, problem: String| ModelError::Weights {
        path: path.to_path_buf(),
        problem,
    };
    if out.exists() {
        return Err(werr(out, "exists already; choose a new folder".into()));
    }
    let tensors = merged_tensors(loaded, lora)?;
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| werr(&tmp, e.to_string()))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| werr(&tmp, e.to_string()))?;
    let sync = |path: &Path| -> Result<(), ModelError> {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| werr(path, e.to_string()))
    };
    let weights = tmp.join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        Some(metadata),
        &weights,
    )
    .map_err(|e| werr(&weights, e.to_string()))?;
    sync(&weights)?;
    let config = tmp.join("config.json");
    let text = serde_json::to_string_pretty(&hf_config(loaded)).unwrap_or_default();
    std::fs::write(&config, text).map_err(|e| werr(&config, e.to_string()))?;
    sync(&config)?;
    write_tokenizer_files(loaded, &tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| werr(out, e.to_string()))?;
    if let Some(parent) = out.parent() {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}
