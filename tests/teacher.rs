//! The OpenAI-compatible teacher against a loopback server that misbehaves on purpose:
//! connection refused, HTTP 500, 429 with Retry-After, a timeout, malformed JSON, a reply cut
//! off mid-body, and a 4xx; retried or reported per request, naming the endpoint.

mod common;

use bioinstruct::selfinstruct::teacher::{
    HttpTeacher, LocalTeacher, Teacher, TeacherApi, TeacherConfig, TeacherError,
};
use std::io::Write;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

/// What the server does with one connection.
#[derive(Clone)]
enum Answer {
    /// Send these bytes, then close.
    Raw(String),
    /// Read the request and never answer (until the client gives up).
    Hang,
}

fn http(status: &str, extra_headers: &str, body: &str) -> Answer {
    Answer::Raw(common::http::response(status, extra_headers, body))
}

const OK_BODY: &str = r#"{"choices":[{"message":{"role":"assistant","content":" ie\n4. Instruction: List the drugs."},"finish_reason":"length"}],"usage":{"prompt_tokens":120,"completion_tokens":30}}"#;

/// Serves `answers` in order, one per connection; returns the base URL and the requests seen.
fn serve(answers: Vec<Answer>) -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            log.lock()
                .expect("log")
                .push(common::http::read_request(&mut stream));
            match answer {
                Answer::Raw(bytes) => {
                    let _ = stream.write_all(bytes.as_bytes());
                }
                Answer::Hang => std::thread::sleep(Duration::from_secs(3)),
            }
        }
    });
    (base, seen)
}

static WAITS: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn record_wait(d: Duration) {
    WAITS.lock().expect("waits").push(d);
}

fn teacher(base: &str, retries: u32) -> HttpTeacher {
    HttpTeacher::new(TeacherConfig {
        base_url: base.to_string(),
        model: "smollm2".into(),
        api_key_env: "BIOINSTRUCT_TEST_TEACHER_KEY".into(),
        timeout_s: 0.5,
        max_retries: retries,
        backoff_s: 0.01,
        max_backoff_s: 0.05,
        ..TeacherConfig::default()
    })
    .with_sleep(record_wait)
}

