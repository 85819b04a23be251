//! `bioinstruct train [--detach]` and `bioinstruct runs list|show|tail|stop|resume`.

use crate::config::Settings;
use crate::data::{read_any, Instruction};
use crate::model::{GgufCompute, LoadOptions, LoadedModel};
use crate::train::config::TrainConfig;
use crate::train::data::{build_examples, shuffle_split, BuildOptions};
use crate::train::engine;
use crate::train::foreign::{self, Format};
use crate::train::run::{Metric, RunDir, RunState, Status};
use crate::train::trainer::{train as run_training, TrainSettings};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The folder runs go in under these settings and config.
pub fn runs_root(settings: &Settings, config: Option<&TrainConfig>) -> PathBuf {
    match config.map(|c| &c.run.output_dir) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
        _ => settings.workspace.data_dir.join("runs"),
    }
}

/// The instruction records of `[data] files` (resolved paths); every file must parse
/// cleanly.
fn read_data(config: &TrainConfig, config_path: &Path) -> Result<Vec<Instruction>> {
    let mut records = Vec::new();
    for name in &config.data.files {
        let path = Path::new(name);
        if !path.exists() {
            bail!("{}: data.files: {name:?} not found", config_path.display());
        }
        let mut loaded = read_any(path, None)?;
        if let Some(e) = loaded.errors().next() {
            bail!(
                "{e} ({} invalid line(s); `bioinstruct seeds validate` lists them)",
                loaded.invalid.len()
            );
        }
        crate::data::fill_missing_ids_from(&mut loaded.records, path);
        records.extend(loaded.records);
    }
    Ok(records)
}

/// A checked run, ready to train: its resolved config, the loaded base model and the
/// examples.
struct Prepared {
    config: TrainConfig,
    loaded: LoadedModel,
    train_set: Vec<crate::train::data::Example>,
    validation: Vec<crate::train::data::Example>,
    stats: crate::train::data::BuildStats,
    end_token: u32,
}

/// Makes the config independent of the working folder and of the settings it was started
/// under: data files become absolute paths (`seeds` the workspace's seed file), a base
/// model given as a path becomes absolute, and `output_dir` is filled in.
fn resolve(
    settings: &Settings,
    mut config: TrainConfig,
    config_path: &Path,
) -> Result<TrainConfig> {
    let mut files = Vec::with_capacity(config.data.files.len());
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
        files.push(std::path::absolute(&path)?.to_string_lossy().into_owned());
    }
    config.data.files = files;
    let base = Path::new(&config.model.base);
    if base.exists() {
        config.model.base = std::path::absolute(base)?.to_string_lossy().into_owned();
    }
    config.run.output_dir = std::path::absolute(runs_root(settings, Some(&config)))?;
    Ok(config)
}

/// The training examples of `records` (of `categories`, all when empty) under `config`'s
/// prompt format and `max_seq_len`, tokenized by `loaded`; with the end-of-sequence token.
fn examples_of(
    loaded: &LoadedModel,
    config: &TrainConfig,
    records: &[Instruction],
    categories: &[crate::data::Category],
) -> Result<(
    u32,
    Vec<crate::train::data::Example>,
    crate::train::data::BuildStats,
)> {
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
        categories,
    };
    let (examples, stats) = build_examples(records, &loaded.tokenizer, &build)?;
    Ok((end_token, examples, stats))
}

/// Reads the data, loads the base model (a GGUF dequantized to float) and builds the
/// examples; every check that can fail does so here, before any training compute.
fn prepare(settings: &Settings, config: TrainConfig, config_path: &Path) -> Result<Prepared> {
    let records = read_data(&config, config_path)?;
    let options = LoadOptions::for_device(&config.model.device, GgufCompute::Float)?;
    let loaded = LoadedModel::load(&settings.resolver(), &config.model.base, &options)?;
    let (end_token, examples, stats) =
        examples_of(&loaded, &config, &records, &config.data.categories)?;
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
    Ok(Prepared {
        config,
        loaded,
        train_set,
        validation,
        stats,
        end_token,
    })
}

