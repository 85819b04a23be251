//! `bioinstruct dedupe FILE`: Alpaca's filters (text rules, then ROUGE-L ≤ 0.7 against the
//! seeds and every instruction kept before) over an existing instruction file, such as an
//! imported dataset; kept and rejected records are written to two files.

use crate::config::Settings;
use crate::data::{read_any, save_atomic, to_jsonl, Format, Instruction};
use crate::selfinstruct::Deduper;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `<stem>.kept.jsonl` and `<stem>.rejected.jsonl` beside `file`, or in `out_dir`.
pub fn output_paths(file: &Path, out_dir: Option<&Path>) -> (PathBuf, PathBuf) {
    let stem = file.file_stem().map_or_else(
        || "instructions".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = out_dir
        .map(Path::to_path_buf)
        .or_else(|| file.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    (
        dir.join(format!("{stem}.kept.jsonl")),
        dir.join(format!("{stem}.rejected.jsonl")),
    )
}

/// Runs the filters over `file` (JSONL or Alpaca JSON), in file order, against the
/// workspace's seeds first unless `without_seeds`. Each written record carries its
/// `similarity` (max and mean ROUGE-L, the 10 most similar ids) and, when rejected, its
/// `rejection`. Both outputs are written atomically (an earlier version kept as `.bak`).
///
/// # Errors
/// The file cannot be read or has invalid lines (named with their line), or an output
/// cannot be written.
pub fn dedupe(
    settings: &Settings,
    file: &Path,
    format: Option<Format>,
    without_seeds: bool,
    out_dir: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut loaded = read_any(file, format)?;
    if let Some(e) = loaded.errors().next() {
        anyhow::bail!(
            "{e} ({} invalid line(s); `bioinstruct seeds validate` lists them)",
            loaded.invalid.len()
        );
    }
    // Records without an id (Alpaca, ShareGPT, bare JSONL) are named after the file.
    crate::data::fill_missing_ids_from(&mut loaded.records, file);
    let seeds = if without_seeds {
        Vec::new()
    } else {
        super::seeds::open_seeds(settings)?.records
    };
    let mut deduper = Deduper::new(&seeds);
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(loaded.records.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {per_sec} {elapsed}<{eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut kept, mut rejected): (Vec<Instruction>, Vec<Instruction>) = (Vec::new(), Vec::new());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (i, record) in loaded.records.iter().enumerate() {
        let verdict = deduper.consider(record);
        let mut r = record.clone();
        for (k, v) in verdict.fields() {
            r.extra.insert(k, v);
        }
        match &verdict.rejection {
            None => kept.push(r),
            Some(reason) => {
                let name = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                    .unwrap_or_default();
                *reasons.entry(name).or_default() += 1;
                rejected.push(r);
            }
        }
        if i % 64 == 0 {
            bar.set_position(i as u64);
            bar.set_message(format!("kept {}, rejected {}", kept.len(), rejected.len()));
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let (kept_path, rejected_path) = output_paths(file, out_dir);
    if let Some(dir) = kept_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    save_atomic(&kept_path, to_jsonl(&kept, &[]).as_bytes())?;
    save_atomic(&rejected_path, to_jsonl(&rejected, &[]).as_bytes())?;
    let why: Vec<String> = reasons.iter().map(|(k, n)| format!("{k} {n}")).collect();
    writeln!(
        out,
        "{}: kept {}, rejected {} ({}) against {} seed(s); {} ROUGE-L comparisons in {seconds:.2} s",
        file.display(),
        kept.len(),
        rejected.len(),
        if why.is_empty() {
            "none".to_string()
        } else {
            why.join(", ")
        },
        seeds.len(),
        deduper.comparisons
    )?;
    writeln!(out, "kept:     {}", kept_path.display())?;
    writeln!(out, "rejected: {}", rejected_path.display())?;
    Ok(())
}
