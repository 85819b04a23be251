//! Configuration and workspace folders.
//!
//! Settings are layered: the built-in defaults (`configs/default.toml`, embedded in the
//! binary) < the user's config file (`<config dir>/config.toml`, or `--settings FILE`) < CLI
//! flags. Folders come from [`directories::ProjectDirs`], or all sit under one folder when
//! `BIOINSTRUCT_HOME` is set.

use crate::data::{save_atomic, StoreError};
use crate::selfinstruct::teacher::TeacherConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The built-in defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

/// The 80 seed tasks shipped with the program, copied into a new workspace.
pub const BUNDLED_SEEDS: &str = include_str!("../assets/seeds/seeds.jsonl");

/// The environment variable that puts config, data and cache under one folder.
pub const HOME_ENV: &str = "BIOINSTRUCT_HOME";

/// Everything in a config file. Every table and key is optional in a user file; missing
/// ones keep their defaults. Unknown keys are errors (they are usually typos).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the workspace keeps its files.
    pub workspace: WorkspaceConfig,
    /// The terminal interface.
    pub tui: TuiConfig,
    /// The base model and where it runs.
    pub model: ModelSettings,
    /// Default sampling settings for chat and generation.
    pub generation: crate::model::Sampling,
    /// Self-instruct generation runs.
    pub generate: crate::selfinstruct::run::GenerateConfig,
    /// Teacher endpoints by name (`bioinstruct generate --teacher NAME`); `local` is the
    /// local model runtime and needs no entry. A user file's entries are added to the
    /// built-in ones, each key defaulting as in [`TeacherConfig`].
    #[serde(default = "default_teachers")]
    pub teachers: BTreeMap<String, TeacherConfig>,
}

/// The teacher name that means the local model runtime.
pub const LOCAL_TEACHER: &str = "local";

/// The default teacher name: llama.cpp's server (`[teachers.llamacpp]`) when something
/// answers at its address, else the local model runtime; see
/// [`crate::commands::generate::resolve_teacher`].
pub const AUTO_TEACHER: &str = "auto";

/// The built-in teachers: `openai` (GPT-4, as in the paper) and `llamacpp` (llama.cpp's
/// server on its default port).
pub fn default_teachers() -> BTreeMap<String, TeacherConfig> {
    let mut t = BTreeMap::new();
    t.insert(
        "openai".to_string(),
        TeacherConfig {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            ..TeacherConfig::default()
        },
    );
    t.insert(
        "llamacpp".to_string(),
        TeacherConfig {
            base_url: "http://127.0.0.1:8080/v1".into(),
            model: "default".into(),
            api_key_env: String::new(),
            concurrency: 1,
            ..TeacherConfig::default()
        },
    );
    t
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workspace: WorkspaceConfig::default(),
            tui: TuiConfig::default(),
            model: ModelSettings::default(),
            generation: crate::model::Sampling::default(),
            generate: crate::selfinstruct::run::GenerateConfig::default(),
            teachers: default_teachers(),
        }
    }
}

/// The `[model]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Hub id, folder or GGUF file.
    pub base: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Read the Hugging Face cache only.
    pub offline: bool,
    /// The Hugging Face cache folder; empty means the standard one.
    pub hf_cache: PathBuf,
    /// How GGUF projections are multiplied.
    pub gguf_compute: crate::model::GgufCompute,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            base: crate::model::source::DEFAULT_MODEL.to_string(),
            device: "cpu".to_string(),
            offline: false,
            hf_cache: PathBuf::new(),
            gguf_compute: crate::model::GgufCompute::Keep,
        }
    }
}

/// The `[workspace]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// The seed file; a relative path is taken from the data folder.
    pub seeds_file: PathBuf,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        WorkspaceConfig {
            seeds_file: PathBuf::from("seeds.jsonl"),
        }
    }
}

/// The `[tui]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuiConfig {
    /// Capture the mouse (wheel scrolls, click selects). Off lets the terminal select text.
    pub mouse: bool,
    /// The command that edits a record as JSON; empty means `$VISUAL`, then `$EDITOR`, then `vi`.
    pub editor: String,
}

impl Default for TuiConfig {
    fn default() -> Self {
        TuiConfig {
            mouse: true,
            editor: String::new(),
        }
    }
}

