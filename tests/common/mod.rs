//! Helpers shared by the integration tests: run the real binary in a throwaway workspace.
#![allow(dead_code)] // each test binary uses a different subset

pub mod gen;
pub mod http;
pub mod tiny;
pub mod tmux;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `bioinstruct` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_bioinstruct");

/// A workspace under a temporary `BIOINSTRUCT_HOME`, removed on drop.
pub struct Workspace {
    pub home: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The workspace's seed file.
    pub fn seeds(&self) -> PathBuf {
        self.home.path().join("data").join("seeds.jsonl")
    }

    /// A command for the binary with this workspace and no editor or user config leaking in.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("BIOINSTRUCT_HOME", self.home.path())
            .env_remove("VISUAL")
            .env_remove("EDITOR");
        c
    }

    /// Runs the binary with `args`; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run bioinstruct")
    }

    /// Runs the binary with `args` and the Hugging Face Hub switched off (`HF_HUB_OFFLINE`).
    pub fn offline(&self, args: &[&str]) -> Output {
        self.cmd()
            .env("HF_HUB_OFFLINE", "1")
            .args(args)
            .output()
            .expect("run bioinstruct")
    }

    /// `bioinstruct seeds add` of a short QA record with task `task`, as another shell
    /// would; returns the new id.
    pub fn add_seed(&self, task: &str) -> String {
        self.ok(&[
            "seeds",
            "add",
            "--category",
            "qa",
            "--task",
            task,
            "--instruction",
            "Name the enzyme that aspirin blocks.",
            "--output",
            "Cyclooxygenase.",
        ])
        .trim()
        .to_string()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bioinstruct {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }
}

/// The repository's fixture folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The real default model's GGUF (`BIOINSTRUCT_TEST_GGUF`, else `.models/`, where
/// `scripts/fetch-test-model.sh` puts it).
pub fn gguf_path() -> PathBuf {
    let path = std::env::var_os("BIOINSTRUCT_TEST_GGUF").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-test-model.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The run id that `bioinstruct train` printed first (`run <id>: …`).
pub fn run_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_string())
        .expect("run id")
}

/// The bundled seed tasks as an in-memory file named `seeds.jsonl`.
pub fn bundled_seeds() -> bioinstruct::data::InstructionFile {
    let loaded = bioinstruct::data::parse_jsonl(
        Path::new("seeds.jsonl"),
        include_str!("../../assets/seeds/seeds.jsonl"),
    );
    bioinstruct::data::InstructionFile::new(
        PathBuf::from("seeds.jsonl"),
        loaded.records,
        loaded.invalid,
    )
}

/// One frame of the workbench in ratatui's test terminal, at the app's size.
pub fn render(app: &bioinstruct::tui::App) -> ratatui::backend::TestBackend {
    let backend = ratatui::backend::TestBackend::new(app.size.0, app.size.1);
    let mut terminal = ratatui::Terminal::new(backend).expect("terminal");
    terminal
        .draw(|f| {
            bioinstruct::tui::ui::draw(f, app);
        })
        .expect("draw");
    terminal.backend().clone()
}

/// Presses `codes` (no modifiers) through the real keymap, as the event loop does, carrying
/// out the file effects as the runtime would ([`settle`]); returns the other effects the
/// app asked for, in order.
pub fn press(
    app: &mut bioinstruct::tui::App,
    codes: &[crossterm::event::KeyCode],
) -> Vec<bioinstruct::tui::Effect> {
    use crossterm::event::{Event, KeyEvent, KeyModifiers};
    let mut effects = Vec::new();
    for code in codes {
        let e = Event::Key(KeyEvent::new(*code, KeyModifiers::NONE));
        if let Some(action) = bioinstruct::tui::keymap::map_event(app, &e) {
            effects.extend(act(app, action));
        }
    }
    effects
}

/// `app.update(action)`, with the file effects it asks for carried out ([`settle`]);
/// returns the other effects, in order.
pub fn act(
    app: &mut bioinstruct::tui::App,
    action: bioinstruct::tui::Action,
) -> Vec<bioinstruct::tui::Effect> {
    let effects = app.update(action);
    settle(app, effects)
}

/// Carries out the file effects among `effects` here, as the runtime does on its blocking
/// pool ([`bioinstruct::tui::effect::FileWork::run`]), and feeds each outcome back to the app
/// until none is left; returns the other effects, in order.
pub fn settle(
    app: &mut bioinstruct::tui::App,
    effects: Vec<bioinstruct::tui::Effect>,
) -> Vec<bioinstruct::tui::Effect> {
    let mut queue: std::collections::VecDeque<_> = effects.into();
    let mut rest = Vec::new();
    while let Some(effect) = queue.pop_front() {
        match effect {
            bioinstruct::tui::Effect::File(work) => queue.extend(app.update(work.run())),
            other => rest.push(other),
        }
    }
    rest
}

