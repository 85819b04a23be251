//! `runs watch`, `runs show` and `runs tail` on run folders the workbench did not start: a
//! real Hugging Face Trainer run (a tiny Llama trained by transformers, in the torch venv of
//! `scripts/hf-trainer-run.sh`) and a `trainer_log.jsonl` written line by line the way
//! LLaMA-Factory's `LogCallback` writes it, both followed while they are written.

mod common;

use common::Workspace;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts `runs watch DIR`; its stdout lines arrive on the channel.
fn watch(ws: &Workspace, dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = ws
        .cmd()
        .args(["runs", "watch"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("runs watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Every line until the watcher exits (within `limit`), and its exit status.
fn rest(child: &mut Child, rx: &mpsc::Receiver<String>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    Instant::now() < deadline,
                    "runs watch did not end: {lines:#?}"
                );
            }
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{lines:#?}");
    lines
}

fn first_step_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l| l.starts_with("step")) {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no step line: {seen:#?}"));
        seen.push(l);
    }
}

fn steps_with(lines: &[String], field: &str) -> Vec<usize> {
    lines
        .iter()
        .filter(|l| l.contains(field))
        .filter_map(|l| l.split_whitespace().nth(1)?.split('/').next()?.parse().ok())
        .collect()
}

#[test]
fn runs_watch_follows_a_real_hugging_face_trainer_run_live() {
    let ws = Workspace::new();
    let out = ws.home.path().join("hf-run");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf-trainer-run.sh");
    let mut trainer = Command::new(script)
        .arg(&out)
        .args(["12", "0.6"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the HF Trainer run");
    // Its first checkpoint (trainer_state.json) makes the folder a run.
    let deadline = Instant::now() + Duration::from_secs(240);
    while !out.join("checkpoint-2/trainer_state.json").is_file() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint-2 from the trainer"
        );
        assert!(
            trainer.try_wait().expect("poll").is_none(),
            "the trainer ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut child, rx) = watch(&ws, &out);
    let mut lines = Vec::new();
    first_step_line(&rx, &mut lines);
    assert!(
        trainer.try_wait().expect("poll").is_none(),
        "the trainer should still be training when the first steps are shown"
    );
    assert!(
        lines[0].contains("HF Trainer") && lines[0].contains("running"),
        "{lines:#?}"
    );
    lines.extend(rest(&mut child, &rx, Duration::from_secs(240)));
    let status = trainer.wait_with_output().expect("trainer");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        steps_with(&lines, " loss "),
        (1..=12).collect::<Vec<_>>(),
        "{lines:#?}"
    );
    assert_eq!(
        steps_with(&lines, "eval_loss"),
        vec![4, 8, 12],
        "{lines:#?}"
    );
    let last = lines.last().expect("a last line");
    assert!(last.starts_with("finished at step 12/12"), "{lines:#?}");

    let show = ws.ok(&["runs", "show", out.to_str().expect("utf-8"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).expect("json");
    assert_eq!(v["trainer"], "HF Trainer");
    assert_eq!(v["state"], "finished");
    assert_eq!(
        (v["step"].as_u64(), v["total_steps"].as_u64()),
        (Some(12), Some(12))
    );
    assert!(v["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .ends_with("checkpoint-12"));
}

#[test]
fn runs_watch_follows_a_llama_factory_log_as_it_is_written() {
    let ws = Workspace::new();
    let dir = ws.home.path().join("lf-run");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("trainer_log.jsonl");
    // LLaMA-Factory's LogCallback: json.dumps of the non-empty values, one line a log step.
    let line = |step: usize| {
        let elapsed = step * 3;
        let remaining = (10 - step) * 3;
        let mut v = serde_json::json!({
            "current_steps": step, "total_steps": 10, "loss": 2.5 - step as f64 * 0.1,
            "lr": 1e-4 * (10 - step) as f64 / 10.0, "epoch": step as f64 / 10.0,
            "percentage": step as f64 * 10.0,
            "elapsed_time": format!("0:00:{elapsed:02}"),
            "remaining_time": format!("0:00:{remaining:02}"),
            "throughput": 1500.5, "total_tokens": step * 2048,
        });
        if step == 10 {
            v["lr"] = serde_json::Value::Null;
            v.as_object_mut().expect("object").remove("lr");
        }
        v.to_string()
    };
    let mut f = std::fs::File::create(&path).expect("log");
    writeln!(f, "{}", line(1)).expect("write");
    f.flush().expect("flush");
    let (mut child, rx) = watch(&ws, &dir);
    let mut lines = Vec::new();
    first_step_line(&rx, &mut lines);
    for step in 2..=10 {
        std::thread::sleep(Duration::from_millis(150));
        writeln!(f, "{}", line(step)).expect("write");
        if step == 5 {
            let eval = serde_json::json!({"current_steps": 5, "total_steps": 10,
                "eval_loss": 2.05, "epoch": 0.5, "percentage": 50.0,
                "elapsed_time": "0:00:15", "remaining_time": "0:00:15"});
            writeln!(f, "{eval}").expect("write");
        }
        f.flush().expect("flush");
    }
    lines.extend(rest(&mut child, &rx, Duration::from_secs(60)));
    assert!(lines[0].contains("LLaMA-Factory"), "{lines:#?}");
    assert_eq!(
        steps_with(&lines, " loss "),
        (1..=10).collect::<Vec<_>>(),
        "{lines:#?}"
    );
    assert_eq!(steps_with(&lines, "eval_loss"), vec![5], "{lines:#?}");
    let step3 = lines
        .iter()
        .find(|l| l.starts_with("step      3/"))
        .expect("step 3");
    assert!(
        step3.contains("loss 2.2000")
            && step3.contains("tokens/s 1500")
            && step3.contains("ETA 21s"),
        "{step3}"
    );
    assert!(
        lines
            .last()
            .expect("last")
            .starts_with("finished at step 10/10"),
        "{lines:#?}"
    );

    // `runs tail` reads it too, a JSON line per step and evaluation.
    let tail = ws.ok(&["runs", "tail", dir.to_str().expect("utf-8")]);
    assert_eq!(tail.lines().count(), 11, "{tail}");
    // A malformed line is named with its file and line.
    std::fs::write(&path, "{\"current_steps\": 1, \"loss\": 2.0}\nnot json\n").expect("write");
    let out = ws.run(&["runs", "show", dir.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trainer_log.jsonl:2: not JSON"), "{err}");
}

/// `step N/TOTAL` values on the screen (the table's and the gauge's), the largest.
fn steps_on_screen(screen: &str, total: usize) -> usize {
    let suffix = format!("/{total}");
    screen
        .split_whitespace()
        .filter_map(|w| w.strip_suffix(suffix.as_str())?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_train_pane_follows_an_hf_trainer_run_and_a_llama_factory_log_live_in_tmux() {
    use common::tmux::Tmux;
    let ws = Workspace::new();
    let hf = ws.home.path().join("hf-live");
    let lf = ws.home.path().join("lf-live");
    std::fs::create_dir_all(&lf).expect("dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf-trainer-run.sh");
    let mut trainer = Command::new(script)
        .arg(&hf)
        .args(["24", "0.8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the HF Trainer run");
    // LLaMA-Factory's log, a line every 300 ms up to step 30.
    let log = lf.join("trainer_log.jsonl");
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&log).expect("log");
        for step in 1..=30usize {
            let v = serde_json::json!({"current_steps": step, "total_steps": 30,
                "loss": 3.0 - step as f64 * 0.05, "lr": 2e-4, "epoch": step as f64 / 30.0,
                "percentage": step as f64 * 100.0 / 30.0, "elapsed_time": "0:00:01",
                "remaining_time": "0:00:09"});
            writeln!(f, "{v}").expect("write");
            f.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    while !hf.join("checkpoint-2/trainer_state.json").is_file() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint-2 from the trainer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' HF_HUB_OFFLINE=1 '{}'",
        ws.home.path().display(),
        common::BIN
    );
    let tmux = Tmux::start("watch", &command, 120, 40);
    tmux.wait_for("Seeds");
    tmux.keys(&["Tab"]);
    tmux.wait_for("No runs in");
    // A folder that is no run is refused in the form, with the reason.
    tmux.keys(&["w"]);
    tmux.wait_for("Follow another trainer's run");
    tmux.text(ws.home.path().to_str().expect("utf-8"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("not a run folder");
    tmux.keys(&["Escape"]);
    for dir in [&lf, &hf] {
        tmux.keys(&["w"]);
        tmux.wait_for("Follow another trainer's run");
        tmux.text(dir.to_str().expect("utf-8"));
        tmux.keys(&["Enter"]);
        tmux.wait_for("(read-only)");
    }
    let screen = tmux.wait_for("HF Trainer (read-only)");
    assert!(
        screen.contains("hf-live") && screen.contains("lf-live"),
        "{screen}"
    );
    // The selected HF run moves on while it trains.
    let first = steps_on_screen(&screen, 24);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut later = first;
    while later <= first {
        assert!(
            Instant::now() < deadline,
            "the HF run never moved on:\n{}",
            tmux.screen()
        );
        assert!(
            trainer.try_wait().expect("poll").is_none() || later > first,
            "the trainer ended before the pane showed it move"
        );
        std::thread::sleep(Duration::from_millis(200));
        later = steps_on_screen(&tmux.screen(), 24);
    }
    assert!(tmux.screen().contains("┌ loss"), "the loss chart is drawn");
    assert!(trainer.wait().expect("trainer").success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while steps_on_screen(&tmux.screen(), 24) < 24 || !tmux.screen().contains("finished") {
        assert!(
            Instant::now() < deadline,
            "not shown finished:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.join().expect("writer");
    // The LLaMA-Factory run (listed first: by name, newest first), selected, reached its
    // last step too; stopping it is refused.
    tmux.keys(&["Up"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmux.screen().contains("LLaMA-Factory (read-only)")
        || steps_on_screen(&tmux.screen(), 30) < 30
    {
        assert!(
            Instant::now() < deadline,
            "the LLaMA-Factory run:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tmux.keys(&["x"]);
    tmux.wait_for("followed read-only");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}
