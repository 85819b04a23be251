//! Autoregressive generation: sampling (greedy, temperature, top-k, top-p, repetition
//! penalty, seed) through candle-transformers' `LogitsProcessor`, stop at an end token or a
//! stop string, text streamed in UTF-8-safe pieces, cancellable between tokens, with
//! prompt and generation speed in tokens/s.

use super::tokenizer::TextDecoder;
use super::{LoadedModel, ModelError};
use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0: off).
    pub top_p: f64,
    /// Divide (or, when negative, multiply) the logits of recent tokens by this (1.0: off).
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks back over.
    pub repeat_last_n: usize,
    /// Random seed, so that a run can be repeated.
    pub seed: u64,
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// Generation stops before any of these strings; the string itself is not output.
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.2,
            top_k: 0,
            top_p: 0.9,
            repetition_penalty: 1.1,
            repeat_last_n: 64,
            seed: 42,
            max_new_tokens: 512,
            stop: Vec::new(),
        }
    }
}

impl Sampling {
    /// Greedy decoding of up to `max_new_tokens`, no penalty.
    pub fn greedy(max_new_tokens: usize) -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            max_new_tokens,
            ..Sampling::default()
        }
    }

    /// candle's sampler for these settings.
    pub fn processor(&self) -> LogitsProcessor {
        let temperature = self.temperature;
        let top_k = (self.top_k > 0).then_some(self.top_k);
        let top_p = (self.top_p < 1.0).then_some(self.top_p);
        let sampling = if temperature <= 0.0 {
            CandleSampling::ArgMax
        } else {
            match (top_k, top_p) {
                (None, None) => CandleSampling::All { temperature },
                (Some(k), None) => CandleSampling::TopK { k, temperature },
                (None, Some(p)) => CandleSampling::TopP { p, temperature },
                (Some(k), Some(p)) => CandleSampling::TopKThenTopP { k, p, temperature },
            }
        };
        LogitsProcessor::from_sampling(self.seed, sampling)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end token.
    EndToken,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The cancel flag was set.
    Cancelled,
}

/// What a generation did and how fast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationStats {
    /// Prompt length, in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated (the end token not counted).
    pub generated_tokens: usize,
    /// Time to process the prompt, in seconds.
    pub prompt_seconds: f64,
    /// Time of the one-token decode steps, in seconds.
    pub decode_seconds: f64,
    /// One-token decode steps run (generated tokens after the first).
    pub decode_steps: usize,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// The full generated text (stop string excluded).
    pub text: String,
}

impl GenerationStats {
    /// Prompt processing speed, in tokens/s.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(f64::EPSILON)
    }

    /// Generation speed (decode steps), in tokens/s.
    pub fn generation_tokens_per_second(&self) -> f64 {
        self.decode_steps as f64 / self.decode_seconds.max(f64::EPSILON)
    }
}

/// Holds back the end of the text that might be the start of a stop string, and finds a
/// stop string once it is complete.
struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// Adds `piece`; returns the text safe to emit, and whether a stop string was reached.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // The longest suffix of `pending` that begins some stop string must wait.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .filter(|&n| s.is_char_boundary(n) && self.pending.ends_with(&s[..n]))
                    .take(1)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }
}

/// A first-come, first-served lock (a ticket lock) for models that generate at once on one
/// machine: each forward step takes a turn, so two generations alternate token by token
/// and each step has every core, instead of both fighting over candle's thread pools (on 2
/// cores, two unsynchronised SmolLM2 generations ran at 3.4 tokens/s each; taking turns,
/// each gets about half of one generation's speed).
#[derive(Debug, Default)]
pub struct StepLock {
    /// `(next ticket, ticket being served)`.
    tickets: std::sync::Mutex<(u64, u64)>,
    turn: std::sync::Condvar,
}

impl StepLock {
    /// Runs `f` when this caller's turn comes.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let mine = t.0;
        t.0 += 1;
        while t.1 != mine {
            t = self.turn.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        drop(t);
        let result = f();
        self.tickets.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
        self.turn.notify_all();
        result
    }
}

