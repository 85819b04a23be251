//! Editing one record in the user's text editor, as pretty-printed JSON.
//!
//! Used by `bioinstruct seeds edit ID` and the Seeds pane's `E` key (which suspends the
//! terminal interface around it).

use crate::data::{parse_jsonl, Instruction};
use std::path::Path;
use std::process::Command;

/// Why an edit in the external editor did not produce a record.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The editor could not be started or the temporary file not written.
    #[error("cannot run editor {editor:?}: {source}")]
    Spawn {
        /// The command line tried.
        editor: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The editor exited with a failure status; the edit is discarded.
    #[error("editor {editor:?} exited with {status}; edit discarded")]
    Failed {
        /// The command line.
        editor: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The edited text is not a valid record; every problem is listed.
    #[error("edited record is invalid: {0}")]
    Invalid(String),
}

/// The editor command line: `configured` when non-empty, else `$VISUAL`, `$EDITOR`, `vi`.
pub fn editor_command(configured: &str) -> String {
    [
        Some(configured.to_string()),
        std::env::var("VISUAL").ok(),
        std::env::var("EDITOR").ok(),
    ]
    .into_iter()
    .flatten()
    .find(|e| !e.trim().is_empty())
    .unwrap_or_else(|| "vi".to_string())
}

/// Writes `record` as pretty JSON to a temporary file, runs the editor on it (inheriting the
/// terminal), and parses the result with the same rules as a JSONL line.
///
/// # Errors
/// [`EditError`] when the editor cannot run or fails, or the edited text is not a valid record.
pub fn edit_record(
    record: &Instruction,
    configured_editor: &str,
) -> Result<Instruction, EditError> {
    let editor = editor_command(configured_editor);
    let spawn_err = |source| EditError::Spawn {
        editor: editor.clone(),
        source,
    };
    let file = tempfile::Builder::new()
        .prefix(&format!("bioinstruct-{}-", record.id))
        .suffix(".json")
        .tempfile()
        .map_err(spawn_err)?;
    let pretty = serde_json::to_string_pretty(record).unwrap_or_default();
    std::fs::write(file.path(), pretty).map_err(spawn_err)?;

    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = Command::new(program)
        .args(words)
        .arg(file.path())
        .status()
        .map_err(spawn_err)?;
    if !status.success() {
        return Err(EditError::Failed { editor, status });
    }
    let text = std::fs::read_to_string(file.path()).map_err(spawn_err)?;
    parse_edited(file.path(), &text)
}

/// Parses an edited record (any JSON layout) with the JSONL rules.
///
/// # Errors
/// [`EditError::Invalid`] listing every problem.
pub fn parse_edited(path: &Path, text: &str) -> Result<Instruction, EditError> {
    let one_line = serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .map_err(|e| EditError::Invalid(format!("not valid JSON: {e}")))?;
    let mut loaded = parse_jsonl(path, &one_line);
    match loaded.records.pop() {
        Some(r) => Ok(r),
        None => Err(EditError::Invalid(
            loaded
                .errors()
                .map(|e| match &e.field {
                    Some(f) => format!("{f}: {}", e.problem),
                    None => e.problem.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_text_is_validated_field_by_field() {
        let ok = parse_edited(
            Path::new("e.json"),
            "{\n \"id\": \"seed-001\", \"category\": \"ie\", \"task\": \"t\",\n \"instruction\": \"i\", \"input\": \"\", \"output\": \"o\"\n}",
        )
        .expect("valid");
        assert_eq!(ok.id, "seed-001");
        let bad = parse_edited(Path::new("e.json"), "{\"id\":\"x\",\"category\":\"nope\"}")
            .expect_err("invalid");
        let msg = bad.to_string();
        assert!(msg.contains("category: unknown category"), "{msg}");
        assert!(msg.contains("instruction: is missing"), "{msg}");
    }

    #[test]
    fn an_editor_that_changes_the_file_edits_the_record() {
        let record = parse_edited(
            Path::new("e.json"),
            r#"{"id":"seed-001","category":"qa","task":"t","instruction":"old","output":"o"}"#,
        )
        .expect("valid");
        // `sed -i` stands in for a person typing in an editor.
        let edited = edit_record(&record, "sed -i s/old/new/").expect("edit");
        assert_eq!(edited.instruction, "new");
        let failed = edit_record(&record, "false");
        assert!(matches!(failed, Err(EditError::Failed { .. })));
    }
}
