//! Where everything goes on screen, and the tabs: shared by the app (page sizes, clicks)
//! and the frame ([`super::ui`]) without either importing the other.

use ratatui::layout::{Constraint, Layout, Position, Rect};

/// The title at the left of the tab bar.
pub const TITLE: &str = " bioinstruct ";

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    /// The seed tasks.
    #[default]
    Seeds,
    /// Training runs.
    Train,
    /// Base and tuned model side by side.
    Chat,
    /// Evaluations: base against tuned, per task and group; the experiments.
    Eval,
    /// Generated tasks and their review.
    Generated,
}

impl Tab {
    /// Every tab, in order.
    pub const ALL: [Tab; 5] = [Tab::Seeds, Tab::Train, Tab::Chat, Tab::Eval, Tab::Generated];

    /// The name on the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Seeds => "Seeds",
            Tab::Train => "Train",
            Tab::Chat => "Chat",
            Tab::Eval => "Eval",
            Tab::Generated => "Generated",
        }
    }

    /// The tab `by` places on (wrapping around both ways).
    pub fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        let at = Tab::ALL.iter().position(|&t| t == self).unwrap_or(0) as isize;
        Tab::ALL[(at + by).rem_euclid(n) as usize]
    }
}

/// Where everything goes on screen: decided by [`super::ui::draw`] and handed back to the app, which
/// sizes pages and hit-tests clicks with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppLayout {
    /// The tab bar (one row).
    pub tabs: Rect,
    /// The active pane.
    pub body: Rect,
    /// Counts and flags (one row).
    pub status: Rect,
    /// Messages or key hints (one row).
    pub hints: Rect,
    /// The list block (List view); equals `body` in other views.
    pub list: Rect,
    /// Rows of the list inside its border.
    pub list_inner: Rect,
    /// The preview beside the list on wide terminals.
    pub preview: Option<Rect>,
}

impl AppLayout {
    /// The tab under `at`, if any.
    pub fn tab_at(&self, at: Position) -> Option<Tab> {
        if at.y != self.tabs.y {
            return None;
        }
        let mut x = self.tabs.x + TITLE.len() as u16;
        for tab in Tab::ALL {
            let width = tab.title().len() as u16 + 2;
            if (x..x + width).contains(&at.x) {
                return Some(tab);
            }
            x += width + 1;
        }
        None
    }
}

/// Splits `area`: tab bar, pane, status row, hint row; in the pane, the seed list and its
/// preview when `seeds_list_view` (the Seeds pane shows its list).
pub fn app_layout(area: Rect, seeds_list_view: bool) -> AppLayout {
    let [tabs, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let seeds = super::panes::SeedsAreas::of(body, seeds_list_view);
    AppLayout {
        tabs,
        body,
        status,
        hints,
        list: seeds.list,
        list_inner: seeds.list_inner,
        preview: seeds.preview,
    }
}
