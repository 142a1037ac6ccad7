//! The fuzz targets (`tollgate::fuzzing`) on stable, in the normal test run: every input of the checked-in
//! corpus (`fuzz/corpus/<target>/`) and every crash kept as a regression input (`fuzz/regressions/<target>/`),
//! then seeded mutations of them (byte flips, insertions of JSON and SSE punctuation, deletions, duplicated
//! ranges, splices of two inputs). A panic fails the test and saves the input under `fuzz/regressions/`,
//! where it stays as a regression case. Coverage-guided runs: `scripts/fuzz.sh` (cargo-fuzz, nightly).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Mutations per target per run (`TOLLGATE_FUZZ_ITERATIONS` to change).
const ITERATIONS: usize = 20_000;

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\n",
    b"\r",
    b"\n\n",
    b"data: ",
    b"event: ",
    b"null",
    b"-1",
    b"18446744073709551616",
    b"1e308",
    b"\"\\ud800\"",
    b"\xf0\x9f\x98",
    b"[DONE]",
    b"=",
    b"[[",
    b"]]",
    b"\"\"\"",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for dir in [root().join("corpus").join(target), root().join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        all.extend(paths.iter().filter(|p| p.is_file()).map(|p| std::fs::read(p).unwrap()));
    }
    all
}

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(64)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.insert(at, rng.next() as u8),
        }
    }
    data
}

fn run(name: &str, target: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| target(input)).is_err() {
        let dir = root().join("regressions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("crash-{:016x}", fnv(input)));
        std::fs::write(&file, input).unwrap();
        panic!("fuzz target `{name}` panicked; the input is kept as {}", file.display());
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn every_fuzz_target_survives_its_corpus_its_regressions_and_seeded_mutations() {
    let iterations = std::env::var("TOLLGATE_FUZZ_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(ITERATIONS);
    for (name, target) in tollgate::fuzzing::TARGETS {
        let seeds = inputs(name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no inputs");
        for seed in &seeds {
            run(name, *target, seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ fnv(name.as_bytes()));
        for _ in 0..iterations {
            run(name, *target, &mutate(&mut rng, &seeds));
        }
    }
}
