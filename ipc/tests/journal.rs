//! The state journal (`unitsync_ipc::journal`) through its public API, on real files in a temporary
//! directory:
//! - the format: encode → decode round trip of every kind of event; `decode` never panics and its
//!   valid prefix is self-consistent, whatever the bytes (proptest);
//! - recovery: a journal cut at every byte offset of its last record replays to the state before that
//!   record; a flipped byte anywhere in a middle record cuts the journal there; compaction leaves
//!   exactly the valid frames (and no temporary file);
//! - refusals: a file that is not a unitsync journal, or of another version, is refused and left
//!   untouched; `fresh` discards whatever is there; a missing file is an empty journal;
//! - the writer: records published out of order are written in number order, tombstones fill gaps,
//!   a change in progress holds back every batch past its first record, a change is one frame that
//!   a cut leaves whole or drops whole, `wait_written` resolves only once the bytes are in the
//!   file, and errors once the writer is gone; many tasks on two threads committing at once (group
//!   commit by a leading wait) each find their records in the file when acknowledged; a wait
//!   dropped while it leads gives the lead back; the graph going away writes every record that
//!   arrived without a gap;
//! - acknowledgments (`commit`): run only once their records are in the file, at once if they
//!   already are, oldest request first, by a task the journal starts if the missing record arrives
//!   with nobody waiting, with the error if the records never will be written; interleaved
//!   two-record changes committed from two threads are never split across frames;
//! - end to end: a graph journaled, reopened and restored is the same graph, and numbering and
//!   appending continue after the restored events.

use proptest::prelude::*;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use unitsync_core::{Event, EventKind, EventSink, Graph, UnitName, UnitSnapshot};
use unitsync_ipc::journal::{
    self, decode, encode_header, encode_record, DecodeProblemKind, JournalError, JournalRecord,
};

fn name(unit: &str) -> UnitName {
    UnitName::new(unit).unwrap()
}

fn record(seq: u64, kind: EventKind) -> JournalRecord {
    JournalRecord {
        seq,
        unix_ms: 1_700_000_000_000 + seq * 10,
        kind,
    }
}

fn every_kind() -> Vec<JournalRecord> {
    vec![
        record(1, EventKind::Registered { unit: name("a") }),
        record(
            2,
            EventKind::DependencyAdded {
                unit: name("a"),
                dependency: name("b"),
            },
        ),
        record(4, EventKind::Registered { unit: name("b") }),
        record(
            5,
            EventKind::Started {
                unit: name("b"),
                by: Some("sh#1".into()),
            },
        ),
        record(
            6,
            EventKind::Started {
                unit: name("c"),
                by: None,
            },
        ),
        record(7, EventKind::Completed { unit: name("b") }),
        record(
            9,
            EventKind::Failed {
                unit: name("x"),
                reason: "exit status 2: \"quoted\" \u{1F600}".into(),
                cause: None,
            },
        ),
        record(
            10,
            EventKind::Failed {
                unit: name("y"),
                reason: "dependency x failed".into(),
                cause: Some(name("x")),
            },
        ),
    ]
}

fn encode_all(records: &[JournalRecord]) -> Vec<u8> {
    let mut bytes = encode_header();
    for record in records {
        encode_record(record, &mut bytes).unwrap();
    }
    bytes
}

/// Where each frame starts (the header's first), by the documented format.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        starts.push(offset);
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 8 + length;
    }
    assert_eq!(offset, bytes.len());
    starts
}

/// Polls `future` once, without a runtime's waker.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    struct NoWake;
    impl Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(NoWake));
    future.poll(&mut Context::from_waker(&waker))
}

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.journal");
    Scratch { _dir: dir, path }
}

/// The journal at `scratch`, opened (not fresh) and started: its sink and handle.
fn started(scratch: &Scratch, sync: bool) -> (journal::JournalSink, journal::JournalHandle) {
    journal::open(&scratch.path, false)
        .unwrap()
        .writer
        .start(sync)
}

fn temporary_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn untimed(mut units: Vec<UnitSnapshot>) -> Vec<UnitSnapshot> {
    for unit in &mut units {
        unit.registered_at = None;
        unit.started_at = None;
        unit.finished_at = None;
    }
    units
}

