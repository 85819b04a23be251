//! Every item's result, kept under the workspace (`<data>/eval-cache/`), so that a rerun, an
//! interrupted run or a run with one more adapter computes only what is missing.
//!
//! One JSONL file per model, adapter content, task and mode (`<key>.jsonl`, with `<key>.json`
//! saying what the key stands for); a line per item: `{"id", "prompt_hash", "outcome"}`,
//! appended as each item finishes (fsynced when the run ends or stops). The prompt hash covers the exact token ids
//! and the generation limit, so a changed prompt or tokenizer is computed afresh. A kill
//! can leave at most a last line cut short: it is dropped when the file is opened.

use super::score::Outcome;
use super::EvalError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a cache file is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The base model: its source and files' sizes and times, how GGUF is computed, the device.
    pub model: String,
    /// SHA-256 of the adapter's config and weights (empty for the base).
    pub adapter: String,
    /// How prompts are written (`chat:model`, `alpaca`).
    pub prompt_style: String,
    /// The task.
    pub task: String,
    /// `loglikelihood` or `generate`.
    pub mode: String,
}

impl CacheKey {
    /// The file name stem: the first 32 hex digits of the key's SHA-256.
    pub fn stem(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        super::sha256_hex(text.as_bytes())[..32].to_string()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    prompt_hash: String,
    outcome: Outcome,
}

/// One cache file, open for appending.
#[derive(Debug)]
pub struct ResultCache {
    path: PathBuf,
    entries: HashMap<String, (String, Outcome)>,
    file: File,
}

impl ResultCache {
    /// Opens (or creates) the file for `key` in `dir`, dropping a last line that a kill cut
    /// short.
    ///
    /// # Errors
    /// [`EvalError::Io`]; [`EvalError::Data`] naming the line of a line in the middle that is
    /// not a result (delete the file to start it afresh).
    pub fn open(dir: &Path, key: &CacheKey) -> Result<ResultCache, EvalError> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let stem = key.stem();
        let path = dir.join(format!("{stem}.jsonl"));
        let about = dir.join(format!("{stem}.json"));
        if !about.exists() {
            let text = serde_json::to_string_pretty(key).unwrap_or_default();
            crate::data::replace_atomic(&about, text.as_bytes())?;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(EvalError::io(&path, e)),
        };
        let whole = match text.rfind('\n') {
            Some(end) => end + 1,
            None => 0,
        };
        if whole < text.len() {
            // A line cut short by a kill: drop it.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| EvalError::io(&path, e))?;
            f.set_len(whole as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| EvalError::io(&path, e))?;
        }
        let mut entries = HashMap::new();
        for (i, line) in text[..whole].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(line).map_err(|e| {
                EvalError::at_line(
                    &path,
                    i + 1,
                    "outcome",
                    format!("{e} (a cache file: delete it to compute its items again)"),
                )
            })?;
            entries.insert(l.id, (l.prompt_hash, l.outcome));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(&path, e))?;
        Ok(ResultCache {
            path,
            entries,
            file,
        })
    }

    /// The stored outcome of item `id`, if it was computed for `prompt_hash`.
    pub fn get(&self, id: &str, prompt_hash: &str) -> Option<&Outcome> {
        self.entries
            .get(id)
            .filter(|(h, _)| h == prompt_hash)
            .map(|(_, o)| o)
    }

    /// Appends one result (see [`ResultCache::sync`] for durability).
    ///
    /// # Errors
    /// [`EvalError::Io`] (a full disk, say): nothing already stored is lost.
    pub fn put(&mut self, id: &str, prompt_hash: &str, outcome: Outcome) -> Result<(), EvalError> {
        let line = Line {
            id: id.to_string(),
            prompt_hash: prompt_hash.to_string(),
            outcome,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        // One write of a whole line: a killed process leaves whole lines (the kernel keeps
        // them); only a crash of the machine can cut the last, which `open` drops.
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| EvalError::io(&self.path, e))?;
        self.entries
            .insert(line.id, (line.prompt_hash, line.outcome));
        Ok(())
    }

    /// Flushes the file to disk (fsync), once a batch of results is in.
    ///
    /// # Errors
    /// [`EvalError::Io`].
    pub fn sync(&self) -> Result<(), EvalError> {
        self.file
            .sync_data()
            .map_err(|e| EvalError::io(&self.path, e))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            model: "m".into(),
            adapter: String::new(),
            prompt_style: "chat:model".into(),
            task: "t".into(),
            mode: "generate".into(),
        }
    }

    fn outcome(raw: &str) -> Outcome {
        Outcome {
            raw: raw.into(),
            loglikelihoods: vec![],
            is_greedy: vec![],
            prompt_tokens: 3,
            generated_tokens: 1,
            truncated_tokens: 0,
        }
    }

    #[test]
    fn results_survive_reopening_and_a_torn_last_line_is_dropped() -> Result<(), EvalError> {
        let dir = tempfile::tempdir().map_err(|e| EvalError::io(Path::new("tmp"), e))?;
        let mut c = ResultCache::open(dir.path(), &key())?;
        c.put("a", "h1", outcome("x"))?;
        let path = c.path().to_path_buf();
        drop(c);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(&path, e))?;
        f.write_all(b"{\"id\":\"b\",\"prompt")
            .map_err(|e| EvalError::io(&path, e))?;
        let mut c = ResultCache::open(dir.path(), &key())?;
        assert_eq!(c.get("a", "h1"), Some(&outcome("x")));
        assert_eq!(c.get("a", "h2"), None, "another prompt is another result");
        assert_eq!(c.get("b", "h1"), None);
        c.put("b", "h1", outcome("y"))?;
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        assert_eq!(text.lines().count(), 2);
        Ok(())
    }
}
