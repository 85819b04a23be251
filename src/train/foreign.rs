//! Run folders other trainers write, read as the workbench's own runs are (read-only): for
//! `runs watch`, `runs show`, `runs tail` and the Train pane.
//!
//! - **Hugging Face Trainer** (and what builds on it: axolotl, TRL): `trainer_state.json`,
//!   in the output folder once training ends and in each `checkpoint-N/` it saves. Its
//!   `log_history` holds a `{step, epoch, loss, learning_rate, grad_norm}` entry every
//!   `logging_steps` and a `{step, epoch, eval_loss}` entry every evaluation; `max_steps` is
//!   the planned total (transformers' `TrainerState`). The newest state is the one with the
//!   highest `global_step`, so the run is followed as often as it saves.
//! - **LLaMA-Factory**: `trainer_log.jsonl`, a line every log step (its `LogCallback`):
//!   `current_steps`, `total_steps`, `loss` or `eval_loss`, `lr`, `epoch`, `elapsed_time`
//!   and `remaining_time` (`H:MM:SS`, or `N days, H:MM:SS`), optionally `grad_norm`,
//!   `throughput` (tokens/s) and `total_tokens`; keys whose value is empty are left out.
//!
//! Values a format does not record (grad norm, tokens/s, memory for LLaMA-Factory; speed
//! and ETA for the HF Trainer) read as `NaN` (shown as `-`) or 0 for counts.
//! Neither format records its process, so such a run counts as `running` while its files
//! keep changing (the newest written in the last [`LIVE_WINDOW_S`] seconds) and it has not
//! reached its last step; `finished` at its last step; else `stopped`.

use super::run::{Metric, RunState, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A run whose newest file is younger than this, in seconds, is taken as still running.
pub const LIVE_WINDOW_S: f64 = 300.0;

/// The trainers whose folders can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// transformers' `Trainer` (`trainer_state.json`).
    HfTrainer,
    /// LLaMA-Factory (`trainer_log.jsonl`).
    LlamaFactory,
}

impl Format {
    /// A short name for tables: `HF Trainer`, `LLaMA-Factory`.
    pub fn label(self) -> &'static str {
        match self {
            Format::HfTrainer => "HF Trainer",
            Format::LlamaFactory => "LLaMA-Factory",
        }
    }
}

/// What a foreign run folder holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Which trainer wrote it.
    pub format: Format,
    /// The file read (`trainer_state.json` or `trainer_log.jsonl`).
    pub source: PathBuf,
    /// Its state, steps and time, as the workbench's `status.json` holds them (`pid` 0).
    pub status: Status,
    /// Every step and evaluation recorded, in order.
    pub metrics: Vec<Metric>,
}

/// A foreign run folder that cannot be read: the file, the line (1-based; 0 for a whole
/// JSON document) and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {problem}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct ForeignError {
    /// The file.
    pub path: PathBuf,
    /// The line, or 0.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The trainer that wrote `dir`, if it is one this module reads.
pub fn detect(dir: &Path) -> Option<Format> {
    if dir.join("trainer_log.jsonl").is_file() {
        Some(Format::LlamaFactory)
    } else if hf_state_file(dir).is_some() {
        Some(Format::HfTrainer)
    } else {
        None
    }
}

/// The newest `trainer_state.json`: the folder's own, or that of the `checkpoint-N` with
/// the highest N.
fn hf_state_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix("checkpoint-")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let state = e.path().join("trainer_state.json");
            if state.is_file() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, state));
            }
        }
    }
    let top = dir.join("trainer_state.json");
    match best {
        // The folder's own is written at the end; a checkpoint past it is a later run's.
        Some((n, state)) if !top.is_file() || global_step(&top).is_some_and(|g| n > g) => {
            Some(state)
        }
        _ if top.is_file() => Some(top),
        other => other.map(|(_, s)| s),
    }
}

fn global_step(path: &Path) -> Option<usize> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["global_step"].as_u64().map(|g| g as usize)
}

/// Seconds of `0:01:02`, `12:00:05` or `1 day, 4:06:56`.
fn duration_s(text: &str) -> Option<f64> {
    let (days, clock) = match text.split_once(',') {
        Some((d, rest)) => (
            d.split_whitespace().next()?.parse::<f64>().ok()?,
            rest.trim(),
        ),
        None => (0.0, text.trim()),
    };
    let mut s = 0.0;
    for part in clock.split(':') {
        s = s * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(days * 86_400.0 + s)
}

fn modified_s_ago(path: &Path) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(f64::INFINITY, |d| d.as_secs_f64())
}

fn unix_s(path: &Path) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A [`Snapshot`] of `path`, at `step` of `total`, its state from the file's age.
fn snapshot(
    format: Format,
    path: &Path,
    step: usize,
    total: usize,
    metrics: Vec<Metric>,
) -> Snapshot {
    Snapshot {
        format,
        source: path.to_path_buf(),
        status: Status {
            state: state_of(step, total, modified_s_ago(path)),
            pid: 0,
            step,
            total_steps: total,
            error: None,
            updated_unix_s: unix_s(path),
        },
        metrics,
    }
}

