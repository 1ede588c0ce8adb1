//! Process slots and the process table. A process that is not running is parked in its
//! [`Slot`], with its [`Mailbox`] (the inbox, and one queue per channel whose receive
//! end it holds), its links and watchers, its inbox's sequence state and the marks of a
//! transfer in progress; senders lock the slot, never the process. The table maps pids
//! to slots (or, for a process that left, to the node it went to: [`Entry::Moved`]) in
//! sharded maps ([`Shards`]); a channel's holder is kept the same way. Also here: a
//! slot's image out ([`SlotState::image`]) and in ([`NodeInner::reinstate`]).

use super::forwarding::Forwarding;
use super::{ChanId, Ends, NodeInner, Origin, Pid, SentBy};
use crate::message::Message;
use crate::process::Process;
use crate::snapshot::{ImageError, SlotImage};
use crate::value::name_node;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

pub(super) const FREEZE: u8 = 1;

pub(super) const KILL: u8 = 2;

/// Pages arrived for a running process: install them at its next safepoint.
pub(super) const PAGES: u8 = 4;

/// Jobs wait to run on the process at its next safepoint (see `live.rs`).
pub(super) const JOBS: u8 = 8;

/// A message it sent was lost (`SlotState::lost` is set): its next send fails. A flag so
/// that a send need not lock its own slot to look.
pub(super) const LOST: u8 = 16;

/// Resumed at its migration's commit before the state its source kept during the freeze
/// (its late messages, links, sequence state) is here: it computes, but its next system
/// call, and its end, wait for that state (see `transfer.rs`, [`Node::resume_import`]).
///
/// [`Node::resume_import`]: super::Node::resume_import
pub(super) const LATE: u8 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// In a run queue or running (the worker owns the process).
    Active,
    /// Parked in an interruptible wait.
    Waiting,
    /// Parked while a file operation runs (uninterruptible).
    Io,
    /// Parked and not to run until unfrozen.
    Frozen,
    /// Ended.
    Exited,
    /// Moved to another node; senders holding this slot look again.
    Moved,
}

impl Status {
    /// How `ps` and the load samples name it (`None`: the process is not here).
    pub(super) fn name(self) -> Option<&'static str> {
        match self {
            Status::Active => Some("running"),
            Status::Waiting => Some("waiting"),
            Status::Io => Some("io"),
            Status::Frozen => Some("frozen"),
            Status::Exited | Status::Moved => None,
        }
    }
}

/// What a receive waits on: the process's inbox, or a channel it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Inbox,
    Chan(ChanId),
}

/// The messages queued for a process.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    pub(super) inbox: VecDeque<Message>,
    pub(super) chans: Vec<(ChanId, VecDeque<Message>)>,
    pub(super) bytes: usize,
}

impl Mailbox {
    pub(super) fn chan(&mut self, c: ChanId) -> Option<&mut VecDeque<Message>> {
        self.chans.iter_mut().find(|(id, _)| *id == c).map(|(_, q)| q)
    }
    pub(super) fn holds(&self, c: ChanId) -> bool {
        self.chans.iter().any(|(id, _)| *id == c)
    }
    pub(super) fn queue(&mut self, s: Source) -> Option<&mut VecDeque<Message>> {
        match s {
            Source::Inbox => Some(&mut self.inbox),
            Source::Chan(c) => self.chan(c),
        }
    }
    pub(super) fn count(&self) -> usize {
        self.inbox.len() + self.chans.iter().map(|(_, q)| q.len()).sum::<usize>()
    }
}

/// A part of a slot's state that most processes never use (it is for moves between
/// nodes, numbered messages, losses): kept out of line, allocated on first write. Reads
/// of one never written see the empty value ([`Empty::empty`]), so a local process that
/// never moves pays 8 bytes for it instead of the value's size. Any `&mut` use (a
/// method of the value that takes `&mut self`, through `DerefMut`) allocates it: to
/// empty one, [`Lazy::take`] it.
pub(crate) struct Lazy<T: 'static>(Option<Box<T>>);

