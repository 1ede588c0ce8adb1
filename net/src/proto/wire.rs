//! What nodes say to each other inside the session protocol's payloads, and what an
//! operator (`tern ctl`, `tern repl`) says to a node.
//!
//! Every frame is a version byte followed by postcard. Decoding checks the length
//! against a cap before anything is allocated, rejects another version and trailing
//! bytes; no type here is recursive.

use crate::proto::mechanism::{Forwarding, How, Mechanism};
use serde::{Deserialize, Serialize};
use tern_vm::bytecode::ModuleHash;
use tern_vm::node::{FileOp, Op};
use tern_vm::process::IoResult;

/// The version of [`Frame`] and of the operator protocol.
pub const FRAME_VERSION: u8 = 17;

/// A node-to-node payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// An op for the VM (a message, a spawn, a link, ...).
    Vm(Op),
    /// Send me these modules (by content hash).
    WantModules(Vec<ModuleHash>),
    /// Modules, encoded (each one's hash is the blake3 of its bytes).
    Modules(Vec<Vec<u8>>),
    /// A request, answered by [`Frame::Answer`] with the same id.
    Ask {
        id: u64,
        query: Query,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
    /// Console output of a process whose console is on the receiving node.
    Console {
        console: u64,
        pid: u64,
        text: String,
        failed: bool,
    },
    /// To a console's node: process `pid` (on the sender) asks for line `k` of its
    /// console input (`read_line()`).
    ConsoleRead {
        console: u64,
        pid: u64,
        k: u64,
    },
    /// To a console's node: watched process `pid` started from it ended on the sender.
    Exited(ExitNote),
    /// The answer: line `k` of `pid`'s console input (`None`: the input ended).
    ConsoleLine {
        pid: u64,
        k: u64,
        line: Option<String>,
    },
    /// The sender's load, sent every heartbeat or so.
    Load(Load),
    /// A live migration's control traffic (see `node/migration/`): what must stay in order
    /// with the VM ops between the two nodes.
    Mig(MigWire),
    /// The sender suspects this node (one it watches went silent for half of
    /// `node_down_ms`): probe it (`Session::suspect`).
    Suspect(u16),
}

/// A page as a migration sends it: its words (little-endian), or `None` when all zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRec {
    pub index: u32,
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// What travels for one live migration: on its own QUIC streams (pages, the image,
/// the protocol's messages up to the commit point, page faults) or, for what must stay
/// in order with the VM ops, in [`Frame::Mig`] on the node-pair session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MigWire {
    /// A protocol message ([`crate::proto::migrate`]).
    Msg(crate::proto::migrate::MigMsg),
    /// The protocol's `Final` with its lists of pages as ranges `[start, end)` (a lazy
    /// migration leaves every page of the heap absent: the list would be as long).
    Final { mid: u64, image_len: u64, pages: Vec<(u32, u32)>, absent: Vec<(u32, u32)>, partners: Vec<u16> },
    /// The contents of pages named by the protocol message that follows: pages of the
    /// `member`th process of the migration (0 but for a group), by its own page numbers.
    Pages { mid: u64, member: u32, pages: Vec<PageRec> },
    /// Source → destination right after the offer: the hashes of the process's modules,
    /// and its hotness profile: the functions of those modules compiled at the source
    /// (the destination compiles them again in the background, before the process
    /// resumes there); destination → source: the modules it lacks (`hot` empty).
    Need { mid: u64, hashes: Vec<ModuleHash>, hot: Vec<(ModuleHash, u32)> },
    /// The modules of the process the destination lacks (encoded).
    Modules { mid: u64, modules: Vec<serde_bytes::ByteBuf> },
    /// Part of the process's state image (`last`: the image is complete).
    Image { mid: u64, part: serde_bytes::ByteBuf, last: bool },
    /// What reached the process at the source after its image (`transfer.rs`'s `Late`):
    /// one per process of the migration (a group's members in order).
    Late { mid: u64, late: Vec<tern_vm::node::Late> },
    /// A partner node's link update, with the route versions it needs: every process of
    /// the migration (a group's members) in one.
    LinkUpdate { mid: u64, procs: Vec<LinkProc>, to: u16, fwd: Forwarding },
    /// The destination's side of the report, when it is done.
    DestDone { mid: u64, stats: DestStats },
    /// Another frame of the migration stream (a versioned frame, without its length:
    /// in practice [`MigWire::Pages`]) as an lz4 block of `raw_len` bytes
    /// ([`lz4_frame`], [`unlz4`]; never one inside another).
    Lz4 { raw_len: u32, data: serde_bytes::ByteBuf },
}

/// How a watched process ended, for the node its starter waits at (the VM's
/// `ProcessExit`, its trace capped at [`ExitNote::MAX_TRACE`] entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitNote {
    pub pid: u64,
    pub kind: ExitKind,
    /// The reason's text (the error's message for `Failed`).
    pub reason: String,
    /// (function, file, line), innermost first.
    pub trace: Vec<(String, String, u32)>,
    pub reductions: u64,
    pub heap_bytes: u64,
    pub gc: tern_vm::heap::GcStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    Normal,
    Exit,
    Killed,
    Failed,
}

impl ExitNote {
    pub const MAX_TRACE: usize = 64;

