//! What the forwarding mechanisms (`forwarding.rs`) need of a node besides routes: giving
//! a message back to its origin node (`resend`, and any node that no longer knows a
//! process a message came for), locating a process by asking every node, holding what
//! waits for the answer, path shortening's answer, and counting it all.
//!
//! A located process is asked for with [`Op::Locate`], sent to every other node; the
//! node that runs it answers [`Op::Located`] with its place, its move count and its
//! forwarding mechanism, and its birth node answers `None` if it has ended (a birth node
//! knows whether its processes live: it keeps a route, or `Away`, for each one that
//! left, until the node it ends on says `PidEnded`). Nobody else answers. The question is
//! asked again every [`LOCATE_RETRY`] (a process between two nodes is on neither for a
//! moment) until `NodeConfig::settle_timeout`; then what waited is lost, and its senders
//! told (see `remote.rs`, "Bounds").

use super::deliver::what;
use super::forwarding::{self, Forwarding, Step};
use super::remote::{Op, MAX_HOPS};
use super::slot::{Entry, Status};
use super::timers::LOCATE_SWEEP;
use super::{Ends, NodeInner, Origin, Pid, SentBy, Target};
use crate::message::Message;
use crate::value::{name_node, name_text};
use std::sync::atomic::{AtomicU64, Ordering};

/// How often an unanswered locate is asked again (node µs).
pub(super) const LOCATE_RETRY: u64 = 250_000;

/// Messages and ops that may wait for one process to be located (more are lost, their
/// senders told).
pub(super) const MAX_WAITING: usize = 100_000;

/// Where a place that is not known is written (an `Away` entry's node).
pub(super) const NOWHERE: u16 = u16::MAX;

/// A process being located, and what waits for it.
pub(crate) struct Locating {
    since: u64,
    asked: u64,
    waiting: Vec<Waiting>,
    /// What `waiting` holds, in bytes ([`Waiting::bytes`]), counted in the node's
    /// `locating_bytes` too.
    bytes: usize,
}

impl Locating {
    fn new(now: u64) -> Locating {
        Locating { since: now, asked: now, waiting: Vec::new(), bytes: 0 }
    }
}

impl Waiting {
    /// What it holds, roughly, in bytes: its message, and a little for itself.
    fn bytes(&self) -> usize {
        64 + match self {
            Waiting::Msg { msg: Some(m), .. } => m.approx_bytes(),
            _ => 0,
        }
    }
}

/// What waits for a process to be located.
pub(super) enum Waiting {
    /// A numbered message (`None`: a skip notice) for its inbox. `direct`: its birth
    /// node refused it (it does not know the place yet), so once located it goes
    /// straight there, whatever the mechanism.
    Msg { origin: Origin, seq: u64, hops: u8, from: SentBy, msg: Option<Message>, ends: Ends, direct: bool },
    /// An op about it (a kill, a link, a monitor, an exit signal).
    Op(Op),
}

/// Counts of the forwarding mechanisms' work on this node (see [`ForwardingStats`]).
#[derive(Default)]
pub(crate) struct FwdCounters {
    forwarded: AtomicU64,
    refused: AtomicU64,
    locates: AtomicU64,
    located: AtomicU64,
    shortened: AtomicU64,
    unlocated: AtomicU64,
}

/// What this node did for messages to processes that are not here (`Node::forwarding_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardingStats {
    /// Numbered messages that arrived here and were sent on to another node.
    pub forwarded: u64,
    /// Messages given back to their origin node (the process is not here, and this node
    /// keeps no route to it).
    pub refused: u64,
    /// Broadcasts sent to locate a process (one per node asked).
    pub locate_queries: u64,
    /// Processes located (answers that came).
    pub located: u64,
    /// Origin nodes told where a process is after one of their messages came a long way.
    pub shortened: u64,
    /// Messages and ops lost because their process could not be located in time.
    pub unlocated: u64,
}

