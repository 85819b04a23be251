//! The workbench's one runtime: a tokio event loop that reads the terminal through
//! crossterm's `EventStream`, applies [`Action`]s with [`App::update`], carries out the
//! [`Effect`]s it returns, and draws.
//!
//! Every background job is a tokio task (or a `spawn_blocking` call for work that blocks:
//! loading a model, starting a run, joining a generation's workers) that reports back by
//! sending `Action`s on one unbounded channel; only CPU workers (a chat column's forward
//! passes, a generation's requests, the trainer, which is its own process) are threads.
//! Redraws are coalesced: the screen is drawn only after something changed, at most once
//! per [`MIN_FRAME`], so a fast token stream costs one frame per interval, not one per token
//! (yazi's render throttle; television drops all but the last render of a batch).

use super::chat_engine::ChatEngine;
use super::effect::{Effect, Job};
use super::panes::generated::GenRequest;
use super::{keymap, ui, Action, App};
use crate::config::Settings;
use anyhow::Result;
use crossterm::event::EventStream;
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

/// How often clocks on screen move and the panes reread their files in case a file event
/// was missed (network file systems send none).
pub const TICK: Duration = Duration::from_secs(1);

/// File events closer together than this become one [`Action::FilesChanged`].
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The shortest time between two frames (about 60 a second).
pub const MIN_FRAME: Duration = Duration::from_millis(16);

/// How often a generation run's counters are sent to the pane.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How often trainers started from the workbench are reaped once they exit.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Runs the workbench until the app quits.
///
/// # Errors
/// The terminal fails (drawing, reading events, handing it to the editor and back).
pub async fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    settings: &Settings,
    mouse: bool,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Action>();
    // Kept alive for the loop's lifetime: dropping it stops the events.
    let _watcher = watch(watched_folders(settings, app), tx.clone());
    let mut chat = ChatEngine::new(settings, tx.clone());
    let mut generation: Option<oneshot::Sender<()>> = None;
    // `None` while the terminal belongs to the editor.
    let mut events = Some(EventStream::new());
    let mut tick = interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut reap = interval(REAP_EVERY);
    reap.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut last_frame = Instant::now() - MIN_FRAME;
    loop {
        if app.should_quit {
            return Ok(());
        }
        if dirty && last_frame.elapsed() >= MIN_FRAME {
            let mut drawn = None;
            terminal.draw(|frame| drawn = Some(ui::draw(frame, app)))?;
            // A new layout (a resize, another view) can move the selection off screen:
            // the app takes it back and the next frame shows the selection again.
            last_frame = Instant::now();
            dirty = false;
            if let Some(layout) = drawn.filter(|l| *l != app.layout()) {
                app.update(Action::Drawn(Box::new(layout)));
                dirty = true;
            }
        }
        let next_frame = last_frame + MIN_FRAME;
        let effects = tokio::select! {
            event = next_event(&mut events) => match event {
                Some(Ok(event)) => {
                    dirty = true;
                    keymap::map_event(app, &event).map(|a| app.update(a)).unwrap_or_default()
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            Some(action) = rx.recv() => {
                dirty = true;
                app.update(action)
            }
            _ = tick.tick() => {
                dirty = true;
                app.update(Action::Tick)
            }
            _ = reap.tick() => {
                crate::commands::train::reap_children();
                Vec::new()
            }
            // Wakes up to draw what changed since the last frame.
            _ = sleep_until(next_frame), if dirty => Vec::new(),
        };
        for effect in effects {
            match effect {
                Effect::EditSeed { index } => {
                    let record = app.seeds.file.records.get(index).cloned();
                    let result =
                        hand_to_editor(terminal, &mut events, mouse, settings, record, "record")
                            .await?;
                    let _ = tx.send(Action::ExternalEdited { index, result });
                    dirty = true;
                }
                Effect::EditGenerated { kept, index } => {
                    let list = if kept {
                        &app.generated.kept
                    } else {
                        &app.generated.rejected
                    };
                    let record = list.get(index).cloned();
                    let result =
                        hand_to_editor(terminal, &mut events, mouse, settings, record, "task")
                            .await?;
                    let _ = tx.send(Action::GeneratedEdited {
                        kept,
                        index,
                        result,
                    });
                    dirty = true;
                }
                // File work on the blocking pool; the outcome comes back as an action.
                Effect::File(work) => {
                    let tx = tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(work.run());
                    });
                }
                Effect::Run(job) => start_job(job, settings, &tx),
                Effect::Chat(request) => chat.handle(request),
                Effect::Generate(GenRequest::Start { teacher, target }) => {
                    let (stop, stopped) = oneshot::channel();
                    generation = Some(stop);
                    tokio::spawn(generate(
                        settings.clone(),
                        teacher,
                        target,
                        tx.clone(),
                        stopped,
                    ));
                }
                Effect::Generate(GenRequest::Stop) => {
                    if let Some(stop) = generation.take() {
                        let _ = stop.send(());
                    }
                }
            }
        }
    }
}

