//! The Eval pane's state: every evaluation folder under `<data dir>/evals` (background jobs
//! and foreground `eval run` reports alike) and every experiment under
//! `<data dir>/experiments`, read from the files their processes write (`status.json`,
//! `report.json`, `predictions/`, `matrix.json`; see [`crate::eval::job`] and
//! [`crate::commands::experiment`]): the pane is a view, not a second evaluator.
//!
//! Views: the list of evaluations with the selected one's table (tasks and task groups
//! against models, differences from the base coloured by sign, `*` where the 95% interval
//! excludes 0) and a bar chart per group; a task's items with the base's and the tuned
//! model's predictions beside the reference, filterable; the experiments' matrices as heat
//! maps; and the form that starts an evaluation in the background.
//!
//! Like the other panes it does no I/O while it updates: a rescan is an [`EvalScan`] the
//! runtime carries out ([`EvalScan::run`]) and hands back as [`EvalsScanned`].

use super::fields::FieldForm;
use super::list::ListSelection;
use crate::commands::experiment::{ExperimentStatus, Matrix};
use crate::eval::job::{EvalStatus, Job};
use crate::eval::report::Report;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One evaluation folder as the pane knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalEntry {
    /// The folder's name.
    pub id: String,
    /// The folder.
    pub dir: PathBuf,
    /// `status.json` (background jobs).
    pub status: Option<EvalStatus>,
    /// `job.json` (background jobs).
    pub job: Option<Job>,
    /// `report.json`, once written.
    pub report: Option<Report>,
    /// Whether the worker process lives.
    pub alive: bool,
    report_modified: Option<SystemTime>,
}

impl EvalEntry {
    /// `running`, `stopped`, `interrupted`, `finished`, `failed`, or `finished` for a report
    /// with no job.
    pub fn state_label(&self) -> String {
        match &self.status {
            Some(s) => s.state.label(self.alive),
            None => "finished".into(),
        }
    }

    /// Whether its worker is at it now.
    pub fn is_active(&self) -> bool {
        self.alive && self.status.as_ref().is_some_and(EvalStatus::active)
    }
}

/// One experiment as the pane knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentEntry {
    /// Its name (the folder's).
    pub id: String,
    /// `status.json`.
    pub status: Option<ExperimentStatus>,
    /// `matrix.json`, once written.
    pub matrix: Option<Matrix>,
}

/// Which items of a task the drill-down shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemFilter {
    /// Every item.
    #[default]
    All,
    /// The tuned model right and the base wrong.
    TunedRight,
    /// The base right and the tuned model wrong.
    BaseRight,
}

impl ItemFilter {
    /// The next filter (`f`).
    pub fn next(self) -> ItemFilter {
        match self {
            ItemFilter::All => ItemFilter::TunedRight,
            ItemFilter::TunedRight => ItemFilter::BaseRight,
            ItemFilter::BaseRight => ItemFilter::All,
        }
    }

    /// How the drill-down's title names it.
    pub fn label(self) -> &'static str {
        match self {
            ItemFilter::All => "all items",
            ItemFilter::TunedRight => "tuned right, base wrong",
            ItemFilter::BaseRight => "base right, tuned wrong",
        }
    }
}

/// An item's score at or above which it counts as right: the label itself for choice
/// tasks (1 or 0), the item's entity-level F1 for entity tasks, ROUGE-L for text.
pub const RIGHT_AT: f64 = 0.5;

/// One item of a task, with both models' predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// The item's id.
    pub id: String,
    /// What was asked.
    pub instruction: String,
    /// The material.
    pub input: String,
    /// The reference, as text.
    pub reference: String,
    /// The base's prediction, as text.
    pub base: String,
    /// The tuned model's prediction, as text.
    pub tuned: String,
    /// The base's score on the item (see [`RIGHT_AT`]).
    pub base_score: f64,
    /// The tuned model's score on the item.
    pub tuned_score: f64,
}

impl ItemRow {
    /// Whether it passes `filter`.
    pub fn passes(&self, filter: ItemFilter) -> bool {
        let (b, t) = (self.base_score >= RIGHT_AT, self.tuned_score >= RIGHT_AT);
        match filter {
            ItemFilter::All => true,
            ItemFilter::TunedRight => t && !b,
            ItemFilter::BaseRight => b && !t,
        }
    }
}

