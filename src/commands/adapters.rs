//! `bioinstruct adapters merge`: a LoRA adapter folded into its base model, written as a
//! Hugging Face model folder.

use crate::config::Settings;
use crate::model::lora::{Lora, ADAPTER_CONFIG};
use crate::model::{GgufCompute, LoadOptions, LoadedModel};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// The base model an adapter names in `adapter_config.json` (`base_model_name_or_path`).
fn adapter_base(adapter: &Path) -> Option<String> {
    let text = std::fs::read_to_string(adapter.join(ADAPTER_CONFIG)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("base_model_name_or_path")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `adapters merge ADAPTER --out DIR [--base SPEC]`: loads the base model (the one given, else
/// the adapter's `base_model_name_or_path`, else the configured one) in float, applies the
/// adapter, and writes `W + scale · B A` for every adapted projection, with every other
/// weight, `config.json` and the tokenizer, into the new folder `out`.
///
/// # Errors
/// The adapter or base model cannot be loaded, they do not fit, `out` exists, or a file
/// cannot be written.
pub fn merge(
    settings: &Settings,
    adapter: &Path,
    base: Option<&str>,
    out: &Path,
    w: &mut dyn Write,
) -> Result<()> {
    if out.exists() {
        anyhow::bail!("{}: exists already; choose a new folder", out.display());
    }
    let base = base
        .map(str::to_string)
        .or_else(|| adapter_base(adapter))
        .unwrap_or_else(|| settings.config.model.base.clone());
    let options = LoadOptions::for_device(&settings.config.model.device, GgufCompute::Float)?;
    let mut loaded = LoadedModel::load(&settings.resolver(), &base, &options)
        .with_context(|| format!("loading the base model {base}"))?;
    let lora = Lora::load_peft(&mut loaded.model, adapter)?;
    crate::model::merge::write_merged(&loaded, Some(&lora), out)?;
    let bytes = std::fs::metadata(out.join("model.safetensors")).map_or(0, |m| m.len());
    writeln!(
        w,
        "merged {} LoRA modules (r = {}, lora_alpha = {}) into {base}: {} ({:.1} MB model.safetensors, config.json, tokenizer.json)",
        lora.modules.len(),
        lora.config.r,
        lora.config.lora_alpha,
        out.display(),
        bytes as f64 / 1e6
    )?;
    Ok(())
}
