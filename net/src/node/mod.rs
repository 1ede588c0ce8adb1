//! A mesh node: one VM node plus a QUIC endpoint, talking to every other node of the
//! config over one mutually authenticated connection per pair.
//!
//! ```text
//!  VM workers ──Remote::send(op)──▶ Session (per peer, sans-IO) ──▶ peer task ──QUIC uni stream──▶
//!  ◀── dispatcher thread ◀── frames ◀── Session::poll_event ◀── peer task ◀──QUIC uni stream──
//! ```
//!
//! Per peer, a [`Session`] (the sans-IO protocol in `session.rs`) makes delivery exactly
//! once and in order across reconnects, and tells up/down. One tokio task per peer owns
//! the connection: the node with the lower id dials, the other accepts; each side sends
//! its session packets on one unidirectional stream, length-prefixed and size-capped.
//! Everything a peer's session delivers goes, in order, to one dispatcher thread, which
//! fetches missing modules (by content hash, once) before handing an op to the VM.
//! Operators (`tern ctl`, `tern repl`) connect with their own certificate and ALPN; see
//! `ctl.rs`.

pub mod migration;

use crate::config::{MeshConfig, NodeConf};
use crate::mechanism::Mechanism;
use crate::session::{decode_packet, encode_packet, Event, Packet, Session, SessionConfig};
use crate::tls;
use crate::wire::{self, Answer, Frame, Load, PsRow, Query};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tern_vm::bytecode::{Module, ModuleHash};
use tern_vm::node::{Console, FileOp, Files, Node, NodeConfig, Op, Remote};
use tern_vm::process::IoResult;
use tern_vm::runtime::Vm;
use tern_vm::value::{name_node, name_text};
use tokio::sync::{mpsc, Notify};

/// Threads carrying out other nodes' file operations.
const FILE_THREADS: usize = 2;

/// How long a remote file operation or query may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a node's log lines and the output of processes without a console go.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Counters, for tests and `ps`.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub modules_sent: AtomicU64,
    pub module_bytes_sent: AtomicU64,
    pub modules_received: AtomicU64,
    pub module_requests: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub connections_refused: AtomicU64,
    pub ops_received: AtomicU64,
    pub connections_made: AtomicU64,
}

pub(crate) struct Peer {
    pub(crate) conf: NodeConf,
    session: Mutex<Session>,
    wake: Notify,
    up: AtomicBool,
    load: Mutex<Load>,
    /// Connections for the peer task: dialled by this node, or accepted from one that
    /// claims to be the peer.
    incoming: mpsc::UnboundedSender<(quinn::Connection, Made)>,
    has_conn: AtomicBool,
    /// Drop the connection now (it is made again; the session resends what was lost).
    kick: AtomicBool,
    /// The peer refused the last connection: it is connected to another process that
    /// claims to be this node (dial again only after a pause).
    refused: AtomicBool,
    /// Held while taking events from the session and acting on them, so they are acted
    /// on in order whichever task takes them.
    events: Mutex<()>,
    /// Frames from this peer given to the dispatcher and not yet carried out: while
    /// there are any, later ones must go there too (to stay in order).
    backlog: std::sync::atomic::AtomicUsize,
    /// The current connection (migrations open their own streams on it).
    pub(crate) conn: Mutex<Option<quinn::Connection>>,
}

type AnswerTx = crossbeam_channel::Sender<Result<Answer, String>>;

/// An operator console: lines for a connected `tern repl` or `tern ctl`, and how many
/// were queued for it and written to its stream (so an answer can wait for the output
/// before it).
#[derive(Clone)]
pub(crate) struct ConsoleTx {
    pub(crate) tx: mpsc::UnboundedSender<wire::CtlReply>,
    pub(crate) queued: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
}

impl ConsoleTx {
    pub(crate) fn new(tx: mpsc::UnboundedSender<wire::CtlReply>) -> ConsoleTx {
        ConsoleTx { tx, queued: Arc::default(), written: Arc::default() }
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: MeshConfig,
    pub(crate) me: NodeConf,
    pub(crate) node: OnceLock<Node>,
    pub(crate) peers: BTreeMap<u16, Arc<Peer>>,
    start: Instant,
    pub(crate) stats: MeshStats,
    pub(crate) log: LogSink,
    to_dispatch: crossbeam_channel::Sender<Inbound>,
    /// Questions asked of peers: id -> (node asked, where the answer goes).
    waiting: Mutex<HashMap<u64, (u16, AnswerTx)>>,
    next_id: AtomicU64,
    pub(crate) consoles: Mutex<HashMap<u64, ConsoleTx>>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) endpoint: OnceLock<quinn::Endpoint>,
    own_load: Mutex<(Instant, u64, Load)>,
    /// Live migrations to and from this node.
    pub(crate) mig: crate::migration::Migrations,
    /// The threads migrations may have at once.
    pub(crate) mig_slots: crate::migration::Slots,
    pub(crate) rt: OnceLock<tokio::runtime::Handle>,
}

impl Shared {
    pub(crate) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub(crate) fn node(&self) -> &Node {
        // Set before any task or thread that calls this starts.
        self.node.get().expect("node started")
    }

    pub(crate) fn peer_by_name(&self, name: &str) -> Option<&Arc<Peer>> {
        self.peers.values().find(|p| p.conf.name == name)
    }

    /// Sends a frame to a peer (exactly once, in order, when it is reachable).
    pub(crate) fn send_frame(&self, to: u16, frame: &Frame) -> Result<(), String> {
        let peer = self.peers.get(&to).ok_or_else(|| format!("there is no node {to}"))?;
        let bytes = wire::encode(frame);
        let r = peer.session.lock().send(bytes);
        match r {
            Ok(()) => {
                peer.wake.notify_one();
                Ok(())
            }
            Err(e) => Err(format!("the link to node {} cannot take more: {e}", peer.conf.name)),
        }
    }

    /// Asks a peer and waits (on the calling thread) for the answer.
    pub(crate) fn ask(&self, to: u16, query: Query, timeout: Duration) -> Result<Answer, String> {
        let peer = self.peers.get(&to).ok_or_else(|| format!("there is no node {to}"))?;
        if !peer.up.load(Ordering::SeqCst) {
            return Err(format!("node {} is down", peer.conf.name));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.waiting.lock().insert(id, (to, tx));
        if let Err(e) = self.send_frame(to, &Frame::Ask { id, query }) {
            self.waiting.lock().remove(&id);
            return Err(e);
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                self.waiting.lock().remove(&id);
                Err(format!("node {} did not answer within {} s", peer.conf.name, timeout.as_secs()))
            }
        }
    }

