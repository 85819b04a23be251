//! The workbench driven headless: Actions pushed into `App::update`, frames rendered to
//! ratatui's `TestBackend` and compared with `insta` snapshots (tests/snapshots/).

mod common;

use bioinstruct::data::{parse_jsonl, Category, InstructionFile};
use bioinstruct::tui::app::{Mode, Overlay};
use bioinstruct::tui::panes::seeds::SeedsView;
use bioinstruct::tui::{keymap, ui, Action, App};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn bundled(path: &Path) -> InstructionFile {
    let loaded = parse_jsonl(path, include_str!("../assets/seeds/seeds.jsonl"));
    InstructionFile::new(path.to_path_buf(), loaded.records, loaded.invalid)
}

fn app(size: (u16, u16)) -> App {
    App::new(bundled(Path::new("seeds.jsonl")), size)
}

fn selected_id(app: &App) -> Option<&str> {
    app.seeds.selected_record().map(|r| r.id.as_str())
}

fn render(app: &App) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(app.size.0, app.size.1)).expect("terminal");
    terminal
        .draw(|f| {
            ui::draw(f, app);
        })
        .expect("draw");
    terminal.backend().clone()
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

/// Feeds terminal events through the real keymap, as the event loop does.
fn press(app: &mut App, events: &[Event]) {
    for e in events {
        if let Some(action) = keymap::map_event(app, e) {
            common::act(app, action);
        }
    }
}

fn type_text(app: &mut App, text: &str) {
    let events: Vec<Event> = text
        .chars()
        .map(|c| match c {
            '\n' => key(KeyCode::Enter),
            c => key(KeyCode::Char(c)),
        })
        .collect();
    press(app, &events);
}

fn snapshot_each_size(name: &str, setup: impl Fn(&mut App)) {
    for size in SIZES {
        let mut a = app(size);
        setup(&mut a);
        insta::assert_snapshot!(format!("{name}_{}x{}", size.0, size.1), render(&a));
    }
}

#[test]
fn snapshot_list() {
    snapshot_each_size("seeds_list", |a| {
        press(a, &[key(KeyCode::Down), key(KeyCode::Down)]);
    });
}

#[test]
fn snapshot_filtered_list() {
    snapshot_each_size("seeds_filtered", |a| {
        press(a, &[key(KeyCode::Char('f')), key(KeyCode::Char('f'))]);
        assert_eq!(a.seeds.filter, Some(Category::Ie));
        press(a, &[key(KeyCode::Char('/'))]);
        type_text(a, "drug");
    });
}

#[test]
fn snapshot_detail() {
    snapshot_each_size("seeds_detail", |a| {
        press(a, &[key(KeyCode::Char('G')), key(KeyCode::Enter)]);
    });
}

#[test]
fn snapshot_edit_form() {
    snapshot_each_size("seeds_edit_form", |a| {
        press(a, &[key(KeyCode::Down), key(KeyCode::Char('e'))]);
        assert_eq!(a.mode(), Mode::Form);
    });
}

#[test]
fn snapshot_help_overlay() {
    snapshot_each_size("seeds_help", |a| press(a, &[key(KeyCode::Char('?'))]));
}

#[test]
fn snapshot_delete_confirmation() {
    snapshot_each_size("seeds_delete_confirm", |a| {
        press(a, &[key(KeyCode::Down), key(KeyCode::Char('d'))]);
        assert_eq!(a.mode(), Mode::Prompt);
    });
}

fn mixed() -> InstructionFile {
    let text =
        std::fs::read_to_string(common::fixture("mixed_50_good_3_bad.jsonl")).expect("fixture");
    let loaded = parse_jsonl(Path::new("mixed.jsonl"), &text);
    InstructionFile::new(PathBuf::from("mixed.jsonl"), loaded.records, loaded.invalid)
}

