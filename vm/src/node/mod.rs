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
//!
//! **Words.** A process *moves* when it leaves one node for another, whichever way; its
//! move count versions its routes, and [`MoveError`] says why a move (or a freeze)
//! failed. It *relocates* between two nodes of one in-memory [`Mesh`] (two VM instances
//! in one OS process: [`Node::relocate`], the relocate hook behind `--migrate-every`).
//! It is *transferred* to a node in another OS process by the export, import and commit
//! steps of `transfer.rs`; *live migration* (`migrate` in programs, `tern ctl migrate`)
//! is the protocol of the host (`tern-net`) that drives those steps between the nodes of
//! a mesh, with what `live.rs` gives it (pages read at safepoints, the dirty set,
//! throttling, lazy pages).
//!
//! **Files.** This file holds the node's public face ([`Node`], [`NodeConfig`], what it
//! reports) and the state its parts share ([`NodeInner`]). `host.rs` has what the host
//! provides (console, files, page source, the in-memory mesh); `slot.rs` the slots and
//! the process table; `sched.rs` the workers, run queues and freezing; `deliver.rs`
//! delivery in this OS process and the settle wait; `exits.rs` kills, links and
//! monitors; `timers.rs` parked waits, the timer thread and the I/O threads; `pages.rs`
//! page faults; `sys.rs` the system calls; `relocate.rs` relocation. For nodes in other
//! OS processes: `remote.rs` (the ops nodes send each other), `route.rs` (numbered
//! messages and travelling receive ends), `gaps.rs` (losses and given-up gaps),
//! `order.rs` (per-sender order, shared with the migration simulator), `transfer.rs`
//! (the steps of a transfer) and `live.rs` (live-migration support).

mod deliver;
mod exits;
pub mod forwarding;
mod gaps;
mod groups;
mod host;
mod live;
mod locate;
mod meter;
pub mod order;
mod pages;
mod relocate;
mod remote;
mod route;
mod sched;
mod shell;
pub mod slice;
mod slot;
mod sys;
mod timers;
mod transfer;

pub use deliver::DeliveryStats;
pub use forwarding::Forwarding;
pub use host::{Console, FileOp, Files, Mesh, NoFiles, PageSource};
pub use live::{pages_within, visit_pages};
pub use locate::ForwardingStats;
pub use meter::{NodeSample, ProcSample, DIRTY_SAMPLE_US};
pub use order::{Origin, MAX_HELD};
pub use relocate::{RelocateHook, RelocateStats, IMAGE_WHOLE_BELOW};
pub use remote::{Carried, Deliver, MigrateOpts, Op, Remote, MAX_FORWARDS, MAX_HOPS};
pub use shell::ShellEnd;
pub use slot::{Job, Source, Staged};
pub use sys::sys_natives;
pub use transfer::{Late, Remains};

use crate::interp::RuntimeError;
use crate::message::Message;
use crate::process::Process;
use crate::runtime::Vm;
use crate::snapshot::ImageError;
use crate::value::{make_name, name_text};
use crossbeam_deque::{Injector, Stealer, Worker};
use deliver::DeliveryCounters;
use parking_lot::{Condvar, Mutex};
use sched::thread;
use slot::{Entry, Shards, Slot, Status, Task};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

thread_local! {
    /// The node whose worker this thread is (its address), and its clock as last read.
    static LAST_READ: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
}

