//! Reading and writing instruction files: JSONL (one [`Instruction`] a line, the workspace
//! format) and Alpaca JSON (one array of `{instruction, input, output}`, as Stanford Alpaca's
//! `alpaca_data.json`).
//!
//! Reading never stops at the first bad line: every good record is kept and every bad line is
//! reported as `file:line: field: problem`, its text kept verbatim so that saving loses nothing.
//! Saving is atomic (temporary file, fsync, rename) and keeps the previous version as
//! `<file>.bak`.

use super::record::{id_problem, task_problem, Category, Instruction, KNOWN_FIELDS};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O failure on an instruction file, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file could not be written; the previous version is untouched.
    #[error("cannot write {}: {source} (the previous version is untouched)", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file's lock ([`crate::data::merge::with_lock`]) could not be taken; nothing was
    /// written.
    #[error("cannot write {}: cannot lock {}: {source} (the previous version is untouched)", path.display(), lock.display())]
    Lock {
        /// The file to be written.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Records were changed differently here and by another process since the file was
    /// read; nothing was written.
    #[error(
        "{} was changed by another process while it was edited here: {} changed on both sides ({}); nothing was written: choose a version of each, then save again",
        path.display(),
        if ids.len() == 1 { "1 record".to_string() } else { format!("{} records", ids.len()) },
        ids.join(", ")
    )]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The ids of the records in conflict.
        ids: Vec<String>,
    },
    /// The whole file is not the format asked for (an Alpaca file that is not a JSON array).
    #[error("{}:{line}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// One problem with one field of one line (or one array element) of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The field at fault, or `None` when the line as a whole is bad (not JSON, not an object).
    pub field: Option<String>,
    /// What is wrong, in words.
    pub problem: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.path.display(), self.line)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.problem)
    }
}

/// A line that did not parse into a record: its text is kept verbatim and written back on save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLine {
    /// 1-based line number in the file as read.
    pub line: usize,
    /// The line's text, without its newline.
    pub raw: String,
    /// Every problem found on the line (at least one).
    pub errors: Vec<LineError>,
}

/// What reading a file produced: the good records in file order and the bad lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The valid records, in file order.
    pub records: Vec<Instruction>,
    /// The lines that failed validation, in file order.
    pub invalid: Vec<InvalidLine>,
}

impl Loaded {
    /// Every problem of every invalid line, in file order.
    pub fn errors(&self) -> impl Iterator<Item = &LineError> {
        self.invalid.iter().flat_map(|l| l.errors.iter())
    }
}

/// Reads a JSONL instruction file (blank lines are skipped).
///
/// # Errors
/// [`StoreError::Read`] when the file cannot be read; bad lines are not errors but land in
/// [`Loaded::invalid`].
pub fn read_jsonl(path: &Path) -> Result<Loaded, StoreError> {
    let text = fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_jsonl(path, &text))
}

/// Parses JSONL text; `path` only names the source in errors.
pub fn parse_jsonl(path: &Path, text: &str) -> Loaded {
    parse_lines(path, text, false)
}

/// Parses JSONL text made elsewhere: as [`parse_jsonl`], but only `instruction` and `output`
/// are required (see [`parse_alpaca`] for the defaults), and ShareGPT lines
/// (`conversations`) are read too.
pub fn parse_jsonl_lenient(path: &Path, text: &str) -> Loaded {
    parse_lines(path, text, true)
}

