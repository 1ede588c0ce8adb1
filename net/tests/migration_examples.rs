//! Live migration over QUIC keeps programs correct.
//!
//! 1. Every program of `examples/` with golden expectations runs on node a of a 3-node
//!    loopback mesh while this thread migrates its main process (and now and then a
//!    process it spawned) at random moments, to random other nodes; its console output
//!    must be its golden output and its error the expected one. The mechanisms are cycled
//!    over the main process's moves, and a program that ended before every mechanism had
//!    moved it runs again with the ones missing first, so each example is moved with every
//!    mechanism (freeze, precopy, lazy, hybrid) whatever the seed. A generation-counter
//!    program is checked after every migration: its counter, kept in its heap, never goes
//!    backwards, never skips, and it runs where it was sent.
//! 2. A process moved, with every mechanism, while it waits in `recv` with a timeout,
//!    sleeps, writes a file, or has messages queued: the timeout and the sleep count from
//!    before the move (the program measures its wait on its own clock), messages sent
//!    during and after the move arrive, the file is written exactly once, queued messages
//!    come in order.
//!
//! The random choices of part 1 come from a seed. A run uses the fixed seeds
//! [`FIXED_SEEDS`] and one random seed, each printed; `TERN_MIG_SEED=N` runs seed N
//! alone (to replay a failure), `TERN_MIG_ONLY=name.tern` runs only that example, and
//! `TERN_MIG_LOGS=1` adds the nodes' logs to a run whose output differs.

mod common;

use common::specs::{diff, discover, split_lines, Spec};
use common::*;
use std::time::{Duration, Instant};
use tern_net::runner::compile;
use tern_vm::message::{Message, Val};
use tern_vm::node::{ExitReason, Forwarding};
use tern_vm::value::name_text;

const MECHANISMS: [&str; 4] = ["freeze", "precopy", "lazy", "hybrid"];

/// The seeds every run tests (the same in every CI run, so a failure replays).
const FIXED_SEEDS: [u64; 2] = [1, 2];

/// splitmix64: small, seeded, good enough to pick moments and nodes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// The seeds to run: `TERN_MIG_SEED` alone, else the fixed ones and a random one.
fn seeds() -> Vec<u64> {
    static SEEDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    SEEDS
        .get_or_init(|| {
            if let Ok(s) = std::env::var("TERN_MIG_SEED") {
                let seed = s.trim().parse().unwrap_or_else(|_| panic!("TERN_MIG_SEED={s:?} is not a number"));
                eprintln!("migration_examples: seed {seed} (from TERN_MIG_SEED)");
                return vec![seed];
            }
            let random = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
            eprintln!("migration_examples: fixed seeds {FIXED_SEEDS:?} and random seed {random} (rerun one with TERN_MIG_SEED=N)");
            let mut v = FIXED_SEEDS.to_vec();
            v.push(random);
            v
        })
        .clone()
}

fn seed_for(seed: u64, what: &str) -> u64 {
    let mut h = seed;
    for b in what.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// What became of a request to move a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    /// It is on the node it was sent to.
    Yes,
    /// It had ended by itself before the move was asked (its exit is recorded).
    EndedFirst,
    /// It ended by itself on the node it was on while the move was being set up, before
    /// the move took it (its exit is recorded there, with its own reason).
    EndedMeanwhile,
    /// Not now: its pages are still on the node it came from (a lazy move just before).
    NotYet,
}

/// The end of `pid` was its own: a normal end or an error of its program, not a kill or
/// lost pages.
fn ended_by_itself(reason: &ExitReason) -> bool {
    matches!(reason, ExitReason::Normal | ExitReason::Exit(_) | ExitReason::Failed(_)) && !reason.text().contains("pages were only there")
}

/// The exit record of `pid` on `node` (any node if `None`). A process leaves `ps` a
/// moment before its exit is recorded: a few seconds are allowed for that.
fn recorded_exit(m: &TestMesh, pid: u64, node: Option<&str>) -> Option<tern_vm::node::ProcessExit> {
    let look = || match node {
        Some(n) => m.node(n).node().exit_of(pid),
        None => m.exit_anywhere(pid),
    };
    let mut found = None;
    wait_until(Duration::from_secs(10), || {
        found = look();
        found.is_some()
    });
    found
}

/// Migrates `pid` from wherever it is to `to`. `Err`: the migration failed while the
/// process lives on, or the process is gone without having ended by itself (a failed
/// migration that lost it never counts as an end).
fn migrate_to(m: &TestMesh, pid: u64, to: &str, mechanism: &str) -> Result<Moved, String> {
    migrate_to_by(m, pid, to, mechanism, None)
}

