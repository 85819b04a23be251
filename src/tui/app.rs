//! The workbench's state and its one mutator, [`App::update`].

use super::action::Action;
use super::layout::{app_layout, AppLayout};
use super::panes::chat::ChatPane;
use super::panes::eval::EvalPane;
use super::panes::generated::{GenList, GeneratedPane, RunState};
use super::panes::seeds::{SeedsPane, SeedsView};
use super::panes::train::TrainPane;
use super::panes::{Ask, Pane, Reply, Screen};
use crate::data::InstructionFile;
use ratatui::layout::{Position, Rect};

pub use super::layout::Tab;

pub use super::effect::{Effect, FileWork, Job};

/// A window over the pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// The key help; `scroll` in lines.
    Help {
        /// First line shown.
        scroll: u16,
    },
    /// The invalid lines of the opened file.
    Errors {
        /// First line shown.
        scroll: u16,
    },
    /// "Delete this record?"
    ConfirmDelete {
        /// Index of the record in the file.
        index: usize,
    },
    /// "Unsaved changes: save, discard or cancel?"
    ConfirmQuit,
    /// "Stop this run?" (index into the Train pane's runs)
    ConfirmStop {
        /// Index of the run.
        index: usize,
    },
    /// "Resume this run?"
    ConfirmResume {
        /// Index of the run.
        index: usize,
    },
    /// The seed file's first open save conflict: keep mine or take theirs?
    Conflict,
}

pub use super::mode::Mode;

/// How a status message is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Neutral information.
    Info,
    /// Something failed.
    Error,
}

/// All state of the workbench.
#[derive(Debug)]
pub struct App {
    /// The Seeds pane.
    pub seeds: SeedsPane,
    /// The pane shown.
    pub tab: Tab,
    /// The window over the pane, if any.
    pub overlay: Option<Overlay>,
    /// The last status message.
    pub message: Option<(String, Tone)>,
    /// Terminal size in cells, for mouse hit-testing and page sizes.
    pub size: (u16, u16),
    /// Set when the event loop should end.
    pub should_quit: bool,
    /// The Train pane.
    pub train: TrainPane,
    /// The Chat pane.
    pub chat: ChatPane,
    /// The Generated pane.
    pub generated: GeneratedPane,
    /// The Eval pane.
    pub eval: EvalPane,
    /// Work queued by `update` for the runtime, returned by it.
    effects: Vec<Effect>,
    /// A seed file save is in flight; `save_again` asks for another once it is back.
    saving: bool,
    save_again: bool,
    /// Quit once the save in flight succeeds (save and quit).
    quit_after_save: bool,
    /// A check of the seed file on disk is in flight.
    checking_seeds: bool,
    /// Where the last frame put everything ([`Action::Drawn`]): page sizes and clicks
    /// follow what is on screen.
    drawn: AppLayout,
}

impl App {
    /// An app on `file` in a terminal of `size` (columns, rows). Opens the errors overlay when
    /// the file had invalid lines.
    pub fn new(file: InstructionFile, size: (u16, u16)) -> App {
        let has_errors = !file.invalid.is_empty();
        let mut app = App {
            seeds: SeedsPane::new(file),
            tab: Tab::Seeds,
            overlay: has_errors.then_some(Overlay::Errors { scroll: 0 }),
            message: None,
            size,
            should_quit: false,
            train: TrainPane::new(
                std::path::PathBuf::new(),
                crate::train::config::TrainConfig::default(),
            ),
            chat: ChatPane::new(
                crate::model::Sampling::default(),
                std::path::PathBuf::new(),
                std::path::PathBuf::new(),
            ),
            generated: GeneratedPane::new(
                std::path::PathBuf::new(),
                crate::config::AUTO_TEACHER.into(),
                100,
            ),
            eval: EvalPane::new(std::path::PathBuf::new(), std::path::PathBuf::new()),
            effects: Vec::new(),
            saving: false,
            save_again: false,
            quit_after_save: false,
            checking_seeds: false,
            drawn: AppLayout::default(),
        };
        // Until the first frame is drawn: the layout that frame will have.
        app.drawn = app_layout(
            Rect::new(0, 0, size.0, size.1),
            matches!(app.seeds.view, SeedsView::List),
        );
        app
    }

