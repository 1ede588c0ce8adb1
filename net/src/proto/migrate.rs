//! The live-migration protocol, one sans-IO state machine per migration on each side
//! ([`Source`], [`Dest`]), in the shape of [`crate::proto::session`] (quinn-proto's: `handle_*`
//! in, `poll_*` out, time as an argument). The QUIC host (`node/migration/`) and the
//! deterministic simulator ([`crate::sim::migrate`]) drive these same machines.
//!
//! (One file over 1,000 lines: the source and the destination are the two halves of one
//! commit rule, and their transitions are checked against each other when read side by
//! side; the message, action and failure types they share come first, the unit tests of
//! both last.)
//!
//! A machine does no I/O and reads no clock. The host feeds it time (`now_us`), the
//! [`MigMsg`]s it receives ([`Source::handle`], [`Dest::handle`]), a few facts about the
//! process (`frozen`, `pages_dirtied`, `reinstated`, `page_fault`, `process_ended`,
//! `late_arrived`) and peer events (`peer_down`, `peer_up`, `peer_restarted`); it polls
//! it for messages to send (`poll_transmit`, each addressed to a node), host
//! [`Action`]s (`poll_action`) and the next timeout (`poll_timeout`, `handle_timeout`). The host drains `poll_action` before
//! `poll_transmit` after each call.
//!
//! Page contents, the image and the application messages are the host's: the machines
//! deal in page indices, counts and bytes.
//!
//! # Transport assumption
//!
//! Messages between two nodes ride the node-pair session ([`crate::proto::session`]): exactly
//! once and in order per pair of incarnations, across reconnects and partitions (which
//! only delay them). What is lost is everything addressed to, or queued at, an
//! incarnation that crashes; the host learns it with `peer_restarted`. A partition is
//! silence: the machines use timeouts before the commit point and stall after it.
//!
//! # Flow
//!
//! `Offer{mid, pid, size_pages, mechanism}` → `Accept` | `Refuse{why}` →
//! `Pages{round, pages}`… `RoundDone{round}` → `RoundAck{round}` (precopy/hybrid rounds,
//! process running) → freeze ([`Action::Freeze`], host answers [`Source::frozen`]) →
//! `Final{image_len, pages, absent, partners}` → dest reinstates under a temporary id
//! ([`Action::Reinstate`], host answers [`Dest::reinstated`]) → `Ready` → `Commit` →
//! dest resumes it ([`Action::Resume`]) → `Committed` → the source hands it over
//! ([`Action::CommitExport`]: what reached it after its image goes to the dest, and the
//! host forwards from then on), deletes its copy ([`Action::DeleteSource`]; for
//! lazy/hybrid once the dest says `Released`: every page has moved, the dest gave up on
//! them, or the process ended there), and sends `LinkUpdate` to every partner node;
//! once each has answered `LinkAck` (or is down or restarted) the source holds nothing.
//!
//! # The commit rule (one owner: stall, never fork)
//!
//! The decision is made **by the destination, at `Commit` receipt**, and only there:
//!
//! * Before sending `Commit` the source owns the process. On any failure (timeout,
//!   `Refuse`, `Aborted` from the dest, dest down or restarted) it sends `Abort` and
//!   resumes it ([`Action::Unfreeze`]). The dest has not resumed anything: it resumes
//!   only on `Commit`.
//! * The dest, while `Ready`, either receives `Commit` (→ commits: resumes, answers
//!   `Committed`) or gives up (timeout, `Abort`, source restarted: → discards its copy
//!   and, if a `Commit` comes later, answers `Aborted`). These two are exclusive
//!   transitions of one state on one node, so the dest's answer is the truth.
//! * **After sending `Commit` the source never resumes on its own**: not on timeout, not
//!   on partition. It resumes only on `Aborted` (the dest says it did not commit), and it
//!   hands the process over on `Committed`. If the dest restarts while the answer is
//!   unknown (it may have committed and died, or died before `Commit` arrived), the
//!   outcome is [`SourceOutcome::InDoubt`]: the frozen copy is kept, never resumed. This
//!   is the two-generals corner: with no durable decision record the source cannot
//!   learn it, so it stalls rather than risk a fork; the loss is reported, not silent.
//!
//! Two running copies would need the source to resume after `Commit` without an
//! `Aborted`, or the dest to resume without `Commit`: neither transition exists.
//!
//! # Messages for the migrant
//!
//! Per-sender order is not this protocol's business but the node's, which numbers every
//! message per (origin node, target) and puts them in sequence where the target is
//! (`tern_vm::node::order`, the same code in the node and in the simulator). While the
//! process is frozen its node keeps queueing what comes for it; what came after the
//! image goes to the dest at [`Action::CommitExport`] with its inbox's sequence state,
//! and anything that reaches the dest before that waits for it. From then on the source
//! forwards, keeping each message's number, so a message sent straight to the dest by a
//! partner that got its `LinkUpdate` cannot overtake one still on its way through the
//! source: the dest holds it back until the earlier numbers come. The `LinkUpdate`s only
//! make forwarding unnecessary; once every partner acknowledged (each `LinkAck` follows
//! everything that partner sent to the source, on the same session) the source's
//! forwarding entry can go: [`Source::residual`] is empty.

use crate::proto::session::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use tern_vm::pagebits::PageBits;

/// A migration's id, unique in the mesh (and increasing per process: it versions link updates).
pub type Mid = u64;
/// A process id (location-independent).
pub type Pid = u64;
/// A page index in the process's address space.
pub type PageNo = u32;

pub use crate::proto::mechanism::{Admit, Forwarding, Mechanism};

/// Why a destination refused an offer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Over its memory or process limits.
    OverLimits,
    /// It already runs or receives this process.
    Busy,
    /// The image or the pages could not be reinstated (damaged, or code that fails
    /// verification).
    BadImage,
    /// A load policy's move that would leave the dest busier than the source (another
    /// node's moves got there first), or the dest is drained or stopping.
    NoRoom,
}

impl RefuseReason {
    /// What it means, in words (the destination's log says more).
    pub fn words(self) -> &'static str {
        match self {
            RefuseReason::OverLimits => {
                "the process does not fit its limits: heap size, processes, or migrations in at once; its log says which"
            }
            RefuseReason::Busy => "it already runs or receives this process",
            RefuseReason::BadImage => "the image or its pages could not be reinstated there",
            RefuseReason::NoRoom => "it has no room for a load policy's move, or it is drained or stopping",
        }
    }
}

/// What the two sides and the partner nodes say to each other about one migration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MigMsg {
    Offer {
        mid: Mid,
        pid: Pid,
        size_pages: u32,
        mechanism: Mechanism,
        /// Pre-copy only: if it stops converging, the process resumes at the dest with
        /// the pages it kept writing still at the source (post-copy for those).
        fallback: bool,
        /// How messages find the process afterwards (the dest's link updates say it).
        forwarding: Forwarding,
        /// A coprocess group moving as one: each member and its heap's pages, in the
        /// order their pages follow each other in the migration's page numbers (which
        /// run to `size_pages`, the sum). Empty: the one process `pid`.
        members: Vec<(Pid, u32)>,
        /// A load policy's move: taken only if it leaves the dest no busier than the
        /// source (the dest's host decides; refused: [`RefuseReason::NoRoom`]).
        admit: Option<Admit>,
    },
    Accept {
        mid: Mid,
    },
    Refuse {
        mid: Mid,
        why: RefuseReason,
    },
    /// Page indices of one round (the host attaches the data).
    Pages {
        mid: Mid,
        round: u32,
        pages: Vec<PageNo>,
    },
    RoundDone {
        mid: Mid,
        round: u32,
    },
    RoundAck {
        mid: Mid,
        round: u32,
    },
    /// The process is frozen: its image (`image_len` bytes, mailbox included), the pages
    /// sent with it, the pages left on the source (lazy/hybrid, as ranges `[start, end)`
    /// in order: nothing per page is done for them inside the freeze), its partner nodes.
    Final {
        mid: Mid,
        image_len: u64,
        pages: Vec<PageNo>,
        absent: Vec<PageRange>,
        partners: Vec<NodeId>,
    },
    /// The dest reinstated it under a temporary id and waits for `Commit`.
    Ready {
        mid: Mid,
    },
    /// Source gives up before the commit point.
    Abort {
        mid: Mid,
    },
    Commit {
        mid: Mid,
    },
    Committed {
        mid: Mid,
    },
    /// The dest's answer to a `Commit` after it had given up (or at any time it gives up).
    Aborted {
        mid: Mid,
    },
    /// To a partner node: the process now lives at `to` (apply only if `mid` is newer),
    /// forwarded by `fwd`.
    LinkUpdate {
        mid: Mid,
        pid: Pid,
        to: NodeId,
        fwd: Forwarding,
    },
    LinkAck {
        mid: Mid,
        pid: Pid,
    },
    /// Lazy: dest asks for absent pages (the faulting one plus a prefetch; `ahead`: the
    /// pages after them that a process reading its heap in order will touch next, or,
    /// after a connection was lost, every absent page: [`Dest::resync`]); the source
    /// sends every one it still holds, sent before or not.
    Fetch {
        mid: Mid,
        pages: Vec<PageNo>,
        ahead: bool,
    },
    /// Lazy: pages from the source, answering a fetch or pushed in the background.
    PageData {
        mid: Mid,
        pages: Vec<PageNo>,
        sent: SentFor,
    },
    /// Lazy: the dest needs no more pages (it has them all, gave up on them, or the
    /// process ended there); the source drops its copy.
    Released {
        mid: Mid,
    },
}

/// Why the source sent lazy pages (`MigMsg::PageData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SentFor {
    /// A fault: the process waits for them (the fault stream, first).
    Fault,
    /// A read-ahead `Fetch`: the process will want them soon (the bulk stream).
    ReadAhead,
    /// The background push.
    Push,
}

impl MigMsg {
    /// The migration it is about.
    pub fn mid(&self) -> Mid {
        use MigMsg::*;
        match self {
            Offer { mid, .. }
            | Accept { mid }
            | Refuse { mid, .. }
            | Pages { mid, .. }
            | RoundDone { mid, .. }
            | RoundAck { mid, .. }
            | Final { mid, .. }
            | Ready { mid }
            | Abort { mid }
            | Commit { mid }
            | Committed { mid }
            | Aborted { mid }
            | LinkUpdate { mid, .. }
            | LinkAck { mid, .. }
            | Fetch { mid, .. }
            | PageData { mid, .. }
            | Released { mid } => *mid,
        }
    }

    /// The message's name, for a trace of the protocol's steps.
    pub fn name(&self) -> &'static str {
        use MigMsg::*;
        match self {
            Offer { .. } => "Offer",
            Accept { .. } => "Accept",
            Refuse { .. } => "Refuse",
            Pages { .. } => "Pages",
            RoundDone { .. } => "RoundDone",
            RoundAck { .. } => "RoundAck",
            Final { .. } => "Final",
            Ready { .. } => "Ready",
            Abort { .. } => "Abort",
            Commit { .. } => "Commit",
            Committed { .. } => "Committed",
            Aborted { .. } => "Aborted",
            LinkUpdate { .. } => "LinkUpdate",
            LinkAck { .. } => "LinkAck",
            Fetch { .. } => "Fetch",
            PageData { .. } => "PageData",
            Released { .. } => "Released",
        }
    }

    /// Bytes on the wire, counting `page_bytes` per page carried and `image_len` for `Final`.
    pub fn wire_bytes(&self, page_bytes: u64) -> u64 {
        let pages = |p: &Vec<PageNo>| p.len() as u64 * page_bytes;
        32 + match self {
            MigMsg::Pages { pages: p, .. } | MigMsg::PageData { pages: p, .. } => pages(p),
            MigMsg::Final { image_len, pages: p, .. } => image_len + pages(p),
            _ => 0,
        }
    }
}

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Source: clear the dirty bits; tracking starts now (round 0 sends every page).
    StartDirtyTracking,
    /// Source: report the pages dirtied since the last collection ([`Source::pages_dirtied`]).
    CollectDirty,
    /// Source: slow the process down (fewer reductions per slice); level 1.. (0: normal).
    Throttle { level: u32 },
    /// Source: stop the process at its next safepoint, then call [`Source::frozen`].
    Freeze,
    /// Source: resume the process (failure before commit). What reached it while frozen
    /// is in its mailbox already, in order.
    Unfreeze,
    /// Source: send these pages' contents (the `Pages`/`Final`/`PageData` just queued carry the indices).
    SendPages { pages: u32 },
    /// Source: the process belongs to `to` now. Send it what reached it here after its
    /// image (its late messages and its inbox's sequence state, which go on the session
    /// before anything forwarded), and forward whatever comes for it from now on, with
    /// the numbers it was sent with.
    CommitExport { to: NodeId },
    /// Source: delete the process's copy (state and pages): nothing more is needed from it.
    DeleteSource,
    /// Dest: reinstate the received image under a temporary id, then call [`Dest::reinstated`].
    Reinstate { absent: u32 },
    /// Dest: discard the temporary copy (the migration failed before commit).
    Discard,
    /// Dest: rename it to its pid and run it; `absent` pages are still on the source.
    Resume { absent: u32 },
    /// Dest: the source restarted after the commit. What it had not sent yet (the late
    /// messages of [`Action::CommitExport`]) is gone with it: if the process does not run
    /// yet for want of them, run it with what it has.
    RunWithoutLate,
    /// Dest: these pages arrived (wake threads faulting on them).
    PagesArrived { pages: Vec<PageNo> },
    /// Dest: every page has come. Say which of them the process does not have
    /// ([`Dest::pages_verified`]): the source keeps its copy until it has them all.
    VerifyPages,
    /// Dest: the process cannot go on (lazy: pages it needs are gone): end it with this error.
    Kill { why: Failure },
    /// Source: the destination, asked to commit, has been down for `down_us`: tell
    /// whoever waits for the move that it is in doubt (once; the machine goes on, and the
    /// process stays frozen until the destination answers).
    InDoubt { down_us: u64 },
    /// Source: the move committed, but the destination has been down for `down_us` while
    /// pages of the process are still here (lazy or hybrid): tell whoever waits for the
    /// move that it committed and where the process's pages are (once; the machine goes
    /// on holding them until the destination has them all or restarts).
    AwayAfterCommit { down_us: u64 },
    /// The machine finished (it stays to answer late messages; see `outcome`).
    Done,
}

