//! `bioinstruct generate` against a loopback OpenAI-compatible server: kept and rejected
//! records with provenance, a run killed with SIGKILL and rerun reaching the target with no
//! duplicate, and faults (HTTP 500, 429 with Retry-After, malformed JSON, a reply cut off
//! mid-body, a timeout, connection refused) retried or reported without corrupting a file.

mod common;

use common::gen;
use common::Workspace;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WORDS: &[&str] = &[
    "aspirin",
    "kidney",
    "sepsis",
    "insulin",
    "biopsy",
    "anemia",
    "stroke",
    "asthma",
    "lupus",
    "warfarin",
    "troponin",
    "lactate",
    "dialysis",
    "glucose",
    "statin",
    "melanoma",
    "hepatitis",
    "tremor",
    "edema",
    "fever",
    "cough",
    "rash",
    "embolism",
    "fracture",
    "tumor",
    "gout",
    "migraine",
    "seizure",
    "ulcer",
    "vaccine",
    "antibody",
    "enzyme",
    "platelet",
    "sodium",
    "potassium",
    "cortisol",
    "thyroid",
    "pancreas",
    "spleen",
    "liver",
    "retina",
    "cochlea",
    "femur",
    "aorta",
    "valve",
    "artery",
    "vein",
    "neuron",
    "synapse",
    "gene",
    "protein",
    "allele",
    "mutation",
    "tissue",
    "plasma",
    "serum",
    "urine",
    "sputum",
    "culture",
    "dose",
];

/// An instruction of 7 words drawn from `WORDS` by `n` (different `n`, dissimilar text).
fn instruction(n: usize) -> String {
    let mut x = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut words = Vec::new();
    for _ in 0..7 {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        words.push(WORDS[(x >> 33) as usize % WORDS.len()]);
    }
    format!("Explain {} for request {n}.", words.join(" "))
}

/// A Chat Completions reply for request `n`: a new task, then one repeating request
/// `n - 1`'s (a duplicate) or a blacklisted one, some garbage, and a task cut off by the
/// length limit.
fn reply(n: usize) -> String {
    let second = if n.is_multiple_of(2) {
        instruction(n.saturating_sub(1))
    } else {
        format!(
            "Draw a diagram of the {} pathway please.",
            WORDS[n % WORDS.len()]
        )
    };
    let text = format!(
        "Here you go.\n###\n4. Category: qa\n4. Instruction: {}\n4. Input:\n<noinput>\n4. Output:\nAnswer {n}.\n###\n5. Category: gen\n5. Instruction: {second}\n5. Input:\nNote {n}.\n5. Output:\nText {n}.\n###\n6. Category: ie\n6. Instruction: Extract the",
        instruction(n)
    );
    let body = serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50},
    })
    .to_string();
    http("200 OK", "", &body)
}

fn http(status: &str, headers: &str, body: &str) -> String {
    common::http::response(status, headers, body)
}

fn settings(ws: &Workspace, base: &str, extra: &str) {
    let dir = ws.home.path().join("config");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[teachers.mock]\nbase_url = \"{base}\"\nmodel = \"mock-model\"\napi_key_env = \"\"\ntimeout_s = 0.5\nmax_retries = 3\nbackoff_s = 0.01\nmax_backoff_s = 0.05\nconcurrency = 2\n{extra}"
        ),
    )
    .expect("settings");
}

