//! The frame codec's limits: a frame over the reader's limit (`MAX_FRAME_BYTES` for what the agent
//! reads, `MAX_RESPONSE_BYTES` for what a client reads) is refused from its header alone (before any
//! payload is read or allocated); a response may be far larger than a request; clean close, a torn
//! header and a torn payload are told apart; and frames survive arbitrary read splits. The same for
//! the buffered `FrameReader`, which also reads several frames in one read, makes room for a long
//! frame only up to the limit and gives it back, keeps what a peer sent while it was watched for a
//! hang-up, and loses nothing when a read is cancelled. The blocking reader of the runtime-free
//! client follows the same rules.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use unitsync_ipc::frame::{
    encode, read_frame, read_message, write_message, FrameError, FrameReader, PeerActivity,
};
use unitsync_ipc::protocol::{Request, Response, MAX_FRAME_BYTES, MAX_RESPONSE_BYTES};

/// Hands out its bytes one per read, to split every frame at every possible point.
struct Trickle(Vec<u8>, usize);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.1 < self.0.len() && buf.remaining() > 0 {
            let byte = self.0[self.1];
            buf.put_slice(&[byte]);
            self.1 += 1;
        }
        Poll::Ready(Ok(()))
    }
}

/// A reader holding `header` and then failing loudly if anyone reads past it.
struct HeaderOnly([u8; 4], usize);

impl AsyncRead for HeaderOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let at = self.1;
        assert!(at < 4, "the payload of an oversized frame must not be read");
        let n = (4 - at).min(buf.remaining());
        let header = self.0;
        buf.put_slice(&header[at..at + n]);
        self.1 += n;
        Poll::Ready(Ok(()))
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_message_round_trips_through_a_frame() {
    let request = Request::Want {
        unit: "claude".to_owned(),
        dependencies: vec!["git".to_owned(), "npm".to_owned()],
    };
    let mut wire = Vec::new();
    write_message(&mut wire, &request, MAX_FRAME_BYTES)
        .await
        .unwrap();
    assert_eq!(&wire[..4], &((wire.len() - 4) as u32).to_be_bytes());
    let decoded: Request = read_message(&mut wire.as_slice(), MAX_FRAME_BYTES)
        .await
        .unwrap();
    assert_eq!(decoded, request);
}

#[tokio::test]
async fn frames_survive_one_byte_reads() {
    let mut wire = encode(&Request::Ping, MAX_FRAME_BYTES).unwrap();
    wire.extend(encode(&Request::List, MAX_FRAME_BYTES).unwrap());
    let mut reader = Trickle(wire, 0);
    let first: Request = read_message(&mut reader, MAX_FRAME_BYTES).await.unwrap();
    let second: Request = read_message(&mut reader, MAX_FRAME_BYTES).await.unwrap();
    assert_eq!((first, second), (Request::Ping, Request::List));
    assert!(matches!(
        read_frame(&mut reader, MAX_FRAME_BYTES).await,
        Err(FrameError::Closed)
    ));
}

#[tokio::test]
async fn a_frame_of_exactly_the_limit_is_accepted() {
    let payload = vec![b' '; MAX_FRAME_BYTES];
    let wire = frame(&payload);
    assert_eq!(
        read_frame(&mut wire.as_slice(), MAX_FRAME_BYTES)
            .await
            .unwrap()
            .len(),
        MAX_FRAME_BYTES
    );
}