/// Why a migration failed or a process was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused(RefuseReason),
    /// No answer from the peer within the timeout (`what` it was waiting for).
    Timeout(&'static str),
    /// The dest answered `Aborted`.
    DestAborted,
    /// The source gave up (`Abort`).
    SourceAborted,
    /// The peer node restarted: everything it held for this migration is gone.
    PeerRestarted(NodeId),
    /// The peer node stopped answering before the commit point (it may come back).
    PeerDown(NodeId),
    /// Lazy: the source was lost while `absent` pages were only there.
    SourceLostWithPages {
        source: NodeId,
        absent: u32,
    },
    /// Lazy: the source stayed unreachable for `secs` while `absent` pages were only there.
    SourceUnreachableWithPages {
        source: NodeId,
        absent: u32,
        secs: u64,
    },
    /// The source stayed unreachable for `secs` after the commit, before the process's
    /// late messages came from it.
    SourceUnreachableBeforeLate {
        source: NodeId,
        secs: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(r) => write!(f, "destination refused: {r:?} ({})", r.words()),
            Failure::Timeout(w) => write!(f, "timed out waiting for {w}"),
            Failure::DestAborted => write!(f, "destination aborted"),
            Failure::SourceAborted => write!(f, "source aborted"),
            Failure::PeerRestarted(n) => write!(f, "node {n} restarted"),
            Failure::PeerDown(n) => write!(f, "node {n} stopped answering"),
            Failure::SourceLostWithPages { source, absent } => {
                write!(f, "source node {source} lost while {absent} pages were only there: process ended")
            }
            Failure::SourceUnreachableWithPages { source, absent, secs } => {
                write!(f, "source node {source} unreachable for {secs} s while {absent} pages were only there: process ended")
            }
            Failure::SourceUnreachableBeforeLate { source, secs } => {
                write!(f, "source node {source} unreachable for {secs} s before the process's late messages came: process ended")
            }
        }
    }
}

/// How a source machine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOutcome {
    /// The dest owns the process; the source holds nothing for it.
    Committed,
    /// The process runs on the source again (or never stopped).
    Failed(Failure),
    /// `Commit` was sent and the dest restarted before answering: the process may run
    /// there or be gone. The source keeps its frozen copy and never resumes it.
    InDoubt(Failure),
}

/// How a dest machine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestOutcome {
    /// It runs here (or ran here and ended), with no dependency on the source left.
    Committed,
    /// Nothing of it is here.
    Aborted(Failure),
    /// It had committed and then had to be ended ([`Action::Kill`]).
    ProcessLost(Failure),
}

/// Why precopy rounds stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopReason {
    #[default]
    NoRounds,
    /// The dirty set fits in the freeze-time budget at the measured bandwidth.
    Converged,
    /// The dirty set stopped shrinking, even with the process throttled to the maximum.
    NotShrinking,
    /// `max_rounds` was reached.
    RoundLimit,
}

/// What a migration did (source side; the dest's counters are in [`DestReport`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub mechanism: Option<Mechanism>,
    /// Pages sent in each precopy round.
    pub rounds: Vec<u32>,
    pub stop: StopReason,
    /// Highest throttle level applied (0: never throttled).
    pub throttle: u32,
    /// Pages sent more than once.
    pub redundant_pages: u32,
    /// Pages sent with the frozen image.
    pub final_pages: u32,
    /// Pages left absent at the dest at resume (lazy/hybrid, or a pre-copy that fell back).
    pub absent_at_resume: u32,
    /// A pre-copy that stopped converging left its last dirty set to post-copy.
    pub fell_back: bool,
    /// The destination stayed down after `Commit` long enough that the move was
    /// reported in doubt ([`Action::InDoubt`]).
    pub reported_in_doubt: bool,
    /// The destination stayed down after the commit, while pages of the process were
    /// still here, long enough to be reported ([`Action::AwayAfterCommit`]).
    pub reported_away: bool,
    pub bytes_sent: u64,
    /// Bandwidth measured during the rounds, bytes per ms.
    pub bandwidth_bytes_per_ms: u64,
    pub started_us: u64,
    pub frozen_at_us: Option<u64>,
    /// Frozen until `Committed` was seen (an upper bound of the freeze time).
    pub freeze_time_us: Option<u64>,
    /// When `Commit` was sent (with `committed_at_us`: the round trip that measures the
    /// two nodes' clock offset, see `wire::MigReport::freeze_time_us`).
    pub commit_sent_at_us: Option<u64>,
    pub committed_at_us: Option<u64>,
    pub ended_at_us: Option<u64>,
    pub link_updates: u32,
    pub pages_pushed: u32,
    pub fetches_served: u32,
    /// Lazy: when the dest stopped depending on the source.
    pub dependency_ended_us: Option<u64>,
}

/// What the dest counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestReport {
    pub pages_received: u32,
    pub faults: u32,
    pub fetch_requests: u32,
    /// Pages asked for ahead of faults in order (read-ahead).
    pub pages_read_ahead: u32,
    pub resumed_at_us: Option<u64>,
    pub dependency_ended_us: Option<u64>,
    /// Pages that came but that the process did not have when the last one came
    /// ([`Dest::pages_verified`]), asked for again.
    pub pages_asked_again: u32,
}

/// What the source still holds for the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Residual {
    /// A copy of the process (running, frozen, or kept for lazy pages).
    pub copy: bool,
    /// A forwarding entry (messages for the pid are forwarded to the dest).
    pub forwarding: bool,
    /// Partner nodes that have not acknowledged their link update.
    pub links_pending: u32,
    /// Pages not yet moved to the dest (lazy/hybrid).
    pub pages: u32,
}

impl Residual {
    pub fn is_empty(&self) -> bool {
        *self == Residual::default()
    }
}

/// Test only: deliberate bugs, to show that the simulator's checkers catch them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigFault {
    #[default]
    None,
    /// The source resumes on a timeout after sending `Commit` (the fork the rule forbids).
    ResumeAfterCommit,
    /// The source deletes its copy at `Committed` even for lazy (pages still needed).
    DeleteLazyEarly,
    /// The dest does not tell the source when the process ended there with pages still
    /// at the source (the source keeps them, and its copy).
    KeepSourceAfterEnd,
    /// The dest does not tell the partners where the process is at its commit (only the
    /// source does, after its late messages, or the dest when it sees the source lost):
    /// a partner that sees the source go down first fires its monitors.
    QuietCommit,
    /// The dest releases the source's copy once every page came, without asking the
    /// host whether the process has them all ([`Action::VerifyPages`]).
    TrustPageData,
    /// The source reports a move in doubt as soon as its destination, asked to commit,
    /// is seen down, not after the bound (a stall of a moment is reported).
    InDoubtAtOnce,
}

/// Timers and limits of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigConfig {
    pub page_bytes: u64,
    /// Before the commit point: give up when the peer says nothing for this long.
    pub step_timeout_us: u64,
    /// Dest: give up waiting for `Commit` after `Ready` after this long.
    pub commit_timeout_us: u64,
    /// Precopy: the freeze time the last (frozen) transfer should fit in.
    pub freeze_budget_us: u64,
    pub max_rounds: u32,
    /// A round "shrinks" if its dirty set is below this per mille of the previous one.
    pub shrink_per_mille: u64,
    pub max_throttle: u32,
    /// Levels the throttle goes up by after each round that did not shrink (at most to
    /// `max_throttle`): a writer that rewrote nearly its whole heap while a round was sent
    /// is slowed far at once, not by a level a round while whole heaps go again.
    pub throttle_step: u32,
    /// Lazy: pages prefetched after the faulting one.
    pub prefetch: u32,
    /// Lazy: at most this many pages asked for ahead of a process that faults in order
    /// (read-ahead: the window doubles at each fault in order, from 8; 0: none).
    pub readahead: u32,
    /// Lazy: the background push waits this long after the last `Fetch` it answered
    /// (faults first: while the process asks, its answers have the link and the cores).
    pub fetch_quiet_us: u64,
    /// Lazy: background push, `push_pages` every `push_interval_us`.
    pub push_interval_us: u64,
    pub push_pages: u32,
    /// Largest `Pages`/`PageData` message, in pages.
    pub max_pages_per_msg: u32,
    /// Dest: how long the source may stay unreachable (down, same incarnation) after the
    /// commit while pages (lazy) or the process's late messages are only there before the
    /// process is ended: long enough for a stall, bounded for a node that never comes back.
    pub source_down_limit_us: u64,
    /// Source: how long the destination may stay down after `Commit` before whoever
    /// waits for the move is told it is in doubt ([`Action::InDoubt`]): past a short
    /// stall. The process stays frozen until the destination answers.
    pub in_doubt_after_us: u64,
    #[doc(hidden)]
    pub fault: MigFault,
}

impl Default for MigConfig {
    fn default() -> Self {
        MigConfig {
            page_bytes: 4096,
            step_timeout_us: 500_000,
            commit_timeout_us: 1_000_000,
            freeze_budget_us: 1_000,
            max_rounds: 8,
            shrink_per_mille: 900,
            max_throttle: 3,
            throttle_step: 1,
            prefetch: 1,
            readahead: 0,
            fetch_quiet_us: 0,
            push_interval_us: 1_000,
            push_pages: 16,
            max_pages_per_msg: 64,
            source_down_limit_us: 10_000_000,
            in_doubt_after_us: 3_000_000,
            fault: MigFault::None,
        }
    }
}

/// Pages `[start, end)`.
pub type PageRange = (PageNo, PageNo);

/// Sorted page numbers as ranges, in order.
pub fn to_ranges(pages: &[PageNo]) -> Vec<PageRange> {
    let mut out: Vec<PageRange> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((_, end)) if *end == p => *end += 1,
            _ => out.push((p, p.saturating_add(1))),
        }
    }
    out
}

/// The pages of `a` and `b` below `size`, in order, each once: sorted when they are
/// few, through a bitmap of the heap when they are many (a heavy writer's dirty set is
/// the whole heap, and sorting it would cost more than the freeze may take).
fn sorted_union(mut a: Vec<PageNo>, b: &[PageNo], size: PageNo) -> Vec<PageNo> {
    if few(a.len() + b.len(), size) {
        a.extend(b.iter().copied().filter(|&p| p < size));
        a.sort_unstable();
        a.dedup();
        return a;
    }
    let bits = with_pages(PageBits::new(size as usize, false), &a, b);
    a.clear();
    a.extend(bits.pages(true));
    a
}

/// Whether `n` pages of a heap of `size` are few enough to sort rather than map.
fn few(n: usize, size: PageNo) -> bool {
    n < (size as usize / 64).max(1024)
}

/// `bits` with the pages of `a` and `b` (those inside it) set.
fn with_pages(mut bits: PageBits, a: &[PageNo], b: &[PageNo]) -> PageBits {
    for &p in a.iter().chain(b) {
        bits.set(p as usize, true);
    }
    bits
}

/// The pages of `a` and `b` below `size`, and those not `sent` (if given), as ranges:
/// through a bitmap of the heap when they are many, with no list of them.
fn page_ranges(a: Vec<PageNo>, b: &[PageNo], size: PageNo, sent: Option<&PageBits>) -> Vec<PageRange> {
    let unsent = match sent {
        Some(sent) => sent.not(),
        None if few(a.len() + b.len(), size) => return to_ranges(&sorted_union(a, b, size)),
        None => PageBits::new(size as usize, false),
    };
    with_pages(unsent, &a, b).runs(0, size as usize, true)
}

/// How many pages `ranges` hold.
pub fn ranges_len(ranges: &[PageRange]) -> u32 {
    ranges.iter().map(|&(a, b)| b.saturating_sub(a)).fold(0u32, u32::saturating_add)
}

/// A set of pages as a bitmap (a lazy migration's pages still to move: up to every page
/// of a large heap, so it must be cheap to make and to take from in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PageSet {
    bits: PageBits,
    len: usize,
    /// No page below this is in the set.
    cursor: usize,
}

impl PageSet {
    /// The pages of `ranges` (in order, not overlapping) below `size`.
    fn of_ranges(size: u32, ranges: &[PageRange]) -> PageSet {
        let mut bits = PageBits::new(size as usize, false);
        for &(a, b) in ranges {
            bits.fill(a as usize, b as usize, true);
        }
        PageSet { len: bits.count(true), bits, cursor: 0 }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn clear(&mut self) {
        *self = PageSet::default();
    }
    /// Removes `p`; whether it was there.
    fn remove(&mut self, p: PageNo) -> bool {
        let was = self.bits.set(p as usize, false) == Some(true);
        if was {
            self.len -= 1;
        }
        was
    }
    /// The first `n` pages, in order.
    fn first(&mut self, n: usize) -> Vec<PageNo> {
        self.cursor = self.bits.next(self.cursor, true).unwrap_or(self.bits.len());
        let mut out = Vec::with_capacity(n.min(self.len));
        let mut p = self.cursor;
        while out.len() < n {
            let Some(q) = self.bits.next(p, true) else { break };
            out.push(q as PageNo);
            p = q + 1;
        }
        out
    }
}

/// Who and what a source migrates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInit {
    pub mid: Mid,
    pub pid: Pid,
    pub me: NodeId,
    pub dest: NodeId,
    pub size_pages: u32,
    pub mechanism: Mechanism,
    /// Pre-copy: post-copy for what is left if it stops converging (see `MigMsg::Offer`).
    pub fallback: bool,
    pub forwarding: Forwarding,
    /// The nodes told where it went (link updates): which ones depends on `forwarding`
    /// (`Forwarding::updates_partners`); may include both ends.
    pub partners: Vec<NodeId>,
    /// A coprocess group's members and their pages (see `MigMsg::Offer`); empty for one process.
    pub members: Vec<(Pid, u32)>,
    /// A load policy's move (see `MigMsg::Offer`).
    pub admit: Option<Admit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SPhase {
    Offered,
    /// Round sent, waiting for its `RoundAck`.
    Round,
    /// Waiting for `pages_dirtied`.
    Collecting,
    /// Waiting for `frozen`.
    Freezing,
    /// Image sent, waiting for `Ready`.
    FinalSent,
    /// The point of no return: waiting for `Committed` or `Aborted`, forever.
    CommitSent,
    /// Committed: forwarding, link updates, (lazy) pages.
    After,
    Done(SourceOutcome),
}

/// The source side of one migration.
#[derive(Debug)]
pub struct Source {
    cfg: MigConfig,
    init: SourceInit,
    phase: SPhase,
    out: VecDeque<(NodeId, MigMsg)>,
    actions: VecDeque<Action>,
    deadline: Option<u64>,
    push_at: Option<u64>,
    frozen: bool,
    /// Pages sent at least once.
    sent: PageBits,
    round: u32,
    round_started_us: u64,
    round_pages: u32,
    /// The last collected dirty set, not sent yet.
    pending: Vec<PageNo>,
    bw_bytes_per_ms: u64,
    throttle: u32,
    /// Lazy: pages the dest does not have yet.
    unsent: PageSet,
    /// How many pages the background push may send now (the host's queue toward the
    /// link has room for them; see [`Source::set_push_room`]).
    push_room: u32,
    released: bool,
    copy: bool,
    links_pending: BTreeSet<NodeId>,
    /// Since when the destination has been down while the move awaits it (none while it
    /// is up); whether that was reported is in `report` ([`Source::told_early`]).
    dest_down_since: Option<u64>,
    report: Report,
}

impl Source {
    /// Starts a migration: queues the `Offer`.
    pub fn new(now_us: u64, cfg: MigConfig, init: SourceInit) -> Self {
        let mut s = Source {
            sent: PageBits::new(init.size_pages as usize, false),
            report: Report { mechanism: Some(init.mechanism), started_us: now_us, ..Report::default() },
            cfg,
            phase: SPhase::Offered,
            out: VecDeque::new(),
            actions: VecDeque::new(),
            deadline: None,
            push_at: None,
            frozen: false,
            round: 0,
            round_started_us: now_us,
            round_pages: 0,
            pending: Vec::new(),
            bw_bytes_per_ms: 0,
            throttle: 0,
            unsent: PageSet::default(),
            push_room: u32::MAX,
            released: false,
            copy: true,
            links_pending: BTreeSet::new(),
            dest_down_since: None,
            init,
        };
        let i = &s.init;
        let offer = MigMsg::Offer {
            mid: i.mid,
            pid: i.pid,
            size_pages: i.size_pages,
            mechanism: i.mechanism,
            fallback: i.fallback,
            forwarding: i.forwarding,
            members: i.members.clone(),
            admit: i.admit,
        };
        s.send_dest(offer);
        s.deadline = Some(now_us + s.cfg.step_timeout_us);
        s
    }

