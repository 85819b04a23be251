//! Answers from generated text: the first choice word (`yes`/`no`/`maybe`), a list of
//! mentions in whatever list format a model writes, and mentions mapped back onto a
//! sentence's tokens as BIO tags.

/// The choice that the text names first, as a whole word or phrase, any case; `None` when
/// it names none. Where two choices start at the same place, the longer wins.
pub fn first_choice<'a>(text: &str, choices: &'a [String]) -> Option<&'a str> {
    let lower = text.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut best: Option<(usize, usize, &str)> = None;
    for choice in choices {
        let needle = choice.to_lowercase();
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(found) = lower[from..].find(&needle) {
            let at = from + found;
            let end = at + needle.len();
            let before_ok = lower[..at].chars().next_back().is_none_or(|c| !is_word(c));
            let after_ok = lower[end..].chars().next().is_none_or(|c| !is_word(c));
            if before_ok && after_ok {
                let better = match best {
                    None => true,
                    Some((b_at, b_len, _)) => at < b_at || (at == b_at && needle.len() > b_len),
                };
                if better {
                    best = Some((at, needle.len(), choice.as_str()));
                }
                break;
            }
            from = at + needle.chars().next().map_or(1, char::len_utf8);
        }
    }
    best.map(|(_, _, c)| c)
}

/// Words that mean "no mention".
const NONE_WORDS: [&str; 7] = [
    "none",
    "n/a",
    "na",
    "nil",
    "no diseases",
    "no disease",
    "no disease mentioned",
];

fn clean_mention(s: &str) -> Option<String> {
    let t = s
        .trim()
        .trim_matches(|c: char| {
            c == '"'
                || c == '\''
                || c == '`'
                || c == '*'
                || c == '“'
                || c == '”'
                || c.is_whitespace()
        })
        .trim_end_matches(['.', ';', ','])
        .trim();
    (!t.is_empty() && !NONE_WORDS.contains(&t.to_lowercase().as_str())).then(|| t.to_string())
}

/// Strips a bullet or a number from the start of a list line (`- `, `* `, `• `, `1. `,
/// `2) `); `None` when the line has none.
fn strip_bullet(line: &str) -> Option<&str> {
    let t = line.trim_start();
    for b in ["- ", "* ", "• ", "+ "] {
        if let Some(rest) = t.strip_prefix(b) {
            return Some(rest);
        }
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let rest = &t[digits..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(r);
        }
    }
    None
}

/// Drops a short label before a colon (`Diseases: …`, `Answer: …`).
fn after_label(line: &str) -> &str {
    match line.split_once(':') {
        Some((label, rest)) if label.chars().count() <= 40 && !label.contains(',') => rest,
        _ => line,
    }
}

