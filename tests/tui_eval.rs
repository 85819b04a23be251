//! The Eval pane driven headless: evaluation and experiment folders in the formats `eval run
//! --detach` and `experiment run` write, written by the test and read by the pane; actions
//! through the real keymap; frames compared with `insta` snapshots at 80x24 and 120x40.

mod common;

use bioinstruct::eval::job::{EvalStatus, Job as EvalJob, JobDir};
use bioinstruct::train::run::RunState;
use bioinstruct::tui::app::{Job, Mode, Tab};
use bioinstruct::tui::panes::eval::{EvalPane, EvalView};
use bioinstruct::tui::{Action, App, Effect};
use common::{benchmark, press, render};
use crossterm::event::KeyCode;
use serde_json::json;
use std::path::{Path, PathBuf};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

/// A pid that is not a live process.
const GONE: u32 = 0x3FFF_FFF0;

/// A data folder under `target/`, emptied first.
fn root(name: &str) -> PathBuf {
    let root = Path::new("target/test-evals").join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("evals")).expect("evals");
    std::fs::create_dir_all(root.join("experiments")).expect("experiments");
    root
}

fn delta(diff: f64, lo: f64, hi: f64) -> serde_json::Value {
    json!({"diff": diff, "ci95": [lo, hi], "relative": null})
}

fn write_lines(path: &Path, lines: &[serde_json::Value]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).expect("write");
}

/// A finished evaluation of the base and `seeds-lora` on 4 PubMedQA items and 3
/// NCBI-disease sentences of the shared files, as `eval run` writes it.
fn finished(root: &Path) -> PathBuf {
    let dir = root.join("evals/20261202-1000-eval");
    let pqal = benchmark("pubmedqa/pqal_trainval.json");
    let ncbi = benchmark("ncbi-disease/devel.tsv");
    let qa = bioinstruct::eval::tasks::load("pubmedqa", &pqal).expect("pubmedqa");
    let ie = bioinstruct::eval::tasks::load("ncbi_disease", &ncbi).expect("ncbi");
    let report = json!({
        "models": [
            {"label": "base", "model": "SmolLM2-135M-Instruct", "adapter": null, "prompt": "chat"},
            {"label": "seeds-lora", "model": "SmolLM2-135M-Instruct", "adapter": "seeds-lora", "prompt": "alpaca"}
        ],
        "bootstrap": {"resamples": 1000.0, "seed": 1234.0, "interval": 0.95},
        "tasks": {
            "pubmedqa": {"group": "qa", "mode": "loglikelihood", "n": 4, "primary": "acc", "source": pqal.display().to_string(),
                "models": {"base": {"acc": 0.25, "acc_norm": 0.5, "macro_f1": 0.2}, "seeds-lora": {"acc": 0.75, "acc_norm": 0.5, "macro_f1": 0.4}},
                "vs_base": {"seeds-lora": {"acc": delta(0.5, 0.25, 0.75), "acc_norm": delta(0.0, -0.5, 0.5), "macro_f1": delta(0.2, -0.1, 0.5)}}},
            "ncbi_disease": {"group": "ie", "mode": "generate", "n": 3, "primary": "f1", "source": ncbi.display().to_string(),
                "models": {"base": {"precision": 0.5, "recall": 0.4, "f1": 0.444}, "seeds-lora": {"precision": 0.4, "recall": 0.3, "f1": 0.343}},
                "vs_base": {"seeds-lora": {"precision": delta(-0.1, -0.3, 0.1), "recall": delta(-0.1, -0.3, 0.1), "f1": delta(-0.101, -0.3, 0.1)}}}
        },
        "groups": {
            "qa": {"tasks": ["pubmedqa"], "models": {"base": {"score": 0.25}, "seeds-lora": {"score": 0.75}}, "vs_base": {"seeds-lora": {"score": delta(0.5, 0.25, 0.75)}}},
            "ie": {"tasks": ["ncbi_disease"], "models": {"base": {"score": 0.444}, "seeds-lora": {"score": 0.343}}, "vs_base": {"seeds-lora": {"score": delta(-0.101, -0.3, 0.1)}}}
        }
    });
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("report");
    // PubMedQA: the base right on item 0 only, the tuned on 0, 1, 2.
    let qa_line = |i: usize, right: bool| {
        let item = &qa.items[i];
        let gold = match &item.gold {
            bioinstruct::eval::Gold::Label(l) => l.clone(),
            _ => String::new(),
        };
        let pred = if right {
            gold.clone()
        } else if gold == "yes" {
            "no".into()
        } else {
            "yes".into()
        };
        json!({"id": item.id, "prediction": pred, "reference": gold})
    };
    write_lines(
        &dir.join("predictions/pubmedqa/base.jsonl"),
        &(0..4).map(|i| qa_line(i, i == 0)).collect::<Vec<_>>(),
    );
    write_lines(
        &dir.join("predictions/pubmedqa/seeds-lora.jsonl"),
        &(0..4).map(|i| qa_line(i, i < 3)).collect::<Vec<_>>(),
    );
    // NCBI-disease: the base finds every mention of sentence 0, the tuned none.
    let ie_line = |i: usize, found: bool| {
        let item = &ie.items[i];
        let bioinstruct::eval::Gold::Tags {
            mentions,
            tokens,
            tags,
        } = &item.gold
        else {
            panic!("tags")
        };
        let pred: Vec<String> = if found {
            tags.clone()
        } else {
            vec!["O".to_string(); tokens.len()]
        };
        json!({"id": item.id, "prediction": if found { mentions.clone() } else { vec![] }, "reference": mentions, "gold_tags": tags, "pred_tags": pred})
    };
    write_lines(
        &dir.join("predictions/ncbi_disease/base.jsonl"),
        &(0..3).map(|i| ie_line(i, true)).collect::<Vec<_>>(),
    );
    write_lines(
        &dir.join("predictions/ncbi_disease/seeds-lora.jsonl"),
        &(0..3).map(|i| ie_line(i, i > 0)).collect::<Vec<_>>(),
    );
    dir
}