/// Opens `path`, restores it into a graph with a running writer, and returns both.
fn reopen(path: &Path) -> (Graph, journal::JournalHandle, Option<journal::DroppedTail>) {
    let opened = journal::open(path, false).unwrap_or_else(|error| panic!("{error}"));
    let dropped = opened.dropped.clone();
    let (graph, handle) = opened
        .restore(Graph::builder(), false)
        .unwrap_or_else(|error| panic!("{error}"));
    (graph, handle, dropped)
}

async fn flush(graph: &Graph, handle: &journal::JournalHandle) {
    handle
        .wait_written(graph.next_event_seq() - 1)
        .await
        .unwrap();
}

// ---- the format ----

#[test]
fn records_of_every_kind_round_trip() {
    let records = every_kind();
    let bytes = encode_all(&records);
    let decoded = decode(&bytes);
    assert_eq!(decoded.records, records);
    assert_eq!(decoded.valid_len, bytes.len());
    assert_eq!(decoded.problem, None);
}

#[test]
fn the_header_and_a_record_look_as_documented() {
    let header = encode_header();
    let payload = br#"{"journal":"unitsync","version":1}"#;
    assert_eq!(&header[..4], &(payload.len() as u32).to_le_bytes());
    assert_eq!(&header[4..8], &crc32fast::hash(payload).to_le_bytes());
    assert_eq!(&header[8..], payload);

    let mut frame = Vec::new();
    encode_record(&every_kind()[3], &mut frame).unwrap();
    assert_eq!(
        std::str::from_utf8(&frame[8..]).unwrap(),
        r#"{"seq":5,"unix_ms":1700000000050,"event":"started","unit":"b","by":"sh#1"}"#
    );
}

#[test]
fn empty_input_is_an_empty_journal_and_a_bare_header_has_no_records() {
    assert_eq!(decode(&[]).problem, None);
    let header = encode_header();
    let decoded = decode(&header);
    assert_eq!(
        (decoded.records.len(), decoded.valid_len, decoded.problem),
        (0, header.len(), None)
    );
}

#[test]
fn decoding_stops_at_a_number_that_does_not_increase() {
    let mut records = every_kind();
    records[4].seq = records[3].seq;
    let bytes = encode_all(&records);
    let decoded = decode(&bytes);
    assert_eq!(decoded.records, records[..4]);
    let problem = decoded.problem.unwrap();
    assert_eq!(problem.offset, frame_starts(&bytes)[5]);
    assert_eq!(
        problem.kind,
        DecodeProblemKind::SeqNotIncreasing {
            seq: records[3].seq,
            previous: records[3].seq,
        }
    );
}

