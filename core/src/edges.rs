//! Append-only edge lists that readers walk without locking, and that a finishing unit *seals*.
//!
//! Each unit has two lists: its dependencies and its dependents. Edges are never removed while the
//! graph lives, so a list is a singly linked stack of `crossbeam-epoch` nodes pushed at the head with
//! a CAS on an [`Atomic`](crossbeam_epoch::Atomic); a node's `next` never changes after it is
//! published. Every push and every walk (`for_each`, `seal`) runs under one `epoch::pin()` guard for
//! the whole operation (not one per node), which is what crossbeam's API asks for to follow a
//! `Shared` pointer. Items are `Copy` handles (the graph stores pointers to units, which live as
//! long as the graph: see `unit::UnitRef`).
//!
//! **Reclamation.** Nothing is ever unlinked from a shared list, so nothing is ever retired to the
//! epoch collector: a list frees its nodes when it is dropped (with its unit, when the graph is
//! dropped), through `epoch::unprotected()`, which `&mut self` justifies. The guards therefore
//! protect nothing that could otherwise be freed; they are what crossbeam's API asks for to load and
//! follow its pointers, and they would make removing edges (with `defer_destroy`) a local change.
//! Their cost is the pin itself: the outermost pin of a thread is a full fence on the thread's own
//! epoch slot (a locked compare-exchange on x86) plus a thread-local access, and every 128th pin
//! tries to advance the global epoch; about 6 ns a pin on the development machine, where a nested pin
//! (a thread-local counter) costs about 1.4 ns. So an operation that does many list operations
//! (`want`: duplicate checks, the cycle check, two pushes per edge) holds one [`pin`] across them
//! and pays for one pin. A start pays one pin (notifying its dependents), a completion or failure one
//! per sealed list.
//!
//! **Sealing** is what makes completion race-free against edge insertion: a unit that completes or
//! fails *seals* its dependents list by setting the tag bit of the head (`fetch_or`), the same atomic
//! word that pushes CAS on, and walks the items that were in the list at that instant. A push always
//! links its item (so every walk made later — snapshots, the cycle check, the topological order — sees
//! every edge), but it reports whether it landed after the seal. So for any edge `u -> d` exactly one
//! of two things happens, decided by the order of two operations on one atomic:
//! - the push comes first: the edge is among the items `d`'s sealer walks, and `d`'s finisher accounts
//!   for it (decrements `u`'s unmet count or fails `u`);
//! - the seal comes first: the push reports [`Sealed`], the sealer's walk (which starts from the head
//!   it replaced) cannot reach the item, and the inserter accounts for the edge itself.
//!
//! There is no Dekker-style pattern and no double count. Under `cfg(loom)` the list is a
//! `Mutex<Vec>` stand-in with the same contract, so loom explores the callers' logic, not the list.
//! This module must not know what a unit is beyond holding a handle to one.

#[cfg(not(loom))]
pub(crate) use epoch_list::{EdgeList, Prepared};
#[cfg(loom)]
pub(crate) use loom_list::{EdgeList, Prepared};

/// Pins the current thread for a larger operation that does many list operations (`want`): each of
/// them pins again, and a nested pin is only a thread-local counter increment, so the operation pays
/// for one pin instead of one per list. Under `cfg(loom)` nothing.
#[cfg(not(loom))]
pub(crate) fn pin() -> crossbeam_epoch::Guard {
    crossbeam_epoch::pin()
}

/// The loom stand-in of [`pin`]'s guard: nothing to pin.
#[cfg(loom)]
pub(crate) struct Pinned;

/// The loom stand-in of [`pin`]: nothing to pin.
#[cfg(loom)]
pub(crate) fn pin() -> Pinned {
    Pinned
}

/// A push that landed after the list was sealed: the item is linked, but the sealer did not see it,
/// so the pusher must account for it.
#[derive(Debug)]
pub(crate) struct Sealed;

#[cfg(not(loom))]
mod epoch_list {
    use super::Sealed;
    use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
    use std::sync::atomic::Ordering;

    /// The seal bit: the tag of the head pointer (nodes are 8-aligned, so three tag bits are free).
    const SEALED: usize = 1;

    struct Node<T> {
        item: T,
        /// The node pushed before this one (null for the first). Written before the node is
        /// published and never changed afterwards.
        next: Atomic<Node<T>>,
    }

