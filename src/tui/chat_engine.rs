//! The Chat pane's models: the base model is loaded once (a blocking task of the workbench's
//! tokio runtime, [`super::runtime`]); the tuned column is a clone of it (candle tensors share
//! their storage, so the weights are in memory once) with the adapter attached. Each column
//! has a CPU worker thread that renders the chat template, generates, and reports every piece
//! of text as an [`Action`] on the runtime's channel; the event loop applies them between
//! frames, so the UI never waits on a model. Must be used inside the tokio runtime.

use crate::config::Settings;
use crate::model::{
    generate_taking_turns, ChatMessage, LoadOptions, LoadedModel, Sampling, StepLock,
};
use crate::tui::panes::chat::{ChatRequest, BASE, TUNED};
use crate::tui::Action;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// Where each column's worker takes jobs (set by the loading thread).
type Workers = Arc<Mutex<[Option<Sender<Job>>; 2]>>;

/// One generation for a column's worker.
struct Job {
    messages: Vec<ChatMessage>,
    sampling: Sampling,
}

/// The models behind the Chat pane.
pub struct ChatEngine {
    settings: Settings,
    events: UnboundedSender<Action>,
    workers: Workers,
    cancel: [Arc<AtomicBool>; 2],
    base: Arc<Mutex<Option<LoadedModel>>>,
    turns: Arc<StepLock>,
}

impl std::fmt::Debug for ChatEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEngine").finish_non_exhaustive()
    }
}

/// Starts a column's worker on `loaded`; returns where to send it jobs.
fn spawn_worker(
    column: usize,
    loaded: LoadedModel,
    events: UnboundedSender<Action>,
    cancel: Arc<AtomicBool>,
    turns: Arc<StepLock>,
) -> Sender<Job> {
    let (tx, rx) = channel::<Job>();
    std::thread::spawn(move || {
        for job in rx {
            let result = (|| -> Result<String, String> {
                let template = loaded.template(None).map_err(|e| e.to_string())?;
                let prompt = template
                    .render(&job.messages, true)
                    .map_err(|e| e.to_string())?;
                let ids = loaded.encode(&prompt).map_err(|e| e.to_string())?;
                let stats = generate_taking_turns(
                    &loaded,
                    &ids,
                    &job.sampling,
                    &cancel,
                    Some(&turns),
                    |piece| {
                        let _ = events.send(Action::ChatPiece {
                            column,
                            text: piece.to_string(),
                        });
                    },
                )
                .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} tokens · {:.1} tokens/s{}",
                    stats.generated_tokens,
                    stats.generation_tokens_per_second(),
                    if cancel.load(Ordering::Relaxed) {
                        " · stopped"
                    } else {
                        ""
                    }
                ))
            })();
            let _ = events.send(Action::ChatDone { column, result });
        }
    });
    tx
}

/// Attaches the adapter in `dir` to a clone of `base`.
fn with_adapter(base: &LoadedModel, dir: &Path) -> Result<LoadedModel, String> {
    let mut tuned = base.clone();
    crate::model::lora::Lora::load_peft(&mut tuned.model, dir).map_err(|e| e.to_string())?;
    Ok(tuned)
}

impl ChatEngine {
    /// An engine that reports on `events`; models load on the first request.
    pub fn new(settings: &Settings, events: UnboundedSender<Action>) -> ChatEngine {
        ChatEngine {
            settings: settings.clone(),
            events,
            workers: Arc::new(Mutex::new([None, None])),
            cancel: [
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            ],
            base: Arc::new(Mutex::new(None)),
            turns: Arc::new(StepLock::default()),
        }
    }

    /// Carries out one request of the Chat pane.
    pub fn handle(&mut self, request: ChatRequest) {
        match request {
            ChatRequest::Load { adapter } => self.load(adapter),
            ChatRequest::LoadTuned { adapter } => self.load_tuned(adapter),
            ChatRequest::Send { messages, sampling } => {
                let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                for (column, messages) in messages.into_iter().enumerate() {
                    let Some(messages) = messages else { continue };
                    self.cancel[column].store(false, Ordering::Relaxed);
                    let sent = workers[column].as_ref().is_some_and(|w| {
                        w.send(Job {
                            messages,
                            sampling: sampling.clone(),
                        })
                        .is_ok()
                    });
                    if !sent {
                        let _ = self.events.send(Action::ChatDone {
                            column,
                            result: Err("the model is not loaded".into()),
                        });
                    }
                }
            }
            ChatRequest::Cancel => {
                for c in &self.cancel {
                    c.store(true, Ordering::Relaxed);
                }
            }
            ChatRequest::FetchDefault => self.fetch_default(),
        }
    }

