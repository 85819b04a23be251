//! `bioinstruct data from-benchmark`: a benchmark's training split as instruction records.

use crate::config::Settings;
use crate::eval::fetch;
use crate::eval::instructions::{self, TestCheck};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// What `data from-benchmark` was asked.
#[derive(Debug, Clone, Default)]
pub struct FromBenchmarkArgs {
    /// `pubmedqa`, `ncbi_disease` or `mts_dialog`.
    pub task: String,
    /// The benchmark file, in its publisher's format.
    pub file: PathBuf,
    /// Item indices in file order, `START..END`.
    pub items: Option<String>,
    /// Test-split files in the benchmark's format (default: the pinned official ones, from
    /// the cache or downloaded).
    pub test_split: Vec<PathBuf>,
    /// Do not check against the test split (the file is known to hold none of it).
    pub no_test_check: bool,
    /// Write here (atomically, keeping `.bak`) instead of standard output.
    pub output: Option<PathBuf>,
}

/// Runs `data from-benchmark`: reads the file with the evaluation reader, refuses test-split
/// items, writes one JSONL record per item. A summary line goes to `log` (standard error
/// for the binary), the records to `output` or `out`.
///
/// # Errors
/// An unknown task, a malformed file (file, line or item, and field named), a test split
/// that cannot be had (offline, unreachable), test-split items in the file, a file that
/// cannot be written.
pub fn from_benchmark(
    settings: &Settings,
    args: &FromBenchmarkArgs,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<()> {
    let task = instructions::load(&args.task, &args.file)?;
    let range = match &args.items {
        Some(r) => instructions::parse_range(r)?,
        None => 0..usize::MAX,
    };
    let check = if args.no_test_check {
        TestCheck::Skipped
    } else {
        let files = if args.test_split.is_empty() {
            let offline = settings.config.model.offline || crate::model::source::offline_from_env();
            let mut files = Vec::new();
            for pin in instructions::test_split_pins(&args.task)? {
                let got = fetch::ensure(
                    &settings.workspace.cache_dir,
                    &args.task,
                    &pin,
                    offline,
                    &mut |_, _, _| {},
                )
                .with_context(|| {
                    format!(
                        "{}: cannot check it against {}'s test split; pass --test-split FILE (the split in the benchmark's own format) or, for a file known to hold no test item, --no-test-check",
                        args.file.display(),
                        args.task
                    )
                })?;
                files.push(got);
            }
            files
        } else {
            args.test_split.clone()
        };
        let ids = instructions::test_identities(&args.task, &files)?;
        TestCheck::Against(files, ids)
    };
    let records = instructions::records(&task, range.clone(), &check)?;
    let text = crate::data::to_jsonl(&records, &[]);
    let place = match &args.output {
        Some(path) => {
            crate::data::save_atomic(path, text.as_bytes())?;
            path.display().to_string()
        }
        None => {
            out.write_all(text.as_bytes())?;
            "standard output".to_string()
        }
    };
    let first = range.start.min(task.items.len());
    writeln!(
        log,
        "{} {} records (items {first}..{} of {}) from {} to {place}; {}",
        records.len(),
        task.group.as_str(),
        first + records.len(),
        task.items.len(),
        args.file.display(),
        match &check {
            TestCheck::Against(files, ids) => format!(
                "none of the {} test-split items of {}",
                ids.len(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TestCheck::Skipped => "not checked against the test split (--no-test-check)".into(),
        }
    )?;
    Ok(())
}
