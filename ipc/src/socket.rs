//! Where the agent listens and who may talk to it (SPEC §4).
//!
//! - The default endpoint is `$XDG_RUNTIME_DIR/unitsync/agent.sock`, else
//!   `<tmp>/unitsync-<uid>/agent.sock`; on Windows the named pipe `unitsync-<user>`.
//! - On Unix the socket's directory is created `0700`; an existing one must be a real directory (not
//!   a symlink) owned by this user (or by root with the sticky bit, like `/tmp`, for a `--socket` in
//!   such a place) and not writable by others, else the agent refuses to use it.
//! - The socket file is created with mode `0600` by an `fchmod` *before* `bind` (interprocess does
//!   this), so it is never world-accessible, not even for an instant.
//! - Every accepted connection's peer uid is checked (`SO_PEERCRED`/`getpeereid` through
//!   interprocess) and another user is refused, whatever the file mode says.
//! - A socket file nobody answers on is stale and replaced; a live agent makes a second one refuse.
//!
//! This module owns endpoint paths, permissions and peer checks; it knows nothing of the protocol.

use interprocess::local_socket::{
    tokio::Stream, traits::tokio::Stream as _, ListenerOptions, Name,
};
use std::io;
use std::path::{Path, PathBuf};

/// Why an endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The directory for the socket is unsafe or unusable.
    #[error("refusing socket directory {path}: {reason}")]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something that is not a socket sits at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A live agent already answers at the path.
    #[error("an agent is already running on {0}; use it (`unitsync ping` shows it), stop it, or pass another --socket")]
    AgentAlreadyRunning(PathBuf),
    /// The endpoint could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The endpoint.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The endpoint used when neither `--socket` nor `UNITSYNC_SOCKET` names one.
pub fn default_socket_path() -> PathBuf {
    #[cfg(unix)]
    {
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
            Some(runtime) => Path::new(&runtime).join("unitsync").join("agent.sock"),
            None => std::env::temp_dir()
                .join(format!("unitsync-{}", current_uid()))
                .join("agent.sock"),
        }
    }
    #[cfg(windows)]
    {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned());
        PathBuf::from(format!("unitsync-{user}"))
    }
}

/// The effective uid of this process.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Raises this process's soft limit on open descriptors to its hard limit: every connection is a
/// descriptor, and a workspace with thousands of blocked `start`s needs thousands of them, on the
/// agent's side and in a process that opens many clients. Returns the soft limit in force
/// afterwards; `None` where there is no such limit (Windows).
pub fn raise_descriptor_limit() -> io::Result<Option<u64>> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, aligned local.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            // SAFETY: setrlimit reads one `rlimit` through a pointer to a live, initialised local.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every Unix
        Ok(Some(limit.rlim_cur as u64))
    }
    #[cfg(not(unix))]
    {
        Ok(None)
    }
}

/// The interprocess name for `path`: a file path on Unix, a pipe name on Windows.
pub(crate) fn endpoint_name(path: &Path) -> io::Result<Name<'_>> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_fs_name::<GenericFilePath>()
    }
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let pipe = path
            .file_name()
            .map(|name| name.to_os_string())
            .unwrap_or_else(|| path.as_os_str().to_os_string());
        pipe.to_ns_name::<GenericNamespaced>()
            .map(|name| name.into_owned())
    }
}

/// Connects to whatever listens at `path`.
pub(crate) async fn connect(path: &Path) -> io::Result<Stream> {
    Stream::connect(endpoint_name(path)?).await
}

/// Makes sure the socket's directory exists and is safe (Unix), creating it `0700` if needed.
pub fn prepare_directory(path: &Path) -> Result<(), SocketError> {
    let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(());
    };
    secure_directory(dir).map_err(|reason| SocketError::UnsafeDirectory {
        path: dir.to_owned(),
        reason,
    })
}

/// Makes sure `dir` exists and only this user can change what is in it (Unix): creates it `0700`
/// (parents as needed) if missing; otherwise it must be a real directory (not a symlink), owned by
/// this user (or by root with the sticky bit, like `/tmp`) and not writable by others. Returns why
/// not. Shared by the socket's directory and the state file's.
pub(crate) fn secure_directory(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        match std::fs::symlink_metadata(dir) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|error| format!("cannot create it: {error}"))?;
                // `mode` is filtered by the umask; make sure the leaf is exactly 0700.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|error| format!("cannot set its mode: {error}"))?;
                Ok(())
            }
            Err(error) => Err(format!("cannot inspect it: {error}")),
            Ok(meta) if meta.file_type().is_symlink() => {
                Err("it is a symbolic link; remove it or choose another path".to_owned())
            }
            Ok(meta) if !meta.is_dir() => Err("it is not a directory".to_owned()),
            Ok(meta) => {
                let mode = meta.mode();
                let sticky = mode & 0o1000 != 0;
                if meta.uid() != current_uid() && !(meta.uid() == 0 && sticky) {
                    return Err(format!(
                        "it is owned by uid {}, not by you (uid {})",
                        meta.uid(),
                        current_uid()
                    ));
                }
                if mode & 0o022 != 0 && !sticky {
                    return Err(format!(
                        "it is writable by other users (mode {:o}); run `chmod go-w {}`",
                        mode & 0o7777,
                        dir.display()
                    ));
                }
                Ok(())
            }
        }
    }
    #[cfg(windows)]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates the agent's listener at `path`: refuses if a live agent answers there, replaces a stale
/// socket file, and creates the new one with mode `0600` (Unix).
pub async fn listen(
    path: &Path,
) -> Result<interprocess::local_socket::tokio::Listener, SocketError> {
    prepare_directory(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotASocket(path.to_owned()));
            }
            if connect(path).await.is_ok() {
                return Err(SocketError::AgentAlreadyRunning(path.to_owned()));
            }
            tracing::info!(path = %path.display(), "removing stale socket file");
            let _ = std::fs::remove_file(path);
        }
    }
    #[cfg(windows)]
    {
        if connect(path).await.is_ok() {
            return Err(SocketError::AgentAlreadyRunning(path.to_owned()));
        }
    }
    let listen_error = |source| SocketError::Listen {
        path: path.to_owned(),
        source,
    };
    let name = endpoint_name(path).map_err(listen_error)?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    options
        .create_tokio()
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => SocketError::AgentAlreadyRunning(path.to_owned()),
            _ => listen_error(source),
        })
}

/// Whether the peer on `stream` may use this agent: the same effective uid (Unix). On Windows the
/// named pipe's default security descriptor already limits it to the creating user and admins.
pub fn peer_allowed(stream: &Stream) -> Result<(), String> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::traits::StreamCommon as _;
        let creds = stream
            .peer_creds()
            .map_err(|error| format!("cannot read peer credentials: {error}"))?;
        match creds.euid() {
            Some(uid) if uid == current_uid() => Ok(()),
            Some(uid) => Err(format!(
                "uid {uid} may not use the agent of uid {}",
                current_uid()
            )),
            None => Err("the peer's uid is unknown".to_owned()),
        }
    }
    #[cfg(windows)]
    {
        let _ = stream;
        Ok(())
    }
}