#[test]
fn kept_and_rejected_with_provenance_and_a_killed_run_continues_to_the_target() {
    let (base, _) = common::http::serve(|n| Some(reply(n)), Duration::from_millis(40));
    let ws = Workspace::new();
    settings(&ws, &base, "");
    let args = ["--teacher", "mock", "--target", "40"];
    let at_kill = gen::kill_when_kept(&ws, &args, 12, Duration::from_secs(60));
    assert!((12..40).contains(&at_kill), "{at_kill}");
    let out = ws.ok(&["generate", "--teacher", "mock", "--target", "40"]);
    assert!(out.contains("reached the target of 40 kept tasks"), "{out}");
    assert!(out.contains("kept 40/40"), "{out}");
    let (kept, rejected) = gen::check_finished(&ws, 40, "mock-model @ http://127.0.0.1");
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["rejection"]["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(reasons.contains(&"blacklisted"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| *r == "duplicate" || *r == "too_similar"),
        "{reasons:?}"
    );
    // The cut-off third task of every reply was dropped, the preamble was garbage.
    assert!(kept.iter().chain(&rejected).all(|r| r["category"] != "ie"));
    let raw = gen::lines(&gen::dir(&ws).join("raw.jsonl"));
    assert!(raw.iter().any(|l| l["cut_off_task_dropped"] == true));
    assert_eq!(raw[0]["garbage"][0]["why"], "text outside any task");
    // Already at the target: a third run asks nothing.
    let again = ws.ok(&["generate", "--teacher", "mock", "--target", "40"]);
    assert!(again.contains("requests 0"), "{again}");
}

/// Request 0: HTTP 500; 2: 429 with Retry-After; 3: malformed JSON (reported, not retried);
/// 4: a body cut short; 5: no answer before the timeout; the rest good.
fn faulty(n: usize) -> Option<String> {
    match n {
        0 => Some(http(
            "500 Internal Server Error",
            "",
            "{\"error\":\"boom\"}",
        )),
        2 => Some(http("429 Too Many Requests", "Retry-After: 0\r\n", "{}")),
        3 => Some(http("200 OK", "", "{\"choices\": [{\"message\": ")),
        4 => Some(
            "HTTP/1.1 200 OK\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"choices\":"
                .to_string(),
        ),
        5 => None,
        _ => Some(reply(n)),
    }
}

#[test]
fn faults_are_retried_or_reported_and_never_corrupt_the_files() {
    let (base, count) = common::http::serve(faulty, Duration::ZERO);
    let ws = Workspace::new();
    settings(&ws, &base, "");
    let settings_path = ws.home.path().join("config/config.toml");
    let text = std::fs::read_to_string(&settings_path).expect("settings");
    std::fs::write(
        &settings_path,
        text.replace("concurrency = 2", "concurrency = 1"),
    )
    .expect("settings");
    let out = ws.ok(&["generate", "--teacher", "mock", "--target", "6"]);
    assert!(
        out.contains("(1 failed"),
        "the malformed reply is reported: {out}"
    );
    assert!(
        out.contains("last failed request:") && out.contains("not a chat completion"),
        "{out}"
    );
    assert!(count.load(Ordering::SeqCst) >= 7);
    gen::check_finished(&ws, 6, "mock-model");
    let raw = gen::lines(&gen::dir(&ws).join("raw.jsonl"));
    let errors: Vec<&serde_json::Value> = raw.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1, "{raw:?}");
    assert!(
        raw.iter().any(|l| l["attempts"].as_u64() > Some(1)),
        "retried: {raw:?}"
    );

    // Connection refused: the run stops at once (no retries: waiting does not start a
    // server) with the endpoint and what to do; the files keep what they had.
    let before = std::fs::read(gen::dir(&ws).join("generated.jsonl")).expect("kept");
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    settings(&ws, &dead, "[generate]\nmax_failures = 2\n");
    let failed = ws.run(&["generate", "--teacher", "mock", "--target", "10"]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains(&format!("cannot reach {dead}/chat/completions"))
            && err.contains("Is the server running?")
            && err.contains("\"local\" is the built-in model"),
        "{err}"
    );
    let attempts = gen::lines(&gen::dir(&ws).join("raw.jsonl"))
        .iter()
        .filter(|l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot reach"))
        })
        .count();
    // One request per worker (the mock teacher's concurrency is 2), none retried.
    assert!((1..=2).contains(&attempts), "{attempts} failed requests");
    assert_eq!(
        std::fs::read(gen::dir(&ws).join("generated.jsonl")).expect("kept"),
        before
    );
    gen::lines(&gen::dir(&ws).join("raw.jsonl"));
}

