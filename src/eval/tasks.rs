//! Evaluation tasks read from their publishers' file formats, each in one task group.
//!
//! | task | group | file | scorer |
//! |---|---|---|---|
//! | `pubmedqa` | qa | PubMedQA PQA-L `ori_pqal.json` (Jin et al., EMNLP 2019) | yes/no/maybe choice |
//! | `ncbi_disease` | ie | NCBI-disease in CoNLL form (Doğan et al., 2014) | entity-level F1 |
//! | `mts_dialog` | gen | MTS-Dialog CSV (Ben Abacha et al., EACL 2023) | ROUGE-1/2/L |
//! | `jsonl` | any | the project's instruction records plus `group` and `metric` | as named |

use super::EvalError;
use crate::data::Category;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The built-in tasks (besides `jsonl`, which needs `--data`).
pub const BUILTIN: [&str; 3] = ["pubmedqa", "ncbi_disease", "mts_dialog"];

/// What an item's reference is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Gold {
    /// One of the task's choices (`yes`, `no`, `maybe`).
    Label(String),
    /// Entity mentions, with the sentence's tokens and their BIO tags.
    Tags {
        /// The gold mention strings, in sentence order.
        mentions: Vec<String>,
        /// The sentence as the corpus tokenized it.
        tokens: Vec<String>,
        /// One BIO tag per token (`B-Disease`, `I-Disease`, `O`).
        tags: Vec<String>,
    },
    /// A list of strings (`json_list_f1`).
    List(Vec<String>),
    /// Free text (ROUGE, exact match).
    Text(String),
}

impl Gold {
    /// The reference as written to the predictions file.
    pub fn reference(&self) -> serde_json::Value {
        match self {
            Gold::Label(s) | Gold::Text(s) => serde_json::Value::from(s.as_str()),
            Gold::Tags { mentions, .. } | Gold::List(mentions) => serde_json::json!(mentions),
        }
    }
}

/// How a task's predictions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// One of `choices`: `acc` (and `acc_norm` under loglikelihood), `macro_f1`.
    Choice,
    /// Entity mentions mapped onto the tokens as BIO tags: `precision`, `recall`, `f1`.
    Tags,
    /// A list of strings against the reference list (case-insensitive sets): `precision`,
    /// `recall`, `f1`.
    ListF1,
    /// Free text: `rouge1`, `rouge2`, `rougeL`.
    Rouge,
    /// Free text equal to the reference after trimming, lowercasing and collapsing spaces:
    /// `exact_match`.
    ExactMatch,
}

impl Scorer {
    /// The metric the task group averages.
    pub fn primary(self) -> &'static str {
        match self {
            Scorer::Choice => "acc",
            Scorer::Tags | Scorer::ListF1 => "f1",
            Scorer::Rouge => "rougeL",
            Scorer::ExactMatch => "exact_match",
        }
    }
}

/// One thing to ask a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique in the task (PubMedQA's PMID, the CoNLL sentence's first line, the CSV's `ID`).
    pub id: String,
    /// What the model is asked to do (`generate`).
    pub instruction: String,
    /// The material it applies to (`generate`).
    pub input: String,
    /// The text the choices continue (`loglikelihood`).
    pub context: Option<String>,
    /// The answers to choose from (choice tasks).
    pub choices: Vec<String>,
    /// The reference.
    pub gold: Gold,
}

/// A task ready to run.
#[derive(Debug, Clone)]
pub struct Task {
    /// `pubmedqa`, `ncbi_disease`, `mts_dialog`, or a `jsonl` file's stem.
    pub name: String,
    /// Its task group.
    pub group: Category,
    /// How predictions are scored.
    pub scorer: Scorer,
    /// The most tokens a `generate` answer may have.
    pub max_new_tokens: usize,
    /// The file the items came from.
    pub source: PathBuf,
    /// In file order.
    pub items: Vec<Item>,
}

impl Task {
    /// The mode used when none is asked for: loglikelihood for choice tasks, else generate.
    pub fn default_mode(&self) -> super::Mode {
        if self.scorer == Scorer::Choice {
            super::Mode::Loglikelihood
        } else {
            super::Mode::Generate
        }
    }

    /// Whether `mode` can score this task.
    pub fn supports(&self, mode: super::Mode) -> bool {
        mode == super::Mode::Generate || self.scorer == Scorer::Choice
    }
}

