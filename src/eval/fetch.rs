//! The benchmarks' own files, downloaded from their publishers' repositories at pinned
//! commits, checked against pinned sizes and SHA-256 sums, into bioinstruct's cache
//! (`<cache>/benchmarks/TASK/`). Nothing of them is in this repository.

use super::EvalError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One pinned file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// `owner/name` on GitHub.
    pub repo: &'static str,
    /// The commit.
    pub commit: &'static str,
    /// The path in the repository.
    pub path: &'static str,
    /// Size, in bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: &'static str,
}

impl Pinned {
    /// The file's name.
    pub fn file_name(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }

    /// Where it is downloaded from.
    pub fn url(&self) -> String {
        format!(
            "https://raw.githubusercontent.com/{}/{}/{}",
            self.repo, self.commit, self.path
        )
    }
}

const PUBMEDQA: &str = "pubmedqa/pubmedqa";
const PUBMEDQA_AT: &str = "1cbae8e92f72f20c8d3747cbb3bf5bc53554d997";
const NCBI: &str = "spyysalo/ncbi-disease";
const NCBI_AT: &str = "5a266c6fc76fb2b5184cfa397ff0a5ecdb133aec";
const MTS: &str = "abachaa/MTS-Dialog";
const MTS_AT: &str = "3ff0801933608d6f570468c13125125fb5cabdea";

/// PubMedQA PQA-L (1,000 expert-labelled items) and the ids of its 500-item test split.
pub const PUBMEDQA_FILES: [Pinned; 2] = [
    Pinned {
        repo: PUBMEDQA,
        commit: PUBMEDQA_AT,
        path: "data/ori_pqal.json",
        bytes: 2_584_787,
        sha256: "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d",
    },
    Pinned {
        repo: PUBMEDQA,
        commit: PUBMEDQA_AT,
        path: "data/test_ground_truth.json",
        bytes: 11_414,
        sha256: "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51",
    },
];

/// NCBI-disease in CoNLL form: train, devel, test.
pub const NCBI_FILES: [Pinned; 3] = [
    Pinned {
        repo: NCBI,
        commit: NCBI_AT,
        path: "conll/train.tsv",
        bytes: 1_140_476,
        sha256: "5f87b0de649eccff21e6d6e49e304aace808056ecae55225ea31602192517be9",
    },
    Pinned {
        repo: NCBI,
        commit: NCBI_AT,
        path: "conll/devel.tsv",
        bytes: 200_352,
        sha256: "b4e1e7efcc2a35047bf2f3d281648357470e674f555d4a26a0049ac37d59cc61",
    },
    Pinned {
        repo: NCBI,
        commit: NCBI_AT,
        path: "conll/test.tsv",
        bytes: 205_664,
        sha256: "8f088ce45dc4746592188f9e69de3d89d87f3bb8f0ed8c4a287d018123fa148d",
    },
];

/// MTS-Dialog: training, validation and the two test sets.
pub const MTS_FILES: [Pinned; 4] = [
    Pinned {
        repo: MTS,
        commit: MTS_AT,
        path: "Main-Dataset/MTS-Dialog-TrainingSet.csv",
        bytes: 1_041_071,
        sha256: "65a28681dd59fc159681ea026e44610f2af7bc64a0e7f892d763eb03d9f503dc",
    },
    Pinned {
        repo: MTS,
        commit: MTS_AT,
        path: "Main-Dataset/MTS-Dialog-ValidationSet.csv",
        bytes: 74_054,
        sha256: "227206520c4534381c0d7fba6d3f09319a9af5a6d9603a93c0341af1198e3958",
    },
    Pinned {
        repo: MTS,
        commit: MTS_AT,
        path: "Main-Dataset/MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv",
        bytes: 162_806,
        sha256: "b4d38dd2c99b2e9860099abcf653f1e0f3e9b69f9fcc45be2a2699b37a4d2f37",
    },
    Pinned {
        repo: MTS,
        commit: MTS_AT,
        path: "Main-Dataset/MTS-Dialog-TestSet-2-MEDIQA-Sum-2023.csv",
        bytes: 171_558,
        sha256: "226644466ed3af82382b327a3e684aab70aa605b96cfd93b04f584f1826ab1a6",
    },
];