    /// A node allocated for a later push.
    pub(crate) struct Prepared<T>(Owned<Node<T>>);

    /// A lock-free, append-only, sealable list of `T`.
    pub(crate) struct EdgeList<T> {
        /// The newest node, tagged with the seal bit.
        head: Atomic<Node<T>>,
    }

    impl<T: Copy> EdgeList<T> {
        pub(crate) fn new() -> Self {
            Self {
                head: Atomic::null(),
            }
        }

        /// A node for `item`, allocated now and linked later by [`push_prepared`](Self::push_prepared)
        /// (so that a caller can allocate before taking a lock).
        pub(crate) fn prepare(item: T) -> Prepared<T> {
            Prepared(Owned::new(Node {
                item,
                next: Atomic::null(),
            }))
        }

        /// Links `item` at the head. `Err(Sealed)` if the list was already sealed: the item is in the
        /// list all the same, but the sealer's walk did not include it.
        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            self.push_prepared(Self::prepare(item))
        }

        /// [`push`](Self::push) of a prepared node.
        pub(crate) fn push_prepared(&self, node: Prepared<T>) -> Result<(), Sealed> {
            let guard = &epoch::pin();
            let mut node = node.0;
            let mut head = self.head.load(Ordering::Acquire, guard);
            loop {
                let sealed = head.tag() & SEALED;
                // Ours until the CAS publishes it (Release), so Relaxed.
                node.next.store(head.with_tag(0), Ordering::Relaxed);
                // The new head keeps the seal bit: sealing is forever.
                match self.head.compare_exchange_weak(
                    head,
                    node.with_tag(sealed),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    guard,
                ) {
                    Ok(_) if sealed != 0 => return Err(Sealed),
                    Ok(_) => return Ok(()),
                    Err(failure) => {
                        head = failure.current;
                        node = failure.new;
                    }
                }
            }
        }

        /// Seals the list and calls `f` on every item pushed before the seal, newest first. Only the
        /// call that seals walks anything; a list is sealed once, by its unit's one finisher.
        pub(crate) fn seal(&self, f: impl FnMut(T)) {
            let guard = &epoch::pin();
            let before = self.head.fetch_or(SEALED, Ordering::AcqRel, guard);
            if before.tag() & SEALED == 0 {
                Self::walk(before, f, guard);
            }
        }

        /// Calls `f` on every item, newest first. Items pushed during the walk may or may not be seen.
        pub(crate) fn for_each(&self, f: impl FnMut(T)) {
            let guard = &epoch::pin();
            Self::walk(self.head.load(Ordering::Acquire, guard), f, guard);
        }

        fn walk<'g>(mut current: Shared<'g, Node<T>>, mut f: impl FnMut(T), guard: &'g Guard) {
            // SAFETY: nodes are freed only by `drop`, which needs `&mut self`, so every node
            // reachable from a head we loaded stays allocated while we hold `&self` (and the guard,
            // which would also hold off any deferred destruction). Each node was fully written
            // before the Release CAS that published it, and we read the head with Acquire (or the
            // AcqRel `fetch_or`); older nodes were published by earlier CASes on the same word, each
            // read (Acquire) by the next pusher's CAS, so they are visible too, which is why `next`
            // can be loaded Relaxed. `as_ref` ignores the seal tag.
            while let Some(node) = unsafe { current.as_ref() } {
                f(node.item);
                current = node.next.load(Ordering::Relaxed, guard);
            }
        }

        /// Whether any item satisfies `pred`.
        pub(crate) fn any(&self, mut pred: impl FnMut(T) -> bool) -> bool {
            let mut found = false;
            self.for_each(|item| found = found || pred(item));
            found
        }
    }

    impl<T> Drop for EdgeList<T> {
        fn drop(&mut self) {
            // SAFETY: `&mut self` proves no other thread can reach the list, which is what
            // `unprotected` requires; no node was ever handed to the collector.
            let guard = unsafe { epoch::unprotected() };
            let mut current = self.head.load(Ordering::Relaxed, guard);
            while !current.is_null() {
                // SAFETY: exclusive access (above); every node came from `Owned` in `prepare`, is
                // reachable from the head exactly once, and is freed exactly once, here.
                let node = unsafe { current.into_owned() };
                current = node.next.load(Ordering::Relaxed, guard);
            }
        }
    }
}