/// A configuration or workspace problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a wrong key or value.
    #[error("config {}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The parser's message, naming the key.
        message: String,
    },
    /// No home folder could be found and `BIOINSTRUCT_HOME` is unset.
    #[error("cannot find a home folder for the workspace: set {HOME_ENV}")]
    NoHome,
    /// Creating the workspace's seed file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Config {
    /// Parses a config file's text over the defaults; `path` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the line and key at fault.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count())
                .unwrap_or(1),
            message: e.message().trim().to_string(),
        })?;
        // A user's `[teachers.openai]` changes some keys of the built-in `openai`; the
        // others keep the built-in's values, not the generic defaults.
        let builtin = default_teachers();
        if let Ok(mut table) = text.parse::<toml::Table>() {
            if let Some(toml::Value::Table(teachers)) = table.get_mut("teachers") {
                for (name, b) in &builtin {
                    if let (Some(toml::Value::Table(user)), Ok(toml::Value::Table(b))) =
                        (teachers.get_mut(name), toml::Value::try_from(b))
                    {
                        for (k, v) in b {
                            user.entry(k).or_insert(v);
                        }
                    }
                }
                if let Ok(merged) = toml::Value::Table(table).try_into::<Config>() {
                    config = merged;
                }
            }
        }
        for (name, b) in builtin {
            config.teachers.entry(name).or_insert(b);
        }
        Ok(config)
    }
}

/// The workspace's folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Holds `config.toml`.
    pub config_dir: PathBuf,
    /// Holds the seed file and, later, generated tasks and training runs.
    pub data_dir: PathBuf,
    /// Holds downloaded models.
    pub cache_dir: PathBuf,
}

impl Workspace {
    /// The folders `BIOINSTRUCT_HOME` names when set (`config/`, `data/`, `cache/` under it),
    /// else the platform's (`~/.config/bioinstruct`, `~/.local/share/bioinstruct`,
    /// `~/.cache/bioinstruct` on Linux).
    ///
    /// # Errors
    /// [`ConfigError::NoHome`] when neither is available.
    pub fn locate() -> Result<Workspace, ConfigError> {
        if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
            return Ok(Workspace::under(Path::new(&home)));
        }
        let dirs = directories::ProjectDirs::from("org", "bioinstruct", "bioinstruct")
            .ok_or(ConfigError::NoHome)?;
        Ok(Workspace {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir: dirs.data_dir().to_path_buf(),
            cache_dir: dirs.cache_dir().to_path_buf(),
        })
    }

    /// All folders under `home`.
    pub fn under(home: &Path) -> Workspace {
        Workspace {
            config_dir: home.join("config"),
            data_dir: home.join("data"),
            cache_dir: home.join("cache"),
        }
    }

    /// The user's config file.
    pub fn user_config_path(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// bioinstruct's own model folder (the default model's GGUF goes here).
    pub fn models_dir(&self) -> PathBuf {
        self.cache_dir.join("models")
    }
}

/// What CLI flags may override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--settings FILE`: read this instead of the workspace's config file (it must exist).
    pub config_file: Option<PathBuf>,
    /// `--seeds FILE`: work on this seed file instead of the workspace's.
    pub seeds_file: Option<PathBuf>,
    /// `--no-mouse`.
    pub no_mouse: bool,
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The workspace folders.
    pub workspace: Workspace,
    /// Defaults < user file < flags.
    pub config: Config,
    /// The seed file to work on (absolute or relative to the current folder).
    pub seeds_path: PathBuf,
    /// Whether `seeds_path` is the workspace's own (created from the bundled seeds when missing).
    pub seeds_in_workspace: bool,
    /// The `--settings` file, made absolute (passed on to background trainers).
    pub settings_file: Option<PathBuf>,
}

impl Settings {
    /// Where models are looked for, under these settings (offline when the config, a flag
    /// or `HF_HUB_OFFLINE` says so).
    pub fn resolver(&self) -> crate::model::Resolver {
        let m = &self.config.model;
        crate::model::Resolver {
            hf_cache: if m.hf_cache.as_os_str().is_empty() {
                crate::model::source::default_hf_cache()
            } else {
                m.hf_cache.clone()
            },
            models_dir: self.workspace.models_dir(),
            offline: m.offline || crate::model::source::offline_from_env(),
        }
    }