    fn fail_waiting(&self, node: u16, why: &str) {
        let gone: Vec<u64> = self.waiting.lock().iter().filter(|(_, (n, _))| *n == node).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some((_, tx)) = self.waiting.lock().remove(&id) {
                let _ = tx.send(Err(why.to_string()));
            }
        }
    }

    pub(crate) fn node_name(&self, id: u16) -> String {
        if id == self.me.id {
            return self.me.name.clone();
        }
        self.peers.get(&id).map_or_else(|| id.to_string(), |p| p.conf.name.clone())
    }

    /// Output of a process with no console reachable: the node's log.
    pub(crate) fn log_output(&self, pid: u64, text: &str, failed: bool) {
        if failed {
            (self.log)(&format!("<pid {}> failed: {}", name_text(pid), text.trim_end()));
        } else {
            for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                (self.log)(line);
            }
        }
    }

    fn console_out(&self, console: u64, pid: u64, text: &str, failed: bool) {
        if console == 0 {
            return self.log_output(pid, text, failed);
        }
        let owner = name_node(console);
        if owner == self.me.id {
            let tx = self.consoles.lock().get(&console).cloned();
            let sent = tx.is_some_and(|c| {
                c.queued.fetch_add(1, Ordering::SeqCst);
                c.tx.send(wire::CtlReply::Output { pid, text: text.to_string(), failed }).is_ok()
            });
            if !sent {
                self.consoles.lock().remove(&console);
                self.log_output(pid, text, failed);
            }
            return;
        }
        let frame = Frame::Console { console, pid, text: text.to_string(), failed };
        if self.send_frame(owner, &frame).is_err() {
            self.log_output(pid, text, failed);
        }
    }

    /// This node's load, refreshed at most once a second.
    pub(crate) fn own_load(&self) -> Load {
        let node = self.node();
        let mut l = self.own_load.lock();
        let now = Instant::now();
        let dt = now.duration_since(l.0);
        let r = node.reductions();
        if dt >= Duration::from_millis(500) {
            let per_s = ((r.saturating_sub(l.1)) as f64 / dt.as_secs_f64()) as u64;
            *l = (now, r, Load { processes: node.live() as u64, reductions_per_s: per_s });
        } else {
            l.2.processes = node.live() as u64;
        }
        l.2
    }

    pub(crate) fn peer_load(&self, id: u16) -> Load {
        self.peers.get(&id).map(|p| *p.load.lock()).unwrap_or_default()
    }

    pub(crate) fn is_up(&self, id: u16) -> bool {
        id == self.me.id || self.peers.get(&id).is_some_and(|p| p.up.load(Ordering::SeqCst))
    }

    /// Processes on this node, as `ps` rows.
    pub(crate) fn ps_rows(&self) -> Vec<PsRow> {
        self.node()
            .ps()
            .into_iter()
            .map(|p| PsRow {
                pid: p.pid,
                node: self.me.name.clone(),
                status: p.status.to_string(),
                reductions: p.reductions,
                heap_pages: p.heap_pages,
                mailbox: p.mailbox as u64,
            })
            .collect()
    }

    /// Loads modules sent by an operator or a peer (each verified).
    pub(crate) fn load_modules(&self, encoded: &[Vec<u8>]) -> Result<Vec<ModuleHash>, String> {
        let vm = self.node().vm();
        let mut out = Vec::new();
        for bytes in encoded {
            let m = Module::decode(bytes).map_err(|e| format!("bad module: {e}"))?;
            let h = vm.load(m).map_err(|e| format!("module rejected: {e}"))?;
            out.push(h);
        }
        Ok(out)
    }
}

/// The VM's view of the other nodes.
struct MeshRemote(Weak<Shared>);

impl Remote for MeshRemote {
    fn send(&self, to: u16, op: Op) -> Result<(), String> {
        let sh = self.0.upgrade().ok_or("the node is shutting down")?;
        sh.send_frame(to, &Frame::Vm(op))
    }
    fn node_id(&self, name: &str) -> Option<u16> {
        let sh = self.0.upgrade()?;
        sh.cfg.node(name).map(|n| n.id)
    }
    fn node_name(&self, id: u16) -> Option<String> {
        let sh = self.0.upgrade()?;
        sh.cfg.node_by_id(id).map(|n| n.name.clone())
    }
    fn migrate(&self, pid: u64, to: u16, caller: Option<u64>) -> Result<(), String> {
        let sh = self.0.upgrade().ok_or("the node is shutting down")?;
        let name = sh.peers.get(&to).map(|p| p.conf.name.clone()).ok_or_else(|| format!("there is no node {to}"))?;
        match caller {
            None => crate::migration::start(&sh, pid, &name, None, crate::migration::Caller::Itself).map(|_| ()),
            Some(c) => {
                // Waits for the outcome: on a thread of its own, one of a bounded number.
                let slot = sh.mig_slots.waiter()?;
                std::thread::Builder::new()
                    .name("tern-mig-wait".into())
                    .spawn(move || {
                        let _slot = slot;
                        let r = crate::migration::migrate_and_wait(&sh, pid, &name, None);
                        let result = match r {
                            Ok(rep) if rep.ok => tern_vm::process::IoResult::Migrated(rep.to),
                            Ok(rep) => tern_vm::process::IoResult::Failed(rep.outcome),
                            Err(e) => tern_vm::process::IoResult::Failed(e),
                        };
                        sh.node().answer_migrate(c, result);
                    })
                    .map(|_| ())
                    .map_err(|e| format!("cannot start a thread: {e}"))
            }
        }
    }

    fn live_nodes(&self) -> Vec<String> {
        let Some(sh) = self.0.upgrade() else { return Vec::new() };
        sh.cfg.nodes.iter().filter(|n| sh.is_up(n.id)).map(|n| n.name.clone()).collect()
    }
}

struct MeshConsole(Weak<Shared>);

