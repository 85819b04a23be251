//! Training on an existing engine, for runs that outgrow one device: Hugging Face
//! transformers' `Trainer` + PEFT under `accelerate launch` (DDP by default; FSDP or DeepSpeed
//! through an accelerate config file), or axolotl, with the run folder bioinstruct's own.
//!
//! For `--engine accelerate`, [`write_inputs`] puts into `RUN/engine/`:
//! - `train.jsonl` and `validation.jsonl`: the examples bioinstruct's own trainer would train
//!   on (the same records, template, truncation and split), as `input_ids` and `labels`, the
//!   labels in transformers' convention (the token itself on response positions, -100
//!   elsewhere; the model shifts them), so the loss masking is the same;
//! - `args.json`: the base model, LoRA `r`, `lora_alpha`, `lora_dropout`, `target_modules`,
//!   `use_rslora`, and the schedule (learning rate, warmup, epochs, batch, accumulation,
//!   clipping, weight decay, evaluation and checkpoint intervals, seed);
//! - `train.py`: the training script (`engine_accelerate.py` in the source), which writes
//!   `status.json`, `metrics.jsonl`, `checkpoint-N/` and `final/` as the workbench reads them;
//! - `bioinstruct_callback.py` (`engine_callback.py` in the source): the Trainer callback
//!   both engines share;
//! - `launch.json`: how it was launched (engine, Python, processes, device), for `runs resume`.
//!
//! For `--engine axolotl`, [`write_axolotl_inputs`] puts there instead `data.jsonl` (the
//! records as Alpaca lines), `axolotl.yaml` ([`axolotl_yaml`] plus the plugin, output_dir the
//! run folder, resuming from its newest checkpoint), `bioinstruct_axolotl.py` (the plugin that
//! adds the callback), `train.py` (`engine_axolotl.py`: axolotl's own training entry point,
//! recording a failure in `status.json`), the callback and `launch.json`; a GGUF base model is
//! written once as a Hugging Face folder `engine/base/` (axolotl loads no GGUF).
//!
//! [`launch`] starts `python -m accelerate.commands.launch … engine/train.py RUN` in a session
//! of its own (it outlives the terminal), its output appended to `train.log`. Stopping writes
//! `engine/stop` ([`request_stop`]): every process checkpoints the same step and ends.

use super::config::TrainConfig;
use super::data::{Example, IGNORE};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The training script of accelerate runs, written into each run folder.
pub const ACCELERATE_SCRIPT: &str = include_str!("engine_accelerate.py");
/// The Trainer callback both engines' scripts import.
pub const CALLBACK_MODULE: &str = include_str!("engine_callback.py");
/// The training script of axolotl runs.
pub const AXOLOTL_SCRIPT: &str = include_str!("engine_axolotl.py");
/// The axolotl plugin adding the callback.
pub const AXOLOTL_PLUGIN: &str = include_str!("engine_axolotl_plugin.py");

/// Which engine trains a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// bioinstruct's own trainer (candle), in this process or a detached worker.
    #[default]
    Bioinstruct,
    /// transformers' Trainer + PEFT under `accelerate launch` (several processes or GPUs).
    Accelerate,
    /// axolotl (`axolotl train`: its Trainer, LoRA and Alpaca prompts) under `accelerate launch`.
    Axolotl,
}

impl Engine {
    /// The engine's name, as `--engine` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Bioinstruct => "bioinstruct",
            Engine::Accelerate => "accelerate",
            Engine::Axolotl => "axolotl",
        }
    }
}

fn accelerate_engine() -> Engine {
    Engine::Accelerate
}

/// How an engine run is launched (kept in `engine/launch.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The engine ([`Engine::Accelerate`] in runs written before axolotl runs existed).
    #[serde(default = "accelerate_engine")]
    pub engine: Engine,
    /// The Python with torch, transformers, peft and accelerate (and axolotl, for its runs).
    pub python: PathBuf,
    /// Processes (`--num_processes`): one per GPU, or CPU processes with `cpu`.
    pub num_processes: usize,
    /// Train on CPUs (`accelerate launch --cpu`, gloo).
    pub cpu: bool,
    /// An accelerate config file (FSDP, DeepSpeed), if any.
    pub config_file: Option<PathBuf>,
}

