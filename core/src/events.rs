//! The event stream: every registration, dependency edge, start, completion and failure, in one
//! total order, delivered to any number of subscribers without ever slowing the graph.
//!
//! # Design
//! Sequence numbers come from one atomic counter. A transition takes its number *after* loading the
//! unit's status word and stamps it into the word with the same CAS that makes the change; if the CAS
//! loses, the number is published as a *tombstone* (skipped by readers) and a new one is taken. So
//! for any one unit, event numbers follow its real order of changes, and an event caused by another
//! (a dependent's start after its dependency's completion) always has the larger number.
//!
//! Events are stored in a fixed ring of `capacity` slots, one slot per `seq % capacity` (for a
//! power-of-two capacity the slots are visited with an odd stride, so that consecutive numbers,
//! often published by different threads at once, do not share a cache line). A slot holds a
//! *record*, not an [`Event`]: the number, the instant, the kind of change and pointers to the units
//! it is about (four words, written in place; nothing is allocated or freed per event). Everything
//! else an event says is set once in the unit before the event is published (a start's claim, a
//! failure's reason and cause, in the unit's records), so a reader rebuilds the `Event` from the
//! record and the units, which live as long as the graph (a [`Subscription`] holds the graph).
//!
//! A slot is a small *seqlock*: its `version` word is `seq << 1`, plus 1 while a writer fills it. A
//! writer claims the slot with a CAS from an older, settled version to its own odd one (so it writes
//! only over an older record: a writer that stalled for a whole lap finds a newer number there and
//! drops its record), writes the fields, and stores its even version (Release). A reader loads the
//! version, the fields, then the version again (with an Acquire fence between), and keeps the fields
//! only if the version did not move. A reader that finds the slot claimed for the very number it
//! wants waits for those three stores (spinning, then yielding) instead of reporting "not yet": so
//! the writer's claiming CAS is the instant its record becomes visible, which is what the parking
//! argument below relies on. Writers never wait for readers: a subscriber that falls more than
//! `capacity` events behind finds newer records in its slots and is told how many it missed
//! ([`Lagged`]). A writer waits for another writer only if it laps one that is still writing the
//! same slot (`capacity` events in between), and then only for that writer's three stores.
//!
//! Sleeping subscribers park on one `Notify`; a writer only touches it when the `parked` count says
//! someone sleeps, so the graph pays nothing for an idle stream. No wake-up is lost (a Dekker pair of
//! `SeqCst` operations): a subscriber increments `parked`, enables its `Notified`, then loads the slot's
//! version; a writer claims the slot (its `SeqCst` CAS), then loads `parked`. Either the subscriber's
//! load comes after the CAS in the `SeqCst` order and it finds the record (waiting for the writer's
//! last stores if need be), or it comes before, and then so does the increment, and the writer sees a
//! sleeper and wakes it.
//!
//! # The sink (journaling)
//! A graph built with an [`EventSink`] also hands every record to the sink, synchronously, on the
//! thread that publishes it into the ring and just before it does: `record(seq, Some(event))` for an
//! event, `record(seq, None)` for a tombstone, exactly once for every number the counter ever gave
//! out. Calls from different threads may arrive out of number order (two threads reserve 7 and 8; the
//! one with 8 publishes first), so a sink that needs order reorders by number, using the tombstones to
//! fill the gaps. The sink must not block and must not call back into the graph (it may be called
//! while the graph holds its structure lock). A graph without a sink pays one `None` check per record.
//! A graph rebuilt from a journal (`GraphBuilder::restore`) puts the restored events into the ring with
//! their original numbers, and does *not* hand them to the sink: they are journaled already.
//!
//! This module owns ordering, storage and delivery; it turns records into events but must not decide
//! what a change means.

use crate::graph::Inner;
use crate::name::UnitName;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Notify, Ordering, Padded};
use crate::unit::Unit;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One change in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the total order, from 1, without gaps visible to subscribers other than [`Lagged`].
    pub seq: u64,
    /// When it happened, measured from the graph's creation.
    pub at: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A script registered the unit (it is now pending).
    Registered {
        /// The unit.
        unit: UnitName,
    },
    /// `unit` now waits for `dependency` to complete.
    DependencyAdded {
        /// The waiting unit.
        unit: UnitName,
        /// What it waits for.
        dependency: UnitName,
    },
    /// The unit started.
    Started {
        /// The unit.
        unit: UnitName,
        /// The claim it was started with ([`Graph::start_claimed`](crate::Graph::start_claimed)), if
        /// any: an opaque string naming who started it, so that the same starter can retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The unit completed.
    Completed {
        /// The unit.
        unit: UnitName,
    },
    /// The unit failed.
    Failed {
        /// The unit.
        unit: UnitName,
        /// Why.
        reason: String,
        /// For a propagated failure, the unit whose own failure caused it.
        cause: Option<UnitName>,
    },
}