impl Console for MeshConsole {
    fn write(&self, pid: u64, text: &str) {
        self.write_to(0, pid, text);
    }
    fn failed(&self, pid: u64, text: &str) {
        self.failed_to(0, pid, text);
    }
    fn write_to(&self, console: u64, pid: u64, text: &str) {
        if let Some(sh) = self.0.upgrade() {
            sh.console_out(console, pid, text, false);
        }
    }
    fn failed_to(&self, console: u64, pid: u64, text: &str) {
        if let Some(sh) = self.0.upgrade() {
            if pid == 0 {
                (sh.log)(text);
            } else {
                sh.console_out(console, pid, text, true);
            }
        }
    }
}

/// The mesh's file namespace: `node/NAME/...` (a file on node NAME), `shared/...` (this
/// node's replica of the shared namespace), anything else the file root of the node the
/// process was spawned on.
struct MeshFiles {
    sh: Weak<Shared>,
    root: crate::runner::DirFiles,
    shared: crate::runner::DirFiles,
}

fn with_name(op: &FileOp, name: String) -> FileOp {
    match op.clone() {
        FileOp::Open { mode, .. } => FileOp::Open { name, mode },
        FileOp::Read { offset, max, line, .. } => FileOp::Read { name, offset, max, line },
        FileOp::Write { offset, append, data, .. } => FileOp::Write { name, offset, append, data },
    }
}

fn op_name(op: &FileOp) -> &str {
    match op {
        FileOp::Open { name, .. } | FileOp::Read { name, .. } | FileOp::Write { name, .. } => name,
    }
}

impl MeshFiles {
    fn remote(&self, sh: &Shared, to: u16, op: FileOp) -> IoResult {
        match sh.ask(to, Query::File(op), ASK_TIMEOUT) {
            Ok(Answer::File(r)) => r,
            Ok(_) => IoResult::Failed("a file operation got an unexpected answer".into()),
            Err(e) => IoResult::Failed(format!("cannot use a file on node {}: {e}", sh.node_name(to))),
        }
    }
}

impl Files for MeshFiles {
    fn run(&self, op: &FileOp) -> IoResult {
        self.root.run(op)
    }

    fn run_for(&self, pid: u64, op: &FileOp) -> IoResult {
        let Some(sh) = self.sh.upgrade() else { return IoResult::Failed("the node is shutting down".into()) };
        let name = op_name(op).to_string();
        if let Some(rest) = name.strip_prefix("node/") {
            let (node, path) = rest.split_once('/').unwrap_or((rest, ""));
            if path.is_empty() {
                return IoResult::Failed(format!("cannot use file /{name}: no path after the node name"));
            }
            if node == sh.me.name {
                return self.root.run(&with_name(op, path.to_string()));
            }
            let Some(n) = sh.cfg.node(node) else {
                return IoResult::Failed(format!("cannot use file /{name}: there is no node {node:?} in the mesh"));
            };
            return self.remote(&sh, n.id, with_name(op, path.to_string()));
        }
        if let Some(path) = name.strip_prefix("shared/") {
            return self.shared.run(&with_name(op, path.to_string()));
        }
        let birth = name_node(pid);
        if birth == sh.me.id || sh.cfg.node_by_id(birth).is_none() {
            self.root.run(op)
        } else {
            self.remote(&sh, birth, op.clone())
        }
    }
}

/// A running mesh node.
pub struct MeshNode {
    pub(crate) sh: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    dispatcher: Option<std::thread::JoinHandle<()>>,
}

/// Options for [`MeshNode::start`] beyond the config.
#[derive(Clone)]
pub struct NodeOptions {
    pub log: LogSink,
    /// Worker threads of the VM (default: the config's).
    pub workers: Option<usize>,
}

