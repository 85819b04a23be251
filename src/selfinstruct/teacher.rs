//! A teacher model behind any OpenAI-compatible Chat Completions endpoint (`POST
//! {base_url}/chat/completions`, or the legacy `/completions`): OpenAI's GPT-4 as in the paper, vLLM, llama.cpp's server,
//! Ollama. HTTP is ureq's blocking client (already the project's client for the Hub and
//! PyPI). [`LocalTeacher`] puts the local model runtime behind the same [`Teacher`] trait.
//!
//! Requests that fail for a reason that may pass (connection refused or reset, timeout, HTTP
//! 429, HTTP 5xx, a reply cut off mid-body) are retried with exponential backoff and full
//! jitter, honouring `Retry-After` (in seconds); others (HTTP 4xx, a body that is not a
//! Chat Completions reply) are reported at once. Every error names the URL. The API key is
//! read from the environment variable the config names, sent only in the `Authorization`
//! header, and never printed.

use crate::rng::XorShift64Star;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// Which OpenAI API a teacher is asked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TeacherApi {
    /// Chat Completions (`POST {base_url}/chat/completions`): the prompt is one user
    /// message and ends with a request for the new tasks.
    #[default]
    Chat,
    /// Completions (`POST {base_url}/completions`, as Alpaca used `text-davinci-003`): the
    /// prompt is raw text ending at `N. Category:`, which the teacher continues. Small or
    /// base models follow the format far better this way.
    Completions,
}

/// How to reach a teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Endpoint base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name the endpoint expects (`gpt-4`, ...).
    pub model: String,
    /// Chat Completions or (legacy) Completions.
    pub api: TeacherApi,
    /// Environment variable holding the API key (`""`: send none; unset is an error except
    /// for a server on loopback, which needs no key).
    pub api_key_env: String,
    /// Seconds before a request is abandoned (and retried).
    pub timeout_s: f64,
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff, in seconds; doubled on each retry, up to `max_backoff_s`.
    pub backoff_s: f64,
    /// Longest wait between attempts, in seconds.
    pub max_backoff_s: f64,
    /// Requests sent at once by a generation run.
    pub concurrency: usize,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            base_url: "http://127.0.0.1:8080/v1".into(),
            model: "default".into(),
            api: TeacherApi::Chat,
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_s: 120.0,
            max_retries: 5,
            backoff_s: 1.0,
            max_backoff_s: 60.0,
            concurrency: 4,
        }
    }
}

/// A teacher's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// `stop`, `length`, ...: `length` means the reply was cut at the token limit.
    pub finish_reason: String,
    /// Prompt tokens, as the endpoint counted them (0 when it does not say).
    pub prompt_tokens: u64,
    /// Generated tokens, as the endpoint counted them.
    pub completion_tokens: u64,
    /// Attempts it took (1 when the first succeeded).
    pub attempts: u32,
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TeacherError {
    /// An error a retry cannot fix (HTTP 4xx other than 429).
    #[error("{url}: HTTP {status}: {body}")]
    Rejected {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the error body.
        body: String,
    },
    /// The reply is not a Chat Completions reply.
    #[error("{url}: the reply is not a chat completion: {problem}")]
    Malformed {
        /// The endpoint.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// Every attempt failed for a passing reason; the last one's.
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// The endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Nothing answers at the endpoint (connection refused, unknown host): not retried, since
    /// waiting does not start a server.
    #[error("cannot reach {url}: {problem}. Is the server running? Start it, or choose another teacher with --teacher or [generate] teacher (\"local\" is the built-in model, no server needed)")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What the connection attempt said.
        problem: String,
    },
    /// The API key variable is named but not set.
    #[error("the API key variable {0} is not set")]
    NoKey(String),
    /// The local model failed (template, prompt too long, tensor error).
    #[error("local teacher {model}: {problem}")]
    Local {
        /// The model's name.
        model: String,
        /// What failed.
        problem: String,
    },
}

/// A model that writes new tasks: a remote endpoint or the local runtime.
pub trait Teacher: Send + Sync {
    /// A short name for logs and provenance (`model @ endpoint`, or the local model's name).
    fn name(&self) -> String;

    /// Whether prompts are sent as a chat message or as text to continue.
    fn api(&self) -> TeacherApi;

    /// A completion of `prompt` (one user turn, or text to continue, as [`Teacher::api`]
    /// says), at most `max_tokens` tokens, ending before any of `stop` (OpenAI's `stop`,
    /// at most 4 strings).
    ///
    /// # Errors
    /// [`TeacherError`].
    fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f64,
        top_p: f64,
        stop: &[String],
    ) -> Result<Completion, TeacherError>;

    /// Ends requests in flight as soon as it can, and any later ones at once (a stopped
    /// run). Remote requests cannot be recalled: the default does nothing.
    fn cancel(&self) {}
}

