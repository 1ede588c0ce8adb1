//! A deterministic, seeded simulator of the session protocol ([`crate::proto::session`]).
//!
//! N nodes (3 to 5) each hold one [`Session`] per peer. The network loses, duplicates,
//! reorders and delays packets at rates drawn from the seed; partitions cut sets of links
//! for a while and heal; transports disconnect and reconnect; nodes crash (losing all
//! state) and restart with a larger epoch. Half the crashes are *leaves* (a graceful
//! stop): the node's peers are told, each over its transport (a connection's close
//! names the incarnation that leaves, as the host's does), unless the network loses it. A workload makes every node send numbered
//! payloads `(src node, src epoch, counter)` to random peers. Everything comes from one
//! splitmix64 generator; there is no wall clock, no thread and no hash-order dependence,
//! so a seed replays exactly.
//!
//! After every step the checkers look at every event the sessions produced:
//!
//! * **Order** — per (sender incarnation, receiver incarnation), the delivered counters are
//!   exactly the counters the sender addressed to that receiver incarnation, in order:
//!   no duplicate, no reordering, no gap. (A payload is addressed to the peer incarnation
//!   the sending session knew at `send`, or to the first it learned; payloads addressed
//!   to an incarnation that crashed may be lost, nothing else may.)
//! * **Incarnations** — a payload is never delivered to another receiver incarnation than
//!   the one it was addressed to, nor from a sender incarnation older than one already
//!   heard (nor than the session's current peer).
//! * **Failure detection** — `Up` and `Down` alternate per (incarnation, peer), starting
//!   with `Up`; `PeerRestarted` names a real, newer incarnation.
//! * **Timers** — after `handle_timeout`, the next timeout is in the future.
//! * **Leaves** — a session told that the incarnation it talks to left does not see it
//!   up (at once).
//!
//! Every node watches its next `k` (1 or 2) peers up in the ring ([`watch_set`]), as the
//! QUIC host does, and a node's `Suspect` is passed to every other node it has a
//! transport to (after a network delay), which puts the suspect on probation, as the
//! host's gossip does.
//!
//! Once settled, a **detection phase** (`SimOptions::detection`) runs on a calm network
//! (no loss, no partitions, no reordering beyond jitter, duplicates kept, no workload):
//! a node made slow (its packets delayed by up to a quarter window less the network's
//! delays), a node paused (`SIGSTOP`: no timers, packets held until it resumes) for two to
//! five windows, then a node crashed for good (or left: then every live node must see it
//! down within one network delay). Its checkers:
//!
//! * **No false down** — a node that is neither crashed nor paused (nor was, within a
//!   window plus two network delays) is never reported `Down` (so neither the slow node,
//!   nor, by the node that was paused, a peer it could not hear while it was stopped).
//! * **Detection bound** — every live node reports the crashed node `Down` within
//!   `down_after_us` plus two network delays of the crash.
//!
//! Then the crashed node restarts and the run must settle again.
//!
//! At the end every partition heals, every crashed node restarts, faults stop, and the
//! simulation runs until quiet: then every payload between live incarnations must have
//! been delivered, every queue must be empty and every session up with the current peer.

use super::harness::{run_traced_on_failure, Rng, SimFailure, SimKind, Trace};
use crate::proto::session::{decode_packet, encode_packet, watch_set, Event, Fault, NodeId, SendError, Session, SessionConfig};
use std::collections::{BTreeMap, BTreeSet};

/// How a run is set up. The seed draws everything else.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of nodes; `None`: 3 to 5, from the seed.
    pub nodes: Option<usize>,
    /// Simulated duration of the phase with workload and faults.
    pub active_us: u64,
    /// Longest simulated time allowed to settle once faults stop.
    pub settle_us: u64,
    pub crashes: bool,
    pub partitions: bool,
    /// A deliberately broken session, to show that the checkers catch it.
    pub fault: Fault,
    /// Run the detection phase (slow, paused and crashed nodes) once settled.
    pub detection: bool,
    /// Record a step trace (a failing run is replayed with it on, automatically).
    pub trace: bool,
    /// How many trace lines are kept (the last ones).
    pub trace_lines: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: None,
            active_us: 1_000_000,
            settle_us: 10_000_000,
            crashes: true,
            partitions: true,
            fault: Fault::None,
            detection: true,
            trace: false,
            trace_lines: 400,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub steps: u64,
    pub sim_time_us: u64,
    pub payloads_sent: u64,
    pub payloads_delivered: u64,
    /// `send` answered `Full`.
    pub payloads_refused: u64,
    /// Payloads addressed to an incarnation that crashed and never delivered.
    pub payloads_lost_to_crashes: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub disconnects: u64,
    pub packets_sent: u64,
    pub packets_lost: u64,
    pub packets_duplicated: u64,
    pub retransmitted: u64,
    pub peer_restarts: u64,
    /// `Down` events seen.
    pub downs: u64,
    /// Crashes that were leaves, and leaves heard by a peer.
    pub leaves: u64,
    pub leaves_heard: u64,
    /// `Suspect` events seen (each gossiped to the other nodes).
    pub suspicions: u64,
    /// Probes sent (watched, suspected, idle and down peers).
    pub probes: u64,
    /// Detection phases run to the end.
    pub detections: u64,
}

