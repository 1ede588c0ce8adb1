//! The QUIC host: a mesh node is one VM node plus a QUIC endpoint, talking to every
//! other node of the config over one mutually authenticated connection per pair.
//!
//! ```text
//!  VM workers ──Remote::send(op)──▶ Session (per peer, sans-IO) ──▶ peer task ──QUIC uni stream──▶
//!  ◀── dispatcher thread ◀── frames ◀── Session::poll_event ◀── peer task ◀──QUIC uni stream──
//! ```
//!
//! Per peer, a [`Session`](crate::proto::session::Session) (the sans-IO protocol in
//! `proto/session.rs`) makes delivery exactly once and in order across reconnects, and tells
//! up/down. The files of this folder, one concern each:
//!
//! - `mod.rs`: [`MeshNode`] (start, stop, what tests and commands ask of a node) and
//!   [`Host`], the context every task and thread of the node shares. Its fields are
//!   private to this folder; the operator side (`crate::ops`) uses its methods.
//! - `peers.rs`: one tokio task per peer owns the connection (the node with the lower
//!   id dials, the other accepts) and feeds its session; the accept loop; load reports.
//! - `dispatch.rs`: what a peer's session delivers, in order: VM ops (after fetching
//!   the modules they name, by content hash, once), questions and answers, console
//!   output, migration control.
//! - `services.rs`: what the VM gets from the host: [`Remote`](tern_vm::node::Remote)
//!   (other nodes), the console, the mesh's file namespace, the page source of lazily
//!   migrated processes; the threads serving peers' file operations.
//! - `migration/`: the live-migration driver (one OS thread per migration per side).
//! - `policy.rs`: the load policy's thread — load measured and told to the peers, the
//!   policy's moves started, its decisions logged.
//!
//! Operators (`tern ctl`, `tern repl`) connect with their own certificate and ALPN;
//! the node hands those connections to the [`OperatorServer`] it was started with.

mod dispatch;
mod metrics;
pub mod migration;
mod peers;
mod policy;
mod services;

use crate::config::{MeshConfig, NodeConf};
use crate::proto::mechanism::{Choice, How};
use crate::proto::wire::{self, Answer, Frame, PsRow, Query};
use crate::tls;
use dispatch::Inbound;
use migration::{MigHandle, Migrations, Slot, Slots};
use parking_lot::Mutex;
use peers::Peer;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tern_vm::bytecode::{Module, ModuleHash};
use tern_vm::node::Node;
use tokio::sync::mpsc;

/// How long a remote file operation or query may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful stop waits, once its connections are closed, for the closes to go
/// out (QUIC's draining: about three round-trip timeouts).
const LEAVE_FLUSH: Duration = Duration::from_millis(250);

/// Where a node's log lines and the output of processes without a console go.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Serves one operator connection (`tern ctl`, `tern repl`): the node hands it every
/// connection that shows the operator's certificate. The operator protocol is not the
/// node's (`crate::ops::ctl::server`); a node started without one refuses operators.
/// It is given the certificate's name and the role it carries.
pub type OperatorServer =
    Arc<dyn Fn(Arc<Host>, quinn::Connection, String, crate::tls::Role) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Counters, for tests and `ps`.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub modules_sent: AtomicU64,
    pub module_bytes_sent: AtomicU64,
    pub modules_received: AtomicU64,
    pub module_requests: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Spawn requests from peers refused for `[limits] spawns_per_peer_s`.
    pub spawns_refused: AtomicU64,
    pub ops_received: AtomicU64,
    /// VM ops (messages, spawns, links, ...) received from other nodes.
    pub vm_ops_received: AtomicU64,
    pub connections_made: AtomicU64,
}

type AnswerTx = crossbeam_channel::Sender<Result<Answer, String>>;

/// An operator console: lines for a connected `tern repl` or `tern ctl`, and how many
/// were queued for it and written to its stream (so an answer can wait for the output
/// before it).
#[derive(Clone)]
pub struct ConsoleTx {
    tx: mpsc::UnboundedSender<wire::CtlReply>,
    queued: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl ConsoleTx {
    pub fn new(tx: mpsc::UnboundedSender<wire::CtlReply>) -> ConsoleTx {
        ConsoleTx { tx, queued: Arc::default(), written: Arc::default() }
    }

    /// Queues a line; false if the console is gone.
    fn send(&self, line: wire::CtlReply) -> bool {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(line).is_ok()
    }

    /// Lines queued so far.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Lines written to the operator's stream so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// One more line was written to the operator's stream.
    pub fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }
}

