//! Nodes in other OS processes (other machines): what this node tells them, and what it
//! does with what they tell it.
//!
//! The VM knows nothing of sockets: a host that connects nodes (the `tern node` of
//! `tern-net`) gives the node a [`Remote`] to send [`Op`]s with, and hands every op a
//! peer sent to [`super::Node::receive`]. The host delivers ops between two nodes
//! exactly once and in order (its session protocol); everything here relies on that.
//!
//! **Where things are.** A process lives on the node that spawned it (`spawn_on` starts
//! it on the chosen node, under a pid born there), so a pid's node is in its name —
//! unless it was moved (`transfer.rs`): then the node it left keeps a forwarding pointer
//! (`Entry::Moved`), its birth node is told where it went (`Op::PidMoved`), and the host
//! tells the nodes that send to it (a link update, [`super::Node::apply_link_update`]),
//! after which the node it left may forget it ([`super::Node::drop_forwarding`]): a
//! node with no entry for a pid asks its birth node, which always has the newest route.
//! A channel's receive end can travel: in messages and spawn arguments, to any node, and
//! with a process that moves. The node it leaves keeps a *forwarding pointer* (the node
//! it went to, and how many moves the end had made); the channel's birth node and the
//! nodes holding send ends of it (its *partners*, which the hosting node keeps, and
//! hands on with the end) are told the new place, so a sender goes straight there. A
//! process's routes are versioned the same way, by the number of moves it has made.
//! Routes and pointers are only ever replaced by ones with more moves, so following
//! them always goes forward and never loops (and forwarding is bounded by
//! [`MAX_FORWARDS`]).
//!
//! **Order.** A message sent from another node, to a channel or to a process's inbox,
//! carries its origin node and a sequence number per (origin, target): a node numbers
//! its messages to a target once it has sent one to it while the target was on another
//! node — all later ones, local ones included (it keeps one counter map for channels
//! and one for pids). The node where the receive end (or the process) is puts messages
//! from each origin in the mailbox in sequence order, holding back one that overtook an
//! earlier one (which a message on a forwarding path and a later one sent straight to
//! the new place can do) and dropping a number already passed. The expected numbers
//! and the messages held back travel with the receive end, and for an inbox with the
//! process (its image, and [`super::Late`] at commit); numbered messages that reach a
//! process while it is being imported wait for the commit's state. A numbered message
//! is queued under the slot lock of the process that has it, which moving it away also
//! needs, so the state that travels always matches what was queued; a number is
//! assigned where the message is queued or handed to the link (so one the link refuses
//! uses none, and no gap holds back the rest) and kept however far the message is
//! forwarded. So messages from one sender are never reordered, however often the end
//! or the process moves. (A node that restarts numbers from 0 again: its host calls
//! [`super::Node::forget_origin`].)

use super::{ChanId, ExitReason, NodeInner, Pid, Status, Target, Task};
use crate::message::Message;
use crate::process::{IoResult, Process, SpawnSpec};
use crate::value::{name_node, name_text};
use crossbeam_deque::Worker;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// How a node reaches nodes in other OS processes. Provided by the host.
pub trait Remote: Send + Sync {
    /// Queues `op` for node `to`, to be delivered exactly once, after every op queued for
    /// it before. An error says why it cannot (an unknown node, a full link).
    fn send(&self, to: u16, op: Op) -> Result<(), String>;
    /// A node's id by name.
    fn node_id(&self, name: &str) -> Option<u16>;
    /// A node's name by id.
    fn node_name(&self, id: u16) -> Option<String>;
    /// The names of the nodes that are up, this one included, in config order.
    fn live_nodes(&self) -> Vec<String>;
    /// Starts migrating process `pid` to node `to` with the default mechanism. `caller`:
    /// a process parked in `migrate(pid, node)` waiting for the outcome, answered with
    /// [`super::Node::answer_migrate`]; `None`: `pid` moves itself (`migrate(node)`) and
    /// waits parked in the call — answered only if the move fails (on success the call
    /// runs again on the new node). An error: it cannot start.
    fn migrate(&self, pid: Pid, to: u16, caller: Option<Pid>) -> Result<(), String> {
        let _ = (pid, to, caller);
        Err("this node cannot migrate processes".into())
    }
}

/// Most hops a message is forwarded before it is dropped (a pointer chain this long
/// means the end moved faster than the message; it cannot loop).
pub const MAX_FORWARDS: u8 = 32;

/// Messages held back per channel, waiting for an earlier one from the same origin.
const MAX_HELD: usize = 100_000;