/// [`migrate_to`] with forwarding mechanism `fwd` (`None`: the mesh's).
fn migrate_to_by(m: &TestMesh, pid: u64, to: &str, mechanism: &str, fwd: Option<Forwarding>) -> Result<Moved, String> {
    let Some(from) = m.where_is(pid) else {
        return match recorded_exit(m, pid, None) {
            Some(e) if ended_by_itself(&e.reason) => Ok(Moved::EndedFirst),
            Some(e) => Err(format!("{pid:#x} ended before its move, but not by itself: {}", e.reason.text())),
            None => Err(format!("{pid:#x} is on no node and its end is not recorded (before a {mechanism} move to {to})")),
        };
    };
    if from == to {
        return Ok(Moved::Yes);
    }
    // Only a watched process's end is recorded: the program's other processes are
    // watched from their first move on. One that ended before the watch began is no
    // longer in `ps` where it was, and no move of it was tried.
    m.node(&from).node().watch(pid);
    if !m.node(&from).node().ps().iter().any(|p| p.pid == pid) {
        return match m.node(&from).node().exit_of(pid) {
            Some(e) if !ended_by_itself(&e.reason) => {
                Err(format!("{pid:#x} ended before its move, but not by itself: {}", e.reason.text()))
            }
            _ => Ok(Moved::EndedFirst),
        };
    }
    let t0 = Instant::now();
    let how = tern_net::proto::mechanism::How { mechanism: Some(mechanism.parse()?), forwarding: fwd, ..Default::default() };
    let r = m.node(&from).migrate_how(pid, to, how);
    // Not a failure (tests do not time), but worth seeing in the output: a migration
    // that waited for a timeout.
    if t0.elapsed() > Duration::from_secs(5) {
        let logs = m.log_text();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        eprintln!("slow {mechanism} migration {from} -> {to} of {pid:#x} ({:?}): {r:?}; last log lines:", t0.elapsed());
        tail.iter().rev().for_each(|l| eprintln!("  {l}"));
    }
    let what = match &r {
        Ok(r) if r.ok => return Ok(Moved::Yes),
        Ok(r) if r.outcome.contains("still on the node it came from") => return Ok(Moved::NotYet),
        Ok(r) => r.outcome.clone(),
        Err(e) => e.clone(),
    };
    let failed = format!("{mechanism} migration of {pid:#x} {from} -> {to} failed: {what}");
    if m.where_is(pid).is_some() {
        return Err(failed);
    }
    // Gone: only an end of its own, where it was, excuses it.
    match recorded_exit(m, pid, Some(&from)) {
        Some(e) if ended_by_itself(&e.reason) => Ok(Moved::EndedMeanwhile),
        Some(e) => Err(format!("{failed}; the process ended on {from}: {}", e.reason.text())),
        None => Err(format!("{failed}; the process is gone and did not end on {from} ({:?} elsewhere)", m.exit_anywhere(pid))),
    }
}

/// A random node other than `not`.
fn other_node(rng: &mut Rng, names: &[String], not: Option<&str>) -> String {
    let others: Vec<&String> = names.iter().filter(|n| Some(n.as_str()) != not).collect();
    rng.pick(&others).to_string()
}

// ---------------------------------------------------------------------------------
// 1. The examples, migrated at random moments
// ---------------------------------------------------------------------------------

/// Examples whose output a migration can still change, because of bugs not fixed yet:
/// their differences are printed, not failed, only with `TERN_MIG_STRICT=0` (none now:
/// `files.tern` was one until processes got a home node).
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// Most migrations in one run of a program (its main process and others together).
const MAX_MIGRATIONS: usize = 8;

/// Most runs of one program for one seed, to have every mechanism move it.
const MAX_RUNS: usize = 8;

#[derive(Default)]
struct ExampleRun {
    /// Moves of the main process, per mechanism (in `MECHANISMS` order).
    main_moves: [usize; 4],
    /// The same per forwarding mechanism (`Forwarding::ALL` order).
    main_fwd: [usize; 4],
    other_moves: usize,
    /// Moves not made because the process had ended first or meanwhile.
    ended: usize,
    runs: usize,
    elapsed: Duration,
}

/// A mesh of 3 nodes for one example (its heap limit), and whether a run used it.
struct ExampleMesh {
    m: TestMesh,
    names: Vec<String>,
    used: bool,
}

