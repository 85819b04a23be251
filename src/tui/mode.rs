//! Where keys go: one enum for the app's state and the keymap's table (see
//! [`super::keymap`]). Its own module, so that the panes can name their mode without
//! importing the keymap or the app.

/// Where keys go, which decides what they mean: the app's current mode
/// ([`super::app::App::mode`]), and the part of the table a binding belongs to
/// (`Global` bindings apply in every mode that takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bindings for everywhere outside text entry and prompts (not a mode of its own).
    Global,
    /// The seed list.
    List,
    /// The detail view of one record.
    Detail,
    /// While typing a search.
    Search,
    /// The edit form.
    Form,
    /// The help or the invalid-lines overlay.
    Overlay,
    /// A yes/no prompt or the unsaved-changes prompt.
    Prompt,
    /// The Train pane's runs.
    Runs,
    /// The new-run form.
    RunForm,
    /// The Chat pane (typing goes to the input).
    Chat,
    /// The sampling popup.
    Sampling,
    /// The Generated pane.
    Generated,
    /// A record changed both here and by another process (the save-conflict prompt).
    Conflict,
    /// The Eval pane (evaluations, a report, a task's items, the experiments).
    Evals,
    /// The new-evaluation form.
    EvalForm,
}

impl Mode {
    /// The heading for this mode's keys in the help overlay.
    pub fn title(self) -> &'static str {
        match self {
            Mode::Global => "Everywhere",
            Mode::List => "Seed list",
            Mode::Detail => "Detail view",
            Mode::Search => "Search",
            Mode::Form => "Edit form",
            Mode::Overlay => "Help and invalid lines",
            Mode::Prompt => "Prompts",
            Mode::Runs => "Train pane",
            Mode::RunForm => "New-run form",
            Mode::Chat => "Chat pane (letters go to the input)",
            Mode::Sampling => "Sampling popup",
            Mode::Generated => "Generated pane",
            Mode::Conflict => "Save conflict (a record changed here and by another process)",
            Mode::Evals => "Eval pane",
            Mode::EvalForm => "New-evaluation form",
        }
    }
}
