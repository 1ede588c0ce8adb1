//! Routes: where numbered messages go and how receive ends travel (see `remote.rs`,
//! "Where things are" and "Order"). Per-origin sequence numbers assigned at the sender,
//! messages put in sequence where the process or the receive end is (or set aside while
//! it is being imported), forwarding along pointers with the number kept, the state a
//! receive end takes with it and what its new host adopts, the partners and birth nodes
//! told where an end went, link updates, and forwarding pointers dropped.

use super::deliver::{what, DeliverError, Patience, RxWhere};
use super::forwarding::{self, Forwarding, Known, Step};
use super::locate::Waiting;
use super::remote::{Carried, Op, MAX_FORWARDS, MAX_HOPS};
use super::slot::{Arriving, Entry, Order, Put, Source, Status, Task};
use super::{ChanId, Ends, NodeInner, Origin, Pid, SentBy, Target, MAX_HELD};
use crate::message::Message;
use crate::value::name_node;
use crossbeam_deque::Worker;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// What the hosting node keeps about a receive end that has been or may be remote.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChanMeta {
    pub(super) moves: u32,
    pub(super) partners: Vec<u16>,
    pub(super) order: Order,
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
    pub(crate) fn into_order(self) -> (Vec<(Origin, u64)>, Vec<(Origin, u64, Option<Message>)>) {
        self.order.into_wire()
    }
}

