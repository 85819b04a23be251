//! Drawing the Train pane: the runs table, the selected run's live view (loss chart with
//! validation loss, learning rate, grad-norm sparkline, progress gauge, speed, memory, log
//! tail), and the new-run form.

use super::train::{downsample, RunEntry, RunForm, TrainPane};
use crate::train::run::Metric;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, Gauge, GraphType, Paragraph, Row, Sparkline, Table,
};
use ratatui::Frame;

/// The colour of a run state.
fn state_color(label: &str) -> Color {
    match label {
        "running" | "queued" | "stopping" => Color::Green,
        "finished" => Color::Cyan,
        "stopped" => Color::Yellow,
        _ => Color::Red,
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn step_fields(run: &RunEntry) -> Option<(f64, f64, f64, u64)> {
    match run.last_step()? {
        Metric::Step {
            loss,
            tokens_per_s,
            eta_s,
            mem_bytes,
            ..
        } => Some((*loss, *tokens_per_s, *eta_s, *mem_bytes)),
        Metric::Eval { .. } => None,
    }
}

/// `v` with no decimals, or `-` for a value the trainer did not record (NaN).
fn whole(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

/// [`duration`], or `-` for an unknown time.
fn eta_text(seconds: f64) -> String {
    if seconds.is_finite() {
        duration(seconds)
    } else {
        "-".into()
    }
}

/// Draws the pane into `area`.
pub fn draw(frame: &mut Frame, area: Rect, pane: &TrainPane) {
    if let Some(form) = &pane.watch_form {
        let block = Block::bordered()
            .title(" Follow another trainer's run (Enter follows it, Esc cancels) ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let mut lines = field_lines(form);
        lines.push(Line::from(""));
        lines.extend(
            [
                "A Hugging Face Trainer or axolotl output_dir (trainer_state.json in it or in",
                "its checkpoint-N/), or a LLaMA-Factory output_dir (trainer_log.jsonl).",
                "It is read, never written: stop and resume it with its own tool.",
            ]
            .map(|t| Line::from(t).dim()),
        );
        frame.render_widget(
            Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }),
            inner,
        );
        return;
    }
    if let Some(form) = &pane.form {
        draw_form(frame, area, form, pane.launching);
        return;
    }
    if pane.runs.is_empty() {
        let text = vec![
            Line::from(""),
            Line::from(format!("No runs in {} yet.", pane.root.display())),
            Line::from(""),
            Line::from(vec![
                Span::styled("n", Style::new().bold().fg(Color::Yellow)),
                " starts one here; `bioinstruct train --config FILE --detach` from a shell does too."
                    .into(),
            ]),
        ];
        frame.render_widget(
            Paragraph::new(text)
                .centered()
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(Block::bordered().title(" Runs ")),
            area,
        );
        return;
    }
    let table_rows = (pane.runs.len() as u16 + 3).min(8).min(area.height / 3 + 2);
    let [table, detail] =
        Layout::vertical([Constraint::Length(table_rows), Constraint::Min(0)]).areas(area);
    draw_table(frame, table, pane);
    if let Some(run) = pane.selected() {
        draw_run(frame, detail, run);
    }
}

fn draw_table(frame: &mut Frame, area: Rect, pane: &TrainPane) {
    let header =
        Row::new(["run", "state", "step", "loss", "tokens/s", "ETA"]).style(Style::new().bold());
    let rows: Vec<Row> = pane
        .runs
        .iter()
        .map(|r| {
            let label = r.state_label();
            let (loss, tps, eta) = match step_fields(r) {
                Some((loss, tps, eta, _)) => (
                    format!("{loss:.4}"),
                    whole(tps),
                    if r.is_active() {
                        eta_text(eta)
                    } else {
                        "-".into()
                    },
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            Row::new(vec![
                Cell::from(r.id.clone()),
                Cell::from(Span::styled(
                    label.clone(),
                    Style::new().fg(state_color(&label)),
                )),
                Cell::from(format!("{}/{}", r.status.step, r.status.total_steps)),
                Cell::from(loss),
                Cell::from(tps),
                Cell::from(eta),
            ])
        })
        .collect();
    let visible = area.height.saturating_sub(3) as usize;
    let skip = pane
        .cursor
        .selected
        .saturating_sub(visible.saturating_sub(1));
    let mut state =
        ratatui::widgets::TableState::default().with_selected(Some(pane.cursor.selected - skip));
    let table = Table::new(
        rows.into_iter().skip(skip),
        [
            Constraint::Min(16),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(header)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(Block::bordered().title(format!(" Runs ({}) ", pane.runs.len())));
    frame.render_stateful_widget(table, area, &mut state);
}

/// Axis labels: the bounds and their middle.
fn labels(lo: f64, hi: f64, precision: usize) -> Vec<Line<'static>> {
    [lo, (lo + hi) / 2.0, hi]
        .iter()
        .map(|v| Line::from(format!("{v:.precision$}")))
        .collect()
}

fn bounds(points: &[(f64, f64)]) -> (f64, f64) {
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    ((lo - pad).max(floor), hi + pad)
}

fn draw_run(frame: &mut Frame, area: Rect, run: &RunEntry) {
    let label = run.state_label();
    let mut title = vec![
        format!(" {} ", run.id).bold(),
        Span::styled(format!("{label} "), Style::new().fg(state_color(&label))),
    ];
    if let Some(f) = run.foreign {
        title.push(Span::from(format!("· {} (read-only) ", f.label())).dim());
    }
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 4 {
        return;
    }
    let log_rows = (inner.height / 4).clamp(2, 8);
    let [gauge, charts, log] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(log_rows),
    ])
    .areas(inner);

    let s = &run.status;
    let ratio = if s.total_steps == 0 {
        0.0
    } else {
        (s.step as f64 / s.total_steps as f64).clamp(0.0, 1.0)
    };
    let mut text = format!("step {}/{}", s.step, s.total_steps);
    if let Some((_, tps, eta, mem)) = step_fields(run) {
        if run.is_active() && eta.is_finite() {
            text.push_str(&format!(" · ETA {}", duration(eta)));
        }
        if tps.is_finite() {
            text.push_str(&format!(" · {tps:.0} tokens/s"));
        }
        if mem > 0 {
            text.push_str(&format!(" · {:.2} GB", mem as f64 / 1e9));
        }
    }
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(text)
            .gauge_style(Style::new().fg(state_color(&label))),
        gauge,
    );

    let (loss_area, side) = if charts.width >= 90 {
        let [l, r] = Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)])
            .areas(charts);
        (l, Some(r))
    } else {
        (charts, None)
    };
    draw_loss_chart(frame, loss_area, run);
    if let Some(side) = side {
        let [lr, grad] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(side);
        draw_lr_chart(frame, lr, run);
        draw_grad_norm(frame, grad, run);
    }

    let mut lines: Vec<Line> = Vec::new();
    if let Some(e) = &s.error {
        lines.push(Line::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    // One row is the block's top border.
    let room = (log.height as usize).saturating_sub(1 + lines.len());
    let skip = run.log.len().saturating_sub(room);
    lines.extend(
        run.log
            .iter()
            .skip(skip)
            .map(|l| Line::from(l.clone()).dim()),
    );
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title(" train.log ")),
        log,
    );
}