fn state_of(step: usize, total: usize, age_s: f64) -> RunState {
    if total > 0 && step >= total {
        RunState::Finished
    } else if age_s <= LIVE_WINDOW_S {
        RunState::Running
    } else {
        RunState::Stopped
    }
}

/// Reads the run in `dir`.
///
/// # Errors
/// [`ForeignError`]: no trainer's files there, or a file that is not what that trainer
/// writes (the line and field named). A last line being written (no newline yet) is left
/// for the next read.
pub fn read(dir: &Path) -> Result<Snapshot, ForeignError> {
    match detect(dir) {
        Some(Format::LlamaFactory) => read_llama_factory(&dir.join("trainer_log.jsonl")),
        Some(Format::HfTrainer) => {
            let path = hf_state_file(dir).ok_or_else(|| ForeignError {
                path: dir.to_path_buf(),
                line: 0,
                problem: "no trainer_state.json".into(),
            })?;
            read_hf_state(&path)
        }
        None => Err(ForeignError {
            path: dir.to_path_buf(),
            line: 0,
            problem: "not a run folder: no status.json (bioinstruct), trainer_state.json in it or a checkpoint-N/ (Hugging Face Trainer, axolotl), nor trainer_log.jsonl (LLaMA-Factory)".into(),
        }),
    }
}

fn number(entry: &Value, key: &str) -> Option<f64> {
    entry.get(key).and_then(Value::as_f64)
}