fn example_mesh(spec: &Spec) -> ExampleMesh {
    let extra = spec.heap_limit_mib.map_or(String::new(), |mib| format!("heap_bytes = {}\n", mib << 20));
    let m = TestMesh::start_with(3, &extra);
    let names = m.names();
    ExampleMesh { m, names, used: false }
}

/// Runs one example (on `mesh`, made for it), migrating its processes, until every
/// mechanism has moved its main process; its problems.
fn run_example(spec: &Spec, seed: u64, mesh: &mut Option<ExampleMesh>) -> Result<ExampleRun, Vec<String>> {
    let mut rng = Rng(seed_for(seed, &spec.name));
    let program = compile(&spec.path).map_err(|e| vec![format!("does not compile:\n{e}")])?;
    let mut total = ExampleRun::default();
    let start = Instant::now();
    // The first mechanism of the cycle comes from the seed.
    let first = rng.below(4) as usize;
    while total.runs < MAX_RUNS {
        // The mechanisms not used yet come first, in the seed's order.
        let order: Vec<usize> = (0..4).map(|k| (first + k) % 4).filter(|&i| total.main_moves[i] == 0).collect();
        if order.is_empty() {
            break;
        }
        // A program that uses files runs on a fresh mesh each time (its files stay behind).
        if mesh.as_ref().is_some_and(|em| em.used && spec.name == "files.tern") {
            *mesh = None;
        }
        let em = mesh.get_or_insert_with(|| example_mesh(spec));
        em.used = true;
        let r = attempt(spec, &em.m, &em.names, &program, &mut rng, seed, &order, total.runs)?;
        for i in 0..4 {
            total.main_moves[i] += r.main_moves[i];
            total.main_fwd[i] += r.main_fwd[i];
        }
        total.other_moves += r.other_moves;
        total.ended += r.ended;
        total.runs += 1;
    }
    total.elapsed = start.elapsed();
    let missing: Vec<&str> = (0..4).filter(|&i| total.main_moves[i] == 0).map(|i| MECHANISMS[i]).collect();
    if !missing.is_empty() {
        return Err(vec![format!(
            "in {} runs its main process was never moved with {missing:?} (moves per mechanism {:?}); seed {seed}",
            total.runs, total.main_moves
        )]);
    }
    Ok(total)
}

