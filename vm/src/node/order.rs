//! Per-sender order of numbered messages: the sans-IO core of message delivery across
//! moves, shared by the node (`remote.rs`, `transfer.rs`) and the migration simulator of
//! `tern-net`, which drives this very code with its own message type.
//!
//! A queue (a process's inbox, or a channel's) gets messages numbered per [`Origin`]: the
//! node that sent them, in one incarnation of it (see `remote.rs`, "Order"). [`Order`]
//! puts them in sequence: a message ahead of its
//! turn is held back until the ones before it come, a number already passed is late, and
//! a gap that does not fill is given up ([`Order::give_up`], by the gap timeout or when
//! [`MAX_HELD`] are held). Its state travels with the queue when it moves
//! ([`Order::to_wire`] in an image, [`Order::into_wire`] at commit, [`Order::from_wire`]
//! where it lands), and what reached the destination before the commit is put in
//! sequence after the state that came with it ([`Order::admit`]).
//!
//! No I/O, no clock (time is an argument), no locks: the caller owns the state.

pub use crate::message::Origin;
use std::collections::BTreeMap;

/// Incarnations of one node whose sequence state a queue keeps. A queue keeps the next
/// number expected from each origin; past this many incarnations of one node, the oldest
/// with nothing held back is forgotten. Safe because an old incarnation no longer sends:
/// only its messages still on a forwarding path can come, and a queue that has seen this
/// many newer starts of their node has waited far longer than such a path takes. If one
/// does come, it is ordered as its incarnation's first (held back until its gap is given
/// up, then delivered): never ahead of a message from its sender it followed.
pub const MAX_INCARNATIONS: usize = 4;

/// Messages (and skip notices) held back per queue, waiting for an earlier one from the
/// same origin; and numbered messages waiting for a process or receive end that is being
/// imported. Held messages also count against their mailbox's byte limit (a sender
/// that would go past it is refused, see `remote.rs`, "Bounds"), so this count is only a
/// backstop for many tiny ones: fast senders whose earlier messages are still forwarded
/// hold back at most what the byte limit lets them. Reaching it, the queue gives up
/// waiting for what its origins miss.
pub const MAX_HELD: usize = 1_000_000;

/// The size a held message counts for (against its mailbox's byte limit).
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for crate::message::Message {
    fn weight(&self) -> usize {
        self.approx_bytes()
    }
}

/// A deliberately broken variant of the ordering, for the simulator to show that its
/// checkers catch a bug in this code. Never set by the node.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderFault {
    #[default]
    None,
    /// A message ahead of its turn is released at once instead of held back.
    ReleaseEarly,
}

/// The sequence state of one queue: per origin the next number expected, and what
/// arrived ahead of its turn.
#[derive(Debug, Clone)]
pub struct Order<T> {
    expect: Vec<(Origin, u64)>,
    /// By (origin, number); `None`: a skip notice (that number was lost on its way).
    held: BTreeMap<(Origin, u64), Option<T>>,
    /// Per origin with something held back: since when (µs) it has waited for the
    /// number it misses. Not carried: a node the queue moves to starts the wait again.
    since: Vec<(Origin, u64)>,
    /// The weight of the messages held.
    held_bytes: usize,
    fault: OrderFault,
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Order::new()
    }
}

impl<T> Order<T> {
    /// An empty sequence state (a `const fn`, for a shared empty one).
    pub const fn new() -> Self {
        Order { expect: Vec::new(), held: BTreeMap::new(), since: Vec::new(), held_bytes: 0, fault: OrderFault::None }
    }
}

fn weight<T: Weigh>(m: &Option<T>) -> usize {
    m.as_ref().map_or(0, Weigh::weight)
}

/// What travels with a queue: per origin the next number expected, and the messages held
/// back (origin, number, message or skip notice).
pub type OrderWire<T> = (Vec<(Origin, u64)>, Vec<(Origin, u64, Option<T>)>);

