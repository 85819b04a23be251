//! The Generated pane driven headless: keys through the real keymap, a run's counters
//! through `App::update` as the event loop sends them; accept, reject, edit and promote
//! checked on the files they rewrite; frames compared with `insta` snapshots.

mod common;

use bioinstruct::data::{read_jsonl, Category, Instruction};
use bioinstruct::selfinstruct::run::Progress;
use bioinstruct::tui::app::{Mode, Tab};
use bioinstruct::tui::panes::generated::{GenList, GenRequest, GeneratedPane, RunState};
use bioinstruct::tui::{Action, App, Effect};
use common::{press, render};
use crossterm::event::KeyCode;
use serde_json::json;
use std::path::{Path, PathBuf};

fn task(id: &str, category: Category, instruction: &str, max: f64, similar: &str) -> Instruction {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "provenance".into(),
        json!({"teacher": "default @ http://127.0.0.1:8080/v1", "request": 3,
               "seeds": ["seed-001", "seed-017", "seed-042"], "time": "2026-11-26T18:00:00Z",
               "finish_reason": "stop"}),
    );
    extra.insert(
        "similarity".into(),
        json!({"max_rouge_l": max, "mean_rouge_l": max / 3.0,
               "most_similar": [{"id": similar, "rouge_l": max}]}),
    );
    Instruction {
        id: id.into(),
        category,
        task: "self_instruct".into(),
        instruction: instruction.into(),
        input: String::new(),
        output: format!("The answer to {id}."),
        extra,
    }
}

/// A generation folder with three kept and two rejected tasks.
fn folder(name: &str) -> PathBuf {
    let dir = Path::new("target/test-generated").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let kept = vec![
        task(
            "gen-000001",
            Category::Qa,
            "What does a raised troponin after chest pain suggest?",
            0.21,
            "seed-001",
        ),
        task(
            "gen-000002",
            Category::Ie,
            "List every anticoagulant named in the discharge note.",
            0.34,
            "seed-002",
        ),
        task(
            "gen-000003",
            Category::Gen,
            "Explain dialysis to a worried patient in plain words.",
            0.18,
            "gen-000001",
        ),
    ];
    let mut near = task(
        "gen-000004",
        Category::Qa,
        "What does a raised troponin after chest pain mean?",
        0.88,
        "gen-000001",
    );
    near.extra.insert(
        "rejection".into(),
        json!({"reason": "too_similar", "to": "gen-000001", "rouge_l": 0.88}),
    );
    let mut drawn = task(
        "gen-000005",
        Category::Other,
        "Draw a diagram of the coagulation cascade.",
        0.0,
        "seed-001",
    );
    drawn.extra.shift_remove("similarity");
    drawn.extra.insert(
        "rejection".into(),
        json!({"reason": "blacklisted", "word": "diagram"}),
    );
    let write = |file: &str, records: &[Instruction]| {
        std::fs::write(dir.join(file), bioinstruct::data::to_jsonl(records, &[])).expect("write");
    };
    write("generated.jsonl", &kept);
    write("rejected.jsonl", &[near, drawn]);
    dir
}

fn app(size: (u16, u16), dir: &Path) -> App {
    let mut a = App::new(common::bundled_seeds(), size).with_generated(GeneratedPane::new(
        dir.to_path_buf(),
        "llamacpp".into(),
        20,
    ));
    // Seeds → Train → Chat → Generated.
    common::act(&mut a, Action::PrevTab);
    assert_eq!(a.tab, Tab::Generated);
    assert_eq!(a.mode(), Mode::Generated);
    a
}

fn records(path: &Path) -> Vec<Instruction> {
    read_jsonl(path).expect("reads").records
}

#[test]
fn snapshots_of_lists_detail_and_a_run() {
    let dir = folder("snapshots");
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = app((w, h), &dir);
        insta::assert_snapshot!(format!("generated_kept_{w}x{h}"), render(&a));
        press(&mut a, &[KeyCode::Char('v')]);
        insta::assert_snapshot!(format!("generated_rejected_{w}x{h}"), render(&a));
        press(
            &mut a,
            &[
                KeyCode::Char('v'),
                KeyCode::Char('j'),
                KeyCode::Char('j'),
                KeyCode::Enter,
            ],
        );
        assert!(a.generated.detail);
        insta::assert_snapshot!(format!("generated_detail_{w}x{h}"), render(&a));
        assert_eq!(
            press(&mut a, &[KeyCode::Esc, KeyCode::Char('n')]),
            vec![Effect::Generate(GenRequest::Start {
                teacher: "llamacpp".into(),
                target: 20
            })]
        );
        common::act(
            &mut a,
            Action::GenerateProgress(Progress {
                kept: 7,
                kept_now: 4,
                rejected_now: 2,
                garbage_now: 5,
                target: 20,
                requests: 11,
                failed_requests: 1,
                in_flight: 1,
                prompt_tokens: 10_034,
                completion_tokens: 2_210,
                ..Progress::default()
            }),
        );
        insta::assert_snapshot!(format!("generated_running_{w}x{h}"), render(&a));
    }
    let empty = Path::new("target/test-generated/empty");
    let _ = std::fs::remove_dir_all(empty);
    let a = app((80, 24), empty);
    insta::assert_snapshot!("generated_empty_80x24", render(&a));
}