/// One run of the program, its main process moved with `order[0]`, `order[1]`, ... in
/// turn (cycling). `random_start`: it starts running, and the first move usually takes
/// it frozen at its first safepoint (if the freeze comes in time), else at a random
/// moment; otherwise it starts frozen, before its first instruction, so that the run
/// moves it at least once however short it is.
#[allow(clippy::too_many_arguments)]
fn attempt(
    spec: &Spec,
    m: &TestMesh,
    names: &[String],
    program: &tern_compiler::Compiled,
    rng: &mut Rng,
    seed: u64,
    order: &[usize],
    run_index: usize,
) -> Result<ExampleRun, Vec<String>> {
    let random_start = run_index == 0;
    let start = Instant::now();
    // Most programs end within a millisecond, before a migration could start: the
    // first move takes it frozen (a freeze the migration ends), the rest come at random
    // moments a few milliseconds apart.
    let mut run = if random_start {
        let run = m.run_compiled("a", &spec.name, program);
        if rng.below(8) != 0 {
            let _ = m.node("a").node().freeze(run.pid, Duration::from_secs(10));
        }
        run
    } else {
        m.run_compiled_frozen("a", &spec.name, program)
    };
    let mut r = ExampleRun::default();
    // The moves tried, for the report of a failed run.
    let mut moves = Vec::new();
    let mut main_asked = 0;
    let mut problems = Vec::new();
    let mut delay_us = if random_start { rng.below(300) } else { 0 };
    let exit = loop {
        std::thread::sleep(Duration::from_micros(delay_us));
        delay_us = 500 + rng.below(15_000);
        run.pump();
        if let Some(e) = m.exit_anywhere(run.pid) {
            break Some(e);
        }
        if start.elapsed() > LONG {
            break None;
        }
        if r.main_moves.iter().sum::<usize>() + r.other_moves >= MAX_MIGRATIONS {
            continue;
        }
        // Mostly the main process; now and then another one of the program's.
        let procs = m.all_procs();
        let main = !(rng.below(3) == 0 && procs.len() > 1);
        let pid = if main { run.pid } else { rng.pick(&procs).1 };
        if !main {
            // Watched from now on, so that an end of its own is recorded: one that ended
            // between `all_procs` and the watch is no longer where it was, and no move of
            // it is tried (without this, it could look lost: on no node, no end recorded).
            let (at, _) = procs.iter().find(|p| p.1 == pid).expect("picked from procs");
            m.node(at).node().watch(pid);
            if !m.node(at).node().ps().iter().any(|p| p.pid == pid) && m.where_is(pid).is_none() {
                r.ended += 1;
                continue;
            }
        }
        let to = other_node(rng, names, m.where_is(pid).as_deref());
        let mech = if pid == run.pid { order[main_asked % order.len()] } else { rng.below(4) as usize };
        // The forwarding mechanisms in turn (the main process's moves, from run to run),
        // at random for the others.
        let fwd = if pid == run.pid {
            Forwarding::ALL[(seed as usize + run_index + main_asked) % 4]
        } else {
            Forwarding::ALL[rng.below(4) as usize]
        };
        let at = start.elapsed();
        let moved = migrate_to_by(m, pid, &to, MECHANISMS[mech], Some(fwd));
        moves.push(format!("{at:?}: {} {} {fwd} -> {to}: {moved:?}", name_text(pid), MECHANISMS[mech]));
        match moved {
            Ok(Moved::Yes) if pid == run.pid => {
                r.main_moves[mech] += 1;
                r.main_fwd[Forwarding::ALL.iter().position(|&f| f == fwd).unwrap_or(0)] += 1;
                main_asked += 1;
            }
            Ok(Moved::Yes) => r.other_moves += 1,
            Ok(Moved::EndedFirst | Moved::EndedMeanwhile) => r.ended += 1,
            Ok(Moved::NotYet) => {}
            Err(e) => {
                problems.push(e);
                break m.exit_anywhere(run.pid);
            }
        }
    };
    r.elapsed = start.elapsed();
    run.drain();
    let Some(exit) = exit.or_else(|| m.exit_anywhere(run.pid)) else {
        problems.push(format!("did not end within {LONG:?}; output:\n{}\nlogs:\n{}", run.text, m.log_text()));
        return Err(problems);
    };
    let actual = split_lines(&run.text);
    if actual.len() != spec.lines.len() || actual.iter().zip(&spec.lines).any(|(a, e)| a != e) {
        problems.push(format!("output differs (- expected, + actual):\n{}", diff(&spec.lines, &actual)));
        if std::env::var("TERN_MIG_LOGS").is_ok_and(|v| v == "1") {
            problems.push(format!("moves:\n{}\nlogs:\n{}", moves.join("\n"), m.log_text()));
        } else {
            // The moves, and what the nodes said of pages and failures, always.
            let said: Vec<String> = m
                .log_text()
                .lines()
                .filter(|l| ["page", "fail", "refused", "lost", "abort"].iter().any(|w| l.contains(w)))
                .map(String::from)
                .collect();
            problems.push(format!("moves:\n{}\nthe nodes' lines on pages and failures:\n{}", moves.join("\n"), said.join("\n")));
        }
    }
    // Other processes may fail on purpose (supervisor.tern); the main one must not.
    let main_failed = run.failures.iter().any(|f| f.starts_with(&format!("<pid {}>", name_text(run.pid))));
    match (&spec.error, &exit.reason) {
        (None, r) if r.is_normal() && !main_failed => {}
        (None, r) => problems.push(format!("ended: {}; failures: {:?}", r.text(), run.failures)),
        (Some(want), ExitReason::Failed(e)) => {
            if !e.message.contains(want.as_str()) {
                problems.push(format!("error message does not contain {want:?}:\n{e}"));
            }
            if let Some(line) = spec.error_line {
                match e.trace.first() {
                    Some(t) if t.line == line && t.file.ends_with(spec.name.as_str()) => {}
                    other => problems.push(format!("error raised at {other:?}, expected {}:{line}:\n{e}", spec.name)),
                }
            }
        }
        (Some(want), r) => problems.push(format!("ended {r:?}, but an error containing {want:?} was expected")),
    }
    for n in names {
        if m.node(n).migration_holds(run.pid) {
            problems.push(format!("node {n} still holds migration state of the main process"));
        }
    }
    if problems.is_empty() {
        Ok(r)
    } else {
        problems.push(format!(
            "moves of the main process per mechanism {:?} ({MECHANISMS:?}), {} of others; seed {seed} (rerun with TERN_MIG_SEED={seed})",
            r.main_moves, r.other_moves
        ));
        Err(problems)
    }
}

