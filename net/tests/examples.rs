//! Golden-output tests for the programs in `examples/`.
//!
//! Every `examples/*.tern` file that has at least one `// expect` comment is a test
//! program (files without one are helper modules that other examples import). A program
//! states what it must do with comments, anywhere in the file, in order:
//!
//! - `// expect: TEXT` — the next line of standard output is exactly `TEXT` (one space
//!   after the colon is not part of the text; `// expect:` alone is an empty line);
//! - `// expect error: TEXT` — the program ends with an uncaught runtime error whose
//!   message contains `TEXT`;
//! - `// error-line: N` — that error is raised on line `N` of the program's own file
//!   (the innermost entry of the error's backtrace);
//! - `// heap-limit-mib: N` — run the program with an `N` MiB heap limit instead of the
//!   default.
//!
//! `examples_plain` runs each program once, on one VM instance, and checks it against
//! its expectations. `examples_migrating` runs each program again on two VM instances
//! that move processes between them while everything keeps running
//! (`RunOptions::migrate_every`): about every `R` reductions a randomly chosen process
//! (seeded) is frozen at a safepoint, or taken while it waits in `recv`, `sleep` or a
//! file operation, imaged, and reinstated in the other instance. That is done with
//! several seeds and intervals; the output must match the expectations and the error
//! (message and backtrace) must be exactly the plain run's. Failures of all programs are
//! collected and reported together, with a line-by-line diff of the output.
//!
//! Every run, plain or migrating, gets a fresh, empty temporary directory as its file
//! root (`RunOptions::file_root`), where the program's `open` creates and finds files;
//! it is removed after the run.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tern_net::runner::{compile, run_program, BufferHost, RunOptions};
use tern_vm::jit::JitMode;
use tern_vm::{RuntimeError, VmConfig};

mod common;

use common::specs::{diff, discover, split_lines, Spec};

/// The migrating runs: each seed with each interval `R` (a snapshot about every `R`
/// reductions; reductions are counted at calls and loop iterations, so small programs
/// need small intervals to migrate often).
const SEEDS: &[u64] = &[1, 2, 3];
const INTERVALS: &[u64] = &[1, 10, 50, 200, 1000];
/// The runs of a program too heavy to migrate often (see below).
const HEAVY_RUNS: &[(u64, u64)] = &[(1, 50), (2, 200), (3, 1000)];

/// A migration snapshots the whole process (heap and call stack) and restores it into a
/// fresh VM, which in a debug build takes milliseconds for a big heap or a deep stack.
/// So that the test stays fast, a first migrating run measures what one migration of
/// the program costs, and each run's interval is raised as far as needed to keep the
/// run's migrations within about `MIGRATION_TIME_PER_RUN` (rounded down to a power of
/// two, never fewer than `MIN_MIGRATIONS_PER_RUN`, never more than
/// `MAX_MIGRATIONS_PER_RUN`). Small programs are unaffected: they migrate every `R`.
const MIGRATION_TIME_PER_RUN: Duration = Duration::from_millis(200);
const MIN_MIGRATIONS_PER_RUN: u64 = 8;
const MAX_MIGRATIONS_PER_RUN: u64 = 1024;

/// Stack of the threads that run programs: the same as a main thread's, where `tern run`
/// runs them.
const RUN_THREAD_STACK: usize = 8 << 20;

/// The result of running a program once.
struct Run {
    out: String,
    error: Option<RuntimeError>,
    reductions: u64,
    migrations: u64,
    image_bytes_max: usize,
    elapsed: Duration,
}

fn config(spec: &Spec) -> VmConfig {
    let mut config = VmConfig::default();
    if let Some(mib) = spec.heap_limit_mib {
        config.heap.limit_bytes = mib << 20;
    }
    config
}

/// A fresh, empty directory under the system's temporary directory, removed (with all
/// it holds) when dropped: one run's file root.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(spec: &Spec) -> Result<TempRoot, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let stem = spec.name.trim_end_matches(".tern");
        let name = format!("tern-example-{stem}-{}-{}-{stamp}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create the file root {}: {e}", dir.display()))?;
        Ok(TempRoot(dir))
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_once(spec: &Spec, migrate_every: Option<u64>, seed: u64) -> Result<Run, String> {
    run_with(spec, migrate_every, seed, JitMode::Off)
}

