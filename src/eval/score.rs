//! Running a model on an item.
//!
//! - `loglikelihood` follows lm-evaluation-harness's `multiple_choice` (its HF backend's
//!   `_encode_pair` and `_loglikelihood_tokens`): the continuation is `" " + choice`; the
//!   whole string `context + continuation` is tokenized and the continuation's tokens are what
//!   follows the context's own tokenization; the score is the summed log-probability of those
//!   tokens. The context runs once per item and every choice continues from its KV cache. A
//!   context too long for the model loses tokens from the left, as the harness truncates.
//! - `generate` renders the instruction and input as one user turn through the model's chat
//!   template (or Stanford Alpaca's template, for an adapter trained with it), decodes
//!   greedily up to the task's token limit and keeps the raw text.

use super::{Item, Mode, Task};
use crate::data::{Category, Instruction};
use crate::model::{generate, ChatMessage, ChatTemplate, LoadedModel, ModelError, Sampling};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;

/// How a `generate` prompt is written.
#[derive(Debug, Clone)]
pub enum PromptStyle {
    /// Instruction and input (a blank line between) as one user turn of this template.
    Chat(ChatTemplate),
    /// Stanford Alpaca's template ([`crate::train::data::alpaca_prompt`]), for adapters
    /// trained with `[data] format = "alpaca"`.
    Alpaca,
}

impl PromptStyle {
    /// `chat:<template>` or `alpaca`, for labels and cache keys.
    pub fn name(&self) -> String {
        match self {
            PromptStyle::Chat(t) => format!("chat:{}", t.name),
            PromptStyle::Alpaca => "alpaca".into(),
        }
    }

    /// The prompt text for an instruction and its input.
    ///
    /// # Errors
    /// [`ModelError::Template`] when the template fails.
    pub fn render(&self, instruction: &str, input: &str) -> Result<String, ModelError> {
        match self {
            PromptStyle::Chat(t) => t.render(
                &[ChatMessage::new("user", user_turn(instruction, input))],
                true,
            ),
            PromptStyle::Alpaca => Ok(crate::train::data::alpaca_prompt(&Instruction {
                id: String::new(),
                category: Category::Other,
                task: String::new(),
                instruction: instruction.to_string(),
                input: input.to_string(),
                output: String::new(),
                extra: Default::default(),
            })),
        }
    }
}

/// The one user turn a chat prompt is made of: the instruction, then the input after a blank
/// line (when there is one).
pub fn user_turn(instruction: &str, input: &str) -> String {
    if input.trim().is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    }
}

/// The token ids an item is run on: what the cache keys and what [`run`] computes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Request {
    /// Score each continuation after the context.
    Loglikelihood {
        /// The context's tokens (left-truncated to fit).
        context: Vec<u32>,
        /// One token list per choice.
        continuations: Vec<Vec<u32>>,
        /// Context tokens cut from the left.
        truncated_tokens: usize,
    },
    /// Decode greedily after the prompt.
    Generate {
        /// The prompt's tokens.
        prompt: Vec<u32>,
        /// The most tokens to generate.
        max_new_tokens: usize,
        /// Input tokens cut from its end so the prompt and answer fit the context.
        truncated_tokens: usize,
    },
}

