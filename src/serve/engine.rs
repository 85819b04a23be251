//! The decode loop behind `bioinstruct serve`: one thread runs every request's sequences,
//! each with its own model (the base, or the base with one adapter in its slots), key/value
//! cache and sampler, taking one decode step per sequence per round, so requests for any mix
//! of models advance together and a new request starts after at most one round.
//!
//! Each round, every sequence chooses its next token from its logits, then all the sequences
//! run one batched decode step together, whatever their models
//! ([`crate::model::Llama::forward_decode_rows`]: the base projections on all the rows at
//! once, each adapter on its own rows, attention per sequence against its own cache). A new request's prompt runs when it is
//! admitted, between rounds. A sequence whose client has gone (its event channel closed) is
//! dropped at its next round.

use super::metrics::Metrics;
use crate::model::{ChatTemplate, Decoding, LoadedModel, ModelError, Sampling, StopReason};
use candle_core::{IndexOp, Tensor, D};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A model as the server lists it: the base, or the base with one LoRA adapter.
#[derive(Debug)]
pub struct ServedModel {
    /// Its id in `/v1/models` and in requests' `model`.
    pub label: String,
    /// The weights (an adapter's model shares the base's tensors; only its slots differ).
    pub loaded: LoadedModel,
    /// The chat template its requests are rendered with: the format its run trained on, for
    /// an adapter, else the model's own.
    pub template: ChatTemplate,
    /// The adapter folder, for an adapter.
    pub adapter: Option<PathBuf>,
    /// When it was loaded, in seconds since the Unix epoch.
    pub created: u64,
}

/// A token's log-probability with the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (a byte-level piece of a character decodes to U+FFFD).
    pub token: String,
    /// Natural-log probability under the model (before temperature and top-p).
    pub logprob: f32,
    /// The `k` most likely tokens at the position, most likely first: `(text, logprob)`.
    pub top: Vec<(String, f32)>,
}

/// What a sequence reports to the request that started it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt's tokens with their log-probabilities, when asked (`echo`).
    Prompt {
        /// Choice index.
        index: usize,
        /// The first prompt token's text (it has no log-probability).
        first: String,
        /// One per prompt token after the first.
        logprobs: Vec<TokenLogprob>,
    },
    /// A generated token and the text it completes (possibly empty).
    Token {
        /// Choice index.
        index: usize,
        /// Text safe to show.
        text: String,
        /// The token's log-probability, when asked (`None` for text released at the end).
        logprob: Option<TokenLogprob>,
    },
    /// The sequence ended.
    Done {
        /// Choice index.
        index: usize,
        /// Why.
        reason: StopReason,
        /// Prompt length, in tokens.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The sequence failed; the message is whole.
    Failed {
        /// Choice index.
        index: usize,
        /// What went wrong.
        message: String,
    },
}

/// One sequence to run.
#[derive(Debug)]
pub struct Job {
    /// Which model.
    pub model: Arc<ServedModel>,
    /// Choice index reported in its events.
    pub index: usize,
    /// Prompt token ids (validated shorter than the context).
    pub prompt: Vec<u32>,
    /// Sampling; `max_new_tokens` 0 runs the prompt only.
    pub sampling: Sampling,
    /// Report each generated token's log-probability with this many alternatives.
    pub logprobs: Option<usize>,
    /// Report the prompt tokens' log-probabilities with this many alternatives (`echo`).
    pub prompt_logprobs: Option<usize>,
    /// Where its events go; when the receiver is dropped, the sequence is cancelled.
    pub events: mpsc::UnboundedSender<Event>,
}

/// The handle requests use to reach the decode loop.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue holds its maximum.
    Full,
    /// The decode loop has stopped (shutting down).
    Closed,
}

impl Engine {
    /// Starts the decode loop on its own thread: at most `max_running` sequences at once,
    /// at most `max_queue` waiting. The loop ends when every handle is dropped and its
    /// sequences are finished.
    pub fn start(max_running: usize, max_queue: usize, metrics: Arc<Metrics>) -> Engine {
        let (jobs, rx) = mpsc::channel(max_queue.max(1));
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("serve-decode".into())
            .spawn(move || decode_loop(rx, max_running.max(1), &m))
            .expect("spawning the decode thread");
        Engine { jobs, metrics }
    }

