//! `cargo +nightly fuzz run sse` (see scripts/fuzz.sh): tollgate::fuzzing::sse on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::sse(data));
