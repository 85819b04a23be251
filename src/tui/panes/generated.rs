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

use crate::data::follow::{Change, Follower};
use crate::data::merge::{merge3, merge_invalid, with_lock, Snapshot};
use crate::data::{save_atomic, to_jsonl, Instruction, StoreError};
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
    /// Selected row of the shown list.
    pub selected: usize,
    /// First row on screen.
    pub offset: usize,
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
    /// Both files followed as they grow (kept, rejected): a run's appends are read alone.
    follow: [Follower; 2],
    /// Both files as last read or written here (kept, rejected), for merging at save time.
    base: [Snapshot; 2],
}

impl GeneratedPane {
    /// A pane on the generation folder `dir`; reads it.
    pub fn new(dir: PathBuf, teacher: String, target: usize) -> GeneratedPane {
        let files = GeneratedFiles::in_dir(&dir);
        let mut pane = GeneratedPane {
            kept: Vec::new(),
            rejected: Vec::new(),
            showing: GenList::Kept,
            selected: 0,
            offset: 0,
            detail: false,
            load_error: None,
            teacher,
            target,
            run: RunState::Idle,
            requests: Vec::new(),
            follow: [Follower::new(&files.kept), Follower::new(&files.rejected)],
            base: Default::default(),
            files,
        };
        pane.reload();
        pane
    }

