//! `bioinstruct experiment`: a 2-subset category grid on the tiny model, killed with SIGKILL
//! in the middle and resumed, gives the matrix an uninterrupted grid gives.

mod common;

use common::{benchmark, tiny, Workspace};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn setup(ws: &Workspace) -> PathBuf {
    let dir = ws.home.path().join("tiny");
    tiny::write(&dir);
    let mut config = tiny::config_json();
    config["max_position_embeddings"] = serde_json::json!(2048);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    // A short pool (the tiny tokenizer makes a token of each character): 6 qa records, 10
    // others, and one gen record longer than `max_seq_len` that no cell can take.
    let pool = ws.home.path().join("pool.jsonl");
    let mut lines = Vec::new();
    for i in 0..16 {
        let (category, instruction, output) = match i % 8 {
            0 | 3 | 6 => (
                "qa",
                format!("Is drug {i} safe in pregnancy?"),
                "yes".to_string(),
            ),
            1 | 4 | 7 => (
                "ie",
                format!("List the disease: patient {i} has asthma."),
                r#"["asthma"]"#.to_string(),
            ),
            _ => (
                "gen",
                format!("Summarise visit {i} in one line."),
                format!("Visit {i}: stable."),
            ),
        };
        lines.push(
            serde_json::json!({"id": format!("p-{i}"), "category": category, "task": "t",
                "instruction": instruction, "input": "", "output": output})
            .to_string(),
        );
    }
    lines.push(
        serde_json::json!({"id": "p-long", "category": "gen", "task": "t",
            "instruction": "Summarise this visit.", "input": "stable. ".repeat(80),
            "output": "Stable."})
        .to_string(),
    );
    std::fs::write(&pool, lines.join("\n") + "\n").expect("pool");
    let train = ws.home.path().join("train.toml");
    std::fs::write(
        &train,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [\"seeds\"]\nmax_seq_len = 512\n\
             [lora]\nlora_dropout = 0.1\n[optim]\nlearning_rate = 1e-2\nepochs = 2\nmicro_batch_size = 2\n\
             gradient_accumulation_steps = 1\nwarmup_steps = 1\n[run]\ncheckpoint_every = 2\n",
            dir.display().to_string()
        ),
    )
    .expect("train config");
    let file = ws.home.path().join("grid.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"grid\"\n[train]\nconfig = \"train.toml\"\nfiles = [\"pool.jsonl\"]\n[eval]\ntasks = [\"pubmedqa\", \"ncbi_disease\"]\n\
             data = [\"pubmedqa={}\", \"ncbi_disease={}\"]\nlimit = 6\nmax_new_tokens = 16\n\
             [grid]\nsubsets = [\"qa\", \"all-qa\"]\n",
            benchmark("pubmedqa/pqal_trainval.json").display(),
            benchmark("ncbi-disease/devel.tsv").display()
        ),
    )
    .expect("grid");
    file
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_grid_killed_in_the_middle_and_resumed_gives_the_uninterrupted_matrix() {
    let reference = Workspace::new();
    let file = setup(&reference);
    let out = reference.offline(&["experiment", "run", file.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = reference.home.path().join("data/experiments/grid");
    let matrix: serde_json::Value =
        serde_json::from_str(&read(&folder.join("matrix.json"))).expect("json");
    assert_eq!(matrix["groups"], serde_json::json!(["qa", "ie"]), "{text}");
    assert_eq!(matrix["rows"][0][0], "qa");
    assert_eq!(matrix["rows"][1][0], "all-qa");
    // The same tokens per cell: the qa subset's total, a sample of the rest.
    let plan: serde_json::Value =
        serde_json::from_str(&read(&folder.join("plan.json"))).expect("plan");
    let (qa, rest) = (&plan["cells"][0], &plan["cells"][1]);
    let budget = plan["train_tokens"].as_u64().expect("budget");
    assert_eq!(qa["tokens"].as_u64(), Some(budget));
    assert!(rest["tokens"].as_u64().expect("t") >= budget);
    assert!(
        rest["examples"].as_u64() < rest["available"].as_u64(),
        "{plan}"
    );
    assert_eq!(rest["records"].as_u64(), Some(11), "{plan}");
    assert_eq!(rest["available"].as_u64(), Some(10), "{plan}");
    assert!(
        text.contains(
            "all-qa: 10 of 11 records fit data.max_seq_len (512 tokens); the 1 longer ones are left out"
        ),
        "{text}"
    );
    for row in matrix["rows"].as_array().expect("rows") {
        for g in ["qa", "ie"] {
            let ci = &row[1][g]["vs_base"]["ci95"];
            assert!(ci[0].as_f64() <= ci[1].as_f64(), "{row}");
        }
    }
    assert!(
        text.contains("| qa |") && text.contains("| all-qa |"),
        "{text}"
    );

    // The same grid, SIGKILLed once the second cell has begun, then resumed.
    let ws = Workspace::new();
    let file = setup(&ws);
    let started = ws.offline(&[
        "experiment",
        "run",
        file.to_str().expect("utf-8"),
        "--detach",
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let folder = ws.home.path().join("data/experiments/grid");
    let deadline = Instant::now() + Duration::from_secs(300);
    let pid = loop {
        let status: Option<serde_json::Value> = std::fs::read_to_string(folder.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(s) = &status {
            assert_ne!(s["state"], "failed", "{s}");
            assert_ne!(s["state"], "finished", "finished before the kill: {s}");
            if s["cell"] == "all-qa" {
                break s["pid"].as_i64().expect("pid") as i32;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the second cell never began: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL");
    while bioinstruct::commands::train::process_alive(pid as u32) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!folder.join("matrix.json").exists());
    let shown = ws.ok(&["experiment", "show", "grid"]);
    assert!(
        shown.contains("interrupted") && shown.contains("| qa |"),
        "{shown}"
    );
    let resumed = ws.offline(&["experiment", "resume", "grid"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        read(&folder.join("matrix.json")),
        read(
            &reference
                .home
                .path()
                .join("data/experiments/grid/matrix.json")
        )
    );
}