impl MeshNode {
    /// Starts node `name` of `cfg`: its VM, its endpoint, and connections to its peers.
    pub fn start(cfg: &MeshConfig, name: &str, opts: NodeOptions) -> Result<MeshNode, String> {
        tls::install_provider();
        let me = cfg.node(name).ok_or_else(|| format!("there is no node {name:?} in {}", cfg.file_label()))?.clone();
        for dir in [&me.root, &me.shared] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let server = tls::server_config(cfg, &me.name)?;
        let client = tls::client_config(cfg, &me.name, tls::ALPN_MESH)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("tern-net-{}", me.name))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network runtime: {e}"))?;
        let endpoint = {
            let _g = rt.enter();
            let mut ep =
                quinn::Endpoint::server(server, me.addr).map_err(|e| format!("node {}: cannot listen on {}: {e}", me.name, me.addr))?;
            ep.set_default_client_config(client);
            ep
        };
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
        let scfg = SessionConfig {
            heartbeat_us: cfg.limits.heartbeat_ms * 1000,
            down_after_us: cfg.limits.node_down_ms * 1000,
            max_payload_bytes: (cfg.limits.frame_bytes as usize).saturating_sub(4096).max(1 << 16),
            max_unacked_bytes: (cfg.limits.message_bytes as usize).saturating_mul(8).max(64 << 20),
            max_in_flight: 4096,
            ..SessionConfig::default()
        };
        let (to_dispatch, from_peers) = crossbeam_channel::unbounded();
        let mut peers = BTreeMap::new();
        let mut incoming_rx = BTreeMap::new();
        for n in cfg.nodes.iter().filter(|n| n.id != me.id) {
            let (tx, rx) = mpsc::unbounded_channel();
            peers.insert(
                n.id,
                Arc::new(Peer {
                    conf: n.clone(),
                    session: Mutex::new(Session::new(me.id, n.id, epoch, scfg.clone(), 0)),
                    wake: Notify::new(),
                    up: AtomicBool::new(false),
                    load: Mutex::new(Load::default()),
                    incoming: tx,
                    has_conn: AtomicBool::new(false),
                    kick: AtomicBool::new(false),
                    refused: AtomicBool::new(false),
                    events: Mutex::new(()),
                    backlog: std::sync::atomic::AtomicUsize::new(0),
                    conn: Mutex::new(None),
                }),
            );
            incoming_rx.insert(n.id, rx);
        }
        let sh = Arc::new(Shared {
            cfg: cfg.clone(),
            me: me.clone(),
            node: OnceLock::new(),
            peers,
            start: Instant::now(),
            stats: MeshStats::default(),
            log: opts.log.clone(),
            to_dispatch,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            consoles: Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
            endpoint: OnceLock::new(),
            own_load: Mutex::new((Instant::now(), 0, Load::default())),
            mig: crate::migration::Migrations::default(),
            mig_slots: crate::migration::Slots::default(),
            rt: OnceLock::new(),
        });
        let _ = sh.rt.set(rt.handle().clone());
        let vm = crate::runner::new_vm(vm_config(cfg));
        let files = MeshFiles {
            sh: Arc::downgrade(&sh),
            root: crate::runner::DirFiles { root: me.root.clone() },
            shared: crate::runner::DirFiles { root: me.shared.clone() },
        };
        let ncfg = NodeConfig {
            name: me.name.clone(),
            id: me.id,
            workers: opts.workers.unwrap_or(me.workers).max(1),
            mailbox_limit_bytes: cfg.limits.mailbox_bytes as usize,
            message_limit_bytes: cfg.limits.message_bytes as usize,
            ..NodeConfig::default()
        };
        let node = Node::start(Arc::new(vm), tern_vm::node::Mesh::new(), ncfg, Arc::new(MeshConsole(Arc::downgrade(&sh))), Arc::new(files));
        node.set_remote(Arc::new(MeshRemote(Arc::downgrade(&sh))));
        // Prefetching is the migration machine's (`mesh.prefetch`), not the VM's.
        node.set_page_source(Arc::new(crate::migration::MeshPages(Arc::downgrade(&sh))), 0);
        let _ = sh.node.set(node);
        let _ = sh.endpoint.set(endpoint.clone());
        let (files_tx, files_rx) = crossbeam_channel::unbounded::<(u16, u64, FileOp)>();
        for i in 0..FILE_THREADS {
            let sh = Arc::downgrade(&sh);
            let rx = files_rx.clone();
            let root = crate::runner::DirFiles { root: me.root.clone() };
            std::thread::Builder::new()
                .name(format!("tern-files-{}-{i}", me.name))
                .spawn(move || {
                    // Ends when the dispatcher (the only sender) is gone.
                    while let Ok((from, id, op)) = rx.recv() {
                        let r = root.run(&op);
                        let Some(sh) = sh.upgrade() else { return };
                        let _ = sh.send_frame(from, &Frame::Answer { id, answer: Answer::File(r) });
                    }
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        let dispatcher = {
            let sh = sh.clone();
            std::thread::Builder::new()
                .name(format!("tern-dispatch-{}", me.name))
                .spawn(move || Dispatcher { sh, files: files_tx, pending: BTreeMap::new(), asked: HashSet::new() }.run(&from_peers))
                .map_err(|e| format!("cannot start a thread: {e}"))?
        };
        for (id, rx) in incoming_rx {
            let peer = sh.peers[&id].clone();
            rt.spawn(peer_task(sh.clone(), peer.clone(), rx));
            if me.id < id {
                rt.spawn(dial_task(sh.clone(), peer));
            }
        }
        rt.spawn(accept_task(sh.clone(), endpoint));
        rt.spawn(load_task(sh.clone()));
        (sh.log)(&format!("node {} (id {}) listening on {}", me.name, me.id, me.addr));
        Ok(MeshNode { sh, rt: Some(rt), dispatcher: Some(dispatcher) })
    }

    pub fn node(&self) -> &Node {
        self.sh.node()
    }

    pub fn name(&self) -> &str {
        &self.sh.me.name
    }

    pub fn stats(&self) -> &MeshStats {
        &self.sh.stats
    }

    pub fn addr(&self) -> SocketAddr {
        self.sh.me.addr
    }

    /// Whether peer `name` is up, as this node sees it.
    pub fn peer_up(&self, name: &str) -> bool {
        self.sh.peer_by_name(name).is_some_and(|p| p.up.load(Ordering::SeqCst))
    }

    /// Breaks every connection to a peer at once, as a network fault would; they are
    /// made again, and the sessions resend whatever did not arrive.
    pub fn drop_connections(&self) {
        for p in self.sh.peers.values() {
            p.kick.store(true, Ordering::SeqCst);
            p.wake.notify_one();
        }
    }

    /// Connections made to peers so far (dialled or accepted), for tests.
    pub fn connections_made(&self) -> u64 {
        self.sh.stats.connections_made.load(Ordering::Relaxed)
    }

    /// Registers a console (as a `tern ctl` connection does); its output arrives on the
    /// returned receiver.
    pub fn open_console(&self) -> (u64, mpsc::UnboundedReceiver<wire::CtlReply>) {
        let id = self.node().new_pid();
        let (tx, rx) = mpsc::unbounded_channel();
        self.sh.consoles.lock().insert(id, ConsoleTx::new(tx));
        (id, rx)
    }

    pub fn close_console(&self, id: u64) {
        self.sh.consoles.lock().remove(&id);
    }

    /// Stops the node: connections closed, processes dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.sh.shutdown.store(true, Ordering::SeqCst);
        if let Some(ep) = self.sh.endpoint.get() {
            ep.close(0u32.into(), b"node shutting down");
        }
        for p in self.sh.peers.values() {
            p.wake.notify_one();
        }
        let _ = self.sh.to_dispatch.send(Inbound::Stop);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        // Stopped here, on this thread: a VM thread must never be the one that drops the
        // last handle to the node and waits for itself.
        if let Some(n) = self.sh.node.get() {
            n.stop();
        }
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The VM settings a mesh config gives.
pub fn vm_config(cfg: &MeshConfig) -> tern_vm::VmConfig {
    let mut c = tern_vm::VmConfig::default();
    c.heap.page_size_bytes = cfg.page_size;
    c.heap.limit_bytes = cfg.limits.heap_bytes as usize;
    c
}

/// The close code of a connection refused because the peer is connected already.
const REFUSED: u32 = 3;

/// How long a node waits before dialling again a peer that refused its connection.
const REFUSED_PAUSE: Duration = Duration::from_secs(1);

/// Whether the peer closed `conn` as a second connection claiming to be this node.
fn refused_by_peer(conn: &quinn::Connection) -> bool {
    matches!(conn.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(REFUSED))
}

/// Dials a peer (this node has the lower id) whenever there is no connection.
async fn dial_task(sh: Arc<Shared>, peer: Arc<Peer>) {
    let mut backoff = Duration::from_millis(50);
    while !sh.shutdown.load(Ordering::SeqCst) {
        if peer.refused.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(REFUSED_PAUSE).await;
        }
        if !peer.has_conn.load(Ordering::SeqCst) {
            let Some(ep) = sh.endpoint.get() else { return };
            match ep.connect(peer.conf.addr, &peer.conf.name) {
                Ok(connecting) => match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                    Ok(Ok(conn)) => {
                        backoff = Duration::from_millis(50);
                        peer.has_conn.store(true, Ordering::SeqCst);
                        let _ = peer.incoming.send((conn, Made::Dialled));
                    }
                    Ok(Err(e)) => tracing::debug!(node = %sh.me.name, peer = %peer.conf.name, "cannot connect: {e}"),
                    Err(_) => tracing::debug!(node = %sh.me.name, peer = %peer.conf.name, "connect timed out"),
                },
                Err(e) => (sh.log)(&format!("cannot connect to node {} at {}: {e}", peer.conf.name, peer.conf.addr)),
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Accepts connections: peers' (handed to their peer task) and operators'.
async fn accept_task(sh: Arc<Shared>, ep: quinn::Endpoint) {
    while let Some(incoming) = ep.accept().await {
        let sh = sh.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %sh.me.name, "refused a connection: {e}");
                    (sh.log)(&format!("refused a connection: {e}"));
                    return;
                }
            };
            match tls::identify_peer(&sh.cfg, &conn) {
                Ok(tls::Peer::Node { id, name }) => match sh.peers.get(&id) {
                    Some(peer) if id != sh.me.id => {
                        peer.has_conn.store(true, Ordering::SeqCst);
                        let _ = peer.incoming.send((conn, Made::Accepted));
                    }
                    _ => {
                        sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                        (sh.log)(&format!("refused a connection from {name}: that is this node's own name"));
                        conn.close(1u32.into(), b"not a peer");
                    }
                },
                Ok(tls::Peer::Ctl) => crate::ctl::serve(sh, conn).await,
                Err(why) => {
                    sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %sh.me.name, "refused peer: {why}");
                    (sh.log)(&format!("refused peer: {why}"));
                    conn.close(1u32.into(), b"refused");
                }
            }
        });
    }
}

