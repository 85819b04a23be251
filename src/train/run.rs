//! A training run's folder, `<workspace>/runs/<run-id>/`: the format other tools (the TUI,
//! scripts) read while a run goes on.
//!
//! - `status.json`: [`Status`], replaced atomically on every change;
//! - `metrics.jsonl`: one [`Metric`] a line, appended as the run goes (a reader skips a
//!   last line that is still being written);
//! - `train.log`: human-readable lines;
//! - `checkpoint-<step>/`: written as `checkpoint-<step>.tmp/` and renamed into place, so a
//!   crash at any instant leaves every earlier checkpoint whole.

use crate::data::replace_atomic;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, not started.
    Queued,
    /// Training.
    Running,
    /// Asked to stop; finishing the step and checkpointing.
    Stopping,
    /// Stopped on request, with a checkpoint.
    Stopped,
    /// Ran to the end.
    Finished,
    /// Ended by an error (see `error`).
    Failed,
}

impl RunState {
    /// Queued, running or stopping: a worker (trainer, evaluator, experiment) should be at it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Queued | RunState::Running | RunState::Stopping
        )
    }

    /// The state for display, lower case; `interrupted` when it is active but its worker is
    /// gone (`worker_alive` false: killed, or the machine restarted). One rule for runs,
    /// evaluations and experiments.
    pub fn label(self, worker_alive: bool) -> String {
        if self.is_active() && !worker_alive {
            "interrupted".into()
        } else {
            format!("{self:?}").to_lowercase()
        }
    }
}

/// `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The state.
    pub state: RunState,
    /// The trainer's process id.
    pub pid: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// Optimizer steps planned.
    pub total_steps: usize,
    /// The error that ended the run, if it failed.
    pub error: Option<String>,
    /// When this was written, in seconds since the Unix epoch.
    pub updated_unix_s: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metric {
    /// After an optimizer step.
    Step {
        /// Optimizer step (1-based).
        step: usize,
        /// Epoch, fractional (1.5 = half way through the second).
        epoch: f64,
        /// Mean loss over the step's response tokens.
        loss: f64,
        /// Learning rate used for the step.
        lr: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Tokens processed in the step (prompt and response, no padding).
        tokens: usize,
        /// Training speed over the step, tokens/s.
        tokens_per_s: f64,
        /// Seconds since the run started.
        elapsed_s: f64,
        /// Estimated seconds to the end.
        eta_s: f64,
        /// Peak resident memory of the trainer, bytes (0 where unknown).
        mem_bytes: u64,
    },
    /// After an evaluation on the validation split.
    Eval {
        /// Optimizer steps done when evaluated.
        step: usize,
        /// Epoch, fractional.
        epoch: f64,
        /// Mean loss over the validation split's response tokens.
        val_loss: f64,
    },
}

impl Metric {
    /// The optimizer step the line belongs to.
    pub fn step(&self) -> usize {
        match self {
            Metric::Step { step, .. } | Metric::Eval { step, .. } => *step,
        }
    }
}

static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// Reads the local time zone's UTC offset once, for [`local_now`]. Call it first thing in
/// `main`: the `time` crate refuses to read the zone once a process has several threads
/// (doing so is unsound on Unix), and then UTC is used.
pub fn init_local_offset() {
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
}

