//! The raw-socket baseline of W5/W6: `std::os::unix::net::UnixStream` ping-pong of exactly the bytes
//! our protocol exchanges for `ping` (the request frame and a typical `pong` frame), with blocking
//! reads and writes and no runtime, serialisation or handshake. It is the floor any round trip over
//! a local socket can reach on this machine.
//!
//! The server side reads one frame the way the agent does (4-byte length, then the payload) and
//! answers with the canned response; it runs in a thread (criterion) or in a child process (the
//! `report` binary, so that both sides of both comparisons cross a process boundary). This module
//! owns the canned frames and the echo loop; it must not talk to a real agent.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};
use unitsync_ipc::frame::encode;
use unitsync_ipc::protocol::{
    PingInfo, Request, Response, MAX_FRAME_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION,
};
use unitsync_ipc::server::AGENT_VERSION;

/// The two frames of one `ping` round trip, header included.
#[derive(Debug, Clone)]
pub struct PingFrames {
    /// `{"request":"ping"}` framed.
    pub request: Vec<u8>,
    /// A `pong` as an agent that has run a while answers it, framed.
    pub response: Vec<u8>,
}

/// The frames our client and agent exchange for `ping`.
pub fn ping_frames() -> PingFrames {
    let pong = Response::Pong {
        agent: PingInfo {
            agent_version: AGENT_VERSION.to_owned(),
            protocol: PROTOCOL_VERSION,
            uptime_ms: 1_234_567,
            units: 10_001,
            pid: 123_456,
            waiters: 0,
        },
    };
    PingFrames {
        request: encode(&Request::Ping, MAX_FRAME_BYTES).expect("encode ping"),
        response: encode(&pong, MAX_RESPONSE_BYTES).expect("encode pong"),
    }
}

/// Serves ping-pong on every connection `listener` accepts (a thread each), forever.
pub fn serve(listener: UnixListener) -> io::Result<()> {
    let response = ping_frames().response;
    loop {
        let (stream, _) = listener.accept()?;
        let response = response.clone();
        std::thread::spawn(move || {
            let _ = echo(stream, &response);
        });
    }
}

/// Binds `path` and serves on it from a background thread (for criterion benches).
pub fn serve_in_thread(path: &Path) -> io::Result<()> {
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || serve(listener));
    Ok(())
}

fn echo(mut stream: UnixStream, response: &[u8]) -> io::Result<()> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        payload.resize(u32::from_be_bytes(header) as usize, 0);
        stream.read_exact(&mut payload)?;
        stream.write_all(response)?;
    }
}

/// A blocking client of the raw ping-pong server.
pub struct RawClient {
    stream: UnixStream,
    frames: PingFrames,
    buffer: Vec<u8>,
}

impl RawClient {
    /// Connects to the server at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let frames = ping_frames();
        Ok(Self {
            stream: UnixStream::connect(path)?,
            buffer: vec![0; frames.response.len()],
            frames,
        })
    }

    /// One round trip: write the request frame, read the whole response frame.
    pub fn round_trip(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.frames.request)?;
        self.stream.read_exact(&mut self.buffer)
    }

    /// `count` timed round trips.
    pub fn round_trips(&mut self, count: usize) -> io::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let begin = Instant::now();
            self.round_trip()?;
            times.push(begin.elapsed());
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_real_protocol_frames() {
        let frames = ping_frames();
        assert_eq!(&frames.request[4..], br#"{"request":"ping"}"#);
        let length = u32::from_be_bytes(frames.response[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frames.response.len() - 4);
    }

    #[test]
    fn ping_pong_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.sock");
        serve_in_thread(&path).unwrap();
        let mut client = RawClient::connect(&path).unwrap();
        assert_eq!(client.round_trips(10).unwrap().len(), 10);
    }
}
