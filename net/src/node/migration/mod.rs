//! Live migration over QUIC: the driver that runs the sans-IO machines of
//! [`crate::proto::migrate`] for real, one OS thread per migration on each side (the machines
//! decide; the driver moves pages, modules and the image, and carries out their
//! [`Action`](crate::proto::migrate::Action)s on the VM). See ARCHITECTURE.md, "one owner,
//! decided at the destination" and "a stall is not a crash".
//!
//! - `mod.rs`: a node's migrations (their inputs, the threads they may have, test
//!   hooks), starting one, requests passed on to the node a process is on, control
//!   frames that come on the session.
//! - `streams.rs`: the migration's own QUIC streams (framing, the page-fault stream);
//!   [`accept_streams`] here takes those a peer opens.
//! - `source.rs`: [`SourceRun`](source::SourceRun), the side the process leaves.
//! - `dest.rs`: [`DestRun`](dest::DestRun), the side it comes to.
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
//! link updates and their acknowledgements.
//!
//! **The VM.** Pages of a running process are read at its safepoints
//! ([`Node::read_pages_with`](tern_vm::node::Node::read_pages_with)), a few at a time
//! so it keeps running; the image is its state without pages (`Node::export_state`);
//! `transfer.rs`'s steps do the rest: the destination reinstates it frozen
//! (`Node::import_state`) and, once it has both the `Commit` and the late messages, runs
//! it (`Node::commit_import`); the source turns its slot into a forwarding pointer at
//! `Committed` (`Node::commit_export`) and, once every partner acknowledged its link
//! update, drops that too.

mod dest;
mod source;
mod streams;

use super::Host;
use crate::proto::mechanism::{How, Mechanism};
use crate::proto::migrate::{MigConfig, MigMsg, RefuseReason};
use crate::proto::wire::{self, Frame, MigReport, MigWire};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use streams::{frame_bytes, read_frames, spawn_writer, wire_mid, DestInputs};

type Pid = u64;

/// Pages per data frame on a migration stream: small enough that a destination
/// installing one keeps a fault waiting briefly (faults go first, between frames).
const PAGES_PER_FRAME: usize = 64;
/// Pages per message of the machines (sent as several frames).
const PAGES_PER_MSG: u32 = 256;
/// Frames the migration stream's writer may hold before the background push waits for
/// room: enough to keep the link busy, few enough that what is pushed is soon there.
const PUSH_QUEUE_FRAMES: usize = 8;

/// Fault latencies and waits a destination keeps for its report (the first ones).
const MAX_FAULT_SAMPLES: usize = 65_536;
/// Largest state image accepted (the heap's pages travel separately).
const MAX_IMAGE: usize = 256 << 20;
/// Priority of the page-fault stream (bulk streams have 0).
const FAULT_PRIORITY: i32 = 10;

/// What a migration thread is told.
pub(super) enum Input {
    Wire(u16, MigWire),
    /// A frame from a migration stream, still encoded (decoded on the migration's own
    /// thread, not on the network thread).
    Frame(u16, Vec<u8>, usize),
    /// A frame of pages (`MigWire::Pages`), still encoded: the destination reads it in
    /// place, each page copied once, into the heap.
    Pages(u16, Vec<u8>, usize),
    /// Its stream (or the connection) failed.
    StreamFailed(String),
    /// Source: the destination opened the page-fault stream.
    FaultStream(u16, mpsc::Sender<Vec<u8>>),
    /// Destination: a process of the migration touched an absent page (its own number).
    Fault(Pid, u32),
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
    /// Pages sent in each pre-copy round so far.
    pub rounds: Mutex<Vec<u32>>,
    /// The dirty set at the last collection, pages.
    pub dirty_pages: AtomicU64,
    /// The mechanism, once chosen (`auto` chooses after measuring).
    pub mechanism: Mutex<Option<Mechanism>>,
    /// Pages sent because the destination asked for them (its faults and their
    /// read-ahead) after its process resumed.
    pub pages_served: AtomicU64,
}

/// A migration started here: its progress and, at the end, its report.
pub struct MigHandle {
    pub progress: Arc<Progress>,
    /// The report at the end; before it, an early one if the move is in doubt (see
    /// `run_source`): a waiter takes the first.
    pub done: crossbeam_channel::Receiver<MigReport>,
}

