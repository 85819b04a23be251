//! `bioinstruct chat`: prompt a model from the command line, one prompt or a line-based REPL,
//! with the reply streamed to standard output.

use crate::config::Settings;
use crate::model::{generate, ChatMessage, GenerationStats, LoadOptions, LoadedModel, Sampling};
use anyhow::{Context, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// What `chat` needs beyond the settings (which already hold the flags' overrides).
#[derive(Debug, Clone, Default)]
pub struct ChatArgs {
    /// A system message.
    pub system: Option<String>,
    /// A built-in template name instead of the model's own.
    pub template: Option<String>,
    /// One prompt; `None` starts the REPL on standard input.
    pub prompt: Option<String>,
    /// A PEFT LoRA adapter folder to apply to the base model.
    pub adapter: Option<std::path::PathBuf>,
}

/// Loads the settings' base model, reporting progress and time on stderr.
///
/// # Errors
/// The model cannot be found or loaded, or the device is unavailable.
pub fn load_model(settings: &Settings) -> Result<LoadedModel> {
    let m = &settings.config.model;
    let options = LoadOptions::for_device(&m.device, m.gguf_compute)?;
    eprintln!("loading {} …", m.base);
    let start = Instant::now();
    let loaded = LoadedModel::load(&settings.resolver(), &m.base, &options)?;
    eprintln!(
        "loaded {} ({}) in {:.1} s",
        loaded.name,
        loaded.source.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(loaded)
}

/// One line of speed figures for stderr.
pub fn stats_line(s: &GenerationStats) -> String {
    format!(
        "[{} tokens; prompt {} tokens at {:.1} tokens/s; generation at {:.1} tokens/s; stopped: {:?}]",
        s.generated_tokens,
        s.prompt_tokens,
        s.prompt_tokens_per_second(),
        s.generation_tokens_per_second(),
        s.stop_reason
    )
}

fn reply(
    loaded: &LoadedModel,
    template: &crate::model::ChatTemplate,
    messages: &[ChatMessage],
    sampling: &Sampling,
    out: &mut dyn Write,
) -> Result<String> {
    let prompt = template.render(messages, true)?;
    let ids = loaded.encode(&prompt)?;
    let mut write_error = None;
    let stats = generate(loaded, &ids, sampling, &AtomicBool::new(false), |piece| {
        if write_error.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                write_error = Some(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing the reply");
    }
    writeln!(out)?;
    eprintln!("{}", stats_line(&stats));
    Ok(stats.text)
}

/// Runs `chat`: one prompt, or a REPL reading a prompt a line (`/reset` forgets the
/// conversation, `/exit` or end of input ends it).
///
/// # Errors
/// Loading, templating, generation, or writing to `out`.
pub fn chat(settings: &Settings, args: &ChatArgs, out: &mut dyn Write) -> Result<()> {
    let mut loaded = load_model(settings)?;
    if let Some(dir) = &args.adapter {
        let lora = crate::model::lora::Lora::load_peft(&mut loaded.model, dir)?;
        eprintln!(
            "adapter {}: r = {}, {} modules, {} parameters",
            dir.display(),
            lora.config.r,
            lora.modules.len(),
            lora.parameter_count()
        );
    }
    let template = loaded.template(args.template.as_deref())?;
    let sampling = &settings.config.generation;
    let mut messages: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.clone()))
        .collect();
    if let Some(prompt) = &args.prompt {
        messages.push(ChatMessage::new("user", prompt.clone()));
        reply(&loaded, &template, &messages, sampling, out)?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chat with {} — /reset forgets the conversation, /exit or Ctrl-D ends",
            loaded.name
        );
    }
    let system_len = messages.len();
    for line in stdin.lock().lines() {
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.truncate(system_len);
                eprintln!("(conversation cleared)");
                continue;
            }
            text => messages.push(ChatMessage::new("user", text)),
        }
        let answer = reply(&loaded, &template, &messages, sampling, out)?;
        messages.push(ChatMessage::new("assistant", answer));
    }
    Ok(())
}
