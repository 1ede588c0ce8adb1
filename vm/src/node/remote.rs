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
//! them always goes forward and never loops (a message that has been forwarded
//! [`MAX_FORWARDS`] times takes the shortcut through its target's birth node, and one
//! forwarded [`MAX_HOPS`] times is given up as lost, see "Bounds").
//!
//! **Order.** A message sent from another node, to a channel or to a process's inbox,
//! carries its origin node and a sequence number per (origin, target): a node numbers
//! its messages to a target once it has sent one to it while the target was on another
//! node — all later ones, local ones included (it keeps one counter map for channels
//! and one for pids). The node where the receive end (or the process) is puts messages
//! from each origin in the mailbox in sequence order, holding back one that overtook an
//! earlier one (which a message on a forwarding path and a later one sent straight to
//! the new place can do); a number already passed is a message that came too late (see
//! "Bounds"). The expected numbers and the messages held back travel with the receive
//! end, and for an inbox with the process (its image, and [`super::Late`] at commit);
//! numbered messages that reach a process while it is being imported wait for the
//! commit's state. A numbered message
//! is queued under the slot lock of the process that has it, which moving it away also
//! needs, so the state that travels always matches what was queued; a number is
//! assigned where the message is queued or handed to the link (so one the link refuses
//! uses none, and no gap holds back the rest) and kept however far the message is
//! forwarded. So messages from one sender are never reordered, however often the end
//! or the process moves. (A node that restarts numbers from 0 again: its host calls
//! [`super::Node::forget_origin`].)
//!
//! **Bounds.** Every way a message can fail to be queued ends in an outcome the sender
//! can see (ARCHITECTURE.md, "Message delivery: bounds and outcomes"), and a number is
//! never left as a gap that holds back the rest for ever. A send that fails before its
//! message is numbered (a full mailbox here, a link that refuses it, a target in the
//! middle of a move that does not settle within [`super::NodeConfig::settle_timeout`])
//! fails in the sender, a catchable error. A numbered message lost on its way (its
//! mailbox full where it arrives, a link that refuses it at a node passing it on, a
//! target that did not settle there, [`MAX_HOPS`] hops) leaves a *skip notice* in its
//! place ([`Op::Skip`]; held back as `None`), which moves its target's sequence past the
//! number, and its origin node is told ([`Op::Lost`]): the sending process's next `send`
//! fails, saying what was lost. A gap that still does not fill (a message lost with a
//! node that crashed, a skip notice that could not be passed on either, a broken peer)
//! is given up after [`super::NodeConfig::gap_timeout`], or at once when [`MAX_HELD`]
//! messages are held back; a message that comes after its number was given up is
//! dropped and its sender told. Every such event is counted
//! ([`super::DeliveryStats`]); a give-up, and a loss no process can be told of (a
//! host's message, a sender that has ended), is logged.

use super::{ChanId, DeliverError, ExitReason, NodeInner, Pid, Status, Target, Task};
use crate::message::Message;
use crate::process::{IoResult, Process, SpawnSpec};
use crate::value::{name_node, name_text};
use crossbeam_deque::Worker;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Receive ends travelling with a message, with their queues.
pub(crate) type Ends = Vec<(ChanId, VecDeque<Message>)>;

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

/// Hops after which a message no longer follows forwarding pointers but goes by its
/// target's birth node, which always knows the newest place (a pointer chain this long
/// means the target moved faster than the message; routes only go forward, so it
/// cannot loop).
pub const MAX_FORWARDS: u8 = 32;

/// Hops after which a message is given up as lost (its number skipped, its sender told):
/// after the shortcut at [`MAX_FORWARDS`], only a target that keeps moving faster than
/// messages travel, or a broken peer, gets here.
pub const MAX_HOPS: u8 = 128;

pub use super::order::MAX_HELD;
/// A queue's sequence state and what putting a message in it gave (see `order.rs`).
pub(crate) type Order = super::order::Order<Message>;
pub(crate) type Put = super::order::Put<Message>;

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
    /// Message number `seq` from node `origin` for `target` was lost on its way (see
    /// "Bounds"): where the target is, its sequence moves past the number. Travels as a
    /// message would (`hops`: times forwarded).
    Skip {
        target: Target,
        origin: u16,
        seq: u64,
        hops: u8,
    },
    /// A message from process `sender` (on the receiving node, when it sent it) to
    /// `target` was lost: `why`. The sender's next `send` fails, saying so.
    Lost {
        sender: Pid,
        target: Target,
        why: String,
    },
}