/// The pinned files of task `name`.
///
/// # Errors
/// [`EvalError::Unknown`] for a task with no published files (`jsonl`) or no such task.
pub fn files(name: &str) -> Result<&'static [Pinned], EvalError> {
    match name {
        "pubmedqa" => Ok(&PUBMEDQA_FILES),
        "ncbi_disease" => Ok(&NCBI_FILES),
        "mts_dialog" => Ok(&MTS_FILES),
        "jsonl" => Err(EvalError::Unknown(
            "jsonl tasks are your own files: pass --data FILE".into(),
        )),
        other => Err(super::tasks::unknown_task(other)),
    }
}

/// The file of task `name` that `eval run` scores by default: the official test split
/// (PubMedQA's `ori_pqal.json`, filtered to `test_ground_truth.json`'s ids; NCBI-disease's
/// `test.tsv`; MTS-Dialog's test set 1).
///
/// # Errors
/// As [`files`].
pub fn default_file(name: &str) -> Result<Pinned, EvalError> {
    let f = files(name)?;
    Ok(match name {
        "pubmedqa" => f[0],
        "ncbi_disease" => f[2],
        _ => f[2],
    })
}

/// The folder task `name`'s files go in.
pub fn dir(cache_dir: &Path, name: &str) -> PathBuf {
    cache_dir.join("benchmarks").join(name)
}

/// Checks `path` against `pin`'s size and SHA-256.
fn matches(path: &Path, pin: &Pinned) -> bool {
    std::fs::read(path)
        .map(|b| b.len() as u64 == pin.bytes && super::sha256_hex(&b) == pin.sha256)
        .unwrap_or(false)
}

/// The local copy of `pin`, downloading it first when missing or changed (unless
/// `offline`). `progress` hears `(file, bytes so far, total bytes)`.
///
/// # Errors
/// [`EvalError::Fetch`] naming the URL: unreachable, a short read, a SHA-256 mismatch, or
/// missing while offline.
pub fn ensure(
    cache_dir: &Path,
    task: &str,
    pin: &Pinned,
    offline: bool,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf, EvalError> {
    let folder = dir(cache_dir, task);
    let path = folder.join(pin.file_name());
    if matches(&path, pin) {
        return Ok(path);
    }
    if offline {
        return Err(EvalError::Fetch(format!(
            "{} is not in the cache ({}) and offline mode never connects: run `bioinstruct eval fetch {task}` on a connected machine, or pass --data FILE",
            pin.file_name(),
            path.display()
        )));
    }
    std::fs::create_dir_all(&folder).map_err(|e| EvalError::io(&folder, e))?;
    let url = pin.url();
    let fail = |what: String| EvalError::Fetch(format!("{url}: {what}"));
    let response = ureq::get(&url).call().map_err(|e| fail(e.to_string()))?;
    let mut reader = response.into_reader();
    let mut bytes = Vec::with_capacity(pin.bytes as usize);
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        progress(pin.file_name(), bytes.len() as u64, pin.bytes);
    }
    let sha = super::sha256_hex(&bytes);
    if bytes.len() as u64 != pin.bytes || sha != pin.sha256 {
        return Err(fail(format!(
            "got {} bytes with SHA-256 {sha}, expected {} bytes with {}",
            bytes.len(),
            pin.bytes,
            pin.sha256
        )));
    }
    crate::data::replace_atomic(&path, &bytes)?;
    Ok(path)
}

/// The PMIDs of PubMedQA's test split, from `test_ground_truth.json` (an object keyed by
/// PMID).
///
/// # Errors
/// [`EvalError::Data`] when the file is not such an object.
pub fn pubmedqa_test_ids(path: &Path) -> Result<std::collections::HashSet<String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| EvalError::at_line(path, e.line(), "json", e.to_string()))?;
    Ok(map.keys().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_never_connects_and_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = ensure(
            dir.path(),
            "pubmedqa",
            &PUBMEDQA_FILES[0],
            true,
            &mut |_, _, _| {},
        )
        .expect_err("offline");
        let text = e.to_string();
        assert!(text.contains("bioinstruct eval fetch pubmedqa"), "{text}");
    }

    #[test]
    fn a_matching_local_copy_is_used_as_it_is() {
        let dir = tempfile::tempdir().expect("tmp");
        let content = b"hello";
        let pin = Pinned {
            repo: "x/y",
            commit: "c",
            path: "d/hello.txt",
            bytes: 5,
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        };
        let folder = super::dir(dir.path(), "t");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("hello.txt"), content).expect("write");
        let got = ensure(dir.path(), "t", &pin, true, &mut |_, _, _| {}).expect("cached");
        assert_eq!(got, folder.join("hello.txt"));
    }
}
