//! Live migration over QUIC: the host that runs the sans-IO machines of
//! [`crate::migrate`] for real (DESIGN invariant 9), one OS thread per migration on each
//! side.
//!
//! **Streams.** Each migration has its own bidirectional QUIC stream on the connection
//! between source and destination, opened by the source: the protocol's messages up to
//! the commit point, the pages of the pre-copy rounds, the final pages, the modules the
//! destination lacks and the state image travel there, so bulk pages never wait behind
//! (or hold up) the node-pair session. With pages absent at the destination (lazy,
//! hybrid) the destination opens a second stream at high priority for page faults and
//! their answers, so a fault never waits behind pages being pushed in the background.
//!
//! **The session.** What must stay in order with the VM's own traffic between the two
//! nodes goes in [`Frame::Mig`] on the node-pair session, which is exactly-once and
//! survives reconnects: `Commit`, `Committed`, `Aborted`, `Abort` (the commit decision
//! must not be lost with a connection), the process's late messages ([`MigWire::Late`]),
//! link updates and their acknowledgements, `LinkDone`.
//!
//! **The VM.** Pages of a running process are read at its safepoints
//! ([`Node::read_pages_bytes`]), a few at a time so it keeps running; the image is its state
//! without pages ([`Node::export_state`]); `transfer.rs`'s steps do the rest: the
//! destination reinstates it frozen ([`Node::import_state`]) and, once it has both the
//! `Commit` and the late messages, runs it ([`Node::commit_import`]); the source turns
//! its slot into a forwarding pointer at `Committed` ([`Node::commit_export`]) and,
//! once every partner acknowledged its link update, drops that too.

use super::Host;
use crate::migrate::{Action, Dest, DestOutcome, Mechanism, MigConfig, MigMsg, RefuseReason, Source, SourceInit, SourceOutcome};
use crate::wire::{self, DestStats, Frame, MigReport, MigWire, PageRec};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tern_vm::bytecode::{Module, ModuleHash};
use tern_vm::node::{Late, Node};
use tern_vm::process::IoResult;
use tokio::sync::mpsc;

type Pid = u64;

/// Pages per data frame on a migration stream.
const PAGES_PER_FRAME: usize = 256;
/// Largest state image accepted (the heap's pages travel separately).
const MAX_IMAGE: usize = 256 << 20;
/// Priority of the page-fault stream (bulk streams have 0).
const FAULT_PRIORITY: i32 = 10;

/// What a migration thread is told.
pub(crate) enum Input {
    Wire(u16, MigWire),
    /// A frame from a migration stream, still encoded (decoded on the migration's own
    /// thread, not on the network thread).
    Frame(u16, Vec<u8>, usize),
    /// Its stream (or the connection) failed.
    StreamFailed(String),
    /// Source: the destination opened the page-fault stream.
    FaultStream(mpsc::Sender<Vec<u8>>),
    /// Destination: the process touched an absent page.
    Fault(u32),
    /// The node stopped answering (it may come back as the same incarnation).
    PeerDown(u16),
    /// The node came back as a new incarnation: what the old one held is gone.
    PeerRestarted(u16),
    /// The node is heard from again (first contact, or after it was down).
    PeerUp(u16),
}

/// How far a migration has got, for progress bars.
#[derive(Default)]
pub struct Progress {
    pub sent_pages: AtomicU64,
    pub total_pages: AtomicU64,
    pub phase: Mutex<String>,
}

/// A migration started here: its progress and, at the end, its report.
pub struct MigHandle {
    pub progress: Arc<Progress>,
    pub done: crossbeam_channel::Receiver<MigReport>,
}

/// Who waits for a migration's outcome besides the operator.
#[derive(Clone, Copy)]
pub(crate) enum Caller {
    None,
    /// The process moves itself (`migrate(node)`): answered only on failure.
    Itself,
}

/// The migrations of one node.
#[derive(Default)]
pub(crate) struct Migrations {
    runs: Mutex<HashMap<u64, crossbeam_channel::Sender<Input>>>,
    /// Destination: pid -> migration, for page faults.
    by_pid: Mutex<HashMap<Pid, u64>>,
    /// Source: processes being migrated from here.
    moving: Mutex<HashSet<Pid>>,
    /// Migrations this node gave up as destination (a late `Commit` gets `Aborted`).
    aborted: Mutex<HashSet<u64>>,
    next: AtomicU64,
    /// Reports of migrations from here, newest last (bounded).
    pub(crate) reports: Mutex<Vec<MigReport>>,
    /// Test only: failures to stage.
    pub(crate) hooks: Mutex<TestHooks>,
}

/// Test only: ways to hold a migration at a chosen point, so a test can fail a node there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    /// The destination never reinstates (it stalls before `Ready`, before the commit point).
    pub stall_before_ready: bool,
    /// The source pushes no pages in the background (lazy: pages move only on faults).
    pub no_push: bool,
    /// The destination holds before reinstating (before `Ready`, before the commit point)
    /// while this is set, then goes on (it logs "held before Ready" when it starts).
    pub hold_before_ready: bool,
}

fn mig_config(sh: &Host) -> MigConfig {
    let no_push = sh.mig.hooks.lock().no_push;
    MigConfig {
        page_bytes: sh.cfg.page_size as u64,
        // Pages stream on their own QUIC stream; a stall there is a failed connection,
        // which QUIC reports. These bound a peer that stops answering.
        step_timeout_us: 30_000_000,
        commit_timeout_us: 10_000_000,
        freeze_budget_us: 1_000,
        max_rounds: 10,
        shrink_per_mille: 900,
        max_throttle: 4,
        prefetch: sh.cfg.prefetch,
        push_interval_us: if no_push { u64::MAX / 4 } else { 1_000 },
        push_pages: 256,
        max_pages_per_msg: PAGES_PER_FRAME as u32,
        source_down_limit_us: sh.cfg.limits.node_down_ms.saturating_mul(10_000).max(10_000_000),
        ..MigConfig::default()
    }
}

fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

fn frame_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    wire::encode_framed(v)
}

/// Messages that go on the session rather than the migration stream.
fn on_session(m: &MigMsg) -> bool {
    matches!(
        m,
        MigMsg::Commit { .. }
            | MigMsg::Committed { .. }
            | MigMsg::Aborted { .. }
            | MigMsg::Abort { .. }
            | MigMsg::LinkUpdate { .. }
            | MigMsg::LinkAck { .. }
            | MigMsg::LinkDone { .. }
            | MigMsg::Released { .. }
    )
}

