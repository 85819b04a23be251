//! Saving a file that another process may have changed since it was read: a three-way merge
//! record by record (by id), and an advisory lock held while a file is read back and written.
//!
//! Every writer of an instruction file (the workbench, `bioinstruct seeds ...`, a `generate`
//! run appending, a second workbench in another SSH session) takes the file's lock
//! ([`with_lock`]) around "read what is there now, write the new version". A writer that holds
//! records in memory keeps a [`Snapshot`] of what the file held when it read it; at save time,
//! if the file is no longer that snapshot, both sides' edits are merged ([`merge3`]) the way
//! `git merge-file` merges lines, with the record id as the unit: a record only one side
//! changed takes that side's version; a record both sides changed the same way is taken
//! once; a record both sides changed differently is a [`Conflict`] for the person to decide.
//! Nothing is overwritten silently.

use super::record::Instruction;
use super::store::{parse_jsonl, InvalidLine, StoreError};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// What a file held when it was last read or written by this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Its valid records, in file order.
    pub records: Vec<Instruction>,
    /// Its invalid lines.
    pub invalid: Vec<InvalidLine>,
    /// SHA-256 of its bytes; `None` when the file did not exist.
    pub digest: Option<[u8; 32]>,
}

impl Snapshot {
    /// Reads the JSONL file at `path`; a missing file is an empty snapshot with no digest.
    ///
    /// # Errors
    /// [`StoreError::Read`] when it exists but cannot be read.
    pub fn read(path: &Path) -> Result<Snapshot, StoreError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Snapshot::of_text(
                path,
                &String::from_utf8_lossy(&bytes),
                &bytes,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Snapshot::default()),
            Err(source) => Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The snapshot of `text` (the file's bytes decoded), `bytes` its raw form for the digest.
    pub fn of_text(path: &Path, text: &str, bytes: &[u8]) -> Snapshot {
        let loaded = parse_jsonl(path, text);
        Snapshot {
            records: loaded.records,
            invalid: loaded.invalid,
            digest: Some(digest(bytes)),
        }
    }
}

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A record that both sides changed, differently. `None` means that side deleted it (or, for
/// `base`, that it did not exist when this side read the file).
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The record's id.
    pub id: String,
    /// The version both sides started from.
    pub base: Option<Instruction>,
    /// This process's version.
    pub ours: Option<Instruction>,
    /// The version on disk, written by another process.
    pub theirs: Option<Instruction>,
}

/// How a person settles a [`Conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Keep this process's version (or deletion).
    Ours,
    /// Take the version on disk (or its deletion).
    Theirs,
}

/// The outcome of [`merge3`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// The merged records: ours in our order (their version where only they changed a
    /// record), then the records only they added, in their order. A conflicting record is
    /// present in our version (absent where we deleted it).
    pub records: Vec<Instruction>,
    /// Records both sides changed differently.
    pub conflicts: Vec<Conflict>,
    /// How many records came from the other side (added, changed or deleted by it).
    pub theirs_applied: usize,
}

/// Three-way merge of instruction lists by id: `base` is what both sides started from,
/// `ours` and `theirs` the two edited versions. Ids are unique within each list (the
/// readers refuse duplicates).
///
/// Rules, per id (as a line-based three-way merge, `diff3`): unchanged on one side → the
/// other side's version (including its deletion or addition); the same on both sides → that
/// version; changed differently on both sides (including changed on one and deleted on the
/// other, or added on both with different contents) → a [`Conflict`].
pub fn merge3(base: &[Instruction], ours: &[Instruction], theirs: &[Instruction]) -> Merged {
    let by_id = |list: &[Instruction]| -> HashMap<String, usize> {
        list.iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect()
    };
    let (b, t) = (by_id(base), by_id(theirs));
    // References: a save of the paper's 25,005 records clones only what it keeps.
    fn get<'a>(
        map: &HashMap<String, usize>,
        list: &'a [Instruction],
        id: &str,
    ) -> Option<&'a Instruction> {
        map.get(id).map(|&i| &list[i])
    }
    let mut merged = Merged::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for o in ours {
        seen.insert(&o.id);
        let (bv, tv) = (get(&b, base, &o.id), get(&t, theirs, &o.id));
        match (bv, tv) {
            // Only we have it now: we added it, or they deleted it.
            (None, None) => merged.records.push(o.clone()),
            (Some(bv), None) if bv == o => merged.theirs_applied += 1,
            (bv @ Some(_), None) => {
                merged
                    .conflicts
                    .push(conflict(bv.cloned(), Some(o.clone()), None));
                merged.records.push(o.clone());
            }
            (bv, Some(tv)) if tv == o || bv == Some(tv) => merged.records.push(o.clone()),
            (Some(bv), Some(tv)) if bv == o => {
                merged.theirs_applied += 1;
                merged.records.push(tv.clone());
            }
            (bv, Some(tv)) => {
                merged
                    .conflicts
                    .push(conflict(bv.cloned(), Some(o.clone()), Some(tv.clone())));
                merged.records.push(o.clone());
            }
        }
    }
    for tv in theirs {
        if seen.contains(tv.id.as_str()) {
            continue;
        }
        match get(&b, base, &tv.id) {
            // They added it.
            None => {
                merged.theirs_applied += 1;
                merged.records.push(tv.clone());
            }
            // We deleted it; they kept it as it was.
            Some(bv) if bv == tv => {}
            // We deleted it; they changed it.
            bv @ Some(_) => merged
                .conflicts
                .push(conflict(bv.cloned(), None, Some(tv.clone()))),
        }
    }
    merged
}

