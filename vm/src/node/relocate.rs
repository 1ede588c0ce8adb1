//! Relocation: moving a process between two nodes of one in-memory [`super::Mesh`] (two
//! VM instances in one OS process): freeze it, image it (a heap of a MiB or more is not
//! imaged but handed over as it is), reinstate the image at the destination, hand it its
//! pid there and retire the slot here, one relocation at a time
//! ([`Node::relocate`]); and the hook that does so at processes' safepoints
//! (`--migrate-every`).

use super::slot::{Entry, Mailbox, Slot, Staged, Status, Task, FREEZE, LOST};
use super::{MoveError, Node, NodeInner, Pid};
use crate::heap::Heap;
use crate::snapshot::{snapshot_full, snapshot_state};
use crate::value::name_node;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Heaps smaller than this (bytes) are imaged whole at a relocation; larger ones are
/// handed over as they are.
pub const IMAGE_WHOLE_BELOW: usize = 1 << 20;

/// What one relocation cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelocateStats {
    pub image_bytes: usize,
    /// From the freeze request until the process could run again at the destination.
    pub frozen_us: u64,
}

/// Decides, at a process's safepoints (the end of a time slice, or parking in a wait),
/// whether to relocate it now and to which node: `(pid, reductions in the slice)`.
pub type RelocateHook = Box<dyn FnMut(Pid, u64) -> Option<u16> + Send>;

impl Node {
    /// Relocates a process to node `dest` of the same in-memory mesh: freeze it, image it, reinstate
    /// the image at `dest` under a temporary id, give it its pid, let it run there and
    /// delete the copy here. Messages sent to it meanwhile are kept, in order.
    pub fn relocate(&self, pid: Pid, dest: &Node, timeout: Duration) -> Result<RelocateStats, MoveError> {
        self.inner.relocate(pid, &dest.inner, timeout)
    }

    /// Installs a hook that relocates processes at their safepoints (see [`RelocateHook`]).
    pub fn set_relocate_hook(&self, hook: RelocateHook) {
        *self.inner.relocate_hook.lock() = Some(hook);
        self.inner.has_relocate_hook.store(true, Ordering::SeqCst);
    }
}

impl NodeInner {
    /// Asks the relocate hook whether to relocate the process now; if so, freezes it (it
    /// is at a safepoint: `task` is it, runnable, or it is parked) and relocates it.
    pub(super) fn maybe_relocate(&self, pid: Pid, used: u64, task: Option<Task>) -> Option<Task> {
        if !self.has_relocate_hook.load(Ordering::Relaxed) {
            return task;
        }
        let dest = self.relocate_hook.lock().as_mut().and_then(|h| h(pid, used));
        let Some(dest) = dest.and_then(|d| self.node(d)) else { return task };
        // One relocation at a time. A worker waits only briefly for another to finish,
        // since that one may be waiting for a process in this worker's queue.
        let Some(_one_at_a_time) = self.mesh.relocate_lock.try_lock_for(Duration::from_millis(2)) else { return task };
        match task {
            Some(t) => {
                let mut st = t.slot.st.lock();
                t.slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                st.status = Status::Frozen;
                st.parked = Some(t.proc);
                self.busy.fetch_sub(1, Ordering::SeqCst);
            }
            None => {
                // It has just parked. Freeze it only if it is still waiting: if something
                // woke it, it may be queued behind this very worker, and waiting here for
                // it to reach a safepoint would wait for ever.
                let slot = self.local_slot(pid)?;
                let mut st = slot.st.lock();
                if st.status != Status::Waiting {
                    return None;
                }
                slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                self.end_wait(&mut st);
                st.status = Status::Frozen;
            }
        }
        // A process that ended meanwhile is not moved; nothing else can fail here but a
        // refused image, after which it runs on here.
        let _ = self.relocate_locked(pid, &dest, Duration::from_secs(30));
        None
    }