pub type Pid = u64;
pub type ChanId = u64;

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
    /// Queued messages a process may have before sends to it fail.
    pub mailbox_limit_messages: usize,
    /// The largest message (its flattened size).
    pub message_limit_bytes: usize,
    /// Processes this node runs at most: a spawn here (from here or from another
    /// node) past it fails, and so does a migration to here.
    pub max_processes: usize,
    /// Files a process may have open at once.
    pub max_files: usize,
    /// Bytes of messages this node holds for processes it is locating (a message to a
    /// process that moved, waiting for an answer to where it is); past it a message is
    /// lost and its sender told.
    pub held_limit_bytes: usize,
    /// Keep a record of every process exit (tests); otherwise only of watched pids.
    pub record_exits: bool,
    /// How long a send waits for a target in the middle of a move (a receive end or a
    /// process being handed over between slots) before it fails (see `remote.rs`,
    /// "Bounds"). Such a moment ends in bounded time; this is only the backstop.
    pub settle_timeout: Duration,
    /// How long a queue waits for a missing sequence number from another node before it
    /// gives it up and delivers what was held back behind it (see `remote.rs`, "Bounds").
    pub gap_timeout: Duration,
    /// This start of the node: its numbered messages carry it, so that a node that
    /// restarts (numbering afresh from 0) is a new origin to every queue (see
    /// `order.rs`, [`Origin`]). It must grow from one start to the next; the default is
    /// the time of the start in µs since the Unix epoch.
    pub incarnation: u64,
    /// The mesh's default forwarding mechanism (`forwarding.rs`): how a message to a
    /// process this node knows nothing about is sent when its birth node is down
    /// (`origin-site`: it fails, naming the birth node; any other: the process is
    /// located by asking every node).
    pub forwarding: Forwarding,
    /// Log every hop of a message that crosses nodes (`TERN_TRACE_ROUTES`).
    pub trace_routes: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "local".into(),
            id: 0,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            io_threads: 2,
            mailbox_limit_bytes: 64 << 20,
            mailbox_limit_messages: 1 << 20,
            message_limit_bytes: 16 << 20,
            max_processes: 4 << 20,
            max_files: 1024,
            held_limit_bytes: 256 << 20,
            record_exits: false,
            settle_timeout: Duration::from_secs(10),
            gap_timeout: Duration::from_secs(30),
            incarnation: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64),
            forwarding: Forwarding::LinkUpdate,
            trace_routes: std::env::var_os("TERN_TRACE_ROUTES").is_some_and(|v| !v.is_empty() && v != "0"),
        }
    }
}

/// See [`Node::table_sizes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Entries of processes here (running, waiting, frozen, being imported).
    pub processes: usize,
    /// Routes to processes elsewhere (`Moved`, `Away`).
    pub routes: usize,
    pub holders: usize,
    pub rx_places: usize,
    pub chan_meta: usize,
    pub arriving: usize,
    /// Numbering of this node's messages, per channel and per process.
    pub seqs: usize,
    pub pid_seqs: usize,
    /// Processes that left or ended, remembered to refuse stale news (bounded).
    pub forgotten: usize,
    /// Watched processes, running or ended (the ended ones bounded).
    pub watched: usize,
    pub locating: usize,
    pub pending_spawns: usize,
    pub spawn_batches: usize,
    pub remote_monitors: usize,
    pub shells: usize,
    /// Notices that a process or a channel ended, to be sent again (their link refused them).
    pub owed_notices: usize,
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
    /// The function it was started with (its outermost frame's; `<top level> of FILE`
    /// for a program's main process), when it is not on a worker at the moment (empty
    /// then: a running process's frames are its worker's to touch).
    pub function: String,
}

/// The name of the function process `p` was started with: its outermost frame's.
fn entry_function(p: &crate::process::Process) -> String {
    let Some(f) = p.frames.first() else { return String::new() };
    let lm = p.linked.get(f.module as usize);
    match lm.and_then(|m| m.module.functions.get(f.func as usize)) {
        Some(func) if !func.name.is_empty() => func.name.clone(),
        Some(_) => format!("<top level> of {}", lm.map_or("?", |m| m.module.name.as_str())),
        None => String::new(),
    }
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
    /// It is a REPL's shell process, which stays on the node its REPL is connected to.
    Shell(Pid),
    Image(ImageError),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::NotHere(p) => write!(f, "process {} is not on this node", name_text(*p)),
            MoveError::FreezeTimeout(p) => write!(f, "process {} did not stop in time to be frozen", name_text(*p)),
            MoveError::Image(e) => write!(f, "the destination refused the process: {e}"),
            MoveError::Shell(p) => write!(f, "process {} is a REPL's shell: it stays on the node its REPL is connected to", name_text(*p)),
        }
    }
}