/// Who sent a message: whom its loss is reported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SentBy {
    /// A process: a loss is reported to it (its next `send` fails).
    Process(Pid),
    /// A host, from outside any process ([`super::Node::send_to`]), or a node passing on
    /// messages whose sender it does not know: a loss is logged.
    Host,
    /// The node itself: a down or exit notice (monitors, links), never refused for a
    /// full mailbox (a watcher must not miss the end it watches for).
    Notice,
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
    /// Its sender (told if it is lost).
    pub from: SentBy,
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
    /// Messages that arrived ahead of their turn: (origin, seq, message); `None`: a skip
    /// notice (that number was lost).
    pub held: Vec<(u16, u64, Option<Message>)>,
}

/// What the hosting node keeps about a receive end that has been or may be remote.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChanMeta {
    moves: u32,
    partners: Vec<u16>,
    order: Order,
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
    pub(crate) fn into_order(self) -> (Vec<(u16, u64)>, Vec<(u16, u64, Option<Message>)>) {
        self.order.into_wire()
    }
}

/// The sequence state of a process's inbox (see "Order"), kept in its slot and carried
/// with it: in its image, and in [`super::Late`] for what changed after the image.
#[derive(Debug, Default)]
pub(crate) struct InboxOrder {
    pub(crate) seq: Order,
    /// Numbered messages (and skip notices) that reached the process while it was being
    /// imported here (the state they are ordered by comes with the commit); `carried`
    /// stays empty (the ends they carried are in the mailbox already).
    pub(crate) waiting: Vec<Arriving>,
}

impl InboxOrder {
    /// The nodes that have sent numbered messages to this inbox.
    pub(crate) fn origins(&self) -> Vec<u16> {
        self.seq.origins()
    }
}

/// A numbered message (`msg` `None`: a skip notice) for a process or a receive end that
/// is being imported here.
#[derive(Debug, Clone)]
pub(crate) struct Arriving {
    pub(crate) origin: u16,
    pub(crate) seq: u64,
    pub(crate) hops: u8,
    pub(crate) from: SentBy,
    pub(crate) msg: Option<Message>,
    pub(crate) carried: Ends,
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

    /// Sends a message (`None`: a skip notice, always numbered already) to `target` on
    /// node `to`, carrying `carried` (receive ends taken from the sender) along, and
    /// records where those ends went. `origin`: the origin, number and hops of a message
    /// already numbered (past [`MAX_FORWARDS`] hops it goes by its target's birth node
    /// instead); else it gets the next number from here, used up only if the message
    /// leaves (a gap would hold back every later message from here to the target): the
    /// counter is held meanwhile.
    pub(crate) fn send_remote(
        &self,
        to: u16,
        target: Target,
        from: SentBy,
        msg: Option<Message>,
        carried: Ends,
        origin: Option<(u16, u64, u8)>,
    ) -> Result<(), String> {
        // (Before the counter below is locked: this may take a slot's lock.)
        if let Some(m) = &msg {
            self.announce_tx(self.shortcut(to, target, origin.map_or(0, |o| o.2)), m);
        }
        if let Some((origin, seq, hops)) = origin {
            let to = self.shortcut(to, target, hops);
            return match msg {
                Some(msg) => self.send_deliver(to, Deliver { target, origin, seq, hops, from, msg, carried: Vec::new() }, carried).map_err(
                    |(e, ends)| {
                        // Lost with the message (see `forward`).
                        self.drop_ends(&ends);
                        e
                    },
                ),
                None => {
                    self.drop_ends(&carried);
                    self.remote_send(to, Op::Skip { target, origin, seq, hops })
                }
            };
        }
        // (A skip notice is always numbered.)
        let Some(msg) = msg else { return Ok(()) };
        let (counters, k) = match target {
            Target::Chan(c) => (&self.seqs, c),
            Target::Inbox(p) => (&self.pid_seqs, p),
        };
        let mut shard = counters.shard(k).lock();
        let next = shard.entry(k).or_insert(0);
        match self.send_deliver(to, Deliver { target, origin: self.id, seq: *next, hops: 0, from, msg, carried: Vec::new() }, carried) {
            Ok(()) => {
                *next += 1;
                Ok(())
            }
            Err((e, ends)) => {
                drop(shard);
                self.unsent(from, ends);
                Err(e)
            }
        }
    }

    /// The ends of a message that was not sent: given back to its sender if it is a fresh
    /// one from here (`seq` `None`), else lost with it.
    fn not_sent(&self, seq: Option<u64>, from: SentBy, ends: Ends) {
        match seq {
            None => self.unsent(from, ends),
            Some(_) => self.drop_ends(&ends),
        }
    }

    /// Receive ends taken from a sender for a message that was not sent: a process here
    /// gets them back (they never left: it is still their holder); others are dropped.
    pub(crate) fn unsent(&self, from: SentBy, ends: Ends) {
        if ends.is_empty() {
            return;
        }
        let back = match from {
            SentBy::Process(p) => self.local_slot(p),
            SentBy::Host | SentBy::Notice => None,
        };
        let Some(slot) = back else {
            self.drop_ends(&ends);
            return;
        };
        let mut st = slot.st.lock();
        if matches!(st.status, Status::Exited | Status::Moved) {
            drop(st);
            self.drop_ends(&ends);
            return;
        }
        for (c, q) in ends {
            st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
            st.mailbox.chans.push((c, q));
        }
        drop(st);
        self.mesh.changed();
    }