#[test]
fn snapshot_errors_overlay_on_opening_a_file_with_bad_lines() {
    for size in SIZES {
        let a = App::new(mixed(), size);
        assert!(matches!(a.overlay, Some(Overlay::Errors { .. })));
        insta::assert_snapshot!(format!("seeds_errors_{}x{}", size.0, size.1), render(&a));
    }
}

#[test]
fn filter_cycles_through_the_categories() {
    let mut a = app((80, 24));
    let mut seen = Vec::new();
    for _ in 0..5 {
        common::act(&mut a, Action::CycleCategory);
        seen.push((a.seeds.filter, a.seeds.visible.len()));
    }
    assert_eq!(
        seen,
        vec![
            (Some(Category::Qa), 24),
            (Some(Category::Ie), 24),
            (Some(Category::Gen), 24),
            (Some(Category::Other), 8),
            (None, 80)
        ]
    );
}

#[test]
fn search_is_incremental_and_esc_clears_it() {
    let mut a = app((80, 24));
    common::act(&mut a, Action::StartSearch);
    assert_eq!(a.mode(), Mode::Search);
    let mut counts = Vec::new();
    for c in "sumatriptan".chars() {
        common::act(&mut a, Action::SearchChar(c));
        counts.push(a.seeds.visible.len());
    }
    assert!(counts.windows(2).all(|w| w[1] <= w[0]), "{counts:?}");
    assert_eq!(selected_id(&a), Some("seed-061"));
    common::act(&mut a, Action::SearchSubmit);
    assert_eq!(a.mode(), Mode::List);
    assert_eq!(a.seeds.visible.len(), 1);
    common::act(&mut a, Action::Cancel);
    assert_eq!(a.seeds.visible.len(), 80);
}

#[test]
fn edit_in_the_form_changes_the_record_and_marks_unsaved() {
    let mut a = app((80, 24));
    press(&mut a, &[key(KeyCode::Char('e'))]);
    // Focus starts on the instruction; two Tabs reach the output.
    press(&mut a, &[key(KeyCode::Tab), key(KeyCode::Tab)]);
    type_text(&mut a, "Reviewed. ");
    press(
        &mut a,
        &[
            key(KeyCode::BackTab),
            key(KeyCode::BackTab),
            key(KeyCode::BackTab),
        ],
    );
    type_text(&mut a, "zz"); // focus 1: task field, typed at the start
    common::act(&mut a, Action::FormSubmit);
    assert_eq!(a.mode(), Mode::List);
    let r = &a.seeds.file.records[0];
    assert!(
        r.output.starts_with("Reviewed. B. Metformin."),
        "{}",
        r.output
    );
    assert_eq!(r.task, "zzusmle_mcq");
    assert!(a.seeds.dirty);
}

#[test]
fn the_form_refuses_an_invalid_record_and_keeps_the_old_one() {
    let mut a = app((80, 24));
    common::act(&mut a, Action::Add);
    type_text(&mut a, "Explain the result."); // instruction only: task and output empty
    common::act(&mut a, Action::FormSubmit);
    assert_eq!(a.mode(), Mode::Form);
    let SeedsView::Form(form) = &a.seeds.view else {
        panic!("form closed")
    };
    let error = form.error.clone().expect("an error");
    assert!(
        error.contains("task:") && error.contains("output: is empty"),
        "{error}"
    );
    common::act(&mut a, Action::Cancel);
    assert_eq!(a.seeds.file.records.len(), 80);
    assert!(!a.seeds.dirty);
}

#[test]
fn add_appends_a_new_record_with_the_next_id() {
    let mut a = app((80, 24));
    common::act(&mut a, Action::CycleCategory); // qa filter: the new record is qa
    common::act(&mut a, Action::Add);
    type_text(&mut a, "What is the antidote for heparin?");
    common::act(&mut a, Action::FormPrevField);
    type_text(&mut a, "pharmacology_qa");
    for _ in 0..3 {
        common::act(&mut a, Action::FormNextField);
    }
    type_text(&mut a, "Protamine sulfate.");
    common::act(&mut a, Action::FormSubmit);
    let r = a.seeds.file.records.last().expect("added");
    assert_eq!(
        (r.id.as_str(), r.category, r.task.as_str()),
        ("seed-081", Category::Qa, "pharmacology_qa")
    );
    assert_eq!(selected_id(&a), Some("seed-081"));
}