#[test]
fn examples_keep_their_output_when_migrated_over_quic() {
    let mut specs = discover();
    if let Ok(only) = std::env::var("TERN_MIG_ONLY") {
        specs.retain(|s| s.name == only);
        assert!(!specs.is_empty(), "TERN_MIG_ONLY={only:?} names no example");
    }
    let count = specs.len();
    // Strict unless TERN_MIG_STRICT=0: a known bug fails the run too.
    let strict = !std::env::var("TERN_MIG_STRICT").is_ok_and(|v| v == "0");
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for spec in &specs {
        // One mesh for every seed of an example (a fresh one after a failed run).
        let mut mesh = None;
        for seed in seeds() {
            let known = KNOWN_BUGS.iter().find(|(n, _)| *n == spec.name).map(|(_, why)| *why);
            match run_example(spec, seed, &mut mesh) {
                Ok(r) => eprintln!(
                    "seed {seed} {}: {} runs, main moved {:?} ({}), by forwarding {:?}, {} others moved, {} moves not made (ended), {:?}",
                    spec.name,
                    r.runs,
                    r.main_moves,
                    MECHANISMS.join("/"),
                    r.main_fwd,
                    r.other_moves,
                    r.ended,
                    r.elapsed
                ),
                Err(p) if known.is_some() && !strict => {
                    eprintln!("KNOWN BUG in examples/{} ({}), seed {seed}:\n{}", spec.name, known.unwrap_or_default(), p.join("\n"))
                }
                Err(p) => {
                    failures.push(format!("--- examples/{} (seed {seed}, rerun with TERN_MIG_SEED={seed}):\n{}", spec.name, p.join("\n")));
                    // What a failed run left behind is not the next seed's.
                    mesh = None;
                }
            }
        }
    }
    eprintln!("{count} examples, seeds {:?}: {:?}", seeds(), t0.elapsed());
    assert!(failures.is_empty(), "{} example runs of {count} examples failed:\n{}", failures.len(), failures.join("\n\n"));
}

/// A counter in the heap, advanced one generation at a time: every cell of a 512 KiB
/// array holds the generation, checked in full before each step. It says each
/// generation and where it ran.
const GENERATIONS: &str = r#"
let CELLS = 32 * 1024;
let GENS = 400;
let data = array(CELLS, 0);
let state = {gen: 0};
while state.gen < GENS {
    let g = state.gen;
    for k in 0..CELLS {
        if data[k] != g {
            assert(false, "cell ${k} holds ${data[k]} in generation ${g}");
        }
    }
    for k in 0..CELLS {
        data[k] = g + 1;
    }
    state.gen = g + 1;
    println("gen ${state.gen} on ${node()}");
    sleep(1);
}
println("ok ${state.gen}");
"#;

/// The generations printed so far: they must be 1, 2, 3, ... with none skipped or
/// repeated; the node of the last one.
#[track_caller]
fn check_generations(text: &str, seed: u64) -> (u64, String) {
    let mut last = (0, String::new());
    for l in text.lines().filter(|l| l.starts_with("gen ")) {
        let mut w = l.split(' ');
        let g: u64 = w.nth(1).and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("bad line {l:?}"));
        assert_eq!(g, last.0 + 1, "generation {g} after {} (seed {seed}):\n{text}", last.0);
        last = (g, w.nth(1).unwrap_or_default().to_string());
    }
    last
}

#[test]
fn the_generation_counter_holds_after_every_migration() {
    for seed in seeds() {
        generation_counter(seed);
    }
}