    /// The same app with `generated` as its Generated pane.
    pub fn with_generated(mut self, generated: GeneratedPane) -> App {
        self.generated = generated;
        self
    }

    /// The same app with `chat` as its Chat pane.
    pub fn with_chat(mut self, chat: ChatPane) -> App {
        self.chat = chat;
        self
    }

    /// The same app with `eval` as its Eval pane.
    pub fn with_eval(mut self, eval: EvalPane) -> App {
        self.eval = eval;
        self
    }

    /// The same app with `train` as its Train pane.
    pub fn with_train(mut self, train: TrainPane) -> App {
        self.train = train;
        self
    }

    /// Where keys go now.
    pub fn mode(&self) -> Mode {
        match &self.overlay {
            Some(
                Overlay::ConfirmDelete { .. }
                | Overlay::ConfirmQuit
                | Overlay::ConfirmStop { .. }
                | Overlay::ConfirmResume { .. },
            ) => Mode::Prompt,
            Some(Overlay::Conflict) => Mode::Conflict,
            Some(_) => Mode::Overlay,
            None => self.pane().mode(),
        }
    }

    /// The screen areas of the last frame drawn ([`Action::Drawn`]).
    pub fn layout(&self) -> AppLayout {
        self.drawn.clone()
    }

    fn list_rows(&self) -> usize {
        self.layout().list_inner.height as usize
    }

    /// The pane shown.
    pub fn pane(&self) -> &dyn Pane {
        match self.tab {
            Tab::Seeds => &self.seeds,
            Tab::Train => &self.train,
            Tab::Chat => &self.chat,
            Tab::Eval => &self.eval,
            Tab::Generated => &self.generated,
        }
    }

    fn pane_mut(&mut self) -> &mut dyn Pane {
        match self.tab {
            Tab::Seeds => &mut self.seeds,
            Tab::Train => &mut self.train,
            Tab::Chat => &mut self.chat,
            Tab::Eval => &mut self.eval,
            Tab::Generated => &mut self.generated,
        }
    }

    /// Where the shown pane was on the last frame.
    fn screen(&self) -> Screen {
        let rows = match self.tab {
            Tab::Generated => super::panes::generated_view::list_rows(self.drawn.body),
            _ => self.list_rows(),
        };
        Screen {
            body: self.drawn.body,
            rows,
        }
    }

    /// Takes a pane's reply: its message, its question, its work for the runtime.
    fn take_reply(&mut self, reply: Reply) {
        if let Some(message) = reply.message {
            self.report(message);
        }
        match reply.ask {
            Some(Ask::StopRun(index)) => self.overlay = Some(Overlay::ConfirmStop { index }),
            Some(Ask::ResumeRun(index)) => self.overlay = Some(Overlay::ConfirmResume { index }),
            Some(Ask::DeleteSeed(index)) => self.overlay = Some(Overlay::ConfirmDelete { index }),
            None => {}
        }
        self.effects.extend(reply.effects);
    }

    fn report(&mut self, message: Result<String, String>) {
        match message {
            Ok(text) => self.info(text),
            Err(text) => self.error(text),
        }
    }

