//! The Generated pane's state: the kept and rejected tasks of the generation folder
//! (`generated.jsonl`, `rejected.jsonl`, see [`crate::selfinstruct::run`]), a person's review
//! of them (accept, reject, edit, promote to seeds), and the live counters of a run started
//! from the pane.
//!
//! Reviews rewrite both files atomically ([`crate::data::save_atomic`], the previous version
//! kept as `.bak`); they are refused while a run appends to the files.

use crate::data::{read_jsonl, save_atomic, to_jsonl, Instruction};
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
    /// (length, modification time) of both files when last read.
    seen: Option<[(u64, Option<std::time::SystemTime>); 2]>,
}

fn stamp(path: &std::path::Path) -> (u64, Option<std::time::SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

impl GeneratedPane {
    /// A pane on the generation folder `dir`; reads it.
    pub fn new(dir: PathBuf, teacher: String, target: usize) -> GeneratedPane {
        let mut pane = GeneratedPane {
            files: GeneratedFiles::in_dir(&dir),
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
            seen: None,
        };
        pane.reload();
        pane
    }

    /// Rereads the files when they changed since the last read (cheap otherwise).
    pub fn reload(&mut self) {
        let now = [stamp(&self.files.kept), stamp(&self.files.rejected)];
        if self.seen == Some(now) {
            return;
        }
        self.seen = Some(now);
        self.load_error = None;
        let mut read = |path: &std::path::Path| -> Vec<Instruction> {
            if !path.exists() {
                return Vec::new();
            }
            match read_jsonl(path) {
                Ok(loaded) => {
                    if let Some(e) = loaded.errors().next() {
                        self.load_error = Some(format!(
                            "{e} ({} invalid line(s) not shown)",
                            loaded.invalid.len()
                        ));
                    }
                    loaded.records
                }
                Err(e) => {
                    self.load_error = Some(e.to_string());
                    Vec::new()
                }
            }
        };
        let kept = read(&self.files.kept);
        let rejected = read(&self.files.rejected);
        self.kept = kept;
        self.rejected = rejected;
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

    /// An error while a run started here appends to the files (reviews rewrite them).
    ///
    /// # Errors
    /// A run is loading or running.
    pub fn refuse_while_running(&self) -> Result<(), String> {
        if self.running() {
            Err("A run is appending to these files: stop it (x) before reviewing.".into())
        } else {
            Ok(())
        }
    }

    /// Writes both files atomically (each keeps its previous version as `.bak`).
    fn save(&mut self) -> Result<(), String> {
        save_atomic(&self.files.kept, to_jsonl(&self.kept, &[]).as_bytes())
            .and_then(|()| {
                save_atomic(
                    &self.files.rejected,
                    to_jsonl(&self.rejected, &[]).as_bytes(),
                )
            })
            .map_err(|e| e.to_string())?;
        self.seen = Some([stamp(&self.files.kept), stamp(&self.files.rejected)]);
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
    /// A run is active, the shown list is not the rejected one, or a file cannot be written
    /// (nothing changes then).
    pub fn accept(&mut self) -> Result<String, String> {
        self.refuse_while_running()?;
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
        self.refuse_while_running()?;
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
            Err(e) => {
                (self.kept, self.rejected) = before;
                Err(format!("Not saved: {e}"))
            }
        }
    }

    /// Replaces the task at `index` of `list` with `record` (an edit) and saves.
    ///
    /// # Errors
    /// A run is active, the record is gone or its id changed to one in use, or a file
    /// cannot be written.
    pub fn replace(
        &mut self,
        list: GenList,
        index: usize,
        mut record: Instruction,
    ) -> Result<String, String> {
        self.refuse_while_running()?;
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
    /// A run is active, or a file cannot be written.
    pub fn mark_promoted(&mut self, id: &str, seed_id: &str) -> Result<(), String> {
        self.refuse_while_running()?;
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
