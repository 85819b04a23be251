//! `bioinstruct serve` over HTTP on the real default model (SmolLM2-135M-Instruct, Q4_1
//! GGUF) with random LoRA adapters: the endpoints, several adapters in one run, and the
//! faults (a client gone mid-stream, malformed JSON, unknown model, oversize body and
//! prompt, a full queue, SIGTERM with requests in flight, keys).

mod common;

use common::{gguf_path, Workspace};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server: its process, base URL and everything it wrote to stderr.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve --port 0 ARGS` on the real model and waits until it listens.
    fn start(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Server {
        let model = gguf_path();
        let mut cmd = ws.cmd();
        cmd.args([
            "serve",
            "--model",
            model.to_str().expect("path"),
            "--port",
            "0",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
                let mut log = l.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().expect("log")));
        Server { child, url, log }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None)
    }

    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&format!("{}{path}", self.url))
            .set("content-type", "application/json")
            .timeout(Duration::from_secs(300));
        if let Some(k) = key {
            req = req.set("authorization", &format!("Bearer {k}"));
        }
        match req.send_string(body) {
            Ok(r) => (r.status(), r.into_json().expect("json")),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().expect("body")),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// A streaming request on a raw socket (so the test can drop it at will): returns the
    /// reader positioned at the body.
    fn open_stream(&self, path: &str, body: &Value) -> BufReader<std::net::TcpStream> {
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let body = body.to_string();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).expect("status line");
        assert!(line.contains(" 200 "), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).expect("header");
            if line == "\r\n" {
                return r;
            }
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` payloads of an SSE body until `[DONE]` (which is included).
fn sse_payloads(reader: &mut impl BufRead) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            out.push(data.to_string());
            if data == "[DONE]" {
                break;
            }
        }
        line.clear();
    }
    out
}