/// What putting one numbered message in sequence gave.
#[derive(Debug)]
pub struct Put<T> {
    /// What can be queued now (this message and any held back behind it), in order.
    pub ready: Vec<T>,
    /// Its number had been passed already (its gap given up, or a broken peer sent it
    /// twice): the message is dropped.
    pub late: bool,
    /// Numbers given up because the held-back bound was reached.
    pub skipped: u64,
    /// A gap opened: a sweep is due after the gap timeout.
    pub opened: bool,
}

impl<T> Default for Put<T> {
    fn default() -> Self {
        Put { ready: Vec::new(), late: false, skipped: 0, opened: false }
    }
}

/// What putting the messages that waited for a commit in sequence gave.
#[derive(Debug)]
pub struct Admitted<T, K> {
    /// What can be queued now, in order, after what came with the commit.
    pub ready: Vec<T>,
    /// The tags of the messages that came too late (their numbers were passed).
    pub late: Vec<K>,
    /// Numbers given up because the held-back bound was reached.
    pub skipped: u64,
    /// A gap is open: a sweep is due after the gap timeout.
    pub gaps: bool,
}

impl<T: Weigh> Order<T> {
    /// The state that came with a queue (in an image or at commit); `now`: when its gaps
    /// start to count here. At most [`MAX_HELD`] held messages are taken.
    pub fn from_wire(expect: Vec<(Origin, u64)>, held: Vec<(Origin, u64, Option<T>)>, now: u64) -> Order<T> {
        let mut o = Order { expect, ..Order::default() };
        for (origin, seq, m) in held.into_iter().take(MAX_HELD) {
            if seq >= o.next(origin) {
                o.held_bytes += weight(&m);
                o.held.insert((origin, seq), m);
                if !o.since.iter().any(|(x, _)| *x == origin) {
                    o.since.push((origin, now));
                }
            }
        }
        o
    }

    /// The same state, with a deliberate bug (see [`OrderFault`]).
    #[doc(hidden)]
    pub fn with_fault(mut self, fault: OrderFault) -> Order<T> {
        self.fault = fault;
        self
    }

    /// What travels with the queue when it moves and the state stays here too (an image).
    pub fn to_wire(&self) -> OrderWire<T>
    where
        T: Clone,
    {
        (self.expect.clone(), self.held.iter().map(|(&(o, s), m)| (o, s, m.clone())).collect())
    }

    /// What travels with the queue when it leaves for good (at commit).
    pub fn into_wire(mut self) -> OrderWire<T> {
        self.held_bytes = 0;
        (self.expect, self.held.into_iter().map(|((o, s), m)| (o, s, m)).collect())
    }

    /// The number expected next from `origin`.
    pub fn next(&self, origin: Origin) -> u64 {
        self.expect.iter().find(|(o, _)| *o == origin).map_or(0, |(_, n)| *n)
    }

    fn set_next(&mut self, origin: Origin, n: u64) {
        match self.expect.iter_mut().find(|(o, _)| *o == origin) {
            Some(e) => e.1 = n,
            None => {
                self.expect.push((origin, n));
                self.forget_old_incarnations(origin.node);
            }
        }
    }

    /// Keeps the state of at most [`MAX_INCARNATIONS`] incarnations of node `node`:
    /// the oldest with nothing held back goes first.
    fn forget_old_incarnations(&mut self, node: u16) {
        loop {
            let of_node = self.expect.iter().filter(|(o, _)| o.node == node).count();
            if of_node <= MAX_INCARNATIONS {
                return;
            }
            let idle = |o: &Origin| !self.since.iter().any(|(x, _)| x == o);
            let Some(oldest) = self.expect.iter().map(|(o, _)| *o).filter(|o| o.node == node && idle(o)).min() else { return };
            self.expect.retain(|(o, _)| *o != oldest);
        }
    }

    /// How many messages (and skip notices) are held back.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The weight of the messages held back (they count against their mailbox's limit).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// What message number `seq` from `origin` counts for besides itself against its
    /// mailbox's limit: the messages held back if it would be held back too (so the
    /// limit refuses a later message, never the one a gap waits for).
    pub fn held_bytes_for(&self, origin: Origin, seq: u64) -> usize {
        if seq > self.next(origin) {
            self.held_bytes
        } else {
            0
        }
    }

