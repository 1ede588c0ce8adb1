//! Transferring a process to a node in another OS process, as steps a live-migration
//! protocol drives (the live-migration driver of `tern-net` decides when each runs):
//!
//! 1. source: [`Node::export_frozen`] — the process is frozen; its image (state, pages,
//!    mailbox, links, monitors) is made, and the slot keeps taking messages;
//! 2. destination: [`Node::import_image`] — the image is reinstated, frozen; messages
//!    for it that reach the destination wait for it ([`Node::abort_import`] drops it);
//! 3. source: [`Node::commit_export`] — the slot becomes a forwarding pointer to the
//!    destination; what arrived after the image ([`Late`]) goes to the destination; the
//!    birth node and the partners of its receive ends are told where it is now;
//!    ([`Node::abort_export`] instead lets it run on here);
//! 4. destination: [`Node::commit_import`] — it gets the late messages right after
//!    those of the image, its receive ends (and messages that waited for them), and runs.
//! 5. link updates: the host tells every node that sends to the process or its receive
//!    ends where they are now ([`Node::apply_link_update`] there: the process's birth
//!    node, [`Late::inbox_origins`], the ends' birth nodes and partners); once all have
//!    acknowledged, [`Node::drop_forwarding`] at the source leaves nothing there (no
//!    residual dependency, [`Node::forwarding_state`]): a message that still reaches it
//!    goes by the birth node, which always knows the newest place.
//!
//! Until step 3 the source owns the process; after it, the destination (ARCHITECTURE.md,
//! "one owner, decided at the destination").
//! Every move increments the process's move count, the version of its routes
//! (`Entry::Moved`, [`super::remote::Op::PidMoved`]): a route is only replaced by a newer one.

use super::deliver::DeliverError;
use super::forwarding::{Forwarding, LeftBehind};
use super::remote::{Carried, Op};
use super::route::RxPlace;
use super::slot::{Entry, ExportMark, Mailbox, Order, Slot, Staged, Status, KILL, LATE};
use super::{ChanId, MoveError, Node, NodeInner, Origin, Pid, SentBy};
use crate::message::Message;
use crate::process::Process;
use crate::snapshot::{snapshot_full, ImageError};
use crate::value::name_node;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// What reached a process at the source after its image was made, and the latest state
/// the source kept of it: handed to the destination at commit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Late {
    pub inbox: Vec<Message>,
    /// The moves the process has made, this one included: the version of its routes.
    pub moves: u32,
    /// The nodes that have sent it numbered inbox messages (to tell where it is now).
    pub inbox_origins: Vec<u16>,
    /// Its inbox's sequence state at commit (it replaces the image's): per origin, the
    /// number of the next message expected, and the messages held back.
    pub inbox_expect: Vec<(Origin, u64)>,
    pub inbox_held: Vec<(Origin, u64, Option<Message>)>,
    /// Every receive end it holds: for an end in the image, the messages queued after
    /// it; for one that arrived later, all of them; with the sequence state and partners.
    pub chans: Vec<Carried>,
    pub links: Vec<Pid>,
    pub watchers: Vec<Pid>,
    pub kill: Option<String>,
    /// The host watches its exit ([`Node::watch`]): the watch moves with it.
    pub watched: bool,
    /// The forwarding mechanism of this move (`forwarding.rs`).
    pub fwd: Forwarding,
    /// The nodes that keep a forwarding link to it (`link-traversal`), to tell when it ends.
    pub trail: Vec<u16>,
}

/// What a committed export leaves of the process at its source: its heap and the rest
/// of its state, freed when this is dropped.
pub struct Remains(Option<Box<Process>>);

