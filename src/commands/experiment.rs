//! `bioinstruct experiment run|resume|show`: BioInstruct's category analysis (Tran et al.,
//! JAMIA 2024, the table of which instruction categories help which task groups) as one
//! command. For each instruction subset of a grid (all; only qa, ie, gen or other; all but
//! one; or named files such as a benchmark's training half), an adapter is trained with the
//! same base, hyperparameters and number of training tokens, then evaluated on every task
//! with the base beside it. The result is a matrix of subsets against task groups, each cell
//! the difference from the base with its paired bootstrap 95% interval.
//!
//! Fair subsets: every cell trains on the same number of tokens (`train_tokens`, by default
//! the smallest subset's total): its records are taken in a seeded order until the budget is
//! reached (going round again when a subset is smaller than the budget), and every cell
//! keeps the same epochs, learning rate, schedule, `r`, `lora_alpha` and seed. Validation loss
//! is not measured (the whole budget trains; the evaluation is the measure).
//!
//! The experiment's folder (`<data dir>/experiments/<name>/`) holds `experiment.toml` (as
//! resolved), `status.json`, `experiment.log`, `plan.json` (each cell's records and tokens),
//! `cells/<subset>/data.jsonl`, `cells/<subset>/run/` (a training run) and
//! `cells/<subset>/eval/` (an evaluation), and at the end `matrix.json` and `matrix.md`. Every
//! step is resumable: a killed experiment run again goes on from the cell it was in (the run
//! from its latest checkpoint, the evaluation from its item cache).

use crate::commands::eval::{self as eval_cmd, RunArgs};
use crate::commands::train::{record_tokens, train_into};
use crate::config::Settings;
use crate::data::{read_any, Category, Instruction};
use crate::eval::report::{self, Delta};
use crate::train::config::TrainConfig;
use crate::train::run::RunState;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `experiment.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The experiment's folder name under `<data dir>/experiments`.
    pub name: String,
    /// What every cell trains with.
    pub train: TrainPart,
    /// What every cell is evaluated on.
    pub eval: EvalPart,
    /// The subsets.
    pub grid: Grid,
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPart {
    /// A training config (base model, LoRA, optimizer, seed); its `[data] files`,
    /// `categories` and `validation_fraction` are set per cell. Relative to this file; a
    /// base model given there as a relative path is relative to that file.
    pub config: String,
    /// The instruction pool the category subsets are cut from (`seeds` is the workspace's
    /// seed file; other paths relative to this file).
    #[serde(default = "seeds_only")]
    pub files: Vec<String>,
    /// Training tokens per cell per epoch (prompt and response); 0: the smallest subset's.
    #[serde(default)]
    pub train_tokens: usize,
}

fn seeds_only() -> Vec<String> {
    vec!["seeds".into()]
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalPart {
    /// Task names (`pubmedqa`, `ncbi_disease`, `mts_dialog`, `jsonl`).
    pub tasks: Vec<String>,
    /// `TASK=PATH` files (paths relative to this file); a task without one reads its official
    /// test split.
    #[serde(default)]
    pub data: Vec<String>,
    /// Only the first N items of each task (after `skip`).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Leave out the first N items of each task.
    #[serde(default)]
    pub skip: Option<usize>,
    /// The most tokens a generated answer may have.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

/// `[grid]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Subsets of the pool: `all`, a category (`qa`, `ie`, `gen`, `other`), `all-CATEGORY`
    /// (all but one), or a name under `files`.
    pub subsets: Vec<String>,
    /// Named subsets made of other instruction files (paths relative to this file), e.g. a
    /// benchmark's training half from `data from-benchmark`.
    #[serde(default)]
    pub files: BTreeMap<String, Vec<String>>,
}

/// Which records a subset takes.
#[derive(Debug, Clone, PartialEq)]
enum Subset {
    Categories(Vec<Category>),
    Files(Vec<String>),
}

