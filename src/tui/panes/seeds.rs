//! The Seeds pane's state: the seed file, the filtered and searched view of it, the
//! selection, the detail view and edit form, and the undo history.

use super::list::ListSelection;
use super::{Ask, Pane, Reply, Screen};
use crate::data::{Category, Instruction, InstructionFile};
use crate::tui::form::{EditForm, FormTarget};
use crate::tui::mode::Mode;
use crate::tui::Action;
use ratatui::layout::Rect;

/// What the pane shows.
#[derive(Debug)]
pub enum SeedsView {
    /// The list (with a preview beside it on wide terminals).
    List,
    /// One record in full; `scroll` is in wrapped lines.
    Detail {
        /// First line shown.
        scroll: u16,
    },
    /// The edit form.
    Form(Box<EditForm>),
}

/// One undoable change, holding what is needed to reverse it.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// A record was inserted at `index` (add, duplicate).
    Inserted {
        /// Where.
        index: usize,
    },
    /// `record` was removed from `index`.
    Removed {
        /// Where it was.
        index: usize,
        /// The record.
        record: Instruction,
    },
    /// The record at `index` replaced `record`.
    Replaced {
        /// Where.
        index: usize,
        /// The previous version.
        record: Instruction,
    },
}

/// The Seeds pane.
#[derive(Debug)]
pub struct SeedsPane {
    /// The file being curated.
    pub file: InstructionFile,
    /// Indices into `file.records` that pass the filter and search, in file order.
    pub visible: Vec<usize>,
    /// The selection and the first row shown, as positions in `visible`.
    pub cursor: ListSelection,
    /// Only this category, when set.
    pub filter: Option<Category>,
    /// The search text (matched case-insensitively).
    pub search: String,
    /// Whether keys go into the search.
    pub searching: bool,
    /// List, detail or form.
    pub view: SeedsView,
    /// Changes since the last save.
    pub dirty: bool,
    /// Most recent last.
    pub undo: Vec<Undo>,
    /// (size, modification time) of the file when a [`SeedsCheck`] last looked.
    disk_stamp: Stamp,
}

/// A file's size in bytes and modification time.
type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

/// A check of the seed file for changes made by another process: see
/// [`SeedsPane::disk_check`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeedsCheck {
    path: std::path::PathBuf,
    stamp: Stamp,
    digest: Option<[u8; 32]>,
}

/// What a [`SeedsCheck`] found: the file's stamp, and the file when it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedsRead {
    stamp: Stamp,
    /// What the pane held when the check was made (the base's digest): a read made before
    /// a save of this pane came back describes a file that is no longer there.
    against: Option<[u8; 32]>,
    /// The file as it is now, when it differs from what the pane holds (or why it could
    /// not be read).
    changed: Option<Result<crate::data::Snapshot, String>>,
}

impl SeedsCheck {
    /// Carries the check out (blocking). The slow poll asks every second: reading and hashing
    /// 25,005 records each time would be wasted work, so a file whose size and time are
    /// unchanged is not read.
    pub fn run(self) -> SeedsRead {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if stamp.is_some() && stamp == self.stamp {
            return SeedsRead {
                stamp,
                against: self.digest,
                changed: None,
            };
        }
        let changed = match crate::data::Snapshot::read(&self.path) {
            Ok(disk) if disk.digest == self.digest || disk.digest.is_none() => None,
            Ok(disk) => Some(Ok(disk)),
            Err(e) => Some(Err(e.to_string())),
        };
        SeedsRead {
            stamp,
            against: self.digest,
            changed,
        }
    }
}

impl SeedsPane {
    /// A pane on `file`, showing everything, first record selected.
    pub fn new(file: InstructionFile) -> SeedsPane {
        let mut pane = SeedsPane {
            file,
            visible: Vec::new(),
            cursor: ListSelection::default(),
            filter: None,
            search: String::new(),
            searching: false,
            view: SeedsView::List,
            dirty: false,
            undo: Vec::new(),
            disk_stamp: None,
        };
        pane.refresh();
        pane
    }

    /// Recomputes `visible` after the records, filter or search changed, keeping the selected
    /// record selected when it is still shown.
    pub fn refresh(&mut self) {
        let keep = self.selected_index();
        let query = self.search.to_lowercase();
        self.visible = (0..self.file.records.len())
            .filter(|&i| {
                let r = &self.file.records[i];
                self.filter.is_none_or(|c| r.category == c) && r.matches(&query)
            })
            .collect();
        self.cursor.selected = keep
            .and_then(|k| self.visible.iter().position(|&i| i == k))
            .unwrap_or(self.cursor.selected)
            .min(self.visible.len().saturating_sub(1));
    }

