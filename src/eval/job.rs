//! An evaluation in the background: its output folder (`<data dir>/evals/<id>/`) holds what
//! it was asked and how far it is, so a workbench or a shell can follow it, stop it and go on
//! with it after the process that started it has gone.
//!
//! - `job.json`: [`Job`], what `eval run` was asked (tasks, files, adapters, limits, model);
//! - `status.json`: [`EvalStatus`], replaced atomically about twice a second while it runs;
//! - `eval.log`: the worker's output;
//! - `report.json`, `report.md`, `predictions/`: when it has finished ([`super::report`]).
//!
//! The items themselves are in the evaluation cache, so continuing a stopped or killed
//! evaluation computes only what is missing.

use crate::data::replace_atomic;
use crate::train::run::RunState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What an evaluation job runs: `eval run`'s arguments and the model settings it was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Task names, in order.
    pub tasks: Vec<String>,
    /// `PATH` or `TASK=PATH` per task, as `--data` takes them (absolute paths).
    pub data: Vec<String>,
    /// The scoring mode for every task, or each task's own.
    pub mode: Option<super::Mode>,
    /// Adapter folders (absolute).
    pub adapters: Vec<String>,
    /// Only the first N items of each task (after `skip`).
    pub limit: Option<usize>,
    /// Leave out the first N items of each task.
    pub skip: Option<usize>,
    /// The most tokens a generated answer may have.
    pub max_new_tokens: Option<usize>,
    /// The base model spec.
    pub model: String,
    /// Read caches only.
    pub offline: bool,
    /// The server whose models are evaluated (`--endpoint`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// With `endpoint`: the served models' ids (`--model`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// With `endpoint`: the environment variable holding its API key (the worker inherits
    /// the environment; the key itself is never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

/// `status.json` of an evaluation job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalStatus {
    /// `queued`, `running`, `stopped` (on request; continue with `eval resume`), `finished`,
    /// `failed`.
    pub state: RunState,
    /// The worker's process id.
    pub pid: u32,
    /// Items computed so far in this attempt plus those found in the cache.
    pub done: usize,
    /// Items in all (every task for every model).
    pub total: usize,
    /// Of `done`, how many came from the cache.
    pub cached: usize,
    /// Items computed per second in this attempt.
    pub items_per_s: f64,
    /// Seconds to the end at that speed.
    pub eta_s: f64,
    /// The task and model of the item being computed.
    pub current: Option<String>,
    /// The error that ended it, when failed.
    pub error: Option<String>,
    /// When this was written, seconds since the Unix epoch.
    pub updated_unix_s: f64,
}

impl EvalStatus {
    /// A new job's status: queued under `pid`.
    pub fn queued(pid: u32) -> EvalStatus {
        EvalStatus {
            state: RunState::Queued,
            pid,
            done: 0,
            total: 0,
            cached: 0,
            items_per_s: 0.0,
            eta_s: 0.0,
            current: None,
            error: None,
            updated_unix_s: crate::train::run::unix_now(),
        }
    }

    /// Whether the worker should still be at it (it may have been killed: see [`Self::label`]).
    pub fn active(&self) -> bool {
        self.state.is_active()
    }

    /// The state for display: `interrupted` when the status says active but the worker is
    /// gone (killed, or the machine restarted).
    pub fn label(&self) -> String {
        crate::commands::train::label_of(self.state, self.pid)
    }
}

/// An evaluation job's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDir {
    /// The folder.
    pub path: PathBuf,
}

impl JobDir {
    /// The folder's name, the job's id.
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `job.json`'s path.
    pub fn job_path(&self) -> PathBuf {
        self.path.join("job.json")
    }

    /// `status.json`'s path.
    pub fn status_path(&self) -> PathBuf {
        self.path.join("status.json")
    }

    /// `eval.log`'s path.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("eval.log")
    }

    /// Whether the folder holds a job (`job.json`).
    pub fn is_job(&self) -> bool {
        self.job_path().is_file()
    }

    /// Writes `job.json` atomically.
    ///
    /// # Errors
    /// [`crate::data::StoreError`] naming the file.
    pub fn write_job(&self, job: &Job) -> Result<(), crate::data::StoreError> {
        let text = serde_json::to_string_pretty(job).unwrap_or_default();
        replace_atomic(&self.job_path(), text.as_bytes())
    }

    /// Reads `job.json`.
    ///
    /// # Errors
    /// [`super::EvalError`] naming the file (and line) when missing or malformed.
    pub fn read_job(&self) -> Result<Job, super::EvalError> {
        let path = self.job_path();
        let text = std::fs::read_to_string(&path).map_err(|e| super::EvalError::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| super::EvalError::at_line(&path, e.line(), "job", e.to_string()))
    }

    /// Writes `status.json` atomically.
    ///
    /// # Errors
    /// [`crate::data::StoreError`] naming the file.
    pub fn write_status(&self, status: &EvalStatus) -> Result<(), crate::data::StoreError> {
        let text = serde_json::to_string_pretty(status).unwrap_or_default();
        replace_atomic(&self.status_path(), text.as_bytes())
    }

    /// Reads `status.json`.
    ///
    /// # Errors
    /// [`super::EvalError`] naming the file when missing or malformed.
    pub fn read_status(&self) -> Result<EvalStatus, super::EvalError> {
        let path = self.status_path();
        let text = std::fs::read_to_string(&path).map_err(|e| super::EvalError::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| super::EvalError::at_line(&path, e.line(), "status", e.to_string()))
    }

    /// Appends a timestamped line to `eval.log`.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn log(&self, message: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(f, "[{}] {message}", crate::train::run::local_timestamp())
    }
}

/// The evaluation folders under `root` (`<data dir>/evals`), jobs or not (a foreground `eval
/// run --out` folder has a report and no job), newest name first.
pub fn list(root: &Path) -> Vec<JobDir> {
    let mut out: Vec<JobDir> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("job.json").is_file() || p.join("report.json").is_file())
                .map(|path| JobDir { path })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|d| std::cmp::Reverse(d.id()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_and_its_status_read_back_as_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let job = JobDir {
            path: dir.path().join("20261202-1900"),
        };
        let spec = Job {
            tasks: vec!["pubmedqa".into()],
            data: vec!["/x/pqal.json".into()],
            mode: None,
            adapters: vec!["/runs/a/final".into()],
            limit: Some(8),
            skip: None,
            max_new_tokens: None,
            model: "m.gguf".into(),
            offline: true,
            endpoint: Some("http://gpu:8000".into()),
            models: vec!["run-a/final".into()],
            api_key_env: Some("BIOINSTRUCT_KEY".into()),
        };
        job.write_job(&spec).expect("job");
        let mut status = EvalStatus::queued(std::process::id());
        status.total = 16;
        job.write_status(&status).expect("status");
        assert_eq!(job.read_job().expect("read"), spec);
        assert_eq!(job.read_status().expect("read"), status);
        assert_eq!(job.read_status().expect("read").label(), "queued");
        assert_eq!(list(dir.path()), vec![job]);
    }

    #[test]
    fn an_active_status_whose_worker_is_gone_reads_interrupted() {
        let mut status = EvalStatus::queued(u32::MAX - 7);
        status.state = RunState::Running;
        assert_eq!(status.label(), "interrupted");
    }
}
