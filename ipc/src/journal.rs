//! The agent's state journal (SPEC §4 "State survives an agent restart"): every graph event appended
//! to a file as it happens, replayed when the agent starts again.
//!
//! # Format
//! A file is a sequence of *frames*: `[u32 LE payload length][u32 LE CRC-32 of the payload][payload]`.
//! The first frame's payload is the header `{"journal":"unitsync","version":1}`; every other payload
//! is the JSON of one [`JournalRecord`]: the event's `seq`, its wall-clock time `unix_ms`, and the
//! [`EventKind`] fields flattened beside them, e.g.
//! `{"seq":3,"unix_ms":1732590000123,"event":"started","unit":"claude","by":"sh#1"}`.
//! A payload may also be a JSON array of such records: a *batch*, written by one commit (see
//! "Writing") and read all or nothing. Records are in increasing `seq` order, across frames and
//! within a batch; numbers that carried no event (tombstones) are simply absent. A payload is never
//! longer than [`MAX_RECORD_BYTES`].
//!
//! # Reading
//! [`decode`] is a pure function of the bytes: it returns every record up to the first frame that is
//! torn (cut short) or corrupt (length over the limit, checksum mismatch, JSON that is not a record,
//! a number not above the previous one) and says where that is; it never panics, whatever the input.
//! [`open`] reads a journal with it (never through a symbolic link): a missing or empty file is an
//! empty journal; a file whose first frame is not a unitsync header is refused and left untouched; a damaged tail is cut off with a
//! warning (never fatal: it is what a crash in the middle of a write leaves). It then *compacts*: it
//! writes the valid frames to `<path>.tmp`, syncs it, renames it over the journal and syncs the
//! directory, so a damaged tail is gone for good and later records are appended after a clean end.
//!
//! # Writing
//! [`JournalWriter::start`] runs a tokio task fed by a [`JournalSink`], the graph's
//! [`EventSink`]: the sink only pushes each record into an unbounded channel (it never blocks and
//! never drops one while the writer runs). The task orders records by number (tombstones fill the
//! gaps) and writes them when they are *committed*: [`JournalHandle::wait_written`]`(n)` makes `n` a
//! commit point, and once every record up to a commit point has arrived, the task writes everything
//! up to the furthest such point as **one frame** (a batch) with one `write_all` and, with `sync`,
//! one `fdatasync`; so requests that commit together share one write and one sync (group commit).
//! Before it collects a batch the task yields once, so that requests ready to run commit into the
//! same batch. A batch of up to 256 KiB without `sync` is written by the task itself (a page-cache
//! write of a few microseconds, cheaper than waking a blocking thread and being woken by it);
//! larger batches and synced ones are written on tokio's blocking pool.
//!
//! Why commit points and whole-batch frames: one request can change the graph through several
//! events (a `want` registers its unit and adds each edge; a `fail` fails every dependent too), and
//! a crash must leave all of them or none. The agent commits only at numbers where no such change
//! is half-done, and a batch is read all or nothing, so a crash in the middle of a write (a `kill
//! -9` can cut a `write` short) loses the whole uncommitted batch — changes nobody was told about —
//! and never half of one. A record is never written before a commit covers it.
//!
//! After each batch the task publishes the highest number written through a `watch` channel:
//! `wait_written` resolves once its number is in the file (and synced, with `sync`), and
//! [`JournalHandle::wait_covered`] waits for that without making a commit point (for `watch`, which
//! must not show an event a crash could take back). The first write error stops the journal for
//! good, loudly: it is logged, and every later wait gets the error instead of a false acknowledgment.
//!
//! This module owns the file format and the file; it must not interpret events beyond their numbers
//! and times (replaying them is `unitsync_core::GraphBuilder::restore`'s job) and must not touch the
//! socket or the protocol.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use unitsync_core::{Event, EventKind, EventSink, Graph, GraphBuilder, RestoreError};

/// The journal format version this code reads and writes.
pub const JOURNAL_VERSION: u64 = 1;

/// The longest payload a frame may have. A longer length field means the frame is corrupt.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// The largest batch the writer task writes itself (without `sync`); larger ones, and every batch
/// that must be synced, are written on a blocking thread.
const INLINE_WRITE_BYTES: usize = 256 << 10;

/// Bytes before each payload: its length and its checksum.
const FRAME_HEADER_BYTES: usize = 8;

/// The magic word in the header.
const JOURNAL_MAGIC: &str = "unitsync";

