//! The table of units by name, which owns every unit of a graph: units are created in it, never
//! removed, and all freed together when it is dropped (so `&Unit`s borrowed from it, and the
//! `UnitRef`s between units, are valid while the table is borrowed).
//!
//! # Production table: a `dashmap`
//! A `dashmap::DashMap` whose key *is* the unit: `UnitKey` owns a heap-allocated `Unit` and
//! hashes, compares and `Borrow`s as the unit's name (`&str`), and the value is `()`. So the name is
//! stored once (in the unit), a lookup by `&str` hashes the name once (dashmap picks the shard and
//! probes with the same `foldhash` hash), and a slot costs one pointer plus hashbrown's control
//! byte.
//!
//! - **Lookups** (`UnitTable::get`) take the shard's read lock for one probe, copy out the unit's
//!   address and release it. The `&Unit` stays valid after the guard is gone: the unit lives in its
//!   own allocation, which the table never frees, moves or replaces while it lives (see the
//!   `SAFETY` comment on `UnitTable::unit`). Taking and releasing the read lock are two atomic
//!   read-modify-writes on the shard's lock word: that is this design's cost compared with a table
//!   whose lookups write nothing shared. Single-threaded it is about 8 ns a lookup on the
//!   development machine (13 ns for a `DashMap::get` of a 10,000-name map against 4.4 ns for an
//!   unlocked `HashMap`), and every operation on a name pays it once. Lookups never block each
//!   other, but two threads reading the same shard move its lock's cache line between them;
//!   `SHARDS` shards keep two to eight threads on different shards most of the time.
//! - **Inserts** (`UnitTable::get_or_insert_with`) first look up (read lock). For an absent name
//!   the caller's `make` builds a *candidate* outside any lock, and dashmap's entry API decides
//!   under the shard's write lock: if another thread inserted the name meanwhile, the candidate is
//!   dropped (after the lock is released) and the winner's unit returned; otherwise the caller's
//!   `init` runs on the candidate, still under the write lock, and the candidate is inserted. So
//!   exactly one unit is ever created per name, and the things only a created unit may take (an
//!   event number, a place in the topological order) are taken in `init`, once per name, before any
//!   other thread can look the unit up (lookups need the shard lock, whose release publishes
//!   `init`'s writes). `make` must have no side effect (reading the clock is fine): a losing
//!   candidate leaves nothing behind but a freed allocation. The cost of this scheme is that
//!   allocation (the unit and its name) for a thread that loses a race to create the same name.
//! - **Iteration** (`UnitTable::all`) goes through dashmap's iterator, one shard read-locked at a
//!   time; **`len`** read-locks each shard in turn.
//!
//! Nothing here holds a shard lock across any other operation (the caller's `init` must not use
//! the table), so the table cannot take part in a deadlock and is not a global lock.
//!
//! Under `cfg(loom)` a `Mutex<HashMap>` stand-in with the same contract (loom cannot see inside
//! dashmap's locks). This module owns only storage, never graph rules.

use crate::unit::Unit;

#[cfg(not(loom))]
pub(crate) use dash::UnitTable;

#[cfg(loom)]
pub(crate) use loom_table::UnitTable;

#[cfg(not(loom))]
mod dash {
    use super::Unit;
    use dashmap::mapref::entry::Entry;
    use dashmap::DashMap;
    use std::borrow::Borrow;
    use std::hash::{Hash, Hasher};
    use std::ptr::NonNull;

    /// Shards of the map (a power of two). dashmap's default is 4 × the CPU count, rounded up to a
    /// power of two (8 on a 2-CPU machine); a fixed, larger count keeps two to eight threads on
    /// different shard locks most of the time on any machine (two given operations meet on a shard
    /// with probability 1/64), for 128 bytes per shard per graph. Argued rather than measured: on
    /// the shared 2-CPU development machine W3's two-worker scaling was within its noise for 8, 64
    /// and 256 shards.
    const SHARDS: usize = 64;

    /// The map's key, and the owner of one unit: a pointer from `Box::leak`, freed on drop. It
    /// hashes, compares and borrows as the unit's name, so a `&str` finds it.
    ///
    /// A raw pointer rather than a `Box`: moving a `Box` asserts that it is the only way to its
    /// unit, which the `&Unit`s other threads hold would contradict whenever dashmap moves keys (as
    /// a shard grows).
    struct UnitKey(NonNull<Unit>);

    // SAFETY: a `UnitKey` owns its `Unit` like a `Box<Unit>` does, and `Unit` is `Send + Sync`.
    unsafe impl Send for UnitKey {}
    // SAFETY: as for `Send`; shared access only reads the unit through `&Unit`.
    unsafe impl Sync for UnitKey {}

