//! A self-instruct generation run (Wang et al. 2023, Self-Instruct; Stanford Alpaca's
//! `generate_instruction.py`): requests to a [`Teacher`] on a few worker threads, each with
//! `seeds_per_prompt` random seeds (and optionally kept generated tasks) in the prompt; every
//! task in a reply goes through [`Deduper::consider`] and is appended to the kept file
//! (`generated.jsonl`) or the rejected file (`rejected.jsonl`), one fsynced line at a time,
//! with its provenance. Every reply, parsed or not, goes to the raw log (`raw.jsonl`).
//!
//! The files are the run's whole state: a run started on a folder that already holds kept
//! tasks compares against them, counts them towards the target and numbers new records after
//! them, so an interrupted run (Ctrl-C, SIGKILL, a crash) is continued by running it again; it
//! loses only the requests that were in flight. A last line cut short by a crash mid-write is
//! removed before appending (and reported).

use super::parse::parse_reply;
use super::prompt::{render, sample, DEFAULT_TEMPLATE};
use super::teacher::{Completion, Teacher, TeacherApi, TeacherError};
use super::Deduper;
use crate::data::{read_jsonl, Instruction, StoreError};
use crate::rng::XorShift64Star;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The `[generate]` table: how prompts are built and replies asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// The teacher a run uses when none is named: a name under `[teachers]`, or `local`.
    pub teacher: String,
    /// Kept tasks a run aims for when no target is given.
    pub target: usize,
    /// The folder of the kept, rejected and raw files; relative to the data folder.
    pub dir: PathBuf,
    /// Seed tasks shown in each prompt (Alpaca: 3).
    pub seeds_per_prompt: usize,
    /// Kept generated tasks shown in each prompt besides the seeds (Self-Instruct: 2 of 8;
    /// Alpaca: 0).
    pub generated_per_prompt: usize,
    /// Tasks the prompt asks for, counting the examples (Alpaca: 20).
    pub tasks_per_prompt: usize,
    /// The word limit the prompt sets on outputs.
    pub output_word_limit: usize,
    /// The most tokens a reply may have.
    pub max_tokens: u32,
    /// Sampling temperature sent to the teacher.
    pub temperature: f64,
    /// Nucleus sampling mass sent to the teacher.
    pub top_p: f64,
    /// Seeds the choice of examples for each request (request `n` uses `seed + n`).
    pub seed: u64,
    /// A prompt template file (minijinja) instead of the bundled one; empty: bundled.
    pub prompt_template: PathBuf,
    /// Requests failing for good in a row before the run stops.
    pub max_failures: u32,
    /// How the `local` teacher is prompted (continuing text suits small models).
    pub local_api: TeacherApi,
    /// Strings that end a reply (OpenAI's `stop`, at most 4); `["###"]` asks for one task a
    /// reply.
    pub stop: Vec<String>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            teacher: crate::config::AUTO_TEACHER.into(),
            target: 100,
            dir: PathBuf::from("generated"),
            seeds_per_prompt: 3,
            generated_per_prompt: 0,
            tasks_per_prompt: 20,
            output_word_limit: 100,
            max_tokens: 1024,
            temperature: 0.7,
            top_p: 0.95,
            seed: 42,
            prompt_template: PathBuf::new(),
            max_failures: 5,
            local_api: TeacherApi::Completions,
            stop: Vec::new(),
        }
    }
}

/// The kept, rejected and raw files of a generation folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFiles {
    /// Kept tasks, one [`Instruction`] a line, with `provenance` and `similarity`.
    pub kept: PathBuf,
    /// Rejected tasks, with `rejection` besides.
    pub rejected: PathBuf,
    /// Every reply and failed request, one JSON object a line.
    pub raw: PathBuf,
}

impl GeneratedFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> GeneratedFiles {
        GeneratedFiles {
            kept: dir.join("generated.jsonl"),
            rejected: dir.join("rejected.jsonl"),
            raw: dir.join("raw.jsonl"),
        }
    }
}

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A file could not be read, or has a line that is not a record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Appending failed (disk full, ...); what was written before is intact.
    #[error("cannot append to {}: {source}", path.display())]
    Append {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The prompt template is unreadable or does not render.
    #[error("{0}")]
    Template(String),
    /// There are no seed tasks to show the teacher.
    #[error("no seed tasks to put in the prompt")]
    NoSeeds,
    /// Nothing answers at the teacher's endpoint: the run stops at once.
    #[error("{0}")]
    Unreachable(TeacherError),
    /// `max_failures` requests in a row failed; the last error.
    #[error("{count} requests in a row failed; the last: {last}")]
    Teacher {
        /// Failures in a row.
        count: u32,
        /// The last error.
        last: TeacherError,
    },
}

