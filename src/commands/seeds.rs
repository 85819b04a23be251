//! `bioinstruct seeds …`: the same operations as the Seeds pane.
//!
//! Each function writes its report to `out` and returns an error (one line, naming the file,
//! line and field where there is one) for the binary to print and exit non-zero on.

use crate::config::Settings;
use crate::data::{
    read_any, to_alpaca, to_jsonl, Category, Format, Instruction, InstructionFile, Loaded,
};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Opens the seed file the settings name, creating the workspace copy of the bundled seeds on
/// first use; warns on stderr about invalid lines (they are kept and written back on save).
///
/// # Errors
/// The file cannot be read or created.
pub fn open_seeds(settings: &Settings) -> Result<InstructionFile> {
    if settings.ensure_seeds()? {
        eprintln!(
            "bioinstruct: created {} from the 80 bundled seed tasks",
            settings.seeds_path.display()
        );
    }
    let file = InstructionFile::open(&settings.seeds_path)?;
    if !file.invalid.is_empty() {
        eprintln!(
            "warning: {} invalid line(s) in {} are kept as they are; run `bioinstruct seeds validate {}`",
            file.invalid.len(),
            file.path.display(),
            file.path.display()
        );
    }
    Ok(file)
}

/// `seeds list`: one line per record (id, category, task, instruction), or a JSON array.
///
/// # Errors
/// Reading the file, or writing to `out`.
pub fn list(
    settings: &Settings,
    category: Option<Category>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let file = open_seeds(settings)?;
    let records: Vec<&Instruction> = file
        .records
        .iter()
        .filter(|r| category.is_none_or(|c| r.category == c))
        .collect();
    if json {
        serde_json::to_writer_pretty(&mut *out, &records)?;
        writeln!(out)?;
        return Ok(());
    }
    let id_width = records.iter().map(|r| r.id.len()).max().unwrap_or(2);
    for r in &records {
        let first_line = r.instruction.lines().next().unwrap_or("");
        writeln!(
            out,
            "{:id_width$}  {:5}  {:36}  {}",
            r.id,
            r.category.as_str(),
            r.task,
            truncate(first_line, 80)
        )?;
    }
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `seeds show ID`: the full record as text, or as JSON.
///
/// # Errors
/// No record has that id.
pub fn show(settings: &Settings, id: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let file = open_seeds(settings)?;
    let r = file.get(id).with_context(|| missing(id, &file))?;
    if json {
        serde_json::to_writer_pretty(&mut *out, r)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}  [{}]  {}", r.id, r.category, r.task)?;
        writeln!(out, "\nInstruction:\n{}", r.instruction)?;
        if !r.input.is_empty() {
            writeln!(out, "\nInput:\n{}", r.input)?;
        }
        writeln!(out, "\nOutput:\n{}", r.output)?;
    }
    Ok(())
}

fn missing(id: &str, file: &InstructionFile) -> String {
    format!("no record with id {id:?} in {}", file.path.display())
}

/// The fields `seeds add` and `seeds edit` take from flags.
#[derive(Debug, Clone, Default)]
pub struct FieldArgs {
    /// `--category`.
    pub category: Option<Category>,
    /// `--task`.
    pub task: Option<String>,
    /// `--instruction`.
    pub instruction: Option<String>,
    /// `--input`.
    pub input: Option<String>,
    /// `--output`.
    pub output: Option<String>,
}

impl FieldArgs {
    fn is_empty(&self) -> bool {
        self.category.is_none()
            && self.task.is_none()
            && self.instruction.is_none()
            && self.input.is_none()
            && self.output.is_none()
    }

    fn apply(self, r: &mut Instruction) {
        if let Some(c) = self.category {
            r.category = c;
        }
        for (value, field) in [
            (self.task, &mut r.task),
            (self.instruction, &mut r.instruction),
            (self.input, &mut r.input),
            (self.output, &mut r.output),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
    }
}

fn check(r: &Instruction) -> Result<()> {
    let problems = r.problems();
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|(f, p)| format!("{f}: {p}")).collect();
    bail!("{}: {}", r.id, list.join("; "))
}

/// `seeds add`: appends a record (id `seed-NNN` unless given) and saves. Prints the id.
///
/// # Errors
/// A missing or invalid field, a taken id, or a failed save.
pub fn add(
    settings: &Settings,
    id: Option<String>,
    fields: FieldArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let mut file = open_seeds(settings)?;
    let id = id.unwrap_or_else(|| file.next_id("seed"));
    if file.get(&id).is_some() {
        bail!("id {id:?} is already used in {}", file.path.display());
    }
    let mut record = Instruction {
        id,
        category: fields.category.context("--category is required")?,
        task: String::new(),
        instruction: String::new(),
        input: String::new(),
        output: String::new(),
        extra: Default::default(),
    };
    fields.apply(&mut record);
    check(&record)?;
    writeln!(out, "{}", record.id)?;
    file.records.push(record);
    file.save()?;
    Ok(())
}

