//! `bioinstruct serve`: loads the base model once and each adapter onto a clone that shares
//! its weights, then serves them all through [`crate::serve`].

use crate::commands::chat::load_model;
use crate::commands::eval::{adapter_label, adapter_trained_on_alpaca, resolve_adapter};
use crate::config::Settings;
use crate::model::lora::Lora;
use crate::model::LoadedModel;
use crate::serve::engine::ServedModel;
use crate::serve::{router, RunsWatch, ServeOptions, ServerState};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `serve` needs beyond the settings.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Adapter folders or run names.
    pub adapters: Vec<String>,
    /// Serve every finished run's adapter, and those that finish while serving.
    pub all_runs: bool,
    /// Address to bind.
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// The one origin CORS allows.
    pub cors_origin: Option<String>,
    /// Sequences decoded at once.
    pub max_running: usize,
    /// Sequences that may wait.
    pub max_queue: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The base with the adapter in `dir` in its slots (the weights shared with `base`).
///
/// # Errors
/// The adapter is unreadable or does not fit the base.
pub fn adapter_model(base: &LoadedModel, dir: &Path, label: String) -> Result<ServedModel> {
    let mut loaded = base.clone();
    Lora::load_peft(&mut loaded.model, dir).with_context(|| {
        format!(
            "adapter {} does not fit the base model {}",
            dir.display(),
            base.source.display()
        )
    })?;
    let template = if adapter_trained_on_alpaca(dir) {
        loaded.template(Some("alpaca"))?
    } else {
        loaded.template(None)?
    };
    Ok(ServedModel {
        label,
        loaded,
        template,
        adapter: Some(dir.to_path_buf()),
        created: now_secs(),
    })
}

/// Whether `host` is a loopback address (or `localhost`).
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs `serve` until SIGTERM or Ctrl-C.
///
/// # Errors
/// A non-loopback host without an API key, an empty key variable, a model or adapter that
/// does not load, an address that cannot be bound.
pub fn serve(settings: &Settings, args: &ServeArgs) -> Result<()> {
    let api_key = match &args.api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.is_empty() => Some(k),
            _ => bail!("--api-key-env {var}: the environment variable {var} is unset or empty"),
        },
        None => None,
    };
    if !is_loopback(&args.host) && api_key.is_none() {
        bail!(
            "refusing to listen on {} without an API key: set one in an environment variable \
             and name it with --api-key-env VAR (or bind 127.0.0.1)",
            args.host
        );
    }
    if let Some(origin) = &args.cors_origin {
        if axum::http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
            bail!("--cors-origin {origin:?}: not an origin (scheme://host[:port])");
        }
    }
    let ip: IpAddr = if args.host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        args.host
            .parse()
            .with_context(|| format!("--host {}: not an IP address", args.host))?
    };
    let base = load_model(settings)?;
    let mut models = vec![ServedModel {
        label: "base".into(),
        template: base.template(None)?,
        loaded: base.clone(),
        adapter: None,
        created: now_secs(),
    }];
    let mut dirs: Vec<PathBuf> = Vec::new();
    for a in &args.adapters {
        dirs.push(resolve_adapter(settings, a)?);
    }
    let watch = args.all_runs.then(|| RunsWatch {
        root: crate::commands::train::runs_root(settings, None),
    });
    if let Some(w) = &watch {
        dirs.extend(w.finished_adapters());
    }
    for dir in dirs {
        if models
            .iter()
            .any(|m| m.adapter.as_deref() == Some(dir.as_path()))
        {
            continue;
        }
        let mut label = adapter_label(&dir);
        while models.iter().any(|m| m.label == label) {
            label.push('\'');
        }
        models.push(adapter_model(&base, &dir, label)?);
    }
    for m in &models {
        match &m.adapter {
            Some(a) => eprintln!(
                "model {} (adapter {}, template {})",
                m.label,
                a.display(),
                m.template.name
            ),
            None => eprintln!(
                "model {} ({}, template {})",
                m.label,
                m.loaded.source.display(),
                m.template.name
            ),
        }
    }
    let options = ServeOptions {
        max_running: args.max_running,
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        api_key,
        cors_origin: args.cors_origin.clone(),
    };
    let state = ServerState::new(models, &options);
    let app = router(state.clone(), &options);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(w) = watch {
            tokio::spawn(watch_runs(w, base, state));
        }
        crate::serve::run(app, SocketAddr::new(ip, args.port))
            .await
            .with_context(|| format!("serving on {}:{}", args.host, args.port))
    })
}

/// Every 2 s, serves the adapters of runs that have finished since.
async fn watch_runs(watch: RunsWatch, base: LoadedModel, state: Arc<ServerState>) {
    let base = Arc::new(base);
    let mut failed: Vec<PathBuf> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let w = watch.clone();
        let found = tokio::task::spawn_blocking(move || w.finished_adapters())
            .await
            .unwrap_or_default();
        for dir in found {
            let label = adapter_label(&dir);
            if state.labels().contains(&label) || failed.contains(&dir) {
                continue;
            }
            let b = base.clone();
            let d = dir.clone();
            let l = label.clone();
            match tokio::task::spawn_blocking(move || adapter_model(&b, &d, l)).await {
                Ok(Ok(model)) => {
                    eprintln!("serving the new adapter {label} ({})", dir.display());
                    state.add(model);
                }
                Ok(Err(e)) => {
                    eprintln!("adapter {} not served: {e:#}", dir.display());
                    failed.push(dir);
                }
                Err(e) => {
                    eprintln!("adapter {} not served: {e}", dir.display());
                    failed.push(dir);
                }
            }
        }
    }
}
