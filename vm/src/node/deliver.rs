//! Delivery in this OS process: queueing a message at its target's slot wherever the
//! target is now ([`NodeInner::send_as`], [`NodeInner::deliver_now`]), where a receive
//! end not held here is ([`NodeInner::rx_where`]), waiting a bounded time for a target
//! in the middle of a move ([`NodeInner::look`], the settle wait), what a failed send says ([`DeliverError`]), the node's delivery counters, and the
//! down and exit notices links and monitors send ([`event_message`]). Messages for other
//! OS processes leave through `remote.rs`; numbered ones are routed by `route.rs`.

use super::slot::{Source, Status, Task};
use super::{ChanId, NodeInner, Pid, SentBy, Target};
use crate::message::{Message, Obj, Val};
use crate::value::name_text;
use crossbeam_deque::Worker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a message was not queued (see `remote.rs`, "Bounds").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliverError {
    /// The mailbox of this process (the target, or the holder of the target channel)
    /// is at its limit.
    Full(Pid),
    /// Too many messages wait for the target to arrive here.
    Waiting(Target),
    /// The target is on another node, which cannot be reached.
    Unreachable(String),
    /// The target stayed in the middle of a move for the settle timeout.
    Unsettled(Target),
    /// A numbered message whose number had been given up already.
    Late,
}

/// How many messages this node could not deliver, and why (see `remote.rs`, "Bounds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Sends that failed (or numbered messages lost here) because the target stayed in
    /// the middle of a move for the settle timeout.
    pub unsettled: u64,
    /// Messages from other nodes refused here for a full mailbox (or too many waiting
    /// for an import); a skip notice took each one's place.
    pub refused_full: u64,
    /// Numbered messages this node could not pass on (a link refused them, too many
    /// hops, a target that did not settle); a skip notice follows each where it can.
    pub lost_on_the_way: u64,
    /// Sequence numbers given up here (the gap timeout, or the held-back bound).
    pub given_up: u64,
    /// Numbered messages that came after their number was given up (dropped).
    pub late: u64,
    /// Losses reported to processes here (their next send fails).
    pub reported: u64,
    /// Times a sending process here waited for a congested link (back-pressure).
    pub backed_off: u64,
}

#[derive(Default)]
pub(super) struct DeliveryCounters {
    pub(super) unsettled: AtomicU64,
    pub(super) refused_full: AtomicU64,
    pub(super) lost_on_the_way: AtomicU64,
    pub(super) given_up: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) reported: AtomicU64,
    pub(super) backed_off: AtomicU64,
}

/// A delivery loop's patience with a target in the middle of a move ([`NodeInner::look`]).
#[derive(Default)]
pub(crate) struct Patience {
    looks: u32,
    since: Option<Instant>,
    gen: u64,
}

