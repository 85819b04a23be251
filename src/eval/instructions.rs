//! Instruction records made from a labelled benchmark's training split, as BioInstTune-LLM
//! (Rohanian et al. 2024) made about 200,000 instructions by rephrasing existing NER,
//! relation-extraction and NLI datasets: each item becomes one record in the workspace's
//! JSONL format, with one of several phrasings of the task's instruction (item `i` takes
//! phrasing `i mod k`, so every phrasing is used evenly), the task group as its category, and
//! where it came from under `provenance`.
//!
//! The items are read by the evaluation readers ([`super::tasks`]), so a record's input is
//! exactly what evaluation shows a model. Items of the benchmark's test split are refused:
//! PubMedQA items by PMID, NCBI-disease sentences and MTS-Dialog dialogues by their text (the
//! corpora number sentences and dialogues per file, so ids do not cross files).

use super::tasks::{self, Gold, Item, Task};
use super::EvalError;
use crate::data::Instruction;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The instruction phrasings of task `name`; the first is the one evaluation asks.
///
/// # Errors
/// [`EvalError::Unknown`] for a task with no phrasings (`jsonl`, an unknown name).
pub fn phrasings(name: &str) -> Result<Vec<String>, EvalError> {
    Ok(match name {
        "pubmedqa" => vec![
            "Read the abstract and answer the question with yes, no or maybe.".into(),
            "Based only on the abstract, does the evidence answer the question with yes, no, or maybe? Reply with one word.".into(),
            "You are reviewing a PubMed abstract. Answer the research question below as yes, no or maybe.".into(),
            "Decide whether the study summarised in the abstract supports the answer yes, no or maybe to the question.".into(),
        ],
        "ncbi_disease" => vec![
            "List every disease mentioned in the sentence, as a JSON array of strings copied from the sentence. Write [] if it mentions none.".into(),
            "Extract the disease names from the sentence. Answer with a JSON array of the exact strings, in order; [] if there are none.".into(),
            "Find all mentions of diseases, disorders or syndromes in this text and return them as a JSON array of strings.".into(),
            "Tag the disease mentions in the biomedical sentence below. Output a JSON list of the mentions as they are written.".into(),
        ],
        "mts_dialog" => vec![
            // `{section}` is the section's plain name ([`tasks::mts_section_name`]).
            tasks::MTS_INSTRUCTION.into(),
            "Summarise the conversation between the doctor and the patient as the {section} section of a clinical note.".into(),
            "From the dialogue below, draft the {section} part of the visit note, in the style a clinician would write it.".into(),
            "You are a medical scribe. Write only the {section} section of the note for this encounter.".into(),
        ],
        other => {
            return Err(EvalError::Unknown(format!(
                "no instruction phrasings for task {other:?}: from-benchmark knows {}",
                tasks::BUILTIN.join(", ")
            )))
        }
    })
}

/// The seed task family a benchmark's records belong to.
fn family(name: &str) -> &'static str {
    match name {
        "pubmedqa" => "yes_no_maybe_qa",
        "ncbi_disease" => "disease_ner",
        _ => "dialogue_to_note",
    }
}

/// What identifies an item across the files of its benchmark: PubMedQA's PMID, the
/// sentence's tokens (NCBI-disease) or the dialogue with its section (MTS-Dialog), with runs
/// of whitespace collapsed.
pub fn identity(task: &str, item: &Item) -> String {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match task {
        "pubmedqa" => item.id.clone(),
        "mts_dialog" => squash(&format!("{}\n{}", item.instruction, item.input)),
        _ => squash(&item.input),
    }
}

/// The identities ([`identity`]) of the items of test-split files of task `name`, each in
/// the benchmark's own format (for PubMedQA an object keyed by PMID, as
/// `test_ground_truth.json` and `ori_pqal.json` are).
///
/// # Errors
/// [`EvalError::Data`] or [`EvalError::Io`] for a file that cannot be read as such.
pub fn test_identities(name: &str, files: &[PathBuf]) -> Result<HashSet<String>, EvalError> {
    let mut out = HashSet::new();
    for file in files {
        if name == "pubmedqa" {
            out.extend(super::fetch::pubmedqa_test_ids(file)?);
        } else {
            let task = tasks::load(name, file)?;
            out.extend(task.items.iter().map(|i| identity(name, i)));
        }
    }
    Ok(out)
}