    pub fn of(e: &tern_vm::node::ProcessExit) -> ExitNote {
        use tern_vm::node::ExitReason as R;
        let (kind, reason, trace) = match &e.reason {
            R::Normal => (ExitKind::Normal, String::new(), Vec::new()),
            R::Exit(s) => (ExitKind::Exit, s.clone(), Vec::new()),
            R::Killed(s) => (ExitKind::Killed, s.clone(), Vec::new()),
            R::Failed(err) => (
                ExitKind::Failed,
                err.message.clone(),
                err.trace.iter().take(Self::MAX_TRACE).map(|t| (t.function.clone(), t.file.clone(), t.line)).collect(),
            ),
        };
        ExitNote { pid: e.pid, kind, reason, trace, reductions: e.reductions, heap_bytes: e.heap_bytes as u64, gc: e.gc }
    }

    pub fn exit(self) -> tern_vm::node::ProcessExit {
        use tern_vm::node::ExitReason as R;
        let reason = match self.kind {
            ExitKind::Normal => R::Normal,
            ExitKind::Exit => R::Exit(self.reason),
            ExitKind::Killed => R::Killed(self.reason),
            ExitKind::Failed => R::Failed(tern_vm::interp::RuntimeError {
                message: self.reason,
                trace: self
                    .trace
                    .into_iter()
                    .take(Self::MAX_TRACE)
                    .map(|(function, file, line)| tern_vm::interp::TraceEntry { function, file, line })
                    .collect(),
            }),
        };
        tern_vm::node::ProcessExit {
            pid: self.pid,
            reason,
            reductions: self.reductions,
            heap_bytes: usize::try_from(self.heap_bytes).unwrap_or(usize::MAX),
            gc: self.gc,
        }
    }
}

/// One process of a link update: its pid, the moves it has made (the route's version)
/// and its receive ends' (channel, moves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkProc {
    pub pid: u64,
    pub moves: u32,
    pub chans: Vec<(u64, u32)>,
}

/// What the destination measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestStats {
    pub pages_received: u64,
    pub page_faults: u64,
    /// Pages asked for ahead of faults in order (read-ahead).
    pub pages_read_ahead: u64,
    /// Fault latencies (µs from the fetch to the page), sorted (the first
    /// `MAX_FAULT_SAMPLES`).
    pub fault_latency_us: Vec<u64>,
    /// What the processes waited at each fault (µs from touching the page to running
    /// again), sorted (the first `MAX_FAULT_SAMPLES`).
    pub fault_wait_us: Vec<u64>,
    pub pages_pushed: u64,
    /// When it stopped needing the source, µs after it resumed.
    pub dependency_ended_after_us: Option<u64>,
    /// From `Commit` to the process running here.
    pub resume_wait_us: u64,
    /// From its resume to its late messages given to it: its system calls (and its end)
    /// waited for them that long at most.
    pub late_wait_us: u64,
    pub outcome: String,
    /// Functions of the hotness profile compiled here by the time it reported.
    pub jit_rebuilt: u32,
    /// From the resume until the last of them was compiled (0: all were ready when it
    /// resumed; `None`: not all were by the time it reported).
    pub jit_ready_after_resume_us: Option<u64>,
    /// How long it waited for those compilations before it reported (at most a second):
    /// not part of the move (the process ran meanwhile), so not of its total time.
    pub jit_wait_us: u64,
    /// Modules it loaded after its `Accept` went: for a lazy move, while the process was
    /// frozen at the source (which freezes it at `Accept`).
    pub modules_after_accept: u32,
}

