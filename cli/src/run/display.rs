//! What `unitsync run` shows while it runs: every script's output line prefixed with the script's
//! name (coloured per script on a terminal, plain when piped or under `NO_COLOR`), and, on a
//! terminal, a live status area below it with each unit's state and what waiting units wait on.
//!
//! One task owns the screen: output lines, notes and agent events all arrive on one channel, so a
//! line is never torn by another, and the live area (`indicatif`) is suspended while a line is
//! written above it. The live view is built from the agent's event stream merged *monotonically*
//! (a state only moves forward), so an initial `list` and the stream may overlap in any order. This
//! module formats and draws; it does not decide anything about the run.

use super::scripts::OutputLine;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;
use unitsync_core::{EventKind, UnitState};
use unitsync_ipc::protocol::UnitInfo;

/// Something to show.
#[derive(Debug)]
pub enum Feed {
    /// A script's output line.
    Line(OutputLine),
    /// A note from `unitsync run` about a script (it exited, it left a unit unfinished).
    Note {
        /// Index of the script.
        script: usize,
        /// The note.
        text: String,
    },
    /// A change in the graph.
    Event(EventKind),
    /// The whole graph at some instant (merged monotonically with the events).
    Units(Vec<UnitInfo>),
}

/// How to show it.
pub struct Settings {
    /// Script names, by index.
    pub names: Vec<String>,
    /// Colour the prefixes.
    pub color: bool,
    /// Draw the live status area (stderr must be a terminal).
    pub live: bool,
    /// Write script output to stderr instead of stdout (stdout is reserved for `--json`).
    pub output_to_stderr: bool,
}

/// Shows everything sent on `feed` until it closes, then clears the live area.
pub async fn show(settings: Settings, mut feed: mpsc::UnboundedReceiver<Feed>) {
    let mut screen = Screen::new(settings);
    while let Some(item) = feed.recv().await {
        screen.take(item);
        // Drain what is already queued before redrawing, so a burst redraws once.
        while let Ok(item) = feed.try_recv() {
            screen.take(item);
        }
        screen.redraw();
    }
    screen.finish();
}

const PALETTE: [anstyle::AnsiColor; 10] = [
    anstyle::AnsiColor::Cyan,
    anstyle::AnsiColor::Green,
    anstyle::AnsiColor::Yellow,
    anstyle::AnsiColor::Blue,
    anstyle::AnsiColor::Magenta,
    anstyle::AnsiColor::BrightCyan,
    anstyle::AnsiColor::BrightGreen,
    anstyle::AnsiColor::BrightYellow,
    anstyle::AnsiColor::BrightBlue,
    anstyle::AnsiColor::BrightMagenta,
];

/// The most unit rows the live area shows at once.
const MAX_ROWS: usize = 12;

struct Screen {
    prefixes: Vec<String>,
    note_prefixes: Vec<String>,
    output_to_stderr: bool,
    live: Option<Live>,
    units: BTreeMap<String, LiveUnit>,
    dirty: bool,
}

#[derive(Default)]
struct LiveUnit {
    state: Option<UnitState>,
    dependencies: Vec<String>,
}

struct Live {
    multi: MultiProgress,
    header: ProgressBar,
    rows: Vec<ProgressBar>,
}

fn rank(state: Option<UnitState>) -> u8 {
    match state {
        None | Some(UnitState::Unknown) => 0,
        Some(UnitState::Pending) => 1,
        Some(UnitState::Started) => 2,
        Some(UnitState::Completed | UnitState::Failed) => 3,
    }
}

