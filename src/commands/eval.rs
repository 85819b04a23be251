//! `bioinstruct eval run|show|fetch`: the base model and tuned adapters scored on
//! benchmarks, per task and task group, with the results cached item by item.

use crate::commands::chat::load_model;
use crate::config::Settings;
use crate::eval::cache::{CacheKey, ResultCache};
use crate::eval::job::{self, EvalStatus, Job, JobDir};
use crate::eval::remote::Endpoint;
use crate::eval::report::{self, ModelEntry, Scored, TaskResults};
use crate::eval::score::{self, EvalModel, LocalModel, Outcome, PromptStyle, Request};
use crate::eval::{fetch, tasks, Mode, Scorer, Task};
use crate::model::lora::Lora;
use crate::model::LoadedModel;
use crate::selfinstruct::teacher::Teacher;
use crate::train::config::TrainConfig;
use crate::train::data::PromptFormat;
use crate::train::run::RunDir;
use crate::train::run::RunState;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What `eval run` was asked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunArgs {
    /// Task names, in order.
    pub tasks: Vec<String>,
    /// `PATH` (for the task at the same position) or `TASK=PATH`.
    pub data: Vec<String>,
    /// The mode for every task (default: each task's own).
    pub mode: Option<Mode>,
    /// Adapters: run ids, run folders, `final/` or `checkpoint-N/` folders, PEFT folders.
    pub adapters: Vec<String>,
    /// Only the first N items of each task, in file order (after `skip`).
    pub limit: Option<usize>,
    /// Leave out the first N items of each task, in file order.
    pub skip: Option<usize>,
    /// The output folder (default: `<data>/evals/<time>`).
    pub out: Option<PathBuf>,
    /// The most tokens a generated answer may have (default: the task's).
    pub max_new_tokens: Option<usize>,
    /// A teacher that scores each generated text answer 1-10 against the reference.
    pub judge: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
    /// Evaluate models an OpenAI-compatible server serves (`bioinstruct serve`) instead of
    /// loading them: its URL.
    pub endpoint: Option<String>,
    /// With `endpoint`: the served models to evaluate, by id (the base is always evaluated
    /// first, as the reference of the differences).
    pub models: Vec<String>,
    /// With `endpoint`: the environment variable holding its API key.
    pub api_key_env: Option<String>,
}

/// One model under evaluation.
struct Candidate {
    entry: ModelEntry,
    model: Box<dyn EvalModel>,
    /// What tells this model's results from others' of the same base: SHA-256 of its
    /// adapter (empty for the base), or the served model's key.
    adapter_hash: String,
}

/// Where task `name`'s items come from, and the ids to keep (PubMedQA's test split).
fn data_path(
    settings: &Settings,
    name: &str,
    given: Option<PathBuf>,
    offline: bool,
) -> Result<(PathBuf, Option<std::collections::HashSet<String>>)> {
    if let Some(p) = given {
        return Ok((p, None));
    }
    let pin = fetch::default_file(name)?;
    let cache = &settings.workspace.cache_dir;
    let mut progress = |_: &str, _: u64, _: u64| {};
    let path = fetch::ensure(cache, name, &pin, offline, &mut progress)?;
    if name == "pubmedqa" {
        let ids = fetch::ensure(
            cache,
            name,
            &fetch::PUBMEDQA_FILES[1],
            offline,
            &mut progress,
        )?;
        return Ok((path, Some(fetch::pubmedqa_test_ids(&ids)?)));
    }
    Ok((path, None))
}

/// Pairs `--data` values with tasks: `TASK=PATH`, or a plain path for the task at the same
/// position.
fn pair_data(tasks: &[String], data: &[String]) -> Result<Vec<Option<PathBuf>>> {
    let mut out = vec![None; tasks.len()];
    for (i, d) in data.iter().enumerate() {
        match d.split_once('=') {
            Some((task, path)) if tasks.iter().any(|t| t == task) => {
                let at = tasks.iter().position(|t| t == task).unwrap_or(0);
                out[at] = Some(PathBuf::from(path));
            }
            _ if i < tasks.len() => out[i] = Some(PathBuf::from(d)),
            _ => bail!("--data {d:?}: more --data than --task; name the task as --data TASK=PATH"),
        }
    }
    Ok(out)
}