/// The weight on the past of the smoothed train-loss line (TensorBoard's default).
const SMOOTHING: f64 = 0.6;

fn draw_loss_chart(frame: &mut Frame, area: Rect, run: &RunEntry) {
    let width = area.width.saturating_sub(10).max(2) as usize * 2;
    let train = downsample(&run.losses(), width);
    let smoothed = downsample(&run.smoothed_losses(SMOOTHING), width);
    let val = run.val_losses();
    if train.is_empty() && val.is_empty() {
        frame.render_widget(
            Paragraph::new("waiting for the first step…")
                .centered()
                .block(Block::bordered().title(" loss ")),
            area,
        );
        return;
    }
    let all: Vec<(f64, f64)> = train.iter().chain(val.iter()).copied().collect();
    let (lo, hi) = bounds(&all);
    let max_step = (run.status.total_steps.max(run.status.step) as f64).max(1.0);
    let datasets = vec![
        Dataset::default()
            .name("train")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::DarkGray))
            .data(&train),
        Dataset::default()
            .name("train, smoothed")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&smoothed),
        Dataset::default()
            .name("validation")
            .marker(Marker::Dot)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Yellow))
            .data(&val),
    ];
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(" loss "))
        .x_axis(
            Axis::default()
                .title("step")
                .bounds([0.0, max_step])
                .labels(labels(0.0, max_step, 0)),
        )
        .y_axis(
            Axis::default()
                .title("loss")
                .bounds([lo, hi])
                .labels(labels(lo, hi, 2)),
        );
    frame.render_widget(chart, area);
}

