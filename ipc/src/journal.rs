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
//! That rewrite is also the snapshot: no event is ever superseded (units are never removed or
//! reset; each has at most one registration, start, and completion or failure, plus one record
//! per edge), so the graph's state is exactly its events and the file never holds more than the
//! graph; restarting without changes leaves it byte for byte the same.
//!
//! # Writing
//! [`JournalWriter::start`] returns a [`JournalSink`], the graph's [`EventSink`], and a
//! [`JournalHandle`] for the requests; no task runs in between. The sink encodes each record's JSON
//! on the thread that produced the event and files it under a mutex (held only for bookkeeping,
//! never across I/O): records arrive numbered by the graph but possibly out of order across
//! threads, so one that arrives ahead of a missing number is held until the gap fills (tombstones
//! fill gaps and are written as nothing).
//!
//! *Changes and safe cuts.* One request can change the graph through several events (a `want`
//! registers its unit and adds each edge; a `fail` fails every dependent too), and a crash must
//! leave all of them or none. The agent runs each such operation inside a *change*
//! ([`JournalHandle::change`], a guard on the serving thread: every record the sink gets on that
//! thread while it lives belongs to the change). A batch may end only at a *safe cut*: a number up
//! to which every record has arrived, below the first record of every change still in progress,
//! and not between the first and last record of a change that ended. Changes run in parallel on
//! any number of threads and their numbers may interleave; nothing serialises them — the journal
//! only waits, for the few microseconds a change takes, before writing past it. A record made
//! outside any change is a change of its own. Each batch is written as **one frame**, which
//! [`decode`] reads all or nothing, so a crash in the middle of a write (a `kill -9` can cut a
//! `write` short) loses the whole batch — changes nobody was told about — and never half of one.
//!
//! *Commits.* [`JournalHandle::wait_written`]`(n)` and [`JournalHandle::commit`]`(n, ..)` make `n`
//! a *commit point*: some request needs every record up to `n` in the file. The next batch is every
//! record through the furthest safe cut, once that covers a commit point. `wait_written` resolves
//! once its number is in the file (and synced, with `sync`), only after the write (and sync) of its
//! batch returned. `commit` does not wait: it files an [`Acknowledgment`] that runs once the number
//! is written, on the thread that wrote it (the agent's acknowledgment sends the answer; so a
//! request waiting for the journal costs no task wake-up). The acknowledgments a batch makes due
//! run oldest request first. [`JournalHandle::wait_covered`] waits like `wait_written` without
//! making a commit point (for `watch`, which must not show an event a crash could take back); it
//! may lead a batch that others committed, never one of its own.
//!
//! *Group commit with a leader.* A wait or commit that finds a batch to write and no write in
//! progress claims the *lead* ([`Lead`]). The leader yields once (so that the requests ready to run
//! on its thread change the graph and commit too), takes the batch, writes it with one `write_all`
//! and, with `sync`, one `fdatasync`, publishes the new written number, runs the acknowledgments
//! that became due and wakes every waiter; if more became writable meanwhile it writes that too. A
//! wait that finds a leader writing sleeps until woken, and a commit simply returns. So concurrent
//! requests share one write and one sync, and only one leader writes at a time, in number order. A
//! leader's first batch of up to 256 KiB without `sync` is written on its own thread (a page-cache
//! write of a few microseconds, cheaper than a hand-off); a larger first batch and synced ones are
//! written on tokio's blocking pool, which publishes the batch itself (so it completes even if the
//! leading future is dropped; a batch dropped unwritten, say by a runtime shutting down, stops the
//! journal). Batches that became writable meanwhile follow on the same thread, whatever their
//! size. When a batch becomes writable with nobody to lead it — a record that fills a gap arrives,
//! or a change ends, with no commit right after, or a lead is dropped unused — the waiters are
//! woken, and if acknowledgments are pending the journal spawns a *rescue* task on the current
//! tokio runtime that takes the lead (or, if the journal stopped, gives them the error). No
//! progress bound: changes that keep overlapping on different threads, each starting before the
//! last ended, would hold every batch back; each change is a few microseconds of synchronous
//! work, and the agent has as many in progress as it has worker threads.
//!
//! When the last clone of the sink is dropped (the graph is gone, so no change is in progress)
//! every record that arrived without a gap is written, on the dropping thread or by the leader
//! writing then. The first write error stops the journal for good, loudly: it is logged, nothing
//! more is written, and every later wait or acknowledgment for a number not yet written gets the
//! error instead of a false acknowledgment. Once the graph is gone and its records are written, a
//! wait for a later number gets [`JournalError::Stopped`].
//!
//! This module owns the file format and the file; it must not interpret events beyond their numbers
//! and times (replaying them is `unitsync_core::GraphBuilder::restore`'s job) and must not touch the
//! socket or the protocol.

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use unitsync_core::{Event, EventKind, EventSink, Graph, GraphBuilder, RestoreError, UnitName};

/// The journal format version this code reads and writes.
pub const JOURNAL_VERSION: u64 = 1;

/// The longest payload a frame may have. A longer length field means the frame is corrupt.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// The largest batch a leader writes on its own thread (without `sync`); larger ones, and every
/// batch that must be synced, are written on a blocking thread.
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
    /// A write failed and journaling stopped: changes from then on are not saved.
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
    /// Journaling ended (its graph was dropped, or a batch was abandoned because its runtime shut
    /// down) before the number was written.
    #[error("the journal writer for {} has stopped; later changes are not saved", path.display())]
    Stopped {
        /// The file.
        path: PathBuf,
    },
}

// ---- the format ----

/// The header frame every journal starts with.
pub fn encode_header() -> Vec<u8> {
    let header = Header {
        journal: JOURNAL_MAGIC.to_owned(),
        version: JOURNAL_VERSION,
    };
    let payload = serde_json::to_vec(&header).expect("the header serialises");
    let mut out = Vec::new();
    push_frame(&[(0, payload)], &mut out);
    out
}