/// The items of one task of one evaluation, both models.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// The evaluation folder.
    pub dir: PathBuf,
    /// The task.
    pub task: String,
    /// The tuned model's label.
    pub tuned: String,
    /// The items, once read (`Err` says why they cannot be).
    pub items: Option<Result<Vec<ItemRow>, String>>,
    /// The filter.
    pub filter: ItemFilter,
    /// The selected row among the items that pass the filter.
    pub cursor: ListSelection,
}

impl Drill {
    /// The items passing the filter.
    pub fn shown(&self) -> Vec<&ItemRow> {
        match &self.items {
            Some(Ok(items)) => items.iter().filter(|i| i.passes(self.filter)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Where the pane is.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalView {
    /// The evaluations, the selected one's table and charts.
    List,
    /// The selected evaluation's table with a task row selected (`Enter` opens its items).
    Report {
        /// Index into [`EvalPane::task_rows`].
        row: usize,
    },
    /// A task's items.
    Items(Box<Drill>),
    /// The experiments' matrices.
    Matrix,
}

/// The fields of the new-evaluation form.
const FORM_FIELDS: [&str; 4] = ["tasks", "data", "adapters", "limit"];

/// The new-evaluation form: tasks, `TASK=PATH` files, adapters, item limit.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalForm {
    /// The fields.
    pub inputs: FieldForm,
}

impl EvalForm {
    /// A form with the three benchmarks, `adapters` (the newest run with an adapter) and 50
    /// items.
    pub fn new(adapters: &str) -> EvalForm {
        let values = [
            crate::eval::tasks::BUILTIN.join(", "),
            String::new(),
            adapters.to_string(),
            "50".to_string(),
        ];
        EvalForm {
            inputs: FieldForm::new(FORM_FIELDS.into_iter().zip(values)),
        }
    }

    fn list(&self, i: usize) -> Vec<String> {
        self.inputs.fields[i]
            .value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `eval run`'s arguments, or `None` with each bad field's `error` set.
    pub fn validate(&mut self) -> Option<crate::commands::eval::RunArgs> {
        for f in &mut self.inputs.fields {
            f.error = None;
        }
        let tasks = self.list(0);
        let data = self.list(1);
        let adapters = self.list(2);
        let limit_text = self.inputs.fields[3].value.trim().to_string();
        let mut ok = true;
        let known = |t: &String| crate::eval::tasks::BUILTIN.contains(&t.as_str()) || t == "jsonl";
        if tasks.is_empty() {
            self.inputs.fields[0].error = Some("name at least one task".into());
            ok = false;
        } else if let Some(bad) = tasks.iter().find(|t| !known(t)) {
            self.inputs.fields[0].error = Some(format!(
                "{bad:?} is not {} or jsonl",
                crate::eval::tasks::BUILTIN.join(", ")
            ));
            ok = false;
        }
        if let Some(bad) = data.iter().find(|d| {
            d.split_once('=')
                .is_none_or(|(t, _)| !tasks.iter().any(|x| x == t))
        }) {
            self.inputs.fields[1].error =
                Some(format!("{bad:?} is not TASK=PATH for a task above"));
            ok = false;
        }
        let limit = if limit_text.is_empty() {
            None
        } else {
            match limit_text.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.inputs.fields[3].error =
                        Some("must be a whole number above 0, or empty for all".into());
                    ok = false;
                    None
                }
            }
        };
        ok.then(|| crate::commands::eval::RunArgs {
            tasks,
            data,
            adapters,
            limit,
            ..Default::default()
        })
    }
}

/// A rescan for the runtime: the roots, and what the pane has already read.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalScan {
    evals_root: PathBuf,
    experiments_root: PathBuf,
    known: Vec<(PathBuf, Option<SystemTime>)>,
    /// The drill-down's items to read: (folder, task, tuned label).
    pub items: Option<(PathBuf, String, String)>,
}

/// What an [`EvalScan`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalsScanned {
    evals: Vec<(EvalEntry, bool)>,
    experiments: Vec<ExperimentEntry>,
    items: Option<(PathBuf, String, Result<Vec<ItemRow>, String>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A prediction or reference as one line of text.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An item's score from its predictions line: 1 or 0 for a label, the item's entity-level
/// F1 from its BIO tags, else `rougeL`.
fn item_score(line: &Value) -> f64 {
    let tags = |k: &str| -> Option<Vec<String>> {
        line.get(k)?
            .as_array()?
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect()
    };
    if let (Some(gold), Some(pred)) = (tags("gold_tags"), tags("pred_tags")) {
        let (tp, p, a) = crate::eval::metrics::entity_counts(&gold, &pred);
        if p == 0 && a == 0 {
            return 1.0;
        }
        return crate::eval::metrics::prf(tp, p, a).2;
    }
    if let Some(r) = line.get("rougeL").and_then(Value::as_f64) {
        return r;
    }
    f64::from(u8::from(line.get("prediction") == line.get("reference")))
}

fn read_lines(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Reads the items of `task` in the evaluation `dir`: both models' predictions files, and
/// the instruction and input from the task's file (the report's `source`).
fn read_items(
    dir: &Path,
    report: &Report,
    task: &str,
    tuned: &str,
) -> Result<Vec<ItemRow>, String> {
    let t = report
        .tasks
        .get(task)
        .ok_or_else(|| format!("the report has no task {task}"))?;
    let folder = dir.join("predictions").join(task);
    let base =
        read_lines(&folder.join(format!("{}.jsonl", crate::eval::report::file_label("base"))))?;
    let tuned_lines =
        read_lines(&folder.join(format!("{}.jsonl", crate::eval::report::file_label(tuned))))?;
    let by_id: HashMap<String, &Value> = tuned_lines
        .iter()
        .filter_map(|l| Some((l.get("id")?.as_str()?.to_string(), l)))
        .collect();
    let source = Path::new(&t.source);
    let name = if crate::eval::tasks::BUILTIN.contains(&task) {
        task
    } else {
        "jsonl"
    };
    let asked: HashMap<String, (String, String)> = crate::eval::tasks::load(name, source)
        .map(|t| {
            t.items
                .into_iter()
                .map(|i| (i.id, (i.instruction, i.input)))
                .collect()
        })
        .unwrap_or_default();
    Ok(base
        .iter()
        .filter_map(|b| {
            let id = b.get("id")?.as_str()?.to_string();
            let tl = by_id.get(&id)?;
            let (instruction, input) = asked.get(&id).cloned().unwrap_or_default();
            Some(ItemRow {
                reference: as_text(b.get("reference").unwrap_or(&Value::Null)),
                base: as_text(b.get("prediction").unwrap_or(&Value::Null)),
                tuned: as_text(tl.get("prediction").unwrap_or(&Value::Null)),
                base_score: item_score(b),
                tuned_score: item_score(tl),
                instruction,
                input,
                id,
            })
        })
        .collect())
}

fn read_json<T: for<'de> serde::Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

impl EvalScan {
    /// Carries the scan out (blocking file I/O): each evaluation folder's status and job,
    /// its report when it changed since the pane read it, each experiment's status and
    /// matrix, and the drill-down's items when asked for.
    pub fn run(self) -> EvalsScanned {
        let known: HashMap<PathBuf, Option<SystemTime>> = self.known.into_iter().collect();
        let mut evals = Vec::new();
        let mut reports: HashMap<PathBuf, Report> = HashMap::new();
        for d in crate::eval::job::list(&self.evals_root) {
            let report_path = d.path.join("report.json");
            let m = modified(&report_path);
            let fresh = known.get(&d.path).is_none_or(|k| *k != m);
            let report = if fresh {
                crate::eval::report::read(&d.path).ok()
            } else {
                None
            };
            if let Some(r) = &report {
                reports.insert(d.path.clone(), r.clone());
            }
            let status = d.read_status().ok();
            let alive = status
                .as_ref()
                .is_some_and(|s| s.active() && crate::commands::train::process_alive(s.pid));
            evals.push((
                EvalEntry {
                    id: d.id(),
                    job: d.read_job().ok(),
                    status,
                    report,
                    alive,
                    report_modified: m,
                    dir: d.path,
                },
                fresh,
            ));
        }
        let mut experiments = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.experiments_root) {
            for e in rd.flatten() {
                let p = e.path();
                if !p.join("experiment.toml").is_file() {
                    continue;
                }
                experiments.push(ExperimentEntry {
                    id: e.file_name().to_string_lossy().into_owned(),
                    status: read_json(&p.join("status.json")),
                    matrix: read_json(&p.join("matrix.json")),
                });
            }
        }
        experiments.sort_by(|a, b| b.id.cmp(&a.id));
        let items = self.items.map(|(dir, task, tuned)| {
            let report = reports
                .get(&dir)
                .cloned()
                .map(Ok)
                .unwrap_or_else(|| crate::eval::report::read(&dir).map_err(|e| e.to_string()));
            let rows = report.and_then(|r| read_items(&dir, &r, &task, &tuned));
            (dir, task, rows)
        });
        EvalsScanned {
            evals,
            experiments,
            items,
        }
    }
}

/// The Eval pane.
#[derive(Debug)]
pub struct EvalPane {
    /// `<data dir>/evals`.
    pub root: PathBuf,
    /// `<data dir>/experiments`.
    pub experiments_root: PathBuf,
    /// Evaluations, newest first.
    pub evals: Vec<EvalEntry>,
    /// Experiments, newest first.
    pub experiments: Vec<ExperimentEntry>,
    /// The selected evaluation.
    pub cursor: ListSelection,
    /// The selected experiment (matrix view).
    pub experiment_cursor: ListSelection,
    /// Where the pane is.
    pub view: EvalView,
    /// The new-evaluation form, while open.
    pub form: Option<EvalForm>,
    /// A start, stop or resume in flight.
    pub launching: bool,
    /// What the form's adapters field starts with.
    pub default_adapters: String,
    scanning: bool,
    scan_again: bool,
    want_items: bool,
}

impl EvalPane {
    /// A pane over `root` (evaluations) and `experiments_root`; reads them here and now.
    pub fn new(root: PathBuf, experiments_root: PathBuf) -> EvalPane {
        let mut pane = EvalPane {
            root,
            experiments_root,
            evals: Vec::new(),
            experiments: Vec::new(),
            cursor: ListSelection::default(),
            experiment_cursor: ListSelection::default(),
            view: EvalView::List,
            form: None,
            launching: false,
            default_adapters: String::new(),
            scanning: false,
            scan_again: false,
            want_items: false,
        };
        pane.refresh_now();
        pane
    }

    /// Rescans here and now (blocking): before the event loop runs, and in tests.
    pub fn refresh_now(&mut self) {
        let scan = self.scan();
        self.scanned(scan.run());
    }

    fn scan(&self) -> EvalScan {
        EvalScan {
            evals_root: self.root.clone(),
            experiments_root: self.experiments_root.clone(),
            known: self
                .evals
                .iter()
                .map(|e| (e.dir.clone(), e.report_modified))
                .collect(),
            items: match &self.view {
                EvalView::Items(d) if d.items.is_none() || self.want_items => {
                    Some((d.dir.clone(), d.task.clone(), d.tuned.clone()))
                }
                _ => None,
            },
        }
    }

    /// A rescan for the runtime, or `None` while one is in flight (asked again when back).
    pub fn request_scan(&mut self) -> Option<EvalScan> {
        if self.scanning {
            self.scan_again = true;
            return None;
        }
        self.scanning = true;
        let scan = self.scan();
        self.want_items = false;
        Some(scan)
    }

    /// Takes in a rescan; returns whether another was asked for meanwhile.
    pub fn scanned(&mut self, scanned: EvalsScanned) -> bool {
        self.scanning = false;
        let selected = self.selected().map(|e| e.id.clone());
        let mut old: HashMap<PathBuf, EvalEntry> =
            self.evals.drain(..).map(|e| (e.dir.clone(), e)).collect();
        for (mut entry, fresh) in scanned.evals {
            if !fresh {
                if let Some(o) = old.remove(&entry.dir) {
                    entry.report = o.report;
                }
            }
            self.evals.push(entry);
        }
        self.cursor.selected = selected
            .and_then(|id| self.evals.iter().position(|e| e.id == id))
            .unwrap_or(0);
        self.cursor.clamp(self.evals.len());
        self.experiments = scanned.experiments;
        self.experiment_cursor.clamp(self.experiments.len());
        if let (Some((dir, task, rows)), EvalView::Items(d)) = (scanned.items, &mut self.view) {
            if d.dir == dir && d.task == task {
                d.items = Some(rows);
                d.cursor.clamp(d.shown().len());
            }
        }
        std::mem::take(&mut self.scan_again)
    }

    /// The selected evaluation.
    pub fn selected(&self) -> Option<&EvalEntry> {
        self.evals.get(self.cursor.selected)
    }

    /// The selected evaluation's rows: `(group, None)` for a group, `(group, Some(task))`
    /// for each of its tasks, groups in qa, ie, gen, other order.
    pub fn task_rows(&self) -> Vec<(String, Option<String>)> {
        let Some(r) = self.selected().and_then(|e| e.report.as_ref()) else {
            return Vec::new();
        };
        let order = ["qa", "ie", "gen", "other"];
        let mut groups: Vec<&String> = r.groups.keys().collect();
        groups.sort_by_key(|g| order.iter().position(|o| o == g).unwrap_or(order.len()));
        let mut rows = Vec::new();
        for g in groups {
            rows.push((g.clone(), None));
            for t in &r.groups[g].tasks {
                rows.push((g.clone(), Some(t.clone())));
            }
        }
        rows
    }

    /// The selected item of the drill-down.
    pub fn selected_item(&self) -> Option<&ItemRow> {
        match &self.view {
            EvalView::Items(d) => d.shown().get(d.cursor.selected).copied(),
            _ => None,
        }
    }

    fn open_items(&mut self, row: usize) -> super::Reply {
        let rows = self.task_rows();
        let Some((_, Some(task))) = rows.get(row).cloned() else {
            return super::Reply::info("Select a task row (not a group) to see its items.");
        };
        let Some(entry) = self.selected() else {
            return super::Reply::default();
        };
        let Some(report) = &entry.report else {
            return super::Reply::default();
        };
        let Some(tuned) = report.models.iter().find(|m| m.label != "base") else {
            return super::Reply::info(
                "This evaluation has only the base model: nothing to compare.",
            );
        };
        self.view = EvalView::Items(Box::new(Drill {
            dir: entry.dir.clone(),
            task,
            tuned: tuned.label.clone(),
            items: None,
            filter: ItemFilter::All,
            cursor: ListSelection::default(),
        }));
        self.want_items = true;
        self.rescan_reply()
    }

    fn rescan_reply(&mut self) -> super::Reply {
        use crate::tui::effect::{Effect, FileWork};
        match self.request_scan() {
            Some(scan) => super::Reply::effect(Effect::File(FileWork::ScanEvals(Box::new(scan)))),
            None => super::Reply::default(),
        }
    }

    /// The next tuned model for the drill-down (`t`).
    fn next_tuned(&mut self) -> super::Reply {
        let labels: Vec<String> = self
            .selected()
            .and_then(|e| e.report.as_ref())
            .map(|r| {
                r.models
                    .iter()
                    .filter(|m| m.label != "base")
                    .map(|m| m.label.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let EvalView::Items(d) = &mut self.view {
            let at = labels.iter().position(|l| *l == d.tuned).unwrap_or(0);
            if let Some(next) = labels.get((at + 1) % labels.len().max(1)) {
                if *next != d.tuned {
                    d.tuned = next.clone();
                    d.items = None;
                    self.want_items = true;
                    return self.rescan_reply();
                }
            }
        }
        super::Reply::default()
    }
}

impl super::Pane for EvalPane {
    fn mode(&self) -> crate::tui::mode::Mode {
        use crate::tui::mode::Mode;
        match self.form {
            Some(_) => Mode::EvalForm,
            None => Mode::Evals,
        }
    }

    fn update(&mut self, action: crate::tui::Action, screen: super::Screen) -> super::Reply {
        use super::Reply;
        use crate::tui::effect::{Effect, Job};
        use crate::tui::Action;
        if let Some(form) = &mut self.form {
            if form.inputs.edit(&action) {
                form.validate();
                return Reply::default();
            }
            match action {
                Action::Cancel if !self.launching => self.form = None,
                Action::LaunchRun if !self.launching => {
                    return match form.validate() {
                        Some(args) => {
                            self.launching = true;
                            Reply::effect(Effect::Run(Job::StartEval(Box::new(args))))
                                .with_message(Ok(
                                "Checking the tasks and adapters, then starting the evaluation…"
                                    .into(),
                            ))
                        }
                        None => Reply::error("Fix the fields marked ✗ first."),
                    }
                }
                _ => {}
            }
            return Reply::default();
        }
        let page = screen.rows.max(1) as isize;
        match (&mut self.view, action) {
            (_, Action::NewRun) => {
                self.form = Some(EvalForm::new(&self.default_adapters));
                if let Some(f) = &mut self.form {
                    f.validate();
                }
            }
            (EvalView::List, Action::Up | Action::ScrollUp) => {
                self.cursor.move_by(-1, self.evals.len())
            }
            (EvalView::List, Action::Down | Action::ScrollDown) => {
                self.cursor.move_by(1, self.evals.len())
            }
            (EvalView::List, Action::Top) => self.cursor.move_by(isize::MIN / 2, self.evals.len()),
            (EvalView::List, Action::Bottom) => {
                self.cursor.move_by(isize::MAX / 2, self.evals.len())
            }
            (EvalView::List, Action::Open) => match self.selected() {
                Some(e) if e.report.is_some() => {
                    let first_task = self
                        .task_rows()
                        .iter()
                        .position(|(_, t)| t.is_some())
                        .unwrap_or(0);
                    self.view = EvalView::Report { row: first_task };
                }
                Some(e) => {
                    return Reply::info(format!(
                        "{} has no report yet ({}).",
                        e.id,
                        e.state_label()
                    ))
                }
                None => {}
            },
            (EvalView::Report { row }, Action::Up | Action::ScrollUp) => {
                *row = row.saturating_sub(1)
            }
            (EvalView::Report { .. }, Action::Down | Action::ScrollDown) => {
                let last = self.task_rows().len().saturating_sub(1);
                if let EvalView::Report { row } = &mut self.view {
                    *row = (*row + 1).min(last);
                }
            }
            (EvalView::Report { row }, Action::Open) => {
                let row = *row;
                return self.open_items(row);
            }
            (EvalView::Report { .. } | EvalView::Matrix, Action::Cancel) => {
                self.view = EvalView::List
            }
            (EvalView::Items(d), Action::Up | Action::ScrollUp) => {
                d.cursor.move_by(-1, d.shown().len())
            }
            (EvalView::Items(d), Action::Down | Action::ScrollDown) => {
                d.cursor.move_by(1, d.shown().len())
            }
            (EvalView::Items(d), Action::PageUp) => d.cursor.move_by(-page, d.shown().len()),
            (EvalView::Items(d), Action::PageDown) => d.cursor.move_by(page, d.shown().len()),
            (EvalView::Items(d), Action::CycleCategory) => {
                d.filter = d.filter.next();
                d.cursor = ListSelection::default();
                let n = d.shown().len();
                return Reply::info(format!("{}: {n} items", d.filter.label()));
            }
            (EvalView::Items(_), Action::SwitchGenList) => return self.next_tuned(),
            (EvalView::Items(_), Action::Cancel) => {
                let row = self
                    .task_rows()
                    .iter()
                    .position(|(_, t)| t.is_some())
                    .unwrap_or(0);
                self.view = EvalView::Report { row };
            }
            (EvalView::Matrix, Action::Up | Action::ScrollUp) => {
                self.experiment_cursor.move_by(-1, self.experiments.len());
            }
            (EvalView::Matrix, Action::Down | Action::ScrollDown) => {
                self.experiment_cursor.move_by(1, self.experiments.len());
            }
            (EvalView::List | EvalView::Report { .. }, Action::ShowMatrix) => {
                if self.experiments.is_empty() {
                    return Reply::info("No experiment yet: `bioinstruct experiment run configs/experiment-categories.toml` makes one.");
                }
                self.view = EvalView::Matrix;
            }
            (EvalView::Matrix, Action::ShowMatrix) => self.view = EvalView::List,
            (EvalView::List | EvalView::Report { .. }, Action::StopRun) => match self.selected() {
                Some(e) if e.is_active() => {
                    let reply = Reply::effect(Effect::Run(Job::StopEval(e.dir.clone())))
                        .with_message(Ok(format!("Stopping {}; finished items are kept…", e.id)));
                    self.launching = true;
                    return reply;
                }
                Some(e) => {
                    return Reply::info(format!("{} is not running ({}).", e.id, e.state_label()))
                }
                None => {}
            },
            (EvalView::List | EvalView::Report { .. }, Action::ResumeRun) => {
                match self.selected() {
                    Some(e) if e.is_active() => {
                        return Reply::info(format!("{} is still running.", e.id))
                    }
                    Some(e) if e.job.is_none() => {
                        return Reply::info(format!(
                            "{} was run in a shell: rerun its command to add to it.",
                            e.id
                        ))
                    }
                    Some(e) if e.report.is_some() && e.state_label() == "finished" => {
                        return Reply::info(format!("{} has finished.", e.id))
                    }
                    Some(e) => {
                        let reply = Reply::effect(Effect::Run(Job::ResumeEval(e.dir.clone())))
                            .with_message(Ok(format!("Continuing {} in the background…", e.id)));
                        self.launching = true;
                        return reply;
                    }
                    None => {}
                }
            }
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
        super::eval_view::draw(frame, area, self);
    }
}