#[tokio::test]
async fn a_response_may_be_far_larger_than_a_request() {
    // A `list` of a big graph: over the request limit, within the response limit.
    let text = "x".repeat(3 * MAX_FRAME_BYTES);
    let response = Response::Graph { text: text.clone() };
    assert!(matches!(
        encode(&response, MAX_FRAME_BYTES),
        Err(FrameError::TooLarge {
            limit: MAX_FRAME_BYTES,
            ..
        })
    ));
    let wire = encode(&response, MAX_RESPONSE_BYTES).unwrap();
    let mut reader = wire.as_slice();
    match read_message::<_, Response>(&mut reader, MAX_RESPONSE_BYTES).await {
        Ok(Response::Graph { text: back }) => assert_eq!(back, text),
        other => panic!("expected the graph back, got {other:?}"),
    }
    // The same frame is refused by a reader with the request limit, from its header alone.
    let mut header = [0u8; 4];
    header.copy_from_slice(&wire[..4]);
    assert!(matches!(
        read_frame(&mut HeaderOnly(header, 0), MAX_FRAME_BYTES).await,
        Err(FrameError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header_alone() {
    for (limit, length) in [
        (MAX_FRAME_BYTES, MAX_FRAME_BYTES as u32 + 1),
        (MAX_FRAME_BYTES, u32::MAX),
        (MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES as u32 + 1),
        (MAX_RESPONSE_BYTES, u32::MAX),
    ] {
        let mut reader = HeaderOnly(length.to_be_bytes(), 0);
        match read_frame(&mut reader, limit).await {
            Err(FrameError::TooLarge {
                length: n,
                limit: l,
            }) => {
                assert_eq!((n, l), (length as usize, limit))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
    let message = FrameError::TooLarge {
        length: MAX_FRAME_BYTES + 1,
        limit: MAX_FRAME_BYTES,
    }
    .to_string();
    assert_eq!(
        message,
        "a frame of 1048577 bytes exceeds the limit of 1048576 bytes"
    );
}

#[tokio::test]
async fn encoding_refuses_a_message_over_the_limit() {
    let huge = Request::Fail {
        unit: "u".to_owned(),
        reason: Some("x".repeat(MAX_FRAME_BYTES)),
    };
    assert!(matches!(
        encode(&huge, MAX_FRAME_BYTES),
        Err(FrameError::TooLarge { .. })
    ));
    let mut wire = Vec::new();
    assert!(write_message(&mut wire, &huge, MAX_FRAME_BYTES)
        .await
        .is_err());
    assert!(wire.is_empty(), "nothing is written for a refused message");
}

#[tokio::test]
async fn clean_close_torn_header_and_torn_payload_are_distinguished() {
    assert!(matches!(
        read_frame(&mut [].as_slice(), MAX_FRAME_BYTES).await,
        Err(FrameError::Closed)
    ));
    match read_frame(&mut [0u8, 0].as_slice(), MAX_FRAME_BYTES).await {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn header, got {other:?}"),
    }
    let mut torn = frame(b"{\"request\":\"ping\"}");
    torn.truncate(torn.len() - 3);
    match read_frame(&mut torn.as_slice(), MAX_FRAME_BYTES).await {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn payload, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_payloads_are_malformed_not_fatal() {
    for payload in [
        &b""[..],
        b"{not json",
        b"\xff\xfe",
        b"{\"request\":\"explode\"}",
        b"[]",
    ] {
        let wire = frame(payload);
        match read_message::<_, Request>(&mut wire.as_slice(), MAX_FRAME_BYTES).await {
            Err(FrameError::Malformed(_)) => {}
            other => panic!("{payload:?}: expected Malformed, got {other:?}"),
        }
    }
}

// ---- FrameReader: the buffered reader of the agent and the client ----

/// Hands out its bytes in the given chunk sizes (then the rest at once), counting the reads that
/// returned data.
struct Chunks {
    bytes: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    reads: usize,
}

impl Chunks {
    fn new(bytes: Vec<u8>, sizes: &[usize]) -> Self {
        Self {
            bytes,
            at: 0,
            sizes: sizes.iter().rev().copied().collect(),
            reads: 0,
        }
    }
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.bytes.len() - self.at;
        let chunk = self.sizes.pop().unwrap_or(left);
        let n = chunk.min(left).min(buf.remaining());
        if n > 0 {
            let at = self.at;
            let bytes = self.bytes[at..at + n].to_vec();
            buf.put_slice(&bytes);
            self.at += n;
            self.reads += 1;
        }
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn one_read_brings_several_frames() {
    let mut wire = encode(&Request::Ping, MAX_FRAME_BYTES).unwrap();
    wire.extend(encode(&Request::List, MAX_FRAME_BYTES).unwrap());
    wire.extend(frame(b"{\"request\":\"ping\"}"));
    let mut reader = FrameReader::new(Chunks::new(wire, &[]), MAX_FRAME_BYTES);
    let first: Request = reader.read_message().await.unwrap();
    assert_eq!(
        reader.get_ref().reads,
        1,
        "the whole stream came in one read"
    );
    let second: Request = reader.read_message().await.unwrap();
    let third = reader.read_frame().await.unwrap();
    assert_eq!((first, second), (Request::Ping, Request::List));
    assert_eq!(third, b"{\"request\":\"ping\"}");
    assert_eq!(reader.get_ref().reads, 1);
    assert!(matches!(reader.read_frame().await, Err(FrameError::Closed)));
}

#[tokio::test]
async fn buffered_frames_survive_every_read_split() {
    let mut wire = encode(&Request::Ping, MAX_FRAME_BYTES).unwrap();
    wire.extend(frame(b"{not json"));
    wire.extend(encode(&Request::List, MAX_FRAME_BYTES).unwrap());
    for first in 1..wire.len() {
        for second in [1, 3, 7, 100] {
            let mut reader = FrameReader::with_capacity(
                Chunks::new(wire.clone(), &[first, second]),
                MAX_FRAME_BYTES,
                8,
            );
            assert_eq!(
                reader.read_message::<Request>().await.unwrap(),
                Request::Ping
            );
            // A payload that does not decode is consumed: the next frame still reads.
            assert!(matches!(
                reader.read_message::<Request>().await,
                Err(FrameError::Malformed(_))
            ));
            assert_eq!(
                reader.read_message::<Request>().await.unwrap(),
                Request::List
            );
            assert!(matches!(reader.read_frame().await, Err(FrameError::Closed)));
        }
    }
    let mut reader = FrameReader::new(Trickle(wire, 0), MAX_FRAME_BYTES);
    assert_eq!(
        reader.read_message::<Request>().await.unwrap(),
        Request::Ping
    );
}

#[tokio::test]
async fn the_buffered_reader_refuses_an_oversized_frame_from_its_header_alone() {
    for (limit, length) in [
        (MAX_FRAME_BYTES, MAX_FRAME_BYTES as u32 + 1),
        (MAX_FRAME_BYTES, u32::MAX),
        (MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES as u32 + 1),
        (MAX_RESPONSE_BYTES, u32::MAX),
    ] {
        let mut reader = FrameReader::new(HeaderOnly(length.to_be_bytes(), 0), limit);
        match reader.read_frame().await {
            Err(FrameError::TooLarge {
                length: n,
                limit: l,
            }) => assert_eq!((n, l), (length as usize, limit)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(
            reader.capacity() <= unitsync_ipc::frame::DEFAULT_BUFFER_BYTES,
            "no room was made for the refused payload"
        );
    }
}

#[tokio::test]
async fn a_long_frame_gets_room_for_itself_only_and_gives_it_back() {
    let payload = vec![b' '; MAX_FRAME_BYTES];
    let mut wire = frame(&payload);
    wire.extend(encode(&Request::Ping, MAX_FRAME_BYTES).unwrap());
    // Arriving in pieces, as from a socket, the frame of exactly the limit is accepted; the
    // buffer never holds more than the frame itself.
    let mut reader = FrameReader::with_capacity(
        Chunks::new(wire, &[100, 65_536, 65_536, 1 << 20]),
        MAX_FRAME_BYTES,
        1024,
    );
    assert_eq!(reader.read_frame().await.unwrap().len(), MAX_FRAME_BYTES);
    assert!(reader.capacity() <= 4 + MAX_FRAME_BYTES);
    assert_eq!(
        reader.read_message::<Request>().await.unwrap(),
        Request::Ping
    );
    assert!(
        reader.capacity() <= 1024,
        "the long frame's room is given back"
    );
}

#[tokio::test]
async fn the_buffered_reader_tells_clean_close_from_torn_frames() {
    let mut reader = FrameReader::new([].as_slice(), MAX_FRAME_BYTES);
    assert!(matches!(reader.read_frame().await, Err(FrameError::Closed)));
    let mut reader = FrameReader::new([0u8, 0].as_slice(), MAX_FRAME_BYTES);
    match reader.read_frame().await {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn header, got {other:?}"),
    }
    let mut torn = frame(b"{\"request\":\"ping\"}");
    torn.truncate(torn.len() - 3);
    let mut reader = FrameReader::new(torn.as_slice(), MAX_FRAME_BYTES);
    match reader.read_frame().await {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn payload, got {other:?}"),
    }
}

#[tokio::test]
async fn peer_activity_sees_a_hang_up_or_keeps_what_was_sent() {
    let mut reader = FrameReader::new([].as_slice(), MAX_FRAME_BYTES);
    assert_eq!(reader.peer_activity().await.unwrap(), PeerActivity::Closed);

    let wire = encode(&Request::List, MAX_FRAME_BYTES).unwrap();
    let mut reader = FrameReader::new(Trickle(wire, 0), MAX_FRAME_BYTES);
    assert_eq!(reader.peer_activity().await.unwrap(), PeerActivity::Sent);
    assert_eq!(reader.buffered(), 1);
    // Already buffered: at once, without reading.
    assert_eq!(reader.peer_activity().await.unwrap(), PeerActivity::Sent);
    assert_eq!(reader.buffered(), 1);
    assert_eq!(
        reader.read_message::<Request>().await.unwrap(),
        Request::List
    );
}

#[tokio::test]
async fn a_cancelled_read_loses_nothing() {
    let (mut near, far) = tokio::io::duplex(64);
    let mut reader = FrameReader::new(far, MAX_FRAME_BYTES);
    let wire = encode(&Request::List, MAX_FRAME_BYTES).unwrap();
    let (head, tail) = wire.split_at(6);
    near.write_all(head).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(20), reader.read_frame()).await;
    assert!(early.is_err(), "half a frame must not be returned");
    assert_eq!(reader.buffered(), 6, "what was read stays buffered");
    near.write_all(tail).await.unwrap();
    assert_eq!(
        reader.read_message::<Request>().await.unwrap(),
        Request::List
    );
}

#[test]
fn the_blocking_reader_follows_the_same_rules() {
    use unitsync_ipc::frame::read_frame_blocking;
    let mut wire = encode(&Request::Ping, MAX_FRAME_BYTES).unwrap();
    wire.extend(encode(&Request::List, MAX_FRAME_BYTES).unwrap());
    let mut reader = wire.as_slice();
    assert_eq!(
        read_frame_blocking(&mut reader, MAX_FRAME_BYTES).unwrap(),
        br#"{"request":"ping"}"#
    );
    assert_eq!(
        read_frame_blocking(&mut reader, MAX_FRAME_BYTES).unwrap(),
        br#"{"request":"list"}"#
    );
    assert!(matches!(
        read_frame_blocking(&mut reader, MAX_FRAME_BYTES),
        Err(FrameError::Closed)
    ));
    match read_frame_blocking(&mut [0u8, 0].as_slice(), MAX_FRAME_BYTES) {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn header, got {other:?}"),
    }
    let mut torn = frame(b"{\"request\":\"ping\"}");
    torn.truncate(torn.len() - 3);
    match read_frame_blocking(&mut torn.as_slice(), MAX_FRAME_BYTES) {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn payload, got {other:?}"),
    }
    // Refused from the header alone: a reader holding only the header is never read past it.
    for length in [MAX_RESPONSE_BYTES as u32 + 1, u32::MAX] {
        let header = length.to_be_bytes();
        match read_frame_blocking(&mut header.as_slice(), MAX_RESPONSE_BYTES) {
            Err(FrameError::TooLarge { length: n, .. }) => assert_eq!(n, length as usize),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
