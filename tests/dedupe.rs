//! `bioinstruct dedupe`: Alpaca's filters over an instruction file, kept and rejected files
//! with reasons and similarity.

mod common;

use common::Workspace;

fn line(id: &str, instruction: &str) -> String {
    serde_json::json!({"id": id, "category": "qa", "task": "t", "instruction": instruction, "input": "", "output": "o"})
        .to_string()
}

#[test]
fn dedupe_writes_kept_and_rejected_with_reasons_and_similarity() {
    let ws = Workspace::new();
    let file = ws.home.path().join("imported.jsonl");
    let lines = [
        line("a-1", "List every drug and dose mentioned in the medication history."),
        line("a-2", "List every drug and dose mentioned in the medication history, please."),
        line("a-3", "Plot the patient's glucose readings over the last week."),
        line("a-4", "Summarize."),
        line("a-5", "Explain to the patient what an HbA1c of 6.5% means for them."),
        // Near-copy of seed-001's instruction.
        line("a-6", "Answer the multiple-choice question. Give the letter and name of the best answer, then explain in one or two sentences why it is correct."),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let out = ws.ok(&["dedupe", file.to_str().expect("utf-8")]);
    assert!(out.contains("kept 2, rejected 4"), "{out}");
    assert!(out.contains("against 80 seed(s)"), "{out}");
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(ws.home.path().join(name))
            .expect("output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let kept = read("imported.kept.jsonl");
    let rejected = read("imported.rejected.jsonl");
    assert_eq!(
        kept.iter()
            .map(|r| r["id"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["a-1", "a-5"]
    );
    let sim = &kept[0]["similarity"];
    assert!(sim["max_rouge_l"].as_f64().is_some_and(|m| m <= 0.7));
    assert_eq!(sim["most_similar"].as_array().map(Vec::len), Some(10));
    let reasons: Vec<(&str, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default(),
                r["rejection"]["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("a-2", "too_similar"),
            ("a-3", "blacklisted"),
            ("a-4", "too_short"),
            ("a-6", "too_similar")
        ]
    );
    assert_eq!(rejected[0]["rejection"]["to"], "a-1");
    assert_eq!(rejected[3]["rejection"]["to"], "seed-001");

    // Without the seeds, a-6 is kept; a malformed line is named and nothing is written.
    let alone = ws.ok(&["dedupe", file.to_str().expect("utf-8"), "--no-seeds"]);
    assert!(alone.contains("kept 3, rejected 3"), "{alone}");
    std::fs::write(&file, lines[0].clone() + "\n{\"id\": \"broken\"\n").expect("write");
    let bad = ws.run(&["dedupe", file.to_str().expect("utf-8")]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("imported.jsonl:2:"), "{err}");
}