/// An evaluation in the background, `done` of 300 items; `pid` its worker.
fn running(root: &Path, id: &str, pid: u32, state: RunState, done: usize) -> PathBuf {
    let dir = JobDir {
        path: root.join("evals").join(id),
    };
    std::fs::create_dir_all(&dir.path).expect("dir");
    dir.write_job(&EvalJob {
        tasks: vec!["ncbi_disease".into(), "pubmedqa".into()],
        data: Vec::new(),
        mode: None,
        adapters: vec!["runs/seeds/final".into()],
        limit: Some(75),
        skip: None,
        max_new_tokens: None,
        model: "SmolLM2-135M-Instruct".into(),
        offline: true,
        ..Default::default()
    })
    .expect("job");
    let mut s = EvalStatus::queued(pid);
    s.state = state;
    s.done = done;
    s.total = 300;
    s.cached = 20;
    s.items_per_s = 2.5;
    s.eta_s = (300 - done) as f64 / 2.5;
    s.current = Some("ncbi_disease · runs/seeds/final".into());
    dir.write_status(&s).expect("status");
    dir.path
}

/// A finished two-subset experiment's matrix, as `experiment run` writes it.
fn experiment(root: &Path) {
    let dir = root.join("experiments/categories");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("experiment.toml"), "name = \"categories\"\n").expect("toml");
    std::fs::write(
        dir.join("status.json"),
        json!({"state": "finished", "pid": GONE, "cell": null, "phase": null, "cells_done": 3, "cells": 3, "error": null, "updated_unix_s": 0.0}).to_string(),
    )
    .expect("status");
    let cell =
        |score: f64, d: f64, lo: f64, hi: f64| json!({"score": score, "vs_base": delta(d, lo, hi)});
    std::fs::write(
        dir.join("matrix.json"),
        json!({
            "groups": ["qa", "ie", "gen"],
            "base": {"qa": 0.41, "ie": 0.12, "gen": 0.18},
            "rows": [
                ["all", {"qa": cell(0.47, 0.06, 0.01, 0.11), "ie": cell(0.14, 0.02, -0.01, 0.05), "gen": cell(0.21, 0.03, 0.0, 0.06)}],
                ["qa", {"qa": cell(0.52, 0.11, 0.06, 0.16), "ie": cell(0.10, -0.02, -0.05, 0.01), "gen": cell(0.17, -0.01, -0.04, 0.02)}],
                ["all-qa", {"qa": cell(0.40, -0.01, -0.06, 0.04), "ie": cell(0.15, 0.03, 0.0, 0.06), "gen": cell(0.22, 0.04, 0.01, 0.07)}]
            ],
            "tokens": {"all": 5120, "qa": 5120, "all-qa": 5120}
        })
        .to_string(),
    )
    .expect("matrix");
}

