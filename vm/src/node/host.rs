//! What a node gets from its host, and the host a process runs against: where console
//! output goes ([`Console`]), file operations ([`Files`]), the pages of a process whose
//! heap is not all here ([`PageSource`]), the in-memory [`Mesh`] of nodes in one OS
//! process (and its [`Settle`] signal for senders waiting on a move), and [`ProcHost`],
//! the console and clocks a process sees while it runs on a worker.

use super::{NodeInner, Pid};
use crate::process::{FileMode, IoResult};
use crate::runtime::Host;
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

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
    /// Process `pid` (here) asks for line `k` of its console's input (see
    /// [`crate::console_in`]): `Some` answer now (`Some(None)`: the input ended), or `None`
    /// if it comes later, by [`super::Node::console_line`]. Asked again for the same `k`
    /// (after a move), it must give the same line. A host without console input ends it.
    fn request_line(&self, console: u64, pid: Pid, k: u64) -> Option<Option<String>> {
        let _ = (console, pid, k);
        Some(None)
    }
    /// A watched process whose console is `console` ended here (see
    /// [`super::Node::watch`]): a host whose consoles are on other nodes tells that node
    /// ([`super::Node::record_exit`]), where its starter waits for it.
    fn exited(&self, console: u64, exit: &super::ProcessExit) {
        let _ = (console, exit);
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

impl FileOp {
    /// The file's name (as the process gave it, without the leading `/`).
    pub fn name(&self) -> &str {
        match self {
            FileOp::Open { name, .. } | FileOp::Read { name, .. } | FileOp::Write { name, .. } => name,
        }
    }
}

/// Carries out file operations for the node; the host provides it (the VM knows nothing
/// of disks). Called on the node's I/O threads, never on a worker.
pub trait Files: Send + Sync {
    fn run(&self, op: &FileOp) -> IoResult;
    /// An operation by process `pid` whose home node is `home` (a mesh host resolves a
    /// plain path against the file root of the home node, wherever the process runs now).
    fn run_for(&self, pid: Pid, home: u16, op: &FileOp) -> IoResult {
        let _ = (pid, home);
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

/// Where a node gets the pages of processes whose heap is not all here (see
/// [`Node::set_page_source`]). Called on a worker thread: it must not block.
pub trait PageSource: Send + Sync {
    /// Asks for `count` pages of process `pid` from page `first` on (those that exist);
    /// they arrive by [`Node::supply_pages`].
    fn request(&self, pid: Pid, first: u32, count: u32);

    /// The fault of process `pid` on page `page` ended: the page came `wait_us` after
    /// the process touched it, and it runs again (what the process waited, the whole
    /// of it: its request, the page's way here, its install and its wake-up).
    fn waited(&self, _pid: Pid, _page: u32, _wait_us: u64) {}
}

/// The nodes of an in-memory mesh (several VM instances in one OS process), by id, and
/// the clock they share.
pub struct Mesh {
    pub(super) nodes: RwLock<Vec<Option<Weak<NodeInner>>>>,
    pub(super) start: Instant,
    /// Held for the whole of a relocation: processes relocate one at a time.
    pub(super) relocate_lock: Mutex<()>,
    pub(super) settle: Settle,
}

/// Wakes senders waiting for a target in the middle of a move ([`NodeInner::look`]):
/// `gen` changes whenever a holder, a slot's status or a route may have changed. Its
/// lock is a leaf: taken under a slot or shard lock, never the other way round.
#[derive(Default)]
pub(super) struct Settle {
    pub(super) gen: AtomicU64,
    pub(super) waiters: AtomicUsize,
    pub(super) lock: Mutex<()>,
    pub(super) cv: Condvar,
}

impl Mesh {
    pub fn new() -> Arc<Mesh> {
        Arc::new(Mesh { nodes: RwLock::new(Vec::new()), start: Instant::now(), relocate_lock: Mutex::new(()), settle: Settle::default() })
    }

    /// The settle generation now: a later read that differs means a holder, a slot's
    /// status or a route may have changed in between.
    pub(super) fn generation(&self) -> u64 {
        self.settle.gen.load(Ordering::SeqCst)
    }

    /// Something a sender may be waiting for changed (see [`Settle`]).
    pub(super) fn changed(&self) {
        let s = &self.settle;
        s.gen.fetch_add(1, Ordering::SeqCst);
        if s.waiters.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock();
            s.cv.notify_all();
        }
    }

    pub(super) fn node(&self, id: u16) -> Option<Arc<NodeInner>> {
        self.nodes.read().get(usize::from(id))?.as_ref()?.upgrade()
    }

    pub(super) fn add(&self, id: u16, node: &Arc<NodeInner>) {
        let mut nodes = self.nodes.write();
        let i = usize::from(id);
        if nodes.len() <= i {
            nodes.resize(i + 1, None);
        }
        nodes[i] = Some(Arc::downgrade(node));
    }
}

/// The host a process runs against on a worker: the node's console and clock.
pub(super) struct ProcHost<'a> {
    pub(super) node: &'a NodeInner,
    pub(super) pid: Pid,
    pub(super) console: u64,
    /// The process's clock is the node's plus this (see `ProcSys::clock_offset_us`).
    pub(super) clock_offset_us: i64,
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
