//! The fuzz targets' entry points in the normal test run, so CI exercises what `cargo fuzz` does
//! (fuzz/README.md): this file compiles `fuzz/src/lib.rs` as a module and drives its four entry
//! points with proptest, on arbitrary bytes and on valid inputs (frames, requests, operation
//! scripts) that are then mutated. It also replays every committed file under `fuzz/corpus/<target>/`
//! (seeds, and crashes kept as regressions) and the generated seeds themselves. Quick by design:
//! a few seconds in a debug build. `write_seed_corpus` (ignored) regenerates the seed files.

#[path = "../../fuzz/src/lib.rs"]
mod entry_points;

use entry_points::{frame_decoder, journal_ops, journal_replay, request_parser, run, TARGETS};
use proptest::prelude::*;
use serde_json::json;
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: entry_points::CountingAllocator = entry_points::CountingAllocator;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Unit names: mostly a small pool (so requests meet), sometimes any text (control characters,
/// empty, long).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-e]",
        1 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => Just("x".repeat(256)),
    ]
}

/// A request as a client might send it (and near misses: wrong types, missing fields), as JSON.
fn request_json() -> impl Strategy<Value = serde_json::Value> {
    let optional_number = prop_oneof![Just(json!(null)), any::<u64>().prop_map(|n| json!(n))];
    (
        0..14u8,
        name(),
        prop::collection::vec(name(), 0..4),
        optional_number,
        prop::option::of(name()),
    )
        .prop_map(|(kind, unit, dependencies, number, text)| match kind {
            0 => json!({"request": "ping"}),
            1 => json!({"request": "want", "unit": unit, "dependencies": dependencies}),
            2 => json!({"request": "start", "unit": unit, "timeout_ms": number, "claim": text}),
            3 => json!({"request": "complete", "unit": unit}),
            4 => json!({"request": "fail", "unit": unit, "reason": text}),
            5 => json!({"request": "ready", "unit": unit}),
            6 => json!({"request": "wait", "unit": unit, "until": "started", "timeout_ms": number}),
            7 => json!({"request": "status", "unit": unit}),
            8 => json!({"request": "list"}),
            9 => json!({"request": "graph", "format": if dependencies.is_empty() { "dot" } else { "mermaid" }}),
            10 => json!({"request": "watch", "from_seq": number}),
            11 => json!({"request": "abandon", "owner": unit, "reason": text.unwrap_or_default()}),
            12 => json!({"request": unit, "unit": dependencies}),
            _ => json!({"request": "want", "unit": number, "dependencies": unit}),
        })
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Flips, a cut and an insertion, applied to `bytes`.
#[derive(Debug, Clone)]
struct Mutation {
    flips: Vec<(prop::sample::Index, u8)>,
    cut: Option<prop::sample::Index>,
    insert: Option<(prop::sample::Index, Vec<u8>)>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::option::weighted(
            0.3,
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..8),
            ),
        ),
    )
        .prop_map(|(flips, cut, insert)| Mutation { flips, cut, insert })
}

impl Mutation {
    fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        if !bytes.is_empty() {
            for (at, mask) in &self.flips {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
        }
        if let Some(cut) = &self.cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Some((at, inserted)) = &self.insert {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        bytes
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1536))]

    #[test]
    fn frame_decoder_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        frame_decoder(&bytes);
    }

    #[test]
    fn frame_decoder_on_mutated_connections(
        schedule in any::<u8>(),
        client in "\\PC{0,16}",
        requests in prop::collection::vec(request_json(), 0..5),
        garbage in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        mutation in mutation(),
    ) {
        let mut stream = vec![schedule];
        stream.extend(frame(json!({"protocol": 1, "client": client}).to_string().as_bytes()));
        for request in &requests {
            stream.extend(frame(request.to_string().as_bytes()));
        }
        if let Some(garbage) = &garbage {
            stream.extend(frame(garbage));
        }
        frame_decoder(&stream);
        frame_decoder(&mutation.apply(stream));
    }

    #[test]
    fn request_parser_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        request_parser(&bytes);
    }

    #[test]
    fn request_parser_on_requests_and_their_mutations(
        request in request_json(),
        mutation in mutation(),
    ) {
        let bytes = serde_json::to_vec(&request).unwrap();
        request_parser(&bytes);
        request_parser(&mutation.apply(bytes));
    }

    #[test]
    fn journal_replay_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        journal_replay(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// Operation scripts: the live graph's journal restores at every prefix; damaged, it replays
    /// as the model says.
    #[test]
    fn journal_ops_on_operation_scripts(
        ops in prop::collection::vec((any::<u8>(), 0..12u8, 0..12u8, 0..12u8), 0..24),
        damages in prop::collection::vec(any::<[u8; 4]>(), 0..3),
    ) {
        let mut script = Vec::new();
        for (op, a, b, c) in ops {
            script.extend_from_slice(&[if op == 0xFF { 0 } else { op }, a, b, c]);
        }
        if !damages.is_empty() {
            script.push(0xFF);
            script.extend(damages.iter().flatten());
        }
        journal_ops(&script);
    }
}