    /// Where a numbered message forwarded `hops` times goes instead of node `to`: past
    /// [`MAX_FORWARDS`], its target's birth node, which always knows the newest place
    /// (unless that is this node, or one in this OS process).
    fn shortcut(&self, to: u16, target: Target, hops: u8) -> u16 {
        let birth = name_node(match target {
            Target::Inbox(p) => p,
            Target::Chan(c) => c,
        });
        if hops > MAX_FORWARDS && birth != self.id && self.node(birth).is_none() {
            birth
        } else {
            to
        }
    }

    /// Sends `d` to node `to` with the receive ends `carried`; if the link refuses it,
    /// nothing has changed and the ends come back with the error.
    fn send_deliver(&self, to: u16, mut d: Deliver, carried: Ends) -> Result<(), (String, Ends)> {
        d.carried = self.pack_ends(&carried);
        let moved: Vec<(ChanId, u32, Vec<u16>)> = d.carried.iter().map(|c| (c.chan, c.moves, c.partners.clone())).collect();
        match self.remote_send(to, Op::Deliver(d)) {
            Ok(()) => {
                self.let_go(to, &moved);
                self.announce_moves(to, &moved);
                Ok(())
            }
            Err(e) => Err((e, carried)),
        }
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

    /// What receive ends about to leave (taken out of their holder's mailbox, so nothing
    /// changes their state meanwhile) take with them; nothing changes here until
    /// [`NodeInner::let_go`].
    fn pack_ends(&self, carried: &Ends) -> Vec<Carried> {
        carried
            .iter()
            .map(|(chan, q)| {
                let meta = self.chan_meta.get(*chan).unwrap_or_default();
                let mut partners = meta.partners;
                if !partners.contains(&self.id) {
                    partners.push(self.id);
                }
                let (expect, held) = meta.order.into_wire();
                Carried { chan: *chan, queue: q.iter().cloned().collect(), moves: meta.moves + 1, partners, expect, held }
            })
            .collect()
    }

    /// Receive ends went to node `to` (with these move counts): a forwarding pointer
    /// before the holder goes, so a sender always finds one or the other, and the state
    /// last (while it is here without a holder, senders here wait).
    fn let_go(&self, to: u16, moved: &[(ChanId, u32, Vec<u16>)]) {
        for &(chan, moves, _) in moved {
            self.rx_places.insert(chan, RxPlace { node: to, moves });
            self.set_holder(chan, None);
            self.chan_meta.remove(chan);
        }
        self.mesh.changed();
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
                    if !self.add_partner(c, to) {
                        // It left meanwhile: tell where it went.
                        if let Some(n) = self.remote_rx_node(c).filter(|&n| n != to) {
                            let _ = self.remote_send(n, Op::Partner { chan: c, node: to });
                        }
                    }
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

    /// Records node `node` as a partner of channel `c` if its receive end is held here:
    /// checked under the holder's slot lock, which taking the end away needs, so an end
    /// leaving takes the partner with it (or is seen gone: false). (Adding to the state
    /// of an end that had just left would leave it looking as if arriving, for ever.)
    fn add_partner(&self, c: ChanId, node: u16) -> bool {
        let Some(slot) = self.holder(c).and_then(|p| self.local_slot(p)) else { return false };
        let st = slot.st.lock();
        if matches!(st.status, Status::Exited | Status::Moved) || !st.mailbox.holds(c) {
            return false;
        }
        let mut shard = self.chan_meta.shard(c).lock();
        let meta = shard.entry(c).or_default();
        if !meta.partners.contains(&node) {
            meta.partners.push(node);
        }
        true
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
            Op::Skip { target, origin, seq, hops } => {
                self.forward(target, origin, seq, hops.saturating_add(1), SentBy::Host, None, Vec::new());
            }
            Op::Lost { sender, target, why } => self.tell_lost(sender, target, why),
            Op::Partner { chan, node } => {
                if !self.add_partner(chan, node) {
                    if let Some(n) = self.remote_rx_node(chan) {
                        if n != from {
                            let _ = self.remote_send(n, Op::Partner { chan, node });
                        }
                    }
                }
            }
        }
    }

    fn receive_deliver(&self, d: Deliver) {
        let Deliver { target, origin, seq, hops, from, msg, carried } = d;
        let hops = hops.saturating_add(1);
        if let Target::Chan(c) = target {
            if carried.iter().any(|e| e.chan == c) {
                // Only a broken or hostile peer sends a receive end into its own channel.
                self.log_lost(target, &format!("it came from node {origin} carrying its own channel's receive end"));
                self.forward(target, origin, seq, hops, from, None, Vec::new());
                return;
            }
        }
        // The receive ends it carries come here with it (marked as arriving until their
        // new holder has them).
        let ends: Ends = carried.into_iter().map(|c| self.adopt_meta(c)).collect();
        self.forward(target, origin, seq, hops, from, Some(msg), ends);
    }

    /// Passes on message number `seq` from node `origin` (`msg` `None`: a skip notice for
    /// it), which came from another node or waited here for an import, to its target
    /// wherever that is, so that its number is never left as a gap (see "Bounds"): a
    /// message that cannot be queued or passed on is replaced by a skip notice, and its
    /// sender is told. `hops`: times it has been forwarded, counting this time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(&self, target: Target, origin: u16, seq: u64, hops: u8, from: SentBy, msg: Option<Message>, ends: Ends) {
        let skip = msg.is_none();
        let (why, notice_hops) = if hops > MAX_HOPS {
            self.drop_ends(&ends);
            // Its skip notice gets a second chance, from the birth node on.
            (format!("it was forwarded {MAX_HOPS} times ({} moved faster than it travelled)", what(target)), Some(MAX_FORWARDS + 1))
        } else {
            let r = match target {
                Target::Inbox(p) => self.route_inbox(p, origin, Some(seq), hops, from, msg, ends, None),
                Target::Chan(c) => self.route_numbered(c, origin, Some(seq), hops, from, msg, ends, None),
            };
            match r {
                Ok(_) => return,
                Err(e @ (DeliverError::Full(_) | DeliverError::Waiting(_) | DeliverError::Late)) => {
                    // Its number is used where the target is (a skip notice in its place).
                    if e != DeliverError::Late {
                        self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
                    }
                    if !skip {
                        self.report_lost(origin, from, target, self.why_lost(&e));
                    }
                    return;
                }
                // The target stayed in the middle of a move here: a skip notice would
                // wait as long again; the gap timeout passes the number there.
                Err(e @ DeliverError::Unsettled(_)) => (self.why_lost(&e), None),
                Err(e) => (self.why_lost(&e), Some(hops)),
            }
        };
        self.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
        if skip {
            self.log_lost(
                target,
                &format!("the skip notice for number {seq} from node {origin} could not be passed on ({why}); the gap it leaves is given up after the gap timeout"),
            );
            return;
        }
        if let Some(h) = notice_hops {
            self.forward(target, origin, seq, h, from, None, Vec::new());
        }
        self.report_lost(origin, from, target, why);
    }

