//! The Train pane driven headless: run folders in the trainer's format, written by the test,
//! followed by the pane; actions through the real keymap; frames compared with `insta`
//! snapshots at 80x24 and 120x40.

mod common;

use bioinstruct::train::config::TrainConfig;
use bioinstruct::train::run::{Metric, RunDir, RunState, Status};
use bioinstruct::tui::app::{FileWork, Job, Mode, Overlay, Tab};
use bioinstruct::tui::panes::train::{downsample, TrainPane};
use bioinstruct::tui::{Action, App, Effect};
use common::{press, render};
use crossterm::event::KeyCode;
use std::path::{Path, PathBuf};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

/// A runs folder under `target/`, relative, so that the path drawn is the same on every
/// machine; emptied first.
fn runs_root(name: &str) -> PathBuf {
    let root = Path::new("target/test-runs").join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("runs root");
    root
}

/// A run folder as the trainer writes it: `steps` optimizer steps of a smooth loss curve
/// (with an evaluation every 10), status `state` at `step` of `total`.
fn write_run(root: &Path, id: &str, state: RunState, pid: u32, steps: usize, total: usize) {
    let run = RunDir::create(root, id).expect("run");
    for step in 1..=steps {
        let x = step as f64;
        run.append_metric(&Metric::Step {
            step,
            epoch: x / 20.0,
            loss: 2.4 - 0.8 * (1.0 - (-x / 15.0).exp()) + 0.05 * (x * 1.7).sin(),
            lr: 2e-4 * (x / 10.0).min(1.0),
            grad_norm: 0.5 + 0.1 * (x * 0.9).cos(),
            tokens: 800,
            tokens_per_s: 250.0,
            elapsed_s: 3.2 * x,
            eta_s: 3.2 * (total - step) as f64,
            mem_bytes: 1_800_000_000,
        })
        .expect("metric");
        if step % 10 == 0 {
            run.append_metric(&Metric::Eval {
                step,
                epoch: x / 20.0,
                val_loss: 2.3 - 0.5 * (1.0 - (-x / 20.0).exp()),
            })
            .expect("eval");
        }
    }
    std::fs::write(
        run.path.join("train.log"),
        format!(
            "[1.000] LoRA r=8 alpha=16 on q_proj,v_proj: 460800 trainable parameters in 60 modules\n\
             [2.000] checkpoint at step 20\n[3.000] step {steps} of {total}\n"
        ),
    )
    .expect("log");
    run.write_status(&Status {
        state,
        pid,
        step: steps,
        total_steps: total,
        error: (state == RunState::Failed)
            .then(|| "out of memory while allocating 512 MB".to_string()),
        updated_unix_s: 0.0,
    })
    .expect("status");
}

fn app(size: (u16, u16), root: &Path) -> App {
    let file = common::bundled_seeds();
    let mut a =
        App::new(file, size).with_train(TrainPane::new(root.to_path_buf(), TrainConfig::default()));
    common::act(&mut a, Action::NextTab);
    assert_eq!(a.tab, Tab::Train);
    a
}

fn snapshot_each_size(name: &str, root: &Path, setup: impl Fn(&mut App)) {
    for size in SIZES {
        let mut a = app(size, root);
        setup(&mut a);
        insta::assert_snapshot!(format!("{name}_{}x{}", size.0, size.1), render(&a));
    }
}

/// A pid that is not a live process (the trainer of an interrupted or ended run).
const GONE: u32 = 0x3FFF_FFF0;

#[test]
fn snapshot_empty_runs_list() {
    let root = runs_root("empty");
    snapshot_each_size("train_empty", &root, |_| {});
}

#[test]
fn snapshot_running_finished_and_failed_runs() {
    let root = runs_root("three");
    // "Running": the test process stands in for a live trainer.
    write_run(
        &root,
        "run-1000000003",
        RunState::Running,
        std::process::id(),
        37,
        60,
    );
    write_run(&root, "run-1000000002", RunState::Finished, GONE, 54, 54);
    write_run(&root, "run-1000000001", RunState::Failed, GONE, 12, 54);
    snapshot_each_size("train_running", &root, |_| {});
    snapshot_each_size("train_finished", &root, |a| {
        press(a, &[KeyCode::Down]);
    });
    snapshot_each_size("train_failed", &root, |a| {
        press(a, &[KeyCode::End]);
    });
}

