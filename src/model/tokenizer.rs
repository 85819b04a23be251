//! Tokenizers: from a Hugging Face `tokenizer.json`, or rebuilt from GGUF metadata, plus an
//! incremental decoder that streams text without splitting a UTF-8 character.

use super::ModelError;
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel as ByteLevelPre;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::Tokenizer;

/// The `tokenizer.ggml.pre` values whose pre-tokenization bioinstruct reproduces. Any other
/// value is refused rather than approximated, since a wrong pre-tokenizer silently shifts ids.
pub const SUPPORTED_GGUF_PRE: [&str; 6] =
    ["default", "gpt2", "smollm", "llama3", "llama-bpe", "qwen2"];

/// Loads a Hugging Face `tokenizer.json`.
///
/// # Errors
/// [`ModelError::Tokenizer`] naming the file.
pub fn from_file(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn metadata_str<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a str> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

/// Rebuilds the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
///
/// candle's `TokenizerFromGguf` builds the byte-level BPE vocabulary, merges and special
/// tokens (those with `token_type` control, user-defined or unused), but does not know
/// `tokenizer.ggml.pre = "smollm"` and falls back to a prefix-space GPT-2 pre-tokenizer,
/// which shifts ids (" In" instead of "In"). For SmolLM2 this applies the pre-tokenizer of
/// its Hugging Face `tokenizer.json`: `Sequence[Digits(individual_digits), ByteLevel(
/// add_prefix_space = false)]`, with a ByteLevel decoder.
///
/// # Errors
/// [`ModelError::Tokenizer`] naming `path` when the tokenizer model is not byte-level BPE
/// (`gpt2`) or the pre-tokenizer is not in [`SUPPORTED_GGUF_PRE`].
pub fn from_gguf(path: &Path, ct: &gguf_file::Content) -> Result<Tokenizer, ModelError> {
    let err = |problem: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        problem,
    };
    let model = metadata_str(ct, "tokenizer.ggml.model").unwrap_or("(none)");
    if model != "gpt2" {
        return Err(err(format!(
            "GGUF tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\"); \
             use the model's Hugging Face folder with its tokenizer.json instead"
        )));
    }
    let pre = metadata_str(ct, "tokenizer.ggml.pre").unwrap_or("default");
    if !SUPPORTED_GGUF_PRE.contains(&pre) {
        return Err(err(format!(
            "GGUF pre-tokenizer {pre:?} is not supported (supported: {}); \
             use the model's Hugging Face folder with its tokenizer.json instead",
            SUPPORTED_GGUF_PRE.join(", ")
        )));
    }
    let mut tokenizer = Tokenizer::from_gguf(ct).map_err(|e| err(e.to_string()))?;
    if pre == "smollm" {
        let pre_tokenizer = Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevelPre::new(false, true, true).into(),
        ]);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        tokenizer.with_post_processor(Some(ByteLevelProcessor::new(false, false, true)));
    }
    Ok(tokenizer)
}

/// Turns a growing list of token ids into text pieces, never emitting half a UTF-8
/// character: a byte-level token may hold part of a character, which decodes to U+FFFD
/// until the rest arrives. After the approach of candle-examples' `TokenOutputStream`.
/// It owns no tokenizer, so a long-lived sequence can keep one beside a shared model; see
/// [`TextStream`] for the borrowing form.
#[derive(Debug, Clone, Default)]
pub struct TextDecoder {
    tokens: Vec<u32>,
    /// Start of the window that is decoded again for context.
    prev_index: usize,
    /// End of the text already emitted.
    current_index: usize,
}

fn decode(tokenizer: &Tokenizer, tokens: &[u32]) -> Result<String, ModelError> {
    tokenizer
        .decode(tokens, true)
        .map_err(|e| ModelError::Decode(e.to_string()))
}

impl TextDecoder {
    /// Adds one token; returns the text it completes, if any.
    ///
    /// # Errors
    /// [`ModelError::Decode`] if the tokenizer cannot decode the ids.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
    ) -> Result<Option<String>, ModelError> {
        let before = decode(tokenizer, &self.tokens[self.prev_index..self.current_index])?;
        self.tokens.push(token);
        let after = decode(tokenizer, &self.tokens[self.prev_index..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let piece = after.get(before.len()..).unwrap_or_default().to_string();
            self.prev_index = self.current_index;
            self.current_index = self.tokens.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Whatever text is still held back (an incomplete character at the very end).
    ///
    /// # Errors
    /// [`ModelError::Decode`].
    pub fn finish(&self, tokenizer: &Tokenizer) -> Result<Option<String>, ModelError> {
        let before = decode(tokenizer, &self.tokens[self.prev_index..self.current_index])?;
        let after = decode(tokenizer, &self.tokens[self.prev_index..])?;
        Ok((after.len() > before.len())
            .then(|| after.get(before.len()..).unwrap_or_default().to_string()))
    }

    /// Every token pushed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// A [`TextDecoder`] over a borrowed tokenizer.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    decoder: TextDecoder,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer`, starting empty.
    pub fn new(tokenizer: &'a Tokenizer) -> TextStream<'a> {
        TextStream {
            tokenizer,
            decoder: TextDecoder::default(),
        }
    }

    /// Adds one token; returns the text it completes, if any.
    ///
    /// # Errors
    /// [`ModelError::Decode`] if the tokenizer cannot decode the ids.
    pub fn push(&mut self, token: u32) -> Result<Option<String>, ModelError> {
        self.decoder.push(self.tokenizer, token)
    }

    /// Whatever text is still held back (an incomplete character at the very end).
    ///
    /// # Errors
    /// [`ModelError::Decode`].
    pub fn finish(&self) -> Result<Option<String>, ModelError> {
        self.decoder.finish(self.tokenizer)
    }

    /// Every token pushed so far.
    pub fn tokens(&self) -> &[u32] {
        self.decoder.tokens()
    }
}
