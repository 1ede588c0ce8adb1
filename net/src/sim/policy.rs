//! The load policy under the deterministic simulator: many nodes, each with its own
//! [`Meter`] and [`Policy`] (the code the nodes run), fed by a fluid model of CPU time
//! instead of a VM: every process wants some fraction of a worker (it works, then waits
//! for something else), a node's workers are shared among its runnable processes, loads are gossiped with network delays, and the
//! policy's moves take time (the heap at the link's speed) and sometimes fail (the
//! process stays). Processes arrive at random (most of them on one node), run for a
//! while and end; then a steady phase with no arrival and no end.
//!
//! Checked after every step and at the end:
//! - a process moved by the policy had been on its node at least `residence_ms` since
//!   it moved there (`hysteresis_ms` since it was spawned, if it never moved), and is
//!   never pinned;
//! - no decision undoes a recent one: a process never goes back to a node it left
//!   within twice the residence time;
//! - in the steady phase, once settled (half of it over and the mesh seen balanced): with CPU-bound work only (exact run queues), not
//!   a single move; with work that wants part of a worker (noisy loads), each process
//!   moves at most once (a mesh still converging, slowly when heaps are large and moves
//!   few at a time, or a correction); and at the end the mesh is balanced (every node's
//!   CPU demand per worker within one process of every other's, or nothing there may
//!   move);
//! - two nodes at equal load never trade processes.

use super::harness::{run_traced_on_failure, Rng, SimFailure, SimKind, Trace};
use crate::proto::policy::{fluid_share, runnable_fraction, Meter, Mode, PeerLoad, Policy, PolicyConf, PolicyFault};
use crate::proto::wire::Load;
use std::collections::{BTreeMap, VecDeque};
use tern_vm::node::{NodeSample, ProcSample};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub trace: bool,
    pub trace_lines: usize,
    /// Simulated time with arrivals and ends, µs.
    pub churn_us: u64,
    /// Then simulated time with neither, µs (the first half to settle).
    pub steady_us: u64,
    /// Only two nodes at equal load, nothing arriving: no move may be made.
    pub equal_pair: bool,
    /// No churn and only CPU-bound processes (exact run queues): once settled, not a
    /// single move. (With churn, processes that want part of a worker make the run
    /// queues noisy: a settled mesh may still correct itself now and then, each process
    /// at most once.)
    pub exact: bool,
    #[doc(hidden)]
    pub fault: PolicyFault,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            trace: false,
            trace_lines: 200,
            churn_us: 30_000_000,
            steady_us: 60_000_000,
            equal_pair: false,
            exact: false,
            fault: PolicyFault::None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct PolicyReport {
    pub nodes: usize,
    pub processes: u64,
    pub moves: u64,
    pub failed_moves: u64,
    /// Moves the destination refused (no room left: another node's moves came first).
    pub refused_moves: u64,
    pub moves_in_steady: u64,
    pub most_moves_of_one: u32,
    pub decisions: u64,
}

const STEP_US: u64 = 10_000;

#[derive(Debug, Clone)]
struct Proc {
    pid: u64,
    /// Fraction of a worker it wants.
    want: f64,
    /// CPU time it still needs, µs (`u64::MAX`: runs for ever).
    left_us: u64,
    heap_bytes: u64,
    pinned: bool,
    /// Where it is (`None`: moving).
    at: Option<usize>,
    arrived_us: u64,
    cpu_us: u64,
    wait_us: u64,
    reductions: u64,
    moves: u32,
    /// Nodes it left and when.
    left: Vec<(usize, u64)>,
}

struct SimNode {
    workers: u32,
    busy_us: Vec<u64>,
    reductions: u64,
    runnable_now: u64,
    meter: Meter,
    policy: Policy,
    /// Its peers' last reports as they arrived, and when.
    heard: BTreeMap<usize, (Load, u64)>,
}

/// A load report on its way.
struct InFlight {
    at_us: u64,
    from: usize,
    to: usize,
    load: Load,
}

/// A move on its way.
struct Moving {
    done_us: u64,
    pid: u64,
    from: usize,
    to: usize,
    ok: bool,
}

/// Runs one seed.
pub fn run_seed(seed: u64, opts: &PolicyOptions) -> Result<PolicyReport, SimFailure> {
    run_traced_on_failure(opts.trace, |traced| Sim::new(seed, opts, traced).run())
}

