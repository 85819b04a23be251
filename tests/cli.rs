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

/// The instruction files people have: JSONL with only instruction/input/output, the same as a
/// JSON array (BioInstruct's released `biomed_instruct_25k.json`), and ShareGPT as a JSON
/// array (LLaMA-Factory) or one a line (axolotl); ids, category and task filled in.
#[test]
fn import_and_dedupe_read_bare_jsonl_json_arrays_and_sharegpt() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let dir = ws.home.path().join("incoming");
    std::fs::create_dir_all(&dir).expect("dir");
    let bare = dir.join("bare.jsonl");
    std::fs::write(
        &bare,
        "{\"instruction\": \"Define sepsis in one sentence for a patient.\", \"input\": \"\", \"output\": \"A dysregulated host response to infection.\"}\n\
         {\"instruction\": \"Extract every drug named in the clinical note.\", \"input\": \"Took aspirin and warfarin.\", \"output\": \"aspirin, warfarin\"}\n",
    )
    .expect("write");
    let array = dir.join("biomed_instruct_25k.json");
    std::fs::write(
        &array,
        r#"[{"instruction": "Name the vitamin lacking in scurvy.", "input": "", "output": "Vitamin C."}]"#,
    )
    .expect("write");
    let sharegpt_array = dir.join("sharegpt.json");
    std::fs::write(
        &sharegpt_array,
        r#"[{"conversations": [{"from": "system", "value": "You are a clinician."}, {"from": "human", "value": "What is a normal adult resting heart rate?"}, {"from": "gpt", "value": "60 to 100 beats per minute."}]}]"#,
    )
    .expect("write");
    let sharegpt_lines = dir.join("sharegpt.jsonl");
    std::fs::write(
        &sharegpt_lines,
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"Expand the abbreviation MI.\"}, {\"from\": \"gpt\", \"value\": \"Myocardial infarction.\"}]}\n",
    )
    .expect("write");
    for file in [&bare, &array, &sharegpt_array, &sharegpt_lines] {
        let said = ws.ok(&["seeds", "import", file.to_str().expect("utf-8")]);
        assert!(said.starts_with("imported"), "{said}");
    }
    let all: Vec<Value> = serde_json::from_str(&ws.ok(&["seeds", "list", "--json"])).expect("json");
    assert_eq!(all.len(), 85);
    let new = &all[80..];
    let ids: Vec<&str> = new.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(
        ids,
        ["seed-081", "seed-082", "seed-083", "seed-084", "seed-085"]
    );
    assert!(new
        .iter()
        .all(|r| r["category"] == "other" && r["task"] == "imported"));
    assert_eq!(new[1]["input"], "Took aspirin and warfarin.");
    assert_eq!(
        new[3]["instruction"],
        "What is a normal adult resting heart rate?"
    );
    assert_eq!(new[3]["output"], "60 to 100 beats per minute.");
    assert_eq!(new[3]["system"], "You are a clinician.");
    assert_eq!(new[4]["output"], "Myocardial infarction.");

    // dedupe reads the bare file too, naming its records after the file.
    let out = ws.ok(&["dedupe", bare.to_str().expect("utf-8"), "--no-seeds"]);
    assert!(out.contains("kept 2"), "{out}");
    let kept = std::fs::read_to_string(dir.join("bare.kept.jsonl")).expect("kept");
    assert!(
        kept.contains("\"id\":\"bare-000001\"") && kept.contains("\"id\":\"bare-000002\""),
        "{kept}"
    );

    // A ShareGPT record with two exchanges is not one instruction: refused, named.
    let multi = dir.join("multi.jsonl");
    std::fs::write(
        &multi,
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"gpt\", \"value\": \"b\"}, {\"from\": \"human\", \"value\": \"c\"}, {\"from\": \"gpt\", \"value\": \"d\"}]}\n",
    )
    .expect("write");
    let out = ws.run(&["seeds", "import", multi.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("multi.jsonl:1: conversations: must be one human turn then one gpt turn"),
        "{said}"
    );
}

/// Export as LLaMA-Factory and axolotl read instruction data: Alpaca (`instruction`,
/// `input`, `output`) and ShareGPT (`conversations` of `from`/`value`, `human` then `gpt`),
/// from the seeds or any instruction file; ShareGPT read back gives the same turns.
#[test]
fn export_writes_alpaca_and_sharegpt_from_the_seeds_or_another_file() {
    let ws = Workspace::new();
    let sharegpt: Vec<Value> =
        serde_json::from_str(&ws.ok(&["seeds", "export", "--format", "sharegpt"])).expect("json");
    assert_eq!(sharegpt.len(), 80);
    let seeds: Vec<Value> =
        serde_json::from_str(&ws.ok(&["seeds", "list", "--json"])).expect("json");
    for (s, r) in sharegpt.iter().zip(&seeds) {
        let turns = s["conversations"].as_array().expect("turns");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0]["from"], "human");
        assert_eq!(turns[1]["from"], "gpt");
        let input = r["input"].as_str().unwrap_or_default();
        let human = if input.is_empty() {
            r["instruction"].as_str().expect("instruction").to_string()
        } else {
            format!(
                "{}\n{input}",
                r["instruction"].as_str().expect("instruction")
            )
        };
        assert_eq!(turns[0]["value"], human.as_str());
        assert_eq!(turns[1]["value"], r["output"]);
        assert_eq!(s["id"], r["id"]);
    }
    // Another file: a generated-style JSONL, exported as Alpaca.
    let file = ws.home.path().join("generated.jsonl");
    std::fs::write(
        &file,
        "{\"instruction\": \"Define anemia.\", \"output\": \"Too few red cells.\"}\n",
    )
    .expect("write");
    let alpaca: Vec<Value> = serde_json::from_str(&ws.ok(&[
        "seeds",
        "export",
        "--input",
        file.to_str().expect("utf-8"),
        "--format",
        "alpaca",
    ]))
    .expect("json");
    assert_eq!(
        alpaca,
        [
            serde_json::json!({"instruction": "Define anemia.", "input": "", "output": "Too few red cells."})
        ]
    );
    // ShareGPT read back: the same conversations.
    let path = ws.home.path().join("out.json");
    ws.ok(&[
        "seeds",
        "export",
        "--format",
        "sharegpt",
        "-o",
        path.to_str().expect("utf-8"),
    ]);
    let check = ws.ok(&["seeds", "validate", path.to_str().expect("utf-8")]);
    assert!(check.contains("80 valid records"), "{check}");
}
