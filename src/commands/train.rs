//! `bioinstruct train` (in the foreground) and `bioinstruct runs list|show|tail`.

use crate::config::Settings;
use crate::data::{read_any, Instruction};
use crate::model::{GgufCompute, LoadOptions, LoadedModel};
use crate::train::config::TrainConfig;
use crate::train::data::{build_examples, shuffle_split, BuildOptions};
use crate::train::run::{Metric, RunDir, RunState};
use crate::train::trainer::{train as run_training, TrainSettings};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder runs go in under these settings and config.
pub fn runs_root(settings: &Settings, config: Option<&TrainConfig>) -> PathBuf {
    match config.map(|c| &c.run.output_dir) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
        _ => settings.workspace.data_dir.join("runs"),
    }
}

/// The instruction records of `[data] files`; every file must exist and parse cleanly.
fn read_data(
    settings: &Settings,
    config: &TrainConfig,
    config_path: &Path,
) -> Result<Vec<Instruction>> {
    let mut records = Vec::new();
    for name in &config.data.files {
        let path = if name == "seeds" {
            settings.ensure_seeds()?;
            settings.seeds_path.clone()
        } else {
            let given = PathBuf::from(name);
            let in_workspace = settings.workspace.data_dir.join(name);
            if given.exists() {
                given
            } else if in_workspace.exists() {
                in_workspace
            } else {
                bail!(
                    "{}: data.files: {name:?} not found (looked at {} and {})",
                    config_path.display(),
                    given.display(),
                    in_workspace.display()
                );
            }
        };
        let loaded = read_any(&path, None)?;
        if let Some(e) = loaded.errors().next() {
            bail!(
                "{e} ({} invalid line(s); `bioinstruct seeds validate` lists them)",
                loaded.invalid.len()
            );
        }
        records.extend(loaded.records);
    }
    Ok(records)
}

/// `train --config FILE`: checks the config, the data and the output folder, loads the base
/// model (a GGUF dequantized to float), builds the examples, then trains in the foreground
/// with a progress bar, writing the run folder.
///
/// # Errors
/// Every check fails before any training compute, with the file and field.
pub fn train(settings: &Settings, config_path: &Path, out: &mut dyn Write) -> Result<()> {
    let config = TrainConfig::from_file(config_path).map_err(anyhow::Error::msg)?;
    let records = read_data(settings, &config, config_path)?;
    let root = runs_root(settings, Some(&config));
    std::fs::create_dir_all(&root)
        .and_then(|()| tempfile::tempfile_in(&root).map(drop))
        .with_context(|| format!("run folder {} is not writable", root.display()))?;

    let options = LoadOptions::for_device(&config.model.device, GgufCompute::Float)?;
    let mut loaded = LoadedModel::load(&settings.resolver(), &config.model.base, &options)?;
    let end_token = loaded
        .stop_token_ids()
        .first()
        .copied()
        .context("the model has no end-of-sequence token")?;
    let template = loaded.template(None)?;
    let build = BuildOptions {
        format: config.data.format,
        template: Some(&template),
        end_token,
        max_seq_len: config.data.max_seq_len.min(loaded.model.config.max_context),
        categories: &config.data.categories,
    };
    let (examples, stats) = build_examples(&records, &loaded.tokenizer, &build)?;
    if examples.is_empty() {
        bail!(
            "{}: no usable example: {} record(s), {} dropped because the prompt fills data.max_seq_len = {}",
            config_path.display(),
            stats.records,
            stats.dropped.len(),
            config.data.max_seq_len
        );
    }
    let (train_set, validation) =
        shuffle_split(examples, config.run.seed, config.data.validation_fraction);

    let total = super::models::parameter_count(&loaded.model.config) as f64;
    let trainable = config.lora.parameter_count(&loaded.model);
    let id = format!("run-{}", crate::train::run::unix_now() as u64);
    let run = RunDir::create(&root, &id)
        .with_context(|| format!("creating run {id} in {}", root.display()))?;
    crate::data::replace_atomic(
        &run.path.join("config.toml"),
        toml::to_string_pretty(&config)?.as_bytes(),
    )?;
    writeln!(
        out,
        "run {id}: {} training and {} validation examples ({} truncated, {} dropped); \
         {trainable} trainable parameters ({:.3}% of {:.1} M)",
        train_set.len(),
        validation.len(),
        stats.truncated,
        stats.dropped.len(),
        100.0 * trainable as f64 / total,
        total / 1e6
    )?;
    writeln!(out, "run folder: {}", run.path.display())?;

    let train_settings = TrainSettings::from_config(&config, end_token);
    let steps = train_settings.total_steps(train_set.len());
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = |metric: &Metric| {
        if let Metric::Step {
            step,
            loss,
            tokens_per_s,
            ..
        } = metric
        {
            bar.set_position(*step as u64);
            bar.set_message(format!("loss {loss:.4}, {tokens_per_s:.0} tokens/s"));
        }
        false
    };
    let outcome = run_training(
        &mut loaded,
        &train_set,
        &validation,
        &train_settings,
        &run,
        &progress,
    )?;
    bar.finish();
    match outcome.val_loss {
        Some((first, last)) => writeln!(
            out,
            "finished {} steps; validation loss {first:.4} -> {last:.4}",
            outcome.steps
        )?,
        None => writeln!(out, "finished {} steps", outcome.steps)?,
    }
    writeln!(out, "adapter: {}", run.path.join("final").display())?;
    Ok(())
}

