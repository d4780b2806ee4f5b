//! Fuzz target: arbitrary bytes as a connection to the agent, read frame by frame (see
//! `unitsync_fuzz::frame_decoder`; the first byte is the reader's schedule). The counting allocator
//! lets the target check that no read allocates more than the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: unitsync_fuzz::CountingAllocator = unitsync_fuzz::CountingAllocator;

fuzz_target!(|data: &[u8]| unitsync_fuzz::frame_decoder(data));