/// Runs one seed. On failure the seed is run again with the trace on, and the failure
/// carries the last trace lines.
pub fn run_seed(seed: u64, opts: &SimOptions) -> Result<SimReport, SimFailure> {
    run_traced_on_failure(opts.trace, |trace| Sim::new(seed, SimOptions { trace, ..opts.clone() }).run())
}

const HEADER: usize = 2 + 8 + 8;

fn encode_payload(src: NodeId, epoch: u64, counter: u64, pad: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + pad);
    v.extend_from_slice(&src.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&counter.to_le_bytes());
    v.extend((0..pad).map(|i| (counter as usize + i) as u8));
    v
}

fn decode_payload(p: &[u8]) -> Option<(NodeId, u64, u64)> {
    if p.len() < HEADER {
        return None;
    }
    let src = NodeId::from_le_bytes(p[0..2].try_into().ok()?);
    let epoch = u64::from_le_bytes(p[2..10].try_into().ok()?);
    let counter = u64::from_le_bytes(p[10..18].try_into().ok()?);
    Some((src, epoch, counter))
}

#[derive(Debug)]
enum Ev {
    Packet {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
    },
    Send {
        node: NodeId,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    Cut {
        a: NodeId,
        b: NodeId,
        until: u64,
    },
    Heal {
        a: NodeId,
        b: NodeId,
    },
    Disconnect {
        a: NodeId,
        b: NodeId,
    },
    Connect {
        a: NodeId,
        b: NodeId,
    },
    EndPhase,
    Check,
    /// Node `from`'s leave (incarnation `epoch`, as its session with `to` knew itself)
    /// reaches node `to`.
    Left {
        to: NodeId,
        from: NodeId,
        epoch: u64,
    },
    /// A node's suspicion of `about` reaches node `to`.
    Suspicion {
        to: NodeId,
        about: NodeId,
    },
    /// The detection phase's steps.
    Detect(Trial),
}

#[derive(Debug, Clone, Copy)]
enum Trial {
    Slow {
        node: NodeId,
        extra_us: u64,
    },
    SlowEnd,
    Pause {
        node: NodeId,
        for_us: u64,
    },
    Resume {
        node: NodeId,
    },
    Crash {
        node: NodeId,
        leaving: bool,
    },
    /// Every live node must see the crashed node down by now.
    CrashSeen {
        node: NodeId,
        at: u64,
        leaving: bool,
    },
    End {
        node: NodeId,
    },
}

struct Node {
    alive: bool,
    epoch: u64,
    /// Indexed by peer id; `None` for itself.
    sessions: Vec<Option<Session>>,
    /// Every epoch this node has had.
    epochs: BTreeSet<u64>,
}

struct Net {
    loss: u64,
    dup: u64,
    reorder: u64,
    base_delay: u64,
    jitter: u64,
}

/// Key of a sender incarnation towards a destination node.
type PairKey = (NodeId, u64, NodeId);

struct Sim {
    seed: u64,
    opts: SimOptions,
    rng: Rng,
    now: u64,
    step: u64,
    n: usize,
    cfg: SessionConfig,
    max_frame: usize,
    max_pad: u64,
    send_gap_us: u64,
    net: Net,
    /// Every node watches this many ring successors.
    watchers: usize,
    nodes: Vec<Node>,
    /// Per node: paused (`SIGSTOP`) until this time (0: running), and when it last was.
    paused_until: Vec<u64>,
    paused_last: Vec<u64>,
    /// Per node: extra delay on its packets (a slow node), up to this.
    slow_us: Vec<u64>,
    /// The detection phase: since when the network is calm (`None`: not started).
    calm_since: Option<u64>,
    detected: bool,
    /// Symmetric: a partition cuts (a, b), until the time stored (0: not cut).
    cut_until: Vec<Vec<u64>>,
    transport: Vec<Vec<bool>>,
    queue: BTreeMap<(u64, u64), Ev>,
    next_ev: u64,
    ending: bool,
    end_started: u64,
    done: bool,

    // Checker state.
    /// Per sender incarnation and destination node: the incarnation each counter was
    /// addressed to (`None`: not known yet).
    sends: BTreeMap<PairKey, Vec<Option<u64>>>,
    unbound: BTreeSet<PairKey>,
    /// Per (sender incarnation, destination, destination epoch): next counter expected.
    next_counter: BTreeMap<(NodeId, u64, NodeId, u64), u64>,
    /// Per (receiver incarnation, sender node): newest sender epoch delivered from.
    newest_src: BTreeMap<(NodeId, u64, NodeId), u64>,
    /// Per (incarnation, peer): whether the last of Up/Down was Up.
    updown: BTreeMap<(NodeId, u64, NodeId), bool>,
    dirty: Vec<(NodeId, NodeId)>,
    trace: Trace,
    report: SimReport,
}

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.opts.trace {
            let line = format!("[{} t={}] {}", $sim.step, $sim.now, format!($($arg)*));
            $sim.push_trace(line);
        }
    };
}

const MAX_STEPS: u64 = 5_000_000;

