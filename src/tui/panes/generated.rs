//! The Generated pane's state: the kept and rejected tasks of the generation folder
//! (`generated.jsonl`, `rejected.jsonl`, see [`crate::selfinstruct::run`]), a person's review
//! of them (accept, reject, edit, promote to seeds), and the live counters of a run started
//! from the pane.
//!
//! Reviews rewrite both files atomically ([`crate::data::save_atomic`], the previous version
//! kept as `.bak`) under the files' locks, merging what was appended or changed meanwhile (a
//! `generate` run in another shell, a second workbench; see [`crate::data::merge`]). A review
//! of a task that another process changed too is not applied: the pane shows the files as
//! they are now and says so.
//!
//! The pane does no file I/O while it updates: reads and writes are [`GenIo`] values that
//! the runtime carries out ([`GenIo::run`], off the event loop) and hands back as
//! [`GenIoDone`] ([`GeneratedPane::io_done`]). One is in flight at a time (the followers
//! travel with it); a review shows at once and is written next.

use super::list::ListSelection;
use crate::data::follow::{Change, Follower};
use crate::data::merge::{merge3, merge_invalid, with_lock, Snapshot};
use crate::data::{save_atomic, to_jsonl, Instruction, InvalidLine, SaveFailure, StoreError};
use crate::selfinstruct::run::{GeneratedFiles, Progress};
use serde_json::json;
use std::path::PathBuf;

/// The share of each task group in the paper's 25,005 generated tasks (BioInstruct, Tran et
/// al. 2024, Figure 2), in [`crate::data::Category::ALL`] order (qa, ie, gen, other), in percent.
pub const PAPER_MIX: [f64; 4] = [22.8, 33.8, 33.5, 10.0];

/// Which list the pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenList {
    /// Tasks that passed the filters (or a reviewer).
    Kept,
    /// Tasks the filters (or a reviewer) turned down.
    Rejected,
}

/// A request from the pane to the event loop, which owns the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenRequest {
    /// Start a run with this teacher to this many kept tasks.
    Start {
        /// Teacher name.
        teacher: String,
        /// Kept tasks to reach.
        target: usize,
    },
    /// Stop the run (requests in flight are abandoned).
    Stop,
}

/// File work of the Generated pane for the runtime: read what changed, or write a review.
/// Carries the pane's followers, which come back in the [`GenIoDone`].
#[derive(Debug, Clone, PartialEq)]
pub enum GenIo {
    /// Read what was appended to or changed in both files.
    Read {
        /// The followers of the kept and rejected files.
        follow: Box<[Follower; 2]>,
    },
    /// Write both files (kept, rejected) as the pane holds them, merging what changed on
    /// disk since `base`.
    Write(Box<GenWrite>),
}

/// A write of both files: see [`GenIo::Write`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenWrite {
    follow: [Follower; 2],
    paths: [PathBuf; 2],
    base: [Snapshot; 2],
    ours: [Vec<Instruction>; 2],
}

/// What a [`GenIo`] found or did, for [`GeneratedPane::io_done`].
#[derive(Debug, Clone, PartialEq)]
pub enum GenIoDone {
    /// A read: each file's change, or why it could not be read.
    Read {
        /// The followers, moved on.
        follow: Box<[Follower; 2]>,
        /// Kept file, rejected file.
        changes: Box<[Result<Change, String>; 2]>,
    },
    /// A write: the lists sent, and what was written (each file's records, invalid lines
    /// and digest) or why nothing was.
    Written {
        /// The followers, past what was written.
        follow: Box<[Follower; 2]>,
        /// The lists the write was given.
        sent: Box<[Vec<Instruction>; 2]>,
        /// What the files hold now.
        result: Result<Box<[Snapshot; 2]>, SaveFailure>,
    },
}