/// Appends one frame holding every one of `records` (in order) to `out`: a *batch*, which
/// [`decode`] reads all or nothing; one record is framed alone, as the writer frames a batch of
/// one. The same bytes the journal's writer produces for these records (both build frames with
/// one routine). Fails for an empty batch, or one over
/// [`MAX_RECORD_BYTES`], which `decode` would refuse.
pub fn encode_batch(records: &[JournalRecord], out: &mut Vec<u8>) -> Result<(), String> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err("an empty batch".to_owned());
    };
    let encoded = records
        .iter()
        .map(|record| Ok((record.seq, serde_json::to_vec(record)?)))
        .collect::<serde_json::Result<Vec<Encoded>>>()
        .map_err(|error| error.to_string())?;
    let length = payload_len(&encoded);
    if length > MAX_RECORD_BYTES {
        return Err(match records.len() {
            1 => format!(
                "event {} encodes to {length} bytes, over the limit of {MAX_RECORD_BYTES}",
                first.seq
            ),
            count => format!(
                "a batch of {count} events ({} to {}) encodes to {length} bytes, over the limit \
                 of {MAX_RECORD_BYTES}",
                first.seq, last.seq
            ),
        });
    }
    push_frame(&encoded, out);
    Ok(())
}

/// Appends `record`'s frame to `out`. Fails only for a record over [`MAX_RECORD_BYTES`], which
/// [`decode`] would refuse.
pub fn encode_record(record: &JournalRecord, out: &mut Vec<u8>) -> Result<(), String> {
    encode_batch(std::slice::from_ref(record), out)
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

/// Now, in Unix milliseconds (0 before 1970, saturating far in the future).
pub(crate) fn unix_now_ms() -> u64 {
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

    /// The whole start sequence in one call: starts journaling (`sync` as in
    /// [`JournalWriter::start`]), and restores the events into a graph built by `builder` with the
    /// journal's origin and the journal's sink. A journal that does not replay is
    /// [`JournalError::Replay`] (the journal then stops with the dropped graph, having written
    /// nothing).
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

/// One record on its way to the file: its number and its JSON payload, encoded by the sink.
type Encoded = (u64, Vec<u8>);

/// The JSON payload of the [`JournalRecord`] `{seq, unix_ms, kind}`, byte for byte what serde
/// writes for it (a test holds the two together), without cloning the kind or going through serde's
/// `flatten` and internally tagged enums, which escape-scan every key and go through the map
/// machinery: the object's keys and the event's tag are written as the fixed bytes serde would
/// write, every value through `serde_json` itself.
fn encode_payload(seq: u64, unix_ms: u64, kind: &EventKind) -> serde_json::Result<Vec<u8>> {
    /// `,"key":` and the value's JSON.
    fn field(
        payload: &mut Vec<u8>,
        key: &[u8],
        value: &(impl Serialize + ?Sized),
    ) -> serde_json::Result<()> {
        payload.extend_from_slice(key);
        serde_json::to_writer(payload, value)
    }
    let mut payload = Vec::with_capacity(128);
    payload.extend_from_slice(b"{\"seq\":");
    serde_json::to_writer(&mut payload, &seq)?;
    field(&mut payload, b",\"unix_ms\":", &unix_ms)?;
    match kind {
        EventKind::Registered { unit } => {
            payload.extend_from_slice(b",\"event\":\"registered\"");
            field(&mut payload, b",\"unit\":", unit.as_str())?;
        }
        EventKind::DependencyAdded { unit, dependency } => {
            payload.extend_from_slice(b",\"event\":\"dependency_added\"");
            field(&mut payload, b",\"unit\":", unit.as_str())?;
            field(&mut payload, b",\"dependency\":", dependency.as_str())?;
        }
        EventKind::Started { unit, by } => {
            payload.extend_from_slice(b",\"event\":\"started\"");
            field(&mut payload, b",\"unit\":", unit.as_str())?;
            if let Some(by) = by {
                field(&mut payload, b",\"by\":", by.as_str())?;
            }
        }
        EventKind::Completed { unit } => {
            payload.extend_from_slice(b",\"event\":\"completed\"");
            field(&mut payload, b",\"unit\":", unit.as_str())?;
        }
        EventKind::Failed {
            unit,
            reason,
            cause,
        } => {
            payload.extend_from_slice(b",\"event\":\"failed\"");
            field(&mut payload, b",\"unit\":", unit.as_str())?;
            field(&mut payload, b",\"reason\":", reason.as_str())?;
            field(
                &mut payload,
                b",\"cause\":",
                &cause.as_ref().map(UnitName::as_str),
            )?;
        }
    }
    payload.push(b'}');
    Ok(payload)
}

/// What the sink and every handle share: the file and the writing state.
#[derive(Debug)]
struct Inner {
    path: Arc<Path>,
    file: File,
    sync: bool,
    /// Held only for short bookkeeping, never across I/O.
    state: Mutex<State>,
    /// Woken (every waiter) when a batch is done, the journal stops, the graph goes away, or a
    /// commit point becomes writable while nobody leads.
    wake: Notify,
}

#[derive(Debug)]
struct State {
    /// The records numbered `taken + 1 ..= received`, in order (tombstones are simply absent).
    ready: VecDeque<Encoded>,
    /// Records that arrived ahead of a missing number (above `received + 1`); `None` = tombstone.
    early: BTreeMap<u64, Option<Vec<u8>>>,
    /// Every number up to this one has arrived.
    received: u64,
    /// Every number up to this one is written, or being written by the leader.
    taken: u64,
    /// Every number up to this one is in the file (and synced, with `sync`).
    written: u64,
    /// Commit points above `taken`: numbers some wait needs written.
    points: BTreeSet<u64>,
    /// The lowest number recorded so far by each change in progress (see [`ChangeGuard`]): no
    /// batch may end at or after one of them.
    open: BTreeSet<u64>,
    /// The first and last number of each ended change of several numbers that is not taken yet:
    /// no batch may end inside one (`first <= through < last`).
    spans: Vec<(u64, u64)>,
    /// Whether someone holds the lead (a wait, a commit, or a rescue task; see [`Lead`]): it is
    /// about to take a batch, or its batch (numbers `written + 1 ..= taken`) is being written.
    leading: bool,
    /// Whether a clone of the sink (the graph) is still alive.
    graph_open: bool,
    /// The first write error: nothing is written after it.
    failure: Option<Arc<str>>,
    /// A batch was abandoned unwritten (its runtime shut down): nothing is written after it.
    stopped: bool,
    /// The frame buffer, reused from batch to batch.
    buffer: Vec<u8>,
    /// What runs once its commit point is written (see [`JournalHandle::commit`]).
    acks: Acknowledgments,
    /// Whether a rescue task (see [`Inner::kick`]) is spawned and has not run yet.
    rescuing: bool,
}

/// What [`JournalHandle::commit`] runs once its number is written (`Ok`), or once it never will be
/// (the error a wait would get). It runs on the thread that wrote the batch (or found the number
/// written), outside every journal lock; it must be quick and must not block. The
/// acknowledgments a batch makes due run oldest request first (see [`JournalHandle::commit`]).
pub type Acknowledgment = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

/// A pending acknowledgment: its commit point, since when its request waits, and what to run.
type Pending = (u64, Instant, Acknowledgment);

/// The pending acknowledgments.
#[derive(Default)]
struct Acknowledgments(Vec<Pending>);

impl std::fmt::Debug for Acknowledgments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pending acknowledgments", self.0.len())
    }
}

