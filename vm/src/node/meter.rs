//! What a load policy measures: cumulative counters kept as processes run, read by the
//! host whenever it likes ([`crate::node::Node::load_sample`],
//! [`crate::node::Node::proc_samples`]). Rates are the host's business: it compares two
//! samples over the window it chooses. Nothing here takes a lock on a hot path but a
//! process's own meter, and nothing walks a heap more than once per
//! [`DIRTY_SAMPLE_US`] per process.

use super::slot::Slot;
use super::{NodeInner, Pid, Target};
use crate::process::Process;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A running process's dirty bits are counted at most this often (the count is a walk
/// of one byte per page), at the end of a time slice or at a system call: often enough
/// that a process rewriting its whole heap shows a rate above a fast link's.
pub const DIRTY_SAMPLE_US: u64 = 20_000;

/// At most this many partner nodes, and senders, are remembered per process (the
/// busiest kept).
const MAX_TALK: usize = 8;

const PINNED: u8 = 1;
const LAZY: u8 = 2;
const SHELL: u8 = 4;

/// One process's counters on this node.
pub(crate) struct ProcMeter {
    /// When it arrived here (spawned or moved in), node µs.
    arrived_us: AtomicU64,
    /// CPU time its time slices took here, µs.
    cpu_us: AtomicU64,
    /// Time it spent runnable in a run queue, waiting for a worker, µs; and when it
    /// was last queued.
    wait_us: AtomicU64,
    queued_us: AtomicU64,
    /// Pages it wrote, counted from its dirty bits at most every [`DIRTY_SAMPLE_US`].
    dirtied: AtomicU64,
    dirty_sampled_us: AtomicU64,
    /// Its recent write rate, pages per second: over the last samples' intervals, each
    /// weighing half of what came before.
    dirty_rate: AtomicU64,
    /// Its state as of its last time slice: pinned, pages away (lazy), a shell.
    info: AtomicU8,
    group: AtomicU64,
    /// Who it talks with.
    talk: Mutex<Option<Box<Talk>>>,
    /// Message bytes it sent, and of those, to other nodes (the rest went to processes
    /// here: counted without a look at where each went).
    sent: AtomicU64,
    sent_away: AtomicU64,
    /// Bytes it received from processes on this node.
    recv_here: AtomicU64,
    /// The node it came from, plus one (0: spawned here).
    from: AtomicU32,
}

impl ProcMeter {
    pub(super) fn new(now_us: u64) -> ProcMeter {
        ProcMeter {
            arrived_us: AtomicU64::new(now_us),
            cpu_us: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            queued_us: AtomicU64::new(now_us),
            dirtied: AtomicU64::new(0),
            dirty_sampled_us: AtomicU64::new(now_us),
            dirty_rate: AtomicU64::new(0),
            info: AtomicU8::new(0),
            group: AtomicU64::new(0),
            talk: Mutex::new(None),
            sent: AtomicU64::new(0),
            sent_away: AtomicU64::new(0),
            recv_here: AtomicU64::new(0),
            from: AtomicU32::new(0),
        }
    }

    pub(super) fn came_from(&self, node: u16) {
        self.from.store(u32::from(node) + 1, Ordering::Relaxed);
    }

    /// It received a message of `bytes` from a process on this node (the hot path of
    /// local messaging: an atomic, no lock; only senders elsewhere are named).
    pub(super) fn received_here(&self, bytes: u64) {
        self.recv_here.fetch_add(bytes, Ordering::Relaxed);
    }

    /// It sent a message of `bytes` (wherever it went).
    pub(super) fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A message of `bytes` it sent left for node `node`.
    pub(super) fn sent_away(&self, node: u16, bytes: u64) {
        self.sent_away.fetch_add(bytes, Ordering::Relaxed);
        self.talked(node, bytes);
    }

    /// Counts `bytes` of messages exchanged with node `node`.
    pub(super) fn talked(&self, node: u16, bytes: u64) {
        let mut t = self.talk.lock();
        count(&mut t.get_or_insert_with(Default::default).nodes, node, bytes);
    }

    /// It received a message of `bytes` from process `from` on node `node`.
    pub(super) fn received(&self, node: u16, from: Pid, bytes: u64) {
        let mut t = self.talk.lock();
        let t = t.get_or_insert_with(Default::default);
        count(&mut t.nodes, node, bytes);
        count(&mut t.partners, (from, node), bytes);
    }

    /// It was put in a run queue.
    pub(super) fn queued(&self, now_us: u64) {
        self.queued_us.store(now_us, Ordering::Relaxed);
    }