/// A PEFT LoRA adapter for SmolLM2-135M (30 layers, hidden 576, 3 KV heads of 64) on q_proj
/// and v_proj with seeded random `lora_A` and `lora_B`, so that it changes the output.
fn random_adapter(dir: &Path, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let r = 4;
    let mut tensors = std::collections::HashMap::new();
    let mut s = seed;
    for layer in 0..30 {
        for (name, out) in [("q_proj", 576), ("v_proj", 192)] {
            let p = format!("base_model.model.model.layers.{layer}.self_attn.{name}");
            for (part, shape) in [("lora_A", [r, 576]), ("lora_B", [out, r])] {
                s += 1;
                let v = common::tiny::values(shape[0] * shape[1], s, 0.25);
                let t = candle_core::Tensor::from_vec(v, &shape, &candle_core::Device::Cpu)
                    .expect("tensor");
                tensors.insert(format!("{p}.{part}.weight"), t);
            }
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).expect("save");
    std::fs::write(
        dir.join("adapter_config.json"),
        json!({"peft_type": "LORA", "r": r, "lora_alpha": 16, "lora_dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "SmolLM2"})
        .to_string(),
    )
    .expect("config");
    dir.to_path_buf()
}

/// A server with two random adapters, `one` and `two`; returns it and their folders.
fn with_two_adapters(ws: &Workspace) -> (Server, PathBuf, PathBuf) {
    let a = random_adapter(&ws.home.path().join("adapters/one"), 10);
    let b = random_adapter(&ws.home.path().join("adapters/two"), 20);
    let args = [
        "--adapter",
        a.to_str().expect("a"),
        "--adapter",
        b.to_str().expect("b"),
    ];
    (Server::start(ws, &args, &[]), a, b)
}

fn chat_body(model: &str, prompt: &str, max_tokens: u32) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": 0})
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
        .to_string()
}

#[test]
fn serves_the_base_and_two_adapters_with_chat_streaming_and_completion_logprobs() {
    let ws = Workspace::new();
    let (server, a, b) = with_two_adapters(&ws);

    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["base", "one", "two"]);
    assert_eq!(models["data"][1]["parent"], "base");
    assert_eq!(models["data"][0]["parent"], Value::Null);

    // The three models at once: each reply is what `chat` gives for the same weights.
    let prompt = "Name one symptom of influenza.";
    let replies: Vec<(String, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let server = &server;
                scope.spawn(move || {
                    let (status, v) =
                        server.post("/v1/chat/completions", &chat_body(id, prompt, 24));
                    assert_eq!(status, 200, "{v}");
                    (id.to_string(), v)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let model = gguf_path();
    let mut texts = Vec::new();
    for (id, v) in &replies {
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], id.as_str());
        let finish = v["choices"][0]["finish_reason"]
            .as_str()
            .expect("finish_reason");
        assert!(finish == "stop" || finish == "length", "{v}");
        assert!(
            v["usage"]["completion_tokens"].as_u64().expect("usage") <= 24,
            "{v}"
        );
        let mut args = vec![
            "chat",
            "--model",
            model.to_str().expect("model"),
            "--temperature",
            "0",
            "--repetition-penalty",
            "1",
            "--max-new-tokens",
            "24",
        ];
        let adapter = match id.as_str() {
            "one" => Some(a.to_str().expect("a")),
            "two" => Some(b.to_str().expect("b")),
            _ => None,
        };
        if let Some(dir) = adapter {
            args.extend(["--adapter", dir]);
        }
        args.push(prompt);
        let out = ws.run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        assert_eq!(content(v).trim_end(), cli, "{id}");
        texts.push(content(v));
    }
    assert_ne!(texts[0], texts[1], "adapter one changes nothing");
    assert_ne!(texts[1], texts[2], "the two adapters answer alike");

    // Streaming gives the same text, then a usage chunk and [DONE].
    let mut body = chat_body("one", prompt, 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut reader = server.open_stream("/v1/chat/completions", &body);
    let payloads = sse_payloads(&mut reader);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk"))
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, texts[1]);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(
        usage["completion_tokens"], replies[1].1["usage"]["completion_tokens"],
        "{usage}"
    );

    // Chat logprobs: each token's, with its alternatives, the chosen one the best (greedy).
    let mut body = chat_body("base", prompt, 5);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let (status, v) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    let entries = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs");
    assert_eq!(entries.len(), 5);
    for e in entries {
        let top = e["top_logprobs"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["logprob"], e["logprob"], "{e}");
        assert!(e["logprob"].as_f64().expect("lp") <= 0.0);
    }

    // Completions with echo and logprobs score the prompt, as local-completions asks.
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"model": "two", "prompt": "Aspirin is an anti-inflammatory drug",
            "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().expect("tokens");
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().expect("usage") as usize;
    assert_eq!(tokens.len(), prompt_tokens + 1);
    assert_eq!(lp["token_logprobs"][0], Value::Null);
    let text = v["choices"][0]["text"].as_str().expect("text");
    assert!(
        text.starts_with("Aspirin is an anti-inflammatory drug"),
        "{text}"
    );
    let joined: String = tokens.iter().filter_map(Value::as_str).collect();
    assert_eq!(joined, text);
    let offsets = lp["text_offset"].as_array().expect("offsets");
    assert_eq!(offsets[1], tokens[0].as_str().expect("t").len());
    for x in &lp["token_logprobs"].as_array().expect("lps")[1..] {
        assert!(x.as_f64().expect("lp") < 0.0);
    }
    // Prompts as token ids, several at once, with max_tokens 0: the prompt only.
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"model": "base", "prompt": [[504, 3575, 282], [504, 3575]],
            "max_tokens": 0, "echo": true, "logprobs": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().expect("choices").len(), 2);
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .expect("t")
            .len(),
        3
    );
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"][1],
        v["choices"][1]["logprobs"]["token_logprobs"][1],
        "the same prefix scores the same"
    );
    assert_eq!(v["usage"]["completion_tokens"], 0);

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "bioinstruct_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(server.metric("bioinstruct_generation_tokens_total") >= 10.0);
    assert!(metrics.contains("bioinstruct_time_to_first_token_seconds_bucket"));
    assert_eq!(server.get("/health"), (200, "ok".to_string()));
}

