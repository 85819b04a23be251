//! Request bodies and errors of the OpenAI API as `bioinstruct serve` takes them (OpenAI's
//! API reference for Chat Completions and the legacy Completions; vLLM's conventions where it
//! is silent: prompts as token ids, `echo` with prompt log-probabilities, adapters as models).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Whole message for the client.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds after which to retry (429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    /// 500 `server_error`: the model or the decode loop failed.
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// Sets `code`.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        response
    }
}

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A message's content: text, or a list of parts of which the `text` ones are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": …}, …]`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (other types are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `developer` (read as `system`), `user` or `assistant`.
    pub role: String,
    /// Its content (`null` for an assistant turn reads as empty).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and streaming fields both endpoints take.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Generation {
    /// 0 to 2 (default 1); 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus threshold, in (0, 1] (default 1).
    pub top_p: Option<f64>,
    /// Stop strings, not included in the output.
    pub stop: Option<OneOrMany>,
    /// Sampling seed (choice `i` uses `seed + i`).
    pub seed: Option<u64>,
    /// Choices to generate (1 to 8; per prompt for Completions).
    pub n: Option<u32>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `stream_options`.
    pub stream_options: Option<StreamOptions>,
}

/// The body of `POST /v1/chat/completions`. Fields not listed are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// A model id from `/v1/models`.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub generation: Generation,
    /// The most tokens to generate (deprecated name).
    pub max_tokens: Option<u32>,
    /// The most tokens to generate.
    pub max_completion_tokens: Option<u32>,
    /// Return each output token's log-probability.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per position (0 to 20), with `logprobs`.
    pub top_logprobs: Option<u32>,
}

/// A Completions prompt: text, texts, token ids, or lists of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<u32>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<u32>>),
}

/// The body of `POST /v1/completions`. Fields not listed are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A model id from `/v1/models`.
    pub model: String,
    /// The prompt(s).
    pub prompt: Prompt,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub generation: Generation,
    /// The most tokens to generate (default 16, as OpenAI's); 0 scores the prompt only.
    pub max_tokens: Option<u32>,
    /// Return log-probabilities with this many alternatives per position (0 to 20).
    pub logprobs: Option<u32>,
    /// Put the prompt before the completion (with its log-probabilities, under `logprobs`).
    #[serde(default)]
    pub echo: bool,
}

/// The body of `POST /tokenize` (vLLM's): a text, or a conversation rendered through the
/// model's chat template. Fields not listed are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    /// A model id from `/v1/models` (its tokenizer and template).
    pub model: String,
    /// The text to tokenize.
    pub prompt: Option<String>,
    /// Or a conversation, rendered first.
    pub messages: Option<Vec<Message>>,
    /// With `messages`: end with the assistant turn's opening (default true).
    pub add_generation_prompt: Option<bool>,
    /// Let the tokenizer add its special tokens (vLLM's defaults: true for `prompt`, false
    /// for `messages`, whose template writes them).
    pub add_special_tokens: Option<bool>,
}

/// The body of `POST /detokenize` (vLLM's).
#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    /// A model id from `/v1/models`.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// Parses a JSON body, naming the line and column of a syntax error and the field of a
/// type error.
///
/// # Errors
/// 400 [`ApiError`].
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request body"
        };
        ApiError::invalid(None, format!("{what}: {e}"))
    })
}