/// The local time now (UTC where the offset could not be read, see [`init_local_offset`]).
pub fn local_now() -> time::OffsetDateTime {
    let offset = *LOCAL_OFFSET
        .get_or_init(|| time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
    time::OffsetDateTime::now_utc().to_offset(offset)
}

/// `2026-12-01 18:10:42`: the local time for log lines.
pub fn local_timestamp() -> String {
    local_now()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

/// A run id a person can read and sort: local date and time to the minute, then `slug`
/// (what the run trains on), e.g. `20261201-1810-seeds`. [`RunDir::create_unique`] adds
/// `-2`, `-3`, … when runs start within the same minute.
pub fn run_id(slug: &str) -> String {
    let when = local_now()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute]"
        ))
        .unwrap_or_default();
    let slug: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    let slug: String = slug.chars().take(32).collect();
    if slug.is_empty() {
        when
    } else {
        format!("{when}-{slug}")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `root/id`.
    ///
    /// # Errors
    /// The folder exists already or cannot be created.
    pub fn create(root: &Path, id: &str) -> std::io::Result<RunDir> {
        fs::create_dir_all(root)?;
        let path = root.join(id);
        fs::create_dir(&path)?;
        Ok(RunDir { path })
    }

    /// Creates `root/id`, or `root/id-2`, `root/id-3`, … when that exists (another run
    /// started within the same minute). Returns the folder; its name is the run id.
    ///
    /// # Errors
    /// The folder cannot be created, or 999 names are taken.
    pub fn create_unique(root: &Path, id: &str) -> std::io::Result<RunDir> {
        for n in 1..1000 {
            let name = if n == 1 {
                id.to_string()
            } else {
                format!("{id}-{n}")
            };
            match RunDir::create(root, &name) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("999 runs named {id}-N exist in {}", root.display()),
        ))
    }

    /// The run's id: the folder's name.
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Replaces `status.json`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_status(&self, status: &Status) -> Result<(), crate::data::StoreError> {
        let text = serde_json::to_string_pretty(status).unwrap_or_default();
        replace_atomic(&self.path.join("status.json"), text.as_bytes())
    }

    /// Reads `status.json`.
    ///
    /// # Errors
    /// Missing or not a status.
    pub fn read_status(&self) -> std::io::Result<Status> {
        let text = fs::read_to_string(self.path.join("status.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    fn append(&self, file: &str, line: &str) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(file))?;
        // One write per line, so that a reader sees whole lines but for the last.
        f.write_all(format!("{line}\n").as_bytes())
    }

    /// Appends one line to `metrics.jsonl`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn append_metric(&self, metric: &Metric) -> std::io::Result<()> {
        self.append(
            "metrics.jsonl",
            &serde_json::to_string(metric).unwrap_or_default(),
        )
    }

    /// Every complete line of `metrics.jsonl` (a torn last line is skipped).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read_metrics(&self) -> std::io::Result<Vec<Metric>> {
        let text = match fs::read_to_string(self.path.join("metrics.jsonl")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Rewrites `metrics.jsonl` (atomically) with only the lines `keep` accepts; a resumed
    /// run drops what a killed one wrote after its last checkpoint.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn retain_metrics(&self, keep: impl Fn(&Metric) -> bool) -> std::io::Result<()> {
        let mut text = String::new();
        for m in self.read_metrics()?.iter().filter(|m| keep(m)) {
            text.push_str(&serde_json::to_string(m).unwrap_or_default());
            text.push('\n');
        }
        replace_atomic(&self.path.join("metrics.jsonl"), text.as_bytes())
            .map_err(std::io::Error::other)
    }

    /// Appends a line to `train.log`, stamped with the local time (`[2026-12-01 18:10:42]`).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn log(&self, message: &str) -> std::io::Result<()> {
        self.append("train.log", &format!("[{}] {message}", local_timestamp()))
    }

    /// `checkpoint-<step>/`.
    pub fn checkpoint_path(&self, step: usize) -> PathBuf {
        self.path.join(format!("checkpoint-{step}"))
    }

    /// Writes a checkpoint: `write` fills a temporary folder, which is then renamed to
    /// `checkpoint-<step>/`. A leftover temporary folder from a crash is cleared first.
    ///
    /// # Errors
    /// Whatever `write` returns, or the rename.
    pub fn write_checkpoint<E: From<std::io::Error>>(
        &self,
        step: usize,
        write: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        let done = self.checkpoint_path(step);
        let tmp = self.path.join(format!("checkpoint-{step}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir(&tmp)?;
        write(&tmp)?;
        if done.exists() {
            fs::remove_dir_all(&done)?;
        }
        fs::rename(&tmp, &done)?;
        if let Ok(d) = fs::File::open(&self.path) {
            let _ = d.sync_all();
        }
        Ok(done)
    }

    /// The highest-numbered complete checkpoint.
    pub fn latest_checkpoint(&self) -> Option<(usize, PathBuf)> {
        fs::read_dir(&self.path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
                Some((step, e.path()))
            })
            .max_by_key(|(step, _)| *step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_read_and_sort_and_stay_unique_within_a_minute() {
        let id = run_id("Seeds+generated v2");
        let (when, slug) = id.split_at(13);
        let shape: String = when
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "99999999-9999", "{id}");
        assert_eq!(slug, "-seeds-generated-v2");
        assert_eq!(run_id("").len(), 13);
        let root = tempfile::tempdir().expect("dir");
        let names: Vec<String> = (0..3)
            .map(|_| {
                RunDir::create_unique(root.path(), "20261201-1810-seeds")
                    .expect("run")
                    .id()
            })
            .collect();
        assert_eq!(
            names,
            [
                "20261201-1810-seeds",
                "20261201-1810-seeds-2",
                "20261201-1810-seeds-3"
            ]
        );
    }

    #[test]
    fn log_lines_carry_the_local_time() {
        let root = tempfile::tempdir().expect("dir");
        let run = RunDir::create(root.path(), "r").expect("run");
        run.log("hello").expect("log");
        let text = fs::read_to_string(run.path.join("train.log")).expect("log");
        // `[YYYY-MM-DD HH:MM:SS]`
        let shape: String = text[..21]
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "[9999-99-99 99:99:99]", "{text}");
        assert!(text.ends_with("] hello\n"), "{text}");
    }

    #[test]
    fn a_checkpoint_that_fails_half_way_leaves_the_previous_one() {
        let root = tempfile::tempdir().expect("dir");
        let run = RunDir::create(root.path(), "r1").expect("create");
        run.write_checkpoint::<std::io::Error>(2, |d| fs::write(d.join("a"), "two"))
            .expect("first");
        let failed = run.write_checkpoint::<std::io::Error>(4, |d| {
            fs::write(d.join("a"), "half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        let (step, path) = run.latest_checkpoint().expect("one");
        assert_eq!(step, 2);
        assert_eq!(fs::read_to_string(path.join("a")).expect("read"), "two");
        // The next attempt clears the leftover temporary folder.
        run.write_checkpoint::<std::io::Error>(4, |d| fs::write(d.join("a"), "four"))
            .expect("retry");
        assert_eq!(run.latest_checkpoint().map(|(s, _)| s), Some(4));
    }

    #[test]
    fn metrics_round_trip_and_a_torn_last_line_is_skipped() {
        let root = tempfile::tempdir().expect("dir");
        let run = RunDir::create(root.path(), "r").expect("create");
        let eval = Metric::Eval {
            step: 0,
            epoch: 0.0,
            val_loss: 2.5,
        };
        run.append_metric(&eval).expect("append");
        fs::OpenOptions::new()
            .append(true)
            .open(run.path.join("metrics.jsonl"))
            .and_then(|mut f| f.write_all(b"{\"step\":1,\"epo"))
            .expect("torn");
        assert_eq!(run.read_metrics().expect("read"), vec![eval]);
        assert!(
            RunDir::create(root.path(), "r").is_err(),
            "a run id is used once"
        );
    }
}
