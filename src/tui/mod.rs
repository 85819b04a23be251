//! The terminal workbench (ratatui + crossterm). The only module that touches the terminal.
//!
//! Structure, after ratatui's component template: terminal events become [`Action`]s
//! ([`keymap`]), [`App::update`] is the only place state changes, and [`ui::draw`] renders
//! the state without changing it. Redraws are coalesced: all events already queued are
//! applied before the next frame is drawn.

pub mod action;
pub mod app;
pub mod chat_engine;
pub mod form;
pub mod keymap;
pub mod panes;
pub mod ui;

pub use action::Action;
pub use app::App;

use crate::config::Settings;
use anyhow::Result;
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use ratatui::DefaultTerminal;
use std::time::Duration;

/// Opens the workbench on the settings' seed file and runs it until the user quits.
///
/// The terminal is restored on return, on error and on panic (ratatui's panic hook, plus
/// releasing the mouse), so a crash never leaves a broken terminal over SSH.
///
/// # Errors
/// The seed file cannot be read or created, or the terminal fails.
pub fn run(settings: &Settings) -> Result<()> {
    let file = crate::commands::seeds::open_seeds(settings)?;
    let mouse = settings.config.tui.mouse;
    let mut terminal = enter(mouse)?;
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        previous_hook(info);
    }));
    let size = terminal.size()?;
    let mut defaults = crate::train::config::TrainConfig::default();
    defaults.model.base = settings.config.model.base.clone();
    let train =
        panes::train::TrainPane::new(crate::commands::train::runs_root(settings, None), defaults);
    let chat = panes::chat::ChatPane::new(
        settings.config.generation.clone(),
        crate::commands::train::runs_root(settings, None),
        settings.workspace.data_dir.join("transcripts"),
    );
    let generated = panes::generated::GeneratedPane::new(
        crate::commands::generate::output_dir(settings, None),
        settings.config.generate.teacher.clone(),
        settings.config.generate.target,
    );
    let mut app = App::new(file, (size.width, size.height))
        .with_train(train)
        .with_chat(chat)
        .with_generated(generated);
    let result = event_loop(&mut terminal, &mut app, settings, mouse);
    leave(mouse);
    result
}