#[test]
fn a_review_is_written_by_the_runtime_and_the_next_waits_for_it() {
    let dir = folder("review-effects");
    let kept = dir.join("generated.jsonl");
    let mut a = app((120, 40), &dir);
    let ids = |list: &[Instruction]| list.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    a.update(Action::Down);
    let mut effects = a.update(Action::RejectTask);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::File(bioinstruct::tui::effect::FileWork::Generated(
                _
            ))]
        ),
        "{effects:?}"
    );
    // Shown at once, written by the runtime: `update` wrote nothing.
    assert_eq!(ids(&a.generated.kept), ["gen-000001", "gen-000003"]);
    assert_eq!(records(&kept).len(), 3);
    // A second review while the first is written: queued, not a second write at once.
    a.update(Action::Up);
    assert!(a.update(Action::RejectTask).is_empty());
    let outcome = effects
        .pop()
        .expect("write")
        .perform_io()
        .expect("file work");
    assert_eq!(records(&kept).len(), 2);
    // Back from the first write: the second review is still shown, and written next.
    let next = a.update(outcome);
    assert_eq!(ids(&a.generated.kept), ["gen-000003"]);
    assert!(
        matches!(
            next.as_slice(),
            [Effect::File(bioinstruct::tui::effect::FileWork::Generated(
                _
            ))]
        ),
        "{next:?}"
    );
    assert!(common::settle(&mut a, next).is_empty());
    assert_eq!(ids(&records(&kept)), ["gen-000003"]);
    assert_eq!(ids(&a.generated.kept), ["gen-000003"]);
}

#[test]
fn accept_reject_edit_and_promote_rewrite_the_files() {
    let dir = folder("review");
    let (kept, rejected) = (dir.join("generated.jsonl"), dir.join("rejected.jsonl"));
    let mut a = app((120, 40), &dir);

    // Reject the second kept task.
    press(&mut a, &[KeyCode::Char('j'), KeyCode::Char('r')]);
    let k = records(&kept);
    let r = records(&rejected);
    assert_eq!(
        k.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["gen-000001", "gen-000003"]
    );
    let moved = r.last().expect("moved");
    assert_eq!(moved.id, "gen-000002");
    assert_eq!(moved.extra["rejection"]["reason"], "reviewer");
    assert_eq!(moved.extra["review"]["decision"], "rejected");
    assert!(
        dir.join("generated.jsonl.bak").exists(),
        "the previous version is kept"
    );

    // Accept the first rejected one (too similar): a person overrides the filter.
    press(&mut a, &[KeyCode::Char('v'), KeyCode::Char('a')]);
    let k = records(&kept);
    let accepted = k.last().expect("accepted");
    assert_eq!(accepted.id, "gen-000004");
    assert!(!accepted.extra.contains_key("rejection"));
    assert_eq!(accepted.extra["review"]["decision"], "accepted");
    assert_eq!(records(&rejected).len(), 2);
    // Accept on the kept list is refused with a hint.
    press(&mut a, &[KeyCode::Char('v'), KeyCode::Char('a')]);
    assert!(a
        .message
        .as_ref()
        .expect("message")
        .0
        .contains("rejected list"));

    // Edit (as the event loop reports an $EDITOR edit).
    assert_eq!(
        press(&mut a, &[KeyCode::Char('e')]),
        vec![Effect::EditGenerated {
            kept: true,
            index: 0
        }]
    );
    let mut edited = a.generated.kept[0].clone();
    edited.output = "Myocardial injury, most often an infarction.".into();
    common::act(
        &mut a,
        Action::GeneratedEdited {
            kept: true,
            index: 0,
            result: Ok(edited),
        },
    );
    let k = records(&kept);
    assert_eq!(k[0].output, "Myocardial injury, most often an infarction.");
    assert_eq!(k[0].extra["review"]["decision"], "edited");
    let mut clash = a.generated.kept[0].clone();
    clash.id = "gen-000003".into();
    common::act(
        &mut a,
        Action::GeneratedEdited {
            kept: true,
            index: 0,
            result: Ok(clash),
        },
    );
    assert!(a
        .message
        .as_ref()
        .expect("message")
        .0
        .contains("already used"));

    // Promote to the seeds: a new seed in the Seeds pane, unsaved; the task remembers it.
    press(&mut a, &[KeyCode::Char('p')]);
    let seed = a.seeds.file.records.last().expect("seed").clone();
    assert_eq!(seed.id, "seed-081");
    assert_eq!(seed.extra["promoted_from"], "gen-000001");
    assert_eq!(seed.instruction, a.generated.kept[0].instruction);
    assert!(a.seeds.dirty);
    assert_eq!(records(&kept)[0].extra["promoted_to"], "seed-081");
    press(&mut a, &[KeyCode::Char('p')]);
    assert!(a
        .message
        .as_ref()
        .expect("message")
        .0
        .contains("already seed-081"));
    assert_eq!(a.seeds.file.records.len(), 81);

    // While a run appends, reviews go on: each save merges what the run appended
    // (tests/generate.rs runs a real `generate` process beside the pane).
    press(&mut a, &[KeyCode::Char('n')]);
    assert!(matches!(a.generated.run, RunState::Starting));
    let before = records(&kept).len();
    press(&mut a, &[KeyCode::Char('g'), KeyCode::Char('r')]);
    assert!(
        a.message.as_ref().expect("message").0.contains("Rejected"),
        "{:?}",
        a.message
    );
    assert_eq!(records(&kept).len(), before - 1);
    assert_eq!(
        press(&mut a, &[KeyCode::Char('x')]),
        vec![Effect::Generate(GenRequest::Stop)]
    );
    common::act(
        &mut a,
        Action::GenerateEnded {
            result: Ok("Stopped.".into()),
            progress: None,
        },
    );
    assert!(!a.generated.running());

    // A file changed behind the pane's back (a CLI run) is reread on the next tick.
    let mut more = records(&kept);
    more.push(task(
        "gen-000009",
        Category::Ie,
        "Extract each dose and route from the order.",
        0.2,
        "seed-003",
    ));
    std::fs::write(&kept, bioinstruct::data::to_jsonl(&more, &[])).expect("write");
    common::act(&mut a, Action::Tick);
    assert_eq!(a.generated.showing, GenList::Kept);
    assert!(a.generated.kept.iter().any(|r| r.id == "gen-000009"));
}