#[test]
fn delete_asks_then_undo_restores_the_record_in_place() {
    let mut a = app((80, 24));
    let before = a.seeds.file.records.clone();
    common::act(&mut a, Action::Down);
    common::act(&mut a, Action::Delete);
    assert_eq!(a.overlay, Some(Overlay::ConfirmDelete { index: 1 }));
    common::act(&mut a, Action::Cancel);
    assert_eq!(a.seeds.file.records.len(), 80);
    common::act(&mut a, Action::Delete);
    common::act(&mut a, Action::Confirm);
    assert_eq!(a.seeds.file.records.len(), 79);
    assert!(a.seeds.file.get("seed-002").is_none());
    common::act(&mut a, Action::Undo);
    assert_eq!(a.seeds.file.records, before);
    assert_eq!(selected_id(&a), Some("seed-002"));
}

#[test]
fn duplicate_inserts_a_copy_below_with_a_fresh_id() {
    let mut a = app((80, 24));
    common::act(&mut a, Action::Duplicate);
    let copy = &a.seeds.file.records[1];
    assert_eq!(copy.id, "seed-081");
    assert_eq!(copy.instruction, a.seeds.file.records[0].instruction);
    assert_eq!(a.seeds.cursor.selected, 1);
}

#[test]
fn save_writes_the_file_and_clears_the_unsaved_mark() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("seeds.jsonl");
    std::fs::write(&path, include_str!("../assets/seeds/seeds.jsonl")).expect("write");
    let mut a = App::new(InstructionFile::open(&path).expect("open"), (80, 24));
    common::act(&mut a, Action::Delete);
    common::act(&mut a, Action::Confirm);
    assert!(a.seeds.dirty);
    common::act(&mut a, Action::Save);
    assert!(!a.seeds.dirty);
    let on_disk = InstructionFile::open(&path).expect("reopen");
    assert_eq!(on_disk.records.len(), 79);
    assert!(on_disk.get("seed-001").is_none());
    assert!(dir.path().join("seeds.jsonl.bak").exists());
}

#[test]
fn a_save_is_an_effect_and_edits_made_while_it_runs_are_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("seeds.jsonl");
    std::fs::write(&path, include_str!("../assets/seeds/seeds.jsonl")).expect("write");
    let on_disk = || InstructionFile::open(&path).expect("reopen").records;
    let mut a = App::new(InstructionFile::open(&path).expect("open"), (80, 24));
    a.update(Action::Delete);
    a.update(Action::Confirm);
    let mut effects = a.update(Action::Save);
    assert!(
        matches!(
            effects.as_slice(),
            [bioinstruct::tui::Effect::File(
                bioinstruct::tui::effect::FileWork::SaveSeeds(_)
            )]
        ),
        "{effects:?}"
    );
    // `update` wrote nothing: the runtime does.
    assert_eq!(on_disk().len(), 80);
    let outcome = effects
        .pop()
        .expect("save")
        .perform_io()
        .expect("file work");
    assert_eq!(on_disk().len(), 79);
    // A duplicate made while the save ran: kept, and still unsaved, when the outcome is back.
    a.update(Action::Duplicate);
    assert!(a.update(outcome).is_empty());
    assert!(a.seeds.dirty);
    assert!(a.seeds.file.get("seed-081").is_some());
    assert!(on_disk().iter().all(|r| r.id != "seed-081"));
    // Save and quit: the workbench quits once the save is back, not before.
    let effects = a.update(Action::SaveAndQuit);
    assert!(!a.should_quit);
    assert!(common::settle(&mut a, effects).is_empty());
    assert!(a.should_quit && !a.seeds.dirty);
    assert!(on_disk().iter().any(|r| r.id == "seed-081"));
    assert_eq!(on_disk().len(), 80);
}

