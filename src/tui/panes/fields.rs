//! A form of named text fields with one focused: the Train pane's new-run form and the Chat
//! pane's sampling popup. Each form parses and checks its own fields; typing, deleting and
//! moving between them is the same everywhere.

/// One field: its name, what the person typed, and why it is not accepted, if it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name shown beside it (a config key such as `optim.learning_rate`).
    pub key: &'static str,
    /// What the person typed.
    pub value: String,
    /// Why the value is not accepted, if it is not.
    pub error: Option<String>,
}

/// Fields in order, one focused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldForm {
    /// The fields, in order.
    pub fields: Vec<Field>,
    /// Index of the focused field.
    pub focus: usize,
}

impl FieldForm {
    /// A form of `(key, value)` fields, the first focused.
    pub fn new(fields: impl IntoIterator<Item = (&'static str, String)>) -> FieldForm {
        FieldForm {
            fields: fields
                .into_iter()
                .map(|(key, value)| Field {
                    key,
                    value,
                    error: None,
                })
                .collect(),
            focus: 0,
        }
    }

    /// Types `c` into the focused field.
    pub fn type_char(&mut self, c: char) {
        if let Some(f) = self.fields.get_mut(self.focus) {
            f.value.push(c);
        }
    }

    /// Deletes the last character of the focused field.
    pub fn backspace(&mut self) {
        if let Some(f) = self.fields.get_mut(self.focus) {
            f.value.pop();
        }
    }

    /// Moves the focus `delta` fields, wrapping around.
    pub fn move_focus(&mut self, delta: isize) {
        let n = self.fields.len() as isize;
        self.focus = (self.focus as isize + delta).rem_euclid(n.max(1)) as usize;
    }

    /// Applies an editing action (a character, Backspace, the next or previous field, `↓`
    /// and `↑` included); returns whether `action` was one.
    pub fn edit(&mut self, action: &crate::tui::Action) -> bool {
        use crate::tui::Action;
        match action {
            Action::FieldChar(c) => self.type_char(*c),
            Action::FieldBackspace => self.backspace(),
            Action::FormNextField | Action::Down => self.move_focus(1),
            Action::FormPrevField | Action::Up => self.move_focus(-1),
            _ => return false,
        }
        true
    }

    /// The field named `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Field> {
        self.fields.iter_mut().find(|f| f.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_goes_to_the_focused_field_and_focus_wraps() {
        let mut f = FieldForm::new([("a", "1".to_string()), ("b", String::new())]);
        f.type_char('2');
        f.move_focus(1);
        f.type_char('x');
        f.backspace();
        f.backspace();
        f.type_char('y');
        assert_eq!(f.fields[0].value, "12");
        assert_eq!(f.fields[1].value, "y");
        f.move_focus(1);
        assert_eq!(f.focus, 0);
        f.move_focus(-1);
        assert_eq!(f.focus, 1);
        assert!(f.get_mut("b").is_some() && f.get_mut("c").is_none());
        // The editing actions, as the panes hand them over.
        use crate::tui::Action;
        assert!(f.edit(&Action::FieldChar('z')) && f.edit(&Action::Down));
        assert!(!f.edit(&Action::Save));
        assert_eq!((f.fields[1].value.as_str(), f.focus), ("yz", 0));
    }
}