    /// Reads what changed in the files since the last read: only the appended lines while
    /// a run appends, both files whole after a rewrite (cheap when nothing changed).
    pub fn reload(&mut self) {
        let mut changed = false;
        for i in 0..2 {
            let change = self.follow[i].poll();
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
                    base.digest = Some(self.follow[i].digest());
                }
                Ok(Change::Replaced(snapshot)) => {
                    let list = if i == 0 {
                        &mut self.kept
                    } else {
                        &mut self.rejected
                    };
                    *list = snapshot.records.clone();
                    self.base[i] = snapshot;
                }
                Err(e) => {
                    self.load_error = Some(e.to_string());
                    return;
                }
            }
        }
        if !changed {
            return;
        }
        self.load_error = None;
        let invalid: Vec<&crate::data::InvalidLine> =
            self.base.iter().flat_map(|b| &b.invalid).collect();
        if let Some(e) = invalid.first().and_then(|l| l.errors.first()) {
            self.load_error = Some(format!("{e} ({} invalid line(s) not shown)", invalid.len()));
        }
        self.clamp();
    }

    fn clamp(&mut self) {
        let n = self.list().len();
        self.selected = self.selected.min(n.saturating_sub(1));
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
        self.list().get(self.selected)
    }

    /// Moves the selection by `delta` rows, within the list.
    pub fn move_selection(&mut self, delta: isize) {
        let n = self.list().len();
        if n == 0 {
            return;
        }
        self.selected = self.selected.saturating_add_signed(delta).min(n - 1);
    }

    /// Keeps the selected row on screen in a list of `rows` rows.
    pub fn scroll_into_view(&mut self, rows: usize) {
        let rows = rows.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
    }

    /// Shows the other list.
    pub fn switch_list(&mut self) {
        self.showing = match self.showing {
            GenList::Kept => GenList::Rejected,
            GenList::Rejected => GenList::Kept,
        };
        self.selected = 0;
        self.offset = 0;
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

    /// Writes both files atomically (each keeps its previous version as `.bak`), holding
    /// both files' locks, after merging in what other processes appended or changed since
    /// they were read (their invalid lines are kept too).
    ///
    /// # Errors
    /// A file cannot be read or written, or a task changed here was changed differently on
    /// disk (nothing is written then).
    fn save(&mut self) -> Result<(), StoreError> {
        let (kept_path, rejected_path) = (self.files.kept.clone(), self.files.rejected.clone());
        let written = with_lock(&kept_path, || {
            with_lock(&rejected_path, || {
                let disk = [Snapshot::read(&kept_path)?, Snapshot::read(&rejected_path)?];
                let mut merged = Vec::new();
                for ((ours, base), (disk, path)) in [&self.kept, &self.rejected]
                    .into_iter()
                    .zip(&self.base)
                    .zip(disk.iter().zip([&kept_path, &rejected_path]))
                {
                    let m = merge3(&base.records, ours, &disk.records);
                    if !m.conflicts.is_empty() {
                        return Err(StoreError::Conflict {
                            path: path.clone(),
                            ids: m.conflicts.into_iter().map(|c| c.id).collect(),
                        });
                    }
                    let invalid = merge_invalid(&base.invalid, &[], &disk.invalid);
                    merged.push((m.records, invalid));
                }
                let mut written = Vec::new();
                for ((records, invalid), path) in
                    merged.into_iter().zip([&kept_path, &rejected_path])
                {
                    let text = to_jsonl(&records, &invalid);
                    save_atomic(path, text.as_bytes())?;
                    written.push((records, invalid, text));
                }
                Ok(written)
            })
        })?;
        // What was written is the new base; appends after it are followed from there.
        for (i, (records, invalid, text)) in written.into_iter().enumerate() {
            self.follow[i].assume(text.as_bytes());
            if i == 0 {
                self.kept = records.clone();
            } else {
                self.rejected = records.clone();
            }
            self.base[i] = Snapshot {
                records,
                invalid,
                digest: Some(crate::data::merge::digest(text.as_bytes())),
            };
        }
        Ok(())
    }

    fn review(r: &mut Instruction, decision: &str) {
        r.extra.insert(
            "review".into(),
            json!({"decision": decision, "time": crate::selfinstruct::run::now_rfc3339()}),
        );
    }

    /// Moves the selected rejected task to the kept file: a person overrides the filters.
    ///
    /// # Errors
    /// The shown list is not the rejected one, or a file cannot be written
    /// (nothing changes then).
    pub fn accept(&mut self) -> Result<String, String> {
        if self.showing != GenList::Rejected || self.selected >= self.rejected.len() {
            return Err("Accept works on the rejected list (v switches lists).".into());
        }
        let before = (self.kept.clone(), self.rejected.clone());
        let mut r = self.rejected.remove(self.selected);
        r.extra.shift_remove("rejection");
        Self::review(&mut r, "accepted");
        let id = r.id.clone();
        self.kept.push(r);
        self.finish_move(before, format!("Accepted {id}: moved to the kept tasks."))
    }

    /// Moves the selected kept task to the rejected file, with `rejection.reason = "reviewer"`.
    ///
    /// # Errors
    /// As [`GeneratedPane::accept`], on the kept list.
    pub fn reject(&mut self) -> Result<String, String> {
        if self.showing != GenList::Kept || self.selected >= self.kept.len() {
            return Err("Reject works on the kept list (v switches lists).".into());
        }
        let before = (self.kept.clone(), self.rejected.clone());
        let mut r = self.kept.remove(self.selected);
        r.extra
            .insert("rejection".into(), json!({"reason": "reviewer"}));
        Self::review(&mut r, "rejected");
        let id = r.id.clone();
        self.rejected.push(r);
        self.finish_move(
            before,
            format!("Rejected {id}: moved to the rejected tasks."),
        )
    }

    fn finish_move(
        &mut self,
        before: (Vec<Instruction>, Vec<Instruction>),
        message: String,
    ) -> Result<String, String> {
        match self.save() {
            Ok(()) => {
                self.clamp();
                Ok(message)
            }
            Err(e @ StoreError::Conflict { .. }) => {
                self.follow = [
                    Follower::new(&self.files.kept),
                    Follower::new(&self.files.rejected),
                ];
                self.reload();
                Err(format!(
                    "Not applied: {} was changed on disk by another process meanwhile; the pane now shows the files as they are.",
                    match &e {
                        StoreError::Conflict { ids, .. } => ids.join(", "),
                        _ => String::new(),
                    }
                ))
            }
            Err(e) => {
                (self.kept, self.rejected) = before;
                Err(format!("Not saved: {e}"))
            }
        }
    }

    /// Replaces the task at `index` of `list` with `record` (an edit) and saves.
    ///
    /// # Errors
    /// The record is gone or its id changed to one in use, or a file
    /// cannot be written.
    pub fn replace(
        &mut self,
        list: GenList,
        index: usize,
        mut record: Instruction,
    ) -> Result<String, String> {
        let before = (self.kept.clone(), self.rejected.clone());
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
        self.finish_move(before, format!("Edited {id}."))
    }

    /// Marks the kept task `id` as promoted to the seed `seed_id` and saves.
    ///
    /// # Errors
    /// A file cannot be written, or the task changed on disk meanwhile.
    pub fn mark_promoted(&mut self, id: &str, seed_id: &str) -> Result<(), String> {
        let before = (self.kept.clone(), self.rejected.clone());
        if let Some(r) = self.kept.iter_mut().find(|r| r.id == id) {
            r.extra.insert("promoted_to".into(), json!(seed_id));
        }
        self.finish_move(before, String::new()).map(|_| ())
    }

    /// The category shares of the kept tasks, in percent, in [`crate::data::Category::ALL`] order.
    pub fn mix(&self) -> [f64; 4] {
        let counts = self.counts();
        let total = counts.iter().sum::<usize>().max(1) as f64;
        counts.map(|n| 100.0 * n as f64 / total)
    }
}