/// A batch a leader took: the records through `through` (a safe cut), and the changes of several
/// numbers inside it (it may be split between them if it is too large for one frame).
#[derive(Debug)]
struct Work {
    records: Vec<Encoded>,
    spans: Vec<(u64, u64)>,
    through: u64,
    buffer: Vec<u8>,
}

impl State {
    /// A journal whose file holds every number up to `last`, with the graph open.
    fn new(last: u64) -> Self {
        Self {
            ready: VecDeque::new(),
            early: BTreeMap::new(),
            received: last,
            taken: last,
            written: last,
            points: BTreeSet::new(),
            open: BTreeSet::new(),
            spans: Vec::new(),
            leading: false,
            graph_open: true,
            failure: None,
            stopped: false,
            buffer: Vec::new(),
            acks: Acknowledgments::default(),
            rescuing: false,
        }
    }

    /// Files one arriving record. Returns whether waiters must be woken: a commit point became
    /// writable and nobody leads.
    fn receive(&mut self, seq: u64, payload: Option<Vec<u8>>) -> bool {
        if self.failure.is_some() || self.stopped {
            return false; // nothing is written any more; every wait reports why
        }
        if seq <= self.received || self.early.contains_key(&seq) {
            tracing::warn!(
                seq,
                "journal: a sequence number was recorded twice; ignored"
            );
            return false;
        }
        if seq != self.received + 1 {
            self.early.insert(seq, payload);
            return false;
        }
        self.accept(seq, payload);
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() != self.received + 1 {
                break;
            }
            let (seq, payload) = entry.remove_entry();
            self.accept(seq, payload);
        }
        !self.leading && self.writable().is_some()
    }

    fn accept(&mut self, seq: u64, payload: Option<Vec<u8>>) {
        self.received = seq;
        if let Some(payload) = payload {
            self.ready.push_back((seq, payload));
        }
    }

    /// Takes the next batch and the lead, if nobody leads and there is one (see
    /// [`take_next`](Self::take_next)).
    fn take(&mut self) -> Option<Work> {
        if self.leading {
            return None;
        }
        let work = self.take_next()?;
        self.leading = true;
        Some(work)
    }

    /// The furthest *safe cut*: the highest number up to which every number has arrived and no
    /// change is half-recorded (none in progress has a number at or below it, none that ended has
    /// its first number at or below it and its last above).
    fn safe_cut(&self) -> u64 {
        let mut cut = self.received;
        if let Some(&first) = self.open.first() {
            cut = cut.min(first - 1);
        }
        while let Some(&(first, _)) = self
            .spans
            .iter()
            .find(|&&(first, last)| first <= cut && cut < last)
        {
            cut = first - 1;
        }
        cut
    }

    /// Where the next batch would end, if there is one to write: at the furthest safe cut, once it
    /// covers a commit point (with the graph gone, at the last record that arrived without a gap).
    fn writable(&self) -> Option<u64> {
        if self.failure.is_some() || self.stopped {
            return None;
        }
        let through = if self.graph_open {
            let lowest = *self.points.first()?;
            let cut = self.safe_cut();
            if lowest > cut {
                return None;
            }
            cut
        } else {
            self.received
        };
        (through > self.taken).then_some(through)
    }

    /// Takes the next batch, for the wait that holds the lead.
    fn take_next(&mut self) -> Option<Work> {
        let through = self.writable()?;
        let count = self.ready.partition_point(|(seq, _)| *seq <= through);
        let records = self.ready.drain(..count).collect();
        while self.points.first().is_some_and(|&point| point <= through) {
            self.points.pop_first();
        }
        // A safe cut ends no span inside itself: each span is wholly in this batch or after it.
        let spans = if self.spans.iter().all(|&(_, last)| last <= through) {
            std::mem::take(&mut self.spans)
        } else {
            let (inside, later) = self.spans.iter().partition(|&&(_, last)| last <= through);
            self.spans = later;
            inside
        };
        self.taken = through;
        Some(Work {
            records,
            spans,
            through,
            buffer: std::mem::take(&mut self.buffer),
        })
    }

    /// Why a number not yet written never will be, if the journal has stopped: a write error, an
    /// abandoned batch, or the graph gone with nobody writing its tail.
    fn stopped_by(&self) -> Option<Stop> {
        if let Some(error) = &self.failure {
            return Some(Stop::WriteFailed(Arc::clone(error)));
        }
        (self.stopped || !(self.graph_open || self.leading)).then_some(Stop::Ended)
    }

    /// Takes the acknowledgments that are due: those whose number is written, and, if the journal
    /// has stopped, every other one (with the error). The caller runs them once the lock is
    /// released.
    fn due(&mut self) -> Due {
        let mut due = Due::default();
        if self.acks.0.is_empty() {
            return due;
        }
        let written = self.written;
        let mut i = 0;
        while i < self.acks.0.len() {
            if self.acks.0[i].0 <= written {
                let (_, since, ack) = self.acks.0.swap_remove(i);
                due.saved.push((since, ack));
            } else {
                i += 1;
            }
        }
        if !self.acks.0.is_empty() {
            if let Some(stop) = self.stopped_by() {
                due.failed = Some((std::mem::take(&mut self.acks.0), stop));
            }
        }
        due
    }

    /// Claims the lead if nobody leads and there is a batch to write. Returns whether it did.
    fn claim_lead(&mut self) -> bool {
        let lead = !self.leading && self.writable().is_some();
        self.leading |= lead;
        lead
    }

    /// Notes that the change `mark` describes recorded `seq`.
    fn track(&mut self, mark: &mut ChangeMark, seq: u64) {
        if seq < mark.first {
            if mark.first != u64::MAX {
                self.open.remove(&mark.first);
            }
            self.open.insert(seq);
            mark.first = seq;
        }
        mark.last = mark.last.max(seq);
    }

    /// Notes that the change `mark` describes ended. Returns whether waiters must be woken: a
    /// commit point became writable and nobody leads.
    fn end_change(&mut self, mark: &ChangeMark) -> bool {
        if mark.first == u64::MAX {
            return false; // it recorded nothing
        }
        self.open.remove(&mark.first);
        if mark.last > mark.first && mark.last > self.taken {
            self.spans.push((mark.first, mark.last));
        }
        !self.leading && self.writable().is_some()
    }
}