/// The run named `name` (an id under the runs folder, or a path).
fn find_run(settings: &Settings, name: &str) -> Result<RunDir> {
    let direct = PathBuf::from(name);
    let path = if direct.join("status.json").is_file() {
        direct
    } else {
        runs_root(settings, None).join(name)
    };
    if !path.join("status.json").is_file() {
        bail!(
            "no run {name:?} (looked in {})",
            runs_root(settings, None).display()
        );
    }
    Ok(RunDir { path })
}

fn last_losses(run: &RunDir) -> (Option<f64>, Option<f64>) {
    let metrics = run.read_metrics().unwrap_or_default();
    let loss = metrics.iter().rev().find_map(|m| match m {
        Metric::Step { loss, .. } => Some(*loss),
        Metric::Eval { .. } => None,
    });
    let val = metrics.iter().rev().find_map(|m| match m {
        Metric::Eval { val_loss, .. } => Some(*val_loss),
        Metric::Step { .. } => None,
    });
    (loss, val)
}

/// `runs list`: every run with its state, progress and latest losses.
///
/// # Errors
/// Writing to `out`.
pub fn list(settings: &Settings, out: &mut dyn Write) -> Result<()> {
    let root = runs_root(settings, None);
    let mut runs: Vec<RunDir> = std::fs::read_dir(&root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| RunDir { path: e.path() })
                .filter(|r| r.path.join("status.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    runs.sort_by(|a, b| a.path.cmp(&b.path));
    for run in runs {
        let Ok(s) = run.read_status() else { continue };
        let (loss, val) = last_losses(&run);
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        writeln!(
            out,
            "{:24} {:9} {:>5}/{:<5} loss {:>8}  val {:>8}",
            run.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            format!("{:?}", s.state).to_lowercase(),
            s.step,
            s.total_steps,
            fmt(loss),
            fmt(val)
        )?;
    }
    Ok(())
}

/// `runs show RUN`: the status, the latest losses, checkpoints and the final adapter.
///
/// # Errors
/// No such run, or writing to `out`.
pub fn show(settings: &Settings, name: &str, out: &mut dyn Write) -> Result<()> {
    let run = find_run(settings, name)?;
    let s = run.read_status()?;
    let (loss, val) = last_losses(&run);
    writeln!(out, "run        {}", run.path.display())?;
    writeln!(out, "state      {:?}", s.state)?;
    writeln!(out, "step       {}/{}", s.step, s.total_steps)?;
    if let Some(l) = loss {
        writeln!(out, "loss       {l:.4}")?;
    }
    if let Some(v) = val {
        writeln!(out, "val_loss   {v:.4}")?;
    }
    if let Some((step, path)) = run.latest_checkpoint() {
        writeln!(out, "checkpoint {} (step {step})", path.display())?;
    }
    if run.path.join("final").is_dir() {
        writeln!(out, "adapter    {}", run.path.join("final").display())?;
    }
    if let Some(e) = &s.error {
        writeln!(out, "error      {e}")?;
    }
    Ok(())
}

/// `runs tail RUN [--follow]`: the metrics lines; with `follow`, keeps printing new ones
/// (polling every 250 ms) until the run has ended.
///
/// # Errors
/// No such run, or writing to `out`.
pub fn tail(settings: &Settings, name: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
    let run = find_run(settings, name)?;
    let mut shown = 0;
    loop {
        let metrics = run.read_metrics()?;
        for m in &metrics[shown.min(metrics.len())..] {
            writeln!(out, "{}", serde_json::to_string(m)?)?;
        }
        out.flush()?;
        shown = metrics.len();
        let ended = matches!(
            run.read_status()?.state,
            RunState::Finished | RunState::Stopped | RunState::Failed
        );
        if !follow || (ended && run.read_metrics()?.len() == shown) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
