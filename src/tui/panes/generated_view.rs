//! Drawing the Generated pane: the kept or rejected list with reason and similarity, the run
//! box with live counters, the category mix beside the paper's, and the detail view of a task
//! beside its most similar instruction.

use super::category_color;
use super::generated::{GenList, GeneratedPane, RunState, PAPER_MIX};
use super::seeds_view::detail_text;
use crate::data::{Category, Instruction};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

/// The list's rows inside its border, for `area` (the pane's body), as [`draw`] splits it.
pub fn list_rows(area: Rect) -> usize {
    let [list, _] = split(area);
    list.height.saturating_sub(3) as usize
}

fn split(area: Rect) -> [Rect; 2] {
    Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(area)
}

/// Highest ROUGE-L of a record against what was kept before it.
fn max_rouge(r: &Instruction) -> Option<f64> {
    r.extra.get("similarity")?.get("max_rouge_l")?.as_f64()
}

/// A rejected record's reason (`too_similar 0.82 to seed-004`, `blacklisted "image"`, ...).
pub fn reason(r: &Instruction) -> String {
    let Some(rej) = r.extra.get("rejection") else {
        return String::new();
    };
    let name = rej.get("reason").and_then(|v| v.as_str()).unwrap_or("?");
    match name {
        "too_similar" => format!(
            "too_similar to {}",
            rej.get("to").and_then(|v| v.as_str()).unwrap_or("?")
        ),
        "duplicate" => format!(
            "duplicate of {}",
            rej.get("of").and_then(|v| v.as_str()).unwrap_or("?")
        ),
        "blacklisted" => format!(
            "blacklisted {}",
            rej.get("word").and_then(|v| v.as_str()).unwrap_or("?")
        ),
        other => other.to_string(),
    }
}

/// Draws the pane into `area`; `seeds` are looked in for the most similar instruction.
pub fn draw(frame: &mut Frame, area: Rect, pane: &GeneratedPane, seeds: &[Instruction]) {
    if pane.detail {
        if let Some(r) = pane.selected_record() {
            draw_detail(frame, area, pane, r, seeds);
            return;
        }
    }
    let [left, right] = split(area);
    draw_list(frame, left, pane);
    // The run box grows to show an error whole (wrapped), taking the chart's rows if it
    // must.
    let (text, _) = run_text(pane);
    let needed = Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .line_count(right.width.saturating_sub(2)) as u16
        + 3;
    let height = needed.max(9).min(right.height);
    let [run, mix] =
        Layout::vertical([Constraint::Length(height), Constraint::Fill(1)]).areas(right);
    draw_run(frame, run, pane);
    draw_mix(frame, mix, pane);
}