/// Why the journal writes nothing more.
#[derive(Debug, Clone)]
enum Stop {
    /// A write failed with this error.
    WriteFailed(Arc<str>),
    /// A batch was abandoned, or the graph went away.
    Ended,
}

impl Stop {
    fn error(&self, path: &Path) -> JournalError {
        match self {
            Self::WriteFailed(error) => JournalError::WriteFailed {
                path: path.to_path_buf(),
                error: Arc::clone(error),
            },
            Self::Ended => JournalError::Stopped {
                path: path.to_path_buf(),
            },
        }
    }
}

/// Acknowledgments taken from the state, to run outside its lock.
#[derive(Default)]
struct Due {
    saved: Vec<(Instant, Acknowledgment)>,
    failed: Option<(Vec<Pending>, Stop)>,
}

impl Due {
    /// Runs the acknowledgments, the longest-waiting request first: a start blocked for seconds is
    /// answered before the `complete` that released it a moment ago.
    fn run(mut self, path: &Path) {
        self.saved.sort_by_key(|&(since, _)| since);
        for (_, ack) in self.saved {
            ack(Ok(()));
        }
        if let Some((mut acks, stop)) = self.failed {
            acks.sort_by_key(|&(_, since, _)| since);
            for (_, _, ack) in acks {
                ack(Err(stop.error(path)));
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called when a batch may have become writable with nobody writing it, or the journal
    /// stopped: wakes every waiter, one of which leads; and if acknowledgments are pending, which
    /// nobody waits for, starts a *rescue* task on the current tokio runtime that writes the batch
    /// (or, if the journal stopped, runs the acknowledgments with the error). Rare: a commit that
    /// finds its batch writable leads it itself; this is for records that arrive, or changes that
    /// end, without a commit right after, for a lead dropped unused, and for an encoding failure.
    /// At most one rescue task is pending at a time. Outside a runtime (or on one shutting down,
    /// which drops the task unrun) the acknowledgments wait for the next commit or wait.
    fn kick(self: &Arc<Self>) {
        self.wake.notify_waiters();
        {
            let mut state = self.lock();
            let needed = !state.acks.0.is_empty()
                && !state.rescuing
                && (state.stopped_by().is_some() || (!state.leading && state.writable().is_some()));
            if !needed {
                return;
            }
            state.rescuing = true;
        }
        let rescue = Rescue {
            inner: Arc::clone(self),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(rescue.run())),
            Err(_) => drop(rescue),
        }
    }

    /// Encodes and writes one batch (no lock held).
    fn write(&self, work: &mut Work) -> Result<(), String> {
        work.buffer.clear();
        encode_frames(&work.records, &work.spans, &mut work.buffer)?;
        if work.buffer.is_empty() {
            return Ok(()); // only tombstones
        }
        (&self.file)
            .write_all(&work.buffer)
            .map_err(|error| error.to_string())?;
        if self.sync {
            self.file.sync_data().map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Publishes a written batch (or the error that stopped the journal), runs the acknowledgments
    /// it made due and wakes every waiter. Returns the next batch, keeping the lead, if one became
    /// writable meanwhile (written at once, on the same thread, whatever its size); otherwise gives
    /// up the lead.
    fn complete(&self, mut work: Work, result: Result<(), String>) -> Option<Work> {
        let due;
        let next = {
            let mut state = self.lock();
            work.buffer.clear();
            if work.buffer.capacity() <= INLINE_WRITE_BYTES {
                state.buffer = std::mem::take(&mut work.buffer);
            }
            match &result {
                Ok(()) => state.written = work.through,
                Err(error) => state.failure = Some(Arc::from(error.as_str())),
            }
            let next = state.take_next();
            if next.is_none() {
                state.leading = false;
            }
            due = state.due();
            next
        };
        if let Err(error) = result {
            tracing::error!(
                path = %self.path.display(),
                %error,
                "journal: write failed; journaling has stopped and changes from now on are not saved"
            );
        }
        self.wake.notify_waiters();
        due.run(&self.path);
        next
    }
}

/// A batch being written by its leader. Dropped unwritten (its blocking task never ran because the
/// runtime shut down, or a panic), it stops the journal: later batches would leave a hole.
struct Batch {
    inner: Arc<Inner>,
    work: Option<Work>,
    /// Set once the lead is given up with everything taken written (or failed).
    done: bool,
}

impl Batch {
    /// Whether the leader writes it itself (see the module docs) rather than on a blocking thread.
    fn inline(&self) -> bool {
        let bytes: usize = self
            .work
            .iter()
            .flat_map(|w| &w.records)
            .map(|(_, p)| p.len())
            .sum();
        !self.inner.sync && bytes <= INLINE_WRITE_BYTES
    }

    fn run(mut self) {
        while let Some(mut work) = self.work.take() {
            let result = self.inner.write(&mut work);
            match self.inner.complete(work, result) {
                Some(next) => self.work = Some(next),
                None => self.done = true,
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let due = {
            let mut state = self.inner.lock();
            state.stopped = true;
            state.leading = false;
            state.due()
        };
        tracing::error!(
            path = %self.inner.path.display(),
            "journal: a batch was abandoned unwritten (the runtime shut down?); journaling has \
             stopped and changes from now on are not saved"
        );
        self.inner.kick();
        due.run(&self.inner.path);
    }
}

/// The graph side of the journal: an [`EventSink`] that encodes each record's JSON on the calling
/// thread and files it for the next batch. Never blocks on I/O; never drops a record while the
/// journal runs. When its last clone is dropped (the graph went away), every record that arrived
/// without a gap is written.
#[derive(Debug, Clone)]
pub struct JournalSink {
    shared: Arc<SinkShared>,
}

#[derive(Debug)]
struct SinkShared {
    inner: Arc<Inner>,
    origin_unix_ms: u64,
}

impl EventSink for JournalSink {
    fn record(&self, seq: u64, event: Option<&Event>) {
        let SinkShared {
            inner,
            origin_unix_ms,
        } = &*self.shared;
        let payload = match event {
            None => None,
            Some(event) => {
                let unix_ms =
                    origin_unix_ms.saturating_add(u64::try_from(event.at.as_millis()).unwrap_or(0));
                match encode_payload(seq, unix_ms, &event.kind) {
                    Ok(payload) => Some(payload),
                    Err(error) => {
                        let error = format!("cannot encode event {seq}: {error}");
                        tracing::error!(
                            path = %inner.path.display(),
                            %error,
                            "journal: journaling has stopped and changes from now on are not saved"
                        );
                        inner.lock().failure.get_or_insert_with(|| Arc::from(error));
                        // Pending acknowledgments get the error from the waits this wakes or the
                        // rescue task it starts (not here, inside a graph operation).
                        inner.kick();
                        return;
                    }
                }
            }
        };
        let wake = {
            let mut state = inner.lock();
            if let Some(mut mark) = CHANGE.get() {
                if mark.journal == Arc::as_ptr(inner) as usize {
                    state.track(&mut mark, seq);
                    CHANGE.set(Some(mark));
                }
            }
            state.receive(seq, payload)
        };
        if wake {
            inner.kick();
        }
    }
}

impl Drop for SinkShared {
    fn drop(&mut self) {
        let (work, due) = {
            let mut state = self.inner.lock();
            state.graph_open = false;
            if !state.early.is_empty() {
                tracing::warn!(
                    path = %self.inner.path.display(),
                    first_missing = state.received + 1,
                    held = state.early.len(),
                    "journal: the graph went away with records after a number that never arrived"
                );
            }
            let work = state.take();
            // With nothing left to write, acknowledgments still pending never will be.
            (work, state.due())
        };
        self.inner.kick();
        due.run(&self.inner.path);
        if let Some(work) = work {
            Batch {
                inner: Arc::clone(&self.inner),
                work: Some(work),
                done: false,
            }
            .run();
        }
    }
}

/// The request side of the journal: commits changes and waits until they are in the file. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    inner: Arc<Inner>,
}

impl JournalHandle {
    /// The highest number written through (every number up to it is in the file).
    pub fn written(&self) -> u64 {
        self.inner.lock().written
    }

    /// Marks one change that may record several events, for as long as the guard lives: every
    /// record this journal's sink gets *on this thread* until the guard is dropped belongs to it,
    /// and no batch ends inside it, so a crash keeps all of its events or none (see the module
    /// docs). Wrap each graph operation that can publish several events (a `want` and its edges, a
    /// `fail` and its propagation) and nothing else: the operation must run synchronously on this
    /// thread while the guard lives (the guard cannot cross an `.await` of a `Send` future).
    /// A guard taken while another of the same journal lives on this thread adds nothing (its
    /// records belong to the outer change); records made outside any guard are each a change of
    /// their own. Guards of different journals on one thread must end in the reverse order of
    /// their start (as scopes end them).
    pub fn change(&self) -> ChangeGuard<'_> {
        let journal = Arc::as_ptr(&self.inner) as usize;
        let current = CHANGE.get();
        let outer = match current {
            Some(mark) if mark.journal == journal => None,
            _ => Some(current),
        };
        if outer.is_some() {
            CHANGE.set(Some(ChangeMark {
                journal,
                first: u64::MAX,
                last: 0,
            }));
        }
        ChangeGuard {
            inner: &self.inner,
            outer,
            _this_thread: PhantomData,
        }
    }

    /// Commits every record up to `seq` and resolves once they are in the file (and synced, if the
    /// journal syncs), writing them itself if no write is in progress (see the module docs). Errors
    /// if the journal stopped first, by a write error or because the graph went away: never a false
    /// acknowledgment. `seq` 0 resolves at once.
    ///
    /// `seq` becomes a *commit point*; the batch that covers it ends at a safe cut at or after it
    /// (see the module docs), so any number will do: the agent passes `graph.next_event_seq() - 1`
    /// read when its request's operation returned.
    pub async fn wait_written(&self, seq: u64) -> Result<(), JournalError> {
        self.wait(seq, true).await
    }

    /// Resolves once every record up to `seq` is in the file, written through someone else's
    /// commit: unlike [`wait_written`](Self::wait_written) it makes no commit point, so `seq` may be
    /// any number (for a reader that must not show an event before it is saved). Errors as
    /// `wait_written` does.
    pub async fn wait_covered(&self, seq: u64) -> Result<(), JournalError> {
        self.wait(seq, false).await
    }

    async fn wait(&self, seq: u64, commit: bool) -> Result<(), JournalError> {
        let inner = &self.inner;
        loop {
            // Created before the state is read, so no wake-up after the read can be missed.
            let woken = inner.wake.notified();
            let lead = {
                let mut state = inner.lock();
                if state.written >= seq {
                    return Ok(());
                }
                if let Some(stop) = state.stopped_by() {
                    let due = state.due();
                    drop(state);
                    due.run(&inner.path);
                    return Err(stop.error(&inner.path));
                }
                if commit && state.graph_open && seq > state.taken {
                    state.points.insert(seq);
                }
                state.claim_lead()
            };
            if !lead || !Lead::claimed(inner).write().await {
                woken.await;
            }
        }
    }

    /// Commits every record up to `seq`, as [`wait_written`](Self::wait_written) does, without
    /// waiting for the write: `acknowledge` runs once the records are in the file (or with the
    /// error that means they never will be), on the thread that writes them, or on this one at
    /// once if they already are. If the batch can be written and nobody is writing, this call
    /// returns the [`Lead`]: [`write`](Lead::write) it (dropping it hands the batch to a new
    /// task). Otherwise the batch is written by the leader at work, or, if records it needs have
    /// not arrived yet, by whoever completes them: their change's [`ChangeGuard::commit`], or a
    /// task the journal starts for it (see [`Lead`]). `since` is when the request being
    /// acknowledged began: the acknowledgments one batch makes due run oldest first.
    pub fn commit(&self, seq: u64, since: Instant, acknowledge: Acknowledgment) -> Option<Lead> {
        self.inner.commit(None, seq, since, acknowledge)
    }
}

impl Inner {
    /// The commit of [`JournalHandle::commit`] and [`ChangeGuard::commit`]: ends the change `mark`
    /// describes, if any, makes `seq` a commit point, and files `acknowledge` (or runs it, if `seq`
    /// is written already or never will be), all under one lock.
    fn commit(
        self: &Arc<Self>,
        mark: Option<ChangeMark>,
        seq: u64,
        since: Instant,
        acknowledge: Acknowledgment,
    ) -> Option<Lead> {
        let mut acknowledge = Some(acknowledge);
        let (now, lead) = {
            let mut state = self.lock();
            if let Some(mark) = mark {
                state.end_change(&mark);
            }
            let now = if state.written >= seq {
                Some(Ok(()))
            } else if let Some(stop) = state.stopped_by() {
                Some(Err(stop))
            } else {
                if state.graph_open && seq > state.taken {
                    state.points.insert(seq);
                }
                if let Some(acknowledge) = acknowledge.take() {
                    state.acks.0.push((seq, since, acknowledge));
                }
                None
            };
            (now, state.claim_lead())
        };
        if let (Some(result), Some(acknowledge)) = (now, acknowledge) {
            acknowledge(result.map_err(|stop| stop.error(&self.path)));
        }
        lead.then(|| Lead::claimed(self))
    }
}

thread_local! {
    /// The change this thread is making, marked by a [`ChangeGuard`], if any.
    static CHANGE: Cell<Option<ChangeMark>> = const { Cell::new(None) };
}

/// What a [`ChangeGuard`] has seen so far: the numbers its change recorded.
#[derive(Debug, Clone, Copy)]
struct ChangeMark {
    /// The address of the journal's shared state: records for another journal are not this
    /// change's.
    journal: usize,
    /// The lowest number recorded, `u64::MAX` while none is.
    first: u64,
    /// The highest number recorded.
    last: u64,
}

/// One change in progress, from [`JournalHandle::change`]: ends when dropped. Bound to its thread.
#[must_use = "the change ends when the guard is dropped"]
#[derive(Debug)]
pub struct ChangeGuard<'a> {
    inner: &'a Arc<Inner>,
    /// `None` for a guard nested in another of the same journal (it marks nothing); otherwise the
    /// mark this one replaced (of another journal, or none), restored when it ends.
    outer: Option<Option<ChangeMark>>,
    /// Not `Send`: the mark lives in this thread's storage.
    _this_thread: PhantomData<*const ()>,
}

impl ChangeGuard<'_> {
    /// Ends the change and commits every record up to `seq` in one step, as
    /// [`JournalHandle::commit`] does (see there for `acknowledge` and the returned [`Lead`]).
    /// Unlike dropping the guard, this wakes nobody: this commit takes the lead itself if the
    /// change's end made a batch writable.
    pub fn commit(mut self, seq: u64, since: Instant, acknowledge: Acknowledgment) -> Option<Lead> {
        let mark = self.end_mark();
        self.inner.commit(mark, seq, since, acknowledge)
    }

    /// Restores the mark this guard replaced, and returns this change's, if it recorded anything
    /// (`None` for a nested guard, or one already ended).
    fn end_mark(&mut self) -> Option<ChangeMark> {
        let outer = self.outer.take()?;
        let mark = CHANGE.replace(outer);
        debug_assert!(
            mark.is_some_and(|mark| mark.journal == Arc::as_ptr(self.inner) as usize),
            "change guards of two journals ended out of order on one thread"
        );
        mark.filter(|mark| mark.first != u64::MAX)
    }
}

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        if let Some(mark) = self.end_mark() {
            if self.inner.lock().end_change(&mark) {
                self.inner.kick();
            }
        }
    }
}

