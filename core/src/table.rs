//! The table of units by name: a sharded `dashmap` in production, a `Mutex<HashMap>` stand-in under
//! `cfg(loom)` (loom cannot see inside dashmap's locks). Lookups hold a shard lock only for the
//! duration of one hash probe and never across any other operation, so they cannot take part in a
//! deadlock and are not a global lock. This module owns only storage, never graph rules.

use crate::sync::Arc;
use crate::unit::Unit;

#[cfg(not(loom))]
pub(crate) struct UnitTable {
    units: dashmap::DashMap<Arc<str>, Arc<Unit>>,
}

#[cfg(not(loom))]
impl UnitTable {
    pub(crate) fn new() -> Self {
        Self {
            units: dashmap::DashMap::new(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Unit>> {
        self.units.get(name).map(|entry| Arc::clone(entry.value()))
    }

    /// Inserts `unit` under its name; the caller holds the structure lock, so the name is absent.
    pub(crate) fn insert(&self, unit: Arc<Unit>) {
        self.units.insert(Arc::clone(unit.name.shared()), unit);
    }

    pub(crate) fn all(&self) -> Vec<Arc<Unit>> {
        self.units
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.units.len()
    }
}

#[cfg(loom)]
pub(crate) struct UnitTable {
    units: crate::sync::Mutex<std::collections::HashMap<String, Arc<Unit>>>,
}

#[cfg(loom)]
impl UnitTable {
    pub(crate) fn new() -> Self {
        Self {
            units: crate::sync::Mutex::new(Default::default()),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Unit>> {
        crate::sync::lock(&self.units).get(name).cloned()
    }

    pub(crate) fn insert(&self, unit: Arc<Unit>) {
        crate::sync::lock(&self.units).insert(unit.name.as_str().to_owned(), unit);
    }

    pub(crate) fn all(&self) -> Vec<Arc<Unit>> {
        crate::sync::lock(&self.units).values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        crate::sync::lock(&self.units).len()
    }
}