    fn info(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), Tone::Info));
    }

    fn error(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), Tone::Error));
    }

    /// Applies one action: the only place state changes. Returns the work it asks of the
    /// runtime (see [`Effect`]), in order.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        if !matches!(
            action,
            Action::Resize { .. }
                | Action::Tick
                | Action::GenerateProgress(_)
                | Action::FilesChanged(_)
                | Action::GeneratedIoDone(_)
                | Action::RunsScanned(_)
                | Action::EvalsScanned(_)
                | Action::SeedsRead(_)
                | Action::Drawn(_)
                | Action::ModelFetchProgress { .. }
        ) {
            self.message = None;
        }
        if let Action::Drawn(layout) = action {
            self.drawn = *layout;
            self.scroll_lists();
            return Vec::new();
        }
        if let Some(overlay) = self.overlay {
            self.update_overlay(overlay, action);
        } else {
            self.update_pane(action);
        }
        self.scroll_lists();
        self.take_effects()
    }

    /// Keeps each list's selection among the rows on screen.
    fn scroll_lists(&mut self) {
        let rows = self.list_rows();
        self.seeds.scroll_into_view(rows);
        let rows = super::panes::generated_view::list_rows(self.drawn.body);
        self.generated.scroll_into_view(rows);
    }

    /// The work queued while applying an action: the app's, then the panes'.
    fn take_effects(&mut self) -> Vec<Effect> {
        let mut effects = std::mem::take(&mut self.effects);
        effects.extend(self.chat.requests.drain(..).map(Effect::Chat));
        effects.extend(self.generated.requests.drain(..).map(Effect::Generate));
        effects.extend(
            self.generated
                .io
                .drain(..)
                .map(|io| Effect::File(FileWork::Generated(io))),
        );
        effects
    }

    fn update_overlay(&mut self, overlay: Overlay, action: Action) {
        let scroll_by = |delta: i32| match overlay {
            Overlay::Help { scroll } => Some(Overlay::Help {
                scroll: scroll.saturating_add_signed(delta as i16),
            }),
            Overlay::Errors { scroll } => Some(Overlay::Errors {
                scroll: scroll.saturating_add_signed(delta as i16),
            }),
            other => Some(other),
        };
        match action {
            Action::Up | Action::ScrollUp => self.overlay = scroll_by(-1),
            Action::Down | Action::ScrollDown => self.overlay = scroll_by(1),
            Action::PageUp => self.overlay = scroll_by(-10),
            Action::PageDown => self.overlay = scroll_by(10),
            Action::Resize { width, height } => self.size = (width, height),
            Action::ToggleHelp if matches!(overlay, Overlay::Help { .. }) => self.overlay = None,
            Action::ToggleHelp => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Action::Quit if overlay == Overlay::ConfirmQuit => {}
            Action::Quit => {
                self.overlay = None;
                self.update_pane(Action::Quit);
            }
            Action::Confirm => {
                self.overlay = None;
                if let Overlay::ConfirmStop { index } | Overlay::ConfirmResume { index } = overlay {
                    if let Some(run) = self.train.runs.get(index) {
                        let path = run.dir.path.clone();
                        self.effects.push(Effect::Run(
                            if matches!(overlay, Overlay::ConfirmStop { .. }) {
                                Job::Stop(path)
                            } else {
                                Job::Resume(path)
                            },
                        ));
                    }
                }
                if let Overlay::ConfirmDelete { index } = overlay {
                    if index < self.seeds.file.records.len() {
                        let r = self.seeds.remove(index);
                        self.seeds.view = SeedsView::List;
                        self.info(format!("Deleted {}. Press u to undo.", r.id));
                    }
                }
            }
            Action::SaveAndQuit if overlay == Overlay::ConfirmQuit => {
                self.overlay = None;
                self.quit_after_save = true;
                self.save();
            }
            Action::DiscardAndQuit if overlay == Overlay::ConfirmQuit => self.should_quit = true,
            Action::KeepMine | Action::TakeTheirs if overlay == Overlay::Conflict => {
                let choice = if action == Action::KeepMine {
                    crate::data::Choice::Ours
                } else {
                    crate::data::Choice::Theirs
                };
                if let Some(id) = self.seeds.file.conflicts.first().map(|c| c.id.clone()) {
                    self.seeds.file.resolve(&id, choice);
                    self.seeds.refresh();
                }
                if self.seeds.file.conflicts.is_empty() {
                    self.overlay = None;
                    self.save();
                }
            }
            Action::Cancel if overlay == Overlay::Conflict => {
                self.overlay = None;
                self.info(format!(
                    "{} conflict(s) left: s shows them again; saving is refused until each is settled.",
                    self.seeds.file.conflicts.len()
                ));
            }
            Action::ExternalEdited { .. }
            | Action::GeneratedEdited { .. }
            | Action::GenerateProgress(_)
            | Action::GenerateEnded { .. }
            | Action::Tick
            | Action::JobDone { .. }
            | Action::ChatLoaded { .. }
            | Action::ChatPiece { .. }
            | Action::ChatDone { .. }
            | Action::ChatModelMissing { .. }
            | Action::ModelFetchProgress { .. }
            | Action::ModelFetched { .. }
            | Action::SeedsSaved(_)
            | Action::GeneratedIoDone(_)
            | Action::TranscriptSaved(_)
            | Action::RunsScanned(_)
            | Action::EvalsScanned(_)
            | Action::EvalJobDone { .. }
            | Action::SeedsRead(_)
            | Action::FilesChanged(_) => self.update_pane(action),
            _ => self.overlay = None,
        }
    }

    fn update_pane(&mut self, action: Action) {
        match action {
            Action::Quit if self.seeds.dirty => self.overlay = Some(Overlay::ConfirmQuit),
            Action::Quit | Action::DiscardAndQuit => self.should_quit = true,
            Action::SaveAndQuit => {
                self.quit_after_save = true;
                self.save();
            }
            Action::Save => self.save(),
            Action::SeedsSaved(outcome) => self.saved(*outcome),
            Action::GeneratedIoDone(done) => {
                if let Err(e) = self.generated.io_done(done) {
                    self.error(e);
                }
            }
            Action::RunsScanned(mut scanned) => {
                let adapters = scanned.adapters.take();
                let again = self.train.scanned(*scanned);
                if let Some(label) = adapters.and_then(|found| self.chat.watch_adapters(found)) {
                    self.info(format!(
                        "A run finished: the tuned column now uses {label}."
                    ));
                }
                if again {
                    self.scan_runs();
                }
            }
            Action::EvalsScanned(scanned) => {
                if self.eval.scanned(*scanned) {
                    self.scan_evals();
                }
            }
            Action::EvalJobDone { result } => {
                self.eval.launching = false;
                match result {
                    Ok(message) => {
                        self.eval.form = None;
                        self.scan_evals();
                        self.info(message);
                    }
                    Err(e) => self.error(e),
                }
            }
            Action::SeedsRead(read) => {
                self.checking_seeds = false;
                if self.overlay.is_none() {
                    match self.seeds.took_disk(*read) {
                        Ok(true) => self.info(format!(
                            "{} changed on disk: {} records now.",
                            self.seeds.file.path.display(),
                            self.seeds.file.records.len()
                        )),
                        Ok(false) => {}
                        Err(e) => self.error(format!("Could not reread the seed file: {e}")),
                    }
                }
            }
            Action::TranscriptSaved(result) => match result {
                Ok(path) => self.info(format!("Saved {} (and .jsonl).", path.display())),
                Err(e) => self.error(format!("Could not save the transcript: {e}")),
            },
            Action::ToggleHelp => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Action::ShowErrors if self.seeds.file.invalid.is_empty() => {
                self.info("The file had no invalid lines.")
            }
            Action::ShowErrors => self.overlay = Some(Overlay::Errors { scroll: 0 }),
            Action::Resize { width, height } => self.size = (width, height),
            Action::NextTab => self.switch_tab(self.tab.step(1)),
            Action::PrevTab => self.switch_tab(self.tab.step(-1)),
            Action::Tick => self.reread(true, true, true),
            Action::FilesChanged(paths) => {
                let under = |dir: &std::path::Path| {
                    !dir.as_os_str().is_empty() && paths.iter().any(|p| p.starts_with(dir))
                };
                let runs = under(&self.train.root) || under(&self.chat.runs_root);
                if self.tab == Tab::Eval
                    && (under(&self.eval.root) || under(&self.eval.experiments_root))
                {
                    self.scan_evals();
                }
                let generated = self.generated.files.kept.parent().is_some_and(under);
                let seeds = paths.contains(&self.seeds.file.path);
                self.reread(runs, generated, seeds);
            }
            Action::GenerateProgress(p) => {
                if matches!(
                    self.generated.run,
                    RunState::Starting | RunState::Running(_)
                ) {
                    self.generated.run = RunState::Running(p);
                }
            }
            Action::GenerateEnded { result, progress } => {
                self.generated.request_read();
                match result {
                    Ok(how) => {
                        self.info(how.clone());
                        self.generated.run = RunState::Ended(how, progress);
                    }
                    Err(e) => {
                        self.error(e.clone());
                        self.generated.run = RunState::Ended(format!("failed: {e}"), progress);
                    }
                }
            }
            Action::GeneratedEdited {
                kept,
                index,
                result,
            } => {
                let list = if kept {
                    GenList::Kept
                } else {
                    GenList::Rejected
                };
                match result.and_then(|r| self.generated.replace(list, index, r)) {
                    Ok(m) => self.info(m),
                    Err(e) => self.error(e),
                }
            }
            Action::JobDone { result } => {
                self.train.launching = false;
                match result {
                    Ok(message) => {
                        self.train.form = None;
                        self.scan_runs();
                        self.info(message);
                    }
                    Err(e) => self.error(e),
                }
            }
            Action::ChatLoaded { column, result } => self.chat.loaded(column, result),
            Action::ChatPiece { column, text } => self.chat.piece(column, &text),
            Action::ChatDone { column, result } => self.chat.done(column, result),
            Action::ChatModelMissing { error } => self.chat.model_missing(error),
            Action::ModelFetchProgress { done, total } => self.chat.fetch_progress(done, total),
            Action::ModelFetched { result } => {
                match &result {
                    Ok(path) => self.info(format!("Fetched {path}; loading it…")),
                    Err(e) => self.error(format!("Could not fetch the default model: {e}")),
                }
                self.chat.fetched(result);
            }
            Action::SendToChat => {
                let record = if self.tab == Tab::Eval {
                    self.eval
                        .selected_item()
                        .map(|item| crate::data::Instruction {
                            id: item.id.clone(),
                            category: crate::data::Category::Other,
                            task: "evaluation_item".into(),
                            instruction: item.instruction.clone(),
                            input: item.input.clone(),
                            output: item.reference.clone(),
                            extra: serde_json::Map::new(),
                        })
                } else if self.tab == Tab::Generated {
                    self.generated.selected_record().cloned()
                } else {
                    self.seeds.selected_record().cloned()
                };
                if let Some(record) = record {
                    self.chat.load_task(&record);
                    self.switch_tab(Tab::Chat);
                    self.info(format!(
                        "{} is in the input: Enter sends it to both models.",
                        record.id
                    ));
                }
            }
            Action::Click { column, row } => self.click(column, row),
            Action::PromoteTask if self.tab == Tab::Generated => {
                let promoted = self.promote();
                self.report(promoted);
            }
            other => {
                let screen = self.screen();
                let reply = self.pane_mut().update(other, screen);
                self.take_reply(reply);
            }
        }
    }

    /// Rereads what changed on disk: the runs (Train pane; a finished run's adapter for the
    /// Chat pane), the generated tasks, the seed file (taken as it is on disk when nothing
    /// here is unsaved; otherwise the next save merges it).
    fn reread(&mut self, runs: bool, generated: bool, seeds: bool) {
        if runs && (self.tab == Tab::Train || self.tab == Tab::Chat) {
            self.scan_runs();
        }
        if generated && self.tab == Tab::Generated {
            self.generated.request_read();
        }
        if runs && self.tab == Tab::Eval {
            self.scan_evals();
        }
        // Not while a save is out: the save's outcome is the file's new state.
        if seeds
            && !self.seeds.dirty
            && self.overlay.is_none()
            && !self.checking_seeds
            && !self.saving
        {
            self.checking_seeds = true;
            self.effects
                .push(Effect::File(FileWork::CheckSeeds(Box::new(
                    self.seeds.disk_check(),
                ))));
        }
    }

    /// Asks for a rescan of the runs ([`FileWork::ScanRuns`]), with the adapters when the
    /// Chat pane is shown.
    fn scan_runs(&mut self) {
        let adapters = (self.tab == Tab::Chat).then(|| self.chat.runs_root.clone());
        if let Some(scan) = self.train.request_scan(adapters) {
            self.effects
                .push(Effect::File(FileWork::ScanRuns(Box::new(scan))));
        }
    }

    /// Asks for a rescan of the evaluations and experiments ([`FileWork::ScanEvals`]).
    fn scan_evals(&mut self) {
        if let Some(scan) = self.eval.request_scan() {
            self.effects
                .push(Effect::File(FileWork::ScanEvals(Box::new(scan))));
        }
    }

    fn switch_tab(&mut self, tab: Tab) {
        self.tab = tab;
        if tab == Tab::Eval {
            // The form's adapters start at the newest run with an adapter.
            self.eval.default_adapters = self
                .train
                .runs
                .iter()
                .find(|r| r.status.state == crate::train::run::RunState::Finished)
                .map(|r| r.id.clone())
                .unwrap_or_default();
            self.scan_evals();
        }
        if tab == Tab::Train {
            self.scan_runs();
        }
        if tab == Tab::Chat {
            self.chat.ensure_loaded();
        }
        if tab == Tab::Generated {
            self.generated.request_read();
        }
    }

    /// Copies the selected kept task into the seeds (fresh `seed-NNN` id, `promoted_from`),
    /// and records `promoted_to` on the task.
    fn promote(&mut self) -> Result<String, String> {
        let g = &self.generated;
        if g.showing != GenList::Kept {
            return Err("Promote works on the kept list (v switches lists).".into());
        }
        let Some(task) = g.selected_record().cloned() else {
            return Err("No task selected.".into());
        };
        if let Some(to) = task.extra.get("promoted_to").and_then(|v| v.as_str()) {
            return Err(format!("{} is already {to}.", task.id));
        }
        let id = self.seeds.file.next_id("seed");
        let mut seed = task.clone();
        seed.id = id.clone();
        seed.extra = serde_json::Map::new();
        seed.extra
            .insert("promoted_from".into(), serde_json::json!(task.id));
        if let Some(p) = task.extra.get("provenance") {
            seed.extra.insert("provenance".into(), p.clone());
        }
        self.generated.mark_promoted(&task.id, &id);
        let end = self.seeds.file.records.len();
        self.seeds.insert(end, seed);
        Ok(format!(
            "Promoted {} to {id} in the Seeds pane: press s to save the seed file.",
            task.id
        ))
    }

    fn click(&mut self, column: u16, row: u16) {
        let layout = self.layout();
        let at = Position::new(column, row);
        if let Some(tab) = layout.tab_at(at) {
            self.switch_tab(tab);
        } else if self.tab != Tab::Seeds
            || self.seeds.searching
            || !matches!(self.seeds.view, SeedsView::List)
        {
        } else if layout.list_inner.contains(at) {
            let clicked = self.seeds.cursor.offset + (row - layout.list_inner.y) as usize;
            if clicked < self.seeds.visible.len() {
                if clicked == self.seeds.cursor.selected {
                    self.seeds.view = SeedsView::Detail { scroll: 0 };
                } else {
                    self.seeds.cursor.selected = clicked;
                }
            }
        }
    }

    /// Asks the runtime to save the seed file ([`FileWork::SaveSeeds`]), merging what another
    /// process changed meanwhile; [`App::saved`] takes the outcome. One save is in flight at
    /// a time: asked again meanwhile, the next starts when it is back.
    fn save(&mut self) {
        if self.saving {
            self.save_again = true;
            return;
        }
        self.saving = true;
        self.effects.push(Effect::File(FileWork::SaveSeeds(Box::new(
            self.seeds.file.save_job(),
        ))));
    }

    /// Takes back a seed file save: reports it in the status line, opens the conflict
    /// prompt when a record changed on both sides, quits when that was asked for.
    fn saved(&mut self, outcome: crate::data::SaveOutcome) {
        self.saving = false;
        let before = self.seeds.file.records.len();
        let result = outcome.result.clone();
        let merged = match &result {
            Ok(report) => report.theirs_applied > 0,
            Err(failure) => failure.conflict,
        };
        let unchanged_since = self.seeds.file.saved(outcome);
        if merged || self.seeds.file.records.len() != before {
            // The records moved under the undo history's indices.
            self.seeds.undo.clear();
        }
        self.seeds.refresh();
        match result {
            Ok(report) => {
                if unchanged_since {
                    self.seeds.dirty = false;
                }
                let kept = match self.seeds.file.invalid.len() {
                    0 => String::new(),
                    n => format!(" and {n} invalid line(s) kept as they were"),
                };
                let theirs = match report.theirs_applied {
                    0 => String::new(),
                    n => format!(" ({n} change(s) another process made meanwhile merged in)"),
                };
                self.info(format!(
                    "Saved {} records{kept} to {}{theirs}.",
                    self.seeds.file.records.len(),
                    self.seeds.file.path.display()
                ));
                if self.quit_after_save && !self.seeds.dirty {
                    self.should_quit = true;
                }
            }
            Err(failure) => {
                self.quit_after_save = false;
                self.save_again = false;
                if failure.conflict {
                    self.overlay = Some(Overlay::Conflict);
                }
                self.error(format!("Not saved: {}", failure.message));
            }
        }
        if std::mem::take(&mut self.save_again) {
            self.save();
        }
    }
}