/// What a migration did, as `:migrate` and `ctl migrate` report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigReport {
    pub pid: u64,
    /// A coprocess group's move: its members (`pid` first); empty for one process.
    pub members: Vec<u64>,
    pub from: String,
    pub to: String,
    pub mechanism: Mechanism,
    /// Why `auto` picked the mechanism (empty: it was named).
    pub auto: String,
    /// A pre-copy that stopped converging resumed the process with its last dirty set
    /// still at the source (post-copy for those pages; `absent_pages_at_resume`).
    pub fell_back: bool,
    /// How messages find the process after the move.
    pub forwarding: Forwarding,
    /// Its home node (where its relative file names resolve), and the location-dependent
    /// calls it has made away from it so far (each a round trip there).
    pub home: String,
    pub home_calls: u64,
    /// `committed`, or why it failed (the process then runs on at the source).
    pub outcome: String,
    pub ok: bool,
    /// Pages sent in each pre-copy round.
    pub rounds: Vec<u32>,
    pub stop_reason: String,
    pub throttle_level: u32,
    pub heap_pages: u32,
    pub redundant_pages: u32,
    pub zero_pages_skipped: u64,
    /// Frames of pages sent as lz4 blocks (`proto::compress`): their bytes before and
    /// after, and the frames tried that went as they were.
    pub lz4_raw_bytes: u64,
    pub lz4_sent_bytes: u64,
    pub lz4_refused_frames: u64,
    pub final_pages: u32,
    pub absent_pages_at_resume: u32,
    /// How long the process ran nowhere: from its freeze at the source (its last
    /// instruction there) to its resume at the destination, each on its node's clock, the
    /// destination's put on the source's by the `Commit`/`Committed` round trip (NTP's
    /// rule: the destination's clock read at `Commit`'s arrival is taken as the
    /// round trip's midpoint on the source's). Off by at most `freeze_error_us`.
    pub freeze_time_us: u64,
    /// The bound of `freeze_time_us`'s error: half the `Commit`/`Committed` round trip
    /// (0 when the destination's statistics did not come, and `freeze_time_us` is then
    /// the source's own upper bound: frozen until `Committed` came back).
    pub freeze_error_us: u64,
    /// Of the freeze: the destination's wait from `Commit` to the resume.
    pub resume_wait_us: u64,
    /// After the resume: how long the late messages (which the source sends once it has
    /// committed) took to come; the process computed meanwhile, and a system call it made
    /// waited for them.
    pub late_wait_us: u64,
    /// From the request to the destination's report, less the time the destination
    /// waited for the JIT to compile the hotness profile's functions again before it
    /// reported (the process was running by then: that is `time_to_compiled_us`).
    pub total_time_us: u64,
    pub bytes_sent: u64,
    pub bandwidth_bytes_per_ms: u64,
    /// Reductions the process ran while its pages were sent (it kept running).
    pub reductions_during_rounds: u64,
    pub page_faults: u64,
    /// Pages the destination asked for ahead of faults in order (read-ahead).
    pub pages_read_ahead: u64,
    /// From the destination's request for a page to the page there (each page asked
    /// for at a fault, the faulting one and its prefetch; not the read-ahead).
    pub fault_latency_p50_us: u64,
    pub fault_latency_p99_us: u64,
    pub fault_latency_max_us: u64,
    /// What the process waited at each fault: from touching the absent page to running
    /// again (its request's way to the migration, the round trip, the install and the
    /// wake-up).
    pub fault_wait_p50_us: u64,
    pub fault_wait_p99_us: u64,
    pub pages_pushed: u64,
    /// When the destination stopped depending on the source, µs after the start (it may
    /// come after `total_time_us`, which leaves the destination's JIT wait out).
    pub dependency_ended_us: u64,
    pub messages_held: u64,
    pub link_updates: u32,
    pub modules_sent: u32,
    /// Of those, how many the destination loaded after it accepted the move (see
    /// [`DestStats::modules_after_accept`]): a lazy move's are loaded before, as its
    /// `Accept` waits for them.
    pub modules_loaded_after_accept: u32,
    /// The hotness profile: functions of the process's modules compiled at the source.
    pub jit_functions_at_source: u32,
    /// Of those, compiled again at the destination by the time it reported.
    pub jit_functions_rebuilt: u32,
    /// From the resume until the last profiled function was compiled again (0: all were
    /// ready when it resumed).
    pub time_to_compiled_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// A file operation on the receiving node's files (a plain name: its file root).
    File(FileOp),
    /// The processes on the receiving node.
    Ps,
    /// Start module `main`'s top level there (with `needs` present first), its output
    /// going to `console`.
    SpawnMain { main: ModuleHash, needs: Vec<ModuleHash>, console: u64 },
    /// Migrate process `pid` (on the receiving node) to node `to`. `hops`: how many
    /// nodes have passed the request on so far (the first asker sends 1); a node that
    /// does not host the process passes it on only by a route of its own, never back to
    /// the node that asked, and only while `hops` is below a small bound.
    Migrate { pid: u64, to: String, how: How, hops: u8 },
    /// The receiving node's load and its `procs` busiest processes (`top`).
    Top { procs: u32 },
    /// The receiving node's policy and its last `decisions` decisions, after the change
    /// if one is asked for (`tern ctl policy`).
    Policy { change: Option<PolicyChange>, decisions: u32 },
    /// The receiving node's counters, migrations in flight and newest reports.
    Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    File(IoResult),
    Ps(Vec<PsRow>),
    Spawned(Result<u64, String>),
    Migrated(Result<Box<MigReport>, String>),
    Top(TopNode),
    Policy(Result<PolicyView, String>),
    Metrics(Box<MetricsView>),
}

/// A change of the policy on a running mesh (`tern ctl policy on|off|set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyChange {
    /// Back to the mode it was last on (the config's, or `balance`).
    On,
    Off,
    /// One setting, as `[policy]` in mesh.toml takes it.
    Set {
        key: String,
        value: String,
    },
}

/// A node and its busiest processes, as `top` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopNode {
    pub node: String,
    pub load: Load,
    /// Busiest first.
    pub procs: Vec<TopProc>,
    /// Its processes were measured over a whole window (false: measuring has just begun,
    /// with the policy off; ask again a window later).
    pub measured: bool,
}

/// A process as `top` shows it: rates over the policy's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopProc {
    pub pid: u64,
    pub status: String,
    /// Of a worker, per mille.
    pub cpu_pm: u32,
    pub reductions_per_s: u64,
    pub heap_bytes: u64,
    /// Bytes of pages written per second.
    pub dirty_bytes_s: u64,
    pub mailbox: u64,
    /// How long it has been on this node.
    pub resident_ms: u64,
    pub moves: u32,
    /// Why the policy and `drain` leave it where it is (`None`: they may move it).
    pub unmovable: Option<String>,
}

