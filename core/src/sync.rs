//! The synchronisation primitives the graph is built from, switched for `loom` stand-ins under
//! `cfg(loom)` the way tokio does it.
//!
//! Every other module imports atomics, `Arc`, `Mutex` and the per-unit [`Notify`] from here and never
//! from `std` or `tokio` directly, so the same propagation code runs in production and inside the loom
//! models of `loom-tests/`. The containers loom cannot see into (the `dashmap` unit table, the
//! `crossbeam-epoch` edge lists and event slots) have their own stand-ins in their modules; this module
//! owns only the leaf primitives. It must not contain graph logic.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

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