#[test]
fn bad_requests_get_openai_errors_with_the_right_status() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--max-body-bytes", "100000"], &[]);
    let check = |(status, v): (u16, Value), want: u16, needle: &str| {
        assert_eq!(status, want, "{v}");
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains(needle), "{message}");
        assert!(v["error"]["type"].is_string());
    };
    check(
        server.post_raw(
            "/v1/chat/completions",
            "{\"model\": \"base\", \"messages\": [",
            None,
        ),
        400,
        "malformed JSON",
    );
    check(
        server.post("/v1/chat/completions", &chat_body("nope", "hi", 4)),
        404,
        "`nope` does not exist",
    );
    let mut body = chat_body("base", "hi", 4);
    body["temperature"] = json!(5);
    let (status, v) = server.post("/v1/chat/completions", &body);
    check((status, v.clone()), 400, "temperature");
    assert_eq!(v["error"]["param"], "temperature");
    let big = "word ".repeat(30_000);
    check(
        server.post("/v1/chat/completions", &chat_body("base", &big, 4)),
        413,
        "length limit",
    );
    // Under the body limit, over the 8192-token context.
    let ids: Vec<u32> = (0..9000).map(|i| 300 + i % 500).collect();
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"model": "base", "prompt": ids, "max_tokens": 1}),
    );
    check((status, v.clone()), 400, "maximum context length is 8192");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Still serving.
    let (status, v) = server.post("/v1/chat/completions", &chat_body("base", "hi", 2));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_client_gone_mid_stream_stops_its_generation_and_the_server_stays_healthy() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[], &[]);
    let mut body = chat_body("base", "Write a long story about a hospital.", 4000);
    body["stream"] = json!(true);
    let mut reader = server.open_stream("/v1/chat/completions", &body);
    let mut line = String::new();
    let mut chunks = 0;
    while chunks < 6 && reader.read_line(&mut line).expect("read") > 0 {
        if line.starts_with("data: ") {
            chunks += 1;
        }
        line.clear();
    }
    drop(reader);
    let start = Instant::now();
    // The cancellation is counted, then the running gauge drops: wait for both.
    while server.metric("bioinstruct_cancelled_sequences_total") < 1.0
        || server.metric("bioinstruct_running_sequences") != 0.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the generation was not cancelled:\n{}",
            server.get("/metrics").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let generated = server.metric("bioinstruct_generation_tokens_total");
    assert!(generated < 400.0, "{generated} tokens: it kept going");
    assert_eq!(server.get("/health"), (200, "ok".to_string()));
    let (status, v) = server.post("/v1/chat/completions", &chat_body("base", "hi", 3));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--max-running", "1", "--max-queue", "1"], &[]);
    let url = format!("{}/v1/chat/completions", server.url);
    let results: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                scope.spawn(move || {
                    let body = chat_body("base", "Describe the heart.", 40).to_string();
                    match ureq::post(&url)
                        .set("content-type", "application/json")
                        .send_string(&body)
                    {
                        Ok(r) => (r.status(), None),
                        Err(ureq::Error::Status(code, r)) => {
                            (code, r.header("retry-after").map(str::to_string))
                        }
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let refused: Vec<_> = results.iter().filter(|(c, _)| *c == 429).collect();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(
        refused.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "{results:?}"
    );
    assert!(results.iter().any(|(c, _)| *c == 200), "{results:?}");
    assert!(
        results.iter().all(|(c, _)| *c == 200 || *c == 429),
        "{results:?}"
    );
}

#[test]
fn sigterm_finishes_the_requests_in_flight_and_refuses_new_ones() {
    let ws = Workspace::new();
    let mut server = Server::start(&ws, &[], &[]);
    let mut body = chat_body("base", "Explain what a nurse does.", 120);
    body["stream"] = json!(true);
    let mut reader = server.open_stream("/v1/chat/completions", &body);
    let mut first = String::new();
    while !first.starts_with("data: ") {
        first.clear();
        reader.read_line(&mut first).expect("first chunk");
    }
    server.terminate();
    let addr = server.url.trim_start_matches("http://").to_string();
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still accepting connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let payloads = sse_payloads(&mut reader);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{payloads:?}"
    );
    let finish = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .find_map(|c| {
            c["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        });
    assert_eq!(finish.as_deref(), Some("length"));
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("shutting down"));
}

#[test]
fn a_public_address_needs_a_key_and_the_key_is_checked_and_never_logged() {
    let ws = Workspace::new();
    let model = gguf_path();
    let out = ws.run(&[
        "serve",
        "--model",
        model.to_str().expect("m"),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0 without an API key"),
        "{err}"
    );

    let key = "sk-bioinstruct-test-9f3a7c";
    let server = Server::start(
        &ws,
        &["--api-key-env", "BI_TEST_KEY"],
        &[("BI_TEST_KEY", key)],
    );
    let body = chat_body("base", "hi", 2).to_string();
    let (status, v) = server.post_raw("/v1/chat/completions", &body, None);
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    let (status, _) = server.post_raw("/v1/chat/completions", &body, Some("sk-wrong"));
    assert_eq!(status, 401);
    let (status, v) = server.post_raw("/v1/chat/completions", &body, Some(key));
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.get("/health").0, 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert!(log.contains("POST /v1/chat/completions 401"), "{log}");
    assert!(!log.contains(key), "the key is in the log:\n{log}");
}

#[test]
fn the_official_openai_client_lists_chats_streams_and_scores() {
    let ws = Workspace::new();
    let (server, _, _) = with_two_adapters(&ws);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-serve-openai.sh");
    let out = std::process::Command::new(script)
        .arg(format!("{}/v1", server.url))
        .output()
        .expect("run check-serve-openai.sh");
    assert!(
        out.status.success(),
        "{}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("ok\n"));
}

#[test]
fn all_runs_serves_a_run_that_finishes_while_serving_without_a_restart() {
    let ws = Workspace::new();
    let runs = ws.home.path().join("data/runs");
    random_adapter(&runs.join("20261204-0900-early/final"), 30);
    let server = Server::start(&ws, &["--all-runs"], &[]);
    let ids = |server: &Server| -> Vec<String> {
        let (_, text) = server.get("/v1/models");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&server), ["base", "20261204-0900-early/final"]);
    // A run still training (no final/) is not served; once final/ is written, it is.
    std::fs::create_dir_all(runs.join("20261204-1000-late/checkpoint-2")).expect("mkdir");
    let staging = ws.home.path().join("staging");
    random_adapter(&staging, 40);
    std::fs::rename(&staging, runs.join("20261204-1000-late/final")).expect("rename");
    let start = Instant::now();
    while ids(&server).len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}\n{}",
            ids(&server),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ids(&server)[2], "20261204-1000-late/final");
    let (status, v) = server.post(
        "/v1/chat/completions",
        &chat_body("20261204-1000-late/final", "hi", 3),
    );
    assert_eq!(status, 200, "{v}");
}

#[test]
fn cors_answers_only_the_origin_it_was_given() {
    let ws = Workspace::new();
    let preflight = |server: &Server, origin: &str| {
        ureq::request("OPTIONS", &format!("{}/v1/chat/completions", server.url))
            .set("origin", origin)
            .set("access-control-request-method", "POST")
            .call()
            .map(|r| r.header("access-control-allow-origin").map(str::to_string))
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(_, r) => {
                    r.header("access-control-allow-origin").map(str::to_string)
                }
                e => panic!("{e}"),
            })
    };
    let closed = Server::start(&ws, &[], &[]);
    assert_eq!(preflight(&closed, "http://notes.example"), None);
    drop(closed);
    let open = Server::start(&ws, &["--cors-origin", "http://notes.example"], &[]);
    assert_eq!(
        preflight(&open, "http://notes.example").as_deref(),
        Some("http://notes.example")
    );
    assert_ne!(
        preflight(&open, "http://other.example").as_deref(),
        Some("http://other.example")
    );
}

