//! The real binary in a real terminal: tmux runs it, `send-keys` types, `capture-pane` reads
//! the screen. Needs tmux (scripts/test.sh installs it).

mod common;

use common::tmux::Tmux;
use common::{Workspace, BIN};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The command that opens the workbench on `ws`, with the Hugging Face Hub off.
fn offline_workbench(ws: &Workspace) -> String {
    format!(
        "env BIOINSTRUCT_HOME='{}' HF_HUB_OFFLINE=1 '{BIN}'",
        ws.home.path().display()
    )
}

#[test]
fn edit_a_seed_save_and_quit_in_a_real_terminal() {
    let ws = Workspace::new();
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' '{BIN}'",
        ws.home.path().display()
    );
    let tmux = Tmux::start("edit", &command, 80, 24);
    let screen = tmux.wait_for("seed-019");
    assert!(screen.contains("qa 24  ie 24  gen 24  other 8"), "{screen}");

    tmux.keys(&["j", "e"]);
    tmux.wait_for("Ctrl-s apply");
    tmux.keys(&["Tab", "Tab"]); // instruction → input → output
    tmux.text("Reviewed by a clinician. ");
    tmux.keys(&["C-s"]);
    tmux.wait_for("Applied changes to seed-002");
    tmux.wait_for("● unsaved");

    // Quitting with unsaved changes asks; cancel, then save, then quit.
    tmux.keys(&["q"]);
    tmux.wait_for("has unsaved changes");
    tmux.keys(&["Escape"]);
    tmux.keys(&["s"]);
    tmux.wait_for("Saved 80 records");
    tmux.keys(&["q"]);
    tmux.wait_exit();

    let saved = bioinstruct::data::InstructionFile::open(&ws.seeds()).expect("workspace file");
    let r = saved.get("seed-002").expect("seed-002");
    assert!(
        r.output
            .starts_with("Reviewed by a clinician. C. Graves disease."),
        "{}",
        r.output
    );
    assert_eq!(saved.records.len(), 80);
    // The bundled first version is the backup.
    let bak =
        bioinstruct::data::read_jsonl(&bioinstruct::data::backup_path(&ws.seeds())).expect("bak");
    assert!(bak.records[1].output.starts_with("C. Graves disease."));
}

#[test]
fn the_workbench_opens_a_file_with_bad_lines_and_shows_them() {
    let ws = Workspace::new();
    let file = common::fixture("mixed_50_good_3_bad.jsonl");
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' '{BIN}' --seeds '{}'",
        ws.home.path().display(),
        file.display()
    );
    let tmux = Tmux::start("errors", &command, 120, 40);
    let screen = tmux.wait_for("Invalid lines");
    assert!(screen.contains(":45: output: is missing"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("3 invalid (!)");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// The step counter of the first run in the Train pane's table (`12/10000`).
fn first_run_step(screen: &str) -> Option<usize> {
    screen
        .lines()
        .find(|l| {
            // A run id: `20261201-1810-<slug>`.
            let has_id = l.split(|c: char| c.is_whitespace() || c == '│').any(|w| {
                w.len() > 14
                    && w.as_bytes()[8] == b'-'
                    && w[..8].chars().all(|c| c.is_ascii_digit())
            });
            has_id && (l.contains("running") || l.contains("queued"))
        })
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .and_then(|w| w.split('/').next())
                .and_then(|n| n.parse().ok())
        })
}

/// The chart's plotted cells (braille dots and markers), in screen order.
fn chart_dots(screen: &str) -> String {
    screen
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28FF}').contains(c) || *c == '•')
        .collect()
}

