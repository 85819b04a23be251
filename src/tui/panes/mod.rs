//! One module per pane: its state (and logic) and its drawing. No module here imports the
//! app (`app.rs`) or the frame layout (`ui.rs`): a pane's drawing gets the areas it needs.
//!
//! Every pane is a [`Pane`]: the app hands it the actions meant for it and draws it through
//! the trait; what reaches beyond one pane (tab switches, saves, quitting, overlays, sending
//! a task to the Chat pane, promoting one to the seeds) stays with the app.

use super::action::Action;
use super::effect::Effect;
use super::mode::Mode;
use crate::data::{Category, Instruction};
use ratatui::layout::{Constraint, Layout, Margin, Rect};
use ratatui::style::Color;
use ratatui::Frame;

/// What a pane hands back to the app after an action.
#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    /// For the status line: `Ok` informs, `Err` reports a failure.
    pub message: Option<Result<String, String>>,
    /// A question the app asks before going on.
    pub ask: Option<Ask>,
    /// Work for the runtime.
    pub effects: Vec<Effect>,
}

impl Reply {
    /// A reply that only informs.
    pub fn info(text: impl Into<String>) -> Reply {
        Reply {
            message: Some(Ok(text.into())),
            ..Reply::default()
        }
    }

    /// A reply that reports a failure.
    pub fn error(text: impl Into<String>) -> Reply {
        Reply {
            message: Some(Err(text.into())),
            ..Reply::default()
        }
    }

    /// A reply that asks the runtime for `effect`.
    pub fn effect(effect: Effect) -> Reply {
        Reply {
            effects: vec![effect],
            ..Reply::default()
        }
    }

    /// This reply with a status-line message.
    pub fn with_message(mut self, message: Result<String, String>) -> Reply {
        self.message = Some(message);
        self
    }
}

/// A yes/no question a pane needs answered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Stop the run at this index of the Train pane's runs?
    StopRun(usize),
    /// Resume the run at this index?
    ResumeRun(usize),
    /// Delete the seed record at this index of the file?
    DeleteSeed(usize),
}

/// Where a pane was on the last frame drawn: its area, and how many list rows it showed
/// (what a page move moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Screen {
    /// The pane's area.
    pub body: Rect,
    /// List rows on screen.
    pub rows: usize,
}

/// What every pane may read when it is drawn besides its own state.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    /// The seed records (the Generated pane shows a task beside its most similar seed).
    pub seeds: &'a [Instruction],
}

/// A pane of the workbench: its keys' mode, its actions, its drawing.
pub trait Pane {
    /// Where keys go while the pane is shown and no overlay is open.
    fn mode(&self) -> Mode;

    /// Applies an action meant for this pane (the app keeps tab switches, saves, help and
    /// clicks); `screen` is where the pane was on the last frame.
    fn update(&mut self, action: Action, screen: Screen) -> Reply;

    /// Draws the pane into `area`.
    fn draw(&self, frame: &mut Frame, area: Rect, shared: Shared);
}

/// The colour of a category everywhere on screen.
pub fn category_color(c: Category) -> Color {
    match c {
        Category::Qa => Color::Cyan,
        Category::Ie => Color::Green,
        Category::Gen => Color::Magenta,
        Category::Other => Color::Yellow,
    }
}

/// Width (columns) from which the seed list shows a preview of the selected record beside it.
pub const PREVIEW_MIN_WIDTH: u16 = 110;

/// The Seeds pane's areas, decided by the frame's layout (which mouse clicks use too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedsAreas {
    /// The whole pane.
    pub body: Rect,
    /// The list block (List view); equals `body` in other views.
    pub list: Rect,
    /// Rows of the list inside its border.
    pub list_inner: Rect,
    /// The preview beside the list on wide terminals.
    pub preview: Option<Rect>,
}

impl SeedsAreas {
    /// The areas in `body`: the list beside a preview in the list view of a terminal at least
    /// [`PREVIEW_MIN_WIDTH`] wide, else the list (or the detail view, or the form) alone.
    pub fn of(body: Rect, list_view: bool) -> SeedsAreas {
        let (list, preview) = if list_view && body.width >= PREVIEW_MIN_WIDTH {
            let [l, p] =
                Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                    .areas(body);
            (l, Some(p))
        } else {
            (body, None)
        };
        SeedsAreas {
            body,
            list,
            list_inner: list.inner(Margin::new(1, 1)),
            preview,
        }
    }
}

pub mod chat;
pub mod chat_view;
pub mod eval;
pub mod eval_view;
pub mod fields;
pub mod generated;
pub mod generated_view;
pub mod list;
pub mod seeds;
pub mod seeds_view;
pub mod train;
pub mod train_view;