    /// A worker took it from a run queue.
    pub(super) fn runs(&self, now_us: u64) {
        let waited = now_us.saturating_sub(self.queued_us.load(Ordering::Relaxed));
        self.wait_us.fetch_add(waited, Ordering::Relaxed);
    }

    /// A time slice that ended with the process parked elsewhere took `cpu_us`.
    pub(super) fn add_cpu(&self, cpu_us: u64) {
        self.cpu_us.fetch_add(cpu_us, Ordering::Relaxed);
    }

    /// At the end of a time slice that took `cpu_us`: what the process is now.
    pub(super) fn end_slice(&self, p: &mut Process, now_us: u64, cpu_us: u64) {
        self.add_cpu(cpu_us);
        self.at_safepoint(p, now_us);
    }

    /// At the end of a time slice or at a system call (a process that parks at every
    /// call never ends a slice): what the process is now (pinned, in a group), and the
    /// pages it wrote, if due.
    pub(super) fn at_safepoint(&self, p: &mut Process, now_us: u64) {
        self.info.store(info_of(p), Ordering::Relaxed);
        self.group.store(p.sys.group, Ordering::Relaxed);
        self.sample_dirty(p, now_us);
    }

    /// Counts the pages `p` wrote since the last count, if that was at least
    /// [`DIRTY_SAMPLE_US`] ago.
    fn sample_dirty(&self, p: &mut Process, now_us: u64) {
        let last = self.dirty_sampled_us.load(Ordering::Relaxed);
        let dt = now_us.saturating_sub(last);
        if dt < DIRTY_SAMPLE_US {
            return;
        }
        self.dirty_sampled_us.store(now_us, Ordering::Relaxed);
        let pages = u64::from(p.heap.sample_dirty());
        self.dirtied.fetch_add(pages, Ordering::Relaxed);
        let rate = pages * 1_000_000 / dt;
        let before = self.dirty_rate.load(Ordering::Relaxed);
        self.dirty_rate.store((before + rate) / 2, Ordering::Relaxed);
    }

    /// Its recent write rate, pages per second, as of `now_us`: a process not sampled
    /// for a while did not run, and wrote nothing meanwhile.
    fn recent_dirty_rate(&self, now_us: u64) -> u64 {
        let rate = self.dirty_rate.load(Ordering::Relaxed);
        let since = now_us.saturating_sub(self.dirty_sampled_us.load(Ordering::Relaxed));
        if since <= 2 * DIRTY_SAMPLE_US {
            rate
        } else {
            rate * 2 * DIRTY_SAMPLE_US / since
        }
    }
}

/// Who a process talks with.
#[derive(Default, Clone)]
struct Talk {
    /// Bytes received from each node (this one included) and sent to each other node.
    nodes: Vec<(u16, u64)>,
    /// Bytes received from each sender (pid, the node it sent from).
    partners: Vec<((Pid, u16), u64)>,
}

/// Adds `bytes` to `key`'s count; when the list is full, the quietest entry gives way
/// (an old count is a weak guess anyway).
fn count<K: PartialEq + Copy>(v: &mut Vec<(K, u64)>, key: K, bytes: u64) {
    if let Some(e) = v.iter_mut().find(|e| e.0 == key) {
        e.1 += bytes;
    } else if v.len() < MAX_TALK {
        v.push((key, bytes));
    } else if let Some(e) = v.iter_mut().min_by_key(|e| e.1) {
        *e = (key, bytes);
    }
}

fn info_of(p: &Process) -> u8 {
    let mut i = 0;
    if p.sys.pinned {
        i |= PINNED;
    }
    if !p.heap.all_present() {
        i |= LAZY;
    }
    if p.sys.shell {
        i |= SHELL;
    }
    i
}

/// A node's counters at one instant ([`crate::node::Node::load_sample`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Node µs when taken.
    pub at_us: u64,
    /// CPU time each worker thread spent running processes, µs since the node started.
    pub busy_us: Vec<u64>,
    /// Processes runnable or running now (the run queues' length, the running included).
    pub runnable: u64,
    /// Processes on the node.
    pub processes: u64,
    /// Reductions run since the node started.
    pub reductions: u64,
}

