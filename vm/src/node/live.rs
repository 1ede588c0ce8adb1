//! What a live migration needs of a node, besides the steps of `transfer.rs`: reading a
//! *running* process's pages at its safepoints (pre-copy rounds), its dirty set, slowing
//! it down while its writes outrun the network, its state without its pages, and
//! answers to the `migrate` calls programs make. The protocol that decides when each is
//! used is the host's (`tern-net`'s `proto/migrate.rs`, driven over QUIC by its `node/migration/`).

use super::slot::{Entry, ExportMark, Job, Status, JOBS};
use super::{MoveError, Node, NodeInner, Pid};
use crate::heap::{Heap, HeapConfig};
use crate::process::{IoResult, Process};
use crate::snapshot::snapshot_state;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The pages of a heap as they travel, in the order asked: each page's words, or `None`
/// when all zero; pages past the heap's end are left out.
pub fn visit_pages(heap: &Heap, pages: &[u32], mut f: impl FnMut(u32, Option<&[u64]>)) {
    let n = heap.page_count() as u32;
    for &p in pages.iter().filter(|&&p| p < n) {
        let words = heap.page(p);
        f(p, words.iter().any(|&w| w != 0).then_some(words));
    }
}

/// How many of `pages` [`visit_pages`] visits.
pub fn pages_within(heap: &Heap, pages: &[u32]) -> usize {
    let n = heap.page_count() as u32;
    pages.iter().filter(|&&p| p < n).count()
}

impl Node {
    /// Runs `f` on the heap of a process at a safepoint, to read its pages as they
    /// travel (it may be running: the caller takes few at a time so that it keeps
    /// running between them).
    pub fn read_pages_with<R: Send + 'static>(&self, pid: Pid, f: impl FnOnce(&Heap) -> R + Send + 'static) -> Result<R, MoveError> {
        self.at_safepoint(pid, move |p| f(&p.heap), Duration::from_secs(10))
    }
}

impl Node {
    /// Runs `f` on process `pid` at its next safepoint: at once if it is parked (waiting,
    /// frozen, in a file operation), else when its time slice ends. Errors if it ends,
    /// leaves, or no safepoint comes within `timeout`.
    pub fn at_safepoint<R: Send + 'static>(
        &self,
        pid: Pid,
        f: impl FnOnce(&mut Process) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, MoveError> {
        let slot = self.inner.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |p| {
            let _ = tx.send(f(p));
        });
        {
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) {
                return Err(MoveError::NotHere(pid));
            }
            super::pages::settle_pages(&slot, &mut st);
            match st.parked.as_mut() {
                Some(p) => {
                    job(p);
                    // (It may have moved the pc off a `recv` it waits in: no message
                    // completes that call where it is delivered now, see `recv_dst`.)
                    st.recv_dst = super::slot::NO_RECV;
                }
                None => {
                    st.jobs.push(job);
                    slot.flags.fetch_or(JOBS, Ordering::SeqCst);
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            match rx.recv_timeout(pause) {
                Ok(r) => return Ok(r),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(MoveError::NotHere(pid)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(5));
            // It may have parked (a wait, a freeze) after the job was queued.
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) {
                st.jobs.clear();
                return Err(MoveError::NotHere(pid));
            }
            if !st.jobs.is_empty() {
                super::pages::settle_pages(&slot, &mut st);
                let jobs = std::mem::take(&mut st.jobs);
                match st.parked.as_mut() {
                    Some(p) => {
                        slot.flags.fetch_and(!JOBS, Ordering::SeqCst);
                        jobs.into_iter().for_each(|j| j(p));
                        st.recv_dst = super::slot::NO_RECV;
                    }
                    None => st.jobs = jobs,
                }
            }
            if Instant::now() >= deadline {
                st.jobs.clear();
                return Err(MoveError::FreezeTimeout(pid));
            }
        }
    }

    /// The pages written since the last call (clearing their dirty bits): pre-copy's
    /// write barrier, read at a safepoint.
    pub fn take_dirty(&self, pid: Pid) -> Result<Vec<u32>, MoveError> {
        self.at_safepoint(pid, |p| p.heap.take_dirty(), Duration::from_secs(10))
    }

    /// The pages of a process here that its heap does not have (those that came for it
    /// and wait for its next safepoint count as had).
    pub fn absent_pages_of(&self, pid: Pid) -> Result<Vec<u32>, MoveError> {
        self.at_safepoint(pid, |p| p.heap.absent_list(), Duration::from_secs(10))
    }

    /// The number of pages of a process's heap.
    pub fn heap_pages(&self, pid: Pid) -> Result<u32, MoveError> {
        self.at_safepoint(pid, |p| p.heap.page_count() as u32, Duration::from_secs(10))
    }

    /// Takes the heap out of a frozen process that is leaving (transfer on reference: the
    /// node keeps serving its pages after the process itself is gone).
    pub fn take_heap(&self, pid: Pid) -> Result<Heap, MoveError> {
        let slot = self.inner.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        if st.status != Status::Frozen {
            return Err(MoveError::NotHere(pid));
        }
        super::pages::settle_pages(&slot, &mut st);
        let p = st.parked.as_mut().ok_or(MoveError::NotHere(pid))?;
        let config: HeapConfig = p.heap.config();
        Ok(std::mem::replace(&mut p.heap, Heap::new(config)))
    }

    /// Slows a process down (level 0: full speed; level n: it runs one time slice in
    /// 2^n), while a migration's rounds cannot keep up with its writes.
    pub fn set_throttle(&self, pid: Pid, level: u8) {
        if let Some(slot) = self.inner.local_slot(pid) {
            slot.throttle.store(level, Ordering::Relaxed);
        }
    }