/// A node's policy as `tern ctl policy` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    pub node: String,
    pub conf: crate::proto::policy::PolicyConf,
    /// It takes new processes (false: drained).
    pub accepting: bool,
    /// Its last decisions, oldest first.
    pub decisions: Vec<DecisionRow>,
}

/// A decision of the policy, with node names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// How long ago, ms.
    pub ago_ms: u64,
    pub rule: String,
    /// The process moved and where to (`None`: it declined).
    pub moved: Option<(u64, String)>,
    pub why: String,
    /// The loads it saw: (node, load per worker, utilization ‰).
    pub loads: Vec<(String, f64, u32)>,
    /// The candidates it weighed (pid, score), best first.
    pub candidates: Vec<(u64, f64)>,
}

/// What `drain` did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DrainReport {
    pub node: String,
    /// (pid, the node it went to, the mechanism, freeze µs).
    pub moved: Vec<(u64, String, String, u64)>,
    /// Processes left where they are, and why (pinned, a REPL's shell, ...).
    pub stayed: Vec<(u64, String)>,
    /// Processes whose move failed, and why.
    pub failed: Vec<(u64, String)>,
}

/// A process as `ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsRow {
    pub pid: u64,
    pub node: String,
    pub status: String,
    pub reductions: u64,
    pub heap_pages: u64,
    pub mailbox: u64,
    /// The function it was started with (empty while it runs on a worker).
    pub function: String,
}

/// A node's load, as it reports it to its peers (`proto::policy::Meter::node_load`):
/// rates over the policy's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Load {
    /// Its worker threads.
    pub workers: u32,
    /// CPU time its workers spent running processes per second of wall time, per
    /// worker, in per mille.
    pub utilization_pm: u32,
    /// Processes runnable or running, on average over the window, times 100.
    pub runnable_x100: u32,
    /// Its CPU demand, times 100: over its processes, the fraction of a worker each
    /// would use if it had one to itself (what it used, over the share a runnable
    /// process gets here); once they wait for a worker, the workers over that share
    /// (`proto::policy::crowding`). What balance compares; 0 when processes are not
    /// measured (the policy off), and then the run queue stands for it.
    pub demand_x100: u32,
    /// Its demand per worker with one more process that wants a whole worker, times 100
    /// (0: not measured): what a node that would send it one expects.
    pub plus_one_x100: u32,
    pub processes: u64,
    /// Reductions per second over the window.
    pub reductions_per_s: u64,
    /// Migrations the node takes part in (as source or destination) that have not ended.
    pub migrations: u64,
    /// It takes new processes and migrations from the policy (`false`: drained).
    pub accepting: bool,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    TooLarge { len: usize, max: usize },
    Empty,
    WrongVersion(u8),
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLarge { len, max } => write!(f, "frame of {len} bytes is over the limit of {max}"),
            WireError::Empty => write!(f, "empty frame"),
            WireError::WrongVersion(v) => write!(f, "frame version {v}, this node speaks version {FRAME_VERSION}"),
            WireError::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A value as a versioned frame.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_extend(v, vec![FRAME_VERSION]).unwrap_or_default()
}

/// [`encode`] behind its length (u32, little-endian), as streams carry frames: one pass.
pub fn encode_framed<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = postcard::to_extend(v, vec![0, 0, 0, 0, FRAME_VERSION]).unwrap_or_default();
    let n = (out.len().saturating_sub(4) as u32).to_le_bytes();
    if out.len() >= 4 {
        out[..4].copy_from_slice(&n);
    }
    out
}

/// A versioned frame's value; `max` caps its length.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let (&v, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if v != FRAME_VERSION {
        return Err(WireError::WrongVersion(v));
    }
    let (value, extra) = postcard::take_from_bytes::<T>(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !extra.is_empty() {
        return Err(WireError::Malformed(format!("{} bytes after the end", extra.len())));
    }
    Ok(value)
}

/// The variant number of [`MigWire::Pages`] on the wire (postcard: a varint, one byte
/// for it).
fn pages_tag() -> u8 {
    static TAG: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| encode(&MigWire::Pages { mid: 0, member: 0, pages: Vec::new() })[1])
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds a [`MigWire::Pages`] frame (as [`encode_framed`] would) straight from a
/// heap's words: one copy of each page, into the frame, and no record per page.
pub struct PagesFrameWriter {
    out: Vec<u8>,
    left: usize,
}

impl PagesFrameWriter {
    /// A frame of `count` pages, into `buf` (cleared; its memory is reused).
    pub fn new(mut buf: Vec<u8>, mid: u64, member: u32, count: usize) -> Self {
        buf.clear();
        buf.extend_from_slice(&[0, 0, 0, 0, FRAME_VERSION, pages_tag()]);
        put_varint(&mut buf, mid);
        put_varint(&mut buf, u64::from(member));
        put_varint(&mut buf, count as u64);
        PagesFrameWriter { out: buf, left: count }
    }

