//! Instruction records and the files that hold them.
//!
//! The workspace keeps seeds (and, later, generated tasks) as JSONL, one
//! [`Instruction`] a line; Alpaca JSON is read and written for exchange with other tools.

pub mod follow;
pub mod merge;
mod record;
mod store;

pub use merge::{Choice, Conflict, Snapshot};
pub use record::{id_problem, task_problem, Category, Instruction, UnknownCategory, KNOWN_FIELDS};
pub use store::{
    backup_path, parse_alpaca, parse_jsonl, parse_jsonl_lenient, read_alpaca, read_jsonl,
    replace_atomic, save_atomic, to_alpaca, to_jsonl, to_sharegpt, InvalidLine, LineError, Loaded,
    StoreError,
};

use std::path::{Path, PathBuf};

/// The file formats bioinstruct reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line: id, category, task, instruction, input, output (read: only
    /// instruction and output are required).
    Jsonl,
    /// One JSON array of {instruction, input, output}, as Stanford Alpaca's data and
    /// BioInstruct's released `biomed_instruct_25k.json` (what LLaMA-Factory's and axolotl's
    /// `alpaca` format read).
    Alpaca,
    /// ShareGPT: `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt",
    /// "value": ...}]}` records, as a JSON array (LLaMA-Factory's `sharegpt` format) or one a
    /// line (axolotl's).
    Sharegpt,
}

impl Format {
    /// Guesses the format of a file's text: an array (Alpaca, or ShareGPT when its first
    /// element has `conversations`), else JSONL (ShareGPT when its first line has
    /// `conversations`). A ShareGPT record is read as such whatever the guess.
    pub fn sniff(text: &str) -> Format {
        let start = text.trim_start();
        let first_record = if let Some(rest) = start.strip_prefix('[') {
            rest.trim_start()
        } else {
            start.lines().next().unwrap_or_default()
        };
        let sharegpt = first_record.starts_with('{')
            && first_record
                .get(..first_record.len().min(200))
                .is_some_and(|head| head.contains("\"conversations\""));
        match (start.starts_with('['), sharegpt) {
            (_, true) => Format::Sharegpt,
            (true, false) => Format::Alpaca,
            (false, false) => Format::Jsonl,
        }
    }
}

/// Reads an instruction file made elsewhere (for import, dedupe, training data) in `format`,
/// or the sniffed one when `None`: JSONL, a JSON array (Alpaca), or ShareGPT either way.
/// Only `instruction` and `output` are required: a missing `id` is left empty for the
/// caller to assign, `category` becomes `other` and `task` `imported`.
///
/// # Errors
/// As [`read_jsonl`] and [`read_alpaca`].
pub fn read_any(path: &Path, format: Option<Format>) -> Result<Loaded, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let array = text.trim_start().starts_with('[');
    match format.unwrap_or_else(|| Format::sniff(&text)) {
        Format::Jsonl => Ok(store::parse_jsonl_lenient(path, &text)),
        Format::Alpaca => parse_alpaca(path, &text),
        Format::Sharegpt if array => parse_alpaca(path, &text),
        Format::Sharegpt => Ok(store::parse_jsonl_lenient(path, &text)),
    }
}

/// Gives every record whose id is empty the id `<prefix>-NNNNNN` (its 1-based position),
/// skipping ids already in use, where `prefix` is `file`'s stem with whitespace as `_`
/// (`rec` when it has none): the records of `bare.jsonl` become `bare-000001`, …. Returns how
/// many were named.
pub fn fill_missing_ids_from(records: &mut [Instruction], file: &Path) -> usize {
    let prefix: String = file
        .file_stem()
        .map_or_else(|| "rec".into(), |s| s.to_string_lossy().into_owned())
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    fill_missing_ids(records, &prefix)
}

/// Gives every record whose id is empty the id `<prefix>-NNNNNN` (its 1-based position),
/// skipping ids already in use. Returns how many were named.
pub fn fill_missing_ids(records: &mut [Instruction], prefix: &str) -> usize {
    let mut taken: std::collections::HashSet<String> =
        records.iter().map(|r| r.id.clone()).collect();
    let mut named = 0;
    for (i, r) in records.iter_mut().enumerate() {
        if !r.id.is_empty() {
            continue;
        }
        let mut n = i + 1;
        let mut id = format!("{prefix}-{n:06}");
        while taken.contains(&id) {
            n += 1;
            id = format!("{prefix}-{n:06}");
        }
        taken.insert(id.clone());
        r.id = id;
        named += 1;
    }
    named
}

/// An instruction file held in memory: the records, the lines that did not parse (kept so
/// that saving loses nothing), where it lives, and what it held when read (so that a save
/// merges the changes another process made meanwhile instead of overwriting them).
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionFile {
    /// Where [`InstructionFile::save`] writes.
    pub path: PathBuf,
    /// The valid records, in file order.
    pub records: Vec<Instruction>,
    /// Lines that failed validation, written back verbatim after the records.
    pub invalid: Vec<InvalidLine>,
    /// The file as last read or written by this process.
    pub base: Snapshot,
    /// Records changed differently here and by another process, waiting for a person's
    /// [`Choice`] ([`InstructionFile::resolve`]); saving is refused while any is open.
    pub conflicts: Vec<Conflict>,
}

