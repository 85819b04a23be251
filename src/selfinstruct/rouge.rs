//! ROUGE-L (Lin 2004) as Stanford Alpaca's and Self-Instruct's dedupe use it: Google's
//! `rouge-score` package, `RougeScorer(["rougeL"], use_stemmer=False)`, F-measure.
//!
//! - Tokens (`rouge_score.tokenize`): the text lowercased, every run of characters other
//!   than `a-z0-9` turned into a space, split on whitespace. No stemming.
//! - `lcs` = length of the longest common subsequence of the token sequences; precision =
//!   `lcs / |prediction|`, recall = `lcs / |target|`, F = `2PR / (P + R)` = `2·lcs / (|a| +
//!   |b|)`; 0 when either side has no token.
//!
//! Speed: tokens are interned to dense ids once; the LCS is Hyyrö's bit-parallel algorithm
//! (Hyyrö 2004, "Bit-parallel LCS-length computation revisited"): one pass over the other
//! sequence with a few word operations per token, on `⌈|a| / 64⌉` words; one candidate is
//! scored against a whole corpus across all cores (rayon).

use rayon::prelude::*;
use std::collections::HashMap;

/// The tokens of `text` as `rouge-score`'s default tokenizer makes them (no stemming).
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            current.push(c);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// F-measure from an LCS length and the two lengths (rouge-score's `_score_lcs`).
pub fn f_measure(lcs: usize, a_len: usize, b_len: usize) -> f64 {
    if a_len == 0 || b_len == 0 {
        return 0.0;
    }
    let precision = lcs as f64 / b_len as f64;
    let recall = lcs as f64 / a_len as f64;
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// LCS length by dynamic programming (the reference the bit-parallel version is tested
/// against).
pub fn lcs_dp<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Token strings to dense ids, shared by everything scored together.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The ids of `text`'s tokens, adding new tokens.
    pub fn intern(&mut self, text: &str) -> Vec<u32> {
        tokenize(text)
            .into_iter()
            .map(|t| {
                let next = self.ids.len() as u32;
                *self.ids.entry(t).or_insert(next)
            })
            .collect()
    }

    /// Distinct tokens seen.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no token was seen.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One sequence prepared as the "pattern" of the bit-parallel LCS: for each distinct token,
/// the bitmask of the positions where it occurs.
#[derive(Debug, Clone)]
pub struct Pattern {
    len: usize,
    words: usize,
    /// `(token id, mask words)`, sorted by id, for the tokens of the pattern.
    masks: Vec<(u32, Vec<u64>)>,
}

impl Pattern {
    /// The pattern of token ids `a`.
    pub fn new(a: &[u32]) -> Pattern {
        let words = a.len().div_ceil(64).max(1);
        let mut map: HashMap<u32, Vec<u64>> = HashMap::new();
        for (i, &t) in a.iter().enumerate() {
            map.entry(t).or_insert_with(|| vec![0; words])[i / 64] |= 1 << (i % 64);
        }
        let mut masks: Vec<(u32, Vec<u64>)> = map.into_iter().collect();
        masks.sort_by_key(|(t, _)| *t);
        Pattern {
            len: a.len(),
            words,
            masks,
        }
    }

    /// Tokens in the pattern.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pattern has no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self, t: u32) -> Option<&[u64]> {
        self.masks
            .binary_search_by_key(&t, |(id, _)| *id)
            .ok()
            .map(|i| self.masks[i].1.as_slice())
    }

    /// LCS length of the pattern and `b` (Hyyrö's bit-parallel recurrence
    /// `V ← (V + (V & M[b])) | (V & !M[b])`; the LCS is the number of zero bits of V).
    pub fn lcs(&self, b: &[u32]) -> usize {
        if self.len == 0 || b.is_empty() {
            return 0;
        }
        if self.words == 1 {
            let mut v: u64 = !0;
            for &t in b {
                if let Some(m) = self.mask(t) {
                    let u = v & m[0];
                    v = v.wrapping_add(u) | (v & !m[0]);
                }
            }
            let live = if self.len == 64 {
                !0
            } else {
                (1u64 << self.len) - 1
            };
            return (!v & live).count_ones() as usize;
        }
        let mut v = vec![!0u64; self.words];
        for &t in b {
            let Some(m) = self.mask(t) else { continue };
            let mut carry = 0u64;
            for w in 0..self.words {
                let u = v[w] & m[w];
                let (s1, c1) = v[w].overflowing_add(u);
                let (s2, c2) = s1.overflowing_add(carry);
                carry = u64::from(c1 || c2);
                v[w] = s2 | (v[w] & !m[w]);
            }
        }
        let mut zeros = 0;
        for (w, word) in v.iter().enumerate() {
            let bits = (self.len - w * 64).min(64);
            let live = if bits == 64 { !0 } else { (1u64 << bits) - 1 };
            zeros += (!word & live).count_ones() as usize;
        }
        zeros
    }

    /// ROUGE-L F-measure of the pattern and `b`.
    pub fn f_measure(&self, b: &[u32]) -> f64 {
        f_measure(self.lcs(b), self.len, b.len())
    }
}