/// The local model runtime as a teacher, offline: the prompt as one user turn through the
/// model's chat template ([`TeacherApi::Chat`]) or as raw text to continue
/// ([`TeacherApi::Completions`]), then [`crate::model::generate_reusing`] with the given
/// sampling: the opening the prompts share (the self-instruct header) is computed once
/// ([`crate::model::PromptPrefix`]), not on every request.
///
/// Request `n` (counted from 0) samples with seed `(seed + n) XOR` an FNV-1a hash of the
/// prompt's token ids: two requests with the same prompt differ, and runs are reproducible.
#[derive(Debug)]
pub struct LocalTeacher {
    loaded: crate::model::LoadedModel,
    api: TeacherApi,
    seed: u64,
    requests: std::sync::atomic::AtomicU64,
    cancel: std::sync::atomic::AtomicBool,
    /// The prompts' shared opening (the self-instruct header), computed once: requests
    /// take turns with it, one generation at a time.
    prefix: std::sync::Mutex<crate::model::PromptPrefix>,
}

impl LocalTeacher {
    /// A teacher on `loaded`, prompted through `api`, sampling from `seed`.
    pub fn new(loaded: crate::model::LoadedModel, api: TeacherApi, seed: u64) -> LocalTeacher {
        LocalTeacher {
            loaded,
            api,
            seed,
            requests: Default::default(),
            cancel: Default::default(),
            prefix: Default::default(),
        }
    }
}

impl Teacher for LocalTeacher {
    fn name(&self) -> String {
        format!("local {}", self.loaded.name)
    }

    fn api(&self) -> TeacherApi {
        self.api
    }

    fn cancel(&self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f64,
        top_p: f64,
        stop: &[String],
    ) -> Result<Completion, TeacherError> {
        let err = |e: crate::model::ModelError| TeacherError::Local {
            model: self.loaded.name.clone(),
            problem: e.to_string(),
        };
        let text = match self.api {
            TeacherApi::Chat => self
                .loaded
                .template(None)
                .and_then(|t| t.render(&[crate::model::ChatMessage::new("user", prompt)], true))
                .map_err(err)?,
            TeacherApi::Completions => prompt.to_string(),
        };
        let ids = self.loaded.encode(&text).map_err(err)?;
        // The seed mixes in the prompt (an FNV-1a hash of its token ids): a rerun of a run,
        // whose requests show other examples, does not replay the first run's seeds.
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prompt_hash = ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
            (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
        });
        let sampling = crate::model::Sampling {
            temperature,
            top_p,
            max_new_tokens: max_tokens as usize,
            seed: self.seed.wrapping_add(n) ^ prompt_hash,
            stop: stop.to_vec(),
            ..crate::model::Sampling::default()
        };
        let mut prefix = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        let stats = crate::model::generate_reusing(
            &self.loaded,
            &ids,
            &mut prefix,
            &sampling,
            &self.cancel,
            |_| {},
        )
        .map_err(err)?;
        drop(prefix);
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TeacherError::Local {
                model: self.loaded.name.clone(),
                problem: "cancelled".into(),
            });
        }
        let cut = matches!(
            stats.stop_reason,
            crate::model::StopReason::MaxTokens | crate::model::StopReason::ContextFull
        );
        Ok(Completion {
            text: stats.text,
            finish_reason: if cut { "length" } else { "stop" }.into(),
            prompt_tokens: ids.len() as u64,
            completion_tokens: stats.generated_tokens as u64,
            attempts: 1,
        })
    }
}

/// One attempt's failure.
enum Failure {
    /// Worth retrying; `Some(seconds)` when the server said how long to wait.
    Retry(String, Option<f64>),
    /// Not worth retrying.
    Fatal(TeacherError),
}

#[derive(Deserialize)]
struct Reply {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    /// Chat Completions.
    #[serde(default)]
    message: Option<Message>,
    /// Completions.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// An OpenAI-compatible teacher.
#[derive(Debug)]
pub struct HttpTeacher {
    config: TeacherConfig,
    agent: ureq::Agent,
    jitter: Mutex<XorShift64Star>,
    /// Sleeps between attempts (replaced in tests to run instantly).
    sleep: fn(Duration),
}

impl HttpTeacher {
    /// A teacher for `config`.
    pub fn new(config: TeacherConfig) -> HttpTeacher {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(config.timeout_s.max(0.001)))
            .build();
        HttpTeacher {
            config,
            agent,
            jitter: Mutex::new(XorShift64Star::new(0x5EED)),
            sleep: std::thread::sleep,
        }
    }

