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
//! carries its origin (node and incarnation) and a sequence number per (origin, target): a node numbers
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
//! or the process moves. (A node that restarts numbers from 0 again, as a new origin:
//! the origin is the node and its incarnation, [`super::NodeConfig::incarnation`].)
//!
//! **Bounds.** Every way a message can fail to be queued ends in an outcome the sender
//! can see (ARCHITECTURE.md, "Message delivery: bounds and outcomes"), and a number is
//! never left as a gap that holds back the rest for ever. A process sending to another
//! node over a congested link ([`Remote::congested`]: it holds more than the host
//! allows before it refuses) waits, parked, until the link drains (back-pressure), so
//! fast senders slow down to what the receiving node takes instead of filling the link
//! until it refuses; after the settle timeout its message is offered anyway. A send that fails before its
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

use super::deliver::event_message;
use super::forwarding::Forwarding;
use super::locate::Waiting;
use super::slot::{Entry, Status};
use super::{ChanId, Ends, ExitReason, Node, NodeInner, Origin, Pid, SentBy, Target};
use crate::message::Message;
use crate::process::{IoResult, Process, SpawnSpec};
use crate::value::{name_node, name_text};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How a node reaches nodes in other OS processes. Provided by the host.
pub trait Remote: Send + Sync {
    /// Queues `op` for node `to`, to be delivered exactly once, after every op queued for
    /// it before. An error says why it cannot (an unknown node, a full link).
    fn send(&self, to: u16, op: Op) -> Result<(), String>;
    /// Whether the link to node `to` is congested: it holds so much not yet taken by
    /// `to` that a process sending there should wait before adding to it
    /// (back-pressure; see "Bounds").
    fn congested(&self, to: u16) -> bool {
        let _ = to;
        false
    }
    /// A node's id by name.
    fn node_id(&self, name: &str) -> Option<u16>;
    /// A node's name by id.
    fn node_name(&self, id: u16) -> Option<String>;
    /// The names of the nodes that are up, this one included, in config order.
    fn live_nodes(&self) -> Vec<String>;
    /// The ids of every other node of the mesh (a locate asks them all).
    fn peers(&self) -> Vec<u16> {
        Vec::new()
    }
    /// Whether node `to` is up as far as this node knows (a message for a node that is
    /// down waits on the link until it is back, unless the forwarding mechanism says the
    /// loss of that node is to be reported at once).
    fn is_up(&self, to: u16) -> bool {
        let _ = to;
        true
    }
    /// Where a process no one placed goes (`spawn_on("any", ...)`): the least loaded node
    /// that takes new processes, this one included. `None`: no node does.
    fn least_loaded(&self) -> Option<u16> {
        None
    }
    /// Starts migrating process `pid` to node `to` with the default mechanism. `caller`:
    /// a process parked in `migrate(pid, node)` waiting for the outcome, answered with
    /// [`super::Node::answer_migrate`]; `None`: `pid` moves itself (`migrate(node)`) and
    /// waits parked in the call — answered only if the move fails (on success the call
    /// runs again on the new node). An error: it cannot start.
    fn migrate(&self, pid: Pid, to: u16, caller: Option<Pid>, opts: &MigrateOpts) -> Result<(), String> {
        let _ = (pid, to, caller, opts);
        Err("this node cannot migrate processes".into())
    }
}

/// What a program asked of one migration (`migrate(..., {options})`): `None`s are the
/// mesh's defaults. The mechanism is the host's to parse (the VM does not know them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateOpts {
    pub mechanism: Option<String>,
    pub forwarding: Option<Forwarding>,
    /// Move the process's whole coprocess group with it (`migrate_group`).
    pub group: bool,
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