    /// Queues `job`.
    ///
    /// # Errors
    /// [`SubmitError::Full`] when the queue is full, [`SubmitError::Closed`] after shutdown.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        // Counted before the send, so the decode loop never takes it below zero.
        self.metrics.queue_depth.inc();
        let sent = self.jobs.try_send(job);
        if sent.is_err() {
            self.metrics.queue_depth.dec();
        }
        sent.map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Full,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })
    }
}

fn decode_loop(mut rx: mpsc::Receiver<Job>, max_running: usize, metrics: &Metrics) {
    let mut active: Vec<Sequence> = Vec::new();
    let mut open = true;
    loop {
        while open && active.len() < max_running {
            let job = if active.is_empty() {
                rx.blocking_recv()
            } else {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(job) = job else {
                open = false;
                break;
            };
            metrics.queue_depth.dec();
            if job.events.is_closed() {
                metrics.cancelled.inc();
                continue;
            }
            let (events, index) = (job.events.clone(), job.index);
            match Sequence::start(job, metrics) {
                Ok(seq) => active.push(seq),
                Err(e) => {
                    let _ = events.send(Event::Failed {
                        index,
                        message: e.to_string(),
                    });
                }
            }
        }
        if active.is_empty() && !open {
            return;
        }
        metrics.running.set(active.len() as i64);
        let mut next: Vec<u32> = Vec::with_capacity(active.len());
        active.retain_mut(|seq| match seq.choose(metrics) {
            Ok(Some(token)) => {
                next.push(token);
                true
            }
            Ok(None) => false,
            Err(e) => seq.fail(&e),
        });
        // Ended and cancelled sequences stop counting before the step, not after it.
        metrics.running.set(active.len() as i64);
        decode_round(&mut active, &next);
        metrics.running.set(active.len() as i64);
    }
}

/// One batched decode step for every sequence in `active`, fed `next` (one token each, in
/// order), whatever their models: the base weights run once on all the rows and each
/// adapter on its own rows ([`crate::model::Llama::forward_decode_rows`]). A step that fails
/// is reported to every sequence in it, and they end.
fn decode_round(active: &mut Vec<Sequence>, next: &[u32]) {
    let Some(first) = active.first() else { return };
    let batch = first.model.clone();
    let models: Vec<Arc<ServedModel>> = active.iter().map(|s| s.model.clone()).collect();
    let rows: Vec<&crate::model::Llama> = models.iter().map(|m| &m.loaded.model).collect();
    let result = {
        let mut caches: Vec<&mut crate::model::Cache> =
            active.iter_mut().map(|s| &mut s.cache).collect();
        batch
            .loaded
            .model
            .forward_decode_rows(next, &mut caches, &rows)
    };
    let mut failed = vec![false; active.len()];
    for (row, seq) in active.iter_mut().enumerate() {
        match result
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|logits| logits.get(row).map_err(|e| e.to_string()))
        {
            Ok(logits) => seq.logits = logits,
            Err(message) => {
                let _ = seq.events.send(Event::Failed {
                    index: seq.index,
                    message,
                });
                failed[row] = true;
            }
        }
    }
    let mut j = 0;
    active.retain(|_| {
        j += 1;
        !failed[j - 1]
    });
}

/// The `k` most likely entries of `row` (log-probabilities), most likely first.
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &v) in row.iter().enumerate() {
        if best.len() < k || v > best[best.len() - 1].1 {
            let at = best.partition_point(|&(_, b)| b >= v);
            best.insert(at, (i as u32, v));
            best.truncate(k);
        }
    }
    best
}

fn token_text(loaded: &LoadedModel, id: u32) -> String {
    loaded.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// `id`'s log-probability in `row` with the `k` best alternatives.
fn token_logprob(loaded: &LoadedModel, row: &[f32], id: u32, k: usize) -> TokenLogprob {
    TokenLogprob {
        token: token_text(loaded, id),
        logprob: row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY),
        top: top_k(row, k)
            .into_iter()
            .map(|(t, lp)| (token_text(loaded, t), lp))
            .collect(),
    }
}

fn log_softmax(logits: &Tensor) -> Result<Tensor, ModelError> {
    Ok(candle_nn::ops::log_softmax(
        &logits.to_dtype(candle_core::DType::F32)?,
        D::Minus1,
    )?)
}