impl EventKind {
    /// The unit the event is about.
    pub fn unit(&self) -> &UnitName {
        match self {
            Self::Registered { unit }
            | Self::DependencyAdded { unit, .. }
            | Self::Started { unit, .. }
            | Self::Completed { unit }
            | Self::Failed { unit, .. } => unit,
        }
    }
}

/// Receives every event a graph publishes, as it publishes it: the hook a journal hangs on.
///
/// Set with [`GraphBuilder::sink`](crate::GraphBuilder::sink). See the module docs of `events` for
/// the contract; in short:
/// - [`record`](Self::record) is called exactly once for every sequence number the graph reserves,
///   with the event, or with `None` for a *tombstone* (a number that was reserved by an attempt that
///   lost a race and will never carry an event);
/// - it is called synchronously on the publishing thread, just before the event enters the ring, and
///   calls from different threads may come out of number order;
/// - it must not block (it runs inside graph operations, sometimes under the graph's structure lock)
///   and must not call back into the graph. Push into an unbounded channel and do the work elsewhere.
pub trait EventSink: Send + Sync {
    /// One sequence number's record: `Some(event)`, or `None` for a tombstone.
    fn record(&self, seq: u64, event: Option<&Event>);
}

/// A subscriber fell behind by more than the buffer: this many events were skipped (an upper bound:
/// it can include internal tombstones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the subscriber fell behind and missed {0} events")]
pub struct Lagged(pub u64);