    /// A check of the seed file on disk for the runtime ([`SeedsCheck::run`]): whether
    /// another process changed it since this pane last looked.
    pub fn disk_check(&self) -> SeedsCheck {
        SeedsCheck {
            path: self.file.path.clone(),
            stamp: self.disk_stamp,
            digest: self.file.base.digest,
        }
    }

    /// Takes the seed file as it is on disk when another process changed it (a `seeds add`
    /// elsewhere, found by a [`SeedsCheck`]), keeping the selected record selected. Returns
    /// whether it changed. Only for a pane with nothing unsaved (otherwise it returns
    /// `Ok(false)`: the next save merges instead).
    ///
    /// # Errors
    /// The file could not be read; the pane keeps what it had.
    pub fn took_disk(&mut self, read: SeedsRead) -> Result<bool, String> {
        if read.against != self.file.base.digest {
            // This pane saved meanwhile: the read is older than what it now holds.
            return Ok(false);
        }
        self.disk_stamp = read.stamp;
        let Some(disk) = read.changed.transpose()? else {
            return Ok(false);
        };
        if self.dirty || disk.digest == self.file.base.digest || disk.digest.is_none() {
            return Ok(false);
        }
        let keep = self.selected_record().map(|r| r.id.clone());
        self.file.records = disk.records.clone();
        self.file.invalid = disk.invalid.clone();
        self.file.base = disk;
        self.undo.clear();
        self.refresh();
        if let Some(i) = keep.and_then(|id| self.file.position(&id)) {
            self.select_record(i);
        }
        Ok(true)
    }

    /// Index in `file.records` of the selected record.
    pub fn selected_index(&self) -> Option<usize> {
        self.visible.get(self.cursor.selected).copied()
    }

    /// The selected record.
    pub fn selected_record(&self) -> Option<&Instruction> {
        self.selected_index().map(|i| &self.file.records[i])
    }

    /// Selects the record at file index `index` if it is shown. Returns whether it is.
    pub fn select_record(&mut self, index: usize) -> bool {
        match self.visible.iter().position(|&i| i == index) {
            Some(p) => {
                self.cursor.selected = p;
                true
            }
            None => false,
        }
    }

    /// Moves the selection by `delta` rows, clamped to the list.
    pub fn move_selection(&mut self, delta: isize) {
        self.cursor.move_by(delta, self.visible.len());
    }

    /// Keeps the selection among the `rows` rows on screen.
    pub fn scroll_into_view(&mut self, rows: usize) {
        self.cursor.scroll_into_view(rows, self.visible.len());
    }

    /// The next category in the filter cycle: all, qa, ie, gen, other, all.
    pub fn cycle_filter(&mut self) {
        self.filter = match self.filter {
            None => Some(Category::Qa),
            Some(Category::Qa) => Some(Category::Ie),
            Some(Category::Ie) => Some(Category::Gen),
            Some(Category::Gen) => Some(Category::Other),
            Some(Category::Other) => None,
        };
        self.refresh();
    }

    /// The id prefix for new records like `record`: `seed` for `seed-012`; `seed` when
    /// `record` is `None` or its id is not `<prefix>-<number>`.
    fn id_prefix(record: Option<&Instruction>) -> String {
        record
            .and_then(|r| r.id.rsplit_once('-'))
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or_else(|| "seed".to_string(), |(p, _)| p.to_string())
    }

    /// Inserts a copy of the record at `index` just below it, with a fresh id, and selects
    /// it. Returns the new id.
    pub fn duplicate(&mut self, index: usize) -> String {
        let mut copy = self.file.records[index].clone();
        copy.id = self.file.next_id(&Self::id_prefix(Some(&copy)));
        let id = copy.id.clone();
        self.insert(index + 1, copy);
        id
    }

    /// A form for a new, empty record in the filtered category (or `qa`).
    pub fn new_record_form(&self) -> EditForm {
        let record = Instruction {
            id: self.file.next_id(&Self::id_prefix(self.selected_record())),
            category: self.filter.unwrap_or(Category::Qa),
            task: String::new(),
            instruction: String::new(),
            input: String::new(),
            output: String::new(),
            extra: Default::default(),
        };
        EditForm::new(&record, FormTarget::New)
    }

    /// Inserts `record` at `index`, records the undo step and selects it (clearing the
    /// filter and search if they would hide it).
    pub fn insert(&mut self, index: usize, record: Instruction) {
        self.file.records.insert(index, record);
        self.undo.push(Undo::Inserted { index });
        self.changed_and_select(index);
    }

    /// Removes the record at `index`, recording the undo step.
    pub fn remove(&mut self, index: usize) -> Instruction {
        let record = self.file.records.remove(index);
        self.undo.push(Undo::Removed {
            index,
            record: record.clone(),
        });
        self.dirty = true;
        self.refresh();
        record
    }