#[cfg(loom)]
mod loom_list {
    use super::Sealed;
    use crate::sync::{lock, Mutex};

    /// The stand-in's prepared node: just the item.
    pub(crate) struct Prepared<T>(T);

    /// The loom stand-in: the same contract, each operation one atomic step. The second field is
    /// the length of the list when it was sealed (`None` while open).
    pub(crate) struct EdgeList<T> {
        inner: Mutex<(Vec<T>, Option<usize>)>,
    }

    impl<T: Copy> EdgeList<T> {
        pub(crate) fn new() -> Self {
            Self {
                inner: Mutex::new((Vec::new(), None)),
            }
        }

        pub(crate) fn prepare(item: T) -> Prepared<T> {
            Prepared(item)
        }

        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            self.push_prepared(Self::prepare(item))
        }

        pub(crate) fn push_prepared(&self, item: Prepared<T>) -> Result<(), Sealed> {
            let mut inner = lock(&self.inner);
            inner.0.push(item.0);
            match inner.1 {
                Some(_) => Err(Sealed),
                None => Ok(()),
            }
        }

        pub(crate) fn seal(&self, f: impl FnMut(T)) {
            let before: Vec<T> = {
                let mut inner = lock(&self.inner);
                if inner.1.is_some() {
                    return;
                }
                inner.1 = Some(inner.0.len());
                inner.0.iter().rev().copied().collect()
            };
            before.into_iter().for_each(f);
        }

        pub(crate) fn for_each(&self, f: impl FnMut(T)) {
            self.to_vec().into_iter().for_each(f);
        }

        pub(crate) fn to_vec(&self) -> Vec<T> {
            lock(&self.inner).0.iter().rev().copied().collect()
        }

        pub(crate) fn any(&self, pred: impl FnMut(T) -> bool) -> bool {
            self.to_vec().into_iter().any(pred)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{EdgeList, Sealed};
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn walks_newest_first_and_seals_once() {
        let list = EdgeList::new();
        for i in 0..5u32 {
            assert!(list.push(i).is_ok());
        }
        let mut seen = Vec::new();
        list.for_each(|i| seen.push(i));
        assert_eq!(seen, [4, 3, 2, 1, 0]);
        assert!(list.any(|i| i == 2) && !list.any(|i| i == 9));
        let mut sealed = Vec::new();
        list.seal(|i| sealed.push(i));
        assert_eq!(sealed, [4, 3, 2, 1, 0]);
        // Linked all the same, but reported; a second seal walks nothing.
        assert!(matches!(list.push(5), Err(Sealed)));
        list.seal(|_| panic!("sealed twice"));
        let mut all = Vec::new();
        list.for_each(|i| all.push(i));
        assert_eq!(all, [5, 4, 3, 2, 1, 0]);
    }

    /// Four threads push (half of them prepared nodes) while a fifth seals: every item is accounted
    /// for exactly once, by the sealer's walk or by its pusher seeing `Sealed`, and every item is in
    /// the list afterwards.
    #[test]
    fn every_push_is_counted_once_against_a_racing_seal() {
        for round in 0..50 {
            let list = EdgeList::new();
            let counted: Vec<AtomicBool> = (0..4_000).map(|_| AtomicBool::new(false)).collect();
            let count = |item: u32| {
                assert!(
                    !counted[item as usize].swap(true, Ordering::Relaxed),
                    "round {round}: {item} counted twice"
                );
            };
            std::thread::scope(|scope| {
                for t in 0..4u32 {
                    let (list, count) = (&list, &count);
                    scope.spawn(move || {
                        for i in 0..1_000 {
                            let item = t * 1_000 + i;
                            let pushed = if t % 2 == 0 {
                                list.push(item)
                            } else {
                                list.push_prepared(EdgeList::prepare(item))
                            };
                            if let Err(Sealed) = pushed {
                                count(item);
                            }
                        }
                    });
                }
                let (list, count) = (&list, &count);
                scope.spawn(move || {
                    std::thread::yield_now();
                    list.seal(count);
                });
            });
            assert!(counted.iter().all(|c| c.load(Ordering::Relaxed)));
            let mut all = Vec::new();
            list.for_each(|i| all.push(i));
            all.sort_unstable();
            assert!(all.iter().copied().eq(0..4_000));
        }
    }
}
