//! The session protocol under the deterministic simulator (`tern_net::sim::session`).
//!
//! A failing seed prints the command that replays it:
//! `TERN_SIM_SEED=<seed> cargo test --profile tests -p tern-net --test sim -- replay --nocapture`.
//! A longer run: `TERN_SIM_SEEDS=100000 cargo test --profile tests -p tern-net --test sim -- many_seeds --nocapture`
//! (`TERN_SIM_FROM` sets the first seed).

use std::time::Instant;
use tern_net::proto::session::Fault;
use tern_net::sim::harness::SimFailure;
use tern_net::sim::session::{run_seed, SimOptions, SimReport};

/// Seeds in the normal test run, split in two tests so that both cores work.
const SEEDS_PER_HALF: u64 = 500;

fn run_range(from: u64, count: u64, opts: &SimOptions) -> Vec<SimReport> {
    let start = Instant::now();
    let mut reports = Vec::new();
    for seed in from..from + count {
        match run_seed(seed, opts) {
            Ok(r) => reports.push(r),
            Err(f) => panic!("{f}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let sent: u64 = reports.iter().map(|r| r.payloads_sent).sum();
    let steps: u64 = reports.iter().map(|r| r.steps).sum();
    let crashes: u64 = reports.iter().map(|r| r.crashes).sum();
    let restarts: u64 = reports.iter().map(|r| r.peer_restarts).sum();
    let lost: u64 = reports.iter().map(|r| r.payloads_lost_to_crashes).sum();
    let refused: u64 = reports.iter().map(|r| r.payloads_refused).sum();
    eprintln!(
        "seeds {from}..{}: {:.1} s, {:.0} seeds/s, {steps} steps, {sent} payloads ({lost} lost to crashes, {refused} refused as full), {crashes} crashes, {restarts} restarts seen",
        from + count,
        secs,
        count as f64 / secs
    );
    reports
}

#[test]
fn seeds_first_half() {
    run_range(0, SEEDS_PER_HALF, &SimOptions::default());
}

#[test]
fn seeds_second_half() {
    run_range(SEEDS_PER_HALF, SEEDS_PER_HALF, &SimOptions::default());
}

/// Replays `TERN_SIM_SEED` (with the default options) and prints its trace; does nothing
/// without it.
#[test]
fn replay() {
    let Ok(seed) = std::env::var("TERN_SIM_SEED") else { return };
    let seed: u64 = seed.trim().parse().expect("TERN_SIM_SEED is a u64");
    let opts = SimOptions { trace: true, trace_lines: 100_000, ..SimOptions::default() };
    match run_seed(seed, &opts) {
        Ok(r) => eprintln!("seed {seed} passes: {r:?}"),
        Err(f) => panic!("{f}"),
    }
}

/// `TERN_SIM_SEEDS=N` (and optionally `TERN_SIM_FROM=S`) runs N seeds; nothing without it.
#[test]
fn many_seeds() {
    let Ok(n) = std::env::var("TERN_SIM_SEEDS") else { return };
    let n: u64 = n.trim().parse().expect("TERN_SIM_SEEDS is a u64");
    let from: u64 = std::env::var("TERN_SIM_FROM").map_or(1_000_000, |s| s.trim().parse().expect("TERN_SIM_FROM is a u64"));
    run_range(from, n, &SimOptions::default());
}

#[test]
fn same_seed_same_run() {
    for seed in [3, 77, 1234] {
        let a = run_seed(seed, &SimOptions::default()).unwrap();
        let b = run_seed(seed, &SimOptions::default()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn runs_exercise_the_faults() {
    let reports = run_range(10_000, 100, &SimOptions::default());
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(sum(|r| r.crashes) > 20, "crashes");
    assert!(sum(|r| r.peer_restarts) > 20, "restarts seen");
    assert!(sum(|r| r.partitions) > 20, "partitions");
    assert!(sum(|r| r.disconnects) > 20, "disconnects");
    assert!(sum(|r| r.packets_duplicated) > 100, "duplicates");
    assert!(sum(|r| r.retransmitted) > 100, "retransmissions");
    assert!(sum(|r| r.payloads_lost_to_crashes) > 0, "payloads lost to crashes");
    assert!(sum(|r| r.payloads_refused) > 0, "full queues");
    assert!(sum(|r| r.downs) > 20, "peers seen down");
    assert!(sum(|r| r.leaves) > 20, "leaves");
    assert!(sum(|r| r.leaves_heard) > 20, "leaves heard");
    assert!(sum(|r| r.suspicions) > 20, "suspicions gossiped");
    assert!(sum(|r| r.probes) > 1000, "probes");
    assert!(reports.iter().all(|r| r.payloads_delivered > 0));
    assert!(reports.iter().all(|r| r.detections == 1), "every run ends with a detection phase");
}

/// A deliberately broken session must be caught within a few seeds.
fn caught(fault: Fault, what: &str) -> SimFailure {
    let opts = SimOptions { fault, ..SimOptions::default() };
    for seed in 0..200 {
        if let Err(f) = run_seed(seed, &opts) {
            assert!(f.message.contains(what), "{fault:?} caught, but as: {f}");
            assert!(f.to_string().contains(&format!("TERN_SIM_SEED={seed} cargo test --profile tests -p tern-net --test sim -- replay")));
            assert!(!f.trace.is_empty(), "a failure carries a trace");
            return f;
        }
    }
    panic!("{fault:?} was not caught in 200 seeds");
}

#[test]
fn checker_catches_duplicates() {
    caught(Fault::SkipDedup, "duplicate or reordered");
}

#[test]
fn checker_catches_delivery_to_a_new_incarnation() {
    caught(Fault::KeepQueueOnRestart, "addressed to incarnation");
}

#[test]
fn checker_catches_lost_payloads() {
    caught(Fault::NoRetransmit, "not settled");
}

/// Without suspicion a crashed node is seen down only by its watchers in time.
#[test]
fn checker_catches_a_crash_not_seen_down_in_time() {
    caught(Fault::IgnoreSuspicion, "still sees it up");
}

/// A node that holds its own pause (SIGSTOP) against its peers reports them down.
#[test]
fn checker_catches_a_pause_held_against_the_peers() {
    caught(Fault::NoPauseCheck, "down while it was alive and answering");
}

/// A session that ignores a peer's leave sees the peer up after it left.
#[test]
fn checker_catches_a_leave_not_heeded() {
    caught(Fault::IgnoreLeave, "left and still sees it up");
}
