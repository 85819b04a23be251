//! LoRA training of the real default model, SmolLM2-135M-Instruct (the Q4_1 GGUF that
//! `scripts/fetch-test-model.sh` fetches, dequantized to f32), on the 80 bundled seeds, the way
//! a user runs it: `train --detach`, `runs tail`, then `chat --adapter` with the result.
//! One epoch at a raised learning rate keeps it to a couple of minutes on 2 cores; the full
//! `configs/smollm2-135m-cpu.toml` run is the same code for 54 steps.

mod common;

use common::gguf_path;
use std::path::PathBuf;

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
        .replace("checkpoint_every = 20", "checkpoint_every = 0");
    assert!(text.contains("epochs = 1") && text.contains("learning_rate = 1e-3"));
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
        stdout.contains("70 training and 8 validation examples") && stdout.contains("18 steps"),
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
    assert_eq!(steps, 18, "{tail}");
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
}