impl Request {
    /// SHA-256 of the request (hex): the cache's prompt hash.
    pub fn hash(&self) -> String {
        super::sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// What running a request produced; what the cache stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The generated text (`generate`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw: String,
    /// Per choice, the summed log-probability of its tokens (`loglikelihood`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loglikelihoods: Vec<f64>,
    /// Per choice, whether greedy decoding would produce exactly its tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub is_greedy: Vec<bool>,
    /// Tokens fed before scoring or generating.
    pub prompt_tokens: usize,
    /// Tokens generated.
    #[serde(default)]
    pub generated_tokens: usize,
    /// Tokens cut to fit the context.
    #[serde(default)]
    pub truncated_tokens: usize,
}

/// What [`prepare`] needs of a model under evaluation, and how a request is run on it: a
/// model in this process ([`LocalModel`]) or one a server serves
/// ([`super::remote::RemoteModel`], `eval run --endpoint`).
pub trait EvalModel {
    /// A name for errors (the model's file, or its label at the endpoint).
    fn name(&self) -> String;
    /// The token ids of `text`: special tokens written in it become their ids, none are added.
    ///
    /// # Errors
    /// Tokenizer (or, remote, request) errors.
    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError>;
    /// The text of token ids.
    ///
    /// # Errors
    /// [`ModelError::Decode`] (or, remote, request errors).
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError>;
    /// The token ids of a `generate` prompt: the instruction and input written in the model's
    /// prompt style, tokenized.
    ///
    /// # Errors
    /// Template or tokenizer errors.
    fn prompt(&self, instruction: &str, input: &str) -> Result<Vec<u32>, ModelError>;
    /// How `generate` prompts are written (`chat:<template>`, `alpaca`): for labels and
    /// cache keys.
    fn style_name(&self) -> String;
    /// The model's context, in tokens.
    fn max_context(&self) -> usize;
    /// The most tokens a `loglikelihood` request's context and longest continuation may hold
    /// together.
    fn scoring_window(&self) -> usize;
    /// The token an empty context is replaced by (the end-of-text token, else the
    /// beginning-of-text one), as the harness does.
    fn empty_context_token(&self) -> Option<u32>;
    /// Runs `request`; `cancel` stops a generation between tokens, where the model can.
    ///
    /// # Errors
    /// Tensor, tokenizer, context or request errors ([`ModelError`]).
    fn run(&self, request: &Request, cancel: &AtomicBool) -> Result<Outcome, ModelError>;
}

/// A model in this process with the style its `generate` prompts are written in.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// The weights, tokenizer and template (with an adapter in its slots, for a tuned model).
    pub loaded: LoadedModel,
    /// How `generate` prompts are written.
    pub style: PromptStyle,
}

impl EvalModel for LocalModel {
    fn name(&self) -> String {
        self.loaded.name.clone()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.loaded.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.loaded
            .tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::Decode(e.to_string()))
    }

    fn prompt(&self, instruction: &str, input: &str) -> Result<Vec<u32>, ModelError> {
        self.loaded.encode(&self.style.render(instruction, input)?)
    }

    fn style_name(&self) -> String {
        self.style.name()
    }

    fn max_context(&self) -> usize {
        self.loaded.model.config.max_context
    }

    /// The context and every continuation token but the last are fed: one more than the
    /// context.
    fn scoring_window(&self) -> usize {
        self.max_context() + 1
    }

    fn empty_context_token(&self) -> Option<u32> {
        let config = &self.loaded.model.config;
        config
            .eos_token_ids
            .first()
            .copied()
            .or(config.bos_token_id)
    }

    fn run(&self, request: &Request, cancel: &AtomicBool) -> Result<Outcome, ModelError> {
        run(&self.loaded, request, cancel)
    }
}