/// What every task and thread of a node shares: its config, its VM node, its peers and
/// their sessions, the questions it waits answers for, the consoles of the operators
/// connected to it, its migrations. Fields are private to `node/`.
pub struct Host {
    cfg: MeshConfig,
    me: NodeConf,
    node: OnceLock<Node>,
    peers: BTreeMap<u16, Arc<Peer>>,
    start: Instant,
    stats: MeshStats,
    log: LogSink,
    to_dispatch: crossbeam_channel::Sender<Inbound>,
    /// Questions asked of peers: id -> (node asked, where the answer goes).
    waiting: Mutex<HashMap<u64, (u16, AnswerTx)>>,
    next_id: AtomicU64,
    consoles: Mutex<HashMap<u64, ConsoleTx>>,
    /// The input of the consoles open here (`read_line()`), by console.
    console_in: Mutex<HashMap<u64, tern_vm::console_in::ConsoleIn>>,
    shutdown: AtomicBool,
    /// Set by [`MeshNode::stop_gracefully`]: no new processes, spawns or migrations in.
    stopping: AtomicBool,
    endpoint: OnceLock<quinn::Endpoint>,
    /// The load policy: this node's load, its processes', the policy's state.
    policy: policy::PolicyHost,
    /// Live migrations to and from this node.
    mig: Migrations,
    /// The threads migrations may have at once.
    mig_slots: Slots,
    /// Each peer's spawn requests (`dispatch::spawn_allowed`): when its bucket was last
    /// filled, and the tokens left.
    spawn_buckets: Mutex<BTreeMap<u16, (Instant, f64)>>,
    rt: OnceLock<tokio::runtime::Handle>,
    operators: Option<OperatorServer>,
    /// Certificate names refused now (the config's `[security] revoked`, read again
    /// when the file changes: `peers::watch_revoked`).
    revoked: crate::tls::Revoked,
    /// Open operator connections, by id: their certificate's name (closed when revoked).
    operator_conns: Mutex<HashMap<u64, (String, quinn::Connection)>>,
    /// When frames last went to or came from a peer (`peers::keep_polling`).
    traffic: peers::Traffic,
}

impl Host {
    /// Microseconds since the node started (the sessions' and migrations' clock).
    pub(crate) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub(crate) fn node(&self) -> &Node {
        // Set before any task or thread that calls this starts.
        self.node.get().expect("node started")
    }

    /// The mesh's config.
    pub(crate) fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// This node, as the config names it.
    pub(crate) fn me(&self) -> &NodeConf {
        &self.me
    }

