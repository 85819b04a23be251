//! No lost update: the workbench saving a seed file that another process changed since it
//! was read merges both sides' edits record by record, and asks a person where both changed
//! the same record (`src/data/merge.rs`).

mod common;

use bioinstruct::data::{InstructionFile, StoreError};
use bioinstruct::tui::{Action, App};
use common::Workspace;
use crossterm::event::KeyCode::{self, Char};

fn open(ws: &Workspace) -> App {
    App::new(
        InstructionFile::open(&ws.seeds()).expect("seeds"),
        (120, 40),
    )
}

fn on_disk(ws: &Workspace) -> InstructionFile {
    InstructionFile::open(&ws.seeds()).expect("seeds")
}

fn ids(file: &InstructionFile) -> Vec<String> {
    file.records.iter().map(|r| r.id.clone()).collect()
}

fn output_of(file: &InstructionFile, id: &str) -> String {
    file.get(id).expect("record").output.clone()
}

/// Replaces the output of the record `id` as an `$EDITOR` edit would.
fn edit_output(app: &mut App, id: &str, output: &str) {
    let index = app.seeds.file.position(id).expect("record");
    let mut record = app.seeds.file.records[index].clone();
    record.output = output.to_string();
    common::act(
        app,
        Action::ExternalEdited {
            index,
            result: Ok(record),
        },
    );
    assert!(app.seeds.dirty);
}

fn press(app: &mut App, keys: &[KeyCode]) {
    common::press(app, keys);
}

fn screen(app: &App) -> String {
    let backend = common::render(app);
    let buffer = backend.buffer();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_unsaved_delete_and_a_cli_add_from_another_shell_both_survive_the_save() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let mut app = open(&ws);
    // Delete the first record in the workbench, unsaved.
    press(&mut app, &[Char('d'), Char('y')]);
    assert!(app.seeds.dirty);
    assert!(app.seeds.file.get("seed-001").is_none());
    // Meanwhile, another shell adds a record.
    let added = ws.ok(&[
        "seeds",
        "add",
        "--category",
        "qa",
        "--task",
        "added_elsewhere",
        "--instruction",
        "Name the vitamin whose deficiency causes scurvy.",
        "--output",
        "Vitamin C.",
    ]);
    let added = added.trim().to_string();
    assert_eq!(added, "seed-081");
    press(&mut app, &[Char('s')]);
    assert!(!app.seeds.dirty, "{:?}", app.message);
    let message = &app.message.as_ref().expect("message").0;
    assert!(
        message.contains("1 change(s) another process made"),
        "{message}"
    );
    let file = on_disk(&ws);
    assert_eq!(file.records.len(), 80);
    assert!(file.get("seed-001").is_none(), "the delete was lost");
    assert_eq!(
        file.get(&added).expect("the add was lost").task,
        "added_elsewhere"
    );
    // The workbench shows the merged file.
    assert_eq!(ids(&app.seeds.file), ids(&file));
    assert_eq!(app.seeds.visible.len(), 80);
}

#[test]
fn two_workbenches_saving_one_seed_file_keep_both_edits() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let (mut a, mut b) = (open(&ws), open(&ws));
    edit_output(&mut a, "seed-002", "edited in A");
    press(&mut a, &[Char('c')]); // duplicate seed-001 as seed-081
    edit_output(&mut b, "seed-003", "edited in B");
    press(&mut b, &[Char('g'), Char('j'), Char('j'), Char('j')]);
    assert_eq!(
        b.seeds.selected_record().map(|r| r.id.as_str()),
        Some("seed-004")
    );
    press(&mut b, &[Char('d'), Char('y')]); // delete seed-004
    press(&mut a, &[Char('s')]);
    press(&mut b, &[Char('s')]);
    assert!(
        !a.seeds.dirty && !b.seeds.dirty,
        "{:?} / {:?}",
        a.message,
        b.message
    );
    let file = on_disk(&ws);
    assert_eq!(output_of(&file, "seed-002"), "edited in A");
    assert_eq!(output_of(&file, "seed-003"), "edited in B");
    assert!(file.get("seed-081").is_some(), "A's duplicate was lost");
    assert!(file.get("seed-004").is_none(), "B's delete was lost");
    assert_eq!(file.records.len(), 80);
    // A saves again: it merges B's changes instead of putting seed-004 back (its own order
    // of the records stays).
    press(&mut a, &[Char('s')]);
    let sorted = |f: &InstructionFile| {
        let mut r = f.records.clone();
        r.sort_by(|x, y| x.id.cmp(&y.id));
        r
    };
    assert_eq!(sorted(&on_disk(&ws)), sorted(&file));
}