fn conflict(
    base: Option<Instruction>,
    ours: Option<Instruction>,
    theirs: Option<Instruction>,
) -> Conflict {
    let id = ours
        .as_ref()
        .or(theirs.as_ref())
        .or(base.as_ref())
        .map(|r| r.id.clone())
        .unwrap_or_default();
    Conflict {
        id,
        base,
        ours,
        theirs,
    }
}

/// Invalid lines after a merge: ours, then theirs that are new since `base` (the same text
/// once).
pub fn merge_invalid(
    base: &[InvalidLine],
    ours: &[InvalidLine],
    theirs: &[InvalidLine],
) -> Vec<InvalidLine> {
    let known: HashSet<&str> = base.iter().chain(ours).map(|l| l.raw.as_str()).collect();
    let mut out = ours.to_vec();
    out.extend(
        theirs
            .iter()
            .filter(|l| !known.contains(l.raw.as_str()))
            .cloned(),
    );
    out
}

/// The lock file of `path`: `.<name>.lock` beside it (the file itself is replaced by renames,
/// so it cannot carry the lock).
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.lock"))
}

/// Runs `f` while holding the exclusive advisory lock of `path` (`fd-lock`, `flock(2)` on
/// Unix), waiting for other holders to finish. The lock is released when `f` returns, and
/// by the kernel if the process dies.
///
/// # Errors
/// [`StoreError::Lock`] when the lock file cannot be created or locked; otherwise `f`'s.
pub fn with_lock<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let lock_file = lock_path(path);
    let werr = |source| StoreError::Lock {
        path: path.to_path_buf(),
        lock: lock_file.clone(),
        source,
    };
    if let Some(dir) = lock_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(werr)?;
    }
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(werr)?;
    let mut lock = fd_lock::RwLock::new(file);
    let _guard = lock.write().map_err(werr)?;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Category;

    fn r(id: &str, output: &str) -> Instruction {
        Instruction {
            id: id.into(),
            category: Category::Qa,
            task: "t".into(),
            instruction: "i".into(),
            input: String::new(),
            output: output.into(),
            extra: Default::default(),
        }
    }

    fn ids(m: &Merged) -> Vec<(&str, &str)> {
        m.records
            .iter()
            .map(|r| (r.id.as_str(), r.output.as_str()))
            .collect()
    }

    #[test]
    fn edits_of_different_records_all_survive() {
        let base = [r("a", "1"), r("b", "1"), r("c", "1")];
        // We delete b and add d; they edit c and add e.
        let ours = [r("a", "1"), r("c", "1"), r("d", "1")];
        let theirs = [r("a", "1"), r("b", "1"), r("c", "2"), r("e", "1")];
        let m = merge3(&base, &ours, &theirs);
        assert_eq!(ids(&m), [("a", "1"), ("c", "2"), ("d", "1"), ("e", "1")]);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.theirs_applied, 2);
    }

    #[test]
    fn their_deletion_of_a_record_we_left_alone_applies() {
        let base = [r("a", "1"), r("b", "1")];
        let m = merge3(&base, &base, &[r("a", "1")]);
        assert_eq!(ids(&m), [("a", "1")]);
        assert_eq!(m.theirs_applied, 1);
    }

    #[test]
    fn the_same_change_on_both_sides_is_taken_once() {
        let base = [r("a", "1")];
        let both = [r("a", "2"), r("n", "x")];
        let m = merge3(&base, &both, &both);
        assert_eq!(ids(&m), [("a", "2"), ("n", "x")]);
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn different_changes_to_one_record_conflict() {
        let base = [r("a", "1"), r("b", "1"), r("c", "1")];
        // a: both edit; b: we edit, they delete; c: we delete, they edit.
        let ours = [r("a", "ours"), r("b", "ours")];
        let theirs = [r("a", "theirs"), r("c", "theirs")];
        let m = merge3(&base, &ours, &theirs);
        let c: Vec<_> = m
            .conflicts
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.ours.as_ref().map(|r| r.output.as_str()),
                    c.theirs.as_ref().map(|r| r.output.as_str()),
                )
            })
            .collect();
        assert_eq!(
            c,
            [
                ("a", Some("ours"), Some("theirs")),
                ("b", Some("ours"), None),
                ("c", None, Some("theirs"))
            ]
        );
        // Ours stays in place until the person chooses.
        assert_eq!(ids(&m), [("a", "ours"), ("b", "ours")]);
    }

    #[test]
    fn both_adding_one_id_differently_conflicts() {
        let m = merge3(&[], &[r("n", "ours")], &[r("n", "theirs")]);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].base, None);
    }

    #[test]
    fn invalid_lines_of_both_sides_are_kept_once() {
        let l = |raw: &str| InvalidLine {
            line: 1,
            raw: raw.into(),
            errors: vec![],
        };
        let out = merge_invalid(
            &[l("old")],
            &[l("old"), l("mine")],
            &[l("old"), l("theirs")],
        );
        let raws: Vec<_> = out.iter().map(|l| l.raw.as_str()).collect();
        assert_eq!(raws, ["old", "mine", "theirs"]);
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_released() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.jsonl");
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let o = order.clone();
        let p = path.clone();
        let holder = std::thread::spawn(move || {
            with_lock(&p, || {
                tx.send(()).expect("send");
                std::thread::sleep(std::time::Duration::from_millis(200));
                o.lock().expect("order").push("first");
                Ok(())
            })
            .expect("lock");
        });
        rx.recv().expect("recv");
        with_lock(&path, || {
            order.lock().expect("order").push("second");
            Ok(())
        })
        .expect("lock");
        holder.join().expect("join");
        assert_eq!(*order.lock().expect("order"), ["first", "second"]);
        assert!(lock_path(&path).ends_with(".s.jsonl.lock"));
    }
}
