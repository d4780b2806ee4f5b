//! The scripts of a `unitsync run`: naming them, launching each in a process group of its own with
//! the agent's socket in its environment, forwarding every output line, and stopping them.
//!
//! Each script runs in its own process group (Unix), so that stopping a script reaches everything it
//! started, and so that the terminal's Ctrl-C reaches `unitsync run` alone, which then stops the
//! scripts itself and still prints the summary. A script's supervisor task owns its `Child` and is
//! the only one that waits for it or signals it. This module does not talk to the agent and does not
//! format output: lines go to the display as raw text.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// One script to run.
#[derive(Debug, Clone)]
pub struct Script {
    /// Its short name: the file name without extension, made unique within the run.
    pub name: String,
    /// The file.
    pub path: PathBuf,
}

/// Names scripts after their files (`ws/clone.sh` → `clone`), numbering repeats (`clone-2`).
pub fn name_scripts(paths: &[PathBuf]) -> Vec<Script> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    paths
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .filter(|stem| !stem.is_empty())
                .unwrap_or_else(|| "script".to_owned());
            let count = seen.entry(stem.clone()).or_insert(0);
            *count += 1;
            let name = if *count == 1 {
                stem
            } else {
                format!("{stem}-{count}")
            };
            Script {
                name,
                path: path.clone(),
            }
        })
        .collect()
}

/// How hard to stop the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep running.
    No,
    /// Ask politely (SIGINT to the process group, as a terminal's Ctrl-C would).
    Interrupt,
    /// Ask firmly (SIGTERM to the process group).
    Terminate,
    /// SIGKILL to the process group.
    Kill,
}

/// One line a script wrote.
#[derive(Debug)]
pub struct OutputLine {
    /// Index of the script in the run.
    pub script: usize,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// How a script ended.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// It exited (or was killed) with this status.
    Exited(ExitStatus),
    /// It could not be launched at all.
    NotLaunched,
}

impl Ending {
    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        matches!(self, Self::Exited(status) if status.success())
    }

    /// `status 1`, `signal 15`, `not launched`.
    pub fn describe(self) -> String {
        match self {
            Self::Exited(status) => describe_status(status),
            Self::NotLaunched => "not launched".to_owned(),
        }
    }

    /// The exit code a shell would report (128 + signal for a killed script).
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(status) => exit_code(status),
            Self::NotLaunched => 127,
        }
    }
}

/// `status 1` or `signal 9`.
pub fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("status {code}"),
        None => "an unknown status".to_owned(),
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    status.code().unwrap_or(1)
}

/// Makes `start` and `exec` quiet, like `--quiet`, when set to anything but empty, `0` or `false`.
pub const QUIET_ENV: &str = "UNITSYNC_QUIET";

/// What every script's environment gets.
pub struct Environment {
    /// `UNITSYNC_SOCKET`.
    pub socket: PathBuf,
    /// A prefix for `UNITSYNC_OWNER`, unique to this run (the script's name is appended).
    pub owner_prefix: String,
    /// Prepended to `PATH`, so scripts find this very `unitsync` binary.
    pub bin_dir: Option<PathBuf>,
    /// Set `UNITSYNC_QUIET=1`, so the scripts' `start`/`exec` do not print what they wait for (when
    /// the run's live area already shows it). Otherwise the variable is left as inherited.
    pub quiet: bool,
}

impl Environment {
    /// The owner token of `script`, as the agent records it for `abandon`.
    pub fn owner(&self, script: &Script) -> String {
        format!("{}{}", self.owner_prefix, script.name)
    }
}