/// Generates a continuation of `prompt_ids`, calling `on_text` with each new piece of text
/// as soon as it is complete UTF-8 and cannot be part of a stop string. `cancel` is checked
/// before every token: once set, generation ends after at most the token in progress.
///
/// # Errors
/// [`ModelError::PromptTooLong`] when the prompt fills the context; tensor or decoding
/// errors.
pub fn generate(
    loaded: &LoadedModel,
    prompt_ids: &[u32],
    sampling: &Sampling,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<GenerationStats, ModelError> {
    generate_taking_turns(loaded, prompt_ids, sampling, cancel, None, on_text)
}

/// [`generate`], with every forward step taken in turn with other generations sharing
/// `turns` (the Chat pane's two columns).
///
/// # Errors
/// As [`generate`].
pub fn generate_taking_turns(
    loaded: &LoadedModel,
    prompt_ids: &[u32],
    sampling: &Sampling,
    cancel: &AtomicBool,
    turns: Option<&StepLock>,
    on_text: impl FnMut(&str),
) -> Result<GenerationStats, ModelError> {
    generate_with(loaded, prompt_ids, None, sampling, cancel, turns, on_text)
}

/// [`generate`], reusing what `prefix` holds of an earlier prompt's opening tokens instead of
/// computing them again (the self-instruct prompt's fixed header before its sampled
/// examples: see [`PromptPrefix`]).
///
/// # Errors
/// As [`generate`].
pub fn generate_reusing(
    loaded: &LoadedModel,
    prompt_ids: &[u32],
    prefix: &mut PromptPrefix,
    sampling: &Sampling,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<GenerationStats, ModelError> {
    generate_with(
        loaded,
        prompt_ids,
        Some(prefix),
        sampling,
        cancel,
        None,
        on_text,
    )
}

/// The key/value cache of the opening tokens that successive prompts share, kept between
/// generations so that each computes only what follows them.
///
/// The shared opening is learned from the prompts themselves: the longest common prefix of
/// token ids of the last two prompts, when it is at least [`PromptPrefix::MIN_TOKENS`]
/// long. It is kept until a prompt arrives that does not begin with it. Each generation
/// continues a [`super::Cache::branch`] of it, so one generation at a time may use it
/// (hold it behind a lock for the whole generation).
#[derive(Debug, Default)]
pub struct PromptPrefix {
    /// The opening tokens `cache` holds.
    ids: Vec<u32>,
    /// Keys and values of `ids` (at position `ids.len()`).
    cache: Option<super::Cache>,
    /// The last prompt seen, to find the opening the next one shares with it.
    last: Vec<u32>,
}

impl PromptPrefix {
    /// Shorter shared openings are not worth keeping.
    pub const MIN_TOKENS: usize = 32;

    /// How many opening tokens are held (0 before two prompts shared one).
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |_| self.ids.len())
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A cache for `prompt_ids` (at most `capacity` positions) already holding as many of
    /// its opening tokens as can be reused: a branch of the kept opening, or of a new one
    /// computed now when `prompt_ids` shares at least [`Self::MIN_TOKENS`] opening tokens
    /// with the last prompt. At least the prompt's last token is always left to compute.
    fn cache_for(
        &mut self,
        loaded: &LoadedModel,
        prompt_ids: &[u32],
        capacity: usize,
    ) -> Result<super::Cache, ModelError> {
        let usable = prompt_ids.len() - 1;
        let reusable =
            self.cache.is_some() && self.ids.len() <= usable && prompt_ids.starts_with(&self.ids);
        if !reusable {
            let shared = self
                .last
                .iter()
                .zip(prompt_ids)
                .take_while(|(a, b)| a == b)
                .count()
                .min(usable);
            self.cache = None;
            if shared >= Self::MIN_TOKENS {
                let mut cache = loaded.model.new_cache(capacity);
                let input =
                    Tensor::new(&prompt_ids[..shared], loaded.model.device())?.unsqueeze(0)?;
                loaded.model.forward_step(&input, &mut cache)?;
                self.ids = prompt_ids[..shared].to_vec();
                self.cache = Some(cache);
            }
        }
        self.last = prompt_ids.to_vec();
        Ok(match &self.cache {
            Some(cache) => cache.branch(),
            None => loaded.model.new_cache(capacity),
        })
    }
}

/// One step of [`Decoding::step`]: the token chosen, the text it completes, and whether
/// generation ends here.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeStep {
    /// The token chosen and kept (`None` when it was an end token or nothing was chosen).
    pub token: Option<u32>,
    /// Text now safe to emit (complete UTF-8, not part of a stop string); may be empty.
    pub text: String,
    /// Why generation ends after this step, if it does.
    pub finished: Option<StopReason>,
}

