//! Page faults: a process whose heap is not all here (lazy migration) touches an absent
//! page, parks until its [`super::PageSource`] brings it, and runs again; pages that
//! arrive for a running process are installed at its next safepoint; pages that can no
//! longer come end the process.

use super::slot::{Slot, SlotState, Status, Task, FREEZE, KILL, PAGES};
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

/// Installs the pages that came for a process while it ran (they wait in its slot until
/// its next safepoint) into it, now that it is parked: whatever reads a parked process's
/// heap (a migration's checks and copies, its image) sees every page that is here. A
/// process that parked before that safepoint kept them waiting otherwise, and a move
/// waited for them until it ran again (a process that waits for nothing, never).
pub(super) fn settle_pages(slot: &Slot, st: &mut SlotState) {
    if slot.flags.load(Ordering::SeqCst) & PAGES == 0 || st.parked.is_none() {
        return;
    }
    let pending = st.pending_pages.take();
    slot.flags.fetch_and(!PAGES, Ordering::SeqCst);
    if let Some(proc) = st.parked.as_mut() {
        install_pages(proc, pending);
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

#[cfg(test)]
mod tests {
    use super::super::{Console, Node, Pid};
    use super::PAGES;
    use crate::bytecode::{Function, Module, Op};
    use crate::process::Process;
    use crate::runtime::{Natives, Vm, VmConfig};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    struct Quiet;
    impl Console for Quiet {
        fn write(&self, _: Pid, _: &str) {}
    }

    /// Pages that came while a process ran wait in its slot for its next safepoint; if
    /// it parked first (it began a wait, or froze for a move), whatever reads it parked
    /// (a move's checks and copies) must still see them: a move waited for them until
    /// the process ran again, for ever if nothing woke it.
    #[test]
    fn pages_that_came_while_it_ran_are_seen_when_it_is_read_parked() {
        let spin = Function { name: String::new(), arity: 0, nregs: 1, upvals: vec![], code: vec![Op::Jmp { off: -1 }], lines: vec![1] };
        let module = Module { name: "t".into(), consts: vec![], functions: vec![spin], globals: vec![] };
        let vm = Arc::new(Vm::new(Natives::new(), VmConfig::default()));
        let main = vm.load(module).expect("a module");
        let node = Node::local(vm.clone(), Arc::new(Quiet), 1);
        let pid = node.new_pid();
        let mut p = Process::new(pid, main, &vm).expect("a process");
        p.heap.ensure_pages(2).expect("two pages");
        p.heap.mark_absent(1);
        let words = p.heap.page_words();
        node.spawn(p);
        node.freeze(pid, Duration::from_secs(10)).expect("it freezes");
        // As `supply_pages` leaves a page for a process that is running, which then
        // parked before a safepoint installed it.
        {
            let slot = node.inner.local_slot(pid).expect("its slot");
            let mut st = slot.st.lock();
            st.pending_pages.set(vec![(1, vec![7; words])]);
            slot.flags.fetch_or(PAGES, Ordering::SeqCst);
        }
        let seen = node.at_safepoint(pid, |p| (p.heap.first_absent(), p.heap.page(1)[0]), Duration::from_secs(10)).expect("read");
        assert_eq!(seen, (None, 7), "the page that came is not in the parked process");
        node.shutdown();
    }
}
