//! `bioinstruct eval run` on the real default model (SmolLM2-135M-Instruct, the Q4_1 GGUF of
//! scripts/fetch-test-model.sh) over the three shared benchmarks, then
//! scripts/check-eval.sh recomputing every metric with scikit-learn, seqeval and rouge-score.

mod common;

use common::{benchmark, gguf_path, Workspace};
use std::path::Path;
use std::process::Command;

fn check_eval(dir: &Path) -> std::process::Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-eval.sh"))
        .arg(dir)
        .output()
        .expect("run scripts/check-eval.sh")
}

#[test]
fn the_reference_tools_recompute_every_metric_of_a_real_run() {
    let ws = Workspace::new();
    let out_dir = ws.home.path().join("report");
    let gguf = gguf_path();
    let out = ws
        .cmd()
        .env("HF_HUB_OFFLINE", "1")
        .args(["eval", "run", "--model"])
        .arg(&gguf)
        .args(["--task", "pubmedqa", "--data"])
        .arg(benchmark("pubmedqa/pqal_trainval.json"))
        .args(["--task", "ncbi_disease", "--data"])
        .arg(benchmark("ncbi-disease/devel.tsv"))
        .args(["--task", "mts_dialog", "--data"])
        .arg(benchmark("mts-dialog/MTS-Dialog-ValidationSet.csv"))
        .args(["--limit", "24", "--max-new-tokens", "64", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("report.json")).expect("report"),
    )
    .expect("json");
    // SmolLM2 lists some disease mentions and writes some of a note section.
    let f1 = report["tasks"]["ncbi_disease"]["models"]["base"]["precision"].as_f64();
    assert!(f1.is_some(), "{report}");
    let rouge = report["tasks"]["mts_dialog"]["models"]["base"]["rouge1"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(rouge > 0.0, "{report}");

    let checked = check_eval(&out_dir);
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");

    // A report that disagrees with its predictions fails the check.
    let mut tampered = report.clone();
    let acc = tampered["tasks"]["pubmedqa"]["models"]["base"]["acc"]
        .as_f64()
        .expect("acc");
    tampered["tasks"]["pubmedqa"]["models"]["base"]["acc"] = serde_json::json!(acc + 1e-4);
    std::fs::write(out_dir.join("report.json"), tampered.to_string()).expect("write");
    let checked = check_eval(&out_dir);
    assert!(
        !checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains("FAIL pubmedqa"));
}