#[derive(Serialize, Deserialize)]
struct Header {
    journal: String,
    version: u64,
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// The event's sequence number.
    pub seq: u64,
    /// When it happened: milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Every record before the first problem, in file order (and so in increasing `seq` order).
    pub records: Vec<JournalRecord>,
    /// How many leading bytes are the header and those records: where a clean file would end.
    pub valid_len: usize,
    /// The first frame that could not be read, if any.
    pub problem: Option<DecodeProblem>,
}

/// Where and why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct DecodeProblem {
    /// The offset of the frame that could not be read.
    pub offset: usize,
    /// What is wrong with it.
    pub kind: DecodeProblemKind,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeProblemKind {
    /// Fewer than 8 bytes left for the frame's length and checksum: a torn write.
    #[error("a frame header cut short ({available} of 8 bytes)")]
    ShortHeader {
        /// Bytes present.
        available: usize,
    },
    /// The payload is shorter than its length field says: a torn write.
    #[error("a record cut short ({available} of {length} bytes)")]
    ShortPayload {
        /// The length field.
        length: usize,
        /// Bytes present.
        available: usize,
    },
    /// The length field is over [`MAX_RECORD_BYTES`]: corrupt.
    #[error("a length of {length} bytes, over the limit of {MAX_RECORD_BYTES}")]
    TooLong {
        /// The length field.
        length: usize,
    },
    /// The payload does not match its checksum: corrupt.
    #[error("a checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum field.
        stored: u32,
        /// The payload's checksum.
        computed: u32,
    },
    /// The payload is not the JSON of a journal record.
    #[error("a record that is not valid: {0}")]
    BadRecord(String),
    /// A record whose number is not above the previous one.
    #[error("sequence number {seq} after {previous}")]
    SeqNotIncreasing {
        /// Its number.
        seq: u64,
        /// The previous record's number.
        previous: u64,
    },
    /// The first frame is not a unitsync journal header.
    #[error("no unitsync journal header")]
    NotAHeader,
    /// The header names a version this code does not read.
    #[error("journal version {0}, but this agent reads version {JOURNAL_VERSION}")]
    UnsupportedVersion(u64),
}

impl DecodeProblemKind {
    /// Whether this is what an interrupted append leaves (as opposed to damage).
    pub fn is_torn(&self) -> bool {
        matches!(self, Self::ShortHeader { .. } | Self::ShortPayload { .. })
    }
}

/// Why the journal cannot be used. Each message names the file, what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file exists but is not a unitsync journal (or its header is damaged).
    #[error(
        "{} is not a unitsync journal ({problem}); it was left untouched: pass another --state file, \
         move it away, or use --fresh to discard it", path.display()
    )]
    NotAJournal {
        /// The file.
        path: PathBuf,
        /// What is wrong with its first frame.
        problem: DecodeProblem,
    },
    /// The file is a unitsync journal of another version.
    #[error(
        "{} is a unitsync journal of version {version}, but this agent reads version \
         {JOURNAL_VERSION}; run the agent version that wrote it, or use --fresh to discard it",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        version: u64,
    },
    /// Reading, writing, syncing or renaming failed.
    #[error("cannot {action} the journal {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`read`, `write`, ...).
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The journal's events do not rebuild a consistent graph.
    #[error(
        "the journal {} cannot be replayed: {error}; the agent refuses to start rather than serve a \
         wrong graph: use --fresh to discard it (its units are lost)", path.display()
    )]
    Replay {
        /// The file.
        path: PathBuf,
        /// The event that did not fit.
        error: RestoreError,
    },
    /// The writer hit an error and stopped: changes from then on are not saved.
    #[error(
        "journaling to {} stopped after a write error ({error}); changes since then are not saved: \
         fix the cause (disk full? permissions?) and restart the agent", path.display()
    )]
    WriteFailed {
        /// The file.
        path: PathBuf,
        /// The first write error.
        error: Arc<str>,
    },
    /// The writer ended (its graph was dropped or its runtime shut down) before the number was
    /// written.
    #[error("the journal writer for {} has stopped; later changes are not saved", path.display())]
    Stopped {
        /// The file.
        path: PathBuf,
    },
}

