//! The training loop on a tiny random Llama: run folder, metrics, checkpoints, stop, and
//! gradient accumulation.

mod common;

use bioinstruct::data::{Category, Instruction};
use bioinstruct::model::lora::{Lora, LoraConfig};
use bioinstruct::model::{LoadOptions, LoadedModel, Resolver};
use bioinstruct::train::config::{OptimSection, TrainConfig};
use bioinstruct::train::data::{build_examples, BuildOptions, Example, PromptFormat};
use bioinstruct::train::optim::ScheduleKind;
use bioinstruct::train::run::{Metric, RunDir, RunState};
use bioinstruct::train::trainer::{train, TrainSettings};
use common::tiny;
use std::path::Path;

fn load(dir: &Path) -> LoadedModel {
    let resolver = Resolver {
        hf_cache: dir.join("hub"),
        models_dir: dir.join("models"),
        offline: true,
    };
    LoadedModel::load(
        &resolver,
        dir.to_str().expect("utf-8"),
        &LoadOptions::default(),
    )
    .expect("loads")
}

fn examples(m: &LoadedModel) -> Vec<Example> {
    let pairs = [
        ("Name a statin.", "Atorvastatin."),
        ("Name a biguanide.", "Metformin."),
        ("Name an ACE inhibitor.", "Lisinopril."),
        ("Name a loop diuretic.", "Furosemide."),
        ("Name a beta blocker.", "Metoprolol."),
        ("Name an SGLT2 drug.", "Empagliflozin."),
        ("Name an antiplatelet.", "Clopidogrel."),
        ("Name an anticoagulant.", "Apixaban."),
    ];
    let records: Vec<Instruction> = pairs
        .iter()
        .enumerate()
        .map(|(i, (q, a))| Instruction {
            id: format!("r{i}"),
            category: Category::Qa,
            task: "t".into(),
            instruction: (*q).into(),
            input: String::new(),
            output: (*a).into(),
            extra: Default::default(),
        })
        .collect();
    let template = m.template(Some("chatml")).expect("template");
    let end = m.tokenizer.token_to_id("<|im_end|>").expect("end");
    let options = BuildOptions {
        format: PromptFormat::Chat,
        template: Some(&template),
        end_token: end,
        max_seq_len: tiny::CONTEXT,
        categories: &[],
    };
    build_examples(&records, &m.tokenizer, &options)
        .expect("examples")
        .0
}

fn settings(epochs: usize, mb: usize, accum: usize) -> TrainSettings {
    let mut c = TrainConfig::default();
    c.model.base = "tiny".into();
    c.lora = LoraConfig {
        lora_dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        ..LoraConfig::default()
    };
    c.optim = OptimSection {
        learning_rate: 1e-2,
        schedule: ScheduleKind::Cosine,
        warmup_steps: 2,
        epochs,
        micro_batch_size: mb,
        gradient_accumulation_steps: accum,
        max_grad_norm: 1.0,
        weight_decay: 0.0,
    };
    c.run.eval_every = 2;
    c.run.checkpoint_every = 4;
    c.run.seed = 7;
    TrainSettings::from_config(&c, 0)
}

