//! Drawing the frame: tab bar, the active pane, status bar, key hints and overlays.
//! Rendering reads the [`App`] and changes nothing.

use super::app::{App, Mode, Overlay, Tab, Tone};
use super::keymap::help_rows;
pub use super::layout::{app_layout, AppLayout, TITLE};
use super::panes::seeds::SeedsView;
use super::panes::Shared;
use crate::data::Category;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub use super::panes::PREVIEW_MIN_WIDTH;

/// The colour of a category, used wherever one is shown.
pub use super::panes::category_color;

/// Draws the whole frame; returns where everything went, for the app to take back
/// ([`super::Action::Drawn`]): page sizes and mouse clicks follow what is on screen.
pub fn draw(frame: &mut Frame, app: &App) -> AppLayout {
    let layout = app_layout(frame.area(), matches!(app.seeds.view, SeedsView::List));
    draw_tabs(frame, layout.tabs, app);
    let shared = Shared {
        seeds: &app.seeds.file.records,
    };
    app.pane().draw(frame, layout.body, shared);
    match app.tab {
        Tab::Train => draw_train_status(frame, layout.status, app),
        Tab::Chat => draw_chat_status(frame, layout.status, app),
        Tab::Eval => draw_eval_status(frame, layout.status, app),
        Tab::Generated => draw_generated_status(frame, layout.status, app),
        Tab::Seeds => draw_status(frame, layout.status, app),
    }
    draw_hints(frame, layout.hints, app);
    match &app.overlay {
        Some(Overlay::Help { scroll }) => draw_help(frame, *scroll),
        Some(Overlay::Errors { scroll }) => draw_errors(frame, app, *scroll),
        Some(Overlay::ConfirmDelete { index }) => {
            let what = app
                .seeds
                .file
                .records
                .get(*index)
                .map_or_else(String::new, |r| format!("{} ({})", r.id, r.task));
            draw_prompt(
                frame,
                " Delete ",
                vec![
                    Line::from(format!("Delete {what}?")),
                    Line::from("You can undo with u until you quit."),
                    Line::from(""),
                    Line::from(vec![key("y"), " yes   ".into(), key("n"), " no".into()]),
                ],
            );
        }
        Some(Overlay::ConfirmQuit) => draw_prompt(
            frame,
            " Unsaved changes ",
            vec![
                Line::from(format!(
                    "{} has unsaved changes.",
                    app.seeds
                        .file
                        .path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                )),
                Line::from(""),
                Line::from(vec![
                    key("s"),
                    " save and quit   ".into(),
                    key("d"),
                    " discard and quit   ".into(),
                    key("Esc"),
                    " cancel".into(),
                ]),
            ],
        ),
        Some(o @ (Overlay::ConfirmStop { index } | Overlay::ConfirmResume { index })) => {
            let stop = matches!(o, Overlay::ConfirmStop { .. });
            let id = app
                .train
                .runs
                .get(*index)
                .map_or_else(String::new, |r| r.id.clone());
            let (title, question, detail) = if stop {
                (
                    " Stop ",
                    format!("Stop {id}?"),
                    "It finishes the current step and writes a checkpoint.",
                )
            } else {
                (
                    " Resume ",
                    format!("Resume {id}?"),
                    "It continues from its latest checkpoint, in the background.",
                )
            };
            draw_prompt(
                frame,
                title,
                vec![
                    Line::from(question),
                    Line::from(detail),
                    Line::from(""),
                    Line::from(vec![key("y"), " yes   ".into(), key("n"), " no".into()]),
                ],
            );
        }
        Some(Overlay::Conflict) => draw_conflict(frame, app),
        None => {}
    }
    layout
}