// ---- the format ----

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("payloads are bounded by MAX_RECORD_BYTES");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The header frame every journal starts with.
pub fn encode_header() -> Vec<u8> {
    let header = Header {
        journal: JOURNAL_MAGIC.to_owned(),
        version: JOURNAL_VERSION,
    };
    let mut out = Vec::new();
    frame(
        &serde_json::to_vec(&header).expect("the header serialises"),
        &mut out,
    );
    out
}

/// Appends one frame holding every one of `records` (in order) to `out`: a *batch*, which
/// [`decode`] reads all or nothing (a single record is written as [`encode_record`] writes it). Fails
/// for an empty batch, or one over [`MAX_RECORD_BYTES`], which `decode` would refuse.
pub fn encode_batch(records: &[JournalRecord], out: &mut Vec<u8>) -> Result<(), String> {
    match records {
        [] => Err("an empty batch".to_owned()),
        [record] => encode_record(record, out),
        records => {
            let payload = serde_json::to_vec(records).map_err(|e| e.to_string())?;
            if payload.len() > MAX_RECORD_BYTES {
                return Err(format!(
                    "a batch of {} events ({} to {}) encodes to {} bytes, over the limit of \
                     {MAX_RECORD_BYTES}",
                    records.len(),
                    records[0].seq,
                    records[records.len() - 1].seq,
                    payload.len()
                ));
            }
            frame(&payload, out);
            Ok(())
        }
    }
}

/// Appends `record`'s frame to `out`. Fails only for a record over [`MAX_RECORD_BYTES`], which
/// [`decode`] would refuse.
pub fn encode_record(record: &JournalRecord, out: &mut Vec<u8>) -> Result<(), String> {
    let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "event {} encodes to {} bytes, over the limit of {MAX_RECORD_BYTES}",
            record.seq,
            payload.len()
        ));
    }
    frame(&payload, out);
    Ok(())
}

/// The payload of the frame at `offset`, and where the next frame starts.
fn read_frame(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), DecodeProblemKind> {
    let rest = &bytes[offset..];
    let Some((head, body)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(DecodeProblemKind::ShortHeader {
            available: rest.len(),
        });
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *head;
    let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    if length > MAX_RECORD_BYTES {
        return Err(DecodeProblemKind::TooLong { length });
    }
    let Some(payload) = body.get(..length) else {
        return Err(DecodeProblemKind::ShortPayload {
            length,
            available: body.len(),
        });
    };
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(DecodeProblemKind::Checksum { stored, computed });
    }
    Ok((payload, offset + FRAME_HEADER_BYTES + length))
}

/// Decodes a whole journal file. Pure, and never panics: see the module docs. An empty input is an
/// empty journal with no problem; a problem at offset 0 means the input is not a (readable) journal.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded {
        records: Vec::new(),
        valid_len: 0,
        problem: None,
    };
    if bytes.is_empty() {
        return decoded;
    }
    let stop = |decoded: &mut Decoded, kind| {
        decoded.problem = Some(DecodeProblem {
            offset: decoded.valid_len,
            kind,
        });
    };
    match read_frame(bytes, 0) {
        Err(kind) => {
            stop(&mut decoded, kind);
            return decoded;
        }
        Ok((payload, next)) => match serde_json::from_slice::<Header>(payload) {
            Ok(header) if header.journal == JOURNAL_MAGIC => {
                if header.version != JOURNAL_VERSION {
                    stop(
                        &mut decoded,
                        DecodeProblemKind::UnsupportedVersion(header.version),
                    );
                    return decoded;
                }
                decoded.valid_len = next;
            }
            _ => {
                stop(&mut decoded, DecodeProblemKind::NotAHeader);
                return decoded;
            }
        },
    }
    let mut previous = 0;
    while decoded.valid_len < bytes.len() {
        let (payload, next) = match read_frame(bytes, decoded.valid_len) {
            Ok(frame) => frame,
            Err(kind) => {
                stop(&mut decoded, kind);
                break;
            }
        };
        let records = match parse_payload(payload) {
            Ok(records) => records,
            Err(problem) => {
                stop(&mut decoded, problem);
                break;
            }
        };
        // A frame is all or nothing: one bad number rejects every record in it.
        let mut last = previous;
        let mut problem = None;
        for record in &records {
            if record.seq <= last {
                problem = Some(DecodeProblemKind::SeqNotIncreasing {
                    seq: record.seq,
                    previous: last,
                });
                break;
            }
            last = record.seq;
        }
        if let Some(problem) = problem {
            stop(&mut decoded, problem);
            break;
        }
        previous = last;
        decoded.records.extend(records);
        decoded.valid_len = next;
    }
    decoded
}