impl Sim {
    fn new(seed: u64, opts: SimOptions) -> Self {
        let mut rng = Rng::new(seed);
        let n = opts.nodes.unwrap_or_else(|| rng.range(3, 5) as usize).clamp(2, 64);
        let cfg = SessionConfig {
            heartbeat_us: rng.range(10_000, 30_000),
            down_after_us: rng.range(60_000, 150_000),
            idle_probe_us: rng.range(150_000, 600_000),
            retransmit_us: rng.range(15_000, 60_000),
            ack_delay_us: rng.range(500, 5_000),
            max_unacked_bytes: rng.range(600, 8_000) as usize,
            max_in_flight: rng.range(1, 32) as usize,
            max_payload_bytes: 256,
            fault: opts.fault,
        };
        let base_delay = rng.range(50, 4_000);
        let net = Net { loss: rng.below(250), dup: rng.below(150), reorder: rng.below(200), base_delay, jitter: rng.range(0, base_delay) };
        let watchers = rng.range(1, 2) as usize;
        let max_pad = rng.range(0, 64);
        let send_gap_us = rng.range(1_000, 10_000);
        let nodes = (0..n)
            .map(|i| {
                let epoch = 1 + rng.below(5);
                Node { alive: true, epoch, sessions: new_sessions(i, n, epoch, &cfg, 0), epochs: BTreeSet::from([epoch]) }
            })
            .collect();
        Sim {
            seed,
            rng,
            now: 0,
            step: 0,
            n,
            max_frame: 64 + cfg.max_payload_bytes,
            cfg,
            max_pad,
            send_gap_us,
            net,
            watchers,
            nodes,
            paused_until: vec![0; n],
            paused_last: vec![0; n],
            slow_us: vec![0; n],
            calm_since: None,
            detected: false,
            cut_until: vec![vec![0; n]; n],
            transport: vec![vec![false; n]; n],
            queue: BTreeMap::new(),
            next_ev: 0,
            ending: false,
            end_started: 0,
            done: false,
            sends: BTreeMap::new(),
            unbound: BTreeSet::new(),
            next_counter: BTreeMap::new(),
            newest_src: BTreeMap::new(),
            updown: BTreeMap::new(),
            dirty: Vec::new(),
            trace: Trace::new(opts.trace_lines),
            report: SimReport { seed, nodes: n, ..SimReport::default() },
            opts,
        }
    }

    fn push_trace(&mut self, line: String) {
        self.trace.push(line);
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.next_ev += 1;
        self.queue.insert((at, self.next_ev), ev);
    }

    fn fail(&self, message: String) -> SimFailure {
        SimFailure { kind: SimKind::Session, seed: self.seed, step: self.step, now_us: self.now, message, trace: self.trace.lines() }
    }

    fn session(&mut self, node: NodeId, peer: NodeId) -> Option<&mut Session> {
        let nd = &mut self.nodes[node as usize];
        if !nd.alive {
            return None;
        }
        nd.sessions[peer as usize].as_mut()
    }