/// The folders whose changes the panes show: the data folder (seeds, runs, generated tasks
/// by default), and the runs, generated and seed folders where they are configured
/// elsewhere.
fn watched_folders(settings: &Settings, app: &App) -> Vec<std::path::PathBuf> {
    let mut folders: Vec<std::path::PathBuf> = vec![settings.workspace.data_dir.clone()];
    for extra in [
        Some(app.train.root.clone()),
        app.generated.files.kept.parent().map(|p| p.to_path_buf()),
        app.seeds.file.path.parent().map(|p| p.to_path_buf()),
    ]
    .into_iter()
    .flatten()
    {
        if !folders.iter().any(|f| extra.starts_with(f)) {
            folders.push(extra);
        }
    }
    folders
}

/// Watches `folders` (recursively, through `notify`: inotify on Linux) and sends the changed
/// paths as [`Action::FilesChanged`], debounced by [`DEBOUNCE`]. A folder that does not exist
/// or cannot be watched is left to the slow poll ([`TICK`]); `None` when no watcher could be
/// made at all.
fn watch(
    folders: Vec<std::path::PathBuf>,
    tx: UnboundedSender<Action>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<std::path::PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = raw_tx.send(path);
            }
        }
    })
    .ok()?;
    for folder in &folders {
        let _ = std::fs::create_dir_all(folder);
        let _ = watcher.watch(folder, notify::RecursiveMode::Recursive);
    }
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut paths = vec![first];
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    Some(path) = raw_rx.recv() => paths.push(path),
                    _ = &mut quiet => break,
                }
            }
            paths.sort();
            paths.dedup();
            if tx.send(Action::FilesChanged(paths)).is_err() {
                return;
            }
        }
    });
    Some(watcher)
}