/// The records of one frame's payload: one record (an object), or a batch (a non-empty array).
fn parse_payload(payload: &[u8]) -> Result<Vec<JournalRecord>, DecodeProblemKind> {
    let bad = |error: String| DecodeProblemKind::BadRecord(error);
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let records: Vec<JournalRecord> =
            serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
        if records.is_empty() {
            return Err(bad("an empty batch".to_owned()));
        }
        Ok(records)
    } else {
        serde_json::from_slice::<JournalRecord>(payload)
            .map(|record| vec![record])
            .map_err(|e| bad(e.to_string()))
    }
}

// ---- opening ----

/// A journal read and compacted by [`open`], ready to be replayed and appended to.
#[derive(Debug)]
pub struct Opened {
    /// The journaled events, in order, `at` measured from [`origin_unix_ms`](Self::origin_unix_ms).
    pub events: Vec<Event>,
    /// Unix milliseconds that event durations are measured from: the first record's time, or now
    /// for an empty journal. The graph's origin and the agent's wall-clock conversions must use it.
    pub origin_unix_ms: u64,
    /// What was cut off the end of the file, if anything.
    pub dropped: Option<DroppedTail>,
    /// The writer, positioned at the end of the compacted file; not running yet.
    pub writer: JournalWriter,
}

/// A damaged tail that [`open`] cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// Where the first unreadable frame started.
    pub offset: usize,
    /// How many bytes were dropped from there to the end.
    pub bytes: usize,
    /// Why the frame could not be read.
    pub problem: DecodeProblemKind,
}

/// The journal file's temporary sibling used by compaction.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// Opens the journal at `path` (see the module docs): `fresh` discards whatever is there; a missing
/// or empty file is an empty journal; a file that is not a unitsync journal is refused and never
/// overwritten; a torn or corrupt tail is cut off with a warning. Then compacts the file and returns
/// its events and a writer positioned at its end.
pub fn open(path: &Path, fresh: bool) -> Result<Opened, JournalError> {
    let bytes = if fresh {
        Vec::new()
    } else {
        match read_file(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(io_error(path, "read")(error)),
        }
    };
    let decoded = decode(&bytes);
    let mut dropped = None;
    if let Some(problem) = decoded.problem {
        if decoded.valid_len == 0 {
            return Err(match problem.kind {
                DecodeProblemKind::UnsupportedVersion(version) => {
                    JournalError::UnsupportedVersion {
                        path: path.to_owned(),
                        version,
                    }
                }
                _ => JournalError::NotAJournal {
                    path: path.to_owned(),
                    problem,
                },
            });
        }
        let tail = DroppedTail {
            offset: problem.offset,
            bytes: bytes.len() - problem.offset,
            problem: problem.kind,
        };
        tracing::warn!(
            path = %path.display(),
            offset = tail.offset,
            dropped_bytes = tail.bytes,
            kept_records = decoded.records.len(),
            "journal: cutting off a {} tail at byte {}: {}; the changes recorded there are lost",
            if tail.problem.is_torn() { "torn" } else { "corrupt" },
            tail.offset,
            tail.problem,
        );
        dropped = Some(tail);
    }

    let header = encode_header();
    let valid: &[u8] = if decoded.valid_len == 0 {
        &header
    } else {
        &bytes[..decoded.valid_len]
    };
    let file = compact(path, valid)?;

    let origin_unix_ms = decoded
        .records
        .first()
        .map_or_else(unix_now_ms, |record| record.unix_ms);
    let next_seq = decoded.records.last().map_or(1, |record| record.seq + 1);
    let events = decoded
        .records
        .into_iter()
        .map(|record| Event {
            seq: record.seq,
            at: Duration::from_millis(record.unix_ms.saturating_sub(origin_unix_ms)),
            kind: record.kind,
        })
        .collect();
    Ok(Opened {
        events,
        origin_unix_ms,
        dropped,
        writer: JournalWriter {
            path: path.to_owned(),
            file,
            next_seq,
            origin_unix_ms,
        },
    })
}

/// The whole file at `path`, never through a symbolic link (Unix): a link is an error, not followed.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut bytes = Vec::new();
    options.open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Replaces the journal by `valid` atomically: write and sync `<path>.tmp`, rename it over `path`,
