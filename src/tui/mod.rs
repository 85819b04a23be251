//! The terminal workbench (ratatui + crossterm). The only module that touches the terminal.
//!
//! Structure, after ratatui's component template: terminal events become [`Action`]s
//! ([`keymap`]), [`App::update`] is the only place state changes, and [`ui::draw`] renders
//! the state without changing it. Redraws are coalesced: all events already queued are
//! applied before the next frame is drawn.

pub mod action;
pub mod app;
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
    let mut app = App::new(file, (size.width, size.height));
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

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    settings: &Settings,
    mouse: bool,
) -> Result<()> {
    loop {
        terminal.draw(|frame| ui::draw(frame, app))?;
        if app.should_quit {
            return Ok(());
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
        // Block for the next event, then apply everything already queued before drawing.
        let mut event = event::read()?;
        loop {
            if let Some(action) = keymap::map_event(app, &event) {
                app.update(action);
            }
            if app.should_quit
                || app.pending_external_edit.is_some()
                || !event::poll(Duration::ZERO)?
            {
                break;
            }
            event = event::read()?;
        }
    }
}