/// A byte count as limits are given.
pub(crate) fn bytes_text(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// A target as messages name it.
pub(crate) fn what(target: Target) -> String {
    match target {
        Target::Inbox(p) => format!("<pid {}>", name_text(p)),
        Target::Chan(c) => format!("<sender {}>", name_text(c)),
    }
}

/// `{event: EVENT, pid: PID, reason: REASON}`, the message links and monitors send.
pub(super) fn event_message(event: &str, pid: Pid, reason: &str) -> Message {
    Message {
        root: Val::Obj(0),
        objs: vec![
            Obj::Map(vec![(Val::Obj(1), Val::Obj(2)), (Val::Obj(3), Val::Pid(pid)), (Val::Obj(4), Val::Obj(5))]),
            Obj::Str("event".into()),
            Obj::Str(event.into()),
            Obj::Str("pid".into()),
            Obj::Str("reason".into()),
            Obj::Str(reason.into()),
        ],
    }
}

impl NodeInner {
    /// Counts one more look at a target that may be in the middle of a move; between
    /// looks, waits until something changes (see [`Settle`]), a few quick looks first.
    /// False once it has been unsettled for [`NodeConfig::settle_timeout`].
    pub(crate) fn look(&self, p: &mut Patience) -> bool {
        p.looks += 1;
        if p.looks == 1 {
            return true;
        }
        if p.looks <= 8 {
            std::thread::yield_now();
            return true;
        }
        let now = Instant::now();
        let since = *p.since.get_or_insert(now);
        if now.duration_since(since) >= self.config.settle_timeout {
            self.counters.unsettled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let s = &self.mesh.settle;
        s.waiters.fetch_add(1, Ordering::SeqCst);
        {
            let mut g = s.lock.lock();
            if s.gen.load(Ordering::SeqCst) == p.gen {
                // A change not signalled costs at most this long.
                let _ = s.cv.wait_for(&mut g, Duration::from_millis(2));
            }
        }
        s.waiters.fetch_sub(1, Ordering::SeqCst);
        p.gen = s.gen.load(Ordering::SeqCst);
        true
    }

    /// Whether a mailbox has no room for a message of `bytes` more: past either limit
    /// (`mailbox_limit_bytes`, `mailbox_limit_messages`).
    pub(crate) fn mailbox_full(&self, mailbox: &super::slot::Mailbox, bytes: usize) -> bool {
        mailbox.bytes + bytes > self.config.mailbox_limit_bytes || mailbox.count() >= self.config.mailbox_limit_messages
    }

    /// The mailbox limits, for messages.
    pub(crate) fn mailbox_limits_text(&self) -> String {
        format!(
            "its limits are {} messages and {} of queued messages: [limits] mailbox_messages and mailbox_bytes",
            self.config.mailbox_limit_messages,
            bytes_text(self.config.mailbox_limit_bytes)
        )
    }

    /// What a sender is told when its message could not be queued.
    pub(crate) fn send_error(&self, e: &DeliverError) -> String {
        match e {
            DeliverError::Full(p) => format!("the mailbox of <pid {}> is full ({})", name_text(*p), self.mailbox_limits_text()),
            DeliverError::Waiting(t) => format!("too many messages are waiting for {} to arrive here", what(*t)),
            DeliverError::Unreachable(why) => why.clone(),
            DeliverError::Unsettled(t) => format!(
                "not sent: {} is in the middle of a move that did not settle within {} s",
                what(*t),
                self.config.settle_timeout.as_secs_f64()
            ),
            DeliverError::Late => "not sent: its number was given up already".into(),
        }
    }

    /// Queues a notice from the node itself (a down or exit message: never refused for
    /// a full mailbox) at its target, as [`NodeInner::send_as`] does.
    pub(crate) fn deliver(
        &self,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        self.send_as(SentBy::Notice, target, msg, carried, local)
    }

    /// Queues a message from `from` (with the receive ends it carries, and their
    /// queues) at its target, wherever that is now. `Ok(None)`: the target is gone and
    /// the message dropped (as sends to ended processes are). An error: it was not sent
    /// (see `remote.rs`, "Bounds").
    pub(crate) fn send_as(
        &self,
        from: SentBy,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        // Once this node has sent to the channel (or the process) while its receive end
        // (or it) was elsewhere, every message from here to it is numbered: one still on
        // its way cannot be overtaken by a later one, wherever it is (`remote.rs`, "Order").
        if self.remote().is_some() {
            match target {
                Target::Chan(c) if self.seqs.contains(c) => {
                    return self.route_numbered(c, self.origin(), None, 0, from, Some(msg), carried, local);
                }
                Target::Inbox(p) if self.pid_seqs.contains(p) => {
                    return self.route_inbox(p, self.origin(), None, 0, from, Some(msg), carried, local);
                }
                _ => {}
            }
        }
        self.deliver_now(from, target, msg, carried, local)
    }

    /// Queues a message at its target now (see [`NodeInner::send_as`]).
    pub(crate) fn deliver_now(
        &self,
        from: SentBy,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = Patience::default();
        loop {
            // A receive end or a process in the middle of a move: look again when it has
            // settled.
            if !self.look(&mut patience) {
                self.unsent(from, carried);
                return Err(DeliverError::Unsettled(target));
            }
            let pid = match target {
                Target::Inbox(p) => {
                    if !matches!(self.next_hop(p, false), super::route::Hop::Here) {
                        return self.route_inbox(p, self.origin(), None, 0, from, Some(msg), carried, local);
                    }
                    p
                }
                Target::Chan(c) => match self.holder(c) {
                    Some(p) => p,
                    None => match self.rx_where(c) {
                        RxWhere::Arriving => continue,
                        RxWhere::At(n) => {
                            return self
                                .send_remote(n, target, from, Some(msg), carried, None)
                                .map(|()| None)
                                .map_err(DeliverError::Unreachable);
                        }
                        RxWhere::Gone => {
                            self.drop_ends(&carried);
                            return Ok(None);
                        }
                    },
                },
            };
            let Some((node, slot)) = self.find(pid) else {
                if self.handed_on(target, pid) {
                    continue;
                }
                self.drop_ends(&carried);
                return Ok(None);
            };
            let mut st = slot.st.lock();
            match st.status {
                Status::Moved => continue,
                Status::Exited => {
                    drop(st);
                    // A holder may pass its receive end on and then end while this
                    // sender was on its way to it: only one that still holds it (it
                    // ended with it) means the channel is gone. (Its hand-off is made
                    // before its end is recorded, under this lock: seen here.)
                    if self.handed_on(target, pid) {
                        continue;
                    }
                    self.drop_ends(&carried);
                    return Ok(None);
                }
                _ => {}
            }
            let bytes = msg.approx_bytes();
            let src = match target {
                Target::Inbox(_) => Source::Inbox,
                Target::Chan(c) => Source::Chan(c),
            };
            // A holder that has just handed the receive end on has no queue for it
            // any more (its holder is about to change): looked for again, before its
            // mailbox's room is judged (a full mailbox there is not the new holder's).
            if st.mailbox.queue(src).is_none() {
                continue;
            }
            if carried.is_empty() && from != SentBy::Notice && self.mailbox_full(&st.mailbox, bytes) {
                return Err(DeliverError::Full(pid));
            }
            // Its receiver waits in a plain `recv` for just this: the call completes here.
            if carried.is_empty() && st.complete_recv(src, &msg) {
                if let SentBy::Process(_) = from {
                    slot.meter.received_here(bytes as u64);
                }
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
                return Ok(Some(pid));
            }
            let Some(q) = st.mailbox.queue(src) else { continue };
            q.push_back(msg);
            st.mailbox.bytes += bytes;
            if let SentBy::Process(_) = from {
                slot.meter.received_here(bytes as u64);
            }
            for (c, q) in carried {
                st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                st.mailbox.chans.push((c, q));
                self.set_holder(c, Some(pid));
                self.rx_places.remove(c);
            }
            if st.status == Status::Waiting && st.wait.contains(&src) {
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
            }
            return Ok(Some(pid));
        }
    }

    /// Where channel `c`'s receive end is, for a sender that found no process here
    /// holding it (the fast path: a held end needs none of this).
    ///
    /// An end arriving here records its state, then drops the pointer away, then gets
    /// its holder; one leaving sets the pointer, drops the holder, then the state. So
    /// this reads the holder, the pointer, then the state: a reader that finds no
    /// pointer (dropped by an arrival) then finds the state that came before it. (Read
    /// the other way round, a sender here could miss the state that had not come yet and
    /// then the pointer that was just dropped, and take an arriving end for one that is
    /// gone.) The settle generation (every holder change bumps it) is read first and
    /// again when the end seems nowhere: one that came and went meanwhile is looked for
    /// again.
    pub(super) fn rx_where(&self, c: ChanId) -> RxWhere {
        let gen = self.mesh.generation();
        if self.holder(c).is_some() {
            return RxWhere::Arriving;
        }
        let place = self.remote_rx_node(c);
        if self.chan_meta.contains(c) {
            return RxWhere::Arriving;
        }
        match place {
            Some(n) => RxWhere::At(n),
            None if self.mesh.generation() != gen => RxWhere::Arriving,
            None => RxWhere::Gone,
        }
    }

    /// Whether `target` is a channel whose receive end `pid` no longer holds (it handed
    /// it on, or it is on its way): its sender looks for it again.
    pub(super) fn handed_on(&self, target: Target, pid: Pid) -> bool {
        match target {
            Target::Chan(c) => self.holder(c) != Some(pid),
            Target::Inbox(_) => false,
        }
    }
}

/// Where a receive end not held here is ([`NodeInner::rx_where`]).
pub(super) enum RxWhere {
    /// Arriving here, or held here after all (it just moved): look again.
    Arriving,
    /// On another node (as far as this one knows).
    At(u16),
    /// Nowhere: the channel is gone.
    Gone,
}
