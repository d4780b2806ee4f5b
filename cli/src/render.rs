//! Human-readable output: aligned tables and one-line summaries for the terminal, and the JSON
//! printer for `--json`. Pure formatting: no I/O beyond writing to stdout/stderr. Command output
//! goes through [`emit`], never `println!`, so a reader that goes away (`unitsync watch | head`)
//! ends the command quietly instead of panicking.

use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use unitsync_core::{DependencyStatus, EventKind};
use unitsync_ipc::protocol::{EventInfo, PingInfo, UnitInfo};

/// `println!` for command output, through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => {
        emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to stdout and flushes it. If the reader has gone away (a closed pipe), the command
/// has nobody left to tell anything: it ends at once with status 0, as `rg` does, rather than
/// panicking as `println!` would. Any other write failure is reported and exits 1.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("unitsync: cannot write to stdout: {error}");
        std::process::exit(crate::failure::code::REFUSED);
    }
}

/// Prints `value` as one JSON document (one line) on stdout.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => outln!("{text}"),
        Err(error) => eprintln!("unitsync: cannot encode JSON: {error}"),
    }
}

/// `git (pending), npm-install (started)`.
pub fn unmet_list(unmet: &[DependencyStatus]) -> String {
    unmet
        .iter()
        .map(|d| format!("{} ({})", d.name, d.current))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1.5s`, `120ms`, `2m 3s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let secs = d.as_secs();
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

/// The time `unix_ms` after the epoch, capped at the last millisecond of the year 9999: RFC 3339
/// (and `humantime`, which panics when asked to format a later time) ends there, and a damaged
/// journal or a hostile agent may send anything.
fn system_time(unix_ms: u64) -> SystemTime {
    const LAST_MS_OF_9999: u64 = 253_402_300_799_999;
    UNIX_EPOCH + Duration::from_millis(unix_ms.min(LAST_MS_OF_9999))
}

/// `2026-11-25T13:30:00.123Z`.
pub fn timestamp(unix_ms: Option<u64>) -> String {
    match unix_ms {
        Some(ms) => humantime::format_rfc3339_millis(system_time(ms)).to_string(),
        None => "-".to_owned(),
    }
}

/// `13:30:00.123` (UTC).
pub fn clock(unix_ms: u64) -> String {
    let full = humantime::format_rfc3339_millis(system_time(unix_ms)).to_string();
    full.get(11..23).unwrap_or(&full).to_owned()
}

pub fn ping(info: &PingInfo) {
    outln!(
        "agent {} (protocol {}), pid {}, up {}, {} unit{}, {} waiting",
        info.agent_version,
        info.protocol,
        info.pid,
        duration(Duration::from_millis(info.uptime_ms)),
        info.units,
        if info.units == 1 { "" } else { "s" },
        info.waiters,
    );
}

pub fn status(unit: &UnitInfo) {
    let ready = if unit.ready { "ready" } else { "not ready" };
    outln!("{}", unit.name);
    outln!("  state:       {} ({ready})", unit.state);
    if unit.dependencies.is_empty() {
        outln!("  depends on:  -");
    }
    let width = unit
        .dependencies
        .iter()
        .map(|d| d.name.as_str().chars().count())
        .max()
        .unwrap_or(0);
    for (i, dependency) in unit.dependencies.iter().enumerate() {
        let label = if i == 0 { "depends on:" } else { "" };
        let mark = if dependency.satisfied {
            "ok"
        } else {
            "waiting"
        };
        outln!(
            "  {label:<12} {:<width$}  {:<9}  (needs {}: {mark})",
            dependency.name.as_str(),
            dependency.current.as_str(),
            dependency.required.as_str(),
        );
    }
    let dependents: Vec<&str> = unit.dependents.iter().map(|d| d.as_str()).collect();
    outln!(
        "  dependents:  {}",
        if dependents.is_empty() {
            "-".to_owned()
        } else {
            dependents.join(", ")
        }
    );
    outln!("  registered:  {}", timestamp(unit.registered_at_ms));
    outln!("  started:     {}", timestamp(unit.started_at_ms));
    outln!("  finished:    {}", timestamp(unit.finished_at_ms));
    if let Some(failure) = &unit.failure {
        outln!("  failure:     {}", failure.reason);
        if let (Some(cause), Some(reason)) = (&failure.cause, &failure.cause_reason) {
            outln!("  root cause:  {cause}: {reason}");
        }
    }
}

pub fn list(units: &[&UnitInfo]) {
    if units.is_empty() {
        eprintln!("no units");
        return;
    }
    let width = units
        .iter()
        .map(|u| u.name.as_str().chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:<width$}  {:<9}  {:<5}  {:<23}  {:>8}",
        "UNIT",
        "STATE",
        "READY",
        "STARTED",
        "RAN"
    );
    for unit in units {
        let ran = match (unit.started_at_ms, unit.finished_at_ms) {
            (Some(start), Some(end)) => duration(Duration::from_millis(end.saturating_sub(start))),
            (Some(_), None) => "running".to_owned(),
            _ => "-".to_owned(),
        };
        outln!(
            "{:<width$}  {:<9}  {:<5}  {:<23}  {:>8}",
            unit.name.as_str(),
            unit.state.as_str(),
            if unit.ready { "yes" } else { "no" },
            timestamp(unit.started_at_ms),
            ran
        );
    }
}

pub fn event(event: &EventInfo) {
    let time = clock(event.at_ms);
    let line = match &event.kind {
        EventKind::Registered { unit } => format!("registered  {unit}"),
        EventKind::DependencyAdded { unit, dependency } => {
            format!("wants       {unit} -> {dependency}")
        }
        EventKind::Started { unit, .. } => format!("started     {unit}"),
        EventKind::Completed { unit } => format!("completed   {unit}"),
        EventKind::Failed { unit, reason, .. } => format!("failed      {unit}: {reason}"),
    };
    outln!("{time}  #{:<6} {line}", event.seq);
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn a_timestamp_past_the_year_9999_is_shown_as_its_last_millisecond() {
        assert_eq!(timestamp(Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(Some(u64::MAX)), "9999-12-31T23:59:59.999Z");
        assert_eq!(timestamp(None), "-");
    }
}