impl NodeInner {
    pub(crate) fn forwarding_stats(&self) -> ForwardingStats {
        let c = &self.fwd_counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ForwardingStats {
            forwarded: l(&c.forwarded),
            refused: l(&c.refused),
            locate_queries: l(&c.locates),
            located: l(&c.located),
            shortened: l(&c.shortened),
            unlocated: l(&c.unlocated),
        }
    }

    pub(super) fn count_forwarded(&self) {
        self.fwd_counters.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs one step of a message's way (`TERN_TRACE_ROUTES`).
    pub(super) fn trace_route(&self, pid: Pid, origin: Origin, seq: u64, hops: u8, what: &str) {
        if self.config.trace_routes {
            self.console.failed(
                0,
                &format!("route <pid {}> #{seq} from node {} hop {hops} at node {}: {what}", name_text(pid), origin.node, self.name),
            );
        }
    }

    /// Whether this node is `pid`'s birth node and knows only that it lives elsewhere.
    pub(super) fn is_away(&self, pid: Pid) -> bool {
        matches!(self.procs.get(pid), Some(Entry::Away(..)))
    }

    /// Gives message number `seq` for process `pid`, which reached this node though the
    /// process is not here and this node keeps no route to it, back to its origin node.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse(&self, pid: Pid, origin: Origin, seq: u64, hops: u8, from: SentBy, msg: Option<Message>) {
        self.fwd_counters.refused.fetch_add(1, Ordering::Relaxed);
        self.trace_route(pid, origin, seq, hops, "refused: not here, no route; given back to its origin node");
        if origin.node == self.id {
            self.refused(self.id, pid, origin, seq, hops, from, msg);
            return;
        }
        let op = Op::Refused { pid, origin, seq, hops, from, msg };
        if let Err(e) = self.remote_send(origin.node, op) {
            self.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
            self.log_lost(Target::Inbox(pid), &format!("it could not be given back to node {}: {e}", origin.node));
        }
    }

