//! The Train pane's state: every run folder under the runs root (those started from the CLI
//! or before the workbench opened included), followed incrementally, and the new-run form.
//!
//! Runs are read from the files the trainer writes (`status.json`, `metrics.jsonl`,
//! `train.log`; see [`crate::train::run`]): the pane is a view, not a second trainer. Each
//! refresh reads only the bytes appended since the last one, so a run of 10,000 steps costs
//! nothing per tick; the full series is kept, and charts downsample it when drawn.
//!
//! The pane does no I/O while it updates: a rescan is a [`RunsScan`] value (where the pane
//! stands in each run's files) that the runtime carries out ([`RunsScan::run`]) and hands
//! back as [`RunsScanned`] (only what is new), one at a time.

use super::fields::FieldForm;
use super::list::ListSelection;
use crate::train::config::TrainConfig;
use crate::train::foreign::{self, Format};
use crate::train::run::{Metric, RunDir, RunState, Status};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// `points` smoothed by a debiased exponential moving average with weight `weight` on the
/// past (TensorBoard's scalar smoothing); `weight` 0 returns them unchanged.
pub fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut ema = 0.0;
    let mut debias = 1.0;
    points
        .iter()
        .map(|&(x, y)| {
            ema = weight * ema + (1.0 - weight) * y;
            debias *= weight;
            (
                x,
                if debias < 1.0 {
                    ema / (1.0 - debias)
                } else {
                    y
                },
            )
        })
        .collect()
}

/// Lines of `train.log` kept for the live view.
pub const LOG_TAIL_LINES: usize = 200;

/// New complete lines of a growing file since `offset` (which advances past them); a last
/// line still being written stays for the next call.
fn read_new_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len < *offset {
        *offset = 0; // rewritten (a resumed run drops metrics after its checkpoint)
    }
    if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    *offset += end as u64 + 1;
    String::from_utf8_lossy(&bytes[..end])
        .lines()
        .map(str::to_string)
        .collect()
}

/// One run as the pane knows it.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The run id (its folder's name).
    pub id: String,
    /// The folder.
    pub dir: RunDir,
    /// Its last `status.json`.
    pub status: Status,
    /// Whether its trainer process is alive.
    pub alive: bool,
    /// Every metrics line so far.
    pub metrics: Vec<Metric>,
    /// The last lines of `train.log`.
    pub log: VecDeque<String>,
    /// The trainer that writes it, for a folder the workbench did not start (read-only).
    pub foreign: Option<Format>,
    metrics_offset: u64,
    log_offset: u64,
}

impl RunEntry {
    fn new(dir: RunDir, status: Status) -> RunEntry {
        let id = dir
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        RunEntry {
            id,
            dir,
            // Set by the scan that found it.
            alive: false,
            status,
            metrics: Vec::new(),
            log: VecDeque::new(),
            foreign: None,
            metrics_offset: 0,
            log_offset: 0,
        }
    }

    /// Takes in what a scan read of this run.
    fn apply(&mut self, update: RunUpdate) {
        self.status = update.status;
        self.alive = update.alive;
        self.foreign = update.foreign;
        if update.metrics_reset {
            self.metrics.clear();
        }
        self.metrics.extend(update.metrics);
        self.metrics_offset = update.metrics_offset;
        self.log_offset = update.log_offset;
        for line in update.log {
            self.log.push_back(line);
            if self.log.len() > LOG_TAIL_LINES {
                self.log.pop_front();
            }
        }
    }

    /// The state to show: `interrupted` when the status says the run is active but its
    /// trainer is gone.
    pub fn state_label(&self) -> String {
        match self.foreign {
            // Its trainer records no process: the state is taken as read (see `foreign`).
            Some(_) => self.status.state.label(true),
            None => crate::commands::train::state_label(&self.status),
        }
    }

    /// Whether the trainer is working on it now.
    pub fn is_active(&self) -> bool {
        self.alive && self.status.state.is_active()
    }