/// Reads task `name` from `path`.
///
/// # Errors
/// [`EvalError::Unknown`] for an unknown task; [`EvalError::Data`] naming file, line or
/// item, and field for a malformed file; [`EvalError::Io`].
pub fn load(name: &str, path: &Path) -> Result<Task, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    match name {
        "pubmedqa" => pubmedqa(path, &text),
        "ncbi_disease" => ncbi_disease(path, &text),
        "mts_dialog" => mts_dialog(path, &text),
        "jsonl" => jsonl(path, &text),
        other => Err(unknown_task(other)),
    }
}

/// The error for a task name that does not exist.
pub fn unknown_task(name: &str) -> EvalError {
    EvalError::Unknown(format!(
        "unknown task {name:?} (tasks: {}, jsonl)",
        BUILTIN.join(", ")
    ))
}

/// The line (1-based) of a `serde_json` error, as a place.
fn json_error(path: &Path, e: &serde_json::Error) -> EvalError {
    EvalError::at_line(path, e.line(), "json", e.to_string())
}

/// The 1-based line where the value of `"key"` starts, searching after `from` (for naming
/// the line of an item in a pretty-printed JSON object); `None` when not found.
fn line_of_key(text: &str, key: &str, from: usize) -> Option<(usize, usize)> {
    let needle = format!("\"{key}\"");
    let at = text.get(from..)?.find(&needle)? + from;
    Some((text[..at].matches('\n').count() + 1, at))
}

/// Choices of PubMedQA, in lm-evaluation-harness's order.
pub const PUBMEDQA_CHOICES: [&str; 3] = ["yes", "no", "maybe"];

/// PubMedQA PQA-L: an object keyed by PMID, each with `QUESTION`, `CONTEXTS` (a list of
/// strings) and `final_decision` (`yes`, `no` or `maybe`). The loglikelihood context is
/// lm-evaluation-harness's `pubmedqa` prompt: `Abstract: {CONTEXTS joined by "\n"}\nQuestion:
/// {QUESTION}\nAnswer:`.
///
/// # Errors
/// [`EvalError::Data`] naming the line of the item and the field.
pub fn pubmedqa(path: &Path, text: &str) -> Result<Task, EvalError> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
    let mut items = Vec::with_capacity(map.len());
    let mut search_from = 0;
    for (pmid, v) in map {
        let (line, at) = line_of_key(text, &pmid, search_from).unwrap_or((0, search_from));
        search_from = at;
        let err = |field: &str, problem: &str| {
            if line > 0 {
                EvalError::at_line(path, line, field, format!("item {pmid}: {problem}"))
            } else {
                EvalError::at_item(path, &pmid, field, problem)
            }
        };
        let question = v
            .get("QUESTION")
            .and_then(|q| q.as_str())
            .ok_or_else(|| err("QUESTION", "missing or not a string"))?;
        let contexts = v
            .get("CONTEXTS")
            .and_then(|c| c.as_array())
            .ok_or_else(|| err("CONTEXTS", "missing or not a list"))?
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err("CONTEXTS", "not a list of strings"))?;
        let decision = v
            .get("final_decision")
            .and_then(|d| d.as_str())
            .ok_or_else(|| err("final_decision", "missing or not a string"))?;
        if !PUBMEDQA_CHOICES.contains(&decision) {
            return Err(err(
                "final_decision",
                &format!("{decision:?} is not yes, no or maybe"),
            ));
        }
        let abstract_text = contexts.join("\n");
        items.push(Item {
            context: Some(format!(
                "Abstract: {abstract_text}\nQuestion: {question}\nAnswer:"
            )),
            instruction: "Read the abstract and answer the question with yes, no or maybe."
                .to_string(),
            input: format!("Abstract: {abstract_text}\nQuestion: {question}"),
            choices: PUBMEDQA_CHOICES.map(String::from).to_vec(),
            gold: Gold::Label(decision.to_string()),
            id: pmid,
        });
    }
    Ok(Task {
        name: "pubmedqa".into(),
        group: Category::Qa,
        scorer: Scorer::Choice,
        max_new_tokens: 16,
        source: path.to_path_buf(),
        items,
    })
}

/// The mentions a BIO-tagged sentence holds, as strings of their tokens joined by spaces
/// (the corpus's own chunks, by [`super::metrics::chunks`]).
fn mentions_of(tokens: &[String], tags: &[String]) -> Vec<String> {
    super::metrics::chunks(tags)
        .into_iter()
        .map(|c| tokens[c.start..c.end].join(" "))
        .collect()
}