fn subset_of(config: &ExperimentConfig, name: &str) -> Result<Subset> {
    if let Some(files) = config.grid.files.get(name) {
        return Ok(Subset::Files(files.clone()));
    }
    if name == "all" {
        return Ok(Subset::Categories(Category::ALL.to_vec()));
    }
    if let Some(rest) = name.strip_prefix("all-") {
        let c: Category = rest.parse().map_err(|_| {
            anyhow::anyhow!("grid.subsets: {name:?}: {rest:?} is not qa, ie, gen or other")
        })?;
        return Ok(Subset::Categories(
            Category::ALL.into_iter().filter(|x| *x != c).collect(),
        ));
    }
    match name.parse::<Category>() {
        Ok(c) => Ok(Subset::Categories(vec![c])),
        Err(_) => bail!(
            "grid.subsets: {name:?} is not all, qa, ie, gen, other, all-CATEGORY, nor a name under [grid.files]"
        ),
    }
}

/// One cell of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCell {
    /// The subset's name.
    pub subset: String,
    /// The subset's records that fit `data.max_seq_len` (the ones a cell draws from).
    pub available: usize,
    /// The subset's records, those longer than `data.max_seq_len` included (0 in plans
    /// written before this field).
    #[serde(default)]
    pub records: usize,
    /// Records trained on (a record taken twice counts twice).
    pub examples: usize,
    /// Tokens trained on per epoch.
    pub tokens: usize,
}

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The token budget per cell per epoch.
    pub train_tokens: usize,
    /// The cells, in grid order.
    pub cells: Vec<PlannedCell>,
}

/// `status.json` of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStatus {
    /// `queued`, `running`, `stopped`, `finished`, `failed`.
    pub state: RunState,
    /// The worker's process id.
    pub pid: u32,
    /// The cell being worked on.
    pub cell: Option<String>,
    /// `plan`, `train` or `eval`.
    pub phase: Option<String>,
    /// Cells with an evaluation report.
    pub cells_done: usize,
    /// Cells in the grid.
    pub cells: usize,
    /// The error that ended it.
    pub error: Option<String>,
    /// Seconds since the Unix epoch.
    pub updated_unix_s: f64,
}

/// One cell of the matrix: a task group's score with a subset's adapter, against the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// The group score (mean of its tasks' primary metrics).
    pub score: f64,
    /// The difference from the base, with its paired bootstrap 95% interval.
    pub vs_base: Delta,
}

/// `matrix.json`: subsets against task groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// The task groups, in order.
    pub groups: Vec<String>,
    /// The base model's group scores.
    pub base: BTreeMap<String, f64>,
    /// Per subset (grid order), per group.
    pub rows: Vec<(String, BTreeMap<String, MatrixCell>)>,
    /// Per subset: tokens trained on per epoch.
    pub tokens: BTreeMap<String, usize>,
}

/// An experiment's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentDir {
    /// The folder.
    pub path: PathBuf,
}

impl ExperimentDir {
    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A cell's folder.
    pub fn cell(&self, subset: &str) -> PathBuf {
        self.path.join("cells").join(subset)
    }

    /// Reads `status.json`.
    ///
    /// # Errors
    /// Missing or malformed, the file named.
    pub fn read_status(&self) -> Result<ExperimentStatus> {
        read_json(&self.file("status.json"))
    }

    fn write_status(&self, s: &ExperimentStatus) -> Result<()> {
        write_json(&self.file("status.json"), s)
    }