/// What one node tells another. Flat data (no recursive types), for postcard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A message for a process's inbox or a channel.
    Deliver(Deliver),
    /// Start a process here; reply with [`Op::Spawned`] to `from`.
    Spawn {
        req: u64,
        from: Pid,
        spec: SpawnSpec,
        carried: Vec<Carried>,
    },
    /// The answer to [`Op::Spawn`].
    Spawned {
        req: u64,
        to: Pid,
        result: Result<Pid, String>,
    },
    Kill {
        pid: Pid,
        reason: String,
    },
    /// Link `pid` (here) with `from` (there).
    Link {
        pid: Pid,
        from: Pid,
    },
    /// `watcher` (there) monitors `pid` (here).
    Monitor {
        pid: Pid,
        watcher: Pid,
    },
    /// Linked process `from` ended.
    Exit {
        to: Pid,
        from: Pid,
        reason: String,
        normal: bool,
    },
    /// Monitored process `from` ended.
    Down {
        to: Pid,
        from: Pid,
        reason: String,
    },
    /// A channel's receive end is now on `node`, after `moves` moves.
    RxMoved {
        chan: ChanId,
        node: u16,
        moves: u32,
    },
    /// Node `node` holds send ends of `chan` (to the node hosting its receive end).
    Partner {
        chan: ChanId,
        node: u16,
    },
    /// A process born on the receiving node is now on `node`, after `moves` moves.
    PidMoved {
        pid: Pid,
        node: u16,
        moves: u32,
    },
}

/// A message on its way to a process or channel on another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliver {
    pub target: Target,
    /// The node the message was sent from, and its number from there (per origin and
    /// target; see "Order").
    pub origin: u16,
    pub seq: u64,
    /// Times forwarded so far.
    pub hops: u8,
    pub msg: Message,
    /// Receive ends the message carries, with their queues.
    pub carried: Vec<Carried>,
}

/// A receive end travelling to another node, with everything its host kept about it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Carried {
    pub chan: ChanId,
    pub queue: Vec<Message>,
    pub moves: u32,
    pub partners: Vec<u16>,
    /// Per origin node: the sequence number of the next message expected from it.
    pub expect: Vec<(u16, u64)>,
    /// Messages that arrived ahead of their turn: (origin, seq, message).
    pub held: Vec<(u16, u64, Message)>,
}

/// What the hosting node keeps about a receive end that has been or may be remote.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChanMeta {
    moves: u32,
    partners: Vec<u16>,
    expect: Vec<(u16, u64)>,
    held: Vec<(u16, u64, Message)>,
}

impl ChanMeta {
    pub(crate) fn partners(&self) -> &[u16] {
        &self.partners
    }
    pub(crate) fn moves(&self) -> u32 {
        self.moves
    }
    /// The sequence state: expected numbers per origin, and messages held back.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_order(self) -> (Vec<(u16, u64)>, Vec<(u16, u64, Message)>) {
        (self.expect, self.held)
    }
}

/// Puts message number `seq` from node `origin` in sequence, given the next number
/// expected from each origin and the messages held back: returns the messages that can
/// be queued now (this one and any held back behind it), in order. A number already
/// passed is a duplicate, dropped; at most [`MAX_HELD`] messages are held back.
fn sequence(expect: &mut Vec<(u16, u64)>, held: &mut Vec<(u16, u64, Message)>, origin: u16, seq: u64, msg: Message) -> Vec<Message> {
    let i = match expect.iter().position(|(o, _)| *o == origin) {
        Some(i) => i,
        None => {
            expect.push((origin, 0));
            expect.len() - 1
        }
    };
    let next = expect[i].1;
    if seq < next {
        return Vec::new(); // already delivered
    }
    if seq > next {
        if held.len() < MAX_HELD {
            held.push((origin, seq, msg));
        }
        return Vec::new();
    }
    let mut out = vec![msg];
    let mut n = next.wrapping_add(1);
    while let Some(j) = held.iter().position(|(o, s, _)| *o == origin && *s == n) {
        out.push(held.swap_remove(j).2);
        n = n.wrapping_add(1);
    }
    expect[i].1 = n;
    out
}

/// The sequence state of a process's inbox (see "Order"), kept in its slot and carried
/// with it: in its image, and in [`super::Late`] for what changed after the image.
#[derive(Debug, Default)]
pub(crate) struct InboxOrder {
    /// Per origin node: the number of the next message expected from it.
    pub(crate) expect: Vec<(u16, u64)>,
    /// Messages that arrived ahead of their turn: (origin, seq, message).
    pub(crate) held: Vec<(u16, u64, Message)>,
    /// Numbered messages that reached the process while it was being imported here
    /// (the state they are ordered by comes with the commit); `carried` stays empty (the
    /// ends they carried are in the mailbox already).
    pub(crate) waiting: Vec<Arriving>,
}