    /// Writes a line to the node's log.
    pub(crate) fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// Whether the node is stopping (or halted).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Whether the node is stopping gracefully ([`MeshNode::stop_gracefully`]): it takes
    /// no new processes, spawns or migrations.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn peer_by_name(&self, name: &str) -> Option<&Arc<Peer>> {
        self.peers.values().find(|p| p.conf.name == name)
    }

    /// The current connection to node `id`, if there is one.
    fn connection(&self, id: u16) -> Option<quinn::Connection> {
        self.peers.get(&id).and_then(|p| p.conn.lock().clone())
    }

    /// Sends a frame to a peer (exactly once, in order, when it is reachable).
    /// Whether the link to node `to` is congested (see [`crate::proto::session::Session::congested`]).
    pub(crate) fn congested(&self, to: u16) -> bool {
        self.peers.get(&to).is_some_and(|p| p.session.lock().congested())
    }

    fn send_frame(&self, to: u16, frame: &Frame) -> Result<(), String> {
        let peer = self.peers.get(&to).ok_or_else(|| format!("there is no node {to}"))?;
        let bytes = wire::encode(frame);
        let r = peer.session.lock().send(bytes);
        match r {
            Ok(()) => {
                peer.wake.notify_one();
                self.traffic.note(self.now_us());
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

    /// The name of node `id` (its number if the config has no such node).
    pub(crate) fn node_name(&self, id: u16) -> String {
        if id == self.me.id {
            return self.me.name.clone();
        }
        self.peers.get(&id).map_or_else(|| id.to_string(), |p| p.conf.name.clone())
    }

    /// Whether node `id` is up, as this node sees it (this node always is).
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
                function: p.function,
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

    /// Makes `id` a console: output of processes started with it comes to `tx`.
    pub(crate) fn open_console(&self, id: u64, tx: ConsoleTx) {
        self.consoles.lock().insert(id, tx);
    }

    pub(crate) fn close_console(&self, id: u64) {
        self.consoles.lock().remove(&id);
        // Its input ends: every read waiting for it gets nil.
        let ends = self.console_in.lock().remove(&id).map(|mut c| c.end()).unwrap_or_default();
        for a in ends {
            self.answer_line(a);
        }
    }

    /// Process `pid` on node `asker` asks for line `k` of console `id`'s input (here):
    /// the answer now, if there is one. A console that is not open here has no more
    /// input.
    pub(crate) fn request_line(&self, id: u64, pid: u64, k: u64, asker: u16) -> Option<tern_vm::console_in::Answer> {
        if !self.consoles.lock().contains_key(&id) {
            return Some(tern_vm::console_in::Answer { asker, pid, k, line: None });
        }
        self.console_in.lock().entry(id).or_default().request(pid, k, asker)
    }

    /// A line typed at console `id` (`None`: its input ended).
    pub(crate) fn console_input(&self, id: u64, line: Option<String>) {
        let answers = {
            let mut all = self.console_in.lock();
            let c = all.entry(id).or_default();
            match line {
                Some(l) => c.line(l).into_iter().collect(),
                None => c.end(),
            }
        };
        for a in answers {
            self.answer_line(a);
        }
    }

    /// Sends an answer to the node that asked (here: straight to the process).
    pub(crate) fn answer_line(&self, a: tern_vm::console_in::Answer) {
        if a.asker == self.me.id {
            self.node().console_line(a.pid, a.k, a.line);
        } else {
            let _ = self.send_frame(a.asker, &Frame::ConsoleLine { pid: a.pid, k: a.k, line: a.line });
        }
    }

    /// Another node suspects node `id`: probe it ([`crate::proto::session::Session::suspect`]).
    pub(crate) fn suspect(&self, id: u16) {
        if let Some(p) = self.peers.get(&id) {
            p.session.lock().suspect(self.now_us());
            p.wake.notify_one();
        }
    }

    /// Console `id`, if it is open on this node.
    pub(crate) fn console(&self, id: u64) -> Option<ConsoleTx> {
        self.consoles.lock().get(&id).cloned()
    }

    /// Starts migrating process `pid` (here) to node `to` (with `mechanism`, or the
    /// config's default): its progress and, at the end, its report.
    pub(crate) fn start_migration(self: &Arc<Self>, pid: u64, to: &str, how: How) -> Result<MigHandle, String> {
        migration::start(self, pid, to, how, migration::Caller::None)
    }

    /// Migrates `pid` to node `to` and waits for the report: here if the process is
    /// here, else asking the node it is on.
    pub(crate) fn migrate_and_wait(self: &Arc<Self>, pid: u64, to: &str, how: How) -> Result<wire::MigReport, String> {
        migration::migrate_and_wait(self, pid, to, how)
    }

    /// A slot for a thread that waits for a migration on someone's behalf (the number
    /// of such threads is bounded).
    pub(crate) fn migration_waiter(&self) -> Result<Slot, String> {
        self.mig_slots.waiter()
    }

    /// Closes the endpoint and wakes every peer task: they end.
    fn close(&self, why: &[u8]) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(ep) = self.endpoint.get() {
            ep.close(0u32.into(), why);
        }
        for p in self.peers.values() {
            p.wake.notify_one();
        }
    }
}

/// A running mesh node.
pub struct MeshNode {
    sh: Arc<Host>,
    rt: Option<tokio::runtime::Runtime>,
    dispatcher: Option<std::thread::JoinHandle<()>>,
}

/// Options for [`MeshNode::start`] beyond the config.
#[derive(Clone)]
pub struct NodeOptions {
    pub log: LogSink,
    /// Worker threads of the VM (default: the config's).
    pub workers: Option<usize>,
    /// What serves operator connections (`None`: they are refused).
    pub operators: Option<OperatorServer>,
}

impl MeshNode {
    /// Starts node `name` of `cfg`: its VM, its endpoint, and connections to its peers.
    pub fn start(cfg: &MeshConfig, name: &str, opts: NodeOptions) -> Result<MeshNode, String> {
        tls::install_provider();
        let me = cfg.node(name).ok_or_else(|| format!("there is no node {name:?} in {}", cfg.file_label()))?.clone();
        for dir in [&me.root, &me.shared] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("tern-net-{}", me.name))
            // Woken by every packet and every frame to send: a short slice
            // (`tern_vm::node::slice`).
            .on_thread_start(|| {
                tern_vm::node::slice::set_short_slice(tern_vm::node::slice::SHORT_SLICE_US);
            })
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network runtime: {e}"))?;
        let revoked: crate::tls::Revoked = Arc::new(parking_lot::RwLock::new(cfg.revoked.clone()));
        let endpoint = peers::endpoint(cfg, &me, &rt, revoked.clone())?;
        let (to_dispatch, from_peers) = crossbeam_channel::unbounded();
        let (peers, incoming) = peers::peers(cfg, &me);
        let sh = Arc::new(Host {
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
            console_in: Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            endpoint: OnceLock::new(),
            policy: policy::PolicyHost::new(me.id, cfg.policy, cfg.nodes.iter().map(|n| (n.id, n.name.clone()))),
            mig: Migrations::default(),
            mig_slots: Slots::new(&cfg.limits),
            spawn_buckets: Mutex::default(),
            rt: OnceLock::new(),
            operators: opts.operators.clone(),
            revoked,
            operator_conns: Mutex::new(HashMap::new()),
            traffic: peers::Traffic::default(),
        });
        let _ = sh.rt.set(rt.handle().clone());
        let _ = sh.node.set(services::start_vm(&sh, opts.workers));
        let _ = sh.endpoint.set(endpoint.0.clone());
        let files = services::start_file_threads(&sh)?;
        let dispatcher = dispatch::start(&sh, files, from_peers)?;
        peers::start_tasks(&sh, &rt, endpoint, incoming);
        policy::start(&sh)?;
        sh.log(&format!("node {} (id {}) listening on {}", me.name, me.id, me.addr));
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

    /// Writes a line to the node's log.
    pub fn log(&self, line: &str) {
        self.sh.log(line)
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
        self.sh.open_console(id, ConsoleTx::new(tx));
        (id, rx)
    }

    pub fn close_console(&self, id: u64) {
        self.sh.close_console(id);
    }

    /// Migrates process `pid` to node `to` (with `mechanism`, or the config's default)
    /// and waits for the report.
    pub fn migrate(&self, pid: u64, to: &str, mechanism: Option<Choice>) -> Result<wire::MigReport, String> {
        self.sh.migrate_and_wait(pid, to, How::mechanism(mechanism))
    }

    /// The reports of the newest migrations (at most 64) this node was the source of.
    pub fn reports(&self) -> Vec<wire::MigReport> {
        self.sh.mig.reports.lock().clone()
    }

    /// [`MeshNode::migrate`] with both mechanisms chosen (`None`s: the mesh's defaults).
    pub fn migrate_how(&self, pid: u64, to: &str, how: How) -> Result<wire::MigReport, String> {
        self.sh.migrate_and_wait(pid, to, how)
    }

    /// This node's policy after `change` (if any: checked, then made here only), with
    /// its last `decisions` decisions (`tern ctl policy` asks every node).
    pub fn policy(&self, change: Option<&wire::PolicyChange>, decisions: u32) -> Result<wire::PolicyView, String> {
        self.sh.policy_query(change, decisions)
    }

    /// How many entries each of this node's tables holds: the VM's
    /// (`Node::table_sizes`) and the migrations' (runs, processes moving, destination
    /// page routes and fault samples, aborted migrations remembered, reports).
    pub fn table_sizes(&self) -> (tern_vm::node::TableSizes, migration::MigTableSizes) {
        (self.node().table_sizes(), self.sh.mig.table_sizes())
    }

    /// This node's counters for operators' tools, read anew at each call.
    pub fn metrics_source(&self) -> Arc<dyn Fn() -> wire::MetricsView + Send + Sync> {
        let sh = self.sh.clone();
        Arc::new(move || sh.metrics())
    }

    /// Whether this node's migration tables still name process `pid`.
    pub fn migration_holds(&self, pid: u64) -> bool {
        self.sh.mig.holds(pid)
    }

    /// Test only: stage failures of migrations from or to this node.
    #[doc(hidden)]
    pub fn set_migration_hooks(&self, hooks: migration::TestHooks) {
        *self.sh.mig.hooks.lock() = hooks;
    }

    /// Stops this node at once, as a failure would: its connections close and its
    /// processes stop (the rest is released when it is dropped).
    pub fn halt(&self) {
        self.sh.close(b"node halted");
        if let Some(n) = self.sh.node.get() {
            n.stop();
        }
    }

    /// Stops the node as a supervisor's SIGTERM asks, within about `limit`: it takes no
    /// new processes, spawns or migrations; with `drain` it first moves its processes to
    /// the other nodes (as `tern ctl drain`); the processes left are ended with the
    /// reason `shutdown`, which their monitors and links see; then it waits for its
    /// migrations out to end (a lazy one's pages are still served from here) and for
    /// every peer that is up to acknowledge what it was sent (those exits among it),
    /// tells its peers it leaves (they see it down at once: `Host::leave`) and shuts
    /// down. What is left when `limit` runs out is dropped as
    /// [`MeshNode::shutdown`] drops it.
    pub fn stop_gracefully(self, drain: bool, limit: Duration) {
        let sh = &self.sh;
        let deadline = Instant::now() + limit;
        sh.stopping.store(true, Ordering::SeqCst);
        sh.set_accepting(false);
        sh.log(&format!("node {} stopping: it takes no new processes", sh.me.name));
        if drain && sh.node().live() > 0 {
            if let Err(e) = sh.drain_until(deadline, |_, _, _| {}) {
                sh.log(&format!("stop: the processes could not be moved ({e}); they are stopped here"));
            }
        }
        let pids = sh.node().pids();
        if !pids.is_empty() {
            sh.log(&format!("stop: ending {} process(es) with the reason \"shutdown\"", pids.len()));
        }
        for pid in pids {
            sh.node().kill(pid, "shutdown");
        }
        let left = |d: Instant| d.saturating_duration_since(Instant::now());
        if !sh.node().wait_all(left(deadline)) {
            sh.log(&format!("stop: {} process(es) had not ended in time", sh.node().live()));
        }
        let settled = |f: &dyn Fn() -> bool| {
            while !f() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            f()
        };
        if !settled(&|| sh.mig.table_sizes().runs == 0) {
            sh.log("stop: a migration had not ended in time");
        }
        let acked = || sh.peers.values().all(|p| !p.up.load(Ordering::SeqCst) || p.session.lock().is_idle());
        if !settled(&acked) {
            sh.log("stop: a peer had not acknowledged everything sent to it in time");
        }
        // The peers are told this incarnation leaves (they see it down at once), and the
        // closes are given time to go out before the network side stops.
        sh.leave();
        sh.close(b"node shutting down");
        if let (Some(rt), Some(ep)) = (self.rt.as_ref(), sh.endpoint.get()) {
            let ep = ep.clone();
            rt.block_on(async move {
                let _ = tokio::time::timeout(LEAVE_FLUSH, ep.wait_idle()).await;
            });
        }
        sh.log(&format!("node {} stopped", sh.me.name));
        self.shutdown();
    }

    /// Stops the node: connections closed, processes dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.sh.close(b"node shutting down");
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
    c.jit = cfg.jit.mode;
    c.jit_threshold = cfg.jit.threshold;
    c.jit_cache_bytes = cfg.jit.cache_bytes;
    c
}
