//! A node: many green-thread processes on a few OS threads, and everything they do
//! besides computing — messages, channels, timers, files, links — plus freezing a
//! process and moving it to another node.
//!
//! **Scheduling (M:N).** Each worker thread runs one process at a time for a reduction
//! budget (BEAM's preemption), then puts it back at the end of its own FIFO queue. New
//! and woken processes go to the waking worker's queue or to a shared injector; idle
//! workers steal (crossbeam-deque), and sleep on a condition variable when there is
//! nothing to steal. A sleeping worker is counted before it looks at the queues for the
//! last time, and whoever queues work checks that count after queueing, so no wake-up
//! is lost.
//!
//! **Slots.** A process that is not running is parked in its *slot*, with its mailbox:
//! the inbox, and one queue per channel whose receive end it holds. Senders reach a
//! slot by pid; everything about a waiting process changes under its slot's lock, so a
//! message and a process going to sleep cannot miss each other.
//!
//! **System calls.** Natives that need the node (spawn, send, recv, sleep, files, ...)
//! stop the interpreter at the call (see [`crate::interp::Outcome::Sys`]); the worker
//! carries them out with the whole process at hand. A call that must wait parks the
//! process at the call, so waking it re-issues the call: the same path serves a wake-up,
//! a timeout, a completed file operation and a process restored on another node.
//!
//! **Freezing.** A process in an interruptible wait (recv, select, sleep) is frozen at
//! once; a runnable or running one at its next safepoint; one waiting for a file
//! operation when the operation completes (a flag makes it block itself). A frozen
//! process keeps receiving messages into its mailbox.
//!
//! **Names.** Pids and channel ids embed the node they were born on. That node keeps
//! where each of its processes is now, and who holds each of its channels' receive
//! ends, so any node can find either in at most two steps.

mod migration;
pub mod order;
mod remote;
mod sys;
mod transfer;

pub use migration::{copy_pages_bytes, Job, PageBytes};
pub use remote::{Carried, Deliver, Op, Remote, SentBy, MAX_FORWARDS, MAX_HELD, MAX_HOPS};
pub use sys::{sys_natives, Source};
pub use transfer::Late;

use crate::interp::{run, Outcome, RuntimeError};
use crate::message::{Message, Obj, Val};
use crate::process::{FileMode, IoResult, Process};
use crate::runtime::{Host, Vm};
use crate::snapshot::{snapshot_full, ImageError, SlotImage};
use crate::value::{make_name, name_node, name_text};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Pid = u64;
pub type ChanId = u64;

/// Where processes' console output goes.
pub trait Console: Send + Sync {
    fn write(&self, pid: Pid, text: &str);
    /// A process ended with an uncaught error (`text` is the error and its trace).
    fn failed(&self, pid: Pid, text: &str) {
        let _ = (pid, text);
    }
    /// Output of a process whose console is `console` (see `ProcSys::console`); a host
    /// with one console ignores it.
    fn write_to(&self, console: u64, pid: Pid, text: &str) {
        let _ = console;
        self.write(pid, text);
    }
    /// A process whose console is `console` ended with an uncaught error.
    fn failed_to(&self, console: u64, pid: Pid, text: &str) {
        let _ = console;
        self.failed(pid, text);
    }
}

/// A file operation, by name relative to the node's file root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileOp {
    /// Checks the file can be opened in `mode` (creating or truncating it as the mode says).
    Open { name: String, mode: FileMode },
    /// Reads up to `max` bytes from `offset`; with `line`, stops after the first newline.
    Read { name: String, offset: u64, max: u64, line: bool },
    /// Writes `data` at `offset` (at the end, with `append`).
    Write { name: String, offset: u64, append: bool, data: Vec<u8> },
}

/// Carries out file operations for the node; the host provides it (the VM knows nothing
/// of disks). Called on the node's I/O threads, never on a worker.
pub trait Files: Send + Sync {
    fn run(&self, op: &FileOp) -> IoResult;
    /// An operation by process `pid` (a mesh host resolves a plain path against the file
    /// root of the node `pid` was spawned on, wherever it runs now).
    fn run_for(&self, pid: Pid, op: &FileOp) -> IoResult {
        let _ = pid;
        self.run(op)
    }
}

/// A node without files: every operation fails.
pub struct NoFiles;

impl Files for NoFiles {
    fn run(&self, _: &FileOp) -> IoResult {
        IoResult::Failed("this node has no files".into())
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Unique in the mesh; embedded in the pids and channel ids born here.
    pub id: u16,
    pub workers: usize,
    /// Threads for file operations.
    pub io_threads: usize,
    /// Queued-message bytes a process may have before sends to it fail.
    pub mailbox_limit_bytes: usize,
    /// The largest message (its flattened size).
    pub message_limit_bytes: usize,
    /// Keep a record of every process exit (tests); otherwise only of watched pids.
    pub record_exits: bool,
    /// How long a send waits for a target in the middle of a move (a receive end or a
    /// process being handed over between slots) before it fails (see `remote.rs`,
    /// "Bounds"). Such a moment ends in bounded time; this is only the backstop.
    pub settle_timeout: Duration,
    /// How long a queue waits for a missing sequence number from another node before it
    /// gives it up and delivers what was held back behind it (see `remote.rs`, "Bounds").
    pub gap_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "local".into(),
            id: 0,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            io_threads: 2,
            mailbox_limit_bytes: 64 << 20,
            message_limit_bytes: 16 << 20,
            record_exits: false,
            settle_timeout: Duration::from_secs(10),
            gap_timeout: Duration::from_secs(30),
        }
    }
}

/// See [`Node::channel_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub held_here: bool,
    pub partners: Vec<u16>,
    pub last_known: Option<u16>,
}

/// A process as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: Pid,
    /// `running`, `waiting`, `io` (a file operation or an answer from another node) or `frozen`.
    pub status: &'static str,
    pub reductions: u64,
    pub heap_pages: u64,
    /// Messages queued.
    pub mailbox: usize,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    /// Its function returned.
    Normal,
    /// It called `exit(reason)`.
    Exit(String),
    /// `kill`, or a linked process failed.
    Killed(String),
    /// An uncaught error.
    Failed(RuntimeError),
}

impl ExitReason {
    /// The reason as other processes see it in exit and down messages.
    pub fn text(&self) -> String {
        match self {
            ExitReason::Normal => "normal".into(),
            ExitReason::Exit(s) | ExitReason::Killed(s) => s.clone(),
            ExitReason::Failed(e) => e.message.clone(),
        }
    }
    pub fn is_normal(&self) -> bool {
        match self {
            ExitReason::Normal => true,
            ExitReason::Exit(s) => s == "normal",
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessExit {
    pub pid: Pid,
    pub reason: ExitReason,
    pub reductions: u64,
    pub heap_bytes: usize,
    pub gc: crate::heap::GcStats,
}

/// Why a process could not be frozen or moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveError {
    /// No such process on this node (it ended, or lives elsewhere).
    NotHere(Pid),
    /// It did not reach a safepoint in time (a long file operation, say).
    FreezeTimeout(Pid),
    Image(ImageError),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::NotHere(p) => write!(f, "process {} is not on this node", name_text(*p)),
            MoveError::FreezeTimeout(p) => write!(f, "process {} did not stop in time to be frozen", name_text(*p)),
            MoveError::Image(e) => write!(f, "the destination refused the process: {e}"),
        }
    }
}

impl std::error::Error for MoveError {}

/// What one move cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveStats {
    pub image_bytes: usize,
    /// From the freeze request until the process could run again at the destination.
    pub frozen_us: u64,
}

/// The nodes of an in-memory mesh (several VM instances in one OS process), by id, and
/// the clock they share.
pub struct Mesh {
    nodes: RwLock<Vec<Option<Weak<NodeInner>>>>,
    start: Instant,
    /// Held for the whole of a move: processes move one at a time.
    move_lock: Mutex<()>,
    settle: Settle,
}

/// Wakes senders waiting for a target in the middle of a move ([`NodeInner::look`]):
/// `gen` changes whenever a holder, a slot's status or a route may have changed. Its
/// lock is a leaf: taken under a slot or shard lock, never the other way round.
#[derive(Default)]
struct Settle {
    gen: AtomicU64,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Mesh {
    pub fn new() -> Arc<Mesh> {
        Arc::new(Mesh { nodes: RwLock::new(Vec::new()), start: Instant::now(), move_lock: Mutex::new(()), settle: Settle::default() })
    }

    /// Something a sender may be waiting for changed (see [`Settle`]).
    fn changed(&self) {
        let s = &self.settle;
        s.gen.fetch_add(1, Ordering::SeqCst);
        if s.waiters.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock();
            s.cv.notify_all();
        }
    }