    fn setup(&mut self) {
        let n = self.n as NodeId;
        let active = self.opts.active_us;
        trace!(
            self,
            "seed {} nodes {} cfg {:?} loss {}‰ dup {}‰ reorder {}‰ delay {}+{}us",
            self.seed,
            self.n,
            self.cfg,
            self.net.loss,
            self.net.dup,
            self.net.reorder,
            self.net.base_delay,
            self.net.jitter
        );
        for a in 0..n {
            for b in a + 1..n {
                let at = self.rng.range(0, 5_000);
                self.schedule(at, Ev::Connect { a, b });
            }
            let at = self.rng.range(0, self.send_gap_us);
            self.schedule(at, Ev::Send { node: a });
        }
        if self.opts.crashes {
            for _ in 0..self.rng.below(7) {
                let node = self.rng.below(n as u64) as NodeId;
                let at = self.rng.range(0, active);
                self.schedule(at, Ev::Crash { node });
            }
        }
        if self.opts.partitions {
            for _ in 0..self.rng.below(6) {
                let at = self.rng.range(0, active);
                let until = at + self.rng.range(5_000, 400_000);
                // A random side against the rest.
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(500)).collect();
                for a in 0..n {
                    for b in a + 1..n {
                        if side[a as usize] != side[b as usize] {
                            self.schedule(at, Ev::Cut { a, b, until });
                        }
                    }
                }
            }
        }
        for _ in 0..self.rng.below(9) {
            let a = self.rng.below(n as u64) as NodeId;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as NodeId) % n;
            let at = self.rng.range(0, active);
            self.schedule(at, Ev::Disconnect { a, b });
        }
        self.schedule(active, Ev::EndPhase);
    }

    fn run(mut self) -> Result<SimReport, SimFailure> {
        self.setup();
        while !self.done {
            self.step += 1;
            if self.step > MAX_STEPS {
                return Err(self.fail(format!("no end after {MAX_STEPS} steps")));
            }
            // The earliest of: the next scheduled event, the next session timer.
            let mut timer: Option<(u64, NodeId, NodeId)> = None;
            for (i, nd) in self.nodes.iter().enumerate() {
                if !nd.alive || self.paused_until[i] > 0 {
                    continue;
                }
                for (p, s) in nd.sessions.iter().enumerate() {
                    if let Some(t) = s.as_ref().and_then(|s| s.poll_timeout()) {
                        if timer.is_none_or(|(bt, _, _)| t < bt) {
                            timer = Some((t, i as NodeId, p as NodeId));
                        }
                    }
                }
            }
            let next_ev = self.queue.first_key_value().map(|(k, _)| k.0);
            let timer = timer.filter(|&(t, _, _)| next_ev.is_none_or(|e| t < e));
            if let Some((t, node, peer)) = timer {
                self.now = self.now.max(t);
                trace!(self, "timeout {node}->{peer}");
                let now = self.now;
                if let Some(s) = self.session(node, peer) {
                    s.handle_timeout(now);
                }
                self.dirty.push((node, peer));
                self.flush()?;
                if let Some(next) = self.session(node, peer).and_then(|s| s.poll_timeout()) {
                    if next <= now {
                        return Err(self.fail(format!("session {node}->{peer}: after handle_timeout({now}) the next timeout is {next}")));
                    }
                }
            } else if let Some(((t, _), ev)) = self.queue.pop_first() {
                self.now = self.now.max(t);
                self.event(ev)?;
                self.flush()?;
            } else {
                return Err(self.fail("nothing left to do and not settled".into()));
            }
        }
        self.report.steps = self.step;
        self.report.payloads_lost_to_crashes = self.report.payloads_sent - self.report.payloads_delivered;
        self.report.sim_time_us = self.now;
        for nd in &self.nodes {
            for s in nd.sessions.iter().flatten() {
                self.report.retransmitted += s.stats().retransmitted;
                self.report.probes += s.stats().probes_sent;
            }
        }
        Ok(self.report)
    }

    fn event(&mut self, ev: Ev) -> Result<(), SimFailure> {
        let now = self.now;
        match ev {
            Ev::Packet { from, to, bytes } => {
                if !self.nodes[to as usize].alive {
                    trace!(self, "packet {from}->{to} lost: {to} is down");
                    self.report.packets_lost += 1;
                    return Ok(());
                }
                if self.cut_until[from as usize][to as usize] > 0 {
                    trace!(self, "packet {from}->{to} lost: link cut");
                    self.report.packets_lost += 1;
                    return Ok(());
                }
                if self.paused_until[to as usize] > 0 {
                    // Held by the stopped node's socket until it runs again.
                    let at = self.paused_until[to as usize];
                    self.schedule(at, Ev::Packet { from, to, bytes });
                    return Ok(());
                }
                let pkt = decode_packet(&bytes, self.max_frame).map_err(|e| self.fail(format!("own packet does not decode: {e}")))?;
                trace!(self, "recv {from}->{to} {}", short(&pkt));
                if let Some(s) = self.session(to, from) {
                    s.handle(now, pkt);
                }
                self.dirty.push((to, from));
            }
            Ev::Send { node } => {
                if self.ending {
                    return Ok(());
                }
                let gap = self.rng.range(1, 2 * self.send_gap_us);
                self.schedule(now + gap, Ev::Send { node });
                if !self.nodes[node as usize].alive {
                    return Ok(());
                }
                let n = self.n as NodeId;
                let peer = (node + 1 + self.rng.below(n as u64 - 1) as NodeId) % n;
                let epoch = self.nodes[node as usize].epoch;
                let key = (node, epoch, peer);
                let counter = self.sends.get(&key).map_or(0, |v| v.len()) as u64;
                let pad = self.rng.range(0, self.max_pad) as usize;
                let payload = encode_payload(node, epoch, counter, pad);
                let Some(s) = self.session(node, peer) else { return Ok(()) };
                let bound = s.peer_epoch();
                match s.send(payload) {
                    Ok(()) => {
                        trace!(self, "send {node}@{epoch}->{peer} #{counter} addressed to {bound:?}");
                        self.report.payloads_sent += 1;
                        self.sends.entry(key).or_default().push(bound);
                        if bound.is_none() {
                            self.unbound.insert(key);
                        }
                        self.dirty.push((node, peer));
                    }
                    Err(SendError::Full { queued_bytes }) => {
                        trace!(self, "send {node}->{peer} refused: full ({queued_bytes} bytes)");
                        self.report.payloads_refused += 1;
                    }
                    Err(SendError::TooLarge) => return Err(self.fail(format!("send of #{counter} ({pad} pad) refused as too large"))),
                }
            }
            Ev::Crash { node } => {
                if self.ending || !self.nodes[node as usize].alive {
                    return Ok(());
                }
                let leaving = self.rng.chance(500);
                self.crash(node, leaving);
                let down_for = if self.rng.chance(500) { self.rng.range(0, 20_000) } else { self.rng.range(20_000, 400_000) };
                self.schedule(now + down_for, Ev::Restart { node });
            }
            Ev::Restart { node } => self.restart(node),
            Ev::Left { to, from, epoch } => {
                if !self.nodes[to as usize].alive {
                    return Ok(());
                }
                if self.paused_until[to as usize] > 0 {
                    let at = self.paused_until[to as usize];
                    self.schedule(at, Ev::Left { to, from, epoch });
                    return Ok(());
                }
                trace!(self, "leave of {from}@{epoch} reaches {to}");
                self.report.leaves_heard += 1;
                let Some(s) = self.session(to, from) else { return Ok(()) };
                s.peer_left(now, epoch);
                if s.peer_epoch() == Some(epoch) && s.is_up() {
                    let e = self.nodes[to as usize].epoch;
                    return Err(self.fail(format!("{to}@{e} was told {from}@{epoch} left and still sees it up")));
                }
                self.dirty.push((to, from));
            }
            Ev::Suspicion { to, about } => {
                if !self.nodes[to as usize].alive {
                    return Ok(());
                }
                if self.paused_until[to as usize] > 0 {
                    let at = self.paused_until[to as usize];
                    self.schedule(at, Ev::Suspicion { to, about });
                    return Ok(());
                }
                trace!(self, "suspicion of {about} reaches {to}");
                if let Some(s) = self.session(to, about) {
                    s.suspect(now);
                }
                self.dirty.push((to, about));
            }
            Ev::Detect(trial) => self.trial(trial)?,
            Ev::Cut { a, b, until } => {
                if self.ending {
                    return Ok(());
                }
                trace!(self, "cut {a}-{b} until {until}");
                self.report.partitions += 1;
                let u = &mut self.cut_until[a as usize][b as usize];
                *u = (*u).max(until);
                self.cut_until[b as usize][a as usize] = self.cut_until[a as usize][b as usize];
                if self.rng.chance(500) {
                    let at = now + self.rng.range(0, 100_000);
                    self.schedule(at, Ev::Disconnect { a, b });
                }
                self.schedule(until, Ev::Heal { a, b });
            }
            Ev::Heal { a, b } => {
                if self.cut_until[a as usize][b as usize] > now {
                    return Ok(()); // a later partition still holds it
                }
                if self.cut_until[a as usize][b as usize] != 0 {
                    trace!(self, "heal {a}-{b}");
                }
                self.cut_until[a as usize][b as usize] = 0;
                self.cut_until[b as usize][a as usize] = 0;
                let at = now + self.rng.range(0, 20_000);
                self.schedule(at, Ev::Connect { a, b });
            }
            Ev::Disconnect { a, b } => {
                if self.ending || !self.transport[a as usize][b as usize] {
                    return Ok(());
                }
                trace!(self, "disconnect {a}-{b}");
                self.report.disconnects += 1;
                self.set_transport(a, b, false);
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(s) = self.session(x, y) {
                        s.disconnected(now);
                    }
                }
                let at = now + self.rng.range(0, 50_000);
                self.schedule(at, Ev::Connect { a, b });
            }
            Ev::Connect { a, b } => {
                let possible = self.nodes[a as usize].alive && self.nodes[b as usize].alive && self.cut_until[a as usize][b as usize] == 0;
                if !possible || self.transport[a as usize][b as usize] {
                    return Ok(()); // a heal or a restart connects again
                }
                trace!(self, "connect {a}-{b}");
                self.set_transport(a, b, true);
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(s) = self.session(x, y) {
                        s.connected(now);
                    }
                    self.dirty.push((x, y));
                }
            }
            Ev::EndPhase => {
                trace!(self, "END PHASE: heal, restart, stop faults");
                self.ending = true;
                self.end_started = now;
                let n = self.n as NodeId;
                for a in 0..n {
                    if !self.nodes[a as usize].alive {
                        self.restart(a);
                    }
                }
                for a in 0..n {
                    for b in a + 1..n {
                        self.cut_until[a as usize][b as usize] = 0;
                        self.cut_until[b as usize][a as usize] = 0;
                        self.schedule(now + 1, Ev::Connect { a, b });
                    }
                }
                self.schedule(now + 10_000, Ev::Check);
            }
            Ev::Check => match self.liveness() {
                Ok(()) if self.opts.detection && !self.detected && self.calm_since.is_none() => {
                    trace!(self, "settled: DETECTION PHASE");
                    self.calm_since = Some(now);
                    self.net.loss = 0;
                    self.net.reorder = 0;
                    let node = self.rng.below(self.n as u64) as NodeId;
                    let (d, hb) = (self.cfg.down_after_us, self.cfg.heartbeat_us);
                    let room = (d / 4).saturating_sub(2 * self.max_delay()).min(d / 2 - hb.min(d / 2));
                    let extra_us = self.rng.range(0, room);
                    self.schedule(now + 2 * d, Ev::Detect(Trial::Slow { node, extra_us }));
                }
                Ok(()) => {
                    trace!(self, "settled");
                    self.done = true;
                }
                Err(e) if now >= self.end_started + self.opts.settle_us => {
                    return Err(self.fail(format!("not settled {} us after faults stopped: {e}", self.opts.settle_us)))
                }
                Err(_) => self.schedule(now + 10_000, Ev::Check),
            },
        }
        Ok(())
    }

    /// The node loses all its state (and its transports). One `leaving` first tells each
    /// peer it has a transport to, as its connection closes (the close is lost as a
    /// packet would be).
    fn crash(&mut self, node: NodeId, leaving: bool) {
        let now = self.now;
        let epoch = self.nodes[node as usize].epoch;
        trace!(self, "{} {node}@{epoch}", if leaving { "LEAVE" } else { "CRASH" });
        self.report.crashes += 1;
        if leaving {
            self.report.leaves += 1;
            for p in 0..self.n as NodeId {
                let Some(own) = self.nodes[node as usize].sessions.get(p as usize).and_then(|s| s.as_ref()).map(|s| s.epoch()) else {
                    continue;
                };
                let reachable = self.transport[node as usize][p as usize] && self.cut_until[node as usize][p as usize] == 0;
                if reachable && !self.rng.chance(self.net.loss) {
                    let at = now + self.net.base_delay + self.rng.range(0, self.net.jitter);
                    self.schedule(at, Ev::Left { to: p, from: node, epoch: own });
                }
            }
        }
        let nd = &mut self.nodes[node as usize];
        nd.alive = false;
        nd.sessions.clear();
        self.paused_until[node as usize] = 0;
        self.slow_us[node as usize] = 0;
        for p in 0..self.n as NodeId {
            if p == node {
                continue;
            }
            self.unbound.remove(&(node, epoch, p));
            self.set_transport(node, p, false);
            // The peer notices the lost connection, or not (before the restart).
            if self.rng.chance(500) {
                if let Some(s) = self.session(p, node) {
                    s.disconnected(now);
                }
            }
        }
    }

    /// The longest a packet takes on the calm network of the detection phase.
    fn max_delay(&self) -> u64 {
        self.net.base_delay + self.net.jitter
    }

    /// A step of the detection phase (see the module docs).
    fn trial(&mut self, trial: Trial) -> Result<(), SimFailure> {
        let now = self.now;
        let d = self.cfg.down_after_us;
        trace!(self, "TRIAL {trial:?}");
        match trial {
            Trial::Slow { node, extra_us } => {
                self.slow_us[node as usize] = extra_us;
                self.schedule(now + 4 * d, Ev::Detect(Trial::SlowEnd));
            }
            Trial::SlowEnd => {
                self.slow_us.iter_mut().for_each(|s| *s = 0);
                let node = self.rng.below(self.n as u64) as NodeId;
                let for_us = self.rng.range(2 * d, 5 * d);
                self.schedule(now + d, Ev::Detect(Trial::Pause { node, for_us }));
            }
            Trial::Pause { node, for_us } => {
                self.paused_until[node as usize] = now + for_us;
                self.schedule(now + for_us, Ev::Detect(Trial::Resume { node }));
            }
            Trial::Resume { node } => {
                self.paused_until[node as usize] = 0;
                self.paused_last[node as usize] = now;
                let node = self.rng.below(self.n as u64) as NodeId;
                let leaving = self.rng.chance(500);
                self.schedule(now + 3 * d, Ev::Detect(Trial::Crash { node, leaving }));
            }
            Trial::Crash { node, leaving } => {
                self.crash(node, leaving);
                // A leave reaches every node within a network delay (the network is
                // calm: nothing lost).
                let at = if leaving { now + self.max_delay() + 1 } else { now + d + 2 * self.max_delay() + 1 };
                self.schedule(at, Ev::Detect(Trial::CrashSeen { node, at: now, leaving }));
            }
            Trial::CrashSeen { node, at, leaving } => {
                for y in 0..self.n as NodeId {
                    if y == node || !self.nodes[y as usize].alive {
                        continue;
                    }
                    let epoch = self.nodes[y as usize].epoch;
                    if self.session(y, node).is_some_and(|s| s.is_up()) {
                        let bound = if leaving { "it left: one network delay" } else { "down_after_us plus two network delays" };
                        return Err(self.fail(format!(
                            "node {node} crashed at {at}: {y}@{epoch} still sees it up {} us later (bound: {bound}; down_after_us {d})",
                            now - at
                        )));
                    }
                }
                self.schedule(now + d, Ev::Detect(Trial::End { node }));
            }
            Trial::End { node } => {
                self.report.detections += 1;
                self.detected = true;
                self.calm_since = None;
                self.end_started = now;
                self.restart(node);
                self.schedule(now + 10_000, Ev::Check);
            }
        }
        Ok(())
    }

    /// Every node watches its next `watchers` peers up in the ring, as the host does.
    fn rewatch(&mut self) {
        let now = self.now;
        let k = self.watchers;
        for (i, nd) in self.nodes.iter_mut().enumerate() {
            if !nd.alive {
                continue;
            }
            let ups = nd.sessions.iter().enumerate().filter_map(|(p, s)| s.as_ref().map(|s| (p as NodeId, s.is_up())));
            let set = watch_set(i as NodeId, ups, k);
            for (p, s) in nd.sessions.iter_mut().enumerate() {
                if let Some(s) = s {
                    let w = set.contains(&(p as NodeId));
                    if s.is_watched() != w {
                        s.set_watched(now, w);
                    }
                }
            }
        }
    }

    fn set_transport(&mut self, a: NodeId, b: NodeId, up: bool) {
        self.transport[a as usize][b as usize] = up;
        self.transport[b as usize][a as usize] = up;
    }

    fn restart(&mut self, node: NodeId) {
        if self.nodes[node as usize].alive {
            return;
        }
        let now = self.now;
        let epoch = self.nodes[node as usize].epoch + 1 + self.rng.below(3);
        trace!(self, "RESTART {node}@{epoch}");
        let n = self.n;
        let nd = &mut self.nodes[node as usize];
        nd.alive = true;
        nd.epoch = epoch;
        nd.epochs.insert(epoch);
        nd.sessions = new_sessions(node as usize, n, epoch, &self.cfg, now);
        for p in 0..n as NodeId {
            if p != node {
                let at = now + self.rng.range(0, 10_000);
                self.schedule(at, Ev::Connect { a: node, b: p });
            }
        }
    }

    /// Sends what the touched sessions have to send, and checks their events.
    fn flush(&mut self) -> Result<(), SimFailure> {
        while let Some((node, peer)) = self.dirty.pop() {
            let now = self.now;
            if !self.nodes[node as usize].alive {
                continue;
            }
            let epoch = self.nodes[node as usize].epoch;
            while let Some(pkt) = self.session(node, peer).and_then(|s| s.poll_transmit(now)) {
                let bytes = encode_packet(&pkt);
                self.report.packets_sent += 1;
                if bytes.len() > self.max_frame {
                    return Err(self.fail(format!("packet of {} bytes over the frame cap {}", bytes.len(), self.max_frame)));
                }
                if self.cut_until[node as usize][peer as usize] > 0 || self.rng.chance(self.net.loss) {
                    trace!(self, "xmit {node}->{peer} {} LOST", short(&pkt));
                    self.report.packets_lost += 1;
                    continue;
                }
                let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
                self.report.packets_duplicated += copies - 1;
                for _ in 0..copies {
                    let mut delay = self.net.base_delay + self.rng.range(0, self.net.jitter);
                    if self.rng.chance(self.net.reorder) {
                        delay += self.rng.range(0, 8 * self.net.base_delay + 5_000);
                    }
                    if self.slow_us[node as usize] > 0 {
                        delay += self.rng.range(0, self.slow_us[node as usize]);
                    }
                    trace!(self, "xmit {node}->{peer} {} arrives at {}", short(&pkt), now + delay);
                    self.schedule(now + delay, Ev::Packet { from: node, to: peer, bytes: bytes.clone() });
                }
            }
            while let Some((ev, peer_now)) = self.session(node, peer).and_then(|s| Some((s.poll_event()?, s.peer_epoch()))) {
                self.check_event(node, epoch, peer, peer_now, ev)?;
            }
        }
        self.resolve_bindings();
        self.rewatch();
        Ok(())
    }

    /// Payloads sent before their session knew the peer are addressed to the first peer
    /// incarnation it learns.
    fn resolve_bindings(&mut self) {
        if self.unbound.is_empty() {
            return;
        }
        let keys: Vec<PairKey> = self.unbound.iter().copied().collect();
        for key in keys {
            let (node, epoch, peer) = key;
            let nd = &self.nodes[node as usize];
            if !nd.alive || nd.epoch != epoch {
                self.unbound.remove(&key);
                continue;
            }
            let Some(pe) = nd.sessions[peer as usize].as_ref().and_then(|s| s.peer_epoch()) else { continue };
            if let Some(v) = self.sends.get_mut(&key) {
                for b in v.iter_mut().take_while(|b| b.is_none()) {
                    *b = Some(pe);
                }
            }
            self.unbound.remove(&key);
        }
    }

    fn check_event(&mut self, node: NodeId, epoch: u64, peer: NodeId, peer_epoch: Option<u64>, ev: Event) -> Result<(), SimFailure> {
        let me = (node, epoch, peer);
        match ev {
            Event::Up | Event::Down => {
                let up = ev == Event::Up;
                trace!(self, "event {node}@{epoch} peer {peer}: {ev:?}");
                let last = self.updown.get(&me).copied();
                if (up && last == Some(true)) || (!up && last != Some(true)) {
                    return Err(self.fail(format!("{node}@{epoch} about {peer}: {ev:?} after {last:?} (Some(true) = Up)")));
                }
                self.updown.insert(me, up);
                self.report.downs += u64::from(!up);
                if !up {
                    self.check_down(node, epoch, peer)?;
                }
            }
            Event::Suspect => {
                trace!(self, "event {node}@{epoch} peer {peer}: Suspect");
                self.report.suspicions += 1;
                for to in 0..self.n as NodeId {
                    if to == node
                        || to == peer
                        || !self.transport[node as usize][to as usize]
                        || self.cut_until[node as usize][to as usize] > 0
                    {
                        continue;
                    }
                    let delay = self.net.base_delay + self.rng.range(0, self.net.jitter);
                    self.schedule(self.now + delay, Ev::Suspicion { to, about: peer });
                }
            }
            Event::PeerRestarted { old_epoch, new_epoch } => {
                trace!(self, "event {node}@{epoch} peer {peer}: restarted {old_epoch} -> {new_epoch}");
                self.report.peer_restarts += 1;
                let real = self.nodes[peer as usize].epochs.contains(&new_epoch);
                if new_epoch <= old_epoch || !real || peer_epoch != Some(new_epoch) {
                    return Err(self.fail(format!(
                        "{node}@{epoch}: bad PeerRestarted {old_epoch} -> {new_epoch} for {peer} (session now at {peer_epoch:?})"
                    )));
                }
            }
            Event::Deliver(p) => {
                let Some((src, src_epoch, counter)) = decode_payload(&p) else {
                    return Err(self.fail(format!("{node}@{epoch} from {peer}: corrupt payload of {} bytes", p.len())));
                };
                trace!(self, "deliver at {node}@{epoch}: {src}@{src_epoch} #{counter}");
                self.report.payloads_delivered += 1;
                if src != peer {
                    return Err(self.fail(format!("{node}@{epoch}: payload from node {src} delivered by the session with {peer}")));
                }
                if peer_epoch != Some(src_epoch) {
                    return Err(self.fail(format!(
                        "{node}@{epoch}: payload from {src}@{src_epoch} delivered while the session is at peer epoch {peer_epoch:?}"
                    )));
                }
                let newest = *self.newest_src.entry((node, epoch, src)).or_insert(src_epoch);
                if newest > src_epoch {
                    return Err(self
                        .fail(format!("{node}@{epoch}: payload from stale incarnation {src}@{src_epoch} after one from {src}@{newest}")));
                }
                self.newest_src.insert((node, epoch, src), src_epoch);
                let Some(binds) = self.sends.get(&(src, src_epoch, node)) else {
                    return Err(self.fail(format!("{node}@{epoch}: delivered {src}@{src_epoch} #{counter}, which was never sent")));
                };
                match binds.get(counter as usize) {
                    None => return Err(self.fail(format!("{node}@{epoch}: delivered {src}@{src_epoch} #{counter}, which was never sent"))),
                    Some(&b) if b != Some(epoch) => {
                        return Err(self.fail(format!(
                            "{node}@{epoch}: delivered {src}@{src_epoch} #{counter}, which was addressed to incarnation {b:?} of {node}"
                        )))
                    }
                    Some(_) => {}
                }
                let first = binds.iter().position(|&b| b == Some(epoch)).unwrap_or(0) as u64;
                let expected = *self.next_counter.get(&(src, src_epoch, node, epoch)).unwrap_or(&first);
                if counter != expected {
                    let what = if counter < expected { "duplicate or reordered" } else { "gap" };
                    return Err(self.fail(format!("{node}@{epoch}: {what}: delivered {src}@{src_epoch} #{counter}, expected #{expected}")));
                }
                self.next_counter.insert((src, src_epoch, node, epoch), counter + 1);
            }
        }
        Ok(())
    }

    /// In the detection phase (once the calm has lasted a window and two network
    /// delays): `node` may report `peer` down only if it is crashed or paused, or was
    /// within a window and two network delays.
    fn check_down(&self, node: NodeId, epoch: u64, peer: NodeId) -> Result<(), SimFailure> {
        let Some(calm) = self.calm_since else { return Ok(()) };
        let grace = self.cfg.down_after_us + 2 * self.max_delay() + self.cfg.heartbeat_us;
        let p = peer as usize;
        let excused =
            !self.nodes[p].alive || self.paused_until[p] > 0 || (self.paused_last[p] > 0 && self.now <= self.paused_last[p] + grace);
        if self.now >= calm + grace && !excused {
            let slow = if self.slow_us[p] > 0 { format!(" (slow: up to {} us more per packet)", self.slow_us[p]) } else { String::new() };
            return Err(self.fail(format!("{node}@{epoch} reported {peer} down while it was alive and answering{slow}")));
        }
        Ok(())
    }

    /// Every payload between live incarnations delivered, queues empty, sessions up.
    fn liveness(&self) -> Result<(), String> {
        for (a, na) in self.nodes.iter().enumerate() {
            for (b, nb) in self.nodes.iter().enumerate() {
                if a == b {
                    continue;
                }
                if !na.alive || !nb.alive {
                    return Err(format!("node {a} or {b} is down"));
                }
                let Some(s) = na.sessions[b].as_ref() else { return Err(format!("no session {a}->{b}")) };
                if !s.is_up() || s.peer_epoch() != Some(nb.epoch) {
                    return Err(format!(
                        "session {a}@{}->{b}: up {} at peer epoch {:?}, peer is at {}",
                        na.epoch,
                        s.is_up(),
                        s.peer_epoch(),
                        nb.epoch
                    ));
                }
                let key = (a as NodeId, na.epoch, b as NodeId);
                let binds = self.sends.get(&key).map_or(&[][..], |v| &v[..]);
                if let Some(i) = binds.iter().position(|x| x.is_none()) {
                    return Err(format!("{a}@{}->{b} #{i} still not addressed to any incarnation", na.epoch));
                }
                if let Some(last) = binds.iter().rposition(|&x| x == Some(nb.epoch)) {
                    let next = self.next_counter.get(&(a as NodeId, na.epoch, b as NodeId, nb.epoch)).copied().unwrap_or(0);
                    if next <= last as u64 {
                        return Err(format!("{a}@{}->{b}@{}: delivered up to #{next}, sent up to #{last}", na.epoch, nb.epoch));
                    }
                }
                if !s.is_idle() {
                    return Err(format!("session {a}@{}->{b}: {} payloads unacknowledged", na.epoch, s.stats().queued));
                }
            }
        }
        Ok(())
    }
}

