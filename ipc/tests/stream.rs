//! `LocalStream` over a real local socket: bytes far beyond the socket's buffer arrive whole and in
//! order (the writer waits for room many times, through its writability registration); a write
//! waiting for room fails, rather than hangs, when the peer goes away; a peer's hang-up reads as end
//! of stream, also for a reader already waiting; a read and a write proceed at once through two
//! `&LocalStream`s; and a full socket written from a thread outside any runtime is an error, not a
//! panic. Unix only: on Windows `LocalStream` is interprocess's named-pipe stream, whose write side
//! cannot be shut down on its own. Every test is bounded: a lost wake-up fails it, never hangs it.
#![cfg(unix)]

use interprocess::local_socket::traits::tokio::Listener as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use unitsync_ipc::socket;
use unitsync_ipc::stream::LocalStream;

/// `work`, failing the test if it takes longer than a lost wake-up would let it.
async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("stuck: a wake-up was lost")
}

/// Both ends of one connection: (the accepted end, the connecting end).
async fn pair(dir: &tempfile::TempDir) -> (LocalStream, LocalStream) {
    let path = dir.path().join("s");
    let listener = socket::listen(&path).await.unwrap();
    let (accepted, connected) = tokio::join!(listener.accept(), LocalStream::connect(&path));
    (
        LocalStream::new(accepted.unwrap()).unwrap(),
        connected.unwrap(),
    )
}

/// Writes `pattern` bytes into `stream` until the socket takes no more without waiting; returns
/// how many it took.
fn fill(stream: &LocalStream, pattern: impl Fn(usize) -> u8) -> usize {
    let mut written = 0;
    loop {
        let chunk: Vec<u8> = (written..written + 4096).map(&pattern).collect();
        match stream.try_write(&chunk) {
            Ok(n) => written += n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return written,
            Err(error) => panic!("write failed: {error}"),
        }
    }
}

fn byte_at(at: usize) -> u8 {
    (at % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_far_beyond_the_socket_buffer_arrive_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, mut reader) = pair(&dir).await;
    // Full first, so the writes after it must wait for room.
    let before = fill(&writer, byte_at);
    assert!(before > 0, "an empty socket took nothing");
    let total = before + (8 << 20);
    let rest: Vec<u8> = (before..total).map(byte_at).collect();
    let write = tokio::spawn(async move {
        (&writer).write_all(&rest).await.unwrap();
        (&writer).shutdown().await.unwrap();
        writer
    });
    let mut received = Vec::with_capacity(total);
    bounded(reader.read_to_end(&mut received)).await.unwrap();
    let _writer = bounded(write).await.unwrap();
    assert_eq!(received.len(), total);
    let first_wrong = received
        .iter()
        .enumerate()
        .find(|&(at, &b)| b != byte_at(at));
    assert_eq!(first_wrong, None, "a byte out of place");
}

#[tokio::test]
async fn a_write_waiting_for_room_fails_when_the_peer_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = pair(&dir).await;
    fill(&writer, byte_at);
    let write = tokio::spawn(async move { (&writer).write_all(&[1; 1 << 20]).await });
    // The write cannot finish while nobody reads: it is still waiting when the reader leaves.
    tokio::task::yield_now().await;
    assert!(!write.is_finished());
    drop(reader);
    let outcome = bounded(write).await.unwrap();
    assert!(outcome.is_err(), "the write succeeded into a closed socket");
}

#[tokio::test]
async fn a_peer_hang_up_reads_as_end_of_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut near, far) = pair(&dir).await;
    (&far).write_all(b"last words").await.unwrap();
    drop(far);
    let mut received = Vec::new();
    bounded(near.read_to_end(&mut received)).await.unwrap();
    assert_eq!(received, b"last words");
    assert!((&near).write_all(b"anyone?").await.is_err());
}

#[tokio::test]
async fn a_reader_already_waiting_is_woken_by_the_peer_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let (near, far) = pair(&dir).await;
    let near = Arc::new(near);
    let reader = Arc::clone(&near);
    let read = tokio::spawn(async move { (&*reader).read(&mut [0; 16]).await });
    // On this one-thread runtime the read runs until it waits, before the peer leaves.
    tokio::task::yield_now().await;
    assert!(!read.is_finished());
    drop(far);
    assert_eq!(bounded(read).await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn a_full_socket_written_outside_any_runtime_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (near, _far) = pair(&dir).await;
    fill(&near, byte_at);
    let near = Arc::new(near);
    let writer = Arc::clone(&near);
    let (tried, polled) = std::thread::spawn(move || {
        let tried = writer.try_write(b"more").map_err(|error| error.kind());
        let mut context = Context::from_waker(Waker::noop());
        let polled = match Pin::new(&mut &*writer).poll_write(&mut context, b"more") {
            Poll::Ready(Err(_)) => "error",
            Poll::Ready(Ok(_)) => "written",
            Poll::Pending => "pending",
        };
        (tried, polled)
    })
    .join()
    .expect("the write panicked");
    assert_eq!(tried, Err(std::io::ErrorKind::WouldBlock));
    assert_eq!(polled, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_reads_and_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (near, far) = pair(&dir).await;
    let (near, far) = (Arc::new(near), Arc::new(far));
    // Each side sends 4 MiB while it reads the other's 4 MiB: neither finishes unless both
    // directions move together.
    let exchange = |stream: Arc<LocalStream>| async move {
        let send = async {
            (&*stream).write_all(&vec![7; 4 << 20]).await.unwrap();
        };
        let receive = async {
            let mut received = vec![0; 4 << 20];
            (&*stream).read_exact(&mut received).await.unwrap();
            received.iter().all(|&b| b == 7)
        };
        tokio::join!(send, receive).1
    };
    let (near_ok, far_ok) = bounded(async { tokio::join!(exchange(near), exchange(far)) }).await;
    assert!(near_ok && far_ok);
}
