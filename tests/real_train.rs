//! LoRA training of the real default model, SmolLM2-135M-Instruct (the Q4_1 GGUF that
//! `scripts/fetch-test-model.sh` fetches, dequantized to f32), on the bundled seeds, the way
//! a user runs it: `train --detach`, `runs tail`, then `chat --adapter` with the result, and
//! the workbench's Chat pane with base and tuned side by side.
//! The QA seeds only (the category ablation's `categories = ["qa"]`: 24 seeds, a fifth held
//! out), one epoch at a raised learning rate: 5 steps, about 40 s on 2 cores, where all 80
//! seeds took two minutes for the same checks. The full `configs/smollm2-135m-cpu.toml` run
//! is the same code for 54 steps.

mod common;

use common::gguf_path;
use common::tmux::Tmux;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[test]
fn a_detached_run_on_the_seeds_lowers_validation_loss_and_its_adapter_chats() {
    let ws = common::Workspace::new();
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/smollm2-135m-cpu.toml");
    let text = std::fs::read_to_string(shipped).expect("shipped config");
    let text = text
        .replace(
            "base = \"HuggingFaceTB/SmolLM2-135M-Instruct\"",
            &format!("base = {:?}", gguf_path().display().to_string()),
        )
        .replace("epochs = 3", "epochs = 1")
        .replace("learning_rate = 2e-4", "learning_rate = 1e-3")
        .replace("warmup_steps = 10", "warmup_steps = 2")
        .replace("checkpoint_every = 20", "checkpoint_every = 0")
        .replace("categories = []", "categories = [\"qa\"]")
        .replace("validation_fraction = 0.1", "validation_fraction = 0.2");
    assert!(text.contains("epochs = 1") && text.contains("learning_rate = 1e-3"));
    assert!(text.contains("categories = [\"qa\"]") && text.contains("validation_fraction = 0.2"));
    let config = ws.home.path().join("smollm2.toml");
    std::fs::write(&config, text).expect("config");
    let run = |args: &[&str]| ws.offline(args);

    let out = run(&[
        "train",
        "--config",
        config.to_str().expect("utf-8"),
        "--detach",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("19 training and 5 validation examples") && stdout.contains("5 steps"),
        "{stdout}"
    );
    let id = common::run_id(&stdout);

    // `runs tail --follow` returns when the run ends.
    let tail = run(&["runs", "tail", &id, "--follow"]);
    let tail = String::from_utf8_lossy(&tail.stdout).into_owned();
    let lines: Vec<serde_json::Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let steps = lines.iter().filter(|l| l.get("loss").is_some()).count();
    let val: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.get("val_loss").and_then(|v| v.as_f64()))
        .collect();
    let show = String::from_utf8_lossy(&run(&["runs", "show", &id]).stdout).into_owned();
    assert!(show.contains("state      finished"), "{show}\n{tail}");
    assert_eq!(steps, 5, "{tail}");
    assert!(val.len() >= 2, "{tail}");
    assert!(
        val[val.len() - 1] < val[0],
        "validation loss {} -> {}",
        val[0],
        val[val.len() - 1]
    );

    let adapter = ws.home.path().join("data/runs").join(&id).join("final");
    let chat = run(&[
        "chat",
        "--model",
        gguf_path().to_str().expect("utf-8"),
        "--adapter",
        adapter.to_str().expect("utf-8"),
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "Name one first-line drug for type 2 diabetes.",
    ]);
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    assert!(!String::from_utf8_lossy(&chat.stdout).trim().is_empty());

    chat_pane_compares_base_and_tuned(&ws);
}

/// The text of one column of the Chat pane at 120 columns: the left (base) or right
/// (tuned) half of the rows between the top of the columns and their bottom border.
fn column_text(screen: &str, right: bool) -> String {
    screen
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('└'))
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            let half = chars.len() / 2;
            let side: String = if right {
                chars[half..].iter().collect()
            } else {
                chars[..half].iter().collect()
            };
            side.trim_matches(|c| c == '│' || c == ' ').to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// In the workbench, in tmux: the Chat pane loads the base model and the tuned one (the
/// adapter just trained), one prompt streams in both columns, the answers differ, and while
/// both stream keypresses show at once (median under 100 ms, none over 300 ms).
fn chat_pane_compares_base_and_tuned(ws: &common::Workspace) {
    let config_dir = ws.home.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "[model]\nbase = {:?}\n[generation]\ntemperature = 0.0\nmax_new_tokens = 160\n",
            gguf_path().display().to_string()
        ),
    )
    .expect("settings");
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' HF_HUB_OFFLINE=1 '{}'",
        ws.home.path().display(),
        common::BIN
    );
    let tmux = Tmux::start("chat", &command, 120, 40);
    tmux.wait_for("seed-019");
    tmux.keys(&["Tab", "Tab"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tmux.screen().matches("Ready. Type a prompt").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the models never loaded:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.text("List three first-line treatments for type 2 diabetes.");
    tmux.keys(&["Enter"]);
    tmux.wait_for("streaming…");

    // Keypresses while both columns stream: each must show in the prompt box at once.
    let mut waits = Vec::new();
    for c in ["Z", "Y", "X", "W", "V"] {
        let before = tmux.screen();
        assert!(before.contains("streaming…"), "still streaming:\n{before}");
        let start = Instant::now();
        tmux.text(c);
        loop {
            let screen = tmux.screen();
            let prompt = screen
                .lines()
                .find(|l| l.contains('▏'))
                .unwrap_or_default()
                .to_string();
            if prompt.contains(c) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{c} never showed:\n{screen}"
            );
        }
        waits.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    // Typically 4-7 ms. One slow capture in a run (the machine's scheduler, tmux itself) is
    // no frozen UI: the median must stay under 100 ms and every keypress under 300 ms.
    let mut sorted = waits.clone();
    sorted.sort();
    let (median, slowest) = (sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
    eprintln!("keypress to screen while streaming: {waits:?}");
    assert!(median < Duration::from_millis(100), "{waits:?}");
    assert!(slowest < Duration::from_millis(300), "{waits:?}");

    let deadline = Instant::now() + Duration::from_secs(120);
    while tmux.screen().matches("tokens/s").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the replies never ended:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let screen = tmux.screen();
    let (base, tuned) = (column_text(&screen, false), column_text(&screen, true));
    assert!(
        base.contains("diabetes") && tuned.contains("diabetes"),
        "{screen}"
    );
    assert_ne!(base, tuned, "the adapter changes the answer:\n{screen}");
    tmux.keys(&["C-c"]);
    tmux.wait_exit();
}
