//! Drawing the Eval pane: the evaluations and the selected one's table and bar chart, a
//! running evaluation's progress, a task's items, the experiments' heat maps, the form.

use super::eval::{EvalEntry, EvalForm, EvalPane, EvalView, ExperimentEntry};
use super::train_view::duration;
use crate::eval::report::{Delta, Report};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, Cell, Clear, Gauge, Paragraph, Row, Table, Wrap,
};
use ratatui::Frame;

/// Draws the pane into `area`.
pub fn draw(frame: &mut Frame, area: Rect, pane: &EvalPane) {
    match &pane.view {
        EvalView::Items(_) => draw_items(frame, area, pane),
        EvalView::Matrix => draw_matrix(frame, area, pane),
        EvalView::List | EvalView::Report { .. } => draw_list_and_report(frame, area, pane),
    }
    if let Some(form) = &pane.form {
        let w = area.width.saturating_sub(4).min(96);
        let h = 10.min(area.height);
        let popup = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        frame.render_widget(Clear, popup);
        draw_form(frame, popup, form, pane.launching);
    }
}

fn state_color(label: &str) -> Color {
    match label {
        "running" | "queued" => Color::Cyan,
        "finished" => Color::Green,
        "failed" | "interrupted" => Color::Red,
        _ => Color::Yellow,
    }
}

/// A difference from the base: sign-coloured, bold with `*` where the interval excludes 0.
fn delta_span(d: &Delta) -> Span<'static> {
    let significant = d.ci95[0] > 0.0 || d.ci95[1] < 0.0;
    let color = if d.diff > 0.0 {
        Color::Green
    } else if d.diff < 0.0 {
        Color::Red
    } else {
        Color::Gray
    };
    let text = format!("{:+.3}{}", d.diff, if significant { "*" } else { " " });
    let style = Style::new().fg(color);
    Span::styled(
        text,
        if significant {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        },
    )
}

fn draw_list_and_report(frame: &mut Frame, area: Rect, pane: &EvalPane) {
    let list_rows = (pane.evals.len() as u16 + 3).clamp(4, (area.height / 3).max(4));
    let [list, rest] =
        Layout::vertical([Constraint::Length(list_rows), Constraint::Min(3)]).areas(area);
    let header =
        Row::new(["evaluation", "state", "items", "tasks", "models"]).style(Style::new().bold());
    let rows: Vec<Row> = pane
        .evals
        .iter()
        .map(|e| {
            let label = e.state_label();
            let items = e
                .status
                .as_ref()
                .map(|s| format!("{}/{}", s.done, s.total))
                .or_else(|| {
                    e.report
                        .as_ref()
                        .map(|r| r.tasks.values().map(|t| t.n).sum::<usize>().to_string())
                })
                .unwrap_or_default();
            let tasks = match (&e.report, &e.job) {
                (Some(r), _) => r.tasks.keys().cloned().collect::<Vec<_>>().join(","),
                (None, Some(j)) => j.tasks.join(","),
                _ => String::new(),
            };
            let models = e
                .report
                .as_ref()
                .map(|r| r.models.len())
                .or_else(|| e.job.as_ref().map(|j| j.adapters.len() + 1))
                .unwrap_or(0);
            Row::new([
                Cell::from(e.id.clone()),
                Cell::from(label.clone()).style(Style::new().fg(state_color(&label))),
                Cell::from(items),
                Cell::from(tasks),
                Cell::from(models.to_string()),
            ])
        })
        .collect();
    let mut state =
        ratatui::widgets::TableState::default().with_selected(Some(pane.cursor.selected));
    let title = format!(
        " Evaluations ({}) · n new · Enter report · m experiments ",
        pane.evals.len()
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Min(10),
            Constraint::Length(6),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, list, &mut state);
    let Some(entry) = pane.selected() else {
        frame.render_widget(
            Paragraph::new("No evaluation yet. Press n to start one in the background (it goes on after you quit), or run `bioinstruct eval run` in a shell.")
                .wrap(Wrap { trim: true })
                .block(Block::bordered()),
            rest,
        );
        return;
    };
    let mut rest = rest;
    let show_progress = entry
        .status
        .as_ref()
        .is_some_and(|s| entry.report.is_none() || s.active());
    if show_progress {
        let [p, r] = Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(rest);
        draw_progress(frame, p, entry);
        rest = r;
    }
    if let Some(report) = &entry.report {
        let selected = match pane.view {
            EvalView::Report { row } => Some(row),
            _ => None,
        };
        draw_report(frame, rest, report, &pane.task_rows(), selected, &entry.id);
    } else if rest.height > 0 {
        let log = entry
            .status
            .as_ref()
            .and_then(|s| s.error.clone())
            .unwrap_or_else(|| "The report appears here when every item is scored.".into());
        frame.render_widget(
            Paragraph::new(log)
                .wrap(Wrap { trim: true })
                .block(Block::bordered()),
            rest,
        );
    }
}