/// What one sequence number carries, as the graph publishes it: the kind of change and the units it
/// is about. A start's claim and a failure's reason and cause are read from the unit's records, which
/// the winning transition wrote (once, under the records lock) before publishing.
#[derive(Clone, Copy)]
pub(crate) enum Record<'a> {
    /// A number reserved by an attempt that lost its race: no event.
    Tombstone,
    Registered(&'a Unit),
    /// The unit, then its new dependency.
    DependencyAdded(&'a Unit, &'a Unit),
    Started(&'a Unit),
    Completed(&'a Unit),
    Failed(&'a Unit),
}

impl Record<'_> {
    /// The event this record stands for (`None` for a tombstone).
    pub(crate) fn event(self, seq: u64, at: Duration) -> Option<Event> {
        let kind = match self {
            Self::Tombstone => return None,
            Self::Registered(unit) => EventKind::Registered {
                unit: unit.name.clone(),
            },
            Self::DependencyAdded(unit, dependency) => EventKind::DependencyAdded {
                unit: unit.name.clone(),
                dependency: dependency.name.clone(),
            },
            Self::Started(unit) => EventKind::Started {
                unit: unit.name.clone(),
                by: unit.started_by(),
            },
            Self::Completed(unit) => EventKind::Completed {
                unit: unit.name.clone(),
            },
            Self::Failed(unit) => {
                let failure = unit.failure();
                EventKind::Failed {
                    unit: unit.name.clone(),
                    reason: failure
                        .as_ref()
                        .map(|f| f.reason.clone())
                        .unwrap_or_default(),
                    cause: failure.and_then(|f| f.cause),
                }
            }
        };
        Some(Event { seq, at, kind })
    }
}

/// What a slot said about a sequence number.
enum SlotRead {
    /// The record for this number: an event, or `None` for a tombstone.
    Present(Option<Event>),
    /// Not written yet.
    NotYet,
    /// Overwritten by a newer lap: the reader lagged.
    Overwritten,
}

/// See `EventLog::slot`: 37 slots apart is more than a kilobyte.
const SLOT_STRIDE: u64 = 37;

pub(crate) struct EventLog {
    /// Written by every transition: on cache lines of its own.
    next_seq: Padded<AtomicU64>,
    slots: Box<[slot::Slot]>,
    /// `capacity - 1` when the capacity is a power of two (a mask instead of a division).
    mask: Option<u64>,
    parked: AtomicUsize,
    wake: Notify,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            next_seq: Padded(AtomicU64::new(1)),
            slots: (0..capacity).map(|_| slot::Slot::new()).collect(),
            mask: capacity.is_power_of_two().then(|| capacity as u64 - 1),
            parked: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// Reserves `count` consecutive sequence numbers; returns the first.
    pub(crate) fn reserve(&self, count: u64) -> u64 {
        self.next_seq.fetch_add(count, Ordering::SeqCst)
    }

    /// The number the next event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// How many records the ring holds.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Fills a fresh ring with restored records and sets the next number to `next`. `window` holds
    /// the last restored records, in increasing number order, all below `next`; every number of the
    /// last `capacity` below `next` that has no record gets a tombstone, so a subscriber reading
    /// through them never waits for a record that will not come. Only for `restore`, before the graph
    /// is shared.
    pub(crate) fn resume<'a>(
        &self,
        next: u64,
        window: impl IntoIterator<Item = (u64, Duration, Record<'a>)>,
    ) {
        let oldest = next.saturating_sub(self.slots.len() as u64).max(1);
        let mut window = window
            .into_iter()
            .filter(|(seq, _, _)| *seq >= oldest)
            .peekable();
        for seq in oldest..next {
            match window.next_if(|(s, _, _)| *s == seq) {
                Some((_, at, record)) => self.slot(seq).publish(seq, at, record),
                None => self
                    .slot(seq)
                    .publish(seq, Duration::ZERO, Record::Tombstone),
            }
        }
        self.next_seq.store(next, Ordering::SeqCst);
    }

    /// Publishes the record for `seq` (a tombstone for a number that was reserved but not used).
    pub(crate) fn publish(&self, seq: u64, at: Duration, record: Record<'_>) {
        self.slot(seq).publish(seq, at, record);
        // Pairs with the SeqCst `parked` increment and slot read of a sleeping subscriber (after the
        // slot's SeqCst claiming CAS): either it sees the record or we see it parked.
        if self.parked.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
    }

    fn slot(&self, seq: u64) -> &slot::Slot {
        let index = match self.mask {
            // An odd stride permutes the ring (any odd number is invertible modulo a power of two,
            // and `seq` and `seq + capacity` still share a slot) so that consecutive numbers, which
            // different threads often publish at once, land on different cache lines.
            Some(mask) => seq.wrapping_mul(SLOT_STRIDE) & mask,
            None => seq % self.slots.len() as u64,
        };
        &self.slots[index as usize]
    }

    fn read(&self, seq: u64) -> SlotRead {
        self.slot(seq).read(seq)
    }

    /// The oldest number a reader can still hope to find.
    fn oldest_available(&self) -> u64 {
        self.next_seq()
            .saturating_sub(self.slots.len() as u64)
            .max(1)
    }
}

/// A live feed of events, starting where it was created (or from a chosen sequence number). It holds
/// the graph (the units its records point to) for as long as it exists.
pub struct Subscription {
    graph: Arc<Inner>,
    next: u64,
}

impl Subscription {
    pub(crate) fn new(graph: Arc<Inner>, from: Option<u64>) -> Self {
        let next = from.unwrap_or_else(|| graph.events.next_seq()).max(1);
        Self { graph, next }
    }

    fn log(&self) -> &EventLog {
        &self.graph.events
    }

    /// The sequence number of the next event this subscription will return.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The next event if one is already there, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, Lagged> {
        loop {
            match self.log().read(self.next) {
                SlotRead::Present(Some(event)) => {
                    self.next += 1;
                    return Ok(Some(event));
                }
                SlotRead::Present(None) => self.next += 1,
                SlotRead::NotYet => return Ok(None),
                SlotRead::Overwritten => {
                    let resume = self.log().oldest_available().max(self.next + 1);
                    let missed = resume - self.next;
                    self.next = resume;
                    return Err(Lagged(missed));
                }
            }
        }
    }

    /// Waits for the next event. Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Result<Event, Lagged> {
        loop {
            if let Some(event) = self.try_recv()? {
                return Ok(event);
            }
            let graph = Arc::clone(&self.graph);
            let log = &graph.events;
            let _parked = Parked::new(&log.parked);
            let notified = log.wake.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.try_recv()? {
                return Ok(event);
            }
            notified.await;
        }
    }
}

