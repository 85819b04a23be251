//! The selection in a list pane (the Seeds, Generated and Train lists): which row is
//! selected, which is the first on screen, and the moves a person makes.

/// The selected row of a list and the first row on screen, both as positions in the list
/// shown (not in the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListSelection {
    /// The selected row.
    pub selected: usize,
    /// The first row on screen.
    pub offset: usize,
}

impl ListSelection {
    /// Moves the selection by `delta` rows (`isize::MIN / 2` and `isize::MAX / 2` reach the
    /// ends), within a list of `len` rows.
    pub fn move_by(&mut self, delta: isize, len: usize) {
        self.selected = self
            .selected
            .saturating_add_signed(delta)
            .min(len.saturating_sub(1));
    }

    /// Keeps the selection inside a list that now has `len` rows.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// Moves the first row on screen so that the selection is among the `rows` rows shown,
    /// and no further down than a list of `len` rows needs.
    pub fn scroll_into_view(&mut self, rows: usize, len: usize) {
        let rows = rows.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(len.saturating_sub(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_stay_in_the_list_and_the_selection_stays_on_screen() {
        let mut s = ListSelection::default();
        s.move_by(-3, 10);
        assert_eq!(s.selected, 0);
        s.move_by(isize::MAX / 2, 10);
        assert_eq!(s.selected, 9);
        s.scroll_into_view(4, 10);
        assert_eq!(s.offset, 6);
        s.move_by(-8, 10);
        s.scroll_into_view(4, 10);
        assert_eq!((s.selected, s.offset), (1, 1));
        s.move_by(1, 0);
        assert_eq!(s.selected, 0, "an empty list selects its first row");
        s.selected = 7;
        s.clamp(3);
        assert_eq!(s.selected, 2);
        s.offset = 5;
        s.scroll_into_view(4, 3);
        assert_eq!(s.offset, 0, "a short list starts at its top");
    }
}