struct Sequence {
    model: Arc<ServedModel>,
    index: usize,
    events: mpsc::UnboundedSender<Event>,
    decoding: Decoding,
    cache: crate::model::Cache,
    /// The logits `[vocab]` the next token is chosen from.
    logits: Tensor,
    logprobs: Option<usize>,
    prompt_tokens: usize,
    started: Instant,
    last_token: Option<Instant>,
}

impl Sequence {
    /// Runs the prompt (reporting its log-probabilities when asked).
    fn start(job: Job, metrics: &Metrics) -> Result<Sequence, ModelError> {
        let started = Instant::now();
        let loaded = &job.model.loaded;
        let decoding = Decoding::new(loaded, &job.prompt, &job.sampling)?;
        let model = &loaded.model;
        let mut cache = model.new_cache(job.prompt.len() + decoding.budget() + 1);
        let input = Tensor::new(job.prompt.as_slice(), model.device())?.unsqueeze(0)?;
        let logits = match job.prompt_logprobs {
            None => model.forward_step(&input, &mut cache)?.squeeze(0)?,
            Some(k) => {
                let all = model.forward_logits(&input, &mut cache)?.squeeze(0)?;
                let rows = log_softmax(&all)?.to_vec2::<f32>()?;
                let logprobs = (1..job.prompt.len())
                    .map(|i| token_logprob(loaded, &rows[i - 1], job.prompt[i], k))
                    .collect();
                let _ = job.events.send(Event::Prompt {
                    index: job.index,
                    first: token_text(loaded, job.prompt[0]),
                    logprobs,
                });
                all.i(all.dim(0)? - 1)?
            }
        };
        metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
        Ok(Sequence {
            prompt_tokens: job.prompt.len(),
            model: job.model,
            index: job.index,
            events: job.events,
            decoding,
            cache,
            logits,
            logprobs: job.logprobs,
            started,
            last_token: None,
        })
    }

    /// Reports `e` to the client; `false`, to drop the sequence.
    fn fail(&self, e: &ModelError) -> bool {
        let _ = self.events.send(Event::Failed {
            index: self.index,
            message: e.to_string(),
        });
        false
    }

    /// Chooses the next token and reports it; `Ok(Some(token))` when the model is to be run
    /// on it, `Ok(None)` once the sequence has ended (or its client has gone).
    fn choose(&mut self, metrics: &Metrics) -> Result<Option<u32>, ModelError> {
        if self.events.is_closed() {
            metrics.cancelled.inc();
            return Ok(None);
        }
        let loaded = &self.model.loaded;
        let row = match self.logprobs {
            Some(_) => Some(log_softmax(&self.logits)?.to_vec1::<f32>()?),
            None => None,
        };
        let step = self.decoding.step(&loaded.tokenizer, &self.logits)?;
        if let Some(token) = step.token {
            let now = Instant::now();
            match self.last_token {
                None => metrics
                    .time_to_first_token
                    .observe((now - self.started).as_secs_f64()),
                Some(last) => metrics
                    .time_per_output_token
                    .observe((now - last).as_secs_f64()),
            }
            self.last_token = Some(now);
            metrics.generation_tokens.inc();
            let logprob = row
                .as_deref()
                .zip(self.logprobs)
                .map(|(row, k)| token_logprob(loaded, row, token, k));
            let _ = self.events.send(Event::Token {
                index: self.index,
                text: step.text,
                logprob,
            });
        } else if !step.text.is_empty() {
            let _ = self.events.send(Event::Token {
                index: self.index,
                text: step.text,
                logprob: None,
            });
        }
        if let Some(reason) = step.finished {
            let rest = self.decoding.finish(&loaded.tokenizer, &reason)?;
            if !rest.is_empty() {
                let _ = self.events.send(Event::Token {
                    index: self.index,
                    text: rest,
                    logprob: None,
                });
            }
            let _ = self.events.send(Event::Done {
                index: self.index,
                reason,
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.decoding.generated(),
            });
            return Ok(None);
        }
        Ok(step.token)
    }
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        let row = [-3.0, -0.5, -2.0, -0.1, -9.0];
        assert_eq!(top_k(&row, 3), vec![(3, -0.1), (1, -0.5), (2, -2.0)]);
        assert_eq!(top_k(&row, 0), vec![]);
        assert_eq!(top_k(&row, 9).len(), 5);
    }
}