    /// The latest optimizer-step metric.
    pub fn last_step(&self) -> Option<&Metric> {
        self.metrics
            .iter()
            .rev()
            .find(|m| matches!(m, Metric::Step { .. }))
    }

    /// `(step, loss)` of every optimizer step.
    pub fn losses(&self) -> Vec<(f64, f64)> {
        self.metrics
            .iter()
            .filter_map(|m| match m {
                Metric::Step { step, loss, .. } => Some((*step as f64, *loss)),
                Metric::Eval { .. } => None,
            })
            .collect()
    }

    /// The train loss smoothed as TensorBoard's scalar charts smooth it: an exponential
    /// moving average with weight `weight` on the past (0.6 there by default), debiased so
    /// the first points are not pulled towards 0 (`ema / (1 - weight^n)`).
    pub fn smoothed_losses(&self, weight: f64) -> Vec<(f64, f64)> {
        smooth(&self.losses(), weight)
    }

    /// `(step, validation loss)` of every evaluation.
    pub fn val_losses(&self) -> Vec<(f64, f64)> {
        self.metrics
            .iter()
            .filter_map(|m| match m {
                Metric::Eval { step, val_loss, .. } => Some((*step as f64, *val_loss)),
                Metric::Step { .. } => None,
            })
            .collect()
    }

    /// One value of every step metric (`lr`, `grad_norm`, ...), via `pick`.
    pub fn series(&self, pick: impl Fn(&Metric) -> Option<f64>) -> Vec<(f64, f64)> {
        self.metrics
            .iter()
            .filter_map(|m| match m {
                // A value the trainer did not record (NaN) is left out.
                Metric::Step { step, .. } => {
                    pick(m).filter(|v| v.is_finite()).map(|v| (*step as f64, v))
                }
                Metric::Eval { .. } => None,
            })
            .collect()
    }
}

/// At most `max` points of `points`, each the mean of a run of consecutive ones (the full
/// series is kept; this is for drawing).
pub fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max.max(1) {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max.max(1));
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// How a field's text becomes TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    OneOf(&'static [&'static str]),
    List,
    Integer,
    Float,
}

/// The form's fields: key, kind, and how to read the default from a config.
const FIELDS: [(&str, Kind); 13] = [
    ("model.base", Kind::Text),
    ("data.files", Kind::List),
    ("data.categories", Kind::List),
    ("data.format", Kind::OneOf(&["alpaca", "chat"])),
    ("data.max_seq_len", Kind::Integer),
    ("lora.r", Kind::Integer),
    ("lora.lora_alpha", Kind::Float),
    ("lora.target_modules", Kind::List),
    ("optim.learning_rate", Kind::Float),
    ("optim.epochs", Kind::Integer),
    ("optim.micro_batch_size", Kind::Integer),
    ("optim.gradient_accumulation_steps", Kind::Integer),
    ("run.seed", Kind::Integer),
];