fn draw_lr_chart(frame: &mut Frame, area: Rect, run: &RunEntry) {
    let lr = downsample(
        &run.series(|m| match m {
            Metric::Step { lr, .. } => Some(*lr),
            Metric::Eval { .. } => None,
        }),
        area.width as usize * 2,
    );
    let hi = lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
    let max_step = (run.status.total_steps as f64).max(1.0);
    let chart = Chart::new(vec![Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(Color::Magenta))
        .data(&lr)])
    .block(Block::bordered().title(" learning rate "))
    .x_axis(Axis::default().bounds([0.0, max_step]))
    .y_axis(
        Axis::default()
            .bounds([0.0, hi])
            .labels([Line::from("0"), Line::from(format!("{hi:.0e}"))]),
    );
    frame.render_widget(chart, area);
}

fn draw_grad_norm(frame: &mut Frame, area: Rect, run: &RunEntry) {
    let norms = run.series(|m| match m {
        Metric::Step { grad_norm, .. } => Some(*grad_norm),
        Metric::Eval { .. } => None,
    });
    let last = norms.last().map_or(0.0, |p| p.1);
    let room = area.width.saturating_sub(2) as usize;
    let shown = &norms[norms.len().saturating_sub(room)..];
    let data: Vec<u64> = shown.iter().map(|p| (p.1 * 1000.0) as u64).collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" grad norm {last:.3} ")))
            .style(Style::new().fg(Color::Green))
            .data(&data),
        area,
    );
}

fn draw_form(frame: &mut Frame, area: Rect, form: &RunForm, launching: bool) {
    let title = if launching {
        " New run: checking and starting… "
    } else {
        " New run (Enter starts it in the background, Esc cancels) "
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines = field_lines(&form.inputs);
    lines.push(Line::from(""));
    lines.push(
        Line::from("Other settings come from the defaults (configs/smollm2-135m-cpu.toml).").dim(),
    );
    frame.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }),
        inner,
    );
}

/// A form's fields as lines: each name right-aligned, the focused value reversed with a
/// cursor, and why a value is refused (✗) after it. Shared by the Train pane's new-run form
/// and the Eval pane's new-evaluation form.
pub fn field_lines(inputs: &super::fields::FieldForm) -> Vec<Line<'static>> {
    let label_width = inputs
        .fields
        .iter()
        .map(|f| f.key.len())
        .max()
        .unwrap_or(10)
        + 1;
    let mut lines = Vec::new();
    for (i, f) in inputs.fields.iter().enumerate() {
        let focused = i == inputs.focus;
        let value_style = if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::styled(
                format!("{:>label_width$} ", f.key),
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(
                if focused {
                    format!("{}▏", f.value)
                } else {
                    f.value.clone()
                },
                value_style,
            ),
        ];
        if let Some(e) = &f.error {
            spans.push(Span::styled(
                format!("  ✗ {e}"),
                Style::new().fg(Color::Red).bold(),
            ));
        }
        lines.push(Line::from(spans));
    }
    lines
}
