//! The load policy under the deterministic simulator (`tern_net::sim::policy`): many
//! nodes, processes arriving and ending, the nodes' own policy code deciding.
//!
//! A failing seed prints the command that replays it:
//! `TERN_POLICY_SEED=<seed> cargo test --profile tests -p tern-net --test policy_sim -- replay --nocapture`.
//! (With `TERN_POLICY_EXACT=1` for a seed of the CPU-bound-only test.) A longer run: `TERN_POLICY_SEEDS=2000 cargo test --profile tests -p tern-net --test policy_sim -- many_seeds --nocapture`
//! (with `TERN_POLICY_EXACT=1`: CPU-bound work only, seeds from 200000).

use tern_net::proto::policy::PolicyFault;
use tern_net::sim::policy::{run_seed, PolicyOptions, PolicyReport};

fn run_range(from: u64, count: u64, opts: &PolicyOptions) -> Vec<PolicyReport> {
    let reports: Vec<PolicyReport> = (from..from + count).map(|s| run_seed(s, opts).unwrap_or_else(|f| panic!("{f}"))).collect();
    let moves: u64 = reports.iter().map(|r| r.moves).sum();
    let procs: u64 = reports.iter().map(|r| r.processes).sum();
    let most = reports.iter().map(|r| r.most_moves_of_one).max().unwrap_or(0);
    eprintln!("policy seeds {from}..{}: {procs} processes, {moves} moves, at most {most} moves of one process", from + count);
    reports
}

#[test]
fn random_arrivals_settle_without_oscillation() {
    let reports = run_range(0, 150, &PolicyOptions::default());
    assert!(reports.iter().map(|r| r.moves).sum::<u64>() > 150, "the policy moved processes");
    assert!(reports.iter().map(|r| r.failed_moves).sum::<u64>() > 0, "some moves failed");
    let settled: u64 = reports.iter().map(|r| r.moves_in_steady).sum();
    eprintln!("moves once settled (noisy run queues): {settled}");
}

#[test]
fn cpu_bound_work_settles_balanced_and_then_nothing_moves() {
    let opts = PolicyOptions { exact: true, ..PolicyOptions::default() };
    let reports = run_range(500, 150, &opts);
    assert!(reports.iter().map(|r| r.moves).sum::<u64>() > 150, "the policy moved processes");
    assert!(reports.iter().all(|r| r.moves_in_steady == 0));
}

#[test]
fn two_nodes_at_equal_load_make_no_move_in_a_minute() {
    let opts = PolicyOptions { equal_pair: true, ..PolicyOptions::default() };
    for r in run_range(1000, 100, &opts) {
        assert_eq!(r.moves, 0);
        assert!(r.decisions > 0, "the policy looked, and declined");
    }
}

/// A deliberately broken policy is caught within a few seeds.
fn caught(fault: PolicyFault, what: &[&str]) {
    for equal_pair in [true, false] {
        let opts = PolicyOptions { fault, equal_pair, ..PolicyOptions::default() };
        for seed in 0..100 {
            if let Err(f) = run_seed(seed, &opts) {
                assert!(what.iter().any(|w| f.message.contains(w)), "{fault:?} caught, but as: {f}");
                assert!(f
                    .to_string()
                    .contains(&format!("TERN_POLICY_SEED={seed} cargo test --profile tests -p tern-net --test policy_sim -- replay")));
                assert!(!f.trace.is_empty(), "a failure carries a trace");
                return;
            }
        }
    }
    panic!("{fault:?} was not caught");
}

#[test]
fn checker_catches_trading_at_equal_load() {
    caught(PolicyFault::AnyGain, &["traded a process", "undoes a recent one", "moved twice", "settled steady phase"]);
}

#[test]
fn checker_catches_a_move_before_the_residence_time() {
    caught(PolicyFault::NoResidence, &["after it arrived"]);
}

#[test]
fn replay() {
    let Ok(seed) = std::env::var("TERN_POLICY_SEED") else { return };
    let seed: u64 = seed.trim().parse().expect("TERN_POLICY_SEED is a u64");
    // A seed of the CPU-bound-only test (500..650) replays with TERN_POLICY_EXACT=1.
    let exact = std::env::var("TERN_POLICY_EXACT").is_ok();
    let opts = PolicyOptions { trace: true, trace_lines: 100_000, exact, ..PolicyOptions::default() };
    match run_seed(seed, &opts) {
        Ok(r) => eprintln!("seed {seed} passes: {r:?}"),
        Err(f) => panic!("{f}"),
    }
}

#[test]
fn many_seeds() {
    let Ok(n) = std::env::var("TERN_POLICY_SEEDS") else { return };
    let n: u64 = n.trim().parse().expect("TERN_POLICY_SEEDS is a u64");
    // With TERN_POLICY_EXACT=1: CPU-bound work only, which must end balanced and still.
    let exact = std::env::var("TERN_POLICY_EXACT").is_ok();
    run_range(if exact { 200_000 } else { 100_000 }, n, &PolicyOptions { exact, ..PolicyOptions::default() });
}
