//! Append-only edge lists that readers walk without locking, and that a finishing unit *seals*.
//!
//! Each unit has two lists: its dependencies and its dependents. Edges are never removed while the
//! graph lives, so a list is a singly linked stack of nodes pushed at the head with a CAS; a node's
//! `next` never changes after it is published, and readers walk from the head under a
//! `crossbeam-epoch` guard. Nodes are reclaimed only when the list is cleared at graph drop.
//!
//! **Sealing** is what makes completion race-free against edge insertion: a unit that completes or
//! fails sets the tag bit of its dependents head (`fetch_or`) in the same atomic word that pushes
//! CAS on. After that every push fails. So for any edge `u -> d` exactly one of two things happens,
//! decided by the order of two operations on one atomic:
//! - the push wins: the edge is in the list `d` sealed, and `d`'s finisher accounts for it (decrements
//!   `u`'s unmet count or fails `u`);
//! - the seal wins: the push reports [`Sealed`], and the inserter accounts for it itself.
//!
//! There is no Dekker-style pattern and no double count. Under `cfg(loom)` the list is a
//! `Mutex<Vec>` stand-in with the same contract, so loom explores the callers' logic, not the list.
//! This module must not know what a unit is beyond holding a handle to one.

#[cfg(not(loom))]
pub(crate) use epoch_list::EdgeList;
#[cfg(loom)]
pub(crate) use loom_list::EdgeList;

/// A push refused because the list was sealed.
#[derive(Debug)]
pub(crate) struct Sealed;

#[cfg(not(loom))]
mod epoch_list {
    use super::Sealed;
    use crossbeam_epoch::{self as epoch, Atomic, Owned, Shared};
    use std::sync::atomic::Ordering;

    const SEALED_TAG: usize = 1;

    struct Node<T> {
        item: T,
        next: Atomic<Node<T>>,
    }

    /// A lock-free, append-only, sealable list of `T`.
    pub(crate) struct EdgeList<T> {
        head: Atomic<Node<T>>,
    }

    impl<T: Clone> EdgeList<T> {
        pub(crate) fn new() -> Self {
            Self {
                head: Atomic::null(),
            }
        }

        /// Pushes `item` unless the list is sealed.
        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            let guard = epoch::pin();
            let mut node = Owned::new(Node {
                item,
                next: Atomic::null(),
            });
            let mut head = self.head.load(Ordering::Acquire, &guard);
            loop {
                if head.tag() & SEALED_TAG != 0 {
                    return Err(Sealed);
                }
                node.next.store(head, Ordering::Relaxed);
                match self.head.compare_exchange(
                    head,
                    node,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    &guard,
                ) {
                    Ok(_) => return Ok(()),
                    Err(failure) => {
                        head = failure.current;
                        node = failure.new;
                    }
                }
            }
        }

        /// Seals the list; returns whether this call did it (false if it was sealed already).
        pub(crate) fn seal(&self) -> bool {
            let guard = epoch::pin();
            self.head
                .fetch_or(SEALED_TAG, Ordering::AcqRel, &guard)
                .tag()
                & SEALED_TAG
                == 0
        }

        /// Calls `f` on every item, newest first. Items pushed during the walk may or may not be seen.
        pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
            let guard = epoch::pin();
            let mut current = self.head.load(Ordering::Acquire, &guard);
            // SAFETY: nodes are only freed by `clear`/`drop`, which require that no other thread can
            // reach the list any more (see there); while the graph is shared every published node
            // stays allocated, and `next` was written before the node was published (Release CAS,
            // Acquire load), so each pointer we follow is valid for the guard's lifetime.
            while let Some(node) = unsafe { current.as_ref() } {
                f(&node.item);
                current = node.next.load(Ordering::Acquire, &guard);
            }
        }

        /// All items, newest first.
        pub(crate) fn to_vec(&self) -> Vec<T> {
            let mut items = Vec::new();
            self.for_each(|item| items.push(item.clone()));
            items
        }

        /// Whether any item satisfies `pred`.
        pub(crate) fn any(&self, mut pred: impl FnMut(&T) -> bool) -> bool {
            let mut found = false;
            self.for_each(|item| found = found || pred(item));
            found
        }

        /// Frees every node and leaves the list empty and unsealed. Used when the graph is dropped,
        /// to break the `Arc` cycles between units that point at each other.
        ///
        /// # Safety
        /// No other thread may access this list during or after the call except through `&mut`.
        pub(crate) unsafe fn clear(&self) {
            // SAFETY: the caller guarantees exclusive access, which is what `unprotected` requires.
            let guard = unsafe { epoch::unprotected() };
            let mut current = self.head.swap(Shared::null(), Ordering::AcqRel, guard);
            // SAFETY: exclusive access (caller's contract): no reader holds any node, so each node
            // can be turned back into an owned box and dropped exactly once.
            while !current.is_null() {
                let owned = unsafe { current.into_owned() };
                current = owned.next.load(Ordering::Relaxed, guard);
                drop(owned);
            }
        }
    }

    impl<T> Drop for EdgeList<T> {
        fn drop(&mut self) {
            // SAFETY: `&mut self` proves no other reference to the list exists.
            let guard = unsafe { epoch::unprotected() };
            let mut current = self.head.load(Ordering::Relaxed, guard);
            while !current.is_null() {
                // SAFETY: as in `clear`: exclusive access, each node freed once.
                let owned = unsafe { current.into_owned() };
                current = owned.next.load(Ordering::Relaxed, guard);
            }
        }
    }
}

#[cfg(loom)]
mod loom_list {
    use super::Sealed;
    use crate::sync::{lock, Mutex};

    /// The loom stand-in: the same contract, each operation one atomic step.
    pub(crate) struct EdgeList<T> {
        inner: Mutex<(Vec<T>, bool)>,
    }

    impl<T: Clone> EdgeList<T> {
        pub(crate) fn new() -> Self {
            Self {
                inner: Mutex::new((Vec::new(), false)),
            }
        }

        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            let mut inner = lock(&self.inner);
            if inner.1 {
                return Err(Sealed);
            }
            inner.0.push(item);
            Ok(())
        }

        pub(crate) fn seal(&self) -> bool {
            !std::mem::replace(&mut lock(&self.inner).1, true)
        }

        pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
            for item in self.to_vec() {
                f(&item);
            }
        }

        pub(crate) fn to_vec(&self) -> Vec<T> {
            lock(&self.inner).0.iter().rev().cloned().collect()
        }

        pub(crate) fn any(&self, mut pred: impl FnMut(&T) -> bool) -> bool {
            self.to_vec().iter().any(|item| pred(item))
        }

        /// # Safety
        /// None needed for the stand-in; `unsafe` only to match the production signature.
        pub(crate) unsafe fn clear(&self) {
            let mut inner = lock(&self.inner);
            inner.0.clear();
            inner.1 = false;
        }
    }
}