/// Reads every task, applying `--limit`.
fn load_tasks(settings: &Settings, args: &RunArgs) -> Result<Vec<Task>> {
    if args.tasks.is_empty() {
        bail!(
            "name at least one --task ({}, or jsonl with --data FILE)",
            tasks::BUILTIN.join(", ")
        );
    }
    let offline = settings.config.model.offline || crate::model::source::offline_from_env();
    let data = pair_data(&args.tasks, &args.data)?;
    let mut out = Vec::new();
    for (name, given) in args.tasks.iter().zip(data) {
        if !tasks::BUILTIN.contains(&name.as_str()) && name != "jsonl" {
            return Err(tasks::unknown_task(name).into());
        }
        if name == "jsonl" && given.is_none() {
            bail!("task jsonl needs --data FILE (your own records with group and metric)");
        }
        let (path, keep) = data_path(settings, name, given, offline)?;
        let mut task = tasks::load(name, &path)?;
        if let Some(keep) = keep {
            task.items.retain(|i| keep.contains(&i.id));
        }
        if let Some(n) = args.skip {
            task.items.drain(..n.min(task.items.len()));
        }
        if let Some(n) = args.limit {
            task.items.truncate(n);
        }
        if task.items.is_empty() {
            bail!("{}: task {name} has no item", path.display());
        }
        if out.iter().any(|t: &Task| t.name == task.name) {
            bail!("task {} is named twice", task.name);
        }
        out.push(task);
    }
    Ok(out)
}

/// An adapter argument as a folder holding `adapter_config.json`.
pub fn resolve_adapter(settings: &Settings, arg: &str) -> Result<PathBuf> {
    let runs = crate::commands::train::runs_root(settings, None);
    for candidate in [PathBuf::from(arg), runs.join(arg)] {
        if candidate.join("adapter_config.json").is_file() {
            return Ok(candidate);
        }
        if candidate
            .join("final")
            .join("adapter_config.json")
            .is_file()
        {
            return Ok(candidate.join("final"));
        }
        let run = RunDir {
            path: candidate.clone(),
        };
        if let Some((_, latest)) = run.latest_checkpoint() {
            if latest.join("adapter_config.json").is_file() {
                return Ok(latest);
            }
        }
    }
    bail!(
        "no adapter {arg:?}: not a PEFT folder (adapter_config.json), a run folder with final/ or checkpoint-N/, nor a run id under {}",
        runs.display()
    )
}

/// `RUN/final`, `RUN/checkpoint-N`, or the folder's name.
pub fn adapter_label(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let parent = dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    match parent {
        Some(p) if name == "final" || name.starts_with("checkpoint-") => format!("{p}/{name}"),
        _ => name,
    }
}

/// The prompt format the adapter's run trained with (its run folder's `config.toml`), else
/// the model's chat template.
fn adapter_style(dir: &Path, chat: &PromptStyle) -> PromptStyle {
    if adapter_trained_on_alpaca(dir) {
        PromptStyle::Alpaca
    } else {
        chat.clone()
    }
}

/// Whether the run the adapter in `dir` came from (its parent's `config.toml`) trained on
/// Alpaca-format prompts; `false` when there is no readable run config.
pub fn adapter_trained_on_alpaca(dir: &Path) -> bool {
    let config = dir.parent().map(|p| p.join("config.toml"));
    config
        .and_then(|c| TrainConfig::from_file(&c).ok())
        .is_some_and(|c| c.data.format == PromptFormat::Alpaca)
}

/// Bumped whenever a change to the forward pass, the tokenizer or the scoring makes earlier
/// cached results stale (1: the first; 2: transformers 5's `rope_parameters` read; 3: Q4_1
/// prompts multiply dequantized weights in f32, see [`crate::model::q4_1`]; 4: a decode
/// step's attention reads the cache in one AVX-512 pass, [`crate::model::attn512`], so
/// generated replies can differ in a token).
const SCORING_VERSION: u32 = 4;

/// What identifies the base model's weights: its files with sizes and modification times,
/// how GGUF blocks are computed, the device.
fn model_key(loaded: &LoadedModel, settings: &Settings) -> String {
    let mut files = vec![loaded.source.clone()];
    if loaded.source.is_dir() {
        files = std::fs::read_dir(&loaded.source)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|x| x == "safetensors" || x == "json")
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
    }
    let parts: Vec<String> = files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{len}:{modified}", f.display())
        })
        .collect();
    let m = &settings.config.model;
    format!(
        "scoring {SCORING_VERSION}|{}|gguf_compute={:?}|device={}",
        parts.join(","),
        m.gguf_compute,
        m.device
    )
}

fn adapter_hash(dir: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        let path = dir.join(name);
        bytes.extend(std::fs::read(&path).with_context(|| path.display().to_string())?);
    }
    Ok(crate::eval::sha256_hex(&bytes))
}

