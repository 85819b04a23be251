//! Self-instruct generation (BioInstruct step 2; Wang et al. 2023, "Self-Instruct"; Taori et
//! al. 2023, Stanford Alpaca): teachers ([`teacher`]), the prompt ([`prompt`]) and its
//! reply's parser ([`parse`]), the filters that decide which generated (or imported)
//! instructions to keep (used by `bioinstruct dedupe`), and generation runs ([`run`]).
//!
//! A [`Deduper`] holds every instruction kept so far (the seeds first): each candidate goes
//! through Alpaca's text rules ([`filters`]), then is scored with ROUGE-L against all of them
//! ([`rouge`]); above 0.7 with any, it is rejected, else kept and added, as Alpaca's
//! `generate_instruction.py` does.

pub mod filters;
pub mod parse;
pub mod prompt;
pub mod rouge;
pub mod run;
pub mod teacher;

use crate::data::Instruction;
use filters::{text_rejection, Rejection, MAX_ROUGE_L};
use rouge::Interner;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most similar instructions recorded per candidate.
pub const MOST_SIMILAR: usize = 10;

/// What became of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Why it was rejected; `None` when kept.
    pub rejection: Option<Rejection>,
    /// Its highest ROUGE-L against the instructions there before it (`None` when the text
    /// rules rejected it first, or there was nothing to compare with).
    pub max_rouge_l: Option<f64>,
    /// Its mean ROUGE-L against them.
    pub mean_rouge_l: Option<f64>,
    /// The [`MOST_SIMILAR`] most similar, `(id, ROUGE-L)`, best first.
    pub most_similar: Vec<(String, f64)>,
}

impl Verdict {
    /// The verdict as extra JSON fields for the record: `similarity` (`max`, `mean`,
    /// `most_similar`) and, when rejected, `rejection` (`reason` and its details).
    pub fn fields(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        if let (Some(max), Some(mean)) = (self.max_rouge_l, self.mean_rouge_l) {
            out.push((
                "similarity".to_string(),
                json!({
                    "max_rouge_l": max,
                    "mean_rouge_l": mean,
                    "most_similar": self.most_similar.iter()
                        .map(|(id, s)| json!({"id": id, "rouge_l": s}))
                        .collect::<Vec<_>>(),
                }),
            ));
        }
        if let Some(r) = &self.rejection {
            out.push((
                "rejection".to_string(),
                serde_json::to_value(r).unwrap_or(Value::Null),
            ));
        }
        out
    }
}

/// Alpaca's filters over a growing set of kept instructions.
#[derive(Debug, Default, Clone)]
pub struct Deduper {
    interner: Interner,
    tokens: Vec<Vec<u32>>,
    ids: Vec<String>,
    exact: HashMap<(String, String), String>,
    scorer: rouge::Scorer,
    /// ROUGE-L comparisons made so far.
    pub comparisons: u64,
}

impl Deduper {
    /// A deduper whose kept set starts with `existing` (the seeds, or a file's kept records),
    /// which are not filtered themselves.
    pub fn new(existing: &[Instruction]) -> Deduper {
        let mut d = Deduper::default();
        for r in existing {
            d.add(r);
        }
        d
    }

    /// Adds `r` to the kept set without judging it (an earlier run's kept task).
    pub fn keep(&mut self, r: &Instruction) {
        self.add(r);
    }

    fn add(&mut self, r: &Instruction) {
        self.tokens.push(self.interner.intern(&r.instruction));
        self.ids.push(r.id.clone());
        self.exact
            .entry((r.instruction.trim().to_string(), r.input.trim().to_string()))
            .or_insert_with(|| r.id.clone());
    }

    /// Instructions kept (those given at the start included).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Judges `candidate` and, when it passes, keeps it.
    pub fn consider(&mut self, candidate: &Instruction) -> Verdict {
        let mut verdict = Verdict {
            rejection: text_rejection(&candidate.instruction),
            max_rouge_l: None,
            mean_rouge_l: None,
            most_similar: Vec::new(),
        };
        if verdict.rejection.is_some() {
            return verdict;
        }
        let key = (
            candidate.instruction.trim().to_string(),
            candidate.input.trim().to_string(),
        );
        if let Some(of) = self.exact.get(&key) {
            verdict.rejection = Some(Rejection::Duplicate { of: of.clone() });
            return verdict;
        }
        let a = self.interner.intern(&candidate.instruction);
        let s = self.scorer.compare(&a, &self.tokens, MOST_SIMILAR);
        self.comparisons += self.tokens.len() as u64;
        if let Some((i, max)) = s.max {
            verdict.max_rouge_l = Some(max);
            verdict.mean_rouge_l = Some(s.mean);
            verdict.most_similar = s
                .top
                .iter()
                .map(|&(j, score)| (self.ids[j].clone(), score))
                .collect();
            if max > MAX_ROUGE_L {
                verdict.rejection = Some(Rejection::TooSimilar {
                    to: self.ids[i].clone(),
                    rouge_l: max,
                });
                return verdict;
            }
        }
        self.tokens.push(a);
        self.ids.push(candidate.id.clone());
        self.exact.insert(key, candidate.id.clone());
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Category;

    fn record(id: &str, instruction: &str) -> Instruction {
        Instruction {
            id: id.into(),
            category: Category::Qa,
            task: "t".into(),
            instruction: instruction.into(),
            input: String::new(),
            output: "o".into(),
            extra: Default::default(),
        }
    }

    #[test]
    fn candidates_are_kept_or_rejected_against_everything_before_them() {
        let mut d = Deduper::new(&[record(
            "seed-1",
            "Summarize the discharge note for the patient.",
        )]);
        let near = d.consider(&record(
            "g-1",
            "Summarize the discharge note for the patient briefly.",
        ));
        assert!(
            matches!(&near.rejection, Some(Rejection::TooSimilar { to, rouge_l }) if to == "seed-1" && *rouge_l > 0.9),
            "{near:?}"
        );
        let new = d.consider(&record(
            "g-2",
            "List every drug and dose mentioned in the medication history.",
        ));
        assert_eq!(new.rejection, None);
        assert_eq!(new.most_similar.len(), 1);
        assert_eq!(d.len(), 2);
        // Compared with the kept g-2 as well now.
        let again = d.consider(&record(
            "g-3",
            "List every drug and dose mentioned in the medication history, please.",
        ));
        assert!(matches!(&again.rejection, Some(Rejection::TooSimilar { to, .. }) if to == "g-2"));
        assert_eq!(
            d.consider(&record(
                "g-4",
                "List every drug and dose mentioned in the medication history."
            ))
            .rejection,
            Some(Rejection::Duplicate { of: "g-2".into() })
        );
        assert_eq!(
            d.consider(&record("g-5", "Draw the nephron.")).rejection,
            Some(Rejection::TooShort { words: 3 })
        );
        let fields = new.fields();
        assert_eq!(fields[0].0, "similarity");
    }
}