/// A shared benchmark file (`pubmedqa/pqal_trainval.json`, `ncbi-disease/devel.tsv`,
/// `mts-dialog/MTS-Dialog-ValidationSet.csv`): under `$BIOINSTRUCT_BENCHMARKS` when set
/// (scripts/test.sh points it at `bioinstruct eval fetch`'s copies where `../shared/` is
/// absent), else `../shared/benchmarks/` beside the checkout. Fails naming both places.
pub fn benchmark(relative: &str) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks");
    let from_env = std::env::var_os("BIOINSTRUCT_BENCHMARKS").map(PathBuf::from);
    let places: Vec<PathBuf> = from_env.into_iter().chain([shared]).collect();
    for place in &places {
        let path = place.join(relative);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "benchmark file {relative} not found in {} (../shared/benchmarks beside the checkout, or $BIOINSTRUCT_BENCHMARKS, which scripts/test.sh fills with `bioinstruct eval fetch`)",
        places
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    );
}

/// Runs `prompts` (of different lengths) through `m` one at a time and, from the same
/// prompt caches, decodes `steps` greedy tokens each both alone (`forward_step`) and all
/// together (`forward_decode`); returns the largest difference between the two paths'
/// logits over every step and sequence.
pub fn batched_decode_difference(
    m: &bioinstruct::model::LoadedModel,
    prompts: &[&str],
    steps: usize,
) -> f32 {
    let rows: Vec<(&bioinstruct::model::LoadedModel, &str)> =
        prompts.iter().map(|p| (m, *p)).collect();
    mixed_decode_difference(&rows, steps)
}

/// As [`batched_decode_difference`], each prompt with its own model (clones of one base
/// with different adapters): alone through its model's `forward_step`, together through the
/// first model's `forward_decode_rows`.
#[allow(dead_code)]
pub fn mixed_decode_difference(
    rows: &[(&bioinstruct::model::LoadedModel, &str)],
    steps: usize,
) -> f32 {
    use candle_core::{Device, Tensor, D};
    let models: Vec<&bioinstruct::model::Llama> = rows.iter().map(|(m, _)| &m.model).collect();
    let batch = models[0];
    let mut alone = Vec::new();
    let mut together = Vec::new();
    let mut next = Vec::new();
    for (m, p) in rows {
        let model = &m.model;
        let ids = m.encode(p).expect("encodes");
        let mut cache = model.new_cache(ids.len() + steps + 1);
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("tensor");
        let logits = model.forward_step(&input, &mut cache).expect("prompt");
        next.push(
            logits
                .argmax(D::Minus1)
                .and_then(|t| t.to_vec1::<u32>())
                .expect("argmax")[0],
        );
        together.push(cache.branch());
        alone.push(cache);
    }
    let mut worst = 0f32;
    for _ in 0..steps {
        let mut refs: Vec<&mut bioinstruct::model::Cache> = together.iter_mut().collect();
        let batched = batch
            .forward_decode_rows(&next, &mut refs, &models)
            .expect("batched decode");
        for (j, cache) in alone.iter_mut().enumerate() {
            let model = models[j];
            let input = Tensor::new(&[next[j]], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("tensor");
            let single = model
                .forward_step(&input, cache)
                .expect("step")
                .squeeze(0)
                .expect("squeeze");
            let row = batched.get(j).expect("row");
            let d = (&row - &single)
                .and_then(|d| d.abs())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            worst = worst.max(d);
            next[j] = single
                .argmax(0)
                .and_then(|t| t.to_scalar::<u32>())
                .expect("argmax");
        }
        assert!(together
            .iter()
            .zip(&alone)
            .all(|(a, b)| a.position == b.position));
    }
    worst
}

/// Runs `tests` of this test binary again in a child process with the AVX-512 kernels
/// switched off (`BIOINSTRUCT_NO_AVX512=1`: the kernel choice is made once per process) and
/// asserts that every one of them passes there. Inside such a child it does nothing.
pub fn rerun_without_avx512(tests: &[&str]) {
    let switch = bioinstruct::model::gemm512::DISABLE_ENV;
    if std::env::var_os(switch).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .arg("--exact")
        .args(tests)
        .arg("--nocapture")
        .env(switch, "1")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("{} passed", tests.len())),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