/// The value of `key` in `config`, as the form shows it.
fn field_text(config: &TrainConfig, key: &str) -> String {
    let value = toml::Value::try_from(config).unwrap_or(toml::Value::Boolean(false));
    let mut v = &value;
    for part in key.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// The new-run form: the fields most runs change, over a base configuration; validated as
/// typed with the trainer's own checks.
#[derive(Debug, Clone, PartialEq)]
pub struct RunForm {
    /// The fields (config keys), in `FIELDS` order.
    pub inputs: FieldForm,
    /// The configuration the fields are laid over.
    pub base: TrainConfig,
}

impl RunForm {
    /// A form showing `base`'s values.
    pub fn new(base: TrainConfig) -> RunForm {
        let inputs = FieldForm::new(FIELDS.iter().map(|(key, _)| (*key, field_text(&base, key))));
        let mut form = RunForm { inputs, base };
        form.validate();
        form
    }

    /// The configuration the fields give, or `None` when a field is invalid (each invalid
    /// field then has its `error`).
    pub fn validate(&mut self) -> Option<TrainConfig> {
        let mut table = match toml::Value::try_from(&self.base) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        for (field, (_, kind)) in self.inputs.fields.iter_mut().zip(FIELDS) {
            field.error = None;
            let text = field.value.trim();
            let value = match kind {
                Kind::Text => Ok(toml::Value::String(text.to_string())),
                Kind::OneOf(choices) if choices.contains(&text) => {
                    Ok(toml::Value::String(text.to_string()))
                }
                Kind::OneOf(choices) => Err(format!("one of {}", choices.join(", "))),
                Kind::List => Ok(toml::Value::Array(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )),
                Kind::Integer => text
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| "a whole number".to_string()),
                Kind::Float => text
                    .parse::<f64>()
                    .map(toml::Value::Float)
                    .map_err(|_| "a number".to_string()),
            };
            match value {
                Err(e) => field.error = Some(format!("must be {e}")),
                Ok(v) => {
                    let (section, name) = field.key.split_once('.').unwrap_or(("", field.key));
                    if let Some(toml::Value::Table(s)) = table.get_mut(section) {
                        s.insert(name.to_string(), v);
                    }
                }
            }
        }
        // Fields that did not parse keep the base value, so the others are still checked.
        let config: TrainConfig = match toml::Value::Table(table).try_into() {
            Ok(c) => c,
            Err(e) => {
                if let Some(f) = self.inputs.fields.first_mut() {
                    f.error.get_or_insert_with(|| e.to_string());
                }
                return None;
            }
        };
        let mut ok = self.inputs.fields.iter().all(|f| f.error.is_none());
        for problem in config.problems() {
            let (key, what) = problem.split_once(": ").unwrap_or(("", &problem));
            if let Some(f) = self.inputs.get_mut(key) {
                f.error.get_or_insert_with(|| what.to_string());
            }
            ok = false;
        }
        if config.model.base.trim().is_empty() {
            if let Some(f) = self.inputs.get_mut("model.base") {
                f.error = Some("is empty".into());
            }
            ok = false;
        }
        ok.then_some(config)
    }
}

/// Where the pane stands in one run's files.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    path: PathBuf,
    status: Status,
    alive: bool,
    metrics_offset: u64,
    log_offset: u64,
}

/// A rescan of the runs root for the runtime: which runs the pane knows and how far it has
/// read each one's files; and, for the Chat pane, where to look for adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsScan {
    root: PathBuf,
    known: Vec<Cursor>,
    /// Folders other trainers write, followed too.
    watched: Vec<PathBuf>,
    /// The Chat pane's runs folder, when its adapters are wanted too.
    pub adapters_root: Option<PathBuf>,
}

/// What a [`RunsScan`] read of one run: its status, whether its trainer lives, and the
/// metrics and log lines appended since the pane's offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    path: PathBuf,
    status: Status,
    alive: bool,
    metrics_reset: bool,
    metrics: Vec<Metric>,
    log: Vec<String>,
    metrics_offset: u64,
    log_offset: u64,
    foreign: Option<Format>,
}

/// What a [`RunsScan`] found: every run folder with a readable `status.json`, and the
/// adapters (see [`super::chat::find_adapters`]) when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsScanned {
    runs: Vec<RunUpdate>,
    /// The adapters found, newest run first.
    pub adapters: Option<Vec<PathBuf>>,
}