fn wait_for_step_above(tmux: &Tmux, above: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = tmux.screen();
        if let Some(step) = first_run_step(&screen).filter(|&s| s > above) {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "the step counter never passed {above}; screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A workspace with the tiny model and six training records, and the workbench's command.
fn train_workspace() -> (Workspace, PathBuf, PathBuf, String) {
    let ws = Workspace::new();
    let model = ws.home.path().join("tiny");
    common::tiny::write(&model);
    let data = ws.home.path().join("drugs.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"id":"t-{i}","category":"qa","task":"drug_naming","instruction":"Name drug {i}.","input":"","output":"Drug {i}."}}"#
            )
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").expect("data");
    let command = offline_workbench(&ws);
    (ws, model, data, command)
}

/// Fills the Train pane's new-run form (the tiny model, `data`, chat format, `epochs`) and
/// starts the run.
fn start_run_from_the_form(tmux: &Tmux, model: &Path, data: &Path, epochs: &str) {
    tmux.wait_for("seed-019");
    tmux.keys(&["Tab"]);
    tmux.wait_for("No runs in");
    tmux.keys(&["n"]);
    tmux.wait_for("New run");
    // model.base, data.files, data.categories, data.format: replace the defaults.
    let clear = |n: usize| tmux.keys(&vec!["BSpace"; n]);
    clear("HuggingFaceTB/SmolLM2-135M-Instruct".len());
    tmux.text(&model.display().to_string());
    tmux.keys(&["Tab"]);
    clear("seeds".len());
    tmux.text(&data.display().to_string());
    tmux.keys(&["Tab", "Tab"]);
    clear("alpaca".len());
    tmux.text("chat");
    tmux.keys(&["Tab", "Tab", "Tab", "Tab", "Tab"]); // max_seq_len r alpha targets lr
    tmux.keys(&["Tab"]); // epochs
    clear(1);
    tmux.text(epochs);
    tmux.keys(&["Enter"]);
}

/// A trainer the workbench started and that finished is reaped while the workbench stays
/// open: no `<defunct>` process is left behind.
#[test]
fn a_run_that_finishes_under_the_workbench_leaves_no_zombie() {
    let (ws, model, data, command) = train_workspace();
    let tmux = Tmux::start("reap", &command, 120, 40);
    start_run_from_the_form(&tmux, &model, &data, "2");
    tmux.wait_for("training in the background");
    let runs = ws.home.path().join("data/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = std::fs::read_dir(&runs)
            .expect("runs")
            .flatten()
            .map(|e| bioinstruct::train::run::RunDir { path: e.path() })
            .find_map(|r| r.read_status().ok());
        if let Some(s) = status.filter(|s| s.state == bioinstruct::train::run::RunState::Finished) {
            break s;
        }
        assert!(Instant::now() < deadline, "the run did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The workbench reaps once a second: the process disappears instead of staying `Z`.
    let stat = PathBuf::from(format!("/proc/{}/stat", status.pid));
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(text) = std::fs::read_to_string(&stat) {
        let state = text
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        assert!(
            Instant::now() < deadline,
            "pid {} is still there, state {state:?} (Z: a zombie)",
            status.pid
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.wait_for("finished");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

#[test]
fn a_run_started_in_the_train_pane_outlives_the_workbench_and_stops_from_it() {
    let (ws, model, data, command) = train_workspace();
    let tmux = Tmux::start("train", &command, 120, 40);
    start_run_from_the_form(&tmux, &model, &data, "5000");
    tmux.wait_for("training in the background");
    let first = wait_for_step_above(&tmux, 0);
    let chart_then = chart_dots(&tmux.screen());
    let later = wait_for_step_above(&tmux, first + 50);
    assert!(later > first);
    let screen = tmux.screen();
    assert!(screen.contains("┌ loss"), "the chart is drawn:\n{screen}");
    assert_ne!(
        chart_dots(&screen),
        chart_then,
        "the chart moves on:\n{screen}"
    );

    // Quit the workbench: the trainer goes on.
    tmux.keys(&["q"]);
    tmux.wait_exit();
    let runs = ws.home.path().join("data/runs");
    let run = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .map(|e| bioinstruct::train::run::RunDir { path: e.path() })
        .find(|r| r.read_status().is_ok())
        .expect("a run folder");
    let status = run.read_status().expect("status");
    assert!(
        bioinstruct::commands::train::process_alive(status.pid),
        "the trainer outlives the workbench"
    );

    // Reopen: the same run, still progressing; stop it from the pane.
    let tmux = Tmux::start("train-again", &command, 120, 40);
    tmux.wait_for("seed-019");
    tmux.keys(&["Tab"]);
    let seen = wait_for_step_above(&tmux, status.step);
    wait_for_step_above(&tmux, seen);
    tmux.keys(&["x"]);
    tmux.wait_for("Stop 2");
    tmux.keys(&["y"]);
    tmux.wait_for("stopped");
    let deadline = Instant::now() + Duration::from_secs(15);
    while bioinstruct::commands::train::process_alive(status.pid) {
        assert!(Instant::now() < deadline, "the trainer did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        run.read_status().expect("status").state,
        bioinstruct::train::run::RunState::Stopped
    );
    assert!(
        run.latest_checkpoint().is_some(),
        "stopping wrote a checkpoint"
    );
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// The open workbench watches its files: a seed added from another shell shows at once.
#[test]
fn a_seed_added_from_another_shell_shows_in_the_open_workbench() {
    let ws = Workspace::new();
    let command = offline_workbench(&ws);
    let tmux = Tmux::start("watch", &command, 120, 40);
    tmux.wait_for("seed-019");
    ws.add_seed("watched");
    tmux.wait_for("81 records now");
    tmux.keys(&["G"]);
    tmux.wait_for("seed-081");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// An evaluation started in the Eval pane outlives the workbench: reopened, the pane shows it
/// running, then finished with its table.
#[test]
fn an_evaluation_started_in_the_eval_pane_outlives_the_workbench() {
    let ws = Workspace::new();
    let model = ws.home.path().join("tiny");
    common::tiny::write(&model);
    let mut config = common::tiny::config_json();
    config["max_position_embeddings"] = serde_json::json!(2048);
    std::fs::write(model.join("config.json"), config.to_string()).expect("config");
    let settings = ws.home.path().join("config/config.toml");
    std::fs::create_dir_all(settings.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &settings,
        format!("[model]\nbase = {:?}\n", model.display().to_string()),
    )
    .expect("settings");
    let command = offline_workbench(&ws);
    let tmux = Tmux::start("eval", &command, 120, 40);
    tmux.wait_for("seed-019");
    tmux.keys(&["Tab", "Tab", "Tab"]);
    tmux.wait_for("No evaluation yet");
    tmux.keys(&["n"]);
    tmux.wait_for("New evaluation");
    tmux.keys(&vec!["BSpace"; "pubmedqa, ncbi_disease, mts_dialog".len()]);
    tmux.text("ncbi_disease");
    tmux.keys(&["Tab"]);
    let data = common::benchmark("ncbi-disease/devel.tsv");
    tmux.text(&format!("ncbi_disease={}", data.display()));
    tmux.keys(&["Tab", "Tab", "BSpace", "BSpace"]);
    tmux.text("400");
    tmux.keys(&["Enter"]);
    tmux.wait_for("it goes on after you quit");
    tmux.wait_for("running");
    tmux.keys(&["q"]);
    tmux.wait_exit();

    let evals = ws.home.path().join("data/evals");
    let job = bioinstruct::eval::job::list(&evals)
        .into_iter()
        .next()
        .expect("an evaluation folder");
    let status = job.read_status().expect("status");
    assert!(
        bioinstruct::commands::train::process_alive(status.pid) && status.done < 400,
        "the evaluation outlives the workbench: {status:?}"
    );

    let tmux = Tmux::start("eval-again", &command, 120, 40);
    tmux.wait_for("seed-019");
    tmux.keys(&["Tab", "Tab", "Tab"]);
    let screen = tmux.wait_for(&job.id());
    assert!(
        screen.contains("running") || screen.contains("finished"),
        "{screen}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while job.read_status().expect("status").state != bioinstruct::train::run::RunState::Finished {
        assert!(Instant::now() < deadline, "the evaluation did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("ncbi_disease   f1");
    assert!(screen.contains("finished"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}