impl InboxOrder {
    /// See [`sequence`].
    pub(crate) fn put(&mut self, origin: u16, seq: u64, msg: Message) -> Vec<Message> {
        sequence(&mut self.expect, &mut self.held, origin, seq, msg)
    }

    /// Takes over the state that came with the process (from its image or its commit).
    pub(crate) fn set(&mut self, expect: Vec<(u16, u64)>, mut held: Vec<(u16, u64, Message)>) {
        held.truncate(MAX_HELD);
        self.expect = expect;
        self.held = held;
    }

    /// The nodes that have sent numbered messages to this inbox.
    pub(crate) fn origins(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.expect.iter().map(|(o, _)| *o).chain(self.held.iter().map(|(o, _, _)| *o)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Node `origin` restarted: what it numbered before is of no use any more.
    fn forget(&mut self, origin: u16) {
        self.expect.retain(|(o, _)| *o != origin);
        self.held.retain(|(o, _, _)| *o != origin);
    }
}

/// A numbered message for a receive end that is in a process being imported here.
#[derive(Debug, Clone)]
pub(crate) struct Arriving {
    pub(crate) origin: u16,
    pub(crate) seq: u64,
    pub(crate) hops: u8,
    pub(crate) msg: Message,
    pub(crate) carried: Vec<(ChanId, VecDeque<Message>)>,
}

/// Where the mesh knows a receive end to be, seen from a node that does not host it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxPlace {
    node: u16,
    moves: u32,
}

impl RxPlace {
    pub(crate) fn new(node: u16, moves: u32) -> RxPlace {
        RxPlace { node, moves }
    }
    pub(crate) fn node(&self) -> u16 {
        self.node
    }
}

impl NodeInner {
    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.get()
    }

    /// The node (not in this OS process) a pid's process is on, if it is elsewhere.
    pub(crate) fn remote_node_of(&self, pid: Pid) -> Option<u16> {
        self.remote()?;
        match self.procs.get(pid) {
            Some(super::Entry::Moved(n, _)) if self.node(n).is_none() => Some(n),
            Some(_) => None,
            None => {
                let b = name_node(pid);
                (b != self.id && self.node(b).is_none()).then_some(b)
            }
        }
    }

    /// The node to send a message for channel `c` to, when no process here holds it:
    /// where it was last seen to go, else its birth node. `None`: it is nowhere (the
    /// channel is gone).
    pub(crate) fn remote_rx_node(&self, c: ChanId) -> Option<u16> {
        self.remote()?;
        if let Some(p) = self.rx_places.get(c) {
            return Some(p.node);
        }
        let b = name_node(c);
        (b != self.id && self.node(b).is_none()).then_some(b)
    }

    pub(crate) fn remote_send(&self, to: u16, op: Op) -> Result<(), String> {
        match self.remote() {
            Some(r) => r.send(to, op),
            None => Err("this node is not part of a mesh".into()),
        }
    }

    /// Sends a message to `target` on node `to`, carrying `carried` (receive ends taken
    /// from the sender) along, and records where those ends went. `origin`: the origin,
    /// number and hops of a message already numbered; else it gets the next number from
    /// here, used up only if the message leaves (a gap would hold back every later
    /// message from here to the target for ever): the counter is held meanwhile.
    pub(crate) fn send_remote(
        &self,
        to: u16,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        origin: Option<(u16, u64, u8)>,
    ) -> Result<(), String> {
        if let Some((origin, seq, hops)) = origin {
            return self.send_deliver(to, Deliver { target, origin, seq, hops, msg, carried: Vec::new() }, carried);
        }
        let (counters, k) = match target {
            Target::Chan(c) => (&self.seqs, c),
            Target::Inbox(p) => (&self.pid_seqs, p),
        };
        let mut shard = counters.shard(k).lock();
        let next = shard.entry(k).or_insert(0);
        let r = self.send_deliver(to, Deliver { target, origin: self.id, seq: *next, hops: 0, msg, carried: Vec::new() }, carried);
        if r.is_ok() {
            *next += 1;
        }
        r
    }

    fn send_deliver(&self, to: u16, mut d: Deliver, carried: Vec<(ChanId, VecDeque<Message>)>) -> Result<(), String> {
        d.carried = self.carry_away(to, carried);
        self.announce_tx(to, &d.msg);
        let moved: Vec<(ChanId, u32, Vec<u16>)> = d.carried.iter().map(|c| (c.chan, c.moves, c.partners.clone())).collect();
        let r = self.remote_send(to, Op::Deliver(d));
        self.announce_moves(to, &moved);
        r
    }