fn draw_progress(frame: &mut Frame, area: Rect, entry: &EvalEntry) {
    let Some(s) = &entry.status else { return };
    let label = entry.state_label();
    let ratio = if s.total > 0 {
        s.done as f64 / s.total as f64
    } else {
        0.0
    };
    let mut text = format!("{}/{} items", s.done, s.total);
    if s.items_per_s > 0.0 {
        text.push_str(&format!(" · {:.2} items/s", s.items_per_s));
    }
    if entry.is_active() && s.eta_s > 0.0 {
        text.push_str(&format!(" · ETA {}", duration(s.eta_s)));
    }
    if s.cached > 0 {
        text.push_str(&format!(" · {} from the cache", s.cached));
    }
    let block = Block::bordered().title(Line::from(vec![
        Span::raw(format!(" {} ", entry.id)),
        Span::styled(format!("{label} "), Style::new().fg(state_color(&label))),
    ]));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [g, c] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
    frame.render_widget(
        Gauge::default()
            .ratio(ratio.clamp(0.0, 1.0))
            .label(text)
            .gauge_style(Style::new().fg(Color::Cyan)),
        g,
    );
    let hint = match (entry.is_active(), &s.current) {
        (true, Some(c)) => format!("now: {c} · x stops (finished items are kept)"),
        (true, None) => "x stops (finished items are kept)".into(),
        (false, _) if label != "finished" => {
            "r continues: only the missing items are computed".into()
        }
        _ => String::new(),
    };
    frame.render_widget(Paragraph::new(hint).dim(), c);
}

/// The table: a row per group (its score) and per task (its primary metric), a column per
/// model, each tuned model's difference from the base beside it.
fn draw_report(
    frame: &mut Frame,
    area: Rect,
    report: &Report,
    rows: &[(String, Option<String>)],
    selected: Option<usize>,
    id: &str,
) {
    if area.height < 3 {
        return;
    }
    let chart_height = if area.height >= 18 {
        (area.height / 3).min(10)
    } else {
        0
    };
    let [table_area, chart_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(chart_height)]).areas(area);
    let models: Vec<String> = report.models.iter().map(|m| m.label.clone()).collect();
    let mut header = vec![
        Cell::from("task / group"),
        Cell::from("metric"),
        Cell::from("base"),
    ];
    let mut widths = vec![
        Constraint::Length(16),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    for m in models.iter().skip(1) {
        let short: String = m
            .chars()
            .rev()
            .take(14)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        header.push(Cell::from(short));
        header.push(Cell::from("Δ base"));
        widths.push(Constraint::Length(14));
        widths.push(Constraint::Length(8));
    }
    let mut table_rows = Vec::new();
    for (group, task) in rows {
        let (name, metric, values, deltas) = match task {
            None => {
                let g = &report.groups[group];
                (
                    format!("{group} (group)"),
                    "score".to_string(),
                    g.models.clone(),
                    g.vs_base.clone(),
                )
            }
            Some(t) => {
                let tr = &report.tasks[t];
                (
                    format!("  {t}"),
                    tr.primary.clone(),
                    tr.models.clone(),
                    tr.vs_base.clone(),
                )
            }
        };
        let value = |label: &str| {
            values
                .get(label)
                .and_then(|m| m.get(&metric))
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        };
        let mut cells = vec![
            Cell::from(name),
            Cell::from(metric.clone()),
            Cell::from(value("base")),
        ];
        for m in models.iter().skip(1) {
            cells.push(Cell::from(value(m)));
            cells.push(match deltas.get(m).and_then(|d| d.get(&metric)) {
                Some(d) => Cell::from(Line::from(delta_span(d))),
                None => Cell::from("-"),
            });
        }
        let style = if task.is_none() {
            Style::new().bold()
        } else {
            Style::new()
        };
        table_rows.push(Row::new(cells).style(style));
    }
    let n: usize = report.tasks.values().map(|t| t.n).max().unwrap_or(0);
    let title = match selected {
        Some(_) => format!(" {id}: Enter a task's items · Esc back · * 95% interval excludes 0 "),
        None => {
            format!(" {id}: up to {n} items a task · Enter to pick a task · * 95% CI excludes 0 ")
        }
    };
    let mut state = ratatui::widgets::TableState::default().with_selected(selected);
    frame.render_stateful_widget(
        Table::new(table_rows, widths)
            .header(Row::new(header).style(Style::new().fg(Color::Yellow)))
            .block(Block::bordered().title(title))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        table_area,
        &mut state,
    );
    if chart_height > 0 {
        draw_bars(frame, chart_area, report, &models);
    }
}