struct Sim<'a> {
    seed: u64,
    opts: &'a PolicyOptions,
    rng: Rng,
    now: u64,
    step: u64,
    nodes: Vec<SimNode>,
    procs: BTreeMap<u64, Proc>,
    next_pid: u64,
    reports: VecDeque<InFlight>,
    moving: Vec<Moving>,
    trace: Option<Trace>,
    report: PolicyReport,
    conf: PolicyConf,
    /// Processes moved in the settled phase.
    settled_moved: std::collections::BTreeSet<u64>,
    /// When the settled phase began.
    settled_at: Option<u64>,
}

impl<'a> Sim<'a> {
    fn new(seed: u64, opts: &'a PolicyOptions, traced: bool) -> Sim<'a> {
        let mut rng = Rng::new(seed);
        let n = if opts.equal_pair { 2 } else { rng.range(2, 8) as usize };
        let conf = PolicyConf {
            mode: if rng.chance(500) { Mode::Balance } else { Mode::Both },
            hysteresis_ms: rng.range(200, 2000),
            residence_ms: rng.range(500, 4000),
            interval_ms: rng.range(100, 1000),
            gossip_ms: rng.range(50, 500),
            window_ms: rng.range(500, 2000),
            max_in_flight: rng.range(1, 4) as u32,
            ..PolicyConf::default()
        };
        let conf = PolicyConf { window_ms: conf.window_ms.max(conf.gossip_ms), ..conf };
        let nodes = (0..n)
            .map(|i| {
                let workers = if opts.equal_pair { 2 } else { rng.range(1, 4) as u32 };
                SimNode {
                    workers,
                    busy_us: vec![0; workers as usize],
                    reductions: 0,
                    runnable_now: 0,
                    meter: Meter::new(conf.window_ms),
                    policy: {
                        let mut p = Policy::new(i as u16, conf);
                        p.fault = opts.fault;
                        p
                    },
                    heard: BTreeMap::new(),
                }
            })
            .collect();
        Sim {
            seed,
            opts,
            rng,
            now: 0,
            step: 0,
            nodes,
            procs: BTreeMap::new(),
            next_pid: 1,
            reports: VecDeque::new(),
            moving: Vec::new(),
            trace: traced.then(|| Trace::new(opts.trace_lines)),
            report: PolicyReport { nodes: n, ..PolicyReport::default() },
            conf,
            settled_moved: Default::default(),
            settled_at: None,
        }
    }

    fn fail(&self, message: String) -> SimFailure {
        SimFailure {
            kind: SimKind::Policy,
            seed: self.seed,
            step: self.step,
            now_us: self.now,
            message: format!("{message} (conf {:?}, {} nodes)", self.conf, self.nodes.len()),
            trace: self.trace.as_ref().map(Trace::lines).unwrap_or_default(),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>10} {}", self.now, line()));
        }
    }

    fn spawn(&mut self, at: usize, want: f64, left_us: u64, pinned: bool) {
        let pid = self.next_pid;
        self.next_pid += 1;
        let heap_bytes = self.rng.range(1, 256) * 4096 * if self.rng.chance(100) { 64 } else { 1 };
        self.procs.insert(
            pid,
            Proc {
                pid,
                want,
                left_us,
                heap_bytes,
                pinned,
                at: Some(at),
                arrived_us: self.now,
                cpu_us: 0,
                wait_us: 0,
                reductions: 0,
                moves: 0,
                left: Vec::new(),
            },
        );
        self.report.processes += 1;
        self.note(|| format!("spawn {pid} on {at} want {want:.2}"));
    }

