//! Fuzz target (structured): bytes as operations on a live graph, whose journal must restore to
//! the same graph at every prefix, then damaged and replayed (see `unitsync_fuzz::journal_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| unitsync_fuzz::journal_ops(data));
