//! How processes end and who hears of it: killing a process wherever it is, exit
//! signals to linked processes (trapped as messages, or ending them), and the end of a
//! process (its receive ends dropped, down messages to its monitors, links told, its exit
//! recorded for the host's watches).

use super::deliver::event_message;
use super::remote::Op;
use super::slot::{Entry, Slot, Status, KILL, LATE};
use super::{ExitReason, NodeInner, Pid, ProcessExit, Target};
use crate::process::Process;
use crate::value::{name_node, name_text};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Exits of watched processes kept after they ended (see [`NodeInner::bound_finished`]).
pub(crate) const MAX_FINISHED: usize = 4096;

impl NodeInner {
    /// Why this node takes no more processes now, if it has `max_processes` already.
    /// Checked before each start, so concurrent starts can pass it by at most the
    /// number of threads starting processes at that moment.
    pub(crate) fn process_limit_reached(&self) -> Option<String> {
        let live = self.live.load(Ordering::SeqCst);
        (live >= self.config.max_processes)
            .then(|| format!("node {} runs {live} processes, its limit ([limits] processes = {})", self.name, self.config.max_processes))
    }

    /// Ends a process with `reason` from outside (`kill`, a failed link). A waiting
    /// process is woken to end; a running one ends at its next safepoint; a frozen one
    /// when it is unfrozen, wherever that is.
    pub(super) fn kill(&self, pid: Pid, reason: String) {
        if self.is_away(pid) {
            self.locate_then(pid, super::locate::Waiting::Op(Op::Kill { pid, reason }));
            return;
        }
        if let Some(n) = self.remote_node_of(pid) {
            let _ = self.remote_send(n, Op::Kill { pid, reason });
            return;
        }
        self.with_live(pid, |node, slot, st| {
            if st.kill.is_none() {
                st.kill.set(Some(reason));
            }
            slot.flags.fetch_or(KILL, Ordering::SeqCst);
            if st.status == Status::Waiting {
                node.wake_locked(pid, slot, st, None);
            }
        });
    }

    /// Tells `to` that linked process `from` ended.
    pub(super) fn exit_signal(&self, to: Pid, from: Pid, reason: &ExitReason) {
        if self.is_away(to) {
            let op = Op::Exit { to, from, reason: reason.text(), normal: reason.is_normal() };
            self.locate_then(to, super::locate::Waiting::Op(op));
            return;
        }
        if let Some(n) = self.remote_node_of(to) {
            let op = Op::Exit { to, from, reason: reason.text(), normal: reason.is_normal() };
            let _ = self.remote_send(n, op);
            return;
        }
        let trap = self.with_live(to, |_, _, st| {
            if st.links.contains(&from) {
                st.links.retain(|&p| p != from);
            }
            st.trap_exits
        });
        match trap {
            Some(true) => {
                let _ = self.deliver(Target::Inbox(to), event_message("exit", from, &reason.text()), Vec::new(), None);
            }
            Some(false) if !reason.is_normal() => {
                self.kill(to, format!("linked process <pid {}> ended: {}", name_text(from), reason.text()));
            }
            _ => {}
        }
    }

    /// What this node keeps about a process that has ended elsewhere or here, given up:
    /// a route to it (not a live entry: a process here that has not ended is not this
    /// one), the numbering of this node's messages to it; and no news of it is taken
    /// from now on.
    pub(crate) fn forget_ended(&self, pid: Pid) {
        {
            let mut shard = self.procs.shard(pid).lock();
            if matches!(shard.get(&pid), Some(Entry::Moved(..) | Entry::Away(..))) {
                shard.remove(&pid);
            }
        }
        self.pid_seqs.remove(pid);
        self.forgotten.lock().note(pid, u32::MAX);
    }

    /// Records the exit of a watched process (false if it is not watched here).
    pub(super) fn note_watched_exit(&self, exit: &ProcessExit) -> bool {
        let mut w = self.watched.lock();
        let Some(e) = w.get_mut(&exit.pid) else { return false };
        *e = Some(exit.clone());
        self.bound_finished(&mut w, exit.pid);
        true
    }

    /// Keeps the exits of at most [`MAX_FINISHED`] watched processes that have ended,
    /// `pid`'s the newest: the oldest are forgotten (a wait for one of them long after it
    /// ended finds nothing and times out).
    pub(super) fn bound_finished(&self, w: &mut HashMap<Pid, Option<ProcessExit>>, pid: Pid) {
        let mut finished = self.watched_finished.lock();
        finished.push_back(pid);
        while finished.len() > MAX_FINISHED {
            if let Some(old) = finished.pop_front() {
                if matches!(w.get(&old), Some(Some(_))) {
                    w.remove(&old);
                }
            }
        }
    }

