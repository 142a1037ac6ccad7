//! `cargo +nightly fuzz run messages_request` (see scripts/fuzz.sh): tollgate::fuzzing::messages_request on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::messages_request(data));