    /// The image of a process frozen here, without its heap pages (they go separately):
    /// step 1 of `transfer.rs` for a live migration.
    pub fn export_state(&self, pid: Pid) -> Result<Vec<u8>, MoveError> {
        let i = &self.inner;
        let slot = i.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        let mut st = slot.st.lock();
        if st.status != Status::Frozen {
            return Err(MoveError::NotHere(pid));
        }
        let proc = st.parked.as_ref().ok_or(MoveError::NotHere(pid))?;
        let bytes = snapshot_state(proc, &st.image(proc, i.now_us()));
        let mark = ExportMark::of(&st.mailbox);
        st.export.set(Some(mark));
        Ok(bytes)
    }

    /// Ends the wait of a process parked in `migrate(...)` with `result` (a migration it
    /// asked for failed, or another process's finished).
    pub fn answer_migrate(&self, pid: Pid, result: IoResult) {
        self.inner.answer_migrate(pid, result);
    }

    /// Whether the process is here (running, waiting or frozen, not moved away).
    pub fn is_local(&self, pid: Pid) -> bool {
        self.inner.local_slot(pid).is_some_and(|s| !matches!(s.st.lock().status, Status::Exited | Status::Moved))
    }
}

impl Node {
    /// Line `k` of the console input of process `pid` (`None`: the input ended), asked
    /// for by its `read_line()` (see [`super::Console::request_line`]). Taken if the
    /// process is here and still waits for that line; otherwise dropped (one that moved
    /// asks again from where it is, and gets the same line).
    pub fn console_line(&self, pid: Pid, k: u64, line: Option<String>) {
        self.inner.console_line(pid, k, line);
    }
}

impl NodeInner {
    pub(crate) fn console_line(&self, pid: Pid, k: u64, line: Option<String>) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        if !matches!(st.status, Status::Waiting | Status::Frozen) {
            return;
        }
        let Some(p) = st.parked.as_mut() else { return };
        if p.sys.console_reads != k || p.sys.io_result.is_some() {
            return;
        }
        p.sys.set_io(IoResult::ConsoleLine { k, line });
        if st.status == Status::Waiting {
            self.wake_locked(pid, &slot, &mut st, None);
        }
    }

    pub(crate) fn answer_migrate(&self, pid: Pid, result: IoResult) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        match st.status {
            // `migrate(pid, node)`: an uninterruptible wait for the answer.
            Status::Io => {
                drop(st);
                self.finish_io(pid, slot, result);
            }
            // `migrate(node)` (its own move failed): the call runs again and finds it.
            Status::Waiting | Status::Frozen => {
                if let Some(p) = st.parked.as_mut() {
                    p.sys.set_io(result);
                }
                if st.status == Status::Waiting {
                    self.wake_locked(pid, &slot, &mut st, None);
                }
            }
            _ => {}
        }
    }
}

impl Node {
    /// The node a process is on, as far as this node knows: here, where it was last seen
    /// to go, or (knowing nothing) the node it was born on.
    pub fn located(&self, pid: Pid) -> Option<u16> {
        let i = &self.inner;
        match i.procs.get(pid) {
            Some(Entry::Live(s)) => (!matches!(s.st.lock().status, Status::Exited | Status::Moved)).then_some(i.id),
            Some(Entry::Moved(n, ..)) => Some(n),
            Some(Entry::Away(n, _)) => (n != super::locate::NOWHERE).then_some(n),
            None => Some(crate::value::name_node(pid)).filter(|&b| b != i.id),
        }
    }

    /// The other nodes a process talks with: those holding send ends of its receive
    /// ends, those of the processes it is linked with or monitored by, and its birth
    /// node — the nodes a migration tells where it went (link update).
    /// The nodes of the processes `pid` (here) is linked with or monitored by: they must
    /// know where it is whatever the forwarding mechanism (a `node_down` concerns it only
    /// if it names the node it is on).
    pub fn watch_nodes(&self, pid: Pid) -> Vec<u16> {
        let i = &self.inner;
        let Some(slot) = i.local_slot(pid) else { return Vec::new() };
        let others: Vec<Pid> = {
            let st = slot.st.lock();
            st.links.iter().chain(st.watchers.iter()).copied().collect()
        };
        let mut out: Vec<u16> = others.into_iter().filter_map(|p| self.located(p)).collect();
        out.sort_unstable();
        out.dedup();
        out.retain(|&n| n != i.id);
        out
    }

    pub fn partner_nodes(&self, pid: Pid) -> Vec<u16> {
        let i = &self.inner;
        let Some(slot) = i.local_slot(pid) else { return Vec::new() };
        let (chans, others, senders): (Vec<super::ChanId>, Vec<Pid>, Vec<u16>) = {
            let st = slot.st.lock();
            (
                st.mailbox.chans.iter().map(|(c, _)| *c).collect(),
                st.links.iter().chain(st.watchers.iter()).copied().collect(),
                st.order.origins(),
            )
        };
        // Nodes that sent it numbered messages by pid, too.
        let mut out: Vec<u16> = senders;
        out.push(crate::value::name_node(pid));
        for c in chans {
            if let Some(meta) = i.chan_meta.get(c) {
                out.extend(meta.partners().iter().copied());
            }
            out.push(crate::value::name_node(c));
        }
        for p in others {
            if let Some(n) = self.located(p) {
                out.push(n);
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|&n| n != i.id);
        out
    }
}
