//! From outcomes to predictions, metrics and the report: every model's metrics per task and
//! per task group (the mean of its tasks' primary metrics, as BioInstruct averages), each
//! model's difference from the base with a paired bootstrap 95% interval (Efron & Tibshirani
//! 1993; items resampled with replacement, the same resample for both models, percentile
//! interval with numpy's linear interpolation), and the relative change (difference / base).
//!
//! Files (an interface: users analyse them): `report.json`, `report.md`, and
//! `predictions/TASK/LABEL.jsonl`, one line per item.

use super::extract;
use super::metrics;
use super::score::Outcome;
use super::tasks::{Gold, Item, Scorer, Task};
use super::{EvalError, Mode};
use crate::rng::XorShift64Star;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Bootstrap resamples.
pub const RESAMPLES: usize = 1000;
/// The bootstrap's seed (each task mixes in a hash of its name).
pub const SEED: u64 = 2024;

/// What one item contributes to its task's metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemStats {
    /// A choice: the reference, the prediction, and (loglikelihood) the length-normalised
    /// prediction.
    Choice {
        /// The reference label.
        gold: String,
        /// The predicted label (`""` when generated text named none).
        pred: String,
        /// The `acc_norm` prediction.
        pred_norm: Option<String>,
    },
    /// Counts for micro precision/recall/F1.
    Counts {
        /// Matches.
        tp: usize,
        /// Predicted entities or list items.
        pred: usize,
        /// Reference entities or list items.
        gold: usize,
    },
    /// ROUGE-1, ROUGE-2, ROUGE-L F-measures, and the judge's score (1-10) when judged.
    Rouge([f64; 3], Option<f64>),
    /// Exact match.
    Exact(bool),
}

/// Items' contributions and their predictions-file lines.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Per item, in task order.
    pub stats: Vec<ItemStats>,
    /// Per item, the predictions-file line.
    pub lines: Vec<Map<String, Value>>,
}

