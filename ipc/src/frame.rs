//! Length-prefixed framing: a 4-byte big-endian payload length, then the payload (one JSON
//! document). Every read and write names its limit: the agent reads requests of at most
//! [`MAX_FRAME_BYTES`](crate::protocol::MAX_FRAME_BYTES) and writes answers of at most
//! [`MAX_RESPONSE_BYTES`](crate::protocol::MAX_RESPONSE_BYTES); a client the other way round. A frame
//! longer than the reader's limit is refused *before* its payload is read, so a hostile peer cannot
//! make either side allocate more than its limit.
//!
//! Two ways to read: [`FrameReader`], one per connection, buffers what the stream delivers so that
//! one `read` system call normally brings a whole frame (or several) and the next frame is decoded
//! straight from the buffer; the agent and the client read through it. The free functions
//! [`read_frame`] and [`read_message`] read exactly one frame (header, then payload) and never past
//! it; [`read_frame_blocking`] does the same on a blocking reader. Writing is one `write_all` of
//! header and payload together ([`encode`]). This module owns
//! bytes on the stream only; it knows nothing of requests or the graph.

use serde::{de::DeserializeOwned, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What [`encode`] allocates up front: header and payload of a typical frame.
const ENCODE_CAPACITY: usize = 256;

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

/// Reads one frame's payload of at most `limit` bytes from a blocking reader: the same rules as
/// [`read_frame`] (clean close between frames, torn frames, the limit checked before the payload is
/// allocated), for a client that has no async runtime.
pub fn read_frame_blocking<R: io::Read>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    let first = loop {
        match reader.read(&mut header) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut header[first..])?;
    let length = u32::from_be_bytes(header) as usize;
    if length > limit {
        return Err(FrameError::TooLarge { length, limit });
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload)?;
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

/// How many bytes a [`FrameReader`] keeps room for when its frames are small: enough for several
/// typical requests or answers in one read.
pub const DEFAULT_BUFFER_BYTES: usize = 4096;

/// What [`FrameReader::peer_activity`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerActivity {
    /// The peer closed its side of the connection (end of stream).
    Closed,
    /// The peer sent bytes; they stay buffered for the next [`FrameReader::read_frame`].
    Sent,
}

/// One connection's reading side, buffered: one `read` normally brings a whole frame, header and
/// payload, or several, where the free functions [`read_frame`] and [`read_message`] read the
/// header and the payload separately (they never read past the frame, so they suit a stream that
/// something else reads afterwards).
///
/// The limit is checked as soon as a frame's header is in the buffer, before any room is made for
/// its payload, so the buffer's capacity never exceeds `max(capacity, 4 + limit)`: a frame that
/// fits the usual capacity is read into it (together with whatever follows it); a longer one, up to
/// the limit, gets room for exactly itself, and the buffer shrinks back once it is consumed.
///
/// Every method is cancel-safe: whatever was read stays in the buffer, so a `read_frame` dropped in
/// a `select!` loses nothing and the next call carries on where it stopped.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// `buffer[start..]` has been read but not consumed.
    buffer: Vec<u8>,
    start: usize,
    limit: usize,
    capacity: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `limit` bytes from `inner`, with [`DEFAULT_BUFFER_BYTES`] of room.
    pub fn new(inner: R, limit: usize) -> Self {
        Self::with_capacity(inner, limit, DEFAULT_BUFFER_BYTES)
    }

    /// Reads frames of at most `limit` bytes from `inner`, keeping room for `capacity` bytes (at
    /// least 4; allocated at the first read).
    pub fn with_capacity(inner: R, limit: usize, capacity: usize) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
            start: 0,
            limit,
            capacity: capacity.max(4),
        }
    }

    /// The stream (for writing to it, e.g. through `&Stream`).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes read but not yet consumed as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// The buffer's current capacity (for tests of the memory bound).
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Reads one frame's payload.
    pub async fn read_frame(&mut self) -> Result<Vec<u8>, FrameError> {
        let length = self.fill().await?;
        let payload = self.payload(length).to_vec();
        self.consume(length);
        Ok(payload)
    }

    /// Reads one frame and decodes it, straight from the buffer. A payload that does not decode is
    /// consumed all the same, so the next frame can still be read.
    pub async fn read_message<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        let length = self.fill().await?;
        let decoded = serde_json::from_slice(self.payload(length));
        self.consume(length);
        Ok(decoded?)
    }

    /// Resolves once the peer closes its side or sends anything (at once if bytes are buffered
    /// already); what it sent stays buffered. For watching a client while it is supposed to be
    /// silent, e.g. during a blocking request.
    pub async fn peer_activity(&mut self) -> io::Result<PeerActivity> {
        if self.buffered() > 0 {
            return Ok(PeerActivity::Sent);
        }
        self.make_room(1);
        match self.inner.read_buf(&mut self.buffer).await? {
            0 => Ok(PeerActivity::Closed),
            _ => Ok(PeerActivity::Sent),
        }
    }

    /// Reads until the next frame is whole in the buffer; returns its payload length. Refuses a
    /// frame over the limit as soon as its header is in.
    async fn fill(&mut self) -> Result<usize, FrameError> {
        loop {
            let available = self.buffered();
            let needed = match self.buffer.get(self.start..self.start + 4) {
                Some(header) => {
                    let header: [u8; 4] = header.try_into().expect("four bytes");
                    let length = u32::from_be_bytes(header) as usize;
                    if length > self.limit {
                        return Err(FrameError::TooLarge {
                            length,
                            limit: self.limit,
                        });
                    }
                    if available >= 4 + length {
                        return Ok(length);
                    }
                    4 + length
                }
                None => 4,
            };
            self.make_room(needed);
            if self.inner.read_buf(&mut self.buffer).await? == 0 {
                return Err(if available == 0 {
                    FrameError::Closed
                } else {
                    io::Error::from(io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
    }

    /// Moves the unconsumed bytes to the front and makes sure there is room for `needed` bytes of
    /// them (never less than the usual capacity, never more than needed beyond it).
    fn make_room(&mut self, needed: usize) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let target = needed.max(self.capacity);
        if self.buffer.capacity() < target {
            self.buffer.reserve_exact(target - self.buffer.len());
        }
    }

    fn payload(&self, length: usize) -> &[u8] {
        &self.buffer[self.start + 4..self.start + 4 + length]
    }

    /// Drops the frame just read from the buffer; gives back the room a long frame took.
    fn consume(&mut self, length: usize) {
        self.start += 4 + length;
        if self.start == self.buffer.len() {
            self.start = 0;
            if self.buffer.capacity() > self.capacity {
                self.buffer = Vec::new();
            } else {
                self.buffer.clear();
            }
        }
    }
}

/// Encodes `message` as one frame (header and payload in one buffer, so one write); refuses a
/// payload over `limit` bytes.
pub fn encode<T: Serialize>(message: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    // Room for a typical request or answer from the start: growing from empty would reallocate
    // four or five times per frame.
    let mut buffer = Vec::with_capacity(ENCODE_CAPACITY);
    buffer.extend_from_slice(&[0; 4]);
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