impl RunsScan {
    /// Carries the scan out (blocking file I/O): lists the runs root, reads each status,
    /// checks whether active runs' trainers live, and reads what was appended to each
    /// run's `metrics.jsonl` and `train.log`.
    pub fn run(self) -> RunsScanned {
        let known: HashMap<PathBuf, Cursor> = self
            .known
            .into_iter()
            .map(|c| (c.path.clone(), c))
            .collect();
        let mut runs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let dir = RunDir { path: e.path() };
                let Ok(status) = dir.read_status() else {
                    continue;
                };
                let (mut alive, mut metrics_offset, mut log_offset) = (None, 0, 0);
                if let Some(c) = known.get(&dir.path) {
                    if c.status.pid == status.pid && c.status.state == status.state {
                        alive = Some(c.alive);
                    }
                    (metrics_offset, log_offset) = (c.metrics_offset, c.log_offset);
                }
                let active = status.state.is_active();
                let alive = match alive {
                    Some(a) if !(a && active) => a,
                    _ => crate::commands::train::process_alive(status.pid),
                };
                let before = metrics_offset;
                let lines = read_new_lines(&dir.path.join("metrics.jsonl"), &mut metrics_offset);
                let metrics_reset = metrics_offset < before || (before > 0 && metrics_offset == 0);
                let log = read_new_lines(&dir.path.join("train.log"), &mut log_offset);
                runs.push(RunUpdate {
                    path: dir.path,
                    status,
                    alive,
                    metrics_reset,
                    metrics: lines
                        .iter()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect(),
                    log,
                    metrics_offset,
                    log_offset,
                    foreign: None,
                });
            }
        }
        for path in self.watched {
            // Another trainer's files are small and rewritten in place: read whole each
            // time; a read that fails (a file half-written) keeps what was known.
            let update = match foreign::read(&path) {
                Ok(s) => RunUpdate {
                    path,
                    alive: s.status.state.is_active(),
                    status: s.status,
                    metrics_reset: true,
                    metrics: s.metrics,
                    log: Vec::new(),
                    metrics_offset: 0,
                    log_offset: 0,
                    foreign: Some(s.format),
                },
                Err(_) => match known.get(&path) {
                    Some(c) => RunUpdate {
                        path,
                        status: c.status.clone(),
                        alive: c.alive,
                        metrics_reset: false,
                        metrics: Vec::new(),
                        log: Vec::new(),
                        metrics_offset: 0,
                        log_offset: 0,
                        foreign: foreign::detect(&c.path),
                    },
                    None => continue,
                },
            };
            runs.push(update);
        }
        RunsScanned {
            runs,
            adapters: self
                .adapters_root
                .map(|root| super::chat::find_adapters(&root)),
        }
    }
}

/// The Train pane.
#[derive(Debug)]
pub struct TrainPane {
    /// Where run folders are.
    pub root: PathBuf,
    /// Runs, newest first.
    pub runs: Vec<RunEntry>,
    /// The selected run, as an index in `runs`.
    pub cursor: ListSelection,
    /// The new-run form, while open.
    pub form: Option<RunForm>,
    /// A launch in progress (the form's config is being checked and the trainer started).
    pub launching: bool,
    /// The configuration new runs start from.
    pub defaults: TrainConfig,
    /// The form that adds a folder to follow, while open.
    pub watch_form: Option<FieldForm>,
    /// Folders other trainers write, followed beside the runs (this session only).
    pub watched: Vec<PathBuf>,
    /// The folder just added, selected once a scan has read it.
    select: Option<PathBuf>,
    /// A rescan is in flight; `scan_again` asks for another once it is back.
    scanning: bool,
    scan_again: bool,
}

impl TrainPane {
    /// A pane over the runs in `root`; new runs start from `defaults`.
    pub fn new(root: PathBuf, defaults: TrainConfig) -> TrainPane {
        let mut pane = TrainPane {
            root,
            runs: Vec::new(),
            cursor: ListSelection::default(),
            form: None,
            launching: false,
            defaults,
            watch_form: None,
            watched: Vec::new(),
            select: None,
            scanning: false,
            scan_again: false,
        };
        pane.refresh_now();
        pane
    }

    /// Rescans here and now (blocking): for a pane being set up, before the event loop runs.
    pub fn refresh_now(&mut self) {
        let scan = self.scan(None);
        self.scanned(scan.run());
    }

