//! What [`crate::tui::App::update`] asks the runtime to do: work that takes time, needs the
//! settings or the terminal, or runs in the background. The runtime ([`super::runtime`])
//! carries each out and reports the outcome back as an [`super::Action`]; headless tests
//! assert on the effects an action returns, and carry out the file effects with
//! [`FileWork::run`] as the runtime does.

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
    /// Check and start an evaluation detached; the outcome comes back as
    /// [`super::Action::EvalJobDone`].
    StartEval(Box<crate::commands::eval::RunArgs>),
    /// Send an evaluation's worker SIGTERM.
    StopEval(std::path::PathBuf),
    /// Continue an evaluation detached.
    ResumeEval(std::path::PathBuf),
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
    /// File work, carried out on the runtime's blocking pool ([`FileWork::run`]).
    File(FileWork),
}

/// Work on files for the runtime; each reports back with one action.
#[derive(Debug, Clone, PartialEq)]
pub enum FileWork {
    /// Save the seed file, merging what another process changed; the outcome comes back as
    /// [`super::Action::SeedsSaved`].
    SaveSeeds(Box<crate::data::SaveJob>),
    /// Read or write the Generated pane's files; the outcome comes back as
    /// [`super::Action::GeneratedIoDone`].
    Generated(GenIo),
    /// Write a chat transcript; the outcome comes back as [`super::Action::TranscriptSaved`].
    Transcript(Box<Transcript>),
    /// Rescan the runs (and the adapters); what is new comes back as
    /// [`super::Action::RunsScanned`].
    ScanRuns(Box<RunsScan>),
    /// Look whether another process changed the seed file; the outcome comes back as
    /// [`super::Action::SeedsRead`].
    CheckSeeds(Box<SeedsCheck>),
    /// Rescan the evaluations and experiments (and a drill-down's items); what was read
    /// comes back as [`super::Action::EvalsScanned`].
    ScanEvals(Box<super::panes::eval::EvalScan>),
}

impl FileWork {
    /// Carries the work out here and now (blocking file I/O) and returns the action that
    /// reports it.
    pub fn run(self) -> Action {
        match self {
            FileWork::SaveSeeds(job) => Action::SeedsSaved(Box::new(job.run())),
            FileWork::Generated(io) => Action::GeneratedIoDone(io.run()),
            FileWork::Transcript(t) => Action::TranscriptSaved(t.write()),
            FileWork::ScanRuns(scan) => Action::RunsScanned(Box::new(scan.run())),
            FileWork::CheckSeeds(check) => Action::SeedsRead(Box::new(check.run())),
            FileWork::ScanEvals(scan) => Action::EvalsScanned(Box::new(scan.run())),
        }
    }
}

impl Effect {
    /// Carries out file work here and now, as the runtime does on its blocking pool, and
    /// returns the action that reports it; `None` for any other effect.
    pub fn perform_io(self) -> Option<Action> {
        match self {
            Effect::File(work) => Some(work.run()),
            _ => None,
        }
    }
}