    pub fn mid(&self) -> Mid {
        self.init.mid
    }
    pub fn pid(&self) -> Pid {
        self.init.pid
    }
    pub fn dest(&self) -> NodeId {
        self.init.dest
    }
    pub fn mechanism(&self) -> Mechanism {
        self.init.mechanism
    }
    pub fn forwarding(&self) -> Forwarding {
        self.init.forwarding
    }
    pub fn report(&self) -> &Report {
        &self.report
    }
    /// `Some` once finished.
    pub fn outcome(&self) -> Option<&SourceOutcome> {
        match &self.phase {
            SPhase::Done(o) => Some(o),
            _ => None,
        }
    }
    /// Past the point of no return (`Commit` sent).
    pub fn commit_sent(&self) -> bool {
        matches!(self.phase, SPhase::CommitSent | SPhase::After | SPhase::Done(SourceOutcome::Committed))
    }
    /// Precopy rounds are running (the process runs while they do).
    /// Committed: the dest owns the process (pages, forwarding, links may be pending).
    pub fn is_committed(&self) -> bool {
        matches!(self.phase, SPhase::After | SPhase::Done(SourceOutcome::Committed))
    }

    /// The move cannot end without the destination: it was asked to commit and has not
    /// answered, or it committed and pages of the process are still here.
    pub fn awaits_dest(&self) -> bool {
        match self.phase {
            SPhase::CommitSent => true,
            SPhase::After => !self.released,
            _ => false,
        }
    }

    /// Whether [`Source::frozen`] uses the pages dirtied since the last collection
    /// (the host lists them while the process is frozen, a cost that grows with them).
    /// Hybrid rounds stopped as `NotShrinking` leave the whole heap absent: the writer
    /// dirtied 90% or more of it within round 0, so listing the rest page by page in
    /// the freeze would save little and cost up to a millisecond a GiB.
    pub fn needs_last_dirty(&self) -> bool {
        match self.init.mechanism {
            Mechanism::Precopy => true,
            Mechanism::Hybrid => self.report.stop != StopReason::NotShrinking,
            Mechanism::Freeze | Mechanism::Lazy => false,
        }
    }

    pub fn in_rounds(&self) -> bool {
        matches!(self.phase, SPhase::Round | SPhase::Collecting)
    }

    /// What the source still holds for the process (empty after a committed migration
    /// whose link updates were acknowledged and, for lazy, whose pages all moved or were
    /// released).
    pub fn residual(&self) -> Residual {
        let after = matches!(self.phase, SPhase::After);
        Residual {
            copy: self.copy && !matches!(self.phase, SPhase::Done(SourceOutcome::Failed(_))),
            forwarding: after,
            links_pending: self.links_pending.len() as u32,
            pages: if after { self.unsent.len() as u32 } else { 0 },
        }
    }

    fn send_dest(&mut self, m: MigMsg) {
        self.report.bytes_sent += m.wire_bytes(self.cfg.page_bytes);
        self.out.push_back((self.init.dest, m));
    }

    fn send_pages(&mut self, round: u32, pages: &[PageNo]) {
        for chunk in pages.chunks(self.cfg.max_pages_per_msg.max(1) as usize) {
            self.send_dest(MigMsg::Pages { mid: self.init.mid, round, pages: chunk.to_vec() });
        }
        self.mark_sent(pages);
        self.actions.push_back(Action::SendPages { pages: pages.len() as u32 });
    }

    fn mark_sent(&mut self, pages: &[PageNo]) {
        for &p in pages {
            if self.sent.set(p as usize, true) == Some(true) {
                self.report.redundant_pages += 1;
            }
        }
    }

    fn start_round(&mut self, now_us: u64, pages: Vec<PageNo>) {
        self.phase = SPhase::Round;
        self.round_started_us = now_us;
        self.round_pages = pages.len() as u32;
        self.report.rounds.push(pages.len() as u32);
        self.send_pages(self.round, &pages);
        self.send_dest(MigMsg::RoundDone { mid: self.init.mid, round: self.round });
        self.deadline = Some(now_us + self.cfg.step_timeout_us);
    }

    fn freeze(&mut self, now_us: u64) {
        self.phase = SPhase::Freezing;
        self.actions.push_back(Action::Freeze);
        self.deadline = Some(now_us + self.cfg.step_timeout_us);
    }

    /// Gives up before the commit point: the process runs here again.
    fn fail(&mut self, now_us: u64, why: Failure, tell_dest: bool) {
        debug_assert!(!self.commit_sent());
        if tell_dest {
            self.send_dest(MigMsg::Abort { mid: self.init.mid });
        }
        if self.frozen || matches!(self.phase, SPhase::Freezing) {
            self.actions.push_back(Action::Unfreeze);
            self.frozen = false;
        } else if self.throttle > 0 {
            self.actions.push_back(Action::Throttle { level: 0 });
        }
        self.finish(now_us, SourceOutcome::Failed(why));
    }

    fn finish(&mut self, now_us: u64, o: SourceOutcome) {
        self.phase = SPhase::Done(o);
        self.deadline = None;
        self.push_at = None;
        self.report.ended_at_us = Some(now_us);
        self.actions.push_back(Action::Done);
    }

    /// A message from `from` about this migration. Only the dest speaks for it, but for
    /// the partners' `LinkAck`s: a message of this migration from any other node (a
    /// session frame carries whatever mid its sender puts in it) is ignored, so no
    /// third node can make the source resume a process it gave away, or drop its copy.
    pub fn handle(&mut self, now_us: u64, from: NodeId, msg: MigMsg) {
        let mid = self.init.mid;
        if msg.mid() != mid || (from != self.init.dest && !matches!(msg, MigMsg::LinkAck { .. })) {
            return;
        }
        match (&self.phase, msg) {
            (SPhase::Offered, MigMsg::Accept { .. }) if from == self.init.dest => {
                if self.init.mechanism.rounds() {
                    self.actions.push_back(Action::StartDirtyTracking);
                    let all = (0..self.init.size_pages).collect();
                    self.start_round(now_us, all);
                } else {
                    self.freeze(now_us);
                }
            }
            (SPhase::Offered, MigMsg::Refuse { why, .. }) => self.fail(now_us, Failure::Refused(why), false),
            (SPhase::Round, MigMsg::RoundAck { round, .. }) if round == self.round => {
                let dt = now_us.saturating_sub(self.round_started_us).max(1);
                let bytes = self.round_pages as u64 * self.cfg.page_bytes;
                let bw = bytes * 1000 / dt;
                // Keep the better of the measurements: a short round is dominated by latency.
                self.bw_bytes_per_ms = self.bw_bytes_per_ms.max(bw);
                self.report.bandwidth_bytes_per_ms = self.bw_bytes_per_ms;
                self.phase = SPhase::Collecting;
                self.actions.push_back(Action::CollectDirty);
                // The host answers with `pages_dirtied`; one that cannot (the process
                // ended) gives up through `handle_timeout`.
                self.deadline = Some(now_us + self.cfg.step_timeout_us);
            }
            (SPhase::FinalSent, MigMsg::Ready { .. }) => {
                self.phase = SPhase::CommitSent;
                self.report.commit_sent_at_us = Some(now_us);
                self.send_dest(MigMsg::Commit { mid });
                // No deadline: after Commit the source waits for the dest's answer, forever.
                self.deadline = if self.cfg.fault == MigFault::ResumeAfterCommit { Some(now_us + self.cfg.step_timeout_us) } else { None };
            }
            (SPhase::CommitSent, MigMsg::Committed { .. }) => self.committed(now_us),
            (SPhase::CommitSent, MigMsg::Aborted { .. }) => {
                // The dest decided not to commit: the process is ours again.
                self.phase = SPhase::FinalSent;
                self.fail(now_us, Failure::DestAborted, false);
            }
            (SPhase::Offered | SPhase::Round | SPhase::Collecting | SPhase::Freezing | SPhase::FinalSent, MigMsg::Aborted { .. }) => {
                self.fail(now_us, Failure::DestAborted, false)
            }
            // `from` sends straight to the dest from now on.
            (SPhase::After, MigMsg::LinkAck { .. }) if self.links_pending.remove(&from) => {
                self.maybe_done(now_us);
            }
            (SPhase::After, MigMsg::Fetch { pages, ahead, .. }) => {
                // Every page asked for while the copy is here, sent or not: the dest asks
                // for a page only once, when the process faults on it, and a page the
                // background push sent may still be far behind in the push's queue (a
                // fault must never wait behind bulk data). A second copy costs one page
                // on the link and is ignored where it lands; after a lost connection the
                // dest asks again for everything it lacks, which may have been lost with it.
                let size = self.init.size_pages;
                let pages: Vec<PageNo> =
                    if self.copy && !self.released { pages.into_iter().filter(|&p| p < size).collect() } else { Vec::new() };
                for &p in &pages {
                    self.unsent.remove(p);
                }
                if !pages.is_empty() {
                    self.report.fetches_served += 1;
                    self.actions.push_back(Action::SendPages { pages: pages.len() as u32 });
                    self.mark_sent(&pages);
                    self.send_dest(MigMsg::PageData { mid, pages, sent: if ahead { SentFor::ReadAhead } else { SentFor::Fault } });
                    // Faults first: the push takes its next turn `fetch_quiet_us` after
                    // the last fetch, so that it does not take the link and the cores from
                    // the answers while the process asks (a process that reads its heap in
                    // order asks ahead of itself; the push sends what is left after).
                    if let Some(t) = self.push_at {
                        self.push_at = Some(t.max(now_us + self.cfg.fetch_quiet_us));
                    }
                }
            }
            (SPhase::After, MigMsg::Released { .. }) => {
                self.released = true;
                self.unsent.clear();
                self.push_at = None;
                self.report.dependency_ended_us = Some(now_us);
                if self.copy {
                    self.copy = false;
                    self.actions.push_back(Action::DeleteSource);
                }
                self.maybe_done(now_us);
            }
            _ => {}
        }
    }

    fn committed(&mut self, now_us: u64) {
        let mid = self.init.mid;
        let dest = self.init.dest;
        self.phase = SPhase::After;
        self.deadline = None;
        self.frozen = false;
        // It answered: it is up (a report of it down counts again from its next event).
        self.dest_down_since = None;
        self.report.committed_at_us = Some(now_us);
        self.report.freeze_time_us = self.report.frozen_at_us.map(|f| now_us - f);
        // What reached it here since its image goes first; from now on the host forwards.
        self.actions.push_back(Action::CommitExport { to: dest });
        let partners: Vec<NodeId> = self.init.partners.iter().copied().filter(|&p| p != self.init.me && p != dest).collect();
        for &p in &partners {
            self.out.push_back((p, MigMsg::LinkUpdate { mid, pid: self.init.pid, to: dest, fwd: self.init.forwarding }));
            self.links_pending.insert(p);
        }
        self.report.link_updates = partners.len() as u32;
        // Pages left absent at the resume (lazy, hybrid, a pre-copy that fell back).
        let lazy = !self.unsent.is_empty();
        if !lazy || self.cfg.fault == MigFault::DeleteLazyEarly {
            self.copy = false;
            self.actions.push_back(Action::DeleteSource);
        }
        if lazy {
            self.push_at = Some(now_us + self.cfg.push_interval_us);
        } else {
            self.unsent.clear();
            self.released = true;
            self.report.dependency_ended_us = Some(now_us);
        }
        self.maybe_done(now_us);
    }

    fn maybe_done(&mut self, now_us: u64) {
        if matches!(self.phase, SPhase::After) && self.links_pending.is_empty() && self.released {
            self.finish(now_us, SourceOutcome::Committed);
        }
    }