/// The journal's lead, claimed by a commit or a wait that found a batch to write and nobody
/// writing: [`write`](Self::write) it. Dropped unused (say, with the task that held it), it gives
/// the lead back and wakes whoever can take it.
#[must_use = "the batch is written only by `write`"]
#[derive(Debug)]
pub struct Lead {
    inner: Arc<Inner>,
    /// Whether the lead is still claimed and its batch not taken.
    held: bool,
}

impl Lead {
    fn claimed(inner: &Arc<Inner>) -> Self {
        Self {
            inner: Arc::clone(inner),
            held: true,
        }
    }

    /// Lets the requests that are ready to run on this thread change the graph and commit too (one
    /// turn of the scheduler), so that one batch covers them all; then takes the batch and writes
    /// it, with every batch that became writable meanwhile, and runs their acknowledgments.
    /// Returns `false` if the batch went to tokio's blocking pool instead (a large or synced one),
    /// which completes it and wakes the waiters; `true` once it is written here, or if there was
    /// nothing left to write.
    pub async fn write(mut self) -> bool {
        tokio::task::yield_now().await;
        let work = {
            let mut state = self.inner.lock();
            self.held = false;
            let work = state.take_next();
            state.leading = work.is_some();
            work
        };
        let Some(work) = work else {
            self.inner.kick();
            return true;
        };
        let batch = Batch {
            inner: Arc::clone(&self.inner),
            work: Some(work),
            done: false,
        };
        if batch.inline() {
            batch.run();
            true
        } else {
            // The blocking thread publishes the batch itself, so it is completed even if this
            // future is dropped meanwhile.
            drop(tokio::task::spawn_blocking(move || batch.run()));
            false
        }
    }
}