#[test]
fn server_errors_and_rate_limits_are_retried_honouring_retry_after() {
    let (base, seen) = serve(vec![
        http("500 Internal Server Error", "", r#"{"error":"boom"}"#),
        http(
            "429 Too Many Requests",
            "Retry-After: 0.02\r\n",
            r#"{"error":"slow down"}"#,
        ),
        http("200 OK", "", OK_BODY),
    ]);
    WAITS.lock().expect("waits").clear();
    let c = teacher(&base, 3)
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect("completes");
    assert_eq!(c.attempts, 3);
    assert_eq!(c.finish_reason, "length");
    assert_eq!((c.prompt_tokens, c.completion_tokens), (120, 30));
    assert!(c.text.starts_with(" ie\n4. Instruction"));
    let waits = WAITS.lock().expect("waits").clone();
    assert!(waits.contains(&Duration::from_secs_f64(0.02)), "{waits:?}");
    let requests = seen.lock().expect("seen");
    assert!(requests[0].starts_with("POST /v1/chat/completions"));
    assert!(requests[0].contains("\"model\":\"smollm2\""));
}

#[test]
fn the_completions_api_sends_text_to_continue_and_the_stop_strings() {
    let (base, seen) = serve(vec![http(
        "200 OK",
        "",
        r#"{"choices":[{"text":" qa\n4. Instruction: Name it.","finish_reason":"stop"}]}"#,
    )]);
    let t = HttpTeacher::new(TeacherConfig {
        base_url: base,
        api: TeacherApi::Completions,
        api_key_env: String::new(),
        ..TeacherConfig::default()
    });
    assert_eq!(t.api(), TeacherApi::Completions);
    let c = t
        .complete("3. Category:", 64, 0.7, 1.0, &["###".to_string()])
        .expect("completes");
    assert_eq!(c.text, " qa\n4. Instruction: Name it.");
    assert_eq!((c.prompt_tokens, c.finish_reason.as_str()), (0, "stop"));
    let request = seen.lock().expect("seen")[0].clone();
    assert!(request.starts_with("POST /v1/completions"), "{request}");
    assert!(request.contains("\"prompt\":\"3. Category:\""), "{request}");
    assert!(request.contains("\"stop\":[\"###\"]"), "{request}");
    assert!(!request.contains("messages"));
}

#[test]
fn a_reply_cut_off_mid_body_is_retried() {
    let cut = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\nConnection: close\r\n\r\n{\"choices\":[{\"mess".to_string();
    let (base, _) = serve(vec![Answer::Raw(cut), http("200 OK", "", OK_BODY)]);
    let c = teacher(&base, 2)
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect("completes");
    assert_eq!(c.attempts, 2);
}

#[test]
fn a_timeout_is_retried_then_given_up_naming_the_endpoint() {
    let (base, _) = serve(vec![Answer::Hang, Answer::Hang]);
    let e = teacher(&base, 1)
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect_err("gives up");
    match &e {
        TeacherError::GaveUp { url, attempts, .. } => {
            assert_eq!(*attempts, 2);
            assert!(url.ends_with("/v1/chat/completions"));
        }
        other => panic!("{other:?}"),
    }
}

/// Nothing listening: reported at once (waiting does not start a server), naming the URL and
/// what to do.
#[test]
fn connection_refused_is_reported_at_once_with_what_to_do() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let e = teacher(&format!("http://127.0.0.1:{port}/v1"), 5)
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect_err("refused");
    assert!(
        matches!(&e, TeacherError::Unreachable { url, .. } if url.contains(&format!("127.0.0.1:{port}"))),
        "{e:?}"
    );
    let said = e.to_string();
    assert!(
        said.contains("Connection refused") && said.contains("Is the server running?"),
        "{said}"
    );
}

#[test]
fn malformed_json_and_client_errors_are_reported_at_once() {
    let (base, _) = serve(vec![
        http("200 OK", "", "{\"choices\": \"not a list\"}"),
        http("400 Bad Request", "", r#"{"error":"bad model"}"#),
    ]);
    let t = teacher(&base, 5);
    let e = t
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect_err("malformed");
    assert!(matches!(e, TeacherError::Malformed { .. }), "{e:?}");
    let e = t
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect_err("rejected");
    assert!(
        matches!(&e, TeacherError::Rejected { status: 400, body, .. } if body.contains("bad model")),
        "{e:?}"
    );
}

#[test]
fn the_api_key_goes_in_the_header_only_and_a_missing_one_is_named() {
    let (base, seen) = serve(vec![http("401 Unauthorized", "", r#"{"error":"no"}"#)]);
    // Other tests here talk to loopback servers, which need no key: setting it is harmless.
    std::env::set_var("BIOINSTRUCT_TEST_TEACHER_KEY", "sk-test-123");
    let e = teacher(&base, 0)
        .complete("prompt", 64, 0.7, 1.0, &[])
        .expect_err("401");
    std::env::remove_var("BIOINSTRUCT_TEST_TEACHER_KEY");
    assert!(seen.lock().expect("seen")[0].contains("Authorization: Bearer sk-test-123"));
    assert!(!e.to_string().contains("sk-test-123"), "{e}");
    let remote = HttpTeacher::new(TeacherConfig {
        base_url: "https://api.example.invalid/v1".into(),
        api_key_env: "BIOINSTRUCT_TEST_TEACHER_KEY".into(),
        ..TeacherConfig::default()
    });
    assert_eq!(
        remote.complete("p", 8, 0.0, 1.0, &[]),
        Err(TeacherError::NoKey("BIOINSTRUCT_TEST_TEACHER_KEY".into()))
    );
}

#[test]
fn the_local_model_is_a_teacher_too() {
    let dir = tempfile::tempdir().expect("dir");
    common::tiny::write(dir.path());
    let resolver = bioinstruct::model::Resolver {
        hf_cache: dir.path().join("hub"),
        models_dir: dir.path().join("models"),
        offline: true,
    };
    let loaded = bioinstruct::model::LoadedModel::load(
        &resolver,
        dir.path().to_str().expect("utf-8"),
        &bioinstruct::model::LoadOptions::default(),
    )
    .expect("loads");
    let twin = LocalTeacher::new(loaded.clone(), TeacherApi::Chat, 3);
    let teacher: Box<dyn Teacher> =
        Box::new(LocalTeacher::new(loaded.clone(), TeacherApi::Chat, 3));
    assert!(teacher.name().starts_with("local "));
    let a = teacher
        .complete("List three tasks.", 6, 0.7, 1.0, &[])
        .expect("completes");
    let b = twin
        .complete("List three tasks.", 6, 0.7, 1.0, &[])
        .expect("completes");
    assert_eq!(a, b, "seeded sampling repeats");
    let raw = LocalTeacher::new(loaded, TeacherApi::Completions, 3)
        .complete("List three tasks.", 6, 0.7, 1.0, &[])
        .expect("completes");
    assert!(
        raw.prompt_tokens < a.prompt_tokens,
        "no chat template around a continuation"
    );
    assert!(a.prompt_tokens > 0);
    assert!(a.completion_tokens <= 6);
    if a.completion_tokens == 6 {
        assert_eq!(a.finish_reason, "length");
    }
    let long = "word ".repeat(200);
    assert!(matches!(
        teacher.complete(&long, 6, 0.7, 1.0, &[]),
        Err(TeacherError::Local { .. })
    ));
}