fn parse_lines(path: &Path, text: &str, lenient: bool) -> Loaded {
    let mut loaded = Loaded::default();
    let mut first_line_of_id: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |field: Option<&str>, problem: String| LineError {
            path: path.to_path_buf(),
            line,
            field: field.map(str::to_string),
            problem,
        };
        let result = match serde_json::from_str::<Value>(raw) {
            Err(e) => Err(vec![err(None, format!("not valid JSON: {e}"))]),
            Ok(Value::Object(map)) => record_from_map(map, lenient)
                .map_err(|problems| problems.into_iter().map(|(f, p)| err(Some(f), p)).collect()),
            Ok(_) => Err(vec![err(None, "not a JSON object".to_string())]),
        };
        let result = result.and_then(|record| match first_line_of_id.get(&record.id) {
            // Records without an id (lenient reading) get one from the caller.
            _ if record.id.is_empty() => Ok(record),
            Some(first) => Err(vec![err(
                Some("id"),
                format!("duplicate id {:?} (first used on line {first})", record.id),
            )]),
            None => {
                first_line_of_id.insert(record.id.clone(), line);
                Ok(record)
            }
        });
        match result {
            Ok(record) => loaded.records.push(record),
            Err(errors) => loaded.invalid.push(InvalidLine {
                line,
                raw: raw.to_string(),
                errors,
            }),
        }
    }
    loaded
}

/// Builds a record from a JSON object, checking every field. With `lenient` (Alpaca import),
/// a missing `id` becomes empty (the caller assigns one), a missing `category` becomes
/// `other` and a missing `task` becomes `imported`.
fn record_from_map(
    mut map: Map<String, Value>,
    lenient: bool,
) -> Result<Instruction, Vec<(&'static str, String)>> {
    if lenient && map.contains_key("conversations") && !map.contains_key("instruction") {
        from_sharegpt(&mut map)?;
    }
    let mut problems = Vec::new();
    let mut take_string =
        |map: &mut Map<String, Value>, field: &'static str, required: bool| match map
            .shift_remove(field)
        {
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                problems.push((field, format!("must be a string, found {}", kind(&other))));
                None
            }
            None if required => {
                problems.push((field, "is missing".to_string()));
                None
            }
            None => Some(String::new()),
        };
    let id = take_string(&mut map, "id", !lenient);
    let category = take_string(&mut map, "category", !lenient);
    let task = take_string(&mut map, "task", !lenient);
    let instruction = take_string(&mut map, "instruction", true);
    let input = take_string(&mut map, "input", false);
    let output = take_string(&mut map, "output", true);

    let category = category.and_then(|c| match (c.as_str(), lenient) {
        ("", true) => Some(Category::Other),
        _ => c
            .parse::<Category>()
            .map_err(|e| problems.push(("category", e.to_string())))
            .ok(),
    });
    let task = task.map(|t| {
        if lenient && t.is_empty() {
            "imported".to_string()
        } else {
            t
        }
    });
    if let Some(p) = id
        .as_deref()
        .filter(|id| !(lenient && id.is_empty()))
        .and_then(id_problem)
    {
        problems.push(("id", p));
    }
    if let Some(p) = task.as_deref().and_then(task_problem) {
        problems.push(("task", p));
    }
    for (field, value) in [("instruction", &instruction), ("output", &output)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            problems.push((field, "is empty".to_string()));
        }
    }
    match (id, category, task, instruction, input, output) {
        (Some(id), Some(category), Some(task), Some(instruction), Some(input), Some(output))
            if problems.is_empty() =>
        {
            debug_assert!(KNOWN_FIELDS.iter().all(|f| !map.contains_key(*f)));
            Ok(Instruction {
                id,
                category,
                task,
                instruction,
                input,
                output,
                extra: map,
            })
        }
        _ => Err(problems),
    }
}