/// Sends this node's load to every peer about once a second.
async fn load_task(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    while !sh.shutdown.load(Ordering::SeqCst) {
        tick.tick().await;
        let l = sh.own_load();
        for (&id, p) in &sh.peers {
            if p.up.load(Ordering::SeqCst) {
                let _ = sh.send_frame(id, &Frame::Load(l));
            }
        }
    }
}

/// Reads length-prefixed packets from a peer's stream and feeds them to its session
/// (acting on what that delivers at once); errors go to the peer task.
async fn read_packets(
    sh: Arc<Shared>,
    peer: Arc<Peer>,
    mut recv: quinn::RecvStream,
    max: usize,
    gen: u64,
    tx: mpsc::UnboundedSender<(u64, Result<Packet, String>)>,
) {
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = recv.read_exact(&mut len).await {
            let _ = tx.send((gen, Err(format!("stream ended: {e}"))));
            return;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > max {
            let _ = tx.send((gen, Err(format!("frame of {n} bytes is over the limit of {max}"))));
            return;
        }
        let mut buf = vec![0u8; n];
        if let Err(e) = recv.read_exact(&mut buf).await {
            let _ = tx.send((gen, Err(format!("truncated frame: {e}"))));
            return;
        }
        match decode_packet(&buf, max) {
            Ok(p) => {
                if sh.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                peer.session.lock().handle(sh.now_us(), p);
                act_on_events(&sh, &peer);
                // Acks and whatever else the session has to send.
                peer.wake.notify_one();
            }
            Err(e) => {
                let _ = tx.send((gen, Err(format!("bad frame: {e}"))));
                return;
            }
        }
    }
}

struct Link {
    conn: quinn::Connection,
    send: quinn::SendStream,
    gen: u64,
}

/// How a connection to a peer came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    /// This node dialled it (it dials only when it has no connection).
    Dialled,
    /// The other side dialled and showed the peer's certificate.
    Accepted,
}

/// Connections refused (by this node or by the peer), logged at most every 10 s.
#[derive(Default)]
struct Refusals {
    count: u64,
    logged: Option<Instant>,
}

impl Refusals {
    /// Counts one; `Some(" (N so far)")` (empty the first time) if it is to be logged.
    fn note(&mut self) -> Option<String> {
        self.count += 1;
        if self.logged.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(if self.count > 1 { format!(" ({} so far)", self.count) } else { String::new() })
    }
}

fn refused_text(sh: &Shared, peer: &Peer, so_far: &str) -> String {
    format!(
        "node {} refused this node's connection{so_far}: another node {} is connected to it (this node's previous run, until it is seen gone, or another process with this node's identity); trying again",
        peer.conf.name, sh.me.name
    )
}

/// Whether the current link to a peer is alive: open, and the peer heard from within
/// the failure-detection timeout (timers brought up to date first).
fn link_alive(sh: &Shared, peer: &Peer, link: &Option<Link>) -> bool {
    if link.as_ref().is_none_or(|l| l.conn.close_reason().is_some()) {
        return false;
    }
    let mut s = peer.session.lock();
    s.handle_timeout(sh.now_us());
    s.is_up()
}

