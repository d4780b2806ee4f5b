//! Fuzz target: arbitrary bytes as a journal file, decoded and restored into a graph, checked
//! against a model of the replay rules (see `unitsync_fuzz::journal_replay`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| unitsync_fuzz::journal_replay(data));