/// Writes frames to a QUIC send stream until the sender is dropped.
fn spawn_writer(rt: &tokio::runtime::Handle, mut send: quinn::SendStream, priority: i32) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    rt.spawn(async move {
        let _ = send.set_priority(priority);
        while let Some(b) = rx.recv().await {
            if send.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    tx
}

/// Reads frames from a QUIC receive stream into a migration's inputs.
async fn read_frames(mut recv: quinn::RecvStream, from: u16, max: usize, to: crossbeam_channel::Sender<Input>) {
    loop {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(e) => {
                let _ = to.send(Input::StreamFailed(format!("migration stream: {e}")));
                return;
            }
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > max {
            let _ = to.send(Input::StreamFailed(format!("migration frame of {n} bytes is over the limit of {max}")));
            return;
        }
        let mut buf = vec![0u8; n];
        if let Err(e) = recv.read_exact(&mut buf).await {
            let _ = to.send(Input::StreamFailed(format!("migration stream: {e}")));
            return;
        }
        if to.send(Input::Frame(from, buf, max)).is_err() {
            return;
        }
    }
}

/// Page numbers as ranges `[start, end)`.
fn to_ranges(pages: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((_, end)) if *end == p => *end += 1,
            _ => out.push((p, p.saturating_add(1))),
        }
    }
    out
}

/// Ranges back into page numbers, refusing more than `max` of them.
fn from_ranges(ranges: &[(u32, u32)], max: u32) -> Option<Vec<u32>> {
    let total: u64 = ranges.iter().map(|&(a, b)| u64::from(b.saturating_sub(a))).sum();
    if total > u64::from(max) {
        return None;
    }
    Some(ranges.iter().flat_map(|&(a, b)| a..b).collect())
}

/// A message as it goes on the migration stream (`Final` with ranges).
fn wire_msg(m: MigMsg) -> MigWire {
    match m {
        MigMsg::Final { mid, image_len, pages, absent, partners } => {
            MigWire::Final { mid, image_len, pages: to_ranges(&pages), absent: to_ranges(&absent), partners }
        }
        m => MigWire::Msg(m),
    }
}

fn wire_mid(w: &MigWire) -> u64 {
    match w {
        MigWire::Msg(m) => m.mid(),
        MigWire::Final { mid, .. } => *mid,
        MigWire::Pages { mid, .. }
        | MigWire::Modules { mid, .. }
        | MigWire::Need { mid, .. }
        | MigWire::Image { mid, .. }
        | MigWire::Late { mid, .. }
        | MigWire::LinkUpdate { mid, .. }
        | MigWire::DestDone { mid, .. } => *mid,
    }
}

impl Migrations {
    fn register(&self, mid: u64) -> crossbeam_channel::Receiver<Input> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.runs.lock().insert(mid, tx);
        rx
    }

    fn input(&self, mid: u64, i: Input) -> bool {
        match self.runs.lock().get(&mid) {
            Some(tx) => tx.send(i).is_ok(),
            None => false,
        }
    }

    /// A page fault of process `pid` (here, with pages on another node).
    pub(crate) fn fault(&self, pid: Pid, page: u32) -> bool {
        let mid = self.by_pid.lock().get(&pid).copied();
        mid.is_some_and(|m| self.input(m, Input::Fault(page)))
    }

    /// A peer stopped answering (`restarted`: came back as a new incarnation): every
    /// migration is told.
    pub(crate) fn peer_gone(&self, node: u16, restarted: bool) {
        for tx in self.runs.lock().values() {
            let _ = tx.send(if restarted { Input::PeerRestarted(node) } else { Input::PeerDown(node) });
        }
    }

    /// A peer is heard from again: every migration is told.
    pub(crate) fn peer_up(&self, node: u16) {
        for tx in self.runs.lock().values() {
            let _ = tx.send(Input::PeerUp(node));
        }
    }

    /// Whether this node holds nothing for a migrated process (tests: no residual dependency).
    pub(crate) fn holds(&self, pid: Pid) -> bool {
        self.moving.lock().contains(&pid) || self.by_pid.lock().contains_key(&pid)
    }
}

/// How long to wait for input: until a machine's next timeout, or a while.
fn wait_until(timeout_us: Option<u64>, now_us: u64) -> Duration {
    timeout_us.map_or(Duration::from_millis(500), |t| Duration::from_micros(t.saturating_sub(now_us)))
}

/// Receives the next input, decoding a stream frame.
fn next_input(inputs: &crossbeam_channel::Receiver<Input>, wait: Duration) -> Result<Input, crossbeam_channel::RecvTimeoutError> {
    inputs.recv_timeout(wait).map(|i| match i {
        Input::Frame(from, buf, max) => match wire::decode::<MigWire>(&buf, max) {
            Ok(w) => Input::Wire(from, w),
            Err(e) => Input::StreamFailed(format!("bad migration frame: {e}")),
        },
        other => other,
    })
}

/// A migration frame that came on the session from `from`.
pub(crate) fn session_frame(sh: &Arc<Host>, from: u16, w: MigWire) {
    match w {
        MigWire::LinkUpdate { mid, pid, to, moves, chans } => {
            // A partner node: send straight to the new place from now on, and say so. The
            // ack follows every message this node sent to the old place (same session).
            sh.node().apply_link_update(pid, to, moves, &chans);
            let _ = sh.send_frame(from, &Frame::Mig(MigWire::Msg(MigMsg::LinkAck { mid, pid })));
        }
        MigWire::Msg(MigMsg::Commit { mid }) if !sh.mig.runs.lock().contains_key(&mid) => {
            if sh.mig.aborted.lock().contains(&mid) {
                let _ = sh.send_frame(from, &Frame::Mig(MigWire::Msg(MigMsg::Aborted { mid })));
            }
        }
        w => {
            let mid = wire_mid(&w);
            sh.mig.input(mid, Input::Wire(from, w));
        }
    }
}