/// Owns the connection to one peer and drives its session.
///
/// A live connection wins: while the current link is alive, a second connection that
/// claims to be the same node is refused. Only one process can be the node; another one
/// with its certificate (a stolen key, a copied config) would otherwise displace it, be
/// taken for a restart, and part the real one from this node.
async fn peer_task(sh: Arc<Shared>, peer: Arc<Peer>, mut incoming: mpsc::UnboundedReceiver<(quinn::Connection, Made)>) {
    let max = sh.cfg.limits.frame_bytes as usize;
    let (pkt_tx, mut pkt_rx) = mpsc::unbounded_channel::<(u64, Result<Packet, String>)>();
    let mut link: Option<Link> = None;
    let mut gen = 0u64;
    let mut out = Vec::new();
    // Connections refused by this node, and by the peer.
    let mut refusing = Refusals::default();
    let mut refused = Refusals::default();
    loop {
        if sh.shutdown.load(Ordering::SeqCst) {
            if let Some(l) = link.take() {
                l.conn.close(0u32.into(), b"shutting down");
            }
            return;
        }
        if peer.kick.swap(false, Ordering::SeqCst) && link.is_some() {
            (sh.log)(&format!("dropping the connection with node {} (asked to)", peer.conf.name));
            drop_link(&sh, &peer, &mut link);
        }
        // Packets to send, and what the session has to say.
        let now = sh.now_us();
        let timeout = {
            let mut s = peer.session.lock();
            out.clear();
            while let Some(p) = s.poll_transmit(now) {
                let b = encode_packet(&p);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(&b);
            }
            s.poll_timeout()
        };
        if !out.is_empty() {
            if let Some(l) = link.as_mut() {
                if let Err(e) = l.send.write_all(&out).await {
                    (sh.log)(&format!("connection to node {} lost: {e}", peer.conf.name));
                    drop_link(&sh, &peer, &mut link);
                }
            }
        }
        act_on_events(&sh, &peer);
        let sleep = match timeout {
            Some(t) => Duration::from_micros(t.saturating_sub(sh.now_us())),
            None => Duration::from_millis(200),
        };
        tokio::select! {
            _ = peer.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {
                peer.session.lock().handle_timeout(sh.now_us());
            }
            Some((conn, made)) = incoming.recv() => {
                if made == Made::Accepted && link_alive(&sh, &peer, &link) {
                    sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    conn.close(REFUSED.into(), b"already connected");
                    if let Some(so_far) = refusing.note() {
                        let n = &peer.conf.name;
                        (sh.log)(&format!(
                            "refused a second connection claiming to be node {n} while {n} is connected{so_far} (a restarted {n} is let in once this connection goes quiet)"
                        ));
                    }
                    continue;
                }
                if let Some(old) = link.take() {
                    old.conn.close(0u32.into(), b"replaced");
                    peer.session.lock().disconnected(sh.now_us());
                }
                gen += 1;
                match conn.open_uni().await {
                    Ok(send) => {
                        let c2 = conn.clone();
                        let tx = pkt_tx.clone();
                        let g = gen;
                        let (sh2, peer2) = (sh.clone(), peer.clone());
                        tokio::spawn(async move {
                            match c2.accept_uni().await {
                                Ok(recv) => read_packets(sh2, peer2, recv, max, g, tx).await,
                                Err(e) => { let _ = tx.send((g, Err(format!("connection closed: {e}")))); }
                            }
                        });
                        peer.has_conn.store(true, Ordering::SeqCst);
                        sh.stats.connections_made.fetch_add(1, Ordering::Relaxed);
                        *peer.conn.lock() = Some(conn.clone());
                        tokio::spawn(crate::migration::accept_streams(Arc::downgrade(&sh), peer.conf.id, conn.clone()));
                        link = Some(Link { conn, send, gen });
                        peer.session.lock().connected(sh.now_us());
                    }
                    Err(e) => {
                        if refused_by_peer(&conn) {
                            peer.refused.store(true, Ordering::SeqCst);
                            if let Some(so_far) = refused.note() {
                                (sh.log)(&refused_text(&sh, &peer, &so_far));
                            }
                        } else {
                            (sh.log)(&format!("connection to node {} failed: {e}", peer.conf.name));
                        }
                        peer.has_conn.store(false, Ordering::SeqCst);
                    }
                }
            }
            Some((g, r)) = pkt_rx.recv() => {
                if link.as_ref().is_some_and(|l| l.gen == g) {
                    match r {
                        Ok(p) => peer.session.lock().handle(sh.now_us(), p),
                        Err(e) => {
                            if !e.starts_with("stream ended") && !e.starts_with("connection closed") {
                                sh.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(node = %sh.me.name, peer = %peer.conf.name, "closing the connection: {e}");
                            }
                            if link.as_ref().is_some_and(|l| refused_by_peer(&l.conn)) {
                                peer.refused.store(true, Ordering::SeqCst);
                                if let Some(so_far) = refused.note() {
                                    (sh.log)(&refused_text(&sh, &peer, &so_far));
                                }
                            } else {
                                (sh.log)(&format!("closing the connection with node {}: {e}", peer.conf.name));
                            }
                            if let Some(l) = link.as_ref() {
                                l.conn.close(2u32.into(), b"bad frame");
                            }
                            drop_link(&sh, &peer, &mut link);
                        }
                    }
                }
            }
        }
    }
}

fn drop_link(sh: &Shared, peer: &Peer, link: &mut Option<Link>) {
    if let Some(l) = link.take() {
        l.conn.close(0u32.into(), b"");
    }
    *peer.conn.lock() = None;
    peer.has_conn.store(false, Ordering::SeqCst);
    peer.session.lock().disconnected(sh.now_us());
}

/// Takes what the session has to say and acts on it, in order.
fn act_on_events(sh: &Arc<Shared>, peer: &Arc<Peer>) {
    let _events = peer.events.lock();
    loop {
        let Some(e) = peer.session.lock().poll_event() else { break };
        if let Event::PeerRestarted { old_epoch, new_epoch } = e {
            if new_epoch < old_epoch {
                let n = &peer.conf.name;
                (sh.log)(&format!("node {n}: an earlier incarnation is heard again after the one that replaced it went down"));
            }
        }
        handle_event(sh, peer, e);
    }
}

fn handle_event(sh: &Arc<Shared>, peer: &Arc<Peer>, e: Event) {
    match e {
        Event::Deliver(bytes) => match wire::decode::<Frame>(&bytes, sh.cfg.limits.frame_bytes as usize) {
            // An op that needs no module fetched, with nothing before it still waiting at
            // the dispatcher, is carried out here and now (a thread hand-off less).
            Ok(Frame::Vm(op)) if peer.backlog.load(Ordering::SeqCst) == 0 && op_needs(&op).iter().all(|h| sh.node().vm().has_module(h)) => {
                sh.stats.ops_received.fetch_add(1, Ordering::Relaxed);
                receive_op(sh, peer.conf.id, op);
            }
            // Migration control stays in order with the ops before it.
            Ok(Frame::Mig(w)) if peer.backlog.load(Ordering::SeqCst) == 0 => crate::migration::session_frame(sh, peer.conf.id, w),
            Ok(f) => {
                peer.backlog.fetch_add(1, Ordering::SeqCst);
                let _ = sh.to_dispatch.send(Inbound::Frame(peer.conf.id, Box::new(f)));
            }
            Err(err) => {
                sh.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                (sh.log)(&format!("dropped a bad frame from node {}: {err}", peer.conf.name));
            }
        },
        Event::Up => {
            peer.up.store(true, Ordering::SeqCst);
            sh.mig.peer_up(peer.conf.id);
            (sh.log)(&format!("node {} is up", peer.conf.name));
        }
        Event::Down => {
            peer.up.store(false, Ordering::SeqCst);
            (sh.log)(&format!("node {} is down", peer.conf.name));
            sh.mig.peer_gone(peer.conf.id, false);
            let _ = sh.to_dispatch.send(Inbound::PeerGone(peer.conf.id));
        }
        Event::PeerRestarted { .. } => {
            (sh.log)(&format!("node {} restarted", peer.conf.name));
            sh.mig.peer_gone(peer.conf.id, true);
            let _ = sh.to_dispatch.send(Inbound::PeerRestarted(peer.conf.id));
        }
    }
}