/// What [`InstructionFile::save`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Records added, changed or deleted by another process since this one read the file,
    /// merged in before writing.
    pub theirs_applied: usize,
}

impl InstructionFile {
    /// Reads the JSONL file at `path`.
    ///
    /// # Errors
    /// [`StoreError::Read`] when it cannot be read. Bad lines land in `invalid`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = Snapshot::of_text(path, &String::from_utf8_lossy(&bytes), &bytes);
        Ok(InstructionFile {
            path: path.to_path_buf(),
            records: base.records.clone(),
            invalid: base.invalid.clone(),
            base,
            conflicts: Vec::new(),
        })
    }

    /// A file at `path` holding `records`, not yet saved (its base is "no file"; a file
    /// found at `path` when saving is merged with, not overwritten).
    pub fn new(path: PathBuf, records: Vec<Instruction>, invalid: Vec<InvalidLine>) -> Self {
        InstructionFile {
            path,
            records,
            invalid,
            base: Snapshot::default(),
            conflicts: Vec::new(),
        }
    }

    /// Writes the records, then the invalid lines verbatim, atomically (see [`save_atomic`]),
    /// holding the file's lock ([`merge::with_lock`]).
    ///
    /// If another process changed the file since it was read, its changes are merged first,
    /// record by record ([`merge::merge3`]); `records` then holds the merged list. Where both
    /// changed the same record differently, nothing is written: the conflicts are added to
    /// [`InstructionFile::conflicts`] (our versions stay in `records`) and the error lists
    /// them; settle each with [`InstructionFile::resolve`], then save again.
    ///
    /// # Errors
    /// [`StoreError::Write`] or [`StoreError::Read`] (the file on disk is then unchanged);
    /// [`StoreError::Conflict`] as above.
    pub fn save(&mut self) -> Result<SaveReport, StoreError> {
        let path = self.path.clone();
        merge::with_lock(&path, || {
            let disk = Snapshot::read(&path)?;
            let mut report = SaveReport::default();
            if disk.digest != self.base.digest {
                let merged = merge::merge3(&self.base.records, &self.records, &disk.records);
                report.theirs_applied = merged.theirs_applied;
                self.invalid =
                    merge::merge_invalid(&self.base.invalid, &self.invalid, &disk.invalid);
                self.records = merged.records;
                for c in merged.conflicts {
                    self.conflicts.retain(|x| x.id != c.id);
                    self.conflicts.push(c);
                }
                self.base = disk;
            }
            if !self.conflicts.is_empty() {
                return Err(StoreError::Conflict {
                    path: path.clone(),
                    ids: self.conflicts.iter().map(|c| c.id.clone()).collect(),
                });
            }
            let text = to_jsonl(&self.records, &self.invalid);
            save_atomic(&path, text.as_bytes())?;
            self.base = Snapshot {
                records: self.records.clone(),
                invalid: self.invalid.clone(),
                digest: Some(merge::digest(text.as_bytes())),
            };
            Ok(report)
        })
    }

    /// This file's save as a value, to carry out where blocking I/O belongs (the
    /// workbench's runtime, off its event loop): [`SaveJob::run`] saves a copy, and
    /// [`InstructionFile::saved`] takes the outcome back.
    pub fn save_job(&self) -> SaveJob {
        SaveJob { file: self.clone() }
    }

    /// Takes back a [`SaveJob`]'s outcome. Unchanged since the job was made, this file
    /// becomes the saved copy (merged records, new base, conflicts). Changed meanwhile, the
    /// changes made since are kept on top of the saved copy ([`merge::merge3`] with the
    /// records sent as the base); a record changed both here since and by the save's merge
    /// becomes a [`Conflict`] for a person to settle. The next save writes what is left.
    /// Returns whether the file was unchanged since the job was made (so nothing here is
    /// left unsaved when the save succeeded).
    pub fn saved(&mut self, outcome: SaveOutcome) -> bool {
        let SaveOutcome { sent, file, .. } = outcome;
        if self.records == sent {
            *self = file;
            return true;
        }
        let merged = merge::merge3(&sent, &self.records, &file.records);
        self.records = merged.records;
        self.invalid = file.invalid;
        self.base = file.base;
        let mut conflicts = file.conflicts;
        for c in merged.conflicts {
            conflicts.retain(|x| x.id != c.id);
            conflicts.push(c);
        }
        self.conflicts = conflicts;
        false
    }

    /// Settles the open conflict on `id`: keep our version (or deletion), or take the one
    /// on disk (or its deletion). Returns whether such a conflict was open.
    pub fn resolve(&mut self, id: &str, choice: Choice) -> bool {
        let Some(at) = self.conflicts.iter().position(|c| c.id == id) else {
            return false;
        };
        let c = self.conflicts.remove(at);
        if choice == Choice::Theirs {
            match (self.position(id), c.theirs) {
                (Some(i), Some(theirs)) => self.records[i] = theirs,
                (Some(i), None) => {
                    self.records.remove(i);
                }
                (None, Some(theirs)) => self.records.push(theirs),
                (None, None) => {}
            }
        }
        true
    }

    /// The index of the record with `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.records.iter().position(|r| r.id == id)
    }

    /// The record with `id`.
    pub fn get(&self, id: &str) -> Option<&Instruction> {
        self.records.iter().find(|r| r.id == id)
    }

    /// A fresh id `<prefix>-NNN`, one above the highest number in use with that prefix
    /// (at least three digits, as `seed-081`).
    pub fn next_id(&self, prefix: &str) -> String {
        let stem = format!("{prefix}-");
        let highest = self
            .records
            .iter()
            .filter_map(|r| r.id.strip_prefix(&stem)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("{stem}{:03}", highest + 1)
    }

    /// How many records each category has, in [`Category::ALL`] order.
    pub fn counts(&self) -> [usize; 4] {
        category_counts(&self.records)
    }

    /// Appends `records`, giving a fresh `prefix-NNN` id to each whose id is empty or already
    /// taken. Returns how many were renamed.
    pub fn append_with_fresh_ids(&mut self, records: Vec<Instruction>, prefix: &str) -> usize {
        let mut renamed = 0;
        for mut r in records {
            if r.id.is_empty() || self.position(&r.id).is_some() {
                if !r.id.is_empty() {
                    renamed += 1;
                }
                r.id = self.next_id(prefix);
            }
            self.records.push(r);
        }
        renamed
    }
}