fn app(size: (u16, u16), root: &Path) -> App {
    let mut a = App::new(common::bundled_seeds(), size)
        .with_eval(EvalPane::new(root.join("evals"), root.join("experiments")));
    for _ in 0..3 {
        common::act(&mut a, Action::NextTab);
    }
    assert_eq!(a.tab, Tab::Eval);
    assert_eq!(a.mode(), Mode::Evals);
    a
}

fn snapshot_each_size(name: &str, root: &Path, setup: impl Fn(&mut App)) {
    for size in SIZES {
        let mut a = app(size, root);
        setup(&mut a);
        insta::assert_snapshot!(format!("{name}_{}x{}", size.0, size.1), render(&a));
    }
}

fn fixtures(name: &str) -> PathBuf {
    let r = root(name);
    finished(&r);
    running(
        &r,
        "20261202-1100-eval",
        std::process::id(),
        RunState::Running,
        120,
    );
    experiment(&r);
    r
}

#[test]
fn snapshots_of_the_table_the_drill_down_the_matrix_and_a_running_evaluation() {
    let r = fixtures("snapshots");
    // The newest, selected first: the evaluation running in the background.
    snapshot_each_size("eval_running", &r, |_| {});
    snapshot_each_size("eval_table", &r, |a| {
        press(a, &[KeyCode::Down, KeyCode::Enter]);
        assert!(matches!(a.eval.view, EvalView::Report { .. }));
    });
    snapshot_each_size("eval_drill_down", &r, |a| {
        press(a, &[KeyCode::Down, KeyCode::Enter, KeyCode::Enter]);
        assert!(matches!(a.eval.view, EvalView::Items(_)));
    });
    snapshot_each_size("eval_matrix", &r, |a| {
        press(a, &[KeyCode::Char('m')]);
        assert_eq!(a.eval.view, EvalView::Matrix);
    });
    snapshot_each_size("eval_form", &r, |a| {
        press(a, &[KeyCode::Char('n')]);
        assert_eq!(a.mode(), Mode::EvalForm);
    });
}