/// Who waits for a migration's outcome besides the operator.
#[derive(Clone, Copy)]
pub(crate) enum Caller {
    None,
    /// A process that moves with it asked (`migrate(node)`, or a group's member calling
    /// `migrate_group`): answered only on failure, before it runs again.
    Itself(Pid),
}

/// A migration from here in flight: its process, destination, start and progress.
type LiveEntry = (Pid, String, Instant, Arc<Progress>);

/// The migrations of one node.
#[derive(Default)]
pub(crate) struct Migrations {
    runs: Mutex<HashMap<u64, crossbeam_channel::Sender<Input>>>,
    /// Destination: pid -> migration, for page faults.
    by_pid: Mutex<HashMap<Pid, u64>>,
    /// Destination: what the processes of each migration waited at their faults, µs
    /// (the first [`MAX_FAULT_SAMPLES`]), taken by its report. Kept here, not sent to the
    /// run: a fault that its own thread ends (pages it installs) is counted before the
    /// run can end.
    fault_waits: Mutex<HashMap<u64, Vec<u64>>>,
    /// Source: processes being migrated from here.
    moving: Mutex<HashSet<Pid>>,
    /// Migrations this node gave up as destination after `Ready` (a late `Commit` gets
    /// `Aborted`).
    aborted: Mutex<AbortedMids>,
    next: AtomicU64,
    /// Reports of migrations from here, newest last (bounded).
    pub(crate) reports: Mutex<Vec<MigReport>>,
    /// Migrations from here in flight: mid -> (pid, destination, started, progress).
    live: Mutex<HashMap<u64, LiveEntry>>,
    /// What `/metrics` counts of migrations.
    pub(crate) counters: super::metrics::MigCounters,
    /// The link speed to each node the last migration there measured, bytes per second
    /// (what `auto` goes by).
    pub(crate) links: Mutex<HashMap<u16, u64>>,
    /// Test only: failures to stage.
    pub(crate) hooks: Mutex<TestHooks>,
    /// Migrations to this node whose process was ended before its late messages came
    /// (newest last, at most [`MAX_ENDED_BEFORE_LATE`]): late messages that come after
    /// are dropped with a log line.
    ended_before_late: Mutex<VecDeque<u64>>,
    /// The newest migrations to this node that ended (at most [`MAX_DEST_ENDED`]): their
    /// processes, and how they ended (what a fault no migration serves is told).
    dest_ended: Mutex<VecDeque<(u64, Vec<Pid>, String)>>,
    /// Processes kept frozen here because their move is in doubt for good (see
    /// [`InDoubtMove`]), each member of a move under its pid. They stay in `moving` (no
    /// other move takes them) until an operator resolves them ([`Host::resolve_in_doubt`]).
    /// Bounded by the processes here: each entry is a live, frozen process.
    in_doubt: Mutex<HashMap<Pid, InDoubtMove>>,
}

/// A move in doubt for good: its source asked `to` to commit, and that node restarted
/// before it answered. Its old incarnation may have resumed the process and lost it with
/// itself (the process then ran there: resuming the copy here would run it twice), or
/// never had `Commit` (the copy here is the only one). Nothing left in the mesh tells
/// which; the source keeps the process frozen until an operator says (`tern ctl
/// resolve PID resume|end`).
#[derive(Debug, Clone)]
pub(crate) struct InDoubtMove {
    pub to: String,
    pub members: Vec<Pid>,
}

/// Most ended migrations [`Migrations::dest_ended`] remembers.
const MAX_DEST_ENDED: usize = 64;

/// See `MeshNode::table_sizes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigTableSizes {
    pub runs: usize,
    pub moving: usize,
    pub by_pid: usize,
    pub fault_waits: usize,
    /// Bounded ([`MAX_ABORTED`]).
    pub aborted: usize,
    /// Bounded ([`MAX_ENDED_BEFORE_LATE`]).
    pub ended_before_late: usize,
    /// Bounded (the newest 64).
    pub reports: usize,
    /// Processes frozen in a move in doubt for good, until resolved (each a live process).
    pub in_doubt: usize,
}

impl Migrations {
    pub(crate) fn table_sizes(&self) -> MigTableSizes {
        MigTableSizes {
            runs: self.runs.lock().len(),
            moving: self.moving.lock().len(),
            by_pid: self.by_pid.lock().len(),
            fault_waits: self.fault_waits.lock().len(),
            aborted: self.aborted.lock().set.len(),
            ended_before_late: self.ended_before_late.lock().len(),
            reports: self.reports.lock().len(),
            in_doubt: self.in_doubt.lock().len(),
        }
    }
}

