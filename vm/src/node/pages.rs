//! Page faults: a process whose heap is not all here (lazy migration) touches an absent
//! page, parks until its [`super::PageSource`] brings it, and runs again; pages that
//! arrive for a running process are installed at its next safepoint; pages that can no
//! longer come end the process.

use super::slot::{Slot, Status, Task, FREEZE, KILL, PAGES};
use super::{ExitReason, Node, NodeInner, PageSource, Pid};
use crate::interp::RuntimeError;
use crate::process::Process;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Node {
    /// Where the pages of processes whose heap is not all here come from (transfer on
    /// reference): a process touching an absent page asks `source` for it and `prefetch`
    /// following pages, and waits (only it) until [`Node::supply_pages`] brings it.
    /// Once, before it is used.
    pub fn set_page_source(&self, source: Arc<dyn PageSource>, prefetch: u32) -> bool {
        self.inner.prefetch.store(prefetch, Ordering::Relaxed);
        self.inner.page_source.set(source).is_ok()
    }

    /// Pages of a process here (`(index, words)`): installed at once if it is parked,
    /// else at its next safepoint; a process waiting for one of them runs again.
    pub fn supply_pages(&self, pid: Pid, pages: Vec<(u32, Vec<u64>)>) {
        self.inner.supply_pages(pid, pages);
    }

    /// The pages of a process here can no longer come (their node is gone): it ends,
    /// with `why`, whether it is waiting for one or not.
    pub fn pages_lost(&self, pid: Pid, why: &str) {
        self.inner.pages_lost(pid, why);
    }

    /// Page faults so far, and the total µs processes waited for their pages.
    pub fn page_faults(&self) -> (u64, u64) {
        (self.inner.faults.load(Ordering::Relaxed), self.inner.fault_wait_us.load(Ordering::Relaxed))
    }
}

impl NodeInner {
    /// A process touched absent page `page`: parks it until the page comes (asking the
    /// page source for it), or gives it back if the page came meanwhile.
    pub(super) fn page_fault(&self, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, page: u32) -> Option<Box<Process>> {
        let mut st = slot.st.lock();
        install_pages(&mut proc, st.pending_pages.take());
        slot.flags.fetch_and(!PAGES, Ordering::SeqCst);
        if proc.heap.is_present(page) {
            return Some(proc);
        }
        if slot.flags.load(Ordering::SeqCst) & KILL != 0 {
            return Some(proc); // it ends at its next safepoint (after this slice)
        }
        self.faults.fetch_add(1, Ordering::Relaxed);
        st.status = Status::Io;
        st.fault = Some((page, self.now_us()));
        st.parked = Some(proc);
        drop(st);
        let count = 1 + self.prefetch.load(Ordering::Relaxed);
        if let Some(src) = self.page_source.get() {
            src.request(pid, page, count);
        }
        None
    }

    pub(super) fn supply_pages(&self, pid: Pid, pages: Vec<(u32, Vec<u64>)>) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        let Some(proc) = st.parked.as_mut() else {
            if matches!(st.status, Status::Active) {
                st.pending_pages.extend(pages);
                slot.flags.fetch_or(PAGES, Ordering::SeqCst);
            }
            return;
        };
        install_pages(proc, pages);
        let Some((page, since)) = st.fault else { return };
        if st.status != Status::Io || !st.parked.as_ref().is_some_and(|p| p.heap.is_present(page)) {
            return;
        }
        st.fault = None;
        let wait = self.now_us().saturating_sub(since);
        self.fault_wait_us.fetch_add(wait, Ordering::Relaxed);
        let Some(proc) = st.parked.take() else { return };
        let flags = slot.flags.load(Ordering::SeqCst);
        if flags & FREEZE != 0 {
            // Delayed blocking: it can be frozen now that the page is here.
            st.status = Status::Frozen;
            st.parked = Some(proc);
            self.busy.fetch_sub(1, Ordering::SeqCst);
            drop(st);
        } else {
            st.status = Status::Active;
            drop(st);
            self.push(Task { pid, slot: slot.clone(), proc }, None);
        }
        // (Told with no lock held.)
        if let Some(src) = self.page_source.get() {
            src.waited(pid, page, wait);
        }
    }

    pub(super) fn pages_lost(&self, pid: Pid, why: &str) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        if st.status == Status::Io && st.fault.is_some() {
            st.fault = None;
            if let Some(proc) = st.parked.take() {
                drop(st);
                let e = RuntimeError { message: why.to_string(), trace: crate::interp::backtrace(&proc) };
                self.finish(pid, &slot, proc, ExitReason::Failed(e));
                self.busy.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        drop(st);
        self.kill(pid, why.to_string());
    }
}

/// Installs pages that are still absent; a page the process already has (it may have
/// written to it since) is never overwritten by an older copy.
pub(super) fn install_pages(proc: &mut Process, pages: Vec<(u32, Vec<u64>)>) {
    for (i, words) in pages {
        if !proc.heap.is_present(i) {
            let _ = proc.heap.supply_page(i, &words);
        }
    }
}
