//! Evaluation: the base model against tuned adapters on real biomedical benchmarks, per task
//! and per task group, with the metrics BioInstruct (Tran et al., JAMIA 2024) reports: QA
//! accuracy, IE entity-level F1, GEN ROUGE (and an optional model judge).
//!
//! - [`tasks`] reads the publishers' own files (PubMedQA's `ori_pqal.json`, NCBI-disease in
//!   CoNLL form, MTS-Dialog's CSV) and the project's JSONL records into [`Task`]s.
//! - [`score`] runs a model on an item: `loglikelihood` of each choice (lm-evaluation-harness's
//!   `multiple_choice`) or greedy `generate`.
//! - [`extract`] turns generated text into a prediction (a label, a mention list).
//! - [`metrics`] computes accuracy, macro-F1 (scikit-learn's), conlleval/seqeval entity F1,
//!   ROUGE-1/2/L (rouge-score's).
//! - [`cache`] keeps every item's result on disk, so a rerun computes only what is missing.
//! - [`report`] aggregates, bootstraps the differences from the base and writes the files.
//! - [`instructions`] turns a benchmark's training split into instruction records.
//! - [`job`] is an evaluation in the background: its folder, job and status.
//! - [`fetch`] downloads the benchmark files, pinned by commit and SHA-256.
//! - [`remote`] evaluates a model another machine serves (`eval run --endpoint`).

pub mod cache;
pub mod extract;
pub mod fetch;
pub mod instructions;
pub mod job;
pub mod metrics;
pub mod remote;
pub mod report;
pub mod score;
pub mod tasks;

pub use tasks::{Gold, Item, Scorer, Task};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How an item is scored.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Summed log-probability of each choice after the context; the argmax is the answer
    /// (choice tasks only).
    Loglikelihood,
    /// Greedy generation through the prompt template, then answer extraction.
    Generate,
}

impl Mode {
    /// `loglikelihood` or `generate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Loglikelihood => "loglikelihood",
            Mode::Generate => "generate",
        }
    }
}

/// An evaluation problem, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A benchmark or record file is malformed: `file:line: field: problem`, or with the item
    /// id where the format has no useful line.
    #[error("{}{}: {field}: {problem}", path.display(), place.as_deref().map(|p| format!(":{p}")).unwrap_or_default())]
    Data {
        /// The file.
        path: PathBuf,
        /// `LINE` or `item ID` (or both), when known.
        place: Option<String>,
        /// The field (column, key) at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A task name, metric or setting that does not exist.
    #[error("{0}")]
    Unknown(String),
    /// A model, tokenizer or adapter problem.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A file could not be written atomically.
    #[error(transparent)]
    Store(#[from] crate::data::StoreError),
    /// A download failed or did not match its pinned SHA-256.
    #[error("{0}")]
    Fetch(String),
}

impl EvalError {
    /// A [`EvalError::Data`] at `line` (1-based) of `path`.
    pub fn at_line(
        path: &std::path::Path,
        line: usize,
        field: &str,
        problem: impl Into<String>,
    ) -> EvalError {
        EvalError::Data {
            path: path.to_path_buf(),
            place: Some(line.to_string()),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// A [`EvalError::Data`] about item `id` of `path`.
    pub fn at_item(
        path: &std::path::Path,
        id: &str,
        field: &str,
        problem: impl Into<String>,
    ) -> EvalError {
        EvalError::Data {
            path: path.to_path_buf(),
            place: Some(format!(" item {id}")),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// An [`EvalError::Io`].
    pub fn io(path: &std::path::Path, source: std::io::Error) -> EvalError {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