    fn log(&self, message: &str) {
        let line = format!("[{}] {message}\n", crate::train::run::local_timestamp());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("experiment.log"))
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }

    /// Reads `matrix.json`.
    ///
    /// # Errors
    /// Missing (not finished) or malformed.
    pub fn read_matrix(&self) -> Result<Matrix> {
        read_json(&self.file("matrix.json"))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::data::replace_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `<data dir>/experiments`.
pub fn experiments_root(settings: &Settings) -> PathBuf {
    settings.workspace.data_dir.join("experiments")
}

/// Reads `path` and makes its paths absolute (relative ones are relative to the file;
/// `seeds` stays the workspace's seed file).
///
/// # Errors
/// `file:line: problem` for TOML errors and unknown keys; a bad subset name, an empty grid
/// or task list.
pub fn read_config(path: &Path) -> Result<ExperimentConfig> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut c: ExperimentConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            1 + text[..s.start.min(text.len())].matches('\n').count()
        });
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let abs = |p: &str| -> Result<String> {
        if p == "seeds" {
            return Ok(p.to_string());
        }
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        Ok(std::path::absolute(joined)?.display().to_string())
    };
    c.train.config = abs(&c.train.config)?;
    c.train.files = c
        .train
        .files
        .iter()
        .map(|f| abs(f))
        .collect::<Result<_>>()?;
    for files in c.grid.files.values_mut() {
        *files = files.iter().map(|f| abs(f)).collect::<Result<_>>()?;
    }
    c.eval.data = c
        .eval
        .data
        .iter()
        .map(|d| match d.split_once('=') {
            Some((t, p)) => Ok(format!("{t}={}", abs(p)?)),
            None => bail!("{}: eval.data: {d:?} is not TASK=PATH", path.display()),
        })
        .collect::<Result<_>>()?;
    if c.grid.subsets.is_empty() {
        bail!("{}: grid.subsets: is empty", path.display());
    }
    if c.eval.tasks.is_empty() {
        bail!("{}: eval.tasks: is empty", path.display());
    }
    let mut seen = std::collections::HashSet::new();
    for s in &c.grid.subsets {
        subset_of(&c, s).with_context(|| path.display().to_string())?;
        if !seen.insert(s) {
            bail!("{}: grid.subsets: {s:?} is named twice", path.display());
        }
    }
    if crate::data::id_problem(&c.name).is_some() || c.name.contains('/') {
        bail!(
            "{}: name: {:?} is not a folder name",
            path.display(),
            c.name
        );
    }
    Ok(c)
}

fn read_records(settings: &Settings, files: &[String]) -> Result<Vec<Instruction>> {
    let mut out = Vec::new();
    for f in files {
        let path = if f == "seeds" {
            settings.ensure_seeds()?;
            settings.seeds_path.clone()
        } else {
            PathBuf::from(f)
        };
        let mut loaded = read_any(&path, None)?;
        if let Some(e) = loaded.errors().next() {
            bail!("{e} (`bioinstruct seeds validate` lists every invalid line)");
        }
        crate::data::fill_missing_ids_from(&mut loaded.records, &path);
        out.extend(loaded.records);
    }
    Ok(out)
}

