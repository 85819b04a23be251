//! What [`crate::tui::App::update`] asks the runtime to do: work that takes time, needs the
//! settings or the terminal, or runs in the background. The runtime ([`super::runtime`])
//! carries each out and reports the outcome back as an [`super::Action`]; headless tests
//! assert on the effects an action returns, and carry out the file effects with
//! [`Effect::perform_io`] as the runtime does.

use super::action::Action;
use super::panes::chat::{ChatRequest, Transcript};
use super::panes::generated::{GenIo, GenRequest};
use super::panes::seeds::SeedsCheck;
use super::panes::train::RunsScan;

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
    /// Save the seed file, merging what another process changed; the outcome comes back as
    /// [`super::Action::SeedsSaved`].
    SaveSeeds(Box<crate::data::SaveJob>),
    /// Read or write the Generated pane's files; the outcome comes back as
    /// [`super::Action::GeneratedIoDone`].
    GeneratedIo(GenIo),
    /// Write a chat transcript; the outcome comes back as [`super::Action::TranscriptSaved`].
    WriteTranscript(Box<Transcript>),
    /// Rescan the runs (and the adapters); what is new comes back as
    /// [`super::Action::RunsScanned`].
    ScanRuns(Box<RunsScan>),
    /// Look whether another process changed the seed file; the outcome comes back as
    /// [`super::Action::SeedsRead`].
    CheckSeeds(Box<SeedsCheck>),
}

impl Effect {
    /// Whether this is file work that [`Effect::perform_io`] carries out.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Effect::SaveSeeds(_)
                | Effect::GeneratedIo(_)
                | Effect::WriteTranscript(_)
                | Effect::ScanRuns(_)
                | Effect::CheckSeeds(_)
        )
    }

    /// Carries out file work here and now (blocking: the runtime calls it on its blocking
    /// pool) and returns the action that reports it; `None` for an effect that is not file
    /// work ([`Effect::is_io`]), which is dropped.
    pub fn perform_io(self) -> Option<Action> {
        match self {
            Effect::SaveSeeds(job) => Some(Action::SeedsSaved(Box::new(job.run()))),
            Effect::GeneratedIo(io) => Some(Action::GeneratedIoDone(io.run())),
            Effect::WriteTranscript(t) => Some(Action::TranscriptSaved(t.write())),
            Effect::ScanRuns(scan) => Some(Action::RunsScanned(Box::new(scan.run()))),
            Effect::CheckSeeds(check) => Some(Action::SeedsRead(Box::new(check.run()))),
            _ => None,
        }
    }
}
