//! Human-readable output: aligned tables and one-line summaries for the terminal, and the JSON
//! printer for `--json`. Pure formatting: no I/O beyond writing to stdout/stderr.

use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use unitsync_core::{DependencyStatus, EventKind};
use unitsync_ipc::protocol::{EventInfo, PingInfo, UnitInfo};

/// Prints `value` as one JSON document (one line) on stdout.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
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

fn system_time(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
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
    println!(
        "agent {} (protocol {}), pid {}, up {}, {} unit{}",
        info.agent_version,
        info.protocol,
        info.pid,
        duration(Duration::from_millis(info.uptime_ms)),
        info.units,
        if info.units == 1 { "" } else { "s" }
    );
}

pub fn status(unit: &UnitInfo) {
    let ready = if unit.ready { "ready" } else { "not ready" };
    println!("{}", unit.name);
    println!("  state:       {} ({ready})", unit.state);
    if unit.dependencies.is_empty() {
        println!("  depends on:  -");
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
        println!(
            "  {label:<12} {:<width$}  {:<9}  (needs {}: {mark})",
            dependency.name.as_str(),
            dependency.current.as_str(),
            dependency.required.as_str(),
        );
    }
    let dependents: Vec<&str> = unit.dependents.iter().map(|d| d.as_str()).collect();
    println!(
        "  dependents:  {}",
        if dependents.is_empty() {
            "-".to_owned()
        } else {
            dependents.join(", ")
        }
    );
    println!("  registered:  {}", timestamp(unit.registered_at_ms));
    println!("  started:     {}", timestamp(unit.started_at_ms));
    println!("  finished:    {}", timestamp(unit.finished_at_ms));
    if let Some(failure) = &unit.failure {
        println!("  failure:     {}", failure.reason);
        if let (Some(cause), Some(reason)) = (&failure.cause, &failure.cause_reason) {
            println!("  root cause:  {cause}: {reason}");
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
    println!(
        "{:<width$}  {:<9}  {:<5}  {:<23}  {:>8}",
        "UNIT", "STATE", "READY", "STARTED", "RAN"
    );
    for unit in units {
        let ran = match (unit.started_at_ms, unit.finished_at_ms) {
            (Some(start), Some(end)) => duration(Duration::from_millis(end.saturating_sub(start))),
            (Some(_), None) => "running".to_owned(),
            _ => "-".to_owned(),
        };
        println!(
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
        EventKind::Started { unit } => format!("started     {unit}"),
        EventKind::Completed { unit } => format!("completed   {unit}"),
        EventKind::Failed { unit, reason, .. } => format!("failed      {unit}: {reason}"),
    };
    println!("{time}  #{:<6} {line}", event.seq);
}