fn generation_counter(seed: u64) {
    let mut rng = Rng(seed_for(seed, "generations"));
    let m = TestMesh::start(3);
    let names = m.names();
    let mut run = m.run("a", "generations.tern", GENERATIONS);
    let mut moves = 0;
    let first = rng.below(4) as usize;
    while moves < 16 {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        run.pump();
        let (gen_before, _) = check_generations(&run.text, seed);
        if gen_before >= 360 {
            break;
        }
        let to = other_node(&mut rng, &names, m.where_is(run.pid).as_deref());
        let mech = MECHANISMS[(first + moves) % 4];
        match migrate_to(&m, run.pid, &to, mech) {
            Ok(Moved::Yes) => {}
            // Its pages are still coming from a lazy move: again a little later.
            Ok(Moved::NotYet) => continue,
            Ok(other) => panic!("the counter ended early ({other:?}, seed {seed}):\n{}", run.text),
            Err(e) => panic!("{e} (seed {seed}, rerun with TERN_MIG_SEED={seed})\n{}", m.log_text()),
        }
        moves += 1;
        // The checker: it goes on from where it was, where it was sent.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            run.pump();
            assert!(run.failures.is_empty(), "{:?} (seed {seed}, {mech} to {to})", run.failures);
            let (g, at) = check_generations(&run.text, seed);
            if g > gen_before + 1 && at == to {
                break;
            }
            assert!(Instant::now() < deadline, "no generation after {gen_before} on {to} after a {mech} move (seed {seed}):\n{}", run.text);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let exit = run.finish_anywhere(&m, LONG);
    run.assert_normal(&m, &exit);
    let (g, _) = check_generations(&run.text, seed);
    assert_eq!(g, 400, "{}", run.text);
    assert!(run.text.ends_with("ok 400\n"), "{}", run.text);
    assert!(moves >= 4, "only {moves} moves before the counter neared its end: not every mechanism moved it (seed {seed})");
    eprintln!("generation counter, seed {seed}: {moves} moves, checked after each");
}

// ---------------------------------------------------------------------------------
// 2. Moving a process in the middle of a blocking call
// ---------------------------------------------------------------------------------

/// Waits until `pid` is in `ps` with `status`.
#[track_caller]
fn wait_status(m: &TestMesh, pid: u64, status: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || m.status_of(pid) == Some(status)),
        "{pid:#x} never got {status}: {:?}",
        m.status_of(pid)
    );
}

fn int(i: i64) -> Message {
    Message::scalar(Val::Int(i))
}

/// How long the process waits (recv timeout, sleep), and how far into the wait the move
/// is asked. The process measures its wait on its own clock, which goes on across a
/// move without the time it spent moving: a wait counted from before the move ends at
/// `WAIT_MS` (plus lateness), one restarted by the move at `MOVE_AT_MS + WAIT_MS` or
/// later, one that forgot its time left at once (about `MOVE_AT_MS`). So the bounds
/// `WAIT_MS <= measured < MOVE_AT_MS + WAIT_MS` tell them apart with `MOVE_AT_MS` of
/// room for a loaded machine.
const WAIT_MS: u64 = 2000;
const MOVE_AT_MS: u64 = 1000;

const RECV_TIMEOUT: &str = r#"
let t0 = mono_ms();
println("waiting");
let v = recv(2000);
let dt = mono_ms() - t0;
println("${is_timeout(v)} on ${node()} after ${dt}");
"#;

/// Runs `src` (which prints `first`, then waits `WAIT_MS` and prints a line starting
/// with `done` and ending with `after <ms>`) on a, moves it to b with `mech` once it has
/// waited `MOVE_AT_MS`; the last line and the ms it measured.
fn wait_across_a_move(src: &str, first: &str, done: &str, mech: &str) -> (String, u64) {
    let m = TestMesh::start(2);
    let mut run = m.run("a", "wait.tern", src);
    run.wait_line(&m, first, |l| l == first);
    // The process read its clock before printing: it has waited at least this long.
    let t0 = Instant::now();
    wait_status(&m, run.pid, "waiting");
    std::thread::sleep(Duration::from_millis(MOVE_AT_MS).saturating_sub(t0.elapsed()));
    assert_eq!(migrate_to(&m, run.pid, "b", mech).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text())), Moved::Yes);
    let line = run.wait_line(&m, done, |l| l.starts_with(done));
    let exit = run.finish_anywhere(&m, LONG);
    run.assert_normal(&m, &exit);
    let ms = line.rsplit(' ').next().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no time in {line:?}"));
    (line, ms)
}

#[test]
fn a_recv_timeout_counts_from_before_a_move() {
    assert!(RECV_TIMEOUT.contains(&format!("recv({WAIT_MS})")));
    for mech in MECHANISMS {
        let (line, ms) = wait_across_a_move(RECV_TIMEOUT, "waiting", "true", mech);
        // It timed out after the move (on b), not before.
        assert!(line.starts_with("true on b after "), "{mech}: {line}");
        assert!(
            (WAIT_MS..MOVE_AT_MS + WAIT_MS).contains(&ms),
            "{mech}: recv({WAIT_MS}) moved after {MOVE_AT_MS} ms timed out after {ms} ms of its clock \
             (a restarted wait would take {} ms or more)",
            MOVE_AT_MS + WAIT_MS
        );
    }
}