/// The sampling side of one generation, without the forward pass: the caller feeds each
/// step's logits `[vocab]` and runs the model on the token returned. It owns everything it
/// needs (sampler, text decoder, stop strings), so a scheduler can keep many of them beside
/// one shared model ([`generate`] is one of these in a loop).
pub struct Decoding {
    processor: LogitsProcessor,
    decoder: TextDecoder,
    filter: StopFilter,
    history: Vec<u32>,
    stop_ids: Vec<u32>,
    budget: usize,
    max_new_tokens: usize,
    repetition_penalty: f32,
    repeat_last_n: usize,
    generated: usize,
    text: String,
}

impl std::fmt::Debug for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoding")
            .field("generated", &self.generated)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Decoding {
    /// Decoding of a continuation of `prompt_ids`: at most `sampling.max_new_tokens`, and no
    /// more than the context leaves.
    ///
    /// # Errors
    /// [`ModelError::PromptTooLong`] for an empty prompt or one that fills the context.
    pub fn new(
        loaded: &LoadedModel,
        prompt_ids: &[u32],
        sampling: &Sampling,
    ) -> Result<Decoding, ModelError> {
        let context = loaded.model.config.max_context;
        if prompt_ids.is_empty() || prompt_ids.len() >= context {
            return Err(ModelError::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                context,
                model: loaded.source.display().to_string(),
            });
        }
        Ok(Decoding {
            processor: sampling.processor(),
            decoder: TextDecoder::default(),
            filter: StopFilter {
                stops: sampling.stop.clone(),
                pending: String::new(),
            },
            history: prompt_ids.to_vec(),
            stop_ids: loaded.stop_token_ids(),
            budget: sampling.max_new_tokens.min(context - prompt_ids.len()),
            max_new_tokens: sampling.max_new_tokens,
            repetition_penalty: sampling.repetition_penalty,
            repeat_last_n: sampling.repeat_last_n,
            generated: 0,
            text: String::new(),
        })
    }

    /// The most tokens this generation may produce, in tokens.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Tokens generated so far (an end token not counted).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn out_of_budget(&self) -> StopReason {
        if self.budget < self.max_new_tokens {
            StopReason::ContextFull
        } else {
            StopReason::MaxTokens
        }
    }

    /// Chooses the token after `logits` `[vocab]` (the last position's), with the repetition
    /// penalty over the last `repeat_last_n` tokens of prompt and output.
    ///
    /// # Errors
    /// Tensor or decoding errors.
    pub fn step(
        &mut self,
        tokenizer: &tokenizers::Tokenizer,
        logits: &Tensor,
    ) -> Result<DecodeStep, ModelError> {
        if self.generated >= self.budget {
            return Ok(DecodeStep {
                token: None,
                text: String::new(),
                finished: Some(self.out_of_budget()),
            });
        }
        let penalised;
        let logits = if self.repetition_penalty != 1.0 {
            let start_at = self.history.len().saturating_sub(self.repeat_last_n);
            penalised = candle_transformers::utils::apply_repeat_penalty(
                logits,
                self.repetition_penalty,
                &self.history[start_at..],
            )?;
            &penalised
        } else {
            logits
        };
        let next = self.processor.sample(logits)?;
        if self.stop_ids.contains(&next) {
            return Ok(DecodeStep {
                token: None,
                text: String::new(),
                finished: Some(StopReason::EndToken),
            });
        }
        self.generated += 1;
        self.history.push(next);
        let mut step = DecodeStep {
            token: Some(next),
            text: String::new(),
            finished: None,
        };
        if let Some(piece) = self.decoder.push(tokenizer, next)? {
            let (out, stopped) = self.filter.push(&piece);
            self.text.push_str(&out);
            step.text = out;
            if stopped {
                step.finished = Some(StopReason::StopString);
                return Ok(step);
            }
        }
        if self.generated >= self.budget {
            step.finished = Some(self.out_of_budget());
        }
        Ok(step)
    }

    /// Ends the generation for `reason`: the text still held back (part of a character, or
    /// the start of a stop string that never came), none after a stop string.
    ///
    /// # Errors
    /// [`ModelError::Decode`].
    pub fn finish(
        &mut self,
        tokenizer: &tokenizers::Tokenizer,
        reason: &StopReason,
    ) -> Result<String, ModelError> {
        if *reason == StopReason::StopString {
            return Ok(String::new());
        }
        let mut rest = self.decoder.finish(tokenizer)?.unwrap_or_default();
        rest.insert_str(0, &std::mem::take(&mut self.filter.pending));
        self.text.push_str(&rest);
        Ok(rest)
    }
}

