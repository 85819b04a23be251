//! Which key does what, in which context. One table drives both the key handling and the
//! `?` help overlay, so the overlay always lists every key.

use super::action::Action;
use super::app::App;
pub use super::mode::Mode;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};
use std::sync::LazyLock;

/// One key binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Where it applies.
    pub mode: Mode,
    /// The keys, as shown in help.
    pub label: &'static str,
    /// The key codes (with `mods`) that trigger it.
    pub codes: &'static [KeyCode],
    /// Modifiers that must be held.
    pub mods: KeyModifiers,
    /// What it does.
    pub action: Action,
    /// One line for the help overlay.
    pub help: &'static str,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;

macro_rules! bind {
    ($ctx:ident, $label:expr, [$($code:expr),+], $mods:expr, $action:expr, $help:expr) => {
        Binding {
            mode: Mode::$ctx,
            label: $label,
            codes: &[$($code),+],
            mods: $mods,
            action: $action,
            help: $help,
        }
    };
}

/// Every binding, in help order.
pub fn bindings() -> &'static [Binding] {
    &BINDINGS
}

static BINDINGS: LazyLock<Vec<Binding>> = LazyLock::new(table);

#[rustfmt::skip]
fn table() -> Vec<Binding> {
    use KeyCode::*;
    vec![
        bind!(Global, "?", [Char('?')], NONE, Action::ToggleHelp, "show or hide this help"),
        bind!(Global, "q / Ctrl-c", [Char('q')], NONE, Action::Quit, "quit (asks if there are unsaved changes)"),
        bind!(Global, "Ctrl-c", [Char('c')], CTRL, Action::Quit, ""),
        bind!(Global, "s / Ctrl-s", [Char('s')], NONE, Action::Save, "save the seed file (keeps <file>.bak)"),
        bind!(Global, "Ctrl-s", [Char('s')], CTRL, Action::Save, ""),
        bind!(Global, "Tab / Shift-Tab", [Tab], NONE, Action::NextTab, "next / previous pane"),
        bind!(Global, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::PrevTab, ""),
        bind!(Global, "!", [Char('!')], NONE, Action::ShowErrors, "show invalid lines of the opened file"),
        bind!(Global, "u", [Char('u')], NONE, Action::Undo, "undo the last add, duplicate, edit or delete"),
        bind!(List, "↑ / k", [Up, Char('k')], NONE, Action::Up, "previous record"),
        bind!(List, "↓ / j", [Down, Char('j')], NONE, Action::Down, "next record"),
        bind!(List, "PgUp / PgDn", [PageUp], NONE, Action::PageUp, "page up / down"),
        bind!(List, "PgDn", [PageDown], NONE, Action::PageDown, ""),
        bind!(List, "Home / g", [Home, Char('g')], NONE, Action::Top, "first record"),
        bind!(List, "End / G", [End, Char('G')], NONE, Action::Bottom, "last record"),
        bind!(List, "Enter", [Enter], NONE, Action::Open, "open the record (or click it twice)"),
        bind!(List, "/", [Char('/')], NONE, Action::StartSearch, "search id, task and text as you type"),
        bind!(List, "f", [Char('f')], NONE, Action::CycleCategory, "filter: all → qa → ie → gen → other"),
        bind!(List, "Esc", [Esc], NONE, Action::Cancel, "clear the search"),
        bind!(List, "a", [Char('a')], NONE, Action::Add, "add a record"),
        bind!(List, "c", [Char('c')], NONE, Action::Duplicate, "duplicate the record below itself"),
        bind!(List, "e", [Char('e')], NONE, Action::Edit, "edit in the form"),
        bind!(List, "E", [Char('E')], NONE, Action::EditExternal, "edit as JSON in $EDITOR"),
        bind!(List, "d / Del", [Char('d'), Delete], NONE, Action::Delete, "delete (asks first)"),
        bind!(List, ">", [Char('>')], NONE, Action::SendToChat, "send the task to the Chat pane (its output as reference)"),
        bind!(Detail, "↑ / k", [Up, Char('k')], NONE, Action::Up, "scroll up"),
        bind!(Detail, "↓ / j", [Down, Char('j')], NONE, Action::Down, "scroll down"),
        bind!(Detail, "e / E", [Char('e')], NONE, Action::Edit, "edit in the form / in $EDITOR"),
        bind!(Detail, "E", [Char('E')], NONE, Action::EditExternal, ""),
        bind!(Detail, "c", [Char('c')], NONE, Action::Duplicate, "duplicate"),
        bind!(Detail, "d / Del", [Char('d'), Delete], NONE, Action::Delete, "delete (asks first)"),
        bind!(Detail, "Esc / Enter", [Esc, Enter], NONE, Action::Cancel, "back to the list"),
        bind!(Search, "Enter", [Enter], NONE, Action::SearchSubmit, "keep the search and go back to the list"),
        bind!(Search, "Esc", [Esc], NONE, Action::Cancel, "clear the search"),
        bind!(Search, "Backspace", [Backspace], NONE, Action::SearchBackspace, "delete a character"),
        bind!(Form, "Tab / Shift-Tab", [Tab], NONE, Action::FormNextField, "next / previous field"),
        bind!(Form, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::FormPrevField, ""),
        bind!(Form, "Ctrl-s", [Char('s')], CTRL, Action::FormSubmit, "apply the changes (then s saves the file)"),
        bind!(Form, "Esc", [Esc], NONE, Action::Cancel, "discard the changes"),
        bind!(Runs, "↑ / k", [Up, Char('k')], NONE, Action::Up, "previous run"),
        bind!(Runs, "↓ / j", [Down, Char('j')], NONE, Action::Down, "next run"),
        bind!(Runs, "Home / g", [Home, Char('g')], NONE, Action::Top, "newest run"),
        bind!(Runs, "End / G", [End, Char('G')], NONE, Action::Bottom, "oldest run"),
        bind!(Runs, "n", [Char('n')], NONE, Action::NewRun, "new run (starts detached: it outlives the workbench)"),
        bind!(Runs, "x", [Char('x')], NONE, Action::StopRun, "stop the run: finish the step, checkpoint (asks first)"),
        bind!(Runs, "r", [Char('r')], NONE, Action::ResumeRun, "resume a stopped or interrupted run (asks first)"),
        bind!(Runs, "w", [Char('w')], NONE, Action::WatchRun, "follow another trainer's run folder (HF Trainer, axolotl, LLaMA-Factory), read-only"),
        bind!(RunForm, "Tab / ↓", [Tab, Down], NONE, Action::FormNextField, "next field"),
        bind!(RunForm, "Shift-Tab / ↑", [BackTab, Up], NONE, Action::FormPrevField, "previous field"),
        bind!(RunForm, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::FormPrevField, ""),
        bind!(RunForm, "Backspace", [Backspace], NONE, Action::FieldBackspace, "delete a character"),
        bind!(RunForm, "Enter", [Enter], NONE, Action::LaunchRun, "check the fields and start the run"),
        bind!(RunForm, "Esc", [Esc], NONE, Action::Cancel, "close the form"),
        bind!(Evals, "↑ / k", [Up, Char('k')], NONE, Action::Up, "previous evaluation, task row or item"),
        bind!(Evals, "↓ / j", [Down, Char('j')], NONE, Action::Down, "next evaluation, task row or item"),
        bind!(Evals, "Home / g", [Home, Char('g')], NONE, Action::Top, "newest evaluation"),
        bind!(Evals, "End / G", [End, Char('G')], NONE, Action::Bottom, "oldest evaluation"),
        bind!(Evals, "PgUp / PgDn", [PageUp], NONE, Action::PageUp, "page through a task's items"),
        bind!(Evals, "PgDn", [PageDown], NONE, Action::PageDown, ""),
        bind!(Evals, "Enter", [Enter], NONE, Action::Open, "the evaluation's table, then a task's items"),
        bind!(Evals, "Esc", [Esc], NONE, Action::Cancel, "back"),
        bind!(Evals, "f", [Char('f')], NONE, Action::CycleCategory, "items: all → tuned right, base wrong → base right, tuned wrong"),
        bind!(Evals, "t", [Char('t')], NONE, Action::NextTuned, "items: the next adapter against the base"),
        bind!(Evals, ">", [Char('>')], NONE, Action::SendToChat, "send the item to the Chat pane (its reference below)"),
        bind!(Evals, "m", [Char('m')], NONE, Action::ShowMatrix, "the experiments' matrices (heat maps), or back"),
        bind!(Evals, "n", [Char('n')], NONE, Action::NewRun, "new evaluation (runs detached: it outlives the workbench)"),
        bind!(Evals, "x", [Char('x')], NONE, Action::StopRun, "stop the evaluation (finished items are kept)"),
        bind!(Evals, "r", [Char('r')], NONE, Action::ResumeRun, "continue a stopped or interrupted evaluation"),
        bind!(EvalForm, "Tab / ↓", [Tab, Down], NONE, Action::FormNextField, "next field"),
        bind!(EvalForm, "Shift-Tab / ↑", [BackTab, Up], NONE, Action::FormPrevField, "previous field"),
        bind!(EvalForm, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::FormPrevField, ""),
        bind!(EvalForm, "Backspace", [Backspace], NONE, Action::FieldBackspace, "delete a character"),
        bind!(EvalForm, "Enter", [Enter], NONE, Action::LaunchRun, "check the fields and start the evaluation"),
        bind!(EvalForm, "Esc", [Esc], NONE, Action::Cancel, "close the form"),
        bind!(Chat, "Enter", [Enter], NONE, Action::ChatSend, "send the input to both models"),
        bind!(Chat, "Esc", [Esc], NONE, Action::ChatCancel, "stop both replies (or clear the input)"),
        bind!(Chat, "Backspace", [Backspace], NONE, Action::ChatBackspace, "delete a character"),
        bind!(Chat, "Tab / Shift-Tab", [Tab], NONE, Action::NextTab, "next / previous pane"),
        bind!(Chat, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::PrevTab, ""),
        bind!(Chat, "Ctrl-p", [Char('p')], CTRL, Action::ChatSampling, "sampling settings (temperature, top_p, seed, …)"),
        bind!(Chat, "Ctrl-a", [Char('a')], CTRL, Action::ChatNextAdapter, "tuned column: the next run's adapter"),
        bind!(Chat, "Ctrl-l", [Char('l')], CTRL, Action::ChatClear, "clear both conversations"),
        bind!(Chat, "Ctrl-s", [Char('s')], CTRL, Action::ChatSave, "save the transcript (Markdown and JSONL)"),
        bind!(Chat, "Ctrl-f", [Char('f')], CTRL, Action::FetchModel, "fetch the default model when it is not on this machine"),
        bind!(Chat, "F1", [F(1)], NONE, Action::ToggleHelp, "key help (? is typed here)"),
        bind!(Chat, "Ctrl-c", [Char('c')], CTRL, Action::Quit, "quit"),
        bind!(Sampling, "Tab / ↓", [Tab, Down], NONE, Action::FormNextField, "next field"),
        bind!(Sampling, "Shift-Tab / ↑", [BackTab, Up], NONE, Action::FormPrevField, "previous field"),
        bind!(Sampling, "Shift-Tab", [BackTab], KeyModifiers::SHIFT, Action::FormPrevField, ""),
        bind!(Sampling, "Backspace", [Backspace], NONE, Action::FieldBackspace, "delete a character"),
        bind!(Sampling, "Enter", [Enter], NONE, Action::ApplySampling, "apply to both columns"),
        bind!(Sampling, "Esc", [Esc], NONE, Action::Cancel, "close without applying"),
        bind!(Generated, "↑ / k", [Up, Char('k')], NONE, Action::Up, "previous task"),
        bind!(Generated, "↓ / j", [Down, Char('j')], NONE, Action::Down, "next task"),
        bind!(Generated, "PgUp / PgDn", [PageUp], NONE, Action::PageUp, "page up / down"),
        bind!(Generated, "PgDn", [PageDown], NONE, Action::PageDown, ""),
        bind!(Generated, "Home / g", [Home, Char('g')], NONE, Action::Top, "first task"),
        bind!(Generated, "End / G", [End, Char('G')], NONE, Action::Bottom, "last task"),
        bind!(Generated, "Enter", [Enter], NONE, Action::Open, "the task beside its most similar instruction"),
        bind!(Generated, "Esc", [Esc], NONE, Action::Cancel, "back to the list"),
        bind!(Generated, "v", [Char('v')], NONE, Action::SwitchGenList, "switch between kept and rejected tasks"),
        bind!(Generated, "a", [Char('a')], NONE, Action::AcceptTask, "accept a rejected task (moves it to the kept file)"),
        bind!(Generated, "r", [Char('r')], NONE, Action::RejectTask, "reject a kept task (moves it to the rejected file)"),
        bind!(Generated, "e", [Char('e')], NONE, Action::EditExternal, "edit the task as JSON in $EDITOR"),
        bind!(Generated, "p", [Char('p')], NONE, Action::PromoteTask, "promote a kept task to the seeds (then s saves them)"),
        bind!(Generated, ">", [Char('>')], NONE, Action::SendToChat, "send the task to the Chat pane (its output as reference)"),
        bind!(Generated, "n", [Char('n')], NONE, Action::StartGenerate, "start a run: [generate] teacher, to [generate] target kept"),
        bind!(Generated, "x", [Char('x')], NONE, Action::StopGenerate, "stop the run (requests in flight are dropped)"),
        bind!(Prompt, "y", [Char('y')], NONE, Action::Confirm, "yes (delete the record; stop or resume the run)"),
        bind!(Prompt, "s", [Char('s')], NONE, Action::SaveAndQuit, "unsaved changes: save and quit"),
        bind!(Prompt, "d", [Char('d')], NONE, Action::DiscardAndQuit, "unsaved changes: quit without saving"),
        bind!(Conflict, "m", [Char('m')], NONE, Action::KeepMine, "keep your version of the record (or your deletion)"),
        bind!(Conflict, "t", [Char('t')], NONE, Action::TakeTheirs, "take the version on disk (or its deletion)"),
        bind!(Conflict, "Esc", [Esc], NONE, Action::Cancel, "decide later (saving stays refused until then)"),
        bind!(Prompt, "n / Esc", [Char('n'), Esc], NONE, Action::Cancel, "no: go back"),
    ]
}