    /// The process is stopped at a safepoint; `dirty` are the pages dirtied since the last
    /// collection (all of them are sent unless lazy), `image_len` the size of its state.
    pub fn frozen(&mut self, now_us: u64, dirty: &[PageNo], image_len: u64) {
        if self.phase != SPhase::Freezing {
            return;
        }
        self.frozen = true;
        self.report.frozen_at_us = Some(now_us);
        // The last dirty set, in order (its cost grows with it, not with the heap).
        let size = self.init.size_pages;
        let rest = std::mem::take(&mut self.pending);
        let whole = || if size > 0 { vec![(0, size)] } else { vec![] };
        let (pages, absent): (Vec<PageNo>, Vec<PageRange>) = match self.init.mechanism {
            Mechanism::Freeze => ((0..size).collect(), vec![]),
            // Stopped without converging: post-copy for the last dirty set, if allowed.
            Mechanism::Precopy if self.init.fallback && matches!(self.report.stop, StopReason::NotShrinking | StopReason::RoundLimit) => {
                self.report.fell_back = true;
                (vec![], page_ranges(rest, dirty, size, None))
            }
            Mechanism::Precopy => (sorted_union(rest, dirty, size), vec![]),
            Mechanism::Lazy => (vec![], whole()),
            // Written over almost whole within round 0: all of it (see `needs_last_dirty`).
            Mechanism::Hybrid if self.report.stop == StopReason::NotShrinking => (vec![], whole()),
            // Whatever never went (nothing, after round 0) and the last dirty set.
            Mechanism::Hybrid => (vec![], page_ranges(rest, dirty, size, Some(&self.sent))),
        };
        self.mark_sent(&pages);
        if !pages.is_empty() {
            self.actions.push_back(Action::SendPages { pages: pages.len() as u32 });
        }
        self.report.final_pages = pages.len() as u32;
        self.report.absent_at_resume = ranges_len(&absent);
        self.unsent = PageSet::of_ranges(size, &absent);
        let msg = MigMsg::Final { mid: self.init.mid, image_len, pages, absent, partners: self.init.partners.clone() };
        self.send_dest(msg);
        self.phase = SPhase::FinalSent;
        self.deadline = Some(now_us + self.cfg.step_timeout_us);
    }

    /// The pages dirtied since the last collection (answer to [`Action::CollectDirty`]).
    pub fn pages_dirtied(&mut self, now_us: u64, dirty: &[PageNo]) {
        if self.phase != SPhase::Collecting {
            return;
        }
        let mut set: Vec<PageNo> = dirty.iter().copied().filter(|&p| p < self.init.size_pages).collect();
        set.sort_unstable();
        set.dedup();
        let n = set.len();
        let budget_pages = (self.cfg.freeze_budget_us * self.bw_bytes_per_ms / 1000 / self.cfg.page_bytes.max(1)) as usize;
        // Against what the round just sent: after round 0 (the whole heap) too, so that a
        // writer that dirtied nearly all of it meanwhile is seen at once, not after
        // sending it all a second time.
        let shrinking = (n as u64) * 1000 < u64::from(self.round_pages) * self.cfg.shrink_per_mille;
        self.round += 1;
        let stop = if n <= budget_pages {
            Some(StopReason::Converged)
        } else if self.round >= self.cfg.max_rounds {
            Some(StopReason::RoundLimit)
        } else if !shrinking && (self.throttle >= self.cfg.max_throttle || self.init.mechanism == Mechanism::Hybrid) {
            // (Hybrid slows nothing down: once its rounds stop gaining, the rest goes
            // after the process, which was picked for writing too fast to wait for.)
            Some(StopReason::NotShrinking)
        } else {
            None
        };
        match stop {
            Some(reason) => {
                self.report.stop = reason;
                self.pending = set;
                self.freeze(now_us);
            }
            None => {
                if !shrinking {
                    // (Below the most here, or the rounds would have stopped.)
                    self.throttle = (self.throttle + self.cfg.throttle_step.max(1)).min(self.cfg.max_throttle);
                    self.report.throttle = self.report.throttle.max(self.throttle);
                    self.actions.push_back(Action::Throttle { level: self.throttle });
                }
                self.start_round(now_us, set);
            }
        }
    }

    /// `node` restarted: everything its old incarnation held is gone.
    /// `node` stopped answering (the session's failure detector): it may be stopped or
    /// cut off and come back as the same incarnation, with everything it held. Before the
    /// commit point the migration fails (the process runs on here); after it nothing
    /// changes: the destination's answer to `Commit` comes whenever it is back, and the
    /// pages it may still need stay here until it has them all or it restarts
    /// ([`Source::peer_restarted`]). A partner that is down no longer holds the
    /// migration up: its new route reaches it when it is back (the session keeps it), or
    /// its new incarnation locates the process.
    pub fn peer_down(&mut self, now_us: u64, node: NodeId) {
        if node == self.init.dest {
            match self.phase {
                _ if self.awaits_dest() => {
                    self.dest_down_since.get_or_insert(now_us);
                }
                SPhase::Done(_) | SPhase::After => {}
                _ => self.fail(now_us, Failure::PeerDown(node), false),
            }
        } else if matches!(self.phase, SPhase::After) && self.links_pending.remove(&node) {
            self.maybe_done(now_us);
        }
    }

    /// `node` is heard from again (the same incarnation).
    pub fn peer_up(&mut self, _now_us: u64, node: NodeId) {
        if node == self.init.dest {
            self.dest_down_since = None;
        }
    }

    /// Whether whoever waits was told before the end (in doubt, or away after the
    /// commit): once is enough.
    fn told_early(&self) -> bool {
        self.report.reported_in_doubt || self.report.reported_away
    }

    /// When the move is to be reported in doubt (or, committed, its destination away
    /// with pages still here), if the destination stays down.
    fn in_doubt_at(&self) -> Option<u64> {
        match (self.awaits_dest() && !self.told_early(), self.dest_down_since) {
            (true, Some(t)) if self.cfg.fault == MigFault::InDoubtAtOnce => Some(t),
            (true, Some(t)) => Some(t.saturating_add(self.cfg.in_doubt_after_us)),
            _ => None,
        }
    }