impl Node {
    /// Step 1 at the source: the image of a process frozen here (see [`Node::freeze`]).
    pub fn export_frozen(&self, pid: Pid) -> Result<Vec<u8>, MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        if st.status != Status::Frozen || st.import.is_some() {
            return Err(MoveError::NotHere(pid));
        }
        let proc = st.parked.as_ref().ok_or(MoveError::NotHere(pid))?;
        let bytes = snapshot_full(proc, &st.image(proc, i.now_us()));
        let mark = ExportMark::of(&st.mailbox);
        st.export.set(Some(mark));
        Ok(bytes)
    }

    /// Step 3 at the source: the process now belongs to node `dest`. Returns what must
    /// follow its image there.
    ///
    /// `fwd` is the forwarding mechanism of the move: what this node keeps for the process
    /// ([`Forwarding::left_behind`]) and whether its birth node is told
    /// ([`Forwarding::tells_birth`]).
    pub fn commit_export(&self, pid: Pid, dest: u16, fwd: Forwarding) -> Result<Late, MoveError> {
        self.commit_export_keeping(pid, dest, fwd).map(|(late, _)| late)
    }

    /// [`Node::commit_export`], leaving the process's state here to the caller to drop
    /// (a heap of a GiB takes tens of ms to free: a migration frees it after it has sent
    /// the late messages, outside the freeze).
    pub fn commit_export_keeping(&self, pid: Pid, dest: u16, fwd: Forwarding) -> Result<(Late, Remains), MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        let Some(mark) = st.export.take() else { return Err(MoveError::NotHere(pid)) };
        if st.status != Status::Frozen {
            return Err(MoveError::NotHere(pid));
        }
        let moves = st.moves.saturating_add(1);
        if let Some((n, first)) = st.lost.take() {
            // (Not carried: the process moved before its next send could say it.)
            let who = crate::value::name_text(pid);
            i.console.failed(
                0,
                &format!(
                    "node {}: <pid {who}> moved before a send could tell it that {n} message(s) it sent were lost, the first {first}",
                    i.name
                ),
            );
        }
        let order = st.order.take().seq;
        let inbox_origins = order.origins();
        let (inbox_expect, inbox_held) = order.into_wire();
        let mut late = Late {
            inbox: st.mailbox.inbox.drain(..).skip(mark.inbox).collect(),
            moves,
            inbox_origins,
            inbox_expect,
            inbox_held,
            chans: Vec::new(),
            links: st.links.take(),
            watchers: st.watchers.take(),
            kill: st.kill.take(),
            watched: false,
            fwd,
            trail: st.trail.take(),
        };
        let mut moved = Vec::new();
        for (c, mut q) in std::mem::take(&mut st.mailbox.chans) {
            let had = mark.chans.iter().find(|(m, _)| *m == c).map_or(0, |(_, n)| *n);
            let queue: Vec<Message> = q.drain(..).skip(had).collect();
            let meta = i.chan_meta.remove(c).unwrap_or_default();
            let moves = meta.moves() + 1;
            // This node is not made a partner (as a node an end leaves in a message is):
            // its pointer goes with the link update (`drop_forwarding`).
            let partners = meta.partners().to_vec();
            i.rx_places.insert(c, RxPlace::new(dest, moves));
            i.set_holder(c, None);
            moved.push((c, moves, partners.clone()));
            let (expect, held) = meta.into_order();
            late.chans.push(Carried { chan: c, queue, moves, partners, expect, held });
        }
        st.status = Status::Moved;
        let remains = Remains(st.parked.take());
        let group = remains.0.as_ref().map_or(0, |p| p.sys.group);
        st.mailbox = Mailbox::default();
        // Senders that find the slot `Moved` look again, and find what the mechanism
        // leaves here: a route to `dest`, or (at the birth node) that it lives elsewhere,
        // or nothing.
        let birth = name_node(pid);
        match fwd.left_behind(birth == i.id) {
            LeftBehind::Route => {
                i.procs.insert(pid, Entry::Moved(dest, moves, fwd));
                if fwd == Forwarding::LinkTraversal && !late.trail.contains(&i.id) {
                    late.trail.push(i.id);
                }
            }
            LeftBehind::Away => {
                i.procs.insert(pid, Entry::Away(dest, moves));
            }
            // A node with a monitor of it keeps where it is, for the monitor only; so
            // does one the process had watchers from (those here become remote monitors
            // below; others are kept for, which costs one route at most).
            LeftBehind::Nothing if i.monitors(pid) || !late.watchers.is_empty() => {
                i.procs.insert(pid, Entry::Away(dest, moves));
            }
            LeftBehind::Nothing => {
                i.procs.remove(pid);
                i.forgotten.lock().note(pid, moves);
            }
        }
        drop(st);
        // Watchers here now watch a process on another node: a `node_down` of `dest` must
        // reach them as it reaches watchers elsewhere (it did not, and a process that
        // died with its destination was never seen down by a monitor on its source).
        for &w in &late.watchers {
            if i.local_slot(w).is_some() {
                i.count_remote_monitor(dest, w, pid);
            }
        }
        if group != 0 {
            i.groups.lock().leave(pid, true);
        }
        i.mesh.changed();
        i.live.fetch_sub(1, Ordering::SeqCst);
        late.watched = i.watched.lock().remove(&pid).is_some();
        i.exited.notify_all();
        i.moves.fetch_add(1, Ordering::SeqCst);
        i.announce_moves(dest, &moved);
        if birth != i.id && birth != dest && fwd.tells_birth() {
            let _ = i.remote_send(birth, Op::PidMoved { pid, node: dest, moves, fwd });
        }
        Ok((late, remains))
    }

    /// Instead of step 3: the move is off; the process runs on here.
    pub fn abort_export(&self, pid: Pid) {
        if let Some(slot) = self.inner.local_slot(pid) {
            slot.st.lock().export.take();
        }
        self.inner.unfreeze(pid);
    }

    /// Step 2 at the destination: reinstates an image, frozen. From now on messages for
    /// the process that reach this node wait here for it (the source sends them on only
    /// after its commit). Returns the process's pid.
    pub fn import_image(&self, bytes: &[u8]) -> Result<Pid, ImageError> {
        self.import_state(bytes, Staged::Pages(Vec::new()), &[])
    }

    /// [`Node::import_image`] for a state-only image ([`Node::export_state`]) and the
    /// pages that came separately; the `absent` ones (ranges of pages, the end excluded)
    /// are fetched when touched.
    pub fn import_state(&self, bytes: &[u8], pages: Staged, absent: &[(u32, u32)]) -> Result<Pid, ImageError> {
        let i = &self.inner;
        let tslot = Slot::new(Status::Frozen, i.now_us());
        i.reinstate(0, &tslot, bytes, pages, absent)?;
        let (pid, ends) = {
            let mut st = tslot.st.lock();
            let pid = st.parked.as_ref().map_or(0, |p| p.pid);
            let mark = ExportMark::of(&st.mailbox);
            st.import.set(Some(mark));
            (pid, st.mailbox.chans.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        };
        if matches!(i.procs.get(pid), Some(Entry::Live(_))) {
            return Err(ImageError::Invalid(format!("process {} is already on this node", crate::value::name_text(pid))));
        }
        for c in ends {
            i.arriving.insert(c, Vec::new());
        }
        let mut st = tslot.st.lock();
        let before = i.procs.shard(pid).lock().insert(pid, Entry::Live(tslot.clone()));
        if let (Some(e @ (Entry::Moved(..) | Entry::Away(..))), Some(mark)) = (before, st.import.as_mut()) {
            mark.route = Some(e);
        }
        // (Again, now that a sweep can find it.)
        if st.order.seq.oldest_gap().is_some() {
            i.gap_opened(i.now_us());
        }
        drop(st);
        i.mesh.changed();
        Ok(pid)
    }

    /// Instead of step 4: drops an imported copy that will not run. What reached it here
    /// meanwhile goes on to where the process is (by the route this node had before).
    pub fn abort_import(&self, pid: Pid) {
        let i = &self.inner;
        let Some(slot) = i.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        // Not an import (any more): nothing to do.
        let Some(mark) = st.import.take() else { return };
        // Senders that find the slot look again, and follow the route put back.
        st.status = Status::Moved;
        st.parked = None;
        let imaged: Vec<ChanId> = mark.chans.iter().map(|(c, _)| *c).collect();
        let later: Vec<Message> = st.mailbox.inbox.drain(..).skip(mark.inbox).collect();
        let waiting = std::mem::take(&mut st.order.waiting);
        let mut ends: Vec<(ChanId, VecDeque<Message>)> = st.mailbox.chans.drain(..).filter(|(c, _)| !imaged.contains(c)).collect();
        st.mailbox = Mailbox::default();
        {
            let mut shard = i.procs.shard(pid).lock();
            match mark.route {
                Some(e) => {
                    shard.insert(pid, e);
                }
                None => {
                    shard.remove(&pid);
                }
            }
        }
        drop(st);
        i.mesh.changed();
        let mut take = |m: &Message| {
            let mine = m.rx_ends();
            let (with, rest) = std::mem::take(&mut ends).into_iter().partition(|(c, _)| mine.contains(c));
            ends = rest;
            with
        };
        for m in later {
            let carried = take(&m);
            // Their senders were here; which ones is not kept.
            if let Err(e) = i.deliver_now(SentBy::Host, super::Target::Inbox(pid), m, carried, None) {
                i.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
                i.report_lost(i.origin(), SentBy::Host, super::Target::Inbox(pid), i.send_error(&e));
            }
        }
        for a in waiting {
            let carried = a.msg.as_ref().map(&mut take).unwrap_or_default();
            i.forward(super::Target::Inbox(pid), a.origin, a.seq, a.hops, a.from, a.msg, carried);
        }
        i.drop_ends(&ends);
        for c in imaged {
            for a in i.arriving.remove(c).unwrap_or_default() {
                i.forward(super::Target::Chan(c), a.origin, a.seq, a.hops, a.from, a.msg, a.carried);
            }
        }
    }

    /// Step 4, first half, at the destination, at the commit: the imported process runs
    /// before its late state ([`Late`]) has come. It computes, and faults its absent pages
    /// in, but its next system call waits for that state, and so does its end (a kill
    /// included): everything it could see of its mailbox, links or routes is as if the
    /// move had not finished yet, which it has not. [`Node::commit_import`] (or
    /// [`Node::commit_import_without_late`]) then completes the move. This takes two
    /// one-way trips (the source's answer to the commit, then its late messages) out of
    /// the time the process stands still.
    pub fn resume_import(&self, pid: Pid) -> Result<(), MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        if st.import.is_none() || st.status != Status::Frozen || st.parked.is_none() || slot.flags.load(Ordering::SeqCst) & LATE != 0 {
            return Err(MoveError::NotHere(pid));
        }
        slot.flags.fetch_or(LATE, Ordering::SeqCst);
        i.live.fetch_add(1, Ordering::SeqCst);
        let group = st.parked.as_ref().map_or(0, |p| p.sys.group);
        st.freezers = 0;
        i.unfreeze_locked(pid, &slot, &mut st);
        drop(st);
        // Its group knows it is here from now on (the commit cannot look: the process
        // may be running then, not parked; it cannot end before the commit either).
        if group != 0 {
            i.groups.lock().join(pid, group);
        }
        Ok(())
    }

    /// Step 4 at the destination: the imported process gets what arrived at the source
    /// after its image (before whatever reached it here since), its receive ends, and runs.
    pub fn commit_import(&self, pid: Pid, late: Late) -> Result<(), MoveError> {
        self.commit_import_with(pid, Some(late))
    }

    /// Step 4 at the destination when the source was lost after the commit, before its
    /// late messages came: they are gone with it (their senders' numbers are given up
    /// after the gap timeout); the process runs with what its image had (its links,
    /// monitors and sequence state) and the messages that reached it here.
    pub fn commit_import_without_late(&self, pid: Pid) -> Result<(), MoveError> {
        self.commit_import_with(pid, None)
    }

    fn commit_import_with(&self, pid: Pid, late: Option<Late>) -> Result<(), MoveError> {
        let i = &self.inner;
        let had_late = late.is_some();
        let late = late.unwrap_or_default();
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        // One path for both: not resumed at the commit yet, it is now (it computes; what
        // it could see waits for the merge below).
        if slot.flags.load(Ordering::SeqCst) & LATE == 0 {
            self.resume_import(pid)?;
        }
        let (given_up, lost);
        let gaps;
        let ends: Vec<ChanId> = {
            let mut st = slot.st.lock();
            let Some(mark) = st.import.take() else { return Err(MoveError::NotHere(pid)) };
            let mut bytes = 0;
            for (k, m) in late.inbox.into_iter().enumerate() {
                bytes += m.approx_bytes();
                let at = (mark.inbox + k).min(st.mailbox.inbox.len());
                st.mailbox.inbox.insert(at, m);
            }
            for c in late.chans {
                let had = mark.chans.iter().find(|(m, _)| *m == c.chan).map(|(_, n)| *n);
                let (chan, q) = i.adopt_meta(c);
                bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                match (st.mailbox.chan(chan), had) {
                    (Some(old), Some(n)) => {
                        for (k, m) in q.into_iter().enumerate() {
                            let at = (n + k).min(old.len());
                            old.insert(at, m);
                        }
                    }
                    (Some(old), None) => old.extend(q),
                    (None, _) => st.mailbox.chans.push((chan, q)),
                }
            }
            // Numbered messages that reached it here wait no more: in sequence, after the
            // state that came with the commit.
            st.moves = st.moves.max(late.moves);
            let now = i.now_us();
            if had_late {
                st.order.seq = Order::from_wire(late.inbox_expect, late.inbox_held, now);
            }
            let waiting = std::mem::take(&mut st.order.waiting);
            let admitted = st.order.seq.admit(waiting.into_iter().map(|a| (a.origin, a.seq, a.msg, (a.origin, a.from))), now);
            given_up = admitted.skipped;
            lost = admitted.late;
            for m in admitted.ready {
                bytes += m.approx_bytes();
                st.mailbox.inbox.push_back(m);
            }
            gaps = admitted.gaps;
            st.mailbox.bytes += bytes;
            if had_late {
                st.links.put(late.links);
                st.watchers.put(late.watchers);
                st.fwd = late.fwd;
                if late.trail.is_empty() {
                    st.trail.take();
                } else {
                    st.trail.set(late.trail);
                }
            } else {
                st.fwd = i.config.forwarding;
            }
            st.told.take();
            if late.kill.is_some() {
                st.kill.put(late.kill);
                slot.flags.fetch_or(KILL, Ordering::SeqCst);
            }
            st.mailbox.chans.iter().map(|(c, _)| *c).collect()
        };
        i.mesh.changed();
        if gaps {
            i.gap_opened(i.now_us());
        }
        if given_up > 0 {
            // Only a broken or hostile peer fills the held-back bound.
            i.counters.given_up.fetch_add(given_up, Ordering::Relaxed);
            i.log_lost(
                super::Target::Inbox(pid),
                &format!("gave up waiting for {given_up} missing message(s): more than {} were held back behind them", super::MAX_HELD),
            );
        }
        for (origin, from) in lost {
            i.counters.late.fetch_add(1, Ordering::Relaxed);
            i.report_lost(origin, from, super::Target::Inbox(pid), i.why_lost(&DeliverError::Late));
        }
        if late.watched {
            i.watched.lock().insert(pid, None);
        }
        let mut waiting = Vec::new();
        for c in ends {
            i.set_holder(c, Some(pid));
            i.rx_places.remove(c);
            if let Some(w) = i.arriving.remove(c) {
                waiting.push((c, w));
            }
        }
        // Messages that reached this node for its ends before it was committed, in turn.
        for (c, msgs) in waiting {
            for a in msgs {
                i.forward(super::Target::Chan(c), a.origin, a.seq, a.hops, a.from, a.msg, a.carried);
            }
        }
        // Its system call or its end, held for this, go on now (unless a freeze for another
        // move came meanwhile: that one releases it).
        let ending = {
            let mut st = slot.st.lock();
            slot.flags.fetch_and(!LATE, Ordering::SeqCst);
            let ending = st.ending.take().map(|b| *b);
            if ending.is_none() && st.freezers == 0 {
                i.unfreeze_locked(pid, &slot, &mut st);
            }
            ending
        };
        if let Some((proc, reason)) = ending {
            i.finish(pid, &slot, proc, reason);
        }
        Ok(())
    }

    /// Step 5 at a node that sends to process `pid` or to receive ends it holds (its
    /// birth node, [`Late::inbox_origins`], the ends' birth nodes and partners): they are
    /// on node `node` now, the process after `moves` moves and each end after its own
    /// count, so later messages from here go straight there. A route is only replaced by
    /// a newer one, and none is set for what is here. `fwd`: the move's forwarding
    /// mechanism (a route of `origin-site` is not used to send straight there).
    pub fn apply_link_update(&self, pid: Pid, node: u16, moves: u32, chans: &[(ChanId, u32)], fwd: Forwarding) {
        self.inner.link_update(pid, node, moves, chans, fwd);
    }

    /// The moves process `pid`, here (running, or imported and not yet committed), has
    /// made, the one that brought it here included: the version of the routes to it.
    pub fn moves_of(&self, pid: Pid) -> Option<u32> {
        self.inner.local_slot(pid).map(|slot| slot.st.lock().moves)
    }

    /// After step 5, at the source, once every node told has acknowledged: forgets the
    /// forwarding pointers to the process and to the receive ends `chans` — except for a
    /// pid or channel born here (the birth node is where any node looks when it knows no
    /// better, and it knows the newest place). A message that still reaches this node
    /// goes by the birth node.
    ///
    /// With a forwarding mechanism that keeps the route (`link-traversal`), only the
    /// receive ends' pointers go.
    pub fn drop_forwarding(&self, pid: Pid, chans: &[ChanId], fwd: Forwarding) {
        self.inner.drop_forwarding(fwd.drops_route_at_acks().then_some(pid), chans);
    }

    /// Whether this node has an entry for `pid` (its live slot, or a route), and for how
    /// many of `chans` it has a pointer or a receive end's state: what a move left here.
    pub fn forwarding_state(&self, pid: Pid, chans: &[ChanId]) -> (bool, usize) {
        self.inner.forwarding_state(pid, chans)
    }
}