fn draw_list(frame: &mut Frame, area: Rect, pane: &GeneratedPane) {
    let tab = |label: String, on: bool| {
        if on {
            Span::styled(label, Style::new().bold().reversed())
        } else {
            Span::styled(label, Style::new().dim())
        }
    };
    let title = Line::from(vec![
        " ".into(),
        tab(
            format!(" Kept {} ", pane.kept.len()),
            pane.showing == GenList::Kept,
        ),
        " ".into(),
        tab(
            format!(" Rejected {} ", pane.rejected.len()),
            pane.showing == GenList::Rejected,
        ),
        " ".into(),
    ]);
    let block = Block::bordered()
        .title(title)
        .title_bottom(Line::from(" v switch list ".dim()).right_aligned());
    let list = pane.list();
    if list.is_empty() {
        let text = match (&pane.load_error, pane.showing) {
            (Some(e), _) => vec![Line::styled(e.clone(), Style::new().fg(Color::Red))],
            (None, GenList::Kept) => vec![
                Line::from(""),
                Line::from(format!("No kept tasks in {}.", pane.files.kept.display())),
                Line::from(""),
                Line::from(vec![
                    "Press ".into(),
                    "n".bold().fg(Color::Yellow),
                    format!(" to ask {} for {} tasks,", pane.teacher, pane.target).into(),
                ]),
                Line::from("or run `bioinstruct generate --help`."),
            ],
            (None, GenList::Rejected) => vec![Line::from(""), Line::from("Nothing rejected.")],
        };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: false }).block(block),
            area,
        );
        return;
    }
    let rejected = pane.showing == GenList::Rejected;
    let header = Row::new(if rejected {
        vec!["id", "cat", "ROUGE-L", "reason", "instruction"]
    } else {
        vec!["id", "cat", "ROUGE-L", "instruction"]
    })
    .style(Style::new().bold());
    // Only the rows on screen are built: the list may hold the paper's 25,005 tasks.
    let on_screen = area.height.saturating_sub(3) as usize;
    let rows: Vec<Row> = list
        .iter()
        .enumerate()
        .skip(pane.cursor.offset)
        .take(on_screen)
        .map(|(i, r)| {
            let mut cells = vec![
                Cell::from(r.id.clone()),
                Cell::from(Span::styled(
                    r.category.as_str(),
                    Style::new().fg(category_color(r.category)),
                )),
                Cell::from(max_rouge(r).map_or_else(|| "–".to_string(), |m| format!("{m:.2}"))),
            ];
            if rejected {
                cells.push(Cell::from(reason(r)));
            }
            let mark = if r.extra.contains_key("promoted_to") {
                "★ "
            } else {
                ""
            };
            cells.push(Cell::from(format!(
                "{mark}{}",
                r.instruction.replace('\n', " ")
            )));
            let row = Row::new(cells);
            if i == pane.cursor.selected {
                row.style(Style::new().reversed())
            } else {
                row
            }
        })
        .collect();
    let widths: Vec<Constraint> = if rejected {
        vec![
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(22),
            Constraint::Min(10),
        ]
    } else {
        vec![
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Min(10),
        ]
    };
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// The Run box's lines, and the gauge's (kept, target) while a run goes.
fn run_text(pane: &GeneratedPane) -> (Vec<Line<'static>>, Option<(usize, usize)>) {
    let counters = |p: &crate::selfinstruct::run::Progress| {
        vec![
            Line::from(format!(
                "+{} kept · {} rejected · {} garbage",
                p.kept_now, p.rejected_now, p.garbage_now
            )),
            Line::from(format!(
                "{} requests ({} failed, {} in flight)",
                p.requests, p.failed_requests, p.in_flight
            )),
            Line::from(format!(
                "tokens {} in · {} out",
                p.prompt_tokens, p.completion_tokens
            )),
        ]
    };
    let mut lines = vec![Line::from(vec![
        "teacher ".dim(),
        pane.teacher.clone().into(),
        " · target ".dim(),
        pane.target.to_string().into(),
    ])];
    let mut gauge = None;
    match &pane.run {
        RunState::Idle => {
            lines.push(Line::from(vec![
                "n".bold().fg(Color::Yellow),
                " start a run · x stop".into(),
            ]));
        }
        RunState::Starting => lines.push(Line::styled(
            "starting (loading the teacher)…",
            Style::new().fg(Color::Green),
        )),
        RunState::Running(p) => {
            lines.push(Line::styled(
                "running",
                Style::new().fg(Color::Green).bold(),
            ));
            lines.extend(counters(p));
            if let Some(e) = &p.last_error {
                lines.push(Line::styled(
                    format!("last error: {e}"),
                    Style::new().fg(Color::Red),
                ));
            }
            gauge = Some((p.kept, p.target));
        }
        RunState::Ended(how, p) => {
            lines.push(Line::styled(how.clone(), Style::new().fg(Color::Cyan)));
            if let Some(p) = p {
                lines.extend(counters(p));
            }
        }
    }
    (lines, gauge)
}

fn draw_run(frame: &mut Frame, area: Rect, pane: &GeneratedPane) {
    let block = Block::bordered().title(" Run ".bold());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (lines, gauge) = run_text(pane);
    let [text, bar] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    if let Some((kept, target)) = gauge {
        let ratio = (kept as f64 / target.max(1) as f64).clamp(0.0, 1.0);
        frame.render_widget(
            Gauge::default()
                .ratio(ratio)
                .label(format!("{kept}/{target} kept"))
                .gauge_style(Style::new().fg(Color::Green)),
            bar,
        );
    }
}