/// A bar per model in each task group (its score, in thousandths).
fn draw_bars(frame: &mut Frame, area: Rect, report: &Report, models: &[String]) {
    let colors = [
        Color::Gray,
        Color::Cyan,
        Color::Magenta,
        Color::Yellow,
        Color::Green,
    ];
    let mut chart = BarChart::default()
        .block(Block::bordered().title(" group scores (bars: base, then each adapter) "))
        .bar_width(5)
        .bar_gap(1)
        .group_gap(3)
        .max(1000);
    let order = ["qa", "ie", "gen", "other"];
    let mut groups: Vec<&String> = report.groups.keys().collect();
    groups.sort_by_key(|g| order.iter().position(|o| o == g).unwrap_or(order.len()));
    for g in groups {
        let bars: Vec<Bar> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let v = report.groups[g]
                    .models
                    .get(m)
                    .and_then(|x| x.get("score"))
                    .copied()
                    .unwrap_or(0.0);
                Bar::default()
                    .value((v * 1000.0).round().max(0.0) as u64)
                    .text_value(format!("{v:.2}"))
                    .style(Style::new().fg(colors[i % colors.len()]))
            })
            .collect();
        chart = chart.data(
            BarGroup::default()
                .label(Line::from(g.as_str()))
                .bars(&bars),
        );
    }
    frame.render_widget(chart, area);
}

fn mark(score: f64) -> Span<'static> {
    if score >= super::eval::RIGHT_AT {
        Span::styled("✓", Style::new().fg(Color::Green))
    } else {
        Span::styled("✗", Style::new().fg(Color::Red))
    }
}

fn draw_items(frame: &mut Frame, area: Rect, pane: &EvalPane) {
    let EvalView::Items(d) = &pane.view else {
        return;
    };
    let shown = d.shown();
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let title = format!(
        " {} · {} vs base · {} ({}) · f filter · t next adapter · > chat · Esc back ",
        d.task,
        d.tuned,
        d.filter.label(),
        shown.len()
    );
    let body = match &d.items {
        None => {
            frame.render_widget(
                Paragraph::new("Reading the predictions…").block(Block::bordered().title(title)),
                list,
            );
            return;
        }
        Some(Err(e)) => {
            frame.render_widget(
                Paragraph::new(e.clone())
                    .wrap(Wrap { trim: true })
                    .block(Block::bordered().title(title)),
                list,
            );
            return;
        }
        Some(Ok(_)) => shown,
    };
    let rows: Vec<Row> = body
        .iter()
        .map(|i| {
            Row::new([
                Cell::from(i.id.clone()),
                Cell::from(Line::from(mark(i.base_score))),
                Cell::from(Line::from(mark(i.tuned_score))),
                Cell::from(i.reference.replace('\n', " ")),
            ])
        })
        .collect();
    let mut state = ratatui::widgets::TableState::default().with_selected(Some(d.cursor.selected));
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Length(6),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(["item", "base", "tuned", "reference"]).style(Style::new().fg(Color::Yellow)),
        )
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        list,
        &mut state,
    );
    let Some(item) = body.get(d.cursor.selected) else {
        frame.render_widget(
            Paragraph::new("No item passes this filter.").block(Block::bordered()),
            detail,
        );
        return;
    };
    let label = |s: &str| Span::styled(format!("{s}: "), Style::new().fg(Color::Yellow));
    let lines = vec![
        Line::from(vec![label("reference"), Span::raw(item.reference.clone())]),
        Line::from(vec![
            label("base"),
            mark(item.base_score),
            Span::raw(format!(" {:.2} ", item.base_score)),
            Span::raw(item.base.clone()),
        ]),
        Line::from(vec![
            label("tuned"),
            mark(item.tuned_score),
            Span::raw(format!(" {:.2} ", item.tuned_score)),
            Span::raw(item.tuned.clone()),
        ]),
        Line::from(vec![label("asked"), Span::raw(item.instruction.clone())]),
        Line::from(item.input.replace('\n', " ")).dim(),
    ];
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(" item {} ", item.id))),
        detail,
    );
}

