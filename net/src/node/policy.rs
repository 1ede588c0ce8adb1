//! The load policy's host: one thread per node that samples the VM's load every
//! `gossip_ms` into the [`Meter`], tells the peers this node's load when it changed
//! (and at least once a window, so that their view of it has
//! an age they can trust), and every `interval_ms` asks the [`Policy`] which of this
//! node's processes to move where, starts those migrations (with the mesh's default
//! mechanism) and tells it when each ended. Every decision is logged with its reason:
//! a `tracing` event, a line in the node's log for each move, and the decision log
//! `tern ctl policy` shows.

use super::Host;
use crate::proto::mechanism::{Admit, How};
use crate::proto::policy::{self as pol, Decision, Meter, Mode, Move, PeerLoad, Placer, Policy, PolicyConf, ProcLoad};
use crate::proto::wire::{DecisionRow, DrainReport, Frame, Load, PolicyChange, PolicyView, TopNode, TopProc};
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
    /// The mode `policy on` goes back to.
    mode_on: Mode,
}

/// A drain's move under way: its process and the migration.
struct DrainMove {
    pid: u64,
    h: super::migration::MigHandle,
}

/// How long a drain goes on moving the processes that keep arriving.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// Processes that stay named in a drain's log line (the report has them all).
const DRAIN_STAYED_LOGGED: usize = 10;

/// How long processes' loads are measured after an operator asked for them (with the
/// policy off, measuring them would cost every process a look every `gossip_ms`).
const PROCS_WANTED: Duration = Duration::from_secs(30);