/// A value with a shared empty instance for [`Lazy`]'s reads.
pub(crate) trait Empty: Default + Sync + 'static {
    fn empty() -> &'static Self;
}

macro_rules! empty {
    ($t:ty, $e:expr) => {
        impl Empty for $t {
            fn empty() -> &'static Self {
                static E: $t = $e;
                &E
            }
        }
    };
}

empty!(Vec<(u32, Vec<u64>)>, Vec::new());
empty!(Vec<u16>, Vec::new());
empty!(Vec<Pid>, Vec::new());
empty!(Option<String>, None);
empty!(Option<ExportMark>, None);
empty!(Option<(u64, String)>, None);
empty!(InboxOrder, InboxOrder { seq: Order::new(), waiting: Vec::new() });

impl<T> Lazy<T> {
    pub(crate) const NONE: Lazy<T> = Lazy(None);

    /// Its value, leaving it empty (and freeing its box; nothing is allocated).
    pub(crate) fn take(&mut self) -> T
    where
        T: Default,
    {
        self.0.take().map_or_else(T::default, |b| *b)
    }

    /// Whether it was ever written (and not taken since).
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Sets its value; an empty one frees its box instead.
    pub(crate) fn put(&mut self, v: T)
    where
        T: Empty + PartialEq,
    {
        if v == *T::empty() {
            self.0 = None;
        } else {
            self.set(v);
        }
    }

    /// Sets its value.
    pub(crate) fn set(&mut self, v: T) {
        match &mut self.0 {
            Some(b) => **b = v,
            None => self.0 = Some(Box::new(v)),
        }
    }
}

impl<T: Empty> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.0 {
            Some(b) => b,
            None => T::empty(),
        }
    }
}

impl<T: Empty> std::ops::DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Default::default)
    }
}

impl<T: std::fmt::Debug + Empty> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// See [`SlotState::recv_dst`].
pub(super) const NO_RECV: u32 = u32::MAX;

pub(crate) struct SlotState {
    pub(super) status: Status,
    pub(super) parked: Option<Box<Process>>,
    /// What wakes a waiting process (nothing but its timer, when empty).
    /// (One source inline: most wait for one thing, and a million idle processes each
    /// keep their list.)
    pub(super) wait: smallvec::SmallVec<[Source; 1]>,
    pub(super) wait_seq: u64,
    /// Whether the wait has an armed timer (counted in `NodeInner::timed_waits`).
    pub(super) wait_timed: bool,
    /// While it waits in a plain `recv` (one source, no `select`): the register its
    /// value goes to. A message for it that needs nothing of its heap completes the call
    /// where it is delivered (`deliver.rs`), so that the woken process goes on after its
    /// `recv` instead of running it again. [`NO_RECV`] otherwise; read only while the
    /// status is `Waiting` (every wait sets it), and reset by whatever changes a
    /// waiting process's frames (a job run on it at a safepoint, `live.rs`).
    pub(super) recv_dst: u32,
    /// Freeze requests not yet released (see `NodeInner::freeze`).
    pub(super) freezers: u32,
    pub(super) mailbox: Mailbox,
    pub(super) links: Lazy<Vec<Pid>>,
    pub(super) watchers: Lazy<Vec<Pid>>,
    pub(super) trap_exits: bool,
    /// Why it is to be killed (flag `KILL`).
    pub(super) kill: Lazy<Option<String>>,
    /// The absent page the parked process faulted on, and when (node µs).
    pub(super) fault: Option<(u32, u64)>,
    /// Pages that arrived while the process was running, to install at a safepoint.
    pub(super) pending_pages: Lazy<Vec<(u32, Vec<u64>)>>,
    /// Set while an image of it is on its way to another node (see `transfer.rs`).
    pub(super) export: Lazy<Option<ExportMark>>,
    /// Set while it is being imported here: how much of its mailbox came in the image
    /// (what arrived at the source after the image goes right after that).
    pub(super) import: Lazy<Option<ExportMark>>,
    /// Work to do on the process at its next safepoint (flag `JOBS`).
    pub(super) jobs: Vec<Job>,
    /// Times the process has moved between nodes (the version of its pid's routes).
    pub(super) moves: u32,
    /// The sequence state of numbered inbox messages (see `remote.rs`, "Order").
    pub(super) order: Lazy<InboxOrder>,
    /// Messages this process sent that were lost (see `remote.rs`, "Bounds"): how many,
    /// and what the first was. Its next send fails, saying so.
    pub(super) lost: Lazy<Option<(u64, String)>>,
    /// The forwarding mechanism of the move that brought it here (`forwarding.rs`).
    pub(super) fwd: Forwarding,
    /// Nodes that keep a forwarding link to it (`link-traversal`): told when it ends.
    pub(super) trail: Lazy<Vec<u16>>,
    /// Origin nodes told where it is since it came here (path shortening).
    pub(super) told: Lazy<Vec<u16>>,
    /// It ended while resumed before its late state came (flag `LATE`): its end is
    /// carried out once that state is here (links and watchers come with it).
    pub(super) ending: Option<Box<(Box<Process>, super::ExitReason)>>,
}

