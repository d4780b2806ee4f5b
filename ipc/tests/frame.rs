//! The frame codec's limits: a frame over `MAX_FRAME_BYTES` is refused from its header alone (before
//! any payload is read or allocated); clean close, a torn header and a torn payload are told apart;
//! and frames survive arbitrary read splits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use unitsync_ipc::frame::{encode, read_frame, read_message, write_message, FrameError};
use unitsync_ipc::protocol::{Request, MAX_FRAME_BYTES};

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
    write_message(&mut wire, &request).await.unwrap();
    assert_eq!(&wire[..4], &((wire.len() - 4) as u32).to_be_bytes());
    let decoded: Request = read_message(&mut wire.as_slice()).await.unwrap();
    assert_eq!(decoded, request);
}

#[tokio::test]
async fn frames_survive_one_byte_reads() {
    let mut wire = encode(&Request::Ping).unwrap();
    wire.extend(encode(&Request::List).unwrap());
    let mut reader = Trickle(wire, 0);
    let first: Request = read_message(&mut reader).await.unwrap();
    let second: Request = read_message(&mut reader).await.unwrap();
    assert_eq!((first, second), (Request::Ping, Request::List));
    assert!(matches!(
        read_frame(&mut reader).await,
        Err(FrameError::Closed)
    ));
}

#[tokio::test]
async fn a_frame_of_exactly_the_limit_is_accepted() {
    let payload = vec![b' '; MAX_FRAME_BYTES];
    let wire = frame(&payload);
    assert_eq!(
        read_frame(&mut wire.as_slice()).await.unwrap().len(),
        MAX_FRAME_BYTES
    );
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header_alone() {
    for length in [MAX_FRAME_BYTES as u32 + 1, u32::MAX] {
        let mut reader = HeaderOnly(length.to_be_bytes(), 0);
        match read_frame(&mut reader).await {
            Err(FrameError::TooLarge(n)) => assert_eq!(n, length as usize),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
    let message = FrameError::TooLarge(MAX_FRAME_BYTES + 1).to_string();
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
    assert!(matches!(encode(&huge), Err(FrameError::TooLarge(_))));
    let mut wire = Vec::new();
    assert!(write_message(&mut wire, &huge).await.is_err());
    assert!(wire.is_empty(), "nothing is written for a refused message");
}

#[tokio::test]
async fn clean_close_torn_header_and_torn_payload_are_distinguished() {
    assert!(matches!(
        read_frame(&mut [].as_slice()).await,
        Err(FrameError::Closed)
    ));
    match read_frame(&mut [0u8, 0].as_slice()).await {
        Err(FrameError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected a torn header, got {other:?}"),
    }
    let mut torn = frame(b"{\"request\":\"ping\"}");
    torn.truncate(torn.len() - 3);
    match read_frame(&mut torn.as_slice()).await {
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
        match read_message::<_, Request>(&mut wire.as_slice()).await {
            Err(FrameError::Malformed(_)) => {}
            other => panic!("{payload:?}: expected Malformed, got {other:?}"),
        }
    }
}
