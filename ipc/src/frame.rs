//! Length-prefixed framing: a 4-byte big-endian payload length, then the payload (one JSON
//! document). Every read and write names its limit: the agent reads requests of at most
//! [`MAX_FRAME_BYTES`](crate::protocol::MAX_FRAME_BYTES) and writes answers of at most
//! [`MAX_RESPONSE_BYTES`](crate::protocol::MAX_RESPONSE_BYTES); a client the other way round. A frame
//! longer than the reader's limit is refused *before* its payload is read, so a hostile peer cannot
//! make either side allocate more than its limit. This module owns bytes on the stream only; it knows
//! nothing of requests or the graph.

use serde::{de::DeserializeOwned, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("the connection was closed")]
    Closed,
    /// The announced (or encoded) length exceeds the limit.
    #[error("a frame of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's payload length.
        length: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The payload is not the JSON document expected.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The stream failed (including a connection cut in the middle of a frame).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the connection itself is gone (closed, cut, reset), as opposed to the peer having
    /// sent something unreadable.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(_))
    }
}

/// Reads one frame's payload of at most `limit` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut header[first..]).await?;
    let length = u32::from_be_bytes(header) as usize;
    if length > limit {
        return Err(FrameError::TooLarge { length, limit });
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Reads one frame of at most `limit` bytes and decodes it.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limit: usize,
) -> Result<T, FrameError> {
    let payload = read_frame(reader, limit).await?;
    Ok(serde_json::from_slice(&payload)?)
}

/// Encodes `message` as one frame (header and payload in one buffer, so one write); refuses a
/// payload over `limit` bytes.
pub fn encode<T: Serialize>(message: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut buffer = vec![0u8; 4];
    serde_json::to_writer(&mut buffer, message)?;
    let length = buffer.len() - 4;
    if length > limit {
        return Err(FrameError::TooLarge { length, limit });
    }
    let header = u32::try_from(length).map_err(|_| FrameError::TooLarge { length, limit })?;
    buffer[..4].copy_from_slice(&header.to_be_bytes());
    Ok(buffer)
}

/// Writes `message` as one frame of at most `limit` bytes and flushes it (nothing is written for a
/// message over the limit).
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
    limit: usize,
) -> Result<(), FrameError> {
    let frame = encode(message, limit)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}