    impl UnitKey {
        fn new(unit: Unit) -> Self {
            Self(NonNull::from(Box::leak(Box::new(unit))))
        }

        /// The unit, for as long as the key is borrowed; see `UnitTable::unit` for how long it
        /// really lives.
        fn unit(&self) -> &Unit {
            // SAFETY: the pointer came from `Box::leak` in `new` and is freed only when the key is
            // dropped, which cannot happen while the key is borrowed.
            unsafe { self.0.as_ref() }
        }
    }

    impl Drop for UnitKey {
        fn drop(&mut self) {
            // SAFETY: the pointer came from `Box::leak` in `new`, this key is its only owner, and
            // it is freed once, here. A key in the table is dropped only with the table (nothing
            // removes keys), when no `&Unit` borrowed from the table is alive; a candidate that
            // lost its race was never shared.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }

    impl Borrow<str> for UnitKey {
        fn borrow(&self) -> &str {
            self.unit().name.as_str()
        }
    }

    impl Hash for UnitKey {
        fn hash<H: Hasher>(&self, state: &mut H) {
            // The same as `str`'s hash, as `Borrow<str>` requires.
            self.unit().name.as_str().hash(state);
        }
    }

    impl PartialEq for UnitKey {
        fn eq(&self, other: &Self) -> bool {
            self.unit().name.as_str() == other.unit().name.as_str()
        }
    }

    impl Eq for UnitKey {}

    pub(crate) struct UnitTable {
        units: DashMap<UnitKey, (), foldhash::fast::RandomState>,
    }

    impl UnitTable {
        pub(crate) fn new() -> Self {
            Self {
                units: DashMap::with_hasher_and_shard_amount(
                    foldhash::fast::RandomState::default(),
                    SHARDS,
                ),
            }
        }

        /// A key of the table, as a unit borrowed from the table.
        fn unit<'t>(&'t self, key: &UnitKey) -> &'t Unit {
            // SAFETY: `key` is in the table (the caller read it under a shard guard, which may be
            // released before the returned `&Unit` is used). The unit lives in its own allocation,
            // owned by the key, which only moves the pointer, never the unit. Nothing ever removes,
            // replaces or clears a key of this table (it exposes no such operation), so the
            // allocation is freed only when the table is dropped, which needs `&mut self` and thus
            // waits for every `&'t Unit` (and for every `UnitRef`, which is used only while a unit
            // of the same table is borrowed: see `unit::UnitRef`). The unit's fields are shared
            // only through `&Unit` (atomics, mutexes, lock-free lists), so the reference stays
            // valid as other threads use the unit.
            unsafe { key.0.as_ref() }
        }

        /// The unit named `name`, if there is one.
        pub(crate) fn get(&self, name: &str) -> Option<&Unit> {
            self.units.get(name).map(|entry| self.unit(entry.key()))
        }

        /// The unit named `name`; if there is none, a new one, which is built by `make` (outside any
        /// lock, as a *candidate* that a racing insert of the same name may make this call drop: so
        /// `make` must have no side effect) and then passed to `init` under the shard's write lock,
        /// before any other thread can see it. `init` runs only for the unit that is inserted, so at
        /// most once per name; it must not use the table. Returns the unit and whether this call
        /// created it.
        pub(crate) fn get_or_insert_with(
            &self,
            name: &str,
            make: impl FnOnce() -> Unit,
            init: impl FnOnce(&Unit),
        ) -> (&Unit, bool) {
            if let Some(unit) = self.get(name) {
                return (unit, false);
            }
            let candidate = UnitKey::new(make());
            debug_assert_eq!(candidate.unit().name.as_str(), name);
            match self.units.entry(candidate) {
                Entry::Occupied(occupied) => {
                    let unit = self.unit(occupied.key());
                    // Releases the shard lock, then frees the losing candidate.
                    drop(occupied.into_key());
                    (unit, false)
                }
                Entry::Vacant(vacant) => {
                    init(vacant.key().unit());
                    let inserted = vacant.insert(());
                    let unit = self.unit(inserted.key());
                    // Dropping the guard publishes the unit and `init`'s writes (Release; lookups
                    // lock with Acquire).
                    drop(inserted);
                    (unit, true)
                }
            }
        }

        /// Every unit, in no particular order.
        pub(crate) fn all(&self) -> Vec<&Unit> {
            self.units
                .iter()
                .map(|entry| self.unit(entry.key()))
                .collect()
        }

        pub(crate) fn len(&self) -> usize {
            self.units.len()
        }
    }
}

