//! Crash safety of saving: SIGKILL the real binary at random instants while it rewrites a
//! large seed file; the file must always be exactly the old or the new version.

mod common;

use common::Workspace;
use std::time::Instant;

/// A seed file of `n` records (about 1 KB each, so a save takes a measurable time).
fn big_file(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let category = ["qa", "ie", "gen", "other"][i % 4];
        let record = serde_json::json!({
            "id": format!("seed-{i:05}"),
            "category": category,
            "task": "stress_test",
            "instruction": format!("Instruction {i}: {}", "summarize the discharge summary. ".repeat(12)),
            "input": "A 71-year-old woman with heart failure was diuresed with furosemide. ".repeat(6),
            "output": format!("version 0 of record {i}"),
        });
        text.push_str(&record.to_string());
        text.push('\n');
    }
    text
}

#[test]
fn sigkill_while_saving_leaves_the_old_or_the_new_file() {
    let ws = Workspace::new();
    let file = ws.home.path().join("big.jsonl");
    // 12,000 records (12 MB): a save takes a few hundred ms here, long enough for kills to
    // land before, during and after it.
    let records = 12_000;
    std::fs::write(&file, big_file(records)).expect("write");
    let path = file.to_str().expect("utf-8").to_string();
    let edit = |version: usize| {
        let mut c = ws.cmd();
        c.args(["--seeds", &path, "seeds", "edit", "seed-00000", "--output"])
            .arg(format!("version {version} of record 0"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };

    // How long one uninterrupted edit (read, change, atomic save) takes here: the fastest of
    // three. Other work on the machine only slows a run down; a calibration slowed that way
    // would put every kill after the end.
    let mut runs: Vec<_> = (1..=3)
        .map(|v| {
            let start = Instant::now();
            assert!(edit(v).status().expect("run").success());
            start.elapsed()
        })
        .collect();
    runs.sort();
    let full = runs[0];

    // A fixed seed, so that a failure can be replayed.
    let mut rng = bioinstruct::rng::XorShift64Star::new(0x5eed_1234_abcd_ef01);
    let (mut killed, mut kept_old, mut became_new) = (0, 0, 0);
    let mut current = std::fs::read_to_string(&file).expect("read");
    for version in 4..34 {
        let mut child = edit(version).spawn().expect("spawn");
        // Kill instants spread over [0.1, 2.0] x the calibrated run: before, during and after
        // the save.
        std::thread::sleep(full.mul_f64(0.1 + 1.9 * rng.next_f64()));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        child.wait().expect("reap");

        let now = std::fs::read_to_string(&file).expect("the file is always there");
        let loaded = bioinstruct::data::parse_jsonl(&file, &now);
        assert!(loaded.invalid.is_empty(), "torn file after kill {version}");
        assert_eq!(loaded.records.len(), records);
        let bak = bioinstruct::data::read_jsonl(&bioinstruct::data::backup_path(&file))
            .expect("the previous version is always there");
        assert!(
            bak.invalid.is_empty() && bak.records.len() == records,
            "torn .bak"
        );
        let output = &loaded.records[0].output;
        if now == current {
            kept_old += 1;
        } else {
            assert_eq!(
                output,
                &format!("version {version} of record 0"),
                "neither old nor new"
            );
            assert_eq!(
                loaded.records[1..],
                bioinstruct::data::parse_jsonl(&file, &current).records[1..]
            );
            became_new += 1;
        }
        current = now;
    }
    eprintln!(
        "one save: {full:?}; {killed} of 30 runs killed; {kept_old} left the old file, {became_new} the new"
    );
    // About half the kills land before the process ends (instants over [0.1, 2.0] x a run).
    assert!(
        killed >= 5,
        "too few kills landed mid-run to mean anything: {killed}"
    );
    assert!(kept_old >= 1 && became_new >= 1);
}