#[test]
fn an_absurd_length_is_corruption_not_a_short_read() {
    let mut bytes = encode_all(&every_kind()[..2]);
    let last = *frame_starts(&bytes).last().unwrap();
    bytes[last..last + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let problem = decode(&bytes).problem.unwrap();
    assert_eq!(problem.offset, last);
    assert!(matches!(problem.kind, DecodeProblemKind::TooLong { .. }));
}

fn check_decoded_invariants(bytes: &[u8]) {
    let decoded = decode(bytes);
    assert!(decoded.valid_len <= bytes.len());
    assert!(decoded.records.windows(2).all(|w| w[0].seq < w[1].seq));
    match &decoded.problem {
        None => assert_eq!(decoded.valid_len, bytes.len()),
        Some(problem) => assert_eq!(problem.offset, decoded.valid_len),
    }
    let again = decode(&bytes[..decoded.valid_len]);
    assert_eq!(again.records, decoded.records);
    assert_eq!(again.problem, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decoded_invariants(&bytes);
    }

    #[test]
    fn decode_never_panics_on_a_damaged_journal(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = encode_all(&every_kind());
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend_from_slice(&tail);
        check_decoded_invariants(&bytes);
    }
}

// ---- opening: recovery, refusals, compaction ----

#[tokio::test]
async fn a_journal_cut_at_every_byte_of_its_last_record_replays_to_the_state_before_it() {
    let scratch = scratch();
    let (graph, handle, _) = reopen(&scratch.path);
    graph.want("claude", &["git", "node"]).unwrap();
    graph.try_start_claimed("git", Some("sh#1")).unwrap();
    graph.complete("git").unwrap();
    graph.fail("node", "npm exploded").unwrap();
    graph.try_start("other").unwrap();
    flush(&graph, &handle).await;
    let before_last = graph.list();
    graph.complete("other").unwrap(); // exactly one event, committed alone: the last frame
    flush(&graph, &handle).await;

    let bytes = std::fs::read(&scratch.path).unwrap();
    let last_start = *frame_starts(&bytes).last().unwrap();
    let all = decode(&bytes).records;
    let reference = {
        let fewer = &bytes[..last_start];
        assert_eq!(decode(fewer).records, all[..all.len() - 1]);
        std::fs::write(&scratch.path, fewer).unwrap();
        reopen(&scratch.path).0.list()
    };
    assert_eq!(untimed(reference.clone()), untimed(before_last));

    for cut in last_start..bytes.len() {
        std::fs::write(&scratch.path, &bytes[..cut]).unwrap();
        let (restored, _, dropped) = reopen(&scratch.path);
        assert_eq!(restored.list(), reference, "cut at {cut}");
        assert_eq!(
            restored.next_event_seq(),
            all.last().unwrap().seq,
            "cut at {cut}"
        );
        assert_eq!(
            dropped
                .as_ref()
                .map(|d| (d.offset, d.bytes, d.problem.is_torn())),
            (cut > last_start).then_some((last_start, cut - last_start, true)),
            "cut at {cut}"
        );
        assert_eq!(std::fs::read(&scratch.path).unwrap(), bytes[..last_start]);
    }
    std::fs::write(&scratch.path, &bytes).unwrap();
    assert_eq!(
        untimed(reopen(&scratch.path).0.list()),
        untimed(graph.list())
    );
}

#[test]
fn a_flipped_byte_anywhere_in_a_middle_record_cuts_the_journal_there() {
    let records = every_kind();
    let bytes = encode_all(&records);
    let starts = frame_starts(&bytes);
    let (victim, end) = (starts[4], starts[5]); // record index 3 (frame 4: the header is frame 0)
    let scratch = scratch();
    for at in victim..end {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xA5;
        std::fs::write(&scratch.path, &damaged).unwrap();
        let opened = journal::open(&scratch.path, false).unwrap();
        let seqs: Vec<u64> = opened.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 4], "flip at {at}");
        let dropped = opened.dropped.expect("a damaged tail");
        assert_eq!(
            (dropped.offset, dropped.bytes),
            (victim, bytes.len() - victim)
        );
        assert!(
            !dropped.problem.is_torn() || at < victim + 4,
            "flip at {at}: {dropped:?}"
        );
        // Compaction: exactly the valid frames, atomically (no temporary left behind).
        assert_eq!(std::fs::read(&scratch.path).unwrap(), bytes[..victim]);
        assert!(!temporary_of(&scratch.path).exists());
    }
}