/// The records of every subset, the token budget and each cell's data; writes
/// `cells/<subset>/data.jsonl` and `plan.json` (last, so a plan on disk is whole).
fn plan(
    settings: &Settings,
    config: &ExperimentConfig,
    train: &TrainConfig,
    dir: &ExperimentDir,
) -> Result<Plan> {
    if let Ok(p) = read_json::<Plan>(&dir.file("plan.json")) {
        return Ok(p);
    }
    let pool = read_records(settings, &config.train.files)?;
    let mut subsets = Vec::new();
    let mut all_records = pool.clone();
    for name in &config.grid.subsets {
        let records = match subset_of(config, name)? {
            Subset::Categories(cats) => pool
                .iter()
                .filter(|r| cats.contains(&r.category))
                .cloned()
                .collect::<Vec<_>>(),
            Subset::Files(files) => {
                let r = read_records(settings, &files)?;
                all_records.extend(r.iter().cloned());
                r
            }
        };
        subsets.push((name.clone(), records));
    }
    let tokens = record_tokens(settings, train, &all_records)?;
    let mut usable = Vec::new();
    for (name, records) in subsets {
        let count = records.len();
        let mut kept: Vec<(Instruction, usize)> = records
            .into_iter()
            .filter_map(|r| tokens.get(&r.id).map(|t| (r.clone(), *t)))
            .collect();
        if kept.is_empty() {
            bail!("grid.subsets: {name:?} has no record that fits data.max_seq_len");
        }
        // The seeded order every cell draws its records in.
        let mut rng = crate::rng::XorShift64Star::new(train.run.seed);
        for i in (1..kept.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            kept.swap(i, j);
        }
        usable.push((name, count, kept));
    }
    let budget = if config.train.train_tokens > 0 {
        config.train.train_tokens
    } else {
        usable
            .iter()
            .map(|(_, _, k)| k.iter().map(|(_, t)| t).sum::<usize>())
            .min()
            .unwrap_or(0)
    };
    let mut cells = Vec::new();
    for (name, records, kept) in usable {
        let mut chosen = Vec::new();
        let mut total = 0;
        let mut round = 0;
        'fill: loop {
            for (r, t) in &kept {
                if total >= budget {
                    break 'fill;
                }
                let mut r = r.clone();
                if round > 0 {
                    r.id = format!("{}~{}", r.id, round + 1);
                }
                chosen.push(r);
                total += t;
            }
            round += 1;
        }
        let cell = dir.cell(&name);
        crate::data::replace_atomic(
            &cell.join("data.jsonl"),
            crate::data::to_jsonl(&chosen, &[]).as_bytes(),
        )?;
        cells.push(PlannedCell {
            subset: name,
            available: kept.len(),
            records,
            examples: chosen.len(),
            tokens: total,
        });
    }
    let p = Plan {
        train_tokens: budget,
        cells,
    };
    write_json(&dir.file("plan.json"), &p)?;
    Ok(p)
}

/// Runs (or continues) the experiment in `dir`: plan, then each cell's training and
/// evaluation, then the matrix. Keeps `status.json` current.
fn run_in(settings: &Settings, dir: &ExperimentDir, out: &mut dyn Write) -> Result<Matrix> {
    let config_path = dir.file("experiment.toml");
    let config = read_config(&config_path)?;
    let train_path = PathBuf::from(&config.train.config);
    let mut train = TrainConfig::from_file(&train_path).map_err(anyhow::Error::msg)?;
    // A base model given as a relative path is relative to the training config's file.
    let base = Path::new(&train.model.base);
    if base.is_relative() {
        if let Some(beside) = train_path
            .parent()
            .map(|d| d.join(base))
            .filter(|p| p.exists())
        {
            train.model.base = std::path::absolute(beside)?.display().to_string();
        }
    }
    let mut status = ExperimentStatus {
        state: RunState::Running,
        pid: std::process::id(),
        cell: None,
        phase: Some("plan".into()),
        cells_done: 0,
        cells: config.grid.subsets.len(),
        error: None,
        updated_unix_s: crate::train::run::unix_now(),
    };
    dir.write_status(&status)?;
    let plan = plan(settings, &config, &train, dir)?;
    writeln!(
        out,
        "{} cells, {} training tokens each per epoch",
        plan.cells.len(),
        plan.train_tokens
    )?;
    for cell in plan.cells.iter().filter(|c| c.records > c.available) {
        writeln!(
            out,
            "{}: {} of {} records fit data.max_seq_len ({} tokens); the {} longer ones are left out",
            cell.subset,
            cell.available,
            cell.records,
            train.data.max_seq_len,
            cell.records - cell.available
        )?;
    }
    for (i, cell) in plan.cells.iter().enumerate() {
        let folder = dir.cell(&cell.subset);
        let eval_dir = folder.join("eval");
        status.cell = Some(cell.subset.clone());
        status.cells_done = i;
        if eval_dir.join("report.json").is_file() {
            continue;
        }
        status.phase = Some("train".into());
        status.updated_unix_s = crate::train::run::unix_now();
        dir.write_status(&status)?;
        dir.log(&format!(
            "{}: training on {} examples, {} tokens",
            cell.subset, cell.examples, cell.tokens
        ));
        let mut c = train.clone();
        c.data.files = vec![folder.join("data.jsonl").display().to_string()];
        c.data.categories = Vec::new();
        c.data.validation_fraction = 0.0;
        c.run.output_dir = folder.clone();
        let run_dir = folder.join("run");
        let state = train_into(settings, c, &config_path, &run_dir, &mut std::io::sink())?;
        if state != RunState::Finished {
            bail!(StoppedExperiment(cell.subset.clone()));
        }
        status.phase = Some("eval".into());
        status.updated_unix_s = crate::train::run::unix_now();
        dir.write_status(&status)?;
        dir.log(&format!("{}: evaluating", cell.subset));
        let args = RunArgs {
            tasks: config.eval.tasks.clone(),
            data: config.eval.data.clone(),
            mode: None,
            adapters: vec![run_dir.join("final").display().to_string()],
            limit: config.eval.limit,
            skip: config.eval.skip,
            out: Some(eval_dir.clone()),
            max_new_tokens: config.eval.max_new_tokens,
            judge: None,
            progress_bar: false,
            ..Default::default()
        };
        let mut eval_settings = settings.clone();
        eval_settings.config.model.base = train.model.base.clone();
        eval_cmd::run(&eval_settings, &args, &mut std::io::sink())?;
        writeln!(
            out,
            "cell {} of {}: {} done",
            i + 1,
            plan.cells.len(),
            cell.subset
        )?;
    }
    let matrix = matrix_of(dir, &plan)?;
    write_json(&dir.file("matrix.json"), &matrix)?;
    crate::data::replace_atomic(&dir.file("matrix.md"), markdown(&matrix).as_bytes())?;
    status.state = RunState::Finished;
    status.cell = None;
    status.phase = None;
    status.cells_done = plan.cells.len();
    status.updated_unix_s = crate::train::run::unix_now();
    dir.write_status(&status)?;
    dir.log("finished");
    Ok(matrix)
}

