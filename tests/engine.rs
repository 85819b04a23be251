//! `bioinstruct train --engine accelerate`: a real two-process distributed LoRA run
//! (`accelerate launch`, two CPU processes joined by gloo) of SmolLM2-135M on the bundled
//! seeds, in the torch venv (`scripts/torch-python.sh`). Its metrics stream into the Train
//! pane while it runs (tmux), it is stopped from the pane and resumed with `runs resume`, and
//! its adapter gives the same greedy tokens in `bioinstruct chat --adapter` as in PEFT.
//!
//! `bioinstruct train --engine axolotl`: a real `axolotl train` of SmolLM2-135M (its GGUF
//! written as a Hugging Face folder) in the axolotl venv (`scripts/axolotl-python.sh`), the run
//! folder kept by the project's plugin, stopped and resumed, its adapter loading in `chat`.

mod common;

use common::tmux::Tmux;
use common::{gguf_path, Workspace, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The python that `script` (scripts/torch-python.sh, scripts/axolotl-python.sh) prints,
/// building its venv once.
fn venv_python(script: &str) -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .output()
        .expect(script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn read_status(run: &Path) -> serde_json::Value {
    std::fs::read_to_string(run.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits up to `seconds` for the run's status to be `state`.
fn wait_state(run: &Path, state: &str, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while read_status(run)["state"] != state {
        assert!(
            Instant::now() < deadline,
            "not {state}: {}\ntrain.log:\n{}",
            read_status(run),
            std::fs::read_to_string(run.join("train.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of |lora_B| over an adapter's weights (zero at initialisation).
fn lora_b_moved(adapter: &Path) -> f32 {
    let tensors = candle_core::safetensors::load(
        adapter.join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("adapter weights");
    tensors
        .iter()
        .filter(|(k, _)| k.contains("lora_B"))
        .map(|(_, t)| {
            t.abs()
                .and_then(|a| a.sum_all())
                .and_then(|a| a.to_dtype(candle_core::DType::F32))
                .and_then(|a| a.to_scalar::<f32>())
                .expect("sum")
        })
        .sum::<f32>()
}

/// `run` (`id`), stopped before its end with that step checkpointed, is resumed with `runs
/// resume` (in the foreground) to the end: each step logged once, `train.log` saying
/// `resumed(step)`. Returns the trained adapter, `final/`.
fn resume_to_the_end(
    ws: &Workspace,
    id: &str,
    run: &Path,
    resumed: impl Fn(u64) -> String,
) -> PathBuf {
    let stopped_at = read_status(run)["step"].as_u64().expect("step");
    let total = read_status(run)["total_steps"].as_u64().expect("total");
    assert!(
        stopped_at < total,
        "stopped before the end ({stopped_at}/{total})"
    );
    assert!(
        run.join(format!("checkpoint-{stopped_at}/trainer_state.json"))
            .is_file(),
        "the stop checkpointed its step"
    );
    let out = ws.run(&["runs", "resume", id]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_status(run)["state"], "finished");
    assert_eq!(
        logged_steps(run),
        (1..=total).collect::<Vec<_>>(),
        "each step once"
    );
    let log = std::fs::read_to_string(run.join("train.log")).expect("log");
    assert!(log.contains(&resumed(stopped_at)), "{log}");
    let adapter = run.join("final");
    assert!(adapter.join("adapter_config.json").is_file());
    // Trained: its lora_B (zero at initialisation) moved.
    assert!(lora_b_moved(&adapter) > 0.0, "lora_B is still zero");
    adapter
}

/// The steps of the metrics' step lines, in file order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

/// The step of the selected run's progress gauge (`step N/TOTAL`).
fn screen_step(screen: &str) -> u64 {
    let words: Vec<&str> = screen.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0].ends_with("step"))
        .filter_map(|w| w[1].split_once('/')?.0.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_two_process_accelerate_run_streams_into_the_train_pane_stops_resumes_and_matches_peft() {
    let ws = Workspace::new();
    let python = venv_python("scripts/torch-python.sh");
    let gguf = gguf_path();
    ws.ok(&["seeds", "list"]); // the workspace's seed file
    let config = ws.home.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [\"seeds\"]\nmax_seq_len = 256\nvalidation_fraction = 0.1\n\
             [lora]\nr = 8\nlora_alpha = 16\ntarget_modules = [\"q_proj\", \"v_proj\"]\n\
             [optim]\nlearning_rate = 2e-3\nepochs = 1\nmicro_batch_size = 1\nwarmup_steps = 2\n\
             [run]\ncheckpoint_every = 4\n",
            gguf.display().to_string()
        ),
    )
    .expect("config");
    let out = ws.run(&[
        "train",
        "--config",
        config.to_str().expect("utf-8"),
        "--engine",
        "accelerate",
        "--num-processes",
        "2",
        "--python",
        python.to_str().expect("utf-8"),
        "--detach",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = common::run_id(&said);
    let run = ws.home.path().join("data/runs").join(&id);
    for f in [
        "train.jsonl",
        "validation.jsonl",
        "args.json",
        "train.py",
        "launch.json",
    ] {
        assert!(run.join("engine").join(f).is_file(), "engine/{f}");
    }

    // The Train pane shows it like any run, moving on while it trains.
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' HF_HUB_OFFLINE=1 '{BIN}'",
        ws.home.path().display()
    );
    let tmux = Tmux::start("engine", &command, 120, 40);
    tmux.wait_for("Seeds");
    tmux.keys(&["Tab"]);
    tmux.wait_for(&id);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = 0;
    while first == 0 {
        assert!(
            Instant::now() < deadline,
            "no step shown; train.log:\n{}\nscreen:\n{}",
            std::fs::read_to_string(run.join("train.log")).unwrap_or_default(),
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(300));
        let screen = tmux.screen();
        if screen.contains("running") {
            first = screen_step(&screen);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while screen_step(&tmux.screen()) <= first {
        assert!(
            Instant::now() < deadline,
            "the run never moved on:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(tmux.screen().contains("┌ loss"), "the loss chart is drawn");
    // Stop it from the pane: both processes checkpoint the same step and end.
    tmux.keys(&["x"]);
    tmux.wait_for(&format!("Stop {id}?"));
    tmux.keys(&["y"]);
    wait_state(&run, "stopped", 120);
    tmux.wait_for("stopped");
    tmux.keys(&["q"]);
    tmux.wait_exit();

    // `runs resume` goes on from that checkpoint to the end (in the foreground).
    let adapter = resume_to_the_end(&ws, &id, &run, |step| {
        format!("resuming from checkpoint-{step}")
    });

    // The adapter in bioinstruct chat and in PEFT: the same greedy tokens.
    let prompt = "List three symptoms of sepsis.";
    let ours = ws.ok(&[
        "chat",
        "--model",
        gguf.to_str().expect("utf-8"),
        "--gguf-compute",
        "float",
        "--adapter",
        adapter.to_str().expect("utf-8"),
        "--temperature",
        "0",
        "--repetition-penalty",
        "1.0",
        "--max-new-tokens",
        "16",
        prompt,
    ]);
    let peft = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peft_check.py"))
        .arg(&gguf)
        .arg(&adapter)
        .arg(prompt)
        .args(["--max-new-tokens", "16"])
        .output()
        .expect("peft_check.py");
    assert!(
        peft.status.success(),
        "{}",
        String::from_utf8_lossy(&peft.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&peft.stdout).expect("json");
    assert_eq!(
        ours.trim(),
        v["peft"]["text"].as_str().expect("text").trim()
    );
}

#[test]
fn an_axolotl_run_keeps_the_run_folder_stops_resumes_and_its_adapter_loads() {
    let ws = Workspace::new();
    let python = venv_python("scripts/axolotl-python.sh");
    let gguf = gguf_path();
    ws.ok(&["seeds", "list"]); // the workspace's seed file
    let config = ws.home.path().join("axolotl.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [\"seeds\"]\ncategories = [\"ie\"]\nmax_seq_len = 256\n\
             [lora]\nr = 8\nlora_alpha = 16\ntarget_modules = [\"q_proj\", \"v_proj\"]\n\
             [optim]\nlearning_rate = 2e-3\nepochs = 1\nmicro_batch_size = 1\n\
             gradient_accumulation_steps = 1\nwarmup_steps = 1\n\
             [run]\ncheckpoint_every = 2\neval_every = 4\n",
            gguf.display().to_string()
        ),
    )
    .expect("config");
    let out = ws.run(&[
        "train",
        "--config",
        config.to_str().expect("utf-8"),
        "--engine",
        "axolotl",
        "--python",
        python.to_str().expect("utf-8"),
        "--detach",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("training on axolotl"), "{said}");
    let id = common::run_id(&said);
    let run = ws.home.path().join("data/runs").join(&id);
    let engine = run.join("engine");
    let yaml = std::fs::read_to_string(engine.join("axolotl.yaml")).expect("axolotl.yaml");
    assert!(
        yaml.contains("bioinstruct_axolotl.BioinstructPlugin"),
        "{yaml}"
    );
    // The GGUF base, written as a Hugging Face folder for axolotl.
    assert!(
        yaml.contains(&format!(
            "base_model: {:?}",
            engine.join("base").display().to_string()
        )),
        "{yaml}"
    );
    assert!(engine.join("base/model.safetensors").is_file());

    // Its steps reach metrics.jsonl while it trains; `runs stop` checkpoints one and ends it.
    let deadline = Instant::now() + Duration::from_secs(300);
    while logged_steps(&run).len() < 2 {
        assert!(
            Instant::now() < deadline && read_status(&run)["state"] != "failed",
            "no steps logged: {}\ntrain.log:\n{}",
            read_status(&run),
            std::fs::read_to_string(run.join("train.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(read_status(&run)["state"], "running");
    ws.ok(&["runs", "stop", &id]);
    wait_state(&run, "stopped", 120);
    let stopped_at = read_status(&run)["step"].as_u64().expect("step");
    let shown = ws.ok(&["runs", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("runs show --json");
    assert_eq!(shown["state"], "stopped", "{shown}");
    assert_eq!(shown["trainer"], "axolotl", "{shown}");
    assert!(
        shown["checkpoint"]
            .as_str()
            .is_some_and(|c| c.ends_with(&format!("checkpoint-{stopped_at}"))),
        "{shown}"
    );

    // `runs resume` relaunches axolotl, which goes on from that checkpoint to the end.
    let adapter = resume_to_the_end(&ws, &id, &run, |step| format!("resuming at step {step}"));
    // The adapter loads in bioinstruct on the GGUF it was trained from.
    let reply = ws.ok(&[
        "chat",
        "--model",
        gguf.to_str().expect("utf-8"),
        "--gguf-compute",
        "float",
        "--adapter",
        adapter.to_str().expect("utf-8"),
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        "List three symptoms of sepsis.",
    ]);
    assert!(!reply.trim().is_empty());
}

#[test]
fn the_default_run_exported_for_axolotl_passes_axolotl_s_own_validation() {
    let ws = Workspace::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("configs/smollm2-135m-cpu.toml");
    let dir = ws.home.path().join("axolotl");
    let said = ws.ok(&[
        "train",
        "--config",
        config.to_str().expect("utf-8"),
        "--export-axolotl",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(said.contains("axolotl train"), "{said}");
    let records = std::fs::read_to_string(dir.join("data.jsonl")).expect("data");
    assert_eq!(records.lines().count(), 80, "the bundled seeds");
    let out = Command::new(root.join("scripts/check-axolotl.sh"))
        .arg(dir.join("axolotl.yaml"))
        .output()
        .expect("scripts/check-axolotl.sh");
    assert!(
        out.status.success(),
        "axolotl refused the config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let c = bioinstruct::train::config::TrainConfig::from_file(&config).expect("config");
    assert_eq!(v["base_model"], c.model.base);
    assert_eq!(v["adapter"], "lora");
    assert_eq!(v["lora_r"].as_u64(), Some(c.lora.r as u64));
    assert_eq!(v["lora_alpha"].as_f64(), Some(c.lora.lora_alpha));
    assert_eq!(
        v["lora_target_modules"],
        serde_json::json!(c.lora.target_modules)
    );
    assert_eq!(v["sequence_len"].as_u64(), Some(c.data.max_seq_len as u64));
    assert_eq!(
        v["micro_batch_size"].as_u64(),
        Some(c.optim.micro_batch_size as u64)
    );
    assert_eq!(v["num_epochs"].as_f64(), Some(c.optim.epochs as f64));
    assert_eq!(v["learning_rate"].as_f64(), Some(c.optim.learning_rate));
    assert_eq!(v["train_on_inputs"], false);
    assert_eq!(v["dataset"]["type"], "alpaca");
    assert!(v["dataset"]["path"]
        .as_str()
        .expect("path")
        .ends_with("data.jsonl"));
    // A GGUF base is refused with the field named: axolotl loads Hugging Face models.
    let gguf_config = ws.home.path().join("gguf.toml");
    std::fs::write(
        &gguf_config,
        format!("[model]\nbase = {:?}\n", gguf_path().display().to_string()),
    )
    .expect("config");
    let refused = ws.run(&[
        "train",
        "--config",
        gguf_config.to_str().expect("utf-8"),
        "--export-axolotl",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("model.base: axolotl loads"));
}