impl NodeInner {
    /// Process `pid` is now on node `node` after `moves` moves (told by the node that
    /// gave it away, or by a link update): the route here is replaced if this one is newer
    /// and the process is not here. A pid born here with no entry has ended.
    pub(crate) fn pid_moved(&self, pid: Pid, node: u16, moves: u32, fwd: Forwarding) {
        if node == self.id {
            return;
        }
        let birth = name_node(pid) == self.id;
        let mut shard = self.procs.shard(pid).lock();
        let newer = match shard.get(&pid) {
            Some(Entry::Live(_)) => false,
            Some(Entry::Moved(_, m, _)) => moves > *m,
            // An `Away` that knows no place (a route dropped: refused, or its node
            // restarted) takes any place learned.
            Some(Entry::Away(n, m)) => moves > *m || *n == super::locate::NOWHERE,
            // A node that forgot the process takes only news newer than it forgot.
            None => !birth && self.forgotten.lock().newer(pid, moves),
        };
        if newer {
            // A birth node under `resend` keeps only that it lives (and where, for its
            // monitors), never a route it would forward by.
            let e = if birth && fwd == Forwarding::Resend { Entry::Away(node, moves) } else { Entry::Moved(node, moves, fwd) };
            shard.insert(pid, e);
        }
    }
}