    fn load(&mut self, adapter: Option<PathBuf>) {
        let (settings, events, base_slot) = (
            self.settings.clone(),
            self.events.clone(),
            self.base.clone(),
        );
        let workers = self.workers.clone();
        *workers.lock().unwrap_or_else(|e| e.into_inner()) = [None, None];
        let cancel = self.cancel.clone();
        let turns = self.turns.clone();
        tokio::task::spawn_blocking(move || {
            let m = &settings.config.model;
            let loaded = LoadOptions::for_device(&m.device, m.gguf_compute)
                .and_then(|options| LoadedModel::load(&settings.resolver(), &m.base, &options))
                .map_err(|e| e.to_string());
            let base = match loaded {
                Ok(b) => b,
                Err(e) if crate::commands::models::default_model_missing(&settings) => {
                    let _ = events.send(Action::ChatModelMissing { error: e });
                    return;
                }
                Err(e) => {
                    for column in [BASE, TUNED] {
                        let _ = events.send(Action::ChatLoaded {
                            column,
                            result: Err(e.clone()),
                        });
                    }
                    return;
                }
            };
            // With no adapter the pane shows the tuned column as waiting for one already.
            let tuned = adapter.as_ref().map(|dir| with_adapter(&base, dir));
            let name = base.name.clone();
            {
                let mut w = workers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(Ok(t)) = tuned.as_ref() {
                    w[TUNED] = Some(spawn_worker(
                        TUNED,
                        t.clone(),
                        events.clone(),
                        cancel[TUNED].clone(),
                        turns.clone(),
                    ));
                }
                w[BASE] = Some(spawn_worker(
                    BASE,
                    base.clone(),
                    events.clone(),
                    cancel[BASE].clone(),
                    turns.clone(),
                ));
            }
            *base_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(base);
            let _ = events.send(Action::ChatLoaded {
                column: BASE,
                result: Ok(name.clone()),
            });
            if let Some(tuned) = tuned {
                let _ = events.send(Action::ChatLoaded {
                    column: TUNED,
                    result: tuned.map(|_| name),
                });
            }
        });
    }

    /// Downloads the default model on a blocking task, sending its progress at most every
    /// 100 ms, then [`Action::ModelFetched`].
    fn fetch_default(&mut self) {
        let (settings, events) = (self.settings.clone(), self.events.clone());
        tokio::task::spawn_blocking(move || {
            let mut last = std::time::Instant::now();
            let mut report = |done: u64, total: Option<u64>| {
                if last.elapsed() >= std::time::Duration::from_millis(100) {
                    last = std::time::Instant::now();
                    let _ = events.send(Action::ModelFetchProgress { done, total });
                }
            };
            let mut out = Vec::new();
            let result =
                crate::commands::models::fetch_default_with(&settings, &mut out, Some(&mut report))
                    .map(|()| String::from_utf8_lossy(&out).trim().to_string())
                    .map_err(|e| format!("{e:#}"));
            let _ = events.send(Action::ModelFetched { result });
        });
    }

    fn load_tuned(&mut self, adapter: PathBuf) {
        let (events, base_slot, cancel, turns) = (
            self.events.clone(),
            self.base.clone(),
            self.cancel[TUNED].clone(),
            self.turns.clone(),
        );
        let workers = self.workers.clone();
        // The old worker ends when its sender is dropped.
        workers.lock().unwrap_or_else(|e| e.into_inner())[TUNED] = None;
        tokio::task::spawn_blocking(move || {
            let guard = base_slot.lock().unwrap_or_else(|e| e.into_inner());
            let result = match guard.as_ref() {
                None => Err("the base model is not loaded".to_string()),
                Some(base) => with_adapter(base, &adapter).map(|t| {
                    let name = t.name.clone();
                    workers.lock().unwrap_or_else(|e| e.into_inner())[TUNED] =
                        Some(spawn_worker(TUNED, t, events.clone(), cancel, turns));
                    name
                }),
            };
            drop(guard);
            let _ = events.send(Action::ChatLoaded {
                column: TUNED,
                result,
            });
        });
    }
}