/// `train --config FILE [--detach]`: checks the config, the data, the output folder and the
/// model, creates the run folder (with the resolved `config.toml`), then trains in the
/// foreground with a progress bar or, detached, in a background process of its own session.
///
/// # Errors
/// What a run trains on, for its id: the data files' stems joined by `+` (`seeds`,
/// `seeds+generated`), else the config file's stem.
fn run_slug(files: &[String], config_path: &Path) -> String {
    let stem = |p: &str| {
        Path::new(p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let stems: Vec<String> = files
        .iter()
        .map(|f| stem(f))
        .filter(|s| !s.is_empty())
        .collect();
    if stems.is_empty() {
        stem(&config_path.to_string_lossy())
    } else {
        stems.join("+")
    }
}

/// Every check fails before any training compute, with the file and field.
pub fn train(
    settings: &Settings,
    config_path: &Path,
    detach: bool,
    out: &mut dyn Write,
) -> Result<()> {
    train_on(settings, config_path, detach, None, out)
}

/// [`train`] on `engine` (`None`: bioinstruct's own trainer): the run folder, its config and
/// status are made here; an engine run is then written ([`engine::write_inputs`]) and
/// launched detached ([`engine::launch`]); in the foreground, it is followed as
/// `runs watch` follows a run until it ends.
///
/// # Errors
/// As [`train`]; the engine cannot start.
pub fn train_on(
    settings: &Settings,
    config_path: &Path,
    detach: bool,
    engine: Option<engine::Launch>,
    out: &mut dyn Write,
) -> Result<()> {
    let config = TrainConfig::from_file(config_path).map_err(anyhow::Error::msg)?;
    let config = resolve(settings, config, config_path)?;
    let root = config.run.output_dir.clone();
    std::fs::create_dir_all(&root)
        .and_then(|()| tempfile::tempfile_in(&root).map(drop))
        .with_context(|| format!("run folder {} is not writable", root.display()))?;
    let prepared = prepare(settings, config, config_path)?;
    let slug = run_slug(&prepared.config.data.files, config_path);
    let id = crate::train::run::run_id(&slug);
    let run = RunDir::create_unique(&root, &id)
        .with_context(|| format!("creating run {id} in {}", root.display()))?;
    let id = run.id();
    crate::data::replace_atomic(
        &run.path.join("config.toml"),
        toml::to_string_pretty(&prepared.config)?.as_bytes(),
    )?;
    let total = super::models::parameter_count(&prepared.loaded.model.config) as f64;
    let trainable = prepared.config.lora.parameter_count(&prepared.loaded.model);
    let steps = TrainSettings::from_config(&prepared.config, prepared.end_token)
        .total_steps(prepared.train_set.len());
    writeln!(
        out,
        "run {id}: {} training and {} validation examples ({} truncated, {} dropped), {steps} steps; \
         {trainable} trainable parameters ({:.3}% of {:.1} M)",
        prepared.train_set.len(),
        prepared.validation.len(),
        prepared.stats.truncated,
        prepared.stats.dropped.len(),
        100.0 * trainable as f64 / total,
        total / 1e6
    )?;
    writeln!(out, "run folder: {}", run.path.display())?;
    run.write_status(&Status {
        state: RunState::Queued,
        pid: std::process::id(),
        step: 0,
        total_steps: steps,
        error: None,
        updated_unix_s: crate::train::run::unix_now(),
    })?;
    if let Some(launch) = engine {
        if launch.engine == engine::Engine::Axolotl {
            write_axolotl_run(&run, &prepared, config_path, &launch, out)?;
        } else {
            engine::write_inputs(
                &run.path,
                &prepared.config,
                &prepared.train_set,
                &prepared.validation,
                prepared.end_token,
                &launch,
            )?;
        }
        drop(prepared);
        return start_engine(settings, &run, detach, out);
    }
    if detach {
        drop(prepared);
        let pid = spawn_detached(settings, &run)?;
        writeln!(
            out,
            "training in the background (pid {pid}); follow it with `bioinstruct runs tail {id} -f`, \
             stop it with `bioinstruct runs stop {id}`"
        )?;
        return Ok(());
    }
    run_prepared(prepared, &run, None, true, out)
}

/// An axolotl run's inputs ([`engine::write_axolotl_inputs`]); a GGUF base model is written
/// first as a Hugging Face folder `engine/base/` from the loaded (float) weights, since axolotl
/// loads no GGUF.
fn write_axolotl_run(
    run: &RunDir,
    prepared: &Prepared,
    config_path: &Path,
    launch: &engine::Launch,
    out: &mut dyn Write,
) -> Result<()> {
    let config = &prepared.config;
    let base = Path::new(&config.model.base);
    let base_model = if base.is_file() {
        let folder = engine::engine_dir(&run.path).join("base");
        crate::model::merge::write_merged(&prepared.loaded, None, &folder).with_context(|| {
            format!(
                "writing {} as a Hugging Face folder for axolotl",
                base.display()
            )
        })?;
        writeln!(
            out,
            "axolotl loads Hugging Face models: wrote {} as {}",
            base.display(),
            folder.display()
        )?;
        folder.display().to_string()
    } else {
        config.model.base.clone()
    };
    let (records, _) = alpaca_lines(config, config_path)?;
    engine::write_axolotl_inputs(&run.path, config, &records, &base_model, launch)
}

/// Trainers this process started and has not reaped yet.
static LAUNCHED: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// Keeps `child` (a trainer started detached) for [`reap_children`].
pub fn keep_child(child: std::process::Child) {
    LAUNCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
}

/// Reaps the trainers this process started (`spawn_detached`) that have exited, so none
/// stays a zombie (`<defunct>`) while a long-lived caller (the workbench) runs; never blocks.
/// A short-lived caller (the CLI) need not call it: its children are reparented to init,
/// which reaps them. Returns how many were reaped.
pub fn reap_children() -> usize {
    let mut launched = LAUNCHED.lock().unwrap_or_else(|e| e.into_inner());
    let before = launched.len();
    launched.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
    before - launched.len()
}

/// The run's records after its category filter, as Alpaca JSON lines (`instruction`,
/// `input`, `output`), and how many.
fn alpaca_lines(config: &TrainConfig, config_path: &Path) -> Result<(Vec<u8>, usize)> {
    let records = read_data(config, config_path)?;
    let categories = &config.data.categories;
    let mut lines = Vec::new();
    let mut count = 0;
    for r in records
        .iter()
        .filter(|r| categories.is_empty() || categories.contains(&r.category))
    {
        serde_json::to_writer(
            &mut lines,
            &serde_json::json!({"instruction": r.instruction, "input": r.input, "output": r.output}),
        )?;
        lines.push(b'\n');
        count += 1;
    }
    Ok((lines, count))
}

/// `train --config FILE --export-axolotl DIR`: the run as an axolotl config: `DIR/data.jsonl`
/// (the run's records after its category filter, as Alpaca `instruction`, `input`, `output`)
/// and `DIR/axolotl.yaml` ([`engine::axolotl_yaml`], its `output_dir` `DIR/out`).
///
/// # Errors
/// The config or the data; a GGUF base model (axolotl loads Hugging Face models); a file
/// that cannot be written.
pub fn export_axolotl(
    settings: &Settings,
    config_path: &Path,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let config = TrainConfig::from_file(config_path).map_err(anyhow::Error::msg)?;
    let config = resolve(settings, config, config_path)?;
    if config.model.base.to_ascii_lowercase().ends_with(".gguf") {
        bail!(
            "{}: model.base: axolotl loads Hugging Face models (a Hub id or a folder), not a GGUF file ({})",
            config_path.display(),
            config.model.base
        );
    }
    let (lines, count) = alpaca_lines(&config, config_path)?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let dir = std::path::absolute(dir)?;
    let data = dir.join("data.jsonl");
    crate::data::replace_atomic(&data, &lines)?;
    let yaml = dir.join("axolotl.yaml");
    crate::data::replace_atomic(
        &yaml,
        engine::axolotl_yaml(&config, &config.model.base, &data, &dir.join("out")).as_bytes(),
    )?;
    writeln!(
        out,
        "wrote {} ({count} records) and {}; train with: axolotl train {}",
        data.display(),
        yaml.display(),
        yaml.display()
    )?;
    Ok(())
}

/// Launches the engine run in `run` (it resumes from its newest checkpoint, if any) and, in
/// the foreground, follows it until it ends.
fn start_engine(
    settings: &Settings,
    run: &RunDir,
    detach: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let pid = engine::launch(&run.path)?;
    let mut status = run.read_status()?;
    status.pid = pid;
    status.updated_unix_s = crate::train::run::unix_now();
    run.write_status(&status)?;
    let id = run.id();
    if detach {
        writeln!(
            out,
            "training on {} in the background (launcher pid {pid}); follow it with `bioinstruct runs watch {id}`, stop it with `bioinstruct runs stop {id}`",
            engine::engine_of(&run.path).name()
        )?;
        return Ok(());
    }
    watch(settings, &run.path.display().to_string(), out)?;
    let end = run.read_status()?;
    if end.state == RunState::Failed {
        bail!(
            "run {id} failed: {} (see {})",
            end.error.unwrap_or_default(),
            run.path.join("train.log").display()
        );
    }
    Ok(())
}

/// Starts `bioinstruct runs worker RUN` as a process of its own session (setsid), with no
/// terminal, its output appended to `train.log`: it outlives the terminal and the SSH
/// connection. Returns its pid; the child is kept for [`reap_children`].
fn spawn_detached(settings: &Settings, run: &RunDir) -> Result<u32> {
    spawn_worker(
        settings,
        &["runs".as_ref(), "worker".as_ref(), run.path.as_os_str()],
        &run.path.join("train.log"),
        "the background trainer",
    )
}

/// Starts `bioinstruct ARGS…` (a worker command that calls setsid first: `runs worker`,
/// `eval worker`, `experiment worker`) with no terminal, its output appended to `log`, under
/// the same `--settings`. The child starts in a process group of its own, so a hangup that
/// reaches the launcher's group (the workbench quit and its tmux pane or SSH session closed)
/// before the worker's setsid does not kill it. Returns its pid; the child is kept for
/// [`reap_children`].
///
/// # Errors
/// The executable cannot be found, the log opened or the process started (`what` names it).
pub fn spawn_worker(
    settings: &Settings,
    args: &[&std::ffi::OsStr],
    log: &Path,
    what: &str,
) -> Result<u32> {
    let exe = std::env::current_exe().context("finding the bioinstruct executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| log.display().to_string())?;
    let mut cmd = std::process::Command::new(exe);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Some(path) = &settings.settings_file {
        cmd.arg("--settings").arg(path);
    }
    let child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    LAUNCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
    Ok(pid)
}

/// `runs worker RUN`: the background trainer (started by `--detach` and `runs resume
/// --detach`). Leaves the caller's session, then trains the run from its latest checkpoint;
/// an error before training is recorded in `status.json` as `failed`.
///
/// # Errors
/// No such run, or the run failed.
pub fn worker(settings: &Settings, name: &str) -> Result<()> {
    // A new session has no controlling terminal: no SIGHUP when the SSH connection drops.
    let _ = rustix::process::setsid();
    let run = find_run(settings, name)?;
    // Until training starts, the run is queued under this process's pid (the status the
    // launcher wrote names the launcher, which exits at once).
    if let Ok(mut status) = run.read_status() {
        status.state = RunState::Queued;
        status.pid = std::process::id();
        status.error = None;
        status.updated_unix_s = crate::train::run::unix_now();
        let _ = run.write_status(&status);
    }
    let result = (|| {
        let config_path = run.path.join("config.toml");
        let config = TrainConfig::from_file(&config_path).map_err(anyhow::Error::msg)?;
        let prepared = prepare(settings, config, &config_path)?;
        let resume = run.latest_checkpoint().map(|(_, p)| p);
        run_prepared(
            prepared,
            &run,
            resume.as_deref(),
            false,
            &mut std::io::sink(),
        )
    })();
    if let Err(e) = &result {
        if let Ok(mut status) = run.read_status() {
            if status.state != RunState::Failed {
                let _ = run.log(&format!("failed: {e:#}"));
                status.state = RunState::Failed;
                status.pid = std::process::id();
                status.error = Some(format!("{e:#}"));
                status.updated_unix_s = crate::train::run::unix_now();
                let _ = run.write_status(&status);
            }
        }
    }
    result
}

/// Trains a prepared run (from `resume`, a checkpoint folder, when given). SIGTERM (and
/// SIGINT) ask the trainer to stop: it finishes the step, checkpoints and ends `stopped`;
/// a second SIGINT quits at once.
fn run_prepared(
    mut p: Prepared,
    run: &RunDir,
    resume: Option<&Path>,
    progress_bar: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let train_settings = TrainSettings::from_config(&p.config, p.end_token);
    let steps = train_settings.total_steps(p.train_set.len());
    let bar = if progress_bar {
        indicatif::ProgressBar::new(steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let on_step = |metric: &Metric| {
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
        stop.load(Ordering::Relaxed)
    };
    let outcome = run_training(
        &mut p.loaded,
        &p.train_set,
        &p.validation,
        &train_settings,
        run,
        &on_step,
        resume,
    )?;
    bar.finish();
    if outcome.state == RunState::Stopped {
        writeln!(
            out,
            "stopped at step {} of {steps}; continue with `bioinstruct runs resume {}`",
            outcome.steps,
            run.path.display()
        )?;
        return Ok(());
    }
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

/// Whether the trainer process `pid` is alive (not gone, not a zombie). Linux reads
/// `/proc`; elsewhere a signal-0 probe.
pub fn process_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// A run's state for display: `interrupted` when the status says it is queued, running or
/// stopping but its trainer is gone (killed, or the machine restarted).
pub fn state_label(s: &Status) -> String {
    label_of(s.state, s.pid)
}

/// The display label of a worker's `state` (run, evaluation, experiment) under process `pid`:
/// [`RunState::label`], asking whether the process lives only when the state is active.
pub fn label_of(state: RunState, pid: u32) -> String {
    state.label(!state.is_active() || process_alive(pid))
}

/// `runs stop RUN [--wait]`: asks the run's trainer to stop (SIGTERM); it finishes its step,
/// checkpoints and marks the run `stopped`. With `wait`, returns once it has.
///
/// # Errors
/// No such run, or it is not running.
pub fn stop(settings: &Settings, name: &str, wait: bool, out: &mut dyn Write) -> Result<()> {
    let run = find_run(settings, name)?;
    let status = run.read_status()?;
    if !status.state.is_active() || !process_alive(status.pid) {
        bail!(
            "run {} is not running (state: {})",
            run.path.display(),
            state_label(&status)
        );
    }
    if engine::is_engine_run(&run.path) {
        engine::request_stop(&run.path)?;
        writeln!(
            out,
            "asked the engine run (launcher pid {}) to stop: every process checkpoints the same step",
            status.pid
        )?;
    } else {
        let pid = i32::try_from(status.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("status.json: pid is not a process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .with_context(|| format!("signalling trainer pid {}", status.pid))?;
        writeln!(
            out,
            "asked the trainer (pid {}) to stop: it finishes step {} and checkpoints",
            status.pid,
            status.step + 1
        )?;
    }
    if wait {
        while process_alive(status.pid) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let now = run.read_status()?;
        writeln!(out, "run is {} at step {}", state_label(&now), now.step)?;
    }
    Ok(())
}

/// `runs resume RUN [--detach]`: continues a stopped, failed or interrupted run from its
/// latest checkpoint (from the start if it has none), with the config it was started with.
///
/// # Errors
/// No such run, it is still running or finished, or a check of [`train`]'s fails.
pub fn resume(settings: &Settings, name: &str, detach: bool, out: &mut dyn Write) -> Result<()> {
    let run = find_run(settings, name)?;
    let status = run.read_status()?;
    let active = status.state.is_active();
    if active && process_alive(status.pid) {
        bail!(
            "run {} is still running (pid {})",
            run.path.display(),
            status.pid
        );
    }
    if status.state == RunState::Finished {
        bail!(
            "run {} has finished; its adapter is in final/",
            run.path.display()
        );
    }
    // Queued again, for a trainer started in the background.
    let requeue = |status: Status| {
        run.write_status(&Status {
            state: RunState::Queued,
            error: None,
            updated_unix_s: crate::train::run::unix_now(),
            ..status
        })
    };
    if engine::is_engine_run(&run.path) {
        requeue(status)?;
        return start_engine(settings, &run, detach, out);
    }
    let from = run.latest_checkpoint();
    match &from {
        Some((step, _)) => writeln!(out, "resuming {} from step {step}", run.path.display())?,
        None => writeln!(out, "no checkpoint yet: restarting {}", run.path.display())?,
    }
    if detach {
        requeue(status)?;
        let pid = spawn_detached(settings, &run)?;
        writeln!(out, "training in the background (pid {pid})")?;
        return Ok(());
    }
    let config_path = run.path.join("config.toml");
    let config = TrainConfig::from_file(&config_path).map_err(anyhow::Error::msg)?;
    let prepared = prepare(settings, config, &config_path)?;
    run_prepared(
        prepared,
        &run,
        from.as_ref().map(|(_, p)| p.as_path()),
        true,
        out,
    )
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
            state_label(&s),
            s.step,
            s.total_steps,
            fmt(loss),
            fmt(val)
        )?;
    }
    Ok(())
}

/// A run folder as `runs show|tail|watch` read it: the workbench's own, or one another
/// trainer writes ([`foreign`]: Hugging Face Trainer, axolotl, LLaMA-Factory).
#[derive(Debug, Clone)]
struct Observed {
    path: PathBuf,
    status: Status,
    metrics: Vec<Metric>,
    /// The other trainer, for a folder the workbench did not start.
    format: Option<Format>,
}

impl Observed {
    /// The state to show; a foreign run records no process, so its state is taken as read.
    fn label(&self) -> String {
        match self.format {
            Some(_) => self.status.state.label(true),
            None => state_label(&self.status),
        }
    }

    /// Whether more is to come: the run is active (and, for our own, its trainer lives).
    fn active(&self) -> bool {
        self.status.state.is_active() && (self.format.is_some() || process_alive(self.status.pid))
    }

    fn losses(&self) -> (Option<f64>, Option<f64>) {
        let loss = self.metrics.iter().rev().find_map(|m| match m {
            Metric::Step { loss, .. } => Some(*loss),
            Metric::Eval { .. } => None,
        });
        let val = self.metrics.iter().rev().find_map(|m| match m {
            Metric::Eval { val_loss, .. } => Some(*val_loss),
            Metric::Step { .. } => None,
        });
        (loss, val)
    }

    /// The latest checkpoint folder: ours (`checkpoint-N/` with a state) or any
    /// `checkpoint-N/`.
    fn checkpoint(&self) -> Option<(usize, PathBuf)> {
        if self.format.is_none() {
            return RunDir {
                path: self.path.clone(),
            }
            .latest_checkpoint();
        }
        std::fs::read_dir(&self.path)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let n = e
                    .file_name()
                    .to_string_lossy()
                    .strip_prefix("checkpoint-")?
                    .parse::<usize>()
                    .ok()?;
                Some((n, e.path()))
            })
            .max_by_key(|(n, _)| *n)
    }

    /// The adapter the run ended with: our `final/`, or a PEFT adapter at the folder's top.
    fn adapter(&self) -> Option<PathBuf> {
        [self.path.join("final"), self.path.clone()]
            .into_iter()
            .find(|p| p.join("adapter_config.json").is_file())
    }
}

/// Reads the run `name`: a run id or folder of the workbench's, else a folder another
/// trainer writes.
fn observe(settings: &Settings, name: &str) -> Result<Observed> {
    match find_run(settings, name) {
        Ok(run) => Ok(Observed {
            status: run.read_status()?,
            metrics: run.read_metrics()?,
            path: run.path,
            format: None,
        }),
        Err(own) => {
            let dir = PathBuf::from(name);
            if !dir.is_dir() {
                return Err(own);
            }
            let snapshot = foreign::read(&dir)?;
            Ok(Observed {
                path: dir,
                status: snapshot.status,
                metrics: snapshot.metrics,
                format: Some(snapshot.format),
            })
        }
    }
}

fn or_dash(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

/// `runs show RUN`: the status, the latest losses, checkpoints and the final adapter; of a
/// run of the workbench's, or of a folder another trainer writes (HF Trainer, axolotl,
/// LLaMA-Factory). With `json`, one JSON object.
///
/// # Errors
/// No such run, a foreign folder that cannot be read (file, line, field), or writing to
/// `out`.
pub fn show(settings: &Settings, name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let run = observe(settings, name)?;
    let (loss, val) = run.losses();
    let checkpoint = run.checkpoint();
    let adapter = run.adapter();
    if json {
        let v = serde_json::json!({
            "run": run.path,
            "trainer": run
                .format
                .map_or_else(|| engine::engine_of(&run.path).name(), Format::label),
            "state": run.label(),
            "pid": (run.format.is_none()).then_some(run.status.pid),
            "step": run.status.step,
            "total_steps": run.status.total_steps,
            "loss": loss,
            "val_loss": val,
            "checkpoint": checkpoint.as_ref().map(|(_, p)| p),
            "adapter": adapter,
            "error": run.status.error,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "run        {}", run.path.display())?;
    match run.format {
        Some(f) => writeln!(out, "trainer    {} (read-only)", f.label())?,
        None if engine::is_engine_run(&run.path) => writeln!(
            out,
            "trainer    {} (engine)",
            engine::engine_of(&run.path).name()
        )?,
        None => {}
    }
    writeln!(out, "state      {}", run.label())?;
    if run.format.is_none() {
        writeln!(out, "pid        {}", run.status.pid)?;
    }
    writeln!(
        out,
        "step       {}/{}",
        run.status.step, run.status.total_steps
    )?;
    if let Some(l) = loss {
        writeln!(out, "loss       {l:.4}")?;
    }
    if let Some(v) = val {
        writeln!(out, "val_loss   {v:.4}")?;
    }
    if let Some((step, path)) = checkpoint {
        writeln!(out, "checkpoint {} (step {step})", path.display())?;
    }
    if let Some(a) = adapter {
        writeln!(out, "adapter    {}", a.display())?;
    }
    if let Some(e) = &run.status.error {
        writeln!(out, "error      {e}")?;
    }
    Ok(())
}

/// Prints `name`'s metrics with `line`, and with `follow` keeps printing new ones (polling
/// every 250 ms) until the run has ended; a run whose history got shorter (restarted) is
/// printed again from its start.
fn follow_metrics(
    settings: &Settings,
    name: &str,
    follow: bool,
    out: &mut dyn Write,
    line: &mut dyn FnMut(&Observed, &Metric, &mut dyn Write) -> Result<()>,
) -> Result<Observed> {
    let mut shown = 0;
    let (mut read_once, mut misses) = (false, 0);
    loop {
        // Another trainer writes its files in place: a read may catch one half-written.
        // Once the run has been read, such a miss is retried for up to 5 s.
        let run = match observe(settings, name) {
            Ok(run) => {
                (read_once, misses) = (true, 0);
                run
            }
            Err(_) if read_once && misses < 20 => {
                misses += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
                continue;
            }
            Err(e) => return Err(e),
        };
        if run.metrics.len() < shown {
            shown = 0;
        }
        for m in &run.metrics[shown..] {
            line(&run, m, out)?;
        }
        out.flush()?;
        shown = run.metrics.len();
        if !follow {
            return Ok(run);
        }
        if !run.active() {
            // One more read: lines written between the last read and the end.
            std::thread::sleep(std::time::Duration::from_millis(250));
            if let Ok(last) = observe(settings, name) {
                if last.metrics.len() == shown {
                    return Ok(last);
                }
            }
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `runs tail RUN [--follow]`: the metrics lines (JSON; a value the trainer did not record is
/// `null`); with `follow`, keeps printing new ones until the run has ended. Reads foreign
/// folders as [`show`] does.
///
/// # Errors
/// No such run, or writing to `out`.
pub fn tail(settings: &Settings, name: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
    follow_metrics(settings, name, follow, out, &mut |_, m, out| {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
        Ok(())
    })
    .map(|_| ())
}

/// `runs watch RUN|DIR`: follows a run live, a line per logged step and evaluation (step,
/// epoch, loss, learning rate, grad norm, tokens/s, ETA; `-` where the trainer records no
/// value), until it ends: any run of the workbench's, or a folder another trainer is
/// writing (Hugging Face Trainer's `trainer_state.json` in its `checkpoint-N/`, axolotl's,
/// LLaMA-Factory's `trainer_log.jsonl`). Read-only.
///
/// # Errors
/// No such run, a folder no known trainer writes, or writing to `out`.
pub fn watch(settings: &Settings, name: &str, out: &mut dyn Write) -> Result<()> {
    let first = observe(settings, name)?;
    writeln!(
        out,
        "watching {} ({}, {}); Ctrl-C to stop watching",
        first.path.display(),
        first.format.map_or("bioinstruct", Format::label),
        first.label()
    )?;
    let last = follow_metrics(settings, name, true, out, &mut |run, m, out| {
        let total = run.status.total_steps;
        match m {
            Metric::Step {
                step,
                epoch,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
                eta_s,
                ..
            } => writeln!(
                out,
                "step {step:>6}/{total:<6} epoch {:>5}  loss {loss:.4}  lr {}  grad_norm {}  tokens/s {}  ETA {}",
                or_dash(*epoch, 2),
                if lr.is_finite() { format!("{lr:.2e}") } else { "-".into() },
                or_dash(*grad_norm, 3),
                or_dash(*tokens_per_s, 0),
                if eta_s.is_finite() { crate::tui::panes::train_view::duration(*eta_s) } else { "-".into() },
            )?,
            Metric::Eval {
                step,
                epoch,
                val_loss,
            } => writeln!(
                out,
                "step {step:>6}/{total:<6} epoch {:>5}  eval_loss {val_loss:.4}",
                or_dash(*epoch, 2)
            )?,
        }
        Ok(())
    })?;
    let (loss, val) = last.losses();
    writeln!(
        out,
        "{} at step {}/{}; last loss {}, eval_loss {}",
        last.label(),
        last.status.step,
        last.status.total_steps,
        loss.map_or_else(|| "-".into(), |l| format!("{l:.4}")),
        val.map_or_else(|| "-".into(), |l| format!("{l:.4}"))
    )?;
    Ok(())
}

/// Trains `config` in the run folder `dir`, in this process, for callers that run several
/// trainings in a row (`experiment run`): a new folder gets the resolved `config.toml` and
/// trains from the start, a folder with a checkpoint resumes from its latest, a finished run
/// is left as it is. Returns the run's state at the end (`finished`, or `stopped` by SIGTERM).
///
/// # Errors
/// As [`train`]: the config, the data, the model; or a training error.
pub fn train_into(
    settings: &Settings,
    config: TrainConfig,
    config_path: &Path,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<RunState> {
    let run = RunDir {
        path: dir.to_path_buf(),
    };
    if let Ok(status) = run.read_status() {
        if status.state == RunState::Finished && dir.join("final").is_dir() {
            return Ok(RunState::Finished);
        }
    }
    let problems = config.problems();
    if !problems.is_empty() {
        bail!("{}: {}", config_path.display(), problems.join("; "));
    }
    let config = resolve(settings, config, config_path)?;
    let prepared = prepare(settings, config, config_path)?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    crate::data::replace_atomic(
        &dir.join("config.toml"),
        toml::to_string_pretty(&prepared.config)?.as_bytes(),
    )?;
    let steps = TrainSettings::from_config(&prepared.config, prepared.end_token)
        .total_steps(prepared.train_set.len());
    let from = run.latest_checkpoint();
    let step = from.as_ref().map_or(0, |(s, _)| *s);
    run.write_status(&Status {
        state: RunState::Queued,
        pid: std::process::id(),
        step,
        total_steps: steps,
        error: None,
        updated_unix_s: crate::train::run::unix_now(),
    })?;
    run_prepared(
        prepared,
        &run,
        from.as_ref().map(|(_, p)| p.as_path()),
        false,
        out,
    )?;
    Ok(run.read_status()?.state)
}

/// The token count of each record as training would see it under `config` (prompt format,
/// chat template, `max_seq_len`), by record id; records training would drop are absent.
///
/// # Errors
/// The model (for its tokenizer and template) cannot load.
pub fn record_tokens(
    settings: &Settings,
    config: &TrainConfig,
    records: &[Instruction],
) -> Result<std::collections::HashMap<String, usize>> {
    let options = LoadOptions::for_device("cpu", GgufCompute::Keep)?;
    let loaded = LoadedModel::load(&settings.resolver(), &config.model.base, &options)?;
    let (_, examples, _) = examples_of(&loaded, config, records, &[])?;
    Ok(examples
        .into_iter()
        .map(|e| (e.id, e.input_ids.len()))
        .collect())
}