/// sync the directory. Returns the new file, open for writing at its end. The temporary file is
/// always created new (`O_EXCL`, mode `0600`): a leftover one is removed first, so neither its mode
/// nor a link planted in its place carries over.
fn compact(path: &Path, valid: &[u8]) -> Result<File, JournalError> {
    let temporary = temporary_path(path);
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error(&temporary, "remove the leftover")(error))
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .map_err(io_error(&temporary, "create"))?;
    file.write_all(valid)
        .map_err(io_error(&temporary, "write"))?;
    file.sync_all().map_err(io_error(&temporary, "sync"))?;
    std::fs::rename(&temporary, path).map_err(io_error(path, "replace"))?;
    sync_directory_of(path)?;
    Ok(file)
}

/// Makes a rename in `path`'s directory durable (Unix; elsewhere renames are not synced this way).
fn sync_directory_of(path: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io_error(path, "sync the directory of"))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The `Instant` of a wall-clock time in Unix milliseconds (now, if that time is in the future or
/// too far back for this platform's `Instant`).
pub fn instant_at_unix_ms(unix_ms: u64) -> Instant {
    let now = Instant::now();
    let ago = Duration::from_millis(unix_now_ms().saturating_sub(unix_ms));
    now.checked_sub(ago).unwrap_or(now)
}

impl Opened {
    /// The `Instant` to build the graph with, so that its durations match the journal's
    /// ([`instant_at_unix_ms`] of [`origin_unix_ms`](Self::origin_unix_ms)).
    pub fn origin(&self) -> Instant {
        instant_at_unix_ms(self.origin_unix_ms)
    }

    /// The whole start sequence in one call: starts the writer (on the current tokio runtime; `sync`
    /// as in [`JournalWriter::start`]), and restores the events into a graph built by `builder` with
    /// the journal's origin and the writer's sink. A journal that does not replay is
    /// [`JournalError::Replay`] (the writer then ends by itself, having written nothing).
    pub fn restore(
        self,
        builder: GraphBuilder,
        sync: bool,
    ) -> Result<(Graph, JournalHandle), JournalError> {
        let origin = self.origin();
        let path = self.writer.path.clone();
        let (sink, handle) = self.writer.start(sync);
        let graph = builder
            .origin(origin)
            .sink(Arc::new(sink))
            .restore(self.events)
            .map_err(|error| JournalError::Replay {
                path: path.clone(),
                error,
            })?;
        // A crash inside a failure's propagation leaves its dependents pending on a failed unit;
        // finish it now (the new events go to this journal like any others).
        let finished = graph.finish_interrupted_failures();
        if !finished.is_empty() {
            tracing::warn!(
                journal = %path.display(),
                units = ?finished,
                "finished a failure propagation the journal had cut short"
            );
        }
        Ok((graph, handle))
    }
}

// ---- writing ----

/// The file end of a journal, from [`open`]; [`start`](Self::start) it to begin appending.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    /// The number the next record must have (one past the last record in the file).
    next_seq: u64,
    origin_unix_ms: u64,
}

/// One sequence number's record on its way to the writer.
type Queued = (u64, Option<Event>);

/// The graph side of the journal: an [`EventSink`] that queues every record for the writer task.
/// Never blocks; never drops a record while the writer runs.
#[derive(Debug, Clone)]
pub struct JournalSink {
    queue: mpsc::UnboundedSender<Queued>,
}

impl EventSink for JournalSink {
    fn record(&self, seq: u64, event: Option<&Event>) {
        // Fails only once the writer has stopped, which it has reported to every waiter.
        let _ = self.queue.send((seq, event.cloned()));
    }
}

/// How far the writer got.
#[derive(Debug, Clone)]
struct Progress {
    /// Every number up to this one is in the file (or was a tombstone).
    written: u64,
    /// The error that stopped the writer, if one did.
    failure: Option<Arc<str>>,
}

/// The request side of the journal: commits changes and waits until they are in the file. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    path: Arc<Path>,
    progress: watch::Receiver<Progress>,
    /// Commit points for the writer (see [`wait_written`](Self::wait_written)).
    commits: mpsc::UnboundedSender<u64>,
}

impl JournalHandle {
    /// The highest number written through (every number up to it is in the file).
    pub fn written(&self) -> u64 {
        self.progress.borrow().written
    }