    /// The next page: its number and its words (`None`: all zero).
    pub fn page(&mut self, index: u32, words: Option<&[u64]>) {
        self.left = self.left.saturating_sub(1);
        put_varint(&mut self.out, u64::from(index));
        match words {
            None => self.out.push(0),
            Some(w) => {
                self.out.push(1);
                put_varint(&mut self.out, (w.len() * 8) as u64);
                let at = self.out.len();
                self.out.resize(at + w.len() * 8, 0);
                for (c, x) in self.out[at..].chunks_exact_mut(8).zip(w) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    /// The frame, behind its length. Every page announced must have been given.
    pub fn finish(mut self) -> Vec<u8> {
        debug_assert_eq!(self.left, 0, "a pages frame announced more pages than it got");
        let n = (self.out.len() - 4) as u32;
        self.out[..4].copy_from_slice(&n.to_le_bytes());
        self.out
    }
}

/// A page of a [`MigWire::Pages`] frame, read in place.
#[derive(Debug, Deserialize)]
pub struct PageRecRef<'a> {
    pub index: u32,
    #[serde(borrow)]
    pub data: Option<&'a [u8]>,
}

/// A [`MigWire::Pages`] frame read in place: its pages' bytes stay in the frame.
#[derive(Debug, Deserialize)]
pub struct PagesRef<'a> {
    pub mid: u64,
    pub member: u32,
    #[serde(borrow)]
    pub pages: Vec<PageRecRef<'a>>,
}

/// Whether a versioned frame (as [`decode`] takes it) holds [`MigWire::Pages`].
pub fn is_pages_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == FRAME_VERSION && bytes[1] == pages_tag()
}

/// A [`MigWire::Pages`] frame (see [`is_pages_frame`]) read in place, checked as
/// [`decode`] checks frames.
pub fn decode_pages(bytes: &[u8], max: usize) -> Result<PagesRef<'_>, WireError> {
    read_in_place(bytes, max, is_pages_frame(bytes), "not a pages frame")
}

/// A [`MigWire`] variant's fields read in place from a versioned frame (`is`: whether
/// the frame holds that variant), checked as [`decode`] checks frames.
fn read_in_place<'a, T: Deserialize<'a>>(bytes: &'a [u8], max: usize, is: bool, not: &str) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    if !is {
        return Err(WireError::Malformed(not.into()));
    }
    let (value, extra) = postcard::take_from_bytes::<T>(&bytes[2..]).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !extra.is_empty() {
        return Err(WireError::Malformed(format!("{} bytes after the end", extra.len())));
    }
    Ok(value)
}

/// The variant number of [`MigWire::Lz4`] on the wire.
fn lz4_tag() -> u8 {
    static TAG: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| encode(&MigWire::Lz4 { raw_len: 0, data: serde_bytes::ByteBuf::new() })[1])
}

/// Whether a versioned frame holds [`MigWire::Lz4`].
pub fn is_lz4_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == FRAME_VERSION && bytes[1] == lz4_tag()
}

/// `frame` (a versioned frame without its length) as a [`MigWire::Lz4`] frame behind
/// its length, into `buf` (cleared; its memory is reused). The block is written where it
/// goes: its length's varint is written for the most it may take, then the block is
/// moved up if it took less (by its own size: small when it compressed well).
pub fn lz4_frame(mut buf: Vec<u8>, frame: &[u8]) -> Vec<u8> {
    // A varint's length: 7 bits a byte.
    let varint_len = |v: usize| (usize::BITS - v.leading_zeros()).max(1).div_ceil(7) as usize;
    buf.clear();
    buf.extend_from_slice(&[0, 0, 0, 0, FRAME_VERSION, lz4_tag()]);
    put_varint(&mut buf, frame.len() as u64);
    let room = lz4_flex::block::get_maximum_output_size(frame.len());
    let (at, gap) = (buf.len(), varint_len(room));
    buf.resize(at + gap + room, 0);
    // (Cannot fail: the room is the most the block may take.)
    let n = lz4_flex::block::compress_into(frame, &mut buf[at + gap..]).unwrap_or(0);
    // The block's length where the room's was, then the block right after it.
    let len = varint_len(n);
    let mut v = n as u64;
    for b in &mut buf[at..at + len] {
        *b = v as u8 | 0x80;
        v >>= 7;
    }
    buf[at + len - 1] &= 0x7f;
    buf.copy_within(at + gap..at + gap + n, at + len);
    buf.truncate(at + len + n);
    let total = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&total.to_le_bytes());
    buf
}

#[derive(Deserialize)]
struct Lz4Ref<'a> {
    raw_len: u32,
    #[serde(borrow)]
    data: &'a [u8],
}

/// A [`MigWire::Lz4`] frame's contents, decompressed into `out` (its memory reused):
/// the length it claims is checked against `max` before anything is allocated, the block
/// must give exactly that many bytes, and what it holds must not be another such frame.
pub fn unlz4(bytes: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let f: Lz4Ref = read_in_place(bytes, max, is_lz4_frame(bytes), "not an lz4 frame")?;
    let n = f.raw_len as usize;
    if n > max {
        return Err(WireError::TooLarge { len: n, max });
    }
    out.clear();
    out.resize(n, 0);
    match lz4_flex::block::decompress_into(f.data, out) {
        Ok(got) if got == n => {}
        Ok(got) => return Err(WireError::Malformed(format!("an lz4 block of {got} bytes where {n} were announced"))),
        Err(e) => return Err(WireError::Malformed(format!("lz4: {e}"))),
    }
    if is_lz4_frame(out) {
        return Err(WireError::Malformed("an lz4 frame inside another".into()));
    }
    Ok(())
}

