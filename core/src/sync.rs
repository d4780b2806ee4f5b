//! The synchronisation primitives the graph is built from, switched for `loom` stand-ins under
//! `cfg(loom)` the way tokio does it.
//!
//! Every other module imports atomics, `Arc`, `Mutex` and the per-unit [`Notify`] from here and never
//! from `std` or `tokio` directly, so the same propagation code runs in production and inside the loom
//! models of `loom-tests/`. The containers loom cannot see into (the `dashmap` unit table, the
//! `crossbeam-epoch` edge lists and the seqlock event slots) have their own stand-ins in their
//! modules; this module owns only the leaf primitives. It must not contain graph logic.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

/// A value alone on its cache lines (128 bytes, so that the adjacent-line prefetcher does not pair
/// it with a neighbour either): for counters and locks that threads write often, next to fields that
/// every operation reads.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section in
/// the graph leaves its data consistent before anything that can panic, so poison carries no meaning.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(loom)]
    {
        mutex.lock().unwrap()
    }
}

#[cfg(not(loom))]
pub(crate) use tokio::sync::Notify;

/// A [`Notify`] allocated on first use: a unit nobody ever waited on pays one pointer and, per
/// notification, one atomic load.
///
/// Waiters call [`get_or_install`](Self::get_or_install), which installs a boxed `Notify` with a CAS
/// if there is none yet; a notifier calls [`notify_waiters`](Self::notify_waiters), which loads the
/// pointer and does nothing when it is null. Once installed the pointer never changes, and the
/// `Notify` is freed only with its owner (so a `&Notify` handed out lives as long as `&self`).
///
/// **No lost wake-up.** A waiter (1) installs or loads the pointer, (2) creates and enables its
/// `Notified` on it, then (3) does a no-op read-modify-write (`fetch_add(0, AcqRel)`, see
/// `Unit::sync_waiter`) on every status word its condition reads, and only then reads them. A
/// notifier (a) changes a status word with a read-modify-write (every write to a status word of a
/// shared graph is one: CAS, `fetch_sub`), then (b) loads the pointer. The status word's
/// modification order has (3) either after (a), and then the waiter reads the change and does not
/// sleep, or before (a); then (a), an Acquire RMW, reads from the release sequence headed by (3), so
/// (1) happens before (b), which therefore finds the pointer, and the `notify_waiters` it calls
/// comes after (2) and wakes the enabled `Notified`. This needs only acquire/release (so loom, which
/// treats `SeqCst` accesses as `AcqRel`, checks it as it runs in production); a plain `SeqCst` load at
/// (3) would need the `SeqCst` total order instead.
pub(crate) struct LazyNotify(AtomicPtr<Notify>);

impl LazyNotify {
    pub(crate) fn new() -> Self {
        Self(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// The notification, installed now if no waiter installed it before.
    pub(crate) fn get_or_install(&self) -> &Notify {
        let current = self.0.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: a non-null pointer was installed by the CAS below from `Box::into_raw`, is
            // never replaced, and is freed only in `drop`, which needs `&mut self`.
            return unsafe { &*current };
        }
        let fresh = Box::into_raw(Box::new(Notify::new()));
        // AcqRel: a notifier's Acquire load then sees the `Notify` fully built; Acquire on failure
        // for the winner's.
        match self.0.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: we installed `fresh`; from now on it lives as described above.
            Ok(_) => unsafe { &*fresh },
            Err(installed) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: as for `current` above.
                unsafe { &*installed }
            }
        }
    }

    /// Wakes every enabled waiter, if a waiter ever installed the notification.
    pub(crate) fn notify_waiters(&self) {
        let current = self.0.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: as in `get_or_install`.
            unsafe { &*current }.notify_waiters();
        }
    }
}

impl Drop for LazyNotify {
    fn drop(&mut self) {
        let current = self.0.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: installed from `Box::into_raw`, freed once, here; `&mut self` proves that no
            // `&Notify` handed out by `get_or_install` is still alive.
            drop(unsafe { Box::from_raw(current) });
        }
    }
}

#[cfg(loom)]
pub(crate) use loom_notify::Notify;

/// A minimal multi-waiter notification for loom models, with tokio's `Notify` contract as far as the
/// graph uses it: a `Notified` future that is *enabled* before the caller checks its condition is woken
/// by any later `notify_waiters`, so a check-then-sleep sequence can never miss a wake-up.
#[cfg(loom)]
mod loom_notify {
    use super::{lock, AtomicU64, Mutex, Ordering};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[derive(Debug, Default)]
    pub(crate) struct Notify {
        generation: AtomicU64,
        wakers: Mutex<Vec<Waker>>,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn notified(&self) -> Notified<'_> {
            Notified {
                notify: self,
                generation: None,
            }
        }

        pub(crate) fn notify_waiters(&self) {
            self.generation.fetch_add(1, Ordering::SeqCst);
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            for waker in wakers {
                waker.wake();
            }
        }
    }

    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        generation: Option<u64>,
    }

    impl Notified<'_> {
        /// Registers interest now: any `notify_waiters` after this call completes the future.
        pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
            let this = self.get_mut();
            if this.generation.is_none() {
                this.generation = Some(this.notify.generation.load(Ordering::SeqCst));
            }
            false
        }
    }

    impl Future for Notified<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            let start = *this
                .generation
                .get_or_insert_with(|| this.notify.generation.load(Ordering::SeqCst));
            let mut wakers = lock(&this.notify.wakers);
            if this.notify.generation.load(Ordering::SeqCst) != start {
                return Poll::Ready(());
            }
            wakers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
