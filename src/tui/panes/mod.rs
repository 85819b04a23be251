//! One module per pane: its state (and logic) and its drawing. No module here imports the
//! app (`app.rs`) or the frame layout (`ui.rs`): a pane's drawing gets the areas it needs.

use crate::data::Category;
use ratatui::layout::Rect;
use ratatui::style::Color;

/// The colour of a category everywhere on screen.
pub fn category_color(c: Category) -> Color {
    match c {
        Category::Qa => Color::Cyan,
        Category::Ie => Color::Green,
        Category::Gen => Color::Magenta,
        Category::Other => Color::Yellow,
    }
}

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

pub mod chat;
pub mod chat_view;
pub mod fields;
pub mod generated;
pub mod generated_view;
pub mod list;
pub mod seeds;
pub mod seeds_view;
pub mod train;
pub mod train_view;