/// One process's counters at one instant ([`crate::node::Node::proc_samples`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcSample {
    pub pid: Pid,
    /// `running`, `waiting`, `io` or `frozen`.
    pub status: &'static str,
    /// Its reductions over its whole life (on every node it ran on).
    pub reductions: u64,
    /// CPU time it used on this node, µs.
    pub cpu_us: u64,
    /// Time it spent runnable but waiting for a worker on this node, µs.
    pub wait_us: u64,
    pub heap_pages: u64,
    pub page_bytes: u64,
    /// Pages it wrote on this node (from its dirty bits; a page written twice between
    /// two counts counts once).
    pub dirtied_pages: u64,
    /// Its recent write rate, pages per second (see [`ProcMeter`]'s `dirty_rate`).
    pub dirty_pages_s: u64,
    /// Messages and bytes queued for it.
    pub mailbox: u64,
    pub mailbox_bytes: u64,
    /// How long it has been on this node, µs.
    pub resident_us: u64,
    /// How many times it has moved.
    pub moves: u32,
    /// The node it came from (`None`: it was spawned here).
    pub came_from: Option<u16>,
    /// `pin()` or `spawn(..., {pin: true})`: the load policy leaves it where it is.
    pub pinned: bool,
    /// Some of its pages are still on the node it came from (a lazy migration).
    pub lazy: bool,
    /// A REPL's shell (it never moves).
    pub shell: bool,
    /// Its coprocess group (0: none).
    pub group: u64,
    /// Message bytes it sent to or received from each node (this one included).
    pub talk: Vec<(u16, u64)>,
    /// Message bytes it received from each sender: (pid, the node it sent from).
    pub partners: Vec<(Pid, u16, u64)>,
}

impl NodeInner {
    /// A message of `bytes` from node `from` came for `target`: counted for the process
    /// here that receives it (none: it is passed on).
    pub(super) fn note_received(&self, target: Target, node: u16, from: Pid, bytes: u64) {
        let pid = match target {
            Target::Inbox(p) => p,
            Target::Chan(c) => match self.holder(c) {
                Some(p) => p,
                None => return,
            },
        };
        if let Some(slot) = self.local_slot(pid) {
            slot.meter.received(node, from, bytes);
        }
    }

    pub(super) fn sample_node(&self) -> NodeSample {
        NodeSample {
            at_us: self.now_us(),
            busy_us: self.worker_busy.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            runnable: self.busy.load(Ordering::SeqCst) as u64,
            processes: self.live.load(Ordering::SeqCst) as u64,
            reductions: self.reductions.load(Ordering::Relaxed),
        }
    }

    pub(super) fn sample_proc(&self, pid: Pid, slot: &Slot) -> Option<ProcSample> {
        let now = self.now_us();
        let m = &slot.meter;
        let st = slot.st.lock();
        let status = st.status.name()?;
        let (reductions, heap_pages, page_bytes, info, group) = match &st.parked {
            Some(p) => (p.reductions, p.heap.page_count() as u64, (p.heap.page_words() * 8) as u64, info_of(p), p.sys.group),
            None => (
                slot.reductions.load(Ordering::Relaxed),
                slot.pages.load(Ordering::Relaxed),
                self.vm.config.heap.page_size_bytes as u64,
                m.info.load(Ordering::Relaxed),
                m.group.load(Ordering::Relaxed),
            ),
        };
        // (One look at the counts: the lock is not taken twice in one expression.)
        let (talk, partners) = {
            let t = m.talk.lock();
            let none = Talk::default();
            let t = t.as_deref().unwrap_or(&none);
            let mut nodes = t.nodes.clone();
            let here =
                m.sent.load(Ordering::Relaxed).saturating_sub(m.sent_away.load(Ordering::Relaxed)) + m.recv_here.load(Ordering::Relaxed);
            if here > 0 {
                match nodes.iter_mut().find(|e| e.0 == self.id) {
                    Some(e) => e.1 += here,
                    None => nodes.push((self.id, here)),
                }
            }
            (nodes, t.partners.iter().map(|&((p, n), b)| (p, n, b)).collect())
        };
        Some(ProcSample {
            pid,
            status,
            reductions,
            cpu_us: m.cpu_us.load(Ordering::Relaxed),
            wait_us: m.wait_us.load(Ordering::Relaxed),
            heap_pages,
            page_bytes,
            dirtied_pages: m.dirtied.load(Ordering::Relaxed),
            dirty_pages_s: m.recent_dirty_rate(now),
            mailbox: st.mailbox.count() as u64,
            mailbox_bytes: st.mailbox.bytes as u64,
            resident_us: now.saturating_sub(m.arrived_us.load(Ordering::Relaxed)),
            moves: st.moves,
            came_from: match m.from.load(Ordering::Relaxed) {
                0 => None,
                n => Some((n - 1) as u16),
            },
            pinned: info & PINNED != 0,
            lazy: info & LAZY != 0,
            shell: info & SHELL != 0,
            group,
            partners,
            talk,
        })
    }
}