    pub fn peer_restarted(&mut self, now_us: u64, node: NodeId) {
        if node == self.init.dest {
            match self.phase {
                SPhase::Done(_) => {}
                SPhase::CommitSent => {
                    // It may have committed and died, or died before `Commit`: never resume.
                    self.phase = SPhase::Done(SourceOutcome::InDoubt(Failure::PeerRestarted(node)));
                    self.deadline = None;
                    self.report.ended_at_us = Some(now_us);
                    self.actions.push_back(Action::Done);
                }
                SPhase::After => {
                    // The process died with the dest: nothing left to forward or push.
                    self.links_pending.clear();
                    self.released = true;
                    self.unsent.clear();
                    if self.copy {
                        self.copy = false;
                        self.actions.push_back(Action::DeleteSource);
                    }
                    self.maybe_done(now_us);
                }
                _ => self.fail(now_us, Failure::PeerRestarted(node), false),
            }
        } else if matches!(self.phase, SPhase::After) && self.links_pending.remove(&node) {
            // Its new incarnation will locate the process; nothing more will come from the old.
            self.maybe_done(now_us);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, MigMsg)> {
        self.out.pop_front()
    }

    /// How many pages the background push may send at its next turn: the host's queue
    /// toward the link has room for that many (none: the push waits a turn). A push
    /// never runs ahead of the link, so what it sent is soon there, and the host's queue
    /// never makes it block (unbounded until told).
    pub fn set_push_room(&mut self, pages: u32) {
        self.push_room = pages;
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        [self.deadline, self.push_at, self.in_doubt_at()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now_us: u64) {
        if self.deadline.is_some_and(|d| now_us >= d) {
            self.deadline = None;
            let what = match self.phase {
                SPhase::Offered => Some("Accept"),
                SPhase::Round => Some("RoundAck"),
                SPhase::Collecting => Some("the dirty pages"),
                SPhase::Freezing => Some("the process to freeze"),
                SPhase::FinalSent => Some("Ready"),
                SPhase::CommitSent if self.cfg.fault == MigFault::ResumeAfterCommit => {
                    // The deliberate bug: resume although the dest may have committed.
                    self.phase = SPhase::FinalSent;
                    Some("Committed")
                }
                _ => None,
            };
            if let Some(w) = what {
                self.fail(now_us, Failure::Timeout(w), true);
            }
        }
        if let (Some(at), Some(since)) = (self.in_doubt_at(), self.dest_down_since) {
            if now_us >= at {
                let down_us = now_us - since;
                if self.phase == SPhase::CommitSent {
                    self.report.reported_in_doubt = true;
                    self.actions.push_back(Action::InDoubt { down_us });
                } else {
                    self.report.reported_away = true;
                    self.actions.push_back(Action::AwayAfterCommit { down_us });
                }
            }
        }
        if self.push_at.is_some_and(|t| now_us >= t) {
            let n = self.cfg.push_pages.max(1).min(self.push_room);
            let pages: Vec<PageNo> = if n == 0 { Vec::new() } else { self.unsent.first(n as usize) };
            for &p in &pages {
                self.unsent.remove(p);
            }
            self.push_at = None;
            if !pages.is_empty() {
                self.report.pages_pushed += pages.len() as u32;
                self.actions.push_back(Action::SendPages { pages: pages.len() as u32 });
                self.mark_sent(&pages);
                self.send_dest(MigMsg::PageData { mid: self.init.mid, pages, sent: SentFor::Push });
            }
            if !self.unsent.is_empty() {
                self.push_at = Some(now_us + self.cfg.push_interval_us);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DPhase {
    /// Accepted: receiving rounds and the image.
    Receiving,
    /// Waiting for `reinstated`.
    Reinstating,
    /// Waiting for `Commit`.
    Ready,
    /// Committed and running; link updates and (lazy) pages may be pending.
    Running,
    Done(DestOutcome),
}

/// The destination side of one migration.
#[derive(Debug)]
pub struct Dest {
    cfg: MigConfig,
    mid: Mid,
    pid: Pid,
    me: NodeId,
    source: NodeId,
    mechanism: Mechanism,
    /// It may resume with pages absent (lazy, hybrid, or pre-copy with its fallback).
    lazy: bool,
    forwarding: Forwarding,
    phase: DPhase,
    out: VecDeque<(NodeId, MigMsg)>,
    actions: VecDeque<Action>,
    deadline: Option<u64>,
    present: PageBits,
    absent: u32,
    requested: PageBits,
    /// Nodes that send to the process or its receive ends (from `Final`): told where it
    /// is by the dest itself if the source is lost before it told them.
    partners: Vec<NodeId>,
    /// The dest told the partners itself.
    took_over: bool,
    source_lost: bool,
    /// Every page came and the host is asked whether the process has them all
    /// ([`Action::VerifyPages`]); the source is released once it does.
    verifying: bool,
    /// The late messages came ([`Dest::late_arrived`]).
    late_came: bool,
    /// Committed here and the late messages are still awaited from the source: the
    /// process does not run until they come (or the source is lost).
    late_pending: bool,
    /// While the late messages are pending and the source is down: when the process is
    /// ended for want of them. Kept apart from `deadline`, which ends with the machine
    /// (the machine may be done, committed, while the host still waits for them).
    late_deadline: Option<u64>,
    /// Read-ahead: the last fault was on page `ra.0`, and the pages from it to `ra.1`
    /// are asked for (or there); `ra.2` is how many pages to keep asked for ahead of a
    /// fault in that run (0: the faults are not in order).
    ra: (PageNo, PageNo, u32),
    report: DestReport,
}

/// The first read-ahead window, in pages.
const READAHEAD_FIRST: u32 = 8;

impl Dest {
    /// The host received `Offer`: accept it (`refuse: None`) or refuse it.
    pub fn new(now_us: u64, cfg: MigConfig, me: NodeId, from: NodeId, offer: &MigMsg, refuse: Option<RefuseReason>) -> Option<Self> {
        let MigMsg::Offer { mid, pid, size_pages, mechanism, fallback, forwarding, .. } = *offer else { return None };
        // Nothing is sized by a refused offer (its size may be what is wrong with it).
        let n = if refuse.is_some() { 0 } else { size_pages as usize };
        let mut d = Dest {
            present: PageBits::new(n, false),
            requested: PageBits::new(n, false),
            absent: 0,
            cfg,
            mid,
            pid,
            me,
            source: from,
            mechanism,
            lazy: mechanism.lazy() || (fallback && mechanism == Mechanism::Precopy),
            forwarding,
            phase: DPhase::Receiving,
            out: VecDeque::new(),
            actions: VecDeque::new(),
            deadline: None,
            partners: Vec::new(),
            took_over: false,
            source_lost: false,
            verifying: false,
            late_came: false,
            late_pending: false,
            late_deadline: None,
            ra: (0, 0, 0),
            report: DestReport::default(),
        };
        match refuse {
            Some(why) => {
                d.out.push_back((from, MigMsg::Refuse { mid, why }));
                d.phase = DPhase::Done(DestOutcome::Aborted(Failure::Refused(why)));
            }
            None => {
                d.out.push_back((from, MigMsg::Accept { mid }));
                d.deadline = Some(now_us + d.cfg.step_timeout_us);
            }
        }
        Some(d)
    }

    pub fn mid(&self) -> Mid {
        self.mid
    }
    pub fn pid(&self) -> Pid {
        self.pid
    }
    pub fn source(&self) -> NodeId {
        self.source
    }
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
    pub fn forwarding(&self) -> Forwarding {
        self.forwarding
    }
    pub fn report(&self) -> &DestReport {
        &self.report
    }
    pub fn outcome(&self) -> Option<&DestOutcome> {
        match &self.phase {
            DPhase::Done(o) => Some(o),
            _ => None,
        }
    }
    /// Committed here (running, or done with `Committed`).
    pub fn committed(&self) -> bool {
        matches!(self.phase, DPhase::Running | DPhase::Done(DestOutcome::Committed))
    }
    /// Pages still only on the source.
    pub fn absent_pages(&self) -> u32 {
        self.absent
    }
    pub fn is_present(&self, page: PageNo) -> bool {
        self.present.get(page as usize).unwrap_or(false) || !self.lazy
    }

    /// The pages of `from..to` not present, as ranges (the end excluded), in order
    /// (none when nothing is lazy). Pages past the machine's heap count as absent.
    pub fn absent_ranges(&self, from: PageNo, to: PageNo) -> Vec<(PageNo, PageNo)> {
        let mut out = Vec::new();
        if !self.lazy {
            return out;
        }
        out.extend(self.present.runs(from as usize, to as usize, false));
        let known = (self.present.len() as PageNo).max(from);
        if to > known {
            match out.last_mut() {
                Some(last) if last.1 == known => last.1 = to,
                _ => out.push((known, to)),
            }
        }
        out
    }

    fn abort(&mut self, now_us: u64, why: Failure, tell_source: bool) {
        if tell_source {
            self.out.push_back((self.source, MigMsg::Aborted { mid: self.mid }));
        }
        if matches!(self.phase, DPhase::Receiving | DPhase::Reinstating | DPhase::Ready) {
            self.actions.push_back(Action::Discard);
        }
        self.finish(now_us, DestOutcome::Aborted(why));
    }

    fn finish(&mut self, now_us: u64, o: DestOutcome) {
        if matches!(o, DestOutcome::Committed) && self.report.dependency_ended_us.is_none() {
            self.report.dependency_ended_us = Some(now_us);
        }
        if !matches!(o, DestOutcome::Committed) {
            // Nothing will run here: nothing waits for the late messages either.
            self.late_pending = false;
            self.late_deadline = None;
        }
        self.phase = DPhase::Done(o);
        self.deadline = None;
        self.actions.push_back(Action::Done);
    }

    fn receive_pages(&mut self, pages: &[PageNo]) -> Vec<PageNo> {
        let mut new = Vec::new();
        for &p in pages {
            if let Some(was) = self.present.set(p as usize, true) {
                self.report.pages_received += 1;
                if !was {
                    new.push(p);
                }
            }
        }
        new
    }

    /// A message from `from` about this migration: only its source's are taken (a
    /// message of this migration from any other node is ignored, as at the source).
    pub fn handle(&mut self, now_us: u64, from: NodeId, msg: MigMsg) {
        if msg.mid() != self.mid || from != self.source {
            return;
        }
        let mid = self.mid;
        match (&self.phase, msg) {
            (DPhase::Receiving, MigMsg::Pages { pages, .. }) => {
                self.receive_pages(&pages);
                self.deadline = Some(now_us + self.cfg.step_timeout_us);
            }
            (DPhase::Receiving, MigMsg::RoundDone { round, .. }) => {
                self.out.push_back((self.source, MigMsg::RoundAck { mid, round }));
                self.deadline = Some(now_us + self.cfg.step_timeout_us);
            }
            (DPhase::Receiving, MigMsg::Final { pages, absent, partners, .. }) => {
                self.receive_pages(&pages);
                for &(a, b) in &absent {
                    self.present.fill(a as usize, b as usize, false);
                }
                self.absent = self.present.count(false) as u32;
                if !self.lazy && self.absent > 0 {
                    // Cannot happen with a correct source; refuse to run with holes.
                    self.abort(now_us, Failure::SourceAborted, true);
                    return;
                }
                self.partners = partners.into_iter().filter(|&p| p != self.source && p != self.me).collect();
                self.phase = DPhase::Reinstating;
                self.actions.push_back(Action::Reinstate { absent: self.absent });
                self.deadline = Some(now_us + self.cfg.step_timeout_us);
            }
            (DPhase::Receiving | DPhase::Reinstating | DPhase::Ready, MigMsg::Abort { .. }) => {
                self.abort(now_us, Failure::SourceAborted, false)
            }
            (DPhase::Ready, MigMsg::Commit { .. }) => {
                // The decision: we commit here and now.
                self.phase = DPhase::Running;
                self.deadline = None;
                self.late_pending = !self.late_came;
                self.report.resumed_at_us = Some(now_us);
                self.actions.push_back(Action::Resume { absent: self.absent });
                self.out.push_back((self.source, MigMsg::Committed { mid }));
                // The partners learn where it is from here too, at once: the source, which
                // tells them after its late messages, may be lost before it does, and a
                // partner that then sees it down must not take the process for lost with
                // it (its monitors would fire `node_down` while the process runs here).
                if self.cfg.fault != MigFault::QuietCommit {
                    self.tell_partners();
                }
                self.maybe_done(now_us);
            }
            (DPhase::Done(DestOutcome::Aborted(_)), MigMsg::Commit { .. }) => {
                // We gave up before it came: tell the source, which then resumes it.
                self.out.push_back((self.source, MigMsg::Aborted { mid }));
            }
            (DPhase::Running, MigMsg::PageData { pages, .. }) => {
                let new = self.receive_pages(&pages);
                self.absent -= new.len() as u32;
                let last = !new.is_empty() && self.absent == 0;
                if !new.is_empty() {
                    self.actions.push_back(Action::PagesArrived { pages: new });
                }
                if last && self.cfg.fault != MigFault::TrustPageData {
                    // The source's copy is the only other one: it is dropped once the
                    // process itself has every page, not once they were handed over.
                    self.verifying = true;
                    self.actions.push_back(Action::VerifyPages);
                } else if last {
                    self.release(now_us);
                }
            }
            _ => {}
        }
    }

    /// Every page is with the process: the source may drop its copy.
    fn release(&mut self, now_us: u64) {
        self.report.dependency_ended_us = Some(now_us);
        self.out.push_back((self.source, MigMsg::Released { mid: self.mid }));
        self.maybe_done(now_us);
    }

    /// The host's answer to [`Action::VerifyPages`]: the pages (of those that came) the
    /// process does not have. None: the source is released. Some: they are absent again
    /// and asked for again (the source still has them), or, with the source lost, the
    /// process cannot go on.
    pub fn pages_verified(&mut self, now_us: u64, missing: &[PageNo]) {
        if !std::mem::take(&mut self.verifying) || !matches!(self.phase, DPhase::Running) {
            return;
        }
        let mut again = Vec::new();
        for &p in missing {
            if self.present.set(p as usize, false) == Some(true) {
                self.requested.set(p as usize, false);
                again.push(p);
            }
        }
        self.absent += again.len() as u32;
        if self.absent == 0 {
            self.release(now_us);
            return;
        }
        if again.is_empty() {
            // (A fault meanwhile found one missing, and asked for it: asked again once it came.)
            return;
        }
        self.report.pages_asked_again += again.len() as u32;
        if self.source_lost {
            let why = Failure::SourceLostWithPages { source: self.source, absent: self.absent };
            self.actions.push_back(Action::Kill { why: why.clone() });
            self.finish(now_us, DestOutcome::ProcessLost(why));
            return;
        }
        for chunk in again.chunks((self.cfg.push_pages as usize).max(64)) {
            for &p in chunk {
                self.requested.set(p as usize, true);
            }
            self.report.fetch_requests += 1;
            self.out.push_back((self.source, MigMsg::Fetch { mid: self.mid, pages: chunk.to_vec(), ahead: false }));
        }
    }

    fn maybe_done(&mut self, now_us: u64) {
        if matches!(self.phase, DPhase::Running) && self.absent == 0 && !self.verifying {
            if self.report.dependency_ended_us.is_none() {
                self.report.dependency_ended_us = self.report.resumed_at_us;
            }
            self.finish(now_us, DestOutcome::Committed);
        }
    }

    /// The image could not be reinstated (answer to [`Action::Reinstate`]): give up.
    pub fn reinstate_failed(&mut self, now_us: u64) {
        if self.phase == DPhase::Reinstating {
            self.abort(now_us, Failure::Refused(RefuseReason::BadImage), true);
        }
    }

    /// The image is reinstated under a temporary id (answer to [`Action::Reinstate`]).
    pub fn reinstated(&mut self, now_us: u64) {
        if self.phase == DPhase::Reinstating {
            self.phase = DPhase::Ready;
            self.out.push_back((self.source, MigMsg::Ready { mid: self.mid }));
            self.deadline = Some(now_us + self.cfg.commit_timeout_us);
        }
    }

    /// The running process touched `page`. True: it is absent, the thread must block
    /// until [`Action::PagesArrived`] names it (a fetch was sent if none was pending).
    ///
    /// Faults first: the faulting page and its prefetch are asked for on their own, so
    /// that their answer is small. A fault in order (on a page of the run last asked
    /// for, or the page after it) also keeps up to `readahead` pages asked for ahead of
    /// it, in a second `Fetch` (`ahead`); the window doubles at each fault in order and
    /// starts again at the first fault out of order. A process that reads its heap
    /// through then meets pages already there or on their way, and one that touches
    /// pages at random asks only for what it touches.
    pub fn page_fault(&mut self, _now_us: u64, page: PageNo) -> bool {
        if !self.lazy || !matches!(self.phase, DPhase::Running) {
            return false;
        }
        if self.present.get(page as usize) == Some(true) {
            // It came, but the process does not have it (lost on its way to it, or it came
            // just after the fault was taken): absent again, and asked for again (the
            // source keeps its copy until the process has every page).
            self.present.set(page as usize, false);
            self.requested.set(page as usize, false);
            self.absent += 1;
            self.report.pages_asked_again += 1;
        }
        self.report.faults += 1;
        if self.source_lost {
            return true;
        }
        let n = self.present.len() as u64;
        let end = (page as u64 + 1 + self.cfg.prefetch as u64).min(n) as u32;
        let want = self.take_unasked(page, end);
        if !want.is_empty() {
            self.report.fetch_requests += 1;
            self.out.push_back((self.source, MigMsg::Fetch { mid: self.mid, pages: want, ahead: false }));
        }
        if self.cfg.readahead == 0 {
            return true;
        }
        let (start, last, len) = self.ra;
        let in_order = (start..=last).contains(&page);
        let len = if !in_order {
            0
        } else if len == 0 {
            READAHEAD_FIRST.min(self.cfg.readahead)
        } else {
            len.saturating_mul(2).min(self.cfg.readahead)
        };
        let last = if in_order { last.max(end) } else { end };
        let to = ((end as u64 + len as u64).min(n) as u32).max(last);
        let ahead = self.take_unasked(last, to);
        if !ahead.is_empty() {
            self.report.fetch_requests += 1;
            self.report.pages_read_ahead += ahead.len() as u32;
            self.out.push_back((self.source, MigMsg::Fetch { mid: self.mid, pages: ahead, ahead: true }));
        }
        self.ra = (page, to, len);
        true
    }

    /// The pages in `[from, to)` absent and not asked for yet, now marked asked for.
    fn take_unasked(&mut self, from: PageNo, to: PageNo) -> Vec<PageNo> {
        let want: Vec<PageNo> =
            (from..to).filter(|&p| self.present.get(p as usize) == Some(false) && self.requested.get(p as usize) == Some(false)).collect();
        for &p in &want {
            self.requested.set(p as usize, true);
        }
        want
    }

    /// `node` stopped answering (it may be stopped or cut off, and come back as the same
    /// incarnation). Before `Commit` the migration is given up (the source resumes the
    /// process, or is answered `Aborted` if it sends `Commit` later). After it, the
    /// source may still hold pages the process needs, or its late messages: they are
    /// waited for (a stall is not a crash), for `source_down_limit_us` at most while the
    /// source stays down; then the process is ended ([`Dest::handle_timeout`]), as when
    /// the source restarts. Link updates the source had not finished are done from here,
    /// which changes nothing if it finishes them too.
    pub fn peer_down(&mut self, now_us: u64, node: NodeId) {
        if node != self.source {
            return;
        }
        if self.late_pending && !self.source_lost && self.late_deadline.is_none() {
            self.late_deadline = Some(now_us.saturating_add(self.cfg.source_down_limit_us));
        }
        match self.phase {
            DPhase::Receiving | DPhase::Reinstating | DPhase::Ready => self.abort(now_us, Failure::PeerDown(node), false),
            DPhase::Running => {
                if self.absent > 0 && !self.source_lost {
                    self.deadline = Some(now_us.saturating_add(self.cfg.source_down_limit_us));
                }
                self.take_over_link_updates(now_us);
            }
            DPhase::Done(_) => {}
        }
    }

    /// `node` is heard from again (the same incarnation): a source that was down is back
    /// in time, with its pages and the late messages.
    pub fn peer_up(&mut self, _now_us: u64, node: NodeId) {
        if node != self.source {
            return;
        }
        self.late_deadline = None;
        if matches!(self.phase, DPhase::Running) {
            self.deadline = None;
        }
    }

    /// The late messages of the process came from the source (the host has them: the
    /// process can run once committed). Before the commit they are noted; after it, the
    /// process no longer waits for them, nor is ended for want of them.
    pub fn late_arrived(&mut self, _now_us: u64) {
        self.late_came = true;
        self.late_pending = false;
        self.late_deadline = None;
    }

    /// Committed here, and the process waits for its late messages from the source.
    pub fn late_pending(&self) -> bool {
        self.late_pending
    }

    /// The pages asked for or sent may have been lost with a connection: ask again for
    /// every page still absent, in `Fetch`es of at most `push_pages` (at least 64) pages.
    pub fn resync(&mut self, _now_us: u64) {
        if !matches!(self.phase, DPhase::Running) || self.absent == 0 || self.source_lost {
            return;
        }
        let absent: Vec<PageNo> = self.present.pages(false).collect();
        for chunk in absent.chunks((self.cfg.push_pages as usize).max(64)) {
            for &p in chunk {
                self.requested.set(p as usize, true);
            }
            self.report.fetch_requests += 1;
            self.out.push_back((self.source, MigMsg::Fetch { mid: self.mid, pages: chunk.to_vec(), ahead: false }));
        }
    }

    /// The process ended here. Once it runs here with pages still at the source, those
    /// pages are needed no more: the source is told `Released` (it drops its copy, as
    /// when every page has come) and the migration ends `Committed`. Before the commit
    /// the process is not running here (a temporary copy waits for `Commit`), so there is
    /// nothing to do; once the machine is done, neither.
    pub fn process_ended(&mut self, now_us: u64) {
        if !matches!(self.phase, DPhase::Running) {
            return;
        }
        if (self.absent > 0 || self.verifying) && !self.source_lost && self.cfg.fault != MigFault::KeepSourceAfterEnd {
            self.out.push_back((self.source, MigMsg::Released { mid: self.mid }));
        }
        self.report.dependency_ended_us = Some(now_us);
        self.finish(now_us, DestOutcome::Committed);
    }

    /// Whether pages are still at the source (the process depends on it).
    pub fn pages_pending(&self) -> bool {
        matches!(self.phase, DPhase::Running) && (self.absent > 0 || self.verifying)
    }

    fn take_over_link_updates(&mut self, now_us: u64) {
        self.tell_partners();
        self.maybe_done(now_us);
    }

    /// Tells every partner, once, that the process is here (a route is only replaced by a
    /// newer one, so a partner also told by the source changes nothing the second time;
    /// its `LinkAck` to this side is ignored: the source counts the acks it waits for).
    fn tell_partners(&mut self) {
        if !self.took_over {
            self.took_over = true;
            for &p in &self.partners {
                self.out.push_back((p, MigMsg::LinkUpdate { mid: self.mid, pid: self.pid, to: self.me, fwd: self.forwarding }));
            }
        }
    }

    /// `node` restarted: everything its old incarnation held is gone.
    pub fn peer_restarted(&mut self, now_us: u64, node: NodeId) {
        if node == self.source {
            match self.phase {
                DPhase::Receiving | DPhase::Reinstating | DPhase::Ready => self.abort(now_us, Failure::PeerRestarted(node), false),
                DPhase::Running => {
                    self.source_lost = true;
                    self.late_pending = false;
                    self.late_deadline = None;
                    if self.absent == 0 {
                        self.actions.push_back(Action::RunWithoutLate);
                    }
                    if self.absent > 0 {
                        let why = Failure::SourceLostWithPages { source: node, absent: self.absent };
                        self.actions.push_back(Action::Kill { why: why.clone() });
                        self.finish(now_us, DestOutcome::ProcessLost(why));
                        return;
                    }
                    // Link updates the source did not finish: do them from here.
                    self.take_over_link_updates(now_us);
                }
                // Committed and done, but the host may still wait for the late messages.
                DPhase::Done(DestOutcome::Committed) => {
                    self.source_lost = true;
                    self.late_pending = false;
                    self.late_deadline = None;
                    self.actions.push_back(Action::RunWithoutLate);
                }
                DPhase::Done(_) => {}
            }
        }
        // A partner node restarting changes nothing here: its messages carry their
        // origin's incarnation, so its new incarnation is simply a new origin.
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, MigMsg)> {
        self.out.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.deadline, self.late_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now_us: u64) {
        self.deadline_passed(now_us);
        if self.late_deadline.is_some_and(|d| now_us >= d) {
            self.late_deadline = None;
            let live = matches!(self.phase, DPhase::Running | DPhase::Done(DestOutcome::Committed));
            if self.late_pending && !self.source_lost && live {
                // The source stayed down too long with the late messages only there: the
                // process ends, as for lazy pages (a stall is waited for, a node that
                // never comes back is not).
                self.source_lost = true;
                self.late_pending = false;
                let secs = self.cfg.source_down_limit_us / 1_000_000;
                let why = Failure::SourceUnreachableBeforeLate { source: self.source, secs };
                self.actions.push_back(Action::Kill { why: why.clone() });
                // Whatever the source keeps for it (pages, a copy) it may drop whenever
                // it is back.
                self.out.push_back((self.source, MigMsg::Released { mid: self.mid }));
                self.finish(now_us, DestOutcome::ProcessLost(why));
            }
        }
    }

    fn deadline_passed(&mut self, now_us: u64) {
        if self.deadline.is_some_and(|d| now_us >= d) {
            self.deadline = None;
            let what = match self.phase {
                DPhase::Receiving => "the source's pages",
                DPhase::Reinstating => "the reinstatement",
                DPhase::Ready => "Commit",
                DPhase::Running if self.absent > 0 && !self.source_lost => {
                    // The source stayed down too long with pages only there.
                    self.source_lost = true;
                    let secs = self.cfg.source_down_limit_us / 1_000_000;
                    let why = Failure::SourceUnreachableWithPages { source: self.source, absent: self.absent, secs };
                    self.actions.push_back(Action::Kill { why: why.clone() });
                    // The source keeps the pages until told: it is, whenever it is back.
                    self.out.push_back((self.source, MigMsg::Released { mid: self.mid }));
                    self.finish(now_us, DestOutcome::ProcessLost(why));
                    return;
                }
                _ => return,
            };
            self.abort(now_us, Failure::Timeout(what), true);
        }
    }
}

/// What a partner node does with a `LinkUpdate`: the route to use for `pid` from now on
/// (if `mid` is newer than the version it has, `route_version`) and the ack to send back
/// to `from`.
pub fn partner_link_update(msg: &MigMsg, route_version: Mid) -> Option<(Option<(NodeId, Mid)>, MigMsg)> {
    let MigMsg::LinkUpdate { mid, pid, to, .. } = *msg else { return None };
    let route = (mid > route_version).then_some((to, mid));
    Some((route, MigMsg::LinkAck { mid, pid }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: NodeId = 0;
    const DST: NodeId = 1;

    fn lazy_source(now: u64, partners: Vec<NodeId>) -> Source {
        lazy_source_with(now, partners, 8, MigConfig::default())
    }

    fn lazy_source_with(now: u64, partners: Vec<NodeId>, size_pages: u32, cfg: MigConfig) -> Source {
        let init = SourceInit {
            mid: 7,
            pid: 42,
            me: SRC,
            dest: DST,
            size_pages,
            mechanism: Mechanism::Lazy,
            fallback: false,
            forwarding: Forwarding::LinkUpdate,
            partners,
            members: Vec::new(),
            admit: None,
        };
        Source::new(now, cfg, init)
    }

    /// Carries messages both ways and answers `Freeze` and `Reinstate` at once, until
    /// nothing moves; the dest is made at the offer (what it tells third nodes is
    /// dropped). What each host was asked to do.
    fn pump(now: u64, s: &mut Source, d: &mut Option<Dest>) -> (Vec<Action>, Vec<Action>) {
        let (mut sa, mut da) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(a) = s.poll_action() {
                moved = true;
                if a == Action::Freeze {
                    s.frozen(now, &[], 100);
                }
                sa.push(a);
            }
            while let Some((to, m)) = s.poll_transmit() {
                moved = true;
                match d {
                    Some(d) => d.handle(now, SRC, m),
                    None => *d = Dest::new(now, s.cfg.clone(), to, SRC, &m, None),
                }
            }
            if let Some(d) = d.as_mut() {
                while let Some(a) = d.poll_action() {
                    moved = true;
                    if matches!(a, Action::Reinstate { .. }) {
                        d.reinstated(now);
                    }
                    // The process has every page that came.
                    if a == Action::VerifyPages {
                        d.pages_verified(now, &[]);
                    }
                    da.push(a);
                }
                while let Some((to, m)) = d.poll_transmit() {
                    moved = true;
                    if to == SRC {
                        s.handle(now, DST, m);
                    } else {
                        // A third node's link update (partners do not answer here).
                        assert!(matches!(m, MigMsg::LinkUpdate { .. }), "to {to}: {m:?}");
                    }
                }
            }
            if !moved {
                return (sa, da);
            }
        }
    }

    /// A lazy migration committed, the process running at the dest with every page
    /// still at the source (no background push has run yet).
    fn committed_lazy() -> (Source, Dest) {
        let mut s = lazy_source(0, vec![SRC, DST]);
        let mut d = None;
        pump(10, &mut s, &mut d);
        let d = d.expect("a dest");
        assert!(s.is_committed() && d.pages_pending(), "{:?} {:?}", s.outcome(), d.outcome());
        assert_eq!(d.absent_pages(), 8);
        assert_eq!(s.residual().pages, 8);
        (s, d)
    }

    /// What `d` asked for: each `Fetch`'s pages and whether they were asked ahead.
    fn fetches(d: &mut Dest) -> Vec<(Vec<PageNo>, bool)> {
        std::iter::from_fn(|| d.poll_transmit())
            .filter_map(|(_, m)| if let MigMsg::Fetch { pages, ahead, .. } = m { Some((pages, ahead)) } else { None })
            .collect()
    }

    #[test]
    fn faults_in_order_ask_ahead_in_a_growing_window_and_a_fault_out_of_order_starts_again() {
        let cfg = MigConfig { readahead: 32, prefetch: 1, ..MigConfig::default() };
        let mut s = lazy_source_with(0, vec![SRC, DST], 1024, cfg);
        let mut d = None;
        pump(10, &mut s, &mut d);
        let mut d = d.expect("a dest");
        assert_eq!(d.absent_pages(), 1024);
        // A first fault: the page and its prefetch, nothing ahead.
        assert!(d.page_fault(20, 100));
        assert_eq!(fetches(&mut d), vec![(vec![100, 101], false)]);
        // The next page after them: in order, so 8 pages are asked ahead, apart.
        assert!(d.page_fault(21, 102));
        assert_eq!(fetches(&mut d), vec![(vec![102, 103], false), ((104..112).collect(), true)]);
        // A page on its way (asked ahead): nothing more for the fault itself, and the
        // window doubles (16 ahead of it, where 8 were).
        assert!(d.page_fault(22, 104));
        assert_eq!(fetches(&mut d), vec![((112..122).collect(), true)]);
        assert!(d.page_fault(23, 112));
        assert_eq!(fetches(&mut d), vec![((122..146).collect(), true)]);
        // At most `readahead` ahead.
        assert!(d.page_fault(24, 122));
        assert_eq!(fetches(&mut d), vec![((146..156).collect(), true)]);
        // Out of order: the page and its prefetch, and the window starts again.
        assert!(d.page_fault(25, 700));
        assert_eq!(fetches(&mut d), vec![(vec![700, 701], false)]);
        assert!(d.page_fault(26, 702));
        assert_eq!(fetches(&mut d), vec![(vec![702, 703], false), ((704..712).collect(), true)]);
        assert_eq!(d.report().pages_read_ahead, 8 + 10 + 24 + 10 + 8);
        // Without read-ahead, faults in order ask for the page and its prefetch only.
        let mut s = lazy_source_with(0, vec![SRC, DST], 1024, MigConfig::default());
        let mut d = None;
        pump(10, &mut s, &mut d);
        let mut d = d.expect("a dest");
        for p in [100, 102, 104] {
            assert!(d.page_fault(20, p));
            assert_eq!(fetches(&mut d), vec![(vec![p, p + 1], false)]);
        }
    }

    #[test]
    fn the_push_holds_off_while_the_process_faults_and_says_why_it_sent_pages() {
        let cfg = MigConfig { readahead: 8, fetch_quiet_us: 3_000, push_interval_us: 1_000, ..MigConfig::default() };
        let mut s = lazy_source_with(0, vec![SRC, DST], 64, cfg);
        let mut d = None;
        pump(10, &mut s, &mut d);
        let mut d = d.expect("a dest");
        assert_eq!(s.poll_timeout(), Some(1_010), "the push's first turn");
        // A fault, then one in order (with pages ahead), at 500 µs.
        assert!(d.page_fault(500, 20));
        assert!(d.page_fault(500, 22));
        let sent = carry_to_source(&mut d, &mut s, 500);
        let why: Vec<(Vec<PageNo>, SentFor)> = sent
            .iter()
            .filter_map(|m| if let MigMsg::PageData { pages, sent, .. } = m { Some((pages.clone(), *sent)) } else { None })
            .collect();
        assert_eq!(why, vec![(vec![20, 21], SentFor::Fault), (vec![22, 23], SentFor::Fault), ((24..32).collect(), SentFor::ReadAhead)]);
        // The push's turn moved to 3 ms after the fetches.
        assert_eq!(s.poll_timeout(), Some(3_500));
        s.handle_timeout(1_010);
        assert!(page_data(&std::iter::from_fn(|| s.poll_transmit()).map(|(_, m)| m).collect::<Vec<_>>()).is_empty());
        s.handle_timeout(3_500);
        let pushed: Vec<SentFor> = std::iter::from_fn(|| s.poll_transmit())
            .filter_map(|(_, m)| if let MigMsg::PageData { sent, .. } = m { Some(sent) } else { None })
            .collect();
        assert_eq!(pushed, vec![SentFor::Push]);
    }

    /// Found by the `migration` fuzz target: a message of the migration from a third
    /// node (`Aborted` after `Commit`) made the source resume a process its dest had
    /// committed. Each machine now takes its messages from its peer only.
    #[test]
    fn a_third_node_cannot_speak_for_either_end_of_a_migration() {
        let mut s = lazy_source(0, vec![SRC, DST, 2]);
        let mut d: Option<Dest> = None;
        let mut commit = None;
        // Carry everything but the source's `Commit`.
        for _ in 0..20 {
            while let Some(a) = s.poll_action() {
                if a == Action::Freeze {
                    s.frozen(10, &[], 100);
                }
            }
            while let Some((to, m)) = s.poll_transmit() {
                match (&mut d, &m) {
                    (_, MigMsg::Commit { .. }) => commit = Some(m),
                    (Some(d), _) => d.handle(10, SRC, m),
                    (None, _) => d = Dest::new(10, MigConfig::default(), to, SRC, &m, None),
                }
            }
            let Some(d) = d.as_mut() else { continue };
            while let Some(a) = d.poll_action() {
                if matches!(a, Action::Reinstate { .. }) {
                    d.reinstated(10);
                }
            }
            while let Some((_, m)) = d.poll_transmit() {
                s.handle(10, DST, m);
            }
        }
        let mut d = d.expect("a dest");
        let commit = commit.expect("the source sent Commit");
        assert!(s.commit_sent() && s.outcome().is_none());
        // Node 2 says the dest aborted: the process is not resumed at the source.
        s.handle(20, 2, MigMsg::Aborted { mid: 7 });
        s.handle(20, 2, MigMsg::Committed { mid: 7 });
        assert_eq!(s.poll_action(), None);
        assert!(s.commit_sent() && s.outcome().is_none(), "{:?}", s.outcome());
        // Node 2 sends the dest a `Commit`, then an `Abort`: neither is taken.
        d.handle(20, 2, commit.clone());
        d.handle(20, 2, MigMsg::Abort { mid: 7 });
        assert!(!d.committed() && d.outcome().is_none(), "{:?}", d.outcome());
        // The real `Commit`: both ends commit.
        d.handle(30, SRC, commit);
        assert!(d.committed());
        while let Some((_, m)) = d.poll_transmit() {
            s.handle(30, DST, m);
        }
        assert!(s.is_committed(), "{:?}", s.outcome());
    }

    #[test]
    fn a_lazy_process_that_ends_at_the_dest_releases_the_source() {
        let (mut s, d) = committed_lazy();
        let mut d = Some(d);
        d.as_mut().expect("dest").process_ended(20);
        let (sa, da) = pump(20, &mut s, &mut d);
        let d = d.expect("dest");
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        assert_eq!(da, vec![Action::Done]);
        assert_eq!(d.report().dependency_ended_us, Some(20));
        // The source dropped its copy and the pages it was keeping, and is done.
        assert!(sa.contains(&Action::DeleteSource), "{sa:?}");
        assert_eq!(s.outcome(), Some(&SourceOutcome::Committed));
        assert!(s.residual().is_empty(), "{:?}", s.residual());
        assert_eq!(s.poll_timeout(), None, "no background push left");
        assert_eq!(s.report().dependency_ended_us, Some(20));
    }

    /// The pages of `PageData` among `msgs`, in order.
    fn page_data(msgs: &[MigMsg]) -> Vec<PageNo> {
        msgs.iter().filter_map(|m| if let MigMsg::PageData { pages, .. } = m { Some(pages.clone()) } else { None }).flatten().collect()
    }

    /// Everything `from` sends `to` handles, until `from` has nothing more to say.
    fn carry_to_source(d: &mut Dest, s: &mut Source, now: u64) -> Vec<MigMsg> {
        let asked: Vec<MigMsg> = std::iter::from_fn(|| d.poll_transmit()).map(|(_, m)| m).collect();
        for m in asked {
            s.handle(now, DST, m);
        }
        std::iter::from_fn(|| s.poll_transmit()).map(|(_, m)| m).collect()
    }

    /// A writer that wrote nearly every page again while round 0 sent them all: the
    /// rounds stop there (hybrid: the rest goes after the process), instead of sending
    /// the whole heap a second time to find out that it does not shrink.
    #[test]
    fn a_hybrid_round_0_written_over_almost_whole_is_the_only_round() {
        let init = SourceInit { size_pages: 64, mechanism: Mechanism::Hybrid, ..lazy_source(0, vec![SRC, DST]).init };
        // (No freeze budget: the round's measured speed must not make 60 pages "converged".)
        let mut s = Source::new(0, MigConfig { freeze_budget_us: 0, ..MigConfig::default() }, init);
        let mut d = None;
        let (sa, _) = pump(10, &mut s, &mut d);
        assert!(sa.contains(&Action::CollectDirty), "{sa:?}");
        assert_eq!(s.report.rounds, vec![64]);
        assert!(s.needs_last_dirty(), "while its rounds may go on");
        s.pages_dirtied(20, &(0..60).collect::<Vec<_>>());
        let (sa, _) = pump(30, &mut s, &mut d);
        assert_eq!(s.report.rounds, vec![64], "a second round was sent: {sa:?}");
        assert_eq!(s.report.stop, StopReason::NotShrinking);
        assert!(sa.contains(&Action::Freeze), "{sa:?}");
        // Written over almost whole: the whole heap is left absent, and the pages dirtied
        // meanwhile are not listed while it is frozen.
        assert!(!s.needs_last_dirty());
        assert_eq!(s.report.absent_at_resume, 64);
        assert!(s.is_committed(), "{:?}", s.outcome());
    }

    /// A pre-copy whose rounds are written over whole each time steps its throttle up by
    /// `throttle_step` levels a round, never past `max_throttle`, and stops (its dirty set
    /// frozen) only once the most did not help; a dirty set that shrinks at a level keeps
    /// the level.
    #[test]
    fn a_precopy_written_over_whole_is_slowed_by_steps_to_the_most_then_stops() {
        let init = SourceInit { size_pages: 64, mechanism: Mechanism::Precopy, ..lazy_source(0, vec![SRC, DST]).init };
        let cfg = MigConfig { freeze_budget_us: 0, max_throttle: 8, throttle_step: 3, max_rounds: 10, ..MigConfig::default() };
        let mut s = Source::new(0, cfg.clone(), init);
        let mut d = None;
        let mut levels = Vec::new();
        let mut t = 10;
        let mut dirty: Vec<PageNo> = (0..64).collect();
        for round in 0..6 {
            let (sa, _) = pump(t, &mut s, &mut d);
            levels.extend(sa.iter().filter_map(|a| match a {
                Action::Throttle { level } => Some(*level),
                _ => None,
            }));
            if s.phase != SPhase::Collecting {
                break;
            }
            // Rounds 0-2 written over whole; then it shrinks at the level it has.
            if round >= 3 {
                dirty.truncate(dirty.len() / 2);
            }
            t += 10;
            s.pages_dirtied(t, &dirty);
            t += 10;
        }
        assert_eq!(levels[..3], [3, 6, 8], "{levels:?}");
        assert!(levels[3..].iter().all(|&l| l == 0), "held at 8 while shrinking, back to 0 at the end: {levels:?}");
        assert_eq!(s.report.throttle, 8);

        // Never shrinking: 3, 6, 8, then it stops.
        let init = SourceInit { size_pages: 64, mechanism: Mechanism::Precopy, ..lazy_source(0, vec![SRC, DST]).init };
        let mut s = Source::new(0, cfg, init);
        let mut d = None;
        let mut t = 10;
        for _ in 0..6 {
            pump(t, &mut s, &mut d);
            if s.phase != SPhase::Collecting {
                break;
            }
            t += 10;
            s.pages_dirtied(t, &(0..64).collect::<Vec<_>>());
            t += 10;
        }
        assert_eq!(s.report.stop, StopReason::NotShrinking);
        assert_eq!(s.report.rounds.len(), 4, "{:?}", s.report.rounds);
    }

    #[test]
    fn page_ranges_are_joined_and_found_without_a_list_per_page() {
        assert_eq!(to_ranges(&[0, 1, 2, 5, 7, 8]), vec![(0, 3), (5, 6), (7, 9)]);
        assert_eq!(ranges_len(&[(0, 3), (5, 6), (7, 9)]), 6);
        let mut sent = PageBits::new(10, true);
        sent.set(2, false);
        assert_eq!(page_ranges(vec![9, 3], &[4, 20], 10, Some(&sent)), vec![(2, 5), (9, 10)]);
        assert_eq!(page_ranges(vec![9, 3], &[4, 20], 10, None), vec![(3, 5), (9, 10)]);
        let many: Vec<PageNo> = (0..2000).chain(2500..3000).collect();
        assert_eq!(page_ranges(many, &[], 4000, None), vec![(0, 2000), (2500, 3000)]);
        assert_eq!(sorted_union(vec![5, 1, 3], &[3, 2, 99], 10), vec![1, 2, 3, 5]);
        let many: Vec<PageNo> = (0..3000).rev().collect();
        assert_eq!(sorted_union(many, &[1, 5000, 9999], 4000), (0..3000).collect::<Vec<_>>());
        let mut set = PageSet::of_ranges(130, &[(0, 2), (8, 12), (70, 129)]);
        assert_eq!(set.len(), 65);
        assert!(set.remove(1) && !set.remove(1));
        assert_eq!(set.first(3), vec![0, 8, 9]);
        assert!(set.remove(0));
        assert_eq!(set.first(6), vec![8, 9, 10, 11, 70, 71]);
    }

    #[test]
    fn a_lazy_move_of_a_large_heap_names_its_absent_pages_in_one_range() {
        let init = SourceInit { size_pages: 1 << 18, ..lazy_source(0, vec![]).init };
        let mut s = Source::new(0, MigConfig::default(), init);
        let mut d: Option<Dest> = None;
        // The source's `Final` names 2^18 absent pages as one range, and the dest has them
        // all absent at the resume.
        let mut finals = Vec::new();
        loop {
            let mut moved = false;
            while let Some(a) = s.poll_action() {
                moved = true;
                if a == Action::Freeze {
                    s.frozen(0, &[], 100);
                }
            }
            while let Some((to, m)) = s.poll_transmit() {
                moved = true;
                if let MigMsg::Final { absent, .. } = &m {
                    finals.push(absent.clone());
                }
                match &mut d {
                    Some(d) => d.handle(0, SRC, m),
                    None => d = Dest::new(0, MigConfig::default(), to, SRC, &m, None),
                }
            }
            if let Some(d) = d.as_mut() {
                while let Some(a) = d.poll_action() {
                    moved = true;
                    if matches!(a, Action::Reinstate { .. }) {
                        d.reinstated(0);
                    }
                }
                while let Some((_, m)) = d.poll_transmit() {
                    moved = true;
                    s.handle(0, DST, m);
                }
            }
            if !moved {
                break;
            }
        }
        assert_eq!(finals, vec![vec![(0, 1 << 18)]]);
        assert_eq!(s.report().absent_at_resume, 1 << 18);
        assert_eq!(d.expect("a dest").absent_pages(), 1 << 18);
    }

    #[test]
    fn a_fault_on_a_page_the_push_sent_is_answered_at_once_and_the_push_waits_for_room() {
        let (mut s, mut d) = committed_lazy();
        // The host's queue toward the link is full: the push's turn comes and sends nothing.
        s.set_push_room(0);
        let t = s.poll_timeout().expect("the background push");
        s.handle_timeout(t);
        assert!(page_data(&std::iter::from_fn(|| s.poll_transmit()).map(|(_, m)| m).collect::<Vec<_>>()).is_empty());
        let t = s.poll_timeout().expect("the push waits a turn");
        // Room for three pages: the push sends three, which are still on their way.
        s.set_push_room(3);
        s.handle_timeout(t);
        let pushed = page_data(&std::iter::from_fn(|| s.poll_transmit()).map(|(_, m)| m).collect::<Vec<_>>());
        assert_eq!(pushed, vec![0, 1, 2]);
        // The process touches one of them: the answer does not wait for the push's copy.
        assert!(d.page_fault(t, pushed[0]));
        let answer = carry_to_source(&mut d, &mut s, t);
        assert!(page_data(&answer).contains(&pushed[0]), "{answer:?}");
        assert!(s.report().redundant_pages >= 1);
        // The connection was lost, with the pages on it: every absent page is asked for
        // again and comes.
        d.resync(t);
        let mut all = page_data(&carry_to_source(&mut d, &mut s, t));
        all.extend(page_data(&answer));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all, (0..8).collect::<Vec<PageNo>>());
    }

    #[test]
    fn a_source_released_by_an_ended_process_still_waits_for_its_link_acks() {
        let mut s = lazy_source(0, vec![SRC, DST, 2]);
        let mut d = None;
        pump(10, &mut s, &mut d);
        let mut d = d.expect("a dest");
        d.process_ended(20);
        let sent: Vec<(NodeId, MigMsg)> = std::iter::from_fn(|| d.poll_transmit()).collect();
        assert_eq!(sent, vec![(SRC, MigMsg::Released { mid: 7 })]);
        for (_, m) in sent {
            s.handle(20, DST, m);
        }
        assert_eq!(s.residual(), Residual { copy: false, forwarding: true, links_pending: 1, pages: 0 });
        s.handle(30, 2, MigMsg::LinkAck { mid: 7, pid: 42 });
        assert_eq!(s.outcome(), Some(&SourceOutcome::Committed));
        assert!(s.residual().is_empty());
    }

    /// A lazy move whose source just sent `Commit` (not delivered).
    fn source_at_commit() -> Source {
        let mut s = lazy_source(0, vec![SRC, DST]);
        let mut d: Option<Dest> = None;
        for _ in 0..100 {
            while let Some(a) = s.poll_action() {
                if a == Action::Freeze {
                    s.frozen(1, &[], 100);
                }
            }
            while let Some((to, m)) = s.poll_transmit() {
                if matches!(m, MigMsg::Commit { .. }) {
                    return s;
                }
                match d.as_mut() {
                    Some(d) => d.handle(1, SRC, m),
                    None => d = Dest::new(1, s.cfg.clone(), to, SRC, &m, None),
                }
            }
            if let Some(d) = d.as_mut() {
                while let Some(a) = d.poll_action() {
                    if matches!(a, Action::Reinstate { .. }) {
                        d.reinstated(1);
                    }
                }
                while let Some((_, m)) = d.poll_transmit() {
                    s.handle(1, DST, m);
                }
            }
        }
        panic!("no Commit");
    }

    /// A destination asked to commit that stays down past the bound: the move is
    /// reported in doubt, once, and the machine goes on (frozen, never resumed); one
    /// back in time, or down for less, is not reported.
    #[test]
    fn a_destination_down_past_the_bound_after_commit_reports_the_move_in_doubt() {
        let bound = MigConfig::default().in_doubt_after_us;
        let mut s = source_at_commit();
        while s.poll_action().is_some() {}
        s.peer_down(100, DST);
        assert_eq!(s.poll_timeout(), Some(100 + bound));
        s.handle_timeout(100 + bound - 1);
        assert_eq!(s.poll_action(), None);
        s.handle_timeout(100 + bound + 5);
        assert_eq!(s.poll_action(), Some(Action::InDoubt { down_us: bound + 5 }));
        assert!(s.report().reported_in_doubt && s.outcome().is_none());
        assert_ne!(s.poll_timeout(), Some(100 + bound), "reported once");
        // It answers: the move ends as it says.
        s.peer_up(200 + bound, DST);
        s.handle(201 + bound, DST, MigMsg::Committed { mid: 7 });
        assert!(s.is_committed());

        // Back before the bound: nothing to report.
        let mut s = source_at_commit();
        while s.poll_action().is_some() {}
        s.peer_down(100, DST);
        s.peer_up(100 + bound / 2, DST);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(100 + 2 * bound);
        assert!(!std::iter::from_fn(|| s.poll_action()).any(|a| matches!(a, Action::InDoubt { .. })));
        assert!(!s.report().reported_in_doubt);
    }

    /// A committed lazy move whose destination stays down past the bound while pages
    /// are still here is reported once (it committed: whoever waits must not wait as
    /// long as that node is away), and the machine goes on holding the pages until the
    /// destination has them all; one back in time is not reported.
    #[test]
    fn a_destination_down_past_the_bound_with_pages_here_reports_the_move_committed_and_away() {
        let bound = MigConfig::default().in_doubt_after_us;
        let committed = || {
            let mut s = source_at_commit();
            s.handle(10, DST, MigMsg::Committed { mid: 7 });
            assert!(s.is_committed() && s.awaits_dest());
            while s.poll_action().is_some() {}
            s
        };
        let reports =
            |s: &mut Source| std::iter::from_fn(|| s.poll_action()).filter(|a| matches!(a, Action::AwayAfterCommit { .. })).count();
        let mut s = committed();
        s.peer_down(100, DST);
        s.handle_timeout(100 + bound - 1);
        assert_eq!(reports(&mut s), 0, "not before the bound");
        s.handle_timeout(100 + bound + 5);
        let mut seen = vec![];
        while let Some(a) = s.poll_action() {
            seen.push(a);
        }
        assert!(seen.contains(&Action::AwayAfterCommit { down_us: bound + 5 }), "{seen:?}");
        assert!(!seen.iter().any(|a| matches!(a, Action::InDoubt { .. } | Action::DeleteSource)), "{seen:?}");
        assert!(s.report().reported_away && !s.report().reported_in_doubt && s.outcome().is_none());
        assert!(!s.residual().is_empty(), "the pages stay for it");
        s.handle_timeout(100 + 3 * bound);
        assert_eq!(reports(&mut s), 0, "reported once");
        // It is back and has them all: the move ends committed.
        s.peer_up(200 + 3 * bound, DST);
        s.handle(201 + 3 * bound, DST, MigMsg::Released { mid: 7 });
        assert_eq!(s.outcome(), Some(&SourceOutcome::Committed));

        // Back before the bound, or released before it: nothing to report.
        let mut s = committed();
        s.peer_down(100, DST);
        s.peer_up(100 + bound / 2, DST);
        s.handle_timeout(100 + 2 * bound);
        assert_eq!(reports(&mut s), 0);
        let mut s = committed();
        s.peer_down(100, DST);
        s.handle(110, DST, MigMsg::Released { mid: 7 });
        s.handle_timeout(100 + 2 * bound);
        assert_eq!(reports(&mut s), 0);
        assert!(!s.report().reported_away);
    }

    /// A destination offered a lazy move (migration 7) of `size_pages` pages.
    fn lazy_dest(size_pages: u32) -> Dest {
        let offer = MigMsg::Offer {
            mid: 7,
            pid: 42,
            size_pages,
            mechanism: Mechanism::Lazy,
            fallback: false,
            forwarding: Forwarding::LinkUpdate,
            members: Vec::new(),
            admit: None,
        };
        Dest::new(0, MigConfig::default(), DST, SRC, &offer, None).expect("a dest")
    }

    #[test]
    fn before_the_commit_a_process_ended_changes_nothing_at_the_dest() {
        let mut d = lazy_dest(8);
        assert_eq!(d.poll_transmit(), Some((SRC, MigMsg::Accept { mid: 7 })));
        let quiet = |d: &mut Dest| d.poll_transmit().is_none() && d.poll_action().is_none() && d.outcome().is_none();
        // Receiving.
        d.process_ended(1);
        assert!(quiet(&mut d));
        let all: Vec<PageNo> = (0..8).collect();
        d.handle(2, SRC, MigMsg::Final { mid: 7, image_len: 100, pages: vec![], absent: to_ranges(&all), partners: vec![SRC, DST] });
        assert!(matches!(d.poll_action(), Some(Action::Reinstate { absent: 8 })));
        // Reinstating.
        d.process_ended(3);
        assert!(quiet(&mut d));
        d.reinstated(4);
        assert_eq!(d.poll_transmit(), Some((SRC, MigMsg::Ready { mid: 7 })));
        // Ready: still waits for `Commit`, and commits when it comes.
        d.process_ended(5);
        assert!(quiet(&mut d));
        assert_eq!(d.poll_timeout(), Some(4 + MigConfig::default().commit_timeout_us));
        d.handle(6, SRC, MigMsg::Commit { mid: 7 });
        assert_eq!(d.poll_action(), Some(Action::Resume { absent: 8 }));
        assert_eq!(d.poll_transmit(), Some((SRC, MigMsg::Committed { mid: 7 })));
        assert!(d.pages_pending());
    }

    #[test]
    fn absent_pages_are_given_as_ranges() {
        let mut d = lazy_dest(10);
        let _ = d.poll_transmit();
        d.handle(1, SRC, MigMsg::Final { mid: 7, image_len: 100, pages: vec![0, 1, 4, 9], absent: vec![(2, 4), (5, 9)], partners: vec![] });
        assert_eq!(d.absent_ranges(0, 10), vec![(2, 4), (5, 9)]);
        assert_eq!(d.absent_ranges(3, 6), vec![(3, 4), (5, 6)]);
        assert_eq!(d.absent_ranges(9, 10), vec![]);
        // Past the pages it knows: absent, joined to a range that reaches its end.
        assert_eq!(d.absent_ranges(6, 12), vec![(6, 9), (10, 12)]);
        assert_eq!(d.absent_ranges(12, 14), vec![(12, 14)]);
        let every: Vec<PageNo> = (0..10).filter(|&p| !d.is_present(p)).collect();
        let from_ranges: Vec<PageNo> = d.absent_ranges(0, 10).into_iter().flat_map(|(a, b)| a..b).collect();
        assert_eq!(every, from_ranges);
    }

    /// The source's copy is the only other one: once every page came, the host is asked
    /// whether the process has them all, and the source is released only then. A page
    /// the process lacks (lost on its way to it) is asked for again, and the question
    /// is asked again when it has come.
    #[test]
    fn the_source_is_released_only_once_the_process_has_every_page() {
        let (mut s, mut d) = committed_lazy();
        while d.poll_transmit().is_some() {}
        d.handle(20, SRC, MigMsg::PageData { mid: 7, pages: (0..8).collect(), sent: SentFor::Push });
        let acts: Vec<Action> = std::iter::from_fn(|| d.poll_action()).collect();
        assert_eq!(acts, vec![Action::PagesArrived { pages: (0..8).collect() }, Action::VerifyPages]);
        assert!(d.poll_transmit().is_none(), "released before the process was asked");
        assert!(d.pages_pending() && d.outcome().is_none());
        // Page 3 never reached the process: absent again, asked for again.
        d.pages_verified(21, &[3]);
        assert_eq!(d.poll_transmit(), Some((SRC, MigMsg::Fetch { mid: 7, pages: vec![3], ahead: false })));
        assert!(d.poll_transmit().is_none());
        assert_eq!(d.absent_pages(), 1);
        assert!(!d.is_present(3) && d.outcome().is_none());
        assert_eq!(d.report().pages_asked_again, 1);
        // The source answers with it (it kept its copy); asked again, the process has it.
        s.handle(22, DST, MigMsg::Fetch { mid: 7, pages: vec![3], ahead: false });
        assert!(page_data(&std::iter::from_fn(|| s.poll_transmit()).map(|(_, m)| m).collect::<Vec<_>>()).contains(&3));
        d.handle(23, SRC, MigMsg::PageData { mid: 7, pages: vec![3], sent: SentFor::Fault });
        let acts: Vec<Action> = std::iter::from_fn(|| d.poll_action()).collect();
        assert_eq!(acts, vec![Action::PagesArrived { pages: vec![3] }, Action::VerifyPages]);
        d.pages_verified(24, &[]);
        assert_eq!(d.poll_transmit(), Some((SRC, MigMsg::Released { mid: 7 })));
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        assert_eq!(d.report().dependency_ended_us, Some(24));

        // With the source lost meanwhile, a page the process lacks cannot come: it ends.
        let (_, mut d) = committed_lazy();
        d.handle(20, SRC, MigMsg::PageData { mid: 7, pages: (0..8).collect(), sent: SentFor::Push });
        d.peer_restarted(21, SRC);
        d.pages_verified(22, &[5]);
        assert!(matches!(d.outcome(), Some(DestOutcome::ProcessLost(Failure::SourceLostWithPages { absent: 1, .. }))), "{:?}", d.outcome());
    }

    #[test]
    fn once_the_dest_is_done_a_process_ended_changes_nothing() {
        // Every page came: `Released` went already, once.
        let (mut s, mut d) = committed_lazy();
        d.handle(20, SRC, MigMsg::PageData { mid: 7, pages: (0..8).collect(), sent: SentFor::Push });
        d.pages_verified(20, &[]);
        let sent: Vec<(NodeId, MigMsg)> = std::iter::from_fn(|| d.poll_transmit()).collect();
        assert_eq!(sent, vec![(SRC, MigMsg::Released { mid: 7 })]);
        while d.poll_action().is_some() {}
        d.process_ended(30);
        assert!(d.poll_transmit().is_none() && d.poll_action().is_none());
        assert_eq!(d.report().dependency_ended_us, Some(20));
        s.handle(20, DST, MigMsg::Released { mid: 7 });
        assert_eq!(s.outcome(), Some(&SourceOutcome::Committed));

        // The source stayed unreachable past the limit: the process was ended with the
        // cause, and the source told `Released` then.
        let (_, mut d) = committed_lazy();
        d.peer_down(40, SRC);
        d.handle_timeout(40 + MigConfig::default().source_down_limit_us);
        assert!(matches!(d.outcome(), Some(DestOutcome::ProcessLost(_))));
        while d.poll_transmit().is_some() {}
        while d.poll_action().is_some() {}
        d.process_ended(50);
        assert!(d.poll_transmit().is_none() && d.poll_action().is_none());
        assert!(matches!(d.outcome(), Some(DestOutcome::ProcessLost(_))));
    }

    /// A freeze migration committed: the dest is done (no page is away) but the host
    /// still waits for the late messages, which `pump` never hands it.
    fn committed_freeze() -> (Source, Dest) {
        let init = SourceInit {
            mid: 7,
            pid: 42,
            me: SRC,
            dest: DST,
            size_pages: 8,
            mechanism: Mechanism::Freeze,
            fallback: false,
            forwarding: Forwarding::LinkUpdate,
            partners: vec![SRC, DST],
            members: Vec::new(),
            admit: None,
        };
        let mut s = Source::new(0, MigConfig::default(), init);
        let mut d = None;
        let (_, da) = pump(10, &mut s, &mut d);
        let d = d.expect("a dest");
        assert!(da.contains(&Action::Resume { absent: 0 }), "{da:?}");
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        assert_eq!(s.outcome(), Some(&SourceOutcome::Committed));
        assert!(d.late_pending());
        assert_eq!(d.poll_timeout(), None, "nothing to time while the source answers");
        (s, d)
    }

    #[test]
    fn a_source_unreachable_past_the_limit_before_the_late_messages_ends_the_process() {
        let (mut s, mut d) = committed_freeze();
        let limit = MigConfig::default().source_down_limit_us;
        d.peer_down(100, SRC);
        assert_eq!(d.poll_timeout(), Some(100 + limit));
        // A second report of the same silence does not push the bound on.
        d.peer_down(200, SRC);
        assert_eq!(d.poll_timeout(), Some(100 + limit));
        d.handle_timeout(100 + limit - 1);
        assert!(d.poll_action().is_none() && d.poll_transmit().is_none());
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        d.handle_timeout(100 + limit);
        let why = Failure::SourceUnreachableBeforeLate { source: SRC, secs: limit / 1_000_000 };
        assert_eq!(d.poll_action(), Some(Action::Kill { why: why.clone() }));
        assert_eq!(d.poll_action(), Some(Action::Done));
        assert_eq!(d.outcome(), Some(&DestOutcome::ProcessLost(why.clone())));
        assert!(why.to_string().contains("source node 0 unreachable for 10 s before the process's late messages came"), "{why}");
        assert!(!d.late_pending());
        assert_eq!(d.poll_timeout(), None);
        // The source is told, for whenever it is back; it holds nothing after.
        let sent: Vec<(NodeId, MigMsg)> = std::iter::from_fn(|| d.poll_transmit()).collect();
        assert_eq!(sent, vec![(SRC, MigMsg::Released { mid: 7 })]);
        for (_, m) in sent {
            s.handle(200 + limit, DST, m);
        }
        assert!(s.residual().is_empty(), "{:?}", s.residual());
        // Late messages, the source's return or its restart after that change nothing.
        d.late_arrived(300 + limit);
        d.peer_up(300 + limit, SRC);
        d.peer_restarted(300 + limit, SRC);
        assert!(d.poll_action().is_none() && d.poll_transmit().is_none());
        assert_eq!(d.outcome(), Some(&DestOutcome::ProcessLost(why)));
    }

    #[test]
    fn a_source_back_in_time_disarms_the_late_messages_bound() {
        let (_, mut d) = committed_freeze();
        let limit = MigConfig::default().source_down_limit_us;
        d.peer_down(100, SRC);
        assert!(d.poll_timeout().is_some());
        // Another node going up changes nothing.
        d.peer_up(150, 2);
        assert_eq!(d.poll_timeout(), Some(100 + limit));
        d.peer_up(200, SRC);
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(100 + limit);
        assert!(d.poll_action().is_none() && d.poll_transmit().is_none());
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        assert!(d.late_pending(), "still waited for");
        // Down again: a new bound, from then.
        d.peer_down(5_000, SRC);
        assert_eq!(d.poll_timeout(), Some(5_000 + limit));
    }

    #[test]
    fn late_messages_that_come_disarm_the_bound() {
        let (_, mut d) = committed_freeze();
        let limit = MigConfig::default().source_down_limit_us;
        d.peer_down(100, SRC);
        assert_eq!(d.poll_timeout(), Some(100 + limit));
        d.late_arrived(200);
        assert!(!d.late_pending());
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(100 + limit);
        assert!(d.poll_action().is_none() && d.poll_transmit().is_none());
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
    }

    #[test]
    fn late_messages_that_came_first_leave_nothing_to_bound() {
        let (_, mut d) = committed_freeze();
        d.late_arrived(50);
        d.peer_down(100, SRC);
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(u64::MAX);
        assert!(d.poll_action().is_none() && d.poll_transmit().is_none());
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));

        // Also when they came before the `Commit` (noted, not awaited after it).
        let offer = MigMsg::Offer {
            mid: 7,
            pid: 42,
            size_pages: 8,
            mechanism: Mechanism::Freeze,
            fallback: false,
            forwarding: Forwarding::LinkUpdate,
            members: Vec::new(),
            admit: None,
        };
        let mut d = Dest::new(0, MigConfig::default(), DST, SRC, &offer, None).expect("a dest");
        d.handle(1, SRC, MigMsg::Final { mid: 7, image_len: 100, pages: (0..8).collect(), absent: vec![], partners: vec![] });
        d.reinstated(2);
        d.late_arrived(3);
        d.handle(4, SRC, MigMsg::Commit { mid: 7 });
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        assert!(!d.late_pending());
        d.peer_down(5, SRC);
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_lazy_process_with_every_page_here_still_waits_for_its_late_messages_at_most_the_limit() {
        let (_, mut d) = committed_lazy();
        let limit = MigConfig::default().source_down_limit_us;
        d.handle(20, SRC, MigMsg::PageData { mid: 7, pages: (0..8).collect(), sent: SentFor::Push });
        d.pages_verified(20, &[]);
        assert_eq!(d.outcome(), Some(&DestOutcome::Committed));
        while d.poll_action().is_some() {}
        while d.poll_transmit().is_some() {}
        d.peer_down(30, SRC);
        d.handle_timeout(30 + limit);
        assert!(matches!(d.poll_action(), Some(Action::Kill { why: Failure::SourceUnreachableBeforeLate { source: SRC, .. } })));
        assert!(matches!(d.outcome(), Some(DestOutcome::ProcessLost(Failure::SourceUnreachableBeforeLate { .. }))));

        // With pages still away, the pages are what it is ended for (one bound, one end).
        let (_, mut d) = committed_lazy();
        d.peer_down(30, SRC);
        d.handle_timeout(30 + limit);
        let kills: Vec<Action> = std::iter::from_fn(|| d.poll_action()).filter(|a| matches!(a, Action::Kill { .. })).collect();
        assert!(matches!(kills[..], [Action::Kill { why: Failure::SourceUnreachableWithPages { .. } }]), "{kills:?}");
        assert_eq!(d.poll_timeout(), None);
    }
}