/// One entry of the bottom line's key hints: in `mode` (and, for the Generated pane, only
/// with its detail view open or shut when `detail` says so), `keys` does `what`.
struct Hint {
    mode: Mode,
    detail: Option<bool>,
    keys: &'static str,
    what: &'static str,
    /// The binding it stands for (`None` for "type to search", "any key closes"): a test
    /// checks the binding exists in that mode and its label names `keys`.
    action: Option<Action>,
}

#[rustfmt::skip]
fn hint_table() -> Vec<Hint> {
    use Mode::*;
    let h = |mode, keys, what, action| Hint { mode, detail: None, keys, what, action: Some(action) };
    let free = |mode, keys, what| Hint { mode, detail: None, keys, what, action: None };
    let detail = |shown: bool, keys, what, action| Hint { mode: Generated, detail: Some(shown), keys, what, action: Some(action) };
    vec![
        h(List, "↑↓", "move", Action::Down),
        h(List, "Enter", "open", Action::Open),
        h(List, "/", "search", Action::StartSearch),
        h(List, "f", "filter", Action::CycleCategory),
        h(List, "e", "edit", Action::Edit),
        h(List, "a", "add", Action::Add),
        h(List, "d", "delete", Action::Delete),
        h(List, "s", "save", Action::Save),
        h(List, "?", "help", Action::ToggleHelp),
        h(List, "q", "quit", Action::Quit),
        h(Detail, "↑↓", "scroll", Action::Down),
        h(Detail, "e", "edit", Action::Edit),
        h(Detail, "E", "$EDITOR", Action::EditExternal),
        h(Detail, "c", "duplicate", Action::Duplicate),
        h(Detail, "d", "delete", Action::Delete),
        h(Detail, "Esc", "back", Action::Cancel),
        h(Detail, "?", "help", Action::ToggleHelp),
        free(Search, "type", "to search"),
        h(Search, "Enter", "keep", Action::SearchSubmit),
        h(Search, "Esc", "clear", Action::Cancel),
        h(Form, "Tab", "next field", Action::FormNextField),
        free(Form, "←→", "category"),
        h(Form, "Ctrl-s", "apply", Action::FormSubmit),
        h(Form, "Esc", "discard", Action::Cancel),
        free(Overlay, "↑↓", "scroll"),
        free(Overlay, "any key", "close"),
        h(Conflict, "m", "keep yours", Action::KeepMine),
        h(Conflict, "t", "take theirs", Action::TakeTheirs),
        h(Conflict, "Esc", "later", Action::Cancel),
        h(Runs, "↑↓", "select", Action::Down),
        h(Runs, "n", "new run", Action::NewRun),
        h(Runs, "x", "stop", Action::StopRun),
        h(Runs, "r", "resume", Action::ResumeRun),
        h(Runs, "w", "watch", Action::WatchRun),
        h(Runs, "Tab", "pane", Action::NextTab),
        h(Runs, "?", "help", Action::ToggleHelp),
        h(Runs, "q", "quit", Action::Quit),
        h(Chat, "Enter", "send", Action::ChatSend),
        h(Chat, "Esc", "stop", Action::ChatCancel),
        h(Chat, "Ctrl-p", "sampling", Action::ChatSampling),
        h(Chat, "Ctrl-a", "adapter", Action::ChatNextAdapter),
        h(Chat, "Ctrl-l", "clear", Action::ChatClear),
        h(Chat, "Ctrl-s", "save", Action::ChatSave),
        h(Chat, "Tab", "pane", Action::NextTab),
        h(Chat, "F1", "help", Action::ToggleHelp),
        h(Sampling, "Tab ↑↓", "field", Action::FormNextField),
        h(Sampling, "Enter", "apply", Action::ApplySampling),
        h(Sampling, "Esc", "close", Action::Cancel),
        detail(true, "Esc", "back", Action::Cancel),
        detail(true, "a", "accept", Action::AcceptTask),
        detail(true, "r", "reject", Action::RejectTask),
        detail(true, "e", "edit", Action::EditExternal),
        detail(true, "p", "promote", Action::PromoteTask),
        detail(true, ">", "chat", Action::SendToChat),
        detail(true, "?", "help", Action::ToggleHelp),
        detail(false, "↑↓", "move", Action::Down),
        detail(false, "Enter", "detail", Action::Open),
        detail(false, "v", "kept/rejected", Action::SwitchGenList),
        detail(false, "a", "accept", Action::AcceptTask),
        detail(false, "r", "reject", Action::RejectTask),
        detail(false, "p", "promote", Action::PromoteTask),
        detail(false, "n", "run", Action::StartGenerate),
        detail(false, "x", "stop", Action::StopGenerate),
        detail(false, "?", "help", Action::ToggleHelp),
        h(RunForm, "Tab ↑↓", "field", Action::FormNextField),
        h(RunForm, "Enter", "start", Action::LaunchRun),
        h(RunForm, "Esc", "close", Action::Cancel),
        h(Evals, "↑↓", "select", Action::Down),
        h(Evals, "Enter", "open", Action::Open),
        h(Evals, "Esc", "back", Action::Cancel),
        h(Evals, "f", "filter", Action::CycleCategory),
        h(Evals, "m", "matrix", Action::ShowMatrix),
        h(Evals, "n", "new", Action::NewRun),
        h(Evals, "x", "stop", Action::StopRun),
        h(Evals, "r", "continue", Action::ResumeRun),
        h(Evals, "?", "help", Action::ToggleHelp),
        h(EvalForm, "Tab ↑↓", "field", Action::FormNextField),
        h(EvalForm, "Enter", "start", Action::LaunchRun),
        h(EvalForm, "Esc", "close", Action::Cancel),
    ]
}