/// An operator's request (`tern ctl`, `tern repl`), one per bidirectional stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// The nodes of the mesh as this node sees them.
    Nodes,
    /// Processes on one node, or on every node that is up.
    Ps {
        node: Option<String>,
    },
    /// Load these modules and start `main`'s top level on `on` (this node if `None`).
    /// With `wait`, the answer comes when it ends (it must run on this node).
    Spawn {
        modules: Vec<Vec<u8>>,
        main: ModuleHash,
        on: Option<String>,
        wait: bool,
    },
    Kill {
        pid: u64,
    },
    /// Opens this connection's console: the node sends every output line of processes
    /// started from it on the stream, as [`CtlReply::Output`].
    Console,
    /// Migrates a process to node `to` (`how`: its mechanisms, or the mesh's defaults).
    /// Answered by progress, then the report.
    Migrate {
        pid: u64,
        to: String,
        how: How,
    },
    /// A line typed at this connection's console, for the processes started from it
    /// that read their console (`None`: the input ended). Answered `Done`.
    Input {
        line: Option<String>,
    },
    /// Load these modules and start `main` (a REPL's shell loop) as this connection's
    /// shell process, on this node; answered `Spawned`. It ends with the connection.
    Shell {
        modules: Vec<Vec<u8>>,
        main: ModuleHash,
    },
    /// Load these modules and have shell process `shell` (of this connection) run
    /// `main`'s top level; answered `LineEnded` when it has.
    Eval {
        shell: u64,
        modules: Vec<Vec<u8>>,
        main: ModuleHash,
    },
    /// Ends shell process `shell` (of this connection) and the line it runs (Ctrl-C at
    /// a REPL); answered `Done`.
    Interrupt {
        shell: u64,
    },
    /// Every node's load and its `procs` busiest processes; answered `Top`.
    Top {
        procs: u32,
    },
    /// Every node's policy (after the change, made on every node that is up); answered
    /// `Policy`.
    Policy {
        change: Option<PolicyChange>,
        decisions: u32,
    },
    /// `on`: move every movable process off this node and take no new ones (answered by
    /// `Draining` as each move ends, then `Drained`); `off`: take them again (`Done`).
    Drain {
        on: bool,
    },
    /// Every node's counters, migrations in flight and newest reports (`/metrics`, the
    /// dashboard); answered `Metrics`.
    Metrics,
    /// An operator's word on a process kept frozen on this node because its move is in
    /// doubt for good (its destination restarted before it answered `Commit`): `resume`
    /// runs it here again, else it ends. Answered `Resolved` or `Error`.
    Resolve {
        pid: u64,
        resume: bool,
    },
}

/// How a line a shell process ran ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LineOutcome {
    Done,
    /// It raised an error it did not catch (rendered, with its backtrace).
    Failed(String),
    /// The shell process itself ended, for this reason.
    ShellEnded(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlReply {
    Nodes(Vec<NodeRow>),
    Ps(Vec<PsRow>),
    Spawned {
        pid: u64,
        node: String,
    },
    /// A process started with `wait` ended (`failed`: with an uncaught error); `lines`
    /// console lines were sent before this answer.
    Ended {
        pid: u64,
        reason: String,
        failed: bool,
        lines: u64,
    },
    Done,
    Output {
        pid: u64,
        text: String,
        failed: bool,
    },
    Error(String),
    /// A migration in progress: pages sent so far of the heap's pages, and its phase.
    Progress {
        sent: u64,
        total: u64,
        phase: String,
    },
    Migrated(Box<MigReport>),
    /// A line sent with `Eval` ended; `lines` console lines were sent before this answer.
    LineEnded {
        outcome: LineOutcome,
        lines: u64,
    },
    Top(Vec<TopNode>),
    /// The policy of every node that answered; `errors`: the nodes that did not, or
    /// refused the change.
    Policy {
        views: Vec<PolicyView>,
        errors: Vec<String>,
    },
    /// A drain in progress: `done` of `total` moves ended; the last one's line.
    Draining {
        done: u64,
        total: u64,
        line: String,
    },
    Drained(DrainReport),
    /// The views of every node that answered; `errors`: the nodes that did not.
    Metrics {
        views: Vec<MetricsView>,
        errors: Vec<String>,
    },
    /// What [`CtlRequest::Resolve`] did, in words.
    Resolved(String),
}

/// A node as `nodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub addr: String,
    /// `up` or `down`.
    pub status: String,
    pub processes: u64,
    pub load: u64,
    /// Migrations it takes part in that have not ended (a lazy one's source until its
    /// destination has every page or gave them up).
    pub migrations: u64,
}