#[test]
fn the_generated_seeds_pass() {
    for (target, name, bytes) in entry_points::seeds() {
        eprintln!("{target}/{name}");
        run(target, &bytes);
    }
}

/// Every committed corpus file (seeds, minimised corpus, crash regressions) through its target.
#[test]
fn every_corpus_file_passes() {
    let mut replayed = 0;
    for target in TARGETS {
        let Ok(files) = std::fs::read_dir(corpus_dir().join(target)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            run(target, &bytes);
            replayed += 1;
        }
    }
    eprintln!("{replayed} corpus files replayed");
}

/// Regenerates the seed files: `cargo test -p unitsync-ipc --test fuzz_entry_points --
/// --ignored write_seed_corpus`.
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seed_corpus() {
    for (target, name, bytes) in entry_points::seeds() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// The frame check's allocation bound is live in this binary (the counting allocator is installed),
/// and an oversized header is refused without allocating its length.
#[test]
fn the_allocation_bound_is_measured() {
    let (_, seen) = entry_points::measure_allocations(|| vec![0u8; 100_000]);
    assert!(seen.expect("the counting allocator is installed").largest >= 100_000);
    let mut huge = vec![0u8, 0xFF, 0xFF, 0xFF, 0xFF];
    huge.extend_from_slice(b"{}");
    frame_decoder(&huge);
}

/// Found by reading the journal_ops target's relaxed invariants (not a panic): a journal cut between
/// a unit's own `failed` record and the `failed` records it propagated (a crash while the writer had
/// only part of one `fail` in the file) restores a graph in which the dependent stays `pending` on a
/// failed dependency for ever: `start` blocks until its timeout, `wait --until completed` never ends,
/// where the live graph would have failed the dependent. Was ignored until `restore` (or the agent after
/// it) finishes the propagation; see fuzz/README.md. Fixed: `Graph::finish_interrupted_failures`,
/// which the agent calls after restoring.
#[test]
fn a_journal_torn_inside_a_failure_propagation_leaves_no_unit_pending_on_a_failed_one() {
    use std::time::Duration;
    use unitsync_core::{Event, EventKind, Graph, StartAttempt, UnitName, UnitState};
    let name = |n: &str| UnitName::new(n).unwrap();
    let event = |seq, kind| Event {
        seq,
        at: Duration::from_millis(seq),
        kind,
    };
    // `want b a`, then `fail a`, which the live graph journals as `failed a` then `failed b`; the
    // file ends after `failed a`.
    let torn = vec![
        event(1, EventKind::Registered { unit: name("b") }),
        event(
            2,
            EventKind::DependencyAdded {
                unit: name("b"),
                dependency: name("a"),
            },
        ),
        event(3, EventKind::Registered { unit: name("a") }),
        event(
            4,
            EventKind::Failed {
                unit: name("a"),
                reason: "boom".into(),
                cause: None,
            },
        ),
    ];
    let graph = Graph::builder().restore(torn).unwrap();
    // The restore is the journal, exactly; the agent then finishes what the crash cut short.
    assert_eq!(graph.state("b"), Some(UnitState::Pending));
    assert_eq!(graph.finish_interrupted_failures(), [name("b")]);
    assert!(graph.finish_interrupted_failures().is_empty());
    let blocked = graph.try_start("b");
    assert!(
        graph.state("b") == Some(UnitState::Failed),
        "b is {:?} on the failed a; starting it answers {blocked:?}",
        graph.state("b")
    );
    assert!(!matches!(blocked, Ok(StartAttempt::Blocked { .. })));
}

/// Found by the journal_replay target once it fed `restore` times in nanoseconds: an event exactly
/// `u64::MAX` nanoseconds after the origin overflows `Unit::stamp` (`nanos + 1`), a panic with
/// overflow checks (debug builds) and a wrapped 0, read as "never registered", without them. A
/// journal's whole milliseconds never make that value, but `GraphBuilder::restore` is public and
/// takes any `Duration`. Fixed: `Unit::stamp` saturates there.
#[test]
fn restore_takes_an_event_at_the_largest_time() {
    use std::time::Duration;
    use unitsync_core::{Event, EventKind, Graph, UnitName};
    let event = Event {
        seq: 1,
        at: Duration::from_nanos(u64::MAX),
        kind: EventKind::Registered {
            unit: UnitName::new("a").unwrap(),
        },
    };
    let graph = Graph::builder().restore(vec![event]).unwrap();
    assert!(graph.list()[0].registered_at.is_some());
}