/// A cell's training was stopped (SIGTERM): the experiment ends `stopped`.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped while training cell {0}; `bioinstruct experiment resume` goes on from its checkpoint"
)]
struct StoppedExperiment(String);

/// The matrix of the cells evaluated so far.
fn matrix_of(dir: &ExperimentDir, plan: &Plan) -> Result<Matrix> {
    let mut groups: Vec<String> = Vec::new();
    let mut base = BTreeMap::new();
    let mut rows = Vec::new();
    let mut tokens = BTreeMap::new();
    for cell in &plan.cells {
        let eval_dir = dir.cell(&cell.subset).join("eval");
        let Ok(r) = report::read(&eval_dir) else {
            continue;
        };
        let Some(label) = r
            .models
            .iter()
            .map(|m| m.label.clone())
            .find(|l| l != "base")
        else {
            continue;
        };
        let mut row = BTreeMap::new();
        for (g, gr) in &r.groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
            if let Some(b) = gr.models.get("base").and_then(|m| m.get("score")) {
                base.entry(g.clone()).or_insert(*b);
            }
            let score = gr.models.get(&label).and_then(|m| m.get("score")).copied();
            let delta = gr.vs_base.get(&label).and_then(|m| m.get("score")).cloned();
            if let (Some(score), Some(vs_base)) = (score, delta) {
                row.insert(g.clone(), MatrixCell { score, vs_base });
            }
        }
        rows.push((cell.subset.clone(), row));
        tokens.insert(cell.subset.clone(), cell.tokens);
    }
    let order = ["qa", "ie", "gen", "other"];
    groups.sort_by_key(|g| order.iter().position(|o| o == g).unwrap_or(order.len()));
    Ok(Matrix {
        groups,
        base,
        rows,
        tokens,
    })
}