/// The models to evaluate, the base first, and the cache's key for the base.
fn load_candidates(settings: &Settings, args: &RunArgs) -> Result<(Vec<Candidate>, String)> {
    match &args.endpoint {
        Some(url) => {
            if !args.adapters.is_empty() {
                bail!("--adapter loads adapters here; with --endpoint, name served models with --model");
            }
            served_candidates(url, &args.models, args.api_key_env.as_deref())
        }
        None => {
            if !args.models.is_empty() {
                bail!("--model names served models: it needs --endpoint URL");
            }
            let candidates = local_candidates(settings, &args.adapters)?;
            let key = model_key(&candidates.0, settings);
            Ok((candidates.1, key))
        }
    }
}

/// The served models `labels` name at `url`, the base first (see [`Endpoint::pick`]).
fn served_candidates(
    url: &str,
    labels: &[String],
    api_key_env: Option<&str>,
) -> Result<(Vec<Candidate>, String)> {
    let api_key = match api_key_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("--api-key-env {var}: the variable is not set (it holds the server's API key)")
        })?),
        None => None,
    };
    let endpoint = Endpoint::new(url, api_key)?;
    let picked = endpoint.pick(labels)?;
    let base_key = format!("scoring {SCORING_VERSION}|{}", picked[0].key());
    let base_id = picked[0].info.id.clone();
    let candidates = picked
        .into_iter()
        .enumerate()
        .map(|(i, m)| Candidate {
            entry: ModelEntry {
                label: if i == 0 {
                    "base".into()
                } else {
                    m.info.id.clone()
                },
                model: format!("{base_id} at {}", endpoint.url()),
                adapter: (i > 0).then(|| {
                    m.info
                        .root
                        .clone()
                        .unwrap_or_else(|| format!("{} at {}", m.info.id, endpoint.url()))
                }),
                prompt: m.style_name(),
            },
            adapter_hash: if i == 0 { String::new() } else { m.key() },
            model: Box::new(m),
        })
        .collect();
    Ok((candidates, base_key))
}

/// The base model loaded here and each adapter in a copy of it (the weights shared).
fn local_candidates(
    settings: &Settings,
    adapters: &[String],
) -> Result<(LoadedModel, Vec<Candidate>)> {
    let base = load_model(settings)?;
    let chat = PromptStyle::Chat(base.template(None)?);
    let spec = settings.config.model.base.clone();
    let mut out = vec![Candidate {
        entry: ModelEntry {
            label: "base".into(),
            model: spec.clone(),
            adapter: None,
            prompt: chat.name(),
        },
        model: Box::new(LocalModel {
            loaded: base.clone(),
            style: chat.clone(),
        }),
        adapter_hash: String::new(),
    }];
    for arg in adapters {
        let dir = resolve_adapter(settings, arg)?;
        let mut loaded = base.clone();
        Lora::load_peft(&mut loaded.model, &dir).with_context(|| {
            format!(
                "adapter {} does not fit the base model {} (an adapter for another base model?)",
                dir.display(),
                base.source.display()
            )
        })?;
        let mut label = adapter_label(&dir);
        while out.iter().any(|c| c.entry.label == label) {
            label.push('\'');
        }
        let style = adapter_style(&dir, &chat);
        out.push(Candidate {
            entry: ModelEntry {
                label,
                model: spec.clone(),
                adapter: Some(dir.display().to_string()),
                prompt: style.name(),
            },
            adapter_hash: adapter_hash(&dir)?,
            model: Box::new(LocalModel { loaded, style }),
        });
    }
    Ok((base, out))
}

/// The judge's prompt for one answer.
fn judge_prompt(task: &Task, item: &crate::eval::Item, answer: &str) -> String {
    let reference = item.gold.reference();
    format!(
        "You are grading an answer to a clinical writing task against a reference written by a clinician.\n\nTask: {}\n\nReference:\n{}\n\nAnswer:\n{}\n\nRate the answer from 1 (useless) to 10 (as good as the reference) for correctness, completeness and clinical style. Reply with the number first, then one sentence saying why. (Task {}.)",
        item.instruction,
        reference.as_str().unwrap_or_default(),
        answer.trim(),
        task.name
    )
}

/// The first whole number from 1 to 10 in a judge's reply.
pub fn judge_score(words: &str) -> Option<f64> {
    words
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse::<u32>().ok())
        .find(|n| (1..=10).contains(n))
        .map(f64::from)
}

/// The cache file of one model's results on one task: `mode` is the scoring mode, or the
/// mode plus the judge's name for judgments. The task's file is named by its canonical path,
/// so one file reached by two paths (`../shared/x.json` from the checkout, an experiment's
/// `../../../shared/x.json` from its config's folder) shares one cache.
fn cache_key(base_key: &str, c: &Candidate, task: &Task, mode: &str) -> CacheKey {
    let source = std::fs::canonicalize(&task.source).unwrap_or_else(|_| task.source.clone());
    CacheKey {
        model: base_key.to_string(),
        adapter: c.adapter_hash.clone(),
        prompt_style: c.model.style_name(),
        task: format!("{}@{}", task.name, source.display()),
        mode: mode.to_string(),
    }
}