impl SlotState {
    /// Completes the plain `recv` this process waits in with `msg`, for `src`, as the
    /// call's run again would (see `recv_dst`); the caller wakes it. False, with nothing
    /// changed, if it does not wait so, something waits before `msg`, or `msg` needs
    /// its heap.
    pub(super) fn complete_recv(&mut self, src: Source, msg: &Message) -> bool {
        if self.status != Status::Waiting
            || self.recv_dst == NO_RECV
            || self.wait.as_slice() != [src]
            || !self.mailbox.queue(src).is_some_and(|q| q.is_empty())
        {
            return false;
        }
        let (Some(v), Some(p)) = (crate::flatten::plain_value(msg), self.parked.as_deref_mut()) else { return false };
        let dst = self.recv_dst as usize;
        // (Still at that call: nothing moved its pc meanwhile.)
        if crate::interp::sys_call(p).is_none_or(|c| c.dst != dst) {
            return false;
        }
        crate::interp::sys_return_to(p, dst, v);
        p.sys.deadline_us = None;
        true
    }

    /// What an image carries of this slot besides the process itself (`proc`, parked
    /// here); `now`: the node clock, for the time left on its wait.
    pub(super) fn image(&self, proc: &Process, now: u64) -> SlotImage {
        let (inbox_expect, inbox_held) = self.order.seq.to_wire();
        SlotImage {
            inbox: self.mailbox.inbox.iter().cloned().collect(),
            chans: self.mailbox.chans.iter().map(|(c, q)| (*c, q.iter().cloned().collect())).collect(),
            links: self.links.to_vec(),
            watchers: self.watchers.to_vec(),
            trap_exits: self.trap_exits,
            kill: (*self.kill).clone(),
            timeout_left_us: proc.sys.deadline_us.map(|d| d.saturating_sub(now)),
            clock_us: Some(now.saturating_add_signed(proc.sys.clock_offset_us)),
            moves: self.moves,
            inbox_expect,
            inbox_held,
        }
    }
}

pub(crate) struct Slot {
    pub(super) flags: AtomicU8,
    pub(super) st: Mutex<SlotState>,
    /// Reductions and heap pages at the end of its last time slice (for `ps`).
    pub(super) reductions: AtomicU64,
    pub(super) pages: AtomicU64,
    /// Slows the process down while a migration's dirty pages outrun the network: after
    /// each time slice it pauses for (2^level - 1) times the slice (0: not throttled).
    pub(super) throttle: AtomicU8,
    /// What the load policy measures (`meter.rs`).
    pub(super) meter: super::meter::ProcMeter,
}

