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
//! Events are stored in a fixed ring of `capacity` slots, slot `seq % capacity`. A writer swaps its
//! record into the slot only if the slot holds an older one (a writer that stalled for a whole lap
//! drops its record instead of overwriting a newer one). Writers never wait for readers: a subscriber
//! that falls more than `capacity` events behind finds newer records in its slots and is told how many
//! it missed ([`Lagged`]). Slots are `crossbeam-epoch` pointers, so readers clone a record without
//! locking and old records are freed once no reader can hold them.
//!
//! Sleeping subscribers park on one `Notify`; a writer only touches it when the `parked` count says
//! someone sleeps (a SeqCst store/load pair on both sides guarantees that either the writer sees the
//! sleeper or the sleeper sees the record), so the graph pays nothing for an idle stream.
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
//! This module owns ordering and delivery only; it must not interpret events.

use crate::name::UnitName;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Notify, Ordering};
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

/// What a slot said about a sequence number.
enum SlotRead {
    /// The record for this number: an event, or `None` for a tombstone.
    Present(Option<Event>),
    /// Not written yet.
    NotYet,
    /// Overwritten by a newer lap: the reader lagged.
    Overwritten,
}

pub(crate) struct EventLog {
    next_seq: AtomicU64,
    slots: Box<[slot::Slot]>,
    parked: AtomicUsize,
    wake: Notify,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            next_seq: AtomicU64::new(1),
            slots: (0..capacity).map(|_| slot::Slot::new()).collect(),
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
    /// the last restored events, in increasing number order, all below `next`; every number of the
    /// last `capacity` below `next` that has no event gets a tombstone, so a subscriber reading
    /// through them never waits for a record that will not come. Only for `restore`, before the graph
    /// is shared.
    pub(crate) fn resume(&self, next: u64, window: impl IntoIterator<Item = Event>) {
        let oldest = next.saturating_sub(self.slots.len() as u64).max(1);
        let mut window = window.into_iter().filter(|e| e.seq >= oldest).peekable();
        for seq in oldest..next {
            let record = window.next_if(|e| e.seq == seq);
            self.slot(seq).publish(seq, record);
        }
        self.next_seq.store(next, Ordering::SeqCst);
    }

    /// Publishes the record for `seq` (`None`: a tombstone for a number that was reserved but not used).
    pub(crate) fn publish(&self, seq: u64, event: Option<Event>) {
        self.slot(seq).publish(seq, event);
        if self.parked.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
    }

    fn slot(&self, seq: u64) -> &slot::Slot {
        &self.slots[(seq % self.slots.len() as u64) as usize]
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

/// A live feed of events, starting where it was created (or from a chosen sequence number).
pub struct Subscription {
    log: Arc<EventLog>,
    next: u64,
}

impl Subscription {
    pub(crate) fn new(log: Arc<EventLog>, from: Option<u64>) -> Self {
        let next = from.unwrap_or_else(|| log.next_seq()).max(1);
        Self { log, next }
    }

    /// The sequence number of the next event this subscription will return.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The next event if one is already there, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, Lagged> {
        loop {
            match self.log.read(self.next) {
                SlotRead::Present(Some(event)) => {
                    self.next += 1;
                    return Ok(Some(event));
                }
                SlotRead::Present(None) => self.next += 1,
                SlotRead::NotYet => return Ok(None),
                SlotRead::Overwritten => {
                    let resume = self.log.oldest_available().max(self.next + 1);
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
            let log = Arc::clone(&self.log);
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
    use super::{Event, SlotRead};
    use crossbeam_epoch::{self as epoch, Atomic, Owned};
    use std::sync::atomic::Ordering;

    struct Record {
        seq: u64,
        event: Option<Event>,
    }

    pub(super) struct Slot(Atomic<Record>);

    impl Slot {
        pub(super) fn new() -> Self {
            Self(Atomic::null())
        }

        pub(super) fn publish(&self, seq: u64, event: Option<Event>) {
            let guard = epoch::pin();
            let mut record = Owned::new(Record { seq, event });
            let mut current = self.0.load(Ordering::SeqCst, &guard);
            loop {
                // SAFETY: records are only freed through `defer_destroy` after being swapped out, so
                // a pointer loaded under `guard` stays valid until the guard is dropped.
                if let Some(existing) = unsafe { current.as_ref() } {
                    if existing.seq >= seq {
                        return; // a newer lap got here first; our reader lagged anyway
                    }
                }
                match self.0.compare_exchange(
                    current,
                    record,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                    &guard,
                ) {
                    Ok(_) => {
                        if !current.is_null() {
                            // SAFETY: `current` was unlinked by our CAS, so no new reader can reach
                            // it; readers that loaded it earlier are pinned, and `defer_destroy` waits
                            // for them.
                            unsafe { guard.defer_destroy(current) };
                        }
                        return;
                    }
                    Err(failure) => {
                        current = failure.current;
                        record = failure.new;
                    }
                }
            }
        }

        pub(super) fn read(&self, seq: u64) -> SlotRead {
            let guard = epoch::pin();
            let current = self.0.load(Ordering::SeqCst, &guard);
            // SAFETY: see `publish`: loaded under `guard`, freed only after it is unpinned.
            match unsafe { current.as_ref() } {
                None => SlotRead::NotYet,
                Some(record) if record.seq == seq => SlotRead::Present(record.event.clone()),
                Some(record) if record.seq < seq => SlotRead::NotYet,
                Some(_) => SlotRead::Overwritten,
            }
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            // SAFETY: `&mut self`: no reader can hold the record any more.
            let guard = unsafe { epoch::unprotected() };
            let current = self.0.load(Ordering::Relaxed, guard);
            if !current.is_null() {
                // SAFETY: exclusive access; freed exactly once.
                drop(unsafe { current.into_owned() });
            }
        }
    }
}

#[cfg(loom)]
mod slot {
    use super::{Event, SlotRead};
    use crate::sync::{lock, Mutex};

    /// The loom stand-in: one mutex per slot, the same keep-the-newest rule.
    pub(super) struct Slot(Mutex<Option<(u64, Option<Event>)>>);

    impl Slot {
        pub(super) fn new() -> Self {
            Self(Mutex::new(None))
        }

        pub(super) fn publish(&self, seq: u64, event: Option<Event>) {
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
