//! `cargo +nightly fuzz run chat_request` (see scripts/fuzz.sh): tollgate::fuzzing::chat_request on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::chat_request(data));
