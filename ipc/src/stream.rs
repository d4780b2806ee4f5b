//! [`LocalStream`]: a connected local socket, as the agent and the client use it. On Unix the
//! runtime is told to watch it for *readability only*; tokio's own `UnixStream` always asks for
//! writability too, and with edge-triggered `epoll` a socket then reports "writable" every time the
//! peer reads what it was sent: a sleeping thread is woken to learn that, and the peer's `recv`
//! pays for the wake-up. Every request and every answer is read by the other side, so every
//! exchange woke the sender once for nothing: on one CPU that made the agent's `ping` round trip
//! 1.45× a raw socket's instead of 1.10× (benches/README.md, "Sockets watched for reading only").
//! Room to write is waited for only when a write finds the socket's buffer full, through a second
//! registration (of a duplicate descriptor) that asks for writability and lives only until the next
//! write gets through. On Windows (named pipes) this is interprocess's stream unchanged.
//!
//! This module owns reading and writing bytes; it must not frame, parse or decide anything.

use interprocess::local_socket::tokio::Stream;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connected local socket (see the module docs). Read and written through `&LocalStream`, so
/// one task can read while another writes: at most one reader and one writer at a time (each
/// direction has one waker, as with tokio's own streams; the agent's answers to one connection
/// never overlap, see `server::Link`).
#[derive(Debug)]
pub struct LocalStream {
    #[cfg(unix)]
    socket: unix::Socket,
    #[cfg(not(unix))]
    stream: Stream,
}

impl LocalStream {
    /// Writes what the socket takes now, without waiting and without needing a runtime: `Ok(0)`
    /// only for empty `bytes`, `WouldBlock` when its buffer is full.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        #[cfg(unix)]
        {
            self.socket.try_write(bytes)
        }
        #[cfg(not(unix))]
        {
            let mut context = Context::from_waker(std::task::Waker::noop());
            match Pin::new(&mut &self.stream).poll_write(&mut context, bytes) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    /// Connects to whatever listens at `path` (see `socket`).
    pub async fn connect(path: &Path) -> io::Result<Self> {
        Self::new(crate::socket::connect(path).await?)
    }

    /// Takes over `stream` (Unix: moves it from tokio's registration to one for readability).
    /// Must run on a tokio runtime with I/O enabled.
    pub fn new(stream: Stream) -> io::Result<Self> {
        #[cfg(unix)]
        {
            Ok(Self {
                socket: unix::Socket::new(stream)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self { stream })
        }
    }
}

#[cfg(unix)]
mod unix {
    use super::*;
    use std::io::{ErrorKind, Read as _, Write as _};
    use std::os::fd::{AsFd as _, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::{Mutex, PoisonError};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    #[derive(Debug)]
    pub(super) struct Socket {
        /// Registered for readability (and hang-up) only.
        readable: AsyncFd<UnixStream>,
        /// While a write waits for room: a duplicate descriptor registered for writability.
        room: Mutex<Option<AsyncFd<OwnedFd>>>,
    }

    impl Socket {
        pub(super) fn new(stream: Stream) -> io::Result<Self> {
            let Stream::UdSocket(stream) = stream;
            // Leaves tokio's registration (and stays non-blocking).
            let descriptor = OwnedFd::try_from(stream)?;
            let stream = UnixStream::from(descriptor);
            // SAFETY: the `UnixStream` owns its descriptor and keeps it open, unchanged, until it
            // is dropped, which is when the `AsyncFd` that owns it is dropped.
            let readable = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE)? };
            Ok(Self {
                readable,
                room: Mutex::new(None),
            })
        }

        /// Reads the way tokio reads its own sockets: only once the socket is known to be
        /// readable, and a read that leaves room in `buffer` counts as draining it (the next read
        /// waits for the next readiness event instead of trying `recv` first).
        pub(super) fn poll_read(
            &self,
            context: &mut Context<'_>,
            buffer: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            loop {
                let mut ready = std::task::ready!(self.readable.poll_read_ready(context))?;
                let room = buffer.remaining();
                match self.readable.get_ref().read(buffer.initialize_unfilled()) {
                    Ok(read) => {
                        if read > 0 && read < room {
                            ready.clear_ready();
                        }
                        buffer.advance(read);
                        return Poll::Ready(Ok(()));
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => ready.clear_ready(),
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
        }

        pub(super) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
            loop {
                match self.readable.get_ref().write(bytes) {
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    outcome => return outcome,
                }
            }
        }

        /// Writes what the socket takes now; if it takes nothing (its buffer is full), waits for
        /// room through the writability registration, which is kept until a write takes all it
        /// was given (the end of a long answer), so that a long write registers once. A write
        /// cancelled while it waits leaves it until the next such write. Waiting needs the
        /// runtime's reactor: without one this is an error, never a panic.
        pub(super) fn poll_write(
            &self,
            context: &mut Context<'_>,
            bytes: &[u8],
        ) -> Poll<io::Result<usize>> {
            loop {
                match self.try_write(bytes) {
                    Ok(written) => {
                        if written == bytes.len() {
                            self.room().take();
                        }
                        return Poll::Ready(Ok(written));
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
                let mut room = self.room();
                if room.is_none() {
                    if tokio::runtime::Handle::try_current().is_err() {
                        return Poll::Ready(Err(io::Error::other(
                            "the socket is full and there is no runtime to wait for room on",
                        )));
                    }
                    // Registered after the failed write: `epoll` reports room that appeared in
                    // between at once.
                    let duplicate = self.readable.get_ref().as_fd().try_clone_to_owned()?;
                    // SAFETY: as in `new`: the `OwnedFd` keeps its descriptor open and unchanged
                    // for as long as the `AsyncFd` owns it.
                    let writable =
                        unsafe { AsyncFd::register_with_interest(duplicate, Interest::WRITABLE)? };
                    *room = Some(writable);
                }
                let writable = room.as_ref().expect("registered above");
                let mut ready = std::task::ready!(writable.poll_write_ready(context))?;
                // Room was reported, but the failed write came first: try again, and wait for
                // the next report if it still fails.
                ready.clear_ready();
            }
        }

        pub(super) fn shutdown(&self) -> io::Result<()> {
            match self.readable.get_ref().shutdown(std::net::Shutdown::Write) {
                Err(error) if error.kind() == ErrorKind::NotConnected => Ok(()),
                other => other,
            }
        }

        fn room(&self) -> std::sync::MutexGuard<'_, Option<AsyncFd<OwnedFd>>> {
            self.room.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }
}

impl AsyncRead for &LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        #[cfg(unix)]
        {
            self.socket.poll_read(context, buffer)
        }
        #[cfg(not(unix))]
        {
            Pin::new(&mut &self.stream).poll_read(context, buffer)
        }
    }
}

impl AsyncWrite for &LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        #[cfg(unix)]
        {
            self.socket.poll_write(context, bytes)
        }
        #[cfg(not(unix))]
        {
            Pin::new(&mut &self.stream).poll_write(context, bytes)
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        #[cfg(unix)]
        {
            let _ = context;
            Poll::Ready(Ok(()))
        }
        #[cfg(not(unix))]
        {
            Pin::new(&mut &self.stream).poll_flush(context)
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        #[cfg(unix)]
        {
            let _ = context;
            Poll::Ready(self.socket.shutdown())
        }
        #[cfg(not(unix))]
        {
            Pin::new(&mut &self.stream).poll_shutdown(context)
        }
    }
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_read(context, buffer)
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write(context, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_shutdown(context)
    }
}