#[test]
fn events_are_timed_from_the_first_record() {
    let scratch = scratch();
    std::fs::write(&scratch.path, encode_all(&every_kind())).unwrap();
    let opened = journal::open(&scratch.path, false).unwrap();
    assert_eq!(opened.origin_unix_ms, 1_700_000_000_010);
    assert_eq!(opened.writer.next_seq(), 11);
    let at: Vec<Duration> = opened.events.iter().map(|e| e.at).collect();
    assert_eq!(at[0], Duration::ZERO);
    assert_eq!(at[1], Duration::from_millis(10));
    assert_eq!(at[7], Duration::from_millis(90));
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_and_left_untouched() {
    let scratch = scratch();
    let not_a_journal: Vec<Vec<u8>> = vec![b"#!/bin/sh\necho hello\n".to_vec(), vec![7, 0, 0], {
        let mut other = Vec::new();
        let payload = br#"{"journal":"something-else","version":1}"#;
        other.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        other.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        other.extend_from_slice(payload);
        other
    }];
    for content in not_a_journal {
        std::fs::write(&scratch.path, &content).unwrap();
        let error = journal::open(&scratch.path, false).unwrap_err();
        assert!(matches!(error, JournalError::NotAJournal { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&scratch.path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("--fresh"), "{message}");
        assert_eq!(std::fs::read(&scratch.path).unwrap(), content);
        assert!(!temporary_of(&scratch.path).exists());
    }
}

#[test]
fn a_journal_of_another_version_is_refused() {
    let scratch = scratch();
    let payload = br#"{"journal":"unitsync","version":2}"#;
    let mut content = Vec::new();
    content.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    content.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    content.extend_from_slice(payload);
    std::fs::write(&scratch.path, &content).unwrap();
    let error = journal::open(&scratch.path, false).unwrap_err();
    assert!(
        matches!(error, JournalError::UnsupportedVersion { version: 2, .. }),
        "{error}"
    );
    assert_eq!(std::fs::read(&scratch.path).unwrap(), content);
}

#[test]
fn fresh_discards_a_journal_or_anything_else() {
    let scratch = scratch();
    for content in [encode_all(&every_kind()), b"garbage".to_vec()] {
        std::fs::write(&scratch.path, &content).unwrap();
        let opened = journal::open(&scratch.path, true).unwrap();
        assert!(opened.events.is_empty());
        assert_eq!(opened.dropped, None);
        assert_eq!(opened.writer.next_seq(), 1);
        assert_eq!(std::fs::read(&scratch.path).unwrap(), encode_header());
    }
}

#[test]
fn a_missing_or_empty_file_is_an_empty_journal() {
    let scratch = scratch();
    let opened = journal::open(&scratch.path, false).unwrap();
    assert!(opened.events.is_empty());
    assert_eq!(std::fs::read(&scratch.path).unwrap(), encode_header());
    std::fs::write(&scratch.path, b"").unwrap();
    assert!(journal::open(&scratch.path, false)
        .unwrap()
        .events
        .is_empty());
    assert_eq!(std::fs::read(&scratch.path).unwrap(), encode_header());
}

#[cfg(unix)]
#[test]
fn the_journal_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = scratch();
    journal::open(&scratch.path, false).unwrap();
    let mode = std::fs::metadata(&scratch.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let scratch = scratch();
    let path = scratch.path.join("no-such-dir").join("state.journal");
    let error = journal::open(&path, false).unwrap_err();
    assert!(matches!(error, JournalError::Io { .. }), "{error}");
    assert!(error.to_string().contains("no-such-dir"), "{error}");
}

// ---- the writer ----

fn event(seq: u64, unit: &str) -> Event {
    Event {
        seq,
        at: Duration::from_millis(seq),
        kind: EventKind::Registered { unit: name(unit) },
    }
}

fn seqs_in(path: &Path) -> Vec<u64> {
    decode(&std::fs::read(path).unwrap())
        .records
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test]
async fn the_writer_writes_out_of_order_records_in_number_order_once_the_gap_fills() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, true);
    sink.record(4, Some(&event(4, "d")));
    sink.record(1, Some(&event(1, "a")));
    sink.record(3, Some(&event(3, "c")));
    handle.wait_written(1).await.unwrap();
    // When the wait returns, the bytes are in the file; 3 and 4 wait for 2.
    assert_eq!(seqs_in(&scratch.path), vec![1]);
    assert_eq!(handle.written(), 1);
    {
        let mut waiting = pin!(handle.wait_written(3));
        assert!(poll_once(waiting.as_mut()).is_pending());
        sink.record(2, None); // a tombstone fills the gap
        waiting.await.unwrap();
    }
    // Written through the furthest safe cut: 4 too, a change of its own (no guard marks a change).
    assert_eq!(seqs_in(&scratch.path), vec![1, 3, 4]);
    assert_eq!(handle.written(), 4);
    handle.wait_written(4).await.unwrap();
    handle.wait_written(0).await.unwrap();
}

#[tokio::test]
async fn a_commit_is_one_frame_read_all_or_nothing() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    // One change of three events (say a `want` and its two edges), published out of order, and
    // written only as a whole.
    let change = handle.change();
    sink.record(3, Some(&event(3, "c")));
    sink.record(1, Some(&event(1, "a")));
    {
        let mut waiting = pin!(handle.wait_written(3));
        assert!(poll_once(waiting.as_mut()).is_pending());
        // A reader that only follows commits (`watch`) waits too, and makes no commit point of 1.
        let mut covered = pin!(handle.wait_covered(1));
        assert!(poll_once(covered.as_mut()).is_pending());
        sink.record(2, Some(&event(2, "b")));
        // Every number is there, but the change is still in progress: nothing is written.
        assert!(poll_once(waiting.as_mut()).is_pending());
        assert!(poll_once(covered.as_mut()).is_pending());
        assert_eq!(seqs_in(&scratch.path), Vec::<u64>::new());
        drop(change);
        waiting.await.unwrap();
        covered.await.unwrap();
    }
    let bytes = std::fs::read(&scratch.path).unwrap();
    let starts = frame_starts(&bytes);
    assert_eq!(starts.len(), 2, "the header and one batch frame");
    assert_eq!(seqs_in(&scratch.path), vec![1, 2, 3]);
    // Cut anywhere inside the batch, the journal has none of it.
    for cut in starts[1]..bytes.len() {
        let decoded = decode(&bytes[..cut]);
        assert!(decoded.records.is_empty(), "cut at {cut}");
        assert_eq!(decoded.valid_len, starts[1], "cut at {cut}");
    }
    // A batch with a number out of order is rejected whole.
    let mut damaged = encode_header();
    encode_record(
        &record(1, EventKind::Registered { unit: name("a") }),
        &mut damaged,
    )
    .unwrap();
    journal::encode_batch(
        &[
            record(5, EventKind::Registered { unit: name("b") }),
            record(4, EventKind::Registered { unit: name("c") }),
        ],
        &mut damaged,
    )
    .unwrap();
    let decoded = decode(&damaged);
    assert_eq!(decoded.records.len(), 1);
    assert!(matches!(
        decoded.problem.map(|p| p.kind),
        Some(DecodeProblemKind::SeqNotIncreasing {
            seq: 4,
            previous: 5
        })
    ));
}