/// Hands an op from peer `from` to the VM, unless it is about a process that has ended
/// (see [`about_an_ended_process`]).
fn receive_op(sh: &Shared, from: u16, op: Op) {
    if about_an_ended_process(sh.node(), from, &op) {
        tracing::debug!(node = %sh.me.name, "dropped an op from node {from} about a process that has ended: {op:?}");
        return;
    }
    sh.node().receive(from, op);
}

/// Whether `op` from node `from` is a kill or an exit signal for a process that has
/// ended: one born on `from` for which this node has no entry (it is not here and this
/// node has no route of its own). The birth node sent it here because its route says
/// so; carried out, it would go back to the birth node (where a node with no entry
/// sends), whose route says here, and so on for ever: those ops carry no hop count. A
/// process that moved on from here leaves a route here until every node it talks with,
/// its birth node first, has the newer one, so an op from the birth node never finds
/// this node without an entry while the process lives.
fn about_an_ended_process(node: &Node, from: u16, op: &Op) -> bool {
    let pid = match op {
        Op::Kill { pid, .. } => *pid,
        Op::Exit { to, .. } => *to,
        _ => return false,
    };
    name_node(pid) == from && !node.forwarding_state(pid, &[]).0
}

/// What the dispatcher thread is given, in order.
enum Inbound {
    Frame(u16, Box<Frame>),
    /// A peer went down.
    PeerGone(u16),
    /// A peer restarted: gone, and numbering its messages from 0 again.
    PeerRestarted(u16),
    Stop,
}

/// Work waiting for modules.
enum Work {
    Op(Op),
    SpawnMain { id: u64, main: ModuleHash, console: u64 },
    Mig(wire::MigWire),
}

/// Carries out, in order per peer, what peers send; fetches modules first where needed.
struct Dispatcher {
    sh: Arc<Shared>,
    files: crossbeam_channel::Sender<(u16, u64, FileOp)>,
    pending: BTreeMap<u16, VecDeque<(Vec<ModuleHash>, Work)>>,
    asked: HashSet<ModuleHash>,
}

fn op_needs(op: &Op) -> Vec<ModuleHash> {
    let mut v = Vec::new();
    let mut add = |hs: Vec<ModuleHash>| {
        for h in hs {
            if !v.contains(&h) {
                v.push(h);
            }
        }
    };
    match op {
        Op::Deliver(d) => {
            add(d.msg.modules());
            for c in &d.carried {
                for m in &c.queue {
                    add(m.modules());
                }
                for (_, _, m) in &c.held {
                    if let Some(m) = m {
                        add(m.modules());
                    }
                }
            }
        }
        Op::Spawn { spec, carried, .. } => {
            add(spec.needs());
            for c in carried {
                for m in &c.queue {
                    add(m.modules());
                }
                for (_, _, m) in &c.held {
                    if let Some(m) = m {
                        add(m.modules());
                    }
                }
            }
        }
        _ => {}
    }
    v
}

impl Dispatcher {
    fn vm(&self) -> &Arc<Vm> {
        self.sh.node().vm()
    }

    fn run(mut self, rx: &crossbeam_channel::Receiver<Inbound>) {
        while let Ok(item) = rx.recv() {
            if self.sh.shutdown.load(Ordering::SeqCst) {
                return;
            }
            match item {
                Inbound::Frame(from, frame) => {
                    self.sh.stats.ops_received.fetch_add(1, Ordering::Relaxed);
                    if !self.frame(from, *frame) {
                        self.done(from, 1);
                    }
                }
                Inbound::PeerGone(from) => self.peer_gone(from),
                Inbound::PeerRestarted(from) => {
                    self.peer_gone(from);
                    self.sh.node().forget_origin(from);
                }
                Inbound::Stop => return,
            }
        }
    }