/// Where the mesh knows a receive end to be, seen from a node that does not host it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxPlace {
    pub(super) node: u16,
    pub(super) moves: u32,
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
    /// The ends of a message that was not sent: given back to its sender if it is a fresh
    /// one from here (`seq` `None`), else lost with it.
    pub(super) fn not_sent(&self, seq: Option<u64>, from: SentBy, ends: Ends) {
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
    pub(super) fn shortcut(&self, to: u16, target: Target, hops: u8) -> u16 {
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
    pub(super) fn pack_ends(&self, carried: &Ends) -> Vec<Carried> {
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
    /// last (while it is here without a holder, senders here wait). All of it under the
    /// end's state lock, which an end arriving here takes to record itself: an end that
    /// came back before this ran (its round trip faster than the thread that sent it
    /// away, preempted after handing it to the link) has newer state here (more moves),
    /// and keeps it: its holder, its order and no pointer away.
    pub(super) fn let_go(&self, to: u16, moved: &[(ChanId, u32, Vec<u16>)]) {
        for &(chan, moves, _) in moved {
            let mut meta = self.chan_meta.shard(chan).lock();
            if meta.get(&chan).is_some_and(|m| m.moves >= moves) {
                continue;
            }
            {
                // Routes only go forward (a later move may have been let go already).
                let mut places = self.rx_places.shard(chan).lock();
                if places.get(&chan).is_none_or(|p| p.moves < moves) {
                    places.insert(chan, RxPlace { node: to, moves });
                }
            }
            self.set_holder(chan, None);
            meta.remove(&chan);
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
    pub(super) fn announce_tx(&self, to: u16, msg: &Message) {
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
    pub(super) fn rx_host(&self, c: ChanId) -> Option<u16> {
        if self.holder(c).is_some() {
            return Some(self.id);
        }
        self.remote_rx_node(c)
    }

    /// Records node `node` as a partner of channel `c` if its receive end is held here:
    /// checked under the holder's slot lock, which taking the end away needs, so an end
    /// leaving takes the partner with it (or is seen gone: false). (Adding to the state
    /// of an end that had just left would leave it looking as if arriving, for ever.)
    pub(super) fn add_partner(&self, c: ChanId, node: u16) -> bool {
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

    /// Passes on message number `seq` from node `origin` (`msg` `None`: a skip notice for
    /// it), which came from another node or waited here for an import, to its target
    /// wherever that is, so that its number is never left as a gap (see "Bounds"): a
    /// message that cannot be queued or passed on is replaced by a skip notice, and its
    /// sender is told. `hops`: times it has been forwarded, counting this time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(&self, target: Target, origin: Origin, seq: u64, hops: u8, from: SentBy, msg: Option<Message>, ends: Ends) {
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
        origin: Origin,
        seq: Option<u64>,
        hops: u8,
        from: SentBy,
        msg: Option<Message>,
        carried: Ends,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = Patience::default();
        loop {
            // It is in the middle of a move: look again when it has settled.
            if !self.look(&mut patience) {
                self.not_sent(seq, from, carried);
                return Err(DeliverError::Unsettled(Target::Inbox(pid)));
            }
            match self.next_hop(pid, hops > 0) {
                Hop::Here => {}
                Hop::Node(n, route) => {
                    let n = match self.dead_end(pid, n, route) {
                        Ok(n) => n,
                        Err(why) => {
                            self.not_sent(seq, from, carried);
                            return Err(DeliverError::Unreachable(why));
                        }
                    };
                    if let Some(n) = n {
                        if let Some(s) = seq {
                            if hops > 0 {
                                self.count_forwarded();
                            }
                            self.trace_route(pid, origin, s, hops, &format!("sent on to node {n}"));
                        }
                        return self
                            .send_remote(n, Target::Inbox(pid), from, msg, carried, seq.map(|s| (origin, s, hops)))
                            .map(|()| Some(pid))
                            .map_err(DeliverError::Unreachable);
                    }
                    // The birth node is down and knows nothing else: located instead.
                    let seq = seq.unwrap_or_else(|| self.next_pid_seq(pid));
                    self.locate_then(pid, Waiting::Msg { origin, seq, hops, from, msg, ends: carried, direct: false });
                    return Ok(Some(pid));
                }
                Hop::Refuse if carried.is_empty() && seq.is_some() => {
                    self.refuse(pid, origin, seq.unwrap_or_default(), hops, from, msg);
                    return Ok(Some(pid));
                }
                // (A message carrying receive ends is not given back: this node finds
                // the process for it.)
                Hop::Refuse | Hop::Locate => {
                    let seq = seq.unwrap_or_else(|| self.next_pid_seq(pid));
                    self.trace_route(pid, origin, seq, hops, "waits here while the process is located");
                    self.locate_then(pid, Waiting::Msg { origin, seq, hops, from, msg, ends: carried, direct: false });
                    return Ok(Some(pid));
                }
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
                && self.mailbox_full(&st.mailbox, st.order.seq.held_bytes_for(origin, seq) + size);
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
            let mut put = st.order.seq.put(origin, seq, if full { None } else { msg }, now);
            let mut bytes = 0;
            for m in std::mem::take(&mut put.ready) {
                bytes += m.approx_bytes();
                st.mailbox.inbox.push_back(m);
            }
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&Source::Inbox) {
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
            }
            // It came a long way: its origin node learns where the process is (path
            // shortening), once per stay.
            let tell =
                (hops > 1 && node.id == self.id && origin.node != self.id && st.fwd.tells_origin() && !st.told.contains(&origin.node))
                    .then(|| {
                        st.told.push(origin.node);
                        (st.moves, st.fwd)
                    });
            drop(st);
            self.trace_route(pid, origin, seq, hops, "queued");
            if let Some((moves, f)) = tell {
                if self.node(origin.node).is_none() {
                    self.shorten(pid, origin.node, moves, f);
                }
            }
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

    /// Where a message for process `pid` goes from here by the forwarding rule
    /// ([`forwarding::step`]); `arrived`: it came from another node.
    pub(super) fn next_hop(&self, pid: Pid, arrived: bool) -> Hop {
        if self.remote().is_none() {
            return Hop::Here;
        }
        let birth = name_node(pid);
        let known = match self.procs.get(pid) {
            Some(Entry::Live(_)) => return Hop::Here,
            Some(Entry::Moved(n, _, _)) if self.node(n).is_some() => return Hop::Here,
            Some(Entry::Moved(n, _, f)) => Known::Route(n, f),
            Some(Entry::Away(n, _)) => Known::Away((n != super::locate::NOWHERE).then_some(n)),
            None if birth != self.id && self.node(birth).is_some() => return Hop::Here,
            None => Known::Nothing,
        };
        if !arrived && self.locating.lock().contains_key(&pid) {
            return Hop::Locate;
        }
        match forwarding::step(known, self.id, birth, arrived) {
            Step::Queue | Step::Ended => Hop::Here,
            Step::Forward(n) => Hop::Node(n, if let Known::Route(_, f) = known { Some(f) } else { None }),
            Step::Refuse => Hop::Refuse,
            Step::Locate => Hop::Locate,
        }
    }

    /// A message for `pid` is to go to node `n` (by a route of mechanism `route`, or, with
    /// none, by the birth node). If `n` is down, the mechanism decides: `origin-site`
    /// cannot do without the birth node and `link-traversal` without a link of its
    /// chain (an error naming it); with no route, another mechanism locates the process
    /// instead (`Ok(None)`); otherwise the link keeps the message until `n` is back.
    fn dead_end(&self, pid: Pid, n: u16, route: Option<Forwarding>) -> Result<Option<u16>, String> {
        let Some(r) = self.remote() else { return Ok(Some(n)) };
        if r.is_up(n) {
            return Ok(Some(n));
        }
        let name = r.node_name(n).unwrap_or_else(|| n.to_string());
        let who = crate::value::name_text(pid);
        let birth = name_node(pid);
        let by = route.unwrap_or(self.config.forwarding);
        match by {
            Forwarding::OriginSite if n == birth => Err(format!(
                "<pid {who}> is reached through node {name}, where it was born (origin-site forwarding), and node {name} is down"
            )),
            Forwarding::LinkTraversal => {
                Err(format!("node {name}, which holds the next forwarding link to <pid {who}> (link-traversal forwarding), is down"))
            }
            _ if route.is_none() && n == birth => Ok(None),
            _ => Ok(Some(n)),
        }
    }

    /// What putting a message in sequence may call for once the queue's lock is
    /// released: a gap sweep scheduled, a give-up or a late message counted and logged.
    pub(super) fn after_put(&self, target: Target, put: &Put, now: u64) {
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
        origin: Origin,
        seq: Option<u64>,
        hops: u8,
        from: SentBy,
        mut msg: Option<Message>,
        mut carried: Ends,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = Patience::default();
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
            let place = match self.rx_where(c) {
                RxWhere::Arriving => continue,
                RxWhere::At(n) => Some(n),
                RxWhere::Gone => None,
            };
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
            return match place {
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
    pub(super) fn enqueue_numbered(
        &self,
        pid: Pid,
        c: ChanId,
        origin: Origin,
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
        if st.status == Status::Waiting && st.wait.contains(&Source::Chan(c)) {
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

    /// Receive end `c` is gone for good (the process holding it here ended; `meta`: what
    /// this node kept with it): nothing about the channel is needed again, since a
    /// receive end is never made anew. This node forgets it, and tells the nodes that keep
    /// something for it: its birth node and partners (where it is) and the nodes that
    /// numbered messages to it (their numbering). A message still on its way to it is
    /// dropped, as it would have been.
    pub(super) fn chan_ended(&self, c: ChanId, meta: Option<ChanMeta>) {
        self.forget_chan(c);
        let mut tell: Vec<u16> = vec![name_node(c)];
        if let Some(m) = &meta {
            tell.extend(m.partners.iter().copied());
            tell.extend(m.order.origins());
        }
        tell.sort_unstable();
        tell.dedup();
        for n in tell.into_iter().filter(|&n| n != self.id) {
            match self.node(n) {
                Some(b) => b.forget_chan(c),
                None if self.remote().is_some() && self.remote_send(n, Op::ChanEnded { chan: c }).is_err() => {
                    self.owe(n, Op::ChanEnded { chan: c })
                }
                None => {}
            }
        }
    }

    /// Forgets receive end `c`, which is gone: where it is, and this node's numbering of
    /// messages to it.
    pub(crate) fn forget_chan(&self, c: ChanId) {
        self.rx_places.remove(c);
        self.seqs.remove(c);
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
    pub(super) fn in_order(&self, c: ChanId, origin: Origin, seq: u64, msg: Option<Message>, now: u64, used: Option<usize>) -> (Put, bool) {
        let mut shard = self.chan_meta.shard(c).lock();
        let meta = shard.entry(c).or_default();
        let full = used.is_some_and(|u| u + meta.order.held_bytes_for(origin, seq) > self.config.mailbox_limit_bytes);
        let msg = if full { None } else { msg };
        (meta.order.put(origin, seq, msg, now), full)
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
    pub(super) fn rx_moved(&self, c: ChanId, node: u16, moves: u32) {
        if node == self.id || self.holder(c).is_some() || self.chan_meta.contains(c) {
            return;
        }
        let mut shard = self.rx_places.shard(c).lock();
        if shard.get(&c).is_none_or(|p| moves > p.moves) {
            shard.insert(c, RxPlace { node, moves });
        }
    }

    /// See [`super::Node::apply_link_update`].
    pub(crate) fn link_update(&self, pid: Pid, node: u16, moves: u32, chans: &[(ChanId, u32)], fwd: Forwarding) {
        self.pid_moved(pid, node, moves, fwd);
        for &(c, m) in chans {
            self.rx_moved(c, node, m);
        }
    }

    /// See [`super::Node::drop_forwarding`].
    pub(crate) fn drop_forwarding(&self, pid: Option<Pid>, chans: &[ChanId]) {
        if let Some(pid) = pid.filter(|&p| name_node(p) != self.id) {
            // A node with a monitor of the process keeps where it is, not to forward by
            // (its monitor fires `node_down` only for that node).
            let watched = self.monitors(pid);
            let mut shard = self.procs.shard(pid).lock();
            if let Some(Entry::Moved(n, m, _)) = shard.get(&pid) {
                let (n, m) = (*n, *m);
                if watched {
                    shard.insert(pid, Entry::Away(n, m));
                } else {
                    shard.remove(&pid);
                    self.forgotten.lock().note(pid, m);
                }
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
}

/// Where a message for a process goes next ([`NodeInner::next_hop`]).
pub(super) enum Hop {
    /// Here, or to a node in this OS process (the delivery loop finds it).
    Here,
    /// To node `n`, by a route of this mechanism (`None`: by the birth node).
    Node(u16, Option<Forwarding>),
    /// Back to its origin node.
    Refuse,
    /// Held here while the process is located.
    Locate,
}

/// What [`NodeInner::enqueue_numbered`] did.
pub(super) enum Enqueued {
    Done(Result<Option<Pid>, DeliverError>),
    /// The holder no longer holds the end here: look again.
    NotHere(Option<Message>, Ends),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Val;

    const O3: Origin = Origin { node: 3, inc: 1 };
    const O4: Origin = Origin { node: 4, inc: 1 };

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
        let p = o.put(O3, 1, m(1), 10);
        assert!(p.ready.is_empty() && p.opened);
        assert_eq!(o.oldest_gap(), Some(10));
        assert!(!o.put(O3, 2, m(2), 11).opened, "the same gap");
        assert_eq!(ints(&o.put(O3, 0, m(0), 12).ready), [0, 1, 2]);
        assert_eq!(o.oldest_gap(), None);
        // Another origin's numbers are its own.
        assert_eq!(ints(&o.put(O4, 0, m(40), 13).ready), [40]);
    }

    #[test]
    fn a_skip_notice_moves_the_sequence_past_its_number() {
        let mut o = Order::default();
        o.put(O3, 1, m(1), 0);
        o.put(O3, 3, m(3), 0);
        // Number 2 was lost: its notice is held, then passed over.
        assert!(o.put(O3, 2, None, 0).ready.is_empty());
        assert_eq!(ints(&o.put(O3, 0, m(0), 0).ready), [0, 1, 3]);
        // A notice in its turn releases what waits behind it.
        o.put(O3, 5, m(5), 0);
        assert_eq!(ints(&o.put(O3, 4, None, 0).ready), [5]);
        assert_eq!(o.next(O3), 6);
    }

    #[test]
    fn a_number_passed_already_is_late() {
        let mut o = Order::default();
        o.put(O3, 0, m(0), 0);
        let p = o.put(O3, 0, m(0), 0);
        assert!(p.late && p.ready.is_empty());
        assert!(!o.put(O3, 0, None, 0).late, "a late skip notice says nothing");
    }

    #[test]
    fn a_gap_is_given_up_when_asked_and_the_rest_comes_in_order() {
        let mut o = Order::default();
        o.put(O3, 2, m(2), 100);
        o.put(O3, 5, m(5), 100);
        o.put(O4, 1, m(41), 200);
        // Only gaps that began by 150.
        let (ready, skipped) = o.give_up(|_, since| since <= 150);
        assert_eq!((ints(&ready), skipped), (vec![2, 5], 4));
        assert_eq!(o.next(O3), 6);
        assert_eq!(o.oldest_gap(), Some(200));
        assert!(o.put(O3, 3, m(3), 300).late, "given up: it came too late");
    }

    #[test]
    fn the_held_back_bound_gives_up_the_gaps() {
        let mut o = Order::default();
        for s in 1..=MAX_HELD as u64 {
            assert!(o.put(O3, s, m(s as i64), 0).ready.is_empty());
        }
        let p = o.put(O3, MAX_HELD as u64 + 1, m(0), 0);
        assert_eq!((p.ready.len(), p.skipped), (MAX_HELD + 1, 1));
        assert_eq!(o.next(O3), MAX_HELD as u64 + 2);
        assert_eq!(o.oldest_gap(), None);
    }

    #[test]
    fn the_state_travels_and_its_gaps_start_again_where_it_arrives() {
        let mut o = Order::default();
        o.put(O3, 0, m(0), 0);
        o.put(O3, 2, m(2), 5);
        o.put(O3, 3, None, 5);
        let (expect, held) = o.to_wire();
        assert_eq!(expect, [(O3, 1)]);
        assert_eq!(held.len(), 2);
        // Something held below the expected number (a broken image) is left out.
        let mut held = held;
        held.push((O3, 0, m(9)));
        let mut o2 = Order::from_wire(expect, held, 1000);
        assert_eq!(o2.oldest_gap(), Some(1000));
        assert_eq!(ints(&o2.put(O3, 1, m(1), 1001).ready), [1, 2]);
        assert_eq!(o2.next(O3), 4);
    }
}