impl Slot {
    /// A slot for a process arriving on this node at `now_us` (spawned or moved in).
    pub(super) fn new(status: Status, now_us: u64) -> Arc<Slot> {
        Arc::new(Slot {
            meter: super::meter::ProcMeter::new(now_us),
            reductions: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            throttle: AtomicU8::new(0),
            flags: AtomicU8::new(0),
            st: Mutex::new(SlotState {
                status,
                parked: None,
                wait: smallvec::SmallVec::new(),
                wait_seq: 0,
                wait_timed: false,
                recv_dst: NO_RECV,
                freezers: 0,
                mailbox: Mailbox::default(),
                links: Lazy::NONE,
                watchers: Lazy::NONE,
                trap_exits: false,
                kill: Lazy::NONE,
                fault: None,
                pending_pages: Lazy::NONE,
                export: Lazy::NONE,
                import: Lazy::NONE,
                jobs: Vec::new(),
                moves: 0,
                order: Lazy::NONE,
                lost: Lazy::NONE,
                fwd: Forwarding::LinkUpdate,
                trail: Lazy::NONE,
                told: Lazy::NONE,
                ending: None,
            }),
        })
    }
}

#[derive(Clone)]
pub(super) enum Entry {
    Live(Arc<Slot>),
    /// Moved to a node, after a number of moves, under a forwarding mechanism (see
    /// `forwarding.rs`): replaced only by a newer route.
    Moved(u16, u32, Forwarding),
    /// (At its birth node, forwarding `resend`.) It lives elsewhere, after a number of
    /// moves: on the node given, as far as it was told (for its monitors' `node_down`
    /// only, never to forward by; `locate::NOWHERE` if not told).
    Away(u16, u32),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Live(_) => f.write_str("Live"),
            Entry::Moved(n, m, fwd) => write!(f, "Moved({n}, {m}, {fwd})"),
            Entry::Away(n, m) => write!(f, "Away({n}, {m})"),
        }
    }
}

pub(super) const SHARDS: usize = 64;

/// Hashes pids and channel ids (already unique integers) cheaply.
#[derive(Default, Clone, Copy)]
pub(super) struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) type NameMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<NameHasher>>;

pub(super) struct Shards<V> {
    pub(super) shards: Vec<Mutex<NameMap<V>>>,
}

impl<V: Clone> Shards<V> {
    pub(super) fn new() -> Self {
        Shards { shards: (0..SHARDS).map(|_| Mutex::new(NameMap::default())).collect() }
    }
    pub(super) fn shard(&self, k: u64) -> &Mutex<NameMap<V>> {
        &self.shards[(k as usize) % SHARDS]
    }
    pub(super) fn get(&self, k: u64) -> Option<V> {
        self.shard(k).lock().get(&k).cloned()
    }
    pub(super) fn insert(&self, k: u64, v: V) {
        self.shard(k).lock().insert(k, v);
    }
    pub(super) fn remove(&self, k: u64) -> Option<V> {
        self.shard(k).lock().remove(&k)
    }
    pub(super) fn contains(&self, k: u64) -> bool {
        self.shard(k).lock().contains_key(&k)
    }
    /// Its entries, counted shard by shard (not a snapshot: for reports and tests).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

pub(crate) struct Task {
    pub(super) pid: Pid,
    pub(super) slot: Arc<Slot>,
    pub(super) proc: Box<Process>,
}

/// The pages of an image being reinstated that came separately from it.
pub enum Staged {
    /// A few pages (index, words).
    Pages(Vec<(u32, Vec<u64>)>),
    /// A heap they were installed in as they arrived (see [`crate::snapshot::restore_into`]).
    Heap(Box<crate::heap::Heap>),
}

/// A queue's sequence state and what putting a message in it gave (see `order.rs`).
pub(crate) type Order = super::order::Order<Message>;

pub(crate) type Put = super::order::Put<Message>;

/// The sequence state of a process's inbox (see "Order"), kept in its slot and carried
/// with it: in its image, and in [`super::Late`] for what changed after the image.
#[derive(Debug, Default)]
pub(crate) struct InboxOrder {
    pub(crate) seq: Order,
    /// Numbered messages (and skip notices) that reached the process while it was being
    /// imported here (the state they are ordered by comes with the commit); `carried`
    /// stays empty (the ends they carried are in the mailbox already).
    pub(crate) waiting: Vec<Arriving>,
}

impl InboxOrder {
    /// The nodes that have sent numbered messages to this inbox.
    pub(crate) fn origins(&self) -> Vec<u16> {
        self.seq.origins()
    }
}

/// A numbered message (`msg` `None`: a skip notice) for a process or a receive end that
/// is being imported here.
#[derive(Debug, Clone)]
pub(crate) struct Arriving {
    pub(crate) origin: Origin,
    pub(crate) seq: u64,
    pub(crate) hops: u8,
    pub(crate) from: SentBy,
    pub(crate) msg: Option<Message>,
    pub(crate) carried: Ends,
}

/// How much of the mailbox the image holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportMark {
    pub(super) inbox: usize,
    pub(super) chans: Vec<(ChanId, usize)>,
    /// At an import: the route the node had for the process before (put back if it is
    /// aborted).
    pub(super) route: Option<Entry>,
}

