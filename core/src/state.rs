//! Unit states (SPEC §2) and the packed status word each unit keeps in one atomic.
//!
//! A unit's whole mutable status — its state, its count of unmet dependencies and the sequence
//! number of the last event that changed it — lives in one `u64` so that every status change is a
//! single compare-and-swap: the readiness check and the pending→started transition of `start` are the
//! same instruction, and a status change can never interleave with another half-way. This module only
//! encodes and decodes the word; the transitions themselves are in `graph`.
//!
//! Layout, low bits first: `state` (3 bits) · `unmet` (21 bits) · `seq` (40 bits).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a unit is in its life (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Only depended on: no script registered it yet.
    Unknown,
    /// Registered, not started.
    Pending,
    /// Started, not finished.
    Started,
    /// Finished successfully (final).
    Completed,
    /// Finished unsuccessfully, itself or because a dependency failed (final).
    Failed,
}

impl UnitState {
    /// `completed` or `failed`.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The lowercase name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    const fn code(self) -> u64 {
        match self {
            Self::Unknown => 0,
            Self::Pending => 1,
            Self::Started => 2,
            Self::Completed => 3,
            Self::Failed => 4,
        }
    }

    const fn from_code(code: u64) -> Self {
        match code {
            0 => Self::Unknown,
            1 => Self::Pending,
            2 => Self::Started,
            3 => Self::Completed,
            _ => Self::Failed,
        }
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const STATE_BITS: u32 = 3;
const UNMET_BITS: u32 = 21;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const UNMET_SHIFT: u32 = STATE_BITS;
const UNMET_MASK: u64 = ((1 << UNMET_BITS) - 1) << UNMET_SHIFT;
const SEQ_SHIFT: u32 = STATE_BITS + UNMET_BITS;

/// The largest event number a status word can hold (40 bits); a restored journal must stay below it.
pub(crate) const MAX_SEQ: u64 = u64::MAX >> SEQ_SHIFT;

/// The most dependencies a unit can be waiting for at once.
pub const MAX_UNMET: u32 = (1 << UNMET_BITS) - 1;

/// One unit's whole mutable status, as stored in its atomic.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusWord(pub(crate) u64);

/// Adding this to a word's raw value adds one unmet dependency.
pub(crate) const ONE_UNMET: u64 = 1 << UNMET_SHIFT;

impl StatusWord {
    pub(crate) const fn new(state: UnitState, seq: u64) -> Self {
        Self(state.code() | (seq << SEQ_SHIFT))
    }

    pub(crate) const fn state(self) -> UnitState {
        UnitState::from_code(self.0 & STATE_MASK)
    }

    pub(crate) const fn unmet(self) -> u32 {
        ((self.0 & UNMET_MASK) >> UNMET_SHIFT) as u32
    }

    pub(crate) const fn seq(self) -> u64 {
        self.0 >> SEQ_SHIFT
    }

    /// Ready: pending or started with no unmet dependency (an unknown unit has none either).
    pub(crate) const fn ready(self) -> bool {
        self.unmet() == 0
    }

    /// The same word in `state`, stamped with the event `seq` that made the change.
    pub(crate) const fn with_state(self, state: UnitState, seq: u64) -> Self {
        Self((self.0 & UNMET_MASK) | state.code() | (seq << SEQ_SHIFT))
    }

    /// The same word with `extra` more unmet dependencies, stamped with `seq`.
    pub(crate) const fn with_more_unmet(self, extra: u32, seq: u64) -> Self {
        Self(
            ((self.0 & !(u64::MAX << SEQ_SHIFT)) + ((extra as u64) << UNMET_SHIFT))
                | (seq << SEQ_SHIFT),
        )
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusWord")
            .field("state", &self.state())
            .field("unmet", &self.unmet())
            .field("seq", &self.seq())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_independently() {
        let w = StatusWord::new(UnitState::Pending, 77);
        assert_eq!((w.state(), w.unmet(), w.seq()), (UnitState::Pending, 0, 77));
        let w = w.with_more_unmet(MAX_UNMET, 78);
        assert_eq!(
            (w.state(), w.unmet(), w.seq()),
            (UnitState::Pending, MAX_UNMET, 78)
        );
        let w = StatusWord(w.0 - ONE_UNMET);
        assert_eq!(w.unmet(), MAX_UNMET - 1);
        let w = w.with_state(UnitState::Failed, (1 << 40) - 1);
        assert_eq!(
            (w.state(), w.unmet(), w.seq()),
            (UnitState::Failed, MAX_UNMET - 1, (1 << 40) - 1)
        );
    }
}
