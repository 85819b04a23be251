//! Following a JSONL file that grows by appends (a `generate` run's `generated.jsonl`):
//! each [`Follower::poll`] reads only the bytes added since the last one, so a pane showing
//! the paper's 25,005 tasks costs per update what was appended, not the whole file (as
//! `tail -f` does). A file that was replaced (a rename over it: a review's atomic rewrite)
//! or shrank is read again whole.

use super::merge::Snapshot;
use super::store::{parse_jsonl, Loaded, StoreError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What changed since the last poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing (or only an unfinished last line).
    Unchanged,
    /// Whole lines were appended: their records and invalid lines (line numbers counted
    /// from the start of the file).
    Appended(Loaded),
    /// The file was replaced, shrank or appeared or vanished: all of it now (empty when
    /// missing), with the digest of the lines read.
    Replaced(Snapshot),
}

/// Reads a growing JSONL file incrementally; see the module docs.
pub struct Follower {
    path: PathBuf,
    /// The file's identity (device, inode) when last read.
    identity: Option<(u64, u64)>,
    /// Bytes consumed: whole lines only.
    offset: u64,
    /// Lines consumed.
    lines: usize,
    /// SHA-256 of the consumed bytes, continued by each append.
    hasher: ring::digest::Context,
    /// The last poll found no file (and said so).
    missing: bool,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl Clone for Follower {
    fn clone(&self) -> Self {
        Follower {
            path: self.path.clone(),
            identity: self.identity,
            offset: self.offset,
            lines: self.lines,
            hasher: self.hasher.clone(),
            missing: self.missing,
        }
    }
}

/// Two followers are equal when they follow the same file from the same point (the running
/// digest is not compared: it follows from the bytes consumed).
impl PartialEq for Follower {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.path,
            self.identity,
            self.offset,
            self.lines,
            self.missing,
        ) == (
            &other.path,
            other.identity,
            other.offset,
            other.lines,
            other.missing,
        )
    }
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_m: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Follower {
    /// A follower of `path` that has read nothing yet (the first poll reads it whole).
    pub fn new(path: &Path) -> Follower {
        Follower {
            path: path.to_path_buf(),
            identity: None,
            offset: 0,
            lines: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            missing: false,
        }
    }

    /// SHA-256 of the whole lines read so far.
    pub fn digest(&self) -> [u8; 32] {
        let d = self.hasher.clone().finish();
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// Records that the file now holds `text` (which this process just wrote), so the next
    /// poll reads only what others append after it.
    pub fn assume(&mut self, text: &[u8]) {
        self.identity = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| identity(&m));
        self.missing = false;
        self.offset = text.len() as u64;
        self.lines = text.iter().filter(|&&b| b == b'\n').count();
        self.hasher = ring::digest::Context::new(&ring::digest::SHA256);
        self.hasher.update(text);
    }

    /// Reads what changed since the last poll.
    ///
    /// # Errors
    /// [`StoreError::Read`] when the file exists but cannot be read.
    pub fn poll(&mut self) -> Result<Change, StoreError> {
        let rerr = |source| StoreError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Reported once as empty, then quiet until the file appears.
                if self.missing {
                    return Ok(Change::Unchanged);
                }
                *self = Follower::new(&self.path);
                self.missing = true;
                return Ok(Change::Replaced(Snapshot::default()));
            }
            Err(e) => return Err(rerr(e)),
        };
        let same_file = self.identity.is_some() && identity(&meta) == self.identity;
        if !same_file || meta.len() < self.offset {
            return self.read_whole(&meta);
        }
        if meta.len() == self.offset {
            return Ok(Change::Unchanged);
        }
        let mut file = std::fs::File::open(&self.path).map_err(rerr)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(rerr)?;
        let mut bytes = Vec::with_capacity((meta.len() - self.offset) as usize);
        file.read_to_end(&mut bytes).map_err(rerr)?;
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return Ok(Change::Unchanged);
        };
        let whole = &bytes[..end];
        let mut loaded = parse_jsonl(&self.path, &String::from_utf8_lossy(whole));
        for l in &mut loaded.invalid {
            l.line += self.lines;
            for e in &mut l.errors {
                e.line += self.lines;
            }
        }
        self.hasher.update(whole);
        self.offset += end as u64;
        self.lines += whole.iter().filter(|&&b| b == b'\n').count();
        Ok(Change::Appended(loaded))
    }

    fn read_whole(&mut self, meta: &std::fs::Metadata) -> Result<Change, StoreError> {
        let bytes = std::fs::read(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let whole = &bytes[..end];
        self.identity = identity(meta);
        self.assume(whole);
        let mut snapshot = Snapshot::of_text(&self.path, &String::from_utf8_lossy(whole), whole);
        snapshot.digest = Some(self.digest());
        Ok(Change::Replaced(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(id: &str) -> String {
        format!("{{\"id\":\"{id}\",\"category\":\"qa\",\"task\":\"t\",\"instruction\":\"i\",\"output\":\"o\"}}\n")
    }

    fn ids(loaded: &[crate::data::Instruction]) -> Vec<&str> {
        loaded.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn appends_are_read_alone_and_a_rewrite_is_read_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("g.jsonl");
        let mut f = Follower::new(&path);
        assert_eq!(
            f.poll().expect("poll"),
            Change::Replaced(Snapshot::default())
        );
        assert_eq!(f.poll().expect("poll"), Change::Unchanged);
        std::fs::write(&path, line("a") + &line("b")).expect("write");
        match f.poll().expect("poll") {
            Change::Replaced(s) => assert_eq!(ids(&s.records), ["a", "b"]),
            other => panic!("{other:?}"),
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        // A torn line waits for its newline.
        let c = line("c");
        file.write_all(&c.as_bytes()[..10]).expect("append");
        assert_eq!(f.poll().expect("poll"), Change::Unchanged);
        file.write_all(&c.as_bytes()[10..]).expect("append");
        file.write_all(b"not json\n").expect("append");
        match f.poll().expect("poll") {
            Change::Appended(l) => {
                assert_eq!(ids(&l.records), ["c"]);
                assert_eq!(l.invalid[0].line, 4, "counted from the start of the file");
            }
            other => panic!("{other:?}"),
        }
        let text = std::fs::read(&path).expect("read");
        assert_eq!(f.digest(), crate::data::merge::digest(&text));
        // An atomic rewrite (a rename over the file): read whole.
        crate::data::save_atomic(&path, line("z").as_bytes()).expect("save");
        match f.poll().expect("poll") {
            Change::Replaced(s) => assert_eq!(ids(&s.records), ["z"]),
            other => panic!("{other:?}"),
        }
        // What this process wrote itself is not read back.
        let mine = line("z") + &line("y");
        crate::data::save_atomic(&path, mine.as_bytes()).expect("save");
        f.assume(mine.as_bytes());
        assert_eq!(f.poll().expect("poll"), Change::Unchanged);
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(
            f.poll().expect("poll"),
            Change::Replaced(Snapshot::default())
        );
        assert_eq!(f.poll().expect("poll"), Change::Unchanged);
    }
}
