//! Drawing the Seeds pane: the list (with a preview on wide terminals), the detail view and
//! the edit form.

use super::seeds::{SeedsPane, SeedsView};
use super::{category_color, SeedsAreas};
use crate::data::Instruction;
use crate::tui::form::{EditForm, FIELD_LABELS};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// Draws the pane into the layout's body.
pub fn draw(frame: &mut Frame, layout: &SeedsAreas, pane: &SeedsPane) {
    match &pane.view {
        SeedsView::List => {
            draw_list(frame, layout, pane);
            if let (Some(area), Some(r)) = (layout.preview, pane.selected_record()) {
                let block = Block::bordered().title(" Preview ".dim());
                frame.render_widget(
                    Paragraph::new(detail_text(r))
                        .block(block)
                        .wrap(Wrap { trim: false }),
                    area,
                );
            }
        }
        SeedsView::Detail { scroll } => match pane.selected_record() {
            Some(r) => draw_detail(frame, layout.body, r, *scroll),
            None => draw_list(frame, layout, pane),
        },
        SeedsView::Form(form) => draw_form(frame, layout.body, form),
    }
}

fn title(pane: &SeedsPane) -> Line<'static> {
    let name = pane
        .file
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut spans = vec![
        " Seeds ".bold(),
        Span::raw(format!("· {name}{} ", if pane.dirty { " *" } else { "" })),
    ];
    if let Some(c) = pane.filter {
        spans.push(Span::styled(
            format!("[{c}] "),
            Style::new().fg(category_color(c)).bold(),
        ));
    }
    Line::from(spans)
}

fn draw_list(frame: &mut Frame, layout: &SeedsAreas, pane: &SeedsPane) {
    let mut block = Block::bordered().title(title(pane));
    if pane.searching || !pane.search.is_empty() {
        let cursor = if pane.searching { "▏" } else { "" };
        block = block.title_bottom(Line::from(vec![
            " /".bold().fg(Color::Yellow),
            Span::raw(format!("{}{cursor} ", pane.search)),
        ]));
    }
    block = block.title_bottom(
        Line::from(format!(
            " {}/{} ",
            pane.visible.len(),
            pane.file.records.len()
        ))
        .right_aligned(),
    );
    let inner = layout.list_inner;
    frame.render_widget(block, layout.list);
    if pane.visible.is_empty() {
        let text = if pane.file.records.is_empty() {
            "No records yet. Press a to add one."
        } else {
            "Nothing matches. Esc clears the search, f changes the filter."
        };
        frame.render_widget(
            Paragraph::new(text.dim()).alignment(Alignment::Center),
            inner,
        );
        return;
    }
    let id_width = pane
        .visible
        .iter()
        .map(|&i| pane.file.records[i].id.chars().count())
        .max()
        .unwrap_or(8);
    let lines: Vec<Line> = pane
        .visible
        .iter()
        .enumerate()
        .skip(pane.cursor.offset)
        .take(inner.height as usize)
        .map(|(pos, &i)| {
            let r = &pane.file.records[i];
            let first = r.instruction.lines().next().unwrap_or("");
            let line = Line::from(vec![
                Span::raw(format!("{:id_width$} ", r.id)),
                Span::styled(
                    format!("{:<6}", r.category.as_str()),
                    Style::new().fg(category_color(r.category)),
                ),
                Span::raw(first.to_string()),
                // Many seeds of one family share an instruction: the input tells them apart.
                Span::styled(
                    format!("  {}", r.input.lines().next().unwrap_or("")),
                    Style::new().dim(),
                ),
            ]);
            if pos == pane.cursor.selected {
                line.style(Style::new().reversed().bold())
            } else {
                line
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The full text of a record, as the detail view and preview show it.
pub fn detail_text(r: &Instruction) -> Text<'static> {
    let heading = |s: &'static str| Line::from(s.bold().fg(Color::Yellow));
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                r.category.as_str(),
                Style::new().fg(category_color(r.category)).bold(),
            ),
            Span::raw(format!(" · {}", r.task)),
        ]),
        Line::from(""),
        heading("Instruction"),
    ];
    lines.extend(r.instruction.lines().map(|l| Line::from(l.to_string())));
    lines.push(Line::from(""));
    lines.push(heading("Input"));
    if r.input.is_empty() {
        lines.push(Line::from("(none)".dim()));
    } else {
        lines.extend(r.input.lines().map(|l| Line::from(l.to_string())));
    }
    lines.push(Line::from(""));
    lines.push(heading("Output"));
    lines.extend(r.output.lines().map(|l| Line::from(l.to_string())));
    Text::from(lines)
}

/// How many wrapped lines the detail view of `r` takes in `area` (inside its border).
pub fn detail_line_count(r: &Instruction, area: Rect) -> usize {
    Paragraph::new(detail_text(r))
        .wrap(Wrap { trim: false })
        .line_count(area.width.saturating_sub(2))
}

fn draw_detail(frame: &mut Frame, area: Rect, r: &Instruction, scroll: u16) {
    let block = Block::bordered()
        .title(Line::from(vec![
            " ".into(),
            r.id.clone().bold(),
            " ".into(),
        ]))
        .title_bottom(Line::from(" Esc back · e edit · E $EDITOR ".dim()).right_aligned());
    frame.render_widget(
        Paragraph::new(detail_text(r))
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        area,
    );
}

fn field_block(label: &str, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Yellow).bold()
    } else {
        Style::new().dim()
    };
    Block::bordered()
        .title(format!(" {label} "))
        .border_style(style)
}

fn draw_form(frame: &mut Frame, area: Rect, form: &EditForm) {
    let [header, task, instruction, input, output, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Fill(2),
        Constraint::Fill(3),
        Constraint::Fill(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut spans = vec![" ".into(), form.id.clone().bold(), "  category: ".into()];
    for c in crate::data::Category::ALL {
        let style = if c == form.category {
            Style::new().fg(category_color(c)).bold().reversed()
        } else {
            Style::new().fg(category_color(c))
        };
        spans.push(Span::styled(format!(" {c} "), style));
    }
    if form.focus == 0 {
        spans.push("  ←→ change".fg(Color::Yellow));
    }
    frame.render_widget(Line::from(spans), header);
    for (i, rect) in [task, instruction, input, output].into_iter().enumerate() {
        let mut area_widget = form.fields[i].clone();
        area_widget.set_block(field_block(FIELD_LABELS[i], form.focus == i + 1));
        if form.focus != i + 1 {
            area_widget.set_cursor_style(Style::new());
        }
        frame.render_widget(&area_widget, rect);
    }
    let footer_line = match &form.error {
        Some(e) => Line::styled(format!(" {e}"), Style::new().fg(Color::Red).bold()),
        None => Line::from(" Tab next field · Ctrl-s apply · Esc discard".dim()),
    };
    frame.render_widget(footer_line, footer);
}