/// The mentions a model listed: the first JSON array of strings in the text (also with
/// Python's single quotes), else a bulleted or numbered list, else the first line that
/// holds something, split at commas and semicolons. Quotes, bullets, a leading label and
/// trailing full stops are dropped; `none`, `[]` and the like give no mention.
pub fn mention_list(text: &str) -> Vec<String> {
    if let Some(start) = text.find('[') {
        if let Some(len) = text[start..].find(']') {
            let inside = &text[start..=start + len];
            if let Ok(list) = serde_json::from_str::<Vec<String>>(inside) {
                return list.iter().filter_map(|m| clean_mention(m)).collect();
            }
            // Python-style ['a', 'b'] or unquoted [a, b].
            return inside[1..inside.len() - 1]
                .split([',', ';'])
                .filter_map(clean_mention)
                .collect();
        }
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bullets: Vec<&str> = lines.iter().filter_map(|l| strip_bullet(l)).collect();
    if !bullets.is_empty() {
        return bullets.into_iter().filter_map(clean_mention).collect();
    }
    let Some(first) = lines.first() else {
        return Vec::new();
    };
    after_label(first)
        .split([',', ';'])
        .flat_map(|part| {
            // "a and b" as the last item of a list.
            let p = part.trim();
            match p.strip_prefix("and ") {
                Some(rest) => vec![rest],
                None => vec![p],
            }
        })
        .filter_map(clean_mention)
        .collect()
}

/// A mention split as the NCBI-disease corpus splits text: runs of letters and digits, and
/// every other character that is not a space on its own.
pub fn corpus_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Mentions mapped onto `tokens` as BIO tags of type `kind`: each mention, split by
/// [`corpus_tokens`], goes to its first case-insensitive match in `tokens` none of whose
/// tokens a mention before it took. Returns the tags and the mentions that found no match
/// (false positives).
pub fn tag_mentions(
    tokens: &[String],
    mentions: &[String],
    kind: &str,
) -> (Vec<String>, Vec<String>) {
    let lower: Vec<String> = tokens.iter().map(|t| t.to_lowercase()).collect();
    let mut tags = vec!["O".to_string(); tokens.len()];
    let mut used = vec![false; tokens.len()];
    let mut unmatched = Vec::new();
    for mention in mentions {
        let parts: Vec<String> = corpus_tokens(mention)
            .iter()
            .map(|t| t.to_lowercase())
            .collect();
        let n = parts.len();
        let found = (n > 0 && n <= tokens.len())
            .then(|| {
                (0..=tokens.len() - n)
                    .find(|&s| lower[s..s + n] == parts[..] && !used[s..s + n].iter().any(|&u| u))
            })
            .flatten();
        match found {
            Some(s) => {
                for (i, slot) in (s..s + n).enumerate() {
                    used[slot] = true;
                    tags[slot] = format!("{}-{kind}", if i == 0 { "B" } else { "I" });
                }
            }
            None => unmatched.push(mention.clone()),
        }
    }
    (tags, unmatched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_first_choice_word_wins() {
        let c = s(&["yes", "no", "maybe"]);
        assert_eq!(first_choice("Maybe, but yes", &c), Some("maybe"));
        assert_eq!(first_choice("The answer is: No.", &c), Some("no"));
        assert_eq!(first_choice("Yesterday nobody knew", &c), None);
        assert_eq!(first_choice("", &c), None);
        assert_eq!(first_choice("not known; yes", &c), Some("yes"));
    }

    #[test]
    fn mention_lists_in_sloppy_formats() {
        assert_eq!(
            mention_list(r#"["breast cancer", "ovarian cancer"]"#),
            s(&["breast cancer", "ovarian cancer"])
        );
        assert_eq!(
            mention_list("Here they are: ['ataxia', 'telangiectasia'] hope it helps"),
            s(&["ataxia", "telangiectasia"])
        );
        assert_eq!(
            mention_list("Diseases:\n- Huntington's disease\n- **ataxia**\n* gout."),
            s(&["Huntington's disease", "ataxia", "gout"])
        );
        assert_eq!(
            mention_list("1. colorectal cancer\n2) HNPCC"),
            s(&["colorectal cancer", "HNPCC"])
        );
        assert_eq!(
            mention_list("Disease mentions: myotonic dystrophy, DM, and cataract.\nMore text"),
            s(&["myotonic dystrophy", "DM", "cataract"])
        );
        assert_eq!(mention_list("[]"), Vec::<String>::new());
        assert_eq!(mention_list("None."), Vec::<String>::new());
        assert_eq!(mention_list("  \n"), Vec::<String>::new());
    }

    #[test]
    fn corpus_tokens_split_punctuation_apart() {
        assert_eq!(
            corpus_tokens("Wilms' tumor (WT1)-related"),
            s(&["Wilms", "'", "tumor", "(", "WT1", ")", "-", "related"])
        );
    }

    #[test]
    fn mentions_take_the_first_unused_match_and_misses_are_kept() {
        let tokens = s(&["Cancer", "and", "breast", "cancer", ",", "cancer"]);
        let (tags, missed) = tag_mentions(
            &tokens,
            &s(&["cancer", "breast cancer", "cancer", "gout"]),
            "Disease",
        );
        assert_eq!(
            tags,
            s(&["B-Disease", "O", "B-Disease", "I-Disease", "O", "B-Disease"])
        );
        assert_eq!(missed, s(&["gout"]));
        // A repeated mention with no unused match left is a false positive.
        let (_, missed) = tag_mentions(&tokens[..1], &s(&["cancer", "cancer"]), "Disease");
        assert_eq!(missed, s(&["cancer"]));
    }
}