/// lm-evaluation-harness's `_encode_pair` for every continuation of one context: trailing
/// spaces of the context move to the continuations; a continuation's tokens are those of
/// `context + continuation` after as many tokens as the context alone has. The context is
/// tokenized once.
///
/// # Errors
/// Tokenizer errors.
pub fn encode_pairs(
    model: &dyn EvalModel,
    context: &str,
    continuations: &[String],
) -> Result<(Vec<u32>, Vec<Vec<u32>>), ModelError> {
    let trimmed = context.trim_end();
    let spaces = &context[trimmed.len()..];
    let context_ids = model.encode(trimmed)?;
    let conts = continuations
        .iter()
        .map(|c| {
            let whole = model.encode(&format!("{trimmed}{spaces}{c}"))?;
            Ok(whole.get(context_ids.len()..).unwrap_or_default().to_vec())
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok((context_ids, conts))
}

/// The request for `item` of `task` in `mode`.
///
/// # Errors
/// [`ModelError`] from the tokenizer or the template; [`ModelError::PromptTooLong`] when even
/// the instruction alone does not fit the context.
pub fn prepare(
    model: &dyn EvalModel,
    task: &Task,
    item: &Item,
    mode: Mode,
    max_new_tokens: usize,
) -> Result<Request, ModelError> {
    let context_len = model.max_context();
    match mode {
        Mode::Loglikelihood => {
            let context = item.context.as_deref().unwrap_or_default();
            let spaced: Vec<String> = item.choices.iter().map(|c| format!(" {c}")).collect();
            let (mut ctx, continuations) = encode_pairs(model, context, &spaced)?;
            let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
            let room = model.scoring_window().saturating_sub(longest).max(1);
            let truncated_tokens = ctx.len().saturating_sub(room);
            ctx.drain(..truncated_tokens);
            if ctx.is_empty() {
                // The harness starts an empty context with the end-of-text token.
                ctx.extend(model.empty_context_token());
            }
            Ok(Request::Loglikelihood {
                context: ctx,
                continuations,
                truncated_tokens,
            })
        }
        Mode::Generate => {
            let max_new_tokens = max_new_tokens.min(context_len / 2).max(1);
            let room = context_len.saturating_sub(max_new_tokens);
            let mut input = item.input.clone();
            let mut truncated_tokens = 0;
            loop {
                let prompt = model.prompt(&item.instruction, &input)?;
                if prompt.len() <= room {
                    return Ok(Request::Generate {
                        prompt,
                        max_new_tokens,
                        truncated_tokens,
                    });
                }
                let excess = prompt.len() - room;
                let input_ids = model.encode(&input)?;
                if input_ids.len() <= excess {
                    return Err(ModelError::PromptTooLong {
                        prompt_tokens: prompt.len(),
                        context: context_len,
                        model: format!("{} (task {}, item {})", model.name(), task.name, item.id),
                    });
                }
                // Cut a little more than the excess: tokens may merge differently at the cut.
                let keep = input_ids.len() - excess - excess.min(8);
                truncated_tokens += input_ids.len() - keep;
                input = model.decode(&input_ids[..keep])?;
            }
        }
    }
}

fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec2::<f32>()?)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Runs `request` on `model` in this process. `cancel` stops a generation between tokens.
///
/// # Errors
/// Tensor, tokenizer or context errors ([`ModelError`]).
pub fn run(
    model: &LoadedModel,
    request: &Request,
    cancel: &AtomicBool,
) -> Result<Outcome, ModelError> {
    match request {
        Request::Loglikelihood {
            context,
            continuations,
            truncated_tokens,
        } => {
            let llama = &model.model;
            let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
            let mut cache = llama.new_cache(context.len() + longest);
            let input = Tensor::new(context.as_slice(), llama.device())?.unsqueeze(0)?;
            let first = log_softmax_rows(&llama.forward_step(&input, &mut cache)?)?
                .pop()
                .unwrap_or_default();
            let mut loglikelihoods = Vec::with_capacity(continuations.len());
            let mut is_greedy = Vec::with_capacity(continuations.len());
            for cont in continuations {
                let Some((&head, rest)) = cont.split_first() else {
                    loglikelihoods.push(0.0);
                    is_greedy.push(true);
                    continue;
                };
                let mut sum = f64::from(first[head as usize]);
                let mut greedy = argmax(&first) == head as usize;
                if !rest.is_empty() {
                    let mut branch = cache.branch();
                    let fed = Tensor::new(&cont[..cont.len() - 1], llama.device())?.unsqueeze(0)?;
                    let rows =
                        log_softmax_rows(&llama.forward_logits(&fed, &mut branch)?.squeeze(0)?)?;
                    for (row, &next) in rows.iter().zip(rest) {
                        sum += f64::from(row[next as usize]);
                        greedy &= argmax(row) == next as usize;
                    }
                }
                loglikelihoods.push(sum);
                is_greedy.push(greedy);
            }
            Ok(Outcome {
                raw: String::new(),
                loglikelihoods,
                is_greedy,
                prompt_tokens: context.len(),
                generated_tokens: 0,
                truncated_tokens: *truncated_tokens,
            })
        }
        Request::Generate {
            prompt,
            max_new_tokens,
            truncated_tokens,
        } => {
            let stats = generate(
                model,
                prompt,
                &Sampling::greedy(*max_new_tokens),
                cancel,
                |_| {},
            )?;
            Ok(Outcome {
                raw: stats.text,
                loglikelihoods: Vec::new(),
                is_greedy: Vec::new(),
                prompt_tokens: prompt.len(),
                generated_tokens: stats.generated_tokens,
                truncated_tokens: *truncated_tokens,
            })
        }
    }
}