    fn run(mut self) -> Result<PolicyReport, SimFailure> {
        let end_churn = if self.opts.equal_pair || self.opts.exact { 0 } else { self.opts.churn_us };
        let end = end_churn + self.opts.steady_us;
        let settled = end_churn + self.opts.steady_us / 2;
        for i in 0..self.nodes.len() {
            let w = self.nodes[i].workers;
            self.note(|| format!("node {i}: {w} workers"));
        }
        if self.opts.equal_pair {
            // Equal load: the same CPU-bound processes on both nodes, for ever.
            let k = self.rng.range(1, 6);
            for at in 0..2 {
                for _ in 0..k {
                    self.spawn(at, 1.0, u64::MAX, false);
                }
            }
        } else {
            // Long-running work, most of it on node 0, some of it pinned.
            let n = if self.opts.exact { self.rng.range(2, 40) } else { self.rng.range(2, 12) };
            for _ in 0..n {
                let at = if self.rng.chance(700) { 0 } else { self.rng.below(self.nodes.len() as u64) as usize };
                let pinned = !self.opts.exact && self.rng.chance(100);
                self.spawn(at, 1.0, u64::MAX, pinned);
            }
        }
        while self.now < end {
            self.step += 1;
            self.now += STEP_US;
            if self.now < end_churn && self.rng.chance(30) {
                let at = if self.rng.chance(600) { 0 } else { self.rng.below(self.nodes.len() as u64) as usize };
                let want = [1.0, 1.0, 0.5, 0.2, 0.05][self.rng.below(5) as usize];
                let left = self.rng.range(200_000, 20_000_000);
                let pinned = self.rng.chance(50);
                self.spawn(at, want, left, pinned);
            }
            self.run_cpu(self.now < end_churn);
            self.finish_moves();
            self.deliver_reports();
            // Settled: the steady phase half over and the mesh seen balanced once (a
            // mesh with many processes piled on one node, moved a few at a time, may
            // still be converging then).
            if self.settled_at.is_none()
                && self.now >= settled
                && self.step.is_multiple_of(10)
                && (self.opts.equal_pair || self.imbalance().is_none())
            {
                self.settled_at = Some(self.now);
                self.note(|| "settled".to_string());
            }
            for i in 0..self.nodes.len() {
                self.tick_node(i, self.settled_at.is_some())?;
            }
        }
        if !self.opts.equal_pair {
            self.check_balanced()?;
        }
        self.report.most_moves_of_one = self.procs.values().map(|p| p.moves).max().unwrap_or(0);
        Ok(self.report)
    }

    /// One step of CPU: each node's workers shared among its runnable processes.
    fn run_cpu(&mut self, ends: bool) {
        let mut on: Vec<Vec<u64>> = vec![Vec::new(); self.nodes.len()];
        for p in self.procs.values() {
            if let Some(a) = p.at {
                on[a].push(p.pid);
            }
        }
        for (i, pids) in on.iter().enumerate() {
            let w = f64::from(self.nodes[i].workers);
            // The share of a worker a runnable process gets, `s`: each process
            // alternates work with waits for something else; its work takes longer
            // with a smaller share, and the runnable ones share the workers.
            let s = fluid_share(pids.iter().map(|p| self.procs[p].want), w);
            let mut used = 0.0;
            let mut runnable = 0;
            for pid in pids {
                let p = self.procs.get_mut(pid).expect("listed");
                let f = runnable_fraction(p.want, s);
                let got = f * s;
                if self.rng.below(1000) < (f * 1000.0) as u64 {
                    runnable += 1;
                }
                let us = (got * STEP_US as f64) as u64;
                p.cpu_us += us;
                p.wait_us += (f * (1.0 - s) * STEP_US as f64) as u64;
                p.reductions += us * 10;
                if p.left_us != u64::MAX {
                    p.left_us = p.left_us.saturating_sub(us);
                }
                used += got;
            }
            let n = &mut self.nodes[i];
            let per = (used / w * STEP_US as f64) as u64;
            for b in &mut n.busy_us {
                *b += per;
            }
            n.reductions += (used * STEP_US as f64) as u64 * 10;
            n.runnable_now = runnable;
        }
        if ends {
            let done: Vec<u64> = self.procs.values().filter(|p| p.left_us == 0 && p.at.is_some()).map(|p| p.pid).collect();
            for pid in done {
                self.procs.remove(&pid);
                self.note(|| format!("end {pid}"));
            }
        }
    }

    fn finish_moves(&mut self) {
        let now = self.now;
        let (done, rest): (Vec<Moving>, Vec<Moving>) = std::mem::take(&mut self.moving).into_iter().partition(|m| m.done_us <= now);
        self.moving = rest;
        for m in done {
            let Some(p) = self.procs.get_mut(&m.pid) else { continue };
            if m.ok {
                p.at = Some(m.to);
                p.arrived_us = now;
                p.moves += 1;
                p.left.push((m.from, now));
                p.cpu_us = 0;
                p.wait_us = 0;
            } else {
                p.at = Some(m.from);
                self.report.failed_moves += 1;
                // A move that failed left it where it was: trying again is no second move.
                self.settled_moved.remove(&m.pid);
            }
            self.nodes[m.from].policy.moved(now, m.pid, m.ok, 100_000);
            let ok = m.ok;
            self.note(|| format!("move {} {} -> {} {}", m.pid, m.from, m.to, if ok { "done" } else { "failed" }));
        }
    }

    fn deliver_reports(&mut self) {
        while self.reports.front().is_some_and(|r| r.at_us <= self.now) {
            let r = self.reports.pop_front().expect("checked");
            self.nodes[r.to].heard.insert(r.from, (r.load, r.at_us));
        }
    }