/// The matrix as a Markdown table: each subset's difference from the base per group, its
/// 95% interval, `*` where the interval excludes 0.
pub fn markdown(m: &Matrix) -> String {
    let mut s = String::from("| subset | tokens/epoch |");
    for g in &m.groups {
        s.push_str(&format!(" {g} |"));
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(m.groups.len()));
    s.push_str("\n| base | |");
    for g in &m.groups {
        s.push_str(&format!(
            " {:.4} |",
            m.base.get(g).copied().unwrap_or(f64::NAN)
        ));
    }
    for (subset, row) in &m.rows {
        s.push_str(&format!(
            "\n| {subset} | {} |",
            m.tokens.get(subset).copied().unwrap_or(0)
        ));
        for g in &m.groups {
            match row.get(g) {
                Some(c) => {
                    let d = &c.vs_base;
                    let star = if d.ci95[0] > 0.0 || d.ci95[1] < 0.0 {
                        "*"
                    } else {
                        ""
                    };
                    s.push_str(&format!(
                        " {:+.4}{star} [{:+.4}, {:+.4}] |",
                        d.diff, d.ci95[0], d.ci95[1]
                    ));
                }
                None => s.push_str(" |"),
            }
        }
    }
    s.push_str("\n\nEach cell: the subset's adapter minus the base on the group's score (the mean of its tasks' primary metrics), with the paired bootstrap 95% interval; * where it excludes 0.\n");
    s
}

/// An experiment named by its folder or its name under `<data dir>/experiments`.
///
/// # Errors
/// Neither holds an `experiment.toml`.
pub fn find(settings: &Settings, name: &str) -> Result<ExperimentDir> {
    for path in [PathBuf::from(name), experiments_root(settings).join(name)] {
        if path.join("experiment.toml").is_file() {
            return Ok(ExperimentDir { path });
        }
    }
    bail!(
        "no experiment {name:?}: neither {name} nor {} holds an experiment.toml",
        experiments_root(settings).join(name).display()
    )
}

/// `experiment run FILE [--detach]`: writes the resolved config into the experiment's
/// folder (refusing a folder that holds a different experiment) and runs it, or continues
/// it when the folder holds this one already.
///
/// # Errors
/// A bad config (file, line, field), a folder holding another experiment or one still
/// running, or a cell's training or evaluation failing.
pub fn run(settings: &Settings, file: &Path, detach: bool, out: &mut dyn Write) -> Result<()> {
    let config = read_config(file)?;
    TrainConfig::from_file(Path::new(&config.train.config)).map_err(anyhow::Error::msg)?;
    let dir = ExperimentDir {
        path: experiments_root(settings).join(&config.name),
    };
    let resolved = toml::to_string_pretty(&config)?;
    let written = dir.file("experiment.toml");
    if let Ok(existing) = std::fs::read_to_string(&written) {
        let same = toml::from_str::<ExperimentConfig>(&existing).is_ok_and(|c| c == config);
        if !same {
            bail!(
                "{} holds a different experiment named {:?}: rename this one (name = …) or remove that folder",
                dir.path.display(),
                config.name
            );
        }
    } else {
        std::fs::create_dir_all(&dir.path).with_context(|| dir.path.display().to_string())?;
        crate::data::replace_atomic(&written, resolved.as_bytes())?;
    }
    start(settings, &dir, detach, out)
}

fn start(
    settings: &Settings,
    dir: &ExperimentDir,
    detach: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if let Ok(s) = dir.read_status() {
        let active = s.state.is_active();
        if active && crate::commands::train::process_alive(s.pid) && s.pid != std::process::id() {
            bail!(
                "{} is running (pid {}); stop it with `bioinstruct experiment stop`",
                dir.path.display(),
                s.pid
            );
        }
        if s.state == RunState::Finished {
            writeln!(out, "{} is finished:", dir.path.display())?;
            write!(out, "{}", markdown(&dir.read_matrix()?))?;
            return Ok(());
        }
    }
    if detach {
        dir.write_status(&ExperimentStatus {
            state: RunState::Queued,
            pid: std::process::id(),
            cell: None,
            phase: None,
            cells_done: 0,
            cells: 0,
            error: None,
            updated_unix_s: crate::train::run::unix_now(),
        })?;
        let pid = crate::commands::train::spawn_worker(
            settings,
            &[
                "experiment".as_ref(),
                "worker".as_ref(),
                dir.path.as_os_str(),
            ],
            &dir.file("experiment.log"),
            "the background experiment",
        )?;
        writeln!(
            out,
            "experiment running in the background (pid {pid}): {}\nfollow: bioinstruct experiment show {}",
            dir.path.display(),
            dir.path.display()
        )?;
        return Ok(());
    }
    let result = run_in(settings, dir, out);
    finish(dir, &result);
    let matrix = result?;
    write!(out, "{}", markdown(&matrix))?;
    writeln!(out, "wrote {}", dir.file("matrix.json").display())?;
    Ok(())
}