/// The task [`Inner::kick`] starts for pending acknowledgments nobody waits for. It claims the lead
/// only when it runs, so dropping it unrun (a runtime shutting down) starts nothing new: it only
/// lets the next kick start another.
struct Rescue {
    inner: Arc<Inner>,
}

impl Rescue {
    async fn run(self) {
        let (lead, due) = {
            let mut state = self.inner.lock();
            state.rescuing = false;
            if state.stopped_by().is_some() {
                (false, state.due())
            } else {
                (state.claim_lead(), Due::default())
            }
        };
        due.run(&self.inner.path);
        if lead {
            Lead::claimed(&self.inner).write().await;
        }
    }
}

impl Drop for Rescue {
    fn drop(&mut self) {
        self.inner.lock().rescuing = false;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.held {
            self.inner.lock().leading = false;
            self.inner.kick();
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

    /// Starts journaling: returns the graph's sink and the requests' handle. No task runs in
    /// between: the waits and commits write (a batch too large to write inline, or one that must be
    /// synced, goes to tokio's blocking pool, and pending acknowledgments nobody waits for are
    /// written by a task spawned then, so waits and commits must run on a tokio runtime). With `sync`, each batch is
    /// `fdatasync`ed before it is acknowledged. When every clone of the sink is dropped, every
    /// record that arrived without a gap is written (on the dropping thread, or by the leader
    /// writing then), and later waits for numbers beyond it get [`JournalError::Stopped`].
    pub fn start(self, sync: bool) -> (JournalSink, JournalHandle) {
        let last = self.next_seq - 1;
        let inner = Arc::new(Inner {
            path: Arc::from(self.path.as_path()),
            file: self.file,
            sync,
            state: Mutex::new(State::new(last)),
            wake: Notify::new(),
        });
        let sink = JournalSink {
            shared: Arc::new(SinkShared {
                inner: Arc::clone(&inner),
                origin_unix_ms: self.origin_unix_ms,
            }),
        };
        (sink, JournalHandle { inner })
    }
}

/// The size of one frame's payload holding `records`: one record's JSON, or a JSON array of them.
fn payload_len(records: &[Encoded]) -> usize {
    let json: usize = records.iter().map(|(_, payload)| payload.len()).sum();
    match records.len() {
        0 | 1 => json,
        n => json + (n - 1) + 2,
    }
}

/// Appends one frame holding `records` (non-empty, fitting in [`MAX_RECORD_BYTES`]): their JSON
/// payloads as an array, or the one payload alone. The only place frames are built.
fn push_frame(records: &[Encoded], out: &mut Vec<u8>) {
    let length = payload_len(records);
    out.reserve(FRAME_HEADER_BYTES + length);
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let array = records.len() > 1;
    if array {
        out.push(b'[');
    }
    for (i, (_, payload)) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(payload);
    }
    if array {
        out.push(b']');
    }
    let crc = crc32fast::hash(&out[start + FRAME_HEADER_BYTES..]);
    let length = u32::try_from(length).expect("payloads are bounded by MAX_RECORD_BYTES");
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the frames for one write to `out`: one batch frame (read all or nothing), or, if that is
/// too large, as few frames as fit, none ending inside one of the multi-event changes in `spans`
/// (`first..=last`; so each frame still holds whole changes). Only a single change too large for a
/// frame (tens of thousands of events) is split inside itself, loudly; a single record too large
/// fails.
fn encode_frames(
    records: &[Encoded],
    spans: &[(u64, u64)],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    if payload_len(records) <= MAX_RECORD_BYTES {
        push_frame(records, out);
        return Ok(());
    }
    let mut rest = records;
    while !rest.is_empty() {
        // The longest prefix that fits in one frame, and the longest that also ends outside every
        // span (or at the end). A frame's size only grows with its records.
        let mut json = 0;
        let mut fitting = 0;
        let mut whole = 0;
        for (n, (seq, payload)) in rest.iter().enumerate().map(|(i, r)| (i + 1, r)) {
            json += payload.len();
            let length = if n == 1 { json } else { json + (n - 1) + 2 };
            if length > MAX_RECORD_BYTES {
                break;
            }
            fitting = n;
            let inside = spans
                .iter()
                .any(|&(first, last)| first <= *seq && *seq < last);
            if n == rest.len() || !inside {
                whole = n;
            }
        }
        let taken = if whole > 0 {
            whole
        } else if fitting > 0 {
            tracing::warn!(
                first = rest[0].0,
                "journal: one change is too large for one frame; it is written in several, so \
                 a crash while writing it could keep only its first part"
            );
            fitting
        } else {
            return Err(format!(
                "event {} encodes to {} bytes, over the limit of {MAX_RECORD_BYTES}",
                rest[0].0,
                rest[0].1.len()
            ));
        };
        push_frame(&rest[..taken], out);
        rest = &rest[taken..];
    }
    Ok(())
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
        // An acknowledgment is told too, at once: never a false "saved".
        let told = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&told);
        let acknowledge: Acknowledgment = Box::new(move |saved| {
            *slot.lock().unwrap() = Some(saved.map_err(|error| error.to_string()));
        });
        assert!(handle.commit(2, Instant::now(), acknowledge).is_none());
        let told = told.lock().unwrap().take().expect("acknowledged at once");
        assert!(told.unwrap_err().contains("restart the agent"));
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

    /// The frames for `records`, as a leader writes them, with the multi-event changes `spans`.
    fn encode_batches(records: &[JournalRecord], spans: &[(u64, u64)]) -> Result<Vec<u8>, String> {
        let encoded: Vec<Encoded> = records
            .iter()
            .map(|r| (r.seq, serde_json::to_vec(r).unwrap()))
            .collect();
        let mut bytes = Vec::new();
        encode_frames(&encoded, spans, &mut bytes)?;
        Ok(bytes)
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
    fn a_write_too_large_for_one_frame_is_split_only_between_changes() {
        // Ten records of 2 MiB (20 MiB: two frames at least) in four changes: 1-2, 3-5, 6, 7-10.
        let records: Vec<_> = (1..=10).map(|seq| big(seq, 2 << 10)).collect();
        let spans = [(1, 2), (3, 5), (7, 10)];
        let bytes = encode_batches(&records, &spans).unwrap();
        let ends = frame_ends(&bytes);
        assert!(ends.len() >= 2, "{ends:?}");
        assert!(
            ends.iter().all(|end| [2, 5, 6, 10].contains(end)),
            "{ends:?}"
        );
        let decoded = decode(&[encode_header(), bytes].concat());
        assert_eq!(decoded.records, records);
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn the_sink_encodes_a_record_byte_for_byte_as_serde_does() {
        let name = |unit: &str| UnitName::new(unit).unwrap();
        let kinds = [
            EventKind::Registered { unit: name("a") },
            EventKind::DependencyAdded {
                unit: name("a"),
                dependency: name("b"),
            },
            EventKind::Started {
                unit: name("b"),
                by: Some("sh#1".into()),
            },
            EventKind::Started {
                unit: name("c"),
                by: None,
            },
            EventKind::Completed { unit: name("b") },
            EventKind::Failed {
                unit: name("y"),
                reason: "exit status 2: \"quoted\" \u{1F600}".into(),
                cause: Some(name("x")),
            },
            EventKind::Failed {
                unit: name("z"),
                reason: "a\\b\n\t\u{1}".into(),
                cause: None,
            },
            EventKind::Started {
                unit: name("d"),
                by: Some("claim \"with\" quotes\n".into()),
            },
        ];
        for (seq, kind) in (1..).zip(kinds) {
            let unix_ms = u64::MAX - seq;
            let record = JournalRecord { seq, unix_ms, kind };
            assert_eq!(
                String::from_utf8(encode_payload(seq, unix_ms, &record.kind).unwrap()).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    #[test]
    fn only_a_single_change_too_large_for_a_frame_is_split_inside() {
        let records: Vec<_> = (1..=9).map(|seq| big(seq, 2 << 10)).collect();
        let bytes = encode_batches(&records, &[(1, 9)]).unwrap();
        assert!(frame_ends(&bytes).len() >= 2);
        assert_eq!(decode(&[encode_header(), bytes].concat()).records, records);
        // A write that fits is one frame.
        let small: Vec<_> = (1..=3).map(|seq| big(seq, 1)).collect();
        let bytes = encode_batches(&small, &[]).unwrap();
        assert_eq!(frame_ends(&bytes), vec![3]);
    }
}

/// The safe-cut bookkeeping driven through every interleaving proptest finds: several threads each
/// making changes of several numbers, the graph numbering their events in one order and the sink
/// getting them in another, commits and batch takes at any moment. The real threads of
/// `ipc/tests/journal.rs` and `ipc/tests/durability.rs` only sample such interleavings; this
/// enumerates them on [`State`] itself (every call the sink, the change guards and the leaders
/// make, in the same order under the same lock), without timing.
#[cfg(test)]
mod safe_cuts {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const THREADS: usize = 3;

    /// One thread's part: its change in progress, and the numbers the graph gave it that have not
    /// reached the sink yet (a thread delivers its own numbers in order).
    #[derive(Default)]
    struct Thread {
        change: Option<(ChangeMark, usize)>,
        undelivered: VecDeque<u64>,
    }

    /// What the model knows of every change: its numbers, and whether it ended.
    struct Change {
        numbers: Vec<u64>,
        ended: bool,
    }

    struct Run {
        state: State,
        threads: Vec<Thread>,
        /// The next number the graph hands out.
        next: u64,
        changes: Vec<Change>,
        /// Numbers that reached the sink with a record (not a tombstone).
        recorded: BTreeSet<u64>,
        /// Records in the order batches took them.
        taken: Vec<u64>,
    }

    impl Run {
        fn new() -> Self {
            Self {
                state: State::new(0),
                threads: (0..THREADS).map(|_| Thread::default()).collect(),
                next: 1,
                changes: Vec::new(),
                recorded: BTreeSet::new(),
                taken: Vec::new(),
            }
        }

        fn begin(&mut self, t: usize) {
            let thread = &mut self.threads[t];
            if thread.change.is_none() {
                let mark = ChangeMark {
                    journal: 0,
                    first: u64::MAX,
                    last: 0,
                };
                thread.change = Some((mark, self.changes.len()));
                self.changes.push(Change {
                    numbers: Vec::new(),
                    ended: false,
                });
            }
        }

        /// The graph numbers an event of thread `t` (outside a change, a change of its own).
        fn number(&mut self, t: usize) {
            let seq = self.next;
            self.next += 1;
            let thread = &mut self.threads[t];
            thread.undelivered.push_back(seq);
            match thread.change {
                Some((_, c)) => self.changes[c].numbers.push(seq),
                None => self.changes.push(Change {
                    numbers: vec![seq],
                    ended: true,
                }),
            }
        }

        /// Thread `t`'s oldest numbered event reaches the sink, as `JournalSink::record` files it.
        fn deliver(&mut self, t: usize, tombstone: bool) {
            let thread = &mut self.threads[t];
            let Some(seq) = thread.undelivered.pop_front() else {
                return;
            };
            if let Some((mark, _)) = &mut thread.change {
                self.state.track(mark, seq);
            }
            let payload = (!tombstone).then(|| seq.to_string().into_bytes());
            if !tombstone {
                self.recorded.insert(seq);
            }
            self.state.receive(seq, payload);
        }

        /// Thread `t`'s change ends, as its guard does (once its events reached the sink: the
        /// graph calls the sink inside the operation).
        fn end(&mut self, t: usize) {
            let thread = &mut self.threads[t];
            if !thread.undelivered.is_empty() {
                return;
            }
            if let Some((mark, c)) = thread.change.take() {
                self.state.end_change(&mark);
                self.changes[c].ended = true;
            }
        }

        /// A request commits everything numbered so far, as the agent's commit point does.
        fn commit(&mut self) {
            let point = self.next - 1;
            if point > self.state.taken {
                self.state.points.insert(point);
            }
        }

        /// A leader takes the next batch and writes it; checks that it is one a crash may leave.
        fn take(&mut self) -> Result<bool, TestCaseError> {
            let before = self.state.taken;
            let Some(work) = self.state.take_next() else {
                return Ok(false);
            };
            let through = work.through;
            prop_assert!(through > before);
            for seq in before + 1..=through {
                let arrived =
                    seq < self.next && !self.threads.iter().any(|t| t.undelivered.contains(&seq));
                prop_assert!(
                    arrived,
                    "batch through {through} includes {seq}, not arrived"
                );
            }
            let seqs: Vec<u64> = work.records.iter().map(|(seq, _)| *seq).collect();
            let expected: Vec<u64> = self.recorded.range(before + 1..=through).copied().collect();
            prop_assert_eq!(&seqs, &expected, "the batch's records, in order");
            for (seq, payload) in &work.records {
                prop_assert_eq!(payload, &seq.to_string().into_bytes());
            }
            for change in &self.changes {
                let inside = change.numbers.iter().filter(|&&n| n <= through).count();
                if inside > 0 {
                    prop_assert!(
                        change.ended && inside == change.numbers.len(),
                        "batch through {through} holds part of the change {:?} (ended: {})",
                        change.numbers,
                        change.ended
                    );
                }
            }
            for &(first, last) in &work.spans {
                prop_assert!(before < first && first < last && last <= through);
            }
            self.taken.extend(seqs);
            self.state.written = through;
            Ok(true)
        }

        /// Every thread finishes, a last commit, and batches until none is left: then everything
        /// recorded has been taken, once, in order.
        fn drain(&mut self) -> Result<(), TestCaseError> {
            for t in 0..THREADS {
                while !self.threads[t].undelivered.is_empty() {
                    self.deliver(t, false);
                }
                self.end(t);
            }
            self.commit();
            while self.take()? {}
            prop_assert_eq!(self.state.taken, self.next - 1, "nothing left behind");
            let all: Vec<u64> = self.recorded.iter().copied().collect();
            prop_assert_eq!(&self.taken, &all);
            prop_assert!(self.state.open.is_empty() && self.state.spans.is_empty());
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_batch_ends_inside_a_change_and_nothing_is_left_behind(
            steps in prop::collection::vec((0u8..7, 0..THREADS), 0..120)
        ) {
            let mut run = Run::new();
            for (op, t) in steps {
                match op {
                    0 => run.begin(t),
                    1 => run.number(t),
                    2 => run.deliver(t, false),
                    3 => run.deliver(t, true),
                    4 => run.end(t),
                    5 => run.commit(),
                    _ => {
                        run.take()?;
                    }
                }
            }
            run.drain()?;
        }
    }
}
