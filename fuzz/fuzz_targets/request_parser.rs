//! Fuzz target: arbitrary bytes as one JSON payload, parsed as a `Request` (and the other wire
//! types), round-tripped, and applied to a small graph (see `unitsync_fuzz::request_parser`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| unitsync_fuzz::request_parser(data));