/// One unit of work: an item of a task for a model (or its judgment).
struct Work {
    model: usize,
    task: usize,
    item: usize,
    request: Request,
    hash: String,
}

/// How far an evaluation is, as [`run_with`] reports it after each item.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Items done (computed in this attempt plus found in the cache).
    pub done: usize,
    /// Items in all.
    pub total: usize,
    /// Of `done`, from the cache.
    pub cached: usize,
    /// Items computed per second in this attempt.
    pub items_per_s: f64,
    /// Seconds to the end at that speed.
    pub eta_s: f64,
    /// `TASK · MODEL` of the item being computed next.
    pub current: Option<String>,
}

/// The error [`run`] ends with when stopped by Ctrl-C or SIGTERM before every item was
/// computed (what was computed is in the cache).
#[derive(Debug, thiserror::Error)]
#[error("stopped after {computed} of {to_compute} items to compute (every finished item is kept in {}); run the same command again to continue", cache.display())]
pub struct Stopped {
    /// Items computed before the stop.
    pub computed: usize,
    /// Items that were to be computed.
    pub to_compute: usize,
    /// The cache folder.
    pub cache: PathBuf,
}

/// Runs `eval run`.
///
/// # Errors
/// Bad data (file, line or item, and field named), an unknown task or mode, a model or
/// adapter that cannot load, a cache that cannot be written, or a stop by Ctrl-C or SIGTERM
/// ([`Stopped`]: what was computed is kept; the same command continues).
pub fn run(settings: &Settings, args: &RunArgs, out: &mut dyn Write) -> Result<()> {
    run_with(settings, args, out, &mut |_| {}).map(|_| ())
}