    pub(crate) fn next_seq(&self, c: ChanId) -> u64 {
        let mut shard = self.seqs.shard(c).lock();
        let n = shard.entry(c).or_insert(0);
        let s = *n;
        *n += 1;
        s
    }

    /// The number of the next message from this node to process `pid`'s inbox (a map of
    /// its own: a hostile peer could name a pid that is a channel id).
    pub(crate) fn next_pid_seq(&self, pid: Pid) -> u64 {
        let mut shard = self.pid_seqs.shard(pid).lock();
        let n = shard.entry(pid).or_insert(0);
        let s = *n;
        *n += 1;
        s
    }

    /// Turns receive ends leaving for node `to` into what travels with them, leaving a
    /// forwarding pointer here.
    fn carry_away(&self, to: u16, carried: Vec<(ChanId, VecDeque<Message>)>) -> Vec<Carried> {
        carried
            .into_iter()
            .map(|(chan, q)| {
                let meta = self.chan_meta.remove(chan).unwrap_or_default();
                let moves = meta.moves + 1;
                // The pointer before the holder goes, so a sender always finds one or the other.
                self.rx_places.insert(chan, RxPlace { node: to, moves });
                self.set_holder(chan, None);
                let mut partners = meta.partners;
                if !partners.contains(&self.id) {
                    partners.push(self.id);
                }
                Carried { chan, queue: q.into(), moves, partners, expect: meta.expect, held: meta.held }
            })
            .collect()
    }

    /// Tells the birth nodes and partners of receive ends that went to `to` where they are.
    pub(crate) fn announce_moves(&self, to: u16, moved: &[(ChanId, u32, Vec<u16>)]) {
        for (chan, moves, partners) in moved {
            let (chan, moves) = (*chan, *moves);
            let mut told = vec![self.id, to];
            let birth = name_node(chan);
            for n in std::iter::once(birth).chain(partners.iter().copied()) {
                if !told.contains(&n) && self.node(n).is_none() {
                    told.push(n);
                    let _ = self.remote_send(n, Op::RxMoved { chan, node: to, moves });
                }
            }
        }
    }

    /// A message going to node `to` carries send ends: `to` becomes a partner of each
    /// (the node hosting the receive end, once told, tells `to` when it moves).
    fn announce_tx(&self, to: u16, msg: &Message) {
        for c in msg.tx_ends() {
            if let Some(host) = self.rx_host(c) {
                if host == to {
                    continue;
                }
                if host == self.id {
                    self.add_partner(c, to);
                } else {
                    let _ = self.remote_send(host, Op::Partner { chan: c, node: to });
                }
            }
        }
    }

    /// The node hosting a channel's receive end, as far as this node knows.
    fn rx_host(&self, c: ChanId) -> Option<u16> {
        if self.holder(c).is_some() {
            return Some(self.id);
        }
        self.remote_rx_node(c)
    }

    fn add_partner(&self, c: ChanId, node: u16) {
        let mut shard = self.chan_meta.shard(c).lock();
        let meta = shard.entry(c).or_default();
        if !meta.partners.contains(&node) {
            meta.partners.push(node);
        }
    }

    /// Carries out an op from node `from`.
    pub(crate) fn receive(&self, from: u16, op: Op) {
        match op {
            Op::Deliver(d) => self.receive_deliver(d),
            Op::Spawn { req, from: parent, spec, carried } => {
                let result = self.spawn_from(&spec, carried);
                let _ = self.remote_send(from, Op::Spawned { req, to: parent, result });
            }
            Op::Spawned { req, to, result } => {
                self.pending_spawns.lock().remove(&req);
                let r = match result {
                    Ok(pid) => IoResult::Spawned(pid),
                    Err(e) => IoResult::Failed(e),
                };
                self.complete_io(to, r);
            }
            Op::Kill { pid, reason } => self.kill(pid, reason),
            Op::Link { pid, from: other } => {
                let alive = self
                    .with_live(pid, |_, _, st| {
                        if !st.links.contains(&other) {
                            st.links.push(other);
                        }
                    })
                    .is_some();
                if !alive && !self.pass_on(from, pid, Op::Link { pid, from: other }) {
                    let to = self.remote_node_of(other).unwrap_or(from);
                    let _ = self.remote_send(to, Op::Exit { to: other, from: pid, reason: "noproc".into(), normal: false });
                }
            }
            Op::Monitor { pid, watcher } => {
                if self.with_live(pid, |_, _, st| st.watchers.push(watcher)).is_none()
                    && !self.pass_on(from, pid, Op::Monitor { pid, watcher })
                {
                    let to = self.remote_node_of(watcher).unwrap_or(from);
                    let _ = self.remote_send(to, Op::Down { to: watcher, from: pid, reason: "noproc".into() });
                }
            }
            Op::Exit { to, from: p, reason, normal } => {
                let reason = if normal { ExitReason::Normal } else { ExitReason::Killed(reason) };
                self.exit_signal(to, p, &reason);
            }
            Op::Down { to, from: p, reason } => {
                self.forget_monitor(from, to, p);
                let _ = self.deliver(Target::Inbox(to), super::event_message("down", p, &reason), Vec::new(), None);
            }
            Op::RxMoved { chan, node, moves } => self.rx_moved(chan, node, moves),
            Op::PidMoved { pid, node, moves } => self.pid_moved(pid, node, moves),
            Op::Partner { chan, node } => {
                if self.holder(chan).is_some() {
                    self.add_partner(chan, node);
                } else if let Some(n) = self.remote_rx_node(chan) {
                    if n != from {
                        let _ = self.remote_send(n, Op::Partner { chan, node });
                    }
                }
            }
        }
    }