/// Serves the migration streams peers open on connection `conn` with node `from`.
pub(crate) async fn accept_streams(sh: Weak<Host>, from: u16, conn: quinn::Connection) {
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        let Some(sh) = sh.upgrade() else { return };
        let max = sh.cfg.limits.frame_bytes as usize;
        tokio::spawn(async move {
            // The first frame says what the stream is for.
            let mut len = [0u8; 4];
            if recv.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u32::from_le_bytes(len) as usize;
            if n > max {
                return;
            }
            let mut buf = vec![0u8; n];
            if recv.read_exact(&mut buf).await.is_err() {
                return;
            }
            let first = match wire::decode::<MigWire>(&buf, max) {
                Ok(w) => w,
                Err(e) => {
                    sh.log(&format!("refused a migration stream from node {from}: {e}"));
                    return;
                }
            };
            let rt = tokio::runtime::Handle::current();
            match first {
                MigWire::Msg(offer @ MigMsg::Offer { .. }) => {
                    let mid = offer.mid();
                    let out = spawn_writer(&rt, send, 0);
                    let slot = match sh.mig_slots.run() {
                        Ok(s) => s,
                        Err(e) => {
                            sh.log(&format!("refused a migration from node {}: {e}", sh.node_name(from)));
                            let _ = out.send(frame_bytes(&MigWire::Msg(MigMsg::Refuse { mid, why: RefuseReason::OverLimits }))).await;
                            return;
                        }
                    };
                    let inputs = sh.mig.register(mid);
                    let tx = sh.mig.runs.lock().get(&mid).cloned();
                    let sh2 = sh.clone();
                    let spawned = std::thread::Builder::new().name(format!("tern-mig-in-{mid:x}")).spawn(move || {
                        let _slot = slot;
                        run_dest(sh2, from, offer, out, inputs, rt)
                    });
                    if spawned.is_err() {
                        sh.mig.runs.lock().remove(&mid);
                        return;
                    }
                    if let Some(tx) = tx {
                        read_frames(recv, from, max, tx).await;
                    }
                }
                MigWire::Msg(fetch @ MigMsg::Fetch { .. }) => {
                    let mid = fetch.mid();
                    let out = spawn_writer(&rt, send, FAULT_PRIORITY);
                    let Some(tx) = sh.mig.runs.lock().get(&mid).cloned() else { return };
                    let _ = tx.send(Input::FaultStream(out));
                    let _ = tx.send(Input::Wire(from, MigWire::Msg(fetch)));
                    read_frames(recv, from, max, tx).await;
                }
                _ => sh.log(&format!("refused a migration stream from node {from}: it did not start with an offer or a fetch")),
            }
        });
    }
}

/// Most migration runs (source or destination, each an OS thread) at once on a node.
pub(crate) const MAX_RUNS: usize = 64;
/// Most threads at once on a node that wait for a migration on someone's behalf (a
/// peer's `Query::Migrate`, a program's `migrate(pid, node)`, an operator's request for
/// a process on another node).
pub(crate) const MAX_WAITING: usize = 32;
/// Most nodes a request about a process goes through (see [`wire::Query::Migrate`]).
pub(crate) const MAX_HOPS: u8 = 4;

/// What a node's peers, programs and operators may have running at once for
/// migrations: every thread a migration needs takes a [`Slot`] first, and none is
/// started without one, so no number of requests makes a node start unbounded threads.
#[derive(Default)]
pub(crate) struct Slots {
    runs: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
}

/// One of the [`Slots`], given back when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(count: &Arc<AtomicUsize>, max: usize) -> Result<Slot, String> {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
        .map(|_| Slot(count.clone()))
        .map_err(|_| format!("too many migrations in progress (at most {max} at once on a node)"))
}

impl Slots {
    /// A slot for a migration run (the thread of a source or a destination).
    pub(crate) fn run(&self) -> Result<Slot, String> {
        take_slot(&self.runs, MAX_RUNS)
    }

    /// A slot for a thread that waits for a migration on someone's behalf.
    pub(crate) fn waiter(&self) -> Result<Slot, String> {
        take_slot(&self.waiting, MAX_WAITING)
    }
}

/// Starts migrating process `pid` (here) to node `to`.
pub(crate) fn start(sh: &Arc<Host>, pid: Pid, to: &str, mechanism: Option<Mechanism>, caller: Caller) -> Result<MigHandle, String> {
    let peer = sh.peer_by_name(to).ok_or_else(|| {
        if to == sh.me.name {
            format!("process {} is already on node {to}", tern_vm::value::name_text(pid))
        } else {
            format!("there is no node {to:?} in the mesh")
        }
    })?;
    let dest = peer.conf.id;
    if !sh.is_up(dest) {
        return Err(format!("node {to} is down"));
    }
    let node = sh.node();
    if !node.is_local(pid) {
        return Err(format!("process {} is not on node {}", tern_vm::value::name_text(pid), sh.me.name));
    }
    let slot = sh.mig_slots.run()?;
    if !sh.mig.moving.lock().insert(pid) {
        return Err(format!("process {} is already being migrated", tern_vm::value::name_text(pid)));
    }
    let mechanism = mechanism.unwrap_or(sh.cfg.migration);
    let mid = (u64::from(sh.me.id) << 48) | (sh.mig.next.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1));
    let inputs = sh.mig.register(mid);
    let progress = Arc::new(Progress::default());
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let sh2 = sh.clone();
    let p2 = progress.clone();
    let rt = sh.rt.get().cloned().ok_or("the network runtime is not running")?;
    std::thread::Builder::new()
        .name(format!("tern-mig-out-{mid:x}"))
        .spawn(move || {
            let _slot = slot;
            let report = run_source(&sh2, SourceRun::new(mid, pid, dest, mechanism, caller, p2, rt), inputs);
            sh2.mig.runs.lock().remove(&mid);
            sh2.mig.moving.lock().remove(&pid);
            {
                let mut r = sh2.mig.reports.lock();
                r.push(report.clone());
                let n = r.len();
                if n > 64 {
                    r.drain(..n - 64);
                }
            }
            let _ = done_tx.send(report);
        })
        .map_err(|e| {
            sh.mig.runs.lock().remove(&mid);
            sh.mig.moving.lock().remove(&pid);
            format!("cannot start a thread: {e}")
        })?;
    Ok(MigHandle { progress, done })
}

struct SourceRun {
    mid: u64,
    pid: Pid,
    dest: u16,
    mechanism: Mechanism,
    caller: Caller,
    progress: Arc<Progress>,
    rt: tokio::runtime::Handle,
    bulk: Option<mpsc::Sender<Vec<u8>>>,
    faults: Option<mpsc::Sender<Vec<u8>>>,
    image: Option<Vec<u8>>,
    /// Modules the destination said it lacks.
    need: Vec<ModuleHash>,
    heap: Option<tern_vm::heap::Heap>,
    committed: bool,
    early_fetches: Vec<MigMsg>,
    late_info: Option<(u32, Vec<(u64, u32)>)>,
    link_chans: Vec<u64>,
    zero_pages: u64,
    bytes: u64,
    held: u64,
    modules_sent: u32,
    dest_stats: Option<DestStats>,
    reductions_at_start: u64,
    reductions_during_rounds: u64,
    failure: Option<String>,
}

