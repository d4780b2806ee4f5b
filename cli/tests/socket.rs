//! SPEC §4 the agent and its socket: default paths, directory and socket-file permissions, refusing
//! unsafe directories, the peer-uid check, stale sockets, a second agent, clean shutdown on
//! SIGTERM / SIGINT (socket removed, journal flushed, blocked clients told, and carrying on once an
//! agent is back), and the state file's own guards: created 0600 (with its lock) whatever the umask,
//! never followed through a symbolic link, refused in a directory others can write or when another
//! user owns it.

#![cfg(unix)] // real Unix sockets, signals and uids throughout

mod common;

use common::{is_root, run, tempdir, unitsync, Agent};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn the_socket_directory_is_created_0700_and_the_socket_is_not_accessible_to_others() {
    let agent = Agent::start();
    let dir = agent.socket.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "directory mode");
    let socket_mode = mode(&agent.socket);
    assert_eq!(socket_mode & 0o077, 0, "socket mode {socket_mode:o}");
    let meta = std::fs::symlink_metadata(&agent.socket).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
}

#[test]
fn the_default_socket_is_under_xdg_runtime_dir() {
    let dir = tempdir();
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let expected = runtime.join("unitsync").join("agent.sock");
    let mut command = unitsync();
    command
        .arg("agent")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("UNITSYNC_LOG", "info");
    let agent = Agent::launch(command, dir, expected.clone()).expect("agent starts");
    agent.log_line(&expected.display().to_string());
    assert!(expected.exists());
    assert_eq!(mode(expected.parent().unwrap()), 0o700);
    // A client with the same environment finds it without being told.
    run(unitsync().arg("ping").env("XDG_RUNTIME_DIR", &runtime))
        .ok()
        .stdout_has("protocol 1");
}

#[test]
fn without_xdg_runtime_dir_the_socket_is_in_the_temp_dir_per_uid() {
    let dir = tempdir();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let expected = dir
        .path()
        .join(format!("unitsync-{uid}"))
        .join("agent.sock");
    let mut command = unitsync();
    command
        .arg("agent")
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", dir.path())
        .env("UNITSYNC_LOG", "info");
    let tmp = dir.path().to_owned();
    let agent = Agent::launch(command, dir, expected.clone()).expect("agent starts");
    assert!(agent.socket.exists());
    assert_eq!(mode(expected.parent().unwrap()), 0o700);
    run(unitsync()
        .arg("ping")
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &tmp))
    .ok();
}

/// Starts an agent on `socket` and expects it to refuse (exit 1) with `reason`.
#[track_caller]
fn refused(dir: tempfile::TempDir, socket: &Path, reason: &str) {
    match Agent::start_on(dir, socket, &[]) {
        Ok(_) => panic!("the agent should have refused {}", socket.display()),
        Err(run) => {
            run.code(1).stderr_has(reason);
            assert!(!socket.exists(), "no socket may be created");
        }
    }
}

#[test]
fn a_socket_directory_owned_by_someone_else_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown a directory to another user");
        return;
    }
    let dir = tempdir();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let socket = theirs.join("agent.sock");
    refused(dir, &socket, "it is owned by uid 65534, not by you");
}

#[test]
fn a_symlinked_socket_directory_is_refused() {
    let dir = tempdir();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let socket = link.join("agent.sock");
    refused(dir, &socket, "it is a symbolic link");
    assert!(!real.join("agent.sock").exists());
}

#[test]
fn a_socket_directory_writable_by_others_is_refused() {
    let dir = tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open.join("agent.sock");
    refused(dir, &socket, "writable by other users");
}

#[test]
fn something_that_is_not_a_socket_is_never_replaced() {
    let dir = tempdir();
    let socket = dir.path().join("agent.sock");
    std::fs::write(&socket, "precious").unwrap();
    match Agent::start_on(dir, &socket, &[]) {
        Ok(_) => panic!("the agent should have refused"),
        Err(run) => {
            run.code(1)
                .stderr_has("is not a socket; refusing to replace it");
        }
    }
}

/// `DIR/run/agent.sock`, with `run` created `0700` as the agent would make it.
fn private_socket_in(dir: &tempfile::TempDir) -> PathBuf {
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    run_dir.join("agent.sock")
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempdir();
    let socket = private_socket_in(&dir);
    // A socket file left behind by an agent that died: bound, nobody listening any more.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    run(unitsync().arg("ping").arg("--socket").arg(&socket)).code(5);

    let agent = Agent::start_on(dir, &socket, &[]).expect("the agent replaces a stale socket");
    agent.log_line("removing stale socket file");
    agent.run(&["ping"]).ok();
    assert_eq!(mode(&agent.socket) & 0o077, 0);
}

#[test]
fn a_second_agent_on_a_live_socket_is_refused_and_the_first_keeps_serving() {
    let agent = Agent::start();
    agent.run(&["start", "before"]).ok();
    let second = run(unitsync()
        .arg("agent")
        .arg("--socket")
        .arg(&agent.socket)
        .env("UNITSYNC_LOG", "info"));
    second
        .code(1)
        .stderr_has("an agent is already running on")
        .stderr_has(&agent.socket.display().to_string());
    assert!(!second.stderr.contains("listening on"), "{second:#?}");
    // The first agent, its socket and its state are untouched.
    assert!(agent.socket.exists());
    assert_eq!(agent.state("before"), "started");
    agent.run(&["complete", "before"]).ok();
}

