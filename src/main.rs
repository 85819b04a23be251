//! The `bioinstruct` binary: opens the workbench, or runs one of its jobs headless.

use anyhow::Result;
use bioinstruct::commands::{self, FieldArgs};
use bioinstruct::config::{Overrides, Settings};
use bioinstruct::data::{Category, Format};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// A terminal workbench for biomedical instruction tuning (BioInstruct, Tran et al., JAMIA 2024).
///
/// With no command, opens the workbench on your workspace's seed tasks. Every pane's job is
/// also a command below. Files live in the platform's config/data/cache folders, or all
/// under $BIOINSTRUCT_HOME when it is set.
#[derive(Debug, Parser)]
#[command(name = "bioinstruct", version, about, long_about)]
struct Cli {
    /// Config file to use instead of <config dir>/config.toml (see configs/default.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seed file to work on instead of the workspace's (JSONL).
    #[arg(long, global = true, value_name = "FILE")]
    seeds: Option<PathBuf>,
    /// Do not capture the mouse in the workbench (lets the terminal select text).
    #[arg(long, global = true)]
    no_mouse: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the workbench (the default when no command is given).
    Tui,
    /// Browse and curate the seed tasks.
    #[command(subcommand)]
    Seeds(SeedsCommand),
}

#[derive(Debug, Subcommand)]
enum SeedsCommand {
    /// List seed tasks: id, category, task family, instruction.
    List {
        /// Only this category.
        #[arg(long, value_enum)]
        category: Option<Category>,
        /// Print a JSON array of full records instead.
        #[arg(long)]
        json: bool,
    },
    /// Show one seed task in full.
    Show {
        /// The record's id, e.g. seed-001.
        id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a seed task (prints its new id).
    Add {
        /// Id to use (default: the next free seed-NNN).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change fields of a seed task; with no field flags, opens it as JSON in $EDITOR.
    Edit {
        /// The record's id.
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Remove a seed task (the previous file is kept as <file>.bak).
    Rm {
        /// The record's id.
        id: String,
    },
    /// Check a JSONL or Alpaca file; prints every problem as file:line: field: problem.
    Validate {
        /// The file to check.
        file: PathBuf,
        /// Its format (default: guessed from the first character).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Append every record of a JSONL or Alpaca JSON file to the seeds.
    Import {
        /// The file to import; it must have no invalid line.
        file: PathBuf,
        /// Its format (default: guessed from the first character).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Write the seeds as JSONL or Alpaca JSON.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Only this category.
        #[arg(long, value_enum)]
        category: Option<Category>,
        /// Write to this file (atomically) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Record fields given as flags.
#[derive(Debug, Args)]
struct Fields {
    /// Task group.
    #[arg(long, value_enum)]
    category: Option<Category>,
    /// Task family in snake_case, e.g. usmle_mcq.
    #[arg(long)]
    task: Option<String>,
    /// What the model is asked to do.
    #[arg(long)]
    instruction: Option<String>,
    /// The material the instruction applies to (may be empty).
    #[arg(long)]
    input: Option<String>,
    /// The reference answer.
    #[arg(long)]
    output: Option<String>,
}

impl From<Fields> for FieldArgs {
    fn from(f: Fields) -> Self {
        FieldArgs {
            category: f.category,
            task: f.task,
            instruction: f.instruction,
            input: f.input,
            output: f.output,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load(&Overrides {
        config_file: cli.config,
        seeds_file: cli.seeds,
        no_mouse: cli.no_mouse,
    })?;
    let stdout = &mut std::io::stdout().lock();
    match cli.command.unwrap_or(Command::Tui) {
        Command::Tui => bioinstruct::tui::run(&settings),
        Command::Seeds(cmd) => match cmd {
            SeedsCommand::List { category, json } => {
                commands::list(&settings, category, json, stdout)
            }
            SeedsCommand::Show { id, json } => commands::show(&settings, &id, json, stdout),
            SeedsCommand::Add { id, fields } => commands::add(&settings, id, fields.into(), stdout),
            SeedsCommand::Edit { id, fields } => commands::edit(&settings, &id, fields.into()),
            SeedsCommand::Rm { id } => commands::remove(&settings, &id, stdout),
            SeedsCommand::Validate { file, format } => commands::validate(&file, format, stdout),
            SeedsCommand::Import { file, format } => {
                commands::import(&settings, &file, format, stdout)
            }
            SeedsCommand::Export {
                format,
                category,
                output,
            } => commands::export(&settings, format, category, output.as_deref(), stdout),
        },
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        // A closed pipe (`bioinstruct seeds list | head`) is not an error.
        let broken_pipe = e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if broken_pipe {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
