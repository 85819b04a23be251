//! The headless `seeds` commands, run as the real binary.

mod common;

use common::{fixture, Workspace};
use serde_json::Value;
use std::collections::HashMap;

#[test]
fn a_fresh_workspace_lists_the_80_bundled_seeds() {
    let ws = Workspace::new();
    let out = ws.ok(&["seeds", "list", "--json"]);
    let records: Vec<Value> = serde_json::from_str(&out).expect("a JSON array");
    assert_eq!(records.len(), 80);
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *per_category
            .entry(r["category"].as_str().expect("category"))
            .or_default() += 1;
    }
    for c in ["qa", "ie", "gen"] {
        assert!(per_category[c] >= 20, "{c}: {per_category:?}");
    }
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    let expected: Vec<String> = (1..=80).map(|n| format!("seed-{n:03}")).collect();
    assert_eq!(ids, expected);
    // The workspace copy is byte-identical to the bundled file, which stays untouched.
    let bundled = include_str!("../assets/seeds/seeds.jsonl");
    assert_eq!(
        std::fs::read_to_string(ws.seeds()).expect("copied"),
        bundled
    );
}

#[test]
fn list_filters_by_category() {
    let ws = Workspace::new();
    let out = ws.ok(&["seeds", "list", "--category", "ie"]);
    assert_eq!(out.lines().count(), 24);
    assert!(
        out.lines()
            .all(|l| l.split_whitespace().nth(1) == Some("ie")),
        "{out}"
    );
}

