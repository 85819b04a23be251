//! The instruction record: one task of the (instruction, input, output) form used by
//! Self-Instruct (Wang et al., 2023), Stanford Alpaca and BioInstruct (Tran et al., 2024).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The task group a record trains, as BioInstruct reports its results: question answering,
/// information extraction, text generation, or anything else.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Question answering (multiple choice, yes/no/maybe, reading comprehension).
    Qa,
    /// Information extraction (entities, relations, medications, abbreviations).
    Ie,
    /// Text generation (summaries, notes, explanations, impressions).
    Gen,
    /// Everything else (differential diagnosis, trial eligibility, inference).
    Other,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 4] = [Category::Qa, Category::Ie, Category::Gen, Category::Other];

    /// The lowercase name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Qa => "qa",
            Category::Ie => "ie",
            Category::Gen => "gen",
            Category::Other => "other",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a category name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {0:?}: expected one of \"qa\", \"ie\", \"gen\", \"other\"")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qa" => Ok(Category::Qa),
            "ie" => Ok(Category::Ie),
            "gen" => Ok(Category::Gen),
            "other" => Ok(Category::Other),
            _ => Err(UnknownCategory(s.to_string())),
        }
    }
}

/// One instruction-tuning task.
///
/// Serialized as one JSON object with the fields in this order; fields bioinstruct does not
/// know (provenance added by other tools, say) are kept in `extra` and written back unchanged,
/// in their original order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    /// Unique within a file, e.g. `seed-001`.
    pub id: String,
    /// The task group.
    pub category: Category,
    /// The task family in snake_case, e.g. `usmle_mcq` or `drug_adverse_event_relation`.
    pub task: String,
    /// What the model is asked to do.
    pub instruction: String,
    /// The material the instruction applies to; may be empty.
    #[serde(default)]
    pub input: String,
    /// The reference answer.
    pub output: String,
    /// Fields not listed above, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields [`Instruction`] itself owns; everything else lands in `extra`.
pub const KNOWN_FIELDS: [&str; 6] = ["id", "category", "task", "instruction", "input", "output"];

impl Instruction {
    /// Whether `query` (already lowercase) occurs in the id, task, instruction, input or output,
    /// ignoring case.
    pub fn matches(&self, query_lower: &str) -> bool {
        query_lower.is_empty()
            || [
                &self.id,
                &self.task,
                &self.instruction,
                &self.input,
                &self.output,
            ]
            .iter()
            .any(|field| contains_lowercase(field, query_lower))
    }

    /// The problems of this record's fields as `(field, problem)` pairs; empty when valid.
    /// The same rules apply to every line of a file (see [`crate::data::read_jsonl`]).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(p) = id_problem(&self.id) {
            problems.push(("id", p));
        }
        if let Some(p) = task_problem(&self.task) {
            problems.push(("task", p));
        }
        if self.instruction.trim().is_empty() {
            problems.push(("instruction", "is empty".to_string()));
        }
        if self.output.trim().is_empty() {
            problems.push(("output", "is empty".to_string()));
        }
        problems
    }
}

/// Whether `hay`, lowercased, contains `needle_lower` (already lowercase). ASCII text, most
/// of it, is compared byte by byte without building a lowercase copy (a search over the
/// paper's 25,005 records runs on every key typed).
fn contains_lowercase(hay: &str, needle_lower: &str) -> bool {
    if hay.is_ascii() && needle_lower.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
        n.is_empty()
            || h.windows(n.len()).any(|w| {
                w[0].to_ascii_lowercase() == n[0]
                    && w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b)
            })
    } else {
        hay.to_lowercase().contains(needle_lower)
    }
}

/// Why `id` is not a usable record id, or `None` when it is.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("is empty".to_string())
    } else if id.chars().any(char::is_whitespace) {
        Some(format!("{id:?} contains whitespace"))
    } else {
        None
    }
}

/// Why `task` is not a snake_case task family name, or `None` when it is.
pub fn task_problem(task: &str) -> Option<String> {
    let snake = !task.is_empty()
        && task.starts_with(|c: char| c.is_ascii_lowercase())
        && task
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!snake).then(|| format!("{task:?} is not snake_case (a-z, 0-9, _; starting with a letter)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ignores_case_in_ascii_and_in_other_text() {
        assert!(contains_lowercase("Warfarin and INR", "inr"));
        assert!(contains_lowercase("Warfarin", "warfarin"));
        assert!(!contains_lowercase("Warfarin", "aspirin"));
        assert!(contains_lowercase("Läkemedel ÖVERDOS", "överdos"));
        assert!(contains_lowercase("x", ""));
        assert!(!contains_lowercase("", "x"));
    }

    #[test]
    fn category_names_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        assert!("QA".parse::<Category>().is_err());
    }

    #[test]
    fn task_names_must_be_snake_case() {
        assert_eq!(task_problem("usmle_mcq"), None);
        assert!(task_problem("USMLE").is_some());
        assert!(task_problem("1abc").is_some());
        assert!(task_problem("a-b").is_some());
        assert!(task_problem("").is_some());
    }

    #[test]
    fn search_ignores_case_and_covers_every_text_field() {
        let r = Instruction {
            id: "seed-001".into(),
            category: Category::Qa,
            task: "usmle_mcq".into(),
            instruction: "Answer".into(),
            input: "Metformin".into(),
            output: "B".into(),
            extra: Map::new(),
        };
        assert!(r.matches("metformin"));
        assert!(r.matches("usmle"));
        assert!(!r.matches("insulin"));
    }
}
