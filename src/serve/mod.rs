//! `bioinstruct serve`: an OpenAI-compatible HTTP server (axum on tokio) for the base model
//! and every LoRA adapter, with one copy of the base weights: each adapter's model is a
//! clone of the base whose weight tensors are shared (candle tensors are reference-counted)
//! and whose projections carry that adapter in their slots.
//!
//! Endpoints follow OpenAI's API reference, and vLLM's conventions where OpenAI is silent:
//! `GET /v1/models` (the base, then each adapter with `parent` the base, as vLLM lists LoRA
//! modules), `POST /v1/chat/completions`, `POST /v1/completions` (prompt text or token ids;
//! `echo` with `logprobs` gives the prompt tokens' log-probabilities, which is how
//! lm-evaluation-harness's `local-completions` scores loglikelihood), `GET /health`,
//! `GET /metrics` (Prometheus text), and vLLM's `POST /tokenize` and `POST /detokenize`
//! (behind the API key like `/v1`). Errors are OpenAI's error JSON.
//!
//! Security: binds 127.0.0.1 unless told otherwise; any other address needs an API key
//! (`Authorization: Bearer`, compared in constant time with `subtle`), which is never
//! logged. CORS is off unless an origin is named.

pub mod api;
pub mod engine;
pub mod metrics;

use crate::model::{ChatMessage, Sampling, StopReason};
use api::{
    ApiError, ChatRequest, CompletionRequest, Content, DetokenizeRequest, Prompt, TokenizeRequest,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{Engine, Event, Job, ServedModel, SubmitError, TokenLogprob};
use metrics::{Metrics, RequestLabels};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The most tokens a chat reply gets when the request names no `max_tokens` (or
/// `max_completion_tokens`), in tokens, besides what the context leaves. Each sequence's
/// key/value cache is allocated for its prompt plus this budget at once (for SmolLM2-135M in
/// f32, about 46 KB a position; for Llama-2-7B in bf16, about 512 KB), so an unbounded default
/// would reserve a whole context per request.
pub const DEFAULT_CHAT_MAX_TOKENS: usize = 2048;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Sequences decoded at once.
    pub max_running: usize,
    /// Sequences that may wait; beyond, 429 with `Retry-After`.
    pub max_queue: usize,
    /// The largest request body, in bytes; beyond, 413.
    pub max_body_bytes: usize,
    /// The Bearer token every `/v1` request must carry, if any.
    pub api_key: Option<String>,
    /// The one origin CORS allows, if any.
    pub cors_origin: Option<String>,
}

/// The models served and the decode loop, shared by every request.
#[derive(Debug)]
pub struct ServerState {
    models: RwLock<Vec<Arc<ServedModel>>>,
    engine: Engine,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
}

impl ServerState {
    /// The state for `models` (the base first), with a decode loop started.
    pub fn new(models: Vec<ServedModel>, options: &ServeOptions) -> Arc<ServerState> {
        let metrics = Arc::new(Metrics::new());
        Arc::new(ServerState {
            models: RwLock::new(models.into_iter().map(Arc::new).collect()),
            engine: Engine::start(options.max_running, options.max_queue, metrics.clone()),
            metrics,
            api_key: options.api_key.clone(),
        })
    }

    /// The ids of the models served, the base first.
    pub fn labels(&self) -> Vec<String> {
        self.read().iter().map(|m| m.label.clone()).collect()
    }

    /// Adds a model (an adapter found while serving); its label must be new.
    pub fn add(&self, model: ServedModel) {
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(model));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ServedModel>>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn model(&self, id: &str) -> Result<Arc<ServedModel>, ApiError> {
        let models = self.read();
        if let Some(m) = models.iter().find(|m| m.label == id) {
            return Ok(m.clone());
        }
        let served: Vec<&str> = models.iter().map(|m| m.label.as_str()).collect();
        Err(ApiError::invalid(
            Some("model"),
            format!(
                "The model `{id}` does not exist. Served: {}.",
                served.join(", ")
            ),
        )
        .with_status(StatusCode::NOT_FOUND)
        .with_code("model_not_found"))
    }
}

/// The router: every endpoint, the body limit, authentication, CORS and the request log.
pub fn router(state: Arc<ServerState>, options: &ServeOptions) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let mut app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .merge(v1)
        .fallback(|| async {
            ApiError::invalid(None, "no such endpoint").with_status(StatusCode::NOT_FOUND)
        })
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), log_request));
    if let Some(origin) = &options.cors_origin {
        if let Ok(origin) = HeaderValue::from_str(origin) {
            app = app.layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(origin)
                    .allow_methods(tower_http::cors::Any)
                    .allow_headers(tower_http::cors::Any),
            );
        }
    }
    app.with_state(state)
}