/// Counts a sleeping subscriber for as long as it exists.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(not(loom))]
mod slot {
    use super::{Record, SlotRead};
    use crate::unit::{Unit, UnitRef};
    use std::cmp::Ordering as Cmp;
    use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    const REGISTERED: usize = 1;
    const DEPENDENCY_ADDED: usize = 2;
    const STARTED: usize = 3;
    const COMPLETED: usize = 4;
    const FAILED: usize = 5;
    const KIND_MASK: usize = 7;
    const _: () = assert!(std::mem::align_of::<Unit>() > KIND_MASK);

    /// One ring slot: a seqlock over a record of three words (see the module docs).
    pub(super) struct Slot {
        /// `seq << 1`, plus 1 while a writer fills the fields; 0 before the first record.
        version: AtomicU64,
        /// Nanoseconds since the graph's origin.
        at: AtomicU64,
        /// The unit's address plus the kind (0 for a tombstone).
        unit: AtomicUsize,
        /// The dependency's address, for `DependencyAdded`.
        other: AtomicUsize,
    }

    fn encode(record: Record<'_>) -> (usize, usize) {
        let address = |unit: &Unit| UnitRef::new(unit).as_ptr() as usize;
        match record {
            Record::Tombstone => (0, 0),
            Record::Registered(unit) => (address(unit) | REGISTERED, 0),
            Record::DependencyAdded(unit, dependency) => {
                (address(unit) | DEPENDENCY_ADDED, address(dependency))
            }
            Record::Started(unit) => (address(unit) | STARTED, 0),
            Record::Completed(unit) => (address(unit) | COMPLETED, 0),
            Record::Failed(unit) => (address(unit) | FAILED, 0),
        }
    }