/// The engine folder of a run.
pub fn engine_dir(run: &Path) -> PathBuf {
    run.join("engine")
}

/// The engine of the run in `run` (its `engine/launch.json`; [`Engine::Bioinstruct`] when it
/// has none or it cannot be read).
pub fn engine_of(run: &Path) -> Engine {
    std::fs::read_to_string(engine_dir(run).join("launch.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Launch>(&t).ok())
        .map_or(Engine::Bioinstruct, |l| l.engine)
}

/// Whether the run in `run` trains on an engine.
pub fn is_engine_run(run: &Path) -> bool {
    engine_dir(run).join("launch.json").is_file()
}

/// transformers' labels for one of our examples: ours hold, at each position, the next
/// token to predict (or [`IGNORE`]); transformers' hold the position's own token and shift
/// inside the model.
fn hf_labels(example: &Example) -> Vec<i64> {
    let mut out = Vec::with_capacity(example.labels.len());
    out.push(IGNORE);
    out.extend(
        example
            .labels
            .iter()
            .take(example.labels.len().saturating_sub(1)),
    );
    out
}

fn write_examples(path: &Path, examples: &[Example]) -> Result<()> {
    let mut text = Vec::new();
    for e in examples {
        serde_json::to_writer(
            &mut text,
            &json!({"id": e.id, "input_ids": e.input_ids, "labels": hf_labels(e)}),
        )?;
        text.push(b'\n');
    }
    crate::data::replace_atomic(path, &text)?;
    Ok(())
}

/// Writes the engine's inputs for `config` into `run/engine/` (see the module docs).
///
/// # Errors
/// A file that cannot be written.
pub fn write_inputs(
    run: &Path,
    config: &TrainConfig,
    train: &[Example],
    validation: &[Example],
    pad_token_id: u32,
    launch: &Launch,
) -> Result<()> {
    let dir = engine_dir(run);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    write_examples(&dir.join("train.jsonl"), train)?;
    write_examples(&dir.join("validation.jsonl"), validation)?;
    let base = Path::new(&config.model.base);
    let (model, gguf_file) = if base.is_file() {
        (
            base.parent()
                .unwrap_or(Path::new("."))
                .display()
                .to_string(),
            base.file_name().map(|n| n.to_string_lossy().into_owned()),
        )
    } else {
        (config.model.base.clone(), None)
    };
    let o = &config.optim;
    let args = json!({
        "model": model,
        "gguf_file": gguf_file,
        "pad_token_id": pad_token_id,
        "seed": config.run.seed,
        "cpu": launch.cpu,
        "eval_every": config.run.eval_every,
        "checkpoint_every": config.run.checkpoint_every,
        "lora": {
            "r": config.lora.r,
            "lora_alpha": config.lora.lora_alpha,
            "lora_dropout": config.lora.lora_dropout,
            "target_modules": config.lora.target_modules,
            "use_rslora": config.lora.use_rslora,
        },
        "optim": {
            "learning_rate": o.learning_rate,
            "schedule": o.schedule,
            "warmup_steps": o.warmup_steps,
            "epochs": o.epochs,
            "micro_batch_size": o.micro_batch_size,
            "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "max_grad_norm": o.max_grad_norm,
            "weight_decay": o.weight_decay,
        },
    });
    crate::data::replace_atomic(
        &dir.join("args.json"),
        serde_json::to_string_pretty(&args)?.as_bytes(),
    )?;
    write_scripts(&dir, ACCELERATE_SCRIPT, launch)
}

/// Writes `engine/train.py` (`script`), the shared callback and `launch.json`.
fn write_scripts(dir: &Path, script: &str, launch: &Launch) -> Result<()> {
    crate::data::replace_atomic(&dir.join("train.py"), script.as_bytes())?;
    crate::data::replace_atomic(
        &dir.join("bioinstruct_callback.py"),
        CALLBACK_MODULE.as_bytes(),
    )?;
    crate::data::replace_atomic(
        &dir.join("launch.json"),
        serde_json::to_string_pretty(launch)?.as_bytes(),
    )?;
    Ok(())
}

/// Writes an axolotl run's inputs into `run/engine/` (see the module docs): `records` are
/// the run's Alpaca JSON lines, `base_model` what axolotl loads (a Hub id or a Hugging Face
/// folder).
///
/// # Errors
/// A file that cannot be written.
pub fn write_axolotl_inputs(
    run: &Path,
    config: &TrainConfig,
    records: &[u8],
    base_model: &str,
    launch: &Launch,
) -> Result<()> {
    let dir = engine_dir(run);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let data = dir.join("data.jsonl");
    crate::data::replace_atomic(&data, records)?;
    let mut yaml = axolotl_yaml(config, base_model, &data, run);
    yaml.push_str(&format!(
        "# bioinstruct's run folder: its plugin writes status.json and metrics.jsonl; a relaunch\n\
         # resumes from the newest checkpoint-N/.\n\
         plugins:\n  - bioinstruct_axolotl.BioinstructPlugin\n\
         dataset_prepared_path: {}\n\
         auto_resume_from_checkpoints: true\n",
        yaml_str(&dir.join("prepared").display().to_string())
    ));
    crate::data::replace_atomic(&dir.join("axolotl.yaml"), yaml.as_bytes())?;
    crate::data::replace_atomic(
        &dir.join("bioinstruct_axolotl.py"),
        AXOLOTL_PLUGIN.as_bytes(),
    )?;
    write_scripts(&dir, AXOLOTL_SCRIPT, launch)
}

/// A free TCP port on 127.0.0.1 for the processes' rendezvous.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts (or, for a run that has checkpoints, resumes) the engine run in `run` as
/// `engine/launch.json` says, detached: `setsid python -m accelerate.commands.launch
/// --num_processes N [--multi_gpu] [--config_file F] --main_process_port PORT
/// engine/train.py RUN`; on CPUs with no GPU visible and `OMP_NUM_THREADS` = cores / N (N
/// processes joined by gloo). Returns the launcher's pid.
///
/// # Errors
/// No `engine/launch.json`, or the launcher cannot start.
pub fn launch(run: &Path) -> Result<u32> {
    let dir = engine_dir(run);
    let path = dir.join("launch.json");
    let launch: Launch = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )
    .with_context(|| path.display().to_string())?;
    let _ = std::fs::remove_file(dir.join("stop"));
    let log_path = run.join("train.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| log_path.display().to_string())?;
    let n = launch.num_processes.max(1);
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg(&launch.python)
        .args(["-m", "accelerate.commands.launch", "--num_machines", "1"])
        .args(["--num_processes", &n.to_string()])
        .args(["--mixed_precision", "no", "--dynamo_backend", "no"])
        .args(["--main_process_port", &free_port()?.to_string()]);
    // accelerate's `--cpu` runs one process unless MPI is installed: several CPU processes
    // go through its multi-process (torch elastic) launcher with no GPU visible, and the
    // script's `use_cpu` makes them join with gloo.
    if n > 1 {
        cmd.arg("--multi_gpu");
    }
    if launch.cpu {
        if n == 1 {
            cmd.arg("--cpu");
        }
        cmd.env("CUDA_VISIBLE_DEVICES", "");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cmd.env("OMP_NUM_THREADS", (cores / n).max(1).to_string());
    }
    if let Some(f) = &launch.config_file {
        cmd.arg("--config_file").arg(f);
    }
    cmd.arg(dir.join("train.py")).arg(run);
    writeln!(
        log,
        "[engine] {}: {} -m accelerate.commands.launch ({n} process(es){})",
        launch.engine.name(),
        launch.python.display(),
        if launch.cpu { ", CPU" } else { "" }
    )?;
    let child = cmd
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting accelerate with {} (a Python with torch, transformers, peft and accelerate; \
                 scripts/torch-venv.sh builds one, scripts/check-axolotl.sh --install one with axolotl)",
                launch.python.display()
            )
        })?;
    let pid = child.id();
    crate::commands::train::keep_child(child);
    Ok(pid)
}