    pub(super) fn relocate(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<RelocateStats, MoveError> {
        let _one_at_a_time = self.mesh.relocate_lock.lock();
        self.relocate_locked(pid, dest, timeout)
    }

    pub(super) fn relocate_locked(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<RelocateStats, MoveError> {
        if dest.id == self.id {
            return Ok(RelocateStats::default());
        }
        self.relocating.fetch_add(1, Ordering::SeqCst);
        let r = self.relocate_inner(pid, dest, timeout);
        self.relocating.fetch_sub(1, Ordering::SeqCst);
        r
    }

    pub(super) fn relocate_inner(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<RelocateStats, MoveError> {
        let t0 = Instant::now();
        self.freeze(pid, timeout)?;
        let slot = self.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        // An empty process at the destination, under a temporary id.
        let temp = dest.new_name();
        let tslot = Slot::new(Status::Frozen, dest.now_us());
        dest.procs.insert(temp, Entry::Live(tslot.clone()));
        let mut st = slot.st.lock();
        if st.status != Status::Frozen || st.parked.is_none() {
            drop(st);
            dest.procs.remove(temp);
            return Err(MoveError::NotHere(pid));
        }
        // A small heap goes in the image, whole, and is checked as any image is (so the
        // harness exercises imaging and restoring at every move); a larger one is handed
        // over as it is (both VMs are in this OS process): a move then costs what the
        // state costs, not what the heap does.
        let now = self.now_us();
        let image = st.parked.as_ref().map(|p| st.image(p, now)).ok_or(MoveError::NotHere(pid))?;
        let proc = st.parked.as_mut().ok_or(MoveError::NotHere(pid))?;
        let whole = proc.heap.page_count() * proc.heap.page_words() * 8 < IMAGE_WHOLE_BELOW;
        let (bytes, refused) = if whole {
            let bytes = snapshot_full(proc, &image);
            let r = dest.reinstate(temp, &tslot, &bytes, Staged::Pages(Vec::new()), &[]);
            (bytes, r.err())
        } else {
            let bytes = snapshot_state(proc, &image);
            let config = proc.heap.config();
            let mut heap = Some(std::mem::replace(&mut proc.heap, Heap::new(config)));
            match crate::snapshot::restore_with_heap(&bytes, &dest.vm, &mut heap) {
                Ok((restored, img)) => {
                    dest.install(&tslot, restored, img);
                    (bytes, None)
                }
                Err(e) => {
                    // Refused: it goes on here, with its heap back.
                    if let Some(h) = heap {
                        proc.heap = h;
                    }
                    (bytes, Some(e))
                }
            }
        };
        if let Some(e) = refused {
            drop(st);
            dest.procs.remove(temp);
            self.release(pid);
            return Err(MoveError::Image(e));
        }
        // Losses not yet reported to it go with it.
        if let Some(lost) = st.lost.take() {
            tslot.st.lock().lost.set(Some(lost));
            tslot.flags.fetch_or(LOST, Ordering::SeqCst);
        }
        // Give the copy its pid, point the birth node at it, and retire the original:
        // senders waiting on this slot's lock look the process up again.
        dest.procs.insert(pid, Entry::Live(tslot));
        dest.procs.remove(temp);
        dest.live.fetch_add(1, Ordering::SeqCst);
        let birth = name_node(pid);
        if birth != dest.id {
            if let Some(b) = self.node(birth) {
                b.procs.insert(pid, Entry::Moved(dest.id, st.moves.saturating_add(1), super::Forwarding::LinkUpdate));
            }
        }
        let group = st.parked.as_ref().map_or(0, |p| p.sys.group);
        st.status = Status::Moved;
        st.parked = None;
        st.mailbox = Mailbox::default();
        drop(st);
        if group != 0 {
            self.groups.lock().leave(pid, true);
            dest.groups.lock().join(pid, group);
        }
        self.mesh.changed();
        if birth != self.id {
            self.procs.remove(pid);
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        {
            let mut w = self.watched.lock();
            if w.remove(&pid).is_some() {
                dest.watched.lock().insert(pid, None);
            }
        }
        self.exited.notify_all();
        self.moves.fetch_add(1, Ordering::SeqCst);
        self.image_max.fetch_max(bytes.len() as u64, Ordering::SeqCst);
        dest.unfreeze(pid);
        Ok(RelocateStats { image_bytes: bytes.len(), frozen_us: t0.elapsed().as_micros() as u64 })
    }
}