fn argmax(values: impl Iterator<Item = f64>) -> usize {
    // numpy's argmax: the first of equal maxima.
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// An item's prediction and contribution, from its outcome.
pub fn score_item(
    task: &Task,
    mode: Mode,
    item: &Item,
    outcome: &Outcome,
) -> (ItemStats, Map<String, Value>) {
    let mut line = Map::new();
    line.insert("id".into(), Value::from(item.id.as_str()));
    let stats = match (&item.gold, task.scorer) {
        (Gold::Label(gold), Scorer::Choice) => {
            let (pred, pred_norm) = match mode {
                Mode::Loglikelihood => {
                    let lls = &outcome.loglikelihoods;
                    let acc = argmax(lls.iter().copied());
                    // lm-evaluation-harness's acc_norm: log-likelihood per character.
                    let norm = argmax(
                        lls.iter()
                            .zip(&item.choices)
                            .map(|(ll, c)| ll / c.chars().count().max(1) as f64),
                    );
                    line.insert("context".into(), json!(item.context));
                    line.insert("choices".into(), json!(item.choices));
                    line.insert("loglikelihoods".into(), json!(lls));
                    line.insert("is_greedy".into(), json!(outcome.is_greedy));
                    (
                        item.choices.get(acc).cloned().unwrap_or_default(),
                        item.choices.get(norm).cloned(),
                    )
                }
                Mode::Generate => (
                    extract::first_choice(&outcome.raw, &item.choices)
                        .unwrap_or_default()
                        .to_string(),
                    None,
                ),
            };
            line.insert("prediction".into(), Value::from(pred.as_str()));
            if let Some(n) = &pred_norm {
                line.insert("prediction_norm".into(), Value::from(n.as_str()));
            }
            ItemStats::Choice {
                gold: gold.clone(),
                pred,
                pred_norm,
            }
        }
        (Gold::Tags { tokens, tags, .. }, _) => {
            let mentions = extract::mention_list(&outcome.raw);
            let (pred_tags, unmatched) = extract::tag_mentions(tokens, &mentions, "Disease");
            let (tp, pred, gold) = metrics::entity_counts(tags, &pred_tags);
            line.insert("prediction".into(), json!(mentions));
            line.insert("tokens".into(), json!(tokens));
            line.insert("gold_tags".into(), json!(tags));
            line.insert("pred_tags".into(), json!(pred_tags));
            line.insert("unmatched".into(), json!(unmatched));
            ItemStats::Counts {
                tp,
                pred: pred + unmatched.len(),
                gold,
            }
        }
        (Gold::List(gold), _) => {
            let pred = extract::mention_list(&outcome.raw);
            let (tp, p, g) = metrics::list_counts(gold, &pred);
            line.insert("prediction".into(), json!(pred));
            ItemStats::Counts {
                tp,
                pred: p,
                gold: g,
            }
        }
        (Gold::Text(gold), Scorer::ExactMatch) => {
            let pred = outcome.raw.trim().to_string();
            let hit = metrics::normalize(&pred) == metrics::normalize(gold);
            line.insert("prediction".into(), Value::from(pred));
            ItemStats::Exact(hit)
        }
        (Gold::Text(gold) | Gold::Label(gold), _) => {
            let pred = outcome.raw.trim().to_string();
            let scores = metrics::rouge_scores(gold, &pred);
            line.insert("prediction".into(), Value::from(pred));
            line.insert("rouge1".into(), json!(scores[0]));
            line.insert("rouge2".into(), json!(scores[1]));
            line.insert("rougeL".into(), json!(scores[2]));
            ItemStats::Rouge(scores, None)
        }
    };
    line.insert("reference".into(), item.gold.reference());
    line.insert("raw".into(), Value::from(outcome.raw.as_str()));
    line.insert("prompt_tokens".into(), json!(outcome.prompt_tokens));
    line.insert("generated_tokens".into(), json!(outcome.generated_tokens));
    if outcome.truncated_tokens > 0 {
        line.insert("truncated_tokens".into(), json!(outcome.truncated_tokens));
    }
    (stats, line)
}

/// The task's metrics over the items at `indices` (every item when `None`).
pub fn metrics_of(stats: &[ItemStats], indices: Option<&[usize]>) -> BTreeMap<String, f64> {
    let all: Vec<usize>;
    let idx = match indices {
        Some(i) => i,
        None => {
            all = (0..stats.len()).collect();
            &all
        }
    };
    let picked: Vec<&ItemStats> = idx.iter().map(|&i| &stats[i]).collect();
    let mut m = BTreeMap::new();
    let n = picked.len().max(1) as f64;
    match picked.first() {
        None => {}
        Some(ItemStats::Choice { pred_norm, .. }) => {
            let (gold, pred): (Vec<&str>, Vec<&str>) = picked
                .iter()
                .filter_map(|s| match s {
                    ItemStats::Choice { gold, pred, .. } => Some((gold.as_str(), pred.as_str())),
                    _ => None,
                })
                .unzip();
            m.insert("acc".into(), metrics::accuracy(&gold, &pred));
            m.insert("macro_f1".into(), metrics::macro_f1(&gold, &pred));
            if pred_norm.is_some() {
                let right = picked
                    .iter()
                    .filter(|s| matches!(s, ItemStats::Choice { gold, pred_norm: Some(p), .. } if p == gold))
                    .count();
                m.insert("acc_norm".into(), right as f64 / n);
            }
        }
        Some(ItemStats::Counts { .. }) => {
            let (mut tp, mut pred, mut gold) = (0, 0, 0);
            for s in &picked {
                if let ItemStats::Counts {
                    tp: t,
                    pred: p,
                    gold: g,
                } = s
                {
                    tp += t;
                    pred += p;
                    gold += g;
                }
            }
            let (p, r, f) = metrics::prf(tp, pred, gold);
            m.insert("precision".into(), p);
            m.insert("recall".into(), r);
            m.insert("f1".into(), f);
        }
        Some(ItemStats::Rouge(..)) => {
            let mut sum = [0.0; 3];
            let (mut judged, mut judge_sum) = (0usize, 0.0);
            for s in &picked {
                if let ItemStats::Rouge(r, j) = s {
                    for (total, v) in sum.iter_mut().zip(r) {
                        *total += v;
                    }
                    if let Some(j) = j {
                        judged += 1;
                        judge_sum += j;
                    }
                }
            }
            for (total, name) in sum.iter().zip(["rouge1", "rouge2", "rougeL"]) {
                m.insert(name.into(), total / n);
            }
            if judged > 0 {
                m.insert("judge".into(), judge_sum / judged as f64);
            }
        }
        Some(ItemStats::Exact(_)) => {
            let hits = picked
                .iter()
                .filter(|s| matches!(s, ItemStats::Exact(true)))
                .count();
            m.insert("exact_match".into(), hits as f64 / n);
        }
    }
    m
}

/// A difference from the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Model minus base.
    pub diff: f64,
    /// The paired bootstrap 95% interval of `diff`.
    pub ci95: [f64; 2],
    /// `diff / base` (`null` when the base scored 0).
    pub relative: Option<f64>,
}