#[tokio::test]
async fn waiting_for_a_number_the_writer_will_never_get_is_an_error() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    handle.wait_written(1).await.unwrap();
    drop(sink); // the graph went away: the writer ends
    let error = handle.wait_written(2).await.unwrap_err();
    assert!(matches!(error, JournalError::Stopped { .. }), "{error}");
    handle.wait_written(1).await.unwrap();
}

/// Many tasks on two threads change a shared numbering at once (numbers arriving out of order
/// across threads, some as tombstones) and each commits its own numbers: each wait returns only once
/// its record is in the file, and in the end the file holds every event once, in order, whole.
async fn concurrent_commits(sync: bool, tasks: u64, rounds: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let scratch = scratch();
    let (sink, handle) = started(&scratch, sync);
    let next = Arc::new(AtomicU64::new(1));
    let mut joins = Vec::new();
    for task in 0..tasks {
        let (sink, handle, next, path) = (
            sink.clone(),
            handle.clone(),
            Arc::clone(&next),
            scratch.path.clone(),
        );
        joins.push(tokio::spawn(async move {
            let mut events = Vec::new();
            for round in 0..rounds {
                // Two numbers: the later one recorded first, the earlier one sometimes a tombstone.
                let first = next.fetch_add(2, Ordering::SeqCst);
                let second = first + 1;
                sink.record(second, Some(&event(second, &format!("t{task}r{round}b"))));
                if round % 3 == 0 {
                    sink.record(first, None);
                } else {
                    sink.record(first, Some(&event(first, &format!("t{task}r{round}a"))));
                    events.push(first);
                }
                events.push(second);
                handle.wait_written(second).await.unwrap();
                assert!(handle.written() >= second);
                if round % 16 == 0 {
                    assert!(
                        seqs_in(&path).contains(&second),
                        "{second} acknowledged, not in the file"
                    );
                }
            }
            events
        }));
    }
    let mut events = Vec::new();
    for join in joins {
        events.extend(join.await.unwrap());
    }
    events.sort_unstable();
    let decoded = decode(&std::fs::read(&scratch.path).unwrap());
    assert_eq!(decoded.problem, None);
    let written: Vec<u64> = decoded.records.iter().map(|r| r.seq).collect();
    assert_eq!(written, events);
    assert!(
        frame_starts(&std::fs::read(&scratch.path).unwrap()).len() > 1,
        "at least one batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_each_in_the_file_when_acknowledged() {
    concurrent_commits(false, 16, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_synced_commits_are_each_in_the_file_when_acknowledged() {
    concurrent_commits(true, 8, 25).await;
}

#[tokio::test]
async fn a_wait_dropped_while_it_leads_leaves_the_journal_working() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    {
        // The wait takes the lead, then yields so that other requests can join its batch; it is
        // dropped there (a request cancelled): the lead must be given back.
        let mut leading = pin!(handle.wait_written(1));
        assert!(poll_once(leading.as_mut()).is_pending());
    }
    // Its commit point stands: a reader that makes none still gets it written.
    handle.wait_covered(1).await.unwrap();
    assert_eq!(seqs_in(&scratch.path), vec![1]);
    sink.record(2, Some(&event(2, "b")));
    handle.wait_written(2).await.unwrap();
    assert_eq!(seqs_in(&scratch.path), vec![1, 2]);
}

#[tokio::test]
async fn the_graph_going_away_writes_what_arrived_without_a_gap() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    sink.record(2, Some(&event(2, "b")));
    sink.record(4, Some(&event(4, "d")));
    handle.wait_written(1).await.unwrap();
    assert_eq!(seqs_in(&scratch.path), vec![1, 2]);
    {
        // A reader waiting for 4, which 3 never arrives for.
        let mut covered = pin!(handle.wait_covered(4));
        assert!(poll_once(covered.as_mut()).is_pending());
        drop(sink);
        let error = covered.await.unwrap_err();
        assert!(matches!(error, JournalError::Stopped { .. }), "{error}");
    }
    assert_eq!(seqs_in(&scratch.path), vec![1, 2]);
    handle.wait_written(2).await.unwrap();
}

// ---- changes and acknowledgments ----

/// What an acknowledgment saw: the numbers in the file when it ran, or the error it got.
type Seen = Result<Vec<u64>, String>;

/// An acknowledgment that reports, on the returned channel, what the file held when it ran.
fn acknowledge_to(path: &Path) -> (journal::Acknowledgment, oneshot::Receiver<Seen>) {
    let (report, seen) = oneshot::channel();
    let path = path.to_owned();
    let acknowledge: journal::Acknowledgment = Box::new(move |saved| {
        let _ = report.send(
            saved
                .map(|()| seqs_in(&path))
                .map_err(|error| error.to_string()),
        );
    });
    (acknowledge, seen)
}

#[tokio::test]
async fn an_acknowledgment_runs_once_its_commit_is_in_the_file() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    sink.record(2, Some(&event(2, "b")));
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    let lead = handle
        .commit(2, Instant::now(), acknowledge)
        .expect("nobody writes: the commit leads");
    assert!(seen.try_recv().is_err(), "acknowledged before the write");
    assert!(lead.write().await);
    assert_eq!(seen.await.unwrap(), Ok(vec![1, 2]));
    // A number already written is acknowledged at once, and leads nothing.
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    assert!(handle.commit(1, Instant::now(), acknowledge).is_none());
    assert_eq!(seen.try_recv().unwrap(), Ok(vec![1, 2]));
}

