//! `cargo +nightly fuzz run config` (see scripts/fuzz.sh): tollgate::fuzzing::config on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::config(data));