    /// # Safety
    /// The words must come from `encode` of a record whose units are still alive, and the units
    /// must stay alive for `'a`.
    unsafe fn decode<'a>(unit: usize, other: usize) -> Record<'a> {
        let deref = |address: usize| -> &'a Unit {
            // SAFETY: the caller's contract: a unit's address, alive for 'a.
            unsafe { &*((address & !KIND_MASK) as *const Unit) }
        };
        match unit & KIND_MASK {
            REGISTERED => Record::Registered(deref(unit)),
            DEPENDENCY_ADDED => Record::DependencyAdded(deref(unit), deref(other)),
            STARTED => Record::Started(deref(unit)),
            COMPLETED => Record::Completed(deref(unit)),
            FAILED => Record::Failed(deref(unit)),
            _ => Record::Tombstone,
        }
    }

    impl Slot {
        pub(super) fn new() -> Self {
            Self {
                version: AtomicU64::new(0),
                at: AtomicU64::new(0),
                unit: AtomicUsize::new(0),
                other: AtomicUsize::new(0),
            }
        }

        pub(super) fn publish(&self, seq: u64, at: Duration, record: Record<'_>) {
            let (unit, other) = encode(record);
            let mine = seq << 1;
            let mut current = self.version.load(Ordering::Acquire);
            let mut spins = 0u32;
            loop {
                if current >> 1 >= seq {
                    return; // a newer lap got here first; its readers lagged anyway
                }
                if current & 1 == 1 {
                    // A writer a whole lap behind is still filling the slot: let it finish.
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                    current = self.version.load(Ordering::Acquire);
                    continue;
                }
                // SeqCst: this claim is the record's visibility point for parked subscribers.
                match self.version.compare_exchange_weak(
                    current,
                    mine | 1,
                    Ordering::SeqCst,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
            // Orders the odd version before the field stores for a reader that sees a field.
            fence(Ordering::Release);
            let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
            self.at.store(nanos, Ordering::Relaxed);
            self.unit.store(unit, Ordering::Relaxed);
            self.other.store(other, Ordering::Relaxed);
            self.version.store(mine, Ordering::Release);
        }

        pub(super) fn read(&self, seq: u64) -> SlotRead {
            let mut spins = 0u32;
            loop {
                let before = self.version.load(Ordering::SeqCst);
                match (before >> 1).cmp(&seq) {
                    Cmp::Less => return SlotRead::NotYet,
                    Cmp::Greater => return SlotRead::Overwritten,
                    Cmp::Equal if before & 1 == 1 => {
                        // Claimed for our number: the record is as good as there (module docs), so
                        // wait for the writer's last stores rather than answer "not yet".
                        spins += 1;
                        if spins < 64 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                        continue;
                    }
                    Cmp::Equal => {}
                }
                let at = self.at.load(Ordering::Relaxed);
                let unit = self.unit.load(Ordering::Relaxed);
                let other = self.other.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.version.load(Ordering::Relaxed) != before {
                    continue; // overwritten while we read: look again
                }
                // SAFETY: the version did not move, so the words are the ones `publish` wrote for
                // `seq`, from `encode` of live units. Units are freed only with the graph, and the
                // subscription reading this holds the graph.
                let record = unsafe { decode(unit, other) };
                return SlotRead::Present(record.event(seq, Duration::from_nanos(at)));
            }
        }
    }
}

#[cfg(loom)]
mod slot {
    use super::{Event, Record, SlotRead};
    use crate::sync::{lock, Mutex};
    use std::time::Duration;

    /// The loom stand-in: one mutex per slot, the same keep-the-newest rule, and the event built
    /// when it is published (from the same unit records a production reader reads later).
    pub(super) struct Slot(Mutex<Option<(u64, Option<Event>)>>);

    impl Slot {
        pub(super) fn new() -> Self {
            Self(Mutex::new(None))
        }

        pub(super) fn publish(&self, seq: u64, at: Duration, record: Record<'_>) {
            let event = record.event(seq, at);
            let mut slot = lock(&self.0);
            if slot.as_ref().is_none_or(|(existing, _)| *existing < seq) {
                *slot = Some((seq, event));
            }
        }

        pub(super) fn read(&self, seq: u64) -> SlotRead {
            match &*lock(&self.0) {
                None => SlotRead::NotYet,
                Some((existing, event)) if *existing == seq => SlotRead::Present(event.clone()),
                Some((existing, _)) if *existing < seq => SlotRead::NotYet,
                Some(_) => SlotRead::Overwritten,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{EventKind, Graph};

    /// Writers on four threads lap a small ring many times over while a reader follows it: every
    /// record the reader gets is whole (its unit and kind agree, numbers increase), and it is told
    /// when it lagged instead of getting a torn or stale record.
    #[test]
    fn seqlock_slots_survive_lapping_writers() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let graph = Graph::with_event_capacity(8);
        let mut feed = graph.subscribe_from(1);
        let finished = AtomicUsize::new(0);
        let (mut seen, mut lagged) = (0u64, 0u64);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (graph, finished) = (graph.clone(), &finished);
                scope.spawn(move || {
                    for i in 0..2_000 {
                        let unit = format!("t{t}_{i}");
                        graph.register(&unit).unwrap();
                        graph.try_start(&unit).unwrap();
                        graph.complete(&unit).unwrap();
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
            let mut last = 0;
            loop {
                let done = finished.load(Ordering::SeqCst) == 4;
                match feed.try_recv() {
                    Ok(Some(event)) => {
                        assert!(event.seq > last);
                        last = event.seq;
                        let unit = event.kind.unit().as_str();
                        assert!(unit.starts_with('t') && unit.contains('_'), "{event:?}");
                        if let EventKind::Started { by, .. } = &event.kind {
                            assert_eq!(by, &None);
                        }
                        seen += 1;
                    }
                    Ok(None) if done => break,
                    Ok(None) => std::thread::yield_now(),
                    Err(missed) => lagged += missed.0,
                }
            }
        });
        assert!(seen > 0);
        assert_eq!(
            seen + lagged,
            graph.next_event_seq() - 1,
            "every number read or skipped"
        );
        // Afterwards, the last `capacity` numbers are all there, in order.
        let next = graph.next_event_seq();
        let mut tail = graph.subscribe_from(next - 8);
        for seq in next - 8..next {
            assert_eq!(tail.try_recv().unwrap().unwrap().seq, seq);
        }
        assert_eq!(tail.try_recv(), Ok(None));
    }

    /// A subscription holds the graph: its records point to units, which must outlive it.
    #[test]
    fn a_subscription_outlives_its_graph_handle() {
        let graph = Graph::new();
        let mut feed = graph.subscribe();
        graph.register("a").unwrap();
        drop(graph);
        let event = feed.try_recv().unwrap().unwrap();
        assert_eq!(event.kind.unit().as_str(), "a");
    }
}