/// Whether the binding `h` stands for is in the table, in its mode (or among the global
/// keys a mode takes), with `h.keys` in its label.
fn has_binding(h: &Hint) -> bool {
    let Some(action) = &h.action else {
        return true;
    };
    let global = matches!(
        h.mode,
        Mode::List | Mode::Detail | Mode::Runs | Mode::Generated | Mode::Evals
    );
    bindings().iter().any(|b| {
        (b.mode == h.mode || (global && b.mode == Mode::Global))
            && b.action == *action
            && h.keys
                .split(' ')
                .all(|k| b.label.contains(k) || (k == "↑↓" && b.label.contains('↓')))
    })
}

/// The hints whose bindings exist: a hint cannot outlive its key.
static HINTS: LazyLock<Vec<Hint>> =
    LazyLock::new(|| hint_table().into_iter().filter(has_binding).collect());

/// The bottom line's key hints in `mode` (`generated_detail`: the Generated pane's detail
/// view is open), `(keys, what)` in order: a chosen few of the bindings of the table, each
/// checked against it.
pub fn hints(mode: Mode, generated_detail: bool) -> Vec<(&'static str, &'static str)> {
    HINTS
        .iter()
        .filter(|h| h.mode == mode && h.detail.is_none_or(|d| d == generated_detail))
        .map(|h| (h.keys, h.what))
        .collect()
}