/// Turns a ShareGPT record's `conversations` (one `human` turn, then one `gpt` turn; `user`
/// and `assistant` are accepted too) into `instruction` and `output`; a `system` turn or
/// field is kept as `system`. Several exchanges are refused: they are not one instruction.
fn from_sharegpt(map: &mut Map<String, Value>) -> Result<(), Vec<(&'static str, String)>> {
    let bad = |p: String| vec![("conversations", p)];
    let Some(Value::Array(turns)) = map.shift_remove("conversations") else {
        return Err(bad("must be an array of {from, value} turns".into()));
    };
    let mut said: Vec<(String, String)> = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let from = turn
            .get("from")
            .or_else(|| turn.get("role"))
            .and_then(Value::as_str);
        let value = turn
            .get("value")
            .or_else(|| turn.get("content"))
            .and_then(Value::as_str);
        match (from, value) {
            (Some(f), Some(v)) => said.push((f.to_string(), v.to_string())),
            _ => {
                return Err(bad(format!(
                    "turn {}: needs string \"from\" and \"value\"",
                    i + 1
                )))
            }
        }
    }
    let role = |f: &str| match f {
        "human" | "user" => "human",
        "gpt" | "assistant" => "gpt",
        "system" => "system",
        _ => "?",
    };
    let mut rest = said.iter().peekable();
    if let Some((f, v)) = rest.next_if(|(f, _)| role(f) == "system") {
        let _ = f;
        map.insert("system".into(), Value::String(v.clone()));
    }
    let exchange: Vec<_> = rest.collect();
    match exchange.as_slice() {
        [(h, instruction), (g, output)] if role(h) == "human" && role(g) == "gpt" => {
            map.insert("instruction".into(), Value::String(instruction.clone()));
            map.insert("output".into(), Value::String(output.clone()));
            Ok(())
        }
        _ => Err(bad(format!(
            "must be one human turn then one gpt turn (after an optional system turn); found {}",
            exchange
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads an Alpaca JSON file: one array of objects with `instruction`, `input` (optional,
/// default empty) and `output`. Other fields are kept in [`Instruction::extra`]; `id`,
/// `category` and `task`, when present, are used, otherwise the id is left empty for the caller
/// to assign, the category is `other` and the task `imported`. Errors name the line where the
/// element starts.
///
/// # Errors
/// [`StoreError::Read`] when unreadable; [`StoreError::Format`] when the text is not a JSON
/// array of values. Bad elements are reported in [`Loaded::invalid`] (their `raw` is the
/// element's JSON text).
pub fn read_alpaca(path: &Path) -> Result<Loaded, StoreError> {
    let text = fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_alpaca(path, &text)
}

/// Parses Alpaca JSON text; `path` only names the source in errors.
///
/// # Errors
/// As [`read_alpaca`].
pub fn parse_alpaca(path: &Path, text: &str) -> Result<Loaded, StoreError> {
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| StoreError::Format {
        path: path.to_path_buf(),
        line: e.line().max(1),
        problem: format!("not an Alpaca JSON array: {e}"),
    })?;
    let mut loaded = Loaded::default();
    for element in elements {
        // `RawValue::get` borrows from `text`, so its offset there gives the element's line.
        let offset = (element.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let line = 1 + text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let err = |field: Option<&str>, problem: String| LineError {
            path: path.to_path_buf(),
            line,
            field: field.map(str::to_string),
            problem,
        };
        let result = match serde_json::from_str::<Value>(element.get()) {
            Ok(Value::Object(map)) => record_from_map(map, true)
                .map_err(|ps| ps.into_iter().map(|(f, p)| err(Some(f), p)).collect()),
            Ok(_) => Err(vec![err(None, "not a JSON object".to_string())]),
            Err(e) => Err(vec![err(None, format!("not valid JSON: {e}"))]),
        };
        match result {
            Ok(record) => loaded.records.push(record),
            Err(errors) => loaded.invalid.push(InvalidLine {
                line,
                raw: element.get().to_string(),
                errors,
            }),
        }
    }
    Ok(loaded)
}

/// The text of `records` as JSONL, followed by the `invalid` lines verbatim (so that a file
/// with bad lines loses none of them when saved).
pub fn to_jsonl(records: &[Instruction], invalid: &[InvalidLine]) -> String {
    let mut out = String::new();
    for r in records {
        // Serializing a struct of strings and a JSON map cannot fail.
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    for l in invalid {
        out.push_str(&l.raw);
        out.push('\n');
    }
    out
}

/// The text of `records` as an Alpaca JSON array (pretty-printed, as `alpaca_data.json`):
/// `instruction`, `input`, `output`, then the record's extra fields. `id`, `category` and
/// `task` are not written: they belong to the JSONL store.
pub fn to_alpaca(records: &[Instruction]) -> String {
    let array: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("instruction".into(), Value::String(r.instruction.clone()));
            m.insert("input".into(), Value::String(r.input.clone()));
            m.insert("output".into(), Value::String(r.output.clone()));
            for (k, v) in &r.extra {
                m.insert(k.clone(), v.clone());
            }
            Value::Object(m)
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&array).unwrap_or_default();
    s.push('\n');
    s
}

/// The text of `records` as ShareGPT JSON (an array, pretty-printed, as LLaMA-Factory's
/// `sharegpt` format and axolotl's `sharegpt` type read it): one `human` turn, the
/// instruction and then the input on the next line (as LLaMA-Factory joins Alpaca's
/// `instruction` and `input`), and one `gpt` turn, the output. A `system` field becomes a
/// leading `system` turn; `id`, `category` and `task` are kept beside `conversations`.
pub fn to_sharegpt(records: &[Instruction]) -> String {
    let array: Vec<Value> = records
        .iter()
        .map(|r| {
            let human = if r.input.is_empty() {
                r.instruction.clone()
            } else {
                format!("{}\n{}", r.instruction, r.input)
            };
            let mut turns = Vec::new();
            if let Some(system) = r.extra.get("system").and_then(Value::as_str) {
                turns.push(serde_json::json!({"from": "system", "value": system}));
            }
            turns.push(serde_json::json!({"from": "human", "value": human}));
            turns.push(serde_json::json!({"from": "gpt", "value": r.output}));
            serde_json::json!({
                "id": r.id,
                "category": r.category.as_str(),
                "task": r.task,
                "conversations": turns,
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&array).unwrap_or_default();
    s.push('\n');
    s
}

/// The path of the previous version kept by [`save_atomic`]: `<file>.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

/// Writes `contents` to `path` so that, whatever happens (crash, SIGKILL, full disk), `path`
/// holds either its old or its new contents in full, never a mix.
///
/// Steps: write a temporary file in the same folder, fsync it; make the current file (if any)
/// `<file>.bak` through a hard link (a copy where links fail) and an atomic rename; rename the
/// temporary file over `path`; fsync the folder.
///
/// # Errors
/// [`StoreError::Write`] naming `path`; the temporary file is removed and `path` untouched.
pub fn save_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    write_atomic(path, contents, true)
}

/// As [`save_atomic`], without keeping the previous version: for files that are rewritten
/// often and whose history does not matter (run status, checkpoint files).
///
/// # Errors
/// [`StoreError::Write`] naming `path`; `path` untouched.
pub fn replace_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    write_atomic(path, contents, false)
}

fn write_atomic(path: &Path, contents: &[u8], keep_backup: bool) -> Result<(), StoreError> {
    let werr = |source: io::Error| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".bioinstruct-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(werr)?;
    tmp.write_all(contents).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;

    if keep_backup && path.exists() {
        let bak = backup_path(path);
        let bak_tmp = tempfile::Builder::new()
            .prefix(".bioinstruct-bak-")
            .tempfile_in(&dir)
            .map_err(werr)?
            .into_temp_path();
        fs::remove_file(&bak_tmp).map_err(werr)?;
        if fs::hard_link(path, &bak_tmp).is_err() {
            fs::copy(path, &bak_tmp).map_err(werr)?;
            File::open(&bak_tmp)
                .and_then(|f| f.sync_all())
                .map_err(werr)?;
        }
        bak_tmp.persist(&bak).map_err(|e| werr(e.error))?;
    }
    tmp.persist(path).map_err(|e| werr(e.error))?;
    // Make the renames durable. Opening a folder read-only and fsyncing it works on Linux and
    // macOS; where it does not, the data itself is already on disk.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("f.jsonl")
    }

    #[test]
    fn every_bad_field_on_a_line_is_reported() {
        let text = r#"{"id":"a","category":"qa","task":"t","instruction":"i","output":"o"}
{"id":"b","category":"QA","task":"Bad Task","instruction":"","output":3}
not json

{"id":"a","category":"ie","task":"t","instruction":"i","output":"o"}
[1,2]
"#;
        let loaded = parse_jsonl(p(), text);
        assert_eq!(loaded.records.len(), 1);
        let lines: Vec<usize> = loaded.invalid.iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 6]);
        let fields: Vec<Option<&str>> = loaded.invalid[0]
            .errors
            .iter()
            .map(|e| e.field.as_deref())
            .collect();
        assert_eq!(
            fields,
            vec![
                Some("output"),
                Some("category"),
                Some("task"),
                Some("instruction")
            ]
        );
        assert_eq!(
            loaded.invalid[2].errors[0].to_string(),
            "f.jsonl:5: id: duplicate id \"a\" (first used on line 1)"
        );
        assert!(loaded.invalid[1].errors[0]
            .to_string()
            .starts_with("f.jsonl:3: not valid JSON"));
    }

    #[test]
    fn unknown_fields_survive_a_round_trip_in_order() {
        let line = r#"{"id":"a","category":"gen","task":"t","instruction":"i","input":"","output":"o","zeta":1,"alpha":{"x":[1]}}"#;
        let loaded = parse_jsonl(p(), line);
        assert_eq!(to_jsonl(&loaded.records, &[]), format!("{line}\n"));
    }

    #[test]
    fn the_bundled_seeds_are_in_the_writers_own_format() {
        // So that saving an untouched workspace copy changes no byte (clean diffs).
        let text = crate::config::BUNDLED_SEEDS;
        let loaded = parse_jsonl(Path::new("seeds.jsonl"), text);
        assert!(loaded.invalid.is_empty());
        assert_eq!(to_jsonl(&loaded.records, &[]), text);
    }

    #[test]
    fn invalid_lines_are_written_back_verbatim() {
        let text = "{\"id\":\"a\",\"category\":\"qa\",\"task\":\"t\",\"instruction\":\"i\",\"output\":\"o\"}\n{broken\n";
        let loaded = parse_jsonl(p(), text);
        let out = to_jsonl(&loaded.records, &loaded.invalid);
        assert!(out.ends_with("{broken\n"));
        assert_eq!(parse_jsonl(p(), &out).records, loaded.records);
    }

    #[test]
    fn alpaca_errors_name_the_line_where_the_element_starts() {
        let text = "[\n  {\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"},\n  {\"instruction\": \"a\",\n   \"output\": 7}\n]";
        let loaded = parse_alpaca(Path::new("x.json"), text).expect("an array");
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].category, Category::Other);
        assert_eq!(
            loaded.invalid[0].errors[0].to_string(),
            "x.json:3: output: must be a string, found a number"
        );
        let not_array = parse_alpaca(Path::new("x.json"), "{}");
        assert!(matches!(not_array, Err(StoreError::Format { line: 1, .. })));
    }

    #[test]
    fn save_keeps_the_previous_version_as_bak() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s.jsonl");
        save_atomic(&f, b"one\n").expect("first save");
        assert!(!backup_path(&f).exists());
        save_atomic(&f, b"two\n").expect("second save");
        assert_eq!(fs::read_to_string(&f).expect("read"), "two\n");
        assert_eq!(fs::read_to_string(backup_path(&f)).expect("bak"), "one\n");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn replace_keeps_no_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("status.json");
        replace_atomic(&f, b"1").expect("write");
        replace_atomic(&f, b"2").expect("write");
        assert_eq!(fs::read_to_string(&f).expect("read"), "2");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn a_failed_save_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s.jsonl");
        save_atomic(&f, b"old\n").expect("save");
        // A folder in the way of the target makes the final rename fail.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("x")).expect("mkdir");
        let e = save_atomic(&blocked, b"new\n").expect_err("rename over a folder fails");
        assert!(e.to_string().contains("blocked"), "{e}");
        assert_eq!(fs::read_to_string(&f).expect("read"), "old\n");
    }
}
