//! Training examples from instruction records: the prompt (Stanford Alpaca's template, as
//! BioInstruct tuned Alpaca-style, or the model's chat template), the response, token ids,
//! and labels that put the loss on response tokens only.

use crate::data::{Category, Instruction};
use crate::model::{ChatMessage, ChatTemplate, ModelError};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// The label of a token that takes no loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// Alpaca's prompt for records with an input (`PROMPT_DICT["prompt_input"]`).
pub const ALPACA_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
/// Alpaca's prompt for records without one (`PROMPT_DICT["prompt_no_input"]`).
pub const ALPACA_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// How a record becomes a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// Stanford Alpaca's template; the response ends with the end-of-sequence token.
    #[default]
    Alpaca,
    /// The model's chat template: instruction (and input) as the user turn; the response
    /// ends with the template's turn-end token.
    Chat,
}

/// The prompt text of a record in Alpaca's format.
pub fn alpaca_prompt(r: &Instruction) -> String {
    if r.input.trim().is_empty() {
        ALPACA_NO_INPUT.replace("{instruction}", &r.instruction)
    } else {
        ALPACA_WITH_INPUT
            .replace("{instruction}", &r.instruction)
            .replace("{input}", &r.input)
    }
}

/// One tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The record's id.
    pub id: String,
    /// Prompt then response token ids, at most `max_seq_len` of them.
    pub input_ids: Vec<u32>,
    /// Per position: the id to predict there (the next token) on response positions,
    /// [`IGNORE`] elsewhere; same length as `input_ids` (the last position predicts nothing).
    pub labels: Vec<i64>,
    /// Whether the response was cut at `max_seq_len`.
    pub truncated: bool,
}

impl Example {
    /// Tokens that carry loss.
    pub fn loss_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// What building examples did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildStats {
    /// Records considered (after the category filter).
    pub records: usize,
    /// Examples built.
    pub examples: usize,
    /// Examples whose response was cut at `max_seq_len`.
    pub truncated: usize,
    /// Records dropped because their prompt alone fills `max_seq_len`.
    pub dropped: Vec<String>,
}

/// Settings for [`build_examples`].
#[derive(Debug, Clone)]
pub struct BuildOptions<'a> {
    /// Prompt format.
    pub format: PromptFormat,
    /// The chat template (used with [`PromptFormat::Chat`]).
    pub template: Option<&'a ChatTemplate>,
    /// The token that ends a response.
    pub end_token: u32,
    /// Longest example, in tokens.
    pub max_seq_len: usize,
    /// Only these categories (all when empty): the paper's category ablation.
    pub categories: &'a [Category],
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ModelError::Decode(e.to_string()))
}

/// Tokenizes `records` into examples with the loss on the response only. The prompt and the
/// response are tokenized apart, so the boundary is exact.
///
/// # Errors
/// [`ModelError`] from the tokenizer or the template.
pub fn build_examples(
    records: &[Instruction],
    tokenizer: &Tokenizer,
    options: &BuildOptions,
) -> Result<(Vec<Example>, BuildStats), ModelError> {
    let mut stats = BuildStats::default();
    let mut examples = Vec::new();
    for r in records {
        if !options.categories.is_empty() && !options.categories.contains(&r.category) {
            continue;
        }
        stats.records += 1;
        let prompt = match (options.format, options.template) {
            (PromptFormat::Chat, Some(t)) => {
                let user = if r.input.trim().is_empty() {
                    r.instruction.clone()
                } else {
                    format!("{}\n\n{}", r.instruction, r.input)
                };
                t.render(&[ChatMessage::new("user", user)], true)?
            }
            _ => alpaca_prompt(r),
        };
        let prompt_ids = encode(tokenizer, &prompt)?;
        let mut response_ids = encode(tokenizer, &r.output)?;
        response_ids.push(options.end_token);
        if prompt_ids.len() + 1 >= options.max_seq_len {
            stats.dropped.push(r.id.clone());
            continue;
        }
        let room = options.max_seq_len - prompt_ids.len();
        let truncated = response_ids.len() > room;
        response_ids.truncate(room);
        let mut input_ids = prompt_ids.clone();
        input_ids.extend(&response_ids);
        // Position i predicts token i + 1; only response tokens are targets.
        let labels = (0..input_ids.len())
            .map(|i| match input_ids.get(i + 1) {
                Some(&next) if i + 1 >= prompt_ids.len() => i64::from(next),
                _ => IGNORE,
            })
            .collect();
        stats.truncated += usize::from(truncated);
        examples.push(Example {
            id: r.id.clone(),
            input_ids,
            labels,
            truncated,
        });
    }
    stats.examples = examples.len();
    Ok((examples, stats))
}

/// Shuffles `examples` deterministically by `seed` (Fisher–Yates over
/// [`crate::rng::XorShift64Star`]) and
/// splits off `validation_fraction` of them (at least one when the fraction is positive and
/// there are two or more examples). Returns (train, validation).
pub fn shuffle_split(
    mut examples: Vec<Example>,
    seed: u64,
    validation_fraction: f64,
) -> (Vec<Example>, Vec<Example>) {
    let mut rng = crate::rng::XorShift64Star::new(seed);
    for i in (1..examples.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        examples.swap(i, j);
    }
    let n_val = if validation_fraction > 0.0 && examples.len() >= 2 {
        ((examples.len() as f64 * validation_fraction).round() as usize)
            .clamp(1, examples.len() - 1)
    } else {
        0
    };
    let validation = examples.split_off(examples.len() - n_val);
    (examples, validation)
}