/// The first open save conflict: both versions of the record, side by side.
fn draw_conflict(frame: &mut Frame, app: &App) {
    let conflicts = &app.seeds.file.conflicts;
    let Some(c) = conflicts.first() else { return };
    let area = centered(
        frame.area(),
        110,
        frame.area().height.saturating_sub(2).max(10),
    );
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(
            format!(
                " Conflict 1 of {}: {} changed here and by another process ",
                conflicts.len(),
                c.id
            )
            .bold(),
        )
        .title_bottom(Line::from(vec![
            " ".into(),
            key("m"),
            " keep yours   ".into(),
            key("t"),
            " take theirs   ".into(),
            key("Esc"),
            " decide later ".into(),
        ]))
        .border_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let halves = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
        .spacing(1)
        .split(inner);
    let show = |r: &Option<crate::data::Instruction>| -> String {
        match r {
            Some(r) => serde_json::to_string_pretty(r).unwrap_or_default(),
            None => "(deleted)".to_string(),
        }
    };
    for (half, (title, version)) in halves.iter().zip([
        ("Yours (this workbench)", &c.ours),
        ("On disk (another process)", &c.theirs),
    ]) {
        frame.render_widget(
            Paragraph::new(show(version))
                .wrap(Wrap { trim: false })
                .block(Block::new().title(title.underlined())),
            *half,
        );
    }
}

fn draw_chat_status(frame: &mut Frame, area: Rect, app: &App) {
    let c = &app.chat;
    let turns = c.columns[0]
        .history
        .iter()
        .filter(|m| m.role == "user")
        .count();
    let mut spans: Vec<Span> = vec![format!("{turns} turns").into()];
    if c.streaming() {
        spans.push(Span::styled("  │ streaming", Style::new().fg(Color::Green)));
    }
    spans.push(
        format!(
            "  │ adapter {}",
            c.current_adapter().map_or_else(
                || "none".to_string(),
                |a| super::panes::chat::adapter_label(a)
            )
        )
        .dim(),
    );
    frame.render_widget(Line::from(spans), area);
}

fn draw_generated_status(frame: &mut Frame, area: Rect, app: &App) {
    let g = &app.generated;
    let mut spans: Vec<Span> = vec![
        Span::styled(
            format!("{} kept", g.kept.len()),
            Style::new().fg(Color::Green),
        ),
        format!("  {} rejected", g.rejected.len()).into(),
    ];
    if g.running() {
        spans.push(Span::styled(
            "  │ generating",
            Style::new().fg(Color::Green),
        ));
    }
    if app.seeds.dirty {
        spans.push(Span::styled(
            "  │ seeds unsaved (s)",
            Style::new().fg(Color::Yellow),
        ));
    }
    spans.push(
        format!(
            "  │ {}",
            g.files
                .kept
                .parent()
                .map_or_else(String::new, |p| p.display().to_string())
        )
        .dim(),
    );
    frame.render_widget(Line::from(spans), area);
}

fn draw_train_status(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.train;
    let active = t.runs.iter().filter(|r| r.is_active()).count();
    let mut spans: Vec<Span> = vec![
        format!("{} runs", t.runs.len()).into(),
        "  ".into(),
        Span::styled(format!("{active} training"), Style::new().fg(Color::Green)),
    ];
    if t.launching {
        spans.push("  │ starting a run…".into());
    }
    spans.push(format!("  │ {}", t.root.display()).dim());
    frame.render_widget(Line::from(spans), area);
}

fn draw_eval_status(frame: &mut Frame, area: Rect, app: &App) {
    let e = &app.eval;
    let active = e.evals.iter().filter(|x| x.is_active()).count();
    let mut spans: Vec<Span> = vec![
        format!("{} evaluations", e.evals.len()).into(),
        "  ".into(),
        Span::styled(format!("{active} running"), Style::new().fg(Color::Cyan)),
        format!("  │ {} experiments", e.experiments.len()).into(),
    ];
    if e.launching {
        spans.push("  │ working…".into());
    }
    spans.push(format!("  │ {}", e.root.display()).dim());
    frame.render_widget(Line::from(spans), area);
}