    /// A frame from the peer's backlog is carried out (or dropped).
    fn done(&self, from: u16, n: usize) {
        if let Some(p) = self.sh.peers.get(&from) {
            p.backlog.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// Carries out a frame; true if it waits (for modules) instead.
    fn frame(&mut self, from: u16, frame: Frame) -> bool {
        match frame {
            Frame::Vm(op) => {
                let needs = op_needs(&op);
                return self.queue(from, needs, Work::Op(op));
            }
            Frame::WantModules(hashes) => {
                let mut mods = Vec::new();
                for h in hashes.iter().take(1024) {
                    if let Some(m) = self.vm().module(h) {
                        mods.push(m.module.encode());
                    }
                }
                let bytes: usize = mods.iter().map(Vec::len).sum();
                self.sh.stats.modules_sent.fetch_add(mods.len() as u64, Ordering::Relaxed);
                self.sh.stats.module_bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
                let _ = self.sh.send_frame(from, &Frame::Modules(mods));
            }
            Frame::Modules(list) => {
                for bytes in list {
                    match Module::decode(&bytes) {
                        Ok(m) => {
                            let h = m.hash();
                            if !self.asked.remove(&h) {
                                (self.sh.log)(&format!("ignored module {h} from node {}: not asked for", self.sh.node_name(from)));
                                continue;
                            }
                            match self.vm().load(m) {
                                Ok(_) => {
                                    self.sh.stats.modules_received.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    (self.sh.log)(&format!("module {h} from node {} rejected: {e}", self.sh.node_name(from)));
                                    self.fail_needing(h, &format!("module {h} was rejected: {e}"));
                                }
                            }
                        }
                        Err(e) => (self.sh.log)(&format!("bad module from node {}: {e}", self.sh.node_name(from))),
                    }
                }
                self.drain();
            }
            Frame::Ask { id, query } => match query {
                // Disk work is done off this thread, by the file threads, in order.
                Query::File(op) => {
                    let _ = self.files.send((from, id, op));
                }
                Query::Ps => {
                    let rows = self.sh.ps_rows();
                    let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Ps(rows) });
                }
                Query::SpawnMain { main, needs, console } => return self.queue(from, needs, Work::SpawnMain { id, main, console }),
                Query::Migrate { pid, to, mechanism, hops } => {
                    // Runs for a while: on a thread of its own, one of a bounded number
                    // (a request refused for want of one is answered at once).
                    let sh = self.sh.clone();
                    let started = sh.mig_slots.waiter().and_then(|slot| {
                        std::thread::Builder::new()
                            .name("tern-mig-ask".into())
                            .spawn(move || {
                                let _slot = slot;
                                let r = crate::migration::migrate_via(&sh, pid, &to, mechanism, hops, Some(from));
                                let _ = sh.send_frame(from, &Frame::Answer { id, answer: Answer::Migrated(r.map(Box::new)) });
                            })
                            .map_err(|e| format!("cannot start a thread: {e}"))
                    });
                    if let Err(e) = started {
                        let e = format!("node {}: {e}", self.sh.me.name);
                        let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Migrated(Err(e)) });
                    }
                }
            },
            Frame::Answer { id, answer } => {
                if let Some((_, tx)) = self.sh.waiting.lock().remove(&id) {
                    let _ = tx.send(Ok(answer));
                }
            }
            Frame::Console { console, pid, text, failed } => self.sh.console_out(console, pid, &text, failed),
            Frame::Load(l) => {
                if let Some(p) = self.sh.peers.get(&from) {
                    *p.load.lock() = l;
                }
            }
            Frame::Mig(w) => return self.queue(from, Vec::new(), Work::Mig(w)),
        }
        false
    }

    fn peer_gone(&mut self, from: u16) {
        let name = self.sh.node_name(from);
        self.sh.fail_waiting(from, &format!("node {name} went down"));
        if let Some(q) = self.pending.remove(&from) {
            self.done(from, q.len());
            // Messages waiting for modules from it: lost (their numbers skipped).
            for (_, work) in q {
                if let Work::Op(op) = work {
                    self.sh.node().undeliverable(from, op, &format!("node {name} went down before it sent the code the message needs"));
                }
            }
        }
        self.sh.node().node_down(from);
    }

    /// Carries out work now, or queues it until its modules are here (true).
    fn queue(&mut self, from: u16, needs: Vec<ModuleHash>, work: Work) -> bool {
        let missing: Vec<ModuleHash> = needs.iter().copied().filter(|h| !self.vm().has_module(h)).collect();
        let q = self.pending.entry(from).or_default();
        if missing.is_empty() && q.is_empty() {
            self.run_work(from, work);
            return false;
        }
        q.push_back((needs, work));
        let ask: Vec<ModuleHash> = missing.into_iter().filter(|h| !self.asked.contains(h)).collect();
        if !ask.is_empty() {
            self.asked.extend(ask.iter().copied());
            self.sh.stats.module_requests.fetch_add(1, Ordering::Relaxed);
            let _ = self.sh.send_frame(from, &Frame::WantModules(ask));
        }
        true
    }

    fn drain(&mut self) {
        let vm = self.vm().clone();
        let froms: Vec<u16> = self.pending.keys().copied().collect();
        for from in froms {
            loop {
                let ready =
                    self.pending.get(&from).and_then(|q| q.front()).is_some_and(|(needs, _)| needs.iter().all(|h| vm.has_module(h)));
                if !ready {
                    break;
                }
                let Some((_, work)) = self.pending.get_mut(&from).and_then(VecDeque::pop_front) else { break };
                self.run_work(from, work);
                self.done(from, 1);
            }
        }
    }

    fn fail_needing(&mut self, bad: ModuleHash, why: &str) {
        let mut dropped = Vec::new();
        for (&from, q) in self.pending.iter_mut() {
            let mut keep = VecDeque::new();
            while let Some((needs, work)) = q.pop_front() {
                if !needs.contains(&bad) {
                    keep.push_back((needs, work));
                    continue;
                }
                dropped.push(from);
                match work {
                    Work::Op(Op::Spawn { req, from: parent, .. }) => {
                        let _ = self.sh.send_frame(from, &Frame::Vm(Op::Spawned { req, to: parent, result: Err(why.to_string()) }));
                    }
                    Work::SpawnMain { id, .. } => {
                        let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Spawned(Err(why.to_string())) });
                    }
                    Work::Op(op) => {
                        if !self.sh.node().undeliverable(from, op, why) {
                            (self.sh.log)(&format!("dropped a message from node {from}: {why}"));
                        }
                    }
                    Work::Mig(_) => (self.sh.log)(&format!("dropped a message from node {from}: {why}")),
                }
            }
            *q = keep;
        }
        for from in dropped {
            self.done(from, 1);
        }
    }

    fn run_work(&mut self, from: u16, work: Work) {
        match work {
            Work::Op(op) => receive_op(&self.sh, from, op),
            Work::SpawnMain { id, main, console } => {
                let r = self.sh.node().spawn_main_on(main, console, false).map_err(|e| e.to_string());
                let _ = self.sh.send_frame(from, &Frame::Answer { id, answer: Answer::Spawned(r) });
            }
            Work::Mig(w) => crate::migration::session_frame(&self.sh, from, w),
        }
    }
}

impl MeshNode {
    /// Migrates process `pid` to node `to` (with `mechanism`, or the config's default)
    /// and waits for the report.
    pub fn migrate(&self, pid: u64, to: &str, mechanism: Option<Mechanism>) -> Result<wire::MigReport, String> {
        crate::migration::migrate_and_wait(&self.sh, pid, to, mechanism)
    }

    /// Whether this node's migration tables still name process `pid`.
    pub fn migration_holds(&self, pid: u64) -> bool {
        self.sh.mig.holds(pid)
    }
}

impl MeshNode {
    /// Test only: stage failures of migrations from or to this node.
    #[doc(hidden)]
    pub fn set_migration_hooks(&self, hooks: crate::migration::TestHooks) {
        *self.sh.mig.hooks.lock() = hooks;
    }
}

impl MeshNode {
    /// Stops this node at once, as a failure would: its connections close and its
    /// processes stop (the rest is released when it is dropped).
    pub fn halt(&self) {
        self.sh.shutdown.store(true, Ordering::SeqCst);
        if let Some(ep) = self.sh.endpoint.get() {
            ep.close(0u32.into(), b"node halted");
        }
        for p in self.sh.peers.values() {
            p.wake.notify_one();
        }
        if let Some(n) = self.sh.node.get() {
            n.stop();
        }
    }
}
