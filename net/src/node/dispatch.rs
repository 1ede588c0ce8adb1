//! What the other nodes send, carried out in order per peer: VM ops (after fetching
//! the modules they name, by content hash, once: "code travels by hash, once" in
//! ARCHITECTURE.md), questions (`ps`, files, remote spawns, migrations) and their
//! answers, console output, load reports and migration control.
//!
//! An op that needs no module and has nothing of its peer waiting before it is carried
//! out at once, on the task that took it from the session; everything else goes to one
//! dispatcher thread, which keeps each peer's frames in order.

use super::services::FileJob;
use super::{migration, Host};
use crate::proto::wire::{self, Answer, Frame, Query};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tern_vm::bytecode::{Module, ModuleHash};
use tern_vm::node::{Node, Op};
use tern_vm::runtime::Vm;
use tern_vm::value::name_node;

/// Starts the dispatcher thread of `sh`, with the file threads' queue; it ends at
/// [`Inbound::Stop`].
pub(super) fn start(
    sh: &Arc<Host>,
    files: crossbeam_channel::Sender<FileJob>,
    from_peers: crossbeam_channel::Receiver<Inbound>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let sh = sh.clone();
    std::thread::Builder::new()
        .name(format!("tern-dispatch-{}", sh.me.name))
        .spawn(move || {
            tern_vm::node::slice::set_short_slice(tern_vm::node::slice::SHORT_SLICE_US);
            Dispatcher { sh, files, pending: BTreeMap::new(), asked: HashSet::new() }.run(&from_peers)
        })
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Whether peer `from` may have one more spawn request carried out now (a token bucket
/// per peer of `[limits] spawns_per_peer_s` tokens a second, holding a second's worth);
/// if not, why (the request is answered with it).
pub(super) fn spawn_allowed(sh: &Host, from: u16) -> Result<(), String> {
    if sh.is_stopping() {
        return Err(format!("node {} refused the spawn: it is stopping", sh.me.name));
    }
    let rate = sh.cfg.limits.spawns_per_peer_s as f64;
    let now = Instant::now();
    {
        let mut buckets = sh.spawn_buckets.lock();
        let (filled, tokens) = buckets.entry(from).or_insert((now, rate));
        *tokens = (*tokens + now.duration_since(*filled).as_secs_f64() * rate).min(rate);
        *filled = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
    }
    sh.stats.spawns_refused.fetch_add(1, Ordering::Relaxed);
    Err(format!(
        "node {} refused the spawn: node {} asked for more than {} a second ([limits] spawns_per_peer_s)",
        sh.me.name,
        sh.node_name(from),
        sh.cfg.limits.spawns_per_peer_s
    ))
}

/// Hands an op from peer `from` to the VM, unless it is about a process that has ended
/// (see [`about_an_ended_process`]) or is a spawn past the peer's rate (answered with
/// an error).
pub(super) fn receive_op(sh: &Host, from: u16, op: Op) {
    sh.stats.vm_ops_received.fetch_add(1, Ordering::Relaxed);
    if let Op::Spawn { req, from: parent, .. } = op {
        if let Err(why) = spawn_allowed(sh, from) {
            let _ = sh.send_frame(from, &Frame::Vm(Op::Spawned { req, to: parent, result: Err(why) }));
            return;
        }
    }
    if about_an_ended_process(sh.node(), from, &op) {
        tracing::debug!(node = %sh.me.name, "dropped an op from node {from} about a process that has ended: {op:?}");
        return;
    }
    sh.node().receive(from, op);
}

/// Whether `op` from node `from` is a kill or an exit signal for a process that has
/// ended: one born on `from` for which this node has no entry (it is not here and this
/// node has no route of its own). The birth node sent it here because its route says
/// so; carried out, it would go back to the birth node (where a node with no entry
/// sends), whose route says here, and so on for ever: those ops carry no hop count. A
/// process that moved on from here leaves a route here until every node it talks with,
/// its birth node first, has the newer one, so an op from the birth node never finds
/// this node without an entry while the process lives.
fn about_an_ended_process(node: &Node, from: u16, op: &Op) -> bool {
    let pid = match op {
        Op::Kill { pid, .. } => *pid,
        Op::Exit { to, .. } => *to,
        _ => return false,
    };
    name_node(pid) == from && !node.forwarding_state(pid, &[]).0
}

/// What the dispatcher thread is given, in order.
pub(super) enum Inbound {
    Frame(u16, Box<Frame>),
    /// A peer went down.
    PeerGone(u16),
    /// A peer restarted: gone, and numbering its messages from 0 again.
    PeerRestarted(u16),
    Stop,
}

/// Work waiting for modules.
enum Work {
    Op(Op),
    SpawnMain { id: u64, main: ModuleHash, console: u64 },
    Mig(wire::MigWire),
}

/// Carries out, in order per peer, what peers send; fetches modules first where needed.
struct Dispatcher {
    sh: Arc<Host>,
    files: crossbeam_channel::Sender<FileJob>,
    pending: BTreeMap<u16, VecDeque<(Vec<ModuleHash>, Work)>>,
    asked: HashSet<ModuleHash>,
}

pub(super) fn op_needs(op: &Op) -> Vec<ModuleHash> {
    let mut v = Vec::new();
    let mut add = |hs: Vec<ModuleHash>| {
        for h in hs {
            if !v.contains(&h) {
                v.push(h);
            }
        }
    };
    match op {
        Op::Deliver(d) => {
            add(d.msg.modules());
            for c in &d.carried {
                for m in &c.queue {
                    add(m.modules());
                }
                for (_, _, m) in &c.held {
                    if let Some(m) = m {
                        add(m.modules());
                    }
                }
            }
        }
        Op::Spawn { spec, carried, .. } => {
            add(spec.needs());
            for c in carried {
                for m in &c.queue {
                    add(m.modules());
                }
                for (_, _, m) in &c.held {
                    if let Some(m) = m {
                        add(m.modules());
                    }
                }
            }
        }
        _ => {}
    }
    v
}

impl Dispatcher {
    fn vm(&self) -> &Arc<Vm> {
        self.sh.node().vm()
    }

    fn run(mut self, rx: &crossbeam_channel::Receiver<Inbound>) {
        while let Ok(item) = rx.recv() {
            if self.sh.shutdown.load(Ordering::SeqCst) {
                return;
            }
            match item {
                Inbound::Frame(from, frame) => {
                    self.sh.stats.ops_received.fetch_add(1, Ordering::Relaxed);
                    if !self.frame(from, *frame) {
                        self.done(from, 1);
                    }
                }
                Inbound::PeerGone(from) => self.peer_gone(from),
                Inbound::PeerRestarted(from) => {
                    self.peer_gone(from);
                    self.sh.node().node_restarted(from);
                }
                Inbound::Stop => return,
            }
        }
    }

    /// A frame from the peer's backlog is carried out (or dropped).
    fn done(&self, from: u16, n: usize) {
        if let Some(p) = self.sh.peers.get(&from) {
            p.backlog.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// Carries out a frame; true if it waits (for modules) instead.
    fn frame(&mut self, from: u16, frame: Frame) -> bool {
        match frame {
            Frame::Vm(op) => {
                let needs = op_needs(&op);
                return self.queue(from, needs, Work::Op(op));
            }
            Frame::WantModules(hashes) => {
                let mut mods = Vec::new();
                for h in hashes.iter().take(1024) {
                    if let Some(m) = self.vm().module(h) {
                        mods.push(m.module.encode());
                    }
                }
                let bytes: usize = mods.iter().map(Vec::len).sum();
                self.sh.stats.modules_sent.fetch_add(mods.len() as u64, Ordering::Relaxed);
                self.sh.stats.module_bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
                let _ = self.sh.send_frame(from, &Frame::Modules(mods));
            }
            Frame::Modules(list) => {
                for bytes in list {
                    match Module::decode(&bytes) {
                        Ok(m) => {
                            let h = m.hash();
                            if !self.asked.remove(&h) {
                                self.sh.log(&format!("ignored module {h} from node {}: not asked for", self.sh.node_name(from)));
                                continue;
                            }
                            match self.vm().load(m) {
                                Ok(_) => {
                                    self.sh.stats.modules_received.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    self.sh.log(&format!("module {h} from node {} rejected: {e}", self.sh.node_name(from)));
                                    self.fail_needing(h, &format!("module {h} was rejected: {e}"));
                                }
                            }
                        }
                        Err(e) => self.sh.log(&format!("bad module from node {}: {e}", self.sh.node_name(from))),
                    }
                }
                self.drain();
            }
            Frame::Ask { id, query } => match query {
                // Disk work is done off this thread, by the file threads, in order.
                Query::File(op) => {
                    let _ = self.files.send((from, id, op));
                }
                Query::Ps => {
                    let rows = self.sh.ps_rows();
                    let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Ps(rows) });
                }
                Query::Top { procs } => {
                    let top = self.sh.top(procs);
                    let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Top(top) });
                }
                Query::Metrics => {
                    let view = self.sh.metrics();
                    let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Metrics(Box::new(view)) });
                }
                Query::Policy { change, decisions } => {
                    let view = self.sh.policy_query(change.as_ref(), decisions);
                    let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Policy(view) });
                }
                Query::SpawnMain { main, needs, console } => match spawn_allowed(&self.sh, from) {
                    Ok(()) => return self.queue(from, needs, Work::SpawnMain { id, main, console }),
                    Err(why) => {
                        let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Spawned(Err(why)) });
                    }
                },
                Query::Migrate { pid, to, how, hops } => {
                    // Runs for a while: on a thread of its own, one of a bounded number
                    // (a request refused for want of one is answered at once).
                    let sh = self.sh.clone();
                    let started = sh.migration_waiter().and_then(|slot| {
                        std::thread::Builder::new()
                            .name("tern-mig-ask".into())
                            .spawn(move || {
                                let _slot = slot;
                                let r = migration::migrate_via(&sh, pid, &to, how, hops, Some(from));
                                let _ = sh.send_frame(from, &Frame::Answer { id, answer: Answer::Migrated(r.map(Box::new)) });
                            })
                            .map_err(|e| format!("cannot start a thread: {e}"))
                    });
                    if let Err(e) = started {
                        let e = format!("node {}: {e}", self.sh.me.name);
                        let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Migrated(Err(e)) });
                    }
                }
            },
            Frame::Answer { id, answer } => {
                if let Some((_, tx)) = self.sh.waiting.lock().remove(&id) {
                    let _ = tx.send(Ok(answer));
                }
            }
            Frame::Console { console, pid, text, failed } => self.sh.console_out(console, pid, &text, failed),
            Frame::ConsoleRead { console, pid, k } => {
                if let Some(a) = self.sh.request_line(console, pid, k, from) {
                    self.sh.answer_line(a);
                }
            }
            Frame::ConsoleLine { pid, k, line } => self.sh.node().console_line(pid, k, line),
            Frame::Exited(note) => self.sh.node().record_exit(note.exit()),
            Frame::Load(l) => {
                if let Some(p) = self.sh.peers.get(&from) {
                    *p.load.lock() = (l, Some(std::time::Instant::now()));
                }
            }
            Frame::Mig(w) => return self.queue(from, Vec::new(), Work::Mig(w)),
            Frame::Suspect(id) => self.sh.suspect(id),
        }
        false
    }

    fn peer_gone(&mut self, from: u16) {
        let name = self.sh.node_name(from);
        self.sh.fail_waiting(from, &format!("node {name} went down"));
        if let Some(q) = self.pending.remove(&from) {
            self.done(from, q.len());
            // Messages waiting for modules from it: lost (their numbers skipped).
            for (_, work) in q {
                if let Work::Op(op) = work {
                    self.sh.node().undeliverable(from, op, &format!("node {name} went down before it sent the code the message needs"));
                }
            }
        }
        self.sh.node().node_down(from);
    }

    /// Carries out work now, or queues it until its modules are here (true).
    fn queue(&mut self, from: u16, needs: Vec<ModuleHash>, work: Work) -> bool {
        let missing: Vec<ModuleHash> = needs.iter().copied().filter(|h| !self.vm().has_module(h)).collect();
        let q = self.pending.entry(from).or_default();
        if missing.is_empty() && q.is_empty() {
            self.run_work(from, work);
            return false;
        }
        q.push_back((needs, work));
        let ask: Vec<ModuleHash> = missing.into_iter().filter(|h| !self.asked.contains(h)).collect();
        if !ask.is_empty() {
            self.asked.extend(ask.iter().copied());
            self.sh.stats.module_requests.fetch_add(1, Ordering::Relaxed);
            let _ = self.sh.send_frame(from, &Frame::WantModules(ask));
        }
        true
    }

    fn drain(&mut self) {
        let vm = self.vm().clone();
        let froms: Vec<u16> = self.pending.keys().copied().collect();
        for from in froms {
            loop {
                let ready =
                    self.pending.get(&from).and_then(|q| q.front()).is_some_and(|(needs, _)| needs.iter().all(|h| vm.has_module(h)));
                if !ready {
                    break;
                }
                let Some((_, work)) = self.pending.get_mut(&from).and_then(VecDeque::pop_front) else { break };
                self.run_work(from, work);
                self.done(from, 1);
            }
        }
    }

    fn fail_needing(&mut self, bad: ModuleHash, why: &str) {
        let mut dropped = Vec::new();
        for (&from, q) in self.pending.iter_mut() {
            let mut keep = VecDeque::new();
            while let Some((needs, work)) = q.pop_front() {
                if !needs.contains(&bad) {
                    keep.push_back((needs, work));
                    continue;
                }
                dropped.push(from);
                match work {
                    Work::Op(Op::Spawn { req, from: parent, .. }) => {
                        let _ = self.sh.send_frame(from, &Frame::Vm(Op::Spawned { req, to: parent, result: Err(why.to_string()) }));
                    }
                    Work::SpawnMain { id, .. } => {
                        let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Spawned(Err(why.to_string())) });
                    }
                    Work::Op(op) => {
                        if !self.sh.node().undeliverable(from, op, why) {
                            self.sh.log(&format!("dropped a message from node {from}: {why}"));
                        }
                    }
                    Work::Mig(_) => self.sh.log(&format!("dropped a message from node {from}: {why}")),
                }
            }
            *q = keep;
        }
        for from in dropped {
            self.done(from, 1);
        }
    }

    fn run_work(&mut self, from: u16, work: Work) {
        match work {
            Work::Op(op) => receive_op(&self.sh, from, op),
            Work::SpawnMain { id, main, console } => {
                let r = if self.sh.accepting() {
                    match self.sh.node().process_limit_reached() {
                        Some(why) => Err(why),
                        None => self.sh.node().spawn_main_on(main, console, false).map_err(|e| e.to_string()),
                    }
                } else {
                    Err(format!("node {0} is drained: it takes no new processes (tern ctl undrain {0})", self.sh.me().name))
                };
                let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Spawned(r) });
            }
            Work::Mig(w) => migration::session_frame(&self.sh, from, w),
        }
    }
}