/// The process an op about a process is about.
fn op_pid(op: &Op) -> Pid {
    match op {
        Op::Link { pid, .. } | Op::Monitor { pid, .. } | Op::Kill { pid, .. } => *pid,
        Op::Exit { to, .. } | Op::Down { to, .. } => *to,
        _ => 0,
    }
}

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
    /// Process `pid` is now on `node`, after `moves` moves, forwarded by `fwd` (to its
    /// birth node at a move, to a node whose message came a long way: path shortening).
    PidMoved {
        pid: Pid,
        node: u16,
        moves: u32,
        fwd: Forwarding,
    },
    /// A process ended on the sending node: its birth node, and the nodes that kept a
    /// link to it (`link-traversal`), forget their route (a message for it is then one
    /// for a process that has ended).
    PidEnded {
        pid: Pid,
    },
    /// Message number `seq` from node `origin` for process `pid` (`msg` `None`: a skip
    /// notice) reached a node that neither has the process nor keeps a route to it: given
    /// back to its origin node, which sends it again (see `forwarding.rs`).
    Refused {
        pid: Pid,
        origin: Origin,
        seq: u64,
        hops: u8,
        from: SentBy,
        msg: Option<Message>,
    },
    /// Where is process `pid`? (Sent to every node; see `locate.rs`.)
    Locate {
        pid: Pid,
    },
    /// The answer: (node, moves, forwarding) from the node it runs on; `None` from its
    /// birth node when it has ended.
    Located {
        pid: Pid,
        at: Option<(u16, u32, Forwarding)>,
    },
    /// Message number `seq` from node `origin` for `target` was lost on its way (see
    /// "Bounds"): where the target is, its sequence moves past the number. Travels as a
    /// message would (`hops`: times forwarded).
    Skip {
        target: Target,
        origin: Origin,
        seq: u64,
        hops: u8,
    },
    /// A message from process `sender` (on the receiving node, in its incarnation `inc`,
    /// when it sent it) to `target` was lost: `why`. The sender's next `send` fails,
    /// saying so (a report for an earlier incarnation, whose processes are gone, is only
    /// logged).
    Lost {
        sender: Pid,
        inc: u64,
        target: Target,
        why: String,
    },
    /// Receive end `chan` is gone for good (the process that held it ended on the sending
    /// node): its birth node, its partners and the nodes that numbered messages to it
    /// forget where it is and their numbering of messages to it.
    ChanEnded {
        chan: ChanId,
    },
}

/// A message on its way to a process or channel on another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliver {
    pub target: Target,
    /// The node the message was sent from, and its number from there (per origin and
    /// target; see "Order").
    pub origin: Origin,
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
    pub expect: Vec<(Origin, u64)>,
    /// Messages that arrived ahead of their turn: (origin, seq, message); `None`: a skip
    /// notice (that number was lost).
    pub held: Vec<(Origin, u64, Option<Message>)>,
}

impl Node {
    /// Connects the node to nodes in other OS processes (once, before it is used).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    /// Carries out an op node `from` sent.
    pub fn receive(&self, from: u16, op: Op) {
        self.inner.receive(from, op);
    }

    /// An op node `from` sent that the host cannot carry out (`why`: a module it needs
    /// could not be had, say). A message in it is lost as one that cannot be passed on
    /// is (see `remote.rs`, "Bounds"): its number is skipped where its target is, and
    /// its sender told. Returns false for any other op (the host logs it).
    pub fn undeliverable(&self, from: u16, op: Op, why: &str) -> bool {
        let _ = from;
        let Op::Deliver(d) = op else { return false };
        let i = &self.inner;
        i.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
        i.forward(d.target, d.origin, d.seq, d.hops.saturating_add(1), d.from, None, Vec::new());
        i.report_lost(d.origin, d.from, d.target, format!("node {} could not take it: {why}", i.name));
        true
    }

    /// Node `node` went down or restarted: monitors and links of processes there fire
    /// with reason `node_down`, and spawns waiting for it fail.
    pub fn node_down(&self, node: u16) {
        self.inner.node_down(node);
    }

