//! The agent's state file (SPEC §4 "State survives an agent restart"): where it lives, who may own
//! it, the lock that keeps two agents off one file, and the start sequence that turns it into a
//! graph.
//!
//! - **Where.** `--state FILE`, else beside the socket: the socket path with `.journal` appended
//!   (`…/unitsync/agent.sock.journal`), so each agent has its own and it lives in the socket's
//!   private directory; on Windows, where the socket is a pipe name, `<temp dir>/unitsync-<user>.journal`.
//! - **Who.** The file's directory must pass the same test as the socket's (a real directory, owned
//!   by this user or root-and-sticky, not writable by others; created `0700` if missing). The file, if
//!   it exists, must be a regular file owned by this user: a symbolic link is refused, never followed
//!   (whoever can plant a link could make the agent read and rewrite another file). The journal
//!   rewrites the file on every start (compaction), always creating it `0600`.
//! - **One agent per file.** The agent takes an exclusive `flock` on `FILE.lock` (created `0600`,
//!   never removed: removing a lock file is racy) before it reads the journal, and holds it for its
//!   life, so a second agent given the same `--state` (on another socket) refuses to start instead of
//!   compacting the file under the first one's writer.
//! - **Start.** [`open`] checks, locks, opens the journal (cutting a torn tail with a warning), and
//!   restores its events into a graph whose sink is the journal's writer; a file that is not a
//!   unitsync journal, or does not replay, is an error naming the file and `--fresh`.
//!
//! This module owns the file's place and guard; the file format is `journal`'s, the serving
//! `server`'s.

use crate::journal::{self, DroppedTail, JournalError, JournalHandle};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unitsync_core::{Graph, GraphBuilder};

/// How the agent keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOptions {
    /// The journal file.
    pub path: PathBuf,
    /// Discard whatever the file holds and start empty.
    pub fresh: bool,
    /// `fdatasync` every batch of records before acknowledging the changes in it (survives power
    /// loss, not only a crash of the agent; costs one sync per batch, shared by concurrent requests).
    pub sync: bool,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Its directory is unsafe or unusable.
    #[error("refusing the state file's directory {path}: {reason}")]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file itself is unsafe (a link, not a regular file, another user's).
    #[error("refusing the state file {path}: {reason}")]
    UnsafeFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another agent holds the file's lock.
    #[error(
        "another unitsync agent is using the state file {path} (it holds {lock}); stop that agent, \
         or give this one another --state", path = path.display(), lock = lock.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock the state file through {}: {source}", lock.display())]
    Lock {
        /// The lock file.
        lock: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The journal could not be opened or replayed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The state file used when `--state` names none: beside the socket (see the module docs).
pub fn default_state_path(socket: &Path) -> PathBuf {
    #[cfg(unix)]
    {
        let mut name = socket.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }
    #[cfg(windows)]
    {
        let _ = socket;
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned());
        std::env::temp_dir().join(format!("unitsync-{user}.journal"))
    }
}

/// Holds the state file's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: Option<File>,
}

/// A graph restored from the state file, with its journal running.
pub struct Restored {
    /// The graph, journaling every change from now on.
    pub graph: Graph,
    /// Waits until changes are in the file.
    pub journal: JournalHandle,
    /// Unix milliseconds of the graph's origin (the journal's), for wall-clock times.
    pub origin_unix_ms: u64,
    /// Keeps other agents off the file.
    pub lock: StateLock,
    /// How many events were replayed.
    pub events: usize,
    /// What was cut off the end of the file, if anything.
    pub dropped: Option<DroppedTail>,
}

/// Checks, locks, opens and replays the state file (see the module docs), on the current tokio
/// runtime (large and synced journal batches are written on its blocking pool). `builder` sets
/// everything but the origin and the sink.
pub fn open(options: &StateOptions, builder: GraphBuilder) -> Result<Restored, StateError> {
    let path = options.path.as_path();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        crate::socket::secure_directory(dir).map_err(|reason| StateError::UnsafeDirectory {
            path: dir.to_owned(),
            reason,
        })?;
    }
    check_file(path)?;
    let lock = lock(path)?;
    let began = Instant::now();
    let opened = journal::open(path, options.fresh)?;
    let origin_unix_ms = opened.origin_unix_ms;
    let events = opened.events.len();
    let dropped = opened.dropped.clone();
    let (graph, journal) = opened.restore(builder, options.sync)?;
    tracing::info!(
        path = %path.display(),
        events,
        units = graph.len(),
        took_ms = began.elapsed().as_millis() as u64,
        fresh = options.fresh,
        sync = options.sync,
        "state restored"
    );
    Ok(Restored {
        graph,
        journal,
        origin_unix_ms,
        lock,
        events,
        dropped,
    })
}

/// A state file that exists must be a regular file of this user's (Unix).
fn check_file(path: &Path) -> Result<(), StateError> {
    let unsafe_file = |reason: String| StateError::UnsafeFile {
        path: path.to_owned(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(unsafe_file(format!("cannot inspect it: {error}"))),
        Ok(meta) if meta.file_type().is_symlink() => Err(unsafe_file(
            "it is a symbolic link, which the agent does not follow; pass the real file with \
             --state, or remove the link"
                .to_owned(),
        )),
        Ok(meta) if !meta.is_file() => Err(unsafe_file("it is not a regular file".to_owned())),
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let uid = crate::socket::current_uid();
                if meta.uid() != uid {
                    return Err(unsafe_file(format!(
                        "it is owned by uid {}, not by you (uid {uid})",
                        meta.uid()
                    )));
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            Ok(())
        }
    }
}

/// `FILE.lock`, locked exclusively (Unix; elsewhere a no-op).
fn lock(path: &Path) -> Result<StateLock, StateError> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock)
            .map_err(|source| StateError::Lock {
                lock: lock.clone(),
                source,
            })?;
        // SAFETY: flock has no memory-safety preconditions; the descriptor is valid because `file`
        // owns it and outlives the call.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let source = io::Error::last_os_error();
            return Err(if source.kind() == io::ErrorKind::WouldBlock {
                StateError::Locked {
                    path: path.to_owned(),
                    lock,
                }
            } else {
                StateError::Lock { lock, source }
            });
        }
        Ok(StateLock { _file: Some(file) })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(StateLock { _file: None })
    }
}