    /// The same teacher, waiting between attempts with `sleep` (tests pass a no-op or a
    /// recorder).
    pub fn with_sleep(mut self, sleep: fn(Duration)) -> HttpTeacher {
        self.sleep = sleep;
        self
    }

    fn url(&self) -> String {
        let path = match self.config.api {
            TeacherApi::Chat => "chat/completions",
            TeacherApi::Completions => "completions",
        };
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// The wait before retry number `attempt` (1-based): full jitter over an exponential
    /// ceiling, or the server's `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<f64>) -> Duration {
        if let Some(s) = retry_after {
            return Duration::from_secs_f64(s.clamp(0.0, self.config.max_backoff_s));
        }
        let ceiling =
            (self.config.backoff_s * 2f64.powi(attempt as i32 - 1)).min(self.config.max_backoff_s);
        let u = self
            .jitter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_f64();
        Duration::from_secs_f64(ceiling * u)
    }

    fn attempt(
        &self,
        url: &str,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<Completion, Failure> {
        let mut request = self.agent.post(url);
        if let Some(k) = key {
            request = request.set("Authorization", &format!("Bearer {k}"));
        }
        let response = match request.send_json(body.clone()) {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let retry_after = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let text: String = r
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                return Err(if status == 429 || status >= 500 {
                    Failure::Retry(format!("HTTP {status}: {text}"), retry_after)
                } else {
                    Failure::Fatal(TeacherError::Rejected {
                        url: url.to_string(),
                        status,
                        body: text,
                    })
                });
            }
            Err(ureq::Error::Transport(t))
                if matches!(
                    t.kind(),
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                ) =>
            {
                return Err(Failure::Fatal(TeacherError::Unreachable {
                    url: url.to_string(),
                    problem: std::error::Error::source(&t)
                        .map(|e| e.to_string())
                        .or_else(|| t.message().map(str::to_string))
                        .unwrap_or_else(|| t.kind().to_string()),
                }));
            }
            Err(ureq::Error::Transport(t)) => return Err(Failure::Retry(t.to_string(), None)),
        };
        // A body shorter than its Content-Length (a dropped connection) is an I/O error here.
        let text = response
            .into_string()
            .map_err(|e| Failure::Retry(format!("reading the reply: {e}"), None))?;
        let reply: Reply = serde_json::from_str(&text).map_err(|e| {
            Failure::Fatal(TeacherError::Malformed {
                url: url.to_string(),
                problem: e.to_string(),
            })
        })?;
        let choice = reply.choices.into_iter().next().ok_or_else(|| {
            Failure::Fatal(TeacherError::Malformed {
                url: url.to_string(),
                problem: "no choices".into(),
            })
        })?;
        let usage = reply.usage.unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        Ok(Completion {
            text: choice
                .message
                .and_then(|m| m.content)
                .or(choice.text)
                .unwrap_or_default(),
            finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            attempts: 1,
        })
    }
}

impl Teacher for HttpTeacher {
    fn name(&self) -> String {
        format!("{} @ {}", self.config.model, self.config.base_url)
    }

    fn api(&self) -> TeacherApi {
        self.config.api
    }

    /// Asks for a completion of `prompt` (one user message).
    ///
    /// # Errors
    /// [`TeacherError`], naming the endpoint.
    fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f64,
        top_p: f64,
        stop: &[String],
    ) -> Result<Completion, TeacherError> {
        let key = if self.config.api_key_env.is_empty() {
            None
        } else {
            match std::env::var(&self.config.api_key_env) {
                Ok(k) if !k.is_empty() => Some(k),
                _ if self.config.base_url.starts_with("http://127.0.0.1")
                    || self.config.base_url.starts_with("http://localhost") =>
                {
                    None
                }
                _ => return Err(TeacherError::NoKey(self.config.api_key_env.clone())),
            }
        };
        let mut body = serde_json::json!({
            "model": self.config.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        });
        if !stop.is_empty() {
            body["stop"] = serde_json::json!(stop);
        }
        match self.config.api {
            TeacherApi::Chat => {
                body["messages"] = serde_json::json!([{"role": "user", "content": prompt}]);
            }
            TeacherApi::Completions => body["prompt"] = serde_json::json!(prompt),
        }
        let url = self.url();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&url, key.as_deref(), &body) {
                Ok(mut c) => {
                    c.attempts = attempt;
                    return Ok(c);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why, retry_after)) => {
                    if attempt > self.config.max_retries {
                        return Err(TeacherError::GaveUp {
                            url,
                            attempts: attempt,
                            last: why,
                        });
                    }
                    (self.sleep)(self.backoff(attempt, retry_after));
                }
            }
        }
    }
}