    /// Node `node` came back as a new incarnation: what it ran is gone, so a route to it
    /// is stale. A process born here that one pointed to is looked for anew (it may live
    /// elsewhere: a source that kept its copy, in doubt); other routes go. (A route that
    /// kept pointing there would send messages round between this node and the new
    /// incarnation, which knows nothing, until their hop limit.)
    pub fn node_restarted(&self, node: u16) {
        self.inner.node_restarted(node);
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
            Some(Entry::Moved(n, ..)) if self.node(n).is_none() => Some(n),
            Some(_) => None,
            None => {
                let b = name_node(pid);
                (b != self.id && self.node(b).is_none()).then_some(b)
            }
        }
    }

    /// The node (not in this OS process) a monitor here of process `pid` watches: where
    /// this node last knew it to be (a route, or `Away`'s place), else its birth node.
    pub(crate) fn watch_place(&self, pid: Pid) -> Option<u16> {
        match self.procs.get(pid) {
            Some(Entry::Away(n, _)) => (n != super::locate::NOWHERE && self.node(n).is_none()).then_some(n),
            _ => self.remote_node_of(pid),
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

    /// Whether a message for `target` would go to another node over a congested link
    /// (see [`Remote::congested`]).
    pub(crate) fn link_congested(&self, target: Target) -> bool {
        let Some(r) = self.remote() else { return false };
        let to = match target {
            Target::Inbox(p) => self.remote_node_of(p),
            Target::Chan(c) => self.rx_host(c).filter(|n| *n != self.id && self.node(*n).is_none()),
        };
        to.is_some_and(|n| r.congested(n))
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
        origin: Option<(Origin, u64, u8)>,
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
        match self.send_deliver(to, Deliver { target, origin: self.origin(), seq: *next, hops: 0, from, msg, carried: Vec::new() }, carried)
        {
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

    /// Sends `d` to node `to` with the receive ends `carried`; if the link refuses it,
    /// nothing has changed and the ends come back with the error.
    pub(super) fn send_deliver(&self, to: u16, mut d: Deliver, carried: Ends) -> Result<(), (String, Ends)> {
        if let SentBy::Process(p) = d.from {
            if let Some(slot) = self.local_slot(p) {
                slot.meter.sent_away(to, d.msg.approx_bytes() as u64);
            }
        }
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

    /// Carries out an op from node `from`.
    pub(crate) fn receive(&self, from: u16, op: Op) {
        match op {
            Op::Deliver(d) => self.receive_deliver(d),
            Op::Spawn { req, from: parent, spec, carried } => {
                let result = self.spawn_from(&spec, carried);
                let _ = self.remote_send(from, Op::Spawned { req, to: parent, result });
            }
            Op::Spawned { req, to: _, result } => self.spawn_answered(req, result),
            Op::Kill { pid, reason } => self.kill(pid, reason),
            op @ (Op::Link { .. } | Op::Monitor { .. }) if self.is_away(op_pid(&op)) => self.locate_then(op_pid(&op), Waiting::Op(op)),
            Op::Link { pid, from: other } => {
                let alive = self
                    .with_live(pid, |_, _, st| {
                        if !st.links.contains(&other) {
                            st.links.push(other);
                        }
                    })
                    .is_some();
                if !alive && !self.pass_on(from, pid, Op::Link { pid, from: other }) {
                    self.no_such_process(Op::Link { pid, from: other });
                }
            }
            Op::Monitor { pid, watcher } => {
                if self.with_live(pid, |_, _, st| st.watchers.push(watcher)).is_none()
                    && !self.pass_on(from, pid, Op::Monitor { pid, watcher })
                {
                    self.no_such_process(Op::Monitor { pid, watcher });
                }
            }
            Op::Exit { to, from: p, reason, normal } => {
                let reason = if normal { ExitReason::Normal } else { ExitReason::Killed(reason) };
                self.exit_signal(to, p, &reason);
            }
            Op::Down { to, from: p, reason } => {
                self.forget_monitor(from, to, p);
                let _ = self.deliver(Target::Inbox(to), event_message("down", p, &reason), Vec::new(), None);
            }
            Op::RxMoved { chan, node, moves } => self.rx_moved(chan, node, moves),
            Op::PidMoved { pid, node, moves, fwd } => self.pid_moved(pid, node, moves, fwd),
            // Ended: its route, the numbering of messages to it, and no news of it is newer.
            Op::PidEnded { pid } => self.forget_ended(pid),
            Op::ChanEnded { chan } => self.forget_chan(chan),
            Op::Refused { pid, origin, seq, hops, from: sender, msg } => self.refused(from, pid, origin, seq, hops, sender, msg),
            Op::Locate { pid } => self.on_locate(from, pid),
            Op::Located { pid, at } => self.on_located(pid, at),
            Op::Skip { target, origin, seq, hops } => {
                self.forward(target, origin, seq, hops.saturating_add(1), SentBy::Host, None, Vec::new());
            }
            Op::Lost { sender, inc, target, why } if inc == self.config.incarnation => self.tell_lost(sender, target, why),
            Op::Lost { sender, target, why, .. } => {
                self.log_lost(target, &format!("{why}; its sender <pid {}> belonged to an earlier start of this node", name_text(sender)))
            }
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

    pub(super) fn receive_deliver(&self, d: Deliver) {
        let Deliver { target, origin, seq, hops, from, msg, carried } = d;
        if let SentBy::Process(sender) = from {
            self.note_received(target, origin.node, sender, msg.approx_bytes() as u64);
        }
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

    /// Starts a process another node asked for.
    pub(super) fn spawn_from(&self, spec: &SpawnSpec, carried: Vec<Carried>) -> Result<Pid, String> {
        if let Some(why) = self.process_limit_reached() {
            return Err(why);
        }
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

    /// Asks node `to` to start a child of `proc` (parked by the caller until the answer;
    /// `batch`: its place in the list of a `spawn_on` with a list of nodes, whose
    /// [`NodeInner::start_spawn_batch`] came first).
    pub(crate) fn spawn_remote(
        &self,
        to: u16,
        pid: Pid,
        spec: SpawnSpec,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        batch: Option<usize>,
    ) -> Result<(), String> {
        let req = self.new_name();
        self.pending_spawns.lock().insert(req, (pid, to, batch));
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

    pub(super) fn announce_tx_one(&self, c: ChanId, to: u16) {
        let m = Message::scalar(crate::message::Val::Tx(c));
        self.announce_tx(to, &m);
    }

    /// The answer to spawn request `req` (from its node, or this node's verdict when the
    /// node went down or the request could not be sent). An answer to a request no
    /// longer waited for is dropped: the wait it was for has ended.
    pub(crate) fn spawn_answered(&self, req: u64, result: Result<Pid, String>) {
        let Some((parent, _, batch)) = self.pending_spawns.lock().remove(&req) else { return };
        match batch {
            None => self.complete_io(
                parent,
                match result {
                    Ok(pid) => IoResult::Spawned(pid),
                    Err(e) => IoResult::Failed(e),
                },
            ),
            Some(i) => self.spawn_batch_answer(parent, i, result.ok()),
        }
    }

    /// A `spawn_on` with a list of nodes by `parent` waits for `remote` answers, the
    /// list's other places (`so_far`, started here) filled already.
    pub(crate) fn start_spawn_batch(&self, parent: Pid, so_far: Vec<Option<Pid>>, remote: usize) {
        self.spawn_batches.lock().insert(parent, (so_far, remote));
    }

    /// Place `i` of `parent`'s list is answered; the last answer ends its wait.
    pub(crate) fn spawn_batch_answer(&self, parent: Pid, i: usize, child: Option<Pid>) {
        let done = {
            let mut b = self.spawn_batches.lock();
            let Some((got, left)) = b.get_mut(&parent) else { return };
            if let Some(g) = got.get_mut(i) {
                *g = child;
            }
            *left = left.saturating_sub(1);
            if *left == 0 {
                b.remove(&parent).map(|(got, _)| got)
            } else {
                None
            }
        };
        if let Some(got) = done {
            self.complete_io(parent, IoResult::SpawnedAll(got));
        }
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
        let monitors: Vec<(Pid, Pid)> = all.into_iter().filter(|&(_, t)| self.watch_place(t) == Some(node)).collect();
        self.remote_monitors.lock().retain(|e| !monitors.contains(e));
        for (watcher, target) in monitors {
            let _ = self.deliver(Target::Inbox(watcher), event_message("down", target, "node_down"), Vec::new(), None);
        }
        let waiting: Vec<u64> = self.pending_spawns.lock().iter().filter(|(_, (_, n, _))| *n == node).map(|(r, _)| *r).collect();
        for req in waiting {
            self.spawn_answered(req, Err(format!("spawn_on: node {name} went down")));
        }
        for pid in self.pids_where(|s| s != Status::Exited && s != Status::Moved) {
            let gone: Vec<Pid> = match self.local_slot(pid) {
                Some(slot) => slot.st.lock().links.iter().copied().filter(|&p| self.watch_place(p) == Some(node)).collect(),
                None => continue,
            };
            for p in gone {
                self.exit_signal(pid, p, &ExitReason::Killed("node_down".into()));
            }
        }
    }

    pub(crate) fn node_restarted(&self, node: u16) {
        self.forget_owed(node);
        let me = self.id;
        for shard in &self.procs.shards {
            let mut map = shard.lock();
            map.retain(|&pid, e| match *e {
                Entry::Moved(n, m, _) | Entry::Away(n, m) if n == node => {
                    if name_node(pid) == me {
                        *e = Entry::Away(super::locate::NOWHERE, m);
                        true
                    } else {
                        false
                    }
                }
                _ => true,
            });
        }
        self.mesh.changed();
    }

    /// Whether a process here monitors process `pid` on another node.
    pub(crate) fn monitors(&self, pid: Pid) -> bool {
        self.remote_monitors.lock().iter().any(|&(_, t)| t == pid)
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

    /// An op about process `pid` (a link or a monitor from node `from`) reached this node
    /// though the process has moved on: it goes on to where it is, and `from` is told
    /// the route so it asks there next time (and knows where the process is when a
    /// node goes down). False if this node knows no route for it.
    pub(super) fn pass_on(&self, from: u16, pid: Pid, op: Op) -> bool {
        let birth = name_node(pid);
        match self.procs.get(pid) {
            Some(Entry::Moved(n, moves, f)) if n != self.id && n != from => {
                let _ = self.remote_send(n, op);
                if f.direct() {
                    let _ = self.remote_send(from, Op::PidMoved { pid, node: n, moves, fwd: f });
                }
                true
            }
            // It left here with no route kept: its birth node knows.
            None if birth != self.id && birth != from && self.node(birth).is_none() => {
                let _ = self.remote_send(birth, op);
                true
            }
            _ => false,
        }
    }

    /// The answer to a link or a monitor of a process that does not exist (any more).
    pub(super) fn no_such_process(&self, op: Op) {
        match op {
            Op::Link { pid, from: other } => {
                let to = self.remote_node_of(other).unwrap_or(name_node(other));
                let _ = self.remote_send(to, Op::Exit { to: other, from: pid, reason: "noproc".into(), normal: false });
            }
            Op::Monitor { pid, watcher } => {
                let to = self.remote_node_of(watcher).unwrap_or(name_node(watcher));
                let _ = self.remote_send(to, Op::Down { to: watcher, from: pid, reason: "noproc".into() });
            }
            _ => {}
        }
    }
}
