//! The load policy's host: one thread per node that samples the VM's load every
//! `gossip_ms` into the [`Meter`], tells the peers this node's load when it changed
//! (and, while the policy is on, at least once a window, so that their view of it has
//! an age they can trust), and every `interval_ms` asks the [`Policy`] which of this
//! node's processes to move where, starts those migrations (with the mesh's default
//! mechanism) and tells it when each ended. Every decision is logged with its reason:
//! a `tracing` event, a line in the node's log for each move, and the decision log
//! `tern ctl policy` shows.

use super::Host;
use crate::proto::mechanism::{Admit, How};
use crate::proto::policy::{Decision, Meter, Move, PeerLoad, Policy, PolicyConf, ProcLoad};
use crate::proto::wire::{Frame, Load};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// What the policy thread keeps, shared with the operator's commands.
pub(crate) struct PolicyHost {
    state: Mutex<State>,
    /// This node takes new processes and the policy's migrations (`false`: drained).
    accepting: AtomicBool,
}

struct State {
    policy: Policy,
    meter: Meter,
    /// This node's load as last measured (what it tells its peers).
    own: Load,
    /// Its processes' loads as last measured, busiest first.
    procs: Vec<ProcLoad>,
    /// When the load was last sent to the peers whatever it was.
    refreshed: Instant,
    /// The moves the policy started and has not heard the end of.
    running: Vec<(u64, super::migration::MigHandle)>,
    /// When an operator last asked for the processes' loads (`top`): they are measured
    /// while the policy is on, and for [`PROCS_WANTED`] after such a question.
    procs_wanted: Option<Instant>,
}

/// How long processes' loads are measured after an operator asked for them (with the
/// policy off, measuring them would cost every process a look every `gossip_ms`).
const PROCS_WANTED: Duration = Duration::from_secs(30);

impl PolicyHost {
    pub(super) fn new(me: u16, conf: PolicyConf) -> PolicyHost {
        PolicyHost {
            state: Mutex::new(State {
                policy: Policy::new(me, conf),
                meter: Meter::new(conf.window_ms),
                own: Load { accepting: true, ..Load::default() },
                procs: Vec::new(),
                refreshed: Instant::now(),
                running: Vec::new(),
                procs_wanted: None,
            }),
            accepting: AtomicBool::new(true),
        }
    }
}

// The operator's commands (`top`, `policy`, `drain`) and the automatic mechanism
// choice are the callers of what is not used yet.
#[allow(dead_code)]
impl Host {
    /// This node's load, as last measured.
    pub(crate) fn own_load(&self) -> Load {
        let mut l = self.policy.state.lock().own;
        l.migrations = self.mig.in_progress();
        l.accepting = self.policy.accepting.load(Ordering::SeqCst);
        l
    }

    /// This node's processes' loads, as last measured (busiest first).
    /// (With the policy off, they are measured from this question on, for a while:
    /// the first answer may be empty.)
    pub(crate) fn proc_loads(&self) -> Vec<ProcLoad> {
        let mut st = self.policy.state.lock();
        st.procs_wanted = Some(Instant::now());
        st.procs.clone()
    }

    /// Process `pid`'s write rate, bytes of pages written per second: over the window
    /// when the policy measures it, else its average since it came to this node.
    /// `None`: it is not here.
    pub(crate) fn write_rate(&self, pid: u64) -> Option<u64> {
        if let Some(p) = self.policy.state.lock().procs.iter().find(|p| p.pid == pid) {
            return Some(p.dirty_bytes_s);
        }
        let s = self.node().proc_sample(pid)?;
        let secs = (s.resident_us as f64 / 1e6).max(1e-3);
        Some((s.dirtied_pages as f64 * s.page_bytes as f64 / secs) as u64)
    }

    /// The link speed to node `id` that `auto` goes by, bytes per second, and where it
    /// comes from: the migration bandwidth cap if one is set (and lower), else what the
    /// last migration there measured, else an assumption.
    pub(crate) fn link_speed(&self, id: u16) -> (u64, &'static str) {
        let measured = self.mig.links.lock().get(&id).copied();
        let cap = self.policy_conf().bandwidth_mib_s << 20;
        match measured {
            _ if cap > 0 && measured.is_none_or(|m| cap < m) => (cap, "capped"),
            Some(m) => (m, "measured"),
            None => (crate::proto::mechanism::ASSUMED_LINK_BYTES_S, "assumed"),
        }
    }

    /// Whether this node takes process `pid` from node `from` in a load policy's move
    /// (see [`Policy::admit`]).
    pub(crate) fn admit(&self, pid: u64, from: u16, a: Admit) -> Result<(), String> {
        if !self.accepting() {
            return Err("this node is drained".into());
        }
        let own = self.own_load();
        let now = self.now_us();
        self.policy.state.lock().policy.admit(now, pid, from, &own, a)
    }

    /// The policy's settings.
    pub(crate) fn policy_conf(&self) -> PolicyConf {
        self.policy.state.lock().policy.conf
    }

    /// Changes the policy's settings on this node (checked first).
    pub(crate) fn set_policy_conf(&self, conf: PolicyConf) -> Result<(), String> {
        conf.check()?;
        let mut st = self.policy.state.lock();
        st.meter.set_window(conf.window_ms);
        st.policy.conf = conf;
        drop(st);
        self.log(&format!("policy: mode {}", conf.mode));
        Ok(())
    }