    fn node(&self, id: u16) -> Option<Arc<NodeInner>> {
        self.nodes.read().get(usize::from(id))?.as_ref()?.upgrade()
    }

    fn add(&self, id: u16, node: &Arc<NodeInner>) {
        let mut nodes = self.nodes.write();
        let i = usize::from(id);
        if nodes.len() <= i {
            nodes.resize(i + 1, None);
        }
        nodes[i] = Some(Arc::downgrade(node));
    }
}

const FREEZE: u8 = 1;
const KILL: u8 = 2;
/// Pages arrived for a running process: install them at its next safepoint.
const PAGES: u8 = 4;
/// Jobs wait to run on the process at its next safepoint (see `migration.rs`).
const JOBS: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
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

/// The messages queued for a process.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    inbox: VecDeque<Message>,
    chans: Vec<(ChanId, VecDeque<Message>)>,
    bytes: usize,
}

impl Mailbox {
    fn chan(&mut self, c: ChanId) -> Option<&mut VecDeque<Message>> {
        self.chans.iter_mut().find(|(id, _)| *id == c).map(|(_, q)| q)
    }
    fn holds(&self, c: ChanId) -> bool {
        self.chans.iter().any(|(id, _)| *id == c)
    }
    fn queue(&mut self, s: Source) -> Option<&mut VecDeque<Message>> {
        match s {
            Source::Inbox => Some(&mut self.inbox),
            Source::Chan(c) => self.chan(c),
        }
    }
    fn count(&self) -> usize {
        self.inbox.len() + self.chans.iter().map(|(_, q)| q.len()).sum::<usize>()
    }
}

pub(crate) struct SlotState {
    status: Status,
    parked: Option<Box<Process>>,
    /// What wakes a waiting process (nothing but its timer, when empty).
    wait: Vec<Source>,
    wait_seq: u64,
    /// Whether the wait has an armed timer (counted in `NodeInner::timed_waits`).
    wait_timed: bool,
    /// Freeze requests not yet released (see `NodeInner::freeze`).
    freezers: u32,
    mailbox: Mailbox,
    links: Vec<Pid>,
    watchers: Vec<Pid>,
    trap_exits: bool,
    kill: Option<String>,
    /// The absent page the parked process faulted on, and when (node µs).
    fault: Option<(u32, u64)>,
    /// Pages that arrived while the process was running, to install at a safepoint.
    pending_pages: Vec<(u32, Vec<u64>)>,
    /// Set while an image of it is on its way to another node (see `transfer.rs`).
    export: Option<transfer::ExportMark>,
    /// Set while it is being imported here: how much of its mailbox came in the image
    /// (what arrived at the source after the image goes right after that).
    import: Option<transfer::ExportMark>,
    /// Work to do on the process at its next safepoint (flag `JOBS`).
    jobs: Vec<migration::Job>,
    /// Times the process has moved between nodes (the version of its pid's routes).
    moves: u32,
    /// The sequence state of numbered inbox messages (see `remote.rs`, "Order").
    order: remote::InboxOrder,
    /// Messages this process sent that were lost (see `remote.rs`, "Bounds"): how many,
    /// and what the first was. Its next send fails, saying so.
    lost: Option<(u64, String)>,
}

impl SlotState {
    /// What an image carries of this slot besides the process itself (`proc`, parked
    /// here); `now`: the node clock, for the time left on its wait.
    fn image(&self, proc: &Process, now: u64) -> SlotImage {
        let (inbox_expect, inbox_held) = self.order.seq.to_wire();
        SlotImage {
            inbox: self.mailbox.inbox.iter().cloned().collect(),
            chans: self.mailbox.chans.iter().map(|(c, q)| (*c, q.iter().cloned().collect())).collect(),
            links: self.links.clone(),
            watchers: self.watchers.clone(),
            trap_exits: self.trap_exits,
            kill: self.kill.clone(),
            timeout_left_us: proc.sys.deadline_us.map(|d| d.saturating_sub(now)),
            clock_us: Some(now.saturating_add_signed(proc.sys.clock_offset_us)),
            moves: self.moves,
            inbox_expect,
            inbox_held,
        }
    }
}

pub(crate) struct Slot {
    flags: AtomicU8,
    st: Mutex<SlotState>,
    /// Reductions and heap pages at the end of its last time slice (for `ps`).
    reductions: AtomicU64,
    pages: AtomicU64,
    /// Slows the process down while a migration's dirty pages outrun the network: after
    /// each time slice it pauses for (2^level - 1) times the slice (0: not throttled).
    throttle: AtomicU8,
}

impl Slot {
    fn new(status: Status) -> Arc<Slot> {
        Arc::new(Slot {
            reductions: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            throttle: AtomicU8::new(0),
            flags: AtomicU8::new(0),
            st: Mutex::new(SlotState {
                status,
                parked: None,
                wait: Vec::new(),
                wait_seq: 0,
                wait_timed: false,
                freezers: 0,
                mailbox: Mailbox::default(),
                links: Vec::new(),
                watchers: Vec::new(),
                trap_exits: false,
                kill: None,
                fault: None,
                pending_pages: Vec::new(),
                export: None,
                import: None,
                jobs: Vec::new(),
                moves: 0,
                order: remote::InboxOrder::default(),
                lost: None,
            }),
        })
    }
}

#[derive(Clone)]
enum Entry {
    Live(Arc<Slot>),
    /// Moved to a node, after a number of moves: replaced only by a newer route.
    Moved(u16, u32),
}

const SHARDS: usize = 64;

/// The timer entry of a gap sweep (no process has pid 0: serials start at 1).
const GAP_SWEEP: Pid = 0;

/// Rounds an idle worker looks for work before it sleeps.
const SPINS: u32 = 16;

/// Hashes pids and channel ids (already unique integers) cheaply.
#[derive(Default, Clone, Copy)]
struct NameHasher(u64);

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

type NameMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<NameHasher>>;

struct Shards<V> {
    shards: Vec<Mutex<NameMap<V>>>,
}

impl<V: Clone> Shards<V> {
    fn new() -> Self {
        Shards { shards: (0..SHARDS).map(|_| Mutex::new(NameMap::default())).collect() }
    }
    fn shard(&self, k: u64) -> &Mutex<NameMap<V>> {
        &self.shards[(k as usize) % SHARDS]
    }
    fn get(&self, k: u64) -> Option<V> {
        self.shard(k).lock().get(&k).cloned()
    }
    fn insert(&self, k: u64, v: V) {
        self.shard(k).lock().insert(k, v);
    }
    fn remove(&self, k: u64) -> Option<V> {
        self.shard(k).lock().remove(&k)
    }
    fn contains(&self, k: u64) -> bool {
        self.shard(k).lock().contains_key(&k)
    }
}

pub(crate) struct Task {
    pid: Pid,
    slot: Arc<Slot>,
    proc: Box<Process>,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Inbox(Pid),
    Chan(ChanId),
}

/// Why a message was not queued (see `remote.rs`, "Bounds").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliverError {
    /// The mailbox of this process (the target, or the holder of the target channel)
    /// is at its limit.
    Full(Pid),
    /// Too many messages wait for the target to arrive here.
    Waiting(Target),
    /// The target is on another node, which cannot be reached.
    Unreachable(String),
    /// The target stayed in the middle of a move for the settle timeout.
    Unsettled(Target),
    /// A numbered message whose number had been given up already.
    Late,
}

/// How many messages this node could not deliver, and why (see `remote.rs`, "Bounds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Sends that failed (or numbered messages lost here) because the target stayed in
    /// the middle of a move for the settle timeout.
    pub unsettled: u64,
    /// Messages from other nodes refused here for a full mailbox (or too many waiting
    /// for an import); a skip notice took each one's place.
    pub refused_full: u64,
    /// Numbered messages this node could not pass on (a link refused them, too many
    /// hops, a target that did not settle); a skip notice follows each where it can.
    pub lost_on_the_way: u64,
    /// Sequence numbers given up here (the gap timeout, or the held-back bound).
    pub given_up: u64,
    /// Numbered messages that came after their number was given up (dropped).
    pub late: u64,
    /// Losses reported to processes here (their next send fails).
    pub reported: u64,
}

