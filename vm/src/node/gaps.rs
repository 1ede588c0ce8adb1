//! Gaps and losses (see `remote.rs`, "Bounds"): telling the sender of a lost message
//! (its next send fails) or logging the loss, giving up sequence numbers that have been
//! missing for the gap timeout (the sweep the timer thread runs) and queueing, in order,
//! what was held back behind them.

use super::deliver::{what, DeliverError};
use super::remote::Op;
use super::slot::{Entry, Order, Source, Status, LOST};
use super::{NodeInner, Origin, Pid, SentBy, Target, MAX_HELD};
use crate::message::Message;
use crate::value::name_text;
use std::sync::atomic::Ordering;

impl NodeInner {
    /// Why a message was lost, for its sender.
    pub(crate) fn why_lost(&self, e: &DeliverError) -> String {
        match e {
            DeliverError::Full(p) => format!("the mailbox of <pid {}> was full ({})", name_text(*p), self.mailbox_limits_text()),
            DeliverError::Waiting(t) => {
                format!("more than {MAX_HELD} messages were waiting for {} to arrive at node {}", what(*t), self.name)
            }
            DeliverError::Late => format!("it reached node {} after its number had been given up (see the gap timeout)", self.name),
            DeliverError::Unsettled(t) => format!(
                "{} was in the middle of a move at node {} that did not settle within {} s",
                what(*t),
                self.name,
                self.config.settle_timeout.as_secs_f64()
            ),
            DeliverError::Unreachable(e) => format!("it could not be passed on from node {}: {e}", self.name),
        }
    }

    /// Tells the sender of a message that was lost (see "Bounds"): a process on this node,
    /// or on its origin node, fails its next send; a loss no process can be told of (its
    /// node has restarted since, say) is logged here.
    pub(crate) fn report_lost(&self, origin: Origin, from: SentBy, target: Target, why: String) {
        let node = origin.node;
        match from {
            SentBy::Process(p) if origin == self.origin() || (node != self.id && self.node(node).is_some()) => {
                self.tell_lost(p, target, why)
            }
            SentBy::Process(p) if node == self.id => {
                self.log_lost(target, &format!("{why}; its sender <pid {}> belonged to an earlier start of this node", name_text(p)))
            }
            SentBy::Process(p) => {
                if let Err(e) = self.remote_send(node, Op::Lost { sender: p, inc: origin.inc, target, why: why.clone() }) {
                    self.log_lost(target, &format!("{why}; its sender <pid {}> on node {node} could not be told: {e}", name_text(p)));
                }
            }
            SentBy::Host | SentBy::Notice => self.log_lost(target, &why),
        }
    }

    /// A message process `sender` sent to `target` was lost: its next send fails, saying so.
    pub(crate) fn tell_lost(&self, sender: Pid, target: Target, why: String) {
        self.counters.reported.fetch_add(1, Ordering::Relaxed);
        let note = format!("to {}: {why}", what(target));
        let told = self
            .with_live(sender, |_, slot, st| {
                let lost = match st.lost.take() {
                    Some((n, first)) => (n.saturating_add(1), first),
                    None => (1, note.clone()),
                };
                st.lost.set(Some(lost));
                slot.flags.fetch_or(LOST, Ordering::SeqCst);
            })
            .is_some();
        if !told {
            self.log_lost(target, &format!("{why}; its sender <pid {}> has ended or left this node", name_text(sender)));
        }
    }

    /// Logs a message lost (see "Bounds").
    pub(crate) fn log_lost(&self, target: Target, why: &str) {
        self.console.failed(0, &format!("node {}: a message for {} was lost: {why}", self.name, what(target)));
    }

    /// A queue here began waiting for a missing number at `now`: a sweep gives it up
    /// after the gap timeout, if nothing fills it first.
    pub(crate) fn gap_opened(&self, now: u64) {
        if !self.gap_sweep.swap(true, Ordering::SeqCst) {
            self.schedule_sweep(now.saturating_add(self.config.gap_timeout.as_micros() as u64));
        }
    }