impl SourceRun {
    fn new(
        mid: u64,
        pid: Pid,
        dest: u16,
        mechanism: Mechanism,
        caller: Caller,
        progress: Arc<Progress>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        SourceRun {
            mid,
            pid,
            dest,
            mechanism,
            caller,
            progress,
            rt,
            bulk: None,
            faults: None,
            image: None,
            need: Vec::new(),
            heap: None,
            committed: false,
            early_fetches: Vec::new(),
            late_info: None,
            link_chans: Vec::new(),
            zero_pages: 0,
            bytes: 0,
            held: 0,
            modules_sent: 0,
            dest_stats: None,
            reductions_at_start: 0,
            reductions_during_rounds: 0,
            failure: None,
        }
    }

    fn send_stream(&mut self, fault: bool, w: &MigWire) -> bool {
        let b = frame_bytes(w);
        self.bytes += b.len() as u64;
        let out = if fault { self.faults.as_ref().or(self.bulk.as_ref()) } else { self.bulk.as_ref() };
        match out {
            Some(tx) => tx.blocking_send(b).is_ok(),
            None => false,
        }
    }

    /// Sends pages' contents (read from the process, or from its heap once it left).
    fn send_pages(&mut self, node: &Node, pages: &[u32], fault: bool) -> Result<(), String> {
        for chunk in pages.chunks(PAGES_PER_FRAME) {
            let copies = match &self.heap {
                Some(h) => tern_vm::node::copy_pages_bytes(h, chunk),
                None => node.read_pages_bytes(self.pid, chunk.to_vec()).map_err(|e| e.to_string())?,
            };
            let recs: Vec<PageRec> = copies
                .into_iter()
                .map(|(index, words)| {
                    if words.is_none() {
                        self.zero_pages += 1;
                    }
                    PageRec { index, data: words }
                })
                .collect();
            self.progress.sent_pages.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if !self.send_stream(fault, &MigWire::Pages { mid: self.mid, pages: recs }) {
                return Err("the migration stream is closed".into());
            }
        }
        Ok(())
    }
}

/// The nodes told where a migrated process went (the link update): its partners (the
/// nodes it talks with, and its birth node) and every other node that is up. Telling
/// every node makes locating it independent of its birth node, which may fail later;
/// a node that is down now learns the route from the session when it is back, or asks.
fn link_update_nodes(sh: &Host, node: &Node, pid: Pid, dest: u16) -> Vec<u16> {
    let mut v = node.partner_nodes(pid);
    for &id in sh.peers.keys() {
        if id != dest && sh.is_up(id) && !v.contains(&id) {
            v.push(id);
        }
    }
    v
}

/// `hashes` and every module they refer to, transitively: a process links the modules
/// it imports only when it first runs the import, maybe after it moved.
fn with_imports(node: &Node, hashes: Vec<ModuleHash>) -> Vec<ModuleHash> {
    let mut seen: HashSet<ModuleHash> = hashes.iter().copied().collect();
    let mut out = hashes.clone();
    let mut todo = hashes;
    while let Some(h) = todo.pop() {
        let Some(m) = node.vm().module(&h) else { continue };
        for c in &m.module.consts {
            if let tern_vm::bytecode::Const::Module(d) = c {
                if seen.insert(*d) {
                    out.push(*d);
                    todo.push(*d);
                }
            }
        }
    }
    out
}

fn set_phase(p: &Progress, s: &str) {
    *p.phase.lock() = s.to_string();
}