fn finish<T>(dir: &ExperimentDir, result: &Result<T>) {
    if let Err(e) = result {
        if let Ok(mut s) = dir.read_status() {
            s.state = if e.downcast_ref::<StoppedExperiment>().is_some()
                || e.downcast_ref::<eval_cmd::Stopped>().is_some()
            {
                RunState::Stopped
            } else {
                s.error = Some(format!("{e:#}"));
                RunState::Failed
            };
            s.updated_unix_s = crate::train::run::unix_now();
            let _ = dir.write_status(&s);
        }
        dir.log(&format!("ended: {e:#}"));
    }
}

/// `experiment resume NAME [--detach]`.
///
/// # Errors
/// As [`run`].
pub fn resume(settings: &Settings, name: &str, detach: bool, out: &mut dyn Write) -> Result<()> {
    let dir = find(settings, name)?;
    start(settings, &dir, detach, out)
}

/// `experiment worker DIR`: the background experiment.
///
/// # Errors
/// As [`run`].
pub fn worker(settings: &Settings, dir: &Path) -> Result<()> {
    let _ = rustix::process::setsid();
    let dir = ExperimentDir {
        path: dir.to_path_buf(),
    };
    let result = run_in(settings, &dir, &mut std::io::sink());
    finish(&dir, &result);
    result.map(|_| ())
}

/// `experiment show NAME`: the state, and the matrix of the cells evaluated so far.
///
/// # Errors
/// No such experiment.
pub fn show(settings: &Settings, name: &str, out: &mut dyn Write) -> Result<()> {
    let dir = find(settings, name)?;
    if let Ok(s) = dir.read_status() {
        let mut state = crate::commands::train::label_of(s.state, s.pid);
        if state == "interrupted" {
            state.push_str(" (`experiment resume` goes on)");
        }
        writeln!(
            out,
            "{}: {state}, {} of {} cells{}",
            dir.path.display(),
            s.cells_done,
            s.cells,
            match (&s.cell, &s.phase) {
                (Some(c), Some(p)) if s.state.is_active() => format!(", {p} {c}"),
                _ => String::new(),
            }
        )?;
        if let Some(e) = &s.error {
            writeln!(out, "error: {e}")?;
        }
    }
    match read_json::<Plan>(&dir.file("plan.json")) {
        Ok(plan) => write!(out, "{}", markdown(&matrix_of(&dir, &plan)?))?,
        Err(_) => writeln!(out, "no plan yet")?,
    }
    Ok(())
}

/// `experiment stop NAME`: SIGTERM to the worker; a training cell checkpoints, an
/// evaluation keeps its finished items.
///
/// # Errors
/// No such experiment, or it is not running.
pub fn stop(settings: &Settings, name: &str, out: &mut dyn Write) -> Result<()> {
    let dir = find(settings, name)?;
    let s = dir.read_status()?;
    if !crate::commands::train::process_alive(s.pid)
        || !matches!(s.state, RunState::Queued | RunState::Running)
    {
        bail!("experiment {} is not running", dir.path.display());
    }
    let pid = i32::try_from(s.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("status.json: pid is not a process id")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    writeln!(out, "asked the experiment (pid {}) to stop", s.pid)?;
    Ok(())
}