/// How a candidate compares with a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Similarity {
    /// The highest score, with the index of that corpus entry (`None` for an empty corpus).
    pub max: Option<(usize, f64)>,
    /// Mean score over the corpus (0 for an empty one).
    pub mean: f64,
    /// The `k` most similar entries, `(index, score)`, best first (ties: lower index first).
    pub top: Vec<(usize, f64)>,
}

/// LCS length of a pattern of at most 64 tokens, given as a dense table `masks[token] =
/// positions bitmask`, and `b`: the single-word Hyyrö recurrence, branch-free (a token
/// absent from the pattern has mask 0 and leaves `V` unchanged).
#[inline]
fn lcs_dense(masks: &[u64], len: usize, b: &[u32]) -> usize {
    let mut v: u64 = !0;
    for &t in b {
        let m = masks.get(t as usize).copied().unwrap_or(0);
        let u = v & m;
        v = v.wrapping_add(u) | (v & !m);
    }
    let live = if len >= 64 { !0 } else { (1u64 << len) - 1 };
    (!v & live).count_ones() as usize
}

/// Scores candidates against corpora, reusing one dense mask table (one `u64` per token id)
/// so that a comparison costs a handful of word operations per token.
#[derive(Debug, Default, Clone)]
pub struct Scorer {
    table: Vec<u64>,
}