impl GenIo {
    /// Carries the work out: blocking file I/O, under both files' locks for a write.
    pub fn run(self) -> GenIoDone {
        match self {
            GenIo::Read { mut follow } => {
                let changes = Box::new([0, 1].map(|i| follow[i].poll().map_err(|e| e.to_string())));
                GenIoDone::Read { follow, changes }
            }
            GenIo::Write(w) => {
                let GenWrite {
                    mut follow,
                    paths,
                    base,
                    ours,
                } = *w;
                let result = write_both(&paths, &base, &ours).map(|written| {
                    // Each follower goes on from the end of what was just written.
                    let mut followers = follow.iter_mut();
                    Box::new(written.map(|(records, invalid, text)| {
                        if let Some(f) = followers.next() {
                            f.assume(text.as_bytes());
                        }
                        Snapshot {
                            records,
                            invalid,
                            digest: Some(crate::data::merge::digest(text.as_bytes())),
                        }
                    }))
                });
                GenIoDone::Written {
                    follow: Box::new(follow),
                    sent: Box::new(ours),
                    result: result.map_err(|e| SaveFailure {
                        conflict: matches!(e, StoreError::Conflict { .. }),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// A file as written: its records, invalid lines and text.
type Written = (Vec<Instruction>, Vec<InvalidLine>, String);

/// Writes both files atomically (each keeps its previous version as `.bak`), holding both
/// files' locks, after merging in what other processes appended or changed since `base`
/// (their invalid lines are kept too). Returns each file's records, invalid lines and text
/// (kept, rejected).
///
/// # Errors
/// A file cannot be read or written, or a task changed here was changed differently on disk
/// ([`StoreError::Conflict`]; nothing is written then).
fn write_both(
    paths: &[PathBuf; 2],
    base: &[Snapshot; 2],
    ours: &[Vec<Instruction>; 2],
) -> Result<[Written; 2], StoreError> {
    with_lock(&paths[0], || {
        with_lock(&paths[1], || {
            let disk = [Snapshot::read(&paths[0])?, Snapshot::read(&paths[1])?];
            let mut merged: [(Vec<Instruction>, Vec<InvalidLine>); 2] = Default::default();
            for i in 0..2 {
                let m = merge3(&base[i].records, &ours[i], &disk[i].records);
                if !m.conflicts.is_empty() {
                    return Err(StoreError::Conflict {
                        path: paths[i].clone(),
                        ids: m.conflicts.into_iter().map(|c| c.id).collect(),
                    });
                }
                let invalid = merge_invalid(&base[i].invalid, &[], &disk[i].invalid);
                merged[i] = (m.records, invalid);
            }
            let write = |(records, invalid): (Vec<Instruction>, Vec<InvalidLine>),
                         path: &PathBuf|
             -> Result<Written, StoreError> {
                let text = to_jsonl(&records, &invalid);
                save_atomic(path, text.as_bytes())?;
                Ok((records, invalid, text))
            };
            let [kept, rejected] = merged;
            Ok([write(kept, &paths[0])?, write(rejected, &paths[1])?])
        })
    })
}

/// The state of the run started from the pane.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// None started.
    Idle,
    /// Loading the teacher and opening the files.
    Starting,
    /// Running; the latest counters.
    Running(Progress),
    /// Ended: how, and the final counters.
    Ended(String, Option<Progress>),
}

/// The Generated pane.
#[derive(Debug, Clone)]
pub struct GeneratedPane {
    /// The files shown.
    pub files: GeneratedFiles,
    /// Kept tasks, in file order.
    pub kept: Vec<Instruction>,
    /// Rejected tasks, in file order.
    pub rejected: Vec<Instruction>,
    /// The list shown.
    pub showing: GenList,
    /// The selected row of the shown list and the first on screen.
    pub cursor: ListSelection,
    /// Whether the detail view (the task beside its most similar instruction) is open.
    pub detail: bool,
    /// A file that could not be read, and why.
    pub load_error: Option<String>,
    /// The teacher and target a run started here uses (`[generate] teacher`, `target`).
    pub teacher: String,
    /// Kept tasks a run started here aims for.
    pub target: usize,
    /// The run started from the pane.
    pub run: RunState,
    /// Requests for the event loop.
    pub requests: Vec<GenRequest>,
    /// File work for the runtime ([`crate::tui::effect::FileWork::Generated`]).
    pub io: Vec<GenIo>,
    /// Both files followed as they grow (kept, rejected): a run's appends are read alone.
    /// `None` while a [`GenIo`] holding them is in flight.
    follow: Option<[Follower; 2]>,
    /// Both files as last read or written here (kept, rejected), for merging at save time.
    base: [Snapshot; 2],
    /// A reread is wanted once the work in flight is done.
    want_read: bool,
    /// A review waits to be written (or is being written).
    unsaved: bool,
}

impl GeneratedPane {
    /// A pane on the generation folder `dir`; reads it.
    pub fn new(dir: PathBuf, teacher: String, target: usize) -> GeneratedPane {
        let files = GeneratedFiles::in_dir(&dir);
        let mut pane = GeneratedPane {
            kept: Vec::new(),
            rejected: Vec::new(),
            showing: GenList::Kept,
            cursor: ListSelection::default(),
            detail: false,
            load_error: None,
            teacher,
            target,
            run: RunState::Idle,
            requests: Vec::new(),
            io: Vec::new(),
            follow: Some([Follower::new(&files.kept), Follower::new(&files.rejected)]),
            base: Default::default(),
            want_read: false,
            unsaved: false,
            files,
        };
        pane.reload_now();
        pane
    }

    /// Reads the files here and now (blocking): for a pane being set up, before the event
    /// loop runs. Work already queued for the runtime is done first.
    pub fn reload_now(&mut self) {
        self.want_read = true;
        self.issue();
        while let Some(work) = self.io.pop() {
            // The one in flight: done here instead of by the runtime.
            let _ = self.io_done(work.run());
        }
    }

    /// Asks for a reread of what changed in the files since the last read (a [`GenIo::Read`]
    /// for the runtime, once the work in flight is done): only the appended lines while a
    /// run appends, both files whole after a rewrite.
    pub fn request_read(&mut self) {
        self.want_read = true;
        self.issue();
    }

    /// Queues the review just made for writing.
    fn request_write(&mut self) {
        self.unsaved = true;
        self.issue();
    }

    /// Hands the next piece of file work to the runtime, unless one is in flight.
    fn issue(&mut self) {
        if !self.unsaved && !self.want_read {
            return;
        }
        let Some(follow) = self.follow.take() else {
            return;
        };
        if self.unsaved {
            self.io.push(GenIo::Write(Box::new(GenWrite {
                follow,
                paths: [self.files.kept.clone(), self.files.rejected.clone()],
                base: self.base.clone(),
                ours: [self.kept.clone(), self.rejected.clone()],
            })));
        } else {
            self.want_read = false;
            self.io.push(GenIo::Read {
                follow: Box::new(follow),
            });
        }
    }

    /// Takes back finished file work; returns what to tell the person, if anything
    /// (`Err` for a failed write: the pane then rereads the files as they are).
    ///
    /// # Errors
    /// The write failed or met a task changed on disk meanwhile (the message says which).
    pub fn io_done(&mut self, done: GenIoDone) -> Result<(), String> {
        let result = match done {
            GenIoDone::Read { follow, changes } => {
                self.follow = Some(*follow);
                self.apply_read(*changes);
                Ok(())
            }
            GenIoDone::Written {
                follow,
                sent,
                result,
            } => {
                match result {
                    Ok(snapshots) => {
                        self.follow = Some(*follow);
                        let [sent_kept, sent_rejected] = *sent;
                        let [kept, rejected] = *snapshots;
                        let changed_since =
                            self.kept != sent_kept || self.rejected != sent_rejected;
                        if changed_since {
                            // Reviews made while this one was written: kept on top, written next.
                            self.kept = merge3(&sent_kept, &self.kept, &kept.records).records;
                            self.rejected =
                                merge3(&sent_rejected, &self.rejected, &rejected.records).records;
                        } else {
                            self.unsaved = false;
                            self.kept = kept.records.clone();
                            self.rejected = rejected.records.clone();
                        }
                        self.base = [kept, rejected];
                        self.clamp();
                        Ok(())
                    }
                    Err(failure) => {
                        // Show the files as they are: reread both whole, reviews not written
                        // dropped.
                        self.unsaved = false;
                        self.follow = Some([
                            Follower::new(&self.files.kept),
                            Follower::new(&self.files.rejected),
                        ]);
                        self.want_read = true;
                        Err(if failure.conflict {
                            format!(
                                "Not applied: {}; the pane now shows the files as they are.",
                                failure.message
                            )
                        } else {
                            format!(
                                "Not saved: {}; the pane now shows the files as they are.",
                                failure.message
                            )
                        })
                    }
                }
            }
        };
        self.issue();
        result
    }

    /// Applies a read's changes. A file replaced while a review waits to be written is
    /// merged with it ([`merge3`]) instead of taken as it is.
    fn apply_read(&mut self, changes: [Result<Change, String>; 2]) {
        let mut changed = false;
        for (i, change) in changes.into_iter().enumerate() {
            changed |= !matches!(change, Ok(Change::Unchanged));
            match change {
                Ok(Change::Unchanged) => continue,
                Ok(Change::Appended(loaded)) => {
                    let list = if i == 0 {
                        &mut self.kept
                    } else {
                        &mut self.rejected
                    };
                    list.extend(loaded.records.iter().cloned());
                    let base = &mut self.base[i];
                    base.records.extend(loaded.records);
                    base.invalid.extend(loaded.invalid);
                    base.digest = self.follow.as_ref().map(|f| f[i].digest());
                }
                Ok(Change::Replaced(snapshot)) => {
                    let list = if i == 0 {
                        &mut self.kept
                    } else {
                        &mut self.rejected
                    };
                    *list = if self.unsaved {
                        merge3(&self.base[i].records, list, &snapshot.records).records
                    } else {
                        snapshot.records.clone()
                    };
                    self.base[i] = snapshot;
                }
                Err(e) => {
                    self.load_error = Some(e);
                    return;
                }
            }
        }
        if !changed {
            return;
        }
        self.load_error = None;
        let invalid: Vec<&InvalidLine> = self.base.iter().flat_map(|b| &b.invalid).collect();
        if let Some(e) = invalid.first().and_then(|l| l.errors.first()) {
            self.load_error = Some(format!("{e} ({} invalid line(s) not shown)", invalid.len()));
        }
        self.clamp();
    }

    fn clamp(&mut self) {
        let n = self.list().len();
        self.cursor.clamp(n);
    }

    /// The list shown.
    pub fn list(&self) -> &[Instruction] {
        match self.showing {
            GenList::Kept => &self.kept,
            GenList::Rejected => &self.rejected,
        }
    }

    /// The selected task of the shown list.
    pub fn selected_record(&self) -> Option<&Instruction> {
        self.list().get(self.cursor.selected)
    }

    /// Moves the selection by `delta` rows, within the list.
    pub fn move_selection(&mut self, delta: isize) {
        let n = self.list().len();
        self.cursor.move_by(delta, n);
    }

    /// Keeps the selected row on screen in a list of `rows` rows.
    pub fn scroll_into_view(&mut self, rows: usize) {
        let n = self.list().len();
        self.cursor.scroll_into_view(rows, n);
    }

    /// Shows the other list.
    pub fn switch_list(&mut self) {
        self.showing = match self.showing {
            GenList::Kept => GenList::Rejected,
            GenList::Rejected => GenList::Kept,
        };
        self.cursor = ListSelection::default();
        self.detail = false;
    }

    /// Whether a run started here is loading or running.
    pub fn running(&self) -> bool {
        matches!(self.run, RunState::Starting | RunState::Running(_))
    }

    /// Kept tasks per category, in [`crate::data::Category::ALL`] order.
    pub fn counts(&self) -> [usize; 4] {
        crate::data::category_counts(&self.kept)
    }

    /// The instruction with `id` among `seeds`, kept and rejected tasks.
    pub fn find<'a>(&'a self, seeds: &'a [Instruction], id: &str) -> Option<&'a Instruction> {
        seeds
            .iter()
            .chain(&self.kept)
            .chain(&self.rejected)
            .find(|r| r.id == id)
    }

    fn review(r: &mut Instruction, decision: &str) {
        r.extra.insert(
            "review".into(),
            json!({"decision": decision, "time": crate::selfinstruct::run::now_rfc3339()}),
        );
    }

    /// Moves the selected rejected task to the kept file: a person overrides the filters.
    ///
    /// Both files are written next ([`GenIo::Write`]); a failed write is reported by
    /// [`GeneratedPane::io_done`].
    ///
    /// # Errors
    /// The shown list is not the rejected one.
    pub fn accept(&mut self) -> Result<String, String> {
        if self.showing != GenList::Rejected || self.cursor.selected >= self.rejected.len() {
            return Err("Accept works on the rejected list (v switches lists).".into());
        }
        let mut r = self.rejected.remove(self.cursor.selected);
        r.extra.shift_remove("rejection");
        Self::review(&mut r, "accepted");
        let id = r.id.clone();
        self.kept.push(r);
        Ok(self.finish_move(format!("Accepted {id}: moved to the kept tasks.")))
    }

    /// Moves the selected kept task to the rejected file, with `rejection.reason = "reviewer"`.
    ///
    /// # Errors
    /// As [`GeneratedPane::accept`], on the kept list.
    pub fn reject(&mut self) -> Result<String, String> {
        if self.showing != GenList::Kept || self.cursor.selected >= self.kept.len() {
            return Err("Reject works on the kept list (v switches lists).".into());
        }
        let mut r = self.kept.remove(self.cursor.selected);
        r.extra
            .insert("rejection".into(), json!({"reason": "reviewer"}));
        Self::review(&mut r, "rejected");
        let id = r.id.clone();
        self.rejected.push(r);
        Ok(self.finish_move(format!("Rejected {id}: moved to the rejected tasks.")))
    }

    fn finish_move(&mut self, message: String) -> String {
        self.request_write();
        self.clamp();
        message
    }

    /// Replaces the task at `index` of `list` with `record` (an edit), to be written next.
    ///
    /// # Errors
    /// The record is gone, or its id changed to one in use, or it is not a valid record.
    pub fn replace(
        &mut self,
        list: GenList,
        index: usize,
        mut record: Instruction,
    ) -> Result<String, String> {
        // Index of the edited task among kept then rejected.
        let at = match list {
            GenList::Kept => index,
            GenList::Rejected => self.kept.len() + index,
        };
        let taken = self
            .kept
            .iter()
            .chain(&self.rejected)
            .enumerate()
            .any(|(i, r)| i != at && r.id == record.id);
        if taken {
            return Err(format!(
                "Edit discarded: id {:?} is already used.",
                record.id
            ));
        }
        if let Some(p) = record.problems().first() {
            return Err(format!("Edit discarded: {}: {}", p.0, p.1));
        }
        let target = match list {
            GenList::Kept => &mut self.kept,
            GenList::Rejected => &mut self.rejected,
        };
        let Some(slot) = target.get_mut(index) else {
            return Err("Edit discarded: the task no longer exists.".into());
        };
        Self::review(&mut record, "edited");
        let id = record.id.clone();
        *slot = record;
        Ok(self.finish_move(format!("Edited {id}.")))
    }

    /// Marks the kept task `id` as promoted to the seed `seed_id`, to be written next.
    pub fn mark_promoted(&mut self, id: &str, seed_id: &str) {
        if let Some(r) = self.kept.iter_mut().find(|r| r.id == id) {
            r.extra.insert("promoted_to".into(), json!(seed_id));
        }
        self.finish_move(String::new());
    }

    /// The category shares of the kept tasks, in percent, in [`crate::data::Category::ALL`] order.
    pub fn mix(&self) -> [f64; 4] {
        let counts = self.counts();
        let total = counts.iter().sum::<usize>().max(1) as f64;
        counts.map(|n| 100.0 * n as f64 / total)
    }
}

impl super::Pane for GeneratedPane {
    fn mode(&self) -> crate::tui::mode::Mode {
        crate::tui::mode::Mode::Generated
    }

    /// The pane's own keys; promoting a task to the seeds and sending one to the Chat pane
    /// reach other panes, so the app does those.
    fn update(&mut self, action: crate::tui::Action, screen: super::Screen) -> super::Reply {
        use super::Reply;
        use crate::tui::Action;
        let rows = screen.rows as isize;
        let delta = match action {
            Action::Up | Action::ScrollUp => Some(-1),
            Action::Down | Action::ScrollDown => Some(1),
            Action::PageUp => Some(-rows),
            Action::PageDown => Some(rows),
            Action::Top => Some(isize::MIN / 2),
            Action::Bottom => Some(isize::MAX / 2),
            _ => None,
        };
        if let Some(delta) = delta {
            self.move_selection(delta);
            return Reply::default();
        }
        match action {
            Action::Open => {
                self.detail = !self.detail && self.selected_record().is_some();
                Reply::default()
            }
            Action::Cancel => {
                self.detail = false;
                Reply::default()
            }
            Action::SwitchGenList => {
                self.switch_list();
                Reply::default()
            }
            Action::AcceptTask => self.accept().map_or_else(Reply::error, Reply::info),
            Action::RejectTask => self.reject().map_or_else(Reply::error, Reply::info),
            Action::EditExternal if self.selected_record().is_some() => {
                Reply::effect(crate::tui::Effect::EditGenerated {
                    kept: self.showing == GenList::Kept,
                    index: self.cursor.selected,
                })
            }
            Action::StartGenerate if self.running() => Reply::error("A run is already going."),
            Action::StartGenerate => {
                self.run = RunState::Starting;
                self.requests.push(GenRequest::Start {
                    teacher: self.teacher.clone(),
                    target: self.target,
                });
                Reply::info(format!(
                    "Starting a run with {} to {} kept tasks…",
                    self.teacher, self.target
                ))
            }
            Action::StopGenerate if self.running() => {
                self.requests.push(GenRequest::Stop);
                Reply::info("Stopping the run…")
            }
            Action::StopGenerate => Reply::error("No run is going."),
            _ => Reply::default(),
        }
    }

    fn draw(&self, frame: &mut ratatui::Frame, area: ratatui::layout::Rect, shared: super::Shared) {
        super::generated_view::draw(frame, area, self, shared.seeds);
    }
}