fn run_source(sh: &Arc<Host>, mut r: SourceRun, inputs: crossbeam_channel::Receiver<Input>) -> MigReport {
    let node = sh.node();
    let started = Instant::now();
    let now = || sh.now_us();
    let mut report = MigReport {
        pid: r.pid,
        from: sh.me.name.clone(),
        to: sh.peers.get(&r.dest).map(|p| p.conf.name.clone()).unwrap_or_default(),
        mechanism: r.mechanism,
        ..MigReport::default()
    };
    let fail_early = |report: &mut MigReport, why: String| {
        report.outcome = why;
        report.ok = false;
        report.total_time_us = started.elapsed().as_micros() as u64;
        report.clone()
    };
    let size_pages = match node.at_safepoint(r.pid, |p| (p.heap.page_count() as u32, p.heap.first_absent()), Duration::from_secs(10)) {
        Ok((n, None)) => n,
        Ok((_, Some(_))) => {
            return fail_early(
                &mut report,
                "some of its pages are still on the node it came from (it moves again once they are all here)".into(),
            )
        }
        Err(e) => return fail_early(&mut report, e.to_string()),
    };
    report.heap_pages = size_pages;
    r.progress.total_pages.store(u64::from(size_pages), Ordering::Relaxed);
    set_phase(&r.progress, "connecting");
    let to_name = report.to.clone();
    // A connection being made again is waited for a little.
    let mut conn = None;
    for _ in 0..100 {
        conn = sh.connection(r.dest);
        if conn.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(conn) = conn else {
        return fail_early(&mut report, format!("no connection to node {to_name}"));
    };
    let opened = r.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await });
    let (send, recv) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail_early(&mut report, format!("cannot open a stream to node {to_name}: {e}")),
        Err(_) => return fail_early(&mut report, format!("cannot open a stream to node {to_name}: timed out")),
    };
    r.bulk = Some(spawn_writer(&r.rt, send, 0));
    if let Some(tx) = sh.mig.runs.lock().get(&r.mid).cloned() {
        r.rt.spawn(read_frames(recv, r.dest, sh.cfg.limits.frame_bytes as usize, tx));
    }
    let linked: Vec<ModuleHash> =
        node.at_safepoint(r.pid, |p| p.modules.iter().map(|m| m.hash).collect(), Duration::from_secs(10)).unwrap_or_default();
    let modules = with_imports(node, linked);
    r.reductions_at_start = node.at_safepoint(r.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(0);
    let init = SourceInit {
        mid: r.mid,
        pid: r.pid,
        me: sh.me.id,
        dest: r.dest,
        size_pages,
        mechanism: r.mechanism,
        partners: link_update_nodes(sh, node, r.pid, r.dest),
    };
    let mut src = Source::new(now(), mig_config(sh), init);
    set_phase(&r.progress, "offered");
    // The modules it runs, so the destination can say which it lacks.
    let mut first = true;
    loop {
        while let Some(a) = src.poll_action() {
            source_action(sh, node, &mut r, &mut src, a);
        }
        while let Some((to, m)) = src.poll_transmit() {
            if to != r.dest {
                if let MigMsg::LinkUpdate { mid, pid, to: at } = m {
                    let (moves, chans) = r.late_info.clone().unwrap_or_default();
                    let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, pid, to: at, moves, chans }));
                }
                continue;
            }
            if on_session(&m) {
                // The commit decision also takes the migration's stream, the fast path;
                // the session is the sure one (a copy that comes second is ignored).
                if matches!(m, MigMsg::Commit { .. }) {
                    let _ = r.send_stream(false, &MigWire::Msg(m.clone()));
                }
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::Msg(m)));
                continue;
            }
            let ok = match &m {
                MigMsg::Pages { pages, .. } => r.send_pages(node, pages, false).is_ok(),
                MigMsg::PageData { pages, pushed, .. } => r.send_pages(node, pages, !pushed).is_ok(),
                MigMsg::Final { pages, .. } => {
                    let mut pages = pages.clone();
                    // Pages the heap grew by since the offer go with the image (the
                    // machines know the offered pages only).
                    if let Ok(n) = node.heap_pages(r.pid) {
                        pages.extend(size_pages..n);
                    }
                    let mut ok = r.send_pages(node, &pages, false).is_ok();
                    if ok && !r.need.is_empty() {
                        let mods: Vec<serde_bytes::ByteBuf> = r
                            .need
                            .iter()
                            .filter_map(|h| node.vm().module(h))
                            .map(|m| serde_bytes::ByteBuf::from(m.module.encode()))
                            .collect();
                        r.modules_sent = mods.len() as u32;
                        ok = r.send_stream(false, &MigWire::Modules { mid: r.mid, modules: mods });
                    }
                    let image = r.image.take().unwrap_or_default();
                    let part = (sh.cfg.limits.frame_bytes as usize).saturating_sub(4096).max(1 << 16);
                    let chunks: Vec<&[u8]> = if image.is_empty() { vec![&[][..]] } else { image.chunks(part).collect() };
                    let n = chunks.len();
                    for (k, c) in chunks.into_iter().enumerate() {
                        ok = ok
                            && r.send_stream(
                                false,
                                &MigWire::Image { mid: r.mid, part: serde_bytes::ByteBuf::from(c.to_vec()), last: k + 1 == n },
                            );
                    }
                    ok
                }
                _ => true,
            };
            let ok = ok && r.send_stream(matches!(m, MigMsg::PageData { pushed: false, .. }), &wire_msg(m.clone()));
            if first {
                first = false;
                // Right after the offer: the process's code, by hash only.
                let _ = r.send_stream(false, &MigWire::Need { mid: r.mid, hashes: modules.clone() });
            }
            if !ok && !src.commit_sent() && src.outcome().is_none() {
                r.failure = Some("the connection to the destination was lost".into());
                src.handle_timeout(u64::MAX);
            }
        }
        if let Some(o) = src.outcome() {
            // Wait briefly for the destination's side of the report.
            if r.dest_stats.is_none() && matches!(o, SourceOutcome::Committed) {
                if let Ok(Input::Wire(_, MigWire::DestDone { stats, .. })) = next_input(&inputs, Duration::from_secs(2)) {
                    r.dest_stats = Some(stats);
                }
            }
            break;
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            r.failure.get_or_insert_with(|| "this node shut down".into());
            break;
        }
        match next_input(&inputs, wait_until(src.poll_timeout(), now())) {
            Ok(Input::Wire(from, w)) => match w {
                MigWire::Msg(m @ MigMsg::Fetch { .. }) if !r.committed => r.early_fetches.push(m),
                MigWire::Msg(m) => {
                    if matches!(m, MigMsg::RoundAck { .. }) {
                        set_phase(&r.progress, "pre-copy");
                    }
                    src.handle(now(), from, m)
                }
                MigWire::Need { hashes, .. } => r.need = hashes,
                MigWire::DestDone { stats, .. } => r.dest_stats = Some(stats),
                _ => {}
            },
            Ok(Input::StreamFailed(e)) => {
                if !src.commit_sent() && src.outcome().is_none() {
                    r.failure = Some(format!("the connection to the destination failed: {e}"));
                    src.handle_timeout(u64::MAX);
                } else {
                    // After the commit point: pages still go once the destination opens a
                    // stream again (it asks again for every page it lacks).
                    r.bulk = None;
                    r.faults = None;
                }
            }
            Ok(Input::FaultStream(tx)) => {
                if r.bulk.as_ref().is_none_or(|b| b.is_closed()) {
                    r.bulk = Some(tx.clone());
                }
                r.faults = Some(tx);
            }
            Ok(Input::PeerDown(n)) => {
                if n == r.dest && !src.commit_sent() && src.outcome().is_none() {
                    r.failure = Some(format!("node {} stopped answering", report.to));
                }
                src.peer_down(now(), n)
            }
            Ok(Input::PeerRestarted(n)) => {
                if n == r.dest && !src.commit_sent() && src.outcome().is_none() {
                    r.failure = Some(format!("node {} restarted", report.to));
                }
                src.peer_restarted(now(), n)
            }
            Ok(Input::Fault(_) | Input::Frame(..) | Input::PeerUp(_)) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => src.handle_timeout(now()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if r.committed && !r.early_fetches.is_empty() {
            for m in std::mem::take(&mut r.early_fetches) {
                src.handle(now(), r.dest, m);
            }
        }
    }
    // The report.
    let rep = src.report();
    report.rounds = rep.rounds.clone();
    report.stop_reason = format!("{:?}", rep.stop);
    report.throttle_level = rep.throttle;
    report.redundant_pages = rep.redundant_pages;
    report.zero_pages_skipped = r.zero_pages;
    report.final_pages = rep.final_pages;
    report.absent_pages_at_resume = rep.absent_at_resume;
    report.freeze_time_us = rep.freeze_time_us.unwrap_or(0);
    report.total_time_us = started.elapsed().as_micros() as u64;
    report.bytes_sent = r.bytes;
    report.bandwidth_bytes_per_ms = rep.bandwidth_bytes_per_ms;
    report.reductions_during_rounds = r.reductions_during_rounds;
    report.pages_pushed = u64::from(rep.pages_pushed);
    report.dependency_ended_us = rep.dependency_ended_us.map_or(0, |t| t.saturating_sub(rep.started_us));
    report.messages_held = r.held;
    report.link_updates = rep.link_updates;
    report.modules_sent = r.modules_sent;
    if let Some(d) = &r.dest_stats {
        // Frozen here until `Committed` came back, plus the destination's wait from
        // `Commit` to running it: an upper bound of the time it was stopped.
        report.freeze_time_us += d.resume_wait_us;
        report.page_faults = d.page_faults;
        let l = &d.fault_latency_us;
        let pct = |q: usize| if l.is_empty() { 0 } else { l[((l.len() - 1) * q) / 100] };
        report.fault_latency_p50_us = pct(50);
        report.fault_latency_p99_us = pct(99);
        report.fault_latency_max_us = l.last().copied().unwrap_or(0);
    }
    match src.outcome() {
        Some(SourceOutcome::Committed) => {
            report.ok = true;
            report.outcome = "committed".into();
        }
        Some(SourceOutcome::Failed(f)) => {
            report.outcome = r.failure.clone().unwrap_or_else(|| f.to_string());
            report.outcome = format!("{}; the process runs on at {}", report.outcome, sh.me.name);
        }
        Some(SourceOutcome::InDoubt(f)) => report.outcome = format!("in doubt ({f}): the process is kept frozen here and never resumed"),
        None => report.outcome = "the migration was stopped".into(),
    }
    report
}