fn generate_with(
    loaded: &LoadedModel,
    prompt_ids: &[u32],
    prefix: Option<&mut PromptPrefix>,
    sampling: &Sampling,
    cancel: &AtomicBool,
    turns: Option<&StepLock>,
    mut on_text: impl FnMut(&str),
) -> Result<GenerationStats, ModelError> {
    let step = |input: &Tensor, cache: &mut super::Cache| match turns {
        Some(lock) => lock.run(|| loaded.model.forward_step(input, cache)),
        None => loaded.model.forward_step(input, cache),
    };
    let model = &loaded.model;
    let mut decoding = Decoding::new(loaded, prompt_ids, sampling)?;
    let start = Instant::now();
    let capacity = prompt_ids.len() + decoding.budget();
    let mut cache = match prefix {
        Some(prefix) => prefix.cache_for(loaded, prompt_ids, capacity)?,
        None => model.new_cache(capacity),
    };
    let input = Tensor::new(&prompt_ids[cache.position..], model.device())?.unsqueeze(0)?;
    let mut logits = step(&input, &mut cache)?.squeeze(0)?;
    let prompt_seconds = start.elapsed().as_secs_f64();

    let decode_start = Instant::now();
    let mut decode_steps = 0;
    let stop_reason = loop {
        if cancel.load(Ordering::Relaxed) {
            break StopReason::Cancelled;
        }
        let next = decoding.step(&loaded.tokenizer, &logits)?;
        if !next.text.is_empty() {
            on_text(&next.text);
        }
        if let Some(reason) = next.finished {
            break reason;
        }
        let Some(token) = next.token else { continue };
        let input = Tensor::new(&[token], model.device())?.unsqueeze(0)?;
        logits = step(&input, &mut cache)?.squeeze(0)?;
        decode_steps += 1;
    };
    let decode_seconds = decode_start.elapsed().as_secs_f64();
    let rest = decoding.finish(&loaded.tokenizer, &stop_reason)?;
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(GenerationStats {
        prompt_tokens: prompt_ids.len(),
        generated_tokens: decoding.generated(),
        prompt_seconds,
        decode_seconds,
        decode_steps,
        stop_reason,
        text: decoding.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter {
            stops,
            pending: String::new(),
        };
        let mut out = Vec::new();
        for p in pieces {
            let (o, stopped) = f.push(p);
            out.push(o);
            if stopped {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_held_back_then_dropped() {
        let (out, stopped) = run(&["\n### "], &["Metformin", ".\n#", "##", " Instruction"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Metformin.");
        assert_eq!(out, vec!["Metformin", ".", "", ""]);
    }

    #[test]
    fn a_false_start_of_a_stop_string_is_released() {
        let (out, stopped) = run(&["</answer>"], &["a <", "/b> c"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a </b> c");
    }

    #[test]
    fn no_stop_strings_pass_everything_through() {
        let (out, _) = run(&[], &["é", "ü"]);
        assert_eq!(out, vec!["é", "ü"]);
    }
}
