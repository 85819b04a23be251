//! One module per pane: its state (and logic) and its drawing.

pub mod chat;
pub mod chat_view;
pub mod generated;
pub mod generated_view;
pub mod seeds;
pub mod seeds_view;
pub mod train;
pub mod train_view;