    /// The policy's decisions kept (oldest first).
    pub(crate) fn policy_log(&self) -> Vec<Decision> {
        self.policy.state.lock().policy.log().cloned().collect()
    }

    /// Whether this node takes new processes and the policy's migrations.
    pub(crate) fn accepting(&self) -> bool {
        self.policy.accepting.load(Ordering::SeqCst)
    }

    pub(crate) fn set_accepting(&self, on: bool) {
        self.policy.accepting.store(on, Ordering::SeqCst);
        // Told at once, not at the next change.
        for p in self.peers.values() {
            *p.load_sent.lock() = None;
        }
    }

    /// Peer `id`'s load, as it last said, and how long ago (µs; `None`: never).
    pub(crate) fn peer_load(&self, id: u16) -> (Load, Option<u64>) {
        match self.peers.get(&id) {
            Some(p) => {
                let (l, at) = *p.load.lock();
                (l, at.map(|t| t.elapsed().as_micros() as u64))
            }
            None => (Load::default(), None),
        }
    }

    fn peer_loads(&self) -> Vec<PeerLoad> {
        self.peers
            .iter()
            .map(|(&id, p)| {
                let (load, age_us) = self.peer_load(id);
                PeerLoad { id, up: p.up.load(Ordering::SeqCst), load, age_us }
            })
            .collect()
    }
}

/// Starts the policy thread (it ends with the node).
pub(super) fn start(sh: &Arc<Host>) -> Result<(), String> {
    let weak = Arc::downgrade(sh);
    std::thread::Builder::new()
        .name(format!("tern-{}-policy", sh.me.name))
        .spawn(move || run(weak))
        .map(|_| ())
        .map_err(|e| format!("cannot start the policy thread: {e}"))
}

fn run(weak: Weak<Host>) {
    loop {
        let pause = match weak.upgrade() {
            Some(sh) if !sh.is_shutting_down() => {
                tick(&sh);
                sh.policy.state.lock().policy.conf.gossip_ms
            }
            _ => return,
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// One sample, the reports, and a look when one is due.
fn tick(sh: &Arc<Host>) {
    let node = sh.node();
    let want_procs = {
        let st = sh.policy.state.lock();
        st.policy.conf.mode != crate::proto::policy::Mode::Off || st.procs_wanted.is_some_and(|t| t.elapsed() < PROCS_WANTED)
    };
    let ns = node.load_sample();
    let ps = if want_procs { node.proc_samples() } else { Vec::new() };
    let now = sh.now_us();
    let mut st = sh.policy.state.lock();
    st.meter.observe(ns, ps);
    (st.own, st.procs) = st.meter.loads();
    let conf = st.policy.conf;
    // Moves that ended.
    let mut ended = Vec::new();
    st.running.retain(|(pid, h)| match h.done.try_recv() {
        Ok(r) => {
            ended.push((*pid, r.ok, r.bandwidth_bytes_per_ms, r.outcome.clone(), r.to.clone()));
            false
        }
        Err(crossbeam_channel::TryRecvError::Empty) => true,
        Err(crossbeam_channel::TryRecvError::Disconnected) => {
            ended.push((*pid, false, 0, "the migration ended without a report".into(), String::new()));
            false
        }
    });
    for (pid, ok, bw, outcome, to) in ended {
        st.policy.moved(now, pid, ok, bw);
        if !ok {
            sh.log(&format!("policy: moving {} to {to} failed: {outcome}", tern_vm::value::name_text(pid)));
        }
    }
    // The report to the peers.
    let refresh = conf.mode != crate::proto::policy::Mode::Off && st.refreshed.elapsed() >= Duration::from_millis(conf.window_ms);
    if refresh {
        st.refreshed = Instant::now();
    }
    drop(st);
    let own = sh.own_load();
    for (&id, p) in &sh.peers {
        if !p.up.load(Ordering::SeqCst) {
            continue;
        }
        let stale = *p.load_sent.lock() != Some(own);
        if (stale || refresh) && sh.send_frame(id, &Frame::Load(own)).is_ok() {
            *p.load_sent.lock() = Some(own);
        }
    }
    // A look, when one is due.
    let mut st = sh.policy.state.lock();
    if now < st.policy.next_look_us() {
        return;
    }
    let procs = st.procs.clone();
    let peers = sh.peer_loads();
    let moves = st.policy.decide(now, &own, &peers, &procs);
    let new = st.policy.take_new();
    drop(st);
    for d in new.iter().filter(|d| d.moved.is_none()) {
        tracing::debug!(rule = %d.rule, why = %d.why, "policy declined");
    }
    for Move { pid, to, why, admit } in moves {
        let name = sh.node_name(to);
        tracing::info!(pid = %tern_vm::value::name_text(pid), to = %name, %why, "policy moves a process");
        sh.log(&format!("policy: moving {} to {name}: {why}", tern_vm::value::name_text(pid)));
        match sh.start_migration(pid, &name, How { admit: Some(admit), ..How::default() }) {
            Ok(h) => sh.policy.state.lock().running.push((pid, h)),
            Err(e) => {
                sh.log(&format!("policy: moving {} to {name} did not start: {e}", tern_vm::value::name_text(pid)));
                sh.policy.state.lock().policy.moved(now, pid, false, 0);
            }
        }
    }
}