/// A node's counters for operators' tools (`/metrics`, the dashboard): totals since
/// it started, and what is in flight now.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsView {
    pub node: String,
    pub uptime_s: u64,
    /// It takes new processes (not drained or stopping).
    pub accepting: bool,
    pub workers: u32,
    pub processes: u64,
    /// Processes runnable or running, on average over the policy's window, times 100.
    pub run_queue_x100: u32,
    /// Of its workers' time, per mille.
    pub utilization_pm: u32,
    pub reductions: u64,
    /// Frames to and from the other nodes (messages, spawns, links, migration control,
    /// answers), and their bytes: the sums of `peers`.
    pub messages_out: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub peers: Vec<PeerTraffic>,
    /// Migrations from this node, by mechanism.
    pub migrations: Vec<MechCounts>,
    pub migration_bytes_sent: u64,
    /// Committed migrations from here: freeze to resume.
    pub freeze_us: HistView,
    /// Page faults of processes migrated here lazily: each fault's wait.
    pub fault_us: HistView,
    /// Migrations from here in flight.
    pub in_flight: Vec<LiveMig>,
    /// The newest reports of migrations from here, newest first.
    pub reports: Vec<MigReport>,
}

/// Frames exchanged with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerTraffic {
    pub peer: String,
    pub up: bool,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
}

/// Migrations of one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MechCounts {
    pub mechanism: String,
    pub started: u64,
    pub committed: u64,
    pub aborted: u64,
}

/// A histogram: `counts[i]` observations at most `bounds_us[i]` (not cumulative), the
/// last one above every bound.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistView {
    pub bounds_us: Vec<u64>,
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