    /// Why a message was lost, for its sender.
    pub(crate) fn why_lost(&self, e: &DeliverError) -> String {
        match e {
            DeliverError::Full(p) => format!(
                "the mailbox of <pid {}> was full (its limit is {} of queued messages)",
                name_text(*p),
                super::bytes_text(self.config.mailbox_limit_bytes)
            ),
            DeliverError::Waiting(t) => {
                format!("more than {MAX_HELD} messages were waiting for {} to arrive at node {}", what(*t), self.name)
            }
            DeliverError::Late => format!("it reached node {} after its number had been given up (see the gap timeout)", self.name),
            DeliverError::Unsettled(t) => format!(
                "{} was in the middle of a move at node {} that did not settle within {} s",
                what(*t),
                self.name,
                self.config.settle_timeout.as_secs_f64()
            ),
            DeliverError::Unreachable(e) => format!("it could not be passed on from node {}: {e}", self.name),
        }
    }

    /// Tells the sender of a message that was lost (see "Bounds"): a process on this node,
    /// or on its origin node, fails its next send; a loss no process can be told of is
    /// logged here.
    pub(crate) fn report_lost(&self, origin: u16, from: SentBy, target: Target, why: String) {
        match from {
            SentBy::Process(p) if origin == self.id || self.node(origin).is_some() => self.tell_lost(p, target, why),
            SentBy::Process(p) => {
                if let Err(e) = self.remote_send(origin, Op::Lost { sender: p, target, why: why.clone() }) {
                    self.log_lost(target, &format!("{why}; its sender <pid {}> on node {origin} could not be told: {e}", name_text(p)));
                }
            }
            SentBy::Host | SentBy::Notice => self.log_lost(target, &why),
        }
    }

    /// A message process `sender` sent to `target` was lost: its next send fails, saying so.
    pub(crate) fn tell_lost(&self, sender: Pid, target: Target, why: String) {
        self.counters.reported.fetch_add(1, Ordering::Relaxed);
        let note = format!("to {}: {why}", what(target));
        let told = self
            .with_live(sender, |_, _, st| {
                st.lost = Some(match st.lost.take() {
                    Some((n, first)) => (n.saturating_add(1), first),
                    None => (1, note.clone()),
                });
            })
            .is_some();
        if !told {
            self.log_lost(target, &format!("{why}; its sender <pid {}> has ended or left this node", name_text(sender)));
        }
    }