    /// Replaces the record at `index`, recording the undo step.
    pub fn replace(&mut self, index: usize, record: Instruction) {
        let old = std::mem::replace(&mut self.file.records[index], record);
        self.undo.push(Undo::Replaced { index, record: old });
        self.changed_and_select(index);
    }

    /// Reverses the last change. Returns a description, or `None` when there is nothing to undo.
    pub fn undo(&mut self) -> Option<String> {
        let step = self.undo.pop()?;
        let (index, what) = match step {
            Undo::Inserted { index } => {
                let r = self.file.records.remove(index);
                (
                    index.min(self.file.records.len().saturating_sub(1)),
                    format!("adding {}", r.id),
                )
            }
            Undo::Removed { index, record } => {
                let what = format!("deleting {}", record.id);
                self.file.records.insert(index, record);
                (index, what)
            }
            Undo::Replaced { index, record } => {
                let what = format!("editing {}", record.id);
                self.file.records[index] = record;
                (index, what)
            }
        };
        self.changed_and_select(index);
        Some(what)
    }

    fn changed_and_select(&mut self, index: usize) {
        self.dirty = true;
        self.refresh();
        if !self.select_record(index) && index < self.file.records.len() {
            self.filter = None;
            self.search.clear();
            self.refresh();
            self.select_record(index);
        }
    }
}

impl SeedsPane {
    fn update_list(&mut self, action: Action, rows: isize) -> Reply {
        match action {
            Action::Up | Action::ScrollUp => self.move_selection(-1),
            Action::Down | Action::ScrollDown => self.move_selection(1),
            Action::PageUp => self.move_selection(-rows),
            Action::PageDown => self.move_selection(rows),
            Action::Top => self.move_selection(isize::MIN / 2),
            Action::Bottom => self.move_selection(isize::MAX / 2),
            Action::Open if self.selected_index().is_some() => {
                self.view = SeedsView::Detail { scroll: 0 }
            }
            Action::StartSearch => self.searching = true,
            Action::Cancel => {
                self.search.clear();
                self.refresh();
            }
            Action::CycleCategory => self.cycle_filter(),
            other => return self.record_action(other),
        }
        Reply::default()
    }

    fn update_search(&mut self, action: Action) {
        match action {
            Action::SearchChar(c) => self.search.push(c),
            Action::SearchBackspace => {
                self.search.pop();
            }
            Action::SearchSubmit => self.searching = false,
            Action::Cancel => {
                self.searching = false;
                self.search.clear();
            }
            _ => {}
        }
        self.cursor.selected = 0;
        self.refresh();
    }

    fn update_detail(&mut self, action: Action, scroll: u16, body: Rect) -> Reply {
        let max = match self.selected_record() {
            Some(r) => {
                let lines = super::seeds_view::detail_line_count(r, body);
                lines.saturating_sub(body.height.saturating_sub(2) as usize) as u16
            }
            None => 0,
        };
        let set = |s: u16| SeedsView::Detail { scroll: s.min(max) };
        self.view = match action {
            Action::Up | Action::ScrollUp => set(scroll.saturating_sub(1)),
            Action::Down | Action::ScrollDown => set(scroll.saturating_add(1)),
            Action::PageUp => set(scroll.saturating_sub(10)),
            Action::PageDown => set(scroll.saturating_add(10)),
            Action::Top => set(0),
            Action::Bottom => set(max),
            Action::Cancel | Action::Open => SeedsView::List,
            other => return self.record_action(other),
        };
        Reply::default()
    }

    /// Actions on the selected record, shared by the list and detail views.
    fn record_action(&mut self, action: Action) -> Reply {
        let selected = self.selected_index();
        match (action, selected) {
            (Action::Add, _) => self.view = SeedsView::Form(Box::new(self.new_record_form())),
            (Action::Edit, Some(i)) => {
                let form = EditForm::new(&self.file.records[i], FormTarget::Edit { index: i });
                self.view = SeedsView::Form(Box::new(form));
            }
            (Action::EditExternal, Some(i)) => {
                return Reply::effect(crate::tui::Effect::EditSeed { index: i })
            }
            (Action::Duplicate, Some(i)) => {
                let id = self.duplicate(i);
                return Reply::info(format!(
                    "Duplicated as {id}. Press e to edit it, u to undo."
                ));
            }
            (Action::Delete, Some(index)) => {
                return Reply {
                    ask: Some(Ask::DeleteSeed(index)),
                    ..Reply::default()
                }
            }
            _ => {}
        }
        Reply::default()
    }