    /// Commits every record up to `seq` and resolves once they are in the file (and synced, if the
    /// writer syncs). Errors if the writer stopped first, by a write error or because it ended:
    /// never a false acknowledgment. `seq` 0 resolves at once.
    ///
    /// `seq` becomes a *commit point*: the writer writes the records up to it together, in one
    /// frame that a crash leaves whole or not at all. So `seq` must not fall inside a change that
    /// spans several numbers (a `want` and its edges, a `fail` and its propagation): pass
    /// `graph.next_event_seq() - 1` read while no such change is half-done (the agent reads it under
    /// the lock its multi-event changes take).
    pub async fn wait_written(&self, seq: u64) -> Result<(), JournalError> {
        if self.progress.borrow().written < seq {
            // Fails only once the writer has stopped; the wait below then reports why.
            let _ = self.commits.send(seq);
        }
        self.wait_covered(seq).await
    }

    /// Resolves once every record up to `seq` is in the file, written by someone else's commit:
    /// unlike [`wait_written`](Self::wait_written) it makes no commit point, so `seq` may be any
    /// number (for a reader that must not show an event before it is saved). Errors as
    /// `wait_written` does.
    pub async fn wait_covered(&self, seq: u64) -> Result<(), JournalError> {
        let mut progress = self.progress.clone();
        let result = progress
            .wait_for(|p| p.written >= seq || p.failure.is_some())
            .await
            .map(|p| p.clone());
        match result {
            Ok(p) if p.written >= seq => Ok(()),
            Ok(p) => Err(JournalError::WriteFailed {
                path: self.path.to_path_buf(),
                error: p.failure.unwrap_or_else(|| Arc::from("unknown")),
            }),
            Err(_) => {
                let last = progress.borrow().clone();
                match last.failure {
                    _ if last.written >= seq => Ok(()),
                    Some(error) => Err(JournalError::WriteFailed {
                        path: self.path.to_path_buf(),
                        error,
                    }),
                    None => Err(JournalError::Stopped {
                        path: self.path.to_path_buf(),
                    }),
                }
            }
        }
    }
}

impl JournalWriter {
    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number the first new record must have: one past the journal's last.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Spawns the writer task on the current tokio runtime (panics outside one). With `sync`, each
    /// batch is `fdatasync`ed before it is acknowledged. The task ends when every clone of the sink
    /// is dropped (after writing every record it holds without a gap) or at the first write error.
    pub fn start(self, sync: bool) -> (JournalSink, JournalHandle) {
        let (queue, incoming) = mpsc::unbounded_channel();
        let (commits, commit_points) = mpsc::unbounded_channel();
        let (publish, progress) = watch::channel(Progress {
            written: self.next_seq - 1,
            failure: None,
        });
        let handle = JournalHandle {
            path: Arc::from(self.path.as_path()),
            progress,
            commits,
        };
        tokio::spawn(self.run(incoming, commit_points, publish, sync));
        (JournalSink { queue }, handle)
    }