#[test]
fn a_file_with_bad_lines_never_loses_its_good_records_on_save() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("mixed.jsonl");
    std::fs::copy(common::fixture("mixed_50_good_3_bad.jsonl"), &path).expect("copy");
    let mut a = App::new(InstructionFile::open(&path).expect("open"), (80, 24));
    common::act(&mut a, Action::Cancel); // close the errors overlay
    common::act(&mut a, Action::Duplicate);
    common::act(&mut a, Action::Save);
    common::act(&mut a, Action::Undo);
    common::act(&mut a, Action::Save);
    let text = std::fs::read_to_string(&path).expect("read");
    let loaded = parse_jsonl(&path, &text);
    assert_eq!(loaded.records.len(), 50);
    assert_eq!(loaded.invalid.len(), 3, "the bad lines are kept verbatim");
    let original =
        std::fs::read_to_string(common::fixture("mixed_50_good_3_bad.jsonl")).expect("read");
    for line in original.lines() {
        assert!(text.lines().any(|l| l == line), "lost line: {line}");
    }
}

#[test]
fn quitting_with_unsaved_changes_asks_first() {
    let mut a = app((80, 24));
    common::act(&mut a, Action::Quit);
    assert!(a.should_quit, "nothing to save: quits at once");

    let mut a = app((80, 24));
    common::act(&mut a, Action::Duplicate);
    common::act(&mut a, Action::Quit);
    assert_eq!(a.overlay, Some(Overlay::ConfirmQuit));
    assert!(!a.should_quit);
    common::act(&mut a, Action::Cancel);
    assert!(!a.should_quit && a.overlay.is_none());
    common::act(&mut a, Action::Quit);
    common::act(&mut a, Action::DiscardAndQuit);
    assert!(a.should_quit);
}

#[test]
fn a_failed_save_says_why_and_keeps_the_changes() {
    // A regular file where a folder should be: no user (root included) can write there.
    let dir = tempfile::tempdir().expect("dir");
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, "").expect("write");
    let target = blocker.join("seeds.jsonl");
    let mut a = App::new(bundled(&target), (80, 24));
    common::act(&mut a, Action::Duplicate);
    common::act(&mut a, Action::Save);
    assert!(a.seeds.dirty);
    let (message, _) = a.message.clone().expect("a message");
    let expected = format!("Not saved: cannot write {}", target.display());
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn mouse_click_selects_then_opens_and_the_wheel_scrolls() {
    let mut a = app((80, 24));
    let inner = a.layout().list_inner;
    common::act(
        &mut a,
        Action::Click {
            column: inner.x + 3,
            row: inner.y + 4,
        },
    );
    assert_eq!(a.seeds.cursor.selected, 4);
    common::act(
        &mut a,
        Action::Click {
            column: inner.x + 3,
            row: inner.y + 4,
        },
    );
    assert_eq!(a.mode(), Mode::Detail);
    common::act(&mut a, Action::Cancel);
    for _ in 0..30 {
        common::act(&mut a, Action::ScrollDown);
    }
    assert_eq!(a.seeds.cursor.selected, 34);
    assert_eq!(a.seeds.cursor.offset, 34 + 1 - inner.height as usize);
}

#[test]
fn resize_keeps_the_selection_visible() {
    let mut a = app((120, 40));
    common::act(&mut a, Action::Bottom);
    common::act(
        &mut a,
        Action::Resize {
            width: 80,
            height: 24,
        },
    );
    let rows = a.layout().list_inner.height as usize;
    assert!(a.seeds.cursor.offset + rows > a.seeds.cursor.selected);
    assert!(render(&a)
        .buffer()
        .content()
        .iter()
        .any(|c| c.symbol() == "8"));
}