fn key(k: &str) -> Span<'static> {
    Span::styled(k.to_string(), Style::new().bold().fg(Color::Yellow))
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::styled(TITLE, Style::new().bold().reversed())];
    for tab in Tab::ALL {
        let name = tab.title();
        let style = if tab == app.tab {
            Style::new().bold().underlined()
        } else {
            Style::new().dim()
        };
        spans.push(Span::styled(format!(" {name} "), style));
        spans.push(" ".into());
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let s = &app.seeds;
    let counts = s.file.counts();
    let mut spans: Vec<Span> = Vec::new();
    for (c, n) in Category::ALL.iter().zip(counts) {
        spans.push(Span::styled(
            format!("{} {n}", c.as_str()),
            Style::new().fg(category_color(*c)),
        ));
        spans.push("  ".into());
    }
    spans.push(format!("│ {} shown ", s.visible.len()).into());
    if let Some(c) = s.filter {
        spans.push(format!("│ only {c} ").into());
    }
    if !s.search.is_empty() {
        spans.push(format!("│ /{} ", s.search).into());
    }
    if !s.file.invalid.is_empty() {
        spans.push(Span::styled(
            format!("│ {} invalid (!) ", s.file.invalid.len()),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    let left = Line::from(spans);
    let right = if s.dirty {
        Line::from(Span::styled(
            "● unsaved ",
            Style::new().fg(Color::Yellow).bold(),
        ))
    } else {
        Line::from(" saved ".dim())
    };
    let [l, r] = Layout::horizontal([Constraint::Min(0), Constraint::Length(right.width() as u16)])
        .areas(area);
    frame.render_widget(left, l);
    frame.render_widget(right.right_aligned(), r);
}

fn draw_hints(frame: &mut Frame, area: Rect, app: &App) {
    if let Some((text, tone)) = &app.message {
        let style = match tone {
            Tone::Info => Style::new().fg(Color::Green),
            Tone::Error => Style::new().fg(Color::Red).bold(),
        };
        frame.render_widget(Line::styled(text.as_str(), style), area);
        return;
    }
    let hints = super::keymap::hints(app.mode(), app.generated.detail);
    let mut spans = Vec::new();
    for (k, what) in hints {
        spans.push(key(k));
        spans.push(format!(" {what}  ").dim());
    }
    frame.render_widget(Line::from(spans), area);
}

/// A centered rectangle of at most `width` x `height` inside `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2));
    let h = height.min(area.height.saturating_sub(2));
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn popup(frame: &mut Frame, title: &str, text: Text, width: u16, scroll: u16) {
    let outer = frame.area();
    let width = width.min(outer.width.saturating_sub(2));
    let paragraph = Paragraph::new(text).wrap(Wrap { trim: false });
    // Height from the wrapped text, so nothing is cut off when it fits on screen.
    let height = paragraph.line_count(width.saturating_sub(2)) as u16 + 2;
    let area = centered(outer, width, height);
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(title.to_string().bold())
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(paragraph.block(block).scroll((scroll, 0)), area);
}

fn draw_help(frame: &mut Frame, scroll: u16) {
    let mut lines: Vec<Line> = Vec::new();
    let mut last: Option<Mode> = None;
    for (context, label, help) in help_rows() {
        if last != Some(context) {
            if last.is_some() {
                lines.push(Line::from(""));
            }
            lines.push(Line::from(context.title().bold().underlined()));
            last = Some(context);
        }
        lines.push(Line::from(vec![
            Span::styled(format!("  {label:<16}"), Style::new().fg(Color::Yellow)),
            Span::raw(help),
        ]));
    }
    popup(
        frame,
        " Keys (↑↓ scroll, any key closes) ",
        Text::from(lines),
        72,
        scroll,
    );
}

fn draw_errors(frame: &mut Frame, app: &App, scroll: u16) {
    let file = &app.seeds.file;
    let mut lines = vec![
        Line::from(format!(
            "{} invalid line(s) in {} are kept verbatim and written back after the records \
             when you save. Fix them in a text editor; `bioinstruct seeds validate FILE` checks.",
            file.invalid.len(),
            file.path.display()
        )),
        Line::from(""),
    ];
    for e in file.invalid.iter().flat_map(|l| &l.errors) {
        lines.push(Line::styled(e.to_string(), Style::new().fg(Color::Red)));
    }
    popup(frame, " Invalid lines ", Text::from(lines), 100, scroll);
}

fn draw_prompt(frame: &mut Frame, title: &str, lines: Vec<Line>) {
    let width = lines.iter().map(Line::width).max().unwrap_or(20) as u16 + 4;
    let height = lines.len() as u16 + 2;
    let area = centered(frame.area(), width, height);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(title.to_string().bold())
                .border_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
        ),
        area,
    );
}
