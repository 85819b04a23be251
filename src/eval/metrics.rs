//! The metrics, each as its reference implementation computes it:
//!
//! - accuracy and macro-F1 as scikit-learn's `accuracy_score` and `f1_score(average="macro")`
//!   (what PubMedQA's `evaluation.py` calls): the labels are every label in the references or
//!   the predictions, and a label's F1 is 0 when it was never predicted or never true
//!   (`zero_division` 0);
//! - entity chunks as conlleval and seqeval's default mode read BIO tags (an `I-` after `O`
//!   or after another type starts an entity), and micro precision, recall and F1 over
//!   entities (seqeval's `precision_score`, `recall_score`, `f1_score`, 0 where undefined);
//! - ROUGE-1, ROUGE-2 and ROUGE-L F-measure as Google's `rouge-score`
//!   (`RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)`), with the tokenizer
//!   of [`crate::selfinstruct::rouge::tokenize`].

use crate::selfinstruct::rouge;
use std::collections::{BTreeSet, HashMap};

/// Share of positions where `pred` equals `gold` (0 for no items).
pub fn accuracy<T: PartialEq>(gold: &[T], pred: &[T]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    let right = gold.iter().zip(pred).filter(|(g, p)| g == p).count();
    right as f64 / gold.len() as f64
}

/// Unweighted mean of the per-label F1 over every label that occurs in `gold` or `pred`
/// (scikit-learn's `f1_score(gold, pred, average="macro")`, `zero_division=0`).
pub fn macro_f1(gold: &[&str], pred: &[&str]) -> f64 {
    let labels: BTreeSet<&str> = gold.iter().chain(pred).copied().collect();
    if labels.is_empty() {
        return 0.0;
    }
    let sum: f64 = labels
        .iter()
        .map(|&label| {
            let tp = gold
                .iter()
                .zip(pred)
                .filter(|(g, p)| **g == label && **p == label)
                .count();
            let predicted = pred.iter().filter(|p| **p == label).count();
            let actual = gold.iter().filter(|g| **g == label).count();
            prf(tp, predicted, actual).2
        })
        .sum();
    sum / labels.len() as f64
}

/// Precision, recall and F1 from true positives, predicted and actual counts; each 0 where
/// its denominator is 0.
pub fn prf(tp: usize, predicted: usize, actual: usize) -> (f64, f64, f64) {
    let p = if predicted == 0 {
        0.0
    } else {
        tp as f64 / predicted as f64
    };
    let r = if actual == 0 {
        0.0
    } else {
        tp as f64 / actual as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// An entity: tokens `start..end` of type `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chunk {
    /// The entity type (`Disease`).
    pub kind: String,
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
}

fn split_tag(tag: &str) -> (&str, &str) {
    match tag.split_once('-') {
        Some((prefix, kind)) => (prefix, kind),
        None => (tag, ""),
    }
}

/// The entities of one sentence's BIO tags, with conlleval's rules (seqeval's default mode):
/// an entity starts at `B-`, or at `I-` after `O` or after a tag of another type, and ends
/// before `B-`, `O` or a change of type.
pub fn chunks(tags: &[String]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, tag) in tags.iter().enumerate() {
        let (prefix, kind) = split_tag(tag);
        let continues = prefix == "I" && open.as_ref().is_some_and(|(k, _)| k == kind);
        if continues {
            continue;
        }
        if let Some((k, start)) = open.take() {
            out.push(Chunk {
                kind: k,
                start,
                end: i,
            });
        }
        if prefix == "B" || prefix == "I" {
            open = Some((kind.to_string(), i));
        }
    }
    if let Some((kind, start)) = open {
        out.push(Chunk {
            kind,
            start,
            end: tags.len(),
        });
    }
    out
}