fn run_with(spec: &Spec, migrate_every: Option<u64>, seed: u64, jit: JitMode) -> Result<Run, String> {
    let program = compile(&spec.path).map_err(|e| format!("does not compile:\n{e}"))?;
    let root = TempRoot::new(spec)?;
    let config = VmConfig { jit, ..config(spec) };
    let opts = RunOptions { config, migrate_every, seed, file_root: Some(root.0.clone()), ..RunOptions::default() };
    let mut host = BufferHost::new();
    let start = Instant::now();
    let report = run_program(&program, &opts, &mut host).map_err(|e| format!("cannot run: {e}\noutput so far:\n{}", host.out))?;
    Ok(Run {
        out: host.out,
        error: report.result.err(),
        reductions: report.reductions,
        migrations: report.migrations,
        image_bytes_max: report.image_bytes_max,
        elapsed: start.elapsed(),
    })
}

/// Everything wrong with one run, compared with the program's expectations.
fn check(spec: &Spec, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let actual = split_lines(&run.out);
    if actual.len() != spec.lines.len() || actual.iter().zip(&spec.lines).any(|(a, e)| a != e) {
        problems.push(format!("output differs (- expected, + actual):\n{}", diff(&spec.lines, &actual)));
    }
    if !run.out.is_empty() && !run.out.ends_with('\n') {
        problems.push("output does not end with a newline".to_string());
    }
    match (&spec.error, &run.error) {
        (None, None) => {}
        (None, Some(e)) => problems.push(format!("failed unexpectedly:\n{e}")),
        (Some(want), None) => problems.push(format!("finished, but an error containing {want:?} was expected")),
        (Some(want), Some(e)) => {
            if !e.message.contains(want.as_str()) {
                problems.push(format!("error message does not contain {want:?}:\n{e}"));
            }
            if let Some(line) = spec.error_line {
                match e.trace.first() {
                    Some(t) if t.line == line && Path::new(&t.file).file_name().is_some_and(|f| *f == *spec.name) => {}
                    Some(t) => problems.push(format!("error raised at {}:{}, expected {}:{line}:\n{e}", t.file, t.line, spec.name)),
                    None => problems.push(format!("error has no backtrace, expected line {line}:\n{e}")),
                }
            }
        }
    }
    problems
}