/// The rows of the help overlay: `(context, keys, what they do)`. A binding with empty help
/// adds a key to the row above it (whose label names both).
pub fn help_rows() -> Vec<(Mode, &'static str, &'static str)> {
    bindings()
        .iter()
        .filter(|b| !b.help.is_empty())
        .map(|b| (b.mode, b.label, b.help))
        .collect()
}

fn lookup(mode: Mode, key: &KeyEvent) -> Option<Action> {
    // Shift is implied by the character for letters and symbols.
    let mods = key.modifiers - KeyModifiers::SHIFT;
    bindings()
        .iter()
        .find(|b| {
            b.mode == mode && b.codes.contains(&key.code) && (b.mods - KeyModifiers::SHIFT) == mods
        })
        .map(|b| b.action.clone())
}

/// Translates a terminal event into an action for the app's current mode.
pub fn map_event(app: &App, event: &Event) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => map_key(app, key),
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp => Some(Action::ScrollUp),
            MouseEventKind::ScrollDown => Some(Action::ScrollDown),
            MouseEventKind::Down(crossterm::event::MouseButton::Left) => Some(Action::Click {
                column: m.column,
                row: m.row,
            }),
            _ => None,
        },
        Event::Resize(width, height) => Some(Action::Resize {
            width: *width,
            height: *height,
        }),
        _ => None,
    }
}