/// Entity counts of one sentence: (true positives, predicted, gold).
pub fn entity_counts(gold_tags: &[String], pred_tags: &[String]) -> (usize, usize, usize) {
    let gold: BTreeSet<Chunk> = chunks(gold_tags).into_iter().collect();
    let pred: BTreeSet<Chunk> = chunks(pred_tags).into_iter().collect();
    (gold.intersection(&pred).count(), pred.len(), gold.len())
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

fn f_measure(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// ROUGE-N F-measure of `prediction` against `target` (rouge-score's `_score_ngrams`).
pub fn rouge_n(target: &[String], prediction: &[String], n: usize) -> f64 {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t
        .iter()
        .map(|(g, c)| (*c).min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let t_count: usize = t.values().sum();
    let p_count: usize = p.values().sum();
    f_measure(
        overlap as f64 / p_count.max(1) as f64,
        overlap as f64 / t_count.max(1) as f64,
    )
}

/// ROUGE-L F-measure of `prediction` against `target` (rouge-score's `_score_lcs`).
pub fn rouge_l(target: &[String], prediction: &[String]) -> f64 {
    if target.is_empty() || prediction.is_empty() {
        return 0.0;
    }
    rouge::f_measure(
        rouge::lcs_dp(target, prediction),
        target.len(),
        prediction.len(),
    )
}

/// ROUGE-1, ROUGE-2 and ROUGE-L F-measures of `prediction` against `target`.
pub fn rouge_scores(target: &str, prediction: &str) -> [f64; 3] {
    let t = rouge::tokenize(target);
    let p = rouge::tokenize(prediction);
    [rouge_n(&t, &p, 1), rouge_n(&t, &p, 2), rouge_l(&t, &p)]
}

/// Text as exact match compares it: trimmed, lowercased, runs of whitespace as one space.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Set overlap of two string lists, compared after [`normalize`]: (true positives,
/// predicted, gold), each list's duplicates counted once.
pub fn list_counts(gold: &[String], pred: &[String]) -> (usize, usize, usize) {
    let g: BTreeSet<String> = gold.iter().map(|s| normalize(s)).collect();
    let p: BTreeSet<String> = pred.iter().map(|s| normalize(s)).collect();
    (g.intersection(&p).count(), p.len(), g.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn spans(s: &str) -> Vec<(usize, usize)> {
        chunks(&tags(s))
            .into_iter()
            .map(|c| (c.start, c.end))
            .collect()
    }

    #[test]
    fn an_i_tag_with_no_b_starts_an_entity() {
        assert_eq!(spans("O I-D I-D O"), vec![(1, 3)]);
        assert_eq!(spans("I-D"), vec![(0, 1)]);
    }

    #[test]
    fn adjacent_entities_stay_apart() {
        assert_eq!(spans("B-D B-D I-D"), vec![(0, 1), (1, 3)]);
        // A change of type ends one entity and starts another, even with I-.
        assert_eq!(spans("B-D I-C I-C"), vec![(0, 1), (1, 3)]);
        assert_eq!(spans("B-D I-D O B-D"), vec![(0, 2), (3, 4)]);
    }

    #[test]
    fn no_gold_entity_gives_zero_recall_and_f1_not_nan() {
        let (tp, p, g) = entity_counts(&tags("O O"), &tags("B-D O"));
        assert_eq!((tp, p, g), (0, 1, 0));
        assert_eq!(prf(tp, p, g), (0.0, 0.0, 0.0));
        assert_eq!(prf(0, 0, 0), (0.0, 0.0, 0.0));
    }

    #[test]
    fn partial_overlap_is_no_match() {
        assert_eq!(
            entity_counts(&tags("B-D I-D O"), &tags("B-D O O")),
            (0, 1, 1)
        );
        assert_eq!(
            entity_counts(&tags("B-D I-D O"), &tags("I-D I-D O")),
            (1, 1, 1)
        );
    }

    #[test]
    fn macro_f1_counts_a_label_never_predicted_as_zero() {
        // yes: P 2/3, R 1, F 0.8; no: P 0/0, R 0/1, F 0 → (0.8 + 0) / 2.
        let f = macro_f1(&["yes", "yes", "no"], &["yes", "yes", "yes"]);
        assert!((f - 0.4).abs() < 1e-12, "{f}");
        // A predicted label that is never true counts as a label too (sklearn's union).
        let f = macro_f1(&["yes", "no"], &["yes", ""]);
        assert!((f - (1.0 + 0.0 + 0.0) / 3.0).abs() < 1e-12, "{f}");
    }

    #[test]
    fn accuracy_counts_equal_positions() {
        assert_eq!(accuracy(&["a", "b", "c", "d"], &["a", "x", "c", "y"]), 0.5);
        assert_eq!(accuracy::<&str>(&[], &[]), 0.0);
    }

    #[test]
    fn rouge_matches_rouge_score_by_hand() {
        // target "the cat sat on the mat", prediction "the cat on the mat"
        let [r1, r2, rl] = rouge_scores("The cat sat on the mat.", "the cat on the mat");
        // unigrams: overlap 5, P 5/5, R 5/6 → 10/11.
        assert!((r1 - 10.0 / 11.0).abs() < 1e-12);
        // bigrams: target {the cat, cat sat, sat on, on the, the mat}, pred {the cat, cat on,
        // on the, the mat}: overlap 3, P 3/4, R 3/5 → 2/3.
        assert!((r2 - 2.0 / 3.0).abs() < 1e-12);
        // LCS 5: P 1, R 5/6.
        assert!((rl - 10.0 / 11.0).abs() < 1e-12);
        assert_eq!(rouge_scores("", "x"), [0.0, 0.0, 0.0]);
        assert_eq!(rouge_scores("a", "a")[1], 0.0);
    }

    #[test]
    fn list_counts_ignore_case_and_duplicates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list_counts(&s(&["Asthma", "gout"]), &s(&["asthma", "ASTHMA", "flu"])),
            (1, 2, 2)
        );
    }
}