    fn update_form(&mut self, action: Action) -> Reply {
        let SeedsView::Form(form) = &mut self.view else {
            return Reply::default();
        };
        match action {
            Action::FormNextField => form.next_field(),
            Action::FormPrevField => form.prev_field(),
            Action::FormInput(input) => form.input(input),
            Action::Cancel => {
                self.view = SeedsView::List;
                return Reply::info("Changes discarded.");
            }
            Action::FormSubmit => {
                let record = form.to_record();
                let mut problems: Vec<String> = record
                    .problems()
                    .into_iter()
                    .map(|(f, p)| format!("{f}: {p}"))
                    .collect();
                let clash = self.file.position(&record.id);
                if form.target == FormTarget::New && clash.is_some() {
                    problems.push(format!("id: {:?} is already used", record.id));
                }
                if !problems.is_empty() {
                    form.error = Some(problems.join("; "));
                    return Reply::default();
                }
                let target = form.target;
                let id = record.id.clone();
                self.view = SeedsView::List;
                match target {
                    FormTarget::Edit { index } => self.replace(index, record),
                    FormTarget::New => {
                        let end = self.file.records.len();
                        self.insert(end, record);
                    }
                }
                return Reply::info(format!(
                    "Applied changes to {id}. Press s to save the file."
                ));
            }
            _ => {}
        }
        Reply::default()
    }

    /// Takes back an edit made in `$EDITOR` of the record at `index`.
    fn external_edit(&mut self, index: usize, result: Result<Instruction, String>) -> Reply {
        match result {
            Ok(record) if index < self.file.records.len() => {
                let taken = self.file.position(&record.id).is_some_and(|i| i != index);
                if taken {
                    Reply::error(format!(
                        "Edit discarded: id {:?} is already used.",
                        record.id
                    ))
                } else {
                    let id = record.id.clone();
                    self.replace(index, record);
                    Reply::info(format!("Edited {id}. Press s to save."))
                }
            }
            Ok(_) => Reply::error("Edit discarded: the record no longer exists."),
            Err(e) => Reply::error(e),
        }
    }
}

impl Pane for SeedsPane {
    fn mode(&self) -> Mode {
        match &self.view {
            SeedsView::Form(_) => Mode::Form,
            SeedsView::Detail { .. } => Mode::Detail,
            SeedsView::List if self.searching => Mode::Search,
            SeedsView::List => Mode::List,
        }
    }

    fn update(&mut self, action: Action, screen: Screen) -> Reply {
        match action {
            Action::Undo => Reply::info(match self.undo() {
                Some(what) => format!("Undid {what}."),
                None => "Nothing to undo.".into(),
            }),
            Action::ExternalEdited { index, result } => self.external_edit(index, result),
            other => match self.view {
                SeedsView::Form(_) => self.update_form(other),
                SeedsView::Detail { scroll } => self.update_detail(other, scroll, screen.body),
                SeedsView::List if self.searching => {
                    self.update_search(other);
                    Reply::default()
                }
                SeedsView::List => self.update_list(other, screen.rows as isize),
            },
        }
    }

    fn draw(&self, frame: &mut ratatui::Frame, area: Rect, _shared: super::Shared) {
        let areas = super::SeedsAreas::of(area, matches!(self.view, SeedsView::List));
        super::seeds_view::draw(frame, &areas, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse_jsonl;
    use std::path::{Path, PathBuf};

    fn pane() -> SeedsPane {
        let text = crate::config::BUNDLED_SEEDS;
        SeedsPane::new(InstructionFile::new(
            PathBuf::from("seeds.jsonl"),
            parse_jsonl(Path::new("seeds.jsonl"), text).records,
            vec![],
        ))
    }

    #[test]
    fn the_selection_stays_in_view() {
        let mut p = pane();
        p.move_selection(30);
        p.scroll_into_view(10);
        assert_eq!((p.cursor.selected, p.cursor.offset), (30, 21));
        p.move_selection(-100);
        p.scroll_into_view(10);
        assert_eq!((p.cursor.selected, p.cursor.offset), (0, 0));
    }

    #[test]
    fn undo_reverses_insert_remove_and_replace_in_order() {
        let mut p = pane();
        let original = p.file.records.clone();
        let mut copy = p.file.records[3].clone();
        copy.id = "seed-081".into();
        p.insert(4, copy);
        p.remove(0);
        let mut edited = p.file.records[1].clone();
        edited.output = "changed".into();
        p.replace(1, edited);
        assert_ne!(p.file.records, original);
        while p.undo().is_some() {}
        assert_eq!(p.file.records, original);
    }

    #[test]
    fn a_new_record_is_revealed_even_when_the_filter_hides_it() {
        let mut p = pane();
        p.filter = Some(Category::Ie);
        p.refresh();
        let mut r = p.file.records[0].clone(); // a qa record
        r.id = "seed-081".into();
        p.insert(80, r);
        assert_eq!(p.filter, None);
        assert_eq!(p.selected_index(), Some(80));
    }
}
