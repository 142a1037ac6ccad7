//! `cargo +nightly fuzz run stream_translators` (see scripts/fuzz.sh): tollgate::fuzzing::stream_translators on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::stream_translators(data));
