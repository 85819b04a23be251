//! The real binary in a real terminal: tmux runs it, `send-keys` types, `capture-pane` reads
//! the screen. Needs tmux (scripts/test.sh installs it).

mod common;

use common::{Workspace, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str, width: u16, height: u16) -> Tmux {
        let socket = format!("bioinstruct-test-{}-{name}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string(), command])
            .status()
            .expect("tmux is required for this test: install it (apt-get install tmux)");
        assert!(status.success());
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Sends keys one at a time (tmux key names such as `Tab`, `C-s`, or literal text).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            assert!(self.tmux(&["send-keys", "-t", "t", k]).status.success());
            // A lone Esc followed at once by another key reads as Alt-key: pace the keys.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn text(&self, text: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", "t", "-l", text])
            .status
            .success());
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.tmux(&["has-session", "-t", "t"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "still running:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn edit_a_seed_save_and_quit_in_a_real_terminal() {
    let ws = Workspace::new();
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' '{BIN}'",
        ws.home.path().display()
    );
    let tmux = Tmux::start("edit", &command, 80, 24);
    let screen = tmux.wait_for("seed-019");
    assert!(screen.contains("qa 24  ie 24  gen 24  other 8"), "{screen}");

    tmux.keys(&["j", "e"]);
    tmux.wait_for("Ctrl-s apply");
    tmux.keys(&["Tab", "Tab"]); // instruction → input → output
    tmux.text("Reviewed by a clinician. ");
    tmux.keys(&["C-s"]);
    tmux.wait_for("Applied changes to seed-002");
    tmux.wait_for("● unsaved");

    // Quitting with unsaved changes asks; cancel, then save, then quit.
    tmux.keys(&["q"]);
    tmux.wait_for("has unsaved changes");
    tmux.keys(&["Escape"]);
    tmux.keys(&["s"]);
    tmux.wait_for("Saved 80 records");
    tmux.keys(&["q"]);
    tmux.wait_exit();

    let saved = bioinstruct::data::InstructionFile::open(&ws.seeds()).expect("workspace file");
    let r = saved.get("seed-002").expect("seed-002");
    assert!(
        r.output
            .starts_with("Reviewed by a clinician. C. Graves disease."),
        "{}",
        r.output
    );
    assert_eq!(saved.records.len(), 80);
    // The bundled first version is the backup.
    let bak =
        bioinstruct::data::read_jsonl(&bioinstruct::data::backup_path(&ws.seeds())).expect("bak");
    assert!(bak.records[1].output.starts_with("C. Graves disease."));
}

#[test]
fn the_workbench_opens_a_file_with_bad_lines_and_shows_them() {
    let ws = Workspace::new();
    let file = common::fixture("mixed_50_good_3_bad.jsonl");
    let command = format!(
        "env BIOINSTRUCT_HOME='{}' '{BIN}' --seeds '{}'",
        ws.home.path().display(),
        file.display()
    );
    let tmux = Tmux::start("errors", &command, 120, 40);
    let screen = tmux.wait_for("Invalid lines");
    assert!(screen.contains(":45: output: is missing"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("3 invalid (!)");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}