    fn tick_node(&mut self, i: usize, settled: bool) -> Result<(), SimFailure> {
        let conf = self.conf;
        // A sample every `gossip_ms`; between samples, a look only when one is due (one
        // of this node's moves ended: see `Policy::moved`), on the last sample.
        let sample = (self.now / STEP_US).is_multiple_of((conf.gossip_ms * 1000 / STEP_US).max(1));
        if !sample {
            if self.now < self.nodes[i].policy.next_look_us() {
                return Ok(());
            }
            return self.look(i, settled, self.own_load(i), false);
        }
        // The VM's counters, as the node would sample them.
        let procs: Vec<ProcSample> = self.procs.keys().filter_map(|&pid| self.sample_proc(i, pid)).collect();
        let n = &mut self.nodes[i];
        let sample = NodeSample {
            at_us: self.now,
            busy_us: n.busy_us.clone(),
            runnable: n.runnable_now,
            processes: procs.len() as u64,
            reductions: n.reductions,
        };
        n.meter.observe(sample, procs);
        let own = self.own_load(i);
        // Told to every peer, a few ms later.
        for to in 0..self.nodes.len() {
            if to != i {
                let delay = self.rng.range(1_000, 20_000);
                let at_us = self.now + delay;
                let pos = self.reports.iter().position(|r| r.at_us > at_us).unwrap_or(self.reports.len());
                self.reports.insert(pos, InFlight { at_us, from: i, to, load: own });
            }
        }
        if self.now < self.nodes[i].policy.next_look_us() {
            return Ok(());
        }
        self.look(i, settled, own, true)
    }

    /// Node `i`'s load as its meter says, with the moves it is in.
    fn own_load(&self, i: usize) -> Load {
        let mut own = self.nodes[i].meter.node_load();
        own.migrations = self.moving.iter().filter(|m| m.from == i || m.to == i).count() as u64;
        own
    }

    /// Process `pid`'s counters as node `i` would sample them now (`None`: not there:
    /// neither on it nor leaving it).
    fn sample_proc(&self, i: usize, pid: u64) -> Option<ProcSample> {
        let p = self.procs.get(&pid)?;
        if p.at != Some(i) && !self.moving.iter().any(|m| m.pid == pid && m.from == i) {
            return None;
        }
        Some(ProcSample {
            pid,
            status: if p.at.is_none() { "frozen" } else { "running" },
            reductions: p.reductions,
            cpu_us: p.cpu_us,
            wait_us: p.wait_us,
            heap_pages: p.heap_bytes / 4096,
            page_bytes: 4096,
            resident_us: self.now - p.arrived_us,
            moves: p.moves,
            came_from: p.left.last().map(|l| l.0 as u16),
            pinned: p.pinned,
            ..ProcSample::default()
        })
    }