/// NCBI-disease in CoNLL form: `token<TAB>tag` lines, tags `B-Disease`, `I-Disease`, `O`, a
/// blank line between sentences. An item is a sentence; its id is the line of its first
/// token. The model lists the sentence's disease mentions.
///
/// # Errors
/// [`EvalError::Data`] naming the line: no tab, an empty token, or a tag that is not BIO.
pub fn ncbi_disease(path: &Path, text: &str) -> Result<Task, EvalError> {
    let mut items = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut tags: Vec<String> = Vec::new();
    let mut first_line = 0;
    let mut flush = |tokens: &mut Vec<String>, tags: &mut Vec<String>, first_line: usize| {
        if tokens.is_empty() {
            return;
        }
        let tokens = std::mem::take(tokens);
        let tags = std::mem::take(tags);
        items.push(Item {
            id: first_line.to_string(),
            instruction: "List every disease mentioned in the sentence, as a JSON array of strings copied from the sentence. Write [] if it mentions none.".to_string(),
            input: tokens.join(" "),
            context: None,
            choices: Vec::new(),
            gold: Gold::Tags {
                mentions: mentions_of(&tokens, &tags),
                tokens,
                tags,
            },
        });
    };
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            flush(&mut tokens, &mut tags, first_line);
            continue;
        }
        let Some((token, tag)) = line.split_once('\t') else {
            return Err(EvalError::at_line(
                path,
                line_no,
                "tag",
                "expected `token<TAB>tag`, found no tab",
            ));
        };
        if token.is_empty() {
            return Err(EvalError::at_line(path, line_no, "token", "empty"));
        }
        let tag = tag.trim();
        let bio = tag == "O"
            || tag
                .split_once('-')
                .is_some_and(|(p, t)| matches!(p, "B" | "I") && !t.is_empty());
        if !bio {
            return Err(EvalError::at_line(
                path,
                line_no,
                "tag",
                format!("{tag:?} is not O, B-TYPE or I-TYPE"),
            ));
        }
        if tokens.is_empty() {
            first_line = line_no;
        }
        tokens.push(token.to_string());
        tags.push(tag.to_string());
    }
    flush(&mut tokens, &mut tags, first_line);
    Ok(Task {
        name: "ncbi_disease".into(),
        group: Category::Ie,
        scorer: Scorer::Tags,
        max_new_tokens: 96,
        source: path.to_path_buf(),
        items,
    })
}

/// MTS-Dialog's section headers and what they stand for.
const MTS_SECTIONS: [(&str, &str); 20] = [
    ("FAM/SOCHX", "family and social history"),
    ("GENHX", "history of present illness"),
    ("PASTMEDICALHX", "past medical history"),
    ("CC", "chief complaint"),
    ("PASTSURGICAL", "past surgical history"),
    ("ALLERGY", "allergies"),
    ("ROS", "review of systems"),
    ("MEDICATIONS", "medications"),
    ("ASSESSMENT", "assessment"),
    ("EXAM", "physical examination"),
    ("DIAGNOSIS", "diagnosis"),
    ("DISPOSITION", "disposition"),
    ("PLAN", "plan"),
    ("EDCOURSE", "emergency department course"),
    ("IMMUNIZATIONS", "immunizations"),
    ("IMAGING", "imaging"),
    ("GYNHX", "gynecologic history"),
    ("PROCEDURES", "procedures"),
    ("OTHER_HISTORY", "other history"),
    ("LABS", "laboratory results"),
];

/// What an MTS-Dialog item asks; `{section}` is the section's plain name.
pub const MTS_INSTRUCTION: &str =
    "Write the {section} section of the clinical note for this doctor-patient conversation.";

/// The plain-words name of an MTS-Dialog section header (the header itself when unknown).
pub fn mts_section_name(header: &str) -> String {
    MTS_SECTIONS
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(header.trim()))
        .map_or_else(|| header.trim().to_lowercase(), |(_, n)| n.to_string())
}

/// MTS-Dialog: CSV with the columns `ID`, `section_header`, `section_text`, `dialogue`
/// (others ignored). The model writes the note section named by `section_header` from the
/// doctor-patient dialogue; the reference is `section_text`.
///
/// # Errors
/// [`EvalError::Data`] naming the line and the column: a missing column, a row that does
/// not parse, a duplicate or empty `ID`.
pub fn mts_dialog(path: &Path, text: &str) -> Result<Task, EvalError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| EvalError::at_line(path, 1, "header", e.to_string()))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                EvalError::at_line(
                    path,
                    1,
                    name,
                    format!(
                        "column missing (the header has {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
    };
    let [id_col, header_col, text_col, dialogue_col] = [
        column("ID")?,
        column("section_header")?,
        column("section_text")?,
        column("dialogue")?,
    ];
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            EvalError::at_line(path, line, "row", e.to_string())
        })?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        let get = |col: usize| row.get(col).unwrap_or_default().to_string();
        let id = get(id_col).trim().to_string();
        if id.is_empty() {
            return Err(EvalError::at_line(path, line, "ID", "empty"));
        }
        if !seen.insert(id.clone()) {
            return Err(EvalError::at_line(
                path,
                line,
                "ID",
                format!("{id} appears twice"),
            ));
        }
        let section = get(header_col);
        items.push(Item {
            instruction: MTS_INSTRUCTION.replace("{section}", &mts_section_name(&section)),
            input: get(dialogue_col),
            context: None,
            choices: Vec::new(),
            gold: Gold::Text(get(text_col)),
            id,
        });
    }
    Ok(Task {
        name: "mts_dialog".into(),
        group: Category::Gen,
        scorer: Scorer::Rouge,
        max_new_tokens: 192,
        source: path.to_path_buf(),
        items,
    })
}