impl Screen {
    fn new(settings: Settings) -> Self {
        let width = settings
            .names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0);
        let styled = |index: usize, name: &str, separator: &str| {
            let text = format!("{name:>width$} {separator} ");
            if settings.color {
                let style = PALETTE[index % PALETTE.len()].on_default();
                format!("{}{text}{}", style.render(), style.render_reset())
            } else {
                text
            }
        };
        let prefixes = (settings.names.iter().enumerate())
            .map(|(i, n)| styled(i, n, "|"))
            .collect();
        let note_prefixes = (settings.names.iter().enumerate())
            .map(|(i, n)| styled(i, n, "~"))
            .collect();
        let live = settings.live.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let header = multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                header.set_style(style);
            }
            header.enable_steady_tick(Duration::from_millis(120));
            Live {
                multi,
                header,
                rows: Vec::new(),
            }
        });
        Self {
            prefixes,
            note_prefixes,
            output_to_stderr: settings.output_to_stderr,
            live,
            units: BTreeMap::new(),
            dirty: true,
        }
    }

    fn take(&mut self, item: Feed) {
        match item {
            Feed::Line(line) => {
                let prefix = self.prefixes.get(line.script).map_or("", String::as_str);
                self.write(&format!("{prefix}{}", line.text));
            }
            Feed::Note { script, text } => {
                let prefix = self.note_prefixes.get(script).map_or("", String::as_str);
                self.write(&format!("{prefix}{text}"));
            }
            Feed::Event(kind) => {
                self.apply(&kind);
                self.dirty = true;
            }
            Feed::Units(units) => {
                for info in units {
                    let unit = self.units.entry(info.name.to_string()).or_default();
                    advance(unit, info.state);
                    for dependency in info.dependencies {
                        let name = dependency.name.to_string();
                        if !unit.dependencies.contains(&name) {
                            unit.dependencies.push(name);
                        }
                    }
                }
                self.dirty = true;
            }
        }
    }

    fn apply(&mut self, kind: &EventKind) {
        let unit = self.units.entry(kind.unit().to_string()).or_default();
        match kind {
            EventKind::Registered { .. } => advance(unit, UnitState::Pending),
            EventKind::DependencyAdded { dependency, .. } => {
                let name = dependency.to_string();
                if !unit.dependencies.contains(&name) {
                    unit.dependencies.push(name.clone());
                }
                let dependency = self.units.entry(name).or_default();
                advance(dependency, UnitState::Unknown);
            }
            EventKind::Started { .. } => advance(unit, UnitState::Started),
            EventKind::Completed { .. } => advance(unit, UnitState::Completed),
            EventKind::Failed { .. } => advance(unit, UnitState::Failed),
        }
    }

    fn write(&self, line: &str) {
        let emit = || {
            // A closed stdout (e.g. `| head`) must not stop the run; the line is dropped.
            if self.output_to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        };
        match &self.live {
            Some(live) => live.multi.suspend(emit),
            None => emit(),
        }
    }

    fn redraw(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(live) = &mut self.live else { return };
        let (mut done, mut failed, mut running, mut waiting) = (0, 0, 0, 0);
        let mut rows: Vec<String> = Vec::new();
        let width = self
            .units
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        for (name, unit) in &self.units {
            match unit.state {
                Some(UnitState::Completed) => done += 1,
                Some(UnitState::Failed) => failed += 1,
                Some(UnitState::Started) => {
                    running += 1;
                    rows.push(format!("  {name:<width$}  running"));
                }
                Some(UnitState::Pending) => {
                    waiting += 1;
                    let unmet: Vec<String> = unit
                        .dependencies
                        .iter()
                        .filter_map(|dep| {
                            let state = self.units.get(dep).and_then(|d| d.state);
                            (state != Some(UnitState::Completed))
                                .then(|| format!("{dep} ({})", state.unwrap_or(UnitState::Unknown)))
                        })
                        .collect();
                    rows.push(if unmet.is_empty() {
                        format!("  {name:<width$}  ready")
                    } else {
                        format!("  {name:<width$}  waits for {}", unmet.join(", "))
                    });
                }
                None | Some(UnitState::Unknown) => {}
            }
        }
        if rows.len() > MAX_ROWS {
            let hidden = rows.len() - (MAX_ROWS - 1);
            rows.truncate(MAX_ROWS - 1);
            rows.push(format!("  … and {hidden} more"));
        }
        live.header.set_message(format!(
            "{done} completed · {failed} failed · {running} running · {waiting} waiting"
        ));
        while live.rows.len() > rows.len() {
            if let Some(bar) = live.rows.pop() {
                bar.finish_and_clear();
                live.multi.remove(&bar);
            }
        }
        while live.rows.len() < rows.len() {
            let bar = live.multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("{msg}") {
                bar.set_style(style);
            }
            live.rows.push(bar);
        }
        for (bar, row) in live.rows.iter().zip(rows) {
            bar.set_message(row);
        }
    }

    fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            for bar in &live.rows {
                bar.finish_and_clear();
            }
            live.header.finish_and_clear();
            let _ = live.multi.clear();
        }
    }
}

/// Moves `unit` forward to `state`, never back.
fn advance(unit: &mut LiveUnit, state: UnitState) {
    if rank(Some(state)) > rank(unit.state) || unit.state.is_none() {
        unit.state = Some(state);
    }
}
