//! `cargo +nightly fuzz run responses` (see scripts/fuzz.sh): tollgate::fuzzing::responses on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::responses(data));