/// `mono_ms()` goes on across a move, although each node's clock starts when the node
/// does (here b starts 300 ms after a: read plainly, the clock would go backwards).
#[test]
fn mono_ms_keeps_going_across_a_move() {
    let mut m = TestMesh::config(2, "");
    m.start_node("a");
    std::thread::sleep(Duration::from_millis(300));
    m.start_node("b");
    m.wait_connected(&m.names());
    let src = "let t0 = mono_ms();\nprintln(\"go\");\nsleep(500);\nlet dt = mono_ms() - t0;\nprintln(\"${dt >= 500} ${dt}\");\n";
    let mut run = m.run("a", "mono.tern", src);
    run.wait_line(&m, "go", |l| l == "go");
    assert_eq!(migrate_to(&m, run.pid, "b", "freeze").expect("moved"), Moved::Yes);
    let exit = run.finish_anywhere(&m, LONG);
    run.assert_normal(&m, &exit);
    assert!(run.text.starts_with("go\ntrue "), "{}", run.text);
}

const RECV_MESSAGES: &str = r#"
println("waiting");
let a = recv(10000);
println("got ${a} on ${node()}");
let b = recv(10000);
println("got ${b} on ${node()}");
"#;

#[test]
fn messages_sent_during_and_after_a_move_reach_a_waiting_recv() {
    for mech in MECHANISMS {
        let m = TestMesh::start(3);
        let mut run = m.run("a", "recv_messages.tern", RECV_MESSAGES);
        run.wait_line(&m, "waiting", |l| l == "waiting");
        wait_status(&m, run.pid, "waiting");
        let pid = run.pid;
        std::thread::scope(|s| {
            let mover = s.spawn(|| migrate_to(&m, pid, "b", mech));
            // During the move (or right after, if it was quick), from a and from c.
            std::thread::sleep(Duration::from_millis(1));
            assert!(m.node("c").node().send_to(pid, int(1)).expect("sent"), "{mech}: ended early");
            let moved = mover.join().expect("the mover").unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
            assert_eq!(moved, Moved::Yes, "{mech}");
        });
        // Sent during the move, or just before it began: it came, wherever it was taken.
        let first = run.wait_line(&m, "the first", |l| l.starts_with("got 1"));
        assert!(first == "got 1 on a" || first == "got 1 on b", "{mech}: {first}");
        assert!(m.node("a").node().send_to(pid, int(2)).expect("sent"), "{mech}: ended early");
        run.wait_line(&m, "the second", |l| l.starts_with("got 2"));
        assert_eq!(run.text, format!("waiting\n{first}\ngot 2 on b\n"), "{mech}");
        let exit = run.finish_anywhere(&m, LONG);
        run.assert_normal(&m, &exit);
    }
}

const SLEEPER: &str = r#"
let t0 = mono_ms();
println("sleeping");
sleep(2000);
let dt = mono_ms() - t0;
println("woke on ${node()} after ${dt}");
"#;

#[test]
fn a_sleep_counts_from_before_a_move() {
    assert!(SLEEPER.contains(&format!("sleep({WAIT_MS})")));
    for mech in MECHANISMS {
        let (line, ms) = wait_across_a_move(SLEEPER, "sleeping", "woke", mech);
        assert!(line.starts_with("woke on b after "), "{mech}: {line}");
        assert!(
            (WAIT_MS..MOVE_AT_MS + WAIT_MS).contains(&ms),
            "{mech}: sleep({WAIT_MS}) moved after {MOVE_AT_MS} ms ended after {ms} ms of its clock \
             (a restarted sleep would take {} ms or more)",
            MOVE_AT_MS + WAIT_MS
        );
    }
}

/// Writes 3000 numbered lines to a file of node a, one `write` each (each a file
/// operation the process waits for), and to a file relative to its file root.
const WRITER: &str = r#"
let N = 3000;
for name in ["/node/a/out.txt", "rel.txt"] {
    let f = open(name, "w");
    let bytes = 0;
    for i in 0..N {
        bytes += write(f, "line ${i}\n");
        if i % 50 == 0 {
            sleep(2);
        }
    }
    close(f);
    println("${name}: ${bytes} bytes on ${node()}");
}
"#;