/// One model in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Its label (`base`, `RUN/final`, an adapter folder's name).
    pub label: String,
    /// The base model spec.
    pub model: String,
    /// The adapter folder, for tuned models.
    pub adapter: Option<String>,
    /// How `generate` prompts were written.
    pub prompt: String,
}

/// One task's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// `qa`, `ie`, `gen` or `other`.
    pub group: String,
    /// `loglikelihood` or `generate`.
    pub mode: String,
    /// Items scored.
    pub n: usize,
    /// The metric the group averages.
    pub primary: String,
    /// The file the items came from.
    pub source: String,
    /// Per model label, per metric.
    pub models: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per tuned model label, per metric: the difference from the base.
    pub vs_base: BTreeMap<String, BTreeMap<String, Delta>>,
}

/// One task group's results: the mean over its tasks of their primary metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Its tasks.
    pub tasks: Vec<String>,
    /// Per model label: `{"score": mean}`.
    pub models: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per tuned model label: `{"score": delta}`.
    pub vs_base: BTreeMap<String, BTreeMap<String, Delta>>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The models, the base first.
    pub models: Vec<ModelEntry>,
    /// `{"resamples", "seed", "interval"}`.
    pub bootstrap: BTreeMap<String, f64>,
    /// Per task.
    pub tasks: BTreeMap<String, TaskReport>,
    /// Per task group.
    pub groups: BTreeMap<String, GroupReport>,
}

/// numpy's `percentile` with linear interpolation, of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn interval(mut diffs: Vec<f64>) -> [f64; 2] {
    diffs.sort_by(f64::total_cmp);
    [percentile(&diffs, 0.025), percentile(&diffs, 0.975)]
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Per resample, per metric: the difference `other - base` on the same resampled items.
fn bootstrap_diffs(
    task: &str,
    base: &[ItemStats],
    other: &[ItemStats],
) -> BTreeMap<String, Vec<f64>> {
    let n = base.len();
    let mut rng = XorShift64Star::new(SEED ^ name_seed(task));
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; n];
    for _ in 0..RESAMPLES {
        for slot in idx.iter_mut() {
            *slot = (rng.next_u64() % n as u64) as usize;
        }
        let b = metrics_of(base, Some(&idx));
        let o = metrics_of(other, Some(&idx));
        for (k, v) in o {
            out.entry(k.clone())
                .or_default()
                .push(v - b.get(&k).copied().unwrap_or(0.0));
        }
    }
    out
}

fn delta(base: f64, value: f64, diffs: Vec<f64>) -> Delta {
    let diff = value - base;
    Delta {
        diff,
        ci95: interval(diffs),
        relative: (base != 0.0).then(|| diff / base),
    }
}

/// A model's primary metric on a task, and its per-resample differences from the base.
type Primary = (f64, Vec<f64>);

/// One task's scored items per model label (the base first).
pub struct TaskResults<'a> {
    /// The task.
    pub task: &'a Task,
    /// Its mode.
    pub mode: Mode,
    /// Per model, in [`Report::models`] order.
    pub scored: Vec<Scored>,
}