#[derive(Default)]
struct DeliveryCounters {
    unsettled: AtomicU64,
    refused_full: AtomicU64,
    lost_on_the_way: AtomicU64,
    given_up: AtomicU64,
    late: AtomicU64,
    reported: AtomicU64,
}

/// A delivery loop's patience with a target in the middle of a move ([`NodeInner::look`]).
#[derive(Default)]
pub(crate) struct Patience {
    looks: u32,
    since: Option<Instant>,
    gen: u64,
}

/// A byte count as limits are given.
pub(crate) fn bytes_text(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

pub(crate) struct NodeInner {
    id: u16,
    name: String,
    vm: Arc<Vm>,
    mesh: Arc<Mesh>,
    config: NodeConfig,
    console: Arc<dyn Console>,
    files: Arc<dyn Files>,
    procs: Shards<Entry>,
    /// Holder of each live channel born here.
    holders: Shards<Pid>,
    serial: AtomicU64,
    budget: u32,
    injector: Injector<Task>,
    stealers: Vec<Stealer<Task>>,
    sleeping: AtomicUsize,
    /// Idle workers still looking for work before they sleep.
    searching: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    live: AtomicUsize,
    /// Processes that are runnable, running or in a file operation.
    busy: AtomicUsize,
    reductions: AtomicU64,
    /// Waiting processes whose wait has a timer. Timer entries are not removed when a
    /// wait ends early; this count is what tells whether any still matters.
    timed_waits: AtomicUsize,
    timers: Mutex<BinaryHeap<std::cmp::Reverse<(u64, Pid, u64)>>>,
    timer_wake: Condvar,
    io_tx: crossbeam_channel::Sender<Option<(Pid, Arc<Slot>, FileOp)>>,
    exits: Mutex<Vec<ProcessExit>>,
    watched: Mutex<HashMap<Pid, Option<ProcessExit>>>,
    exited: Condvar,
    /// For each native id: the system call it is, if any.
    sys_table: Vec<Option<sys::Sys>>,
    move_hook: Mutex<Option<MoveHook>>,
    has_move_hook: AtomicBool,
    moves: AtomicU64,
    image_max: AtomicU64,
    /// Moves in progress (a process frozen for a move is not idle).
    moving: AtomicUsize,
    /// Where absent pages come from, once set, and how many to fetch after the one touched.
    page_source: std::sync::OnceLock<Arc<dyn PageSource>>,
    prefetch: std::sync::atomic::AtomicU32,
    faults: AtomicU64,
    fault_wait_us: AtomicU64,
    /// How to reach nodes in other OS processes (see `remote.rs`), once set.
    remote: std::sync::OnceLock<Arc<dyn Remote>>,
    /// Receive ends not here: where each was last seen to go.
    rx_places: Shards<remote::RxPlace>,
    /// Receive ends here that have been remote, or have remote partners.
    chan_meta: Shards<remote::ChanMeta>,
    /// Receive ends in processes being imported here, with the messages waiting for them.
    arriving: Shards<Vec<remote::Arriving>>,
    /// Per channel: the number of the next message sent to it from here to another node.
    seqs: Shards<u64>,
    /// The same per process (for its inbox).
    pid_seqs: Shards<u64>,
    /// Spawns on other nodes waiting for their answer: request -> (parent, node).
    pending_spawns: Mutex<HashMap<u64, (Pid, u16)>>,
    /// Monitors of processes on other nodes: (watcher here, target there). Which node a
    /// target is on is looked up when a node goes down (its route now, which link
    /// updates keep current), never remembered from when the monitor was set up.
    remote_monitors: Mutex<Vec<(Pid, Pid)>>,
    /// What this node could not deliver (see [`DeliveryStats`]).
    counters: DeliveryCounters,
    /// A gap sweep is scheduled (see `remote.rs`, "Bounds").
    gap_sweep: AtomicBool,
    /// Nodes that have restarted since this one started: they number their messages
    /// afresh (see `order.rs`, `put_after_restart`).
    restarted: Mutex<std::collections::HashSet<u16>>,
}

/// Where a node gets the pages of processes whose heap is not all here (see
/// [`Node::set_page_source`]). Called on a worker thread: it must not block.
pub trait PageSource: Send + Sync {
    /// Asks for `count` pages of process `pid` from page `first` on (those that exist);
    /// they arrive by [`Node::supply_pages`].
    fn request(&self, pid: Pid, first: u32, count: u32);
}

/// Decides, at a process's safepoints (the end of a time slice, or parking in a wait),
/// whether to move it now and to which node: `(pid, reductions in the slice)`.
pub type MoveHook = Box<dyn FnMut(Pid, u64) -> Option<u16> + Send>;

/// A running node. Dropping it stops its threads; processes still running are dropped.
pub struct Node {
    inner: Arc<NodeInner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    /// Starts a node with its worker, timer and I/O threads, as member `config.id` of `mesh`.
    pub fn start(vm: Arc<Vm>, mesh: Arc<Mesh>, config: NodeConfig, console: Arc<dyn Console>, files: Arc<dyn Files>) -> Node {
        let workers = config.workers.max(1);
        let queues: Vec<Worker<Task>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let (io_tx, io_rx) = crossbeam_channel::unbounded();
        let sys_table = sys::table(&vm);
        let inner = Arc::new(NodeInner {
            id: config.id,
            name: config.name.clone(),
            budget: vm.config.budget,
            vm,
            mesh: mesh.clone(),
            config: config.clone(),
            console,
            files,
            procs: Shards::new(),
            holders: Shards::new(),
            serial: AtomicU64::new(1),
            injector: Injector::new(),
            stealers: queues.iter().map(Worker::stealer).collect(),
            sleeping: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            reductions: AtomicU64::new(0),
            timed_waits: AtomicUsize::new(0),
            timers: Mutex::new(BinaryHeap::new()),
            timer_wake: Condvar::new(),
            io_tx,
            exits: Mutex::new(Vec::new()),
            watched: Mutex::new(HashMap::new()),
            exited: Condvar::new(),
            sys_table,
            move_hook: Mutex::new(None),
            has_move_hook: AtomicBool::new(false),
            moves: AtomicU64::new(0),
            image_max: AtomicU64::new(0),
            moving: AtomicUsize::new(0),
            page_source: std::sync::OnceLock::new(),
            prefetch: std::sync::atomic::AtomicU32::new(1),
            faults: AtomicU64::new(0),
            fault_wait_us: AtomicU64::new(0),
            remote: std::sync::OnceLock::new(),
            rx_places: Shards::new(),
            chan_meta: Shards::new(),
            arriving: Shards::new(),
            seqs: Shards::new(),
            pid_seqs: Shards::new(),
            pending_spawns: Mutex::new(HashMap::new()),
            remote_monitors: Mutex::new(Vec::new()),
            counters: DeliveryCounters::default(),
            gap_sweep: AtomicBool::new(false),
            restarted: Mutex::new(std::collections::HashSet::new()),
        });
        mesh.add(config.id, &inner);
        let mut threads = Vec::new();
        for (i, q) in queues.into_iter().enumerate() {
            let n = inner.clone();
            threads.push(thread(format!("tern-{}-worker-{i}", config.id), move || n.worker_loop(&q, i)));
        }
        let n = inner.clone();
        threads.push(thread(format!("tern-{}-timers", config.id), move || n.timer_loop()));
        for i in 0..config.io_threads.max(1) {
            let n = inner.clone();
            let rx = io_rx.clone();
            threads.push(thread(format!("tern-{}-io-{i}", config.id), move || n.io_loop(&rx)));
        }
        Node { inner, threads: Mutex::new(threads) }
    }

    /// A lone node (id 0, its own mesh, no files) keeping a record of every exit: for
    /// tests and embedding.
    pub fn local(vm: Arc<Vm>, console: Arc<dyn Console>, workers: usize) -> Node {
        let config = NodeConfig { workers, record_exits: true, ..NodeConfig::default() };
        Node::start(vm, Mesh::new(), config, console, Arc::new(NoFiles))
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn vm(&self) -> &Arc<Vm> {
        &self.inner.vm
    }

    /// A fresh pid born on this node.
    pub fn new_pid(&self) -> Pid {
        self.inner.new_name()
    }

    /// Starts a process (built with a pid from [`Node::new_pid`]).
    pub fn spawn(&self, p: Process) {
        self.inner.spawn(p, Vec::new(), None);
    }

    /// Starts module `main`'s top level as a new process; returns its pid.
    pub fn spawn_main(&self, main: crate::bytecode::ModuleHash) -> Result<Pid, crate::process::LinkError> {
        let pid = self.new_pid();
        let p = Process::new(pid, main, &self.inner.vm)?;
        self.watch(pid);
        self.spawn(p);
        Ok(pid)
    }

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

    /// Connects the node to nodes in other OS processes (once, before it is used).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    /// Carries out an op node `from` sent.
    pub fn receive(&self, from: u16, op: Op) {
        self.inner.receive(from, op);
    }

    /// An op node `from` sent that the host cannot carry out (`why`: a module it needs
    /// could not be had, say). A message in it is lost as one that cannot be passed on
    /// is (see `remote.rs`, "Bounds"): its number is skipped where its target is, and
    /// its sender told. Returns false for any other op (the host logs it).
    pub fn undeliverable(&self, from: u16, op: Op, why: &str) -> bool {
        let _ = from;
        let Op::Deliver(d) = op else { return false };
        let i = &self.inner;
        i.counters.lost_on_the_way.fetch_add(1, Ordering::Relaxed);
        i.forward(d.target, d.origin, d.seq, d.hops.saturating_add(1), d.from, None, Vec::new());
        i.report_lost(d.origin, d.from, d.target, format!("node {} could not take it: {why}", i.name));
        true
    }

    /// Node `node` went down or restarted: monitors and links of processes there fire
    /// with reason `node_down`, and spawns waiting for it fail.
    pub fn node_down(&self, node: u16) {
        self.inner.node_down(node);
    }

    /// Node `node` restarted (a new incarnation, numbering its messages from 0 again):
    /// queues here take its first number below the one they expect as the start of the
    /// new numbering, after whatever the old incarnation still had on its way.
    pub fn forget_origin(&self, node: u16) {
        self.inner.forget_origin(node);
    }

    /// Starts module `main`'s top level as a new process whose console output goes to
    /// `console` (see `ProcSys::console`).
    pub fn spawn_main_on(&self, main: crate::bytecode::ModuleHash, console: u64, watch: bool) -> Result<Pid, crate::process::LinkError> {
        let pid = self.new_pid();
        let mut p = Process::new(pid, main, &self.inner.vm)?;
        p.sys.console = console;
        if watch {
            self.watch(pid);
        }
        self.spawn(p);
        Ok(pid)
    }

    /// [`Node::spawn_main_on`], but the process starts frozen, before its first
    /// instruction: it runs once unfrozen (or moved). For tests that move a program from
    /// its very start, however short it is.
    pub fn spawn_main_frozen_on(
        &self,
        main: crate::bytecode::ModuleHash,
        console: u64,
        watch: bool,
    ) -> Result<Pid, crate::process::LinkError> {
        let pid = self.new_pid();
        let mut p = Process::new(pid, main, &self.inner.vm)?;
        p.sys.console = console;
        if watch {
            self.watch(pid);
        }
        self.inner.spawn_frozen(p);
        Ok(pid)
    }

    /// Ends a process here or anywhere in the mesh (as `kill` does).
    pub fn kill(&self, pid: Pid, reason: &str) {
        self.inner.kill(pid, reason.to_string());
    }

    /// Sends a message to a process here or anywhere in the mesh, as from outside any
    /// process. `Ok(false)`: it has ended.
    pub fn send_to(&self, pid: Pid, msg: Message) -> Result<bool, String> {
        match self.inner.send_as(SentBy::Host, Target::Inbox(pid), msg, Vec::new(), None) {
            Ok(p) => Ok(p.is_some()),
            Err(e) => Err(self.inner.send_error(&e)),
        }
    }

    /// How many messages this node could not deliver, and why.
    pub fn delivery_stats(&self) -> DeliveryStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            unsettled: get(&c.unsettled),
            refused_full: get(&c.refused_full),
            lost_on_the_way: get(&c.lost_on_the_way),
            given_up: get(&c.given_up),
            late: get(&c.late),
            reported: get(&c.reported),
        }
    }

    /// For tests: `None` makes channel `c`'s receive end look as if it were in the middle
    /// of arriving here (its state here, no holder yet), as it is for a moment while a
    /// message or a process brings it; `Some(pid)` gives it back to `pid`, which must
    /// hold it.
    #[doc(hidden)]
    pub fn debug_hold_arrival(&self, c: ChanId, holder: Option<Pid>) {
        let i = &self.inner;
        if holder.is_none() && !i.chan_meta.contains(c) {
            i.chan_meta.insert(c, remote::ChanMeta::default());
        }
        i.set_holder(c, holder);
    }

    /// What this node knows of a channel (see `remote.rs`): whether a process here holds
    /// its receive end, the nodes holding send ends of it (kept while the receive end is
    /// here), and else where the receive end was last known to go.
    pub fn channel_info(&self, c: ChanId) -> ChannelInfo {
        let i = &self.inner;
        ChannelInfo {
            held_here: i.holder(c).is_some(),
            partners: i.chan_meta.get(c).map(|m| m.partners().to_vec()).unwrap_or_default(),
            last_known: i.rx_places.get(c).map(|p| p.node()),
        }
    }

    /// The processes here, for `ps`.
    pub fn ps(&self) -> Vec<ProcInfo> {
        let mut slots = Vec::new();
        for s in &self.inner.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                Entry::Live(slot) => Some((p, slot.clone())),
                Entry::Moved(..) => None,
            }));
        }
        let mut out: Vec<ProcInfo> = slots
            .into_iter()
            .filter_map(|(pid, slot)| {
                let st = slot.st.lock();
                let status = match st.status {
                    Status::Active => "running",
                    Status::Waiting => "waiting",
                    Status::Io => "io",
                    Status::Frozen => "frozen",
                    Status::Exited | Status::Moved => return None,
                };
                let (reductions, heap_pages) = match &st.parked {
                    Some(p) => (p.reductions, p.heap.page_count() as u64),
                    None => (slot.reductions.load(Ordering::Relaxed), slot.pages.load(Ordering::Relaxed)),
                };
                Some(ProcInfo { pid, status, reductions, heap_pages, mailbox: st.mailbox.count() })
            })
            .collect();
        out.sort_by_key(|p| p.pid);
        out
    }

    /// Keeps the exit record of `pid` (call before it can end) for [`Node::wait_exit`].
    /// Watching a watched process again keeps what is recorded.
    pub fn watch(&self, pid: Pid) {
        self.inner.watched.lock().entry(pid).or_insert(None);
    }

    /// Waits for a watched process to end. The watch moves with the process: ask the
    /// node it is on.
    pub fn wait_exit(&self, pid: Pid, timeout: Duration) -> Option<ProcessExit> {
        let deadline = Instant::now() + timeout;
        let mut w = self.inner.watched.lock();
        loop {
            if let Some(Some(e)) = w.get(&pid) {
                return Some(e.clone());
            }
            if self.inner.exited.wait_until(&mut w, deadline).timed_out() {
                return w.get(&pid).cloned().flatten();
            }
        }
    }

    /// The exit record of a watched process, if it has ended.
    pub fn exit_of(&self, pid: Pid) -> Option<ProcessExit> {
        self.inner.watched.lock().get(&pid).cloned().flatten()
    }

    /// Processes on this node that have not ended.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Reductions run on this node so far.
    pub fn reductions(&self) -> u64 {
        self.inner.reductions.load(Ordering::Relaxed)
    }

    /// True when nothing here can make progress by itself: no process runnable, running
    /// or in a file operation, and no timer armed.
    pub fn quiescent(&self) -> bool {
        self.inner.busy.load(Ordering::SeqCst) == 0
            && self.inner.moving.load(Ordering::SeqCst) == 0
            && self.inner.timed_waits.load(Ordering::SeqCst) == 0
    }

    /// Waits until every process here has ended, or `timeout` passes.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut w = self.inner.watched.lock();
        while self.live() > 0 {
            if self.inner.exited.wait_until(&mut w, deadline).timed_out() {
                return self.live() == 0;
            }
        }
        true
    }

    /// Every exit so far (with `record_exits`), in the order they happened.
    pub fn exits(&self) -> Vec<ProcessExit> {
        self.inner.exits.lock().clone()
    }

    /// The pids of the processes living here now, in order.
    pub fn pids(&self) -> Vec<Pid> {
        self.pids_where(|st| !matches!(st, Status::Exited | Status::Moved))
    }

    /// The pids of the processes here that are waiting (for a message, a timer or a file
    /// operation), in order.
    pub fn waiting_pids(&self) -> Vec<Pid> {
        self.pids_where(|st| matches!(st, Status::Waiting | Status::Io))
    }

    fn pids_where(&self, keep: impl Fn(Status) -> bool) -> Vec<Pid> {
        self.inner.pids_where(keep)
    }

    /// Messages queued for a process here, and their bytes.
    pub fn mailbox_size(&self, pid: Pid) -> Option<(usize, usize)> {
        match self.inner.procs.get(pid)? {
            Entry::Live(s) => {
                let st = s.st.lock();
                Some((st.mailbox.count(), st.mailbox.bytes))
            }
            Entry::Moved(..) => None,
        }
    }

    /// Freezes a process here: at once if it is waiting, at its next safepoint if it is
    /// running, when its file operation completes if it is in one.
    pub fn freeze(&self, pid: Pid, timeout: Duration) -> Result<(), MoveError> {
        self.inner.freeze(pid, timeout)
    }

    /// Lets a frozen process run again (re-issuing the wait it was in, if any), however
    /// many freezes were asked for. (A freeze that times out withdraws only itself.)
    pub fn unfreeze(&self, pid: Pid) {
        self.inner.unfreeze(pid);
    }

    /// Whether a process here is frozen.
    pub fn is_frozen(&self, pid: Pid) -> bool {
        matches!(self.inner.procs.get(pid), Some(Entry::Live(s)) if s.st.lock().status == Status::Frozen)
    }

    /// Moves a process to node `dest` of the same mesh: freeze it, image it, reinstate
    /// the image at `dest` under a temporary id, give it its pid, let it run there and
    /// delete the copy here. Messages sent to it meanwhile are kept, in order.
    pub fn migrate(&self, pid: Pid, dest: &Node, timeout: Duration) -> Result<MoveStats, MoveError> {
        self.inner.migrate(pid, &dest.inner, timeout)
    }

    /// Installs a hook that moves processes at their safepoints (see [`MoveHook`]).
    pub fn set_move_hook(&self, hook: MoveHook) {
        *self.inner.move_hook.lock() = Some(hook);
        self.inner.has_move_hook.store(true, Ordering::SeqCst);
    }

    /// Processes moved away from this node so far, and the largest image among them.
    pub fn moves_out(&self) -> (u64, usize) {
        (self.inner.moves.load(Ordering::SeqCst), self.inner.image_max.load(Ordering::SeqCst) as usize)
    }

    /// Stops the threads; processes still here are dropped.
    pub fn shutdown(self) {
        self.stop();
    }

    /// Stops the node's threads (for a host that holds the node where it cannot take it
    /// back, like a shared `OnceLock`); the node does nothing more. Idempotent. A node
    /// thread that calls this (or drops the last handle) is not waited for.
    pub fn stop(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.inner.sleep_lock.lock();
            self.inner.wake.notify_all();
        }
        {
            let _g = self.inner.timers.lock();
            self.inner.timer_wake.notify_all();
        }
        for _ in 0..self.inner.config.io_threads.max(1) {
            let _ = self.inner.io_tx.send(None);
        }
        let me = std::thread::current().id();
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn thread(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(f).expect("the OS refused to start a thread")
}

