//! Parsing a teacher's reply in the numbered format of the prompt ([`super::prompt`]):
//! tasks, usually separated by `###`, each
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
//! read as Alpaca's `post_process_gpt3_response` reads it, with the slack small chat models
//! need: a field line is `[N.] Field:` (any case, indented or not, the number optional and not
//! required to agree between fields: SmolLM2 numbers the fields 1, 2, 3, 4); a task starts at
//! each `Category:` and has the four fields in order. A last task cut off by
//! `finish_reason = "length"` is dropped; anything else (text outside a task, fields missing or
//! out of order, an unknown category, an empty instruction or output) is garbage, counted and
//! kept verbatim for the raw log.

use crate::data::Category;

/// One task read from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTask {
    /// The number the teacher gave its `Category:` line (`None` when it gave none).
    pub number: Option<usize>,
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
    /// Pieces that were not tasks, verbatim, with why.
    pub garbage: Vec<(String, String)>,
    /// Whether a last task was dropped because the reply was cut off.
    pub cut_off: bool,
}

const FIELDS: [&str; 4] = ["Category", "Instruction", "Input", "Output"];

/// `(number, field index, rest of the line)` when `line` starts a field.
fn field_line(line: &str) -> Option<(Option<usize>, usize, &str)> {
    let mut rest = line.trim_start().trim_start_matches(['*', '#', '-', ' ']);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let mut number = None;
    if digits > 0 {
        let after = &rest[digits..];
        let after = after.strip_prefix(['.', ')'])?;
        number = rest[..digits].parse().ok();
        rest = after.trim_start().trim_start_matches('*');
    }
    FIELDS.iter().enumerate().find_map(|(k, f)| {
        let head = rest.get(..f.len())?;
        if !head.eq_ignore_ascii_case(f) {
            return None;
        }
        let tail = rest[f.len()..].trim_start_matches('*').trim_start();
        let tail = tail.strip_prefix(':')?.trim_start_matches('*');
        Some((number, k, tail.trim_start()))
    })
}

/// One task being read: its fields so far and its text verbatim.
#[derive(Default)]
struct Block {
    number: Option<usize>,
    fields: Vec<(usize, String)>,
    raw: String,
}

impl Block {
    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.raw.trim().is_empty()
    }

    /// The task, or why the block is garbage.
    fn finish(self) -> Result<ParsedTask, (String, String)> {
        let order: Vec<usize> = self.fields.iter().map(|f| f.0).collect();
        if !order.starts_with(&[0, 1, 2, 3]) {
            let names: Vec<&str> = order.iter().map(|&k| FIELDS[k]).collect();
            let why = if names.is_empty() {
                "text outside any task".to_string()
            } else {
                format!("expected the fields Category, Instruction, Input, Output; found {names:?}")
            };
            return Err((self.raw, why));
        }
        let text = |k: usize| self.fields[k].1.trim().to_string();
        let category = match text(0).to_lowercase().trim_end_matches('.') {
            "qa" => Category::Qa,
            "ie" => Category::Ie,
            "gen" => Category::Gen,
            "other" => Category::Other,
            other => return Err((self.raw, format!("unknown category {other:?}"))),
        };
        let (instruction, input, output) = (text(1), text(2), text(3));
        if instruction.is_empty() || output.is_empty() {
            return Err((self.raw, "empty instruction or output".into()));
        }
        Ok(ParsedTask {
            number: self.number,
            category,
            instruction,
            input: if input.eq_ignore_ascii_case("<noinput>") {
                String::new()
            } else {
                input
            },
            output,
        })
    }
}