fn enter(mouse: bool) -> Result<DefaultTerminal> {
    let terminal = ratatui::init();
    if mouse {
        execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    Ok(terminal)
}

fn leave(mouse: bool) {
    if mouse {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
    }
    ratatui::restore();
}

/// How often the Train pane rereads its runs while no key is pressed.
pub const TICK: Duration = Duration::from_millis(250);

/// The frame interval while replies stream (about 30 frames a second).
pub const FRAME: Duration = Duration::from_millis(33);

/// Runs `job` for the app: stop and resume at once (they only signal or spawn the
/// trainer), a launch in a thread (it loads the model to check the run), each ending in an
/// [`Action::JobDone`] sent to `done`.
fn start_job(job: app::Job, settings: &Settings, done: &std::sync::mpsc::Sender<Action>) {
    let settings = settings.clone();
    let report = |result: Result<Vec<u8>>| {
        let result = result
            .map(|out| {
                String::from_utf8_lossy(&out)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .map_err(|e| format!("{e:#}"));
        Action::JobDone { result }
    };
    match job {
        app::Job::Stop(path) => {
            let mut out = Vec::new();
            let r =
                crate::commands::train::stop(&settings, &path.to_string_lossy(), false, &mut out);
            let _ = done.send(report(r.map(|()| out)));
        }
        app::Job::Resume(path) => {
            let mut out = Vec::new();
            let r =
                crate::commands::train::resume(&settings, &path.to_string_lossy(), true, &mut out);
            let _ = done.send(report(r.map(|()| out)));
        }
        app::Job::Launch(config) => {
            let done = done.clone();
            std::thread::spawn(move || {
                let result = (|| -> Result<Vec<u8>> {
                    let dir = settings.workspace.data_dir.join("run-configs");
                    std::fs::create_dir_all(&dir)?;
                    let path =
                        dir.join(format!("tui-{}.toml", crate::train::run::unix_now() as u64));
                    crate::data::replace_atomic(
                        &path,
                        toml::to_string_pretty(&*config)?.as_bytes(),
                    )?;
                    let mut out = Vec::new();
                    crate::commands::train::train(&settings, &path, true, &mut out)?;
                    let id = String::from_utf8_lossy(&out)
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .trim_end_matches(':')
                        .to_string();
                    Ok(format!(
                        "Started {id}: training in the background; it goes on after you quit."
                    )
                    .into_bytes())
                })();
                let _ = done.send(report(result));
            });
        }
    }
}

/// The generation run started from the Generated pane: started in a thread (loading a local
/// teacher takes seconds), then polled by the event loop once a frame.
#[derive(Default)]
struct GenerationRunner {
    run: Option<crate::selfinstruct::run::Generation>,
    starting:
        Option<std::sync::mpsc::Receiver<Result<crate::selfinstruct::run::Generation, String>>>,
    stop_when_started: bool,
}

impl GenerationRunner {
    fn handle(
        &mut self,
        request: panes::generated::GenRequest,
        settings: &Settings,
        done: &std::sync::mpsc::Sender<Action>,
    ) {
        match request {
            panes::generated::GenRequest::Start { teacher, target } => {
                let (tx, rx) = std::sync::mpsc::channel();
                let settings = settings.clone();
                std::thread::spawn(move || {
                    let args = crate::commands::generate::GenerateArgs {
                        teacher,
                        target,
                        ..Default::default()
                    };
                    let r = crate::commands::generate::start(&settings, &args)
                        .map(|(g, _)| g)
                        .map_err(|e| format!("{e:#}"));
                    let _ = tx.send(r);
                });
                self.starting = Some(rx);
                self.stop_when_started = false;
            }
            panes::generated::GenRequest::Stop => match self.run.take() {
                Some(run) => {
                    let (outcome, progress) = run.stop();
                    let _ = done.send(ended(outcome, progress));
                }
                None => self.stop_when_started = true,
            },
        }
    }

    /// Picks up a started run, sends its counters, and reports its end.
    fn poll(&mut self, app: &mut App) {
        if let Some(rx) = &self.starting {
            match rx.try_recv() {
                Ok(Ok(run)) => {
                    self.starting = None;
                    self.run = Some(run);
                    if self.stop_when_started {
                        if let Some(run) = self.run.take() {
                            let (outcome, progress) = run.stop();
                            app.update(ended(outcome, progress));
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.starting = None;
                    app.update(Action::GenerateEnded {
                        result: Err(e),
                        progress: None,
                    });
                }
                Err(_) => {}
            }
        }
        if let Some(run) = &self.run {
            if run.is_finished() {
                if let Some(run) = self.run.take() {
                    let (outcome, progress) = run.stop();
                    app.update(ended(outcome, progress));
                }
            } else {
                app.update(Action::GenerateProgress(run.progress()));
            }
        }
    }
}

fn ended(
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

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    settings: &Settings,
    mouse: bool,
) -> Result<()> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Action>();
    let mut chat = chat_engine::ChatEngine::new(settings, done_tx.clone());
    let mut generation = GenerationRunner::default();
    loop {
        terminal.draw(|frame| ui::draw(frame, app))?;
        if app.should_quit {
            return Ok(());
        }
        if let Some(job) = app.pending_job.take() {
            start_job(job, settings, &done_tx);
        }
        for request in std::mem::take(&mut app.chat.requests) {
            chat.handle(request);
        }
        for request in std::mem::take(&mut app.generated.requests) {
            generation.handle(request, settings, &done_tx);
        }
        generation.poll(app);
        // Background results (jobs, model loads, streamed pieces): all that has arrived is
        // applied before the next frame, so a fast stream costs one redraw per frame.
        while let Ok(action) = done_rx.try_recv() {
            app.update(action);
        }
        if let Some((kept, index)) = app.pending_generated_edit.take() {
            leave(mouse);
            let list = if kept {
                &app.generated.kept
            } else {
                &app.generated.rejected
            };
            let result = match list.get(index) {
                Some(record) => crate::editor::edit_record(record, &settings.config.tui.editor)
                    .map_err(|e| e.to_string()),
                None => Err("the task no longer exists".to_string()),
            };
            *terminal = enter(mouse)?;
            terminal.clear()?;
            app.update(Action::GeneratedEdited {
                kept,
                index,
                result,
            });
            continue;
        }
        if let Some(index) = app.pending_external_edit.take() {
            // Hand the terminal to the editor, then take it back.
            leave(mouse);
            let result = match app.seeds.file.records.get(index) {
                Some(record) => crate::editor::edit_record(record, &settings.config.tui.editor)
                    .map_err(|e| e.to_string()),
                None => Err("the record no longer exists".to_string()),
            };
            *terminal = enter(mouse)?;
            terminal.clear()?;
            app.update(Action::ExternalEdited { index, result });
            continue;
        }
        // Wait for the next event (a tick after 250 ms without one), then apply everything
        // already queued before drawing.
        let wait = if app.chat.streaming() || app.train.launching {
            FRAME
        } else {
            TICK
        };
        if !event::poll(wait)? {
            if wait == TICK {
                app.update(Action::Tick);
            }
            continue;
        }
        let mut event = event::read()?;
        loop {
            if let Some(action) = keymap::map_event(app, &event) {
                app.update(action);
            }
            if app.should_quit
                || app.pending_external_edit.is_some()
                || app.pending_generated_edit.is_some()
                || !event::poll(Duration::ZERO)?
            {
                break;
            }
            event = event::read()?;
        }
    }
}