#[tokio::test]
async fn acknowledgments_due_together_run_oldest_request_first() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    sink.record(2, Some(&event(2, "b")));
    let order = Arc::new(Mutex::new(Vec::new()));
    let note = |label: &'static str| -> journal::Acknowledgment {
        let order = Arc::clone(&order);
        Box::new(move |saved| {
            saved.unwrap();
            order.lock().unwrap().push(label);
        })
    };
    let early = Instant::now();
    let late = early + Duration::from_millis(1);
    // The request that arrived last commits first and leads; the one that waited longer is
    // answered first all the same.
    let lead = handle.commit(1, late, note("late")).unwrap();
    assert!(handle.commit(2, early, note("early")).is_none());
    assert!(lead.write().await);
    assert_eq!(*order.lock().unwrap(), vec!["early", "late"]);
}

#[tokio::test]
async fn a_commit_waiting_for_a_missing_record_is_written_when_it_arrives() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    sink.record(3, Some(&event(3, "c")));
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    assert!(
        handle.commit(3, Instant::now(), acknowledge).is_none(),
        "2 has not arrived: nothing to write yet"
    );
    assert!(seen.try_recv().is_err());
    // Nobody waits: the arrival itself gets the batch written (by a task on this runtime).
    sink.record(2, None);
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("written although nobody waited");
    assert_eq!(seen.unwrap(), Ok(vec![1, 3]));
}

