//! A training run's configuration (TOML; `configs/smollm2-135m-cpu.toml` and
//! `configs/llama2-7b-gpu.toml` document every field). Every table and key is optional;
//! missing ones take the defaults below. Unknown keys are errors.

use super::data::PromptFormat;
use super::optim::ScheduleKind;
use crate::data::Category;
use crate::model::lora::LoraConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `[model]`.
    pub model: ModelSection,
    /// `[data]`.
    pub data: DataSection,
    /// `[lora]`: PEFT's names.
    pub lora: LoraConfig,
    /// `[optim]`.
    pub optim: OptimSection,
    /// `[run]`.
    pub run: RunSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Hub id, folder or GGUF file (a GGUF is dequantized for training).
    pub base: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            base: crate::model::source::DEFAULT_MODEL.to_string(),
            device: "cpu".to_string(),
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Instruction files (JSONL or Alpaca JSON); `seeds` means the workspace's seed file.
    pub files: Vec<String>,
    /// Only these categories (the paper's category ablation); empty means all.
    pub categories: Vec<Category>,
    /// Prompt format.
    pub format: PromptFormat,
    /// Longest example, in tokens.
    pub max_seq_len: usize,
    /// Share of the examples held out for validation.
    pub validation_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            files: vec!["seeds".to_string()],
            categories: Vec::new(),
            format: PromptFormat::Alpaca,
            max_seq_len: 256,
            validation_fraction: 0.1,
        }
    }
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// The curve after warmup.
    pub schedule: ScheduleKind,
    /// Optimizer steps of linear warmup.
    pub warmup_steps: usize,
    /// Passes over the training split.
    pub epochs: usize,
    /// Examples per forward pass.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Global gradient-norm limit (0: none).
    pub max_grad_norm: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            learning_rate: 2e-4,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 10,
            epochs: 3,
            micro_batch_size: 1,
            gradient_accumulation_steps: 4,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Seeds the adapter's initialisation, the split and the data order.
    pub seed: u64,
    /// Evaluate every this many optimizer steps (0: at the start and the end only).
    pub eval_every: usize,
    /// Checkpoint every this many optimizer steps (0: at the end only).
    pub checkpoint_every: usize,
    /// Where runs go; empty means `<data dir>/runs`.
    pub output_dir: PathBuf,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            seed: 42,
            eval_every: 10,
            checkpoint_every: 20,
            output_dir: PathBuf::new(),
        }
    }
}

impl TrainConfig {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// `file:line: message` for TOML errors, unknown keys and wrong types; every semantic
    /// problem (r = 0, an unknown target module, …) as `file: field: problem`.
    pub fn from_file(path: &Path) -> Result<TrainConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: TrainConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                1 + text[..s.start.min(text.len())].matches('\n').count()
            });
            format!("{}:{line}: {}", path.display(), e.message().trim())
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(format!("{}: {}", path.display(), problems.join("; ")))
        }
    }

    /// Every semantic problem, as `section.field: problem`.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .lora
            .problems()
            .into_iter()
            .map(|q| format!("lora.{q}"))
            .collect();
        if self.data.files.is_empty() {
            p.push("data.files: is empty".into());
        }
        if self.data.max_seq_len < 8 {
            p.push(format!(
                "data.max_seq_len: {} is too short",
                self.data.max_seq_len
            ));
        }
        if !(0.0..1.0).contains(&self.data.validation_fraction) {
            p.push(format!(
                "data.validation_fraction: {} is not in [0, 1)",
                self.data.validation_fraction
            ));
        }
        let o = &self.optim;
        if !(o.learning_rate > 0.0 && o.learning_rate.is_finite()) {
            p.push(format!(
                "optim.learning_rate: {} must be positive",
                o.learning_rate
            ));
        }
        for (field, v) in [
            ("epochs", o.epochs),
            ("micro_batch_size", o.micro_batch_size),
            ("gradient_accumulation_steps", o.gradient_accumulation_steps),
        ] {
            if v == 0 {
                p.push(format!("optim.{field}: must be at least 1"));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn the_example_configs_parse_and_the_cpu_one_is_the_default() {
        let cpu =
            TrainConfig::from_file(&repo("configs/smollm2-135m-cpu.toml")).expect("cpu config");
        assert_eq!(cpu, TrainConfig::default());
        let gpu = TrainConfig::from_file(&repo("configs/llama2-7b-gpu.toml")).expect("gpu config");
        assert_eq!(gpu.model.device, "cuda:0");
        assert_eq!(
            gpu.lora.targets(),
            vec!["q_proj", "k_proj", "v_proj", "o_proj"]
        );
    }

    #[test]
    fn bad_values_are_all_reported_with_their_field() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("bad.toml");
        std::fs::write(
            &f,
            "[lora]\nr = 0\ntarget_modules = [\"qkv\"]\n[optim]\nepochs = 0\n",
        )
        .expect("write");
        let e = TrainConfig::from_file(&f).expect_err("bad");
        assert!(e.contains("lora.r: must be at least 1"), "{e}");
        assert!(
            e.contains("lora.target_modules: unknown module \"qkv\""),
            "{e}"
        );
        assert!(e.contains("optim.epochs: must be at least 1"), "{e}");
        std::fs::write(&f, "[optim]\nlearning_rat = 1e-4\n").expect("write");
        let e = TrainConfig::from_file(&f).expect_err("typo");
        assert!(
            e.starts_with(&format!("{}:2: unknown field `learning_rat`", f.display())),
            "{e}"
        );
    }
}