fn new_sessions(me: usize, n: usize, epoch: u64, cfg: &SessionConfig, now: u64) -> Vec<Option<Session>> {
    (0..n).map(|p| (p != me).then(|| Session::new(me as NodeId, p as NodeId, epoch, cfg.clone(), now))).collect()
}

fn short(p: &crate::proto::session::Packet) -> String {
    use crate::proto::session::Packet::*;
    match p {
        Hello { epoch, peer_epoch, next_expected, .. } => format!("Hello(e{epoch} to {peer_epoch:?} next {next_expected})"),
        Data { epoch, peer_epoch, seq, echo, payload } => {
            let what = decode_payload(payload).map_or("?".into(), |(s, e, c)| format!("{s}@{e}#{c}"));
            format!("Data(e{epoch} to e{peer_epoch} seq {seq} echo {echo} = {what})")
        }
        Ack { epoch, peer_epoch, upto, echo } => format!("Ack(e{epoch} to e{peer_epoch} upto {upto} echo {echo})"),
        Heartbeat { epoch, peer_epoch, echo } => format!("Heartbeat(e{epoch} to e{peer_epoch} echo {echo})"),
        Probe { epoch, peer_epoch, n, echo } => format!("Probe(e{epoch} to e{peer_epoch} #{n} echo {echo})"),
    }
}