    fn take_held(&mut self, origin: Origin, seq: u64) -> Option<Option<T>> {
        let m = self.held.remove(&(origin, seq))?;
        self.held_bytes = self.held_bytes.saturating_sub(weight(&m));
        Some(m)
    }

    /// Puts message number `seq` from `origin` in sequence (`None`: a skip notice for
    /// that number). A message ahead of its turn is held back; once [`MAX_HELD`] are, the
    /// queue gives up waiting for what its origins miss (see [`Order::give_up`]).
    pub fn put(&mut self, origin: Origin, seq: u64, msg: Option<T>, now: u64) -> Put<T> {
        let next = self.next(origin);
        let mut out = Put::default();
        if seq < next {
            out.late = msg.is_some(); // a late skip notice says nothing new
            return out;
        }
        if seq > next && self.fault == OrderFault::ReleaseEarly {
            out.ready.extend(msg);
            return out;
        }
        if seq > next {
            if !self.since.iter().any(|(o, _)| *o == origin) {
                self.since.push((origin, now));
                out.opened = true;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.held.entry((origin, seq)) {
                self.held_bytes += weight(&msg);
                e.insert(msg);
            }
            if self.held.len() > MAX_HELD {
                let (ready, skipped) = self.give_up(|_, _| true);
                out.ready = ready;
                out.skipped = skipped;
            }
            return out;
        }
        out.ready.extend(msg);
        let mut n = next + 1;
        while let Some(m) = self.take_held(origin, n) {
            out.ready.extend(m);
            n += 1;
        }
        self.set_next(origin, n);
        self.since.retain(|(o, _)| *o != origin);
        if self.held.range((origin, n)..=(origin, u64::MAX)).next().is_some() {
            // Still missing a later number: a new wait begins.
            self.since.push((origin, now));
            out.opened = true;
        }
        out
    }

    /// Puts the numbered messages that reached the queue's new place before its commit
    /// in sequence, after the state that came with the commit (this one), in the order
    /// they arrived. Each carries a tag `K` (who to tell if it came too late).
    pub fn admit<K>(&mut self, waiting: impl IntoIterator<Item = (Origin, u64, Option<T>, K)>, now: u64) -> Admitted<T, K> {
        let mut out = Admitted { ready: Vec::new(), late: Vec::new(), skipped: 0, gaps: self.oldest_gap().is_some() };
        for (origin, seq, msg, tag) in waiting {
            let put = self.put(origin, seq, msg, now);
            out.gaps |= put.opened;
            out.skipped += put.skipped;
            if put.late {
                out.late.push(tag);
            }
            out.ready.extend(put.ready);
        }
        out
    }

    /// Gives up waiting for the numbers missing from the origins `which` picks (given the
    /// origin and since when it has waited): everything held back from each is released
    /// in order, past its gaps. Returns those messages and how many numbers were given up.
    pub fn give_up(&mut self, which: impl Fn(Origin, u64) -> bool) -> (Vec<T>, u64) {
        let mut ready = Vec::new();
        let mut skipped = 0u64;
        let origins: Vec<Origin> = self.since.iter().filter(|&&(o, t)| which(o, t)).map(|(o, _)| *o).collect();
        for origin in origins {
            let mut n = self.next(origin);
            let seqs: Vec<u64> = self.held.range((origin, n)..=(origin, u64::MAX)).map(|(&(_, s), _)| s).collect();
            for s in seqs {
                skipped = skipped.saturating_add(s - n);
                ready.extend(self.take_held(origin, s).flatten());
                n = s + 1;
            }
            self.set_next(origin, n);
            self.since.retain(|(o, _)| *o != origin);
        }
        (ready, skipped)
    }

    /// When the oldest wait for a missing number began (µs), if any.
    pub fn oldest_gap(&self) -> Option<u64> {
        self.since.iter().map(|(_, t)| *t).min()
    }

    /// The nodes that have sent numbered messages to this queue.
    pub fn origins(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.expect.iter().map(|(o, _)| o.node).chain(self.held.keys().map(|(o, _)| o.node)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for &str {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            4
        }
    }

    #[test]
    fn messages_ahead_of_their_turn_wait_for_the_ones_before() {
        let mut o: Order<&str> = Order::default();
        let p = o.put(at(1), 1, Some("b"), 0);
        assert!(p.ready.is_empty() && p.opened);
        let p = o.put(at(1), 0, Some("a"), 5);
        assert_eq!(p.ready, vec!["a", "b"]);
        assert!(o.oldest_gap().is_none());
        assert!(o.put(at(1), 0, Some("again"), 6).late);
    }

    #[test]
    fn the_broken_variant_releases_early() {
        let mut o: Order<&str> = Order::default().with_fault(OrderFault::ReleaseEarly);
        assert_eq!(o.put(at(1), 1, Some("b"), 0).ready, vec!["b"]);
    }

    #[test]
    fn waiting_messages_are_admitted_after_the_state_that_came_with_the_commit() {
        let mut o: Order<&str> = Order::from_wire(vec![(at(1), 2)], vec![(at(1), 3, Some("d"))], 0);
        let a = o.admit(vec![(at(1), 1, Some("late"), 'x'), (at(1), 2, Some("c"), 'y'), (at(2), 0, Some("z"), 'z')], 1);
        assert_eq!(a.ready, vec!["c", "d", "z"]);
        assert_eq!(a.late, vec!['x']);
        assert!(o.oldest_gap().is_none());
    }

    fn at(node: u16) -> Origin {
        Origin { node, inc: 1 }
    }

    #[test]
    fn a_restarted_origin_numbers_afresh_beside_what_its_old_incarnation_still_had_on_the_way() {
        let old = Origin { node: 2, inc: 10 };
        let new = Origin { node: 2, inc: 20 };
        let mut o: Order<u32> = Order::default();
        o.put(old, 0, Some(0), 0);
        o.put(old, 3, Some(3), 0); // 1 and 2 still on their way
                                   // Node 2 restarts: its new incarnation's messages need not wait for the old gap.
        assert_eq!(o.put(new, 0, Some(100), 1).ready, vec![100]);
        // The old 1 and 2 come after the new ones began: still in their order, not late.
        assert_eq!(o.put(old, 2, Some(2), 2).ready, Vec::<u32>::new());
        assert_eq!(o.put(old, 1, Some(1), 2).ready, vec![1, 2, 3]);
        assert_eq!(o.put(new, 1, Some(101), 3).ready, vec![101]);
        assert!(o.put(old, 1, Some(1), 4).late);
    }

    #[test]
    fn only_a_few_incarnations_of_a_node_are_remembered() {
        let mut o: Order<u32> = Order::default();
        for inc in 0..10u64 {
            o.put(Origin { node: 7, inc }, 0, Some(inc as u32), inc);
        }
        o.put(at(8), 0, Some(0), 0);
        assert_eq!(o.expect.iter().filter(|(x, _)| x.node == 7).count(), MAX_INCARNATIONS);
        // The newest are kept.
        assert_eq!(o.next(Origin { node: 7, inc: 9 }), 1);
        assert_eq!(o.next(at(8)), 1);
        // One with something held back is never forgotten.
        let mut o: Order<u32> = Order::default();
        let first = Origin { node: 7, inc: 0 };
        o.put(first, 0, Some(0), 0);
        o.put(first, 5, Some(5), 0);
        for inc in 1..10u64 {
            o.put(Origin { node: 7, inc }, 0, Some(0), inc);
        }
        assert_eq!(o.put(first, 1, Some(1), 20).ready, vec![1]);
        assert_eq!(o.held_len(), 1);
    }

    #[test]
    fn a_gap_given_up_releases_what_waited_behind_it() {
        let mut o: Order<u32> = Order::default();
        o.put(at(3), 2, Some(2), 10);
        o.put(at(3), 4, None, 10);
        o.put(at(3), 5, Some(5), 10);
        let (ready, skipped) = o.give_up(|_, since| since <= 10);
        assert_eq!(ready, vec![2, 5]);
        assert_eq!(skipped, 3);
        assert_eq!(o.held_bytes(), 0);
        assert_eq!(o.next(at(3)), 6);
    }
}
