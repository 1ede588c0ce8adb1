//! The fuzz targets (`tern_net::fuzz`) in the test command: each over its checked-in
//! corpus (`fuzz/corpus/TARGET/`, seeds and what earlier long runs found) and a fixed
//! number of mutations of it, drawn from a seed of its own (the same inputs on every
//! run and machine). Coverage-guided runs are `fuzz/`'s (`fuzz/README.md`).
//!
//! `TERN_WRITE_CORPUS=1` writes the seeds (`tern_net::fuzz::seeds`) into the corpus
//! first, as `seed-N` files.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tern_net::fuzz::{seeds, MAX_INPUT, TARGETS};

/// Mutations per target (a second or two for the slowest, the compiler).
const MUTATIONS: u64 = 20_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// The corpus of `target`: every file of its directory, in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect()
}

/// xorshift64*: a fixed sequence, so a failure here comes back on the next run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four of: a bit flipped, a byte set, a byte inserted or removed, a run cut
/// out, a run copied elsewhere, the end cut off, a byte set to an edge value.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(n + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below(16.min(n - i));
                v.drain(i..i + len);
            }
            4 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below(32.min(n - i));
                let run = v[i..i + len].to_vec();
                let at = rng.below(n + 1);
                v.splice(at..at, run);
            }
            5 if n > 0 => v.truncate(rng.below(n)),
            6 if n > 0 => {
                let i = rng.below(n);
                v[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            _ => {}
        }
    }
    v.truncate(MAX_INPUT);
    v
}

#[test]
fn every_fuzz_target_takes_its_corpus_and_mutations_of_it() {
    let write = std::env::var_os("TERN_WRITE_CORPUS").is_some();
    for &(target, run) in TARGETS {
        if write {
            let dir = root().join("fuzz/corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, s) in seeds(target, &root().join("examples")).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
            }
        }
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty (TERN_WRITE_CORPUS=1 writes the seeds)");
        for (name, input) in &inputs {
            let r = std::panic::catch_unwind(|| run(input));
            assert!(r.is_ok(), "fuzz target {target} failed on fuzz/corpus/{target}/{name}");
        }
        // FNV-1a of the name: each target its own sequence.
        let seed = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut rng = Rng(seed | 1);
        let start = Instant::now();
        for runs in 0..MUTATIONS {
            let (_, base) = &inputs[rng.below(inputs.len())];
            let input = mutate(&mut rng, base);
            if let Err(e) = std::panic::catch_unwind(|| run(&input)) {
                let at = std::env::temp_dir().join(format!("tern-fuzz-{target}-{runs}"));
                let _ = std::fs::write(&at, &input);
                let what = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("fuzz target {target} failed on mutation {runs} (written to {}): {}", at.display(), what.unwrap_or_default());
            }
        }
        eprintln!("fuzz {target}: {} corpus inputs, {MUTATIONS} mutations in {:?}", inputs.len(), start.elapsed());
    }
}
