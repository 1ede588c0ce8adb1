//! The M:N scheduler: worker threads with FIFO run queues, a shared injector and
//! stealing; spawning and waking processes onto the queues; running a process for its
//! reduction budget (preemption) and carrying out its system calls; idle workers that
//! search briefly, then sleep (counted before their last look, so no wake-up is lost);
//! and freezing (a frozen process stays parked until every freeze is released).

use super::host::ProcHost;
use super::pages::install_pages;
use super::slot::{Entry, Slot, SlotState, Status, Task, FREEZE, JOBS, KILL, LATE, PAGES};
use super::{sys, ChanId, ExitReason, MoveError, NodeInner, Pid, SysOut};
use crate::interp::{run_pinned, Outcome, RuntimeError};
use crate::message::Message;
use crate::process::Process;
use crossbeam_deque::{Steal, Worker};
use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Rounds an idle worker looks for work before it sleeps, at least.
pub(super) const SPINS: u32 = 16;

/// How long an idle worker looks for work before it sleeps (see `spin_for_work`), µs.
const SPIN_FOR_US: u64 = 100;

/// A looking worker that did not look again for this long (µs) may not be running:
/// whoever queues work wakes a sleeping worker then (see `should_wake`).
pub(super) const STALE_US: u64 = 100;

/// A look for work that took this long (µs) was descheduled: the OS gave the core to
/// another thread for a time slice (a few hundred µs to a few ms), which our own
/// threads, each yielding after a short turn, do not take (see `spin_for_work`).
const DESCHEDULED_US: u64 = 500;

/// How long idle workers go straight to sleep after one had its core taken while it
/// looked for work (µs).
const NO_SPIN_FOR_US: u64 = 100_000;

/// A worker takes its next process from the shared queue (the injector) rather than its
/// own once every this many processes it runs (as Go's scheduler does every 61).
const INJECTOR_EVERY: u32 = 61;
/// How often a freeze looks whether a running process has stopped at its safepoint
/// (at most: the first looks come sooner). A stopped process is frozen until then.
const FREEZE_LOOK: Duration = Duration::from_micros(50);

/// Starts one of the VM's threads (workers, timers, file I/O): each sleeps until
/// something wakes it, so each asks for a short slice ([`super::slice`]).
pub(super) fn thread(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            super::slice::set_short_slice(super::slice::SHORT_SLICE_US);
            f()
        })
        .expect("the OS refused to start a thread")
}

impl NodeInner {
    /// Registers and queues a new process; `chans` are receive ends it starts holding.
    pub(super) fn spawn(&self, p: Process, chans: Vec<(ChanId, VecDeque<Message>)>, local: Option<&Worker<Task>>) {
        let pid = p.pid;
        if p.sys.group != 0 {
            self.groups.lock().join(pid, p.sys.group);
        }
        let slot = Slot::new(Status::Active, self.recent_us());
        {
            let mut st = slot.st.lock();
            for (c, q) in chans {
                st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                st.mailbox.chans.push((c, q));
            }
        }
        self.procs.insert(pid, Entry::Live(slot.clone()));
        self.live.fetch_add(1, Ordering::SeqCst);
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.push(Task { pid, slot, proc: Box::new(p) }, local);
    }