impl std::error::Error for MoveError {}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Inbox(Pid),
    Chan(ChanId),
}

/// Who sent a message: whom its loss is reported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SentBy {
    /// A process: a loss is reported to it (its next `send` fails).
    Process(Pid),
    /// A host, from outside any process ([`super::Node::send_to`]), or a node passing on
    /// messages whose sender it does not know: a loss is logged.
    Host,
    /// The node itself: a down or exit notice (monitors, links), never refused for a
    /// full mailbox (a watcher must not miss the end it watches for).
    Notice,
}

/// Receive ends travelling with a message, with their queues.
pub(crate) type Ends = Vec<(ChanId, VecDeque<Message>)>;

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
    /// When a looking worker last looked (node µs): a look older than
    /// [`sched::STALE_US`] means the OS took its core (see `sched::spin_for_work`).
    search_seen_us: AtomicU64,
    /// Until when idle workers do not look for work before they sleep (node µs): one
    /// found that the OS took its core while it looked (the machine is busy).
    no_spin_until_us: AtomicU64,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    live: AtomicUsize,
    /// Processes that are runnable, running or in a file operation.
    busy: AtomicUsize,
    reductions: AtomicU64,
    /// CPU time each worker spent running processes, µs (`meter.rs`).
    worker_busy: Box<[AtomicU64]>,
    /// Waiting processes whose wait has a timer. Timer entries are not removed when a
    /// wait ends early; this count is what tells whether any still matters.
    timed_waits: AtomicUsize,
    timers: Mutex<BinaryHeap<std::cmp::Reverse<(u64, Pid, u64)>>>,
    timer_wake: Condvar,
    io_tx: crossbeam_channel::Sender<Option<timers::IoJob>>,
    exits: Mutex<Vec<ProcessExit>>,
    watched: Mutex<HashMap<Pid, Option<ProcessExit>>>,
    /// The watched processes that have ended, oldest first (at most `MAX_FINISHED`;
    /// locked inside `watched`).
    watched_finished: Mutex<std::collections::VecDeque<Pid>>,
    exited: Condvar,
    /// REPL shell processes here (`shell.rs`), and a condition variable for their lines.
    shells: Mutex<HashMap<Pid, shell::ShellState>>,
    shell_cv: Condvar,
    /// For each native id: the system call it is, if any.
    sys_table: Vec<Option<sys::Sys>>,
    relocate_hook: Mutex<Option<RelocateHook>>,
    has_relocate_hook: AtomicBool,
    moves: AtomicU64,
    image_max: AtomicU64,
    /// Relocations in progress (a process frozen for one is not idle).
    relocating: AtomicUsize,
    /// Where absent pages come from, once set, and how many to fetch after the one touched.
    page_source: std::sync::OnceLock<Arc<dyn PageSource>>,
    prefetch: std::sync::atomic::AtomicU32,
    faults: AtomicU64,
    fault_wait_us: AtomicU64,
    /// How to reach nodes in other OS processes (see `remote.rs`), once set.
    remote: std::sync::OnceLock<Arc<dyn Remote>>,
    /// Receive ends not here: where each was last seen to go.
    rx_places: Shards<route::RxPlace>,
    /// Receive ends here that have been remote, or have remote partners.
    chan_meta: Shards<route::ChanMeta>,
    /// Receive ends in processes being imported here, with the messages waiting for them.
    arriving: Shards<Vec<slot::Arriving>>,
    /// Per channel: the number of the next message sent to it from here to another node.
    seqs: Shards<u64>,
    /// The same per process (for its inbox).
    pid_seqs: Shards<u64>,
    /// Spawns on other nodes waiting for their answer: request -> (parent, node, place
    /// in the parent's list for `spawn_on` with a list of nodes).
    pending_spawns: Mutex<HashMap<u64, PendingSpawn>>,
    /// `spawn_on` with a list of nodes, per parent: the pids so far and how many
    /// answers are still to come.
    spawn_batches: Mutex<HashMap<Pid, SpawnBatch>>,
    /// Monitors of processes on other nodes: (watcher here, target there). Which node a
    /// target is on is looked up when a node goes down (its route now, which link
    /// updates keep current), never remembered from when the monitor was set up.
    remote_monitors: Mutex<Vec<(Pid, Pid)>>,
    /// Move counts of processes this node no longer keeps an entry for: stale link
    /// updates are refused by them (see [`forwarding::Forgotten`]). Locked after a
    /// `procs` shard, never before.
    forgotten: Mutex<forwarding::Forgotten>,
    /// Nodes to tell that a process or a channel ended (`PidEnded`, `ChanEnded`) whose link refused the notice
    /// (full): told again at the next sweep (`exits.rs`, [`MAX_OWED_NOTICES`] at most).
    owed_notices: Mutex<VecDeque<(u16, Op)>>,
    /// What this node could not deliver (see [`DeliveryStats`]).
    counters: DeliveryCounters,
    /// A gap sweep is scheduled (see `remote.rs`, "Bounds").
    gap_sweep: AtomicBool,
    /// Processes being located by a broadcast, with what waits to be sent to them
    /// (`locate.rs`).
    locating: Mutex<HashMap<Pid, locate::Locating>>,
    /// Bytes of what waits in `locating` (changed under its lock): at most
    /// `held_limit_bytes`.
    locating_bytes: AtomicUsize,
    /// Counts of forwarding work (`forwarding_stats`).
    fwd_counters: locate::FwdCounters,
    /// The coprocess groups with members here (`groups.rs`). A leaf lock.
    groups: Mutex<groups::Groups>,
}

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
            search_seen_us: AtomicU64::new(0),
            no_spin_until_us: AtomicU64::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            reductions: AtomicU64::new(0),
            worker_busy: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            timed_waits: AtomicUsize::new(0),
            timers: Mutex::new(BinaryHeap::new()),
            timer_wake: Condvar::new(),
            io_tx,
            exits: Mutex::new(Vec::new()),
            watched: Mutex::new(HashMap::new()),
            watched_finished: Mutex::default(),
            exited: Condvar::new(),
            shells: Mutex::new(HashMap::new()),
            shell_cv: Condvar::new(),
            sys_table,
            relocate_hook: Mutex::new(None),
            has_relocate_hook: AtomicBool::new(false),
            moves: AtomicU64::new(0),
            image_max: AtomicU64::new(0),
            relocating: AtomicUsize::new(0),
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
            spawn_batches: Mutex::new(HashMap::new()),
            remote_monitors: Mutex::new(Vec::new()),
            forgotten: Mutex::new(forwarding::Forgotten::default()),
            owed_notices: Mutex::new(VecDeque::new()),
            counters: DeliveryCounters::default(),
            gap_sweep: AtomicBool::new(false),
            locating: Mutex::new(HashMap::new()),
            locating_bytes: AtomicUsize::new(0),
            fwd_counters: locate::FwdCounters::default(),
            groups: Mutex::new(groups::Groups::default()),
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

    /// How many entries each of this node's tables holds (for soak tests and reports:
    /// every one goes back down once the processes it was for have ended).
    pub fn table_sizes(&self) -> TableSizes {
        let i = &self.inner;
        let (mut live, mut routes) = (0, 0);
        for shard in &i.procs.shards {
            for e in shard.lock().values() {
                match e {
                    Entry::Moved(..) | Entry::Away(..) => routes += 1,
                    _ => live += 1,
                }
            }
        }
        TableSizes {
            processes: live,
            routes,
            holders: i.holders.len(),
            rx_places: i.rx_places.len(),
            chan_meta: i.chan_meta.len(),
            arriving: i.arriving.len(),
            seqs: i.seqs.len(),
            pid_seqs: i.pid_seqs.len(),
            forgotten: i.forgotten.lock().len(),
            watched: i.watched.lock().len(),
            locating: i.locating.lock().len(),
            pending_spawns: i.pending_spawns.lock().len(),
            spawn_batches: i.spawn_batches.lock().len(),
            remote_monitors: i.remote_monitors.lock().len(),
            shells: i.shells.lock().len(),
            owed_notices: i.owed_notices.lock().len(),
        }
    }

    /// What this node did for messages to processes that are not here (see `locate.rs`).
    pub fn forwarding_stats(&self) -> ForwardingStats {
        self.inner.forwarding_stats()
    }

    /// Whether this node keeps anything for process `pid` that is not here: a route
    /// (`Some(true)` if it forwards by it), or `Away` (`Some(false)`).
    pub fn route_kept(&self, pid: Pid) -> Option<bool> {
        match self.inner.procs.get(pid)? {
            Entry::Live(_) => None,
            Entry::Moved(..) => Some(true),
            Entry::Away(..) => Some(false),
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
            backed_off: get(&c.backed_off),
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
            i.chan_meta.insert(c, route::ChanMeta::default());
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
    /// This node's load counters now (the host turns two samples into rates).
    pub fn load_sample(&self) -> NodeSample {
        self.inner.sample_node()
    }

    /// Process `pid` (here) came from node `from` (what a load policy asks before it
    /// sends it back).
    pub fn arrived_from(&self, pid: Pid, from: u16) {
        if let Some(slot) = self.inner.local_slot(pid) {
            slot.meter.came_from(from);
        }
    }

    /// Process `pid`'s load counters now, if it is here.
    pub fn proc_sample(&self, pid: Pid) -> Option<ProcSample> {
        let slot = self.inner.local_slot(pid)?;
        self.inner.sample_proc(pid, &slot)
    }

    /// Every process's load counters now (shells and processes in the middle of a move
    /// included: the policy decides what it may take).
    pub fn proc_samples(&self) -> Vec<ProcSample> {
        let mut out: Vec<ProcSample> = self.live_slots().into_iter().filter_map(|(pid, slot)| self.inner.sample_proc(pid, &slot)).collect();
        out.sort_by_key(|p| p.pid);
        out
    }

    /// The slots of the processes that live here (taken out of the table's locks).
    fn live_slots(&self) -> Vec<(Pid, Arc<Slot>)> {
        let mut slots = Vec::new();
        for s in &self.inner.procs.shards {
            slots.extend(s.lock().iter().filter_map(|(&p, e)| match e {
                Entry::Live(slot) => Some((p, slot.clone())),
                Entry::Moved(..) | Entry::Away(..) => None,
            }));
        }
        slots
    }

    pub fn ps(&self) -> Vec<ProcInfo> {
        let mut out: Vec<ProcInfo> = self
            .live_slots()
            .into_iter()
            .filter_map(|(pid, slot)| {
                let st = slot.st.lock();
                let status = st.status.name()?;
                let (reductions, heap_pages) = match &st.parked {
                    Some(p) => (p.reductions, p.heap.page_count() as u64),
                    None => (slot.reductions.load(Ordering::Relaxed), slot.pages.load(Ordering::Relaxed)),
                };
                let function = st.parked.as_ref().map(|p| entry_function(p)).unwrap_or_default();
                Some(ProcInfo { pid, status, reductions, heap_pages, mailbox: st.mailbox.count(), function })
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
    /// A watched process ended on another node (see [`Console::exited`]): its exit is
    /// recorded here, for [`Node::wait_exit`].
    pub fn record_exit(&self, exit: ProcessExit) {
        let mut w = self.inner.watched.lock();
        let pid = exit.pid;
        w.insert(pid, Some(exit));
        self.inner.bound_finished(&mut w, pid);
        drop(w);
        self.inner.exited.notify_all();
    }

    /// Where process `pid` (here, not running) is: its Tern call stack, innermost first.
    pub fn backtrace_of(&self, pid: Pid) -> Option<Vec<crate::interp::TraceEntry>> {
        let slot = self.inner.local_slot(pid)?;
        let st = slot.st.lock();
        st.parked.as_ref().map(|p| crate::interp::backtrace(p))
    }

    pub fn exit_of(&self, pid: Pid) -> Option<ProcessExit> {
        self.inner.watched.lock().get(&pid).cloned().flatten()
    }

    /// Processes on this node that have not ended.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Bytes of messages this node holds for processes it is locating (at most
    /// `NodeConfig::held_limit_bytes`).
    pub fn held_for_locating(&self) -> usize {
        self.inner.locating_bytes.load(Ordering::SeqCst)
    }

    /// Why this node takes no more processes now (spawned or migrated here), if it is
    /// at its limit (`max_processes`).
    pub fn process_limit_reached(&self) -> Option<String> {
        self.inner.process_limit_reached()
    }

    /// Reductions run on this node so far.
    pub fn reductions(&self) -> u64 {
        self.inner.reductions.load(Ordering::Relaxed)
    }

    /// True when nothing here can make progress by itself: no process runnable, running
    /// or in a file operation, and no timer armed.
    pub fn quiescent(&self) -> bool {
        self.inner.busy.load(Ordering::SeqCst) == 0
            && self.inner.relocating.load(Ordering::SeqCst) == 0
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
            Entry::Moved(..) | Entry::Away(..) => None,
        }
    }

    /// Freezes a process here: at once if it is waiting, at its next safepoint if it is
    /// running, when its file operation completes if it is in one. Returns when it was
    /// last seen running: it ran its last instruction after that, and has been frozen
    /// since (within about 50 µs and the OS's wake-up); now, if it was waiting or
    /// frozen already.
    pub fn freeze(&self, pid: Pid, timeout: Duration) -> Result<Instant, MoveError> {
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

/// What carrying out a system call left to do.
/// A spawn on another node waiting for its answer: the parent, the node, and the place
/// in the parent's list for `spawn_on` with a list of nodes.
type PendingSpawn = (Pid, u16, Option<usize>);

/// A `spawn_on` with a list of nodes: the pids so far, and how many answers are to come.
type SpawnBatch = (Vec<Option<Pid>>, usize);

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
    fn now_us(&self) -> u64 {
        self.mesh.start.elapsed().as_micros() as u64
    }

    /// Node µs read from the clock by one of this node's workers, remembered on its
    /// thread for [`Self::recent_us`]. (A worker holds its node, so the address that
    /// keys the reading cannot be another node's while the thread lives.)
    fn worker_clock_us(&self) -> u64 {
        let now = self.now_us();
        LAST_READ.set((self as *const NodeInner as usize, now));
        now
    }

    /// Node µs as this node's worker last read its clock: the start of the time slice it
    /// is running (or the end of the one before). For bookkeeping that may be off by the
    /// current slice's length — when a woken process was queued, when a spawned one was
    /// born — and is on the local messaging path, where a clock read at each wake-up
    /// cost a third of a ping-pong's time. Any other thread reads the clock.
    fn recent_us(&self) -> u64 {
        match LAST_READ.get() {
            (node, us) if node == self as *const NodeInner as usize => us,
            _ => self.now_us(),
        }
    }

    /// What this node's numbered messages carry as their origin.
    pub(crate) fn origin(&self) -> Origin {
        Origin { node: self.id, inc: self.config.incarnation }
    }

    fn new_name(&self) -> u64 {
        make_name(self.id, self.serial.fetch_add(1, Ordering::Relaxed))
    }

    fn node(&self, id: u16) -> Option<Arc<NodeInner>> {
        self.mesh.node(id)
    }
}