impl ExportMark {
    pub(crate) fn of(m: &Mailbox) -> ExportMark {
        ExportMark { inbox: m.inbox.len(), chans: m.chans.iter().map(|(c, q)| (*c, q.len())).collect(), route: None }
    }
}

/// Work done on a process at a safepoint, with the whole process at hand.
pub type Job = Box<dyn FnOnce(&mut Process) + Send>;

impl NodeInner {
    pub(super) fn pids_where(&self, keep: impl Fn(Status) -> bool) -> Vec<Pid> {
        // Shard locks are never held while a slot is locked (a move locks a slot, then
        // a shard), so collect first and look at the slots after.
        let mut slots = Vec::new();
        for s in &self.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                Entry::Live(slot) => Some((p, slot.clone())),
                Entry::Moved(..) | Entry::Away(..) => None,
            }));
        }
        let mut v: Vec<Pid> = slots.into_iter().filter(|(_, slot)| keep(slot.st.lock().status)).map(|(p, _)| p).collect();
        v.sort_unstable();
        v
    }

    /// The node holding a process now, and its slot.
    pub(super) fn find(&self, pid: Pid) -> Option<(NodeRef<'_>, Arc<Slot>)> {
        // Here first, with no look at the mesh (the local messaging path).
        let mut next = match self.find_step(pid) {
            Ok(s) => return Some((NodeRef::Here(self), s)),
            Err(n) => n?,
        };
        for _ in 1..8 {
            let node = self.node(next)?;
            match node.find_step(pid) {
                Ok(s) => return Some((NodeRef::There(node), s)),
                Err(n) => next = n?,
            }
        }
        None
    }

    /// One step of [`NodeInner::find`], on this node: the process's slot if it lives
    /// here, else the node to look on next (`None`: nowhere).
    fn find_step(&self, pid: Pid) -> Result<Arc<Slot>, Option<u16>> {
        match self.procs.get(pid) {
            Some(Entry::Live(s)) => Ok(s),
            Some(Entry::Moved(n, ..)) => Err(Some(n)),
            Some(Entry::Away(..)) => Err(None),
            None if self.id == name_node(pid) => Err(None),
            None => Err(Some(name_node(pid))),
        }
    }

    /// The process holding a channel's receive end, if it is in this OS process. The
    /// channel's birth node keeps it when that node is here; else the node holding it.
    pub(super) fn holder(&self, c: ChanId) -> Option<Pid> {
        match self.node(name_node(c)) {
            Some(n) => n.holders.get(c),
            None => self.holders.get(c),
        }
    }

    pub(super) fn set_holder(&self, c: ChanId, pid: Option<Pid>) {
        let n = self.node(name_node(c));
        let table = match &n {
            Some(n) => &n.holders,
            None => &self.holders,
        };
        match pid {
            Some(p) => table.insert(c, p),
            None => {
                table.remove(c);
            }
        }
        self.mesh.changed();
    }

    /// Runs `f` on the slot of a process that has not ended, wherever it is now, with
    /// the slot locked (looking again if it moves meanwhile); `None` if it has ended.
    pub(crate) fn with_live<R>(&self, pid: Pid, f: impl FnOnce(&NodeInner, &Arc<Slot>, &mut SlotState) -> R) -> Option<R> {
        loop {
            let (node, slot) = self.find(pid)?;
            let mut st = slot.st.lock();
            match st.status {
                Status::Moved => continue,
                Status::Exited => return None,
                _ => return Some(f(&node, &slot, &mut st)),
            }
        }
    }

    pub(super) fn local_slot(&self, pid: Pid) -> Option<Arc<Slot>> {
        match self.procs.get(pid) {
            Some(Entry::Live(s)) => Some(s),
            _ => None,
        }
    }

    /// Loads an image into the empty slot made for it.
    /// Reinstates an image (and, for a state-only image, its `pages`, with the `absent`
    /// ones left to fault in) into `slot`, frozen.
    pub(super) fn reinstate(
        &self,
        _temp: Pid,
        slot: &Arc<Slot>,
        bytes: &[u8],
        pages: Staged,
        absent: &[(u32, u32)],
    ) -> Result<(), ImageError> {
        let (proc, img) = match pages {
            Staged::Pages(pages) => crate::snapshot::restore_state(bytes, &self.vm, pages, absent)?,
            Staged::Heap(heap) => crate::snapshot::restore_into(bytes, &self.vm, *heap, absent)?,
        };
        self.install(slot, proc, img);
        Ok(())
    }

    /// Puts a restored process and what its node kept about it into `slot`, frozen.
    pub(super) fn install(&self, slot: &Arc<Slot>, mut proc: crate::Process, img: crate::snapshot::SlotImage) {
        let now = self.now_us();
        proc.sys.deadline_us = img.timeout_left_us.map(|l| now + l);
        // Its clock goes on from where it was (not counting the time it was moving).
        if let Some(c) = img.clock_us {
            proc.sys.clock_offset_us = (c as i64).saturating_sub(now as i64);
        }
        let mut st = slot.st.lock();
        let mut bytes = 0;
        st.mailbox.inbox = img.inbox.into_iter().inspect(|m| bytes += m.approx_bytes()).collect();
        st.mailbox.chans =
            img.chans.into_iter().map(|(c, q)| (c, q.into_iter().inspect(|m| bytes += m.approx_bytes()).collect())).collect();
        st.mailbox.bytes = bytes;
        st.links.put(img.links);
        st.watchers.put(img.watchers);
        st.trap_exits = img.trap_exits;
        // Reinstated elsewhere: one more move.
        st.moves = img.moves.saturating_add(1);
        // (Nothing numbered: nothing allocated.)
        if st.order.is_set() || !img.inbox_expect.is_empty() || !img.inbox_held.is_empty() {
            st.order.seq = Order::from_wire(img.inbox_expect, img.inbox_held, now);
        }
        if st.order.seq.oldest_gap().is_some() {
            self.gap_opened(now);
        }
        if img.kill.is_some() {
            st.kill.put(img.kill);
            slot.flags.fetch_or(KILL, Ordering::SeqCst);
        }
        slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
        st.status = Status::Frozen;
        st.parked = Some(Box::new(proc));
    }
}

/// A node in this OS process that [`NodeInner::find`] found a process on: the node
/// asking (no reference taken), or another.
pub(super) enum NodeRef<'a> {
    Here(&'a NodeInner),
    There(Arc<NodeInner>),
}

impl std::ops::Deref for NodeRef<'_> {
    type Target = NodeInner;
    fn deref(&self) -> &NodeInner {
        match self {
            NodeRef::Here(n) => n,
            NodeRef::There(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every process has a slot, a million of them on a crowded node: what only a
    /// process that moves, links or hears from other nodes uses stays out of line
    /// (`Lazy`), so the slot stays small (792 bytes, then 448, now 408).
    #[test]
    fn a_slot_stays_small() {
        let size = std::mem::size_of::<super::Slot>();
        assert!(size <= 416, "a process's slot is {size} bytes");
    }
}
