//! Time to apply a key and draw the frame, per pane, at the paper's scale: 25,005 seed records
//! in the Seeds pane and 25,005 kept tasks in the Generated pane (synthetic records shaped
//! like generated ones, with similarity and provenance). Headless (ratatui's TestBackend at
//! 120x40), so it measures the workbench's own work per keypress, not the terminal's.
//!
//! `cargo run --release --example bench_panes [-- RECORDS]`; prints the median and the
//! slowest of each action over its repetitions. `scripts/bench-latency.sh` measures the same
//! in tmux, end to end.

use bioinstruct::data::{Category, Instruction, InstructionFile};
use bioinstruct::tui::panes::generated::GeneratedPane;
use bioinstruct::tui::{Action, App};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;
use std::time::{Duration, Instant};

fn record(i: usize, prefix: &str) -> Instruction {
    let words = [
        "aspirin", "sepsis", "insulin", "biopsy", "anemia", "stroke", "lupus", "warfarin",
    ];
    let w = |k: usize| words[(i * 7 + k * 3) % words.len()];
    let mut extra = serde_json::Map::new();
    extra.insert(
        "similarity".into(),
        json!({"max_rouge_l": 0.3, "mean_rouge_l": 0.1,
               "most_similar": [{"id": "seed-001", "rouge_l": 0.3}]}),
    );
    extra.insert(
        "provenance".into(),
        json!({"teacher": "bench", "request": i, "seeds": ["seed-001"], "time": "2026-12-01T00:00:00Z"}),
    );
    Instruction {
        id: format!("{prefix}-{i:06}"),
        category: Category::ALL[i % 4],
        task: "self_instruct".into(),
        instruction: format!(
            "Explain how {} relates to {} and {} in case {i}.",
            w(0),
            w(1),
            w(2)
        ),
        input: format!("A patient on {} with {}.", w(3), w(4)),
        output: format!("An answer about {} for case {i}.", w(5)),
        extra,
    }
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

/// `app.update(action)`, then the file work it asks for carried out here as the runtime would
/// (reads of appended tasks, rescans), each outcome fed back: the time a key costs the
/// workbench, its file I/O included.
fn apply(app: &mut App, action: Action) {
    let mut queue: std::collections::VecDeque<_> = app.update(action).into();
    while let Some(effect) = queue.pop_front() {
        if let Some(outcome) = effect.perform_io() {
            queue.extend(app.update(outcome));
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(25_005);
    let dir = tempfile::tempdir().expect("temp dir");
    let seeds: Vec<Instruction> = (0..n).map(|i| record(i, "seed")).collect();
    let kept: Vec<Instruction> = (0..n).map(|i| record(i, "gen")).collect();
    let gen_dir = dir.path().join("generated");
    std::fs::create_dir_all(&gen_dir).expect("dir");
    std::fs::write(
        gen_dir.join("generated.jsonl"),
        bioinstruct::data::to_jsonl(&kept, &[]),
    )
    .expect("write");
    let file = InstructionFile::new(dir.path().join("seeds.jsonl"), seeds, Vec::new());
    let mut app =
        App::new(file, (120, 40)).with_generated(GeneratedPane::new(gen_dir, "bench".into(), n));
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
    let mut frame = |app: &App| {
        terminal
            .draw(|f| {
                bioinstruct::tui::ui::draw(f, app);
            })
            .expect("draw");
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_string())
        })
        .unwrap_or_default();
    println!("{n} seed records, {n} kept tasks; 120x40; CPU: {cpu}");
    println!(
        "{:<44} {:>10} {:>10}",
        "action (apply + draw)", "median", "max"
    );
    let report = |name: &str, (median, max): (Duration, Duration)| {
        println!(
            "{name:<44} {:>8.2} ms {:>8.2} ms",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    };
    report(
        "Seeds: j (down)",
        time(50, || {
            apply(&mut app, Action::Down);
            frame(&app);
        }),
    );
    apply(&mut app, Action::StartSearch);
    let mut typed = "sepsis".chars().cycle();
    let mut length = 0;
    report(
        "Seeds: a character typed into the search",
        time(30, || {
            // "s", "se", …, "sepsis", then from "s" again.
            if length == 6 {
                for _ in 0..6 {
                    apply(&mut app, Action::SearchBackspace);
                }
                length = 0;
            }
            apply(&mut app, Action::SearchChar(typed.next().unwrap_or('s')));
            length += 1;
            frame(&app);
        }),
    );
    apply(&mut app, Action::Cancel);
    // Seeds → Train → Chat → Generated.
    apply(&mut app, Action::PrevTab);
    report(
        "Generated: j (down)",
        time(50, || {
            apply(&mut app, Action::Down);
            frame(&app);
        }),
    );
    report(
        "Generated: PgDn",
        time(20, || {
            apply(&mut app, Action::PageDown);
            frame(&app);
        }),
    );
    report(
        "Generated: tick (files unchanged)",
        time(20, || {
            apply(&mut app, Action::Tick);
            frame(&app);
        }),
    );
    let path = dir.path().join("generated/generated.jsonl");
    let mut next = n;
    report(
        "Generated: a run appends 100 tasks, tick",
        time(5, || {
            use std::io::Write;
            let more: Vec<Instruction> = (next..next + 100).map(|i| record(i, "gen")).collect();
            next += 100;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(bioinstruct::data::to_jsonl(&more, &[]).as_bytes())
                .expect("append");
            apply(&mut app, Action::Tick);
            frame(&app);
        }),
    );
}
