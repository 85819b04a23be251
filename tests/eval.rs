//! `bioinstruct eval` on the shared benchmarks (real PubMedQA, NCBI-disease and MTS-Dialog
//! files) with the tiny model the tests build: reports and predictions for the base and a
//! trained adapter, the item cache across reruns and a SIGKILL, and bad input.

mod common;

use common::{benchmark, tiny, Workspace};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tiny model, with a context long enough for the benchmarks' prompts (its tokenizer
/// makes one token of each character).
fn tiny_model(ws: &Workspace) -> PathBuf {
    let dir = ws.home.path().join("tiny");
    tiny::write(&dir);
    let mut config = tiny::config_json();
    config["max_position_embeddings"] = serde_json::json!(2048);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    dir
}

fn data_args() -> Vec<String> {
    [
        ("pubmedqa", "pubmedqa/pqal_trainval.json"),
        ("ncbi_disease", "ncbi-disease/devel.tsv"),
        ("mts_dialog", "mts-dialog/MTS-Dialog-ValidationSet.csv"),
    ]
    .iter()
    .flat_map(|(task, file)| {
        [
            "--task".to_string(),
            task.to_string(),
            "--data".to_string(),
            benchmark(file).display().to_string(),
        ]
    })
    .collect()
}

fn eval_cmd(ws: &Workspace, model: &Path, extra: &[&str]) -> Command {
    let mut c = ws.cmd();
    c.env("HF_HUB_OFFLINE", "1")
        .args(["eval", "run", "--model"])
        .arg(model)
        .args(extra);
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Trains a small adapter on the workspace's seeds; returns the run id.
fn train_on_seeds(ws: &Workspace, model: &Path) -> String {
    ws.ok(&["seeds", "list"]); // the workspace's seed file
    let config = ws.home.path().join("seeds-run.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nbase = {:?}\n[data]\nfiles = [\"seeds\"]\nmax_seq_len = 768\nvalidation_fraction = 0.1\n\
             [lora]\nlora_dropout = 0.0\n[optim]\nlearning_rate = 1e-2\nepochs = 1\nmicro_batch_size = 8\nwarmup_steps = 1\n\
             [run]\ncheckpoint_every = 0\n",
            model.display().to_string()
        ),
    )
    .expect("config");
    let out = ws.offline(&["train", "--config", config.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::run_id(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn base_and_a_seed_trained_adapter_are_scored_on_the_three_shared_benchmarks() {
    let ws = Workspace::new();
    let model = tiny_model(&ws);
    let run = train_on_seeds(&ws, &model);
    let out_dir = ws.home.path().join("report");
    let mut args: Vec<String> = data_args();
    args.extend(
        ["--limit", "8", "--adapter", &run, "--out"]
            .map(String::from)
            .into_iter()
            .chain([out_dir.display().to_string()]),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = ok(eval_cmd(&ws, &model, &args));
    assert!(
        first.contains("48 items, 0 from the cache, 48 to compute"),
        "{first}"
    );
    let label = format!("{run}/final");
    let report: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("report.json"))).expect("json");
    for (task, group, metrics) in [
        ("pubmedqa", "qa", &["acc", "acc_norm", "macro_f1"][..]),
        ("ncbi_disease", "ie", &["precision", "recall", "f1"][..]),
        ("mts_dialog", "gen", &["rouge1", "rouge2", "rougeL"][..]),
    ] {
        let t = &report["tasks"][task];
        assert_eq!(t["group"], group);
        assert_eq!(t["n"], 8);
        for label in ["base", label.as_str()] {
            for m in metrics {
                let v = t["models"][label][m].as_f64().unwrap_or(f64::NAN);
                assert!((0.0..=1.0).contains(&v), "{task} {label} {m}: {v}");
            }
        }
        let d = &t["vs_base"][&label][t["primary"].as_str().expect("primary")];
        let (lo, hi) = (
            d["ci95"][0].as_f64().expect("lo"),
            d["ci95"][1].as_f64().expect("hi"),
        );
        assert!(lo <= hi, "{d}");
        assert!(report["groups"][group]["models"][&label]["score"].is_number());
        let file = out_dir
            .join("predictions")
            .join(task)
            .join(format!("{run}__final.jsonl"));
        let lines: Vec<serde_json::Value> = read(&file)
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        assert_eq!(lines.len(), 8);
        for l in &lines {
            for field in ["id", "prediction", "reference", "raw"] {
                assert!(l.get(field).is_some(), "{task}: {field} missing in {l}");
            }
        }
        if task == "ncbi_disease" {
            for field in ["tokens", "gold_tags", "pred_tags"] {
                assert!(lines[0][field].is_array(), "{field}");
            }
        }
    }
    // The adapter was trained with Alpaca's template: its prompts say so.
    assert_eq!(report["models"][1]["prompt"], "alpaca");
    assert!(read(&out_dir.join("report.md")).contains("### pubmedqa (qa, loglikelihood, 8 items)"));
    let shown = ws.ok(&["eval", "show", out_dir.to_str().expect("utf-8")]);
    assert!(shown.contains(&format!("| {label} |")), "{shown}");

    // A rerun computes nothing; a larger limit computes only the new items.
    let again = ok(eval_cmd(&ws, &model, &args));
    assert!(again.contains("48 from the cache, 0 to compute"), "{again}");
    let mut more: Vec<&str> = args.clone();
    let at = more.iter().position(|a| *a == "8").expect("limit");
    more[at] = "10";
    let more_out = ok(eval_cmd(&ws, &model, &more));
    assert!(
        more_out.contains("48 from the cache, 12 to compute"),
        "{more_out}"
    );
}

#[test]
fn one_file_reached_by_two_paths_shares_one_cache() {
    let ws = Workspace::new();
    let model = tiny_model(&ws);
    let file = benchmark("ncbi-disease/devel.tsv");
    let dir = file.parent().expect("folder");
    let roundabout = dir
        .join("..")
        .join(dir.file_name().expect("name"))
        .join("devel.tsv");
    let run = |data: &Path| {
        let data = data.to_str().expect("utf-8");
        let args = [
            "--task",
            "ncbi_disease",
            "--data",
            data,
            "--limit",
            "3",
            "--max-new-tokens",
            "8",
        ];
        ok(eval_cmd(&ws, &model, &args))
    };
    let first = run(&file);
    assert!(
        first.contains("3 items, 0 from the cache, 3 to compute"),
        "{first}"
    );
    let again = run(&roundabout);
    assert!(again.contains("3 from the cache, 0 to compute"), "{again}");
}

fn cached_results(ws: &Workspace) -> usize {
    std::fs::read_dir(ws.home.path().join("data/eval-cache"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_run_killed_with_sigkill_computes_only_the_missing_items_and_reports_the_same() {
    // NCBI-disease sentences (generate) and PubMedQA abstracts (loglikelihood).
    let args = [
        "--task",
        "ncbi_disease",
        "--data",
        &benchmark("ncbi-disease/devel.tsv").display().to_string(),
        "--task",
        "pubmedqa",
        "--data",
        &benchmark("pubmedqa/pqal_trainval.json")
            .display()
            .to_string(),
        "--max-new-tokens",
        "24",
        "--limit",
        "200",
    ]
    .map(String::from);
    let total = 400;

    let reference_ws = Workspace::new();
    let model = tiny_model(&reference_ws);
    let reference_dir = reference_ws.home.path().join("out");
    let mut reference_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference_out = reference_dir.display().to_string();
    reference_args.extend(["--out", &reference_out]);
    let started = Instant::now();
    ok(eval_cmd(&reference_ws, &model, &reference_args));
    let uninterrupted = started.elapsed();

    let ws = Workspace::new();
    let out_dir = ws.home.path().join("out");
    let out_text = out_dir.display().to_string();
    let mut run_args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_args.extend(["--out", &out_text]);
    let mut child = eval_cmd(&ws, &model, &run_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120) + uninterrupted * 4;
    while cached_results(&ws) < 20 {
        assert!(Instant::now() < deadline, "no result appeared");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let kept = cached_results(&ws);
    assert!(
        kept >= 20 && kept < total,
        "killed with {kept} of {total} results"
    );

    let rerun = ok(eval_cmd(&ws, &model, &run_args));
    assert!(
        rerun.contains(&format!(
            "{kept} from the cache, {} to compute",
            total - kept
        )),
        "{rerun}"
    );
    assert_eq!(
        read(&out_dir.join("report.json")),
        read(&reference_dir.join("report.json"))
    );
    for task in ["pubmedqa", "ncbi_disease"] {
        let p = |d: &Path| read(&d.join("predictions").join(task).join("base.jsonl"));
        assert_eq!(p(&out_dir), p(&reference_dir), "{task} predictions");
    }
}

/// Runs `eval run` expecting failure; returns the last line of stderr.
fn fails(ws: &Workspace, model: &Path, args: &[&str]) -> String {
    let out = eval_cmd(ws, model, args).output().expect("run");
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{stderr}");
    last
}

#[test]
fn bad_input_gets_one_line_naming_file_line_item_and_field() {
    let ws = Workspace::new();
    let model = tiny_model(&ws);
    let dir = ws.home.path();

    let pubmedqa = read(&benchmark("pubmedqa/pqal_trainval.json"));
    let truncated = dir.join("truncated.json");
    let cut = &pubmedqa[..pubmedqa.len() / 2];
    std::fs::write(&truncated, cut).expect("write");
    let lines = cut.matches('\n').count() + 1;
    let e = fails(
        &ws,
        &model,
        &[
            "--task",
            "pubmedqa",
            "--data",
            truncated.to_str().expect("p"),
        ],
    );
    assert!(
        e.contains(&format!("truncated.json:{lines}: json: EOF")),
        "{e}"
    );

    let conll = dir.join("no-tab.tsv");
    std::fs::write(&conll, "BRCA1\tO\nis\tO\nsecreted O\n").expect("write");
    let e = fails(
        &ws,
        &model,
        &[
            "--task",
            "ncbi_disease",
            "--data",
            conll.to_str().expect("p"),
        ],
    );
    assert!(
        e.ends_with("no-tab.tsv:3: tag: expected `token<TAB>tag`, found no tab"),
        "{e}"
    );

    let csv = dir.join("no-dialogue.csv");
    std::fs::write(&csv, "ID,section_header,section_text\n0,CC,Cough.\n").expect("write");
    let e = fails(
        &ws,
        &model,
        &["--task", "mts_dialog", "--data", csv.to_str().expect("p")],
    );
    assert!(
        e.contains("no-dialogue.csv:1: dialogue: column missing"),
        "{e}"
    );

    let e = fails(&ws, &model, &["--task", "medqa"]);
    assert!(e.contains("unknown task \"medqa\""), "{e}");

    let own = dir.join("own.jsonl");
    std::fs::write(
        &own,
        "{\"id\":\"a\",\"group\":\"qa\",\"metric\":\"exact_match\",\"instruction\":\"Say yes.\",\"output\":\"yes\"}\n\
         {\"id\":\"b\",\"group\":\"qa\",\"metric\":\"bleu\",\"instruction\":\"Say no.\",\"output\":\"no\"}\n",
    )
    .expect("write");
    let e = fails(
        &ws,
        &model,
        &["--task", "jsonl", "--data", own.to_str().expect("p")],
    );
    assert!(
        e.contains("own.jsonl:2: metric: unknown metric \"bleu\""),
        "{e}"
    );

    // An adapter made for a model of another width.
    let foreign = dir.join("foreign-adapter");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(
        foreign.join("adapter_config.json"),
        r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"],"base_model_name_or_path":"other"}"#,
    )
    .expect("config");
    let zeros = |shape: &[usize]| {
        candle_core::Tensor::zeros(shape, candle_core::DType::F32, &candle_core::Device::Cpu)
            .expect("zeros")
    };
    let tensors = std::collections::HashMap::from([
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string(),
            zeros(&[2, 576]),
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight".to_string(),
            zeros(&[576, 2]),
        ),
    ]);
    candle_core::safetensors::save(&tensors, foreign.join("adapter_model.safetensors"))
        .expect("weights");
    let data = benchmark("pubmedqa/pqal_trainval.json")
        .display()
        .to_string();
    let e = fails(
        &ws,
        &model,
        &[
            "--task",
            "pubmedqa",
            "--data",
            &data,
            "--limit",
            "1",
            "--adapter",
            foreign.to_str().expect("p"),
        ],
    );
    assert!(
        e.contains("does not fit the base model") && e.contains("adapter_model.safetensors"),
        "{e}"
    );

    // Own records score end to end.
    std::fs::write(
        &own,
        "{\"id\":\"a\",\"group\":\"qa\",\"metric\":\"choice\",\"instruction\":\"Is aspirin an NSAID?\",\"output\":\"yes\",\"choices\":[\"yes\",\"no\"]}\n",
    )
    .expect("write");
    let out = ok(eval_cmd(
        &ws,
        &model,
        &["--task", "jsonl", "--data", own.to_str().expect("p")],
    ));
    assert!(
        out.contains("### own (qa, loglikelihood, 1 items)"),
        "{out}"
    );
}

#[test]
fn a_judge_scores_each_text_answer_once() {
    fn answer(_: usize) -> Option<String> {
        let body = serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": "7. Mostly right, misses the medications."}, "finish_reason": "stop"}],
        });
        Some(common::http::response("200 OK", "", &body.to_string()))
    }
    let (base, requests) = common::http::serve(answer, Duration::ZERO);
    let ws = Workspace::new();
    let model = tiny_model(&ws);
    let config = ws.home.path().join("config");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(
        config.join("config.toml"),
        format!("[teachers.judge]\nbase_url = \"{base}\"\nmodel = \"judge-model\"\napi_key_env = \"\"\n"),
    )
    .expect("settings");
    let out_dir = ws.home.path().join("judged");
    let data = benchmark("mts-dialog/MTS-Dialog-ValidationSet.csv");
    let args = [
        "--task",
        "mts_dialog",
        "--data",
        data.to_str().expect("utf-8"),
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--judge",
        "judge",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ];
    ok(eval_cmd(&ws, &model, &args));
    let report: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("report.json"))).expect("json");
    assert_eq!(
        report["tasks"]["mts_dialog"]["models"]["base"]["judge"],
        7.0
    );
    let line: serde_json::Value = serde_json::from_str(
        read(&out_dir.join("predictions/mts_dialog/base.jsonl"))
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json");
    assert_eq!(line["judge"]["score"], 7.0);
    assert!(line["judge"]["words"]
        .as_str()
        .unwrap_or_default()
        .contains("medications"));
    let asked = requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(asked, 3);
    ok(eval_cmd(&ws, &model, &args));
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "judgments are cached"
    );
}

fn status_of(dir: &Path) -> Option<serde_json::Value> {
    std::fs::read_to_string(dir.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

#[test]
fn a_detached_evaluation_shows_progress_stops_and_continues_where_it_stopped() {
    let ws = Workspace::new();
    let model = tiny_model(&ws);
    let dir = ws.home.path().join("data").join("evals").join("bg");
    let data = benchmark("ncbi-disease/devel.tsv").display().to_string();
    let dir_text = dir.display().to_string();
    let started = ok(eval_cmd(
        &ws,
        &model,
        &[
            "--task",
            "ncbi_disease",
            "--data",
            &data,
            "--limit",
            "300",
            "--max-new-tokens",
            "24",
            "--out",
            &dir_text,
            "--detach",
        ],
    ));
    assert!(
        started.contains("evaluating in the background"),
        "{started}"
    );
    let job: serde_json::Value =
        serde_json::from_str(&read(&dir.join("job.json"))).expect("job.json");
    assert_eq!(job["tasks"][0], "ncbi_disease");
    assert!(Path::new(job["model"].as_str().expect("model")).is_absolute());

    // Progress: running, with items done, items/s and an ETA.
    let deadline = Instant::now() + Duration::from_secs(120);
    let running = loop {
        if let Some(s) = status_of(&dir) {
            if s["state"] == "running" && s["done"].as_u64().unwrap_or(0) >= 10 {
                break s;
            }
            assert_ne!(s["state"], "failed", "{s}");
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {:?}",
            status_of(&dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(running["total"], 300);
    assert!(
        running["items_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{running}"
    );
    assert!(running["current"]
        .as_str()
        .is_some_and(|c| c.contains("ncbi_disease")));

    let stopped = ws.ok(&["eval", "stop", "bg", "--wait"]);
    assert!(stopped.contains("evaluation is stopped"), "{stopped}");
    let s = status_of(&dir).expect("status");
    let done = s["done"].as_u64().expect("done") as usize;
    assert!((10..300).contains(&done), "{s}");
    assert!(!dir.join("report.json").exists());
    let listed = ws.ok(&["eval", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("bg") && l.contains("stopped")),
        "{listed}"
    );

    // Resumed: only the missing items are computed.
    let resumed = String::from_utf8(
        ws.cmd()
            .env("HF_HUB_OFFLINE", "1")
            .args(["eval", "resume", "bg"])
            .output()
            .expect("resume")
            .stdout,
    )
    .expect("utf-8");
    let cached_now = cached_results(&ws);
    assert_eq!(cached_now, 300);
    assert!(
        resumed.contains(&format!("300 items, {done} from the cache")) || {
            // Items finished between the status write and the stop are cached too.
            resumed.contains("300 items, ") && !resumed.contains("300 items, 0 from the cache")
        },
        "{resumed}"
    );
    assert_eq!(status_of(&dir).expect("status")["state"], "finished");
    let report: serde_json::Value =
        serde_json::from_str(&read(&dir.join("report.json"))).expect("report");
    assert_eq!(report["tasks"]["ncbi_disease"]["n"], 300);
}