#[test]
fn another_users_connection_is_refused_by_peer_uid() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let dir = tempdir();
    // Let `nobody` reach the socket, so the only thing stopping it is the agent's peer check:
    // the path is traversable (0711, not writable), the socket file made world-writable by hand.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = run_dir.join("agent.sock");
    let agent = Agent::start_on(dir, &socket, &[]).expect("agent starts");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut as_nobody = unitsync();
    as_nobody
        .args(["ping", "--socket"])
        .arg(&socket)
        .uid(65534)
        .gid(65534);
    let refused = run(&mut as_nobody);
    refused
        .code(5)
        .stderr_has("refused the connection: uid 65534 may not use the agent of uid 0");
    agent.log_line("refusing connection");
    agent.run(&["ping"]).ok();
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_tells_blocked_clients() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    let blocked = agent.spawn(&["start", "claude"]);
    blocked.stderr_line("claude waits for git (unknown)");
    let watcher = agent.spawn(&["watch", "--json", "--from", "1"]);
    // Subscribed once it has printed the first event.
    assert!(watcher.stdout.wait_count(1).is_some());
    // An idle connection must not hold shutdown up either.
    let mut idle = agent.raw();
    idle.hello();

    let signalled = std::time::Instant::now();
    agent.proc.signal(libc::SIGTERM);
    // Blocked clients are told, and (having no --timeout) wait for an agent to come back.
    let lost = format!("lost the agent at {}; reconnecting", agent.socket.display());
    blocked.stderr_line(&lost);
    watcher.stderr_line(&lost);
    assert!(idle.recv().is_none(), "the idle connection is closed");
    let socket = agent.socket.clone();
    let Agent { proc, dir, .. } = agent;
    let run = proc.finish();
    run.ok();
    // Promptly: an idle connection must not make shutdown wait out its 2 s drain timeout.
    let took = signalled.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "stopping took {took:?}"
    );
    assert!(run.stderr.contains("agent stopping"), "{run:#?}");
    assert!(run.stderr.contains("journal flushed"), "{run:#?}");
    assert!(!socket.exists(), "the socket file is removed");

    // A new agent on the same socket has the state; the blocked start and the watch carry on.
    let again = Agent::start_on(dir, &socket, &[]).expect("restart");
    again.run(&["start", "git"]).ok();
    again.run(&["complete", "git"]).ok();
    blocked.finish().ok();
    assert_eq!(again.state("claude"), "started");
    let seqs: Vec<u64> = watcher
        .stdout
        .wait_count(6)
        .expect("six events")
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no repeats: {seqs:?}");
}

#[test]
fn sigint_right_after_listening_removes_the_socket() {
    // The signal is sent the instant the agent says it listens: handlers must already be in place.
    let agent = Agent::start();
    agent.proc.signal(libc::SIGINT);
    let socket = agent.socket.clone();
    let Agent { proc, dir, .. } = agent;
    proc.finish().ok();
    assert!(!socket.exists(), "the socket file is removed");
    // A new agent starts on the same path without finding anything stale.
    let again = Agent::start_on(dir, &socket, &[]).expect("restart");
    assert!(!again.proc.stderr.all().iter().any(|l| l.contains("stale")));
    again.run(&["ping"]).ok();
}

#[test]
fn the_state_file_and_its_lock_are_private_even_with_umask_000() {
    let dir = tempdir();
    let socket = dir.path().join("run").join("agent.sock");
    // The agent under a umask that would make every file world-writable.
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("umask 000; exec \"$0\" agent --socket \"$1\"")
        .arg(common::BIN)
        .arg(&socket)
        .env_remove("UNITSYNC_STATE")
        .env("UNITSYNC_LOG", "info")
        .stdin(std::process::Stdio::null());
    let agent = Agent::launch(command, dir, socket.clone()).expect("agent starts");
    agent.run(&["start", "x"]).ok();
    let state = common::journal_of(&socket);
    let lock = {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        std::path::PathBuf::from(name)
    };
    for file in [&state, &lock] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&socket) & 0o077, 0);
    // Still private after a restart rewrote (compacted) the journal.
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let agent = stopped.restart(&[]);
    assert_eq!(agent.state("x"), "started");
    assert_eq!(mode(&state), 0o600);
}

#[test]
fn a_state_file_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempdir();
    let target = dir.path().join("precious");
    std::fs::write(&target, "someone else's data").unwrap();
    let socket = private_socket_in(&dir);
    let state = common::journal_of(&socket);
    std::os::unix::fs::symlink(&target, &state).unwrap();
    for fresh in [false, true] {
        let mut command = unitsync();
        command
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .env("UNITSYNC_LOG", "info");
        if fresh {
            command.arg("--fresh");
        }
        run(&mut command)
            .code(1)
            .stderr_has("refusing the state file")
            .stderr_has("symbolic link")
            .stderr_has(&state.display().to_string());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "someone else's data"
        );
        assert!(std::fs::symlink_metadata(&state)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!socket.exists(), "no socket is left behind");
    }
}

#[test]
fn a_state_file_in_a_directory_others_can_write_is_refused() {
    let dir = tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = open.join("ws.journal");
    let socket = dir.path().join("run").join("agent.sock");
    run(unitsync()
        .arg("agent")
        .arg("--socket")
        .arg(&socket)
        .arg("--state")
        .arg(&state)
        .env("UNITSYNC_LOG", "info"))
    .code(1)
    .stderr_has("refusing the state file's directory")
    .stderr_has("writable by other users");
    assert!(!state.exists());
}

#[test]
fn a_state_file_owned_by_someone_else_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown a file to another user");
        return;
    }
    let agent = Agent::start();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let state = stopped.state_file();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    stopped
        .refused(&[])
        .code(1)
        .stderr_has("refusing the state file")
        .stderr_has("owned by uid 65534");
}