    async fn run(
        self,
        mut incoming: mpsc::UnboundedReceiver<Queued>,
        mut commit_points: mpsc::UnboundedReceiver<u64>,
        publish: watch::Sender<Progress>,
        sync: bool,
    ) {
        let Self {
            path,
            file,
            mut next_seq,
            origin_unix_ms,
        } = self;
        let file = Arc::new(file);
        let mut waiting: BTreeMap<u64, Option<Event>> = BTreeMap::new();
        let mut points: BTreeSet<u64> = BTreeSet::new();
        let mut handles_open = true;
        let mut graph_open = true;
        while graph_open {
            tokio::select! {
                queued = incoming.recv() => match queued {
                    Some(first) => {
                        queue(&mut waiting, next_seq, first);
                        while let Ok(more) = incoming.try_recv() {
                            queue(&mut waiting, next_seq, more);
                        }
                    }
                    None => graph_open = false,
                },
                point = commit_points.recv(), if handles_open => match point {
                    Some(point) => {
                        points.insert(point);
                        while let Ok(more) = commit_points.try_recv() {
                            points.insert(more);
                        }
                    }
                    None => handles_open = false,
                },
            }
            // Let the requests that are ready to run commit too (one turn of the scheduler), then
            // pick up what arrived meanwhile, so one batch serves every request that is waiting.
            tokio::task::yield_now().await;
            while let Ok(more) = incoming.try_recv() {
                queue(&mut waiting, next_seq, more);
            }
            while let Ok(more) = commit_points.try_recv() {
                points.insert(more);
            }
            // Write through the furthest commit point whose records have all arrived; with the
            // graph gone (no change can be half-done any more), through every record without a gap.
            let contiguous = contiguous_end(&waiting, next_seq);
            let through = if graph_open {
                points.range(..=contiguous).next_back().copied()
            } else {
                Some(contiguous)
            };
            let Some(through) = through.filter(|&through| through >= next_seq) else {
                continue;
            };
            let mut records = Vec::new();
            while next_seq <= through {
                if let Some(Some(event)) = waiting.remove(&next_seq) {
                    records.push(JournalRecord {
                        seq: event.seq,
                        unix_ms: origin_unix_ms
                            .saturating_add(u64::try_from(event.at.as_millis()).unwrap_or(0)),
                        kind: event.kind,
                    });
                }
                next_seq += 1;
            }
            // Every commit point passed is a place where the batch may be split if it is too
            // large for one frame.
            let later = points.split_off(&(through + 1));
            let boundaries = std::mem::replace(&mut points, later);
            let written = match encode_batches(&records, &boundaries) {
                Err(error) => Err(error),
                Ok(bytes) if bytes.is_empty() => Ok(()),
                // A small batch without `sync` goes to the page cache in a few microseconds: write
                // it here, where handing it to a blocking thread and back would cost more than the
                // write (two thread wake-ups per batch).
                Ok(bytes) if !sync && bytes.len() <= INLINE_WRITE_BYTES => (&*file)
                    .write_all(&bytes)
                    .map_err(|error| error.to_string()),
                Ok(bytes) => {
                    let file = Arc::clone(&file);
                    tokio::task::spawn_blocking(move || {
                        (&*file).write_all(&bytes)?;
                        if sync {
                            file.sync_data()?;
                        }
                        Ok::<(), std::io::Error>(())
                    })
                    .await
                    .map_err(|join| join.to_string())
                    .and_then(|io| io.map_err(|error| error.to_string()))
                }
            };
            match written {
                Ok(()) => {
                    publish.send_modify(|p| p.written = through);
                }
                Err(error) => {
                    tracing::error!(
                        path = %path.display(),
                        %error,
                        "journal: write failed; journaling has stopped and changes from now on \
                         are not saved"
                    );
                    publish.send_modify(|p| p.failure = Some(Arc::from(error)));
                    return;
                }
            }
        }
        if !waiting.is_empty() {
            tracing::warn!(
                path = %path.display(),
                first_missing = next_seq,
                held = waiting.len(),
                "journal: the graph went away with records after a number that never arrived"
            );
        }
    }
}

/// Files one record for the writer (a number already written, or queued twice, is a bug upstream:
/// logged and ignored).
fn queue(waiting: &mut BTreeMap<u64, Option<Event>>, next_seq: u64, (seq, event): Queued) {
    if seq < next_seq || waiting.insert(seq, event).is_some() {
        tracing::warn!(
            seq,
            "journal: a sequence number was recorded twice; ignored"
        );
    }
}

/// The last number of the run of records that follows `next_seq - 1` without a gap (`next_seq - 1`
/// itself if `next_seq` has not arrived).
fn contiguous_end(waiting: &BTreeMap<u64, Option<Event>>, next_seq: u64) -> u64 {
    let mut end = next_seq - 1;
    for &seq in waiting.range(next_seq..).map(|(seq, _)| seq) {
        if seq != end + 1 {
            break;
        }
        end = seq;
    }
    end
}