/// Asks an engine run to stop: writes `engine/stop`, which every process reads at the end of
/// its step; they checkpoint that step and end, and the run is `stopped`.
///
/// # Errors
/// The file cannot be written.
pub fn request_stop(run: &Path) -> Result<()> {
    crate::data::replace_atomic(&engine_dir(run).join("stop"), b"stop\n")?;
    Ok(())
}

/// A string as YAML reads it: JSON's quoting (YAML 1.2 reads JSON strings as they are).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The run `config` as an axolotl config (its own keys: `base_model`, `adapter: lora`,
/// `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, `datasets` of
/// `type: alpaca`, `sequence_len`, `micro_batch_size`, `gradient_accumulation_steps`,
/// `num_epochs`, `learning_rate`, `output_dir`, and the schedule), training `base_model` (a
/// Hub id or a Hugging Face folder) on the Alpaca records in `data` (JSONL of `instruction`,
/// `input`, `output`), the loss on the responses only (`train_on_inputs: false`, as
/// bioinstruct's trainer). On a CPU (`model.device = "cpu"`) in float32: axolotl otherwise
/// picks float16 there, which CPUs compute far slower (a step of the default run with 2
/// optimizer steps' limit took 130 s in float16 against under 10 s in float32, measured on a
/// 2-core AMD EPYC).
pub fn axolotl_yaml(
    config: &TrainConfig,
    base_model: &str,
    data: &Path,
    output_dir: &Path,
) -> String {
    let o = &config.optim;
    let l = &config.lora;
    let schedule = match o.schedule {
        super::optim::ScheduleKind::Cosine => "cosine",
        super::optim::ScheduleKind::Linear => "linear",
        super::optim::ScheduleKind::Constant => "constant",
    };
    let modules: Vec<String> = l.target_modules.iter().map(|m| yaml_str(m)).collect();
    let mut y = format!(
        "# Written by bioinstruct from its run config; `axolotl train` on this file trains it.\n\
         base_model: {}\n\
         adapter: lora\n\
         lora_r: {}\n\
         lora_alpha: {}\n\
         lora_dropout: {}\n\
         lora_target_modules: [{}]\n\
         datasets:\n  - path: {}\n    type: alpaca\n    ds_type: json\n\
         train_on_inputs: false\n\
         sequence_len: {}\n\
         val_set_size: {}\n\
         micro_batch_size: {}\n\
         gradient_accumulation_steps: {}\n\
         num_epochs: {}\n\
         optimizer: adamw_torch\n\
         learning_rate: {}\n\
         lr_scheduler: {schedule}\n\
         warmup_steps: {}\n\
         weight_decay: {}\n\
         max_grad_norm: {}\n\
         seed: {}\n\
         logging_steps: 1\n\
         output_dir: {}\n",
        yaml_str(base_model),
        l.r,
        l.lora_alpha,
        l.lora_dropout,
        modules.join(", "),
        yaml_str(&data.display().to_string()),
        config.data.max_seq_len,
        config.data.validation_fraction,
        o.micro_batch_size,
        o.gradient_accumulation_steps,
        o.epochs,
        o.learning_rate,
        o.warmup_steps,
        o.weight_decay,
        o.max_grad_norm,
        config.run.seed,
        yaml_str(&output_dir.display().to_string()),
    );
    if l.use_rslora {
        y.push_str("peft_use_rslora: true\n");
    }
    y.push_str(if config.model.device == "cpu" {
        "bf16: false\nfp16: false\n"
    } else {
        "bf16: auto\n"
    });
    if config.run.eval_every > 0 {
        y.push_str(&format!("eval_steps: {}\n", config.run.eval_every));
    }
    if config.run.checkpoint_every > 0 {
        y.push_str(&format!("save_steps: {}\n", config.run.checkpoint_every));
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_move_to_transformers_convention() {
        let e = Example {
            id: "a".into(),
            input_ids: vec![10, 11, 12, 13, 14],
            // Prompt 10 11 12, response 13 14: ours predict 13 at position 2, 14 at 3.
            labels: vec![IGNORE, IGNORE, 13, 14, IGNORE],
            truncated: false,
        };
        assert_eq!(hf_labels(&e), vec![IGNORE, IGNORE, IGNORE, 13, 14]);
    }
}
