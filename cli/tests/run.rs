//! `unitsync run` and `unitsync timeline` through the real binary: the bundled example workspace in
//! order (the README's main command), prefixed plain output when piped, a failing script failing its
//! dependents, a script that forgets `complete`, Ctrl-C stopping every script, and `--json` output.
//! Scripts are real POSIX sh files in a temp dir; ordering is checked on what they printed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn unitsync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_unitsync"));
    // A private agent for every run, whatever the developer's shell has set.
    command
        .env_remove("UNITSYNC_SOCKET")
        .env_remove("UNITSYNC_OWNER")
        .env_remove("UNITSYNC_STATE")
        .env_remove("UNITSYNC_QUIET");
    command
        .env_remove("UNITSYNC_DEMO_FAIL")
        .env("NO_COLOR", "1");
    command
}

fn example_scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workspace");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/workspace exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    scripts
}

/// Writes `scripts` (name, body) into a fresh temp dir; returns the dir and the paths.
fn workspace(scripts: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = scripts
        .iter()
        .map(|(name, body)| {
            let path = dir.path().join(format!("{name}.sh"));
            std::fs::write(&path, format!("set -eu\n{body}\n")).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The index of the first line of `stdout` that is exactly `prefix | line`.
fn position(stdout: &str, script: &str, line: &str) -> usize {
    stdout
        .lines()
        .position(|l| l.trim_start().starts_with(&format!("{script} | {line}")))
        .unwrap_or_else(|| panic!("no line `{script} | {line}` in:\n{stdout}"))
}

fn run_json(paths: &[PathBuf], envs: &[(&str, &str)]) -> (Output, serde_json::Value) {
    let output = unitsync()
        .arg("run")
        .arg("--json")
        .args(paths)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}):\n{}\nstderr:\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    (output, report)
}

fn unit<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == name)
        .unwrap_or_else(|| panic!("no unit {name} in {report:#}"))
}

#[test]
fn the_example_workspace_runs_in_dependency_order_and_ends_with_the_timeline() {
    let output = unitsync()
        .arg("run")
        .args(example_scripts())
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{}",
        output.status,
        text(&output.stderr)
    );
    // Every dependency's last line comes before its dependent's first line.
    let order = [
        (("clone", "cloned 1,204 files"), ("install", "npm ci")),
        (
            ("clone", "cloned 1,204 files"),
            ("claude", "claude: indexing"),
        ),
        (("dotfiles", "3 links"), ("claude", "claude: indexing")),
        (("install", "added 812 packages"), ("build", "vite build")),
        (("install", "added 812 packages"), ("lint", "eslint src")),
        (("build", "dist/ 412 kB"), ("dev-server", "serving dist/")),
        (("build", "dist/ 412 kB"), ("tests", "vitest run")),
        (("lint", "0 problems"), ("tests", "vitest run")),
    ];
    for ((dep, dep_line), (unit, unit_line)) in order {
        assert!(
            position(&stdout, dep, dep_line) < position(&stdout, unit, unit_line),
            "{unit} ran before {dep} finished:\n{stdout}"
        );
    }
    assert!(stdout.contains("critical chain"), "{stdout}");
    let chain_start = stdout.find("critical chain").unwrap();
    let chain: Vec<&str> = stdout[chain_start..]
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().find(|w| *w != "<-"))
        .collect();
    // The longest path through the example ends at tests or the dev server, through build.
    assert!(chain.len() >= 4, "{chain:?}");
    assert_eq!(chain[chain.len() - 3..], ["build", "install", "clone"]);
    assert!(!stdout.contains('\u{1b}'), "piped output must be plain");
}