/// A heat-map colour for a difference: green up, red down, brighter the larger against
/// `scale` (the largest difference shown).
fn heat(diff: f64, scale: f64) -> Color {
    let t = if scale > 0.0 {
        (diff.abs() / scale).min(1.0)
    } else {
        0.0
    };
    let level = (60.0 + 160.0 * t) as u8;
    if diff > 0.0 {
        Color::Rgb(20, level, 40)
    } else if diff < 0.0 {
        Color::Rgb(level, 20, 30)
    } else {
        Color::Rgb(60, 60, 60)
    }
}

fn draw_matrix(frame: &mut Frame, area: Rect, pane: &EvalPane) {
    let list_rows = (pane.experiments.len() as u16 + 2).clamp(3, 6);
    let [list, rest] =
        Layout::vertical([Constraint::Length(list_rows), Constraint::Min(3)]).areas(area);
    let rows: Vec<Row> = pane
        .experiments
        .iter()
        .map(|e| {
            let (state, cells) = match &e.status {
                Some(s) => (
                    format!("{:?}", s.state).to_lowercase(),
                    format!("{}/{} cells", s.cells_done, s.cells),
                ),
                None => ("-".into(), String::new()),
            };
            Row::new([e.id.clone(), state, cells])
        })
        .collect();
    let mut state = ratatui::widgets::TableState::default()
        .with_selected(Some(pane.experiment_cursor.selected));
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Length(24),
                Constraint::Length(10),
                Constraint::Min(8),
            ],
        )
        .block(Block::bordered().title(" Experiments · m back to the evaluations "))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        list,
        &mut state,
    );
    let Some(e) = pane.experiments.get(pane.experiment_cursor.selected) else {
        return;
    };
    draw_heat_map(frame, rest, e);
}

fn draw_heat_map(frame: &mut Frame, area: Rect, e: &ExperimentEntry) {
    let Some(m) = &e.matrix else {
        frame.render_widget(
            Paragraph::new("The matrix appears when every cell is evaluated (`bioinstruct experiment show` prints the cells so far).")
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(format!(" {} ", e.id))),
            area,
        );
        return;
    };
    let scale = m
        .rows
        .iter()
        .flat_map(|(_, r)| r.values().map(|c| c.vs_base.diff.abs()))
        .fold(0.0, f64::max);
    let mut header = vec![Cell::from("subset"), Cell::from("tokens")];
    let mut widths = vec![Constraint::Length(14), Constraint::Length(7)];
    for g in &m.groups {
        header.push(Cell::from(format!(
            "{g} (base {:.3})",
            m.base.get(g).copied().unwrap_or(0.0)
        )));
        widths.push(Constraint::Length(16));
    }
    let rows: Vec<Row> = m
        .rows
        .iter()
        .map(|(subset, row)| {
            let mut cells = vec![
                Cell::from(subset.clone()),
                Cell::from(m.tokens.get(subset).copied().unwrap_or(0).to_string()),
            ];
            for g in &m.groups {
                cells.push(match row.get(g) {
                    Some(c) => {
                        let span = delta_span(&c.vs_base);
                        Cell::from(Line::from(vec![
                            Span::raw(format!("{:.3} ", c.score)),
                            span.fg(Color::White),
                        ]))
                        .style(Style::new().bg(heat(c.vs_base.diff, scale)))
                    }
                    None => Cell::from("-"),
                });
            }
            Row::new(cells)
        })
        .collect();
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().fg(Color::Yellow)))
            .block(Block::bordered().title(format!(
                " {}: score and Δ base per task group · green up, red down · * 95% CI excludes 0 ",
                e.id
            ))),
        area,
    );
}

fn draw_form(frame: &mut Frame, area: Rect, form: &EvalForm, launching: bool) {
    let title = if launching {
        " New evaluation: checking and starting… "
    } else {
        " New evaluation (Enter starts it in the background, Esc cancels) "
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = super::train_view::field_lines(&form.inputs);
    lines.push(Line::from(""));
    lines.push(Line::from("data: TASK=PATH, comma-separated (empty: the official test splits); adapters: run ids or folders.").dim());
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