/// A save of an [`InstructionFile`] made into a value ([`InstructionFile::save_job`]): a copy
/// of the file as it was when the save was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveJob {
    file: InstructionFile,
}

/// What a [`SaveJob`] did: the records it was given, the copy after the attempt, and the
/// result, for [`InstructionFile::saved`].
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOutcome {
    /// The records the job was given.
    pub sent: Vec<Instruction>,
    /// The copy after [`InstructionFile::save`]: merged records, the new base when written,
    /// open conflicts.
    pub file: InstructionFile,
    /// What the save reported, or why it failed.
    pub result: Result<SaveReport, SaveFailure>,
}

/// Why a save failed, as text (the error itself holds an `io::Error`, which cannot be
/// cloned or compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveFailure {
    /// The whole error, naming the file.
    pub message: String,
    /// Whether records changed here and elsewhere wait for a person's choice
    /// ([`StoreError::Conflict`]).
    pub conflict: bool,
}

impl SaveJob {
    /// Carries out [`InstructionFile::save`] on the copy (blocking file I/O under the file's
    /// lock).
    pub fn run(self) -> SaveOutcome {
        let mut file = self.file;
        let sent = file.records.clone();
        let result = file.save().map_err(|e| SaveFailure {
            conflict: matches!(e, StoreError::Conflict { .. }),
            message: e.to_string(),
        });
        SaveOutcome { sent, file, result }
    }
}

/// How many of `records` fall in each category, in [`Category::ALL`] order.
pub fn category_counts(records: &[Instruction]) -> [usize; 4] {
    let mut counts = [0; 4];
    for r in records {
        counts[r.category as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_id_continues_the_highest_number() {
        let f = InstructionFile::new(
            PathBuf::from("x"),
            parse_jsonl(
                Path::new("x"),
                r#"{"id":"seed-009","category":"qa","task":"t","instruction":"i","output":"o"}
{"id":"seed-080","category":"qa","task":"t","instruction":"i","output":"o"}
{"id":"other-999","category":"qa","task":"t","instruction":"i","output":"o"}"#,
            )
            .records,
            vec![],
        );
        assert_eq!(f.next_id("seed"), "seed-081");
        assert_eq!(f.next_id("imp"), "imp-001");
        assert_eq!(f.counts(), [3, 0, 0, 0]);
    }

    #[test]
    fn sniff_tells_alpaca_from_jsonl_and_sharegpt() {
        assert_eq!(Format::sniff("  \n[{}]"), Format::Alpaca);
        assert_eq!(Format::sniff("{\"id\":1}"), Format::Jsonl);
        assert_eq!(
            Format::sniff("[ {\"conversations\": []}]"),
            Format::Sharegpt
        );
        assert_eq!(
            Format::sniff("{\"conversations\": []}\n{}"),
            Format::Sharegpt
        );
    }

    #[test]
    fn missing_ids_are_filled_around_the_ids_in_use() {
        let mut records = parse_jsonl_lenient(
            Path::new("x"),
            "{\"instruction\":\"i\",\"output\":\"o\"}\n{\"id\":\"f-000003\",\"instruction\":\"i\",\"output\":\"o\"}\n{\"instruction\":\"i\",\"output\":\"o\"}\n{\"instruction\":\"i\",\"output\":\"o\"}",
        )
        .records;
        assert_eq!(fill_missing_ids(&mut records, "f"), 3);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["f-000001", "f-000003", "f-000004", "f-000005"]);
    }
}