/// The next terminal event; never, while there is no reader.
async fn next_event(
    events: &mut Option<EventStream>,
) -> Option<std::io::Result<crossterm::event::Event>> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Hands the terminal to `$EDITOR` on `record` (JSON), then takes it back. The event reader
/// is dropped meanwhile (which stops its thread), so no key meant for the editor reaches the
/// workbench. The inner result is the edited record, or why there is none (`what` names it
/// when it no longer exists: "record", "task").
async fn hand_to_editor(
    terminal: &mut DefaultTerminal,
    events: &mut Option<EventStream>,
    mouse: bool,
    settings: &Settings,
    record: Option<crate::data::Instruction>,
    what: &str,
) -> Result<Result<crate::data::Instruction, String>> {
    let Some(record) = record else {
        return Ok(Err(format!("the {what} no longer exists")));
    };
    *events = None;
    super::leave(mouse);
    let editor = settings.config.tui.editor.clone();
    let result = tokio::task::spawn_blocking(move || {
        crate::editor::edit_record(&record, &editor).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the editor task failed: {e}")));
    *terminal = super::enter(mouse)?;
    terminal.clear()?;
    *events = Some(EventStream::new());
    Ok(result)
}

/// Starts, stops or resumes a training run on a blocking task (a launch loads the model to
/// check the run), ending in [`Action::JobDone`].
fn start_job(job: Job, settings: &Settings, tx: &UnboundedSender<Action>) {
    let settings = settings.clone();
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let first_line = |out: Vec<u8>| {
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let eval_job = matches!(
            job,
            Job::StartEval(_) | Job::StopEval(_) | Job::ResumeEval(_)
        );
        let result: Result<String> = match job {
            Job::StartEval(args) => {
                let mut out = Vec::new();
                crate::commands::eval::run_detached(&settings, &args, &mut out).map(|()| {
                    format!(
                        "Started {}: it goes on after you quit.",
                        first_line(out).trim_start_matches("evaluating in the background: ")
                    )
                })
            }
            Job::StopEval(path) => {
                crate::commands::eval::stop_job(&crate::eval::job::JobDir { path }).map(|pid| {
                    format!("Asked the evaluation (pid {pid}) to stop; finished items are kept.")
                })
            }
            Job::ResumeEval(path) => {
                let mut out = Vec::new();
                crate::commands::eval::resume(&settings, &path.to_string_lossy(), true, &mut out)
                    .map(|()| first_line(out))
            }
            Job::Stop(path) => {
                let mut out = Vec::new();
                crate::commands::train::stop(&settings, &path.to_string_lossy(), false, &mut out)
                    .map(|()| first_line(out))
            }
            Job::Resume(path) => {
                let mut out = Vec::new();
                crate::commands::train::resume(&settings, &path.to_string_lossy(), true, &mut out)
                    .map(|()| first_line(out))
            }
            Job::Launch(config) => launch(&settings, &config),
        };
        let result = result.map_err(|e| format!("{e:#}"));
        let _ = tx.send(if eval_job {
            Action::EvalJobDone { result }
        } else {
            Action::JobDone { result }
        });
    });
}

/// Writes the run's configuration under the data folder and starts it detached.
fn launch(settings: &Settings, config: &crate::train::config::TrainConfig) -> Result<String> {
    let dir = settings.workspace.data_dir.join("run-configs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("tui-{}.toml", crate::train::run::unix_now() as u64));
    crate::data::replace_atomic(&path, toml::to_string_pretty(config)?.as_bytes())?;
    let mut out = Vec::new();
    crate::commands::train::train(settings, &path, true, &mut out)?;
    let id = String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_string();
    Ok(format!(
        "Started {id}: training in the background; it goes on after you quit."
    ))
}

/// The Generated pane's run: started on a blocking task (a local teacher loads a model),
/// its counters sent every [`PROGRESS_EVERY`], stopped when `stop` fires (or its sender is
/// dropped), its end reported as [`Action::GenerateEnded`].
async fn generate(
    settings: Settings,
    teacher: String,
    target: usize,
    tx: UnboundedSender<Action>,
    mut stop: oneshot::Receiver<()>,
) {
    let started = tokio::task::spawn_blocking(move || {
        let args = crate::commands::generate::GenerateArgs {
            teacher,
            target,
            ..Default::default()
        };
        crate::commands::generate::start(&settings, &args).map(|(g, _)| g)
    })
    .await;
    let run = match started {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => {
            let _ = tx.send(Action::GenerateEnded {
                result: Err(format!("{e:#}")),
                progress: None,
            });
            return;
        }
        Err(e) => {
            let _ = tx.send(Action::GenerateEnded {
                result: Err(format!("the generation task failed: {e}")),
                progress: None,
            });
            return;
        }
    };
    let mut every = interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                if run.is_finished() {
                    break;
                }
                let _ = tx.send(Action::GenerateProgress(run.progress()));
            }
        }
    }
    // Joining the workers waits for requests in flight to be dropped.
    let ended = tokio::task::spawn_blocking(move || run.stop()).await;
    let _ = tx.send(match ended {
        Ok((outcome, progress)) => ended_action(outcome, progress),
        Err(e) => Action::GenerateEnded {
            result: Err(format!("the generation task failed: {e}")),
            progress: None,
        },
    });
}

/// What to tell the user when a run ends.
fn ended_action(
    outcome: crate::selfinstruct::run::Outcome,
    progress: crate::selfinstruct::run::Progress,
) -> Action {
    use crate::selfinstruct::run::Outcome;
    let result = match outcome {
        Outcome::Reached => Ok(format!(
            "Reached the target of {} kept tasks.",
            progress.target
        )),
        Outcome::Stopped { abandoned } => Ok(format!(
            "Stopped with {} of {} kept ({abandoned} request(s) in flight dropped); n continues.",
            progress.kept, progress.target
        )),
        Outcome::Failed(e) => Err(e.to_string()),
    };
    Action::GenerateEnded {
        result,
        progress: Some(progress),
    }
}