#[test]
fn the_same_record_changed_in_two_workbenches_asks_which_to_keep() {
    for (key, expected) in [('t', "from A"), ('m', "from B")] {
        let ws = Workspace::new();
        ws.ok(&["seeds", "list"]);
        let (mut a, mut b) = (open(&ws), open(&ws));
        edit_output(&mut a, "seed-005", "from A");
        edit_output(&mut b, "seed-005", "from B");
        edit_output(&mut b, "seed-006", "only B");
        press(&mut a, &[Char('s')]);
        let before = std::fs::read(ws.seeds()).expect("seeds");
        press(&mut b, &[Char('s')]);
        // Nothing written; both versions on screen.
        assert_eq!(std::fs::read(ws.seeds()).expect("seeds"), before);
        assert!(b.seeds.dirty);
        let shown = screen(&b);
        assert!(shown.contains("Conflict 1 of 1: seed-005"), "{shown}");
        assert!(
            shown.contains("from A") && shown.contains("from B"),
            "{shown}"
        );
        // Saving is refused until it is settled, even after closing the prompt.
        press(&mut b, &[KeyCode::Esc]);
        let mut probe = b.seeds.file.clone();
        assert!(matches!(probe.save(), Err(StoreError::Conflict { .. })));
        press(&mut b, &[Char('s'), Char(key)]);
        assert!(b.overlay.is_none() && !b.seeds.dirty, "{:?}", b.message);
        let file = on_disk(&ws);
        assert_eq!(output_of(&file, "seed-005"), expected);
        assert_eq!(output_of(&file, "seed-006"), "only B");
    }
}

/// A seed file changed by another process while the workbench has nothing unsaved is shown
/// as it is on disk at once (the watcher's event, or the slow poll); with unsaved changes it
/// is left to the next save's merge.
#[test]
fn a_seed_file_changed_elsewhere_is_shown_unless_there_are_unsaved_changes() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let mut app = open(&ws);
    let add = |task: &str| ws.add_seed(task);
    add("watched_one");
    common::act(&mut app, Action::FilesChanged(vec![ws.seeds()]));
    assert_eq!(app.seeds.file.records.len(), 81);
    assert_eq!(app.seeds.visible.len(), 81);
    let message = &app.message.as_ref().expect("message").0;
    assert!(
        message.contains("changed on disk: 81 records now"),
        "{message}"
    );
    // Unsaved changes: not replaced under the person's hands; the save merges.
    press(&mut app, &[Char('d'), Char('y')]);
    add("watched_two");
    common::act(&mut app, Action::FilesChanged(vec![ws.seeds()]));
    assert_eq!(
        app.seeds.file.records.len(),
        80,
        "the unsaved delete is still there"
    );
    press(&mut app, &[Char('s')]);
    let file = on_disk(&ws);
    assert_eq!(file.records.len(), 81);
    assert!(file.records.iter().any(|r| r.task == "watched_two"));
}

/// A look at the seed file that read it before this workbench's own save came back describes
/// a file that is gone: it must not put the view back to it (the saved edit would vanish from
/// the screen).
#[test]
fn a_disk_check_older_than_the_workbench_s_own_save_is_ignored() {
    let ws = Workspace::new();
    ws.ok(&["seeds", "list"]);
    let mut app = open(&ws);
    let added = ws.add_seed("from_another_shell");
    // The check reads the file (with the other shell's record) now ...
    let mut check = app.update(Action::FilesChanged(vec![ws.seeds()]));
    check.retain(|e| {
        matches!(
            e,
            bioinstruct::tui::Effect::File(bioinstruct::tui::effect::FileWork::CheckSeeds(_))
        )
    });
    let stale = check
        .pop()
        .expect("a check")
        .perform_io()
        .expect("file work");
    // ... and comes back after an edit was made and saved here.
    edit_output(&mut app, "seed-001", "changed here");
    common::act(&mut app, Action::Save);
    assert!(!app.seeds.dirty, "{:?}", app.message);
    let disk = on_disk(&ws);
    assert_eq!(output_of(&disk, "seed-001"), "changed here");
    assert!(disk.get(&added).is_some());
    common::act(&mut app, stale);
    assert_eq!(
        output_of(&app.seeds.file, "seed-001"),
        "changed here",
        "the saved edit is still shown"
    );
    assert!(app.seeds.file.get(&added).is_some());
    assert!(!app.seeds.dirty);
}
