//! `bioinstruct generate`: a self-instruct run (BioInstruct step 2) from the command line,
//! with a progress bar; see [`crate::selfinstruct::run`].

use crate::config::{Settings, LOCAL_TEACHER};
use crate::selfinstruct::run::{GenerateConfig, Generation, Outcome, Progress};
use crate::selfinstruct::teacher::{HttpTeacher, LocalTeacher, Teacher, TeacherApi};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What `generate` needs beyond the settings.
#[derive(Debug, Clone, Default)]
pub struct GenerateArgs {
    /// A name under `[teachers]`, or `local`.
    pub teacher: String,
    /// Kept tasks to reach in the output folder.
    pub target: usize,
    /// The output folder instead of `[generate] dir`.
    pub out: Option<PathBuf>,
    /// Requests at once instead of the teacher's `concurrency`.
    pub concurrency: Option<usize>,
    /// Overrides of `[generate]`.
    pub max_tokens: Option<u32>,
    /// Overrides `[generate] temperature`.
    pub temperature: Option<f64>,
    /// Overrides `[generate] seed`.
    pub seed: Option<u64>,
    /// Overrides the teacher's `api` (and `[generate] local_api`).
    pub api: Option<TeacherApi>,
    /// Draw the progress bar (off when standard error is not a terminal, or in tests).
    pub progress_bar: bool,
}

/// The teacher `auto` stands for: `llamacpp` when a TCP connection to its `base_url`'s host
/// and port succeeds within 300 ms, else `local`; with the reason, for the user. Any other
/// name is returned as it is.
pub fn resolve_teacher(settings: &Settings, name: &str) -> (String, Option<String>) {
    if name != crate::config::AUTO_TEACHER {
        return (name.to_string(), None);
    }
    let Some(t) = settings.config.teachers.get("llamacpp") else {
        return (LOCAL_TEACHER.to_string(), None);
    };
    if answers(&t.base_url, std::time::Duration::from_millis(300)) {
        (
            "llamacpp".to_string(),
            Some(format!(
                "teacher auto: llamacpp (a server answers at {})",
                t.base_url
            )),
        )
    } else {
        (
            LOCAL_TEACHER.to_string(),
            Some(format!(
                "teacher auto: local, the built-in model (nothing answers at {}; name a teacher with --teacher or [generate] teacher)",
                t.base_url
            )),
        )
    }
}

/// Whether a TCP connection to `url`'s host and port (80 or 443 by default) succeeds within
/// `timeout`.
fn answers(url: &str, timeout: std::time::Duration) -> bool {
    use std::net::ToSocketAddrs;
    let (rest, port) = match url.split_once("://") {
        Some(("https", rest)) => (rest, 443),
        Some((_, rest)) => (rest, 80),
        None => (url, 80),
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_string()
    } else {
        format!("{host_port}:{port}")
    };
    with_port.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok())
    })
}

/// The teacher `name` names under `settings` (asked through `api` when given; a local one
/// sampling from `seed`), and how many requests it takes at once.
///
/// # Errors
/// An unknown name (the known ones are listed), or a local model that cannot be loaded.
pub fn open_teacher(
    settings: &Settings,
    name: &str,
    api: Option<TeacherApi>,
    seed: u64,
) -> Result<(Arc<dyn Teacher>, usize)> {
    if name == LOCAL_TEACHER {
        // Quiet: the Generated pane calls this with the terminal in raw mode.
        let m = &settings.config.model;
        let options = crate::model::LoadOptions::for_device(&m.device, m.gguf_compute)?;
        let loaded = crate::model::LoadedModel::load(&settings.resolver(), &m.base, &options)?;
        let api = api.unwrap_or(settings.config.generate.local_api);
        return Ok((Arc::new(LocalTeacher::new(loaded, api, seed)), 1));
    }
    match settings.config.teachers.get(name) {
        Some(t) => {
            let mut t = t.clone();
            t.api = api.unwrap_or(t.api);
            let concurrency = t.concurrency.max(1);
            Ok((Arc::new(HttpTeacher::new(t)), concurrency))
        }
        None => {
            let known: Vec<&str> = std::iter::once(LOCAL_TEACHER)
                .chain(settings.config.teachers.keys().map(String::as_str))
                .collect();
            bail!(
                "no teacher named {name:?}: known are {} (add one as [teachers.{name}] in your settings file)",
                known.join(", ")
            )
        }
    }
}