    /// A rescan of the runs root for the runtime ([`RunsScan`]), also listing the adapters
    /// under `adapters_root` when given; `None` while one is in flight (it is asked for
    /// again when that one is back).
    pub fn request_scan(&mut self, adapters_root: Option<PathBuf>) -> Option<RunsScan> {
        if self.scanning {
            self.scan_again = true;
            return None;
        }
        self.scanning = true;
        Some(self.scan(adapters_root))
    }

    fn scan(&self, adapters_root: Option<PathBuf>) -> RunsScan {
        RunsScan {
            root: self.root.clone(),
            known: self
                .runs
                .iter()
                .map(|r| Cursor {
                    path: r.dir.path.clone(),
                    status: r.status.clone(),
                    alive: r.alive,
                    metrics_offset: r.metrics_offset,
                    log_offset: r.log_offset,
                })
                .collect(),
            watched: self.watched.clone(),
            adapters_root,
        }
    }

    /// Follows the run folder `dir` another trainer writes ([`foreign`]), from the next scan
    /// on, and selects it once read.
    ///
    /// # Errors
    /// The folder holds no run a known trainer writes (the reason, whole).
    pub fn watch(&mut self, dir: &Path) -> Result<(), String> {
        let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
        if dir.join("status.json").is_file() {
            return Err("a bioinstruct run: open it from its own runs folder".into());
        }
        foreign::read(&dir).map_err(|e| e.to_string())?;
        if !self.watched.contains(&dir) {
            self.watched.push(dir.clone());
        }
        self.select = Some(dir);
        Ok(())
    }

    /// Takes in a rescan: new runs appear, statuses update, appended metrics and log lines
    /// are added; the selection stays on the same run. Returns whether another rescan was
    /// asked for meanwhile.
    pub fn scanned(&mut self, scanned: RunsScanned) -> bool {
        self.scanning = false;
        let selected_id = self.selected().map(|r| r.id.clone());
        let mut known: HashMap<PathBuf, RunEntry> = self
            .runs
            .drain(..)
            .map(|r| (r.dir.path.clone(), r))
            .collect();
        let mut runs = Vec::new();
        for update in scanned.runs {
            let mut entry = known.remove(&update.path).unwrap_or_else(|| {
                RunEntry::new(
                    RunDir {
                        path: update.path.clone(),
                    },
                    update.status.clone(),
                )
            });
            entry.apply(update);
            runs.push(entry);
        }
        runs.sort_by(|a, b| b.id.cmp(&a.id));
        self.runs = runs;
        let select = self
            .select
            .take_if(|p| self.runs.iter().any(|r| &r.dir.path == p));
        self.cursor.selected = select
            .and_then(|p| self.runs.iter().position(|r| r.dir.path == p))
            .or_else(|| selected_id.and_then(|id| self.runs.iter().position(|r| r.id == id)))
            .unwrap_or(0)
            .min(self.runs.len().saturating_sub(1));
        std::mem::take(&mut self.scan_again)
    }

    /// The selected run.
    pub fn selected(&self) -> Option<&RunEntry> {
        self.runs.get(self.cursor.selected)
    }

    /// Moves the selection by `delta` rows.
    pub fn move_selection(&mut self, delta: isize) {
        self.cursor.move_by(delta, self.runs.len());
    }
}

impl super::Pane for TrainPane {
    fn mode(&self) -> crate::tui::mode::Mode {
        use crate::tui::mode::Mode;
        match (&self.form, &self.watch_form) {
            (None, None) => Mode::Runs,
            _ => Mode::RunForm,
        }
    }

