//! Processes the report measures or needs: the built `unitsync` binary (found next to the running
//! executable), timed spawns of short commands (`/bin/true`, `unitsync ping`), child servers on a
//! private socket (the agent, the raw echo server) and their resident memory from `/proc`; and, for
//! criterion benches run without the binary, an agent in a background thread of this process.
//!
//! Every child is started on a socket in its own temporary `0700` directory and is stopped (SIGTERM,
//! then SIGKILL) when its handle drops, by its own pid only. This module starts, waits for and reads
//! processes; it must not interpret what they serve.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `unitsync` binary built into the same target directory as the running executable.
///
/// Bench executables live in `target/<profile>/deps/`, binaries in `target/<profile>/`; both are
/// looked at. The error says where it looked and how to build it.
pub fn unitsync_binary() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("unitsync")];
    if dir.file_name().is_some_and(|name| name == "deps") {
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join("unitsync"));
        }
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "the unitsync binary is missing (looked for {}); build it with \
                 `cargo build --release -p unitsync` using the same CARGO_TARGET_DIR",
                candidates[0].display()
            )
        })
}

/// Runs `command` to completion with no input or output and returns how long spawn + wait took.
pub fn time_command(command: &mut Command) -> io::Result<Duration> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let begin = Instant::now();
    let status = command.status()?;
    let elapsed = begin.elapsed();
    if !status.success() {
        return Err(io::Error::other(format!(
            "{command:?} exited with {status}"
        )));
    }
    Ok(elapsed)
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Raises this process's soft limit of open files to its hard limit; returns the new soft limit
/// (0 if it cannot be read).
pub fn raise_fd_limit() -> u64 {
    unitsync_ipc::socket::raise_descriptor_limit()
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The CPUs the calling thread may run on.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set; sched_getaffinity writes at most `size`
    // bytes into it for the calling thread (pid 0); CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// The CPUs the calling thread may run on: unknown off Linux.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU affinity is only read on Linux",
    ))
}

/// Keeps the calling thread on one CPU until dropped (Linux only; elsewhere pinning is refused).
#[cfg(not(target_os = "linux"))]
pub struct PinnedCpu;

/// Pins the calling thread to `cpu`: refused off Linux, where the placement rows are skipped.
#[cfg(not(target_os = "linux"))]
pub fn pin_to_cpu(_cpu: usize) -> io::Result<PinnedCpu> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU pinning is only done on Linux",
    ))
}

/// Keeps the calling thread on one CPU until dropped, when its previous CPU set is restored.
/// Processes and threads it starts meanwhile inherit the one-CPU set for good.
#[cfg(target_os = "linux")]
pub struct PinnedCpu {
    previous: libc::cpu_set_t,
}

/// Pins the calling thread to `cpu` (see [`PinnedCpu`]).
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<PinnedCpu> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: as in `allowed_cpus`; sched_setaffinity only reads the set we pass, for this thread.
    unsafe {
        let mut previous: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut previous) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, size, &one) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PinnedCpu { previous })
    }
}

#[cfg(target_os = "linux")]
impl Drop for PinnedCpu {
    fn drop(&mut self) {
        // SAFETY: restores the set read by `pin_to_cpu`, for the calling thread only.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.previous);
        }
    }
}

/// A child process serving on a socket in a private temporary directory; stopped on drop.
pub struct SocketChild {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    /// What was started, for the report (e.g. `unitsync agent`).
    pub description: String,
}

impl SocketChild {
    /// Starts `command(socket_path)` and waits (up to 10 s) until the socket accepts connections.
    pub fn spawn(
        description: impl Into<String>,
        command: impl FnOnce(&Path) -> Command,
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("unitsync-bench-")
            .tempdir()?;
        let socket = dir.path().join("agent.sock");
        let mut command = command(&socket);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn()?;
        let mut this = Self {
            child,
            socket,
            _dir: dir,
            description: description.into(),
        };
        this.wait_until_listening()?;
        Ok(this)
    }

    /// `unitsync agent` from `binary` (logging only warnings), journaling to the default state
    /// file beside its socket, i.e. a fresh one in the private directory: what users run.
    pub fn unitsync_agent(binary: &Path) -> io::Result<Self> {
        Self::unitsync_agent_with(binary, &[])
    }

    /// `unitsync agent --no-state` from `binary`: no journal, state in memory only.
    pub fn unitsync_agent_without_state(binary: &Path) -> io::Result<Self> {
        Self::unitsync_agent_with(binary, &["--no-state"])
    }

    fn unitsync_agent_with(binary: &Path, args: &[&str]) -> io::Result<Self> {
        let mut description = "`unitsync agent".to_owned();
        for arg in args {
            description.push(' ');
            description.push_str(arg);
        }
        description.push('`');
        Self::spawn(description, |socket| {
            let mut command = Command::new(binary);
            command
                .arg("agent")
                .arg("--socket")
                .arg(socket)
                .args(args)
                .env_remove("UNITSYNC_STATE")
                .env("UNITSYNC_LOG", "warn");
            command
        })
    }

    /// The running executable again, with `flag SOCKET` and `extra` (a hidden server mode of the
    /// `report`).
    pub fn reexec(description: impl Into<String>, flag: &str, extra: &[&str]) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        Self::spawn(description, |socket| {
            let mut command = Command::new(exe);
            command.arg(flag).arg(socket).args(extra);
            command
        })
    }

    fn wait_until_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited before listening ({status})",
                    self.description
                )));
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not listen on {} within 10 s",
                    self.description,
                    self.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The socket it serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size, in KiB.
    pub fn rss_kib(&self) -> io::Result<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for SocketChild {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child by its pid; it has not been reaped yet, so the pid
            // cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a bench's agent runs: a `unitsync agent` child process, or a thread of this process.
pub enum BenchAgent {
    /// The built binary, as a child.
    Child(SocketChild),
    /// `unitsync_ipc::Agent` on a runtime in a background thread (runs until the process exits).
    Thread {
        /// Its socket.
        socket: PathBuf,
        /// Keeps the socket's directory alive.
        _dir: tempfile::TempDir,
    },
}

impl BenchAgent {
    /// `unitsync agent` if the binary is built, else an in-process agent thread.
    pub fn start() -> io::Result<Self> {
        if let Ok(binary) = unitsync_binary() {
            return SocketChild::unitsync_agent(&binary).map(Self::Child);
        }
        let dir = tempfile::Builder::new()
            .prefix("unitsync-bench-")
            .tempdir()?;
        let socket = dir.path().join("agent.sock");
        let (ready, bound) = std::sync::mpsc::channel();
        let path = socket.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                match unitsync_ipc::Agent::bind(&path, unitsync_core::Graph::new()).await {
                    Ok(agent) => {
                        let _ = ready.send(Ok(()));
                        agent.serve_until(std::future::pending()).await;
                    }
                    Err(error) => {
                        let _ = ready.send(Err(io::Error::other(error.to_string())));
                    }
                }
            });
        });
        bound
            .recv()
            .map_err(|_| io::Error::other("the agent thread died"))??;
        Ok(Self::Thread { socket, _dir: dir })
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        match self {
            Self::Child(child) => child.socket(),
            Self::Thread { socket, .. } => socket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_restores() {
        let before = allowed_cpus().unwrap();
        {
            let _pinned = pin_to_cpu(before[0]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![before[0]]);
        }
        assert_eq!(allowed_cpus().unwrap(), before);
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn times_a_trivial_process() {
        assert!(time_command(&mut Command::new("/bin/true")).unwrap() > Duration::ZERO);
        assert!(time_command(&mut Command::new("/bin/false")).is_err());
    }
}