/// Builds the report from every task's scored items.
pub fn build(models: Vec<ModelEntry>, results: &[TaskResults]) -> Report {
    let labels: Vec<&str> = models.iter().map(|m| m.label.as_str()).collect();
    let mut tasks = BTreeMap::new();
    // group -> task -> per model: (primary value, per-resample primary differences)
    let mut per_group: BTreeMap<String, BTreeMap<String, Vec<Primary>>> = BTreeMap::new();
    for r in results {
        let primary = r.task.scorer.primary().to_string();
        let mut by_model = BTreeMap::new();
        let mut vs_base = BTreeMap::new();
        let base_stats = &r.scored[0].stats;
        let base_metrics = metrics_of(base_stats, None);
        let mut group_entry = Vec::new();
        for (label, scored) in labels.iter().zip(&r.scored) {
            let m = metrics_of(&scored.stats, None);
            let mut primary_diffs = vec![0.0; RESAMPLES];
            if *label != labels[0] {
                let diffs = bootstrap_diffs(&r.task.name, base_stats, &scored.stats);
                let mut deltas = BTreeMap::new();
                for (metric, value) in &m {
                    let d = diffs.get(metric).cloned().unwrap_or_default();
                    if *metric == primary {
                        primary_diffs = d.clone();
                    }
                    let b = base_metrics.get(metric).copied().unwrap_or(0.0);
                    deltas.insert(metric.clone(), delta(b, *value, d));
                }
                vs_base.insert(label.to_string(), deltas);
            }
            group_entry.push((m.get(&primary).copied().unwrap_or(0.0), primary_diffs));
            by_model.insert(label.to_string(), m);
        }
        per_group
            .entry(r.task.group.as_str().to_string())
            .or_default()
            .insert(r.task.name.clone(), group_entry);
        tasks.insert(
            r.task.name.clone(),
            TaskReport {
                group: r.task.group.as_str().to_string(),
                mode: r.mode.as_str().to_string(),
                n: r.task.items.len(),
                primary,
                source: r.task.source.display().to_string(),
                models: by_model,
                vs_base,
            },
        );
    }
    let mut groups = BTreeMap::new();
    for (group, task_map) in per_group {
        let k = task_map.len() as f64;
        let mut models_out = BTreeMap::new();
        let mut vs_base = BTreeMap::new();
        let base_score: f64 = task_map.values().map(|v| v[0].0).sum::<f64>() / k;
        for (i, label) in labels.iter().enumerate() {
            let score: f64 = task_map.values().map(|v| v[i].0).sum::<f64>() / k;
            models_out.insert(
                label.to_string(),
                BTreeMap::from([("score".to_string(), score)]),
            );
            if i > 0 {
                // Each task resampled on its own; the group's difference is the mean of its
                // tasks' differences, resample by resample.
                let diffs: Vec<f64> = (0..RESAMPLES)
                    .map(|r| {
                        task_map
                            .values()
                            .map(|v| v[i].1.get(r).copied().unwrap_or(0.0))
                            .sum::<f64>()
                            / k
                    })
                    .collect();
                vs_base.insert(
                    label.to_string(),
                    BTreeMap::from([("score".to_string(), delta(base_score, score, diffs))]),
                );
            }
        }
        groups.insert(
            group,
            GroupReport {
                tasks: task_map.keys().cloned().collect(),
                models: models_out,
                vs_base,
            },
        );
    }
    Report {
        models,
        bootstrap: BTreeMap::from([
            ("resamples".to_string(), RESAMPLES as f64),
            ("seed".to_string(), SEED as f64),
            ("interval".to_string(), 0.95),
        ]),
        tasks,
        groups,
    }
}

fn signed(v: f64) -> String {
    format!("{}{:.4}", if v >= 0.0 { "+" } else { "−" }, v.abs())
}

fn delta_text(d: &Delta) -> String {
    let rel = d
        .relative
        .map(|r| {
            format!(
                ", {}{:.1}%",
                if r >= 0.0 { "+" } else { "−" },
                (r * 100.0).abs()
            )
        })
        .unwrap_or_default();
    let significant = if d.ci95[0] > 0.0 || d.ci95[1] < 0.0 {
        " *"
    } else {
        ""
    };
    format!(
        "{} [{}, {}]{rel}{significant}",
        signed(d.diff),
        signed(d.ci95[0]),
        signed(d.ci95[1])
    )
}

