//! Everything that can change the workbench's state. Key and mouse events become an
//! [`Action`]; [`crate::tui::App::update`] is the only place state changes.

use crate::data::Instruction;
use ratatui_textarea::Input;
use serde::{Deserialize, Serialize};

/// One change request. The unit variants are what keys map to (and what a keymap in a
/// config file would name, hence `snake_case`); the others carry event data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Quit, asking first when there are unsaved changes.
    Quit,
    /// Save, then quit (from the unsaved-changes prompt).
    SaveAndQuit,
    /// Quit without saving (from the unsaved-changes prompt).
    DiscardAndQuit,
    /// Write the seed file (atomically, keeping `<file>.bak`).
    Save,
    /// Show or hide the key help overlay.
    ToggleHelp,
    /// Show the invalid lines of the file that was opened.
    ShowErrors,
    /// Close the overlay, leave the detail view or form, or clear the search.
    Cancel,
    /// Answer yes to a confirmation.
    Confirm,
    /// Move the selection (or scroll the detail view) up one row.
    Up,
    /// Move the selection (or scroll the detail view) down one row.
    Down,
    /// Up one page.
    PageUp,
    /// Down one page.
    PageDown,
    /// To the first row.
    Top,
    /// To the last row.
    Bottom,
    /// Open the selected record in the detail view.
    Open,
    /// Next pane.
    NextTab,
    /// Previous pane.
    PrevTab,
    /// Cycle the category filter: all, qa, ie, gen, other.
    CycleCategory,
    /// Start typing a search.
    StartSearch,
    /// A character typed into the search.
    SearchChar(char),
    /// Delete the last search character.
    SearchBackspace,
    /// Stop typing the search and keep it.
    SearchSubmit,
    /// Add a record (opens the form).
    Add,
    /// Duplicate the selected record, with a fresh id, below it.
    Duplicate,
    /// Delete the selected record (asks first).
    Delete,
    /// Undo the last add, duplicate, edit or delete.
    Undo,
    /// Edit the selected record in the form.
    Edit,
    /// Edit the selected record as JSON in `$EDITOR`.
    EditExternal,
    /// The outcome of an external edit of the record at `index`.
    #[serde(skip)]
    ExternalEdited {
        /// Index of the record in the file.
        index: usize,
        /// The edited record, or why the edit failed.
        result: Result<Instruction, String>,
    },
    /// Next field of the form.
    FormNextField,
    /// Previous field of the form.
    FormPrevField,
    /// Apply the form.
    FormSubmit,
    /// A key typed into the focused form field.
    #[serde(skip)]
    FormInput(Input),
    /// Mouse wheel up.
    ScrollUp,
    /// Mouse wheel down.
    ScrollDown,
    /// Left click at a terminal cell.
    Click {
        /// Column, from 0.
        column: u16,
        /// Row, from 0.
        row: u16,
    },
    /// Time passed (every second): clocks on screen move, and the panes reread their files in
    /// case a file event was missed (network file systems send none).
    Tick,
    /// Train pane: open the new-run form.
    NewRun,
    /// Train pane: stop the selected run (asks first).
    StopRun,
    /// Train pane: resume the selected run (asks first).
    ResumeRun,
    /// Train pane: open the form that adds a run folder another trainer writes (Hugging Face
    /// Trainer, axolotl, LLaMA-Factory) to follow, read-only.
    WatchRun,
    /// A character typed into the focused field of a form (new run, sampling popup).
    FieldChar(char),
    /// Delete the last character of the focused field.
    FieldBackspace,
    /// New-run form: check the fields and start the run in the background.
    LaunchRun,
    /// A background job (start, stop or resume a run) ended: what to tell the user.
    #[serde(skip)]
    JobDone {
        /// A message for the status line, or the error.
        result: Result<String, String>,
    },
    /// Seeds pane: put the selected task in the Chat pane's input, its output as reference.
    SendToChat,
    /// Chat pane: a character typed into the input.
    ChatChar(char),
    /// Chat pane: delete the last character of the input.
    ChatBackspace,
    /// Chat pane: send the input to both models.
    ChatSend,
    /// Chat pane: stop both replies, or clear the input when none is streaming.
    ChatCancel,
    /// Chat pane: forget both conversations and the reference.
    ChatClear,
    /// Chat pane: save the transcript as Markdown and JSONL.
    ChatSave,
    /// Chat pane: open the sampling settings.
    ChatSampling,
    /// Sampling popup: apply the settings.
    ApplySampling,
    /// Chat pane: tune with the next run's adapter.
    ChatNextAdapter,
    /// A chat model finished loading, or failed to.
    #[serde(skip)]
    ChatLoaded {
        /// 0: base, 1: tuned.
        column: usize,
        /// The model's name, or why it did not load.
        result: Result<String, String>,
    },
    /// A piece of a streamed reply.
    #[serde(skip)]
    ChatPiece {
        /// 0: base, 1: tuned.
        column: usize,
        /// The text.
        text: String,
    },
    /// A reply ended.
    #[serde(skip)]
    ChatDone {
        /// 0: base, 1: tuned.
        column: usize,
        /// Tokens and speed, or the error.
        result: Result<String, String>,
    },
    /// Chat pane: fetch the default model when it is missing.
    FetchModel,
    /// The default model is not on this machine (loading failed): why.
    #[serde(skip)]
    ChatModelMissing {
        /// The loading error.
        error: String,
    },
    /// Download progress of the default model.
    #[serde(skip)]
    ModelFetchProgress {
        /// Bytes downloaded.
        done: u64,
        /// The download's size, when known.
        total: Option<u64>,
    },
    /// The default model's download ended: its path, or the error.
    #[serde(skip)]
    ModelFetched {
        /// The GGUF's path, or why the download failed.
        result: Result<String, String>,
    },
    /// Generated pane: show the kept or the rejected list.
    SwitchGenList,
    /// Generated pane: move the selected rejected task to the kept ones.
    AcceptTask,
    /// Generated pane: move the selected kept task to the rejected ones.
    RejectTask,
    /// Generated pane: copy the selected kept task into the seeds, with a fresh seed id.
    PromoteTask,
    /// Generated pane: start a run with `[generate] teacher` to `[generate] target`.
    StartGenerate,
    /// Generated pane: stop the run.
    StopGenerate,
    /// The outcome of an external edit of a generated task.
    #[serde(skip)]
    GeneratedEdited {
        /// Whether it is in the kept list (else the rejected one).
        kept: bool,
        /// Index in that list.
        index: usize,
        /// The edited record, or why the edit failed.
        result: Result<Instruction, String>,
    },
    /// The counters of the running generation.
    #[serde(skip)]
    GenerateProgress(crate::selfinstruct::run::Progress),
    /// The generation ended (or failed to start): what to tell the user.
    #[serde(skip)]
    GenerateEnded {
        /// How it ended, or the error.
        result: Result<String, String>,
        /// The final counters, when it ran.
        progress: Option<crate::selfinstruct::run::Progress>,
    },
    /// A save of the seed file ([`super::effect::FileWork::SaveSeeds`]) finished.
    #[serde(skip)]
    SeedsSaved(Box<crate::data::SaveOutcome>),
    /// The Generated pane's file work ([`super::effect::FileWork::Generated`]) finished.
    #[serde(skip)]
    GeneratedIoDone(super::panes::generated::GenIoDone),
    /// A chat transcript ([`super::effect::FileWork::Transcript`]) was written (the Markdown
    /// file's path), or why not.
    #[serde(skip)]
    TranscriptSaved(Result<std::path::PathBuf, String>),
    /// A frame was drawn with this layout ([`super::ui::draw`]): page sizes and mouse clicks
    /// follow it.
    #[serde(skip)]
    Drawn(Box<super::ui::AppLayout>),
    /// A rescan of the runs ([`super::effect::FileWork::ScanRuns`]) is back.
    #[serde(skip)]
    RunsScanned(Box<super::panes::train::RunsScanned>),
    /// A check of the seed file ([`super::effect::FileWork::CheckSeeds`]) is back.
    #[serde(skip)]
    SeedsRead(Box<super::panes::seeds::SeedsRead>),
    /// The Eval pane: the experiments' matrices, or back.
    ShowMatrix,
    /// The Eval pane's drill-down: the next tuned model.
    NextTuned,
    /// The Eval pane's rescan is back.
    #[serde(skip)]
    EvalsScanned(Box<super::panes::eval::EvalsScanned>),
    /// An evaluation was started, stopped or resumed (or could not be).
    #[serde(skip)]
    EvalJobDone {
        /// What happened, for the status line.
        result: Result<String, String>,
    },
    /// Save conflict: keep this workbench's version of the record shown.
    KeepMine,
    /// Save conflict: take the version on disk (another process's) of the record shown.
    TakeTheirs,
    /// Files changed under the watched folders (the runs, the generated tasks, the seed
    /// file's folder), debounced: the panes reread what concerns them.
    #[serde(skip)]
    FilesChanged(Vec<std::path::PathBuf>),
    /// The terminal was resized.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
}