/// Runs `job` on every program, a few at a time, each on its own thread; returns the
/// failures of all of them, by program.
fn for_each_program(specs: Vec<Spec>, job: fn(&Spec) -> Vec<String>) -> Vec<(String, Vec<String>)> {
    let queue = Mutex::new(specs.into_iter().collect::<VecDeque<_>>());
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(spec) = queue.lock().unwrap().pop_front() else { break };
                let name = spec.name.clone();
                let thread = std::thread::Builder::new().name(name.clone()).stack_size(RUN_THREAD_STACK);
                let result = thread.spawn(move || job(&spec)).expect("spawn a thread").join();
                let problems = result.unwrap_or_else(|p| {
                    let msg =
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    vec![format!("panicked: {msg}")]
                });
                if !problems.is_empty() {
                    failures.lock().unwrap().push((name, problems));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures
}

fn report(mode: &str, count: usize, failures: Vec<(String, Vec<String>)>) {
    if failures.is_empty() {
        return;
    }
    let total: usize = failures.iter().map(|(_, p)| p.len()).sum();
    let mut msg = format!("{total} failure(s) in {} of {count} example programs ({mode}):\n", failures.len());
    for (name, problems) in &failures {
        for p in problems {
            let _ = writeln!(msg, "\n--- examples/{name}: {}", p.trim_end());
        }
    }
    panic!("{msg}");
}

#[test]
fn examples_plain() {
    let specs = discover();
    let count = specs.len();
    let failures = for_each_program(specs, |spec| match run_once(spec, None, 0) {
        Ok(run) => {
            eprintln!("{}: {} reductions, {:?}", spec.name, run.reductions, run.elapsed);
            check(spec, &run)
        }
        Err(e) => vec![e],
    });
    report("plain runs", count, failures);
}

/// Checks a migrating run against the expectations and against the plain run.
fn check_migrating(spec: &Spec, plain: &Run, every: u64, seed: u64, problems: &mut Vec<String>) -> Option<Run> {
    let label = format!("--migrate-every {every} --seed {seed}");
    let run = match run_once(spec, Some(every), seed) {
        Ok(run) => run,
        Err(e) => {
            problems.push(format!("[{label}] {e}"));
            return None;
        }
    };
    eprintln!("{} [{label}]: {} migrations, largest image {} bytes, {:?}", spec.name, run.migrations, run.image_bytes_max, run.elapsed);
    problems.extend(check(spec, &run).into_iter().map(|p| format!("[{label}] {p}")));
    if run.error != plain.error {
        let show = |e: &Option<RuntimeError>| e.as_ref().map_or_else(|| "(no error)".to_string(), |e| e.to_string());
        problems.push(format!(
            "[{label}] error differs from the plain run's:\nplain:\n{}\nmigrating:\n{}",
            show(&plain.error),
            show(&run.error)
        ));
    }
    if plain.reductions > 4 * every && run.migrations == 0 {
        problems.push(format!("[{label}] never migrated in {} reductions", plain.reductions));
    }
    Some(run)
}

#[test]
fn examples_migrating() {
    let specs = discover();
    let count = specs.len();
    let failures = for_each_program(specs, |spec| {
        let plain = match run_once(spec, None, 0) {
            Ok(run) => run,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        // A first run with few migrations measures what one migration costs.
        let probe_every = 50.max(plain.reductions / MIN_MIGRATIONS_PER_RUN);
        let Some(probe) = check_migrating(spec, &plain, probe_every, 0, &mut problems) else { return problems };
        let per_migration = probe.elapsed.saturating_sub(plain.elapsed).as_nanos() / u128::from(probe.migrations.max(1));
        let affordable = (MIGRATION_TIME_PER_RUN.as_nanos() / per_migration.max(1)).min(u128::from(MAX_MIGRATIONS_PER_RUN)) as u64;
        let max_migrations = affordable.max(MIN_MIGRATIONS_PER_RUN);
        let max_migrations = 1 << (63 - max_migrations.leading_zeros());
        // Every seed with every interval; for a program too heavy to migrate even
        // `MIN_MIGRATIONS_PER_RUN` times within the time, a few of those runs.
        let runs: Vec<(u64, u64)> = if affordable < MIN_MIGRATIONS_PER_RUN {
            HEAVY_RUNS.to_vec()
        } else {
            SEEDS.iter().flat_map(|&seed| INTERVALS.iter().map(move |&r| (seed, r))).collect()
        };
        for (seed, r) in runs {
            let every = r.max(plain.reductions / max_migrations);
            check_migrating(spec, &plain, every, seed, &mut problems);
        }
        problems
    });
    report("migrating runs", count, failures);
}

/// With every function compiled at its first call (`--jit always`), every example gives
/// the interpreter's output and error (message and position), plainly and while its
/// processes keep moving between two VM instances — so also in the middle of compiled
/// loops: the process state is a bytecode state at every safepoint.
#[test]
fn examples_compiled() {
    let specs = discover();
    let count = specs.len();
    let failures = for_each_program(specs, |spec| {
        let interpreted = match run_once(spec, None, 0) {
            Ok(run) => run,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        for (label, every, seed) in [
            ("--jit always", None, 0),
            ("--jit always --migrate-every 500 --seed 1", Some(500), 1),
            ("--jit always --migrate-every 97 --seed 2", Some(97), 2),
        ] {
            match run_with(spec, every, seed, JitMode::Always) {
                Ok(run) => {
                    problems.extend(check(spec, &run).into_iter().map(|p| format!("[{label}] {p}")));
                    if run.out != interpreted.out || run.error != interpreted.error {
                        problems.push(format!("[{label}] differs from the interpreter's run:\n{:?}\n{:?}", run.error, interpreted.error));
                    }
                }
                Err(e) => problems.push(format!("[{label}] {e}")),
            }
        }
        problems
    });
    report("compiled", count, failures);
}