/// A migration in flight, as its source sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LiveMig {
    pub mid: u64,
    pub pid: u64,
    pub to: String,
    pub mechanism: String,
    pub phase: String,
    pub sent_pages: u64,
    pub total_pages: u64,
    /// Pages sent in each pre-copy round so far.
    pub rounds: Vec<u32>,
    /// The dirty set at the last collection, pages.
    pub dirty_pages: u64,
    /// Pages sent at the destination's request (its faults and their read-ahead).
    pub pages_served: u64,
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pages_frame_written_from_words_is_the_encoded_message_and_reads_back_in_place() {
        // Pages of 512 words (4 KiB), large numbers so every varint takes several bytes.
        let words: Vec<Vec<u64>> = (0..3u64).map(|p| (0..512).map(|i| (p << 40) | (i * 0x0101_0101)).collect()).collect();
        let page_bytes = |w: &[u64]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (mid, member) = (u64::MAX - 5, 70_000);
        let mut w = PagesFrameWriter::new(vec![9; 17], mid, member, 4);
        w.page(3, Some(&words[0]));
        w.page(200, None);
        w.page(1 << 20, Some(&words[1]));
        w.page(u32::MAX, Some(&words[2]));
        let frame = w.finish();
        let owned = MigWire::Pages {
            mid,
            member,
            pages: vec![
                PageRec { index: 3, data: Some(page_bytes(&words[0])) },
                PageRec { index: 200, data: None },
                PageRec { index: 1 << 20, data: Some(page_bytes(&words[1])) },
                PageRec { index: u32::MAX, data: Some(page_bytes(&words[2])) },
            ],
        };
        assert_eq!(frame, encode_framed(&owned));
        let body = &frame[4..];
        assert!(is_pages_frame(body));
        assert!(!is_pages_frame(&encode(&MigWire::Image { mid, part: serde_bytes::ByteBuf::from(vec![1]), last: true })));
        let r = decode_pages(body, 1 << 20).expect("reads back");
        assert_eq!((r.mid, r.member, r.pages.len()), (mid, member, 4));
        let got: Vec<(u32, Option<Vec<u8>>)> = r.pages.iter().map(|p| (p.index, p.data.map(<[u8]>::to_vec))).collect();
        let MigWire::Pages { pages, .. } = owned else { unreachable!() };
        assert_eq!(got, pages.into_iter().map(|p| (p.index, p.data)).collect::<Vec<_>>());
        // Cut short, one byte too many, over the limit: errors, never a panic.
        for n in 0..body.len() {
            assert!(decode_pages(&body[..n], 1 << 20).is_err(), "cut at {n}");
        }
        let mut extra = body.to_vec();
        extra.push(0);
        assert!(decode_pages(&extra, 1 << 20).is_err());
        assert!(matches!(decode_pages(body, 100), Err(WireError::TooLarge { .. })));
        // A page claiming more bytes than the frame holds.
        let mut w = PagesFrameWriter::new(Vec::new(), 1, 0, 1);
        w.page(0, Some(&words[0]));
        let mut lying = w.finish()[4..].to_vec();
        let at = lying.len() - 4096 - 2;
        lying[at] = 0xff;
        lying[at + 1] = 0x7f;
        assert!(decode_pages(&lying, 1 << 20).is_err());
    }

    #[test]
    fn a_compressed_frame_comes_back_whole_and_bad_ones_are_errors() {
        // A frame of pages of repeated words (as a heap of one value is), and one of
        // bytes that do not repeat.
        let words: Vec<u64> = (0..512u64).map(|i| if i % 2 == 0 { 3 } else { 1 }).collect();
        let mut w = PagesFrameWriter::new(Vec::new(), 9, 0, 64);
        for p in 0..64 {
            w.page(p, Some(&words));
        }
        let frame = w.finish();
        let c = lz4_frame(vec![7; 3], &frame[4..]);
        assert_eq!(u32::from_le_bytes(c[..4].try_into().unwrap()) as usize, c.len() - 4);
        assert!(is_lz4_frame(&c[4..]) && !is_pages_frame(&c[4..]));
        assert!(c.len() * 50 < frame.len(), "{} bytes from {}", c.len(), frame.len());
        // It is the encoded message.
        let owned = decode::<MigWire>(&c[4..], 1 << 20).expect("decodes as a message");
        assert!(matches!(&owned, MigWire::Lz4 { raw_len, .. } if *raw_len as usize == frame.len() - 4));
        let mut out = vec![1; 5];
        unlz4(&c[4..], 1 << 20, &mut out).expect("decompresses");
        assert_eq!(out, frame[4..]);
        let mut x = 1u64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let c2 = lz4_frame(Vec::new(), &noise);
        unlz4(&c2[4..], 1 << 20, &mut out).expect("decompresses");
        assert_eq!(out, noise);
        // Over the limit, as claimed or as sent: refused before anything is made.
        assert!(matches!(unlz4(&c[4..], frame.len() - 5, &mut out), Err(WireError::TooLarge { .. })));
        assert!(matches!(unlz4(&c[4..], 10, &mut out), Err(WireError::TooLarge { .. })));
        let huge = encode(&MigWire::Lz4 { raw_len: u32::MAX, data: serde_bytes::ByteBuf::from(vec![0]) });
        assert!(matches!(unlz4(&huge, 1 << 20, &mut out), Err(WireError::TooLarge { .. })));
        // A length that is not what the block gives, a block cut short or damaged, a
        // frame inside another, bytes after the end: errors, never a panic.
        let MigWire::Lz4 { raw_len, data } = owned else { unreachable!() };
        for bad_len in [raw_len - 1, raw_len + 1] {
            let b = encode(&MigWire::Lz4 { raw_len: bad_len, data: data.clone() });
            assert!(unlz4(&b, 1 << 20, &mut out).is_err(), "raw_len {bad_len}");
        }
        let body = &c[4..];
        for n in 0..body.len() {
            assert!(unlz4(&body[..n], 1 << 20, &mut out).is_err(), "cut at {n}");
        }
        for i in 2..body.len() {
            let mut d = body.to_vec();
            d[i] ^= 0x55;
            // Damaged: an error, or (where the damage is in a literal) other bytes.
            let _ = unlz4(&d, 1 << 20, &mut out);
        }
        let nested = lz4_frame(Vec::new(), body);
        assert!(unlz4(&nested[4..], 1 << 20, &mut out).is_err());
        let mut extra = body.to_vec();
        extra.push(0);
        assert!(unlz4(&extra, 1 << 20, &mut out).is_err());
        assert!(unlz4(&frame[4..], 1 << 20, &mut out).is_err(), "not an lz4 frame");
    }

    #[test]
    fn frames_round_trip_and_bad_bytes_are_errors() {
        let f = Frame::WantModules(vec![ModuleHash([7; 32])]);
        let b = encode(&f);
        assert_eq!(decode::<Frame>(&b, 1 << 20), Ok(f));
        assert_eq!(decode::<Frame>(&b, 4), Err(WireError::TooLarge { len: b.len(), max: 4 }));
        let mut w = b.clone();
        w[0] = FRAME_VERSION + 1;
        assert_eq!(decode::<Frame>(&w, 1 << 20), Err(WireError::WrongVersion(FRAME_VERSION + 1)));
        for n in 0..b.len() {
            assert!(decode::<Frame>(&b[..n], 1 << 20).is_err());
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode::<Frame>(&extra, 1 << 20).is_err());
        let mut seed = 1u64;
        for _ in 0..2000 {
            let len = (tern_vm::value::mix64(seed) % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    seed = tern_vm::value::mix64(seed ^ i as u64);
                    seed as u8
                })
                .collect();
            let mut b = vec![FRAME_VERSION];
            b.extend(bytes);
            let _ = decode::<Frame>(&b, 1 << 20);
        }
    }

    #[test]
    fn an_exit_note_keeps_the_reason_and_the_trace() {
        use tern_vm::interp::{RuntimeError, TraceEntry};
        use tern_vm::node::{ExitReason, ProcessExit};
        let entry = |line| TraceEntry { function: "f".into(), file: "a.tern".into(), line };
        let trace: Vec<TraceEntry> = (0..100).map(entry).collect();
        for reason in [
            ExitReason::Normal,
            ExitReason::Exit("done".into()),
            ExitReason::Killed("by 1.2".into()),
            ExitReason::Failed(RuntimeError { message: "boom".into(), trace }),
        ] {
            let e = ProcessExit { pid: 7, reason, reductions: 12, heap_bytes: 4096, gc: Default::default() };
            let f = Frame::Exited(ExitNote::of(&e));
            let Ok(Frame::Exited(back)) = decode::<Frame>(&encode(&f), 1 << 20) else { panic!("no round trip") };
            let back = back.exit();
            match (&e.reason, &back.reason) {
                (ExitReason::Failed(a), ExitReason::Failed(b)) => {
                    assert_eq!(a.message, b.message);
                    assert_eq!(b.trace.len(), ExitNote::MAX_TRACE);
                    assert_eq!(a.trace[..ExitNote::MAX_TRACE], b.trace[..]);
                }
                (a, b) => assert_eq!(a, b),
            }
            assert_eq!((back.pid, back.reductions, back.heap_bytes), (7, 12, 4096));
        }
    }
}