/// The program and arguments that run `path`: `sh` for shell scripts and non-executable files,
/// the file itself otherwise (on Windows: PowerShell and cmd scripts by extension).
fn invocation(path: &Path) -> (OsString, Vec<OsString>) {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let file = path.as_os_str().to_owned();
    if cfg!(windows) {
        match extension.as_deref() {
            Some("ps1") => {
                return (
                    "powershell".into(),
                    vec!["-NoProfile".into(), "-File".into(), file],
                )
            }
            Some("cmd" | "bat") => return ("cmd".into(), vec!["/C".into(), file]),
            Some("exe") => return (file, Vec::new()),
            _ => return ("sh".into(), vec![file]),
        }
    }
    if extension.as_deref() != Some("sh") && is_executable(path) {
        return (file, Vec::new());
    }
    ("sh".into(), vec![file])
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

/// Launches `script` (index `index`) and supervises it until it ends, forwarding its output lines
/// to `lines` and obeying `stop`. Returns how it ended.
pub async fn supervise(
    index: usize,
    script: Script,
    environment: &Environment,
    lines: mpsc::UnboundedSender<OutputLine>,
    mut stop: watch::Receiver<Stop>,
) -> (Ending, Option<io::Error>) {
    let (program, args) = invocation(&script.path);
    let mut command = Command::new(&program);
    command
        .args(&args)
        .env("UNITSYNC_SOCKET", &environment.socket)
        .env(crate::commands::OWNER_ENV, environment.owner(&script))
        .env("UNITSYNC_SCRIPT", &script.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(bin_dir) = &environment.bin_dir {
        let mut paths = vec![bin_dir.clone()];
        if let Some(existing) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            command.env("PATH", joined);
        }
    }
    if environment.quiet {
        command.env(QUIET_ENV, "1");
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return (Ending::NotLaunched, Some(error)),
    };
    let mut forwarding = Vec::new();
    if let Some(out) = child.stdout.take() {
        forwarding.push(tokio::spawn(forward(index, out, lines.clone())));
    }
    if let Some(err) = child.stderr.take() {
        forwarding.push(tokio::spawn(forward(index, err, lines.clone())));
    }
    let group = child.id();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = stop.changed() => {
                let level = *stop.borrow_and_update();
                if changed.is_err() || level == Stop::No {
                    continue;
                }
                signal(&mut child, group, level);
            }
        }
    };
    if *stop.borrow() != Stop::No {
        // The run is stopping: whatever the script left in the background goes with it.
        signal(&mut child, group, Stop::Kill);
    }
    // A process the script left in the background may hold its output open: forward what is
    // already written, but do not wait for such a process to exit.
    for task in forwarding {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), task).await;
    }
    match status {
        Ok(status) => (Ending::Exited(status), None),
        Err(error) => (Ending::NotLaunched, Some(error)),
    }
}

/// Sends `level` to the script's whole process group `group` (Unix), or kills it (elsewhere).
fn signal(child: &mut Child, group: Option<u32>, level: Stop) {
    #[cfg(unix)]
    {
        let _ = child;
        let Some(pid) = group else { return };
        let signal = match level {
            Stop::No => return,
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        let Ok(group) = libc::pid_t::try_from(pid) else {
            return;
        };
        // SAFETY: killpg only sends a signal and has no memory-safety preconditions. The group id
        // is our child's pid, which leads the process group it was spawned into
        // (`process_group(0)`); Linux and the BSDs do not hand out a pid while a process group of
        // that id still has members, so the signal cannot reach an unrelated group while any of
        // the script's processes live (once none does, it fails with ESRCH).
        unsafe {
            libc::killpg(group, signal);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = group;
        if level != Stop::No {
            let _ = child.start_kill();
        }
    }
}

/// Forwards each line of `reader` until it closes.
async fn forward(
    script: usize,
    reader: impl AsyncRead + Unpin,
    lines: mpsc::UnboundedSender<OutputLine>,
) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buffer.last(), Some(b'\n' | b'\r')) {
                    buffer.pop();
                }
                let text = String::from_utf8_lossy(&buffer).into_owned();
                if lines.send(OutputLine { script, text }).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_named_after_their_files_and_repeats_numbered() {
        let paths: Vec<PathBuf> = ["ws/clone.sh", "other/clone.sh", "ws/agent", "ws/.sh"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let names: Vec<String> = name_scripts(&paths).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["clone", "clone-2", "agent", ".sh"]);
    }
}