fn table(
    out: &mut String,
    labels: &[&str],
    metrics_order: &[String],
    models: &BTreeMap<String, BTreeMap<String, f64>>,
    vs_base: &BTreeMap<String, BTreeMap<String, Delta>>,
) {
    let _ = writeln!(out, "| model | {} |", metrics_order.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(metrics_order.len()));
    for label in labels {
        let Some(m) = models.get(*label) else {
            continue;
        };
        let cells: Vec<String> = metrics_order
            .iter()
            .map(|k| {
                let v = m.get(k).map_or("–".to_string(), |v| format!("{v:.4}"));
                match vs_base.get(*label).and_then(|d| d.get(k)) {
                    Some(d) => format!("{v} ({})", delta_text(d)),
                    None => v,
                }
            })
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
}

/// The report as Markdown: a table per group and per task, each tuned model's value followed
/// by its difference from the base, the 95% interval and the relative change; `*` marks an
/// interval that excludes zero.
pub fn markdown(report: &Report) -> String {
    let labels: Vec<&str> = report.models.iter().map(|m| m.label.as_str()).collect();
    let mut out = String::from("# Evaluation report\n\n");
    for m in &report.models {
        let _ = writeln!(
            out,
            "- `{}`: {}{} (prompts: {})",
            m.label,
            m.model,
            m.adapter
                .as_deref()
                .map(|a| format!(" + adapter {a}"))
                .unwrap_or_default(),
            m.prompt
        );
    }
    let _ = writeln!(
        out,
        "\nDifferences from `base`: value (difference [paired bootstrap 95% interval, {} resamples], relative change); `*`: the interval excludes 0.\n",
        RESAMPLES
    );
    let _ = writeln!(out, "## Task groups (mean of each task's primary metric)\n");
    for (group, g) in &report.groups {
        let primaries: Vec<String> = g
            .tasks
            .iter()
            .map(|t| {
                format!(
                    "{t}: {}",
                    report.tasks.get(t).map_or("", |r| r.primary.as_str())
                )
            })
            .collect();
        let _ = writeln!(out, "### {group} ({})\n", primaries.join(", "));
        table(
            &mut out,
            &labels,
            &["score".to_string()],
            &g.models,
            &g.vs_base,
        );
        out.push('\n');
    }
    let _ = writeln!(out, "## Tasks\n");
    for (name, t) in &report.tasks {
        let _ = writeln!(out, "### {name} ({}, {}, {} items)\n", t.group, t.mode, t.n);
        let mut order: Vec<String> = t
            .models
            .values()
            .next()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        order.sort_by_key(|k| (k != &t.primary, k.clone()));
        table(&mut out, &labels, &order, &t.models, &t.vs_base);
        out.push('\n');
    }
    out
}

/// Writes `report.json`, `report.md` and `predictions/TASK/LABEL.jsonl` into `dir`
/// (each atomically).
///
/// # Errors
/// [`EvalError`] when a file cannot be written.
pub fn write(dir: &Path, report: &Report, results: &[TaskResults]) -> Result<(), EvalError> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    for r in results {
        let folder = dir.join("predictions").join(&r.task.name);
        std::fs::create_dir_all(&folder).map_err(|e| EvalError::io(&folder, e))?;
        for (model, scored) in report.models.iter().zip(&r.scored) {
            let mut text = String::new();
            for line in &scored.lines {
                text.push_str(&serde_json::to_string(line).unwrap_or_default());
                text.push('\n');
            }
            let path = folder.join(format!("{}.jsonl", file_label(&model.label)));
            crate::data::replace_atomic(&path, text.as_bytes())?;
        }
    }
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    crate::data::replace_atomic(&dir.join("report.json"), json.as_bytes())?;
    crate::data::replace_atomic(&dir.join("report.md"), markdown(report).as_bytes())?;
    Ok(())
}

/// A label as a file name: `/` becomes `__`.
pub fn file_label(label: &str) -> String {
    label.replace('/', "__")
}

/// Reads `DIR/report.json`.
///
/// # Errors
/// [`EvalError`] naming the file when it is missing or not a report.
pub fn read(dir: &Path) -> Result<Report, EvalError> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::at_line(&path, e.line(), "report", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_the_first_choice() {
        assert_eq!(argmax([-1.0, -0.5, -0.5].into_iter()), 1);
        assert_eq!(argmax([-2.0, -2.0].into_iter()), 0);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.025), 0.25);
        assert_eq!(percentile(&v, 0.975), 9.75);
    }

    #[test]
    fn a_model_equal_to_the_base_has_a_zero_interval() {
        let stats: Vec<ItemStats> = (0..20).map(|i| ItemStats::Exact(i % 3 == 0)).collect();
        let d = bootstrap_diffs("t", &stats, &stats);
        assert!(d["exact_match"].iter().all(|&x| x == 0.0));
        let better: Vec<ItemStats> = (0..20).map(|_| ItemStats::Exact(true)).collect();
        let d = interval(
            bootstrap_diffs("t", &stats, &better)
                .remove("exact_match")
                .unwrap_or_default(),
        );
        assert!(d[0] > 0.0 && d[1] <= 1.0, "{d:?}");
    }
}