/// Serves `router` on `addr` until SIGTERM or Ctrl-C; then stops accepting connections,
/// lets the requests in flight finish, and returns.
///
/// # Errors
/// The address cannot be bound.
pub async fn run(router: Router, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("shutting down: refusing new connections, finishing the requests in flight");
}

/// Logs one line a request (method, path, status, milliseconds; never a header) and counts it.
async fn log_request(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels { endpoint, status })
        .inc();
    eprintln!(
        "{method} {path} {status} {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    response
}

/// Refuses a `/v1` request without the right Bearer token, when a key is set.
async fn authenticate(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), key.as_bytes()).into();
        if !same {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "Incorrect or missing API key: send `Authorization: Bearer <key>`.".into(),
                kind: "authentication_error",
                param: None,
                code: Some("invalid_api_key"),
                retry_after: None,
            }
            .into_response();
        }
    }
    next.run(request).await
}

async fn metrics_text(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn list_models(State(state): State<Arc<ServerState>>) -> Json<Value> {
    let models = state.read();
    let base = models.first().map(|m| m.label.clone());
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "id": m.label,
                "object": "model",
                "created": m.created,
                "owned_by": "bioinstruct",
                "root": m.adapter.as_ref().map_or_else(
                    || m.loaded.source.display().to_string(),
                    |a| a.display().to_string(),
                ),
                "parent": if m.adapter.is_some() { base.clone() } else { None },
                "max_model_len": m.loaded.model.config.max_context,
                "template": m.template.name,
                "bos_token_id": m.loaded.model.config.bos_token_id,
                "eos_token_id": m.loaded.model.config.eos_token_ids.first(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /tokenize` (vLLM's): the token ids of a text, or of a conversation rendered through
/// the model's chat template, with `count` and `max_model_len`. Clients that score prompts
/// themselves (`eval run --endpoint`) use it to tokenize exactly as the server does.
async fn tokenize(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = api::parse(&body_bytes(body)?)?;
    let model = state.model(&req.model)?;
    let (text, special, param) = match (&req.prompt, &req.messages) {
        (Some(text), None) => (
            text.clone(),
            req.add_special_tokens.unwrap_or(true),
            "prompt",
        ),
        (None, Some(messages)) => {
            let rendered = model
                .template
                .render(
                    &conversation(messages)?,
                    req.add_generation_prompt.unwrap_or(true),
                )
                .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
            (
                rendered,
                req.add_special_tokens.unwrap_or(false),
                "messages",
            )
        }
        _ => {
            return Err(ApiError::invalid(
                None,
                "give exactly one of prompt and messages",
            ))
        }
    };
    let tokens: Vec<u32> = model
        .loaded
        .tokenizer
        .encode(text.as_str(), special)
        .map_err(|e| ApiError::invalid(Some(param), e.to_string()))?
        .get_ids()
        .to_vec();
    Ok(Json(json!({
        "count": tokens.len(),
        "max_model_len": model.loaded.model.config.max_context,
        "tokens": tokens,
    })))
}

/// `POST /detokenize` (vLLM's): the text of token ids, special tokens written out.
async fn detokenize(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = api::parse(&body_bytes(body)?)?;
    let model = state.model(&req.model)?;
    let vocab = model.loaded.tokenizer.get_vocab_size(true) as u32;
    if let Some(bad) = req.tokens.iter().find(|&&t| t >= vocab) {
        return Err(ApiError::invalid(
            Some("tokens"),
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let text = model
        .loaded
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid(Some("tokens"), e.to_string()))?;
    Ok(Json(json!({ "prompt": text })))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_id(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{:x}",
        nanos ^ u128::from(std::process::id()) << 64
    )
}

/// The body, or 413 when it is over the limit.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        ApiError::invalid(None, format!("request body: {}", e.body_text())).with_status(
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                status
            } else {
                StatusCode::BAD_REQUEST
            },
        )
    })
}

/// The sampling settings the request asks for, checked.
fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: u32,
    stop: Option<api::OneOrMany>,
    seed: Option<u64>,
) -> Result<Sampling, ApiError> {
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature {temperature} is outside 0 to 2"),
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("top_p {top_p} is outside (0, 1]"),
        ));
    }
    let stop: Vec<String> = stop
        .map(api::OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if stop.len() > 4 {
        return Err(ApiError::invalid(Some("stop"), "at most 4 stop strings"));
    }
    Ok(Sampling {
        temperature,
        top_k: 0,
        top_p,
        repetition_penalty: 1.0,
        repeat_last_n: 64,
        seed: seed.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        }),
        max_new_tokens: max_tokens as usize,
        stop,
    })
}

fn choices(n: Option<u32>) -> Result<usize, ApiError> {
    match n.unwrap_or(1) {
        n @ 1..=8 => Ok(n as usize),
        n => Err(ApiError::invalid(
            Some("n"),
            format!("n {n} is outside 1 to 8"),
        )),
    }
}

fn alternatives(param: &str, k: u32) -> Result<usize, ApiError> {
    if k > 20 {
        return Err(ApiError::invalid(
            Some(param),
            format!("{param} {k} is over 20"),
        ));
    }
    Ok(k as usize)
}

/// Checks that a prompt of `tokens` leaves room in `model`'s context.
fn check_context(model: &ServedModel, tokens: usize) -> Result<(), ApiError> {
    let context = model.loaded.model.config.max_context;
    if tokens == 0 {
        return Err(ApiError::invalid(Some("prompt"), "the prompt is empty"));
    }
    if tokens >= context {
        return Err(ApiError::invalid(
            Some("messages"),
            format!(
                "This model's maximum context length is {context} tokens; the prompt has {tokens} tokens."
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(())
}

fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndToken | StopReason::StopString => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Cancelled => "abort",
    }
}

fn submit_all(state: &ServerState, jobs: Vec<Job>) -> Result<(), ApiError> {
    for job in jobs {
        state.engine.submit(job).map_err(|e| match e {
            SubmitError::Full => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "The server's queue is full; retry later.".into(),
                kind: "rate_limit_error",
                param: None,
                code: Some("queue_full"),
                retry_after: Some(1),
            },
            SubmitError::Closed => ApiError::server("the server is shutting down")
                .with_status(StatusCode::SERVICE_UNAVAILABLE),
        })?;
    }
    Ok(())
}

/// Everything one choice produced.
#[derive(Debug, Default)]
struct Collected {
    text: String,
    logprobs: Vec<TokenLogprob>,
    prompt_logprobs: Option<(String, Vec<TokenLogprob>)>,
    finish: Option<StopReason>,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// Waits for `n` choices to finish.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
    n: usize,
) -> Result<Vec<Collected>, ApiError> {
    let mut out: Vec<Collected> = (0..n).map(|_| Collected::default()).collect();
    let mut done = 0;
    while done < n {
        let Some(event) = rx.recv().await else {
            return Err(ApiError::server("the decode loop stopped"));
        };
        match event {
            Event::Prompt {
                index,
                first,
                logprobs,
            } => out[index].prompt_logprobs = Some((first, logprobs)),
            Event::Token {
                index,
                text,
                logprob,
            } => {
                out[index].text.push_str(&text);
                out[index].logprobs.extend(logprob);
            }
            Event::Done {
                index,
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let c = &mut out[index];
                c.finish = Some(reason);
                c.prompt_tokens = prompt_tokens;
                c.completion_tokens = completion_tokens;
                done += 1;
            }
            Event::Failed { message, .. } => {
                return Err(ApiError::server(message));
            }
        }
    }
    Ok(out)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Chat Completions' `logprobs.content` entry.
fn chat_logprob(lp: &TokenLogprob) -> Value {
    json!({
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": lp.token.as_bytes(),
        "top_logprobs": lp.top.iter().map(|(t, l)| json!({
            "token": t, "logprob": l, "bytes": t.as_bytes(),
        })).collect::<Vec<_>>(),
    })
}

/// The conversation as chat messages (content parts joined; `developer` read as `system`).
fn conversation(messages: &[api::Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages is empty"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(ApiError::invalid(
                        Some(&format!("messages[{i}].role")),
                        format!("unsupported role {other:?} (system, developer, user, assistant)"),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    Some(&format!("messages[{i}].content[{j}]")),
                                    format!(
                                    "content part of type {kind:?} is not supported (text only)"
                                ),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = api::parse(&body_bytes(body)?)?;
    let model = state.model(&req.model)?;
    let messages = conversation(&req.messages)?;
    let prompt = model
        .template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    let ids = model
        .loaded
        .encode(&prompt)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    check_context(&model, ids.len())?;
    let context = model.loaded.model.config.max_context;
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(DEFAULT_CHAT_MAX_TOKENS.min(context - ids.len()) as u32);
    let g = req.generation;
    let base = sampling(g.temperature, g.top_p, max_tokens, g.stop, g.seed)?;
    let n = choices(g.n)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (true, k) => Some(alternatives("top_logprobs", k.unwrap_or(0))?),
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                "top_logprobs needs logprobs: true",
            ))
        }
        (false, None) => None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = (0..n)
        .map(|i| Job {
            model: model.clone(),
            index: i,
            prompt: ids.clone(),
            sampling: Sampling {
                seed: base.seed.wrapping_add(i as u64),
                ..base.clone()
            },
            logprobs,
            prompt_logprobs: None,
            events: tx.clone(),
        })
        .collect();
    drop(tx);
    submit_all(&state, jobs)?;
    let id = request_id("chatcmpl");
    let created = now_secs();
    let label = model.label.clone();
    if g.stream {
        let include_usage = g.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream(
            StreamKind::Chat,
            rx,
            n,
            n,
            id,
            created,
            label,
            include_usage,
        ));
    }
    let out = collect(rx, n).await?;
    let prompt_tokens = out.first().map_or(0, |c| c.prompt_tokens);
    let completion: usize = out.iter().map(|c| c.completion_tokens).sum();
    let choices: Vec<Value> = out
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": logprobs.map(|_| json!({
                    "content": c.logprobs.iter().map(chat_logprob).collect::<Vec<_>>(),
                })),
                "finish_reason": c.finish.as_ref().map(finish_reason),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": label,
        "choices": choices,
        "usage": usage(prompt_tokens, completion),
    }))
    .into_response())
}

/// An SSE response fed by `produce`, which gets the channel of `data:` payloads; the stream
/// ends with `data: [DONE]`. When the client goes, the channel closes and `produce` stops,
/// dropping its engine receiver, which cancels the sequences at their next step.
fn sse<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(produce(tx));
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, finished)| async move {
        if finished {
            return None;
        }
        match rx.recv().await {
            Some(data) => Some((
                Ok::<_, Infallible>(SseEvent::default().data(data)),
                (rx, false),
            )),
            None => Some((Ok(SseEvent::default().data("[DONE]")), (rx, true))),
        }
    });
    Sse::new(stream).into_response()
}

/// The next engine event, or `None` when the client has gone or the engine stopped.
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    out: &mpsc::Sender<String>,
) -> Option<Event> {
    tokio::select! {
        event = rx.recv() => event,
        () = out.closed() => None,
    }
}

fn error_payload(message: &str) -> String {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
        .to_string()
}

/// Legacy Completions' `logprobs` object: `first` (an echoed prompt's first token, which
/// has no log-probability), then `entries`, over text starting at byte `offset`.
fn completion_logprobs(first: Option<&str>, entries: &[TokenLogprob], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    if let Some(t) = first {
        tokens.push(json!(t));
        token_logprobs.push(Value::Null);
        top.push(Value::Null);
        offsets.push(offset);
        offset += t.len();
    }
    for lp in entries {
        tokens.push(json!(lp.token));
        token_logprobs.push(json!(lp.logprob));
        let mut m = serde_json::Map::new();
        for (t, l) in &lp.top {
            m.entry(t.clone()).or_insert(json!(l));
        }
        top.push(Value::Object(m));
        offsets.push(offset);
        offset += lp.token.len();
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs,
        "top_logprobs": top, "text_offset": offsets})
}

async fn completions(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = api::parse(&body_bytes(body)?)?;
    let model = state.model(&req.model)?;
    let loaded = &model.loaded;
    let encode = |t: &str| {
        loaded
            .encode(t)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))
    };
    let decode = |ids: &[u32]| {
        loaded
            .tokenizer
            .decode(ids, false)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))
    };
    let vocab = loaded.tokenizer.get_vocab_size(true) as u32;
    let prompts: Vec<(String, Vec<u32>)> = match req.prompt {
        Prompt::Text(t) => vec![(t.clone(), encode(&t)?)],
        Prompt::Texts(ts) => ts
            .into_iter()
            .map(|t| Ok((t.clone(), encode(&t)?)))
            .collect::<Result<_, ApiError>>()?,
        Prompt::Ids(ids) => vec![(decode(&ids)?, ids)],
        Prompt::IdLists(lists) => lists
            .into_iter()
            .map(|ids| Ok((decode(&ids)?, ids)))
            .collect::<Result<_, ApiError>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            Some("prompt"),
            "the prompt list is empty",
        ));
    }
    for (_, ids) in &prompts {
        if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        check_context(&model, ids.len()).map_err(|mut e| {
            e.param = Some("prompt".into());
            e
        })?;
    }
    let g = req.generation;
    let base = sampling(
        g.temperature,
        g.top_p,
        req.max_tokens.unwrap_or(16),
        g.stop,
        g.seed,
    )?;
    let n = choices(g.n)?;
    let logprobs = req
        .logprobs
        .map(|k| alternatives("logprobs", k))
        .transpose()?;
    let echo = req.echo;
    if echo && g.stream {
        return Err(ApiError::invalid(
            Some("echo"),
            "echo is not supported with stream",
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut jobs = Vec::new();
    for (p, (_, ids)) in prompts.iter().enumerate() {
        for j in 0..n {
            jobs.push(Job {
                model: model.clone(),
                index: p * n + j,
                prompt: ids.clone(),
                sampling: Sampling {
                    seed: base.seed.wrapping_add(j as u64),
                    ..base.clone()
                },
                logprobs,
                prompt_logprobs: if echo { logprobs } else { None },
                events: tx.clone(),
            });
        }
    }
    drop(tx);
    let total = jobs.len();
    submit_all(&state, jobs)?;
    let id = request_id("cmpl");
    let created = now_secs();
    if g.stream {
        let include_usage = g.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream(
            StreamKind::Completions,
            rx,
            total,
            n,
            id,
            created,
            model.label.clone(),
            include_usage,
        ));
    }
    let out = collect(rx, total).await?;
    let mut prompt_tokens = 0;
    let mut completion = 0;
    let choices: Vec<Value> = out
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i % n == 0 {
                prompt_tokens += c.prompt_tokens;
            }
            completion += c.completion_tokens;
            let prompt_text = &prompts[i / n].0;
            let text = if echo {
                format!("{prompt_text}{}", c.text)
            } else {
                c.text.clone()
            };
            let lp = logprobs.map(|_| match (&c.prompt_logprobs, echo) {
                (Some((first, prompt)), true) => {
                    let mut entries = prompt.clone();
                    entries.extend(c.logprobs.iter().cloned());
                    completion_logprobs(Some(first), &entries, 0)
                }
                _ => completion_logprobs(None, &c.logprobs, 0),
            });
            json!({
                "index": i,
                "text": text,
                "logprobs": lp,
                "finish_reason": c.finish.as_ref().map(finish_reason),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model.label,
        "choices": choices,
        "usage": usage(prompt_tokens, completion),
    }))
    .into_response())
}

/// Which API's chunks a stream sends.
#[derive(Debug, Clone, Copy)]
enum StreamKind {
    /// `chat.completion.chunk`: a `delta` per choice, the role first.
    Chat,
    /// `text_completion`: `text` per choice.
    Completions,
}

impl StreamKind {
    fn object(self) -> &'static str {
        match self {
            StreamKind::Chat => "chat.completion.chunk",
            StreamKind::Completions => "text_completion",
        }
    }

    /// The choice a chunk carries for a token's text.
    fn token(self, index: usize, text: String, logprob: Option<TokenLogprob>) -> Value {
        match self {
            StreamKind::Chat => json!({"index": index, "delta": {"content": text},
                "logprobs": logprob.map(|lp| json!({"content": [chat_logprob(&lp)]})),
                "finish_reason": null}),
            StreamKind::Completions => json!({"index": index, "text": text,
                "logprobs": logprob.map(|lp| completion_logprobs(None, &[lp], 0)),
                "finish_reason": null}),
        }
    }

    /// The choice a chunk carries when the choice ends.
    fn done(self, index: usize, reason: &StopReason) -> Value {
        let mut v = self.token(index, String::new(), None);
        if let StreamKind::Chat = self {
            v["delta"] = json!({});
        }
        v["finish_reason"] = json!(finish_reason(reason));
        v
    }
}

/// Streams `choices` choices' events as `kind` chunks (`per_prompt` choices share a prompt,
/// whose tokens `usage` counts once), then a `usage` chunk when asked, then `[DONE]`.
#[allow(clippy::too_many_arguments)]
fn stream(
    kind: StreamKind,
    mut rx: mpsc::UnboundedReceiver<Event>,
    choices: usize,
    per_prompt: usize,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> Response {
    sse(move |out| async move {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut v = json!({
                "id": id, "object": kind.object(), "created": created,
                "model": model, "choices": choices,
            });
            if include_usage {
                v["usage"] = usage.unwrap_or(Value::Null);
            }
            v.to_string()
        };
        if let StreamKind::Chat = kind {
            for i in 0..choices {
                let first = json!([{"index": i, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}]);
                if out.send(chunk(first, None)).await.is_err() {
                    return;
                }
            }
        }
        let (mut done, mut prompt_tokens, mut completion) = (0, 0, 0);
        while done < choices {
            let Some(event) = next_event(&mut rx, &out).await else {
                return;
            };
            let payload = match event {
                Event::Token {
                    index,
                    text,
                    logprob,
                } => chunk(json!([kind.token(index, text, logprob)]), None),
                Event::Done {
                    index,
                    reason,
                    prompt_tokens: p,
                    completion_tokens: c,
                } => {
                    done += 1;
                    if index % per_prompt.max(1) == 0 {
                        prompt_tokens += p;
                    }
                    completion += c;
                    chunk(json!([kind.done(index, &reason)]), None)
                }
                Event::Failed { message, .. } => {
                    let _ = out.send(error_payload(&message)).await;
                    return;
                }
                Event::Prompt { .. } => continue,
            };
            if out.send(payload).await.is_err() {
                return;
            }
        }
        if include_usage {
            let _ = out
                .send(chunk(json!([]), Some(usage(prompt_tokens, completion))))
                .await;
        }
    })
}

/// Where the runs live, for `--all-runs`: the adapters of finished runs under it.
#[derive(Debug, Clone)]
pub struct RunsWatch {
    /// The runs folder.
    pub root: PathBuf,
}

impl RunsWatch {
    /// The `final/` adapter folders of the runs under the root, in name order.
    pub fn finished_adapters(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path().join("final")))
                    .filter(|p| p.join("adapter_config.json").is_file())
                    .filter(|p| p.join("adapter_model.safetensors").is_file())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}
