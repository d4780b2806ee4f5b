//! `LocalStream` over a real local socket: bytes far beyond the socket's buffer arrive whole and in
//! order (the writer waits for room many times, through its writability registration); a write
//! waiting for room fails, rather than hangs, when the peer goes away; a peer's hang-up reads as end
//! of stream; and a read and a write proceed at once through two `&LocalStream`s.

use interprocess::local_socket::traits::tokio::Listener as _;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use unitsync_ipc::socket;
use unitsync_ipc::stream::LocalStream;

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
async fn fill(mut stream: &LocalStream, pattern: impl Fn(usize) -> u8) -> usize {
    let chunk_at = |at: usize| (at..at + 4096).map(&pattern).collect::<Vec<u8>>();
    let mut written = 0;
    poll_fn(|context| loop {
        match Pin::new(&mut stream).poll_write(context, &chunk_at(written)) {
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(error)) => panic!("write failed: {error}"),
            Poll::Pending => return Poll::Ready(()),
        }
    })
    .await;
    written
}

fn byte_at(at: usize) -> u8 {
    (at % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_far_beyond_the_socket_buffer_arrive_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, mut reader) = pair(&dir).await;
    // Full first, so the writes after it must wait for room.
    let before = fill(&writer, byte_at).await;
    assert!(before > 0, "an empty socket took nothing");
    let total = before + (8 << 20);
    let rest: Vec<u8> = (before..total).map(byte_at).collect();
    let write = tokio::spawn(async move {
        (&writer).write_all(&rest).await.unwrap();
        (&writer).shutdown().await.unwrap();
        writer
    });
    let mut received = Vec::with_capacity(total);
    reader.read_to_end(&mut received).await.unwrap();
    let _writer = write.await.unwrap();
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
    fill(&writer, byte_at).await;
    let write = tokio::spawn(async move { (&writer).write_all(&[1; 1 << 20]).await });
    // The write cannot finish while nobody reads: it is still waiting when the reader leaves.
    tokio::task::yield_now().await;
    assert!(!write.is_finished());
    drop(reader);
    let outcome = write.await.unwrap();
    assert!(outcome.is_err(), "the write succeeded into a closed socket");
}

#[tokio::test]
async fn a_peer_hang_up_reads_as_end_of_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut near, far) = pair(&dir).await;
    (&far).write_all(b"last words").await.unwrap();
    drop(far);
    let mut received = Vec::new();
    near.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"last words");
    assert!((&near).write_all(b"anyone?").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_reads_and_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (near, far) = pair(&dir).await;
    let (near, far) = (std::sync::Arc::new(near), std::sync::Arc::new(far));
    // Each side sends 4 MiB while it reads the other's 4 MiB: neither finishes unless both
    // directions move together.
    let exchange = |stream: std::sync::Arc<LocalStream>| async move {
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
    let (near_ok, far_ok) = tokio::join!(exchange(near), exchange(far));
    assert!(near_ok && far_ok);
}