/// Parses `reply`; `cut_off` is whether it stopped for length (`finish_reason = "length"`).
pub fn parse_reply(reply: &str, cut_off: bool) -> Parsed {
    let mut blocks: Vec<Block> = Vec::new();
    let mut current = Block::default();
    for line in reply.lines() {
        if line.trim() == "###" {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        match field_line(line) {
            Some((number, 0, tail)) => {
                if !current.is_empty() {
                    blocks.push(std::mem::take(&mut current));
                }
                current.number = number;
                current.fields.push((0, tail.to_string()));
            }
            Some((_, k, tail)) => current.fields.push((k, tail.to_string())),
            None => {
                if let Some(last) = current.fields.last_mut() {
                    if !last.1.is_empty() {
                        last.1.push('\n');
                    }
                    last.1.push_str(line);
                }
            }
        }
        current.raw.push_str(line);
        current.raw.push('\n');
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    let mut out = Parsed::default();
    let last = blocks.len().saturating_sub(1);
    for (i, block) in blocks.into_iter().enumerate() {
        if cut_off && i == last {
            out.cut_off = true;
            continue;
        }
        match block.finish() {
            Ok(task) => out.tasks.push(task),
            Err(garbage) => out.garbage.push(garbage),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "Here are the new tasks.
###
4. Category: ie
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
        let p = parse_reply(REPLY, true);
        assert!(p.cut_off, "task 8 was cut off by the length limit");
        assert_eq!(p.tasks.len(), 3);
        let t = &p.tasks[0];
        assert_eq!(
            (t.number, t.category, t.instruction.as_str()),
            (Some(4), Category::Ie, "List the drugs in the note.")
        );
        assert_eq!(
            t.input,
            "Metformin 500 mg twice daily.\nLisinopril 10 mg daily."
        );
        assert_eq!(p.tasks[1].category, Category::Qa, "labels in any case");
        assert_eq!(p.tasks[1].input, "", "<noinput> is an empty input");
        assert_eq!(p.tasks[2].input, "");
        assert_eq!(p.garbage.len(), 2, "the preamble and task 6 are garbage");
        assert_eq!(p.garbage[0].1, "text outside any task");
        assert!(p.garbage[1].0.contains("6. Instruction: Explain"));
        assert!(p.garbage[1].1.contains("[\"Category\", \"Instruction\"]"));
    }

    #[test]
    fn a_reply_that_stopped_normally_keeps_its_last_task_and_bad_labels_are_garbage() {
        let reply = "9. Category: gen\n9. Instruction: Summarize the note.\n9. Input:\nPt stable.\n9. Output:\nThe patient is stable.";
        let p = parse_reply(reply, false);
        assert_eq!(p.tasks.len(), 1);
        assert!(!p.cut_off);
        let bad = parse_reply(
            "9. Category: xyz\n9. Instruction: A b c d.\n9. Input:\n<noinput>\n9. Output:\nOk.",
            false,
        );
        assert!(bad.tasks.is_empty());
        assert!(bad.garbage[0].1.contains("unknown category"));
        let empty = parse_reply(
            "Category: qa\nInstruction: A b c d.\nInput:\n<noinput>\nOutput:\n",
            false,
        );
        assert_eq!(empty.garbage[0].1, "empty instruction or output");
        let shuffled = parse_reply(
            "Category: qa\nInput:\nx\nInstruction: A b c d.\nOutput:\ny",
            false,
        );
        assert!(shuffled.garbage[0]
            .1
            .contains("found [\"Category\", \"Input\""));
        assert!(parse_reply("", false).tasks.is_empty());
        assert!(parse_reply("", true).garbage.is_empty());
    }

    /// What SmolLM2-135M-Instruct wrote for the bundled prompt at temperature 0.5: fields
    /// numbered 1 to 4, indented, no `###`, a line of chat before.
    #[test]
    fn small_model_numbering_and_no_separators() {
        let reply = "I'm ready to help! Here are some additional tasks:

1. Category: other
   1. Instruction: Write a short note for the patient about kidney failure.
2. Input:
The patient has had kidney disease for 3 months.

3. Output:
Your kidneys are not filtering blood well.

4. Category: gen
   2. Instruction: Explain dialysis to the patient in plain words.
5. Input:
<noinput>
6. Output:
Dialysis cleans your blood with a machine";
        let p = parse_reply(reply, true);
        assert_eq!(p.tasks.len(), 1);
        let t = &p.tasks[0];
        assert_eq!(t.number, Some(1));
        assert_eq!(t.category, Category::Other);
        assert_eq!(
            t.instruction,
            "Write a short note for the patient about kidney failure."
        );
        assert_eq!(t.input, "The patient has had kidney disease for 3 months.");
        assert_eq!(t.output, "Your kidneys are not filtering blood well.");
        assert!(p.cut_off, "the second task was cut off");
        assert_eq!(p.garbage.len(), 1, "the chat before the first task");
    }

    #[test]
    fn markdown_emphasis_and_unnumbered_fields_are_read() {
        let reply = "**Category:** qa\n**Instruction:** Name the enzyme that metformin activates.\n**Input:** <noinput>\n**Output:** AMP-activated protein kinase (AMPK).";
        let p = parse_reply(reply, false);
        assert_eq!(p.tasks.len(), 1, "{p:?}");
        assert_eq!(p.tasks[0].number, None);
        assert_eq!(p.tasks[0].input, "");
        assert_eq!(p.tasks[0].output, "AMP-activated protein kinase (AMPK).");
        assert!(field_line("12) Output: x").is_some());
        assert!(
            field_line("12 Output: x").is_none(),
            "a number needs . or )"
        );
        assert!(field_line("Outputs: x").is_none());
        assert!(field_line("The Output: x").is_none());
    }
}