#[test]
fn an_external_edit_replaces_the_record_or_reports_why_not() {
    let mut a = app((80, 24));
    assert_eq!(
        common::act(&mut a, Action::EditExternal),
        vec![bioinstruct::tui::Effect::EditSeed { index: 0 }]
    );
    let mut edited = a.seeds.file.records[0].clone();
    edited.category = Category::Other;
    common::act(
        &mut a,
        Action::ExternalEdited {
            index: 0,
            result: Ok(edited.clone()),
        },
    );
    assert_eq!(a.seeds.file.records[0], edited);
    let mut clash = edited;
    clash.id = "seed-002".into();
    common::act(
        &mut a,
        Action::ExternalEdited {
            index: 0,
            result: Ok(clash),
        },
    );
    assert_eq!(a.seeds.file.records[0].id, "seed-001");
    assert!(a
        .message
        .as_ref()
        .is_some_and(|(m, _)| m.contains("already used")));
}

#[test]
fn actions_serialize_as_snake_case_for_keymaps() {
    assert_eq!(
        serde_json::to_string(&Action::CycleCategory).expect("json"),
        "\"cycle_category\""
    );
    let back: Action = serde_json::from_str("\"edit_external\"").expect("parse");
    assert_eq!(back, Action::EditExternal);
}

#[test]
fn the_readme_lists_every_key_of_the_help_overlay() {
    let readme = include_str!("../README.md");
    let keys_section = readme
        .split("### Keys")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Keys section");
    for binding in keymap::bindings() {
        for key in binding.label.split(" / ") {
            assert!(
                keys_section.contains(&format!("`{key}`")),
                "README's key table lacks `{key}` ({:?})",
                binding.mode
            );
        }
    }
}

/// The panes stand alone: no module under `src/tui/panes/` imports the app or the frame
/// layout (they get their state and areas passed in).
#[test]
fn no_pane_imports_the_app_or_the_frame_layout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tui/panes");
    for entry in std::fs::read_dir(&dir).expect("panes") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("source");
        for forbidden in [
            "tui::app",
            "tui::ui",
            "super::super::app",
            "super::super::ui",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}

/// Pages follow the layout the last frame had (the app takes it back from `ui::draw`), not
/// one `update` works out for itself.
#[test]
fn page_moves_follow_the_layout_the_last_frame_reported() {
    let mut a = app((80, 24));
    let small = a.layout().list_inner.height as usize;
    common::act(&mut a, Action::PageDown);
    assert_eq!(a.seeds.cursor.selected, small);
    common::act(
        &mut a,
        Action::Resize {
            width: 80,
            height: 40,
        },
    );
    // Not drawn at the new size yet: the screen still shows the old page.
    assert_eq!(a.layout().list_inner.height as usize, small);
    let mut terminal = Terminal::new(TestBackend::new(80, 40)).expect("terminal");
    let mut drawn = None;
    terminal
        .draw(|f| drawn = Some(ui::draw(f, &a)))
        .expect("draw");
    let drawn = drawn.expect("a layout");
    let big = drawn.list_inner.height as usize;
    assert!(big > small, "{big} rows at 40 lines, {small} at 24");
    common::act(&mut a, Action::Drawn(Box::new(drawn)));
    common::act(&mut a, Action::PageDown);
    assert_eq!(a.seeds.cursor.selected, small + big);
}

/// No import cycles among the app, the frame and the keymap: the app's state imports neither
/// the frame (`ui.rs`) nor the keymap (which reads the app to map keys); the layout and the
/// mode live in modules of their own that all three use.
#[test]
fn the_app_imports_neither_the_frame_nor_the_keymap() {
    let app = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tui/app.rs"))
        .expect("app.rs");
    for forbidden in ["super::ui", "super::keymap", "tui::ui", "tui::keymap"] {
        assert!(!app.contains(forbidden), "app.rs uses {forbidden}");
    }
}