/// Most migrations [`Migrations::ended_before_late`] remembers.
const MAX_ENDED_BEFORE_LATE: usize = 256;

/// Most migrations [`AbortedMids`] remembers.
const MAX_ABORTED: usize = 4096;

/// The migrations this node gave up as destination after it sent `Ready`, so that a
/// `Commit` that comes once their run is gone is answered `Aborted` (`session_frame`):
/// a source that sent `Commit` resumes its process only on that answer, and otherwise
/// keeps it frozen. Only these can get a `Commit` (a source sends it in answer to
/// `Ready`), and one can come long after the run ended: sent before the source learned
/// that this node gave up (it went down, or the stream failed), held up by a partition
/// the session outlasts.
///
/// Forgetting an entry never makes two copies run: a `Commit` with neither a run nor an
/// entry here is not answered, and its source stays in doubt with the process frozen (a
/// stall). So the set is bounded by that cost, not by a time a `Commit` could take:
/// - a source's entries go when it restarts: what its old incarnation sent is gone with
///   it, and its new one numbers migrations from 0 again, so an old entry could only
///   answer a new migration that got the same id;
/// - past [`MAX_ABORTED`] the oldest goes: its source stalls only if its `Commit` is
///   still on its way after 4096 later migrations to this node were given up after
///   `Ready` (and when this node gave up on a timeout it told the source `Aborted`
///   itself, so that entry is only a second answer).
#[derive(Default)]
pub(crate) struct AbortedMids {
    /// (migration, source node), oldest first.
    order: VecDeque<(u64, u16)>,
    set: HashSet<u64>,
}