#[test]
fn a_run_records_metrics_checkpoints_and_a_final_adapter() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let mut m = load(dir.path());
    let data = examples(&m);
    let run = RunDir::create(&dir.path().join("runs"), "run-1").expect("run");
    // Validation on the training examples: this checks the loop lowers the loss it optimizes.
    let outcome = train(
        &mut m,
        &data,
        &data,
        &settings(6, 2, 2),
        &run,
        &|_: &Metric| false,
        None,
    )
    .expect("trains");
    assert_eq!(outcome.state, RunState::Finished);
    assert_eq!(outcome.steps, 12); // 8 examples / (2 x 2) per step x 6 epochs
    let (first, last) = outcome.val_loss.expect("validation");
    assert!(last < 0.7 * first, "validation loss {first} -> {last}");

    let status = run.read_status().expect("status");
    assert_eq!(
        (status.state, status.step, status.total_steps),
        (RunState::Finished, 12, 12)
    );
    let metrics = run.read_metrics().expect("metrics");
    let steps: Vec<usize> = metrics
        .iter()
        .filter_map(|m| match m {
            Metric::Step { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    let evals = metrics
        .iter()
        .filter(|m| matches!(m, Metric::Eval { .. }))
        .count();
    assert_eq!(
        evals,
        1 + 5 + 1,
        "at the start, every 2 steps before the end, and at the end"
    );
    assert!(metrics.iter().all(|m| match m {
        Metric::Step {
            loss,
            lr,
            tokens_per_s,
            ..
        } => loss.is_finite() && *lr >= 0.0 && *tokens_per_s > 0.0,
        Metric::Eval { val_loss, .. } => val_loss.is_finite(),
    }));
    for step in [4, 8] {
        let c = run.checkpoint_path(step);
        for f in [
            "adapter_model.safetensors",
            "adapter_config.json",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(c.join(f).is_file(), "{}", c.join(f).display());
        }
    }
    let log = std::fs::read_to_string(run.path.join("train.log")).expect("log");
    assert!(
        log.contains("trainable parameters") && log.contains("finished"),
        "{log}"
    );

    // The final adapter loads onto a fresh copy of the base model and changes its output.
    let mut fresh = load(dir.path());
    let x = candle_core::Tensor::new(data[0].input_ids.as_slice(), &candle_core::Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("tensor");
    let base = fresh.model.forward_all(&x, None).expect("forward");
    Lora::load_peft(&mut fresh.model, &run.path.join("final")).expect("loads");
    let tuned = fresh.model.forward_all(&x, None).expect("forward");
    let d = (base - tuned)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert!(d > 1e-2);
}

#[test]
fn a_stop_request_checkpoints_and_marks_the_run_stopped() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let mut m = load(dir.path());
    let data = examples(&m);
    let run = RunDir::create(&dir.path().join("runs"), "run-2").expect("run");
    let outcome = train(
        &mut m,
        &data,
        &[],
        &settings(6, 2, 2),
        &run,
        &|m: &Metric| matches!(m, Metric::Step { step: 3, .. }),
        None,
    )
    .expect("trains");
    assert_eq!((outcome.state, outcome.steps), (RunState::Stopped, 3));
    assert_eq!(run.read_status().expect("status").state, RunState::Stopped);
    assert_eq!(run.latest_checkpoint().map(|(s, _)| s), Some(3));
    assert!(!run.path.join("final").exists());
    let mut fresh = load(dir.path());
    Lora::load_peft(&mut fresh.model, &run.checkpoint_path(3)).expect("the checkpoint loads");
}

#[test]
fn accumulating_micro_batches_equals_one_larger_batch() {
    // One optimizer step over the same 4 examples: one micro-batch of 4, or two of 2 with
    // accumulation. Token-weighted accumulation makes them the same loss, gradient and update
    // (padding is masked); f32 summation order differs, hence the tolerances.
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let adapter = |mb: usize, accum: usize| {
        let mut m = load(dir.path());
        let data: Vec<Example> = examples(&m).into_iter().take(4).collect();
        let run =
            RunDir::create(&dir.path().join("runs"), &format!("acc-{mb}-{accum}")).expect("run");
        let mut s = settings(1, mb, accum);
        s.config.optim.warmup_steps = 0;
        train(&mut m, &data, &[], &s, &run, &|_: &Metric| false, None).expect("trains");
        let step = run
            .read_metrics()
            .expect("metrics")
            .into_iter()
            .find_map(|m| match m {
                Metric::Step {
                    loss, grad_norm, ..
                } => Some((loss, grad_norm)),
                Metric::Eval { .. } => None,
            });
        let weights = candle_core::safetensors::load(
            run.path.join("final/adapter_model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .expect("adapter");
        (step.expect("one step"), weights)
    };
    let ((loss_one, norm_one), one) = adapter(4, 1);
    let ((loss_two, norm_two), two) = adapter(2, 2);
    // Adam's first step is nearly scale-free, so the weights alone would not catch a wrongly
    // scaled accumulation: the loss and the gradient norm (before clipping) do.
    assert!(
        (loss_one - loss_two).abs() < 1e-5 * loss_one,
        "loss {loss_one} vs {loss_two}"
    );
    assert!(
        (norm_one - norm_two).abs() < 1e-4 * norm_one,
        "grad norm {norm_one} vs {norm_two}"
    );
    for (name, a) in &one {
        let b = &two[name];
        let d = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert!(d < 1e-5, "{name}: {d}");
    }
}

fn write_data(path: &Path) {
    let lines: Vec<String> = [
        ("Name a statin.", "Atorvastatin."),
        ("Name a biguanide.", "Metformin."),
        ("Name an ACE inhibitor.", "Lisinopril."),
        ("Name a loop diuretic.", "Furosemide."),
        ("Name a beta blocker.", "Metoprolol."),
        ("Name an antiplatelet.", "Clopidogrel."),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, a))| serde_json::json!({"id": format!("t-{i}"), "category": "qa", "task": "drug_naming", "instruction": q, "input": "", "output": a}).to_string())
    .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("data");
}

#[test]
fn the_train_command_runs_and_the_runs_commands_report_it() {
    let ws = common::Workspace::new();
    let model = ws.home.path().join("tiny");
    tiny::write(&model);
    let data = ws.home.path().join("drugs.jsonl");
    write_data(&data);
    let config = ws.home.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [{:?}]\nformat = \"chat\"\nmax_seq_len = 64\nvalidation_fraction = 0.2\n\
             [lora]\nlora_dropout = 0.0\n[optim]\nlearning_rate = 1e-2\nepochs = 2\nmicro_batch_size = 2\ngradient_accumulation_steps = 1\nwarmup_steps = 1\n\
             [run]\neval_every = 2\ncheckpoint_every = 2\n",
            model.display().to_string(),
            data.display().to_string()
        ),
    )
    .expect("config");
    let run = |args: &[&str]| ws.offline(args);
    let out = run(&["train", "--config", config.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("5 training and 1 validation examples"),
        "{stdout}"
    );
    assert!(stdout.contains("trainable parameters"), "{stdout}");
    assert!(stdout.contains("finished 6 steps"), "{stdout}");

    let list = String::from_utf8_lossy(&run(&["runs", "list"]).stdout).into_owned();
    let id = list.split_whitespace().next().expect("a run").to_string();
    assert!(list.contains("finished") && list.contains("6/6"), "{list}");
    let show = String::from_utf8_lossy(&run(&["runs", "show", &id]).stdout).into_owned();
    assert!(
        show.contains("state      finished") && show.contains("adapter"),
        "{show}"
    );
    let tail =
        String::from_utf8_lossy(&run(&["runs", "tail", &id, "--follow"]).stdout).into_owned();
    assert_eq!(
        tail.lines().filter(|l| l.contains("\"loss\"")).count(),
        6,
        "{tail}"
    );
    let saved = ws
        .home
        .path()
        .join("data/runs")
        .join(&id)
        .join("config.toml");
    assert!(std::fs::read_to_string(saved)
        .expect("resolved config")
        .contains("learning_rate = 0.01"));
}

#[test]
fn bad_training_setups_fail_before_any_compute_with_a_clear_message() {
    let ws = common::Workspace::new();
    let model = ws.home.path().join("tiny");
    tiny::write(&model);
    let data = ws.home.path().join("drugs.jsonl");
    write_data(&data);
    let blocker = ws.home.path().join("a-file");
    std::fs::write(&blocker, "").expect("file");
    let cases = [
        ("[lora]\nr = 0\n", "lora.r: must be at least 1"),
        (
            "[lora]\ntarget_modules = [\"qkv_proj\"]\n",
            "unknown module \"qkv_proj\"",
        ),
        (
            "[data]\nfiles = [\"/no/such/data.jsonl\"]\n",
            "data.files: \"/no/such/data.jsonl\" not found",
        ),
        ("[data]\nmax_seq_len = 8\n", "no usable example"),
        (
            &format!(
                "[run]\noutput_dir = {:?}\n",
                blocker.join("runs").display().to_string()
            ),
            "is not writable",
        ),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let mut text = format!("[model]\nbase = {:?}\n", model.display().to_string());
        if !extra.contains("[data]") {
            text.push_str(&format!(
                "[data]\nfiles = [{:?}]\n",
                data.display().to_string()
            ));
        }
        text.push_str(extra);
        let config = ws.home.path().join(format!("bad-{i}.toml"));
        std::fs::write(&config, text).expect("config");
        let out = ws
            .cmd()
            .env("HF_HUB_OFFLINE", "1")
            .args(["train", "--config", config.to_str().expect("utf-8")])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().last().unwrap_or_default().contains(needle),
            "case {i}: {err}"
        );
    }
    assert!(
        !ws.home.path().join("data/runs").exists()
            || std::fs::read_dir(ws.home.path().join("data/runs"))
                .expect("ls")
                .count()
                == 0,
        "no run folder is left behind"
    );
}

