//! Stanford Alpaca's filters for generated instructions (`generate_instruction.py`, with its
//! values): 4 to 150 words; none of the blacklisted words (whole words, any case); not
//! starting with "Write a program", a punctuation mark or a non-ASCII character; and ROUGE-L
//! at most 0.7 against every seed and every instruction kept so far ([`super::rouge`]).

use serde::{Deserialize, Serialize};

/// Alpaca's blacklist: tasks a language model cannot do from text alone.
pub const BLACKLIST: [&str; 18] = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
];

/// Fewest words an instruction may have (Alpaca drops `<= 3`).
pub const MIN_WORDS: usize = 4;
/// Most words an instruction may have.
pub const MAX_WORDS: usize = 150;
/// Highest ROUGE-L F-measure allowed against any seed or kept instruction.
pub const MAX_ROUGE_L: f64 = 0.7;

/// Why an instruction is rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// Fewer than [`MIN_WORDS`] words.
    TooShort {
        /// Words counted (whitespace-separated).
        words: usize,
    },
    /// More than [`MAX_WORDS`] words.
    TooLong {
        /// Words counted.
        words: usize,
    },
    /// Contains a word of [`BLACKLIST`].
    Blacklisted {
        /// The word.
        word: String,
    },
    /// Starts with "Write a program".
    WriteAProgram,
    /// Starts with a punctuation mark.
    StartsWithPunctuation,
    /// Starts with a non-ASCII character.
    NonAsciiStart,
    /// ROUGE-L above [`MAX_ROUGE_L`] against an instruction already there.
    TooSimilar {
        /// The id of the most similar instruction.
        to: String,
        /// Its ROUGE-L F-measure.
        rouge_l: f64,
    },
    /// The same instruction and input as one already kept (or seen earlier in the file).
    Duplicate {
        /// The id of the first one.
        of: String,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooShort { words } => write!(f, "too short ({words} words)"),
            Rejection::TooLong { words } => write!(f, "too long ({words} words)"),
            Rejection::Blacklisted { word } => write!(f, "blacklisted word {word:?}"),
            Rejection::WriteAProgram => f.write_str("starts with \"Write a program\""),
            Rejection::StartsWithPunctuation => f.write_str("starts with punctuation"),
            Rejection::NonAsciiStart => f.write_str("starts with a non-ASCII character"),
            Rejection::TooSimilar { to, rouge_l } => {
                write!(f, "ROUGE-L {rouge_l:.3} with {to}")
            }
            Rejection::Duplicate { of } => write!(f, "duplicate of {of}"),
        }
    }
}

/// Whether `word` (or phrase) occurs in `text` as whole words, in any case: Python's
/// `re.search(r"\b(word)\b", text, re.IGNORECASE)`, where word characters are letters,
/// digits and `_`.
fn contains_word(text: &str, word: &str) -> bool {
    let lower = text.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    lower.match_indices(word).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The first of Alpaca's text rules `instruction` breaks, in Alpaca's order.
pub fn text_rejection(instruction: &str) -> Option<Rejection> {
    let inst = instruction.trim();
    let words = inst.split_whitespace().count();
    if words < MIN_WORDS {
        return Some(Rejection::TooShort { words });
    }
    if words > MAX_WORDS {
        return Some(Rejection::TooLong { words });
    }
    if let Some(word) = BLACKLIST.iter().find(|w| contains_word(inst, w)) {
        return Some(Rejection::Blacklisted {
            word: (*word).to_string(),
        });
    }
    if inst.starts_with("Write a program") {
        return Some(Rejection::WriteAProgram);
    }
    let first = inst.chars().next()?;
    if first.is_ascii_punctuation() {
        return Some(Rejection::StartsWithPunctuation);
    }
    if !first.is_ascii() {
        return Some(Rejection::NonAsciiStart);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_of_alpacas_rules() {
        let ok = "Summarize the discharge note for the patient.";
        assert_eq!(text_rejection(ok), None);
        assert_eq!(
            text_rejection("Summarize the note."),
            Some(Rejection::TooShort { words: 3 })
        );
        assert_eq!(
            text_rejection(&"word ".repeat(151)),
            Some(Rejection::TooLong { words: 151 })
        );
        assert_eq!(text_rejection(&"word ".repeat(150)), None);
        for (text, word) in [
            ("Describe the chest X-ray IMAGE in two sentences.", "image"),
            ("Plot the glucose readings over the week.", "plot"),
            ("Please go to the ward and list the beds.", "go to"),
            ("Explain the Diagram of the nephron briefly.", "diagram"),
        ] {
            assert_eq!(
                text_rejection(text),
                Some(Rejection::Blacklisted { word: word.into() }),
                "{text}"
            );
        }
        // Whole words only.
        assert_eq!(
            text_rejection("List the imagery techniques used in the study."),
            None
        );
        assert_eq!(
            text_rejection("Explain the filesystem_map of the cohort."),
            None
        );
        assert_eq!(
            text_rejection("Write a program that sorts the lab values."),
            Some(Rejection::WriteAProgram)
        );
        assert_eq!(
            text_rejection("\"Explain\" what this lab result means."),
            Some(Rejection::StartsWithPunctuation)
        );
        assert_eq!(
            text_rejection("¿Qué significa este resultado de laboratorio?"),
            Some(Rejection::NonAsciiStart)
        );
    }
}