impl AbortedMids {
    fn insert(&mut self, mid: u64, source: u16) {
        if self.set.insert(mid) {
            self.order.push_back((mid, source));
            if self.order.len() > MAX_ABORTED {
                if let Some((old, _)) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, mid: u64) -> bool {
        self.set.contains(&mid)
    }

    /// `source` restarted: nothing its old incarnation sent will come.
    fn forget_source(&mut self, source: u16) {
        let set = &mut self.set;
        self.order.retain(|&(mid, s)| {
            let keep = s != source;
            if !keep {
                set.remove(&mid);
            }
            keep
        });
    }
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
    /// The source waits this long (ms) after `Committed` before it sends the late
    /// messages (it logs "late messages ... held" when it starts); 0: not at all.
    pub hold_late_ms: u64,
    /// A destination's run, once its migration is done, waits this long (ms) before it
    /// ends, as one whose report waits for the JIT does; 0: not at all.
    pub hold_dest_end_ms: u64,
    /// The destination, given `Commit`, waits this long (ms) before it resumes the
    /// process and answers (it logs "holds Commit" when it starts); 0: not at all.
    pub hold_commit_ms: u64,
    /// The destination loses every copy of this page (of the process's heap) on its way
    /// to the process, as a broken host would, until the migration notices that the
    /// process lacks it (then it fetches it again, and the hook is off).
    pub lose_page_install: Option<u32>,
}

fn mig_config(sh: &Host) -> MigConfig {
    let no_push = sh.mig.hooks.lock().no_push;
    MigConfig {
        page_bytes: sh.cfg.page_size as u64,
        // Pages stream on their own QUIC stream; a stall there is a failed connection,
        // which QUIC reports. These bound a peer that stops answering.
        step_timeout_us: 30_000_000,
        commit_timeout_us: 10_000_000,
        // The pages sent frozen should take no more than this at the measured speed:
        // the rest of a freeze (`Final`, the image, `Ready`, `Commit`) takes 0.3-0.8 ms
        // between two nodes on one machine (bench/results/migration-speed.md), and the
        // whole should stay under 1 ms.
        freeze_budget_us: 250,
        max_rounds: 10,
        shrink_per_mille: 900,
        // A writer that outruns the link even slowed to 1/16 is slowed to 1/256 (QEMU's
        // auto-converge goes to 99%; `[limits] precopy_throttle`), four levels at a time:
        // measured in bench/results/migration-changes.md, 2026-12-07 (evening).
        max_throttle: sh.cfg.limits.precopy_throttle.min(crate::config::MAX_PRECOPY_THROTTLE) as u32,
        throttle_step: 4,
        prefetch: sh.cfg.prefetch,
        // Under a bandwidth cap, no read-ahead: it would go past the cap (a fault's own
        // pages are not held back, and a process reading its heap through asks ahead).
        readahead: if sh.policy_conf().bandwidth_mib_s > 0 { 0 } else { sh.cfg.readahead },
        // Three push turns: measured against one (the push kept most of the link while a
        // process read its heap through, and faults waited 2-3× longer) in
        // bench/results/migration-changes.md, 2026-12-07.
        fetch_quiet_us: 3_000,
        push_interval_us: if no_push { u64::MAX / 4 } else { 1_000 },
        push_pages: 256,
        max_pages_per_msg: PAGES_PER_MSG,
        source_down_limit_us: sh.cfg.limits.source_down_ms().saturating_mul(1_000),
        in_doubt_after_us: source::in_doubt_after(sh).as_micros() as u64,
        ..MigConfig::default()
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

    /// Migration `mid` no longer serves the pages of `pids`. Only its own entries go: a
    /// run that ends late (its report waits for the JIT, up to a second) may find that
    /// its process has moved on and come back by a newer migration, whose entry stays.
    pub(crate) fn forget_pids(&self, mid: u64, pids: impl IntoIterator<Item = Pid>) {
        let mut by_pid = self.by_pid.lock();
        for pid in pids {
            if by_pid.get(&pid) == Some(&mid) {
                by_pid.remove(&pid);
            }
        }
    }

    /// Migration `mid` to this node ended, as `how`.
    pub(crate) fn dest_ended(&self, mid: u64, pids: impl Iterator<Item = Pid>, how: String) {
        let mut q = self.dest_ended.lock();
        if q.len() >= MAX_DEST_ENDED {
            q.pop_front();
        }
        q.push_back((mid, pids.collect(), how));
    }

    /// Why no migration serves a fault of `pid`: its migrations here that ended, and how.
    pub(crate) fn why_unserved(&self, pid: Pid) -> String {
        let routed = self.by_pid.lock().get(&pid).copied();
        let ended: Vec<String> =
            self.dest_ended.lock().iter().filter(|(_, p, _)| p.contains(&pid)).map(|(m, _, how)| format!("{m:x} {how}")).collect();
        format!(
            "{}; its migrations here that ended: {}",
            match routed {
                Some(m) => format!("migration {m:x} names it but no longer runs"),
                None => "no migration here names it".into(),
            },
            if ended.is_empty() { "none remembered".into() } else { ended.join(", ") }
        )
    }

    /// A page fault of process `pid` (here, with pages on another node).
    pub(crate) fn fault(&self, pid: Pid, page: u32) -> bool {
        let mid = self.by_pid.lock().get(&pid).copied();
        mid.is_some_and(|m| self.input(m, Input::Fault(pid, page)))
    }

    /// A page fault of process `pid` ended after `wait_us` (what its report shows).
    pub(crate) fn fault_waited(&self, pid: Pid, wait_us: u64) {
        // `by_pid` held meanwhile: once a run has forgotten its pids and then taken its
        // waits, no wait of it comes after (nothing is left behind here).
        let by_pid = self.by_pid.lock();
        if let Some(&m) = by_pid.get(&pid) {
            self.counters.fault.observe(wait_us);
            let mut waits = self.fault_waits.lock();
            let w = waits.entry(m).or_default();
            if w.len() < MAX_FAULT_SAMPLES {
                w.push(wait_us);
            }
        }
    }

    /// Migration `mid`'s faults' waits so far (they are forgotten here).
    pub(crate) fn take_fault_waits(&self, mid: u64) -> Vec<u64> {
        self.fault_waits.lock().remove(&mid).unwrap_or_default()
    }

    /// A peer stopped answering (`restarted`: came back as a new incarnation): every
    /// migration is told.
    pub(crate) fn peer_gone(&self, node: u16, restarted: bool) {
        if restarted {
            self.aborted.lock().forget_source(node);
        }
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

    /// Migration `mid` to this node ended its process before its late messages came.
    fn ended_before_late(&self, mid: u64) {
        let mut q = self.ended_before_late.lock();
        q.push_back(mid);
        if q.len() > MAX_ENDED_BEFORE_LATE {
            q.pop_front();
        }
    }

    /// The late messages of migration `mid` came with no run for them: whether its
    /// process was ended before they came (they are dropped; a second copy of late
    /// messages that came in time is not asked about twice).
    fn late_after_end(&self, mid: u64) -> bool {
        let mut q = self.ended_before_late.lock();
        let at = q.iter().position(|&m| m == mid);
        at.and_then(|i| q.remove(i)).is_some()
    }

    /// Whether this node holds nothing for a migrated process (tests: no residual dependency).
    pub(crate) fn holds(&self, pid: Pid) -> bool {
        self.moving.lock().contains(&pid) || self.by_pid.lock().contains_key(&pid)
    }

    /// Migrations this node takes part in (as source or destination) that have not
    /// ended: a lazy migration's source until its destination has every page or gave
    /// them up.
    /// The migrations from here in flight, oldest first.
    pub(crate) fn live(&self) -> Vec<wire::LiveMig> {
        let mut v: Vec<wire::LiveMig> = self
            .live
            .lock()
            .iter()
            .map(|(&mid, (pid, to, at, p))| {
                let m = p.mechanism.lock().unwrap_or_default();
                let mut l = super::metrics::live_mig(mid, *pid, to.clone(), m, p, at.elapsed().as_millis() as u64);
                if p.mechanism.lock().is_none() {
                    l.mechanism = "auto".into();
                }
                l
            })
            .collect();
        v.sort_by_key(|l| std::cmp::Reverse(l.elapsed_ms));
        v
    }

    pub(crate) fn in_progress(&self) -> u64 {
        self.runs.lock().len() as u64
    }
}

/// A migration frame that came on the session from `from`.
pub(crate) fn session_frame(sh: &Arc<Host>, from: u16, w: MigWire) {
    match w {
        MigWire::LinkUpdate { mid, procs, to, fwd } => {
            // A partner node: send straight to the new place from now on, and say so. The
            // ack follows every message this node sent to the old place (same session).
            // A group's update names every member; one ack answers it.
            let Some(pid) = procs.first().map(|p| p.pid) else { return };
            for p in procs.iter().take(MAX_GROUP) {
                sh.node().apply_link_update(p.pid, to, p.moves, &p.chans, fwd);
            }
            let _ = sh.send_frame(from, &Frame::Mig(MigWire::Msg(MigMsg::LinkAck { mid, pid })));
        }
        MigWire::Late { mid, .. } if !sh.mig.runs.lock().contains_key(&mid) => {
            // No run for them: a copy that came second, or the process is gone.
            if sh.mig.late_after_end(mid) {
                sh.log(&format!(
                    "late messages of migration {mid:x} from node {} came after its process was ended; dropped",
                    sh.node_name(from)
                ));
            }
        }
        MigWire::Msg(MigMsg::Commit { mid }) if !sh.mig.runs.lock().contains_key(&mid) => {
            if sh.mig.aborted.lock().contains(mid) {
                let _ = sh.send_frame(from, &Frame::Mig(MigWire::Msg(MigMsg::Aborted { mid })));
            }
        }
        w => {
            if let Some(mid) = wire_mid(&w) {
                sh.mig.input(mid, Input::Wire(from, w));
            }
        }
    }
}

/// Most threads at once on a node that wait for a migration on someone's behalf (a
/// peer's `Query::Migrate`, a program's `migrate(pid, node)`, an operator's request for
/// a process on another node).
pub(crate) const MAX_WAITING: usize = 32;
/// Most processes one migration moves (a coprocess group's members).
pub(crate) const MAX_GROUP: usize = 1024;
/// Most nodes a request about a process goes through (see [`wire::Query::Migrate`]).
pub(crate) const MAX_HOPS: u8 = 4;

/// What a node's peers, programs and operators may have running at once for
/// migrations: every thread a migration needs takes a [`Slot`] first, and none is
/// started without one, so no number of requests makes a node start unbounded threads.
/// Migrations out and in have limits of their own (`[limits] migrations_out`,
/// `migrations_in`), so that a node busy sending processes away can still take some.
pub(crate) struct Slots {
    out: Arc<AtomicUsize>,
    incoming: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    max_out: usize,
    max_in: usize,
}

/// One of the [`Slots`], given back when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok().map(|_| Slot(count.clone()))
}

impl Slots {
    pub(crate) fn new(limits: &crate::config::Limits) -> Slots {
        let max = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Slots {
            out: Arc::default(),
            incoming: Arc::default(),
            waiting: Arc::default(),
            max_out: max(limits.migrations_out),
            max_in: max(limits.migrations_in),
        }
    }

    /// A slot for a migration's source (its thread).
    pub(crate) fn outgoing(&self) -> Result<Slot, String> {
        take_slot(&self.out, self.max_out)
            .ok_or_else(|| format!("too many migrations out of this node at once: at most {} ([limits] migrations_out)", self.max_out))
    }

    /// A slot for a migration's destination (its thread).
    pub(crate) fn incoming(&self) -> Result<Slot, String> {
        take_slot(&self.incoming, self.max_in)
            .ok_or_else(|| format!("too many migrations into this node at once: at most {} ([limits] migrations_in)", self.max_in))
    }

    /// A slot for a thread that waits for a migration on someone's behalf.
    pub(crate) fn waiter(&self) -> Result<Slot, String> {
        take_slot(&self.waiting, MAX_WAITING)
            .ok_or_else(|| format!("too many migrations in progress (at most {MAX_WAITING} waited for at once on a node)"))
    }
}

/// Starts migrating process `pid` (here) to node `to`.
pub(crate) fn start(sh: &Arc<Host>, pid: Pid, to: &str, how: How, caller: Caller) -> Result<MigHandle, String> {
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
    let pids = movers(node, pid, how.group)?;
    let slot = sh.mig_slots.outgoing()?;
    {
        let mut moving = sh.mig.moving.lock();
        if let Some(&busy) = pids.iter().find(|p| moving.contains(p)) {
            if let Some(d) = sh.mig.in_doubt.lock().get(&busy) {
                let p = tern_vm::value::name_text(busy);
                return Err(format!(
                    "process {p} is in doubt: its move to {} is not known to have committed ({} restarted before it answered); \
                     it stays frozen here until an operator resolves it (tern ctl --node {} resolve {p} resume|end)",
                    d.to, d.to, sh.me.name
                ));
            }
            return Err(format!("process {} is already being migrated", tern_vm::value::name_text(busy)));
        }
        moving.extend(pids.iter().copied());
    }
    let choice = how.mechanism.unwrap_or(sh.cfg.migration);
    let forwarding = how.forwarding.unwrap_or(sh.cfg.forwarding);
    let mid = (u64::from(sh.me.id) << 48) | (sh.mig.next.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1));
    let inputs = sh.mig.register(mid);
    // The destination may have gone down since it was looked at, its `PeerDown` sent to
    // the migrations registered then (not this one): tell this one too (a second
    // `PeerDown` changes nothing).
    if !sh.is_up(dest) {
        sh.mig.input(mid, Input::PeerDown(dest));
    }
    let progress = Arc::new(Progress::default());
    sh.mig.live.lock().insert(mid, (pid, to.to_string(), Instant::now(), progress.clone()));
    // Room for an early report (a move in doubt, see `run_source`) and the last one.
    let (done_tx, done) = crossbeam_channel::bounded(2);
    let sh2 = sh.clone();
    let p2 = progress.clone();
    let pids2 = pids.clone();
    let rt = sh.rt.get().cloned().ok_or("the network runtime is not running")?;
    std::thread::Builder::new()
        .name(format!("tern-mig-out-{mid:x}"))
        .spawn(move || {
            let _slot = slot;
            let run = source::SourceRun::new(mid, pids2.clone(), dest, (choice, forwarding, how.admit), caller, p2.clone(), rt);
            let early_tx = done_tx.clone();
            let report = source::run_source(&sh2, run, inputs, &move |r| {
                let _ = early_tx.try_send(r);
            });
            sh2.mig.live.lock().remove(&mid);
            if let Some(m) = *p2.mechanism.lock() {
                sh2.mig.counters.ended(m, report.ok, report.bytes_sent, report.freeze_time_us);
            }
            if report.ok && report.bandwidth_bytes_per_ms > 0 {
                sh2.mig.links.lock().insert(dest, report.bandwidth_bytes_per_ms * 1000);
            }
            sh2.mig.runs.lock().remove(&mid);
            {
                // A move in doubt for good keeps its processes out of other moves. (Locks
                // in `start`'s order, `moving` then `in_doubt`.)
                let mut moving = sh2.mig.moving.lock();
                let in_doubt = sh2.mig.in_doubt.lock();
                moving.retain(|p| !pids2.contains(p) || in_doubt.contains_key(p));
            }
            {
                let mut r = sh2.mig.reports.lock();
                r.push(report.clone());
                let n = r.len();
                if n > 64 {
                    r.drain(..n - 64);
                }
            }
            let _ = done_tx.try_send(report);
        })
        .map_err(|e| {
            sh.mig.runs.lock().remove(&mid);
            sh.mig.live.lock().remove(&mid);
            sh.mig.moving.lock().retain(|p| !pids.contains(p));
            format!("cannot start a thread: {e}")
        })?;
    Ok(MigHandle { progress, done })
}

/// The processes a migration of `pid` moves: its coprocess group's members here with
/// `group` (`pid` first), else `pid` alone — which a member of a group with other members
/// here cannot be (a group lives on one node: its members move together).
fn movers(node: &tern_vm::node::Node, pid: Pid, group: bool) -> Result<Vec<Pid>, String> {
    let name = tern_vm::value::name_text;
    match node.group_members(pid) {
        Some((_, members)) if group => {
            if members.len() > MAX_GROUP {
                return Err(format!(
                    "the group of process {} has {} members here: at most {MAX_GROUP} move at once",
                    name(pid),
                    members.len()
                ));
            }
            Ok(std::iter::once(pid).chain(members.into_iter().filter(|&p| p != pid)).collect())
        }
        None if group => Err(format!("process {} is in no group", name(pid))),
        Some((g, members)) if members.len() > 1 => Err(format!(
            "process {} is in <group {}> with {} other member(s) here: a group moves together (migrate_group, or --group)",
            name(pid),
            name(g),
            members.len() - 1
        )),
        _ => Ok(vec![pid]),
    }
}

/// Migrates `pid` to node `to` and waits for the report: here if the process is here,
/// else asking the node it is on.
pub(crate) fn migrate_and_wait(sh: &Arc<Host>, pid: Pid, to: &str, how: How) -> Result<MigReport, String> {
    migrate_via(sh, pid, to, how, 0, None)
}

/// As [`migrate_and_wait`], for a request that `hops` nodes have passed on so far, the
/// last of them `asker` (which believed the process is here). A request about a process
/// ends in one answer, never a loop: a node that does not host it passes it on only by
/// a route of its own (the first asker also by the process's birth node), never back to
/// the node that asked, and at most [`MAX_HOPS`] times; else the process is gone, and
/// the answer is the one for any process that has ended.
pub(crate) fn migrate_via(sh: &Arc<Host>, pid: Pid, to: &str, how: How, hops: u8, asker: Option<u16>) -> Result<MigReport, String> {
    let node = sh.node();
    if node.is_local(pid) {
        let h = start(sh, pid, to, how, Caller::None)?;
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
    let q = wire::Query::Migrate { pid, to: to.to_string(), how, hops: hops + 1 };
    match sh.ask(at, q, Duration::from_secs(600))? {
        wire::Answer::Migrated(r) => r.map(|b| *b),
        other => Err(format!("unexpected answer {other:?}")),
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
                    if sh.is_stopping() {
                        sh.log(&format!("refused a migration from node {}: this node is stopping", sh.node_name(from)));
                        let _ = out.send(frame_bytes(&MigWire::Msg(MigMsg::Refuse { mid, why: RefuseReason::NoRoom }))).await;
                        return;
                    }
                    let slot = match sh.mig_slots.incoming().and_then(|s| match sh.node().process_limit_reached() {
                        Some(why) => Err(why),
                        None => Ok(s),
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            sh.log(&format!("refused a migration from node {}: {e}", sh.node_name(from)));
                            let _ = out.send(frame_bytes(&MigWire::Msg(MigMsg::Refuse { mid, why: RefuseReason::OverLimits }))).await;
                            return;
                        }
                    };
                    // This stream's frames come apart from the rest (`DestInputs`).
                    let (bulk_tx, bulk) = crossbeam_channel::unbounded();
                    let inputs = DestInputs { urgent: sh.mig.register(mid), bulk: Some(bulk) };
                    let sh2 = sh.clone();
                    let spawned = std::thread::Builder::new().name(format!("tern-mig-in-{mid:x}")).spawn(move || {
                        let _slot = slot;
                        dest::run_dest(sh2, from, offer, out, inputs, rt)
                    });
                    if spawned.is_err() {
                        sh.mig.runs.lock().remove(&mid);
                        return;
                    }
                    read_frames(recv, from, max, bulk_tx).await;
                }
                MigWire::Msg(fetch @ MigMsg::Fetch { .. }) => {
                    let mid = fetch.mid();
                    let out = spawn_writer(&rt, send, FAULT_PRIORITY);
                    let Some(tx) = sh.mig.runs.lock().get(&mid).cloned() else { return };
                    let _ = tx.send(Input::FaultStream(from, out));
                    let _ = tx.send(Input::Wire(from, MigWire::Msg(fetch)));
                    read_frames(recv, from, max, tx).await;
                }
                _ => sh.log(&format!("refused a migration stream from node {from}: it did not start with an offer or a fetch")),
            }
        });
    }
}

