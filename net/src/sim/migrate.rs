//! A deterministic, seeded simulator of the migration protocol ([`crate::proto::migrate`]).
//! It plays the host (VM + driver) of every node, calling the node's own ordering code
//! (`tern_vm::node::order`) where the node does.
//!
//! (One file over 1,000 lines: the simulated hosts, the fault plans and the checkers
//! share one state, and a failure is read with all of them at hand.)
//!
//! N nodes (3 to 5), one process. The process "runs" on the node that owns it (a step
//! every `tick_us`: progress + 1, consume its mailbox, dirty random pages; for lazy, touch
//! a random page and block on it if absent). Every node hosts a partner that sends the
//! process numbered messages by what its node knows, routed by the node's own forwarding
//! rules (`tern_vm::node::forwarding`: `step`, `after_refusal`, `left_behind`, ...):
//! forwarded along routes, given back to the origin node, or held while the process is
//! located by asking every node; path shortening and the birth node's notices as the
//! node sends them. Migrations are started back to back between random nodes with random
//! mechanisms and random forwarding mechanisms (mixed in one run); destinations sometimes
//! refuse. A random subset of the nodes monitors the process (told where it goes under
//! every mechanism). In some
//! seeds the process may end by itself while it runs lazily with pages still at its
//! source (half of those with the background push off, so only the end releases them);
//! the destination's host tells its machine ([`Dest::process_ended`]). That choice and
//! the moment are drawn from a second generator seeded from the seed, so the other
//! seeds run exactly as they would without it.
//!
//! The network is in-order per node pair (the real transport is one session per pair):
//! each message waits for the link (bandwidth), then a latency with jitter; a partition
//! holds a pair's messages until it heals (the session retransmits); a crash drops
//! everything to and from the node and all its state, and the node restarts later with a
//! new epoch (peers get `peer_restarted`). Faults are either random (a quarter of the
//! seeds) or systematic: crash the source, the dest or a third node, or cut source–dest,
//! right after the k-th migration message, k from the seed, so that every protocol step
//! gets its crash across seeds.
//!
//! Checkers after every step:
//! * **One owner** — at most one running copy; a copy that resumes (`Unfreeze`, `Resume`)
//!   is the newest of the lineage (no progress was made by another copy since its image):
//!   never two histories.
//! * **Messages** — per sender incarnation, the process consumes numbers in increasing
//!   order and each at most once, and every number it skips was dropped by a crash (or is
//!   still on its way, and then fails as reordered when it comes). At the end, every
//!   number sent was consumed, dropped by a crash, or — only if the process itself is
//!   lost — queued for it when it was lost, or — only if it ended by itself — queued for
//!   it or sent to it after it ended. Delivery on a node to itself is checked like any
//!   other: a checker's error there fails the run.
//! * **Loss is explained** — the process disappears only if it ended by itself or a node
//!   holding a copy (or the pages a lazy copy depends on) crashed; lazy kills name a
//!   source that really restarted or stayed unreachable for the whole limit, and a
//!   committed process ended before its late messages came names a source that stayed
//!   unreachable for the whole limit while it waited for them.
//! * **Residual** — a committed source ends with nothing: no copy, no held message,
//!   `residual()` empty (also when the process ended at the destination with pages still
//!   at the source); pages are never sent from a source without its copy.
//! * **Progress and convergence** — precopy rounds longer than a few ticks see the process
//!   run; rounds that stop without converging report throttling or the round limit.
//! * **Forwarding** — a node that keeps nothing for the process never passes one of its
//!   messages on; after a committed migration's acknowledgements the old node keeps what
//!   the mechanism promises (no route for `link-update`, `resend`, `origin-site`; a link
//!   for `link-traversal` until the process ends); a locate that finds no node for a live
//!   process, with no crash to explain it, fails the run. One broken variant per
//!   mechanism ([`FwdFault`]) is caught.
//! * **Monitors** — every node without a copy that monitors the process fires
//!   `node_down` when the node its route points at goes down or restarts (the node's
//!   rule); it must not while the process runs on another node that has told it
//!   everything it sent it (`monitor_sees_down`).
//! * **Timers** — after `handle_timeout`, the next timeout is in the future.
//!
//! At the end faults stop, partitions heal, crashed nodes restart, partners stop sending,
//! and the run settles: every machine finished, every queue empty.

use crate::proto::migrate::{
    Action, Dest, Failure, Forwarding, Mechanism, Mid, MigConfig, MigFault, MigMsg, PageNo, RefuseReason, Source, SourceInit,
    SourceOutcome, StopReason,
};
use crate::proto::session::NodeId;
use crate::sim::harness::{run_traced_on_failure, Trace};
pub use crate::sim::harness::{Rng, SimFailure, SimKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tern_vm::node::forwarding::{self, Known, LeftBehind, Step};
use tern_vm::node::order::{Order, OrderFault, OrderWire, Origin, Weigh};

const PID: u64 = 42;

/// How a run is set up. The seed draws everything else.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Simulated duration of the phase with migrations and faults.
    pub active_us: u64,
    /// Longest simulated time allowed to settle once faults stop.
    pub settle_us: u64,
    /// A deliberately broken machine, to show that the checkers catch it.
    pub fault: MigFault,
    /// A deliberately broken variant of the node's message ordering (the code that ships).
    pub order_fault: OrderFault,
    /// A deliberately broken variant of a forwarding mechanism.
    pub fwd_fault: Option<FwdFault>,
    /// Per mille of the pages a destination's host gets that it loses before they reach
    /// the process (the machine must find out before the source drops its copy).
    pub lose_installs_per_mille: u64,
    /// Record a step trace (a failing run is replayed with it on, automatically).
    pub trace: bool,
    pub trace_lines: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            active_us: 400_000,
            settle_us: 20_000_000,
            fault: MigFault::None,
            order_fault: OrderFault::None,
            fwd_fault: None,
            lose_installs_per_mille: 20,
            trace: false,
            trace_lines: 400,
        }
    }
}

/// One deliberately broken variant per forwarding mechanism, each of which a checker
/// must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwdFault {
    /// `link-update`: the source keeps its route after every partner acknowledged (a
    /// residual dependency the mechanism promises not to leave).
    KeepRoute,
    /// `resend`: a node that keeps nothing for the process forwards a message that
    /// reached it to the birth node instead of giving it back (as before the mechanisms).
    ForwardUnknown,
    /// `origin-site`: the source does not tell the birth node where the process went.
    NoBirthNote,
    /// `link-traversal`: the node a process left keeps no link.
    NoLink,
}

impl FwdFault {
    pub const ALL: [FwdFault; 4] = [FwdFault::KeepRoute, FwdFault::ForwardUnknown, FwdFault::NoBirthNote, FwdFault::NoLink];