/// A `trainer_state.json`.
fn read_hf_state(path: &Path) -> Result<Snapshot, ForeignError> {
    let fail = |problem: String| ForeignError {
        path: path.to_path_buf(),
        line: 0,
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let state: Value = serde_json::from_str(&text).map_err(|e| ForeignError {
        path: path.to_path_buf(),
        line: e.line(),
        problem: format!("not JSON: {e}"),
    })?;
    let history = state["log_history"]
        .as_array()
        .ok_or_else(|| fail("log_history: missing or not a list".into()))?;
    let mut metrics = Vec::new();
    for (i, entry) in history.iter().enumerate() {
        let step = entry["step"].as_u64().ok_or_else(|| {
            fail(format!(
                "log_history[{i}].step: missing or not a whole number"
            ))
        })? as usize;
        let epoch = number(entry, "epoch").unwrap_or(f64::NAN);
        if let Some(loss) = number(entry, "loss") {
            metrics.push(Metric::Step {
                step,
                epoch,
                loss,
                lr: number(entry, "learning_rate").unwrap_or(f64::NAN),
                grad_norm: number(entry, "grad_norm").unwrap_or(f64::NAN),
                tokens: 0,
                tokens_per_s: f64::NAN,
                elapsed_s: f64::NAN,
                eta_s: f64::NAN,
                mem_bytes: 0,
            });
        } else if let Some(val_loss) = number(entry, "eval_loss") {
            metrics.push(Metric::Eval {
                step,
                epoch,
                val_loss,
            });
        }
    }
    let step = state["global_step"].as_u64().unwrap_or(0) as usize;
    let total = state["max_steps"].as_u64().unwrap_or(0) as usize;
    Ok(snapshot(Format::HfTrainer, path, step, total, metrics))
}

/// A `trainer_log.jsonl`.
fn read_llama_factory(path: &Path) -> Result<Snapshot, ForeignError> {
    let bytes = std::fs::read(path).map_err(|e| ForeignError {
        path: path.to_path_buf(),
        line: 0,
        problem: e.to_string(),
    })?;
    // A line still being written has no newline yet: it is read next time.
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..end]);
    let text = String::from_utf8_lossy(complete);
    let (mut metrics, mut step, mut total) = (Vec::new(), 0, 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |problem: String| ForeignError {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let entry: Value =
            serde_json::from_str(line).map_err(|e| fail(format!("not JSON: {e}")))?;
        let current = entry["current_steps"]
            .as_u64()
            .ok_or_else(|| fail("current_steps: missing or not a whole number".into()))?
            as usize;
        step = step.max(current);
        total = entry["total_steps"].as_u64().map_or(total, |t| t as usize);
        let epoch = number(&entry, "epoch").unwrap_or(f64::NAN);
        if let Some(loss) = number(&entry, "loss") {
            metrics.push(Metric::Step {
                step: current,
                epoch,
                loss,
                lr: number(&entry, "lr").unwrap_or(f64::NAN),
                grad_norm: number(&entry, "grad_norm").unwrap_or(f64::NAN),
                tokens: number(&entry, "total_tokens").map_or(0, |t| t as usize),
                tokens_per_s: number(&entry, "throughput").unwrap_or(f64::NAN),
                elapsed_s: entry["elapsed_time"]
                    .as_str()
                    .and_then(duration_s)
                    .unwrap_or(f64::NAN),
                eta_s: entry["remaining_time"]
                    .as_str()
                    .and_then(duration_s)
                    .unwrap_or(f64::NAN),
                mem_bytes: 0,
            });
        }
        if let Some(val_loss) = number(&entry, "eval_loss") {
            metrics.push(Metric::Eval {
                step: current,
                epoch,
                val_loss,
            });
        }
    }
    Ok(snapshot(Format::LlamaFactory, path, step, total, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_python_prints_timedeltas() {
        assert_eq!(duration_s("0:01:02"), Some(62.0));
        assert_eq!(duration_s("12:00:05"), Some(43_205.0));
        assert_eq!(duration_s("1 day, 4:06:56"), Some(86_400.0 + 14_816.0));
        assert_eq!(duration_s("2 days, 0:00:01"), Some(172_801.0));
        assert_eq!(duration_s("soon"), None);
    }

    #[test]
    fn a_llama_factory_log_reads_steps_evals_and_a_line_being_written_later() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("trainer_log.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"current_steps": 5, "total_steps": 20, "loss": 2.41, "lr": 0.0001, "epoch": 0.25, "percentage": 25.0, "elapsed_time": "0:00:10", "remaining_time": "0:00:30"}"#,
                "\n",
                r#"{"current_steps": 10, "total_steps": 20, "eval_loss": 2.2, "epoch": 0.5, "percentage": 50.0, "elapsed_time": "0:00:21", "remaining_time": "0:00:21"}"#,
                "\n",
                r#"{"current_steps": 15, "total_steps": 20, "loss": 2.0"#,
            ),
        )
        .expect("write");
        let s = read(dir.path()).expect("reads");
        assert_eq!(s.format, Format::LlamaFactory);
        assert_eq!((s.status.step, s.status.total_steps), (10, 20));
        assert_eq!(s.status.state, RunState::Running);
        assert_eq!(s.metrics.len(), 2);
        match &s.metrics[0] {
            Metric::Step {
                step,
                loss,
                lr,
                elapsed_s,
                eta_s,
                grad_norm,
                ..
            } => {
                assert_eq!((*step, *loss, *lr), (5, 2.41, 0.0001));
                assert_eq!((*elapsed_s, *eta_s), (10.0, 30.0));
                assert!(grad_norm.is_nan());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.metrics[1],
            Metric::Eval {
                step: 10,
                epoch: 0.5,
                val_loss: 2.2
            }
        );
        // A malformed complete line is named by its line.
        std::fs::write(&path, "{\"current_steps\": 1}\n{\"loss\": 1.0}\n").expect("write");
        let e = read(dir.path()).expect_err("bad line");
        assert!(
            e.to_string()
                .ends_with("trainer_log.jsonl:2: current_steps: missing or not a whole number"),
            "{e}"
        );
    }

    #[test]
    fn the_newest_checkpoint_s_trainer_state_is_read() {
        let dir = tempfile::tempdir().expect("dir");
        let state = |global: usize, losses: &[(usize, f64)]| {
            let history: Vec<Value> = losses
                .iter()
                .map(|(s, l)| serde_json::json!({"step": s, "epoch": *s as f64 / 10.0, "loss": l, "learning_rate": 1e-4, "grad_norm": 0.5}))
                .chain([serde_json::json!({"step": global, "epoch": 0.4, "eval_loss": 1.9, "eval_runtime": 0.1})])
                .collect();
            serde_json::json!({"global_step": global, "max_steps": 10, "log_history": history})
                .to_string()
        };
        for (n, losses) in [
            (2, vec![(1, 2.5), (2, 2.4)]),
            (4, vec![(1, 2.5), (2, 2.4), (3, 2.3), (4, 2.2)]),
        ] {
            let cp = dir.path().join(format!("checkpoint-{n}"));
            std::fs::create_dir_all(&cp).expect("mkdir");
            std::fs::write(cp.join("trainer_state.json"), state(n, &losses)).expect("write");
        }
        let s = read(dir.path()).expect("reads");
        assert_eq!(s.format, Format::HfTrainer);
        assert!(s.source.ends_with("checkpoint-4/trainer_state.json"));
        assert_eq!((s.status.step, s.status.total_steps), (4, 10));
        assert_eq!(s.metrics.len(), 5);
        assert!(matches!(s.metrics[4], Metric::Eval { step: 4, .. }));
        // The final state at the top, at the last step: finished.
        std::fs::write(
            dir.path().join("trainer_state.json"),
            state(10, &[(10, 2.0)]),
        )
        .expect("write");
        let s = read(dir.path()).expect("reads");
        assert_eq!(s.status.state, RunState::Finished);
        assert!(
            s.source.ends_with("trainer_state.json")
                && !s.source.to_string_lossy().contains("checkpoint")
        );
        assert!(read(&dir.path().join("checkpoint-2").join("none")).is_err());
    }
}
