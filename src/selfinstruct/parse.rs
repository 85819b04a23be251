//! Parsing a teacher's reply in the numbered format of the prompt
//! ([`super::prompt`]): tasks separated by `###`, each
//!
//! ```text
//! 4. Category: ie
//! 4. Instruction: …
//! 4. Input:
//! … (or <noinput>)
//! 4. Output:
//! …
//! ```
//!
//! as Alpaca's `post_process_gpt3_response` reads it: the reply continues the prompt, which
//! ended at `N. Category:`; a last task cut off by `finish_reason = "length"` is dropped;
//! anything else that does not have the four fields under one number is garbage, counted and
//! kept verbatim for the raw log.

use crate::data::Category;

/// One task read from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTask {
    /// The number the teacher gave it.
    pub number: usize,
    /// Its category label.
    pub category: Category,
    /// The instruction, trimmed.
    pub instruction: String,
    /// The input, trimmed; empty for `<noinput>`.
    pub input: String,
    /// The output, trimmed.
    pub output: String,
}

/// What a reply held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Well-formed tasks, in order.
    pub tasks: Vec<ParsedTask>,
    /// Blocks that were not tasks, verbatim, with why.
    pub garbage: Vec<(String, String)>,
    /// Whether a last block was dropped because the reply was cut off.
    pub cut_off: bool,
}

const FIELDS: [&str; 4] = ["Category", "Instruction", "Input", "Output"];

/// Splits one block into `(number, field, text)` parts at lines (or line starts) of the form
/// `N. Field:`.
fn fields(block: &str) -> Vec<(usize, &'static str, String)> {
    let mut parts: Vec<(usize, &'static str, String)> = Vec::new();
    for line in block.lines() {
        let trimmed = line.trim_start();
        let head = trimmed
            .split_once('.')
            .and_then(|(n, rest)| Some((n.trim().parse::<usize>().ok()?, rest.trim_start())))
            .and_then(|(n, rest)| {
                FIELDS.iter().find_map(|f| {
                    rest.strip_prefix(f)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|r| (n, *f, r.trim_start().to_string()))
                })
            });
        match head {
            Some(part) => parts.push(part),
            None => {
                if let Some(last) = parts.last_mut() {
                    if !last.2.is_empty() {
                        last.2.push('\n');
                    }
                    last.2.push_str(line);
                }
            }
        }
    }
    parts
}

/// Parses `reply`, the teacher's continuation of a prompt that ended with
/// `{first_number}. Category:`; `cut_off` is whether it stopped for length.
pub fn parse_reply(reply: &str, first_number: usize, cut_off: bool) -> Parsed {
    let text = format!("{first_number}. Category:{reply}");
    let blocks: Vec<&str> = text.split("###").filter(|b| !b.trim().is_empty()).collect();
    let mut out = Parsed::default();
    for (i, block) in blocks.iter().enumerate() {
        if cut_off && i == blocks.len() - 1 {
            out.cut_off = true;
            continue;
        }
        let parts = fields(block);
        let numbers: Vec<usize> = parts.iter().map(|p| p.0).collect();
        let names: Vec<&str> = parts.iter().map(|p| p.1).collect();
        if names != FIELDS {
            out.garbage.push((
                block.to_string(),
                format!(
                    "expected the fields Category, Instruction, Input, Output; found {names:?}"
                ),
            ));
            continue;
        }
        if numbers.iter().any(|&n| n != numbers[0]) {
            out.garbage
                .push((block.to_string(), format!("mixed task numbers {numbers:?}")));
            continue;
        }
        let text = |k: usize| parts[k].2.trim().to_string();
        let category = match text(0).to_lowercase().as_str() {
            "qa" => Category::Qa,
            "ie" => Category::Ie,
            "gen" => Category::Gen,
            "other" => Category::Other,
            other => {
                out.garbage
                    .push((block.to_string(), format!("unknown category {other:?}")));
                continue;
            }
        };
        let input = text(2);
        let (instruction, output) = (text(1), text(3));
        if instruction.is_empty() || output.is_empty() {
            out.garbage
                .push((block.to_string(), "empty instruction or output".into()));
            continue;
        }
        out.tasks.push(ParsedTask {
            number: numbers[0],
            category,
            instruction,
            input: if input.eq_ignore_ascii_case("<noinput>") {
                String::new()
            } else {
                input
            },
            output,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = " ie
4. Instruction:   List the drugs in the note.  
4. Input:
Metformin 500 mg twice daily.
Lisinopril 10 mg daily.
4. Output:
metformin; lisinopril
###
5. Category: QA
5. Instruction: What does HbA1c measure?
5. Input:
<noinput>
5. Output:
Average blood glucose over about three months.
###
6. Category: gen
6. Instruction: Explain
###
7. Category: other
7. Instruction: Rewrite the sentence for a child.
7. Input:
<NoInput>
7. Output:
The heart pumps blood.
###
8. Category: ie
8. Instruction: Extract the dose";

    #[test]
    fn tasks_noinput_whitespace_garbage_and_a_cut_off_last_task() {
        let p = parse_reply(REPLY, 4, true);
        assert!(p.cut_off, "task 8 was cut off by the length limit");
        assert_eq!(p.tasks.len(), 3);
        let t = &p.tasks[0];
        assert_eq!(
            (t.number, t.category, t.instruction.as_str()),
            (4, Category::Ie, "List the drugs in the note.")
        );
        assert_eq!(
            t.input,
            "Metformin 500 mg twice daily.\nLisinopril 10 mg daily."
        );
        assert_eq!(p.tasks[1].category, Category::Qa, "labels in any case");
        assert_eq!(p.tasks[1].input, "", "<noinput> is an empty input");
        assert_eq!(p.tasks[2].input, "");
        assert_eq!(p.garbage.len(), 1, "task 6 lacks fields");
        assert!(p.garbage[0].0.contains("6. Instruction: Explain"));
    }

    #[test]
    fn a_reply_that_stopped_normally_keeps_its_last_task_and_bad_labels_are_garbage() {
        let reply = " gen\n9. Instruction: Summarize the note.\n9. Input:\nPt stable.\n9. Output:\nThe patient is stable.";
        let p = parse_reply(reply, 9, false);
        assert_eq!(p.tasks.len(), 1);
        assert!(!p.cut_off);
        let bad = parse_reply(
            " xyz\n9. Instruction: A b c d.\n9. Input:\n<noinput>\n9. Output:\nOk.",
            9,
            false,
        );
        assert!(bad.tasks.is_empty());
        assert!(bad.garbage[0].1.contains("unknown category"));
        let mixed = parse_reply(
            " qa\n9. Instruction: A b c d.\n10. Input:\n<noinput>\n9. Output:\nOk.",
            9,
            false,
        );
        assert!(mixed.garbage[0].1.contains("mixed task numbers"));
        assert!(parse_reply("", 3, false).tasks.is_empty());
    }
}