#[tokio::test]
async fn a_change_in_progress_holds_back_every_batch_after_its_first_record() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    let change = handle.change();
    sink.record(2, Some(&event(2, "b")));
    // A record made on another thread belongs to no change: one of its own.
    std::thread::scope(|threads| {
        threads.spawn(|| sink.record(3, Some(&event(3, "c"))));
    });
    {
        // Everything up to 3 has arrived, but a batch may end only before the change (at 1), which
        // covers no commit: nothing is written.
        let mut waiting = pin!(handle.wait_written(3));
        assert!(poll_once(waiting.as_mut()).is_pending());
        assert_eq!(seqs_in(&scratch.path), Vec::<u64>::new());
        assert_eq!(handle.written(), 0);
        sink.record(4, Some(&event(4, "d")));
        let (acknowledge, seen) = acknowledge_to(&scratch.path);
        // Ending the change and committing is one step; nothing can be missing any more.
        let lead = change.commit(4, Instant::now(), acknowledge);
        if let Some(lead) = lead {
            lead.write().await;
        }
        waiting.await.unwrap();
        assert_eq!(seen.await.unwrap(), Ok(vec![1, 2, 3, 4]));
    }
    // 2 and 4 are one change: in one frame, which also holds 3 (it fell inside the change).
    let bytes = std::fs::read(&scratch.path).unwrap();
    assert_eq!(frame_starts(&bytes).len(), 2, "the header and one batch");
}

#[tokio::test]
async fn acknowledgments_get_the_error_when_their_records_never_will_be_written() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    assert!(handle.commit(2, Instant::now(), acknowledge).is_none());
    assert!(seen.try_recv().is_err());
    drop(sink); // the graph went away before 2 arrived
    let error = seen.await.unwrap().unwrap_err();
    assert!(error.contains("stopped"), "{error}");
    assert_eq!(seqs_in(&scratch.path), vec![1]);
    // Later commits are told at once.
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    assert!(handle.commit(3, Instant::now(), acknowledge).is_none());
    assert!(seen.try_recv().unwrap().is_err());
}

#[test]
fn a_lead_dropped_with_its_runtime_leaves_the_acknowledgment_to_the_next_writer() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lead = runtime
        .block_on(async { handle.commit(1, Instant::now(), acknowledge) })
        .expect("the commit leads");
    // A task that holds the lead and never writes, dropped with its runtime: the lead's drop asks
    // for a rescue on a runtime that can no longer run one (this once recursed until the stack
    // overflowed).
    drop(runtime.spawn(async move {
        let _held = lead;
        std::future::pending::<()>().await
    }));
    drop(runtime);
    assert!(seen.try_recv().is_err(), "not written, so not acknowledged");
    // The next writer writes it, and the acknowledgment is told it is saved.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(handle.wait_written(1)).unwrap();
    assert_eq!(seen.try_recv().unwrap(), Ok(vec![1]));
}

#[test]
fn an_acknowledgment_written_with_the_graph_s_last_records_is_told_they_are_saved() {
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    sink.record(1, Some(&event(1, "a")));
    let (acknowledge, mut seen) = acknowledge_to(&scratch.path);
    // Outside any runtime: the lead is given back unused, and no task can be started.
    drop(handle.commit(1, Instant::now(), acknowledge));
    assert!(seen.try_recv().is_err());
    // The graph goes away: its last records are written, and the journal stops after them; the
    // acknowledgment they cover is "saved", not "stopped".
    drop(sink);
    assert_eq!(seen.try_recv().unwrap(), Ok(vec![1]));
}