#[test]
fn a_file_write_completes_exactly_once_across_moves() {
    let want: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    // Catching it in a write is up to timing: at least one of the runs must have.
    let mut io_total = 0;
    for mech in MECHANISMS {
        let m = TestMesh::start(3);
        let mut run = m.run("a", "writer.tern", WRITER);
        let names = m.names();
        let mut moves = 0;
        let mut io_moves = 0;
        while moves < 6 && m.exit_anywhere(run.pid).is_none() {
            // Catch it in the middle of a write when we can.
            let io = wait_until(Duration::from_millis(200), || m.status_of(run.pid) == Some("io"));
            let to = names[(moves + 1) % names.len()].clone();
            match migrate_to(&m, run.pid, &to, mech) {
                Ok(Moved::Yes) => {
                    moves += 1;
                    io_moves += usize::from(io);
                }
                Ok(Moved::NotYet) => {}
                Ok(Moved::EndedFirst | Moved::EndedMeanwhile) => break,
                Err(e) => panic!("{e}\n{}", m.log_text()),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let exit = run.finish_anywhere(&m, LONG);
        run.assert_normal(&m, &exit);
        assert!(moves >= 2, "{mech}: {moves} moves");
        io_total += io_moves;
        let root = &m.cfg.node("a").expect("node a").root;
        for file in ["out.txt", "rel.txt"] {
            let got = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{mech}: {file}: {e}"));
            assert!(got == want, "{mech}: {file} is wrong after {moves} moves:\n{}", diff_text(&want, &got));
        }
        let bytes: Vec<&str> = run.text.lines().map(|l| l.split(' ').nth(1).unwrap_or_default()).collect();
        assert_eq!(bytes, vec![want.len().to_string(); 2], "{mech}: {}", run.text);
        eprintln!("file writes, {mech}: {moves} moves, {io_moves} in the middle of a write");
    }
    assert!(io_total >= 1, "no move caught the process in the middle of a write");
}

fn diff_text(want: &str, got: &str) -> String {
    let want: Vec<String> = split_lines(want).into_iter().map(str::to_string).collect();
    let d = diff(&want, &split_lines(got));
    d.lines().filter(|l| !l.starts_with("        ")).take(20).collect::<Vec<_>>().join("\n")
}

/// Sleeps while messages queue up from outside (node a) and from a process on c,
/// then takes them all: each sender's in order.
const QUEUED: &str = r#"
let N = 300;
fn sender(to, n) {
    for i in 0..n {
        send(to, ["c", i]);
        if i % 50 == 0 { sleep(2); }
    }
}
println("ready");
spawn_on("c", sender, self(), N);
sleep(800);
let next = {outside: 0, c: 0};
for k in 0..(2 * N) {
    let m = recv(10000);
    assert(not is_timeout(m), "only ${k} messages came: ${next}");
    if type_of(m) == "int" {
        assert(m == next.outside, "from outside: ${m} when ${next.outside} was due");
        next.outside = next.outside + 1;
    } else {
        assert(m[1] == next.c, "from c: ${m[1]} when ${next.c} was due");
        next.c = next.c + 1;
    }
}
println("all ${next.outside} + ${next.c} in order on ${node()}");
"#;

#[test]
fn queued_messages_arrive_in_order_after_a_move() {
    for mech in MECHANISMS {
        let m = TestMesh::start(3);
        let mut run = m.run("a", "queued.tern", QUEUED);
        run.wait_line(&m, "ready", |l| l == "ready");
        let pid = run.pid;
        let a = m.node("a").node();
        for i in 0..100 {
            assert!(a.send_to(pid, int(i)).expect("sent"));
        }
        std::thread::scope(|s| {
            let mover = s.spawn(|| migrate_to(&m, pid, "b", mech));
            for i in 100..200 {
                assert!(a.send_to(pid, int(i)).expect("sent"));
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            let moved = mover.join().expect("the mover").unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
            assert_eq!(moved, Moved::Yes, "{mech}");
        });
        assert!(m.node("b").node().mailbox_size(pid).is_some_and(|(n, _)| n > 0), "{mech}: nothing queued on b");
        for i in 200..300 {
            assert!(a.send_to(pid, int(i)).expect("sent"));
        }
        let exit = run.finish_anywhere(&m, LONG);
        run.assert_normal(&m, &exit);
        assert_eq!(run.text, "ready\nall 300 + 300 in order on b\n", "{mech}");
    }
}

/// The watch on a program's exit moves with it, so its end is seen where it ends.
#[test]
fn the_exit_of_a_moved_program_is_recorded_where_it_ends() {
    let m = TestMesh::start(2);
    let mut run = m.run("a", "sleeper.tern", SLEEPER);
    run.wait_line(&m, "sleeping", |l| l == "sleeping");
    assert_eq!(migrate_to(&m, run.pid, "b", "freeze").expect("moved"), Moved::Yes);
    let exit = m.node("b").node().wait_exit(run.pid, LONG).expect("the exit is recorded on b");
    assert!(exit.reason.is_normal(), "{exit:?}");
}
