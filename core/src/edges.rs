//! Append-only edge lists that readers walk without locking, and that a finishing unit *seals*.
//!
//! Each unit has two lists: its dependencies and its dependents. Edges are never removed while the
//! graph lives, so a list is a singly linked stack of nodes pushed at the head with a CAS; a node's
//! `next` never changes after it is published, and readers walk from the head under a
//! `crossbeam-epoch` guard. Nodes are reclaimed only when the list is cleared at graph drop.
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
pub(crate) use epoch_list::EdgeList;
#[cfg(loom)]
pub(crate) use loom_list::EdgeList;

/// A push that landed after the list was sealed: the item is linked, but the sealer did not see it,
/// so the pusher must account for it.
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

        /// Links `item` at the head. `Err(Sealed)` if the list was already sealed: the item is in the
        /// list all the same, but the sealer's walk did not include it.
        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            let guard = epoch::pin();
            let mut node = Owned::new(Node {
                item,
                next: Atomic::null(),
            });
            let mut head = self.head.load(Ordering::Acquire, &guard);
            loop {
                let sealed = head.tag() & SEALED_TAG;
                node.next.store(head.with_tag(0), Ordering::Relaxed);
                // The new head keeps the seal bit: sealing is forever.
                match self.head.compare_exchange(
                    head,
                    node.with_tag(sealed),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    &guard,
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
        pub(crate) fn seal(&self, f: impl FnMut(&T)) {
            let guard = epoch::pin();
            let before = self.head.fetch_or(SEALED_TAG, Ordering::AcqRel, &guard);
            if before.tag() & SEALED_TAG == 0 {
                Self::walk(before, f, &guard);
            }
        }

        /// Calls `f` on every item, newest first. Items pushed during the walk may or may not be seen.
        pub(crate) fn for_each(&self, f: impl FnMut(&T)) {
            let guard = epoch::pin();
            Self::walk(self.head.load(Ordering::Acquire, &guard), f, &guard);
        }

        fn walk<'g>(
            mut current: Shared<'g, Node<T>>,
            mut f: impl FnMut(&T),
            guard: &'g epoch::Guard,
        ) {
            // SAFETY: nodes are only freed by `clear`/`drop`, which require that no other thread can
            // reach the list any more (see there); while the graph is shared every published node
            // stays allocated, and `next` was written before the node was published (Release CAS,
            // Acquire load or AcqRel `fetch_or` of the head), so each pointer we follow is valid for
            // the guard's lifetime. `as_ref` ignores the seal tag.
            while let Some(node) = unsafe { current.as_ref() } {
                f(&node.item);
                current = node.next.load(Ordering::Acquire, guard);
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

    /// The loom stand-in: the same contract, each operation one atomic step. The second field is
    /// the length of the list when it was sealed (`None` while open).
    pub(crate) struct EdgeList<T> {
        inner: Mutex<(Vec<T>, Option<usize>)>,
    }

    impl<T: Clone> EdgeList<T> {
        pub(crate) fn new() -> Self {
            Self {
                inner: Mutex::new((Vec::new(), None)),
            }
        }

        pub(crate) fn push(&self, item: T) -> Result<(), Sealed> {
            let mut inner = lock(&self.inner);
            inner.0.push(item);
            match inner.1 {
                Some(_) => Err(Sealed),
                None => Ok(()),
            }
        }

        pub(crate) fn seal(&self, mut f: impl FnMut(&T)) {
            let before: Vec<T> = {
                let mut inner = lock(&self.inner);
                if inner.1.is_some() {
                    return;
                }
                inner.1 = Some(inner.0.len());
                inner.0.iter().rev().cloned().collect()
            };
            for item in &before {
                f(item);
            }
        }

        pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
            for item in self.to_vec() {
                f(&item);
            }
        }

        pub(crate) fn to_vec(&self) -> Vec<T> {
            lock(&self.inner).0.iter().rev().cloned().collect()
        }

        pub(crate) fn any(&self, pred: impl FnMut(&T) -> bool) -> bool {
            self.to_vec().iter().any(pred)
        }

        /// # Safety
        /// None needed for the stand-in; `unsafe` only to match the production signature.
        pub(crate) unsafe fn clear(&self) {
            let mut inner = lock(&self.inner);
            inner.0.clear();
            inner.1 = None;
        }
    }
}
