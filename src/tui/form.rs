//! The multi-line edit form for one record: category selector plus task, instruction, input
//! and output text areas (ratatui-textarea).

use crate::data::{Category, Instruction};
use ratatui_textarea::{Input, Key, TextArea, WrapMode};
use serde_json::{Map, Value};

/// What applying the form does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormTarget {
    /// Replace the record at this index of the file.
    Edit {
        /// Index in the file's records.
        index: usize,
    },
    /// Append a new record.
    New,
}

/// The labels of the text fields, in focus order after the category.
pub const FIELD_LABELS: [&str; 4] = ["Task", "Instruction", "Input", "Output"];

/// The form's state. Focus 0 is the category selector, 1..=4 the text fields.
pub struct EditForm {
    /// What applying does.
    pub target: FormTarget,
    /// The record's id (not editable here; `E` edits it as JSON).
    pub id: String,
    /// The selected category.
    pub category: Category,
    /// Task, instruction, input, output.
    pub fields: [TextArea<'static>; 4],
    /// Which part has the keyboard: 0 category, 1..=4 a text field.
    pub focus: usize,
    /// Why the last apply was refused.
    pub error: Option<String>,
    extra: Map<String, Value>,
}

impl std::fmt::Debug for EditForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditForm")
            .field("target", &self.target)
            .field("id", &self.id)
            .field("focus", &self.focus)
            .finish_non_exhaustive()
    }
}

fn area(text: &str) -> TextArea<'static> {
    let mut t = TextArea::new(text.split('\n').map(str::to_string).collect());
    t.set_cursor_line_style(ratatui::style::Style::default());
    t.set_wrap_mode(WrapMode::WordOrGlyph);
    t
}

impl EditForm {
    /// A form holding `record`'s fields, focused on the instruction.
    pub fn new(record: &Instruction, target: FormTarget) -> EditForm {
        EditForm {
            target,
            id: record.id.clone(),
            category: record.category,
            fields: [
                area(&record.task),
                area(&record.instruction),
                area(&record.input),
                area(&record.output),
            ],
            focus: 2,
            error: None,
            extra: record.extra.clone(),
        }
    }

    /// Moves focus forward, wrapping.
    pub fn next_field(&mut self) {
        self.focus = (self.focus + 1) % 5;
    }

    /// Moves focus back, wrapping.
    pub fn prev_field(&mut self) {
        self.focus = (self.focus + 4) % 5;
    }

    /// Feeds a key to the focused part. On the category, ←/→/Space cycle; the task field is
    /// one line (Enter is ignored).
    pub fn input(&mut self, input: Input) {
        if self.focus == 0 {
            let i = self.category as usize;
            let step = match input.key {
                Key::Left => 3,
                Key::Right | Key::Char(' ') => 1,
                _ => 0,
            };
            self.category = Category::ALL[(i + step) % 4];
            return;
        }
        if self.focus == 1 && matches!(input.key, Key::Enter) {
            return;
        }
        self.fields[self.focus - 1].input(input);
    }

    /// The record the form describes now.
    pub fn to_record(&self) -> Instruction {
        let text = |i: usize| self.fields[i].lines().join("\n");
        Instruction {
            id: self.id.clone(),
            category: self.category,
            task: text(0).trim().to_string(),
            instruction: text(1),
            input: text(2),
            output: text(3),
            extra: self.extra.clone(),
        }
    }
}