    /// Ends a process: its mailbox and channels go, watchers and links are told. One
    /// resumed before its late state came (`LATE`) ends once that state is here, with the
    /// links and watchers it brings (`transfer.rs`).
    pub(super) fn finish(&self, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, reason: ExitReason) {
        let (mailbox, links, watchers, trail, origins) = {
            let mut st = slot.st.lock();
            if slot.flags.load(Ordering::SeqCst) & LATE != 0 {
                st.status = Status::Frozen;
                st.parked = None;
                st.ending = Some(Box::new((proc, reason)));
                return;
            }
            st.status = Status::Exited;
            st.parked = None;
            let origins = st.order.seq.origins();
            (std::mem::take(&mut st.mailbox), st.links.take(), st.watchers.take(), st.trail.take(), origins)
        };
        self.procs.remove(pid);
        // (The groups' lock only for a member: most processes are in none.)
        if proc.sys.group != 0 {
            self.groups.lock().leave(pid, false);
        }
        // Every node that may keep something about it forgets it (`forget_ended`): its
        // birth node the route it kept since the process left it (else one entry per
        // process that moved away and ended would stay there for good), the nodes that
        // kept a forwarding link to it (`link-traversal`), the nodes that sent it
        // messages (their numbering of messages to it, and the routes link updates and
        // locates left there), and the nodes of its watchers and links (the routes their
        // monitors keep). An ended process never comes back (pids are not reused), so
        // nothing about it can be needed again; a message still on its way to it is
        // dropped, as it would have been.
        self.forget_ended(pid);
        let birth = name_node(pid);
        let mut told = vec![self.id];
        let others = watchers.iter().chain(links.iter()).filter_map(|&p| self.remote_node_of(p));
        for n in std::iter::once(birth).chain(trail).chain(origins).chain(others.collect::<Vec<_>>()) {
            if told.contains(&n) {
                continue;
            }
            told.push(n);
            match self.node(n) {
                Some(b) => {
                    b.procs.remove(pid);
                    b.forget_ended(pid);
                }
                None if self.remote().is_some() && self.remote_send(n, Op::PidEnded { pid }).is_err() => self.owe(n, Op::PidEnded { pid }),
                None => {}
            }
        }
        for (c, _) in &mailbox.chans {
            self.set_holder(*c, None);
            let meta = self.chan_meta.remove(*c);
            self.chan_ended(*c, meta);
        }
        if let ExitReason::Failed(e) = &reason {
            self.console.failed_to(proc.sys.console, pid, &e.to_string());
        }
        let exit = ProcessExit { pid, reason, reductions: proc.reductions, heap_bytes: proc.heap.size_bytes(), gc: proc.heap.stats() };
        let console = proc.sys.console;
        drop(proc);
        for w in watchers {
            if let Some(n) = self.remote_node_of(w) {
                let _ = self.remote_send(n, Op::Down { to: w, from: pid, reason: exit.reason.text() });
                continue;
            }
            let _ = self.deliver(Target::Inbox(w), event_message("down", pid, &exit.reason.text()), Vec::new(), None);
        }
        for l in links {
            self.exit_signal(l, pid, &exit.reason);
        }
        let watched = self.note_watched_exit(&exit);
        if watched {
            // Its watch came with it: whoever waits for it (`tern ctl spawn --wait`)
            // waits at its console's node, which is told.
            self.console.exited(console, &exit);
        }
        if self.config.record_exits {
            self.exits.lock().push(exit);
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.exited.notify_all();
    }
}

/// The most notices of ended processes and receive ends a node keeps to send again (see
/// [`NodeInner::owe`]): past it the oldest is given up, and only stale state stays where
/// it was for (a route by which a message finds the process gone, as one sent before the
/// notice would have; a channel's numbering or place), until that node restarts.
pub(super) const MAX_OWED_NOTICES: usize = 65_536;

/// How often notices a link refused are offered again.
const OWED_RETRY_US: u64 = 500_000;

impl NodeInner {
    /// Node `n`'s link refused the notice `op` (a process or a receive end is gone; the
    /// link is full: the node is slow or down): it is offered again at the next sweep,
    /// until that node takes it or restarts (what it kept is gone then), so that what it
    /// keeps for what ended does not stay.
    pub(super) fn owe(&self, n: u16, op: Op) {
        let mut owed = self.owed_notices.lock();
        if owed.len() >= MAX_OWED_NOTICES {
            if let Some((m, op)) = owed.pop_front() {
                self.console.failed(0, &format!("node {}: gave up telling node {m} {op:?} (too many such notices wait)", self.name));
            }
        }
        let first = owed.is_empty();
        owed.push_back((n, op));
        drop(owed);
        if first {
            self.schedule_at(self.now_us() + OWED_RETRY_US, super::timers::OWED_SWEEP);
        }
    }

    /// Offers the notices owed again, in order; those a link still refuses wait for the
    /// next sweep (one refusal per node is enough to stop offering it more this time).
    pub(super) fn sweep_owed(&self) {
        let owed = std::mem::take(&mut *self.owed_notices.lock());
        let mut full: Vec<u16> = Vec::new();
        let mut keep = VecDeque::new();
        for (n, op) in owed {
            if full.contains(&n) || self.remote_send(n, op.clone()).is_err() {
                full.push(n);
                keep.push_back((n, op));
            }
        }
        let mut owed = self.owed_notices.lock();
        // (Notices owed meanwhile go after these.)
        keep.extend(owed.drain(..));
        *owed = keep;
        if !owed.is_empty() {
            drop(owed);
            self.schedule_at(self.now_us() + OWED_RETRY_US, super::timers::OWED_SWEEP);
        }
    }

    /// Node `n` restarted: what it kept is gone, and so is what it was owed.
    pub(super) fn forget_owed(&self, n: u16) {
        self.owed_notices.lock().retain(|&(m, _)| m != n);
    }
}