impl Scorer {
    /// Scores the candidate `a` against every sequence of `corpus`, in parallel, keeping the
    /// `k` best.
    pub fn compare(&mut self, a: &[u32], corpus: &[Vec<u32>], k: usize) -> Similarity {
        let better = |x: &(usize, f64), y: &(usize, f64)| {
            y.1.partial_cmp(&x.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(x.0.cmp(&y.0))
        };
        let dense = a.len() <= 64;
        let pattern = (!dense).then(|| Pattern::new(a));
        if dense {
            let top_id = a.iter().copied().max().map_or(0, |m| m as usize + 1);
            if self.table.len() < top_id {
                self.table.resize(top_id, 0);
            }
            for (i, &t) in a.iter().enumerate() {
                self.table[t as usize] |= 1 << i;
            }
        }
        let table = &self.table;
        let la = a.len();
        // Ranking and the mean use F = 2·lcs / (|a| + |b|) (one multiply by a reciprocal); the
        // k best are rescored with rouge-score's own formula below.
        let lcs = |b: &Vec<u32>| match &pattern {
            None => lcs_dense(table, la, b),
            Some(p) => p.lcs(b),
        };
        let keep = k.max(1);
        let (sum, top) = corpus
            .par_iter()
            .enumerate()
            .with_min_len(2048)
            .fold(
                || (0.0f64, Vec::with_capacity(keep + 1)),
                |(sum, mut top): (f64, Vec<(usize, f64)>), (i, b)| {
                    let s = if la == 0 || b.is_empty() {
                        0.0
                    } else {
                        2.0 * lcs(b) as f64 / (la + b.len()) as f64
                    };
                    if top.len() < keep || s > top[top.len() - 1].1 {
                        top.push((i, s));
                        top.sort_by(better);
                        top.truncate(keep);
                    }
                    (sum + s, top)
                },
            )
            .reduce(
                || (0.0, Vec::new()),
                |mut x, y| {
                    x.0 += y.0;
                    x.1.extend(y.1);
                    x.1.sort_by(better);
                    x.1.truncate(keep);
                    x
                },
            );
        let mut top: Vec<(usize, f64)> = top
            .into_iter()
            .map(|(i, _)| {
                let b = &corpus[i];
                (i, f_measure(lcs(b), la, b.len()))
            })
            .collect();
        top.sort_by(better);
        if dense {
            for &t in a {
                self.table[t as usize] = 0;
            }
        }
        let max = top.first().copied();
        top.truncate(k);
        Similarity {
            max,
            mean: if corpus.is_empty() {
                0.0
            } else {
                sum / corpus.len() as f64
            },
            top,
        }
    }
}

/// Scores the candidate `a` against every sequence of `corpus`, in parallel, keeping the
/// `k` best (a one-off [`Scorer`]).
pub fn compare(a: &[u32], corpus: &[Vec<u32>], k: usize) -> Similarity {
    Scorer::default().compare(a, corpus, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::XorShift64Star;

    #[test]
    fn the_tokenizer_is_rouge_scores() {
        assert_eq!(
            tokenize("Don't use HbA1c < 6.5%! Café—naïve"),
            ["don", "t", "use", "hba1c", "6", "5", "caf", "na", "ve"]
        );
        assert!(tokenize("  ,;  ").is_empty());
    }

    #[test]
    fn scores_agree_with_python_rouge_score() {
        // Expected values produced by Python rouge-score 0.1.2:
        // RougeScorer(["rougeL"], use_stemmer=False).score(a, b)["rougeL"].fmeasure
        let pairs: [(&str, &str, f64); 8] = [
            (
                "Summarize the discharge note for the patient.",
                "Summarize the discharge note for a patient in plain words.",
                0.7058823529411764,
            ),
            (
                "List every drug named in the abstract.",
                "Name every drug and dose mentioned in the abstract, with its route.",
                0.5263157894736842,
            ),
            (
                "What is the first-line treatment for type 2 diabetes?",
                "What is the first line of treatment for type-2 diabetes mellitus in adults?",
                0.8333333333333333,
            ),
            (
                "Extract all gene-disease relations (e.g. BRCA1 -> breast cancer) from the text.",
                "From the text, extract the relations between genes and diseases.",
                0.2608695652173913,
            ),
            (
                "Explain the HbA1c result of 6.5% to the patient.",
                "Explain to the patient what an HbA1c of 6.5% means.",
                0.5714285714285713,
            ),
            (
                "Classify the sentence as a premise or hypothesis.",
                "Translate the radiology report into plain language.",
                0.13333333333333333,
            ),
            (
                "Café naïve résumé: don't over-interpret",
                "cafe naive resume dont over interpret",
                0.26666666666666666,
            ),
            ("a a a b b c", "a b c a b c a", 0.6153846153846153),
        ];
        let mut interner = Interner::default();
        for (a, b, expected) in pairs {
            let (ta, tb) = (interner.intern(a), interner.intern(b));
            let got = Pattern::new(&ta).f_measure(&tb);
            assert!(
                (got - expected).abs() < 1e-9,
                "{a:?} / {b:?}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn bit_parallel_lcs_equals_dynamic_programming() {
        // Random sequences over small alphabets (many repeats), lengths 0..200 (1 to 4 words).
        let mut rng = XorShift64Star::new(5);
        for _ in 0..2000 {
            let (n, m, alphabet) = (
                (rng.next_u64() % 200) as usize,
                (rng.next_u64() % 200) as usize,
                1 + rng.next_u64() % 12,
            );
            let a: Vec<u32> = (0..n).map(|_| (rng.next_u64() % alphabet) as u32).collect();
            let b: Vec<u32> = (0..m).map(|_| (rng.next_u64() % alphabet) as u32).collect();
            let want = lcs_dp(&a, &b);
            assert_eq!(Pattern::new(&a).lcs(&b), want, "{a:?} {b:?}");
            if a.len() <= 64 {
                let mut table = vec![0u64; 16];
                for (i, &t) in a.iter().enumerate() {
                    table[t as usize] |= 1 << i;
                }
                assert_eq!(lcs_dense(&table, a.len(), &b), want, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn compare_finds_the_best_mean_and_top_k() {
        let mut i = Interner::default();
        let corpus: Vec<Vec<u32>> = [
            "Summarize the discharge note for the patient.",
            "List every drug named in the abstract.",
            "Summarize the discharge note for a patient in plain words.",
            "Translate the radiology report into plain language.",
        ]
        .iter()
        .map(|t| i.intern(t))
        .collect();
        let a = i.intern("Summarize the discharge note for the patient.");
        let s = compare(&a, &corpus, 2);
        assert_eq!(s.max.map(|m| m.0), Some(0));
        assert!((s.max.map_or(0.0, |m| m.1) - 1.0).abs() < 1e-12);
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 2]);
        let direct: f64 = corpus
            .iter()
            .map(|b| f_measure(lcs_dp(&a, b), a.len(), b.len()))
            .sum::<f64>()
            / 4.0;
        assert!((s.mean - direct).abs() < 1e-12);
    }
}