    /// Gives up, in every queue here, the numbers that have been missing for the gap
    /// timeout or longer (see "Bounds"): what was held back behind them is queued, in
    /// order. Run by the timer thread; schedules the next sweep for the oldest gap left.
    pub(crate) fn sweep_gaps(&self) {
        // Cleared before looking: a gap that opens from now on schedules a sweep itself.
        self.gap_sweep.store(false, Ordering::SeqCst);
        let now = self.now_us();
        let timeout = self.config.gap_timeout.as_micros() as u64;
        self.release_gaps(&|_, since| now.saturating_sub(since) >= timeout);
    }

    /// Gives up, in every queue here, the gaps `which` picks (by origin and since when it
    /// has waited): what was held back behind them is queued, in order, and each give-up
    /// is counted and logged; the next sweep is scheduled for the oldest gap left.
    pub(super) fn release_gaps(&self, which: &dyn Fn(Origin, u64) -> bool) {
        let timeout = self.config.gap_timeout.as_micros() as u64;
        let due = |order: &Order| order.oldest_gap().is_some();
        let mut oldest: Option<u64> = None;
        let mut left = |t: Option<u64>| {
            if let Some(t) = t {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        };
        let mut given_up: Vec<(Target, u64)> = Vec::new();
        let mut slots = Vec::new();
        for s in &self.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                Entry::Live(slot) => Some((p, slot.clone())),
                Entry::Moved(..) | Entry::Away(..) => None,
            }));
        }
        for (pid, slot) in slots {
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) {
                continue;
            }
            if st.import.is_some() {
                // Its state is replaced at the commit (with what the source held back
                // meanwhile): given up here, a message could come twice.
                left(st.order.seq.oldest_gap());
                continue;
            }
            if !due(&st.order.seq) {
                continue;
            }
            let (ready, skipped) = st.order.seq.give_up(which);
            let bytes: usize = ready.iter().map(Message::approx_bytes).sum();
            st.mailbox.inbox.extend(ready);
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&Source::Inbox) {
                self.wake_locked(pid, &slot, &mut st, None);
            }
            left(st.order.seq.oldest_gap());
            given_up.push((Target::Inbox(pid), skipped));
        }
        let mut chans = Vec::new();
        for s in &self.chan_meta.shards {
            chans.extend(s.lock().iter().filter_map(|(&c, m)| m.order.oldest_gap().map(|t| (c, t))));
        }
        for (c, t) in chans {
            let slot = self.holder(c).and_then(|p| self.local_slot(p).map(|s| (p, s)));
            let Some((pid, slot)) = slot else {
                // Not due yet, or arriving: the next sweep.
                left(Some(t));
                continue;
            };
            // The holder's slot lock first (the end cannot leave meanwhile), as queueing does.
            let mut st = slot.st.lock();
            if matches!(st.status, Status::Exited | Status::Moved) || !st.mailbox.holds(c) {
                left(Some(t));
                continue;
            }
            let (ready, skipped, rest) = {
                let mut shard = self.chan_meta.shard(c).lock();
                let Some(meta) = shard.get_mut(&c) else { continue };
                let (ready, skipped) = meta.order.give_up(which);
                (ready, skipped, meta.order.oldest_gap())
            };
            left(rest);
            let mut bytes = 0;
            if let Some(q) = st.mailbox.chan(c) {
                for m in ready {
                    bytes += m.approx_bytes();
                    q.push_back(m);
                }
            }
            st.mailbox.bytes += bytes;
            if bytes > 0 && st.status == Status::Waiting && st.wait.contains(&Source::Chan(c)) {
                self.wake_locked(pid, &slot, &mut st, None);
            }
            given_up.push((Target::Chan(c), skipped));
        }
        if let Some(t) = oldest {
            if !self.gap_sweep.swap(true, Ordering::SeqCst) {
                self.schedule_sweep(t.saturating_add(timeout));
            }
        }
        for (target, skipped) in given_up.into_iter().filter(|(_, n)| *n > 0) {
            self.counters.given_up.fetch_add(skipped, Ordering::Relaxed);
            let why = format!(
                "gave up waiting for {skipped} missing message(s) after {} s (lost on the way, with a node that went down, say)",
                self.config.gap_timeout.as_secs_f64()
            );
            self.log_lost(target, &why);
        }
    }
}