#[test]
fn snapshot_new_run_form_with_validation_errors() {
    let root = runs_root("form");
    snapshot_each_size("train_form_errors", &root, |a| {
        press(a, &[KeyCode::Char('n')]);
        assert_eq!(a.mode(), Mode::RunForm);
        // lora.r: clear "8", type "0"; optim.learning_rate: type a letter.
        press(a, &[KeyCode::Tab; 5]);
        press(a, &[KeyCode::Backspace, KeyCode::Char('0')]);
        press(a, &[KeyCode::Tab; 3]);
        press(a, &[KeyCode::Char('x')]);
        assert!(
            press(a, &[KeyCode::Enter]).is_empty(),
            "an invalid form starts nothing"
        );
    });
}

#[test]
fn the_pane_follows_a_growing_run_and_sees_it_end() {
    let root = runs_root("follow");
    let pid = std::process::id();
    write_run(&root, "run-1000000010", RunState::Running, pid, 5, 20);
    let mut a = app((120, 40), &root);
    assert_eq!(a.train.runs.len(), 1);
    assert_eq!(a.train.runs[0].losses().len(), 5);
    // The trainer appends (a torn last line is left for later) and finishes.
    let run = RunDir {
        path: root.join("run-1000000010"),
    };
    run.append_metric(&Metric::Eval {
        step: 5,
        epoch: 0.5,
        val_loss: 1.5,
    })
    .expect("append");
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(run.path.join("metrics.jsonl"))
        .and_then(|mut f| f.write_all(b"{\"step\":6,"))
        .expect("torn");
    common::act(&mut a, Action::Tick);
    assert_eq!(a.train.runs[0].val_losses(), vec![(5.0, 1.5)]);
    assert_eq!(a.train.runs[0].losses().len(), 5);
    // A run started elsewhere appears; the selection stays on the same run.
    write_run(&root, "run-1000000011", RunState::Finished, GONE, 3, 3);
    common::act(&mut a, Action::Tick);
    assert_eq!(a.train.runs.len(), 2);
    assert_eq!(
        a.train.selected().map(|r| r.id.as_str()),
        Some("run-1000000010")
    );
    // Stop and resume ask first and hand the job to the event loop.
    press(&mut a, &[KeyCode::Char('x')]);
    assert!(matches!(a.overlay, Some(Overlay::ConfirmStop { .. })));
    assert_eq!(
        press(&mut a, &[KeyCode::Char('y')]),
        vec![Effect::Run(Job::Stop(run.path.clone()))]
    );
    press(&mut a, &[KeyCode::Up, KeyCode::Char('r')]);
    assert!(a.overlay.is_none(), "a finished run is not resumed");
    assert!(a
        .message
        .as_ref()
        .is_some_and(|(m, _)| m.contains("has finished")));
}

#[test]
fn charts_downsample_long_runs_and_keep_the_shape() {
    let points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 100) as f64)).collect();
    let d = downsample(&points, 200);
    assert!(d.len() <= 200 && d.len() >= 190, "{}", d.len());
    assert!((d[0].1 - 24.5).abs() < 1e-9, "the mean of each bucket");
    assert_eq!(downsample(&points[..50], 200).len(), 50);
}

#[test]
fn a_rescan_is_an_effect_the_runtime_carries_out_one_at_a_time() {
    let root = runs_root("rescan-effect");
    let mut a = app((80, 24), &root);
    assert!(a.train.runs.is_empty());
    write_run(&root, "run-1000000007", RunState::Finished, GONE, 20, 20);
    let mut effects = a.update(Action::Tick);
    // The tick also looks at the seed file; this test is about the runs.
    effects.retain(|e| matches!(e, Effect::File(FileWork::ScanRuns(_))));
    assert_eq!(effects.len(), 1);
    // `update` read nothing: the run shows once the runtime's scan is back.
    assert!(a.train.runs.is_empty());
    // Another tick while the scan is out asks for one more after it, not a second at once.
    assert!(a.update(Action::Tick).is_empty());
    let scanned = effects
        .pop()
        .expect("scan")
        .perform_io()
        .expect("file work");
    let again = a.update(scanned);
    assert_eq!(a.train.runs.len(), 1);
    assert_eq!(
        a.train.runs[0].metrics.len(),
        22,
        "20 steps and 2 evaluations"
    );
    assert!(
        matches!(again.as_slice(), [Effect::File(FileWork::ScanRuns(_))]),
        "{again:?}"
    );
    // The second scan reads only what was appended: nothing, so nothing doubles.
    assert!(common::settle(&mut a, again).is_empty());
    assert_eq!(a.train.runs[0].metrics.len(), 22);
}