fn source_action(sh: &Arc<Host>, node: &Node, r: &mut SourceRun, src: &mut Source, a: Action) {
    let now = sh.now_us();
    match a {
        Action::StartDirtyTracking => {
            let _ = node.take_dirty(r.pid);
            set_phase(&r.progress, "pre-copy");
        }
        Action::CollectDirty => match node.take_dirty(r.pid) {
            Ok(d) => src.pages_dirtied(now, &d),
            Err(e) => {
                r.failure = Some(e.to_string());
                src.handle_timeout(u64::MAX);
            }
        },
        Action::Throttle { level } => node.set_throttle(r.pid, level.min(8) as u8),
        Action::Freeze => {
            set_phase(&r.progress, "freezing");
            if src.in_rounds() || matches!(r.mechanism, Mechanism::Precopy | Mechanism::Hybrid) {
                let red = node.at_safepoint(r.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(r.reductions_at_start);
                r.reductions_during_rounds = red.saturating_sub(r.reductions_at_start);
            }
            match node.freeze(r.pid, Duration::from_secs(30)) {
                Ok(()) => {
                    // Only pre-copy needs the pages dirtied since its last round.
                    let dirty = if matches!(r.mechanism, Mechanism::Precopy | Mechanism::Hybrid) {
                        node.take_dirty(r.pid).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    match node.export_state(r.pid) {
                        Ok(img) => {
                            let len = img.len() as u64;
                            r.image = Some(img);
                            src.frozen(sh.now_us(), &dirty, len);
                            set_phase(&r.progress, "frozen");
                        }
                        Err(e) => {
                            r.failure = Some(e.to_string());
                            src.handle_timeout(u64::MAX);
                        }
                    }
                }
                Err(e) => {
                    r.failure = Some(e.to_string());
                    src.handle_timeout(u64::MAX);
                }
            }
        }
        Action::Unfreeze { .. } => {
            node.set_throttle(r.pid, 0);
            if matches!(r.caller, Caller::Itself) {
                let why =
                    r.failure.clone().or_else(|| src.outcome().map(|o| format!("{o:?}"))).unwrap_or_else(|| "the migration failed".into());
                node.answer_migrate(r.pid, IoResult::Failed(why));
            }
            node.abort_export(r.pid);
        }
        Action::ForwardHeld { .. } => {
            // Committed: the destination owns the process. What reached it here after its
            // image follows it; from now on the slot here forwards.
            r.committed = true;
            set_phase(&r.progress, "committed");
            if r.mechanism == Mechanism::Lazy || r.mechanism == Mechanism::Hybrid {
                r.heap = node.take_heap(r.pid).ok();
            }
            // A partner that is down now will not be reported down again: its link update
            // waits in the session for its return, and holds nothing up here.
            for &p in sh.peers.keys() {
                if p != r.dest && !sh.is_up(p) {
                    src.peer_down(now, p);
                }
            }
            match node.commit_export(r.pid, r.dest) {
                Ok(late) => {
                    r.held = late.inbox.len() as u64 + late.chans.iter().map(|c| c.queue.len() as u64).sum::<u64>();
                    r.link_chans = late.chans.iter().map(|c| c.chan).collect();
                    r.late_info = Some((late.moves, late.chans.iter().map(|c| (c.chan, c.moves)).collect()));
                    // Both ways too: the process runs at the destination once this is there.
                    let w = MigWire::Late { mid: r.mid, late };
                    let _ = r.send_stream(false, &w);
                    let _ = sh.send_frame(r.dest, &Frame::Mig(w));
                }
                Err(e) => sh.log(&format!("migration of {}: {e}", tern_vm::value::name_text(r.pid))),
            }
        }
        Action::LinkUpdate { .. } => {}
        Action::DeleteSource => {
            r.heap = None;
        }
        // Every partner acknowledged: nothing here points at it any more.
        Action::Done if src.is_committed() => node.drop_forwarding(r.pid, &r.link_chans),
        _ => {}
    }
}

fn run_dest(
    sh: Arc<Host>,
    from: u16,
    offer: MigMsg,
    out: mpsc::Sender<Vec<u8>>,
    inputs: crossbeam_channel::Receiver<Input>,
    rt: tokio::runtime::Handle,
) {
    let node = sh.node();
    let mid = offer.mid();
    let MigMsg::Offer { pid, size_pages, .. } = offer else { return };
    // Pages are installed as they come, in the heap the process will get: made now, so
    // a heap this machine has no memory for refuses the offer (never aborts the node).
    let mut staged = tern_vm::heap::Heap::new(node.vm().config.heap);
    let refuse = if node.is_local(pid) || sh.mig.by_pid.lock().contains_key(&pid) {
        Some(RefuseReason::Busy)
    } else if u64::from(size_pages) * sh.cfg.page_size as u64 > sh.cfg.limits.heap_bytes {
        Some(RefuseReason::OverLimits)
    } else if let Err(e) = staged.ensure_pages(size_pages as usize) {
        sh.log(&format!("refused to take {}: {e}", tern_vm::value::name_text(pid)));
        staged = tern_vm::heap::Heap::new(node.vm().config.heap);
        Some(RefuseReason::OverLimits)
    } else {
        None
    };
    let now = || sh.now_us();
    let Some(mut d) = Dest::new(now(), mig_config(&sh), sh.me.id, from, &offer, refuse) else { return };
    let send = |w: &MigWire, fault: &Option<mpsc::Sender<Vec<u8>>>| -> bool {
        let b = frame_bytes(w);
        match fault {
            Some(f) => f.blocking_send(b).is_ok(),
            None => out.blocking_send(b).is_ok(),
        }
    };
    // The offer is followed by the hashes of the process's modules: the answer (those
    // missing here) goes before the machine's `Accept`, so the source has it in time.
    if refuse.is_none() {
        match next_input(&inputs, Duration::from_secs(30)) {
            Ok(Input::Wire(_, MigWire::Need { hashes, .. })) => {
                let missing: Vec<ModuleHash> = hashes.into_iter().take(4096).filter(|h| !node.vm().has_module(h)).collect();
                let _ = out.blocking_send(frame_bytes(&MigWire::Need { mid, hashes: missing }));
            }
            _ => {
                sh.mig.runs.lock().remove(&mid);
                return;
            }
        }
    }
    let mut fault_tx: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut image: Vec<u8> = Vec::new();
    let mut image_done = false;
    let mut imported = false;
    let mut resume_pending = false;
    let mut late: Option<Late> = None;
    let mut running = false;
    let mut fetched_at: HashMap<u32, u64> = HashMap::new();
    let mut stats = DestStats::default();
    let mut resumed_at = 0u64;
    let mut bad: Option<String> = None;
    let mut commit_at = 0u64;
    // After the stream to the source failed with pages still there: when to try again to
    // open one and ask for every absent page.
    let mut resync_at: Option<u64> = None;
    loop {
        if let Some(t) = resync_at.filter(|&t| now() >= t) {
            resync_at = None;
            if d.pages_pending() {
                match open_fault_stream(&sh, &rt, from, mid) {
                    Some(tx) => {
                        fault_tx = Some(tx);
                        sh.log(&format!("migration of {}: asking the source again for its pages", tern_vm::value::name_text(pid)));
                        d.resync(now());
                    }
                    None => resync_at = Some(t + RESYNC_RETRY_US),
                }
            }
        }
        while let Some(a) = d.poll_action() {
            match a {
                Action::Reinstate { .. } if sh.mig.hooks.lock().stall_before_ready => {}
                Action::Reinstate { absent } => {
                    if sh.mig.hooks.lock().hold_before_ready {
                        sh.log(&format!("test hook: migration of {} held before Ready", tern_vm::value::name_text(pid)));
                        while sh.mig.hooks.lock().hold_before_ready && !sh.shutdown.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    let absent_list: Vec<u32> =
                        if absent > 0 { (0..size_pages).filter(|&p| !d.is_present(p)).collect() } else { Vec::new() };
                    let r = if !image_done {
                        Err("the image is incomplete".to_string())
                    } else if let Some(b) = bad.take() {
                        Err(b)
                    } else {
                        let heap = std::mem::replace(&mut staged, tern_vm::heap::Heap::new(node.vm().config.heap));
                        node.import_state(&image, tern_vm::node::Staged::Heap(Box::new(heap)), &absent_list).map_err(|e| e.to_string())
                    };
                    image = Vec::new();
                    match r {
                        Ok(_) => {
                            imported = true;
                            if !absent_list.is_empty() {
                                sh.mig.by_pid.lock().insert(pid, mid);
                            }
                            d.reinstated(now());
                        }
                        Err(e) => {
                            sh.log(&format!("refused the image of {}: {e}", tern_vm::value::name_text(pid)));
                            d.reinstate_failed(now());
                        }
                    }
                }
                Action::Discard => {
                    if imported {
                        node.abort_import(pid);
                        imported = false;
                    }
                    sh.mig.by_pid.lock().remove(&pid);
                    sh.mig.aborted.lock().insert(mid);
                }
                Action::Resume { .. } => {
                    resume_pending = true;
                    commit_at = now();
                }
                Action::Kill { why } => {
                    sh.mig.by_pid.lock().remove(&pid);
                    let why = format!("migrated from node {}: {why}", sh.peers.get(&from).map_or("?", |p| p.conf.name.as_str()));
                    sh.log(&format!("process {} ended: {why}", tern_vm::value::name_text(pid)));
                    node.pages_lost(pid, &why);
                }
                _ => {}
            }
        }
        if resume_pending && !running {
            if let Some(l) = late.take() {
                // Commit and the late messages are both here: it runs.
                running = true;
                resumed_at = now();
                stats.resume_wait_us = resumed_at.saturating_sub(commit_at);
                if let Err(e) = node.commit_import(pid, l) {
                    sh.log(&format!("cannot resume {}: {e}", tern_vm::value::name_text(pid)));
                }
            }
        }
        while let Some((to, m)) = d.poll_transmit() {
            if on_session(&m) {
                if matches!(m, MigMsg::Committed { .. } | MigMsg::Aborted { .. }) {
                    let _ = send(&MigWire::Msg(m.clone()), &None);
                }
                if let MigMsg::LinkUpdate { mid, pid, to: at } = m {
                    let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, pid, to: at, moves: 0, chans: Vec::new() }));
                } else {
                    let _ = sh.send_frame(to, &Frame::Mig(MigWire::Msg(m)));
                }
                continue;
            }
            if let MigMsg::Fetch { pages: want, .. } = &m {
                for &p in want {
                    fetched_at.entry(p).or_insert_with(now);
                }
                if fault_tx.as_ref().is_none_or(|f| f.is_closed()) {
                    fault_tx = open_fault_stream(&sh, &rt, from, mid);
                }
                if !send(&MigWire::Msg(m.clone()), &fault_tx) {
                    // No stream: the pages cannot come back on one either; ask again for
                    // everything once a stream opens.
                    fault_tx = None;
                    resync_at.get_or_insert(now() + RESYNC_RETRY_US);
                }
                continue;
            }
            let _ = send(&MigWire::Msg(m), &None);
        }
        if let Some(o) = d.outcome() {
            if matches!(o, DestOutcome::Committed) && !running {
                // Committed but the late messages are not here yet: wait for them.
            } else {
                stats.outcome = match o {
                    DestOutcome::Committed => "committed".into(),
                    DestOutcome::Aborted(f) => format!("aborted: {f}"),
                    DestOutcome::ProcessLost(f) => format!("process lost: {f}"),
                };
                stats.page_faults = u64::from(d.report().faults);
                stats.pages_received = u64::from(d.report().pages_received);
                stats.fault_latency_us.sort_unstable();
                stats.dependency_ended_after_us = d.report().dependency_ended_us.map(|t| t.saturating_sub(resumed_at));
                if matches!(o, DestOutcome::Committed) {
                    let _ = sh.send_frame(from, &Frame::Mig(MigWire::DestDone { mid, stats: stats.clone() }));
                }
                break;
            }
        }
        if sh.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match next_input(&inputs, wait_until(d.poll_timeout(), now())) {
            Ok(Input::Wire(f, w)) => match w {
                MigWire::Msg(MigMsg::Offer { .. }) => {}
                MigWire::Final { mid, image_len, pages: p, absent, partners } => {
                    // At most every page of the heap limit in either list.
                    let max = (sh.cfg.limits.heap_bytes / sh.cfg.page_size as u64).min(u64::from(u32::MAX)) as u32 + 1;
                    match (from_ranges(&p, max), from_ranges(&absent, max)) {
                        (Some(pages), Some(absent)) => d.handle(now(), f, MigMsg::Final { mid, image_len, pages, absent, partners }),
                        _ => {
                            bad = Some("the final page lists are over the heap limit".into());
                            d.handle(now(), f, MigMsg::Final { mid, image_len, pages: Vec::new(), absent: Vec::new(), partners });
                        }
                    }
                }
                MigWire::Msg(m) => {
                    if let MigMsg::PageData { pushed, pages: ref got, .. } = m {
                        if pushed {
                            stats.pages_pushed += got.len() as u64;
                        }
                    }
                    d.handle(now(), f, m)
                }
                MigWire::Pages { pages: recs, .. } => {
                    let pw = sh.cfg.page_size / 8;
                    let mut supply = Vec::new();
                    for rec in recs {
                        if let Some(b) = &rec.data {
                            if b.len() != pw * 8 {
                                bad = Some(format!("page {} has the wrong size", rec.index));
                                continue;
                            }
                        }
                        if let Some(t) = fetched_at.remove(&rec.index) {
                            stats.fault_latency_us.push(now().saturating_sub(t));
                        }
                        if imported {
                            supply.push((rec.index, rec.data.as_deref().map_or_else(|| vec![0; pw], bytes_to_words)));
                            continue;
                        }
                        // Pages past the offered size: the heap grew before it was frozen.
                        if rec.index as usize >= staged.page_count() {
                            if let Err(e) = staged.ensure_pages(rec.index as usize + 1) {
                                bad = Some(match e {
                                    tern_vm::heap::HeapError::OutOfMemory(_) => format!("page {}: {e}", rec.index),
                                    _ => format!("page {} is outside the heap limit", rec.index),
                                });
                                continue;
                            }
                        }
                        match &rec.data {
                            Some(b) => {
                                let _ = staged.supply_page_bytes(rec.index, b);
                            }
                            None => staged.zero_page(rec.index),
                        }
                    }
                    if !supply.is_empty() {
                        node.supply_pages(pid, supply);
                    }
                    // Pages are progress: keep the receiving deadline from expiring.
                    d.handle(now(), f, MigMsg::Pages { mid, round: u32::MAX, pages: Vec::new() });
                }
                MigWire::Modules { modules, .. } => {
                    for m in modules {
                        match Module::decode(&m) {
                            Ok(m) => {
                                if let Err(e) = node.vm().load(m) {
                                    bad = Some(format!("a module of the process does not verify: {e}"));
                                }
                            }
                            Err(e) => bad = Some(format!("a module of the process is damaged: {e}")),
                        }
                    }
                }
                MigWire::Image { part, last, .. } => {
                    if image.len() + part.len() > MAX_IMAGE {
                        bad = Some("the image is over the size limit".into());
                    } else {
                        image.extend_from_slice(&part);
                    }
                    image_done = last;
                }
                MigWire::Late { late: l, .. } => late = Some(l),
                _ => {}
            },
            Ok(Input::Fault(page)) => {
                d.page_fault(now(), page);
            }
            Ok(Input::StreamFailed(e)) => {
                if !d.committed() && d.outcome().is_none() {
                    sh.log(&format!("migration of {}: {e}", tern_vm::value::name_text(pid)));
                    d.handle(now(), from, MigMsg::Abort { mid });
                } else if d.pages_pending() {
                    // Pages asked for or pushed may be lost with it: once a stream can be
                    // opened again, every absent page is asked for again.
                    fault_tx = None;
                    resync_at = Some(now());
                }
            }
            Ok(Input::PeerDown(n)) => d.peer_down(now(), n),
            Ok(Input::PeerRestarted(n)) => d.peer_restarted(now(), n),
            Ok(Input::PeerUp(n)) => d.peer_up(now(), n),
            Ok(Input::FaultStream(_) | Input::Frame(..)) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => d.handle_timeout(now()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    sh.mig.by_pid.lock().remove(&pid);
    sh.mig.runs.lock().remove(&mid);
}

/// How often a destination tries to open a stream to the source again, after losing it
/// with pages still there.
const RESYNC_RETRY_US: u64 = 200_000;

/// Opens the high-priority page-fault stream to node `to` for migration `mid` (its
/// answers go to the migration's inputs), if a connection is there.
fn open_fault_stream(sh: &Arc<Host>, rt: &tokio::runtime::Handle, to: u16, mid: u64) -> Option<mpsc::Sender<Vec<u8>>> {
    let conn = sh.connection(to)?;
    let (s, recv) = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await }).ok()?.ok()?;
    let tx = sh.mig.runs.lock().get(&mid).cloned()?;
    rt.spawn(read_frames(recv, to, sh.cfg.limits.frame_bytes as usize, tx));
    Some(spawn_writer(rt, s, FAULT_PRIORITY))
}

/// Migrates `pid` to node `to` and waits for the report: here if the process is here,
/// else asking the node it is on.
pub(crate) fn migrate_and_wait(sh: &Arc<Host>, pid: Pid, to: &str, mechanism: Option<Mechanism>) -> Result<MigReport, String> {
    migrate_via(sh, pid, to, mechanism, 0, None)
}

/// As [`migrate_and_wait`], for a request that `hops` nodes have passed on so far, the
/// last of them `asker` (which believed the process is here). A request about a process
/// ends in one answer, never a loop: a node that does not host it passes it on only by
/// a route of its own (the first asker also by the process's birth node), never back to
/// the node that asked, and at most [`MAX_HOPS`] times; else the process is gone, and
/// the answer is the one for any process that has ended.
pub(crate) fn migrate_via(
    sh: &Arc<Host>,
    pid: Pid,
    to: &str,
    mechanism: Option<Mechanism>,
    hops: u8,
    asker: Option<u16>,
) -> Result<MigReport, String> {
    let node = sh.node();
    if node.is_local(pid) {
        let h = start(sh, pid, to, mechanism, Caller::None)?;
        return h.done.recv().map_err(|_| "the migration ended without a report".to_string());
    }
    let gone = || format!("there is no process {}", tern_vm::value::name_text(pid));
    // Passed on to here: only this node's own route counts. With none, the process is
    // not here and this node knows nothing newer than the asker (it would only point
    // back at the birth node, whose route sent the request here).
    if hops > 0 && !node.forwarding_state(pid, &[]).0 {
        return Err(gone());
    }
    let Some(at) = node.located(pid) else { return Err(gone()) };
    if at == sh.me.id || Some(at) == asker || hops >= MAX_HOPS {
        return Err(gone());
    }
    let q = wire::Query::Migrate { pid, to: to.to_string(), mechanism, hops: hops + 1 };
    match sh.ask(at, q, Duration::from_secs(600))? {
        wire::Answer::Migrated(r) => r.map(|b| *b),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