    /// Node `i` looks, with `own` its load, and its moves start. `sampled`: its
    /// processes' loads were sampled just now (else they are the last sample's, of
    /// those still there, as the node filters them).
    fn look(&mut self, i: usize, settled: bool, own: Load, sampled: bool) -> Result<(), SimFailure> {
        let conf = self.conf;
        let n = &self.nodes[i];
        let peers: Vec<PeerLoad> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| match n.heard.get(&j) {
                Some(&(load, at)) => PeerLoad { id: j as u16, up: true, load, age_us: Some(self.now - at) },
                None => PeerLoad { id: j as u16, up: true, load: Load::default(), age_us: None },
            })
            .collect();
        let mut procs = n.meter.procs();
        if !sampled {
            // As the node does: the last sample's, of those still there, as they are now.
            procs.retain_mut(|p| self.sample_proc(i, p.pid).map(|s| p.refresh(&s)).is_some());
        }
        let now = self.now;
        let util_now = self.nodes[i].meter.recent_utilization();
        let moves = self.nodes[i].policy.decide(now, &own, util_now, &peers, &procs);
        for d in self.nodes[i].policy.take_new() {
            self.report.decisions += 1;
            if d.moved.is_none() {
                self.note(|| format!("node {i} declines: {} (loads {:?})", d.why, d.loads));
            }
        }
        for mv in moves {
            let to = usize::from(mv.to);
            let Some(p) = self.procs.get(&mv.pid) else { return Err(self.fail(format!("node {i} moved {} which does not exist", mv.pid))) };
            if p.at != Some(i) {
                return Err(self.fail(format!("node {i} moved {} which is not there ({:?})", mv.pid, p.at)));
            }
            if p.pinned {
                return Err(self.fail(format!("node {i} moved pinned process {}", mv.pid)));
            }
            let stay = if p.left.is_empty() { conf.hysteresis_ms } else { conf.residence_ms };
            if now - p.arrived_us < stay * 1000 {
                return Err(self.fail(format!(
                    "node {i} moved {} {} ms after it arrived (it must stay {stay} ms: residence {} ms, hysteresis {} ms)",
                    mv.pid,
                    (now - p.arrived_us) / 1000,
                    conf.residence_ms,
                    conf.hysteresis_ms
                )));
            }
            if let Some(&(_, when)) = p.left.iter().rev().find(|(n, _)| *n == to) {
                if now - when < 2 * conf.residence_ms * 1000 {
                    return Err(self.fail(format!(
                        "node {i} sent {} back to node {to}, which it left {} ms ago: a decision that undoes a recent one ({})",
                        mv.pid,
                        (now - when) / 1000,
                        mv.why
                    )));
                }
            }
            if self.opts.equal_pair {
                return Err(self.fail(format!("two nodes at equal load traded a process: {} from {i} to {to} ({})", mv.pid, mv.why)));
            }
            if settled {
                self.report.moves_in_steady += 1;
                if self.opts.exact {
                    return Err(self.fail(format!("a move in the settled steady phase: {} from {i} to {to} ({})", mv.pid, mv.why)));
                }
                if !self.settled_moved.insert(mv.pid) {
                    return Err(self.fail(format!("{} moved twice in the settled steady phase (now from {i} to {to}: {})", mv.pid, mv.why)));
                }
            }
            let bytes = p.heap_bytes;
            // The destination's admission, on its own view of its load.
            let dst_load = self.nodes[to].meter.node_load();
            if let Err(why) = self.nodes[to].policy.admit(now, mv.pid, i as u16, &dst_load, mv.admit) {
                self.nodes[i].policy.moved(now, mv.pid, false, 0);
                self.report.refused_moves += 1;
                self.note(|| format!("node {to} refuses {}: {why}", mv.pid));
                continue;
            }
            let ok = !self.rng.chance(20);
            let took = 2_000 + bytes / 100;
            self.moving.push(Moving { done_us: now + took, pid: mv.pid, from: i, to, ok });
            if let Some(p) = self.procs.get_mut(&mv.pid) {
                p.at = None;
            }
            self.report.moves += 1;
            let pid = mv.pid;
            self.note(|| format!("node {i} moves {pid} to {to}: {}", mv.why));
        }
        Ok(())
    }

    /// At the end: every node's CPU demand per worker (as its meter measures it) within
    /// one process of every other's, or no process there that may move.
    fn check_balanced(&self) -> Result<(), SimFailure> {
        match self.imbalance() {
            Some(why) => Err(self.fail(format!("not balanced at the end: {why}"))),
            None => Ok(()),
        }
    }

    /// Why the mesh is not balanced: some process that may move gets clearly less of a
    /// worker where it is than it would get on another node (a quarter more, and two
    /// hundredths of a worker), by the fluid model's own shares. `None`: balanced.
    fn imbalance(&self) -> Option<String> {
        let mut wants: Vec<Vec<f64>> = vec![Vec::new(); self.nodes.len()];
        for p in self.procs.values() {
            if let Some(a) = p.at {
                wants[a].push(p.want);
            }
        }
        let workers = |i: usize| f64::from(self.nodes[i].workers);
        let shares: Vec<f64> = (0..self.nodes.len()).map(|i| fluid_share(wants[i].iter().copied(), workers(i))).collect();
        for (a, &sa) in shares.iter().enumerate() {
            // The one that gains the most: the movable process wanting the most, if it
            // gets less than it wants.
            let Some(p) = self
                .procs
                .values()
                // (Clearly above `min_cpu`: one at the line may measure below it.)
                .filter(|p| p.at == Some(a) && !p.pinned && p.want >= self.conf.min_cpu * 1.25 && p.want > sa)
                .max_by(|x, y| x.want.total_cmp(&y.want))
            else {
                continue;
            };
            for b in (0..self.nodes.len()).filter(|&b| b != a) {
                // It gets less than it wants here: what it wants is not to be measured,
                // so it is counted as wanting a whole worker there.
                let sb = fluid_share(wants[b].iter().copied().chain([1.0]), workers(b));
                let (here, there) = (sa, p.want.min(sb));
                if there > here * 1.25 + 0.02 {
                    return Some(format!(
                        "{} gets {here:.2} of a worker on node {a} and would get {there:.2} on node {b} (shares {shares:.2?})",
                        p.pid
                    ));
                }
            }
        }
        None
    }
}
