//! The model runtime: finding and loading a Llama-family base model (Hugging Face files or
//! GGUF), its tokenizer and chat template, the forward pass, and streaming generation.
//!
//! Everything that prompts a model (the teacher, the side-by-side chat, evaluation) goes
//! through [`LoadedModel`] and [`generate()`].

pub mod attn512;
pub mod autograd;
pub mod config;
pub mod gemm512;
pub mod generate;
pub mod head_loss;
pub mod linear;
pub mod llama;
pub mod load;
pub mod lora;
pub mod malloc;
pub mod merge;
mod mmap;
pub mod q4_1;
pub mod q8_0;
pub mod silu512;
pub mod source;
pub mod template;
pub mod tokenizer;

pub use config::LlamaConfig;
pub use generate::{
    generate, generate_reusing, generate_taking_turns, DecodeStep, Decoding, GenerationStats,
    PromptPrefix, Sampling, StepLock, StopReason,
};
pub use linear::{Adapter, Linear};
pub use llama::{Cache, Llama};
pub use load::{load_files, load_gguf, GgufCompute, LoadOptions};
pub use source::{Resolved, Resolver};
pub use template::{ChatMessage, ChatTemplate};

use candle_core::Device;
use std::path::PathBuf;

/// A model problem, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `config.json`, `tokenizer_config.json` or GGUF metadata is unreadable or unsupported.
    #[error("{}: {problem}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The tokenizer cannot be built.
    #[error("{}: {problem}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Weights are missing, truncated or of the wrong shape.
    #[error("{}: {problem}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A chat template failed to compile or render.
    #[error("{0}")]
    Template(String),
    /// No place held the model.
    #[error("model {spec:?} not found; tried: {}", tried.join("; "))]
    NotFound {
        /// The spec asked for.
        spec: String,
        /// Each place tried, with why it failed.
        tried: Vec<String>,
    },
    /// The prompt does not fit the model's context.
    #[error(
        "{model}: the prompt is {prompt_tokens} tokens but the model's context is {context} tokens"
    )]
    PromptTooLong {
        /// Prompt length, in tokens.
        prompt_tokens: usize,
        /// The model's context, in tokens.
        context: usize,
        /// The model's file or folder.
        model: String,
    },
    /// LoRA settings that cannot work (every problem listed).
    #[error("LoRA: {0}")]
    Lora(String),
    /// A device that does not exist or was not compiled in.
    #[error("device {0}")]
    Device(String),
    /// Token ids could not be decoded.
    #[error("cannot decode tokens: {0}")]
    Decode(String),
    /// A served model's endpoint failed or refused a request: the URL, the HTTP status (if
    /// any) and the server's whole message.
    #[error("{url}: {problem}")]
    Remote {
        /// The request's URL.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The files of a model in Hugging Face layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `tokenizer_config.json` (holds the chat template), if present.
    pub tokenizer_config: Option<PathBuf>,
    /// `model.safetensors`, or every shard.
    pub weights: Vec<PathBuf>,
}

/// A model ready to prompt: weights, tokenizer and the chat template it ships, if any.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The forward pass.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// Its own Jinja chat template.
    pub chat_template: Option<String>,
    /// A display name.
    pub name: String,
    /// The file or folder it came from.
    pub source: PathBuf,
}

/// Tokens that end an assistant turn in common chat formats, besides the config's EOS.
const TURN_END_TOKENS: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>"];

impl LoadedModel {
    /// Resolves and loads `spec`.
    ///
    /// # Errors
    /// [`ModelError`] from resolution or loading.
    pub fn load(
        resolver: &Resolver,
        spec: &str,
        options: &LoadOptions,
    ) -> Result<LoadedModel, ModelError> {
        match resolver.resolve(spec)? {
            Resolved::Gguf(path) => load_gguf(&path, options),
            Resolved::Files(files) => load_files(&files, options),
        }
    }

    /// The ids that stop generation: the config's EOS ids and the turn-end tokens of
    /// ChatML, Llama 2 and Llama 3 that the vocabulary has.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.model.config.eos_token_ids.clone();
        ids.extend(
            TURN_END_TOKENS
                .iter()
                .filter_map(|t| self.tokenizer.token_to_id(t)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The chat template: the built-in one named `name`, else the model's own, else ChatML.
    ///
    /// # Errors
    /// [`ModelError::Template`] for an unknown built-in name.
    pub fn template(&self, name: Option<&str>) -> Result<ChatTemplate, ModelError> {
        let token = |id: Option<u32>| {
            id.and_then(|i| self.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let bos = token(self.model.config.bos_token_id);
        let eos = token(self.model.config.eos_token_ids.first().copied());
        match (name, &self.chat_template) {
            (Some(n), _) => ChatTemplate::builtin(n, &bos, &eos),
            (None, Some(src)) => Ok(ChatTemplate::from_source("model", src, &bos, &eos)),
            (None, None) => ChatTemplate::builtin("chatml", &bos, &eos),
        }
    }

    /// Encodes text (special tokens written in it, such as `<|im_start|>`, become their ids).
    ///
    /// # Errors
    /// [`ModelError::Decode`] if the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Decode(e.to_string()))
    }
}

/// The contiguous f32 values of CPU storage `s` under layout `l`, for the custom ops' CPU
/// kernels.
///
/// # Errors
/// When the storage is not f32 or the layout not contiguous (`what` names the tensor).
pub(crate) fn f32_slice<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what} is not a contiguous f32 tensor"),
    }
}

/// [`f32_slice`] of a tensor's storage, as a custom op's backward sees it.
///
/// # Errors
/// As [`f32_slice`], or when the tensor is not on the CPU.
pub(crate) fn tensor_f32<'a>(
    storage: &'a candle_core::Storage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(s) => f32_slice(s, l, what),
        _ => candle_core::bail!("{what} is not on the CPU"),
    }
}

/// Fixes candle's CPU thread count for the process, once, before any model code runs.
///
/// candle 0.11.1 asks for its thread count in every float matmul (`utils::get_num_threads`)
/// and, unless `RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS` is set, recomputes it by reading
/// `/proc/cpuinfo`: 60 reads per generated token for a 30-layer model, about 8% of
/// generation time on a 2-core machine. This sets `RAYON_NUM_THREADS` to candle's own
/// default (the physical cores). Call it at the start of `main`, before other threads exist.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none()
        && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Parses `cpu` or `cuda:N` (`cuda` means `cuda:0`).
///
/// # Errors
/// [`ModelError::Device`] for another name, or CUDA in a build without the `cuda` feature.
pub fn parse_device(name: &str) -> Result<Device, ModelError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        ModelError::Device(format!("{name:?}: expected cpu, cuda or cuda:N"))
                    })?,
                None => {
                    return Err(ModelError::Device(format!(
                        "{name:?}: expected cpu, cuda or cuda:N"
                    )))
                }
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(ModelError::Device(format!(
                    "{name:?}: this build has no CUDA support (rebuild with `--features cuda`)"
                )));
            }
            Device::new_cuda(ordinal).map_err(|e| ModelError::Device(format!("{name:?}: {e}")))
        }
    }
}
