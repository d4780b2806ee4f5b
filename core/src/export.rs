//! Drawing the graph: Graphviz DOT and Mermaid text from one consistent listing. Arrows point from a
//! dependency to the unit that waits for it (the order things run in). Unknown units (only depended
//! on) are drawn dashed. Pure functions of a snapshot list: no graph access, no I/O.

use crate::graph::{Graph, UnitSnapshot};
use crate::state::UnitState;
use std::collections::HashMap;
use std::fmt::Write;

/// Output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

impl Graph {
    /// The whole graph in `format`.
    pub fn export(&self, format: GraphFormat) -> String {
        let units = self.list();
        match format {
            GraphFormat::Dot => to_dot(&units),
            GraphFormat::Mermaid => to_mermaid(&units),
        }
    }
}

fn fill(state: UnitState) -> &'static str {
    match state {
        UnitState::Unknown => "#ffffff",
        UnitState::Pending => "#eeeeee",
        UnitState::Started => "#fff3c4",
        UnitState::Completed => "#c8e6c9",
        UnitState::Failed => "#ffcdd2",
    }
}

fn dot_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// A two-line label, `name` over `state`, with DOT's own `\n` escape between them so that every
/// statement stays on one line of the output.
fn dot_label(name: &str, state: UnitState) -> String {
    let quoted = dot_quote(name);
    format!("{}\\n{state}\"", &quoted[..quoted.len() - 1])
}

/// Graphviz DOT for `units`.
pub fn to_dot(units: &[UnitSnapshot]) -> String {
    let mut out = String::from("digraph unitsync {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n");
    for unit in units {
        let style = if unit.state == UnitState::Unknown {
            ", style=\"rounded,dashed\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label={}, fillcolor=\"{}\"{style}];",
            dot_quote(unit.name.as_str()),
            dot_label(unit.name.as_str(), unit.state),
            fill(unit.state),
        );
    }
    for unit in units {
        for dependency in &unit.dependencies {
            let _ = writeln!(
                out,
                "  {} -> {};",
                dot_quote(dependency.name.as_str()),
                dot_quote(unit.name.as_str())
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => "#quot;".to_owned(),
            '<' => "#lt;".to_owned(),
            '>' => "#gt;".to_owned(),
            '#' => "#35;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// A Mermaid flowchart for `units`.
pub fn to_mermaid(units: &[UnitSnapshot]) -> String {
    let ids: HashMap<&str, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for (i, unit) in units.iter().enumerate() {
        let _ = writeln!(
            out,
            "  u{i}[\"{}<br/>{}\"]:::{}",
            mermaid_text(unit.name.as_str()),
            unit.state,
            unit.state
        );
    }
    for (i, unit) in units.iter().enumerate() {
        for dependency in &unit.dependencies {
            if let Some(from) = ids.get(dependency.name.as_str()) {
                let _ = writeln!(out, "  u{from} --> u{i}");
            }
        }
    }
    for state in [
        UnitState::Unknown,
        UnitState::Pending,
        UnitState::Started,
        UnitState::Completed,
        UnitState::Failed,
    ] {
        let dash = if state == UnitState::Unknown {
            ",stroke-dasharray: 5 5"
        } else {
            ""
        };
        let _ = writeln!(out, "  classDef {state} fill:{}{dash}", fill(state));
    }
    out
}