/// A config for the tiny model on `write_data`'s six records, with `extra` TOML appended
/// (sections `[lora]`, `[optim]` and `[run]` are already open, in that order, at the end).
fn write_config(ws: &common::Workspace, name: &str, optim: &str, run: &str) -> std::path::PathBuf {
    let model = ws.home.path().join("tiny");
    if !model.exists() {
        tiny::write(&model);
    }
    let data = ws.home.path().join("drugs.jsonl");
    if !data.exists() {
        write_data(&data);
    }
    let config = ws.home.path().join(name);
    std::fs::write(
        &config,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [{:?}]\nformat = \"chat\"\nmax_seq_len = 64\nvalidation_fraction = 0.2\n\
             [lora]\nlora_dropout = 0.1\ntarget_modules = [\"all-linear\"]\n\
             [optim]\nlearning_rate = 1e-2\nmicro_batch_size = 2\ngradient_accumulation_steps = 1\nwarmup_steps = 3\n{optim}\n\
             [run]\n{run}\n",
            model.display().to_string(),
            data.display().to_string()
        ),
    )
    .expect("config");
    config
}

/// `(step, loss)` of every optimizer step in a run's metrics.
fn step_losses(run: &RunDir) -> Vec<(usize, f64)> {
    run.read_metrics()
        .expect("metrics")
        .iter()
        .filter_map(|m| match m {
            Metric::Step { step, loss, .. } => Some((*step, *loss)),
            Metric::Eval { .. } => None,
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_run_killed_with_sigkill_and_resumed_matches_the_uninterrupted_run() {
    // 5 training examples, micro-batches of 2 → 3 steps an epoch; 80 epochs
    // = 240 steps, a checkpoint every 5. Dropout is on, so this also checks that the masks
    // are replayed. Same binary, same thread count: the losses should agree to the last bit;
    // the tolerance (1e-6 absolute) only allows for that not holding on some platform.
    let ws = common::Workspace::new();
    let config = write_config(
        &ws,
        "long.toml",
        "epochs = 80",
        "eval_every = 50\ncheckpoint_every = 5\nseed = 11",
    );
    let config = config.to_str().expect("utf-8");
    let quiet = |args: &[&str]| ws.offline(args);

    let reference = quiet(&["train", "--config", config]);
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let reference = RunDir {
        path: ws
            .home
            .path()
            .join("data/runs")
            .join(common::run_id(&String::from_utf8_lossy(&reference.stdout))),
    };
    std::thread::sleep(std::time::Duration::from_millis(1100)); // run ids are Unix seconds

    let detached = quiet(&["train", "--config", config, "--detach"]);
    assert!(
        detached.status.success(),
        "{}",
        String::from_utf8_lossy(&detached.stderr)
    );
    let id = common::run_id(&String::from_utf8_lossy(&detached.stdout));
    let run = RunDir {
        path: ws.home.path().join("data/runs").join(&id),
    };
    wait_for("the second checkpoint", || {
        run.latest_checkpoint().is_some_and(|(s, _)| s >= 10)
    });
    let status = run.read_status().expect("status");
    assert_eq!(
        status.state,
        RunState::Running,
        "the run ended before it could be killed"
    );
    let killed = std::process::Command::new("kill")
        .args(["-9", &status.pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for("the trainer to die", || {
        !bioinstruct::commands::train::process_alive(status.pid)
    });
    let show = String::from_utf8_lossy(&quiet(&["runs", "show", &id]).stdout).into_owned();
    assert!(show.contains("state      interrupted"), "{show}");
    let (at, checkpoint) = run.latest_checkpoint().expect("a checkpoint");
    assert!(!checkpoint.to_string_lossy().ends_with(".tmp"));

    let resumed = quiet(&["runs", "resume", &id]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        stdout.contains("resuming") && stdout.contains("finished 240 steps"),
        "{stdout}"
    );
    assert_eq!(run.read_status().expect("status").state, RunState::Finished);
    let (want, got) = (step_losses(&reference), step_losses(&run));
    assert_eq!(got.len(), 240, "one line a step, none twice");
    assert_eq!(want.len(), 240);
    for ((s1, a), (s2, b)) in want.iter().zip(&got) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= 1e-6,
            "step {s1} (checkpoint at {at}): {a} vs {b}"
        );
    }
    let log = std::fs::read_to_string(run.path.join("train.log")).expect("log");
    assert!(log.contains("resumed from"), "{log}");
    // Local time, not Unix seconds: `[2026-12-01 18:10:42] ...`.
    for line in log.lines().filter(|l| l.starts_with('[')) {
        let stamp = &line[1..line.find(']').expect("]")];
        assert!(
            stamp.len() == 19 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b' ',
            "{line}"
        );
    }
}

#[test]
fn a_detached_run_stops_on_request_with_a_loadable_checkpoint_and_resumes() {
    let ws = common::Workspace::new();
    let config = write_config(
        &ws,
        "stop.toml",
        "epochs = 400",
        "eval_every = 0\ncheckpoint_every = 0",
    );
    let config = config.to_str().expect("utf-8");
    let quiet = |args: &[&str]| ws.offline(args);
    let out = quiet(&["train", "--config", config, "--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("training in the background"), "{stdout}");
    let id = common::run_id(&stdout);
    // A run id a person can read and sort: local date, time to the minute, what it trains on.
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = id.splitn(3, '-').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() == 8
            && digits(parts[0])
            && parts[1].len() == 4
            && digits(parts[1])
            && !parts[2].is_empty(),
        "{id}"
    );
    let run = RunDir {
        path: ws.home.path().join("data/runs").join(&id),
    };
    wait_for("a few steps", || {
        run.read_status().is_ok_and(|s| s.step >= 3)
    });
    let stop = quiet(&["runs", "stop", &id, "--wait"]);
    let said = String::from_utf8_lossy(&stop.stdout);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(said.contains("run is stopped"), "{said}");
    let status = run.read_status().expect("status");
    assert_eq!(status.state, RunState::Stopped);
    let (step, checkpoint) = run.latest_checkpoint().expect("a checkpoint");
    assert_eq!(step, status.step);
    let mut fresh = load(&ws.home.path().join("tiny"));
    Lora::load_peft(&mut fresh.model, &checkpoint).expect("the checkpoint loads");
    let again = quiet(&["runs", "stop", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not running"));

    // Resumed in the background, it goes on from the checkpoint; stop it again.
    let resumed = quiet(&["runs", "resume", &id, "--detach"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    wait_for("steps after the resume", || {
        run.read_status()
            .is_ok_and(|s| s.state == RunState::Running && s.step > step)
    });
    let stop = quiet(&["runs", "stop", &id, "--wait"]);
    assert!(stop.status.success());
    let losses = step_losses(&run);
    let steps: Vec<usize> = losses.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        (1..=steps.len()).collect::<Vec<_>>(),
        "no step lost or repeated"
    );
}
