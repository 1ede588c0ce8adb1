//! Moving a process to a node in another OS process, as steps a migration protocol
//! drives (groundwork for live migration; the protocol itself decides when each runs):
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
//!
//! Until step 3 the source owns the process (invariant 7); after it, the destination.

use super::remote::{Carried, RxPlace};
use super::{ChanId, Entry, MoveError, Node, NodeInner, Pid, Slot, Status, KILL};
use crate::message::Message;
use crate::snapshot::{snapshot_full, ImageError};
use crate::value::name_node;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// What reached a process at the source after its image was made, and the latest state
/// the source kept of it: handed to the destination at commit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Late {
    pub inbox: Vec<Message>,
    /// Every receive end it holds: for an end in the image, the messages queued after
    /// it; for one that arrived later, all of them; with the sequence state and partners.
    pub chans: Vec<Carried>,
    pub links: Vec<Pid>,
    pub watchers: Vec<Pid>,
    pub kill: Option<String>,
    /// The host watches its exit ([`Node::watch`]): the watch moves with it.
    pub watched: bool,
}

/// How much of the mailbox the image holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportMark {
    inbox: usize,
    chans: Vec<(ChanId, usize)>,
}

impl ExportMark {
    pub(crate) fn of(m: &super::Mailbox) -> ExportMark {
        ExportMark { inbox: m.inbox.len(), chans: m.chans.iter().map(|(c, q)| (*c, q.len())).collect() }
    }
}

impl Node {
    /// Step 1 at the source: the image of a process frozen here (see [`Node::freeze`]).
    pub fn export_frozen(&self, pid: Pid) -> Result<Vec<u8>, MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        if st.status != Status::Frozen {
            return Err(MoveError::NotHere(pid));
        }
        let proc = st.parked.as_ref().ok_or(MoveError::NotHere(pid))?;
        let bytes = snapshot_full(proc, &st.image(proc, i.now_us()));
        st.export = Some(ExportMark::of(&st.mailbox));
        Ok(bytes)
    }

    /// Step 3 at the source: the process now belongs to node `dest`. Returns what must
    /// follow its image there.
    pub fn commit_export(&self, pid: Pid, dest: u16) -> Result<Late, MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        let Some(mark) = st.export.take() else { return Err(MoveError::NotHere(pid)) };
        if st.status != Status::Frozen {
            return Err(MoveError::NotHere(pid));
        }
        let mut late = Late {
            inbox: st.mailbox.inbox.drain(..).skip(mark.inbox).collect(),
            chans: Vec::new(),
            links: std::mem::take(&mut st.links),
            watchers: std::mem::take(&mut st.watchers),
            kill: st.kill.take(),
            watched: false,
        };
        let mut moved = Vec::new();
        for (c, mut q) in std::mem::take(&mut st.mailbox.chans) {
            let had = mark.chans.iter().find(|(m, _)| *m == c).map_or(0, |(_, n)| *n);
            let queue: Vec<Message> = q.drain(..).skip(had).collect();
            let meta = i.chan_meta.remove(c).unwrap_or_default();
            let moves = meta.moves() + 1;
            let mut partners = meta.partners().to_vec();
            if !partners.contains(&i.id) {
                partners.push(i.id);
            }
            i.rx_places.insert(c, RxPlace::new(dest, moves));
            i.set_holder(c, None);
            moved.push((c, moves, partners.clone()));
            let (expect, held) = meta.into_order();
            late.chans.push(Carried { chan: c, queue, moves, partners, expect, held });
        }
        st.status = Status::Moved;
        st.parked = None;
        st.mailbox = super::Mailbox::default();
        // Senders that find the slot `Moved` look again and are sent on to `dest`.
        i.procs.insert(pid, Entry::Moved(dest));
        drop(st);
        i.live.fetch_sub(1, Ordering::SeqCst);
        late.watched = i.watched.lock().remove(&pid).is_some();
        i.exited.notify_all();
        i.moves.fetch_add(1, Ordering::SeqCst);
        i.announce_moves(dest, &moved);
        let birth = name_node(pid);
        if birth != i.id && birth != dest {
            let _ = i.remote_send(birth, super::Op::PidMoved { pid, node: dest });
        }
        Ok(late)
    }

    /// Instead of step 3: the move is off; the process runs on here.
    pub fn abort_export(&self, pid: Pid) {
        if let Some(slot) = self.inner.local_slot(pid) {
            slot.st.lock().export = None;
        }
        self.inner.unfreeze(pid);
    }

    /// Step 2 at the destination: reinstates an image, frozen. From now on messages for
    /// the process that reach this node wait here for it (the source sends them on only
    /// after its commit). Returns the process's pid.
    pub fn import_image(&self, bytes: &[u8]) -> Result<Pid, ImageError> {
        self.import_state(bytes, super::Staged::Pages(Vec::new()), &[])
    }

    /// [`Node::import_image`] for a state-only image ([`Node::export_state`]) and the
    /// pages that came separately; the `absent` ones are fetched when touched.
    pub fn import_state(&self, bytes: &[u8], pages: super::Staged, absent: &[u32]) -> Result<Pid, ImageError> {
        let i = &self.inner;
        let tslot = Slot::new(Status::Frozen);
        i.reinstate(0, &tslot, bytes, pages, absent)?;
        let (pid, ends) = {
            let mut st = tslot.st.lock();
            let pid = st.parked.as_ref().map_or(0, |p| p.pid);
            st.import = Some(ExportMark::of(&st.mailbox));
            (pid, st.mailbox.chans.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        };
        if matches!(i.procs.get(pid), Some(Entry::Live(_))) {
            return Err(ImageError::Invalid(format!("process {} is already on this node", crate::value::name_text(pid))));
        }
        for c in ends {
            i.arriving.insert(c, Vec::new());
        }
        i.procs.insert(pid, Entry::Live(tslot));
        Ok(pid)
    }

    /// Instead of step 4: drops an imported copy that will not run.
    pub fn abort_import(&self, pid: Pid) {
        let i = &self.inner;
        let Some(slot) = i.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        if st.import.take().is_none() {
            return; // not an import (any more)
        }
        st.status = Status::Exited;
        st.parked = None;
        let chans: Vec<ChanId> = st.mailbox.chans.iter().map(|(c, _)| *c).collect();
        drop(st);
        i.procs.remove(pid);
        for c in chans {
            i.arriving.remove(c);
        }
    }

    /// Step 4 at the destination: the imported process gets what arrived at the source
    /// after its image (before whatever reached it here since), its receive ends, and runs.
    pub fn commit_import(&self, pid: Pid, late: Late) -> Result<(), MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
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
            st.mailbox.bytes += bytes;
            st.links = late.links;
            st.watchers = late.watchers;
            if late.kill.is_some() {
                st.kill = late.kill;
                slot.flags.fetch_or(KILL, Ordering::SeqCst);
            }
            st.mailbox.chans.iter().map(|(c, _)| *c).collect()
        };
        if late.watched {
            i.watched.lock().insert(pid, None);
        }
        i.live.fetch_add(1, Ordering::SeqCst);
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
                let _ = i.route_numbered(c, a.origin, a.seq, a.hops, a.msg, a.carried, None);
            }
        }
        i.unfreeze(pid);
        Ok(())
    }
}

impl NodeInner {
    /// A process born here is now on node `node` (told by the node that gave it away).
    pub(crate) fn pid_moved(&self, pid: Pid, node: u16) {
        if node == self.id {
            return;
        }
        if !matches!(self.procs.get(pid), Some(Entry::Live(_))) {
            self.procs.insert(pid, Entry::Moved(node));
        }
    }
}
