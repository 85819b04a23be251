//! Helpers for generation runs: run `bioinstruct generate`, kill it mid-run, and check the
//! files it wrote.

use super::Workspace;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The generation folder of a workspace (`[generate] dir` under the data folder).
pub fn dir(ws: &Workspace) -> PathBuf {
    ws.home.path().join("data").join("generated")
}

/// The lines of a JSONL file, each parsed; panics naming the file and line on a bad one.
pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}

/// Starts `generate` with `args`, waits until the kept file has `kill_at` lines (at most
/// `limit`), then SIGKILLs it. Returns the kept count at the kill.
pub fn kill_when_kept(ws: &Workspace, args: &[&str], kill_at: usize, limit: Duration) -> usize {
    let mut child = ws
        .cmd()
        .arg("generate")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn generate");
    let kept = dir(ws).join("generated.jsonl");
    let start = Instant::now();
    loop {
        let n = std::fs::read_to_string(&kept).map_or(0, |t| t.lines().count());
        if n >= kill_at {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("generate ended ({status}) before {kill_at} kept tasks (had {n})");
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{kill_at} kept tasks not reached in {limit:?} (had {n}); the last replies:\n{}",
                raw_tail(ws, 3)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    std::fs::read_to_string(&kept).map_or(0, |t| t.lines().count())
}

/// The last `n` lines of the run's raw.jsonl, each cut to 400 characters: what the teacher
/// answered (or the error) when a run falls short.
pub fn raw_tail(ws: &Workspace, n: usize) -> String {
    let text = std::fs::read_to_string(dir(ws).join("raw.jsonl")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return "(raw.jsonl is empty: no reply came back)".into();
    }
    tail.iter()
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a finished run: exactly `target` kept tasks, no two alike, every record with its
/// provenance and similarity, rejected ones with a reason; every raw line a reply or an
/// error. Returns (kept, rejected) records.
pub fn check_finished(
    ws: &Workspace,
    target: usize,
    teacher_contains: &str,
) -> (Vec<Value>, Vec<Value>) {
    let d = dir(ws);
    let kept = lines(&d.join("generated.jsonl"));
    let rejected = lines(&d.join("rejected.jsonl"));
    let raw = lines(&d.join("raw.jsonl"));
    assert_eq!(kept.len(), target, "the target, not one more or less");
    let mut ids = HashSet::new();
    let mut texts = HashSet::new();
    for r in kept.iter().chain(&rejected) {
        assert!(
            ids.insert(r["id"].as_str().expect("id").to_string()),
            "duplicate id {r}"
        );
        let p = &r["provenance"];
        assert!(
            p["teacher"]
                .as_str()
                .expect("teacher")
                .contains(teacher_contains),
            "{p}"
        );
        assert_eq!(p["seeds"].as_array().expect("seed ids").len(), 3, "{p}");
        assert!(p["time"].as_str().expect("time").ends_with('Z'), "{p}");
        assert!(p["request"].is_u64(), "{p}");
        assert_eq!(r["task"], "self_instruct");
    }
    for r in &kept {
        let key = (
            r["instruction"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string(),
            r["input"].as_str().unwrap_or_default().trim().to_string(),
        );
        assert!(texts.insert(key), "a kept duplicate: {r}");
        let s = &r["similarity"];
        let max = s["max_rouge_l"].as_f64().expect("max ROUGE-L");
        assert!(max <= 0.7, "{r}");
        assert!(s["mean_rouge_l"].as_f64().expect("mean") <= max);
        assert_eq!(
            s["most_similar"].as_array().expect("most similar").len(),
            10
        );
        assert!(r.get("rejection").is_none());
    }
    for r in &rejected {
        assert!(r["rejection"]["reason"].is_string(), "{r}");
    }
    assert!(!raw.is_empty());
    for line in &raw {
        assert!(line["request"].is_u64(), "{line}");
        assert!(
            line.get("text").is_some() || line.get("error").is_some(),
            "{line}"
        );
    }
    (kept, rejected)
}