/// As [`run`], telling `progress` how far it is before the first item and after each;
/// returns the report's folder.
///
/// # Errors
/// As [`run`].
pub fn run_with(
    settings: &Settings,
    args: &RunArgs,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf> {
    let started = Instant::now();
    let tasks = load_tasks(settings, args)?;
    let mut modes = Vec::new();
    for t in &tasks {
        let mode = args.mode.unwrap_or_else(|| t.default_mode());
        if !t.supports(mode) {
            bail!(
                "task {} cannot be scored by {}: it has no choices (use --mode generate)",
                t.name,
                mode.as_str()
            );
        }
        modes.push(mode);
    }
    let (candidates, base_key) = load_candidates(settings, args)?;
    let judge: Option<Arc<dyn Teacher>> = match &args.judge {
        Some(name) => Some(crate::commands::generate::open_teacher(settings, name, None, 0)?.0),
        None => None,
    };
    let cache_dir = settings.workspace.data_dir.join("eval-cache");

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }

    // Caches and requests; what is missing.
    let mut caches: Vec<Vec<ResultCache>> = Vec::new();
    let mut outcomes: Vec<Vec<Vec<Option<Outcome>>>> = Vec::new();
    let mut work = Vec::new();
    let mut total_items = 0;
    for (mi, c) in candidates.iter().enumerate() {
        let mut row = Vec::new();
        let mut got = Vec::new();
        for (ti, (task, mode)) in tasks.iter().zip(&modes).enumerate() {
            let key = cache_key(&base_key, c, task, mode.as_str());
            let cache = ResultCache::open(&cache_dir, &key)?;
            let max_new = args.max_new_tokens.unwrap_or(task.max_new_tokens);
            let mut have = Vec::with_capacity(task.items.len());
            for (ii, item) in task.items.iter().enumerate() {
                total_items += 1;
                let request = score::prepare(c.model.as_ref(), task, item, *mode, max_new)?;
                let hash = request.hash();
                match cache.get(&item.id, &hash) {
                    Some(o) => have.push(Some(o.clone())),
                    None => {
                        have.push(None);
                        work.push(Work {
                            model: mi,
                            task: ti,
                            item: ii,
                            request,
                            hash,
                        });
                    }
                }
            }
            row.push(cache);
            got.push(have);
        }
        caches.push(row);
        outcomes.push(got);
    }
    let cached = total_items - work.len();
    writeln!(
        out,
        "{} tasks × {} models: {total_items} items, {cached} from the cache, {} to compute",
        tasks.len(),
        candidates.len(),
        work.len()
    )?;

    let bar = if args.progress_bar {
        indicatif::ProgressBar::new(work.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} items {per_sec} {elapsed}<{eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let compute_start = Instant::now();
    let mut computed = 0;
    let mut report_progress = |computed: usize, current: Option<String>| {
        let elapsed = compute_start.elapsed().as_secs_f64();
        let items_per_s = if elapsed > 0.0 && computed > 0 {
            computed as f64 / elapsed
        } else {
            0.0
        };
        let left = work.len() - computed;
        progress(&Progress {
            done: cached + computed,
            total: total_items,
            cached,
            items_per_s,
            eta_s: if items_per_s > 0.0 {
                left as f64 / items_per_s
            } else {
                0.0
            },
            current,
        });
    };
    for w in &work {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let c = &candidates[w.model];
        let task = &tasks[w.task];
        let current = format!("{} · {}", task.name, c.entry.label);
        report_progress(computed, Some(current.clone()));
        bar.set_message(current);
        let outcome = c.model.run(&w.request, &stop)?;
        if stop.load(Ordering::Relaxed) {
            break; // a generation cut short is not a result
        }
        caches[w.model][w.task].put(&task.items[w.item].id, &w.hash, outcome.clone())?;
        outcomes[w.model][w.task][w.item] = Some(outcome);
        computed += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    report_progress(computed, None);
    for cache in caches.iter().flatten() {
        cache.sync()?;
    }
    if computed < work.len() {
        return Err(Stopped {
            computed,
            to_compute: work.len(),
            cache: cache_dir,
        }
        .into());
    }
    let compute_s = compute_start.elapsed().as_secs_f64();

    // Judgments of generated text answers.
    let mut judgments: Vec<Vec<Vec<Option<String>>>> = Vec::new();
    if let Some(teacher) = &judge {
        judgments = judge_all(
            teacher.as_ref(),
            &candidates,
            &tasks,
            &modes,
            &outcomes,
            &base_key,
            &cache_dir,
            &stop,
        )?;
    }

    let mut results = Vec::new();
    for (ti, (task, mode)) in tasks.iter().zip(&modes).enumerate() {
        let mut scored = Vec::new();
        for (mi, per_model) in outcomes.iter().enumerate() {
            let mut stats = Vec::new();
            let mut lines = Vec::new();
            for (ii, item) in task.items.iter().enumerate() {
                let Some(o) = &per_model[ti][ii] else {
                    bail!("item {} of {} has no result", item.id, task.name);
                };
                let (mut s, mut line) = report::score_item(task, *mode, item, o);
                if let Some(words) = judgments
                    .get(mi)
                    .and_then(|m| m.get(ti))
                    .and_then(|t| t.get(ii))
                    .cloned()
                    .flatten()
                {
                    let score = judge_score(&words);
                    if let report::ItemStats::Rouge(_, j) = &mut s {
                        *j = Some(score.unwrap_or(1.0));
                    }
                    line.insert(
                        "judge".into(),
                        serde_json::json!({"score": score, "words": words}),
                    );
                }
                stats.push(s);
                lines.push(line);
            }
            scored.push(Scored { stats, lines });
        }
        results.push(TaskResults {
            task,
            mode: *mode,
            scored,
        });
    }
    let entries: Vec<ModelEntry> = candidates.iter().map(|c| c.entry.clone()).collect();
    let report = report::build(entries, &results);
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => settings.workspace.data_dir.join("evals").join(
            time::OffsetDateTime::now_local()
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
                .format(
                    &time::format_description::parse_borrowed::<2>(
                        "[year][month][day]-[hour][minute][second]",
                    )
                    .context("time format")?,
                )
                .context("formatting the time")?,
        ),
    };
    report::write(&dir, &report, &results)?;
    write!(out, "{}", report::markdown(&report))?;
    let rate = if compute_s > 0.0 {
        computed as f64 / compute_s
    } else {
        0.0
    };
    writeln!(
        out,
        "computed {computed} items in {compute_s:.1} s ({rate:.2} items/s), {cached} from the cache; {:.1} s in all",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "wrote {}", dir.display())?;
    Ok(dir)
}

/// Asks the judge about every generated text answer (ROUGE tasks), cached like the items.
#[allow(clippy::too_many_arguments)]
fn judge_all(
    teacher: &dyn Teacher,
    candidates: &[Candidate],
    tasks: &[Task],
    modes: &[Mode],
    outcomes: &[Vec<Vec<Option<Outcome>>>],
    base_key: &str,
    cache_dir: &Path,
    stop: &AtomicBool,
) -> Result<Vec<Vec<Vec<Option<String>>>>> {
    let judge_name = teacher.name();
    let mut all = Vec::new();
    for (mi, c) in candidates.iter().enumerate() {
        let mut per_task = Vec::new();
        for (ti, (task, mode)) in tasks.iter().zip(modes).enumerate() {
            if task.scorer != Scorer::Rouge {
                per_task.push(vec![None; task.items.len()]);
                continue;
            }
            let key = cache_key(
                base_key,
                c,
                task,
                &format!("{}+judge:{judge_name}", mode.as_str()),
            );
            let mut cache = ResultCache::open(cache_dir, &key)?;
            let mut words = Vec::new();
            for (ii, item) in task.items.iter().enumerate() {
                let answer = outcomes[mi][ti][ii].as_ref().map_or("", |o| o.raw.as_str());
                let prompt = judge_prompt(task, item, answer);
                let hash = crate::eval::sha256_hex(prompt.as_bytes());
                if let Some(o) = cache.get(&item.id, &hash) {
                    words.push(Some(o.raw.clone()));
                    continue;
                }
                if stop.load(Ordering::Relaxed) {
                    bail!("stopped while judging; run the same command again to continue");
                }
                let reply = teacher
                    .complete(&prompt, 64, 0.0, 1.0, &[])
                    .with_context(|| {
                        format!("judge {judge_name}, item {} of {}", item.id, task.name)
                    })?;
                let o = Outcome {
                    raw: reply.text.clone(),
                    loglikelihoods: Vec::new(),
                    is_greedy: Vec::new(),
                    prompt_tokens: 0,
                    generated_tokens: 0,
                    truncated_tokens: 0,
                };
                cache.put(&item.id, &hash, o)?;
                words.push(Some(reply.text));
            }
            per_task.push(words);
        }
        all.push(per_task);
    }
    Ok(all)
}

/// `eval show DIR`: the report's tables.
///
/// # Errors
/// The folder has no readable `report.json`.
pub fn show(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let report = report::read(dir)?;
    write!(out, "{}", report::markdown(&report))?;
    Ok(())
}

/// `eval fetch NAME|all`: downloads the task's pinned files into the cache.
///
/// # Errors
/// An unknown task, offline mode with files missing, or a failed or mismatched download.
pub fn fetch_files(settings: &Settings, name: &str, out: &mut dyn Write) -> Result<()> {
    let names: Vec<&str> = if name == "all" {
        tasks::BUILTIN.to_vec()
    } else {
        vec![name]
    };
    let offline = settings.config.model.offline || crate::model::source::offline_from_env();
    for task in names {
        for pin in fetch::files(task)? {
            let bar = indicatif::ProgressBar::new(pin.bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(pin.file_name());
            let path = fetch::ensure(
                &settings.workspace.cache_dir,
                task,
                pin,
                offline,
                &mut |_, done, _| bar.set_position(done),
            )?;
            bar.finish_and_clear();
            writeln!(
                out,
                "{task}: {} ({} bytes, SHA-256 {})",
                path.display(),
                pin.bytes,
                pin.sha256
            )?;
        }
    }
    Ok(())
}

/// `<data dir>/evals`, where evaluation folders go by default.
pub fn evals_root(settings: &Settings) -> PathBuf {
    settings.workspace.data_dir.join("evals")
}

/// The [`Job`] `args` describe under `settings`, with every path made absolute and every
/// adapter resolved to its folder (so the worker needs neither the caller's folder nor its
/// runs).
///
/// # Errors
/// An adapter that cannot be found, a path that cannot be made absolute.
pub fn job_of(settings: &Settings, args: &RunArgs) -> Result<Job> {
    let mut data = Vec::new();
    for (task, path) in args.tasks.iter().zip(pair_data(&args.tasks, &args.data)?) {
        if let Some(p) = path {
            data.push(format!("{task}={}", std::path::absolute(&p)?.display()));
        }
    }
    let mut adapters = Vec::new();
    for a in &args.adapters {
        adapters.push(
            std::path::absolute(resolve_adapter(settings, a)?)?
                .display()
                .to_string(),
        );
    }
    let model = &settings.config.model;
    let base = Path::new(&model.base);
    Ok(Job {
        tasks: args.tasks.clone(),
        data,
        mode: args.mode,
        adapters,
        limit: args.limit,
        skip: args.skip,
        max_new_tokens: args.max_new_tokens,
        model: if base.exists() {
            std::path::absolute(base)?.display().to_string()
        } else {
            model.base.clone()
        },
        offline: model.offline,
        endpoint: args.endpoint.clone(),
        models: args.models.clone(),
        api_key_env: args.api_key_env.clone(),
    })
}

/// The arguments and settings a [`Job`] runs with.
fn args_of(settings: &Settings, job: &Job, out: &Path) -> (Settings, RunArgs) {
    let mut settings = settings.clone();
    settings.config.model.base = job.model.clone();
    settings.config.model.offline |= job.offline;
    let args = RunArgs {
        tasks: job.tasks.clone(),
        data: job.data.clone(),
        mode: job.mode,
        adapters: job.adapters.clone(),
        limit: job.limit,
        skip: job.skip,
        out: Some(out.to_path_buf()),
        max_new_tokens: job.max_new_tokens,
        judge: None,
        progress_bar: false,
        endpoint: job.endpoint.clone(),
        models: job.models.clone(),
        api_key_env: job.api_key_env.clone(),
    };
    (settings, args)
}

/// Starts `job` in the background in `dir` (created; `<data dir>/evals/<date-time>` when
/// `None`): writes `job.json` and a queued `status.json`, then starts `bioinstruct eval worker
/// DIR` in a session of its own, which outlives the terminal and the workbench.
///
/// # Errors
/// The folder already holds a job that is running, or it cannot be written, or the worker
/// cannot start.
pub fn start_detached(settings: &Settings, job: &Job, dir: Option<PathBuf>) -> Result<JobDir> {
    let path = match dir {
        Some(d) => d,
        None => {
            let id = crate::train::run::run_id("eval");
            let root = evals_root(settings);
            let mut path = root.join(&id);
            let mut n = 2;
            while path.exists() {
                path = root.join(format!("{id}-{n}"));
                n += 1;
            }
            path
        }
    };
    let jobdir = JobDir { path };
    if let Ok(status) = jobdir.read_status() {
        if status.label() == "running" || status.label() == "queued" {
            bail!(
                "{} is already evaluating (pid {}); stop it first",
                jobdir.path.display(),
                status.pid
            );
        }
    }
    std::fs::create_dir_all(&jobdir.path).with_context(|| jobdir.path.display().to_string())?;
    jobdir.write_job(job)?;
    let mut status = EvalStatus::queued(std::process::id());
    jobdir.write_status(&status)?;
    let pid = crate::commands::train::spawn_worker(
        settings,
        &["eval".as_ref(), "worker".as_ref(), jobdir.path.as_os_str()],
        &jobdir.log_path(),
        "the background evaluation",
    )?;
    status.pid = pid;
    // The worker may have written already; only a status still queued under us is updated.
    if jobdir
        .read_status()
        .map(|s| s.state == RunState::Queued && s.pid == std::process::id())
        .unwrap_or(false)
    {
        jobdir.write_status(&status)?;
    }
    Ok(jobdir)
}

/// `eval worker DIR`: the background evaluation of a job folder. Leaves the caller's
/// session, runs the job (computing only what the cache lacks) and keeps `status.json`
/// current: `running` with progress, then `finished`, `stopped` (SIGTERM) or `failed`.
///
/// # Errors
/// No job in the folder, or the evaluation failed or was stopped.
pub fn worker(settings: &Settings, dir: &Path) -> Result<()> {
    let _ = rustix::process::setsid();
    let jobdir = JobDir {
        path: dir.to_path_buf(),
    };
    let job = jobdir.read_job()?;
    let pid = std::process::id();
    let mut status = EvalStatus::queued(pid);
    status.state = RunState::Running;
    jobdir.write_status(&status)?;
    let _ = jobdir.log(&format!("evaluating (pid {pid})"));
    let (settings, args) = args_of(settings, &job, &jobdir.path);
    let mut last_write = Instant::now() - std::time::Duration::from_secs(1);
    let mut log = Vec::new();
    let result = run_with(&settings, &args, &mut log, &mut |p| {
        status.done = p.done;
        status.total = p.total;
        status.cached = p.cached;
        status.items_per_s = p.items_per_s;
        status.eta_s = p.eta_s;
        status.current = p.current.clone();
        status.updated_unix_s = crate::train::run::unix_now();
        if last_write.elapsed().as_secs_f64() >= 0.5 || p.current.is_none() {
            last_write = Instant::now();
            let _ = jobdir.write_status(&status);
        }
    });
    let _ = jobdir.log(String::from_utf8_lossy(&log).trim_end());
    status.updated_unix_s = crate::train::run::unix_now();
    status.current = None;
    match &result {
        Ok(_) => {
            status.state = RunState::Finished;
            status.eta_s = 0.0;
            let _ = jobdir.log("finished");
        }
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            status.state = RunState::Stopped;
            let _ = jobdir.log(&format!("{e:#}"));
        }
        Err(e) => {
            status.state = RunState::Failed;
            status.error = Some(format!("{e:#}"));
            let _ = jobdir.log(&format!("failed: {e:#}"));
        }
    }
    jobdir.write_status(&status)?;
    result.map(|_| ())
}

/// An evaluation folder named by a path or by its id under `<data dir>/evals`.
///
/// # Errors
/// Neither holds a `job.json`.
pub fn find_job(settings: &Settings, name: &str) -> Result<JobDir> {
    for path in [PathBuf::from(name), evals_root(settings).join(name)] {
        let d = JobDir { path };
        if d.is_job() {
            return Ok(d);
        }
    }
    bail!(
        "no evaluation job {name:?}: neither {name} nor {} holds a job.json (jobs are started with `eval run --detach`)",
        evals_root(settings).join(name).display()
    )
}

/// Asks a job's worker to stop (SIGTERM): the item being computed is dropped, every finished
/// one is kept, and the job ends `stopped`.
///
/// # Errors
/// No such job, or it is not running.
pub fn stop_job(jobdir: &JobDir) -> Result<u32> {
    let status = jobdir.read_status()?;
    if !status.active() || status.label() == "interrupted" {
        bail!(
            "evaluation {} is not running (state: {})",
            jobdir.path.display(),
            status.label()
        );
    }
    let pid = i32::try_from(status.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("status.json: pid is not a process id")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("signalling evaluation pid {}", status.pid))?;
    Ok(status.pid)
}

/// `eval stop JOB [--wait]`.
///
/// # Errors
/// As [`stop_job`].
pub fn stop(settings: &Settings, name: &str, wait: bool, out: &mut dyn Write) -> Result<()> {
    let jobdir = find_job(settings, name)?;
    let pid = stop_job(&jobdir)?;
    writeln!(
        out,
        "asked the evaluation (pid {pid}) to stop; finished items are kept"
    )?;
    if wait {
        while crate::commands::train::process_alive(pid) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        writeln!(out, "evaluation is {}", jobdir.read_status()?.label())?;
    }
    Ok(())
}

/// `eval resume JOB [--detach]`: continues a stopped, failed or interrupted job (the cache
/// holds what it computed), in the foreground or in the background.
///
/// # Errors
/// No such job, it is still running, or the evaluation fails.
pub fn resume(settings: &Settings, name: &str, detach: bool, out: &mut dyn Write) -> Result<()> {
    let jobdir = find_job(settings, name)?;
    let job = jobdir.read_job()?;
    if detach {
        let d = start_detached(settings, &job, Some(jobdir.path.clone()))?;
        writeln!(out, "evaluating in the background: {}", d.path.display())?;
        return Ok(());
    }
    if let Ok(s) = jobdir.read_status() {
        if s.label() == "running" || s.label() == "queued" {
            bail!(
                "{} is already evaluating (pid {})",
                jobdir.path.display(),
                s.pid
            );
        }
    }
    let (settings, mut args) = args_of(settings, &job, &jobdir.path);
    args.progress_bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
    run_with(&settings, &args, out, &mut |_| {})?;
    let mut status = jobdir
        .read_status()
        .unwrap_or_else(|_| EvalStatus::queued(0));
    status.state = RunState::Finished;
    status.pid = std::process::id();
    status.updated_unix_s = crate::train::run::unix_now();
    jobdir.write_status(&status)?;
    Ok(())
}

/// `eval list`: every evaluation folder under `<data dir>/evals` with its state, progress and
/// the tasks and models it covers.
///
/// # Errors
/// Standard output cannot be written.
pub fn list(settings: &Settings, out: &mut dyn Write) -> Result<()> {
    let dirs = job::list(&evals_root(settings));
    if dirs.is_empty() {
        writeln!(
            out,
            "no evaluation yet in {}",
            evals_root(settings).display()
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<12} {:>11} tasks",
        "evaluation", "state", "items"
    )?;
    for d in dirs {
        let (state, items) = match d.read_status() {
            Ok(s) => (s.label(), format!("{}/{}", s.done, s.total)),
            Err(_) => ("finished".to_string(), "-".to_string()),
        };
        let tasks = match d.read_job() {
            Ok(j) => j.tasks.join(","),
            Err(_) => report::read(&d.path)
                .map(|r| r.tasks.keys().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        };
        writeln!(out, "{:<28} {state:<12} {items:>11} {tasks}", d.id())?;
    }
    Ok(())
}

/// `eval run --detach`: checks the tasks' files and the adapters, then starts the job in
/// the background ([`start_detached`]) and says where.
///
/// # Errors
/// A task that cannot be read, an adapter that cannot be found, a judge (not supported in
/// the background), or the worker cannot start.
pub fn run_detached(settings: &Settings, args: &RunArgs, out: &mut dyn Write) -> Result<()> {
    if args.judge.is_some() {
        bail!("--judge runs in the foreground only (the judge's teacher may need a terminal's credentials); drop --detach");
    }
    load_tasks(settings, args)?; // the files are checked before anything starts
    let job = job_of(settings, args)?;
    let dir = start_detached(settings, &job, args.out.clone())?;
    writeln!(
        out,
        "evaluating in the background: {}\nfollow: bioinstruct eval list · stop: bioinstruct eval stop {} · go on: bioinstruct eval resume {}",
        dir.path.display(),
        dir.id(),
        dir.id()
    )?;
    Ok(())
}