#[test]
fn a_failing_script_fails_its_dependents_and_the_run() {
    let (output, report) = run_json(&example_scripts(), &[("UNITSYNC_DEMO_FAIL", "install")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(report["ok"], false);
    assert_eq!(unit(&report, "install")["outcome"], "failed");
    assert_eq!(
        unit(&report, "install")["failure"],
        "npm ci: network timeout"
    );
    for dependent in ["build", "lint", "tests", "dev-server"] {
        let line = unit(&report, dependent);
        assert_eq!(line["outcome"], "failed", "{dependent}");
        assert_eq!(line["failure"], "dependency install failed", "{dependent}");
        assert!(line["started_ms"].is_null(), "{dependent} must never start");
    }
    for independent in ["clone", "dotfiles", "claude"] {
        assert_eq!(unit(&report, independent)["outcome"], "completed");
    }
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("script install exited with status 1"),
        "{stderr}"
    );
    // Script output went to stderr, prefixed, so that stdout stays one JSON document.
    assert!(stderr.contains("install | npm ci"), "{stderr}");
}

#[test]
fn a_script_that_forgets_to_complete_fails_its_unit_so_dependents_do_not_hang() {
    let (_dir, paths) = workspace(&[
        ("forgetful", "unitsync start forgetful\necho started"),
        (
            "dependent",
            "unitsync want dependent forgetful\nunitsync start dependent\nunitsync complete dependent",
        ),
    ]);
    let (output, report) = run_json(&paths, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        unit(&report, "forgetful")["failure"],
        "script exited (status 0) without completing"
    );
    assert_eq!(
        unit(&report, "dependent")["failure"],
        "dependency forgetful failed"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("forgetful ~ left forgetful started but not completed"),
        "{stderr}"
    );
    let scripts = report["scripts"].as_array().unwrap();
    assert_eq!(scripts[0]["exit_code"], 0);
    assert_eq!(
        scripts[1]["exit_code"], 3,
        "start exits 3 on a failed dependency"
    );
}

#[test]
fn scripts_are_quiet_only_when_the_live_view_shows_what_they_wait_for() {
    // Not on a terminal, so no live view: the scripts' `start` says what it waits for itself, and
    // UNITSYNC_QUIET is not set for them.
    let (_dir, paths) = workspace(&[
        (
            "late",
            "echo \"quiet=${UNITSYNC_QUIET-unset}\"\nunitsync want late early\nunitsync start late\nunitsync complete late",
        ),
        ("early", "unitsync start early\nunitsync complete early"),
    ]);
    let (output, report) = run_json(&paths, &[]);
    assert_eq!(output.status.code(), Some(0), "{report}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("quiet=unset"), "{stderr}");
}

#[test]
fn a_unit_nobody_registers_is_reported_after_the_timeout() {
    let (_dir, paths) = workspace(&[(
        "waiter",
        "unitsync want waiter ghost\nunitsync start waiter\nunitsync complete waiter",
    )]);
    let output = unitsync()
        .args(["run", "--timeout", "300ms"])
        .args(&paths)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(stdout.contains("never registered"), "{stdout}");
    assert!(stderr.contains("timed out after 300ms"), "{stderr}");
    assert!(
        stderr.contains("unit ghost was waited for but no script registered it"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_every_script_and_still_prints_the_summary() {
    let pids = tempfile::NamedTempFile::new().unwrap();
    let pid_file = pids.path().display().to_string();
    let (_dir, paths) = workspace(&[
        (
            "server",
            &format!(
                "unitsync start server\nsleep 300 &\necho $! >> {pid_file}\necho $$ >> {pid_file}\necho up\nwait"
            ),
        ),
        (
            "stubborn",
            &format!("trap '' INT\necho $$ >> {pid_file}\necho stubborn up\nwhile :; do sleep 1; done"),
        ),
    ]);
    let mut run = unitsync()
        .arg("run")
        .args(&paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both scripts said they are up (the run prints their lines), then interrupt it.
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !(seen.contains("server | up") && seen.contains("stubborn | stubborn up")) {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "run ended early: {seen}"
        );
        seen.push_str(&line);
    }
    // SAFETY: kill only sends a signal to the child we spawned and have not reaped.
    unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(rest.contains("critical chain"), "{rest}");
    assert!(rest.contains("server"), "{rest}");
    for pid in std::fs::read_to_string(pids.path())
        .unwrap()
        .split_whitespace()
    {
        let pid: libc::pid_t = pid.parse().unwrap();
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "process {pid} of a script survived Ctrl-C");
    }
}

#[test]
fn timeline_shows_what_a_running_agent_has_seen() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let (_dir2, paths) = workspace(&[
        ("first", "unitsync start first\nunitsync complete first"),
        (
            "second",
            "unitsync want second first\nunitsync start second\nunitsync complete second",
        ),
    ]);
    // `run --socket` on a path with no agent starts its own there; `timeline` needs a live agent, so
    // drive a real `agent` process instead and run the scripts against it.
    let mut agent = unitsync()
        .arg("agent")
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent_err = BufReader::new(agent.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(agent_err.read_line(&mut line).unwrap() > 0, "agent died");
    }
    let run = unitsync()
        .arg("run")
        .arg("--socket")
        .arg(&socket)
        .args(&paths)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let output = unitsync()
        .args(["timeline", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let timeline: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let chain: Vec<&str> = timeline["critical_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["unit"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["second", "first"]);
    assert_eq!(unit(&timeline, "second")["outcome"], "completed");
}