/// The output folder: `--out`, else `[generate] dir` under the data folder.
pub fn output_dir(settings: &Settings, out: Option<&PathBuf>) -> PathBuf {
    out.cloned().unwrap_or_else(|| {
        settings
            .workspace
            .data_dir
            .join(&settings.config.generate.dir)
    })
}

/// One line of counters.
pub fn progress_line(p: &Progress) -> String {
    format!(
        "kept {}/{} (+{} now), rejected {}, garbage {}, requests {} ({} failed, {} in flight), tokens {} in / {} out",
        p.kept,
        p.target,
        p.kept_now,
        p.rejected_now,
        p.garbage_now,
        p.requests,
        p.failed_requests,
        p.in_flight,
        p.prompt_tokens,
        p.completion_tokens
    )
}

/// Starts a run as `args` say, on the workspace's seeds; returns it and the teacher's name.
/// The Generated pane starts its runs here too.
///
/// # Errors
/// Unknown teacher or unloadable local model, no seeds, an invalid line in an output file,
/// a template that does not render, or an output folder that cannot be written.
pub fn start(settings: &Settings, args: &GenerateArgs) -> Result<(Generation, String)> {
    settings.ensure_seeds()?;
    let seeds = crate::data::InstructionFile::open(&settings.seeds_path)?.records;
    let mut config: GenerateConfig = settings.config.generate.clone();
    if let Some(m) = args.max_tokens {
        config.max_tokens = m;
    }
    if let Some(t) = args.temperature {
        config.temperature = t;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if !config.prompt_template.as_os_str().is_empty() && config.prompt_template.is_relative() {
        config.prompt_template = settings.workspace.config_dir.join(&config.prompt_template);
    }
    let (teacher_name, _) = resolve_teacher(settings, &args.teacher);
    let (teacher, concurrency) = open_teacher(settings, &teacher_name, args.api, config.seed)?;
    let dir = output_dir(settings, args.out.as_ref());
    let name = teacher.name();
    let generation = Generation::start(
        teacher,
        seeds,
        config,
        &dir,
        args.target,
        args.concurrency.unwrap_or(concurrency),
    )?;
    Ok((generation, name))
}

/// Runs `generate` until the output folder holds `args.target` kept tasks, Ctrl-C (or
/// SIGTERM), or `max_failures` failed requests in a row.
///
/// # Errors
/// Unknown teacher, no seeds, an invalid line in an output file, a template that does not
/// render, a failed write, or the teacher failing again and again.
pub fn generate(settings: &Settings, args: &GenerateArgs, out: &mut dyn Write) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let (teacher, note) = resolve_teacher(settings, &args.teacher);
    if let Some(note) = note {
        eprintln!("{note}");
    }
    if teacher == LOCAL_TEACHER {
        eprintln!("loading {} as the teacher …", settings.config.model.base);
    }
    let args = &GenerateArgs {
        teacher,
        ..args.clone()
    };
    let (generation, name) = start(settings, args)?;
    let dir = output_dir(settings, args.out.as_ref());
    for line in generation.progress().repaired {
        writeln!(out, "{line}")?;
    }
    let files = generation.files().clone();
    writeln!(
        out,
        "generating with {name} into {} (target {} kept tasks; Ctrl-C stops, a rerun continues)",
        dir.display(),
        args.target
    )?;
    let bar = if args.progress_bar {
        indicatif::ProgressBar::new(args.target as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} kept {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (outcome, last) = generation.wait(&stop, |p| {
        bar.set_position(p.kept as u64);
        bar.set_message(format!(
            "| rejected {} | garbage {} | requests {} ({} failed, {} in flight) | tokens {}",
            p.rejected_now,
            p.garbage_now,
            p.requests,
            p.failed_requests,
            p.in_flight,
            p.prompt_tokens + p.completion_tokens
        ));
    });
    bar.finish_and_clear();
    writeln!(out, "{}", progress_line(&last))?;
    if let Some(e) = &last.last_error {
        writeln!(out, "last failed request: {e}")?;
    }
    writeln!(out, "kept:     {}", files.kept.display())?;
    writeln!(out, "rejected: {}", files.rejected.display())?;
    writeln!(out, "raw:      {}", files.raw.display())?;
    match outcome {
        Outcome::Reached => {
            writeln!(out, "reached the target of {} kept tasks", args.target)?;
            Ok(())
        }
        Outcome::Stopped { abandoned } => {
            writeln!(
                out,
                "stopped with {} of {} kept ({abandoned} request(s) in flight abandoned); run the same command to continue",
                last.kept, args.target
            )?;
            Ok(())
        }
        Outcome::Failed(e) => Err(e.into()),
    }
}