impl Host {
    /// A move of `pid` (started here) ended in doubt for good ([`InDoubtMove`]): keep
    /// its processes frozen and out of other moves, and tell the operator what to do.
    pub(super) fn hold_in_doubt(&self, members: &[Pid], to: &str) {
        let entry = InDoubtMove { to: to.to_string(), members: members.to_vec() };
        {
            let mut d = self.mig.in_doubt.lock();
            for &m in members {
                d.insert(m, entry.clone());
            }
        }
        let p = tern_vm::value::name_text(members[0]);
        self.log(&format!(
            "{p} is in doubt: node {to} restarted after it was asked to commit the move of {p}, before it answered; \
             it may have run {p} and lost it, or never had it. {p} stays frozen here, never resumed on its own: \
             `tern ctl --node {me} resolve {p} end` ends it (its monitors and links see it lost), \
             `... resolve {p} resume` runs it here again (only if {to} never ran it)",
            me = self.me.name
        ));
    }

    /// An operator's word on a move in doubt for good: `resume` runs its processes here
    /// again, else they end (killed, with a reason that says so). What was done, in words.
    pub(crate) fn resolve_in_doubt(&self, pid: Pid, resume: bool) -> Result<String, String> {
        let p = tern_vm::value::name_text(pid);
        let entry = {
            let mut d = self.mig.in_doubt.lock();
            let e = d.remove(&pid).ok_or_else(|| {
                format!(
                    "no move of {p} is in doubt on node {} (a process in doubt stays frozen on the node its move started from, \
                     and only once the node it was moving to restarted: ask that node with --node)",
                    self.me.name
                )
            })?;
            for m in &e.members {
                d.remove(m);
            }
            e
        };
        let node = self.node();
        let reason = format!("lost: its move to node {} was in doubt when that node restarted (ended by an operator)", entry.to);
        for &m in &entry.members {
            if !resume {
                // Flagged before it is let go: it ends before it runs an instruction.
                node.kill(m, &reason);
            }
            node.abort_export(m);
        }
        self.mig.moving.lock().retain(|m| !entry.members.contains(m));
        let done = if resume {
            format!("{p} runs again on node {} (its move to {} is taken as never committed)", self.me.name, entry.to)
        } else {
            format!("{p} ended: {reason}")
        };
        self.log(&format!("resolved the move in doubt of {p}: {done}"));
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::{AbortedMids, MAX_ABORTED};

    #[test]
    fn aborted_mids_keep_the_newest_and_forget_a_restarted_source() {
        let mut a = AbortedMids::default();
        for mid in 0..MAX_ABORTED as u64 + 10 {
            a.insert(mid, (mid % 2) as u16);
        }
        // A second insertion neither counts nor moves an entry.
        a.insert(MAX_ABORTED as u64 + 9, 1);
        assert_eq!(a.order.len(), MAX_ABORTED);
        assert_eq!(a.set.len(), MAX_ABORTED);
        assert!((0..10).all(|m| !a.contains(m)));
        assert!((10..MAX_ABORTED as u64 + 10).all(|m| a.contains(m)));
        a.forget_source(1);
        assert_eq!(a.set.len(), MAX_ABORTED / 2);
        assert_eq!(a.order.len(), MAX_ABORTED / 2);
        assert!((10..MAX_ABORTED as u64 + 10).all(|m| a.contains(m) == (m % 2 == 0)));
        // Room again: nothing more is forgotten until the bound.
        for mid in 1_000_000..1_000_000 + MAX_ABORTED as u64 / 2 {
            a.insert(mid, 3);
        }
        assert!(a.contains(10) && a.set.len() == MAX_ABORTED);
        a.insert(2_000_000, 3);
        assert!(!a.contains(10) && a.contains(12) && a.contains(2_000_000));
    }
}