/// Tasks on two threads make two-record changes at once, each taking its numbers one at a time so
/// that changes interleave (one change can hold 5 and 7 while another holds 6 and 8), and commit
/// them with acknowledgments: each is acknowledged only once both records are in the file, and no
/// frame ends inside a change, so a crash keeps both records of a change or neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_changes_are_never_split_across_frames() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let scratch = scratch();
    let (sink, handle) = started(&scratch, false);
    let next = Arc::new(AtomicU64::new(1));
    let mut joins = Vec::new();
    for task in 0..8 {
        let (sink, handle, next) = (sink.clone(), handle.clone(), Arc::clone(&next));
        joins.push(tokio::spawn(async move {
            let mut changes = Vec::new();
            for round in 0..300 {
                let (first, second, lead, seen) = {
                    let change = handle.change();
                    let first = next.fetch_add(1, Ordering::SeqCst);
                    sink.record(first, Some(&event(first, &format!("t{task}r{round}a"))));
                    let second = next.fetch_add(1, Ordering::SeqCst);
                    sink.record(second, Some(&event(second, &format!("t{task}r{round}b"))));
                    let (report, seen) = oneshot::channel();
                    let acknowledge: journal::Acknowledgment = Box::new(move |saved| {
                        let _ = report.send(saved.map_err(|error| error.to_string()));
                    });
                    let lead = change.commit(second, Instant::now(), acknowledge);
                    (first, second, lead, seen)
                };
                if let Some(lead) = lead {
                    lead.write().await;
                }
                seen.await.unwrap().unwrap();
                assert!(
                    handle.written() >= second,
                    "{second} acknowledged, not written"
                );
                changes.push((first, second));
            }
            changes
        }));
    }
    let mut changes = Vec::new();
    for join in joins {
        changes.extend(join.await.unwrap());
    }
    let bytes = std::fs::read(&scratch.path).unwrap();
    let decoded = decode(&bytes);
    assert_eq!(decoded.problem, None);
    assert_eq!(decoded.records.len(), changes.len() * 2);
    // The frame of every number.
    let starts = frame_starts(&bytes);
    let mut frame_of = std::collections::HashMap::new();
    for (frame, window) in starts
        .windows(2)
        .chain([[starts[starts.len() - 1], bytes.len()].as_slice()])
        .enumerate()
    {
        let seqs: Vec<u64> =
            decode(&[encode_header(), bytes[window[0]..window[1]].to_vec()].concat())
                .records
                .iter()
                .map(|r| r.seq)
                .collect();
        for seq in seqs {
            frame_of.insert(seq, frame);
        }
    }
    let split: Vec<_> = changes
        .iter()
        .filter(|(first, second)| frame_of[first] != frame_of[second])
        .collect();
    assert!(split.is_empty(), "changes split across frames: {split:?}");
    assert!(starts.len() > 2, "at least two batches");
}

// ---- end to end ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_graph_comes_back_after_a_restart_and_keeps_numbering() {
    let scratch = scratch();
    let (graph, handle, _) = reopen(&scratch.path);
    graph.want("claude", &["git"]).unwrap();
    graph.want("web", &["npm"]).unwrap();
    graph.try_start_claimed("git", Some("sh#1")).unwrap();
    graph.try_start_claimed("npm", Some("sh#2")).unwrap();
    graph.complete("git").unwrap();
    graph.fail("npm", "exit status 1").unwrap();
    graph.try_start_claimed("claude", Some("sh#3")).unwrap();
    flush(&graph, &handle).await;
    let live = graph.list();
    let next = graph.next_event_seq();
    let first_at = graph.snapshot("claude").unwrap().registered_at.unwrap();
    drop(graph);

    let (restored, handle, dropped) = reopen(&scratch.path);
    assert_eq!(dropped, None);
    assert_eq!(untimed(restored.list()), untimed(live.clone()));
    // Timestamps survive to the millisecond, measured from the first event.
    for (after, before) in restored.list().iter().zip(&live) {
        let shifted = |at: Option<Duration>| at.map(|at| at - first_at);
        for (restored_at, live_at) in [
            (after.registered_at, shifted(before.registered_at)),
            (after.started_at, shifted(before.started_at)),
            (after.finished_at, shifted(before.finished_at)),
        ] {
            let (Some(restored_at), Some(live_at)) = (restored_at, live_at) else {
                assert_eq!(restored_at.is_some(), live_at.is_some());
                continue;
            };
            assert!(restored_at.abs_diff(live_at) <= Duration::from_millis(1));
        }
    }
    assert_eq!(restored.next_event_seq(), next);
    assert_eq!(
        restored.try_start_claimed("claude", Some("sh#3")),
        Ok(unitsync_core::StartAttempt::Started),
        "a retried start is recognised across the restart"
    );
    restored.complete("claude").unwrap();
    flush(&restored, &handle).await;
    let seqs = seqs_in(&scratch.path);
    assert_eq!(*seqs.last().unwrap(), next);
    drop(restored);
    let (again, _, _) = reopen(&scratch.path);
    assert_eq!(
        again.state("claude"),
        Some(unitsync_core::UnitState::Completed)
    );
}