/// Live counters of a run, for a progress bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Kept tasks in the file (earlier runs' included).
    pub kept: usize,
    /// Tasks kept by this run.
    pub kept_now: usize,
    /// Tasks rejected by this run.
    pub rejected_now: usize,
    /// Blocks of replies that were not tasks, this run.
    pub garbage_now: usize,
    /// The target number of kept tasks.
    pub target: usize,
    /// Requests answered this run.
    pub requests: u64,
    /// Requests that failed for good this run.
    pub failed_requests: u64,
    /// Requests waiting on the teacher now.
    pub in_flight: usize,
    /// Prompt tokens this run (as the teacher counted them).
    pub prompt_tokens: u64,
    /// Generated tokens this run.
    pub completion_tokens: u64,
    /// The latest failed request's error.
    pub last_error: Option<String>,
    /// A line removed from the end of a file at the start (a write cut short earlier).
    pub repaired: Vec<String>,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The kept file reached the target.
    Reached,
    /// Stopped on request; this many requests in flight were abandoned.
    Stopped {
        /// Requests abandoned.
        abandoned: usize,
    },
    /// Stopped by an error.
    Failed(GenerateError),
}

struct State {
    deduper: Deduper,
    /// Kept generated tasks, for `generated_per_prompt`.
    generated: Vec<Instruction>,
    kept_file: File,
    rejected_file: File,
    raw_file: File,
    next_id: u64,
    next_request: u64,
    failures_in_row: u32,
    progress: Progress,
    /// Set when the run is over: nothing more is written.
    closed: bool,
    error: Option<GenerateError>,
}

struct Shared {
    state: Mutex<State>,
    teacher: Arc<dyn Teacher>,
    seeds: Vec<Instruction>,
    config: GenerateConfig,
    template: String,
    files: GeneratedFiles,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A run in progress on worker threads.
pub struct Generation {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// Removes a last line without its newline (a write cut short); returns it.
fn repair_tail(path: &Path) -> Result<Option<String>, StoreError> {
    let werr = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(werr)?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = String::from_utf8_lossy(&bytes[keep..]).into_owned();
    file.set_len(keep as u64).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(Some(tail))
}

fn open_append(path: &Path) -> Result<File, GenerateError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| GenerateError::Append {
            path: path.to_path_buf(),
            source,
        })?;
    f.seek(SeekFrom::End(0))
        .map_err(|source| GenerateError::Append {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(f)
}

/// Reads a JSONL file of records that must all be valid (a missing file is empty).
fn read_records(path: &Path) -> Result<Vec<Instruction>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let loaded = read_jsonl(path)?;
    if let Some(e) = loaded.errors().next() {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            line: e.line,
            problem: format!(
                "{}{} ({} invalid line(s); fix or remove them to continue the run)",
                e.field.as_ref().map_or(String::new(), |f| format!("{f}: ")),
                e.problem,
                loaded.invalid.len()
            ),
        });
    }
    Ok(loaded.records)
}

/// The number in a `gen-N` id.
fn id_number(id: &str) -> Option<u64> {
    id.strip_prefix("gen-")?.parse().ok()
}