    /// Node `refuser` gave back a message from here for process `pid`: the route that led
    /// there goes, and the message is sent again by the birth node, or after locating
    /// the process ([`forwarding::after_refusal`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn refused(&self, refuser: u16, pid: Pid, origin: Origin, seq: u64, hops: u8, from: SentBy, msg: Option<Message>) {
        if origin != self.origin() {
            // From an earlier start of this node: its sender is gone.
            self.log_lost(Target::Inbox(pid), &format!("it was given back by node {refuser} after this node restarted"));
            return;
        }
        let hops = hops.saturating_add(1);
        if hops > MAX_HOPS {
            self.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
            if msg.is_some() {
                self.report_lost(origin, from, Target::Inbox(pid), format!("it was refused or forwarded {MAX_HOPS} times"));
            }
            return;
        }
        let route = self.forget_route_to(pid, refuser);
        let birth = name_node(pid);
        match forwarding::after_refusal(route, refuser, birth) {
            Step::Forward(b) if b != self.id && self.node(b).is_none() => {
                self.trace_route(pid, origin, seq, hops, &format!("given back by node {refuser}: sent again by its birth node {b}"));
                if let Err(e) = self.send_remote(b, Target::Inbox(pid), from, msg.clone(), Vec::new(), Some((origin, seq, hops))) {
                    self.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
                    if msg.is_some() {
                        self.report_lost(origin, from, Target::Inbox(pid), e);
                    }
                }
            }
            _ => self.locate_then(pid, Waiting::Msg { origin, seq, hops, from, msg, ends: Vec::new(), direct: refuser == birth }),
        }
    }

    /// Forgets this node's route to `pid` if it points at `node` (which does not have the
    /// process), and the place a birth node last learned (`Away`); returns the mechanism
    /// of the route this node had, if any.
    fn forget_route_to(&self, pid: Pid, node: u16) -> Option<Forwarding> {
        let mut shard = self.procs.shard(pid).lock();
        match shard.get(&pid) {
            Some(&Entry::Away(n, m)) => {
                if n == node {
                    shard.insert(pid, Entry::Away(NOWHERE, m));
                }
                None
            }
            Some(&Entry::Moved(n, m, f)) => {
                if n == node {
                    if name_node(pid) == self.id {
                        // The birth node knows it lives; where, it will learn.
                        shard.insert(pid, Entry::Away(NOWHERE, m));
                    } else {
                        shard.remove(&pid);
                    }
                }
                Some(f)
            }
            _ => None,
        }
    }

    /// Holds `w` until process `pid` is located, asking every node where it is unless a
    /// question is out already.
    pub(super) fn locate_then(&self, pid: Pid, w: Waiting) {
        if let Some(here) = self.here(pid) {
            // It is here (it came back while the message was away).
            {
                let mut l = self.locating.lock();
                let e = l.entry(pid).or_insert_with(|| Locating::new(0));
                e.bytes += w.bytes();
                self.locating_bytes.fetch_add(w.bytes(), Ordering::SeqCst);
                e.waiting.push(w);
            }
            self.on_located(pid, Some(here));
            return;
        }
        let now = self.now_us();
        let ask = {
            let mut l = self.locating.lock();
            let fresh = !l.contains_key(&pid);
            let size = w.bytes();
            let held = self.locating_bytes.load(Ordering::SeqCst);
            if held + size > self.config.held_limit_bytes {
                drop(l);
                let why = format!(
                    "node {} holds {} of messages waiting for processes to be located, its limit ([limits] held_bytes = {})",
                    self.name,
                    super::deliver::bytes_text(held),
                    self.config.held_limit_bytes
                );
                self.lose(pid, w, &why);
                return;
            }
            let e = l.entry(pid).or_insert_with(|| Locating::new(now));
            if e.waiting.len() >= MAX_WAITING {
                drop(l);
                self.lose(pid, w, &format!("more than {MAX_WAITING} messages waited for it to be located"));
                return;
            }
            e.bytes += size;
            self.locating_bytes.fetch_add(size, Ordering::SeqCst);
            e.waiting.push(w);
            fresh
        };
        if ask {
            self.ask_where(pid);
            self.schedule_at(now + LOCATE_RETRY, LOCATE_SWEEP);
        }
    }

    fn ask_where(&self, pid: Pid) {
        let Some(r) = self.remote() else { return };
        for n in r.peers() {
            if n != self.id && self.node(n).is_none() && r.send(n, Op::Locate { pid }).is_ok() {
                self.fwd_counters.locates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether process `pid` runs here (or is here, frozen, before its commit: what is
    /// sent here then goes with it): its place, move count and mechanism.
    fn here(&self, pid: Pid) -> Option<(u16, u32, Forwarding)> {
        match self.procs.get(pid) {
            Some(Entry::Live(slot)) => {
                let st = slot.st.lock();
                (st.import.is_none() && !matches!(st.status, Status::Exited | Status::Moved)).then_some((self.id, st.moves, st.fwd))
            }
            _ => None,
        }
    }

    /// Node `from` asks where process `pid` is: answered if it is here ([`Self::here`]),
    /// or if it was born here and has ended.
    pub(crate) fn on_locate(&self, from: u16, pid: Pid) {
        let answer = match self.here(pid) {
            Some(at) => Some(Some(at)),
            None if name_node(pid) == self.id && self.procs.get(pid).is_none() => Some(None),
            None => None,
        };
        if let Some(at) = answer {
            let _ = self.remote_send(from, Op::Located { pid, at });
        }
    }

    /// The answer to a locate: what waited goes there (`at`: node, moves, mechanism), or
    /// is dropped as for any process that has ended (`None`).
    pub(crate) fn on_located(&self, pid: Pid, at: Option<(u16, u32, Forwarding)>) {
        if let Some((n, moves, f)) = at {
            if n != self.id {
                self.pid_moved(pid, n, moves, f);
            }
        }
        let Some(l) = self.locating.lock().remove(&pid) else { return };
        self.locating_bytes.fetch_sub(l.bytes, Ordering::SeqCst);
        self.fwd_counters.located.fetch_add(1, Ordering::Relaxed);
        for w in l.waiting {
            match (w, at) {
                (Waiting::Msg { origin, seq, hops, from, msg, ends, direct }, Some((n, _, f))) => {
                    // (At the birth node itself: straight there.)
                    let to = if f.direct() || direct || name_node(pid) == self.id { n } else { name_node(pid) };
                    self.trace_route(pid, origin, seq, hops, &format!("located on node {n}: sent to node {to}"));
                    if to == self.id || self.node(to).is_some() {
                        self.forward(Target::Inbox(pid), origin, seq, hops, from, msg, ends);
                    } else if let Err(e) =
                        self.send_remote(to, Target::Inbox(pid), from, msg.clone(), ends, Some((origin, seq, hops.saturating_add(1))))
                    {
                        self.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
                        if msg.is_some() {
                            self.report_lost(origin, from, Target::Inbox(pid), e);
                        }
                    }
                }
                (Waiting::Op(op), Some((n, _, _))) => {
                    if n == self.id {
                        self.receive(self.id, op);
                    } else {
                        let _ = self.remote_send(n, op);
                    }
                }
                (Waiting::Msg { ends, .. }, None) => self.drop_ends(&ends),
                (Waiting::Op(op), None) => self.no_such_process(op),
            }
        }
    }

    /// Asks again for the processes not located yet, and gives up on those asked for
    /// longer than the settle timeout. Run by the timer thread.
    pub(super) fn sweep_locating(&self) {
        let now = self.now_us();
        let limit = self.config.settle_timeout.as_micros() as u64;
        let (mut again, mut lost) = (Vec::new(), Vec::new());
        {
            let mut l = self.locating.lock();
            l.retain(|&pid, e| {
                if now.saturating_sub(e.since) >= limit {
                    lost.push((pid, std::mem::take(&mut e.waiting)));
                    self.locating_bytes.fetch_sub(e.bytes, Ordering::SeqCst);
                    return false;
                }
                if now.saturating_sub(e.asked) >= LOCATE_RETRY {
                    e.asked = now;
                    again.push(pid);
                }
                true
            });
            if !l.is_empty() {
                drop(l);
                self.schedule_at(now + LOCATE_RETRY, LOCATE_SWEEP);
            }
        }
        for pid in again {
            match self.here(pid) {
                // It came here meanwhile: what waited is queued here.
                Some(here) => self.on_located(pid, Some(here)),
                None => self.ask_where(pid),
            }
        }
        let secs = self.config.settle_timeout.as_secs_f64();
        for (pid, waiting) in lost {
            for w in waiting {
                self.lose(pid, w, &format!("no node said it has <pid {}> within {secs} s", name_text(pid)));
            }
        }
    }

    fn lose(&self, pid: Pid, w: Waiting, why: &str) {
        self.fwd_counters.unlocated.fetch_add(1, Ordering::Relaxed);
        match w {
            Waiting::Msg { origin, from, msg, ends, .. } => {
                self.drop_ends(&ends);
                if msg.is_some() {
                    self.report_lost(origin, from, Target::Inbox(pid), why.to_string());
                }
            }
            Waiting::Op(op) => {
                self.console.failed(0, &format!("node {}: {op:?} about {} was not carried out: {why}", self.name, what(Target::Inbox(pid))))
            }
        }
    }

    /// Path shortening: the origin node of a message that came to process `pid` here a
    /// long way learns where it is (once per origin node per stay).
    pub(super) fn shorten(&self, pid: Pid, origin: u16, moves: u32, f: Forwarding) {
        self.fwd_counters.shortened.fetch_add(1, Ordering::Relaxed);
        let _ = self.remote_send(origin, Op::PidMoved { pid, node: self.id, moves, fwd: f });
    }
}
