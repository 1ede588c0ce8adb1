//! Waiting: parking a process at its blocking call (and arming its timer), the timer
//! thread (deadlines of waits, and the gap sweeps of `gaps.rs`), and the I/O threads that
//! carry out file operations while their process stays parked.

use super::slot::{Entry, Slot, SlotState, Source, Status, Task, FREEZE, KILL};
use super::{ExitReason, FileOp, NodeInner, Pid};
use crate::process::{IoResult, Process};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Timer entries of the node's own sweeps are under pid 0 (no process has it: serials
/// start at 1), told apart by their second number: a gap sweep (`gaps.rs`)...
pub(super) const GAP_SWEEP: u64 = 0;
/// ...and a sweep of the processes being located (`locate.rs`).
pub(super) const LOCATE_SWEEP: u64 = 1;
/// ...and the notices of ended processes a link refused (`exits.rs`).
pub(super) const OWED_SWEEP: u64 = 2;

/// A file operation for the I/O threads: the process, its home node, its slot, the op.
pub(super) type IoJob = (Pid, u16, Arc<Slot>, FileOp);

impl NodeInner {
    /// Parks a process at its blocking call, unless it was asked to freeze or end
    /// meanwhile. `wait`: what wakes it; `deadline`: when its timer fires.
    pub(crate) fn park(
        &self,
        pid: Pid,
        slot: &Arc<Slot>,
        st: &mut SlotState,
        proc: Box<Process>,
        wait: &[Source],
        deadline: Option<u64>,
    ) -> Option<(Box<Process>, ExitReason)> {
        let flags = slot.flags.load(Ordering::SeqCst);
        if flags & KILL != 0 {
            return Some((proc, ExitReason::Killed(st.kill.take().unwrap_or_else(|| "killed".into()))));
        }
        self.busy.fetch_sub(1, Ordering::SeqCst);
        st.parked = Some(proc);
        if flags & FREEZE != 0 {
            st.status = Status::Frozen;
            return None;
        }
        st.status = Status::Waiting;
        st.recv_dst = super::slot::NO_RECV;
        st.wait.clear();
        st.wait.extend_from_slice(wait);
        st.wait_seq += 1;
        if let Some(d) = deadline {
            st.wait_timed = true;
            self.timed_waits.fetch_add(1, Ordering::SeqCst);
            let mut timers = self.timers.lock();
            let first = timers.peek().is_none_or(|std::cmp::Reverse((t, _, _))| d < *t);
            timers.push(std::cmp::Reverse((d, pid, st.wait_seq)));
            if first {
                self.timer_wake.notify_one();
            }
        }
        None
    }

    /// Parks a process until an answer from another node ends its wait
    /// ([`NodeInner::complete_io`]); like a file operation, it is not interruptible.
    pub(crate) fn park_remote(&self, slot: &Arc<Slot>, proc: Box<Process>) {
        let mut st = slot.st.lock();
        st.status = Status::Io;
        st.parked = Some(proc);
    }

    /// Parks a process while a file operation runs on the I/O threads.
    pub(crate) fn start_io(&self, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, op: FileOp) {
        let home = proc.home();
        if home != self.id && !op.name().starts_with("node/") && !op.name().starts_with("shared/") {
            // A relative name: it resolves at the home node, a round trip away.
            proc.sys.home_calls += 1;
        }
        let mut st = slot.st.lock();
        st.status = Status::Io;
        st.parked = Some(proc);
        drop(st);
        if self.io_tx.send(Some((pid, home, slot.clone(), op))).is_err() {
            // The node is shutting down; the process stays parked.
        }
    }

    pub(super) fn io_loop(&self, rx: &crossbeam_channel::Receiver<Option<IoJob>>) {
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let Ok(Some((pid, home, slot, op))) = rx.recv() else { return };
            let result = self.files.run_for(pid, home, &op);
            self.finish_io(pid, slot, result);
        }
    }

    /// A parked process's file operation (or remote request) is done: it runs again
    /// (or ends, or stays frozen, as its flags say).
    pub(super) fn finish_io(&self, pid: Pid, slot: Arc<Slot>, result: IoResult) {
        {
            let mut st = slot.st.lock();
            if st.status != Status::Io {
                return;
            }
            let Some(mut proc) = st.parked.take() else { return };
            proc.sys.set_io(result);
            let flags = slot.flags.load(Ordering::SeqCst);
            if flags & KILL != 0 {
                let reason = st.kill.take().unwrap_or_else(|| "killed".into());
                drop(st);
                // Busy until its exit is recorded: an ending process is not idle.
                self.finish(pid, &slot, proc, ExitReason::Killed(reason));
                self.busy.fetch_sub(1, Ordering::SeqCst);
            } else if flags & FREEZE != 0 {
                // Delayed blocking: the call is complete, so the process can be frozen now.
                st.status = Status::Frozen;
                st.parked = Some(proc);
                self.busy.fetch_sub(1, Ordering::SeqCst);
            } else {
                st.status = Status::Active;
                drop(st);
                self.push(Task { pid, slot, proc }, None);
            }
        }
    }

    pub(super) fn timer_loop(&self) {
        let mut timers = self.timers.lock();
        while !self.shutdown.load(Ordering::SeqCst) {
            let now = self.now_us();
            match timers.peek() {
                Some(&std::cmp::Reverse((t, pid, seq))) if t <= now => {
                    timers.pop();
                    drop(timers);
                    if pid == 0 && seq == GAP_SWEEP {
                        self.sweep_gaps();
                    } else if pid == 0 && seq == LOCATE_SWEEP {
                        self.sweep_locating();
                    } else if pid == 0 && seq == OWED_SWEEP {
                        self.sweep_owed();
                    } else if let Some(Entry::Live(slot)) = self.procs.get(pid) {
                        let mut st = slot.st.lock();
                        if st.status == Status::Waiting && st.wait_seq == seq {
                            self.wake_locked(pid, &slot, &mut st, None);
                        }
                    }
                    timers = self.timers.lock();
                }
                Some(&std::cmp::Reverse((t, _, _))) => {
                    let _ = self.timer_wake.wait_for(&mut timers, Duration::from_micros(t - now));
                }
                None => {
                    self.timer_wake.wait(&mut timers);
                }
            }
        }
    }

    /// Arms a gap sweep (see `remote.rs`, "Bounds") for time `at` (node µs).
    pub(super) fn schedule_sweep(&self, at: u64) {
        self.schedule_at(at, GAP_SWEEP);
    }

    /// Arms one of the node's sweeps (`GAP_SWEEP`, `LOCATE_SWEEP`) for time `at` (node µs).
    pub(super) fn schedule_at(&self, at: u64, sweep: u64) {
        let mut timers = self.timers.lock();
        let first = timers.peek().is_none_or(|std::cmp::Reverse((t, _, _))| at < *t);
        timers.push(std::cmp::Reverse((at, 0, sweep)));
        if first {
            self.timer_wake.notify_one();
        }
    }
}