#[test]
fn a_torn_last_line_is_repaired_and_a_bad_line_is_named() {
    let (base, _) = common::http::serve(|n| Some(reply(n)), Duration::ZERO);
    let ws = Workspace::new();
    settings(&ws, &base, "");
    ws.ok(&["generate", "--teacher", "mock", "--target", "3"]);
    let kept = gen::dir(&ws).join("generated.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&kept)
        .expect("open");
    f.write_all(b"{\"id\":\"gen-9999\",\"categ")
        .expect("torn write");
    drop(f);
    let out = ws.ok(&["generate", "--teacher", "mock", "--target", "5"]);
    assert!(out.contains("removed an unfinished last line"), "{out}");
    gen::check_finished(&ws, 5, "mock-model");

    let mut text = std::fs::read_to_string(&kept).expect("kept");
    text.push_str("{\"id\": \"gen-x\", \"category\": \"qa\"}\n");
    std::fs::write(&kept, text).expect("write");
    let bad = ws.run(&["generate", "--teacher", "mock", "--target", "8"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains(&format!("{}:6:", kept.display())), "{err}");
    let unknown = ws.run(&["generate", "--teacher", "nobody", "--target", "8"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no teacher named \"nobody\": known are local, llamacpp, mock, openai"),
        "{err}"
    );
}

/// The Generated pane in a real terminal: start a run with `n`, watch the counters move while
/// the list stays usable, stop it with `x`, continue it with `n` to the target.
#[test]
fn the_generated_pane_starts_watches_and_stops_a_run_in_tmux() {
    let (base, _) = common::http::serve(|n| Some(reply(n)), Duration::from_millis(300));
    let ws = Workspace::new();
    settings(&ws, &base, "[generate]\nteacher = \"mock\"\ntarget = 30\n");
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' '{}'",
        ws.home.path().display(),
        common::BIN
    );
    let tmux = common::tmux::Tmux::start("generate", &command, 120, 40);
    tmux.wait_for("seed-019");
    tmux.keys(&["BTab"]);
    tmux.wait_for("No kept tasks");
    tmux.keys(&["n"]);
    tmux.wait_for("running");
    let first = tmux.wait_for("gen-000003");
    // The list is usable while the run goes on.
    tmux.keys(&["v"]);
    tmux.wait_for("reason");
    tmux.keys(&["v"]);
    let later = tmux.wait_for("gen-000009");
    assert_ne!(first, later, "the counters and list move");
    tmux.keys(&["x"]);
    let stopped = tmux.wait_for("Stopped with");
    assert!(stopped.contains("n continues"), "{stopped}");
    let partial = gen::lines(&gen::dir(&ws).join("generated.jsonl")).len();
    assert!((3..30).contains(&partial), "{partial}");
    tmux.keys(&["n"]);
    tmux.wait_for("Reached the target of 30 kept tasks");
    // The pane rereads the files when the run ends: the count follows within a frame or so.
    tmux.wait_for("Kept 30");
    tmux.keys(&["q"]);
    tmux.wait_exit();
    gen::check_finished(&ws, 30, "mock-model");
}

/// A `generate` run in another process appends while the Generated pane accepts and rejects
/// tasks (each review rewrites both files): every task the run wrote ends up in exactly one
/// of the two files, and every review is where the reviewer put it.
#[test]
fn reviews_in_the_pane_while_a_cli_run_appends_lose_nothing() {
    use bioinstruct::tui::panes::generated::{GenList, GeneratedPane};
    let (base, _) = common::http::serve(|n| Some(reply(n)), Duration::from_millis(60));
    let ws = Workspace::new();
    settings(&ws, &base, "");
    let mut child = ws
        .cmd()
        .args(["generate", "--teacher", "mock", "--target", "40"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn generate");
    let dir = gen::dir(&ws);
    let mut pane = GeneratedPane::new(dir.clone(), "mock".into(), 40);
    let (mut rejected_here, mut accepted_here) = (Vec::new(), Vec::new());
    let unreviewed = |list: &[bioinstruct::data::Instruction]| {
        list.iter().position(|r| !r.extra.contains_key("review"))
    };
    while child.try_wait().expect("wait").is_none() {
        // Writes the reviews of the last round, then reads what the run appended: the work
        // the runtime does between keys.
        pane.reload_now();
        if let Some(i) = unreviewed(&pane.kept) {
            pane.showing = GenList::Kept;
            pane.cursor.selected = i;
            let id = pane.kept[i].id.clone();
            pane.reject().expect("reject");
            rejected_here.push(id);
        }
        if let Some(i) = unreviewed(&pane.rejected) {
            pane.showing = GenList::Rejected;
            pane.cursor.selected = i;
            let id = pane.rejected[i].id.clone();
            pane.accept().expect("accept");
            accepted_here.push(id);
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    pane.reload_now();
    let out = child.wait_with_output().expect("generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rejected_here.len() >= 3 && accepted_here.len() >= 3,
        "too few reviews during the run to prove anything: {} rejected, {} accepted",
        rejected_here.len(),
        accepted_here.len()
    );
    let ids = |name: &str| -> Vec<String> {
        gen::lines(&dir.join(name))
            .iter()
            .map(|v| v["id"].as_str().expect("id").to_string())
            .collect()
    };
    let (kept, rejected) = (ids("generated.jsonl"), ids("rejected.jsonl"));
    let mut written: Vec<String> = gen::lines(&dir.join("raw.jsonl"))
        .iter()
        .flat_map(|v| {
            ["kept", "rejected"].into_iter().flat_map(move |k| {
                v[k].as_array()
                    .into_iter()
                    .flatten()
                    .map(|id| id.as_str().expect("id").to_string())
            })
        })
        .collect();
    written.sort();
    let mut both: Vec<String> = kept.iter().chain(&rejected).cloned().collect();
    both.sort();
    assert_eq!(both, written, "a task was lost or written twice");
    // Each reviewed task is where its (last) review put it.
    for id in rejected_here.iter().chain(&accepted_here) {
        let in_kept = kept.contains(id);
        let file = if in_kept {
            "generated.jsonl"
        } else {
            "rejected.jsonl"
        };
        let line = gen::lines(&dir.join(file))
            .into_iter()
            .find(|v| v["id"] == id.as_str())
            .expect("reviewed task");
        let decision = line["review"]["decision"].as_str().expect("review");
        assert_eq!(decision == "accepted", in_kept, "{id}: {line}");
    }
}

/// The default teacher, `auto`: llama.cpp's server where one answers at `[teachers.llamacpp]`,
/// else the built-in local model (a new user has no server), saying which and why.
#[test]
fn the_default_teacher_is_llamacpp_when_it_answers_else_the_local_model() {
    let (base, _) = common::http::serve(|n| Some(reply(n)), Duration::from_millis(1));
    let ws = Workspace::new();
    // A [model] base that does not exist: a local teacher would fail to load at once.
    let missing = ws.home.path().join("no-model");
    let write = |base: &str| {
        let dir = ws.home.path().join("config");
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[model]\nbase = {:?}\n[teachers.llamacpp]\nbase_url = \"{base}\"\nmodel = \"mock-model\"\n",
                missing.display().to_string()
            ),
        )
        .expect("settings");
    };
    write(&base);
    let out = ws.offline(&["generate", "--target", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "teacher auto: llamacpp (a server answers at {base})"
        )),
        "{err}"
    );
    gen::check_finished(&ws, 3, "mock-model");

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    write(&dead);
    // Loading the missing local model then fails: what matters here is the choice, made
    // before.
    let out = ws.offline(&["generate", "--target", "6"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "teacher auto: local, the built-in model (nothing answers at {dead}"
        )),
        "{err}"
    );
    assert!(err.contains("as the teacher"), "{err}");
}
