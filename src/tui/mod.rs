//! The terminal workbench (ratatui + crossterm). The only module that touches the terminal.
//!
//! Structure, after ratatui's async component template and television's action/render
//! split: terminal events become [`Action`]s ([`keymap`]); [`App::update`] is the only place
//! state changes, does no I/O, and returns [`Effect`]s, the work it asks for (file work
//! included: saves, reviews, transcripts, rescans); the [`runtime`] (one tokio runtime)
//! carries them out as tasks that report back with `Action`s on one channel; and
//! [`ui::draw`] renders the state without changing it and reports the layout it chose back
//! ([`Action::Drawn`]: page sizes and clicks follow the screen), at most once per ~16 ms and only
//! after something changed.

pub mod action;
pub mod app;
pub mod chat_engine;
pub mod effect;
pub mod form;
pub mod keymap;
pub mod layout;
pub mod mode;
pub mod panes;
pub mod runtime;
pub mod ui;

pub use action::Action;
pub use app::App;
pub use effect::Effect;

use crate::config::Settings;
use anyhow::Result;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use ratatui::DefaultTerminal;

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
    let eval = panes::eval::EvalPane::new(
        crate::commands::eval::evals_root(settings),
        crate::commands::experiment::experiments_root(settings),
    );
    let mut app = App::new(file, (size.width, size.height))
        .with_eval(eval)
        .with_train(train)
        .with_chat(chat)
        .with_generated(generated);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bioinstruct-tui")
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let result = rt.block_on(runtime::event_loop(
                &mut terminal,
                &mut app,
                settings,
                mouse,
            ));
            // Model loads and finished jobs need not be waited for.
            rt.shutdown_background();
            result
        });
    leave(mouse);
    result
}

pub(crate) fn enter(mouse: bool) -> Result<DefaultTerminal> {
    let terminal = ratatui::init();
    if mouse {
        execute!(std::io::stdout(), EnableMouseCapture)?;
    }
    Ok(terminal)
}

pub(crate) fn leave(mouse: bool) {
    if mouse {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
    }
    ratatui::restore();
}
