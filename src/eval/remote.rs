//! A model another machine serves, under evaluation: `eval run --endpoint URL --model LABEL`
//! (the GPU server runs `bioinstruct serve`, the laptop evaluates).
//!
//! The evaluation is the local one ([`super::score::prepare`] writes the same requests): the
//! server tokenizes (vLLM's `POST /tokenize` and `POST /detokenize`, so the client needs no
//! copy of the tokenizer) and runs the token ids through `POST /v1/completions`:
//! - `loglikelihood`: each choice as one prompt `context + continuation` with `echo`,
//!   `logprobs: 1` and `max_tokens: 0`; the continuation's score is the sum of its tokens'
//!   `token_logprobs`, and it is greedy when every one of them equals its position's top
//!   alternative (lm-evaluation-harness's `local-completions` reads the same fields).
//! - `generate`: the prompt's ids with `temperature: 0` and the task's `max_tokens`.
//!
//! A `429` (the server's queue is full) or `503` is retried after its `Retry-After`.

use super::score::{user_turn, EvalModel, Outcome, PromptStyle, Request};
use crate::model::ModelError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Attempts at one request while the server answers 429 or 503.
const ATTEMPTS: u32 = 30;

/// An OpenAI-compatible server: its address and API key.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `scheme://host:port[/prefix]`, without a trailing `/v1`.
    root: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

