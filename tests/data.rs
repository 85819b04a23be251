//! `bioinstruct data from-benchmark` on the shared benchmark files: every record validates
//! as the workspace's JSONL, each phrasing is used, and items of a test split are refused.

mod common;

use common::{benchmark, Workspace};
use std::path::Path;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn from_benchmark(ws: &Workspace, args: &[&str]) -> std::process::Output {
    let mut all = vec!["data", "from-benchmark", "--offline"];
    all.extend_from_slice(args);
    ws.run(&all)
}

#[test]
fn each_shared_file_becomes_records_that_validate() {
    let ws = Workspace::new();
    for (task, file, category, family, items) in [
        (
            "pubmedqa",
            "pubmedqa/pqal_trainval.json",
            "qa",
            "yes_no_maybe_qa",
            500,
        ),
        (
            "ncbi_disease",
            "ncbi-disease/devel.tsv",
            "ie",
            "disease_ner",
            0,
        ),
        (
            "mts_dialog",
            "mts-dialog/MTS-Dialog-ValidationSet.csv",
            "gen",
            "dialogue_to_note",
            100,
        ),
    ] {
        let source = benchmark(file);
        let out = ws.home.path().join(format!("{task}.jsonl"));
        // The shared files are outside the official test splits, which cannot be fetched
        // here: the check is skipped, and the records say so.
        let run = from_benchmark(
            &ws,
            &[
                "--task",
                task,
                source.to_str().expect("utf-8"),
                "--no-test-check",
                "-o",
                out.to_str().expect("utf-8"),
            ],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{task}: {stderr}");
        assert!(
            stderr.contains("not checked against the test split"),
            "{stderr}"
        );
        let validate = ws.run(&["seeds", "validate", out.to_str().expect("utf-8")]);
        assert!(
            validate.status.success(),
            "{task}: {}",
            String::from_utf8_lossy(&validate.stdout)
        );
        let records = lines(&out);
        if items > 0 {
            assert_eq!(records.len(), items, "{task}");
        } else {
            assert!(records.len() > 800, "{task}: {} sentences", records.len());
        }
        let mut phrasings = std::collections::BTreeSet::new();
        for r in &records {
            assert_eq!(r["category"], category, "{task}");
            assert_eq!(r["task"], family, "{task}");
            assert_eq!(r["provenance"]["benchmark"], task);
            assert_eq!(r["provenance"]["test_split_checked"], false);
            phrasings.insert(
                r["instruction"]
                    .as_str()
                    .expect("text")
                    .split(' ')
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        assert!(phrasings.len() >= 4, "{task}: {phrasings:?}");
        if task == "ncbi_disease" {
            let mentions: Vec<String> = records
                .iter()
                .map(|r| r["output"].as_str().expect("text").to_string())
                .collect();
            assert!(mentions
                .iter()
                .all(|m| serde_json::from_str::<Vec<String>>(m).is_ok()));
            assert!(mentions.iter().any(|m| m != "[]"));
        }
    }
}

#[test]
fn items_of_the_test_split_are_refused_by_id_or_text() {
    let ws = Workspace::new();
    let pqal = benchmark("pubmedqa/pqal_trainval.json");
    let text = std::fs::read_to_string(&pqal).expect("read");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("json");
    let pmid = map.keys().nth(3).expect("pmid").clone();
    // A test split in PubMedQA's format (test_ground_truth.json: PMID -> decision) that
    // holds the file's fourth PMID.
    let split = ws.home.path().join("test_ground_truth.json");
    std::fs::write(&split, format!("{{\"{pmid}\": \"yes\", \"1\": \"no\"}}")).expect("write");
    let out = ws.home.path().join("qa.jsonl");
    let args = |items: &str| {
        vec![
            "--task".to_string(),
            "pubmedqa".into(),
            pqal.display().to_string(),
            "--test-split".into(),
            split.display().to_string(),
            "--items".into(),
            items.into(),
            "-o".into(),
            out.display().to_string(),
        ]
    };
    let refused = from_benchmark(
        &ws,
        &args("0..10").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&format!("item {pmid}")) && stderr.contains("test split"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written when an item is refused");
    // The first three items are not in it.
    let first = from_benchmark(
        &ws,
        &args("0..3").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(lines(&out).len(), 3);
    assert!(lines(&out)[0]["provenance"]["test_split_checked"][0]
        .as_str()
        .is_some_and(|f| f.ends_with("test_ground_truth.json")));

    // NCBI-disease and MTS-Dialog are matched by text: a file checked against itself.
    for (task, file) in [
        ("ncbi_disease", "ncbi-disease/devel.tsv"),
        ("mts_dialog", "mts-dialog/MTS-Dialog-ValidationSet.csv"),
    ] {
        let f = benchmark(file).display().to_string();
        let run = from_benchmark(
            &ws,
            &["--task", task, &f, "--test-split", &f, "--items", "5..7"],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains("2 item(s) are in"),
            "{task}: {stderr}"
        );
    }

    // Offline, with no --test-split and no cached split: it says what to do.
    let run = from_benchmark(&ws, &["--task", "pubmedqa", pqal.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("--test-split FILE"),
        "{stderr}"
    );
}