impl PolicyHost {
    pub(super) fn new(me: u16, conf: PolicyConf, names: impl IntoIterator<Item = (u16, String)>) -> PolicyHost {
        let mut policy = Policy::new(me, conf);
        policy.set_names(names);
        PolicyHost {
            state: Mutex::new(State {
                policy,
                meter: Meter::new(conf.window_ms),
                own: Load { accepting: true, ..Load::default() },
                procs: Vec::new(),
                refreshed: Instant::now(),
                running: Vec::new(),
                procs_wanted: None,
                mode_on: if conf.mode == Mode::Off { Mode::Balance } else { conf.mode },
            }),
            accepting: AtomicBool::new(true),
        }
    }
}

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
    /// when the policy measures it, else its recent rate (over its last samples).
    /// `None`: it is not here.
    pub(crate) fn write_rate(&self, pid: u64) -> Option<u64> {
        if let Some(p) = self.policy.state.lock().procs.iter().find(|p| p.pid == pid) {
            return Some(p.dirty_bytes_s);
        }
        let s = self.node().proc_sample(pid)?;
        Some(s.dirty_pages_s.saturating_mul(s.page_bytes))
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
        if conf.mode != Mode::Off {
            st.mode_on = conf.mode;
        }
        st.policy.conf = conf;
        drop(st);
        self.log(&format!("policy: mode {}", conf.mode));
        Ok(())
    }

    /// The policy's decisions kept (oldest first).
    pub(crate) fn policy_log(&self) -> Vec<Decision> {
        self.policy.state.lock().policy.log().cloned().collect()
    }

    /// `tern ctl policy`: this node's policy after `change` (if any), with its last
    /// `decisions` decisions.
    pub(crate) fn policy_query(&self, change: Option<&PolicyChange>, decisions: u32) -> Result<PolicyView, String> {
        if let Some(change) = change {
            let mut conf = self.policy_conf();
            match change {
                PolicyChange::On => conf.mode = self.policy.state.lock().mode_on,
                PolicyChange::Off => conf.mode = Mode::Off,
                PolicyChange::Set { key, value } => conf.set(key, value)?,
            }
            self.set_policy_conf(conf)?;
        }
        let now = self.now_us();
        let log = self.policy_log();
        let skip = log.len().saturating_sub(decisions as usize);
        let rows = log
            .into_iter()
            .skip(skip)
            .map(|d| DecisionRow {
                ago_ms: now.saturating_sub(d.at_us) / 1000,
                rule: d.rule,
                moved: d.moved.map(|m| (m.pid, self.node_name(m.to))),
                why: d.why,
                loads: d.loads.into_iter().map(|(n, l, u)| (self.node_name(n), l, u)).collect(),
                candidates: d.candidates,
            })
            .collect();
        Ok(PolicyView { node: self.me.name.clone(), conf: self.policy_conf(), accepting: self.accepting(), decisions: rows })
    }

    /// `top`: this node's load and its `procs` busiest processes.
    pub(crate) fn top(&self, procs: u32) -> TopNode {
        let measured = {
            let st = self.policy.state.lock();
            st.policy.conf.mode != Mode::Off
                || st.procs_wanted.is_some_and(|t| t.elapsed() + Duration::from_millis(st.policy.conf.window_ms) < PROCS_WANTED)
        };
        let rows = self
            .proc_loads()
            .into_iter()
            .take(procs as usize)
            .map(|p| TopProc {
                pid: p.pid,
                unmovable: p.unmovable().map(str::to_string),
                status: p.status,
                cpu_pm: (p.cpu * 1000.0).round() as u32,
                reductions_per_s: p.reductions_per_s,
                heap_bytes: p.heap_bytes,
                dirty_bytes_s: p.dirty_bytes_s,
                mailbox: p.mailbox,
                resident_ms: p.resident_ms,
                moves: p.moves,
            })
            .collect();
        TopNode { node: self.me.name.clone(), load: self.own_load(), procs: rows, measured }
    }

    /// The node for a process no one placed (`spawn --on any`): of the nodes that are
    /// up and take new processes (this one included), the least loaded with it.
    pub(crate) fn place_new(&self) -> Option<u16> {
        let mut nodes = vec![(self.me.id, self.own_load())];
        nodes.extend(self.peer_loads().into_iter().filter(|p| p.up && p.age_us.is_some()).map(|p| (p.id, p.load)));
        Placer::new(&nodes).place(1.0)
    }

    /// `tern ctl drain`: marks this node as taking no new processes, then moves every
    /// process it may move to the other nodes (spread by their room, `max_in_flight` at
    /// a time, each with the mesh's mechanism, a coprocess group whole), calling
    /// `progress(done, total, line)` as each move ends; processes that arrive meanwhile
    /// are moved too. Pinned ones and REPL shells stay, and are listed.
    pub(crate) fn drain(self: &Arc<Self>, progress: impl FnMut(u64, u64, &str)) -> Result<DrainReport, String> {
        self.drain_until(Instant::now() + DRAIN_LIMIT, progress)
    }

    /// [`Host::drain`], moving nothing more once `deadline` has passed (the moves under
    /// way then end first).
    pub(crate) fn drain_until(
        self: &Arc<Self>,
        deadline: Instant,
        mut progress: impl FnMut(u64, u64, &str),
    ) -> Result<DrainReport, String> {
        self.set_accepting(false);
        self.log("drain: this node takes no new processes; moving its processes off");
        let mut report = DrainReport { node: self.me.name.clone(), ..DrainReport::default() };
        // Every peer that is up has a report within a window (they are sent again once a
        // window).
        let conf = self.policy_conf();
        let until = (Instant::now() + Duration::from_millis(conf.window_ms + 2 * conf.gossip_ms)).min(deadline);
        while self.peer_loads().iter().any(|p| p.up && p.age_us.is_none()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(conf.gossip_ms.min(50)));
        }
        let targets: Vec<(u16, Load)> =
            self.peer_loads().into_iter().filter(|p| p.up && p.age_us.is_some()).map(|p| (p.id, p.load)).collect();
        let mut placer = Placer::new(&targets);
        let seen: Vec<String> = targets
            .iter()
            .map(|(id, l)| {
                format!(
                    "{} ({} workers, run queue {:.2}{})",
                    self.node_name(*id),
                    l.workers,
                    f64::from(l.runnable_x100) / 100.0,
                    if l.accepting { "" } else { ", drained" }
                )
            })
            .collect();
        self.log(&format!("drain: the other nodes: {}", seen.join(", ")));
        if placer.clone().place(1.0).is_none() {
            return Err("no other node is up and taking processes".into());
        }
        let demands: std::collections::HashMap<u64, f64> = self.policy.state.lock().procs.iter().map(|p| (p.pid, p.demand)).collect();
        let in_flight = self.policy_conf().max_in_flight.max(1) as usize;
        let mut tried = std::collections::HashSet::new();
        let mut running: Vec<DrainMove> = Vec::new();
        let (mut done, mut total) = (0u64, 0u64);
        loop {
            // What is here now (a group's members: one move for the group).
            let mut waiting = false;
            let mut todo = Vec::new();
            let mut groups = std::collections::HashSet::new();
            for p in self.node().proc_samples() {
                if tried.contains(&p.pid) || running.iter().any(|r| r.pid == p.pid) {
                    continue;
                }
                match pol::unmovable(p.shell, p.pinned, p.lazy, p.status) {
                    Some(why @ ("pinned" | "a REPL's shell")) => {
                        tried.insert(p.pid);
                        report.stayed.push((p.pid, why.to_string()));
                    }
                    // Its pages, or its move, will be done in a while.
                    Some(_) => waiting = true,
                    None if p.group != 0 && !groups.insert(p.group) => {}
                    None => todo.push((p.pid, p.group != 0)),
                }
            }
            total += todo.len() as u64;
            for (pid, group) in todo {
                if Instant::now() > deadline {
                    break;
                }
                tried.insert(pid);
                while running.len() >= in_flight {
                    self.drain_wait(&mut running, &mut report, &mut done, total, &mut progress);
                }
                let Some(to) = placer.place(demands.get(&pid).copied().unwrap_or(1.0)) else { break };
                let name = self.node_name(to);
                match self.start_migration(pid, &name, How { group, ..How::default() }) {
                    Ok(h) => running.push(DrainMove { pid, h }),
                    Err(e) => {
                        done += 1;
                        let line = format!("{} did not start to move to {name}: {e}", tern_vm::value::name_text(pid));
                        self.log(&format!("drain: {line}"));
                        progress(done, total, &line);
                        report.failed.push((pid, e));
                    }
                }
            }
            while !running.is_empty() {
                self.drain_wait(&mut running, &mut report, &mut done, total, &mut progress);
            }
            let left = self.node().proc_samples().into_iter().any(|p| !tried.contains(&p.pid));
            if (!left && !waiting) || Instant::now() > deadline || self.is_shutting_down() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // One line for those that stay (a crowded node may keep thousands): how many and
        // why, with the first few; the report lists them all.
        if !report.stayed.is_empty() {
            let mut why = std::collections::BTreeMap::<&str, usize>::new();
            for (_, w) in &report.stayed {
                *why.entry(w.as_str()).or_default() += 1;
            }
            let why: Vec<String> = why.iter().map(|(w, n)| format!("{n} {w}")).collect();
            let first: Vec<String> = report.stayed.iter().take(DRAIN_STAYED_LOGGED).map(|(p, _)| tern_vm::value::name_text(*p)).collect();
            let more = report.stayed.len().saturating_sub(DRAIN_STAYED_LOGGED);
            self.log(&format!(
                "drain: {} stay ({}): {}{}",
                report.stayed.len(),
                why.join(", "),
                first.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ));
        }
        self.log(&format!("drain: done: {} moved, {} stayed, {} failed", report.moved.len(), report.stayed.len(), report.failed.len()));
        Ok(report)
    }

    /// Waits for one of a drain's moves to end.
    fn drain_wait(
        &self,
        running: &mut Vec<DrainMove>,
        report: &mut DrainReport,
        done: &mut u64,
        total: u64,
        progress: &mut impl FnMut(u64, u64, &str),
    ) {
        if running.is_empty() {
            return;
        }
        let (pid, r) = loop {
            let picked = {
                let mut sel = crossbeam_channel::Select::new();
                for m in running.iter() {
                    sel.recv(&m.h.done);
                }
                sel.select_timeout(Duration::from_millis(250)).ok().map(|op| {
                    let i = op.index();
                    (i, op.recv(&running[i].h.done))
                })
            };
            if let Some((i, r)) = picked {
                break (running.swap_remove(i).pid, r);
            }
            // (A move in doubt — its destination went down after it was asked to commit —
            // reports so after a bound, before it ends: see `run_source`.)
        };
        *done += 1;
        let line = match r {
            Ok(r) if r.ok => {
                let line =
                    format!("{} moved to {} ({}, frozen {} µs)", tern_vm::value::name_text(pid), r.to, r.mechanism, r.freeze_time_us);
                report.moved.push((pid, r.to.clone(), r.mechanism.to_string(), r.freeze_time_us));
                line
            }
            Ok(r) => {
                report.failed.push((pid, r.outcome.clone()));
                format!("{} did not move to {}: {}", tern_vm::value::name_text(pid), r.to, r.outcome)
            }
            Err(_) => {
                report.failed.push((pid, "the migration ended without a report".into()));
                format!("{}: the migration ended without a report", tern_vm::value::name_text(pid))
            }
        };
        self.log(&format!("drain: {line}"));
        progress(*done, total, &line);
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

/// Samples every `gossip_ms`; between samples it waits for the policy's moves to end
/// too, and handles one that ended at once (a look follows: see [`Policy::moved`]).
fn run(weak: Weak<Host>) {
    let mut next_sample = Instant::now();
    loop {
        let (ends, pause) = match weak.upgrade() {
            Some(sh) if !sh.is_shutting_down() => {
                let sample = Instant::now() >= next_sample;
                tick(&sh, sample);
                let st = sh.policy.state.lock();
                if sample {
                    next_sample = Instant::now() + Duration::from_millis(st.policy.conf.gossip_ms);
                }
                let ends: Vec<_> = st.running.iter().map(|(_, h)| h.done.clone()).collect();
                (ends, next_sample.saturating_duration_since(Instant::now()))
            }
            _ => return,
        };
        if ends.is_empty() {
            std::thread::sleep(pause);
        } else {
            // Ready (a report, or its sender gone) is taken by the next tick, which
            // removes that move from `running`: no wait returns twice for one end.
            let mut sel = crossbeam_channel::Select::new();
            for r in &ends {
                sel.recv(r);
            }
            let _ = sel.ready_timeout(pause);
        }
    }
}

/// One sample (when `sample`), the moves that ended, the reports, and a look when one
/// is due.
fn tick(sh: &Arc<Host>, sample: bool) {
    let now = sh.now_us();
    let mut st = if sample {
        let node = sh.node();
        let want_procs = {
            let st = sh.policy.state.lock();
            st.policy.conf.mode != crate::proto::policy::Mode::Off || st.procs_wanted.is_some_and(|t| t.elapsed() < PROCS_WANTED)
        };
        let ns = node.load_sample();
        let ps = if want_procs { node.proc_samples() } else { Vec::new() };
        let mut st = sh.policy.state.lock();
        st.meter.observe(ns, ps);
        (st.own, st.procs) = st.meter.loads();
        st
    } else {
        sh.policy.state.lock()
    };
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
    // Sent again once a window whatever the mode (a report lost to a session that was
    // being replaced is not lost for long; `drain`, `top` and `spawn --on any` use them
    // with the policy off too).
    let refresh = st.refreshed.elapsed() >= Duration::from_millis(conf.window_ms);
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
    let mut procs = st.procs.clone();
    if !sample {
        // A look after a move ended: the last sample's loads, of the processes still
        // here, with what may have changed since about whether they may move (frozen
        // by another move, pinned, joined to a group).
        let node = sh.node();
        procs.retain_mut(|p| node.proc_sample(p.pid).map(|s| p.refresh(&s)).is_some());
    }
    let peers = sh.peer_loads();
    let util_now = st.meter.recent_utilization();
    let moves = st.policy.decide(now, &own, util_now, &peers, &procs);
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