/// `seeds edit ID`: sets the fields given as flags, or, with none, opens the record in the
/// editor. Saves.
///
/// # Errors
/// Unknown id, an invalid result, a failed editor, or a failed save.
pub fn edit(settings: &Settings, id: &str, fields: FieldArgs) -> Result<()> {
    let mut file = open_seeds(settings)?;
    let index = file.position(id).with_context(|| missing(id, &file))?;
    let mut record = file.records[index].clone();
    if fields.is_empty() {
        record = crate::editor::edit_record(&record, &settings.config.tui.editor)?;
        if record.id != id && file.get(&record.id).is_some() {
            bail!(
                "id {:?} is already used in {}",
                record.id,
                file.path.display()
            );
        }
    } else {
        fields.apply(&mut record);
    }
    check(&record)?;
    file.records[index] = record;
    file.save()?;
    Ok(())
}

/// `seeds rm ID`: removes a record and saves (the previous file stays as `<file>.bak`).
///
/// # Errors
/// Unknown id or a failed save.
pub fn remove(settings: &Settings, id: &str, out: &mut dyn Write) -> Result<()> {
    let mut file = open_seeds(settings)?;
    let index = file.position(id).with_context(|| missing(id, &file))?;
    file.records.remove(index);
    file.save()?;
    writeln!(
        out,
        "removed {id}; the previous file is {}",
        crate::data::backup_path(&file.path).display()
    )?;
    Ok(())
}

/// Reads `path` and fails, after printing every problem to `out`, if any line is bad.
fn read_valid(path: &Path, format: Option<Format>, out: &mut dyn Write) -> Result<Loaded> {
    let loaded = read_any(path, format)?;
    for e in loaded.errors() {
        writeln!(out, "{e}")?;
    }
    if !loaded.invalid.is_empty() {
        bail!(
            "{}: {} of {} records are invalid",
            path.display(),
            loaded.invalid.len(),
            loaded.invalid.len() + loaded.records.len()
        );
    }
    Ok(loaded)
}

/// `seeds validate FILE`: prints every bad line as `file:line: field: problem`.
///
/// # Errors
/// Any bad line (after all are printed), or an unreadable file.
pub fn validate(path: &Path, format: Option<Format>, out: &mut dyn Write) -> Result<()> {
    let loaded = read_valid(path, format, out)?;
    writeln!(
        out,
        "{}: {} valid records",
        path.display(),
        loaded.records.len()
    )?;
    Ok(())
}

/// `seeds import FILE`: appends every record of a JSONL or Alpaca file; records without an
/// id, or whose id is taken, get a fresh `seed-NNN`. Refuses a file with any bad line.
///
/// # Errors
/// A bad or unreadable input file, or a failed save.
pub fn import(
    settings: &Settings,
    path: &Path,
    format: Option<Format>,
    out: &mut dyn Write,
) -> Result<()> {
    let loaded = read_valid(path, format, out)?;
    let mut file = open_seeds(settings)?;
    let n = loaded.records.len();
    let renamed = file.append_with_fresh_ids(loaded.records, "seed");
    file.save()?;
    writeln!(
        out,
        "imported {n} records into {} ({renamed} given new ids because theirs were taken)",
        file.path.display()
    )?;
    Ok(())
}

/// `seeds export`: writes the records of the seed file, or of `input` (any instruction file
/// `read_any` reads, such as `generated.jsonl`), optionally one category, as JSONL, Alpaca
/// JSON or ShareGPT JSON to `output` (atomically) or to `out`.
///
/// # Errors
/// Reading the records (an `input` with an invalid line is refused, naming it), or writing
/// the output.
pub fn export(
    settings: &Settings,
    input: Option<&Path>,
    format: Format,
    category: Option<Category>,
    output: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let records = match input {
        Some(path) => {
            let mut loaded = read_valid(path, None, &mut std::io::stderr())?;
            crate::data::fill_missing_ids_from(&mut loaded.records, path);
            loaded.records
        }
        None => open_seeds(settings)?.records,
    };
    let records: Vec<Instruction> = records
        .into_iter()
        .filter(|r| category.is_none_or(|c| r.category == c))
        .collect();
    let text = match format {
        Format::Jsonl => to_jsonl(&records, &[]),
        Format::Alpaca => to_alpaca(&records),
        Format::Sharegpt => crate::data::to_sharegpt(&records),
    };
    match output {
        Some(path) => {
            crate::data::save_atomic(path, text.as_bytes())?;
            eprintln!("wrote {} records to {}", records.len(), path.display());
        }
        None => out.write_all(text.as_bytes())?,
    }
    Ok(())
}