    /// Resolves folders and layers the configuration.
    ///
    /// # Errors
    /// A missing `--settings` file, an unreadable or invalid config file, or no home folder.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        let workspace = Workspace::locate()?;
        let (path, required) = match &overrides.config_file {
            Some(p) => (p.clone(), true),
            None => (workspace.user_config_path(), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Config::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        if overrides.no_mouse {
            config.tui.mouse = false;
        }
        let (seeds_path, seeds_in_workspace) = match &overrides.seeds_file {
            Some(p) => (p.clone(), false),
            None => (workspace.data_dir.join(&config.workspace.seeds_file), true),
        };
        let settings_file = match &overrides.config_file {
            Some(p) => Some(std::path::absolute(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Settings {
            workspace,
            config,
            seeds_path,
            seeds_in_workspace,
            settings_file,
        })
    }

    /// Copies the bundled seeds into the workspace on first use. Returns whether it did.
    /// A seed file given with `--seeds` is never created.
    ///
    /// # Errors
    /// [`ConfigError::Store`] when the file cannot be written.
    pub fn ensure_seeds(&self) -> Result<bool, ConfigError> {
        if !self.seeds_in_workspace || self.seeds_path.exists() {
            return Ok(false);
        }
        save_atomic(&self.seeds_path, BUNDLED_SEEDS.as_bytes())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_is_the_default_config() {
        let parsed = Config::parse(Path::new("default.toml"), DEFAULT_TOML).expect("parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn default_toml_documents_every_setting() {
        fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    keys(&format!("{prefix}{k}."), v, out);
                }
            } else {
                out.push(prefix.trim_end_matches('.').to_string());
            }
        }
        let mut all = Vec::new();
        keys(
            "",
            &toml::Value::try_from(Config::default()).expect("serializes"),
            &mut all,
        );
        let documented: toml::Value = toml::from_str(DEFAULT_TOML).expect("parses");
        let mut present = Vec::new();
        keys("", &documented, &mut present);
        assert_eq!(all, present);
    }

    #[test]
    fn a_user_file_overrides_only_what_it_names() {
        let c = Config::parse(Path::new("u.toml"), "[tui]\nmouse = false\n").expect("parses");
        assert!(!c.tui.mouse);
        assert_eq!(c.workspace, WorkspaceConfig::default());
    }

    #[test]
    fn a_user_teacher_adds_to_the_built_in_ones_and_changes_only_what_it_names() {
        let c = Config::parse(
            Path::new("u.toml"),
            "[teachers.openai]\nmodel = \"gpt-4o\"\n\n[teachers.vllm]\nbase_url = \"http://gpu:8000/v1\"\n",
        )
        .expect("parses");
        let openai = &c.teachers["openai"];
        assert_eq!(openai.model, "gpt-4o");
        assert_eq!(
            openai.base_url, "https://api.openai.com/v1",
            "kept from the built-in"
        );
        assert_eq!(c.teachers["vllm"].base_url, "http://gpu:8000/v1");
        assert_eq!(
            c.teachers["vllm"].timeout_s,
            TeacherConfig::default().timeout_s
        );
        assert_eq!(c.teachers["llamacpp"], default_teachers()["llamacpp"]);
        let e = Config::parse(Path::new("u.toml"), "[teachers.x]\nbase = \"y\"\n")
            .expect_err("unknown key");
        assert!(e.to_string().starts_with("config u.toml:2:"), "{e}");
    }

    #[test]
    fn a_typo_names_file_line_and_key() {
        let e = Config::parse(Path::new("u.toml"), "[workspace]\n\n[tui]\nmose = false\n")
            .expect_err("unknown key");
        let msg = e.to_string();
        assert!(
            msg.starts_with("config u.toml:4: unknown field `mose`"),
            "{msg}"
        );
        let e = Config::parse(Path::new("u.toml"), "[tui]\nmouse = \"yes\"\n").expect_err("type");
        assert!(e.to_string().starts_with("config u.toml:2:"), "{e}");
    }
}