/// The metrics a `jsonl` task may name.
pub const JSONL_METRICS: [&str; 4] = ["exact_match", "choice", "json_list_f1", "rouge_l"];

/// The project's instruction records (`id`, `instruction`, `input`, `output`) with `group`
/// (`qa`, `ie`, `gen`, `other`) and `metric` (one of [`JSONL_METRICS`], the same on every
/// line); `choice` records also carry `choices` (a list of strings containing `output`), and
/// `json_list_f1` outputs are JSON arrays of strings. The task is named after the file's
/// stem.
///
/// # Errors
/// [`EvalError::Data`] naming the line and field.
pub fn jsonl(path: &Path, text: &str) -> Result<Task, EvalError> {
    let mut items = Vec::new();
    let mut task: Option<(Category, String, usize)> = None;
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |field: &str, problem: String| EvalError::at_line(path, n, field, problem);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err("json", e.to_string()))?;
        let string = |field: &str, required: bool| -> Result<String, EvalError> {
            match v.get(field) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                None if !required => Ok(String::new()),
                Some(_) => Err(err(field, "not a string".into())),
                None => Err(err(field, "missing".into())),
            }
        };
        let id = string("id", true)?;
        if !seen.insert(id.clone()) {
            return Err(err("id", format!("{id} appears twice")));
        }
        let group_name = string("group", true)?;
        let group: Category = group_name.parse().map_err(|_| {
            err(
                "group",
                format!("{group_name:?} is not qa, ie, gen or other"),
            )
        })?;
        let metric = string("metric", true)?;
        if !JSONL_METRICS.contains(&metric.as_str()) {
            return Err(err(
                "metric",
                format!(
                    "unknown metric {metric:?} (metrics: {})",
                    JSONL_METRICS.join(", ")
                ),
            ));
        }
        match &task {
            Some((g, m, first)) if *g != group || *m != metric => {
                return Err(err(
                    "metric",
                    format!(
                        "{}/{metric} differs from line {first}'s {}/{m}: one task has one group and metric",
                        group.as_str(),
                        g.as_str()
                    ),
                ))
            }
            Some(_) => {}
            None => task = Some((group, metric.clone(), n)),
        }
        let instruction = string("instruction", true)?;
        let input = string("input", false)?;
        let output = string("output", true)?;
        let (gold, choices) = match metric.as_str() {
            "choice" => {
                let choices: Vec<String> = v
                    .get("choices")
                    .and_then(|c| c.as_array())
                    .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| err("choices", "missing or not a list of strings".into()))?;
                if !choices.contains(&output) {
                    return Err(err(
                        "output",
                        format!("{output:?} is not one of choices {choices:?}"),
                    ));
                }
                (Gold::Label(output), choices)
            }
            "json_list_f1" => {
                let list: Vec<String> = serde_json::from_str(&output)
                    .map_err(|e| err("output", format!("not a JSON array of strings: {e}")))?;
                (Gold::List(list), Vec::new())
            }
            _ => (Gold::Text(output), Vec::new()),
        };
        let context = (!choices.is_empty()).then(|| {
            if input.trim().is_empty() {
                format!("{instruction}\nAnswer:")
            } else {
                format!("{instruction}\n\n{input}\nAnswer:")
            }
        });
        items.push(Item {
            id,
            instruction,
            input,
            context,
            choices,
            gold,
        });
    }
    let Some((group, metric, _)) = task else {
        return Err(EvalError::at_line(path, 1, "id", "the file has no record"));
    };
    let scorer = match metric.as_str() {
        "exact_match" => Scorer::ExactMatch,
        "choice" => Scorer::Choice,
        "json_list_f1" => Scorer::ListF1,
        _ => Scorer::Rouge,
    };
    Ok(Task {
        name: path
            .file_stem()
            .map_or_else(|| "jsonl".into(), |s| s.to_string_lossy().into_owned()),
        group,
        scorer,
        max_new_tokens: 256,
        source: path.to_path_buf(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_pubmedqa_file_names_its_line() {
        let text = "{\n \"1\": {\n  \"QUESTION\": \"q\",\n  \"CONTEXTS\": [\"a\"],\n";
        let e = pubmedqa(Path::new("p.json"), text)
            .expect_err("an error")
            .to_string();
        assert!(e.starts_with("p.json:5: json: EOF"), "{e}");
    }

    #[test]
    fn a_pubmedqa_item_without_a_decision_names_item_and_field() {
        let text = "{\n \"1\": {\"QUESTION\": \"q\", \"CONTEXTS\": [\"a\"], \"final_decision\": \"yes\"},\n \"2\": {\"QUESTION\": \"q\", \"CONTEXTS\": [\"a\"]}\n}";
        let e = pubmedqa(Path::new("p.json"), text)
            .expect_err("an error")
            .to_string();
        assert_eq!(
            e,
            "p.json:3: final_decision: item 2: missing or not a string"
        );
    }

    #[test]
    fn pubmedqa_builds_lm_eval_harness_prompt() {
        let text = r#"{"7": {"QUESTION": "Is it?", "CONTEXTS": ["One.", "Two."], "final_decision": "maybe"}}"#;
        let t = pubmedqa(Path::new("p.json"), text).expect("task");
        let item = &t.items[0];
        assert_eq!(item.id, "7");
        assert_eq!(
            item.context.as_deref(),
            Some("Abstract: One.\nTwo.\nQuestion: Is it?\nAnswer:")
        );
        assert_eq!(item.gold, Gold::Label("maybe".into()));
    }

    #[test]
    fn conll_sentences_become_items_with_their_mentions() {
        let text =
            "Germline\tO\nbreast\tB-Disease\ncancer\tI-Disease\n.\tO\n\nAn\tO\nataxia\tB-Disease\n";
        let t = ncbi_disease(Path::new("d.tsv"), text).expect("task");
        assert_eq!(t.items.len(), 2);
        assert_eq!(t.items[0].id, "1");
        assert_eq!(t.items[1].id, "6");
        assert_eq!(t.items[0].input, "Germline breast cancer .");
        match &t.items[0].gold {
            Gold::Tags { mentions, .. } => assert_eq!(mentions, &["breast cancer"]),
            g => panic!("{g:?}"),
        }
    }

    #[test]
    fn a_conll_line_without_a_tab_names_its_line() {
        let e = ncbi_disease(Path::new("d.tsv"), "a\tO\nb O\n")
            .expect_err("an error")
            .to_string();
        assert_eq!(e, "d.tsv:2: tag: expected `token<TAB>tag`, found no tab");
    }

    #[test]
    fn a_csv_without_the_dialogue_column_names_it() {
        let e = mts_dialog(
            Path::new("m.csv"),
            "ID,section_header,section_text\n0,CC,x\n",
        )
        .expect_err("an error")
        .to_string();
        assert!(e.starts_with("m.csv:1: dialogue: column missing"), "{e}");
    }

    #[test]
    fn csv_fields_may_span_lines() {
        let text = "ID,section_header,section_text,dialogue\n0,GENHX,\"a\nb\",\"Doctor: hi\nPatient: \"\"hello\"\"\"\n";
        let t = mts_dialog(Path::new("m.csv"), text).expect("task");
        assert_eq!(t.items[0].input, "Doctor: hi\nPatient: \"hello\"");
        assert_eq!(t.items[0].gold, Gold::Text("a\nb".into()));
        assert!(t.items[0]
            .instruction
            .contains("history of present illness"));
    }

    #[test]
    fn jsonl_tasks_check_metric_and_group() {
        let line = |m: &str| {
            format!(r#"{{"id":"a","group":"qa","metric":"{m}","instruction":"i","output":"o"}}"#)
        };
        let e = jsonl(Path::new("t.jsonl"), &line("bleu"))
            .expect_err("an error")
            .to_string();
        assert!(
            e.starts_with("t.jsonl:1: metric: unknown metric \"bleu\""),
            "{e}"
        );
        let t = jsonl(Path::new("t.jsonl"), &line("exact_match")).expect("task");
        assert_eq!((t.name.as_str(), t.scorer), ("t", Scorer::ExactMatch));
        let e = jsonl(
            Path::new("t.jsonl"),
            r#"{"id":"a","group":"qa","metric":"choice","instruction":"i","output":"c","choices":["a","b"]}"#,
        )
        .expect_err("an error")
        .to_string();
        assert!(e.contains("output: \"c\" is not one of choices"), "{e}");
    }
}