/// The frames for one write: one batch frame (read all or nothing), or, if that is too large, as
/// few frames as fit, each ending at one of the commit points in `boundaries` (so each frame still
/// holds whole changes). Only a single change too large for a frame (tens of thousands of events)
/// is split inside itself, loudly.
fn encode_batches(
    records: &[JournalRecord],
    boundaries: &BTreeSet<u64>,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    if records.is_empty() || encode_batch(records, &mut bytes).is_ok() {
        return Ok(bytes);
    }
    bytes.clear();
    let mut rest = records;
    while !rest.is_empty() {
        // The longest prefix that ends at a commit point (or at the end) and fits in one frame.
        let ends: Vec<usize> = (1..=rest.len())
            .filter(|&n| n == rest.len() || boundaries.contains(&rest[n - 1].seq))
            .collect();
        // A frame's size grows with its records: binary search for the last end that fits.
        let fits = |n: usize| encode_batch(&rest[..n], &mut Vec::new()).is_ok();
        let fitting = ends.partition_point(|&n| fits(n));
        let mut frame = Vec::new();
        let taken = match fitting.checked_sub(1).map(|i| ends[i]) {
            Some(n) => {
                encode_batch(&rest[..n], &mut frame)?;
                n
            }
            None => {
                tracing::warn!(
                    first = rest[0].seq,
                    "journal: one change is too large for one frame; it is written in several, so \
                     a crash while writing it could keep only its first part"
                );
                let mut n = ends.first().copied().unwrap_or(rest.len());
                loop {
                    frame.clear();
                    match encode_batch(&rest[..n], &mut frame) {
                        Ok(()) => break n,
                        Err(error) if n == 1 => return Err(error),
                        Err(_) => n = n.div_ceil(2),
                    }
                }
            }
        };
        bytes.extend_from_slice(&frame);
        rest = &rest[taken..];
    }
    Ok(bytes)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use unitsync_core::UnitName;

    /// `/dev/full` fails every write with ENOSPC: the writer must stop loudly, and no waiter may be
    /// told its change is saved.
    #[tokio::test]
    async fn a_write_error_stops_the_journal_and_fails_every_later_wait() {
        let writer = JournalWriter {
            path: PathBuf::from("/dev/full"),
            file: File::options().write(true).open("/dev/full").unwrap(),
            next_seq: 1,
            origin_unix_ms: 0,
        };
        let (sink, handle) = writer.start(true);
        let event = Event {
            seq: 1,
            at: Duration::ZERO,
            kind: EventKind::Registered {
                unit: UnitName::new("a").unwrap(),
            },
        };
        sink.record(1, Some(&event));
        let error = handle.wait_written(1).await.unwrap_err();
        assert!(matches!(error, JournalError::WriteFailed { .. }), "{error}");
        assert!(error.to_string().contains("restart the agent"), "{error}");
        assert_eq!(handle.written(), 0);
        sink.record(2, None); // the writer is gone: recording neither blocks nor panics
        assert!(handle.wait_written(2).await.is_err());
        handle.wait_written(0).await.unwrap();
    }
}

#[cfg(test)]
mod batching {
    use super::*;
    use unitsync_core::UnitName;

    /// A record of about `kib` KiB (a failure with a long reason).
    fn big(seq: u64, kib: usize) -> JournalRecord {
        JournalRecord {
            seq,
            unix_ms: seq,
            kind: EventKind::Failed {
                unit: UnitName::new(&format!("u{seq}")).unwrap(),
                reason: "x".repeat(kib << 10),
                cause: None,
            },
        }
    }

    /// The seq of the last record of each frame in `bytes` (a journal without its header).
    fn frame_ends(bytes: &[u8]) -> Vec<u64> {
        let with_header = [encode_header(), bytes.to_vec()].concat();
        let mut ends = Vec::new();
        let mut offset = encode_header().len();
        while offset < with_header.len() {
            let (payload, next) = read_frame(&with_header, offset).unwrap();
            ends.push(parse_payload(payload).unwrap().last().unwrap().seq);
            offset = next;
        }
        ends
    }

    #[test]
    fn a_write_too_large_for_one_frame_is_split_only_at_commit_points() {
        // Ten records of 2 MiB (20 MiB: two frames at least); commit points after 2, 5, 6 and 10.
        let records: Vec<_> = (1..=10).map(|seq| big(seq, 2 << 10)).collect();
        let boundaries: BTreeSet<u64> = [2, 5, 6, 10].into();
        let bytes = encode_batches(&records, &boundaries).unwrap();
        let ends = frame_ends(&bytes);
        assert!(ends.len() >= 2, "{ends:?}");
        assert!(ends.iter().all(|end| boundaries.contains(end)), "{ends:?}");
        let decoded = decode(&[encode_header(), bytes].concat());
        assert_eq!(decoded.records, records);
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn only_a_single_change_too_large_for_a_frame_is_split_inside() {
        let records: Vec<_> = (1..=9).map(|seq| big(seq, 2 << 10)).collect();
        let bytes = encode_batches(&records, &BTreeSet::new()).unwrap();
        assert!(frame_ends(&bytes).len() >= 2);
        assert_eq!(decode(&[encode_header(), bytes].concat()).records, records);
        // A write that fits is one frame.
        let small: Vec<_> = (1..=3).map(|seq| big(seq, 1)).collect();
        let bytes = encode_batches(&small, &BTreeSet::new()).unwrap();
        assert_eq!(frame_ends(&bytes), vec![3]);
    }
}