/// The official test-split files of task `name` among its pinned files (PubMedQA's
/// `test_ground_truth.json`; NCBI-disease's `test.tsv`; both MTS-Dialog test sets).
///
/// # Errors
/// As [`super::fetch::files`].
pub fn test_split_pins(name: &str) -> Result<Vec<super::fetch::Pinned>, EvalError> {
    let pins = super::fetch::files(name)?;
    Ok(match name {
        "pubmedqa" => vec![pins[1]],
        "ncbi_disease" => vec![pins[2]],
        _ => vec![pins[2], pins[3]],
    })
}

/// How the test split was checked, for each record's provenance.
#[derive(Debug, Clone)]
pub enum TestCheck {
    /// Against these files' items.
    Against(Vec<PathBuf>, HashSet<String>),
    /// Not checked (`--no-test-check`): the caller knows the file holds no test item.
    Skipped,
}

/// The records made from `task`'s items `range` (indices in file order).
///
/// # Errors
/// [`EvalError::Data`] naming the file and the items that are in the test split (nothing is
/// made then), or an item whose record would not validate (an empty reference).
pub fn records(
    task: &Task,
    range: std::ops::Range<usize>,
    check: &TestCheck,
) -> Result<Vec<Instruction>, EvalError> {
    let name = task.name.as_str();
    let phrasings = phrasings(name)?;
    let file_sha = std::fs::read(&task.source)
        .map(|b| super::sha256_hex(&b))
        .map_err(|e| EvalError::io(&task.source, e))?;
    let end = range.end.min(task.items.len());
    let items = &task.items[range.start.min(end)..end];
    if let TestCheck::Against(files, ids) = check {
        let clashes: Vec<&str> = items
            .iter()
            .filter(|i| ids.contains(&identity(name, i)))
            .map(|i| i.id.as_str())
            .collect();
        if !clashes.is_empty() {
            let shown: Vec<&str> = clashes.iter().take(5).copied().collect();
            return Err(EvalError::Data {
                path: task.source.clone(),
                place: Some(format!(" item {}", shown.join(", item "))),
                field: "id".into(),
                problem: format!(
                    "{} item(s) are in {name}'s test split ({}): training data is never made from test items",
                    clashes.len(),
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let checked = match check {
        TestCheck::Against(files, _) => json!(files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()),
        TestCheck::Skipped => json!(false),
    };
    let mut out = Vec::with_capacity(items.len());
    for (offset, item) in items.iter().enumerate() {
        let index = range.start + offset;
        let k = index % phrasings.len();
        let instruction = if name == "mts_dialog" {
            let (before, after) = tasks::MTS_INSTRUCTION
                .split_once("{section}")
                .unwrap_or_default();
            let section = item
                .instruction
                .strip_prefix(before)
                .and_then(|s| s.strip_suffix(after))
                .unwrap_or_default();
            phrasings[k].replace("{section}", section)
        } else {
            phrasings[k].clone()
        };
        let output = match &item.gold {
            Gold::Label(s) | Gold::Text(s) => s.trim().to_string(),
            Gold::Tags { mentions, .. } | Gold::List(mentions) => {
                serde_json::to_string(mentions).unwrap_or_default()
            }
        };
        let mut provenance = Map::new();
        provenance.insert("source".into(), json!("from-benchmark"));
        provenance.insert("benchmark".into(), json!(name));
        provenance.insert("file".into(), json!(task.source.display().to_string()));
        provenance.insert("file_sha256".into(), json!(file_sha));
        provenance.insert("item".into(), json!(item.id));
        provenance.insert("index".into(), json!(index));
        provenance.insert("phrasing".into(), json!(k));
        provenance.insert("test_split_checked".into(), checked.clone());
        let mut extra = Map::new();
        extra.insert("provenance".into(), Value::Object(provenance));
        let record = Instruction {
            id: format!("{name}-{}", item.id.replace(char::is_whitespace, "_")),
            category: task.group,
            task: family(name).into(),
            instruction,
            input: item.input.clone(),
            output,
            extra,
        };
        if let Some((field, problem)) = record.problems().into_iter().next() {
            return Err(EvalError::at_item(
                &task.source,
                &item.id,
                field,
                format!("the record made from it {problem}"),
            ));
        }
        out.push(record);
    }
    Ok(out)
}

/// Reads `START..END` (either side may be empty: `..250`, `250..`), item indices in file order.
///
/// # Errors
/// [`EvalError::Unknown`] for text of another shape or `START > END`.
pub fn parse_range(text: &str) -> Result<std::ops::Range<usize>, EvalError> {
    let bad = || {
        EvalError::Unknown(format!(
            "--items {text:?}: expected START..END, e.g. 0..250"
        ))
    };
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    let a = if a.is_empty() {
        0
    } else {
        a.trim().parse().map_err(|_| bad())?
    };
    let b = if b.is_empty() {
        usize::MAX
    } else {
        b.trim().parse().map_err(|_| bad())?
    };
    if a > b {
        return Err(bad());
    }
    Ok(a..b)
}

/// Reads task `name` from `path` for [`records`].
///
/// # Errors
/// As [`tasks::load`]; [`EvalError::Unknown`] for `jsonl` (already instruction records).
pub fn load(name: &str, path: &Path) -> Result<Task, EvalError> {
    if !tasks::BUILTIN.contains(&name) {
        return Err(EvalError::Unknown(format!(
            "from-benchmark reads {}; {name:?} is not one of them",
            tasks::BUILTIN.join(", ")
        )));
    }
    tasks::load(name, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubmedqa_file(dir: &Path) -> PathBuf {
        let path = dir.join("pqal.json");
        std::fs::write(
            &path,
            r#"{"111": {"QUESTION": "Does it work?", "CONTEXTS": ["We tried it."], "final_decision": "yes"},
                "222": {"QUESTION": "Is it safe?", "CONTEXTS": ["Some harm."], "final_decision": "maybe"}}"#,
        )
        .expect("write");
        path
    }

    #[test]
    fn each_item_takes_the_next_phrasing_and_keeps_its_provenance() {
        let dir = tempfile::tempdir().expect("tmp");
        let task = load("pubmedqa", &pubmedqa_file(dir.path())).expect("task");
        let recs = records(&task, 0..usize::MAX, &TestCheck::Skipped).expect("records");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].id, "pubmedqa-111");
        assert_eq!(recs[1].output, "maybe");
        assert_ne!(recs[0].instruction, recs[1].instruction);
        assert_eq!(recs[1].extra["provenance"]["phrasing"], 1);
        assert_eq!(recs[1].extra["provenance"]["test_split_checked"], false);
    }

    #[test]
    fn a_test_split_pmid_is_refused_and_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let task = load("pubmedqa", &pubmedqa_file(dir.path())).expect("task");
        let test = dir.path().join("test_ground_truth.json");
        std::fs::write(&test, r#"{"222": "maybe", "999": "no"}"#).expect("write");
        let ids = test_identities("pubmedqa", std::slice::from_ref(&test)).expect("ids");
        let e = records(&task, 0..10, &TestCheck::Against(vec![test.clone()], ids))
            .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("item 222") && text.contains("test split"),
            "{text}"
        );
        // Only the first item: nothing of the test split.
        let ids = test_identities("pubmedqa", std::slice::from_ref(&test)).expect("ids");
        let ok = records(&task, 0..1, &TestCheck::Against(vec![test], ids)).expect("ok");
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn ranges_read_both_open_ends() {
        assert_eq!(parse_range("0..250").expect("r"), 0..250);
        assert_eq!(parse_range("250..").expect("r"), 250..usize::MAX);
        assert_eq!(parse_range("..3").expect("r"), 0..3);
        assert!(parse_range("5..2").is_err() && parse_range("7").is_err());
    }
}