    /// The mechanism it breaks.
    pub fn forwarding(self) -> Forwarding {
        match self {
            FwdFault::KeepRoute => Forwarding::LinkUpdate,
            FwdFault::ForwardUnknown => Forwarding::Resend,
            FwdFault::NoBirthNote => Forwarding::OriginSite,
            FwdFault::NoLink => Forwarding::LinkTraversal,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub steps: u64,
    pub sim_time_us: u64,
    pub migrations: u64,
    pub committed: u64,
    pub failed: u64,
    pub refused: u64,
    pub in_doubt: u64,
    /// Moves reported in doubt while their destination, asked to commit, stayed down
    /// (the machine went on, and ended as the destination said when it was back).
    pub in_doubt_reports: u64,
    /// Committed moves reported with their destination away and pages still at the source.
    pub away_reports: u64,
    /// Committed migrations per mechanism (Freeze, Precopy, Lazy, Hybrid).
    pub by_mechanism: [u64; 4],
    /// Committed pre-copies that stopped converging and left their last dirty set to
    /// post-copy (`auto`'s fallback).
    pub fell_back: u64,
    pub rounds: u64,
    pub converged: u64,
    pub throttled: u64,
    pub round_limited: u64,
    pub ticks_in_rounds: u64,
    pub faults_served: u64,
    pub messages_sent: u64,
    pub messages_consumed: u64,
    pub messages_lost_to_crashes: u64,
    /// Messages queued for the process when it was lost (none if it lives).
    pub messages_lost_with_process: u64,
    /// Messages forwarded by a node the process had left.
    pub forwarded: u64,
    /// Committed migrations per forwarding mechanism (`Forwarding::ALL` order).
    pub by_forwarding: [u64; 4],
    /// Messages given back to their origin node (`resend`, and nodes that know nothing).
    pub msgs_refused: u64,
    /// Locates started (a broadcast each), and messages given up by a locate.
    pub locates: u64,
    pub unlocated: u64,
    /// Origin nodes told where the process is by the node a forwarded message reached.
    pub shortened: u64,
    /// Messages a queue held back because they overtook an earlier one from the same
    /// sender (a direct message ahead of one still forwarded).
    pub held_back: u64,
    /// Messages that reached a destination before the commit and waited for it.
    pub waited_for_commit: u64,
    /// Gaps given up after the gap timeout (numbers lost with a crashed node).
    pub gaps_given_up: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Nodes cut off from all others for a while (a stall).
    pub stalls: u64,
    /// Lazy processes ended because their source stayed unreachable past the limit.
    pub unreachable_kills: u64,
    /// Committed processes ended because their source stayed unreachable past the limit
    /// before their late messages came.
    pub late_kills: u64,
    pub lazy_kills: u64,
    /// Pages the destination's host lost on their way to the process, and the machine
    /// asked for again.
    pub installs_lost: u64,
    pub pages_asked_again: u64,
    /// Why the process is gone, if it is (not for one that ended by itself).
    pub process_lost: Option<String>,
    /// The process ended by itself (at a destination, with lazy pages still at the source).
    pub process_ended: u64,
    /// Messages queued for the process when it ended, or sent to it after.
    pub messages_to_ended_process: u64,
    /// Monitors that fired `node_down` (a node without a copy saw the node it routes the
    /// process to go down or restart).
    pub monitor_fires: u64,
}

/// Runs one seed. On failure the seed is run again with the trace on.
pub fn run_seed(seed: u64, opts: &SimOptions) -> Result<SimReport, SimFailure> {
    run_traced_on_failure(opts.trace, |trace| Sim::new(seed, SimOptions { trace, ..opts.clone() }).run())
}

/// A sender incarnation: (node, epoch).
type Sender = (NodeId, u64);

/// An application message: numbered per origin node as the node numbers them (from 0,
/// afresh in each incarnation), and put in sequence by the node's own [`Order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AppMsg {
    sender: Sender,
    seq: u64,
}

impl AppMsg {
    /// Its origin, as the node's numbered messages carry it.
    fn origin(&self) -> Origin {
        Origin { node: self.sender.0, inc: self.sender.1 }
    }
}

impl Weigh for AppMsg {
    fn weight(&self) -> usize {
        64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyState {
    Running,
    Frozen,
    /// Reinstated under a temporary id, not running; numbered messages that reach it
    /// wait for the state that comes with the commit.
    Temp,
    /// Handed over (committed elsewhere): only its pages stay, for a lazy destination.
    Handed,
}

#[derive(Debug, Clone)]
struct Copy {
    state: CopyState,
    progress: u64,
    consumed: BTreeMap<Sender, u64>,
    mailbox: VecDeque<AppMsg>,
    /// Its inbox's sequence state: the node's own code.
    order: Order<AppMsg>,
    /// Numbered messages that reached it while it was being imported.
    waiting: Vec<(Origin, u64, Option<AppMsg>, AppMsg)>,
    /// How much of the mailbox its image took (at the source, while it moves).
    export_mark: Option<usize>,
    blocked_on: Option<PageNo>,
    /// The migration that made it (for a temporary copy).
    mid: Mid,
    /// The forwarding mechanism of the move that brought it here.
    fwd: Forwarding,
    /// Nodes that keep a forwarding link to it (`link-traversal`).
    trail: Vec<NodeId>,
    /// Origin nodes told where it is since it came here (path shortening).
    told: BTreeSet<NodeId>,
}

/// A process's image: its state, its mailbox and its inbox's sequence state as the node
/// writes them ([`Order::to_wire`]).
#[derive(Debug, Clone)]
struct Image {
    progress: u64,
    consumed: BTreeMap<Sender, u64>,
    mailbox: VecDeque<AppMsg>,
    order: OrderWire<AppMsg>,
}

/// What reached the process at the source after its image, handed over at commit (the
/// node's `Late`): those messages and the inbox's sequence state ([`Order::into_wire`]).
#[derive(Debug)]
struct LateMsgs {
    mid: Mid,
    inbox: Vec<AppMsg>,
    order: OrderWire<AppMsg>,
    fwd: Forwarding,
    trail: Vec<NodeId>,
}

#[derive(Debug)]
enum Wire {
    Mig(MigMsg, Option<Box<Image>>),
    /// A numbered message, sent by its origin or forwarded `hops` times.
    App {
        msg: AppMsg,
        hops: u8,
    },
    /// The late messages of a committed migration, on the session before anything
    /// forwarded after them.
    Late(LateMsgs),
    /// A numbered message given back to its origin node by a node that neither has the
    /// process nor keeps a route to it (`Op::Refused`).
    Refused {
        msg: AppMsg,
        hops: u8,
    },
    /// Where is the process? (`Op::Locate`, to every node.)
    Locate,
    /// The answer (`Op::Located`): (node, version, forwarding), or `None` from the birth
    /// node when it has ended.
    Located(Option<(NodeId, Mid, Forwarding)>),
    /// The process is on `node` after migration `mid` (`Op::PidMoved`: to the birth node
    /// at a move, to an origin node by path shortening).
    PidMoved {
        node: NodeId,
        mid: Mid,
        fwd: Forwarding,
    },
    /// The process ended (`Op::PidEnded`, to its birth node and its chain's nodes).
    PidEnded,
}

/// Messages waiting at a node while it locates the process (`locate.rs`).
#[derive(Debug, Clone)]
struct Locating {
    since: u64,
    asked: u64,
    /// (message, hops, the birth node refused it: it goes straight to the process).
    waiting: Vec<(AppMsg, u8, bool)>,
}

struct Node {
    alive: bool,
    epoch: u64,
    crashed_ever: bool,
    copy: Option<Copy>,
    sources: BTreeMap<Mid, Source>,
    dests: BTreeMap<Mid, Dest>,
    images: BTreeMap<Mid, Image>,
    /// Where this node sends messages for the process when it has no copy (its route,
    /// versioned by the migration that set it: only a newer one replaces it, and the
    /// forwarding mechanism of that move), as the node's `Entry::Moved`.
    route: Option<(NodeId, Mid, Forwarding)>,
    /// (Birth node, `resend`.) It lives elsewhere (`Entry::Away`): the place, for the
    /// monitor only (`NOWHERE`: not known), and the version.
    away: Option<(NodeId, Mid)>,
    /// Messages waiting while this node locates the process.
    locating: Option<Locating>,
    /// The migration whose commit left `route` here (as opposed to a route this node
    /// learned as a sender): what the mechanism's promise is about.
    left: Option<Mid>,
    /// The newest version of a copy this node handed over keeping nothing, or of a route
    /// it dropped after the acks (not a route dropped at a refusal, which may be older
    /// news than the route): older news is stale. The node's own `Forgotten`.
    forgotten: forwarding::Forgotten,
    /// Dest: the migration committed here whose late messages have not come yet.
    resume_pending: Option<Mid>,
    /// The number of this incarnation's next message to the process.
    next_seq: u64,
    dirty: BTreeSet<PageNo>,
    throttle: u32,
    /// Dest: pages that came for its copy but were lost on their way to it (the host's
    /// fault the machine must catch with [`Action::VerifyPages`]).
    lacks: BTreeSet<PageNo>,
}

/// A migration's number as the node's move count (runs number far fewer than 2^32;
/// `Mid::MAX`, an ended process, is the largest count).
fn version(mid: Mid) -> u32 {
    u32::try_from(mid).unwrap_or(u32::MAX)
}

impl Node {
    /// The node keeps no entry any more for the process at version `v` (`Mid::MAX`: it
    /// ended).
    fn forget(&mut self, v: Mid) {
        self.forgotten.note(PID, version(v));
    }

    fn new(epoch: u64) -> Self {
        Node {
            alive: true,
            epoch,
            crashed_ever: false,
            copy: None,
            sources: BTreeMap::new(),
            dests: BTreeMap::new(),
            images: BTreeMap::new(),
            route: None,
            away: None,
            locating: None,
            left: None,
            forgotten: forwarding::Forgotten::default(),
            resume_pending: None,
            next_seq: 0,
            dirty: BTreeSet::new(),
            throttle: 0,
            lacks: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Random,
    CrashSource(u64),
    CrashDest(u64),
    CrashThird(u64),
    Partition(u64),
    /// The source or the destination cut off from every other node (a stall: a paused
    /// process, a dead link) for any length, up to a few times the source-down limit.
    Stall(u64),
}

#[derive(Debug)]
enum Ev {
    Deliver {
        a: NodeId,
        b: NodeId,
    },
    Tick,
    PartnerSend,
    Migrate,
    Safepoint {
        node: NodeId,
        mid: Mid,
    },
    Reinstated {
        node: NodeId,
        mid: Mid,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    Cut {
        a: NodeId,
        b: NodeId,
        until: u64,
    },
    Heal {
        a: NodeId,
        b: NodeId,
    },
    /// The failure detectors of `a` and `b` see each other silent (if still cut).
    Down {
        a: NodeId,
        b: NodeId,
    },
    /// The node gives up gaps older than the gap timeout (its sweep).
    GapSweep {
        node: NodeId,
    },
    /// The node asks again where the process is, or gives up (`locate.rs`'s sweep).
    LocateSweep {
        node: NodeId,
    },
    EndPhase,
}

struct Link {
    queue: VecDeque<(u64, Wire)>,
    busy_until: u64,
    last_arrival: u64,
    cut_until: u64,
}

struct Cur {
    mid: Mid,
    src: NodeId,
    dst: NodeId,
    src_epoch: u64,

    rounds_start: u64,
    ticks_in_rounds: u64,
}

struct Sim {
    seed: u64,
    opts: SimOptions,
    rng: Rng,
    now: u64,
    step: u64,
    n: usize,
    cfg: MigConfig,
    size_pages: u32,
    tick_us: u64,
    dirty_rate: u64,
    send_gap_us: u64,
    latency: u64,
    jitter: u64,
    /// Link bandwidth, bytes per ms.
    bw: u64,
    /// A gap in a sender's numbers is given up after this long (the node's gap timeout:
    /// longer than any delay but a crash's).
    gap_timeout_us: u64,
    /// How long a silent peer takes to be seen down.
    node_down_us: u64,
    /// Which node sees which down, since when.
    down: BTreeMap<(NodeId, NodeId), u64>,
    plan: Plan,
    plan_done: bool,
    /// Draws whether and when the process ends by itself (apart from `rng`, so that a
    /// seed in which it may not end runs as if the possibility did not exist).
    end_rng: Rng,
    /// In this seed the process may end by itself while it runs lazily.
    may_end: bool,
    mig_events: u64,
    nodes: Vec<Node>,
    links: Vec<Vec<Link>>,
    queue: BTreeMap<(u64, u64), Ev>,
    next_ev: u64,
    next_mid: Mid,
    cur: Option<Cur>,
    ending: bool,
    end_started: u64,
    // Checker state.
    lineage_progress: u64,
    sent: BTreeMap<Sender, u64>,
    /// Every message the process consumed (one history: consuming one twice fails).
    consumed: BTreeSet<(Sender, u64)>,
    /// Messages dropped by a crash (queued at, or on a link to or from, a crashed node).
    lost: BTreeSet<(Sender, u64)>,
    /// Messages gone with the process itself: queued for it when it was lost (a lazy copy
    /// killed, a copy left in doubt), or arriving at a node that never crashed once it
    /// was gone. Allowed only if the process is gone at the end.
    lost_with_process: BTreeSet<(Sender, u64)>,
    /// Messages queued for the process when it ended by itself, or sent to it after.
    to_ended: BTreeSet<(Sender, u64)>,
    /// Where and in which migration the process ended by itself, if it did.
    ended: Option<String>,
    /// A node holding a copy, or pages a copy depended on, crashed (and what it held).
    crashed_holding: Vec<String>,
    /// A destination ended the committed process ([`Action::Kill`]): it is gone, even if
    /// its source, cut off before `Committed` reached it, still keeps its frozen copy
    /// (which only `Aborted` could resume, and a committed destination never says it).
    killed: bool,
    trace: Trace,
    report: SimReport,
    /// The node the process was born on (its pid names it).
    birth: NodeId,
    /// The nodes whose monitor of the process is modelled (every mechanism tells them
    /// where it goes).
    watchers: Vec<bool>,
    /// Draws the forwarding mechanism of each migration and the watchers (apart from
    /// `rng`, as `end_rng`).
    fwd_rng: Rng,
}

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.opts.trace {
            let line = format!("[{} t={}] {}", $sim.step, $sim.now, format!($($arg)*));
            $sim.push_trace(line);
        }
    };
}

const MAX_STEPS: u64 = 2_000_000;
/// Mixed into the seed for [`Sim::end_rng`].
const END_SEED: u64 = 0x5ee0_e4d5_0f00_0001;
/// Mixed into the seed for [`Sim::fwd_rng`].
const FWD_SEED: u64 = 0xf0d0_5eed_0000_0002;
/// How often a node asks again where the process is (`locate.rs`'s `LOCATE_RETRY`).
const LOCATE_RETRY_US: u64 = 250_000;
/// A place not known (`locate::NOWHERE`).
const NOWHERE: NodeId = NodeId::MAX;
/// Seeds in which the process may end by itself, per mille.
const END_SEEDS_PER_MILLE: u64 = 100;
/// In those, the chance per step it runs lazily with pages still away that it ends, per mille.
const END_PER_MILLE: u64 = 100;

fn mech_index(m: Mechanism) -> usize {
    Mechanism::ALL.iter().position(|&x| x == m).unwrap_or(0)
}

impl Sim {
    fn new(seed: u64, opts: SimOptions) -> Self {
        let mut rng = Rng::new(seed);
        let n = rng.range(3, 5) as usize;
        let latency = rng.range(50, 2_000);
        let cfg = MigConfig {
            page_bytes: 4096,
            step_timeout_us: rng.range(80_000, 200_000),
            commit_timeout_us: rng.range(100_000, 400_000),
            freeze_budget_us: rng.range(200, 3_000),
            max_rounds: rng.range(2, 10) as u32,
            shrink_per_mille: 900,
            max_throttle: rng.range(1, 4) as u32,
            // (From the seed, not drawn: the draws after it stay as they were.)
            throttle_step: 1 + (seed / 17 % 3) as u32,
            prefetch: rng.range(0, 3) as u32,
            // Not drawn from `rng`: a seed keeps the run it had before read-ahead.
            readahead: [0, 8, 64][(seed / 7 % 3) as usize],
            fetch_quiet_us: [0, 1_000, 5_000][(seed / 11 % 3) as usize],
            push_interval_us: rng.range(200, 3_000),
            push_pages: rng.range(1, 32) as u32,
            max_pages_per_msg: rng.range(8, 64) as u32,
            source_down_limit_us: rng.range(200_000, 2_000_000),
            // Not drawn from `rng`: a seed keeps the run it had before.
            in_doubt_after_us: [100_000, 300_000, 1_000_000][(seed / 13 % 3) as usize],
            fault: opts.fault,
        };
        let plan = match seed % 6 {
            0 => Plan::Random,
            1 => Plan::CrashSource((seed / 6) % 48 + 1),
            2 => Plan::CrashDest((seed / 6) % 48 + 1),
            3 => Plan::CrashThird((seed / 6) % 48 + 1),
            4 => Plan::Partition((seed / 6) % 48 + 1),
            _ => Plan::Stall((seed / 6) % 48 + 1),
        };
        let mut end_rng = Rng::new(seed ^ END_SEED);
        let may_end = end_rng.chance(END_SEEDS_PER_MILLE);
        let mut cfg = cfg;
        if may_end && end_rng.chance(500) {
            // Only the end releases the pages: without it the run would not settle.
            cfg.push_interval_us = u64::MAX / 4;
        }
        let owner = rng.below(n as u64) as NodeId;
        let mut fwd_rng = Rng::new(seed ^ FWD_SEED);
        let watchers: Vec<bool> = (0..n).map(|_| fwd_rng.chance(300)).collect();
        let mut nodes: Vec<Node> = (0..n).map(|_| Node::new(1)).collect();
        nodes[owner as usize].copy = Some(Copy {
            state: CopyState::Running,
            progress: 0,
            consumed: BTreeMap::new(),
            mailbox: VecDeque::new(),
            order: Order::default().with_fault(opts.order_fault),
            waiting: Vec::new(),
            export_mark: None,
            blocked_on: None,
            mid: 0,
            fwd: Forwarding::LinkUpdate,
            trail: Vec::new(),
            told: BTreeSet::new(),
        });
        let links = (0..n)
            .map(|_| (0..n).map(|_| Link { queue: VecDeque::new(), busy_until: 0, last_arrival: 0, cut_until: 0 }).collect())
            .collect();
        Sim {
            seed,
            size_pages: rng.range(16, 256) as u32,
            tick_us: rng.range(200, 2_000),
            dirty_rate: rng.range(0, 24),
            send_gap_us: rng.range(300, 3_000),
            jitter: rng.range(0, latency),
            latency,
            bw: rng.range(20_000, 400_000),
            gap_timeout_us: 10_000_000,
            node_down_us: rng.range(5_000, 100_000),
            down: BTreeMap::new(),
            rng,
            now: 0,
            step: 0,
            n,
            cfg,
            plan,
            plan_done: false,
            end_rng,
            may_end,
            mig_events: 0,
            nodes,
            links,
            queue: BTreeMap::new(),
            next_ev: 0,
            next_mid: 1,
            cur: None,
            ending: false,
            end_started: 0,
            lineage_progress: 0,
            sent: BTreeMap::new(),
            consumed: BTreeSet::new(),
            lost: BTreeSet::new(),
            lost_with_process: BTreeSet::new(),
            to_ended: BTreeSet::new(),
            ended: None,
            crashed_holding: Vec::new(),
            killed: false,
            trace: Trace::new(opts.trace_lines),
            report: SimReport { seed, nodes: n, ..SimReport::default() },
            opts,
            birth: owner,
            watchers,
            fwd_rng,
        }
    }

    fn push_trace(&mut self, line: String) {
        self.trace.push(line);
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.next_ev += 1;
        self.queue.insert((at, self.next_ev), ev);
    }

    fn fail(&self, message: String) -> SimFailure {
        SimFailure { kind: SimKind::Migration, seed: self.seed, step: self.step, now_us: self.now, message, trace: self.trace.lines() }
    }

    fn run(mut self) -> Result<SimReport, SimFailure> {
        self.schedule(self.tick_us, Ev::Tick);
        self.schedule(self.send_gap_us, Ev::PartnerSend);
        self.schedule(1_000, Ev::Migrate);
        self.schedule(self.opts.active_us, Ev::EndPhase);
        if self.plan == Plan::Random {
            let mut t = 0;
            loop {
                t += self.rng.range(20_000, 150_000);
                if t >= self.opts.active_us {
                    break;
                }
                let a = self.rng.below(self.n as u64) as NodeId;
                if self.rng.chance(500) {
                    self.schedule(t, Ev::Crash { node: a });
                } else {
                    let b = (a + 1 + self.rng.below(self.n as u64 - 1) as NodeId) % self.n as NodeId;
                    let until = t + self.rng.range(1_000, 400_000);
                    self.schedule(t, Ev::Cut { a, b, until });
                }
            }
        }
        loop {
            self.step += 1;
            if self.step > MAX_STEPS {
                return Err(self.fail(format!("no end after {MAX_STEPS} steps")));
            }
            if self.ending && self.settled() {
                break;
            }
            if self.ending && self.now > self.end_started + self.opts.settle_us {
                return Err(self.fail(format!("not settled {} us after the end of faults: {}", self.opts.settle_us, self.unsettled())));
            }
            // The earliest of: the next scheduled event, the next machine timer.
            let mut timer: Option<(u64, NodeId, Mid, bool)> = None;
            for (i, nd) in self.nodes.iter().enumerate() {
                if !nd.alive {
                    continue;
                }
                for (&mid, s) in &nd.sources {
                    if let Some(t) = s.poll_timeout() {
                        if timer.is_none_or(|(bt, ..)| t < bt) {
                            timer = Some((t, i as NodeId, mid, true));
                        }
                    }
                }
                for (&mid, d) in &nd.dests {
                    if let Some(t) = d.poll_timeout() {
                        if timer.is_none_or(|(bt, ..)| t < bt) {
                            timer = Some((t, i as NodeId, mid, false));
                        }
                    }
                }
            }
            let next_ev = self.queue.first_key_value().map(|(k, _)| k.0);
            let timer = timer.filter(|&(t, ..)| next_ev.is_none_or(|e| t < e));
            if let Some((t, node, mid, is_src)) = timer {
                self.now = self.now.max(t);
                let now = self.now;
                trace!(self, "timeout {} {node} mid {mid}", if is_src { "source" } else { "dest" });
                // The host's queue toward the link: often full (the push waits a turn),
                // otherwise with room for a few pages.
                let room = if self.rng.chance(300) { 0 } else { self.rng.below(64) as u32 + 1 };
                let nd = &mut self.nodes[node as usize];
                let next = if is_src {
                    let s = nd.sources.get_mut(&mid).expect("timer of a live source");
                    s.set_push_room(room);
                    s.handle_timeout(now);
                    s.poll_timeout()
                } else {
                    let d = nd.dests.get_mut(&mid).expect("timer of a live dest");
                    d.handle_timeout(now);
                    d.poll_timeout()
                };
                if next.is_some_and(|n| n <= now) {
                    return Err(self.fail(format!("node {node} mid {mid}: after handle_timeout({now}) the next timeout is {next:?}")));
                }
                self.pump(node)?;
            } else if let Some(((t, _), ev)) = self.queue.pop_first() {
                self.now = self.now.max(t);
                self.event(ev)?;
            } else if self.ending {
                return Err(self.fail(format!("nothing left to do and not settled: {}", self.unsettled())));
            } else {
                return Err(self.fail("nothing left to do".into()));
            }
            self.check()?;
        }
        self.final_checks()?;
        self.report.steps = self.step;
        self.report.sim_time_us = self.now;
        self.report.messages_lost_to_crashes = self.lost.len() as u64;
        self.report.messages_lost_with_process = self.lost_with_process.difference(&self.lost).count() as u64;
        self.report.messages_to_ended_process = self.to_ended.difference(&self.lost).count() as u64;
        Ok(self.report)
    }

    // ---- the network ----

    fn send(&mut self, a: NodeId, b: NodeId, w: Wire) -> Result<(), SimFailure> {
        if let Wire::App { msg, hops } = &w {
            // A node that keeps nothing for the process never passes one of its messages
            // on (it gives it back): only the message's origin sends it again.
            let nd = &self.nodes[a as usize];
            if *hops > 0 && msg.sender.0 != a && nd.copy.is_none() && self.known(a) == Known::Nothing {
                return Err(self.fail(format!(
                    "RESIDUAL FORWARDING: node {a}, which keeps nothing for the process, passes {:?}#{} on to {b}",
                    msg.sender, msg.seq
                )));
            }
        }
        if a == b {
            // Local: no network. What the checkers find here fails the run like anywhere else.
            return self.arrive(a, b, w);
        }
        let bytes = match &w {
            Wire::Mig(m, _) => m.wire_bytes(self.cfg.page_bytes),
            Wire::App { .. } => 64,
            Wire::Late(l) => 64 * (1 + l.inbox.len() + l.order.1.len()) as u64,
            _ => 64,
        };
        let jitter = self.rng.below(self.jitter + 1);
        let l = &mut self.links[a as usize][b as usize];
        let ready = self.now.max(l.busy_until) + bytes * 1000 / self.bw;
        l.busy_until = ready;
        let arrival = (ready + self.latency + jitter).max(l.last_arrival);
        l.last_arrival = arrival;
        l.queue.push_back((arrival, w));
        self.schedule(arrival, Ev::Deliver { a, b });
        Ok(())
    }

    fn send_mig(&mut self, from: NodeId, to: NodeId, m: MigMsg) -> Result<(), SimFailure> {
        trace!(self, "{from} -> {to}: {}", short(&m));
        let img = if let MigMsg::Final { .. } = m {
            let state = self.nodes[from as usize].copy.as_ref().map(|c| c.state);
            match self.nodes[from as usize].copy.as_mut() {
                Some(c) if c.state == CopyState::Frozen => {
                    // The node's export: the image takes the mailbox so far, and the slot
                    // keeps queueing what comes later (its late messages).
                    c.export_mark = Some(c.mailbox.len());
                    Some(Box::new(Image {
                        progress: c.progress,
                        consumed: c.consumed.clone(),
                        mailbox: c.mailbox.clone(),
                        order: c.order.to_wire(),
                    }))
                }
                _ => return Err(self.fail(format!("node {from} sends Final without a frozen copy ({state:?})"))),
            }
        } else {
            None
        };
        self.send(from, to, Wire::Mig(m, img))
    }

    fn deliver(&mut self, a: NodeId, b: NodeId) -> Result<(), SimFailure> {
        let l = &mut self.links[a as usize][b as usize];
        if l.cut_until > self.now {
            return Ok(());
        }
        match l.queue.front() {
            Some(&(t, _)) if t <= self.now => {}
            _ => return Ok(()),
        }
        let (_, w) = l.queue.pop_front().expect("front");
        if !self.nodes[b as usize].alive {
            for m in carried_msgs(&w) {
                self.lost.insert((m.sender, m.seq));
            }
            return Ok(());
        }
        self.arrive(a, b, w)
    }

    fn arrive(&mut self, from: NodeId, at: NodeId, w: Wire) -> Result<(), SimFailure> {
        match w {
            Wire::App { msg, hops } => {
                if hops > 0 {
                    trace!(self, "{at} <- {from}: forwarded {:?}#{}", msg.sender, msg.seq);
                }
                self.route_msg(at, msg, hops)
            }
            Wire::Late(l) => self.late_arrive(at, l),
            Wire::Refused { msg, hops } => self.refused(at, from, msg, hops),
            Wire::Locate => self.on_locate(at, from),
            Wire::Located(a) => self.on_located(at, a),
            Wire::PidMoved { node, mid, fwd } => {
                self.learn(at, node, mid, fwd);
                Ok(())
            }
            Wire::PidEnded => {
                let nd = &mut self.nodes[at as usize];
                nd.route = None;
                nd.left = None;
                nd.away = None;
                nd.forget(Mid::MAX);
                Ok(())
            }
            Wire::Mig(m, img) => {
                self.mig_events += 1;
                trace!(self, "{at} <- {from}: {} (event {})", short(&m), self.mig_events);
                self.mig_arrive(from, at, m, img)?;
                self.systematic_fault()
            }
        }
    }

    fn mig_arrive(&mut self, from: NodeId, at: NodeId, m: MigMsg, img: Option<Box<Image>>) -> Result<(), SimFailure> {
        let now = self.now;
        let mid = m.mid();
        if let Some(img) = img {
            self.nodes[at as usize].images.insert(mid, *img);
        }
        match m {
            MigMsg::Offer { .. } => {
                let nd = &self.nodes[at as usize];
                let busy = nd.copy.is_some() || nd.dests.values().any(|d| d.outcome().is_none());
                let refuse = if busy {
                    Some(RefuseReason::Busy)
                } else if self.rng.chance(60) {
                    Some(RefuseReason::OverLimits)
                } else {
                    None
                };
                if let Some(d) = Dest::new(now, self.cfg.clone(), at, from, &m, refuse) {
                    self.nodes[at as usize].dests.insert(mid, d);
                }
            }
            MigMsg::LinkUpdate { fwd, .. } => {
                // (The version check is `learn`'s, as the node's `pid_moved`.)
                if let Some((route, ack)) = crate::proto::migrate::partner_link_update(&m, 0) {
                    if let Some((to, mid)) = route {
                        self.learn(at, to, mid, fwd);
                    }
                    self.send_mig(at, from, ack)?;
                }
            }
            _ => {
                let nd = &mut self.nodes[at as usize];
                if let Some(s) = nd.sources.get_mut(&mid) {
                    s.handle(now, from, m);
                } else if let Some(d) = nd.dests.get_mut(&mid) {
                    d.handle(now, from, m);
                }
            }
        }
        self.pump(at)
    }

    /// What node `x` knows of the process when it has no copy of it running, frozen or
    /// being imported (as the node's process table says it).
    fn known(&self, x: NodeId) -> Known {
        let nd = &self.nodes[x as usize];
        match (nd.route, nd.away) {
            (Some((n, _, f)), _) if n != x => Known::Route(n, f),
            (_, Some((n, _))) => Known::Away((n != NOWHERE).then_some(n)),
            _ => Known::Nothing,
        }
    }

    /// Where node `x`'s monitor of the process points (its route, or the birth node).
    fn monitor_place(&self, x: NodeId) -> NodeId {
        let nd = &self.nodes[x as usize];
        match (nd.route, nd.away) {
            (Some((n, _, _)), _) => n,
            (_, Some((n, _))) => n,
            _ => self.birth,
        }
    }

    /// A numbered message for the process at node `at` (sent here, or arrived), handled
    /// as the node's delivery does: put in sequence in the copy here, set aside for the
    /// commit of one being imported here, or — by the forwarding rule the node uses,
    /// [`forwarding::step`] — passed on with its number, given back to its origin node,
    /// or held while the process is located.
    fn route_msg(&mut self, at: NodeId, msg: AppMsg, hops: u8) -> Result<(), SimFailure> {
        let now = self.now;
        let nd = &mut self.nodes[at as usize];
        let state = nd.copy.as_ref().map(|c| c.state);
        match state {
            Some(CopyState::Running | CopyState::Frozen) => {
                let c = nd.copy.as_mut().expect("a copy");
                let put = c.order.put(msg.origin(), msg.seq, Some(msg), now);
                let held = put.ready.is_empty() && !put.late;
                c.mailbox.extend(put.ready);
                // It came a long way: its origin node learns where the process is.
                let origin = msg.sender.0;
                let tell = (hops > 1 && origin != at && c.fwd.tells_origin() && c.told.insert(origin)).then_some((c.mid, c.fwd));
                trace!(self, "{at} <- msg {:?}#{}: queued{}", msg.sender, msg.seq, if held { " (held back)" } else { "" });
                if held {
                    self.report.held_back += 1;
                }
                if put.opened {
                    self.schedule(now + self.gap_timeout_us, Ev::GapSweep { node: at });
                }
                if let Some((mid, fwd)) = tell {
                    self.report.shortened += 1;
                    self.send(at, origin, Wire::PidMoved { node: at, mid, fwd })?;
                }
                if put.late {
                    return self.late_msg(at, msg);
                }
                Ok(())
            }
            Some(CopyState::Temp) => {
                nd.copy.as_mut().expect("a copy").waiting.push((msg.origin(), msg.seq, Some(msg), msg));
                trace!(self, "{at} <- msg {:?}#{}: waits for the commit", msg.sender, msg.seq);
                self.report.waited_for_commit += 1;
                Ok(())
            }
            _ => {
                if hops == 0 && nd.locating.is_some() {
                    return self.locate(at, msg, hops);
                }
                let step = forwarding::step(self.known(at), at, self.birth, hops > 0);
                if self.opts.fwd_fault == Some(FwdFault::ForwardUnknown) && step == Step::Refuse && self.known(at) == Known::Nothing {
                    // Broken: not given back but forwarded by the birth node.
                    self.report.forwarded += 1;
                    return self.send(at, self.birth, Wire::App { msg, hops: hops + 1 });
                }
                match step {
                    Step::Forward(to) => {
                        if hops >= tern_vm::node::MAX_HOPS {
                            // The node gives it up as lost (its sender is told): only a process
                            // that is gone, with routes left pointing at each other, gets here.
                            if self.process_gone() {
                                self.gone_with_process(msg);
                                return Ok(());
                            }
                            return Err(
                                self.fail(format!("ROUTES: {:?}#{} forwarded {hops} times while the process lives", msg.sender, msg.seq))
                            );
                        }
                        trace!(self, "{at} forwards {:?}#{} to {to}", msg.sender, msg.seq);
                        if hops > 0 {
                            self.report.forwarded += 1;
                        }
                        self.send(at, to, Wire::App { msg, hops: hops + 1 })
                    }
                    Step::Refuse => self.refuse(at, msg, hops),
                    Step::Locate => self.locate(at, msg, hops),
                    Step::Queue | Step::Ended => self.dropped(at, msg),
                }
            }
        }
    }

    /// The node drops a message for the process as one for a process that has ended.
    fn dropped(&mut self, at: NodeId, msg: AppMsg) -> Result<(), SimFailure> {
        if self.nodes[at as usize].crashed_ever {
            self.lost.insert((msg.sender, msg.seq));
            Ok(())
        } else if self.process_gone() {
            self.gone_with_process(msg);
            Ok(())
        } else {
            Err(self.fail(format!("message {:?}#{} dropped at node {at}, which has no trace of the process", msg.sender, msg.seq)))
        }
    }

    /// Node `at` gives a message back to its origin node (`locate.rs`'s `refuse`).
    fn refuse(&mut self, at: NodeId, msg: AppMsg, hops: u8) -> Result<(), SimFailure> {
        self.report.msgs_refused += 1;
        let origin = msg.sender.0;
        trace!(self, "{at} refuses {:?}#{}: back to {origin}", msg.sender, msg.seq);
        if origin == at {
            return self.refused(at, at, msg, hops);
        }
        self.send(at, origin, Wire::Refused { msg, hops })
    }

    /// Origin node `at` gets back a message node `refuser` refused: the route that led
    /// there goes, and it is sent again by the birth node or after locating the process
    /// ([`forwarding::after_refusal`]).
    fn refused(&mut self, at: NodeId, refuser: NodeId, msg: AppMsg, hops: u8) -> Result<(), SimFailure> {
        let nd = &mut self.nodes[at as usize];
        if msg.sender.1 != nd.epoch {
            // From an earlier incarnation of this node: its sender is gone with it.
            self.lost.insert((msg.sender, msg.seq));
            return Ok(());
        }
        let hops = hops.saturating_add(1);
        if hops > tern_vm::node::MAX_HOPS {
            // The node gives it up as lost (its sender is told).
            if self.process_gone() {
                self.gone_with_process(msg);
                return Ok(());
            }
            return Err(
                self.fail(format!("ROUTES: {:?}#{} refused or forwarded {hops} times while the process lives", msg.sender, msg.seq))
            );
        }
        let route = nd.route.map(|(_, _, f)| f);
        if let Some((n, v, _)) = nd.route {
            if n == refuser {
                nd.route = None;
                nd.left = None;
                if at == self.birth {
                    nd.away = Some((NOWHERE, v));
                }
            }
        }
        // (A birth node under `resend` sent it where it last saw the process.)
        if let Some((n, v)) = nd.away {
            if n == refuser {
                nd.away = Some((NOWHERE, v));
            }
        }
        match forwarding::after_refusal(route, refuser, self.birth) {
            Step::Forward(b) if b != at => {
                trace!(self, "{at}: {:?}#{} given back by {refuser}, sent again by the birth node {b}", msg.sender, msg.seq);
                self.send(at, b, Wire::App { msg, hops: hops + 1 })
            }
            _ => self.locate_by(at, msg, hops, refuser == self.birth),
        }
    }

    /// Node `at` holds a message until the process is located, asking every node where it
    /// is unless a question is out already.
    fn locate(&mut self, at: NodeId, msg: AppMsg, hops: u8) -> Result<(), SimFailure> {
        self.locate_by(at, msg, hops, false)
    }

    /// [`Sim::locate`]; `direct`: the birth node refused the message (it does not know
    /// the place yet), so once located it goes straight there, whatever the mechanism.
    fn locate_by(&mut self, at: NodeId, msg: AppMsg, hops: u8, direct: bool) -> Result<(), SimFailure> {
        let now = self.now;
        let nd = &mut self.nodes[at as usize];
        if nd.copy.as_ref().is_some_and(|c| c.state != CopyState::Handed) {
            // It is here (it came back while the message was away).
            return self.route_msg(at, msg, hops);
        }
        let fresh = nd.locating.is_none();
        nd.locating.get_or_insert(Locating { since: now, asked: now, waiting: Vec::new() }).waiting.push((msg, hops, direct));
        trace!(self, "{at}: {:?}#{} waits while the process is located", msg.sender, msg.seq);
        if fresh {
            self.report.locates += 1;
            self.ask_where(at)?;
            self.schedule(now + LOCATE_RETRY_US, Ev::LocateSweep { node: at });
        }
        Ok(())
    }

    fn ask_where(&mut self, at: NodeId) -> Result<(), SimFailure> {
        for y in 0..self.n as NodeId {
            if y != at {
                self.send(at, y, Wire::Locate)?;
            }
        }
        Ok(())
    }

    /// Node `at` is asked where the process is (`on_locate`).
    fn on_locate(&mut self, at: NodeId, from: NodeId) -> Result<(), SimFailure> {
        let nd = &self.nodes[at as usize];
        let answer = match nd.copy.as_ref().map(|c| (c.state, c.mid, c.fwd)) {
            Some((CopyState::Running | CopyState::Frozen, mid, fwd)) => Some(Some((at, mid, fwd))),
            Some(_) => None,
            None if at == self.birth && nd.route.is_none() && nd.away.is_none() => Some(None),
            None => None,
        };
        match answer {
            Some(a) => self.send(at, from, Wire::Located(a)),
            None => Ok(()),
        }
    }

    /// The answer to node `at`'s locate: what waited goes there, or is dropped as for a
    /// process that has ended (`on_located`).
    fn on_located(&mut self, at: NodeId, answer: Option<(NodeId, Mid, Forwarding)>) -> Result<(), SimFailure> {
        if let Some((n, v, f)) = answer {
            if n != at {
                self.learn(at, n, v, f);
            }
        }
        let Some(l) = self.nodes[at as usize].locating.take() else { return Ok(()) };
        for (msg, hops, direct) in l.waiting {
            match answer {
                Some((n, _, f)) => {
                    // (At the birth node itself: straight there.)
                    let to = if f.direct() || direct || at == self.birth { n } else { self.birth };
                    trace!(self, "{at}: located on {n}; {:?}#{} goes to {to}", msg.sender, msg.seq);
                    if to == at {
                        self.route_msg(at, msg, hops)?;
                    } else {
                        self.send(at, to, Wire::App { msg, hops: hops.saturating_add(1) })?;
                    }
                }
                // (Its birth node says it ended: if that node restarted, it only forgot.)
                None if self.nodes[self.birth as usize].crashed_ever => {
                    self.lost.insert((msg.sender, msg.seq));
                }
                None => self.dropped(at, msg)?,
            }
        }
        Ok(())
    }

    /// Asks again, or gives up (the sweep of `locate.rs`: after the settle timeout there;
    /// here after the gap timeout, longer than any delay but a crash's, so that a live
    /// process behind a partition is always found).
    fn locate_sweep(&mut self, at: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        let nd = &mut self.nodes[at as usize];
        if !nd.alive {
            return Ok(());
        }
        if let Some(c) = nd.copy.as_ref().filter(|c| c.state != CopyState::Handed) {
            // It came here meanwhile: what waited is queued here.
            let here = Some((at, c.mid, c.fwd));
            return self.on_located(at, here);
        }
        let Some(l) = nd.locating.as_mut() else { return Ok(()) };
        if now.saturating_sub(l.since) >= self.gap_timeout_us {
            let waiting = std::mem::take(&mut l.waiting);
            nd.locating = None;
            for (msg, ..) in waiting {
                self.report.unlocated += 1;
                if self.process_gone() {
                    self.gone_with_process(msg);
                } else if self.report.crashes > 0 {
                    // Its process lost with a node that crashed, or its birth node
                    // restarted (and forgot it): the sender is told.
                    self.lost.insert((msg.sender, msg.seq));
                } else {
                    return Err(self
                        .fail(format!("LOCATE: node {at} found no node with the process for {:?}#{}, which lives", msg.sender, msg.seq)));
                }
            }
            return Ok(());
        }
        if now.saturating_sub(l.asked) >= LOCATE_RETRY_US {
            l.asked = now;
            self.ask_where(at)?;
        }
        self.schedule(now + LOCATE_RETRY_US, Ev::LocateSweep { node: at });
        Ok(())
    }

    /// Node `x` learns the process is on `node` after migration `mid`, forwarded by `fwd`
    /// (the node's `pid_moved`): only a newer route replaces one; a birth node under
    /// `resend` keeps only that it lives; nothing is kept while a copy is here.
    fn learn(&mut self, x: NodeId, node: NodeId, mid: Mid, fwd: Forwarding) {
        if node == x {
            return;
        }
        let birth = x == self.birth;
        let nd = &mut self.nodes[x as usize];
        if nd.copy.as_ref().is_some_and(|c| c.state != CopyState::Handed) {
            return;
        }
        let have = nd.route.map(|r| r.1).or(nd.away.map(|a| a.1));
        // An `Away` that knows no place (a route dropped: refused, or its node restarted)
        // takes any place learned.
        let nowhere = nd.route.is_none() && nd.away.is_some_and(|a| a.0 == NOWHERE);
        let newer = match have {
            Some(v) => mid > v || nowhere,
            // A node that forgot the process takes only news newer than it forgot.
            None => !birth && nd.forgotten.newer(PID, version(mid)),
        };
        if newer {
            nd.left = None;
            if birth && fwd == Forwarding::Resend {
                nd.route = None;
                nd.away = Some((node, mid));
            } else {
                nd.route = Some((node, mid, fwd));
                nd.away = None;
            }
        }
    }

    /// A message for the process once it is gone, dropped by the node: gone with a
    /// process that was lost, or sent to one that ended by itself.
    fn gone_with_process(&mut self, m: AppMsg) {
        if self.ended.is_some() {
            self.to_ended.insert((m.sender, m.seq));
        } else {
            self.lost_with_process.insert((m.sender, m.seq));
        }
    }

    /// A message came after its number was given up: the node drops it (and tells its
    /// sender). Only a gap left by a crash is ever given up here.
    fn late_msg(&mut self, at: NodeId, msg: AppMsg) -> Result<(), SimFailure> {
        if self.report.crashes == 0 {
            return Err(self.fail(format!(
                "MESSAGES: {:?}#{} reached node {at} after its number was given up, without any crash",
                msg.sender, msg.seq
            )));
        }
        trace!(self, "{at} <- msg {:?}#{}: late, dropped", msg.sender, msg.seq);
        self.lost.insert((msg.sender, msg.seq));
        Ok(())
    }

    /// The late messages of migration `l.mid` reach its destination: with the `Commit`
    /// already here, the process gets them and the messages that waited, in sequence
    /// (the node's `commit_import`), and runs.
    fn late_arrive(&mut self, at: NodeId, l: LateMsgs) -> Result<(), SimFailure> {
        let nd = &mut self.nodes[at as usize];
        // The host tells the machine (it no longer bounds the wait for them).
        if let Some(d) = nd.dests.get_mut(&l.mid) {
            d.late_arrived(self.now);
        }
        let ours = nd.resume_pending == Some(l.mid) && nd.copy.as_ref().is_some_and(|c| c.state == CopyState::Temp && c.mid == l.mid);
        if !ours {
            let msgs: Vec<AppMsg> = l.inbox.iter().copied().chain(l.order.1.iter().filter_map(|(_, _, m)| *m)).collect();
            let crashed = nd.crashed_ever;
            if self.process_gone() {
                // (Ended meanwhile: a destination whose source stayed unreachable with
                // lazy pages, or before these came.)
                for m in msgs {
                    self.gone_with_process(m);
                }
            } else if crashed {
                self.lost.extend(msgs.iter().map(|m| (m.sender, m.seq)));
            } else {
                return Err(self.fail(format!("node {at}: the late messages of mid {} came with no commit waiting for them", l.mid)));
            }
            return Ok(());
        }
        self.commit_import(at, l, true)
    }

    /// The node's commit_import: the copy imported here gets its late messages (`with`:
    /// they came; else they were lost with the source and it keeps its image's sequence
    /// state) and what waited for the commit, in sequence, and runs.
    fn commit_import(&mut self, at: NodeId, l: LateMsgs, with: bool) -> Result<(), SimFailure> {
        let now = self.now;
        let nd = &mut self.nodes[at as usize];
        nd.resume_pending = None;
        let mut c = nd.copy.take().expect("checked");
        self.resume_check(at, &c, "resumes")?;
        if with {
            let (expect, held) = l.order;
            c.order = Order::from_wire(expect, held, now).with_fault(self.opts.order_fault);
        }
        c.fwd = l.fwd;
        c.trail = l.trail;
        c.told.clear();
        c.mailbox.extend(l.inbox);
        let admitted = c.order.admit(std::mem::take(&mut c.waiting), now);
        c.mailbox.extend(admitted.ready);
        c.state = CopyState::Running;
        trace!(self, "{at}: mid {} resumes with its late messages ({} came too late)", l.mid, admitted.late.len());
        self.nodes[at as usize].copy = Some(c);
        if admitted.gaps {
            self.schedule(now + self.gap_timeout_us, Ev::GapSweep { node: at });
        }
        for m in admitted.late {
            self.late_msg(at, m)?;
        }
        Ok(())
    }

    /// The node's sweep: gaps older than the gap timeout are given up, and what waited
    /// behind them is queued.
    fn gap_sweep(&mut self, x: NodeId) {
        let now = self.now;
        let gap = self.gap_timeout_us;
        let nd = &mut self.nodes[x as usize];
        if !nd.alive {
            return;
        }
        let Some(c) = nd.copy.as_mut().filter(|c| matches!(c.state, CopyState::Running | CopyState::Frozen)) else { return };
        let (ready, skipped) = c.order.give_up(|_, since| now.saturating_sub(since) >= gap);
        c.mailbox.extend(ready);
        let next = c.order.oldest_gap();
        if skipped > 0 {
            trace!(self, "{x}: gave up {skipped} missing number(s)");
            self.report.gaps_given_up += skipped;
        }
        if let Some(t) = next {
            self.schedule(t + gap, Ev::GapSweep { node: x });
        }
    }

    // ---- the host side of the machines ----

    fn pump(&mut self, x: NodeId) -> Result<(), SimFailure> {
        loop {
            let mut progress = false;
            let mids: Vec<Mid> = self.nodes[x as usize].sources.keys().copied().collect();
            for mid in mids {
                while let Some(a) = self.nodes[x as usize].sources.get_mut(&mid).and_then(|s| s.poll_action()) {
                    progress = true;
                    self.source_action(x, mid, a)?;
                }
                while let Some((to, m)) = self.nodes[x as usize].sources.get_mut(&mid).and_then(|s| s.poll_transmit()) {
                    progress = true;
                    self.send_mig(x, to, m)?;
                }
            }
            let mids: Vec<Mid> = self.nodes[x as usize].dests.keys().copied().collect();
            for mid in mids {
                while let Some(a) = self.nodes[x as usize].dests.get_mut(&mid).and_then(|d| d.poll_action()) {
                    progress = true;
                    self.dest_action(x, mid, a)?;
                }
                while let Some((to, m)) = self.nodes[x as usize].dests.get_mut(&mid).and_then(|d| d.poll_transmit()) {
                    progress = true;
                    self.send_mig(x, to, m)?;
                }
            }
            if !progress || !self.nodes[x as usize].alive {
                return Ok(());
            }
        }
    }

    fn resume_check(&self, node: NodeId, c: &Copy, what: &str) -> Result<(), SimFailure> {
        if c.progress != self.lineage_progress {
            return Err(self.fail(format!(
                "FORK: node {node} {what} a copy at progress {} but the process already reached {}",
                c.progress, self.lineage_progress
            )));
        }
        Ok(())
    }

    fn source_action(&mut self, x: NodeId, mid: Mid, a: Action) -> Result<(), SimFailure> {
        let now = self.now;
        trace!(self, "source {x} mid {mid}: {a:?}");
        match a {
            Action::StartDirtyTracking => {
                self.nodes[x as usize].dirty.clear();
                if let Some(c) = self.cur.as_mut().filter(|c| c.mid == mid) {
                    c.rounds_start = now;
                }
            }
            Action::CollectDirty => {
                let nd = &mut self.nodes[x as usize];
                let d: Vec<PageNo> = std::mem::take(&mut nd.dirty).into_iter().collect();
                if let Some(s) = nd.sources.get_mut(&mid) {
                    s.pages_dirtied(now, &d);
                }
            }
            Action::Throttle { level } => self.nodes[x as usize].throttle = level,
            Action::Freeze => {
                let delay = self.rng.range(0, 2 * self.tick_us);
                self.schedule(now + delay, Ev::Safepoint { node: x, mid });
            }
            Action::Unfreeze => {
                let nd = &mut self.nodes[x as usize];
                nd.throttle = 0;
                let Some(mut c) = nd.copy.take() else { return Err(self.fail(format!("node {x}: Unfreeze without a copy"))) };
                if c.state == CopyState::Handed {
                    return Err(self.fail(format!("node {x}: Unfreeze of a copy handed over")));
                }
                // What came while it was frozen is in its mailbox already, in sequence.
                c.export_mark = None;
                if c.state == CopyState::Frozen {
                    self.resume_check(x, &c, "unfreezes")?;
                }
                c.state = CopyState::Running;
                self.nodes[x as usize].copy = Some(c);
            }
            Action::SendPages { pages } => {
                if self.nodes[x as usize].copy.is_none() {
                    return Err(self.fail(format!("node {x} sends {pages} pages of a process whose copy it deleted")));
                }
            }
            Action::CommitExport { to } => {
                // The node's commit_export: what came after the image, and the inbox's
                // sequence state, go to the dest ahead of anything forwarded; the copy
                // keeps only its pages (lazy) and the route points to the dest.
                let nd = &mut self.nodes[x as usize];
                let Some(c) = nd.copy.as_mut().filter(|c| c.state == CopyState::Frozen) else {
                    return Err(self.fail(format!("node {x}: CommitExport without a frozen copy")));
                };
                let Some(mark) = c.export_mark.take() else { return Err(self.fail(format!("node {x}: CommitExport without an image"))) };
                let inbox: Vec<AppMsg> = c.mailbox.drain(..).skip(mark).collect();
                let order = std::mem::take(&mut c.order).into_wire();
                c.state = CopyState::Handed;
                let mut trail = std::mem::take(&mut c.trail);
                let fwd = nd.sources.get(&mid).map_or(Forwarding::LinkUpdate, |s| s.forwarding());
                // What the mechanism leaves here (the node's commit_export).
                let birth = x == self.birth;
                let left = match self.opts.fwd_fault {
                    // Broken: the old node keeps nothing even under link-traversal.
                    Some(FwdFault::NoLink) if fwd == Forwarding::LinkTraversal => LeftBehind::Nothing,
                    _ => fwd.left_behind(birth),
                };
                match left {
                    LeftBehind::Route => {
                        nd.route = Some((to, mid, fwd));
                        nd.left = Some(mid);
                        nd.away = None;
                        if fwd == Forwarding::LinkTraversal && !trail.contains(&x) {
                            trail.push(x);
                        }
                    }
                    LeftBehind::Away => {
                        nd.route = None;
                        nd.left = None;
                        nd.away = Some((to, mid));
                    }
                    LeftBehind::Nothing => {
                        nd.route = None;
                        nd.left = None;
                        nd.forget(mid);
                        // (A node with a monitor of it keeps where it is, for the monitor.)
                        nd.away = self.watchers[x as usize].then_some((to, mid));
                    }
                }
                nd.throttle = 0;
                trace!(self, "{x}: hands mid {mid} over to {to} ({fwd}) with {} late message(s)", inbox.len());
                self.send(x, to, Wire::Late(LateMsgs { mid, inbox, order, fwd, trail }))?;
                let b = self.birth;
                let quiet = self.opts.fwd_fault == Some(FwdFault::NoBirthNote) && fwd == Forwarding::OriginSite;
                if b != x && b != to && fwd.tells_birth() && !quiet {
                    self.send(x, b, Wire::PidMoved { node: to, mid, fwd })?;
                }
                // As the node's host does: partners down now hold nothing up.
                let downs: Vec<NodeId> = self.down.keys().filter(|&&(o, p)| o == x && p != to).map(|&(_, p)| p).collect();
                if let Some(s) = self.nodes[x as usize].sources.get_mut(&mid) {
                    for p in downs {
                        s.peer_down(now, p);
                    }
                }
            }
            Action::DeleteSource => {
                // The source's copy is the only other one: the process must have every
                // page that came for it.
                if let Some((y, nd)) = self
                    .nodes
                    .iter()
                    .enumerate()
                    .find(|(_, n)| n.copy.as_ref().is_some_and(|c| c.mid == mid && c.state != CopyState::Handed))
                {
                    if !nd.lacks.is_empty() {
                        return Err(self.fail(format!(
                            "LOST PAGES: node {x} drops its copy of mid {mid} while the process at node {y} lacks page(s) {:?} that came",
                            nd.lacks
                        )));
                    }
                }
                let nd = &mut self.nodes[x as usize];
                match nd.copy.take() {
                    Some(c) if c.state == CopyState::Handed => {}
                    other => return Err(self.fail(format!("node {x}: DeleteSource of {:?}", other.map(|c| c.state)))),
                }
            }
            Action::Done => self.source_done(x, mid)?,
            Action::InDoubt { down_us } | Action::AwayAfterCommit { down_us } => {
                // Only a destination asked to commit (in doubt) or committed with pages
                // still here (away), and down, as this node sees it, for the whole bound
                // since: never a move that is merely slow.
                let s = &self.nodes[x as usize].sources[&mid];
                let dst = s.dest();
                let since = self.down.get(&(x, dst)).copied();
                let bound = self.cfg.in_doubt_after_us;
                let away = matches!(a, Action::AwayAfterCommit { .. });
                let phase_ok = if away { s.is_committed() && s.awaits_dest() } else { s.commit_sent() && !s.is_committed() };
                if !phase_ok || since.is_none_or(|t| now.saturating_sub(t) < bound) || down_us < bound {
                    return Err(self.fail(format!(
                        "IN DOUBT: node {x} reports mid {mid} {} (down {down_us} us) while node {dst} has been down since {since:?} (now {now}, bound {bound})",
                        if away { "committed with its destination away" } else { "in doubt" }
                    )));
                }
                trace!(self, "{x}: mid {mid} reported {}, {dst} down for {down_us} us", if away { "away" } else { "in doubt" });
                if away {
                    self.report.away_reports += 1;
                } else {
                    self.report.in_doubt_reports += 1;
                }
            }
            other => return Err(self.fail(format!("node {x}: a source asked for a dest action {other:?}"))),
        }
        Ok(())
    }

    fn source_done(&mut self, x: NodeId, mid: Mid) -> Result<(), SimFailure> {
        let nd = &self.nodes[x as usize];
        let s = &nd.sources[&mid];
        let r = s.report().clone();
        let mech = s.mechanism();
        match s.outcome().cloned() {
            Some(SourceOutcome::Committed) => {
                self.report.committed += 1;
                self.report.by_mechanism[mech_index(mech)] += 1;
                if r.fell_back {
                    self.report.fell_back += 1;
                }
                let fwd = s.forwarding();
                self.report.by_forwarding[Forwarding::ALL.iter().position(|&f| f == fwd).unwrap_or(0)] += 1;
                let res = s.residual();
                if !res.is_empty() || nd.copy.is_some() {
                    return Err(self.fail(format!("RESIDUAL: node {x} committed mid {mid} but holds {res:?}, copy {}", nd.copy.is_some())));
                }
                // Every node told acknowledged: the node's drop_forwarding (link-update
                // only; not at the birth node, and only this move's route).
                let keeps = self.opts.fwd_fault == Some(FwdFault::KeepRoute);
                if fwd.drops_route_at_acks() && x != self.birth && !keeps && nd.left == Some(mid) {
                    let watches = self.watchers[x as usize];
                    let nd = &mut self.nodes[x as usize];
                    // A node with a monitor of the process keeps where it is, not to
                    // forward by (the node's `drop_forwarding`).
                    nd.away = nd.route.filter(|_| watches).map(|(n, v, _)| (n, v));
                    if !watches {
                        nd.forget(mid);
                    }
                    nd.route = None;
                    nd.left = None;
                }
                // What the mechanism promises to leave on the node a process left (what
                // its commit left, not what the node learned since as a sender).
                let nd = &self.nodes[x as usize];
                let promise = match fwd {
                    Forwarding::LinkUpdate | Forwarding::Resend | Forwarding::OriginSite => x == self.birth || nd.left != Some(mid),
                    // A link, kept (a refusal from a restarted node may have taken it).
                    // (Until the process ends: then its chain is told to forget it.)
                    Forwarding::LinkTraversal => {
                        nd.left == Some(mid) || nd.route.is_some_and(|r| r.1 > mid) || self.report.crashes > 0 || self.ended.is_some()
                    }
                };
                if !promise {
                    let what = if fwd == Forwarding::LinkTraversal { "keeps no link to the process" } else { "keeps a route" };
                    return Err(
                        self.fail(format!("RESIDUAL: node {x} {what} after mid {mid} ({fwd}), every node told having acknowledged"))
                    );
                }
                if matches!(mech, Mechanism::Precopy | Mechanism::Hybrid) {
                    self.report.rounds += r.rounds.len() as u64;
                    match r.stop {
                        StopReason::Converged => self.report.converged += 1,
                        StopReason::RoundLimit => self.report.round_limited += 1,
                        // (Pre-copy slows the process down before it gives up; hybrid
                        // hands what is left to post-copy instead.)
                        StopReason::NotShrinking if r.throttle > 0 || mech == Mechanism::Hybrid => {}
                        other => {
                            return Err(
                                self.fail(format!("CONVERGENCE: precopy mid {mid} stopped ({other:?}) without reporting throttling"))
                            )
                        }
                    }
                    if r.throttle > 0 {
                        self.report.throttled += 1;
                    }
                }
            }
            Some(SourceOutcome::Failed(why)) => {
                if matches!(why, Failure::Refused(_)) {
                    self.report.refused += 1;
                } else {
                    self.report.failed += 1;
                }
                if nd.copy.as_ref().is_none_or(|c| c.state != CopyState::Running) {
                    return Err(self.fail(format!("node {x}: mid {mid} failed ({why}) but the process does not run here")));
                }
            }
            Some(SourceOutcome::InDoubt(_)) => self.report.in_doubt += 1,
            None => {}
        }
        if let Some(c) = &self.cur {
            if c.mid == mid && c.rounds_start > 0 {
                let rounds_us = r.frozen_at_us.unwrap_or(self.now).saturating_sub(c.rounds_start);
                self.report.ticks_in_rounds += c.ticks_in_rounds;
                if rounds_us > 6 * self.tick_us && c.ticks_in_rounds == 0 && self.nodes[x as usize].copy.is_some() {
                    return Err(
                        self.fail(format!("PROGRESS: precopy rounds of mid {mid} lasted {rounds_us} us and the process made no progress"))
                    );
                }
            }
        }
        Ok(())
    }

    fn dest_action(&mut self, y: NodeId, mid: Mid, a: Action) -> Result<(), SimFailure> {
        trace!(self, "dest {y} mid {mid}: {a:?}");
        let now = self.now;
        match a {
            Action::Reinstate { .. } => {
                let nd = &mut self.nodes[y as usize];
                let Some(img) = nd.images.remove(&mid) else { return Err(self.fail(format!("node {y}: Reinstate without an image"))) };
                if nd.copy.is_some() {
                    return Err(self.fail(format!("node {y}: Reinstate over an existing copy")));
                }
                nd.lacks.clear();
                let (expect, held) = img.order;
                nd.copy = Some(Copy {
                    state: CopyState::Temp,
                    progress: img.progress,
                    consumed: img.consumed,
                    mailbox: img.mailbox,
                    order: Order::from_wire(expect, held, now).with_fault(self.opts.order_fault),
                    waiting: Vec::new(),
                    export_mark: None,
                    blocked_on: None,
                    mid,
                    fwd: Forwarding::LinkUpdate,
                    trail: Vec::new(),
                    told: BTreeSet::new(),
                });
                let delay = self.rng.range(0, 1_000);
                self.schedule(now + delay, Ev::Reinstated { node: y, mid });
            }
            Action::Discard => {
                // The node's abort_import: what waited for the commit goes on along the
                // route (back to the source), with its numbers.
                let nd = &mut self.nodes[y as usize];
                nd.images.remove(&mid);
                if nd.copy.as_ref().is_some_and(|c| c.state == CopyState::Temp && c.mid == mid) {
                    let c = nd.copy.take().expect("checked");
                    for (_, _, m, _) in c.waiting {
                        if let Some(m) = m {
                            // (It came from elsewhere unless sent here.)
                            let hops = u8::from(m.sender.0 != y);
                            self.route_msg(y, m, hops)?;
                        }
                    }
                }
            }
            Action::Resume { .. } => {
                let nd = &mut self.nodes[y as usize];
                let Some(mut c) = nd.copy.take() else { return Err(self.fail(format!("node {y}: Resume without a copy"))) };
                if c.state != CopyState::Temp {
                    return Err(self.fail(format!("node {y}: Resume of a {:?} copy", c.state)));
                }
                // It runs once its late messages are here too (`late_arrive`).
                c.mid = mid;
                let nd = &mut self.nodes[y as usize];
                nd.copy = Some(c);
                nd.resume_pending = Some(mid);
                nd.route = None;
                nd.left = None;
                nd.away = None;
                nd.dirty.clear();
                nd.throttle = 0;
            }
            Action::RunWithoutLate => {
                if self.nodes[y as usize].resume_pending == Some(mid) {
                    trace!(self, "{y}: mid {mid} runs without its late messages (the source restarted)");
                    let late = LateMsgs {
                        mid,
                        inbox: Vec::new(),
                        order: (Vec::new(), Vec::new()),
                        fwd: Forwarding::LinkUpdate,
                        trail: Vec::new(),
                    };
                    self.commit_import(y, late, false)?;
                }
            }
            Action::PagesArrived { pages } => {
                // Now and then one of them is lost on its way to the process: not the one
                // it waits for (that one the node installs in it at once, as it wakes it).
                let waited = self.nodes[y as usize].copy.as_ref().and_then(|c| c.blocked_on);
                let lost = (!pages.is_empty() && self.rng.chance(self.opts.lose_installs_per_mille))
                    .then(|| pages[self.rng.below(pages.len() as u64) as usize])
                    .filter(|&p| Some(p) != waited);
                if lost.is_some() {
                    self.report.installs_lost += 1;
                }
                let nd = &mut self.nodes[y as usize];
                for &p in &pages {
                    if Some(p) == lost {
                        nd.lacks.insert(p);
                    } else {
                        nd.lacks.remove(&p);
                    }
                }
                if let Some(c) = nd.copy.as_mut() {
                    if c.blocked_on.is_some_and(|p| pages.contains(&p) && Some(p) != lost) {
                        c.blocked_on = None;
                    }
                }
            }
            Action::VerifyPages => {
                let nd = &mut self.nodes[y as usize];
                let missing: Vec<PageNo> = nd.lacks.iter().copied().collect();
                self.report.pages_asked_again += missing.len() as u64;
                if let Some(d) = nd.dests.get_mut(&mid) {
                    d.pages_verified(now, &missing);
                }
            }
            Action::Kill { why } => {
                let src = self.nodes[y as usize].dests[&mid].source();
                let restarted = self.cur.as_ref().is_some_and(|c| c.mid == mid && self.nodes[src as usize].epoch != c.src_epoch);
                // Unreachable (seen down, never up again) for the whole limit.
                let before_late = matches!(why, Failure::SourceUnreachableBeforeLate { .. });
                let unreachable = matches!(why, Failure::SourceUnreachableWithPages { .. } | Failure::SourceUnreachableBeforeLate { .. })
                    && self.down.get(&(y, src)).is_some_and(|&t| now.saturating_sub(t) >= self.cfg.source_down_limit_us);
                if !restarted && !unreachable {
                    return Err(self.fail(format!("node {y}: Kill ({why}) but source {src} did not restart nor stay unreachable")));
                }
                if before_late {
                    // Only the source staying away explains it, and only a process that
                    // really waited for its late messages.
                    if !unreachable {
                        return Err(self.fail(format!("node {y}: Kill ({why}) but source {src} was not unreachable for the limit")));
                    }
                    if self.nodes[y as usize].resume_pending != Some(mid) {
                        return Err(self.fail(format!("node {y}: Kill ({why}) of mid {mid}, which was not waiting for its late messages")));
                    }
                    self.report.late_kills += 1;
                    self.crashed_holding.push(format!("source {src} unreachable for the limit before the late messages of mid {mid} came"));
                } else if unreachable {
                    self.report.unreachable_kills += 1;
                    self.crashed_holding.push(format!("lazy source {src} unreachable for the limit with pages of mid {mid}"));
                } else {
                    self.report.lazy_kills += 1;
                    self.crashed_holding.push(format!("lazy source {src} with pages of mid {mid}"));
                }
                self.report.process_lost = Some(why.to_string());
                self.killed = true;
                let nd = &mut self.nodes[y as usize];
                nd.resume_pending = None;
                nd.lacks.clear();
                let gone: Vec<AppMsg> = nd.copy.take().map(|c| copy_msgs(&c)).unwrap_or_default();
                for m in gone {
                    self.lost_with_process.insert((m.sender, m.seq));
                }
            }
            Action::Done => {
                let d = &self.nodes[y as usize].dests[&mid];
                self.report.faults_served += d.report().faults as u64;
            }
            other => return Err(self.fail(format!("node {y}: a dest asked for a source action {other:?}"))),
        }
        Ok(())
    }

    // ---- events ----

    fn event(&mut self, ev: Ev) -> Result<(), SimFailure> {
        let now = self.now;
        match ev {
            Ev::Deliver { a, b } => self.deliver(a, b)?,
            Ev::Tick => {
                self.tick()?;
                let t = self.tick_us;
                self.schedule(now + t, Ev::Tick);
            }
            Ev::PartnerSend => {
                if !self.ending && !self.process_gone() {
                    let x = self.rng.below(self.n as u64) as NodeId;
                    let nd = &mut self.nodes[x as usize];
                    if nd.alive {
                        // Numbered where it is sent from, as the node numbers it.
                        let msg = AppMsg { sender: (x, nd.epoch), seq: nd.next_seq };
                        nd.next_seq += 1;
                        self.sent.insert(msg.sender, msg.seq);
                        self.report.messages_sent += 1;
                        trace!(self, "partner {x} sends #{}", msg.seq);
                        self.route_msg(x, msg, 0)?;
                    }
                    let g = self.send_gap_us;
                    let gap = self.rng.range(g / 2, g * 2);
                    self.schedule(now + gap, Ev::PartnerSend);
                }
            }
            Ev::Migrate => {
                if !self.ending {
                    self.maybe_migrate()?;
                    let gap = self.rng.range(1_000, 20_000);
                    self.schedule(now + gap, Ev::Migrate);
                }
            }
            Ev::Safepoint { node, mid } => {
                let nd = &mut self.nodes[node as usize];
                if !nd.alive || nd.sources.get(&mid).is_none_or(|s| s.outcome().is_some()) {
                    return Ok(());
                }
                let Some(c) = nd.copy.as_mut() else { return Ok(()) };
                if c.state == CopyState::Running {
                    c.state = CopyState::Frozen;
                }
                // As the host: the dirty pages are listed only if the machine uses them.
                let src = nd.sources.get_mut(&mid).expect("checked");
                let dirty: Vec<PageNo> =
                    if src.needs_last_dirty() { std::mem::take(&mut nd.dirty).into_iter().collect() } else { Vec::new() };
                let image_len = 2048 + 8 * c.mailbox.len() as u64;
                src.frozen(now, &dirty, image_len);
                self.pump(node)?;
            }
            Ev::Reinstated { node, mid } => {
                let nd = &mut self.nodes[node as usize];
                if let Some(d) = nd.dests.get_mut(&mid) {
                    d.reinstated(now);
                    self.pump(node)?;
                }
            }
            Ev::GapSweep { node } => self.gap_sweep(node),
            Ev::LocateSweep { node } => self.locate_sweep(node)?,
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => self.restart(node)?,
            Ev::Cut { a, b, until } => {
                trace!(self, "cut {a}-{b} until {until}");
                self.report.partitions += 1;
                for (x, y) in [(a, b), (b, a)] {
                    let l = &mut self.links[x as usize][y as usize];
                    l.cut_until = l.cut_until.max(until);
                }
                self.schedule(until, Ev::Heal { a, b });
                if until > now + self.node_down_us {
                    self.schedule(now + self.node_down_us, Ev::Down { a, b });
                }
            }
            Ev::Heal { a, b } => {
                for (x, y) in [(a, b), (b, a)] {
                    let l = &self.links[x as usize][y as usize];
                    if l.cut_until <= now {
                        let times: Vec<u64> = l.queue.iter().map(|(t, _)| (*t).max(now)).collect();
                        for t in times {
                            self.schedule(t, Ev::Deliver { a: x, b: y });
                        }
                    }
                }
                if self.links[a as usize][b as usize].cut_until <= now {
                    self.peers_up(a, b)?;
                }
            }
            Ev::Down { a, b } => {
                if self.links[a as usize][b as usize].cut_until > now {
                    self.peers_down(a, b)?;
                }
            }
            Ev::EndPhase => {
                trace!(self, "end of the active phase");
                self.ending = true;
                self.end_started = now;
                for x in 0..self.n {
                    for y in 0..self.n {
                        self.links[x][y].cut_until = 0;
                        let times: Vec<u64> = self.links[x][y].queue.iter().map(|(t, _)| (*t).max(now)).collect();
                        for t in times {
                            self.schedule(t, Ev::Deliver { a: x as NodeId, b: y as NodeId });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node without a copy monitors the process. Node `x` has just seen node `y`
    /// go down or come back restarted: its monitor fires `node_down` if its route points
    /// at `y` (the node's rule, `node_down` in `vm/src/node/remote.rs`). That must not
    /// happen while the process runs on another node `z` that has told `x` everything
    /// it sent it (nothing queued from `z` to `x`, the link not cut): `z` would have told
    /// `x` where the process is.
    fn monitor_sees_down(&mut self, x: NodeId, y: NodeId) -> Result<(), SimFailure> {
        let nd = &self.nodes[x as usize];
        let holds = nd.copy.as_ref().is_some_and(|c| c.state != CopyState::Handed);
        if !nd.alive || holds || !self.watchers[x as usize] || self.monitor_place(x) != y {
            return Ok(());
        }
        self.report.monitor_fires += 1;
        let told_x = |z: usize| {
            let l = &self.links[z][x as usize];
            l.queue.is_empty() && l.cut_until <= self.now
        };
        let runs = (0..self.n).find(|&z| {
            z != y as usize
                && z != x as usize
                && self.nodes[z].alive
                && self.nodes[z].copy.as_ref().is_some_and(|c| c.state == CopyState::Running)
                && told_x(z)
        });
        match runs {
            Some(z) => Err(self.fail(format!(
                "MONITOR: node {x} fired node_down for node {y} while the process runs on node {z}, which told it everything"
            ))),
            None => Ok(()),
        }
    }

    /// `a` and `b` see each other down (the session's failure detector): a stall, not a
    /// crash; the machines of each are told.
    fn peers_down(&mut self, a: NodeId, b: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if !self.nodes[x as usize].alive || self.down.contains_key(&(x, y)) {
                continue;
            }
            trace!(self, "{x} sees {y} down");
            self.down.insert((x, y), now);
            let nd = &mut self.nodes[x as usize];
            for s in nd.sources.values_mut() {
                s.peer_down(now, y);
            }
            for d in nd.dests.values_mut() {
                d.peer_down(now, y);
            }
            self.pump(x)?;
            self.monitor_sees_down(x, y)?;
        }
        Ok(())
    }

    /// `a` and `b` hear from each other again (the same incarnations).
    fn peers_up(&mut self, a: NodeId, b: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if self.down.remove(&(x, y)).is_none() || !self.nodes[x as usize].alive {
                continue;
            }
            trace!(self, "{x} sees {y} up");
            for s in self.nodes[x as usize].sources.values_mut() {
                s.peer_up(now, y);
            }
            for d in self.nodes[x as usize].dests.values_mut() {
                d.peer_up(now, y);
            }
            self.pump(x)?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SimFailure> {
        let Some(x) =
            (0..self.n).find(|&i| self.nodes[i].alive && self.nodes[i].copy.as_ref().is_some_and(|c| c.state == CopyState::Running))
        else {
            return Ok(());
        };
        let now = self.now;
        // Lazy: touch a page; block on it if absent.
        let page = self.rng.below(self.size_pages as u64) as PageNo;
        let nd = &mut self.nodes[x];
        if nd.copy.as_ref().is_some_and(|c| c.blocked_on.is_some()) {
            return Ok(());
        }
        // (A page lost on its way to the process is absent to it, whatever the machine
        // counts: the machine must ask for it again.)
        let lacks = nd.lacks.contains(&page);
        let faulted = nd
            .dests
            .values_mut()
            .find(|d| d.committed() && d.outcome().is_none())
            .is_some_and(|d| (lacks || !d.is_present(page)) && d.page_fault(now, page));
        if faulted {
            nd.copy.as_mut().expect("running").blocked_on = Some(page);
            trace!(self, "node {x}: page fault on {page}");
            return self.pump(x as NodeId);
        }
        if self.may_end {
            let lazy: Vec<Mid> = nd.dests.iter().filter(|(_, d)| d.pages_pending()).map(|(&m, _)| m).collect();
            if !lazy.is_empty() && self.end_rng.chance(END_PER_MILLE) {
                return self.end_process(x as NodeId, &lazy);
            }
        }
        let nd = &mut self.nodes[x];
        let throttle = nd.throttle;
        // (Out of its node while it runs a step, so the checkers can use `self`; a failure
        // ends the run.)
        let mut c = nd.copy.take().expect("running");
        if c.progress != self.lineage_progress {
            return Err(self
                .fail(format!("FORK: node {x} runs a copy at progress {} but the process reached {}", c.progress, self.lineage_progress)));
        }
        c.progress += 1;
        self.lineage_progress = c.progress;
        // Consume the mailbox, checking per-sender order.
        for m in std::mem::take(&mut c.mailbox) {
            let last = c.consumed.get(&m.sender).copied();
            if let Some(last) = last.filter(|&l| m.seq <= l) {
                return Err(
                    self.fail(format!("MESSAGES: node {x} consumes {:?}#{} after #{last}: duplicate or reordered", m.sender, m.seq))
                );
            }
            // A skipped number must be lost to a crash, or still in the network (if it is
            // delivered later, it is caught as reordered; if never, by the final check).
            let in_flight = |s: u64| {
                self.links
                    .iter()
                    .flatten()
                    .any(|l| l.queue.iter().any(|(_, w)| matches!(w, Wire::App { msg, .. } if msg.sender == m.sender && msg.seq == s)))
            };
            if let Some(gap) = (last.map_or(0, |l| l + 1)..m.seq).find(|s| !self.lost.contains(&(m.sender, *s)) && !in_flight(*s)) {
                return Err(self.fail(format!(
                    "MESSAGES: node {x} consumes {:?}#{} but #{gap} was never consumed nor lost to a crash (last consumed: {last:?})",
                    m.sender, m.seq
                )));
            }
            if !self.consumed.insert((m.sender, m.seq)) {
                return Err(self.fail(format!("MESSAGES: node {x} consumes {:?}#{} a second time", m.sender, m.seq)));
            }
            c.consumed.insert(m.sender, m.seq);
            self.report.messages_consumed += 1;
        }
        let nd = &mut self.nodes[x];
        nd.copy = Some(c);
        let rate = self.dirty_rate >> throttle;
        for _ in 0..rate {
            let p = self.rng.below(self.size_pages as u64) as PageNo;
            nd.dirty.insert(p);
        }
        if nd.sources.values().any(|s| s.in_rounds()) {
            if let Some(c) = self.cur.as_mut() {
                c.ticks_in_rounds += 1;
            }
        }
        Ok(())
    }

    /// The process, running at `x` with pages still at the source of migration(s)
    /// `lazy`, ends by itself: what was queued for it goes with it, and the host tells
    /// the destination machine, which releases the source.
    fn end_process(&mut self, x: NodeId, lazy: &[Mid]) -> Result<(), SimFailure> {
        let now = self.now;
        let nd = &mut self.nodes[x as usize];
        let c = nd.copy.take().expect("running");
        trace!(self, "END: the process ends at node {x} with lazy pages of mid(s) {lazy:?} still away");
        self.ended = Some(format!("ended at node {x} while mid(s) {lazy:?} had pages at their source"));
        self.report.process_ended += 1;
        for m in copy_msgs(&c) {
            self.gone_with_process(m);
        }
        // Its birth node and its chain forget it (the node's `finish`).
        let mut told = vec![x];
        for n in std::iter::once(self.birth).chain(c.trail.iter().copied()) {
            if !told.contains(&n) {
                told.push(n);
                self.send(x, n, Wire::PidEnded)?;
            }
        }
        for mid in lazy {
            if let Some(d) = self.nodes[x as usize].dests.get_mut(mid) {
                d.process_ended(now);
            }
        }
        self.pump(x)
    }

    fn maybe_migrate(&mut self) -> Result<(), SimFailure> {
        if self.process_gone() || !self.quiet() {
            return Ok(());
        }
        let Some(src) =
            (0..self.n).find(|&i| self.nodes[i].alive && self.nodes[i].copy.as_ref().is_some_and(|c| c.state == CopyState::Running))
        else {
            return Ok(());
        };
        let dst = (src + 1 + self.rng.below(self.n as u64 - 1) as usize) % self.n;
        if !self.nodes[dst].alive {
            return Ok(());
        }
        let mechanism = Mechanism::ALL[self.rng.below(4) as usize];
        let forwarding = match self.opts.fwd_fault {
            // A broken variant: its mechanism in most migrations.
            Some(f) if self.fwd_rng.chance(700) => f.forwarding(),
            _ => Forwarding::ALL[self.fwd_rng.below(4) as usize],
        };
        let partners: Vec<NodeId> = if forwarding.updates_partners() {
            (0..self.n as NodeId).collect()
        } else {
            (0..self.n as NodeId).filter(|&i| self.watchers[i as usize]).collect()
        };
        let mid = self.next_mid;
        self.next_mid += 1;
        self.report.migrations += 1;
        let init = SourceInit {
            mid,
            pid: PID,
            me: src as NodeId,
            dest: dst as NodeId,
            size_pages: self.size_pages,
            mechanism,
            // As `auto` picks pre-copy: post-copy for what is left if it stops converging.
            fallback: mechanism == Mechanism::Precopy && self.rng.chance(500),
            forwarding,
            partners,
            members: Vec::new(),
            admit: None,
        };
        trace!(self, "migrate mid {mid}: {src} -> {dst} {mechanism:?} {forwarding}");
        let s = Source::new(self.now, self.cfg.clone(), init);
        self.nodes[src].sources.insert(mid, s);
        self.cur = Some(Cur {
            mid,
            src: src as NodeId,
            dst: dst as NodeId,
            src_epoch: self.nodes[src].epoch,

            rounds_start: 0,
            ticks_in_rounds: 0,
        });
        self.pump(src as NodeId)
    }

    fn systematic_fault(&mut self) -> Result<(), SimFailure> {
        if self.plan_done || self.ending {
            return Ok(());
        }
        let k = match self.plan {
            Plan::Random => return Ok(()),
            Plan::CrashSource(k) | Plan::CrashDest(k) | Plan::CrashThird(k) | Plan::Partition(k) | Plan::Stall(k) => k,
        };
        if self.mig_events != k {
            return Ok(());
        }
        self.plan_done = true;
        let Some(c) = self.cur.as_ref() else { return Ok(()) };
        let (src, dst) = (c.src, c.dst);
        match self.plan {
            Plan::CrashSource(_) => self.schedule(self.now, Ev::Crash { node: src }),
            Plan::CrashDest(_) => self.schedule(self.now, Ev::Crash { node: dst }),
            Plan::CrashThird(_) => {
                if let Some(t) = (0..self.n as NodeId).find(|&t| t != src && t != dst) {
                    self.schedule(self.now, Ev::Crash { node: t });
                }
            }
            Plan::Partition(_) => {
                let until = self.now + self.rng.range(1_000, 600_000);
                self.schedule(self.now, Ev::Cut { a: src, b: dst, until });
            }
            Plan::Stall(_) => {
                let x = if self.rng.chance(500) { src } else { dst };
                let until = self.now + self.rng.range(self.node_down_us, 3 * self.cfg.source_down_limit_us);
                trace!(self, "STALL {x} until {until}");
                self.report.stalls += 1;
                for y in (0..self.n as NodeId).filter(|&y| y != x) {
                    self.schedule(self.now, Ev::Cut { a: x, b: y, until });
                }
            }
            Plan::Random => {}
        }
        Ok(())
    }

    fn crash(&mut self, x: NodeId) {
        if !self.nodes[x as usize].alive {
            return;
        }
        trace!(self, "CRASH {x}");
        self.report.crashes += 1;
        let nd = &mut self.nodes[x as usize];
        let mut lost: Vec<AppMsg> = Vec::new();
        if let Some(c) = &nd.copy {
            lost.extend(copy_msgs(c));
            self.crashed_holding.push(format!("node {x} with a {:?} copy", c.state));
        }
        if let Some(l) = &nd.locating {
            lost.extend(l.waiting.iter().map(|(m, ..)| *m));
        }
        if nd.sources.values().any(|s| !s.residual().is_empty() && s.commit_sent()) {
            self.crashed_holding.push(format!("node {x} with pages a lazy copy depends on"));
        }
        for y in 0..self.n {
            for (a, b) in [(x as usize, y), (y, x as usize)] {
                for (_, w) in self.links[a][b].queue.drain(..) {
                    lost.extend(carried_msgs(&w));
                }
                self.links[a][b].busy_until = 0;
            }
        }
        for m in lost {
            self.lost.insert((m.sender, m.seq));
        }
        let epoch = self.nodes[x as usize].epoch;
        self.nodes[x as usize] = Node { alive: false, crashed_ever: true, ..Node::new(epoch) };
        let delay = self.rng.range(1_000, 300_000);
        self.schedule(self.now + delay, Ev::Restart { node: x });
    }

    fn restart(&mut self, x: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        // A restarted node locates the process (not modelled: an oracle): where it runs,
        // else where it is frozen.
        let with = |st: CopyState| (0..self.n).find(|&i| self.nodes[i].alive && self.nodes[i].copy.as_ref().is_some_and(|c| c.state == st));
        // (A destination that committed and waits for its late messages counts: the
        // process is there.)
        let committed = (0..self.n).find(|&i| {
            let nd = &self.nodes[i];
            nd.alive && nd.resume_pending.is_some() && nd.copy.as_ref().is_some_and(|c| c.state == CopyState::Temp)
        });
        let owner = with(CopyState::Running).or(committed).or_else(|| with(CopyState::Frozen));
        let at = owner.and_then(|o| self.nodes[o].copy.as_ref().map(|c| (o as NodeId, c.mid, c.fwd)));
        let epoch = self.nodes[x as usize].epoch + 1;
        trace!(self, "RESTART {x} epoch {epoch}");
        // What was sent to the dead incarnation while it was down is dropped (the session
        // layer never delivers it to the new one).
        for y in 0..self.n {
            for (_, w) in self.links[y][x as usize].queue.drain(..) {
                for m in carried_msgs(&w) {
                    self.lost.insert((m.sender, m.seq));
                }
            }
        }
        self.nodes[x as usize] = Node { crashed_ever: true, ..Node::new(epoch) };
        if let Some((node, mid, fwd)) = at {
            if node != x && (x != self.birth || fwd != Forwarding::Resend) {
                self.nodes[x as usize].route = Some((node, mid, fwd));
            } else if node != x {
                self.nodes[x as usize].away = Some((node, mid));
            }
        }
        // Routes to the old incarnation are stale (`Node::node_restarted`): the birth node
        // looks for the process anew, the others forget them.
        for y in 0..self.n {
            if y == x as usize || !self.nodes[y].alive {
                continue;
            }
            let birth = y as NodeId == self.birth;
            let nd = &mut self.nodes[y];
            if let Some((n, v, _)) = nd.route {
                if n == x {
                    nd.route = None;
                    nd.left = None;
                    if birth {
                        nd.away = Some((NOWHERE, v));
                    }
                }
            }
            if let Some((n, v)) = nd.away {
                if n == x {
                    nd.away = birth.then_some((NOWHERE, v));
                }
            }
        }
        // A restart is told as such (not as down, up).
        self.down.retain(|&(a, b), _| a != x && b != x);
        for y in 0..self.n {
            if y == x as usize || !self.nodes[y].alive {
                continue;
            }
            for s in self.nodes[y].sources.values_mut() {
                s.peer_restarted(now, x);
            }
            for d in self.nodes[y].dests.values_mut() {
                d.peer_restarted(now, x);
            }
            self.pump(y as NodeId)?;
            self.monitor_sees_down(y as NodeId, x)?;
        }
        Ok(())
    }

    // ---- checkers ----

    fn process_gone(&self) -> bool {
        self.killed || !self.nodes.iter().any(|nd| nd.alive && nd.copy.as_ref().is_some_and(|c| c.state != CopyState::Handed))
    }

    fn quiet(&self) -> bool {
        self.nodes
            .iter()
            .all(|nd| !nd.alive || (nd.sources.values().all(|s| s.outcome().is_some()) && nd.dests.values().all(|d| d.outcome().is_some())))
    }

    fn settled(&self) -> bool {
        self.quiet()
            && self.nodes.iter().all(|nd| nd.alive)
            && self.links.iter().flatten().all(|l| l.queue.is_empty())
            && self.nodes.iter().all(|nd| nd.locating.is_none())
            && self.nodes.iter().all(|nd| {
                nd.copy.as_ref().is_none_or(|c| (c.mailbox.is_empty() && c.order.held_len() == 0) || c.state != CopyState::Running)
            })
    }

    fn unsettled(&self) -> String {
        let mut v = Vec::new();
        for (i, nd) in self.nodes.iter().enumerate() {
            for (mid, s) in &nd.sources {
                if s.outcome().is_none() {
                    v.push(format!("node {i} source mid {mid} residual {:?}", s.residual()));
                }
            }
            for (mid, d) in &nd.dests {
                if d.outcome().is_none() {
                    v.push(format!("node {i} dest mid {mid} absent {}", d.absent_pages()));
                }
            }
        }
        let q: usize = self.links.iter().flatten().map(|l| l.queue.len()).sum();
        format!("{} (queued: {q})", v.join("; "))
    }

    fn check(&self) -> Result<(), SimFailure> {
        let running: Vec<usize> = (0..self.n)
            .filter(|&i| self.nodes[i].alive && self.nodes[i].copy.as_ref().is_some_and(|c| c.state == CopyState::Running))
            .collect();
        if running.len() > 1 {
            return Err(self.fail(format!("TWO RUNNING COPIES: on nodes {running:?}")));
        }
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), SimFailure> {
        // A destination that committed runs once the late messages come (or once the
        // source is known lost): one still waiting has been forgotten by its source.
        if let Some((y, mid)) = self.nodes.iter().enumerate().find_map(|(y, nd)| nd.resume_pending.map(|m| (y, m))) {
            return Err(self.fail(format!("COMMITTED BUT NOT RUNNING: node {y} committed mid {mid} and its late messages never came")));
        }
        let alive = self.nodes.iter().any(|nd| nd.copy.as_ref().is_some_and(|c| c.state == CopyState::Running));
        if !alive {
            // Stalled in doubt: `Commit` was sent and the dest restarted before answering.
            // The frozen copy is kept and never resumed (it may have run at the dest).
            let in_doubt = self.nodes.iter().enumerate().find(|(_, nd)| {
                nd.sources.values().any(|s| matches!(s.outcome(), Some(SourceOutcome::InDoubt(_))))
                    && nd.copy.as_ref().is_some_and(|c| c.state == CopyState::Frozen)
            });
            if self.ended.is_some() {
                // It ended by itself: nothing was lost.
            } else if let Some((i, _)) = in_doubt {
                self.report.process_lost = Some(format!("in doubt: frozen at node {i}, the dest restarted after Commit was sent"));
            } else if self.crashed_holding.is_empty() {
                return Err(self.fail("LOST: the process is gone and no node holding it crashed".into()));
            } else if self.report.process_lost.is_none() {
                let in_doubt = self.report.in_doubt > 0;
                self.report.process_lost =
                    Some(format!("{}{}", if in_doubt { "in doubt (frozen at the source): " } else { "" }, self.crashed_holding.join(", ")));
            }
            // What is still queued for it (a frozen copy's mailbox, held messages) is gone
            // with it.
            let mut gone = Vec::new();
            for nd in &self.nodes {
                gone.extend(nd.copy.iter().flat_map(copy_msgs));
            }
            for m in gone {
                self.gone_with_process(m);
            }
        } else if let Some(&(sender, seq)) = self.lost_with_process.iter().find(|m| !self.lost.contains(m) && !self.consumed.contains(m)) {
            return Err(self.fail(format!("MESSAGES: {sender:?}#{seq} was dropped as gone with the process, but the process lives")));
        }
        // Every number sent: consumed once (order was checked as it was consumed), dropped
        // by a crash, or gone with a lost process.
        for (&sender, &last) in &self.sent {
            let accounted = |s: u64| {
                let m = (sender, s);
                self.consumed.contains(&m)
                    || self.lost.contains(&m)
                    || (!alive && self.lost_with_process.contains(&m))
                    || (self.ended.is_some() && self.to_ended.contains(&m))
            };
            if let Some(s) = (0..=last).find(|&s| !accounted(s)) {
                let fate = match (alive, &self.ended) {
                    (true, _) => "consumed nor lost to a crash",
                    (false, None) => "consumed, lost to a crash nor queued for the lost process",
                    (false, Some(_)) => "consumed, lost to a crash nor sent to the process that ended",
                };
                return Err(self.fail(format!("MESSAGES: {sender:?}#{s} (of {last}) never {fate}")));
            }
        }
        Ok(())
    }
}

/// The application messages a copy holds: queued, held back, or waiting for its commit.
fn copy_msgs(c: &Copy) -> Vec<AppMsg> {
    let (_, held) = c.order.to_wire();
    c.mailbox.iter().copied().chain(held.into_iter().filter_map(|(_, _, m)| m)).chain(c.waiting.iter().filter_map(|w| w.2)).collect()
}

/// The application messages on the wire in `w`.
fn carried_msgs(w: &Wire) -> Vec<AppMsg> {
    match w {
        Wire::App { msg, .. } | Wire::Refused { msg, .. } => vec![*msg],
        Wire::Late(l) => l.inbox.iter().copied().chain(l.order.1.iter().filter_map(|(_, _, m)| *m)).collect(),
        Wire::Mig(..) | Wire::Locate | Wire::Located(_) | Wire::PidMoved { .. } | Wire::PidEnded => Vec::new(),
    }
}

fn short(m: &MigMsg) -> String {
    match m {
        MigMsg::Pages { round, pages, .. } => format!("Pages r{round} x{}", pages.len()),
        MigMsg::Final { pages, absent, .. } => format!("Final pages {} absent {}", pages.len(), crate::proto::migrate::ranges_len(absent)),
        MigMsg::PageData { pages, sent, .. } => format!("PageData x{} {sent:?}", pages.len()),
        MigMsg::Fetch { pages, .. } => format!("Fetch {pages:?}"),
        other => format!("{other:?}"),
    }
}