#[test]
fn concurrent_requests_for_the_base_and_adapters_decode_together_and_answer_as_alone() {
    let ws = Workspace::new();
    let (server, _, _) = with_two_adapters(&ws);
    // Two requests for the base and one for each adapter: one batched step a round mixes
    // the base and both adapters.
    let asks = [
        ("base", "What does insulin do?"),
        ("one", "List two side effects of ibuprofen."),
        ("base", "Define tachycardia in one sentence."),
        ("two", "What does insulin do?"),
    ];
    let ask = |(model, p): &(&str, &str)| {
        let (status, v) = server.post("/v1/chat/completions", &chat_body(model, p, 40));
        assert_eq!(status, 200, "{v}");
        content(&v)
    };
    let alone: Vec<String> = asks.iter().map(ask).collect();
    assert_ne!(alone[0], alone[3], "the adapter changes the answer");
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = asks.iter().map(|a| scope.spawn(move || ask(a))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(together, alone);
}

/// Every prediction line of `task` for `label` in the report folder `dir`.
fn predictions(dir: &Path, task: &str, label: &str) -> Vec<Value> {
    let path = dir
        .join("predictions")
        .join(task)
        .join(format!("{label}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn eval_run_against_the_endpoint_gives_the_local_evaluation_of_the_same_weights() {
    let ws = Workspace::new();
    let adapter = random_adapter(&ws.home.path().join("adapters/one"), 10);
    let server = Server::start(&ws, &["--adapter", adapter.to_str().expect("adapter")], &[]);
    let (status, v) = server.post(
        "/tokenize",
        &json!({"model": "one", "messages": [{"role": "user", "content": "Define sepsis."}]}),
    );
    assert_eq!(status, 200, "{v}");
    let ids = v["tokens"].clone();
    let (status, back) = server.post("/detokenize", &json!({"model": "one", "tokens": ids}));
    assert_eq!(status, 200, "{back}");
    let text = back["prompt"].as_str().expect("prompt");
    assert!(
        text.contains("Define sepsis.") && text.contains("<|im_start|>assistant"),
        "{text}"
    );

    let tasks = [
        ("pubmedqa", "pubmedqa/pqal_trainval.json"),
        ("mts_dialog", "mts-dialog/MTS-Dialog-ValidationSet.csv"),
    ];
    let run = |out: &Path, extra: &[&str]| {
        let mut c = ws.cmd();
        c.args(["eval", "run", "--max-new-tokens", "12", "--out"])
            .arg(out)
            .args(extra);
        for (task, file) in tasks {
            c.args(["--task", task, "--data"])
                .arg(common::benchmark(file));
        }
        c.args(["--limit", "2"]);
        let out = c.output().expect("eval run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let local = ws.home.path().join("local");
    let remote = ws.home.path().join("remote");
    let model = gguf_path();
    run(
        &local,
        &[
            "--model",
            model.to_str().expect("model"),
            "--adapter",
            adapter.to_str().expect("adapter"),
        ],
    );
    let said = run(&remote, &["--endpoint", &server.url, "--model", "one"]);
    assert!(said.contains("2 tasks × 2 models"), "{said}");
    for label in ["base", "one"] {
        for (task, _) in tasks {
            let (l, r) = (
                predictions(&local, task, label),
                predictions(&remote, task, label),
            );
            assert_eq!(l.len(), r.len(), "{task} {label}");
            for (a, b) in l.iter().zip(&r) {
                assert_eq!(a["id"], b["id"]);
                assert_eq!(
                    a["prediction"], b["prediction"],
                    "{task} {label} {}",
                    a["id"]
                );
                assert_eq!(a["prompt_tokens"], b["prompt_tokens"], "{task} {label}");
                if task == "pubmedqa" {
                    let (x, y) = (
                        a["loglikelihoods"].as_array().expect("lls"),
                        b["loglikelihoods"].as_array().expect("lls"),
                    );
                    for (p, q) in x.iter().zip(y) {
                        let (p, q) = (p.as_f64().expect("ll"), q.as_f64().expect("ll"));
                        assert!((p - q).abs() < 2e-3 * p.abs().max(1.0), "{p} vs {q}");
                    }
                    assert_eq!(a["is_greedy"], b["is_greedy"]);
                } else {
                    assert_eq!(a["raw"], b["raw"], "{task} {label}");
                    assert_eq!(a["generated_tokens"], b["generated_tokens"]);
                }
            }
        }
    }
    // A second run is answered from the cache, keyed by the endpoint and the model.
    let again = run(&remote, &["--endpoint", &server.url, "--model", "one"]);
    assert!(again.contains("0 to compute"), "{again}");

    // A model the server does not serve is named, with those it serves.
    let out = ws
        .cmd()
        .args(["eval", "run", "--task", "pubmedqa", "--data"])
        .arg(common::benchmark("pubmedqa/pqal_trainval.json"))
        .args(["--endpoint", &server.url, "--model", "two", "--limit", "1"])
        .output()
        .expect("eval run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"two\"") && err.contains("base, one"),
        "{err}"
    );
}