/// The host a process runs against on a worker: the node's console and clock.
struct ProcHost<'a> {
    node: &'a NodeInner,
    pid: Pid,
    console: u64,
    /// The process's clock is the node's plus this (see `ProcSys::clock_offset_us`).
    clock_offset_us: i64,
}

impl Host for ProcHost<'_> {
    fn console_write(&mut self, text: &str) {
        self.node.console.write_to(self.console, self.pid, text);
    }
    fn mono_us(&self) -> u64 {
        self.node.now_us().saturating_add_signed(self.clock_offset_us)
    }
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// What carrying out a system call left to do.
pub(crate) enum SysOut {
    /// Done (or an error was raised into the process): go on running it.
    Continue(Box<Process>),
    /// The process is parked in its slot.
    Parked,
    /// The process ends.
    Exit(Box<Process>, ExitReason),
    /// The call touched an absent heap page: it runs again once the page is here.
    Fault(Box<Process>, u32),
}

impl NodeInner {
    fn pids_where(&self, keep: impl Fn(Status) -> bool) -> Vec<Pid> {
        // Shard locks are never held while a slot is locked (a move locks a slot, then
        // a shard), so collect first and look at the slots after.
        let mut slots = Vec::new();
        for s in &self.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                Entry::Live(slot) => Some((p, slot.clone())),
                Entry::Moved(..) => None,
            }));
        }
        let mut v: Vec<Pid> = slots.into_iter().filter(|(_, slot)| keep(slot.st.lock().status)).map(|(p, _)| p).collect();
        v.sort_unstable();
        v
    }

    fn now_us(&self) -> u64 {
        self.mesh.start.elapsed().as_micros() as u64
    }

    fn new_name(&self) -> u64 {
        make_name(self.id, self.serial.fetch_add(1, Ordering::Relaxed))
    }

    fn node(&self, id: u16) -> Option<Arc<NodeInner>> {
        self.mesh.node(id)
    }

    /// Registers and queues a new process; `chans` are receive ends it starts holding.
    fn spawn(&self, p: Process, chans: Vec<(ChanId, VecDeque<Message>)>, local: Option<&Worker<Task>>) {
        let pid = p.pid;
        let slot = Slot::new(Status::Active);
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
    fn spawn_frozen(&self, p: Process) {
        let pid = p.pid;
        let slot = Slot::new(Status::Frozen);
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
    fn push(&self, t: Task, local: Option<&Worker<Task>>) {
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
    fn should_wake(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst) > 0 && self.searching.load(Ordering::SeqCst) == 0
    }

    /// The node holding a process now, and its slot.
    fn find(&self, pid: Pid) -> Option<(Arc<NodeInner>, Arc<Slot>)> {
        let mut node = self.node(self.id)?;
        for _ in 0..8 {
            let next = match node.procs.get(pid) {
                Some(Entry::Live(s)) => return Some((node, s)),
                Some(Entry::Moved(n, _)) => n,
                None if node.id == name_node(pid) => return None,
                None => name_node(pid),
            };
            node = self.node(next)?;
        }
        None
    }

    /// The process holding a channel's receive end, if it is in this OS process. The
    /// channel's birth node keeps it when that node is here; else the node holding it.
    fn holder(&self, c: ChanId) -> Option<Pid> {
        match self.node(name_node(c)) {
            Some(n) => n.holders.get(c),
            None => self.holders.get(c),
        }
    }

    fn set_holder(&self, c: ChanId, pid: Option<Pid>) {
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

    /// Counts one more look at a target that may be in the middle of a move; between
    /// looks, waits until something changes (see [`Settle`]), a few quick looks first.
    /// False once it has been unsettled for [`NodeConfig::settle_timeout`].
    pub(crate) fn look(&self, p: &mut Patience) -> bool {
        p.looks += 1;
        if p.looks == 1 {
            return true;
        }
        if p.looks <= 8 {
            std::thread::yield_now();
            return true;
        }
        let now = Instant::now();
        let since = *p.since.get_or_insert(now);
        if now.duration_since(since) >= self.config.settle_timeout {
            self.counters.unsettled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let s = &self.mesh.settle;
        s.waiters.fetch_add(1, Ordering::SeqCst);
        {
            let mut g = s.lock.lock();
            if s.gen.load(Ordering::SeqCst) == p.gen {
                // A change not signalled costs at most this long.
                let _ = s.cv.wait_for(&mut g, Duration::from_millis(2));
            }
        }
        s.waiters.fetch_sub(1, Ordering::SeqCst);
        p.gen = s.gen.load(Ordering::SeqCst);
        true
    }

    /// What a sender is told when its message could not be queued.
    pub(crate) fn send_error(&self, e: &DeliverError) -> String {
        match e {
            DeliverError::Full(p) => format!(
                "the mailbox of <pid {}> is full (its limit is {} of queued messages)",
                name_text(*p),
                bytes_text(self.config.mailbox_limit_bytes)
            ),
            DeliverError::Waiting(t) => format!("too many messages are waiting for {} to arrive here", remote::what(*t)),
            DeliverError::Unreachable(why) => why.clone(),
            DeliverError::Unsettled(t) => format!(
                "not sent: {} is in the middle of a move that did not settle within {} s",
                remote::what(*t),
                self.config.settle_timeout.as_secs_f64()
            ),
            DeliverError::Late => "not sent: its number was given up already".into(),
        }
    }

    /// Queues a notice from the node itself (a down or exit message: never refused for
    /// a full mailbox) at its target, as [`NodeInner::send_as`] does.
    pub(crate) fn deliver(
        &self,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        self.send_as(SentBy::Notice, target, msg, carried, local)
    }

    /// Queues a message from `from` (with the receive ends it carries, and their
    /// queues) at its target, wherever that is now. `Ok(None)`: the target is gone and
    /// the message dropped (as sends to ended processes are). An error: it was not sent
    /// (see `remote.rs`, "Bounds").
    pub(crate) fn send_as(
        &self,
        from: SentBy,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        // Once this node has sent to the channel (or the process) while its receive end
        // (or it) was elsewhere, every message from here to it is numbered: one still on
        // its way cannot be overtaken by a later one, wherever it is (`remote.rs`, "Order").
        if self.remote().is_some() {
            match target {
                Target::Chan(c) if self.seqs.contains(c) => {
                    return self.route_numbered(c, self.id, None, 0, from, Some(msg), carried, local);
                }
                Target::Inbox(p) if self.pid_seqs.contains(p) => {
                    return self.route_inbox(p, self.id, None, 0, from, Some(msg), carried, local);
                }
                _ => {}
            }
        }
        self.deliver_now(from, target, msg, carried, local)
    }

    /// Queues a message at its target now (see [`NodeInner::send_as`]).
    pub(crate) fn deliver_now(
        &self,
        from: SentBy,
        target: Target,
        msg: Message,
        carried: Vec<(ChanId, VecDeque<Message>)>,
        local: Option<&Worker<Task>>,
    ) -> Result<Option<Pid>, DeliverError> {
        let mut patience = Patience::default();
        loop {
            // A receive end or a process in the middle of a move: look again when it has
            // settled.
            if !self.look(&mut patience) {
                self.unsent(from, carried);
                return Err(DeliverError::Unsettled(target));
            }
            let pid = match target {
                Target::Inbox(p) => {
                    if let Some(n) = self.remote_node_of(p) {
                        return self
                            .send_remote(n, target, from, Some(msg), carried, None)
                            .map(|()| Some(p))
                            .map_err(DeliverError::Unreachable);
                    }
                    p
                }
                Target::Chan(c) => match self.holder(c) {
                    Some(p) => p,
                    None if self.chan_meta.contains(c) => continue, // arriving from another node
                    None => {
                        if let Some(n) = self.remote_rx_node(c) {
                            return self
                                .send_remote(n, target, from, Some(msg), carried, None)
                                .map(|()| None)
                                .map_err(DeliverError::Unreachable);
                        }
                        for (c, _) in &carried {
                            self.set_holder(*c, None);
                            self.chan_meta.remove(*c);
                        }
                        return Ok(None);
                    }
                },
            };
            let Some((node, slot)) = self.find(pid) else {
                if matches!(target, Target::Chan(_)) && self.holder_is(target, pid) {
                    continue;
                }
                for (c, _) in &carried {
                    self.set_holder(*c, None);
                    self.chan_meta.remove(*c);
                }
                return Ok(None);
            };
            let mut st = slot.st.lock();
            match st.status {
                Status::Moved => continue,
                Status::Exited => {
                    drop(st);
                    for (c, _) in &carried {
                        self.set_holder(*c, None);
                        self.chan_meta.remove(*c);
                    }
                    return Ok(None);
                }
                _ => {}
            }
            let bytes = msg.approx_bytes();
            let src = match target {
                Target::Inbox(_) => Source::Inbox,
                Target::Chan(c) => Source::Chan(c),
            };
            if carried.is_empty() && from != SentBy::Notice && st.mailbox.bytes + bytes > self.config.mailbox_limit_bytes {
                return Err(DeliverError::Full(pid));
            }
            let Some(q) = st.mailbox.queue(src) else { continue };
            q.push_back(msg);
            st.mailbox.bytes += bytes;
            for (c, q) in carried {
                st.mailbox.bytes += q.iter().map(Message::approx_bytes).sum::<usize>();
                st.mailbox.chans.push((c, q));
                self.set_holder(c, Some(pid));
                self.rx_places.remove(c);
            }
            if st.status == Status::Waiting && st.wait.contains(&src) {
                let local = if node.id == self.id { local } else { None };
                node.wake_locked(pid, &slot, &mut st, local);
            }
            return Ok(Some(pid));
        }
    }

    fn holder_is(&self, target: Target, pid: Pid) -> bool {
        match target {
            Target::Chan(c) => self.holder(c) != Some(pid),
            Target::Inbox(_) => false,
        }
    }

    /// Makes a waiting process runnable (its slot locked by the caller).
    fn wake_locked(&self, pid: Pid, slot: &Arc<Slot>, st: &mut SlotState, local: Option<&Worker<Task>>) {
        self.end_wait(st);
        if let Some(proc) = st.parked.take() {
            st.status = Status::Active;
            st.wait.clear();
            self.busy.fetch_add(1, Ordering::SeqCst);
            self.push(Task { pid, slot: slot.clone(), proc }, local);
        }
    }

    /// The process stops waiting (woken, or frozen): its timer, if any, no longer counts.
    fn end_wait(&self, st: &mut SlotState) {
        if std::mem::take(&mut st.wait_timed) {
            self.timed_waits.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Ends a process with `reason` from outside (`kill`, a failed link). A waiting
    /// process is woken to end; a running one ends at its next safepoint; a frozen one
    /// when it is unfrozen, wherever that is.
    fn kill(&self, pid: Pid, reason: String) {
        if let Some(n) = self.remote_node_of(pid) {
            let _ = self.remote_send(n, Op::Kill { pid, reason });
            return;
        }
        self.with_live(pid, |node, slot, st| {
            if st.kill.is_none() {
                st.kill = Some(reason);
            }
            slot.flags.fetch_or(KILL, Ordering::SeqCst);
            if st.status == Status::Waiting {
                node.wake_locked(pid, slot, st, None);
            }
        });
    }

    /// Runs `f` on the slot of a process that has not ended, wherever it is now, with
    /// the slot locked (looking again if it moves meanwhile); `None` if it has ended.
    pub(crate) fn with_live<R>(&self, pid: Pid, f: impl FnOnce(&Arc<NodeInner>, &Arc<Slot>, &mut SlotState) -> R) -> Option<R> {
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

    /// Tells `to` that linked process `from` ended.
    fn exit_signal(&self, to: Pid, from: Pid, reason: &ExitReason) {
        if let Some(n) = self.remote_node_of(to) {
            let op = Op::Exit { to, from, reason: reason.text(), normal: reason.is_normal() };
            let _ = self.remote_send(n, op);
            return;
        }
        let trap = self.with_live(to, |_, _, st| {
            st.links.retain(|&p| p != from);
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

    /// Ends a process: its mailbox and channels go, watchers and links are told.
    fn finish(&self, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, reason: ExitReason) {
        let (mailbox, links, watchers) = {
            let mut st = slot.st.lock();
            st.status = Status::Exited;
            st.parked = None;
            (std::mem::take(&mut st.mailbox), std::mem::take(&mut st.links), std::mem::take(&mut st.watchers))
        };
        self.procs.remove(pid);
        if name_node(pid) != self.id {
            if let Some(b) = self.node(name_node(pid)) {
                b.procs.remove(pid);
            }
        }
        for (c, _) in &mailbox.chans {
            self.set_holder(*c, None);
            self.chan_meta.remove(*c);
        }
        if let ExitReason::Failed(e) = &reason {
            self.console.failed_to(proc.sys.console, pid, &e.to_string());
        }
        let exit = ProcessExit { pid, reason, reductions: proc.reductions, heap_bytes: proc.heap.size_bytes(), gc: proc.heap.stats };
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
        let mut w = self.watched.lock();
        if let Some(e) = w.get_mut(&pid) {
            *e = Some(exit.clone());
        }
        if self.config.record_exits {
            self.exits.lock().push(exit);
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.exited.notify_all();
    }

    fn find_work(&self, local: &Worker<Task>, me: usize) -> Option<Task> {
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

    fn any_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn worker_loop(&self, local: &Worker<Task>, me: usize) {
        while !self.shutdown.load(Ordering::SeqCst) {
            let Some(task) = self.find_work(local, me).or_else(|| self.spin_for_work(local, me)) else {
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
            self.run_task(task, local);
        }
    }

    /// Looks for work a little longer before sleeping (a wake-up costs far more than a
    /// short spin, and processes that message each other make work appear often).
    /// Counted as searching meanwhile, so that whoever queues work need not wake anyone.
    fn spin_for_work(&self, local: &Worker<Task>, me: usize) -> Option<Task> {
        self.searching.fetch_add(1, Ordering::SeqCst);
        let mut found = None;
        for i in 0..SPINS {
            if i < 8 {
                for _ in 0..(1u32 << i) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if let Some(t) = self.find_work(local, me) {
                found = Some(t);
                break;
            }
        }
        self.searching.fetch_sub(1, Ordering::SeqCst);
        found
    }

    /// Parks a process that was asked to freeze or end. Returns it if neither.
    fn check_flags(&self, mut t: Task) -> Option<Task> {
        if t.slot.flags.load(Ordering::SeqCst) == 0 {
            return Some(t);
        }
        let mut st = t.slot.st.lock();
        if t.slot.flags.load(Ordering::SeqCst) & PAGES != 0 {
            t.slot.flags.fetch_and(!PAGES, Ordering::SeqCst);
            install_pages(&mut t.proc, std::mem::take(&mut st.pending_pages));
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

    fn run_task(&self, t: Task, local: &Worker<Task>) {
        let Some(Task { pid, slot, mut proc }) = self.check_flags(t) else { return };
        let start = proc.reductions;
        let budget = u64::from(self.budget);
        let started_us = self.now_us();
        let out = loop {
            let used = proc.reductions - start;
            if used >= budget {
                break None;
            }
            let mut host = ProcHost { node: self, pid, console: proc.sys.console, clock_offset_us: proc.sys.clock_offset_us };
            let fault = match run(&mut proc, &self.vm, &mut host, (budget - used) as u32) {
                Outcome::Yielded => break None,
                Outcome::Finished(_) => break Some(ExitReason::Normal),
                Outcome::Failed(e) => break Some(ExitReason::Failed(e)),
                Outcome::Blocked(crate::interp::BlockReason::PageFault(page)) => page,
                Outcome::Sys => match sys::call(self, pid, &slot, proc, local) {
                    SysOut::Continue(p) => {
                        proc = p;
                        continue;
                    }
                    SysOut::Parked => {
                        self.reductions.fetch_add(budget.min(used + 1), Ordering::Relaxed);
                        self.maybe_move(pid, used + 1, None);
                        return;
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
                },
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
                    return;
                }
            }
        };
        self.reductions.fetch_add(proc.reductions - start, Ordering::Relaxed);
        slot.reductions.store(proc.reductions, Ordering::Relaxed);
        slot.pages.store(proc.heap.page_count() as u64, Ordering::Relaxed);
        match out {
            None => {
                let used = proc.reductions - start;
                let level = slot.throttle.load(Ordering::Relaxed).min(8);
                if level > 0 {
                    // Throttled: pause for (2^level - 1) slices, as in a timed wait.
                    let now = self.now_us();
                    let pause = (now.saturating_sub(started_us) * ((1u64 << level) - 1)).clamp(20, 200_000);
                    let mut st = slot.st.lock();
                    if let Some((proc, reason)) = self.park(pid, &slot, &mut st, proc, Vec::new(), Some(now + pause)) {
                        drop(st);
                        self.finish(pid, &slot, proc, reason);
                        self.busy.fetch_sub(1, Ordering::SeqCst);
                    }
                    return;
                }
                let mut t = Some(Task { pid, slot, proc });
                if self.has_move_hook.load(Ordering::Relaxed) {
                    t = self.maybe_move(pid, used, t);
                }
                if let Some(t) = t.and_then(|t| self.check_flags(t)) {
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
            }
        }
    }

    /// Asks the move hook whether to move the process now; if so, freezes it (it is at a
    /// safepoint: `task` is it, runnable, or it is parked) and moves it.
    fn maybe_move(&self, pid: Pid, used: u64, task: Option<Task>) -> Option<Task> {
        if !self.has_move_hook.load(Ordering::Relaxed) {
            return task;
        }
        let dest = self.move_hook.lock().as_mut().and_then(|h| h(pid, used));
        let Some(dest) = dest.and_then(|d| self.node(d)) else { return task };
        // One move at a time. A worker waits only briefly for another move to finish,
        // since that move may be waiting for a process in this worker's queue.
        let Some(_one_at_a_time) = self.mesh.move_lock.try_lock_for(Duration::from_millis(2)) else { return task };
        match task {
            Some(t) => {
                let mut st = t.slot.st.lock();
                t.slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                st.status = Status::Frozen;
                st.parked = Some(t.proc);
                self.busy.fetch_sub(1, Ordering::SeqCst);
            }
            None => {
                // It has just parked. Freeze it only if it is still waiting: if something
                // woke it, it may be queued behind this very worker, and waiting here for
                // it to reach a safepoint would wait for ever.
                let slot = self.local_slot(pid)?;
                let mut st = slot.st.lock();
                if st.status != Status::Waiting {
                    return None;
                }
                slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                self.end_wait(&mut st);
                st.status = Status::Frozen;
            }
        }
        // A process that ended meanwhile is not moved; nothing else can fail here but a
        // refused image, after which it runs on here.
        let _ = self.migrate_locked(pid, &dest, Duration::from_secs(30));
        None
    }

    /// Parks a process at its blocking call, unless it was asked to freeze or end
    /// meanwhile. `wait`: what wakes it; `deadline`: when its timer fires.
    pub(crate) fn park(
        &self,
        pid: Pid,
        slot: &Arc<Slot>,
        st: &mut SlotState,
        proc: Box<Process>,
        wait: Vec<Source>,
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
        st.wait = wait;
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
    pub(crate) fn start_io(&self, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, op: FileOp) {
        let mut st = slot.st.lock();
        st.status = Status::Io;
        st.parked = Some(proc);
        drop(st);
        if self.io_tx.send(Some((pid, slot.clone(), op))).is_err() {
            // The node is shutting down; the process stays parked.
        }
    }

    fn io_loop(&self, rx: &crossbeam_channel::Receiver<Option<(Pid, Arc<Slot>, FileOp)>>) {
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let Ok(Some((pid, slot, op))) = rx.recv() else { return };
            let result = self.files.run_for(pid, &op);
            self.finish_io(pid, slot, result);
        }
    }

    /// A parked process's file operation (or remote request) is done: it runs again
    /// (or ends, or stays frozen, as its flags say).
    fn finish_io(&self, pid: Pid, slot: Arc<Slot>, result: IoResult) {
        {
            let mut st = slot.st.lock();
            if st.status != Status::Io {
                return;
            }
            let Some(mut proc) = st.parked.take() else { return };
            proc.sys.io_result = Some(result);
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

    fn timer_loop(&self) {
        let mut timers = self.timers.lock();
        while !self.shutdown.load(Ordering::SeqCst) {
            let now = self.now_us();
            match timers.peek() {
                Some(&std::cmp::Reverse((t, pid, seq))) if t <= now => {
                    timers.pop();
                    drop(timers);
                    if pid == GAP_SWEEP {
                        self.sweep_gaps();
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
    fn schedule_sweep(&self, at: u64) {
        let mut timers = self.timers.lock();
        let first = timers.peek().is_none_or(|std::cmp::Reverse((t, _, _))| at < *t);
        timers.push(std::cmp::Reverse((at, GAP_SWEEP, 0)));
        if first {
            self.timer_wake.notify_one();
        }
    }

    fn local_slot(&self, pid: Pid) -> Option<Arc<Slot>> {
        match self.procs.get(pid) {
            Some(Entry::Live(s)) => Some(s),
            _ => None,
        }
    }

    fn freeze(&self, pid: Pid, timeout: Duration) -> Result<(), MoveError> {
        let slot = self.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        {
            let mut st = slot.st.lock();
            match st.status {
                Status::Exited | Status::Moved => return Err(MoveError::NotHere(pid)),
                Status::Frozen => {
                    st.freezers += 1;
                    return Ok(());
                }
                Status::Waiting => {
                    // An interruptible wait: blocked at once. The wait is re-issued when
                    // the process runs again.
                    slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                    self.end_wait(&mut st);
                    st.status = Status::Frozen;
                    st.freezers += 1;
                    return Ok(());
                }
                Status::Active | Status::Io => {
                    slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
                    st.freezers += 1;
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut pause = 1;
        loop {
            match slot.st.lock().status {
                Status::Frozen => return Ok(()),
                Status::Exited | Status::Moved => return Err(MoveError::NotHere(pid)),
                _ => {}
            }
            if Instant::now() >= deadline {
                self.release(pid);
                return Err(MoveError::FreezeTimeout(pid));
            }
            std::thread::sleep(Duration::from_micros(pause));
            pause = (pause * 2).min(500);
        }
    }

    /// Withdraws one freeze request; the process runs again when none is left.
    fn release(&self, pid: Pid) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        st.freezers = st.freezers.saturating_sub(1);
        if st.freezers == 0 {
            self.unfreeze_locked(pid, &slot, &mut st);
        }
    }

    fn unfreeze(&self, pid: Pid) {
        let Some(slot) = self.local_slot(pid) else { return };
        let mut st = slot.st.lock();
        st.freezers = 0;
        self.unfreeze_locked(pid, &slot, &mut st);
    }

    fn unfreeze_locked(&self, pid: Pid, slot: &Arc<Slot>, st: &mut SlotState) {
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

    fn migrate(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<MoveStats, MoveError> {
        let _one_at_a_time = self.mesh.move_lock.lock();
        self.migrate_locked(pid, dest, timeout)
    }

    fn migrate_locked(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<MoveStats, MoveError> {
        if dest.id == self.id {
            return Ok(MoveStats::default());
        }
        self.moving.fetch_add(1, Ordering::SeqCst);
        let r = self.migrate_inner(pid, dest, timeout);
        self.moving.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn migrate_inner(&self, pid: Pid, dest: &Arc<NodeInner>, timeout: Duration) -> Result<MoveStats, MoveError> {
        let t0 = Instant::now();
        self.freeze(pid, timeout)?;
        let slot = self.local_slot(pid).ok_or(MoveError::NotHere(pid))?;
        // An empty process at the destination, under a temporary id.
        let temp = dest.new_name();
        let tslot = Slot::new(Status::Frozen);
        dest.procs.insert(temp, Entry::Live(tslot.clone()));
        let mut st = slot.st.lock();
        if st.status != Status::Frozen || st.parked.is_none() {
            drop(st);
            dest.procs.remove(temp);
            return Err(MoveError::NotHere(pid));
        }
        let proc = st.parked.as_ref().map(|p| p.as_ref()).ok_or(MoveError::NotHere(pid))?;
        let bytes = snapshot_full(proc, &st.image(proc, self.now_us()));
        if let Err(e) = dest.reinstate(temp, &tslot, &bytes, Staged::Pages(Vec::new()), &[]) {
            drop(st);
            dest.procs.remove(temp);
            self.release(pid);
            return Err(MoveError::Image(e));
        }
        // Losses not yet reported to it go with it.
        tslot.st.lock().lost = st.lost.take();
        // Give the copy its pid, point the birth node at it, and retire the original:
        // senders waiting on this slot's lock look the process up again.
        dest.procs.insert(pid, Entry::Live(tslot));
        dest.procs.remove(temp);
        dest.live.fetch_add(1, Ordering::SeqCst);
        let birth = name_node(pid);
        if birth != dest.id {
            if let Some(b) = self.node(birth) {
                b.procs.insert(pid, Entry::Moved(dest.id, st.moves.saturating_add(1)));
            }
        }
        st.status = Status::Moved;
        st.parked = None;
        st.mailbox = Mailbox::default();
        drop(st);
        self.mesh.changed();
        if birth != self.id {
            self.procs.remove(pid);
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        {
            let mut w = self.watched.lock();
            if w.remove(&pid).is_some() {
                dest.watched.lock().insert(pid, None);
            }
        }
        self.exited.notify_all();
        self.moves.fetch_add(1, Ordering::SeqCst);
        self.image_max.fetch_max(bytes.len() as u64, Ordering::SeqCst);
        dest.unfreeze(pid);
        Ok(MoveStats { image_bytes: bytes.len(), frozen_us: t0.elapsed().as_micros() as u64 })
    }

    /// Loads an image into the empty slot made for it.
    /// Reinstates an image (and, for a state-only image, its `pages`, with the `absent`
    /// ones left to fault in) into `slot`, frozen.
    fn reinstate(&self, _temp: Pid, slot: &Arc<Slot>, bytes: &[u8], pages: Staged, absent: &[u32]) -> Result<(), ImageError> {
        let (mut proc, img) = match pages {
            Staged::Pages(pages) => crate::snapshot::restore_state(bytes, &self.vm, pages, absent)?,
            Staged::Heap(heap) => crate::snapshot::restore_into(bytes, &self.vm, *heap, absent)?,
        };
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
        st.links = img.links;
        st.watchers = img.watchers;
        st.trap_exits = img.trap_exits;
        // Reinstated elsewhere: one more move.
        st.moves = img.moves.saturating_add(1);
        st.order.seq = remote::Order::from_wire(img.inbox_expect, img.inbox_held, now);
        if st.order.seq.oldest_gap().is_some() {
            self.gap_opened(now);
        }
        if img.kill.is_some() {
            st.kill = img.kill;
            slot.flags.fetch_or(KILL, Ordering::SeqCst);
        }
        slot.flags.fetch_or(FREEZE, Ordering::SeqCst);
        st.status = Status::Frozen;
        st.parked = Some(Box::new(proc));
        Ok(())
    }
}

/// The pages of an image being reinstated that came separately from it.
pub enum Staged {
    /// A few pages (index, words).
    Pages(Vec<(u32, Vec<u64>)>),
    /// A heap they were installed in as they arrived (see [`crate::snapshot::restore_into`]).
    Heap(Box<crate::heap::Heap>),
}

/// `{event: EVENT, pid: PID, reason: REASON}`, the message links and monitors send.
fn event_message(event: &str, pid: Pid, reason: &str) -> Message {
    Message {
        root: Val::Obj(0),
        objs: vec![
            Obj::Map(vec![(Val::Obj(1), Val::Obj(2)), (Val::Obj(3), Val::Pid(pid)), (Val::Obj(4), Val::Obj(5))]),
            Obj::Str("event".into()),
            Obj::Str(event.into()),
            Obj::Str("pid".into()),
            Obj::Str("reason".into()),
            Obj::Str(reason.into()),
        ],
    }
}

impl NodeInner {
    /// A process touched absent page `page`: parks it until the page comes (asking the
    /// page source for it), or gives it back if the page came meanwhile.
    fn page_fault(&self, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, page: u32) -> Option<Box<Process>> {
        let mut st = slot.st.lock();
        install_pages(&mut proc, std::mem::take(&mut st.pending_pages));
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

    fn supply_pages(&self, pid: Pid, pages: Vec<(u32, Vec<u64>)>) {
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
        self.fault_wait_us.fetch_add(self.now_us().saturating_sub(since), Ordering::Relaxed);
        let Some(proc) = st.parked.take() else { return };
        let flags = slot.flags.load(Ordering::SeqCst);
        if flags & FREEZE != 0 {
            // Delayed blocking: it can be frozen now that the page is here.
            st.status = Status::Frozen;
            st.parked = Some(proc);
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        st.status = Status::Active;
        drop(st);
        self.push(Task { pid, slot: slot.clone(), proc }, None);
    }

    fn pages_lost(&self, pid: Pid, why: &str) {
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
fn install_pages(proc: &mut Process, pages: Vec<(u32, Vec<u64>)>) {
    for (i, words) in pages {
        if !proc.heap.is_present(i) {
            let _ = proc.heap.supply_page(i, &words);
        }
    }
}