#[test]
fn the_drill_down_filters_by_who_was_right_and_sends_an_item_to_the_chat() {
    let r = fixtures("drill");
    let mut a = app((120, 40), &r);
    // Down to the finished evaluation, open it, the first task row is pubmedqa (qa first).
    press(&mut a, &[KeyCode::Down, KeyCode::Enter, KeyCode::Enter]);
    let EvalView::Items(d) = &a.eval.view else {
        panic!("items: {:?}", a.eval.view)
    };
    assert_eq!(d.task, "pubmedqa");
    assert_eq!(d.shown().len(), 4);
    press(&mut a, &[KeyCode::Char('f')]);
    let EvalView::Items(d) = &a.eval.view else {
        panic!()
    };
    let ids: Vec<&str> = d.shown().iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "tuned right, base wrong: items 1 and 2");
    assert!(a
        .message
        .as_ref()
        .is_some_and(|(m, _)| m.contains("tuned right, base wrong: 2 items")));
    press(&mut a, &[KeyCode::Char('f')]);
    let EvalView::Items(d) = &a.eval.view else {
        panic!()
    };
    assert!(
        d.shown().is_empty(),
        "the base was never right where the tuned was wrong"
    );
    press(&mut a, &[KeyCode::Char('f'), KeyCode::Down]);
    let item = a.eval.selected_item().cloned().expect("item");
    assert!(item.input.contains("Question:"), "{item:?}");
    press(&mut a, &[KeyCode::Char('>')]);
    assert_eq!(a.tab, Tab::Chat);
    // Back in the Eval pane, Esc leaves the items for the table, then the list.
    common::act(&mut a, Action::NextTab);
    assert_eq!(a.tab, Tab::Eval);
    press(&mut a, &[KeyCode::Esc]);
    assert!(matches!(a.eval.view, EvalView::Report { .. }));
    // NCBI-disease: entity F1 per item; the base found everything, the tuned missed item 0.
    press(&mut a, &[KeyCode::Down, KeyCode::Down, KeyCode::Enter]);
    let EvalView::Items(d) = &a.eval.view else {
        panic!("{:?}", a.eval.view)
    };
    assert_eq!(d.task, "ncbi_disease");
    press(&mut a, &[KeyCode::Char('f'), KeyCode::Char('f')]);
    let EvalView::Items(d) = &a.eval.view else {
        panic!()
    };
    let shown: Vec<String> = d.shown().iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        shown.len(),
        usize::from(!matches!(d.items, Some(Ok(ref v)) if v[0].reference.is_empty()))
    );
    press(&mut a, &[KeyCode::Esc, KeyCode::Esc]);
    assert_eq!(a.eval.view, EvalView::List);
}

#[test]
fn the_form_starts_an_evaluation_and_x_and_r_stop_and_continue_one() {
    let r = root("keys");
    let live = running(
        &r,
        "20261202-1200-eval",
        std::process::id(),
        RunState::Running,
        40,
    );
    let stopped = running(&r, "20261202-1100-eval", GONE, RunState::Stopped, 90);
    let mut a = app((80, 24), &r);
    // x on the running one: SIGTERM by the runtime.
    let effects = press(&mut a, &[KeyCode::Char('x')]);
    assert_eq!(effects, vec![Effect::Run(Job::StopEval(live.clone()))]);
    common::act(
        &mut a,
        Action::EvalJobDone {
            result: Ok("asked it to stop".into()),
        },
    );
    // r on it: still running; on the stopped one: continue.
    assert!(press(&mut a, &[KeyCode::Char('r')]).is_empty());
    let effects = press(&mut a, &[KeyCode::Down, KeyCode::Char('r')]);
    assert_eq!(effects, vec![Effect::Run(Job::ResumeEval(stopped))]);
    common::act(
        &mut a,
        Action::EvalJobDone {
            result: Ok("continuing".into()),
        },
    );
    // The form: a bad limit is refused, a good one starts a detached evaluation.
    press(&mut a, &[KeyCode::Char('n')]);
    assert_eq!(a.mode(), Mode::EvalForm);
    press(
        &mut a,
        &[
            KeyCode::Tab,
            KeyCode::Tab,
            KeyCode::Tab,
            KeyCode::Backspace,
            KeyCode::Backspace,
            KeyCode::Char('z'),
        ],
    );
    assert!(press(&mut a, &[KeyCode::Enter]).is_empty());
    assert!(a.message.as_ref().is_some_and(|(m, _)| m.contains("✗")));
    press(&mut a, &[KeyCode::Backspace, KeyCode::Char('8')]);
    let effects = press(&mut a, &[KeyCode::Enter]);
    let [Effect::Run(Job::StartEval(args))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(args.tasks, ["pubmedqa", "ncbi_disease", "mts_dialog"]);
    assert_eq!(args.limit, Some(8));
    // A failed start keeps the form open with the error; a good one closes it.
    common::act(
        &mut a,
        Action::EvalJobDone {
            result: Err("no adapter \"x\"".into()),
        },
    );
    assert!(a.eval.form.is_some());
    common::act(
        &mut a,
        Action::EvalJobDone {
            result: Ok("Started".into()),
        },
    );
    assert!(a.eval.form.is_none());
}