    /// Registers a process frozen (as if frozen at its first safepoint), not queued.
    pub(super) fn spawn_frozen(&self, p: Process) {
        let pid = p.pid;
        let slot = Slot::new(Status::Frozen, self.now_us());
        {
            let mut st = slot.st.lock();
            st.parked = Some(Box::new(p));
            st.freezers = 1;
        }
        slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
        self.procs.insert(pid, Entry::Live(slot));
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    /// Queues a runnable process: on the calling worker's own queue when there is one,
    /// else on the injector; wakes a sleeping worker if there is more work than hands.
    pub(super) fn push(&self, t: Task, local: Option<&Worker<Task>>) {
        t.slot.meter.queued(self.recent_us());
        match local {
            Some(q) => {
                q.push(t);
                fence(Ordering::SeqCst);
                if q.len() > 1 && self.should_wake() {
                    let _g = self.sleep_lock.lock();
                    self.wake.notify_one();
                }
            }
            None => {
                self.injector.push(t);
                fence(Ordering::SeqCst);
                if self.should_wake() {
                    let _g = self.sleep_lock.lock();
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Whether newly queued work needs a sleeping worker woken: not if one is still
    /// searching (it will find the work, or see it when it re-checks before sleeping).
    /// (A worker counted as searching whose last look is older than [`STALE_US`] is not
    /// running: the OS gave its core to another thread, which on a busy machine may keep
    /// it for a whole time slice, milliseconds. A sleeper is woken then: a thread woken
    /// from sleep gets a core at once.)
    pub(super) fn should_wake(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst) > 0
            && (self.searching.load(Ordering::SeqCst) == 0
                || self.now_us().saturating_sub(self.search_seen_us.load(Ordering::Relaxed)) > STALE_US)
    }

    /// Makes a waiting process runnable (its slot locked by the caller).
    pub(super) fn wake_locked(&self, pid: Pid, slot: &Arc<Slot>, st: &mut SlotState, local: Option<&Worker<Task>>) {
        self.end_wait(st);
        if let Some(proc) = st.parked.take() {
            st.status = Status::Active;
            st.wait.clear();
            self.busy.fetch_add(1, Ordering::SeqCst);
            self.push(Task { pid, slot: slot.clone(), proc }, local);
        }
    }

    /// The process stops waiting (woken, or frozen): its timer, if any, no longer counts.
    pub(super) fn end_wait(&self, st: &mut SlotState) {
        if std::mem::take(&mut st.wait_timed) {
            self.timed_waits.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(super) fn find_work(&self, local: &Worker<Task>, me: usize) -> Option<Task> {
        if let Some(t) = local.pop() {
            return Some(t);
        }
        loop {
            let mut retry = false;
            match self.injector.steal_batch_and_pop(local) {
                Steal::Success(t) => return Some(t),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for (i, st) in self.stealers.iter().enumerate() {
                if i == me {
                    continue;
                }
                match st.steal() {
                    Steal::Success(t) => return Some(t),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    pub(super) fn any_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    pub(super) fn worker_loop(&self, local: &Worker<Task>, me: usize) {
        let mut tick: u32 = 0;
        // When the last time slice ended, if this worker went straight on to the next:
        // one clock read per slice (the time taken to find the next counts as busy).
        let mut ended: Option<u64> = None;
        while !self.shutdown.load(Ordering::SeqCst) {
            // The shared queue first now and then: processes that wake each other on
            // this worker (two partners exchanging messages) keep its own queue from
            // ever emptying, and what the network or a timer woke must still run.
            tick = tick.wrapping_add(1);
            let shared = if tick.is_multiple_of(INJECTOR_EVERY) { self.injector.steal().success() } else { None };
            let mut task = shared.or_else(|| self.find_work(local, me));
            if task.is_none() {
                ended = None;
                task = self.spin_for_work(local, me);
            }
            let Some(task) = task else {
                let mut g = self.sleep_lock.lock();
                self.sleeping.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                // Work queued before this check is seen here; work queued after it sees
                // us counted as sleeping and notifies under the lock we hold until we wait.
                if !self.any_work() && !self.shutdown.load(Ordering::SeqCst) {
                    self.wake.wait(&mut g);
                }
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                continue;
            };
            let t0 = ended.unwrap_or_else(|| self.worker_clock_us());
            let t1 = self.run_task(task, local, t0);
            self.worker_busy[me].fetch_add(t1.saturating_sub(t0), Ordering::Relaxed);
            ended = Some(t1);
        }
    }

    /// Looks for work a little longer before sleeping (a wake-up costs far more than a
    /// short spin, and processes that message each other make work appear often; a
    /// message from another node comes back within tens of µs, and a sleeping worker
    /// takes as long again to wake). Counted as searching meanwhile, so that whoever
    /// queues work need not wake anyone.
    ///
    /// Not on a busy machine: a look that finds the OS took this thread's core away for
    /// longer than [`DESCHEDULED_US`] (other threads want the cores) ends the looking, and
    /// idle workers go straight to sleep for [`NO_SPIN_FOR_US`] after it. (A looking
    /// worker whose core is taken keeps wake-ups from going to sleeping ones, and a
    /// `sched_yield` hands a busy core to another thread for a whole time slice.)
    pub(super) fn spin_for_work(&self, local: &Worker<Task>, me: usize) -> Option<Task> {
        let mut last = self.now_us();
        if last < self.no_spin_until_us.load(Ordering::Relaxed) {
            return self.find_work(local, me);
        }
        self.search_seen_us.store(last, Ordering::Relaxed);
        self.searching.fetch_add(1, Ordering::SeqCst);
        let mut found = None;
        let start = last;
        for i in 0.. {
            if i < 8 {
                for _ in 0..(1u32 << i) {
                    std::hint::spin_loop();
                }
            } else {
                if i >= SPINS && last.saturating_sub(start) >= SPIN_FOR_US {
                    break;
                }
                std::thread::yield_now();
            }
            let now = self.now_us();
            if now.saturating_sub(last) > DESCHEDULED_US {
                self.no_spin_until_us.fetch_max(now + NO_SPIN_FOR_US, Ordering::Relaxed);
                found = self.find_work(local, me);
                break;
            }
            last = now;
            self.search_seen_us.store(now, Ordering::Relaxed);
            if let Some(t) = self.find_work(local, me) {
                found = Some(t);
                break;
            }
        }
        self.searching.fetch_sub(1, Ordering::SeqCst);
        found
    }

    /// Parks a process that was asked to freeze or end. Returns it if neither.
    pub(super) fn check_flags(&self, mut t: Task) -> Option<Task> {
        if t.slot.flags.load(Ordering::SeqCst) == 0 {
            return Some(t);
        }
        let mut st = t.slot.st.lock();
        if t.slot.flags.load(Ordering::SeqCst) & PAGES != 0 {
            t.slot.flags.fetch_and(!PAGES, Ordering::SeqCst);
            install_pages(&mut t.proc, st.pending_pages.take());
        }
        if t.slot.flags.load(Ordering::SeqCst) & JOBS != 0 {
            t.slot.flags.fetch_and(!JOBS, Ordering::SeqCst);
            for job in std::mem::take(&mut st.jobs) {
                job(&mut t.proc);
            }
        }
        let flags = t.slot.flags.load(Ordering::SeqCst);
        if flags & KILL != 0 {
            let reason = st.kill.take().unwrap_or_else(|| "killed".into());
            drop(st);
            // Busy until its exit is recorded: an ending process is not idle.
            self.finish(t.pid, &t.slot, t.proc, ExitReason::Killed(reason));
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        if flags & FREEZE != 0 {
            st.status = Status::Frozen;
            st.parked = Some(t.proc);
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        drop(st);
        Some(t)
    }

    /// Runs a process for a time slice that starts at `started_us` (node µs, read by this
    /// worker); returns when it ended, read from the clock. (Read again after whatever
    /// is slow and not the process's own running — its end, a relocation, a throttled
    /// pause — so that the next slice, which starts there, is not charged for it.)
    pub(super) fn run_task(&self, t: Task, local: &Worker<Task>, started_us: u64) -> u64 {
        let Some(Task { pid, slot, mut proc }) = self.check_flags(t) else { return self.worker_clock_us() };
        let start = proc.reductions;
        let budget = u64::from(self.budget);
        slot.meter.runs(started_us);
        // Pinned for the whole slice, its system calls included (evicted compiled code is
        // freed only after it): what `run_pinned` needs of its caller.
        let _pin = self.vm.jit.is_some().then(crossbeam_epoch::pin);
        let out = loop {
            let used = proc.reductions - start;
            if used >= budget {
                break None;
            }
            let mut host = ProcHost { node: self, pid, console: proc.sys.console, clock_offset_us: proc.sys.clock_offset_us };
            let fault = match run_pinned(&mut proc, &self.vm, &mut host, (budget - used) as u32) {
                Outcome::Yielded => break None,
                Outcome::Finished(_) => break Some(ExitReason::Normal),
                Outcome::Failed(e) => break Some(ExitReason::Failed(e)),
                Outcome::Blocked(crate::interp::BlockReason::PageFault(page)) => page,
                Outcome::Sys => {
                    // (The dirty count is due every 20 ms: the slice's start will do.)
                    slot.meter.at_safepoint(&mut proc, started_us);
                    let Some(held) = self.hold_for_late(&slot, proc) else {
                        self.reductions.fetch_add(budget.min(used + 1), Ordering::Relaxed);
                        let now = self.worker_clock_us();
                        slot.meter.add_cpu(now.saturating_sub(started_us));
                        return now;
                    };
                    match sys::call(self, pid, &slot, held, local) {
                        SysOut::Continue(p) => {
                            proc = p;
                            continue;
                        }
                        SysOut::Parked => {
                            self.reductions.fetch_add(budget.min(used + 1), Ordering::Relaxed);
                            let now = self.worker_clock_us();
                            slot.meter.add_cpu(now.saturating_sub(started_us));
                            if self.has_relocate_hook.load(Ordering::Relaxed) {
                                self.maybe_relocate(pid, used + 1, None);
                                return self.worker_clock_us();
                            }
                            return now;
                        }
                        SysOut::Exit(p, reason) => {
                            proc = p;
                            break Some(reason);
                        }
                        // A system call touched an absent page: it runs again once it is here.
                        SysOut::Fault(p, page) => {
                            proc = p;
                            page
                        }
                    }
                }
            };
            if self.page_source.get().is_none() {
                break Some(ExitReason::Failed(RuntimeError {
                    message: format!("heap page {fault} is absent and this node has no source for it"),
                    trace: crate::interp::backtrace(&proc),
                }));
            }
            match self.page_fault(pid, &slot, proc, fault) {
                Some(p) => proc = p,
                None => {
                    self.reductions.fetch_add(budget.min(used + 1), Ordering::Relaxed);
                    let now = self.worker_clock_us();
                    slot.meter.add_cpu(now.saturating_sub(started_us));
                    return now;
                }
            }
        };
        self.reductions.fetch_add(proc.reductions - start, Ordering::Relaxed);
        slot.reductions.store(proc.reductions, Ordering::Relaxed);
        slot.pages.store(proc.heap.page_count() as u64, Ordering::Relaxed);
        let now = self.worker_clock_us();
        let mut end = now;
        slot.meter.end_slice(&mut proc, now, now.saturating_sub(started_us));
        match out {
            None => {
                let used = proc.reductions - start;
                let level = slot.throttle.load(Ordering::Relaxed).min(8);
                if level > 0 {
                    // Throttled: pause for (2^level - 1) slices, as in a timed wait.
                    let pause = (now.saturating_sub(started_us) * ((1u64 << level) - 1)).clamp(20, 200_000);
                    let mut st = slot.st.lock();
                    if let Some((proc, reason)) = self.park(pid, &slot, &mut st, proc, &[], Some(now + pause)) {
                        drop(st);
                        self.finish(pid, &slot, proc, reason);
                        self.busy.fetch_sub(1, Ordering::SeqCst);
                    }
                    return self.worker_clock_us();
                }
                let mut t = Some(Task { pid, slot, proc });
                if self.has_relocate_hook.load(Ordering::Relaxed) {
                    t = self.maybe_relocate(pid, used, t);
                    end = self.worker_clock_us();
                }
                if let Some(t) = t.and_then(|t| self.check_flags(t)) {
                    t.slot.meter.queued(now);
                    local.push(t);
                    // New and woken processes must not wait behind ones that never block.
                    if !self.injector.is_empty() {
                        let _ = self.injector.steal_batch(local);
                    }
                    fence(Ordering::SeqCst);
                    if local.len() > 1 && self.should_wake() {
                        let _g = self.sleep_lock.lock();
                        self.wake.notify_one();
                    }
                }
            }
            Some(reason) => {
                // Busy until its exit is recorded: an ending process is not idle.
                self.finish(pid, &slot, proc, reason);
                self.busy.fetch_sub(1, Ordering::SeqCst);
                end = self.worker_clock_us();
            }
        }
        end
    }

    /// A process resumed before its late state came (`LATE`, see `transfer.rs`) parks at
    /// its system call until that state is here (the call runs again then, as every
    /// restartable call does); any other gets its process back.
    fn hold_for_late(&self, slot: &Arc<Slot>, proc: Box<Process>) -> Option<Box<Process>> {
        if slot.flags.load(Ordering::SeqCst) & LATE == 0 {
            return Some(proc);
        }
        let mut st = slot.st.lock();
        // (Looked at again under the lock the commit clears it under.)
        if slot.flags.load(Ordering::SeqCst) & LATE == 0 {
            return Some(proc);
        }
        st.status = Status::Frozen;
        st.parked = Some(proc);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// Freezes a process; returns when it was last seen running (it stopped between
    /// then and the return: `FREEZE_LOOK` at most, plus the OS's wake-up).
    pub(super) fn freeze(&self, pid: Pid, timeout: Duration) -> Result<Instant, MoveError> {
        if self.is_shell(pid) {
            return Err(MoveError::Shell(pid));
        }
        let slot = self.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        {
            let mut st = slot.st.lock();
            match st.status {
                Status::Exited | Status::Moved => return Err(MoveError::NotHere(pid)),
                Status::Frozen => {
                    st.freezers += 1;
                    return Ok(Instant::now());
                }
                Status::Waiting => {
                    // An interruptible wait: blocked at once. The wait is re-issued when
                    // the process runs again.
                    slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                    self.end_wait(&mut st);
                    st.status = Status::Frozen;
                    st.freezers += 1;
                    return Ok(Instant::now());
                }
                Status::Active | Status::Io => {
                    slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                    st.freezers += 1;
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut pause = 1;
        let mut running_at = Instant::now();
        loop {
            match slot.st.lock().status {
                Status::Frozen => return Ok(running_at),
                Status::Exited | Status::Moved => return Err(MoveError::NotHere(pid)),
                _ => running_at = Instant::now(),
            }
            if running_at >= deadline {
                self.release(pid);
                return Err(MoveError::FreezeTimeout(pid));
            }
            // Looked at often: once it stops at its safepoint, it is frozen until seen.
            std::thread::sleep(Duration::from_micros(pause));
            pause = (pause * 2).min(FREEZE_LOOK.as_micros() as u64);
        }
    }

    /// Withdraws one freeze request; the process runs again when none is left.
    pub(super) fn release(&self, pid: Pid) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        st.freezers = st.freezers.saturating_sub(1);
        if st.freezers == 0 {
            self.unfreeze_locked(pid, &slot, &mut st);
        }
    }

    pub(super) fn unfreeze(&self, pid: Pid) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        st.freezers = 0;
        self.unfreeze_locked(pid, &slot, &mut st);
    }

    pub(super) fn unfreeze_locked(&self, pid: Pid, slot: &Arc<Slot>, st: &mut SlotState) {
        slot.flags.fetch_and(!FREEZE, Ordering::SeqCst);
        if st.status == Status::Frozen {
            if let Some(proc) = st.parked.take() {
                st.status = Status::Active;
                st.wait.clear();
                self.busy.fetch_add(1, Ordering::SeqCst);
                self.push(Task { pid, slot: slot.clone(), proc }, None);
            }
        }
    }
}