/// Appends one line and fsyncs, so that a record is either whole on disk or absent.
///
/// Holds the file's lock ([`crate::data::merge::with_lock`]) while it writes, so that a
/// reviewer rewriting the file (the Generated pane, which merges what was appended) never
/// interleaves with an append; if the file was replaced since `file` was opened (a rewrite is
/// a rename), it is opened again first, so nothing goes to the old copy.
fn append_line(file: &mut File, path: &Path, value: &Value) -> Result<(), GenerateError> {
    let mut line = value.to_string();
    line.push('\n');
    let appended = crate::data::merge::with_lock(path, || {
        Ok((|| -> std::io::Result<()> {
            if replaced(file, path) {
                *file = OpenOptions::new().create(true).append(true).open(path)?;
            }
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })())
    })?;
    appended.map_err(|source| GenerateError::Append {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `path` no longer names the file `file` has open (renamed over, or removed).
#[cfg(unix)]
fn replaced(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(now)) => open.ino() != now.ino() || open.dev() != now.dev(),
        _ => true,
    }
}

/// Whether `path` no longer names the file `file` has open: assumed, where inodes are not
/// available (reopening costs one `open`).
#[cfg(not(unix))]
fn replaced(_file: &File, _path: &Path) -> bool {
    true
}

/// The current UTC time in RFC 3339 (`2026-11-26T18:29:49.3Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Generation {
    /// Opens (or creates) the files in `dir`, loads what they hold, and starts `concurrency`
    /// workers asking `teacher` until the kept file holds `target` tasks.
    ///
    /// `seeds` are shown in prompts and compared against; they are not filtered.
    ///
    /// # Errors
    /// [`GenerateError`]: no seeds, a file with an invalid line (named with its line), a
    /// template that does not render, or a folder that cannot be written.
    pub fn start(
        teacher: Arc<dyn Teacher>,
        seeds: Vec<Instruction>,
        config: GenerateConfig,
        dir: &Path,
        target: usize,
        concurrency: usize,
    ) -> Result<Generation, GenerateError> {
        if seeds.is_empty() {
            return Err(GenerateError::NoSeeds);
        }
        let template = if config.prompt_template.as_os_str().is_empty() {
            DEFAULT_TEMPLATE.to_string()
        } else {
            std::fs::read_to_string(&config.prompt_template).map_err(|e| {
                GenerateError::Template(format!(
                    "cannot read the prompt template {}: {e}",
                    config.prompt_template.display()
                ))
            })?
        };
        // Fails early on a template that does not render.
        render(
            &template,
            &sample(&seeds, config.seeds_per_prompt, &mut XorShift64Star::new(1)),
            config.tasks_per_prompt,
            config.output_word_limit,
            teacher.api() == TeacherApi::Completions,
        )
        .map_err(GenerateError::Template)?;
        std::fs::create_dir_all(dir).map_err(|source| GenerateError::Append {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = GeneratedFiles::in_dir(dir);
        let mut repaired = Vec::new();
        for path in [&files.kept, &files.rejected, &files.raw] {
            if let Some(tail) = repair_tail(path)? {
                repaired.push(format!(
                    "{}: removed an unfinished last line ({} bytes)",
                    path.display(),
                    tail.len()
                ));
            }
        }
        let kept = read_records(&files.kept)?;
        let rejected = read_records(&files.rejected)?;
        let next_id = kept
            .iter()
            .chain(&rejected)
            .filter_map(|r| id_number(&r.id))
            .max()
            .unwrap_or(0)
            + 1;
        let next_request = raw_requests(&files.raw);
        let mut deduper = Deduper::new(&seeds);
        for r in &kept {
            deduper.keep(r);
        }
        let state = State {
            deduper,
            progress: Progress {
                kept: kept.len(),
                target,
                repaired,
                ..Progress::default()
            },
            generated: kept,
            kept_file: open_append(&files.kept)?,
            rejected_file: open_append(&files.rejected)?,
            raw_file: open_append(&files.raw)?,
            next_id,
            next_request,
            failures_in_row: 0,
            closed: false,
            error: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            teacher,
            seeds,
            config,
            template,
            files,
            stop: AtomicBool::new(false),
        });
        let workers = (0..concurrency.max(1))
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared))
            })
            .collect();
        Ok(Generation { shared, workers })
    }

    /// The counters now.
    pub fn progress(&self) -> Progress {
        self.shared.lock().progress.clone()
    }

    /// The files written.
    pub fn files(&self) -> &GeneratedFiles {
        &self.shared.files
    }

    /// Whether every worker has finished.
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }

    /// Stops the run: no request is started, and nothing more is written (a write under
    /// way completes first). Requests in flight are abandoned; their threads end when the
    /// teacher answers.
    /// Returns how it ended and the final counters.
    pub fn stop(self) -> (Outcome, Progress) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.teacher.cancel();
        let mut state = self.shared.lock();
        state.closed = true;
        let abandoned = state.progress.in_flight;
        let outcome = match state.error.take() {
            Some(e) => Outcome::Failed(e),
            None if state.progress.kept >= state.progress.target => Outcome::Reached,
            None => Outcome::Stopped { abandoned },
        };
        (outcome, state.progress.clone())
    }

    /// Waits for the workers (the target reached, or a failure), or for `stop` to be set,
    /// checking every 50 ms and calling `on_tick` with the counters; as [`Generation::stop`]
    /// then.
    pub fn wait(
        self,
        stop: &AtomicBool,
        mut on_tick: impl FnMut(&Progress),
    ) -> (Outcome, Progress) {
        loop {
            on_tick(&self.progress());
            if stop.load(Ordering::SeqCst) || self.is_finished() {
                return self.stop();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The next request number: one above the highest in the raw log.
fn raw_requests(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()?
                .get("request")?
                .as_u64()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// Whether the run should start no more requests.
fn done(shared: &Shared, state: &State) -> bool {
    state.closed
        || state.error.is_some()
        || shared.stop.load(Ordering::SeqCst)
        || state.progress.kept >= state.progress.target
}

fn worker(shared: &Shared) {
    loop {
        let (request, prompt, shown, next_number) = {
            let mut state = shared.lock();
            if done(shared, &state) {
                return;
            }
            let request = state.next_request;
            state.next_request += 1;
            let cfg = &shared.config;
            let mut rng = XorShift64Star::new(cfg.seed.wrapping_add(request));
            let mut shown = sample(&shared.seeds, cfg.seeds_per_prompt, &mut rng);
            shown.extend(sample(&state.generated, cfg.generated_per_prompt, &mut rng));
            let prompt = render(
                &shared.template,
                &shown,
                cfg.tasks_per_prompt,
                cfg.output_word_limit,
                shared.teacher.api() == TeacherApi::Completions,
            );
            let shown: Vec<String> = shown.iter().map(|r| r.id.clone()).collect();
            state.progress.in_flight += 1;
            let next_number = shown.len() + 1;
            (request, prompt, shown, next_number)
        };
        let reply = match prompt {
            Ok(p) => shared.teacher.complete(
                &p,
                shared.config.max_tokens,
                shared.config.temperature,
                shared.config.top_p,
                &shared.config.stop,
            ),
            Err(e) => {
                let mut state = shared.lock();
                state.progress.in_flight -= 1;
                state.error.get_or_insert(GenerateError::Template(e));
                return;
            }
        };
        let mut state = shared.lock();
        state.progress.in_flight -= 1;
        if state.closed {
            return;
        }
        if let Err(e) = record(shared, &mut state, request, &shown, next_number, reply) {
            state.error.get_or_insert(e);
            return;
        }
    }
}

/// Files one reply (or failure) under the lock.
fn record(
    shared: &Shared,
    state: &mut State,
    request: u64,
    shown: &[String],
    next_number: usize,
    reply: Result<Completion, TeacherError>,
) -> Result<(), GenerateError> {
    let teacher = shared.teacher.name();
    let time = now_rfc3339();
    let c = match reply {
        Err(e) => {
            state.progress.failed_requests += 1;
            state.progress.last_error = Some(e.to_string());
            state.failures_in_row += 1;
            append_line(
                &mut state.raw_file,
                &shared.files.raw,
                &json!({"request": request, "time": time, "teacher": teacher,
                        "seeds": shown, "error": e.to_string()}),
            )?;
            if matches!(e, TeacherError::Unreachable { .. }) {
                return Err(GenerateError::Unreachable(e));
            }
            if state.failures_in_row >= shared.config.max_failures.max(1) {
                return Err(GenerateError::Teacher {
                    count: state.failures_in_row,
                    last: e,
                });
            }
            return Ok(());
        }
        Ok(c) => c,
    };
    state.failures_in_row = 0;
    state.progress.requests += 1;
    state.progress.prompt_tokens += c.prompt_tokens;
    state.progress.completion_tokens += c.completion_tokens;
    // A continuation starts in the middle of the `N. Category:` line the prompt ended with.
    let text = match shared.teacher.api() {
        TeacherApi::Chat => c.text.clone(),
        TeacherApi::Completions => format!("{next_number}. Category:{}", c.text),
    };
    let parsed = parse_reply(&text, c.finish_reason == "length");
    state.progress.garbage_now += parsed.garbage.len();
    let provenance = json!({
        "teacher": teacher,
        "request": request,
        "seeds": shown,
        "time": time,
        "finish_reason": c.finish_reason,
    });
    let (mut kept_ids, mut rejected_ids, mut unused) = (Vec::new(), Vec::new(), 0);
    for task in parsed.tasks {
        if state.progress.kept >= state.progress.target {
            unused += 1;
            continue;
        }
        let mut r = Instruction {
            id: format!("gen-{:06}", state.next_id),
            category: task.category,
            task: "self_instruct".into(),
            instruction: task.instruction,
            input: task.input,
            output: task.output,
            extra: Default::default(),
        };
        state.next_id += 1;
        let verdict = state.deduper.consider(&r);
        r.extra.insert("provenance".into(), provenance.clone());
        for (k, v) in verdict.fields() {
            r.extra.insert(k, v);
        }
        let value = serde_json::to_value(&r).unwrap_or(Value::Null);
        if verdict.rejection.is_none() {
            append_line(&mut state.kept_file, &shared.files.kept, &value)?;
            state.progress.kept += 1;
            state.progress.kept_now += 1;
            kept_ids.push(r.id.clone());
            state.generated.push(r);
        } else {
            append_line(&mut state.rejected_file, &shared.files.rejected, &value)?;
            state.progress.rejected_now += 1;
            rejected_ids.push(r.id.clone());
        }
    }
    append_line(
        &mut state.raw_file,
        &shared.files.raw,
        &json!({
            "request": request, "time": time, "teacher": teacher, "seeds": shown,
            "attempts": c.attempts, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "kept": kept_ids, "rejected": rejected_ids, "unused_past_target": unused,
            "cut_off_task_dropped": parsed.cut_off,
            "garbage": parsed.garbage.iter()
                .map(|(text, why)| json!({"text": text, "why": why}))
                .collect::<Vec<_>>(),
            "text": c.text,
        }),
    )
}