#[cfg(loom)]
mod loom_table {
    use super::Unit;
    use crate::sync::{lock, Mutex};
    use std::collections::HashMap;

    /// The loom stand-in: one mutex around a map that owns boxed units (a box's unit never moves).
    pub(crate) struct UnitTable {
        units: Mutex<HashMap<String, Box<Unit>>>,
    }

    impl UnitTable {
        pub(crate) fn new() -> Self {
            Self {
                units: Mutex::new(HashMap::new()),
            }
        }

        pub(crate) fn get(&self, name: &str) -> Option<&Unit> {
            let units = lock(&self.units);
            // SAFETY: units are boxed, never removed, and freed only with the table.
            units
                .get(name)
                .map(|unit| unsafe { &*(&**unit as *const Unit) })
        }

        pub(crate) fn get_or_insert_with(
            &self,
            name: &str,
            make: impl FnOnce() -> Unit,
            init: impl FnOnce(&Unit),
        ) -> (&Unit, bool) {
            let mut units = lock(&self.units);
            let (unit, created) = match units.get(name) {
                Some(unit) => (&**unit as *const Unit, false),
                None => {
                    let unit = Box::new(make());
                    init(&unit);
                    let ptr = &*unit as *const Unit;
                    units.insert(name.to_owned(), unit);
                    (ptr, true)
                }
            };
            // SAFETY: as in `get`.
            (unsafe { &*unit }, created)
        }

        pub(crate) fn all(&self) -> Vec<&Unit> {
            let units = lock(&self.units);
            // SAFETY: as in `get`.
            units
                .values()
                .map(|unit| unsafe { &*(&**unit as *const Unit) })
                .collect()
        }

        pub(crate) fn len(&self) -> usize {
            lock(&self.units).len()
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::UnitTable;
    use crate::name::UnitName;
    use crate::state::{StatusWord, UnitState};
    use crate::unit::Unit;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn unit(name: &str) -> Unit {
        Unit::new(
            UnitName::from_valid(name),
            StatusWord::new(UnitState::Unknown, 0),
        )
    }

    #[test]
    fn inserts_once_and_finds_through_growth() {
        let table = UnitTable::new();
        for i in 0..5_000 {
            let name = format!("n{i}");
            let (created, new) =
                table.get_or_insert_with(&name, || unit(&name), |u| u.set_order(i));
            assert!(new);
            assert_eq!(created.name.as_str(), name);
            let (again, new) =
                table.get_or_insert_with(&name, || unreachable!(), |_| unreachable!());
            assert!(!new);
            assert!(std::ptr::eq(created, again));
        }
        assert_eq!(table.len(), 5_000);
        assert_eq!(table.all().len(), 5_000);
        for i in 0..5_000 {
            assert_eq!(table.get(&format!("n{i}")).unwrap().order(), i);
        }
        assert!(table.get("missing").is_none());
    }

    /// Four threads insert overlapping names while four look up names that were inserted before they
    /// started (each must be found, at the same address, through every growth); every name ends with
    /// one unit, and `init` ran once per name (losing candidates never reach it).
    #[test]
    fn concurrent_inserts_and_lookups() {
        let table = UnitTable::new();
        let mut early = Vec::new();
        for i in 0..100 {
            let name = format!("early{i}");
            let (unit, _) = table.get_or_insert_with(&name, || unit(&name), |_| {});
            early.push((name, unit as *const Unit as usize));
        }
        let created = AtomicUsize::new(0);
        let inits = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (table, created, inits) = (&table, &created, &inits);
                scope.spawn(move || {
                    for i in 0..4_000 {
                        // Threads share half their names, so insertions of one name race.
                        let name = format!("n{}", (i * 2 + t % 2) % 6_000);
                        let (found, new) = table.get_or_insert_with(
                            &name,
                            || unit(&name),
                            |_| {
                                inits.fetch_add(1, Ordering::Relaxed);
                            },
                        );
                        assert_eq!(found.name.as_str(), name);
                        if new {
                            created.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            for _ in 0..4 {
                let (table, early) = (&table, &early);
                scope.spawn(move || {
                    for round in 0..200 {
                        for (name, address) in early {
                            let found = table.get(name).expect("inserted before the lookups");
                            assert_eq!(found as *const Unit as usize, *address, "round {round}");
                        }
                    }
                });
            }
        });
        let names = table.all().len();
        assert_eq!(names, table.len());
        assert_eq!(names, 100 + created.load(Ordering::Relaxed));
        assert_eq!(
            inits.load(Ordering::Relaxed),
            created.load(Ordering::Relaxed)
        );
        let mut distinct: Vec<&str> = table.all().iter().map(|u| u.name.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), names, "a name has two units");
    }
}