    fn update(&mut self, action: crate::tui::Action, _screen: super::Screen) -> super::Reply {
        use super::{Ask, Reply};
        use crate::tui::effect::{Effect, Job};
        use crate::tui::Action;
        if let Some(form) = &mut self.watch_form {
            if form.edit(&action) {
                if let Some(f) = form.get_mut("folder") {
                    f.error = None;
                }
                return Reply::default();
            }
            match action {
                Action::Cancel => self.watch_form = None,
                Action::LaunchRun => {
                    let text = form
                        .get_mut("folder")
                        .map(|f| f.value.trim().to_string())
                        .unwrap_or_default();
                    let dir = match text.strip_prefix("~/") {
                        Some(rest) => std::env::var_os("HOME")
                            .map_or_else(|| PathBuf::from(&text), |h| PathBuf::from(h).join(rest)),
                        None => PathBuf::from(&text),
                    };
                    match self.watch(&dir) {
                        Ok(()) => {
                            self.watch_form = None;
                            return Reply::info(format!(
                                "Following {} (read-only).",
                                dir.display()
                            ));
                        }
                        Err(e) => {
                            if let Some(f) = self
                                .watch_form
                                .as_mut()
                                .and_then(|form| form.get_mut("folder"))
                            {
                                f.error = Some(e);
                            }
                        }
                    }
                }
                _ => {}
            }
            return Reply::default();
        }
        if let Some(form) = &mut self.form {
            if form.inputs.edit(&action) {
                // Each keystroke is checked at once: the fields show ✗ as they are typed.
                form.validate();
                return Reply::default();
            }
            match action {
                Action::Cancel if !self.launching => self.form = None,
                Action::LaunchRun if self.launching => {}
                Action::LaunchRun => {
                    return match form.validate() {
                        Some(config) => {
                            self.launching = true;
                            Reply::effect(Effect::Run(Job::Launch(Box::new(config)))).with_message(
                                Ok("Checking the data and the model, then starting the run…"
                                    .into()),
                            )
                        }
                        None => Reply::error("Fix the fields marked ✗ first."),
                    }
                }
                _ => {}
            }
            return Reply::default();
        }
        match action {
            Action::Up | Action::ScrollUp => self.move_selection(-1),
            Action::Down | Action::ScrollDown => self.move_selection(1),
            Action::Top => self.move_selection(isize::MIN / 2),
            Action::Bottom => self.move_selection(isize::MAX / 2),
            Action::NewRun => self.form = Some(RunForm::new(self.defaults.clone())),
            Action::WatchRun => {
                self.watch_form = Some(FieldForm::new([("folder", String::new())]));
            }
            Action::StopRun | Action::ResumeRun
                if self.selected().is_some_and(|r| r.foreign.is_some()) =>
            {
                let run = self.selected().map(|r| (r.id.clone(), r.foreign));
                if let Some((id, Some(f))) = run {
                    return Reply::info(format!(
                        "{id} is {}'s run, followed read-only: stop or resume it with its own tool.",
                        f.label()
                    ));
                }
            }
            Action::StopRun => match self.selected() {
                Some(run) if run.is_active() => {
                    return Reply {
                        ask: Some(Ask::StopRun(self.cursor.selected)),
                        ..Reply::default()
                    }
                }
                Some(run) => {
                    return Reply::info(format!(
                        "{} is not running ({}).",
                        run.id,
                        run.state_label()
                    ))
                }
                None => {}
            },
            Action::ResumeRun => match self.selected() {
                Some(run) if run.is_active() => {
                    return Reply::info(format!("{} is still running.", run.id))
                }
                Some(run) if run.status.state == RunState::Finished => {
                    return Reply::info(format!("{} has finished.", run.id))
                }
                Some(_) => {
                    return Reply {
                        ask: Some(Ask::ResumeRun(self.cursor.selected)),
                        ..Reply::default()
                    }
                }
                None => {}
            },
            _ => {}
        }
        Reply::default()
    }

    fn draw(
        &self,
        frame: &mut ratatui::Frame,
        area: ratatui::layout::Rect,
        _shared: super::Shared,
    ) {
        super::train_view::draw(frame, area, self);
    }
}
