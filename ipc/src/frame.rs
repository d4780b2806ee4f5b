//! Length-prefixed framing: a 4-byte big-endian payload length, then the payload (one JSON
//! document). A frame longer than [`MAX_FRAME_BYTES`] is refused *before* its payload is read, so a
//! hostile peer cannot make either side allocate more than the limit. This module owns bytes on the
//! stream only; it knows nothing of requests or the graph.

use crate::protocol::MAX_FRAME_BYTES;
use serde::{de::DeserializeOwned, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("the connection was closed")]
    Closed,
    /// The announced length exceeds the limit.
    #[error("a frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    /// The payload is not the JSON document expected.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The stream failed (including a connection cut in the middle of a frame).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame's payload.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut header[first..]).await?;
    let length = u32::from_be_bytes(header) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Reads one frame and decodes it.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> Result<T, FrameError> {
    let payload = read_frame(reader).await?;
    Ok(serde_json::from_slice(&payload)?)
}

/// Encodes `message` as one frame (header and payload in one buffer, so one write).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buffer = vec![0u8; 4];
    serde_json::to_writer(&mut buffer, message)?;
    let length = buffer.len() - 4;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    buffer[..4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(buffer)
}

/// Writes `message` as one frame and flushes it.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    let frame = encode(message)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}