/// A model as `GET /v1/models` lists it (`bioinstruct serve`'s fields beyond OpenAI's:
/// `max_model_len` as vLLM, `template`, `bos_token_id`, `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServedInfo {
    /// The model's id: what requests name.
    pub id: String,
    /// The base model's id, for an adapter.
    #[serde(default)]
    pub parent: Option<String>,
    /// Where the server loaded it from.
    #[serde(default)]
    pub root: Option<String>,
    /// When the server loaded it, seconds since the Unix epoch.
    #[serde(default)]
    pub created: u64,
    /// Its context, in tokens.
    #[serde(default)]
    pub max_model_len: Option<usize>,
    /// The chat template's name (`model`, `chatml`, `alpaca`).
    #[serde(default)]
    pub template: Option<String>,
    /// The beginning-of-text token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// The end-of-text token.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl Endpoint {
    /// The server at `url` (`http://host:8000` or `http://host:8000/v1`), sending `api_key`
    /// as a Bearer token when given.
    ///
    /// # Errors
    /// [`ModelError::Remote`] for a URL that is not `http://` or `https://`.
    pub fn new(url: &str, api_key: Option<String>) -> Result<Endpoint, ModelError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ModelError::Remote {
                url: url.to_string(),
                problem: "an endpoint is an http:// or https:// URL".into(),
            });
        }
        let trimmed = url.trim_end_matches('/');
        let root = trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(900))
            .build();
        Ok(Endpoint {
            root,
            api_key,
            agent,
        })
    }

    /// The server's address, as cache keys and reports name it.
    pub fn url(&self) -> &str {
        &self.root
    }

    /// `GET` (no body) or `POST` `body` to `path`, retrying 429 and 503.
    fn call(&self, path: &str, body: Option<&Value>) -> Result<Value, ModelError> {
        let url = format!("{}{path}", self.root);
        let fail = |problem: String| ModelError::Remote {
            url: url.clone(),
            problem,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = match body {
                Some(_) => self.agent.post(&url),
                None => self.agent.get(&url),
            };
            if let Some(k) = &self.api_key {
                request = request.set("Authorization", &format!("Bearer {k}"));
            }
            let reply = match body {
                Some(b) => request.send_json(b),
                None => request.call(),
            };
            match reply {
                Ok(r) => {
                    let text = r
                        .into_string()
                        .map_err(|e| fail(format!("reading the reply: {e}")))?;
                    return serde_json::from_str(&text)
                        .map_err(|e| fail(format!("the reply is not JSON: {e}")));
                }
                Err(ureq::Error::Status(status, r)) => {
                    let wait = r
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(1.0);
                    let text = r.into_string().unwrap_or_default();
                    if (status == 429 || status == 503) && attempt < ATTEMPTS {
                        std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.1, 30.0)));
                        continue;
                    }
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                        .unwrap_or(text);
                    return Err(fail(format!("HTTP {status}: {message}")));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(fail(format!("cannot reach the server: {t}")));
                }
            }
        }
    }

    /// The models the server lists, in its order.
    ///
    /// # Errors
    /// [`ModelError::Remote`]: unreachable, refused (a missing or wrong key), or not a model
    /// list.
    pub fn models(&self) -> Result<Vec<ServedInfo>, ModelError> {
        let reply = self.call("/v1/models", None)?;
        serde_json::from_value::<Vec<ServedInfo>>(reply["data"].clone()).map_err(|e| {
            ModelError::Remote {
                url: format!("{}/v1/models", self.root),
                problem: format!("not a model list: {e}"),
            }
        })
    }

    /// The served models to evaluate for `labels`: the base first (the parent of the first
    /// label that has one, else the first model listed), then each label that is not it,
    /// in order, without repeats.
    ///
    /// # Errors
    /// [`ModelError::Remote`] for a label the server does not list (the served ones named),
    /// a model without `max_model_len`, or the errors of [`Endpoint::models`].
    pub fn pick(&self, labels: &[String]) -> Result<Vec<RemoteModel>, ModelError> {
        let served = self.models()?;
        let find = |id: &str| served.iter().find(|m| m.id == id);
        let fail = |problem: String| ModelError::Remote {
            url: format!("{}/v1/models", self.root),
            problem,
        };
        let mut chosen: Vec<&ServedInfo> = Vec::new();
        for label in labels {
            let m = find(label).ok_or_else(|| {
                fail(format!(
                    "no model {label:?} is served; served: {}",
                    served
                        .iter()
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            chosen.push(m);
        }
        let base = chosen
            .iter()
            .find_map(|m| m.parent.as_deref())
            .and_then(find)
            .or_else(|| served.iter().find(|m| m.parent.is_none()))
            .or(served.first())
            .ok_or_else(|| fail("the server lists no model".into()))?;
        let mut out: Vec<RemoteModel> = Vec::new();
        for m in std::iter::once(base).chain(chosen) {
            if out.iter().any(|o| o.info.id == m.id) {
                continue;
            }
            if m.max_model_len.is_none() {
                return Err(fail(format!(
                    "model {:?} has no max_model_len: its context is needed to fit prompts",
                    m.id
                )));
            }
            out.push(RemoteModel {
                endpoint: self.clone(),
                info: m.clone(),
            });
        }
        Ok(out)
    }
}

/// One served model, evaluated through its endpoint.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    endpoint: Endpoint,
    /// What the server says of it.
    pub info: ServedInfo,
}

#[derive(Deserialize)]
struct Tokens {
    tokens: Vec<u32>,
}

#[derive(Deserialize)]
struct CompletionLogprobs {
    #[serde(default)]
    token_logprobs: Vec<Option<f64>>,
    #[serde(default)]
    top_logprobs: Vec<Option<serde_json::Map<String, Value>>>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    text: String,
    logprobs: Option<CompletionLogprobs>,
}

#[derive(Deserialize)]
struct CompletionReply {
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<Value>,
}

impl RemoteModel {
    /// What identifies the served weights in the cache: the endpoint, the model's id, where
    /// the server loaded it from and when (a restarted server's results are computed anew).
    pub fn key(&self) -> String {
        format!(
            "endpoint {}|{}|root {}|created {}",
            self.endpoint.root,
            self.info.id,
            self.info.root.as_deref().unwrap_or_default(),
            self.info.created
        )
    }

    fn completions(&self, body: &Value) -> Result<CompletionReply, ModelError> {
        let reply = self.endpoint.call("/v1/completions", Some(body))?;
        serde_json::from_value(reply).map_err(|e| ModelError::Remote {
            url: format!("{}/v1/completions", self.endpoint.root),
            problem: format!("not a completion: {e}"),
        })
    }

    fn tokenize(&self, body: &Value) -> Result<Vec<u32>, ModelError> {
        let reply = self.endpoint.call("/tokenize", Some(body))?;
        serde_json::from_value::<Tokens>(reply)
            .map(|t| t.tokens)
            .map_err(|e| ModelError::Remote {
                url: format!("{}/tokenize", self.endpoint.root),
                problem: format!("no token list: {e}"),
            })
    }

    fn is_alpaca(&self) -> bool {
        self.info.template.as_deref() == Some("alpaca")
    }

    /// The summed log-probability of each continuation after `context`, and whether each
    /// is what greedy decoding gives.
    fn loglikelihoods(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<(Vec<f64>, Vec<bool>), ModelError> {
        let asked: Vec<usize> = (0..continuations.len())
            .filter(|&i| !continuations[i].is_empty())
            .collect();
        let mut sums = vec![0.0; continuations.len()];
        let mut greedy = vec![true; continuations.len()];
        if asked.is_empty() {
            return Ok((sums, greedy));
        }
        let prompts: Vec<Vec<u32>> = asked
            .iter()
            .map(|&i| [context, continuations[i].as_slice()].concat())
            .collect();
        let reply = self.completions(&json!({
            "model": self.info.id,
            "prompt": prompts,
            "max_tokens": 0,
            "echo": true,
            "logprobs": 1,
            "temperature": 0,
        }))?;
        let malformed = |problem: String| ModelError::Remote {
            url: format!("{}/v1/completions", self.endpoint.root),
            problem,
        };
        if reply.choices.len() != asked.len() {
            return Err(malformed(format!(
                "{} choices for {} prompts",
                reply.choices.len(),
                asked.len()
            )));
        }
        for choice in reply.choices {
            let Some(&i) = asked.get(choice.index) else {
                return Err(malformed(format!(
                    "choice index {} out of range",
                    choice.index
                )));
            };
            let lp = choice
                .logprobs
                .ok_or_else(|| malformed("a choice has no logprobs".into()))?;
            let end = context.len() + continuations[i].len();
            if lp.token_logprobs.len() < end {
                return Err(malformed(format!(
                    "{} prompt log-probabilities for a prompt of {end} tokens (does the server echo them with max_tokens 0?)",
                    lp.token_logprobs.len()
                )));
            }
            for pos in context.len()..end {
                let token = lp.token_logprobs[pos]
                    .ok_or_else(|| malformed(format!("no log-probability at position {pos}")))?;
                sums[i] += token;
                let top = lp
                    .top_logprobs
                    .get(pos)
                    .and_then(Option::as_ref)
                    .and_then(|m| m.values().filter_map(Value::as_f64).reduce(f64::max));
                greedy[i] &= top.is_some_and(|t| token >= t);
            }
        }
        Ok((sums, greedy))
    }
}

impl EvalModel for RemoteModel {
    fn name(&self) -> String {
        format!("{} at {}", self.info.id, self.endpoint.root)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenize(&json!({
            "model": self.info.id,
            "prompt": text,
            "add_special_tokens": false,
        }))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        let reply = self.endpoint.call(
            "/detokenize",
            Some(&json!({"model": self.info.id, "tokens": ids})),
        )?;
        reply["prompt"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ModelError::Remote {
                url: format!("{}/detokenize", self.endpoint.root),
                problem: "the reply has no prompt text".into(),
            })
    }

    /// A model served with the `alpaca` template gets Stanford Alpaca's prompt (instruction
    /// and input in their own sections, as [`super::score::PromptStyle::Alpaca`]); any other
    /// gets one user turn through the server's chat template.
    fn prompt(&self, instruction: &str, input: &str) -> Result<Vec<u32>, ModelError> {
        if self.is_alpaca() {
            return self.encode(&PromptStyle::Alpaca.render(instruction, input)?);
        }
        let user = user_turn(instruction, input);
        self.tokenize(&json!({
            "model": self.info.id,
            "messages": [{"role": "user", "content": user}],
            "add_generation_prompt": true,
        }))
    }

    fn style_name(&self) -> String {
        match self.info.template.as_deref() {
            Some("alpaca") => "alpaca".into(),
            Some(t) => format!("chat:{t}"),
            None => "chat:served".into(),
        }
    }

    fn max_context(&self) -> usize {
        self.info.max_model_len.unwrap_or(0)
    }

    /// The whole prompt (context and continuation) is sent, and a server takes prompts
    /// shorter than its context.
    fn scoring_window(&self) -> usize {
        self.max_context().saturating_sub(1)
    }

    fn empty_context_token(&self) -> Option<u32> {
        self.info.eos_token_id.or(self.info.bos_token_id)
    }

    fn run(&self, request: &Request, _cancel: &AtomicBool) -> Result<Outcome, ModelError> {
        match request {
            Request::Loglikelihood {
                context,
                continuations,
                truncated_tokens,
            } => {
                let (loglikelihoods, is_greedy) = self.loglikelihoods(context, continuations)?;
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
                let reply = self.completions(&json!({
                    "model": self.info.id,
                    "prompt": prompt,
                    "max_tokens": max_new_tokens,
                    "temperature": 0,
                }))?;
                let text = reply
                    .choices
                    .into_iter()
                    .next()
                    .map(|c| c.text)
                    .unwrap_or_default();
                let generated_tokens = reply
                    .usage
                    .as_ref()
                    .and_then(|u| u["completion_tokens"].as_u64())
                    .unwrap_or(0) as usize;
                Ok(Outcome {
                    raw: text,
                    loglikelihoods: Vec::new(),
                    is_greedy: Vec::new(),
                    prompt_tokens: prompt.len(),
                    generated_tokens,
                    truncated_tokens: *truncated_tokens,
                })
            }
        }
    }
}
