//! What [`crate::tui::App::update`] asks the runtime to do: work that takes time, needs the
//! settings or the terminal, or runs in the background. The runtime ([`super::runtime`])
//! carries each out and reports the outcome back as an [`super::Action`]; headless tests
//! assert on the effects an action returns instead of running them.

use super::panes::chat::ChatRequest;
use super::panes::generated::GenRequest;

/// A training job: the outcome comes back as [`super::Action::JobDone`].
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Check a new run's configuration and start it detached.
    Launch(Box<crate::train::config::TrainConfig>),
    /// Send the run's trainer SIGTERM.
    Stop(std::path::PathBuf),
    /// Resume the run detached.
    Resume(std::path::PathBuf),
}

/// One piece of work for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start, stop or resume a training run.
    Run(Job),
    /// Load the chat models, send a prompt, or stop the replies; pieces and outcomes come
    /// back as [`super::Action::ChatLoaded`], [`super::Action::ChatPiece`] and
    /// [`super::Action::ChatDone`].
    Chat(ChatRequest),
    /// Start or stop the Generated pane's generation run; counters come back as
    /// [`super::Action::GenerateProgress`], the end as [`super::Action::GenerateEnded`].
    Generate(GenRequest),
    /// Hand the terminal to `$EDITOR` on the seed record at `index` (of the seed file);
    /// the outcome comes back as [`super::Action::ExternalEdited`].
    EditSeed {
        /// Index in the seed file's records.
        index: usize,
    },
    /// Hand the terminal to `$EDITOR` on a generated task; the outcome comes back as
    /// [`super::Action::GeneratedEdited`].
    EditGenerated {
        /// Whether it is in the kept list (else the rejected one).
        kept: bool,
        /// Index in that list.
        index: usize,
    },
}