fn map_key(app: &App, key: &KeyEvent) -> Option<Action> {
    match app.mode() {
        Mode::Global => lookup(Mode::Global, key),
        Mode::Prompt => lookup(Mode::Prompt, key),
        Mode::Conflict => lookup(Mode::Conflict, key),
        // Overlays scroll with the list keys; ? and q keep their meaning; any other key closes.
        Mode::Overlay => match lookup(Mode::List, key).or_else(|| lookup(Mode::Global, key)) {
            Some(a @ (Action::Up | Action::Down | Action::PageUp | Action::PageDown)) => Some(a),
            Some(a @ (Action::ToggleHelp | Action::Quit)) => Some(a),
            _ => Some(Action::Cancel),
        },
        Mode::Search => lookup(Mode::Search, key).or(match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(CTRL) => Some(Action::SearchChar(c)),
            _ => None,
        }),
        Mode::Form => lookup(Mode::Form, key).or(Some(Action::FormInput((*key).into()))),
        Mode::List => lookup(Mode::List, key).or_else(|| lookup(Mode::Global, key)),
        Mode::Detail => lookup(Mode::Detail, key).or_else(|| lookup(Mode::Global, key)),
        // The seed file's keys (undo, invalid lines) stay with the Seeds pane.
        Mode::Runs => lookup(Mode::Runs, key).or_else(|| {
            lookup(Mode::Global, key).filter(|a| !matches!(a, Action::Undo | Action::ShowErrors))
        }),
        Mode::Evals => lookup(Mode::Evals, key).or_else(|| {
            lookup(Mode::Global, key).filter(|a| !matches!(a, Action::Undo | Action::ShowErrors))
        }),
        Mode::EvalForm => lookup(Mode::EvalForm, key).or(match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(CTRL) => Some(Action::FieldChar(c)),
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        }),
        Mode::Generated => lookup(Mode::Generated, key).or_else(|| {
            lookup(Mode::Global, key).filter(|a| !matches!(a, Action::Undo | Action::ShowErrors))
        }),
        Mode::Chat => lookup(Mode::Chat, key).or(match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(CTRL) => Some(Action::ChatChar(c)),
            _ => None,
        }),
        Mode::Sampling => lookup(Mode::Sampling, key).or(match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(CTRL) => Some(Action::FieldChar(c)),
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        }),
        Mode::RunForm => lookup(Mode::RunForm, key).or(match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(CTRL) => Some(Action::FieldChar(c)),
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_overlay_names_every_key() {
        let rows = help_rows();
        for b in bindings() {
            assert!(
                rows.iter()
                    .any(|(c, label, _)| *c == b.mode && label.contains(b.label)),
                "{:?} {:?} is bound but not in the help",
                b.mode,
                b.label
            );
        }
    }

    #[test]
    fn every_hint_names_a_binding_its_mode_has() {
        for h in hint_table() {
            assert!(
                has_binding(&h),
                "{:?}: hint {:?} {:?} has no such binding",
                h.mode,
                h.keys,
                h.what
            );
        }
        assert_eq!(HINTS.len(), hint_table().len());
    }

    #[test]
    fn no_key_is_bound_twice_in_one_context() {
        let all = bindings();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                let clash = a.mode == b.mode
                    && a.mods == b.mods
                    && a.codes.iter().any(|c| b.codes.contains(c));
                assert!(!clash, "{:?}: {:?} and {:?}", a.mode, a.label, b.label);
            }
        }
    }
}