fn draw_mix(frame: &mut Frame, area: Rect, pane: &GeneratedPane) {
    let block = Block::bordered().title(" Categories: kept vs paper ".bold());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mix = pane.mix();
    let counts = pane.counts();
    // Label (6) + value (7) on each bar line; the rest is the bar.
    let width = inner.width.saturating_sub(14).max(1) as f64;
    let bar = |pct: f64| "█".repeat((pct / 100.0 * width).round() as usize);
    let mut lines = Vec::new();
    for (i, c) in Category::ALL.iter().enumerate() {
        let color = category_color(*c);
        lines.push(Line::from(vec![
            Span::styled(format!("{:<6}", c.as_str()), Style::new().fg(color).bold()),
            Span::styled(bar(mix[i]), Style::new().fg(color)),
            format!(" {:>5.1}% ({})", mix[i], counts[i]).into(),
        ]));
        lines.push(Line::from(vec![
            "paper ".dim(),
            Span::styled(bar(PAPER_MIX[i]), Style::new().fg(color).dim()),
            format!(" {:>5.1}%", PAPER_MIX[i]).dim(),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn similarity_lines(r: &Instruction) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(s) = r.extra.get("similarity") {
        lines.push(Line::from(format!(
            "ROUGE-L max {:.3} · mean {:.3}",
            s.get("max_rouge_l").and_then(|v| v.as_f64()).unwrap_or(0.0),
            s.get("mean_rouge_l")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0)
        )));
    }
    let why = reason(r);
    if !why.is_empty() {
        lines.push(Line::styled(
            format!("rejected: {why}"),
            Style::new().fg(Color::Red),
        ));
    }
    if let Some(p) = r.extra.get("provenance") {
        lines.push(Line::from(
            format!(
                "from {} · request {} · seeds {}",
                p.get("teacher").and_then(|v| v.as_str()).unwrap_or("?"),
                p.get("request").and_then(|v| v.as_u64()).unwrap_or(0),
                p.get("seeds")
                    .and_then(|v| v.as_array())
                    .map(|a| a
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            )
            .dim(),
        ));
    }
    if let Some(d) = r
        .extra
        .get("review")
        .and_then(|v| v.get("decision"))
        .and_then(|v| v.as_str())
    {
        lines.push(Line::from(format!("review: {d}").dim()));
    }
    lines.push(Line::from(""));
    lines
}

fn draw_detail(
    frame: &mut Frame,
    area: Rect,
    pane: &GeneratedPane,
    r: &Instruction,
    seeds: &[Instruction],
) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let mut text = Text::from(similarity_lines(r));
    text.extend(detail_text(r));
    let keys = match pane.showing {
        GenList::Kept => " Esc back · r reject · e edit · p promote · > chat ",
        GenList::Rejected => " Esc back · a accept · e edit · > chat ",
    };
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Line::from(vec![
                    " ".into(),
                    r.id.clone().bold(),
                    " ".into(),
                ]))
                .title_bottom(Line::from(keys.dim()).right_aligned()),
        ),
        left,
    );
    let similar = r
        .extra
        .get("similarity")
        .and_then(|s| s.get("most_similar"))
        .and_then(|m| m.get(0))
        .and_then(|m| {
            Some((
                m.get("id")?.as_str()?.to_string(),
                m.get("rouge_l")?.as_f64()?,
            ))
        });
    let (title, body) = match &similar {
        Some((id, score)) => match pane.find(seeds, id) {
            Some(other) => (
                format!(" most similar: {id} (ROUGE-L {score:.3}) "),
                detail_text(other),
            ),
            None => (
                format!(" most similar: {id} (ROUGE-L {score:.3}) "),
                Text::from("(no longer in the seeds or generated files)"),
            ),
        },
        None => (
            " most similar ".to_string(),
            Text::from("(not compared: a text rule rejected it first)"),
        ),
    };
    frame.render_widget(
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(title)),
        right,
    );
}