#[test]
fn validate_names_every_bad_line_and_field_and_fails() {
    let ws = Workspace::new();
    let file = fixture("mixed_50_good_3_bad.jsonl");
    let out = ws.run(&["seeds", "validate", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = file.display().to_string();
    assert!(
        stdout.contains(&format!("{name}:11: not valid JSON")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{name}:27: category: unknown category \"diagnosis\""
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{name}:45: output: is missing")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one-line reason: {stderr}");
    assert!(stderr.contains("3 of 53 records are invalid"), "{stderr}");
}

#[test]
fn editing_commands_keep_invalid_lines_and_all_good_records() {
    let ws = Workspace::new();
    let file = ws.home.path().join("mixed.jsonl");
    std::fs::copy(fixture("mixed_50_good_3_bad.jsonl"), &file).expect("copy");
    let path = file.to_str().expect("utf-8");
    ws.ok(&[
        "--seeds",
        path,
        "seeds",
        "edit",
        "seed-001",
        "--output",
        "B. Metformin.",
    ]);
    ws.ok(&["--seeds", path, "seeds", "rm", "seed-002"]);
    let text = std::fs::read_to_string(&file).expect("read");
    let loaded = bioinstruct::data::parse_jsonl(&file, &text);
    assert_eq!(loaded.records.len(), 49);
    assert_eq!(loaded.invalid.len(), 3);
    assert_eq!(loaded.records[0].output, "B. Metformin.");
    // The previous version is kept.
    let bak = bioinstruct::data::backup_path(&file);
    let before = bioinstruct::data::read_jsonl(&bak).expect("bak");
    assert_eq!(before.records.len(), 50);
}

#[test]
fn alpaca_import_then_export_reproduces_every_field() {
    let ws = Workspace::new();
    let dir = ws.home.path();
    let alpaca = serde_json::json!([
        {"instruction": "Name the vitamin that isoniazid depletes.", "input": "", "output": "Pyridoxine (vitamin B6)."},
        {"instruction": "Summarize.", "input": "Line one\nline two with \"quotes\" and unicode: é, µg, ≥", "output": "Two lines.", "source": "manual", "score": 0.5},
        {"instruction": "Classify the NLI pair.", "input": "Premise: …", "output": "neutral", "tags": ["nli", {"nested": true}]}
    ]);
    let src = dir.join("in.json");
    std::fs::write(&src, serde_json::to_string_pretty(&alpaca).expect("json")).expect("write");
    let import = ws.ok(&["seeds", "import", src.to_str().expect("utf-8")]);
    assert!(import.contains("imported 3 records"), "{import}");
    // Ids continue the bundled numbering.
    let shown = ws.ok(&["seeds", "show", "seed-083", "--json"]);
    assert!(shown.contains("Classify the NLI pair."), "{shown}");

    let out = dir.join("out.json");
    ws.ok(&[
        "seeds",
        "export",
        "--format",
        "alpaca",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let exported: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    assert_eq!(exported.len(), 83);
    assert_eq!(Value::Array(exported[80..].to_vec()), alpaca);
}

#[test]
fn import_refuses_a_file_with_bad_lines_and_changes_nothing() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let before = std::fs::read(ws.seeds()).expect("seeds");
    let bad = fixture("mixed_50_good_3_bad.jsonl");
    let out = ws.run(&["seeds", "import", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(ws.seeds()).expect("seeds"), before);
}

#[test]
fn add_show_and_errors() {
    let ws = Workspace::new();
    let id = ws.ok(&[
        "seeds",
        "add",
        "--category",
        "gen",
        "--task",
        "discharge_instructions",
        "--instruction",
        "Write discharge instructions.",
        "--input",
        "",
        "--output",
        "Rest.",
    ]);
    assert_eq!(id.trim(), "seed-081");
    let shown = ws.ok(&["seeds", "show", "seed-081"]);
    assert!(
        shown.starts_with("seed-081  [gen]  discharge_instructions"),
        "{shown}"
    );

    let bad_task = ws.run(&[
        "seeds",
        "add",
        "--category",
        "qa",
        "--task",
        "Bad Task",
        "--instruction",
        "x",
        "--output",
        "y",
    ]);
    assert_eq!(bad_task.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_task.stderr);
    assert!(
        err.contains("task: \"Bad Task\" is not snake_case"),
        "{err}"
    );

    let missing = ws.run(&["seeds", "show", "seed-999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .starts_with("error: no record with id \"seed-999\""));
}

#[test]
fn edit_without_flags_uses_the_editor() {
    let ws = Workspace::new();
    let out = ws
        .cmd()
        .env("EDITOR", "sed -i s/Metformin/METFORMIN/")
        .args(["seeds", "edit", "seed-001"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = ws.ok(&["seeds", "show", "seed-001", "--json"]);
    assert!(shown.contains("B. METFORMIN."), "{shown}");
}

#[test]
fn a_wrong_config_names_file_line_and_key() {
    let ws = Workspace::new();
    let cfg = ws.home.path().join("config").join("config.toml");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &cfg,
        "[workspace]\nseeds_file = \"s.jsonl\"\n[tui]\nmouse = \"often\"\n",
    )
    .expect("write");
    let out = ws.run(&["seeds", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: config {}:4:", cfg.display())),
        "{err}"
    );
    assert!(err.contains("bool"), "{err}");

    let missing = ws.run(&["--settings", "/nonexistent/c.toml", "seeds", "list"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read config /nonexistent/c.toml")
    );
}

#[test]
fn the_user_config_and_flags_layer_over_the_defaults() {
    let ws = Workspace::new();
    let cfg = ws.home.path().join("config").join("config.toml");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("mkdir");
    std::fs::write(&cfg, "[workspace]\nseeds_file = \"mine.jsonl\"\n").expect("write");
    ws.ok(&["seeds", "list"]);
    assert!(ws.home.path().join("data").join("mine.jsonl").exists());
    // A flag beats the file.
    let other = ws.home.path().join("other.jsonl");
    std::fs::write(&other, "").expect("write");
    assert_eq!(
        ws.ok(&["--seeds", other.to_str().expect("utf-8"), "seeds", "list"]),
        ""
    );
}

#[test]
fn export_jsonl_round_trips_through_import() {
    let ws = Workspace::new();
    let jsonl = ws.ok(&["seeds", "export", "--category", "other"]);
    assert_eq!(jsonl.lines().count(), 8);
    let second = Workspace::new();
    let f = second.home.path().join("other.jsonl");
    std::fs::write(&f, &jsonl).expect("write");
    second.ok(&["seeds", "validate", f.to_str().expect("utf-8")]);
}
