//! What the simulators share: a seeded generator ([`Rng`], splitmix64), the failure a
//! checker reports ([`SimFailure`], with the command that replays its seed) and the
//! rerun that attaches a trace to a failure ([`run_traced_on_failure`]), and the bounded
//! trace itself ([`Trace`]).

use std::collections::VecDeque;
use std::fmt;

/// Which simulator a failure comes from: how to name it and replay it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimKind {
    /// The session protocol (`sim::session`).
    Session,
    /// The migration protocol (`sim::migrate`).
    Migration,
    /// The load policy (`sim::policy`).
    Policy,
}

impl SimKind {
    fn name(self) -> &'static str {
        match self {
            SimKind::Session => "sim",
            SimKind::Migration => "migrate sim",
            SimKind::Policy => "policy sim",
        }
    }
    /// The environment variable and test target that replay a seed.
    fn replay(self) -> (&'static str, &'static str) {
        match self {
            SimKind::Session => ("TERN_SIM_SEED", "sim"),
            SimKind::Migration => ("TERN_MIGRATE_SEED", "migrate_sim"),
            SimKind::Policy => ("TERN_POLICY_SEED", "policy_sim"),
        }
    }
}

/// A checker failed (or the run did not settle).
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub kind: SimKind,
    pub seed: u64,
    pub step: u64,
    pub now_us: u64,
    pub message: String,
    /// The last steps before the failure.
    pub trace: Vec<String>,
}

impl SimFailure {
    /// The command that replays this seed (with the default options).
    pub fn replay_command(&self) -> String {
        let (var, test) = self.kind.replay();
        format!("{var}={} cargo test --profile tests -p tern-net --test {test} -- replay --nocapture", self.seed)
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} seed {} failed at step {} (t = {} us): {}", self.kind.name(), self.seed, self.step, self.now_us, self.message)?;
        writeln!(f, "replay: {}", self.replay_command())?;
        if !self.trace.is_empty() {
            writeln!(f, "last {} trace lines:", self.trace.len())?;
            for l in &self.trace {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// Runs `run(traced)`; on a failure without the trace, runs it again with the trace, so
/// the failure carries the last steps (and says so if the rerun does not fail alike).
pub fn run_traced_on_failure<R>(traced: bool, run: impl Fn(bool) -> Result<R, SimFailure>) -> Result<R, SimFailure> {
    match run(traced) {
        Ok(r) => Ok(r),
        Err(f) if traced => Err(f),
        Err(f) => match run(true) {
            Err(t) if t.message == f.message && t.step == f.step => Err(t),
            Err(t) => Err(SimFailure {
                message: format!("{} (NOT DETERMINISTIC: the traced replay failed differently: {})", f.message, t.message),
                ..t
            }),
            Ok(_) => Err(SimFailure { message: format!("{} (NOT DETERMINISTIC: the traced replay passed)", f.message), ..f }),
        },
    }
}

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 if `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The last steps of a run (at most `cap` lines), for a failure to carry.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    lines: VecDeque<String>,
    cap: usize,
}

impl Trace {
    pub fn new(cap: usize) -> Trace {
        Trace { lines: VecDeque::new(), cap: cap.max(1) }
    }

    pub fn push(&mut self, line: String) {
        if self.lines.len() >= self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}