    fn receive_deliver(&self, d: Deliver) {
        let Deliver { target, origin, seq, hops, msg, carried } = d;
        // The receive ends it carries come here with it (marked as arriving until their
        // new holder has them).
        let ends: Vec<(ChanId, VecDeque<Message>)> = carried.into_iter().map(|c| self.adopt_meta(c)).collect();
        match target {
            Target::Chan(c) => {
                if hops >= MAX_FORWARDS {
                    self.log_drop(target, "forwarded too many times");
                    self.drop_ends(&ends);
                    return;
                }
                let _ = self.route_numbered(c, origin, Some(seq), hops + 1, msg, ends, None);
            }
            Target::Inbox(pid) => {
                if hops >= MAX_FORWARDS {
                    self.log_drop(target, "forwarded too many times");
                    self.drop_ends(&ends);
                    return;
                }
                match self.route_inbox(pid, origin, Some(seq), hops + 1, msg, ends, None) {
                    Err(super::DeliverError::Full(p)) => self.log_drop(Target::Inbox(p), "its mailbox is full"),
                    Err(super::DeliverError::Unreachable(_)) => self.log_drop(target, "its node cannot be reached"),
                    Ok(_) => {}
                }
            }
        }
    }

    /// Delivers message number `seq` from node `origin` to process `pid`'s inbox wherever
    /// the process is: into its slot here, in sequence (under the slot lock, which moving
    /// it away needs), set aside while it is being imported here, or on to where it went,
    /// keeping its number. `seq` `None`: a message from here, numbered where it is queued
    /// or sent (so a message that goes nowhere uses no number). `hops`: times it has been
    /// forwarded. A message in its turn that finds the mailbox full is dropped (its number
    /// used up) and `Full` returned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_inbox(
        &self,
        pid: Pid,
        origin: u16,
        seq: Option<u64>,
        hops: u8,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, super::DeliverError> {
        let mut tries = 0u32;
        loop {
            // It is in the middle of a move: look again shortly.
            if !self.look_again(&mut tries, Target::Inbox(pid), "its process did not settle", &carried) {
                return Ok(None);
            }
            if let Some(n) = self.remote_node_of(pid) {
                return self
                    .send_remote(n, Target::Inbox(pid), msg, carried, seq.map(|s| (origin, s, hops)))
                    .map(|()| Some(pid))
                    .map_err(super::DeliverError::Unreachable);
            }
            let Some((node, slot)) = self.find(pid) else {
                self.drop_ends(&carried);
                return Ok(None);
            };
            let mut st = slot.st.lock();
            match st.status {
                Status::Moved => continue,
                Status::Exited => {
                    drop(st);
                    self.drop_ends(&carried);
                    return Ok(None);
                }
                _ => {}
            }
            let seq = seq.unwrap_or_else(|| self.next_pid_seq(pid));
            let full = carried.is_empty() && st.mailbox.bytes + msg.approx_bytes() > self.config.mailbox_limit_bytes;
            for (c, q) in carried {
                st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                st.mailbox.chans.push((c, q));
                self.set_holder(c, Some(pid));
                self.rx_places.remove(c);
            }
            if st.import.is_some() {
                // Its sequence state comes with the commit; the message waits for it.
                if st.order.waiting.len() < MAX_HELD {
                    st.order.waiting.push(Arriving { origin, seq, hops, msg, carried: Vec::new() });
                }
                return Ok(Some(pid));
            }
            let mut ready = st.order.put(origin, seq, msg);
            let dropped = full && !ready.is_empty();
            if dropped {
                ready.remove(0); // its turn, but no room: dropped, and its number used
            }
            let mut bytes = 0;
            for m in ready {
                bytes += m.approx_bytes();
                st.mailbox.inbox.push_back(m);
            }
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&super::Source::Inbox) {
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
            }
            return if dropped { Err(super::DeliverError::Full(pid)) } else { Ok(Some(pid)) };
        }
    }

    /// Counts one more look at a target in the middle of a move, yielding between looks;
    /// false once it has been looked at too often (the message is dropped and logged,
    /// and the receive ends it carried with it).
    fn look_again(&self, tries: &mut u32, target: Target, why: &str, carried: &[(ChanId, VecDeque<Message>)]) -> bool {
        *tries += 1;
        if *tries > 1 {
            if *tries > 200_000 {
                self.log_drop(target, why);
                self.drop_ends(carried);
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// Delivers message number `seq` from node `origin` for channel `c` wherever its
    /// receive end is: into the holder's queue here, in sequence (atomically with the end
    /// leaving, under the holder's slot lock), or on to where the end went, keeping its
    /// number (`None`: as [`NodeInner::route_inbox`]). `hops`: times it has been forwarded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_numbered(
        &self,
        c: ChanId,
        origin: u16,
        seq: Option<u64>,
        hops: u8,
        mut msg: Message,
        mut carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, super::DeliverError> {
        let mut tries = 0u32;
        loop {
            // The end is leaving or arriving: look again shortly.
            if !self.look_again(&mut tries, Target::Chan(c), "its receive end did not settle", &carried) {
                return Ok(None);
            }
            if let Some(pid) = self.holder(c) {
                match self.enqueue_numbered(pid, c, origin, seq, msg, carried, local) {
                    Ok(()) => return Ok(Some(pid)),
                    Err((m, cr)) => {
                        msg = m;
                        carried = cr;
                        continue;
                    }
                }
            }
            if self.chan_meta.contains(c) {
                continue; // arriving
            }
            // Its end is in a process being imported here: the message waits for it.
            {
                let mut shard = self.arriving.shard(c).lock();
                if let Some(waiting) = shard.get_mut(&c) {
                    let seq = seq.unwrap_or_else(|| self.next_seq(c));
                    waiting.push(Arriving { origin, seq, hops, msg, carried });
                    return Ok(None);
                }
            }
            return match self.remote_rx_node(c) {
                Some(n) => self
                    .send_remote(n, Target::Chan(c), msg, carried, seq.map(|s| (origin, s, hops)))
                    .map(|()| None)
                    .map_err(super::DeliverError::Unreachable),
                None => {
                    self.drop_ends(&carried);
                    Ok(None)
                }
            };
        }
    }

    /// Queues a numbered message (and the ends it carries) at local holder `pid` of `c`,
    /// in sequence; gives them back if `pid` no longer holds `c` here.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn enqueue_numbered(
        &self,
        pid: Pid,
        c: ChanId,
        origin: u16,
        seq: Option<u64>,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<(), (Message, Vec<(ChanId, VecDeque<Message>)>)> {
        let Some(slot) = self.local_slot(pid) else { return Err((msg, carried)) };
        let mut st = slot.st.lock();
        if matches!(st.status, Status::Moved | Status::Exited) || !st.mailbox.holds(c) {
            return Err((msg, carried));
        }
        // The end cannot leave while this lock is held (taking it away needs it).
        let seq = seq.unwrap_or_else(|| self.next_seq(c));
        let ready = self.in_order(c, origin, seq, msg);
        let mut bytes = 0;
        if let Some(q) = st.mailbox.chan(c) {
            for m in ready {
                bytes += m.approx_bytes();
                q.push_back(m);
            }
        }
        st.mailbox.bytes += bytes;
        for (c2, q2) in carried {
            st.mailbox.bytes += q2.iter().map(Message::approx_bytes).sum::<usize>();
            st.mailbox.chans.push((c2, q2));
            self.set_holder(c2, Some(pid));
            self.rx_places.remove(c2);
        }
        if st.status == Status::Waiting && st.wait.contains(&super::Source::Chan(c)) {
            self.wake_locked(pid, &slot, &mut st, local);
        }
        Ok(())
    }

    pub(crate) fn drop_ends(&self, ends: &[(ChanId, VecDeque<Message>)]) {
        for (c, _) in ends {
            self.set_holder(*c, None);
            self.chan_meta.remove(*c);
        }
    }

    /// Puts a message from `origin` for channel `c` in sequence: the messages that can
    /// be queued now (this one and any held back behind it), in order.
    fn in_order(&self, c: ChanId, origin: u16, seq: u64, msg: Message) -> Vec<Message> {
        let mut shard = self.chan_meta.shard(c).lock();
        let meta = shard.entry(c).or_default();
        sequence(&mut meta.expect, &mut meta.held, origin, seq, msg)
    }

    /// Records what came with a receive end arriving here; returns its queue.
    pub(crate) fn adopt_meta(&self, c: Carried) -> (ChanId, VecDeque<Message>) {
        // The meta first: while it is here without a holder, the end is arriving, and
        // senders here wait for it rather than follow the old pointer.
        let meta = ChanMeta { moves: c.moves, partners: c.partners, expect: c.expect, held: c.held };
        self.chan_meta.insert(c.chan, meta);
        self.rx_places.remove(c.chan);
        (c.chan, c.queue.into())
    }

    /// A channel's receive end is on `node` after `moves` moves: the pointer here is
    /// replaced if this is newer and the end is not here (nor arriving).
    fn rx_moved(&self, c: ChanId, node: u16, moves: u32) {
        if node == self.id || self.holder(c).is_some() || self.chan_meta.contains(c) {
            return;
        }
        let mut shard = self.rx_places.shard(c).lock();
        if shard.get(&c).is_none_or(|p| moves > p.moves) {
            shard.insert(c, RxPlace { node, moves });
        }
    }

    /// See [`super::Node::apply_link_update`].
    pub(crate) fn link_update(&self, pid: Pid, node: u16, moves: u32, chans: &[(ChanId, u32)]) {
        self.pid_moved(pid, node, moves);
        for &(c, m) in chans {
            self.rx_moved(c, node, m);
        }
    }

    /// See [`super::Node::drop_forwarding`].
    pub(crate) fn drop_forwarding(&self, pid: Pid, chans: &[ChanId]) {
        if name_node(pid) != self.id {
            let mut shard = self.procs.shard(pid).lock();
            if matches!(shard.get(&pid), Some(super::Entry::Moved(..))) {
                shard.remove(&pid);
            }
        }
        for &c in chans {
            // A pointer is only kept for an end that is not here.
            if name_node(c) != self.id {
                self.rx_places.remove(c);
            }
        }
    }

    /// See [`super::Node::forwarding_state`].
    pub(crate) fn forwarding_state(&self, pid: Pid, chans: &[ChanId]) -> (bool, usize) {
        let n = chans.iter().filter(|&&c| self.rx_places.contains(c) || self.chan_meta.contains(c)).count();
        (self.procs.contains(pid), n)
    }

    /// See [`super::Node::forget_origin`].
    pub(crate) fn forget_origin(&self, origin: u16) {
        let mut slots = Vec::new();
        for s in &self.procs.shards {
            slots.extend(s.lock().values().filter_map(|e| match e {
                super::Entry::Live(slot) => Some(slot.clone()),
                super::Entry::Moved(..) => None,
            }));
        }
        for slot in slots {
            slot.st.lock().order.forget(origin);
        }
        for s in &self.chan_meta.shards {
            for meta in s.lock().values_mut() {
                meta.expect.retain(|(o, _)| *o != origin);
                meta.held.retain(|(o, _, _)| *o != origin);
            }
        }
    }

    fn log_drop(&self, target: Target, why: &str) {
        let what = match target {
            Target::Inbox(p) => format!("<pid {}>", name_text(p)),
            Target::Chan(c) => format!("<sender {}>", name_text(c)),
        };
        self.console.failed(0, &format!("node {}: a message for {what} was dropped: {why}", self.name));
    }

    /// Starts a process another node asked for.
    fn spawn_from(&self, spec: &SpawnSpec, carried: Vec<Carried>) -> Result<Pid, String> {
        let pid = self.new_name();
        let p = Process::from_spec(spec, pid, &self.vm)?;
        let ends: Vec<(ChanId, VecDeque<Message>)> = carried.into_iter().map(|c| self.adopt_meta(c)).collect();
        let chans: Vec<ChanId> = ends.iter().map(|(c, _)| *c).collect();
        self.spawn(p, ends, None);
        for c in chans {
            self.set_holder(c, Some(pid));
        }
        Ok(pid)
    }

    /// Asks node `to` to start a child of `proc` (parked by the caller until the answer).
    pub(crate) fn spawn_remote(&self, to: u16, pid: Pid, spec: SpawnSpec, carried: Vec<(ChanId, VecDeque<Message>)>) -> Result<(), String> {
        let req = self.new_name();
        self.pending_spawns.lock().insert(req, (pid, to));
        for c in spec.call.tx_ends() {
            self.announce_tx_one(c, to);
        }
        let carried = self.carry_away(to, carried);
        let moved: Vec<(ChanId, u32, Vec<u16>)> = carried.iter().map(|c| (c.chan, c.moves, c.partners.clone())).collect();
        let r = self.remote_send(to, Op::Spawn { req, from: pid, spec, carried });
        self.announce_moves(to, &moved);
        if r.is_err() {
            self.pending_spawns.lock().remove(&req);
        }
        r
    }

    fn announce_tx_one(&self, c: ChanId, to: u16) {
        let m = Message::scalar(crate::message::Val::Tx(c));
        self.announce_tx(to, &m);
    }

    /// Ends the wait of a process parked for an answer from another node.
    pub(crate) fn complete_io(&self, pid: Pid, result: IoResult) {
        let Some(slot) = self.local_slot(pid) else { return };
        self.finish_io(pid, slot, result);
    }

    /// The monitor of `target` by `watcher` here ended (its `Down` came, from whichever
    /// node the target ended on).
    pub(crate) fn forget_monitor(&self, _node: u16, watcher: Pid, target: Pid) {
        let mut m = self.remote_monitors.lock();
        if let Some(i) = m.iter().position(|&(w, t)| w == watcher && t == target) {
            m.swap_remove(i);
        }
    }

    /// Node `node` is down (or came back as a new incarnation, its processes gone):
    /// monitors of the processes that are there *now* (by their current route: one that
    /// moved away before is not affected) fire and links to them break, with reason
    /// `node_down`; spawns waiting for it fail.
    pub(crate) fn node_down(&self, node: u16) {
        let name = self.remote().and_then(|r| r.node_name(node)).unwrap_or_else(|| node.to_string());
        let all: Vec<(Pid, Pid)> = self.remote_monitors.lock().clone();
        let monitors: Vec<(Pid, Pid)> = all.into_iter().filter(|&(_, t)| self.remote_node_of(t) == Some(node)).collect();
        self.remote_monitors.lock().retain(|e| !monitors.contains(e));
        for (watcher, target) in monitors {
            let _ = self.deliver(Target::Inbox(watcher), super::event_message("down", target, "node_down"), Vec::new(), None);
        }
        let waiting: Vec<(u64, Pid)> =
            self.pending_spawns.lock().iter().filter(|(_, (_, n))| *n == node).map(|(r, (p, _))| (*r, *p)).collect();
        for (req, pid) in waiting {
            self.pending_spawns.lock().remove(&req);
            self.complete_io(pid, IoResult::Failed(format!("spawn_on: node {name} went down")));
        }
        for pid in self.pids_where(|s| s != Status::Exited && s != Status::Moved) {
            let gone: Vec<Pid> = match self.local_slot(pid) {
                Some(slot) => slot.st.lock().links.iter().copied().filter(|&p| self.remote_node_of(p) == Some(node)).collect(),
                None => continue,
            };
            for p in gone {
                self.exit_signal(pid, p, &ExitReason::Killed("node_down".into()));
            }
        }
    }

    pub(crate) fn count_remote_monitor(&self, _node: u16, watcher: Pid, target: Pid) {
        // Bounded by the monitors of live watchers: those of watchers that ended are
        // dropped whenever the table reaches a power of two (no slot is locked while
        // the table is).
        let watchers: Vec<Pid> = {
            let m = self.remote_monitors.lock();
            if m.len() >= 64 && m.len().is_power_of_two() {
                m.iter().map(|&(w, _)| w).collect()
            } else {
                Vec::new()
            }
        };
        let ended: std::collections::HashSet<Pid> =
            watchers.into_iter().filter(|&w| !self.local_slot(w).is_some_and(|s| s.st.lock().status != Status::Exited)).collect();
        let mut m = self.remote_monitors.lock();
        if !ended.is_empty() {
            m.retain(|(w, _)| !ended.contains(w));
        }
        m.push((watcher, target));
    }

    /// Where a pid that is not here went, as this node knows it: (node, moves).
    fn route_of(&self, pid: Pid) -> Option<(u16, u32)> {
        match self.procs.get(pid) {
            Some(super::Entry::Moved(n, m)) if n != self.id => Some((n, m)),
            _ => None,
        }
    }

    /// An op about process `pid` (a link or a monitor from node `from`) reached this node
    /// though the process has moved on: it goes on to where it is, and `from` is told
    /// the route so it asks there next time (and knows where the process is when a
    /// node goes down). False if this node knows no route for it.
    fn pass_on(&self, from: u16, pid: Pid, op: Op) -> bool {
        let Some((n, moves)) = self.route_of(pid) else { return false };
        if n == from {
            return false;
        }
        let _ = self.remote_send(n, op);
        let _ = self.remote_send(from, Op::PidMoved { pid, node: n, moves });
        true
    }
}
