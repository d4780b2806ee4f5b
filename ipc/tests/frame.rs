//! The frame codec's limits: a frame over the reader's limit (`MAX_FRAME_BYTES` for what the agent
//! reads, `MAX_RESPONSE_BYTES` for what a client reads) is refused from its header alone (before any
//! payload is read or allocated); a response may be far larger than a request; clean close, a torn
//! header and a torn payload are told apart; and frames survive arbitrary read splits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use unitsync_ipc::frame::{encode, read_frame, read_message, write_message, FrameError};
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