#[test]
fn a_generated_task_goes_to_the_chat_pane() {
    let dir = folder("to-chat");
    let mut a = app((80, 24), &dir);
    press(&mut a, &[KeyCode::Char('>')]);
    assert_eq!(a.tab, Tab::Chat);
    assert!(
        a.chat.input.contains("What does a raised troponin"),
        "{}",
        a.chat.input
    );
}

/// A run's error is shown whole in the Run box, wrapped, however long (it showed
/// `last error:` and nothing else when the text did not fit).
#[test]
fn a_long_run_error_is_shown_whole() {
    let dir = folder("long-error");
    let error = "cannot reach http://127.0.0.1:8080/v1/chat/completions: Connection refused (os error 111). Is the server running? Start it, or choose another teacher with --teacher or [generate] teacher (\"local\" is the built-in model, no server needed)";
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = app((w, h), &dir);
        press(&mut a, &[KeyCode::Char('n')]);
        common::act(
            &mut a,
            Action::GenerateProgress(Progress {
                target: 20,
                requests: 1,
                failed_requests: 1,
                last_error: Some(error.into()),
                ..Progress::default()
            }),
        );
        let buffer = render(&a).buffer().clone();
        let text: String = (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ");
        let words: String = text
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(words.contains("no server needed)"), "{w}x{h}: {words}");
        assert!(words.contains("Is the server running?"), "{w}x{h}: {words}");
    }
}

/// The pane stands alone behind the `Pane` trait: its keys' mode, its replies, no app.
#[test]
fn the_pane_answers_through_the_pane_trait_alone() {
    use bioinstruct::tui::mode::Mode;
    use bioinstruct::tui::panes::{Pane, Reply, Screen};
    let screen = |rows| Screen {
        body: ratatui::layout::Rect::new(0, 0, 80, 20),
        rows,
    };
    let dir = folder("pane-trait");
    let mut pane = GeneratedPane::new(dir, "mock".into(), 7);
    assert_eq!(Pane::mode(&pane), Mode::Generated);
    assert_eq!(
        pane.update(Action::StopGenerate, screen(10)),
        Reply::error("No run is going.")
    );
    assert_eq!(
        pane.update(Action::StartGenerate, screen(10)),
        Reply::info("Starting a run with mock to 7 kept tasks…")
    );
    assert_eq!(
        pane.requests,
        [GenRequest::Start {
            teacher: "mock".into(),
            target: 7
        }]
    );
    pane.update(Action::PageDown, screen(2));
    assert_eq!(pane.cursor.selected, 2, "a page is the rows it is given");
}