    /// Delivers message number `seq` from node `origin` (`msg` `None`: a skip notice for
    /// it) to process `pid`'s inbox wherever the process is: into its slot here, in
    /// sequence (under the slot lock, which moving it away needs), set aside while it is
    /// being imported here, or on to where it went, keeping its number. `seq` `None`: a
    /// message from here, numbered where it is queued or sent (so a message that goes
    /// nowhere uses no number). `hops`: times it has been forwarded. A message that finds
    /// the mailbox full (or too many waiting for an import) leaves a skip notice in its
    /// place (its number used) and `Full` (`Waiting`) is returned; one whose number was
    /// given up already is dropped and `Late` returned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_inbox(
        &self,
        pid: Pid,
        origin: u16,
        seq: Option<u64>,
        hops: u8,
        from: SentBy,
        msg: Option<Message>,
        carried: Ends,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = super::Patience::default();
        loop {
            // It is in the middle of a move: look again when it has settled.
            if !self.look(&mut patience) {
                self.not_sent(seq, from, carried);
                return Err(DeliverError::Unsettled(Target::Inbox(pid)));
            }
            if let Some(n) = self.remote_node_of(pid) {
                return self
                    .send_remote(n, Target::Inbox(pid), from, msg, carried, seq.map(|s| (origin, s, hops)))
                    .map(|()| Some(pid))
                    .map_err(DeliverError::Unreachable);
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
            let size = msg.as_ref().map_or(0, Message::approx_bytes);
            let full = msg.is_some()
                && carried.is_empty()
                && from != SentBy::Notice
                && st.mailbox.bytes + st.order.seq.held_bytes_for(origin, seq) + size > self.config.mailbox_limit_bytes;
            let with_ends = !carried.is_empty();
            for (c, q) in carried {
                st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                st.mailbox.chans.push((c, q));
                self.set_holder(c, Some(pid));
                self.rx_places.remove(c);
            }
            if st.import.is_some() {
                // Its sequence state comes with the commit; the message waits for it.
                let over = msg.is_some() && !with_ends && st.order.waiting.len() >= MAX_HELD;
                let refused = full || over;
                let msg = if refused { None } else { msg };
                st.order.waiting.push(Arriving { origin, seq, hops, from, msg, carried: Vec::new() });
                return match (full, over) {
                    (true, _) => Err(DeliverError::Full(pid)),
                    (false, true) => Err(DeliverError::Waiting(Target::Inbox(pid))),
                    _ => Ok(Some(pid)),
                };
            }
            let now = self.now_us();
            let mut put = st.order.seq.put_after_restart(origin, seq, if full { None } else { msg }, now, || self.origin_restarted(origin));
            let mut bytes = 0;
            for m in std::mem::take(&mut put.ready) {
                bytes += m.approx_bytes();
                st.mailbox.inbox.push_back(m);
            }
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&super::Source::Inbox) {
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
            }
            drop(st);
            self.after_put(Target::Inbox(pid), &put, now);
            return if put.late {
                Err(DeliverError::Late)
            } else if full {
                Err(DeliverError::Full(pid))
            } else {
                Ok(Some(pid))
            };
        }
    }

    /// What putting a message in sequence may call for once the queue's lock is
    /// released: a gap sweep scheduled, a give-up or a late message counted and logged.
    fn after_put(&self, target: Target, put: &Put, now: u64) {
        if put.opened {
            self.gap_opened(now);
        }
        if put.skipped > 0 {
            self.counters.given_up.fetch_add(put.skipped, Ordering::Relaxed);
            self.log_lost(
                target,
                &format!(
                    "gave up waiting for {} missing message(s): more than {MAX_HELD} were held back behind them (a broken or hostile peer)",
                    put.skipped
                ),
            );
        }
        if put.late {
            self.counters.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Delivers message number `seq` from node `origin` (`msg` `None`: a skip notice for
    /// it) for channel `c` wherever its receive end is: into the holder's queue here, in
    /// sequence (atomically with the end leaving, under the holder's slot lock), set
    /// aside while the end is in a process being imported here, or on to where the end
    /// went, keeping its number (`None`, the outcomes: as [`NodeInner::route_inbox`]).
    /// `hops`: times it has been forwarded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_numbered(
        &self,
        c: ChanId,
        origin: u16,
        seq: Option<u64>,
        hops: u8,
        from: SentBy,
        mut msg: Option<Message>,
        mut carried: Ends,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = super::Patience::default();
        loop {
            // The end is leaving or arriving: look again when it has settled.
            if !self.look(&mut patience) {
                self.not_sent(seq, from, carried);
                return Err(DeliverError::Unsettled(Target::Chan(c)));
            }
            if let Some(pid) = self.holder(c) {
                match self.enqueue_numbered(pid, c, origin, seq, from, msg, carried, local) {
                    Enqueued::Done(r) => return r,
                    Enqueued::NotHere(m, cr) => {
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
                    let over = msg.is_some() && carried.is_empty() && waiting.len() >= MAX_HELD;
                    let msg = if over { None } else { msg };
                    waiting.push(Arriving { origin, seq, hops, from, msg, carried });
                    return if over { Err(DeliverError::Waiting(Target::Chan(c))) } else { Ok(None) };
                }
            }
            return match self.remote_rx_node(c) {
                Some(n) => self
                    .send_remote(n, Target::Chan(c), from, msg, carried, seq.map(|s| (origin, s, hops)))
                    .map(|()| None)
                    .map_err(DeliverError::Unreachable),
                None => {
                    self.drop_ends(&carried);
                    Ok(None)
                }
            };
        }
    }

    /// Queues a numbered message (and the ends it carries) at local holder `pid` of `c`,
    /// in sequence (a full mailbox: as [`NodeInner::route_inbox`]); gives them back if
    /// `pid` no longer holds `c` here.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_numbered(
        &self,
        pid: Pid,
        c: ChanId,
        origin: u16,
        seq: Option<u64>,
        from: SentBy,
        msg: Option<Message>,
        carried: Ends,
        local: Option<&Worker<Task>>,
    ) -> Enqueued {
        let Some(slot) = self.local_slot(pid) else { return Enqueued::NotHere(msg, carried) };
        let mut st = slot.st.lock();
        if matches!(st.status, Status::Moved | Status::Exited) || !st.mailbox.holds(c) {
            return Enqueued::NotHere(msg, carried);
        }
        // The end cannot leave while this lock is held (taking it away needs it).
        let seq = seq.unwrap_or_else(|| self.next_seq(c));
        let size = msg.as_ref().map_or(0, Message::approx_bytes);
        let limited = msg.is_some() && carried.is_empty() && from != SentBy::Notice;
        let now = self.now_us();
        let (mut put, full) = self.in_order(c, origin, seq, msg, now, limited.then_some(st.mailbox.bytes + size));
        let mut bytes = 0;
        if let Some(q) = st.mailbox.chan(c) {
            for m in std::mem::take(&mut put.ready) {
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
        drop(st);
        self.after_put(Target::Chan(c), &put, now);
        Enqueued::Done(if put.late {
            Err(DeliverError::Late)
        } else if full {
            Err(DeliverError::Full(pid))
        } else {
            Ok(Some(pid))
        })
    }

    pub(crate) fn drop_ends(&self, ends: &[(ChanId, VecDeque<Message>)]) {
        for (c, _) in ends {
            self.set_holder(*c, None);
            self.chan_meta.remove(*c);
        }
    }

    /// Puts a message from `origin` (`None`: a skip notice) for channel `c` in sequence
    /// (see [`Order::put`]).
    ///
    /// `used`: for a message subject to the mailbox limit, its holder's queued bytes plus
    /// its own size; with what is held back for `c` (if it would be held too) past the
    /// limit, it is refused and a skip notice takes its number (the `bool` says so).
    fn in_order(&self, c: ChanId, origin: u16, seq: u64, msg: Option<Message>, now: u64, used: Option<usize>) -> (Put, bool) {
        let mut shard = self.chan_meta.shard(c).lock();
        let meta = shard.entry(c).or_default();
        let full = used.is_some_and(|u| u + meta.order.held_bytes_for(origin, seq) > self.config.mailbox_limit_bytes);
        let msg = if full { None } else { msg };
        (meta.order.put_after_restart(origin, seq, msg, now, || self.origin_restarted(origin)), full)
    }

    /// Records what came with a receive end arriving here; returns its queue.
    pub(crate) fn adopt_meta(&self, c: Carried) -> (ChanId, VecDeque<Message>) {
        // The meta first: while it is here without a holder, the end is arriving, and
        // senders here wait for it rather than follow the old pointer.
        let now = self.now_us();
        let order = Order::from_wire(c.expect, c.held, now);
        let gaps = order.oldest_gap().is_some();
        let meta = ChanMeta { moves: c.moves, partners: c.partners, order };
        self.chan_meta.insert(c.chan, meta);
        if gaps {
            self.gap_opened(now);
        }
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
        // Its new incarnation numbers from 0 again; what the old one sent may still be on
        // its way and is delivered in its order until the first new number comes (see
        // `order.rs`, `put_after_restart`), which releases what the old one left held.
        self.restarted.lock().insert(origin);
    }

    /// Whether node `origin` has restarted since this node started (its numbering began
    /// again from 0).
    pub(crate) fn origin_restarted(&self, origin: u16) -> bool {
        self.restarted.lock().contains(&origin)
    }

    /// Logs a message lost (see "Bounds").
    pub(crate) fn log_lost(&self, target: Target, why: &str) {
        self.console.failed(0, &format!("node {}: a message for {} was lost: {why}", self.name, what(target)));
    }

    /// A queue here began waiting for a missing number at `now`: a sweep gives it up
    /// after the gap timeout, if nothing fills it first.
    pub(crate) fn gap_opened(&self, now: u64) {
        if !self.gap_sweep.swap(true, Ordering::SeqCst) {
            self.schedule_sweep(now.saturating_add(self.config.gap_timeout.as_micros() as u64));
        }
    }

    /// Gives up, in every queue here, the numbers that have been missing for the gap
    /// timeout or longer (see "Bounds"): what was held back behind them is queued, in
    /// order. Run by the timer thread; schedules the next sweep for the oldest gap left.
    pub(crate) fn sweep_gaps(&self) {
        // Cleared before looking: a gap that opens from now on schedules a sweep itself.
        self.gap_sweep.store(false, Ordering::SeqCst);
        let now = self.now_us();
        let timeout = self.config.gap_timeout.as_micros() as u64;
        self.release_gaps(&|_, since| now.saturating_sub(since) >= timeout);
    }

    /// Gives up, in every queue here, the gaps `which` picks (by origin and since when it
    /// has waited): what was held back behind them is queued, in order, and each give-up
    /// is counted and logged; the next sweep is scheduled for the oldest gap left.
    fn release_gaps(&self, which: &dyn Fn(u16, u64) -> bool) {
        let timeout = self.config.gap_timeout.as_micros() as u64;
        let due = |order: &Order| order.oldest_gap().is_some();
        let mut oldest: Option<u64> = None;
        let mut left = |t: Option<u64>| {
            if let Some(t) = t {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        };
        let mut given_up: Vec<(Target, u64)> = Vec::new();
        let mut slots = Vec::new();
        for s in &self.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                super::Entry::Live(slot) => Some((p, slot.clone())),
                super::Entry::Moved(..) => None,
            }));
        }
        for (pid, slot) in slots {
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) {
                continue;
            }
            if st.import.is_some() {
                // Its state is replaced at the commit (with what the source held back
                // meanwhile): given up here, a message could come twice.
                left(st.order.seq.oldest_gap());
                continue;
            }
            if !due(&st.order.seq) {
                continue;
            }
            let (ready, skipped) = st.order.seq.give_up(which);
            let bytes: usize = ready.iter().map(Message::approx_bytes).sum();
            st.mailbox.inbox.extend(ready);
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&super::Source::Inbox) {
                self.wake_locked(pid, &slot, &mut st, None);
            }
            left(st.order.seq.oldest_gap());
            given_up.push((Target::Inbox(pid), skipped));
        }
        let mut chans = Vec::new();
        for s in &self.chan_meta.shards {
            chans.extend(s.lock().iter().filter_map(|(&c, m)| m.order.oldest_gap().map(|t| (c, t))));
        }
        for (c, t) in chans {
            let slot = self.holder(c).and_then(|p| self.local_slot(p).map(|s| (p, s)));
            let Some((pid, slot)) = slot else {
                // Not due yet, or arriving: the next sweep.
                left(Some(t));
                continue;
            };
            // The holder's slot lock first (the end cannot leave meanwhile), as queueing does.
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) || !st.mailbox.holds(c) {
                left(Some(t));
                continue;
            }
            let (ready, skipped, rest) = {
                let mut shard = self.chan_meta.shard(c).lock();
                let Some(meta) = shard.get_mut(&c) else { continue };
                let (ready, skipped) = meta.order.give_up(which);
                (ready, skipped, meta.order.oldest_gap())
            };
            left(rest);
            let mut bytes = 0;
            if let Some(q) = st.mailbox.chan(c) {
                for m in ready {
                    bytes += m.approx_bytes();
                    q.push_back(m);
                }
            }
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&super::Source::Chan(c)) {
                self.wake_locked(pid, &slot, &mut st, None);
            }
            given_up.push((Target::Chan(c), skipped));
        }
        if let Some(t) = oldest {
            if !self.gap_sweep.swap(true, Ordering::SeqCst) {
                self.schedule_sweep(t.saturating_add(timeout));
            }
        }
        for (target, skipped) in given_up.into_iter().filter(|(_, n)| *n > 0) {
            self.counters.given_up.fetch_add(skipped, Ordering::Relaxed);
            let why = format!(
                "gave up waiting for {skipped} missing message(s) after {} s (lost on the way, with a node that went down, say)",
                self.config.gap_timeout.as_secs_f64()
            );
            self.log_lost(target, &why);
        }
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
        let packed = self.pack_ends(&carried);
        let moved: Vec<(ChanId, u32, Vec<u16>)> = packed.iter().map(|c| (c.chan, c.moves, c.partners.clone())).collect();
        let r = self.remote_send(to, Op::Spawn { req, from: pid, spec, carried: packed });
        match &r {
            Ok(()) => {
                self.let_go(to, &moved);
                self.announce_moves(to, &moved);
            }
            Err(_) => {
                self.pending_spawns.lock().remove(&req);
                // The ends it was to take stay with the parent.
                self.unsent(SentBy::Process(pid), carried);
            }
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

/// What [`NodeInner::enqueue_numbered`] did.
enum Enqueued {
    Done(Result<Option<Pid>, DeliverError>),
    /// The holder no longer holds the end here: look again.
    NotHere(Option<Message>, Ends),
}

/// A target as messages name it.
pub(crate) fn what(target: Target) -> String {
    match target {
        Target::Inbox(p) => format!("<pid {}>", name_text(p)),
        Target::Chan(c) => format!("<sender {}>", name_text(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Val;

    fn m(v: i64) -> Option<Message> {
        Some(Message::scalar(Val::Int(v)))
    }

    fn ints(ms: &[Message]) -> Vec<i64> {
        ms.iter()
            .map(|m| match m.root {
                Val::Int(i) => i,
                _ => -1,
            })
            .collect()
    }

    #[test]
    fn messages_ahead_of_their_turn_wait_for_the_missing_one() {
        let mut o = Order::default();
        let p = o.put(3, 1, m(1), 10);
        assert!(p.ready.is_empty() && p.opened);
        assert_eq!(o.oldest_gap(), Some(10));
        assert!(!o.put(3, 2, m(2), 11).opened, "the same gap");
        assert_eq!(ints(&o.put(3, 0, m(0), 12).ready), [0, 1, 2]);
        assert_eq!(o.oldest_gap(), None);
        // Another origin's numbers are its own.
        assert_eq!(ints(&o.put(4, 0, m(40), 13).ready), [40]);
    }

    #[test]
    fn a_skip_notice_moves_the_sequence_past_its_number() {
        let mut o = Order::default();
        o.put(3, 1, m(1), 0);
        o.put(3, 3, m(3), 0);
        // Number 2 was lost: its notice is held, then passed over.
        assert!(o.put(3, 2, None, 0).ready.is_empty());
        assert_eq!(ints(&o.put(3, 0, m(0), 0).ready), [0, 1, 3]);
        // A notice in its turn releases what waits behind it.
        o.put(3, 5, m(5), 0);
        assert_eq!(ints(&o.put(3, 4, None, 0).ready), [5]);
        assert_eq!(o.next(3), 6);
    }

    #[test]
    fn a_number_passed_already_is_late() {
        let mut o = Order::default();
        o.put(3, 0, m(0), 0);
        let p = o.put(3, 0, m(0), 0);
        assert!(p.late && p.ready.is_empty());
        assert!(!o.put(3, 0, None, 0).late, "a late skip notice says nothing");
    }

    #[test]
    fn a_gap_is_given_up_when_asked_and_the_rest_comes_in_order() {
        let mut o = Order::default();
        o.put(3, 2, m(2), 100);
        o.put(3, 5, m(5), 100);
        o.put(4, 1, m(41), 200);
        // Only gaps that began by 150.
        let (ready, skipped) = o.give_up(|_, since| since <= 150);
        assert_eq!((ints(&ready), skipped), (vec![2, 5], 4));
        assert_eq!(o.next(3), 6);
        assert_eq!(o.oldest_gap(), Some(200));
        assert!(o.put(3, 3, m(3), 300).late, "given up: it came too late");
    }

    #[test]
    fn the_held_back_bound_gives_up_the_gaps() {
        let mut o = Order::default();
        for s in 1..=MAX_HELD as u64 {
            assert!(o.put(3, s, m(s as i64), 0).ready.is_empty());
        }
        let p = o.put(3, MAX_HELD as u64 + 1, m(0), 0);
        assert_eq!((p.ready.len(), p.skipped), (MAX_HELD + 1, 1));
        assert_eq!(o.next(3), MAX_HELD as u64 + 2);
        assert_eq!(o.oldest_gap(), None);
    }

    #[test]
    fn the_state_travels_and_its_gaps_start_again_where_it_arrives() {
        let mut o = Order::default();
        o.put(3, 0, m(0), 0);
        o.put(3, 2, m(2), 5);
        o.put(3, 3, None, 5);
        let (expect, held) = o.to_wire();
        assert_eq!(expect, [(3, 1)]);
        assert_eq!(held.len(), 2);
        // Something held below the expected number (a broken image) is left out.
        let mut held = held;
        held.push((3, 0, m(9)));
        let mut o2 = Order::from_wire(expect, held, 1000);
        assert_eq!(o2.oldest_gap(), Some(1000));
        assert_eq!(ints(&o2.put(3, 1, m(1), 1001).ready), [1, 2]);
        assert_eq!(o2.next(3), 4);
    }
}
