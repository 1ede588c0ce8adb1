//! The load policy, sans-IO: which process to move where, and when — never how (that
//! is `migrate.rs`). Two parts, both plain state machines driven with time as an
//! argument, by the QUIC host (`node/policy.rs`) and by the simulator (`sim/policy.rs`)
//! alike:
//!
//! - [`Meter`] turns the VM's cumulative counters ([`NodeSample`], [`ProcSample`]),
//!   sampled every `gossip_ms`, into rates over a sliding window of `window_ms`: a
//!   node's utilization (CPU time its workers spent running processes per second, per
//!   worker) and run-queue length, and per process its CPU share, reductions, write
//!   rate, mailbox and whom it talks with.
//! - [`Policy`] looks at this node's load and its peers' (as gossiped: [`Load`], with
//!   its age) every `interval_ms`, and as soon as one of its moves has arrived, and
//!   says which of this node's processes to move, and where ([`Move`]), with every
//!   decision explained ([`Decision`]).
//!
//! Each node decides only about its own processes (a busy node sheds work: the
//! sender-initiated policy of the seed's systems), so no two nodes ever decide about the
//! same process.
//!
//! ## Balance
//! A node's *load* is its run-queue length per worker (processes runnable or running,
//! averaged over the window, divided by its workers). A node sheds work only when it
//! has been busy — utilization at or above the high watermark (over the window, or
//! over the last sample: a node that just filled up is busy from then, not most of a
//! window later) and more runnable processes than workers — for `hysteresis_ms`. It
//! moves one process to the least loaded peer only if that leaves the peer no more
//! loaded than itself: `load(src) - 1/workers(src) >= load(dst) + 1/workers(dst)`, and
//! only once that has held for `hysteresis_ms` too (timed while the node's busy spell
//! is, and while its processes are too new to move: the waits overlap, so a node that
//! fills up beside one with room acts one wait later, not two or three). So a balanced mesh makes no move, two nodes at equal
//! load never trade processes, and a move can never make the mesh less balanced than it
//! was. Loads it expects to change (moves in flight, and ended moves the windowed loads
//! do not show yet) are counted as changed until they are. The destination checks the
//! move against its own load before it takes the process (`Admit`), so two nodes
//! moving work to one idle node at once do not both send it; and a process never goes
//! back to the node it came from within twice the residence time.
//!
//! Which process: one that may move (not pinned, not a REPL's shell, not in a coprocess
//! group, no page still on another node; moved here at least `residence_ms` ago, or
//! spawned here at least `hysteresis_ms` ago: a process is not moved again within the
//! residence time, and one that never moved waits as long as a busy node does),
//! that uses at least `min_cpu` of a worker, with the best ratio of the CPU it would
//! relieve to what its move costs (its heap and write rate at the link's speed),
//! weighted towards processes that have already run long (the seed: a process that has
//! lived long tends to live long) and, with the affinity policy on, towards ones that
//! talk to the destination rather than to processes here.
//!
//! ## Affinity
//! A process that exchanges most of its message bytes with processes on one other node
//! (at least `affinity_bytes_s`, and more than twice what it exchanges here) moves
//! there if that node has room: the move would not make it the busier of the two (and,
//! below the high watermark, not busier than one process per worker either). Above the
//! watermark that is all it asks, for partners that talk as fast as they can keep busy
//! whatever node they are on. Of two partners split across two nodes
//! only one moves: the one the pair's draw names ([`mover`], the same on either node,
//! and either end as often, so pairs split over two nodes gather on both), or the other
//! once that one has had `residence_ms` twice over and not come (it may not be able
//! to: pinned, say).

use crate::proto::mechanism::Admit;
use crate::proto::wire::Load;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{self, Display};
use std::str::FromStr;
use tern_vm::node::{NodeSample, ProcSample};

pub type NodeId = u16;
pub type Pid = u64;

/// What the policy does (`policy.mode` in mesh.toml, `tern ctl policy set mode M`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing moves unless asked to.
    #[default]
    Off,
    /// Busy nodes shed work to idle ones.
    Balance,
    /// Processes move to the node they talk to.
    Affinity,
    /// Both.
    Both,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Off, Mode::Balance, Mode::Affinity, Mode::Both];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Balance => "balance",
            Mode::Affinity => "affinity",
            Mode::Both => "both",
        }
    }

    pub fn balance(self) -> bool {
        matches!(self, Mode::Balance | Mode::Both)
    }

    pub fn affinity(self) -> bool {
        matches!(self, Mode::Affinity | Mode::Both)
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown policy mode {s:?} (expected {})", Mode::ALL.map(Mode::name).join(", ")))
    }
}

impl Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy's settings (`[policy]` in mesh.toml; `net/MESH.md` says what each does).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct PolicyConf {
    pub mode: Mode,
    /// Utilization (0..1) at or above which a node is busy.
    pub high: f64,
    /// Utilization below which a node is idle (preferred as a destination).
    pub low: f64,
    /// How long a node stays busy before it sheds work.
    pub hysteresis_ms: u64,
    /// How long a process that moved stays on its new node before the policy moves it
    /// again (one spawned there waits `hysteresis_ms`).
    pub residence_ms: u64,
    /// Migrations a node starts on its own at most at a time.
    pub max_in_flight: u32,
    /// Migrations in the whole mesh (as the loads report them) above which no node
    /// starts another.
    pub max_in_flight_mesh: u32,
    /// The page traffic of every migration from this node while its process runs,
    /// MiB/s (0: no cap; see net/MESH.md).
    pub bandwidth_mib_s: u64,
    /// How often the policy looks.
    pub interval_ms: u64,
    /// How often a node samples its load and tells its peers (when it changed).
    pub gossip_ms: u64,
    /// The sliding window rates are measured over.
    pub window_ms: u64,
    /// A process using less of a worker than this is not moved to balance load.
    pub min_cpu: f64,
    /// Message bytes per second with another node above which affinity moves a process.
    pub affinity_bytes_s: u64,
}

impl Default for PolicyConf {
    fn default() -> Self {
        PolicyConf {
            mode: Mode::Off,
            high: 0.8,
            low: 0.3,
            hysteresis_ms: 1000,
            residence_ms: 2000,
            max_in_flight: 2,
            max_in_flight_mesh: 8,
            bandwidth_mib_s: 0,
            interval_ms: 250,
            gossip_ms: 250,
            window_ms: 1000,
            min_cpu: 0.2,
            affinity_bytes_s: 4096,
        }
    }
}

impl PolicyConf {
    /// The names `tern ctl policy set` takes.
    pub const KEYS: [&'static str; 13] = [
        "mode",
        "high",
        "low",
        "hysteresis_ms",
        "residence_ms",
        "max_in_flight",
        "max_in_flight_mesh",
        "bandwidth_mib_s",
        "interval_ms",
        "gossip_ms",
        "window_ms",
        "min_cpu",
        "affinity_bytes_s",
    ];

    /// Sets one key from text (`tern ctl policy set KEY VALUE`), checked as mesh.toml is.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut c = *self;
        let int = |v: &str| v.parse::<u64>().map_err(|_| format!("policy.{key}: {v:?} is not a whole number"));
        let frac = |v: &str| v.parse::<f64>().map_err(|_| format!("policy.{key}: {v:?} is not a number"));
        match key {
            "mode" => c.mode = value.parse().map_err(|e| format!("policy.mode: {e}"))?,
            "high" => c.high = frac(value)?,
            "low" => c.low = frac(value)?,
            "hysteresis_ms" => c.hysteresis_ms = int(value)?,
            "residence_ms" => c.residence_ms = int(value)?,
            "max_in_flight" => c.max_in_flight = int(value)?.min(u64::from(u32::MAX)) as u32,
            "max_in_flight_mesh" => c.max_in_flight_mesh = int(value)?.min(u64::from(u32::MAX)) as u32,
            "bandwidth_mib_s" => c.bandwidth_mib_s = int(value)?,
            "interval_ms" => c.interval_ms = int(value)?,
            "gossip_ms" => c.gossip_ms = int(value)?,
            "window_ms" => c.window_ms = int(value)?,
            "min_cpu" => c.min_cpu = frac(value)?,
            "affinity_bytes_s" => c.affinity_bytes_s = int(value)?,
            _ => return Err(format!("unknown policy key {key:?} (expected {})", Self::KEYS.join(", "))),
        }
        c.check()?;
        *self = c;
        Ok(())
    }

    /// Whether the settings make sense together: `Err("policy.KEY: why")`.
    pub fn check(&self) -> Result<(), String> {
        let frac = |k: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("policy.{k}: {v} is not a fraction from 0 to 1"))
            }
        };
        frac("high", self.high)?;
        frac("low", self.low)?;
        frac("min_cpu", self.min_cpu)?;
        if self.low > self.high {
            return Err(format!("policy.low: {} is above policy.high ({})", self.low, self.high));
        }
        // Times are added to clocks and turned into µs: a day at most keeps all of that
        // far from overflowing.
        for (k, v, least) in [
            ("interval_ms", self.interval_ms, 1),
            ("gossip_ms", self.gossip_ms, 1),
            ("window_ms", self.window_ms, 1),
            ("hysteresis_ms", self.hysteresis_ms, 0),
            ("residence_ms", self.residence_ms, 0),
        ] {
            if v < least {
                return Err(format!("policy.{k}: must be at least {least}"));
            }
            if v > MAX_POLICY_MS {
                return Err(format!("policy.{k}: {v} is more than {MAX_POLICY_MS} (a day)"));
            }
        }
        if self.window_ms < self.gossip_ms {
            return Err(format!(
                "policy.window_ms: {} is shorter than policy.gossip_ms ({}): a window holds at least one sample",
                self.window_ms, self.gossip_ms
            ));
        }
        if self.max_in_flight == 0 {
            return Err("policy.max_in_flight: must be at least 1".into());
        }
        if self.bandwidth_mib_s > 1 << 30 {
            return Err(format!("policy.bandwidth_mib_s: {} is more than 1073741824 (1 PiB/s; 0 means no cap)", self.bandwidth_mib_s));
        }
        Ok(())
    }
}

/// The longest of the policy's times, ms (a day).
const MAX_POLICY_MS: u64 = 86_400_000;

/// How much less crowded than the source a destination without room for a process must
/// be with it, as a fraction of the source's load (for the noise of the measurements).
const BALANCE_MARGIN: f64 = 0.1;

/// The demand a process of demand `d` counts at on a node whose load with it is `after`:
/// on a node it crowds (`after` over one per worker) it gets less of a worker than it
/// wants and is runnable all the time, like one that wants a whole worker.
fn charged(d: f64, after: f64) -> f64 {
    if after > 1.0 + 1e-9 {
        d.max(1.0)
    } else {
        d
    }
}

/// How much a move of a process of demand `d` from `me` to `dst` leaves the
/// destination less crowded than the source is now (see [`Policy::balance`]; below 0:
/// the move does not balance).
fn balance_gain(me: &NodeView, dst: &NodeView, d: f64) -> f64 {
    let after = dst.with_one_more(d);
    let margin = if after <= 1.0 + 1e-9 { 0.0 } else { BALANCE_MARGIN };
    me.load() * (1.0 - margin) - after
}

/// What balance compares, in processes (times the workers: per worker it is the load):
/// the CPU demand of a node's processes while it has room for them all; once they wait
/// for a worker (crowded), the workers over the share of a worker a runnable process
/// gets — the processes competing per worker, counted as wanting a whole one each. (A
/// process that gets less of a worker than it wants is runnable all the time and looks
/// like one that wants it all, so on a crowded node the sum of demands jumps whenever
/// some process crosses that line; the share changes a little with each process moved,
/// and moving one from the more crowded node to the less crowded raises the least
/// share in the mesh, which no later move of the same rule undoes.)
fn crowding(workers: f64, procs: &[ProcLoad]) -> f64 {
    let demand: f64 = procs.iter().map(|p| p.demand).sum();
    let cpu: f64 = procs.iter().map(|p| p.cpu).sum();
    let wait: f64 = procs.iter().map(|p| p.wait).sum();
    if demand < workers || cpu <= 0.0 {
        return demand;
    }
    let share = cpu / (cpu + wait);
    workers / share
}

/// [`crowding`] with one more process that wants a whole worker, from the demands
/// ([`fluid_share`]).
fn crowding_plus_one(workers: f64, procs: &[ProcLoad]) -> f64 {
    let wants = procs.iter().map(|p| p.demand).chain([1.0]);
    let total: f64 = wants.clone().sum();
    if total <= workers {
        return total;
    }
    workers / fluid_share(wants, workers).max(1e-3)
}

/// The fraction of the time a process that wants `want` of a worker is runnable when a
/// runnable process gets `s` of one (see [`fluid_share`]).
pub fn runnable_fraction(want: f64, s: f64) -> f64 {
    let want = want.clamp(0.0, 1.0);
    if want >= 1.0 {
        return 1.0;
    }
    let run = want / s;
    run / (run + 1.0 - want)
}

/// The share of a worker each runnable process gets on a node with `workers` workers
/// whose processes want `wants` of a worker each (their CPU demand): a process that
/// wants `w` alternates work with waits for something else (a message, a timer) that
/// take `1 - w` of its time alone; with a share `s` its work takes `1/s` as long, so it
/// is runnable `(w/s) / (w/s + 1 - w)` of the time; the runnable processes share the
/// workers, at most one each. `s` is where the CPU they use meets the workers.
pub fn fluid_share(wants: impl Iterator<Item = f64> + Clone, workers: f64) -> f64 {
    let used = |s: f64| -> f64 { wants.clone().map(|w| s * runnable_fraction(w, s)).sum() };
    if used(1.0) <= workers {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if used(mid) > workers {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo.max(1e-6)
}

/// One process's load, as rates over the window ([`Meter::procs`]).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ProcLoad {
    pub pid: Pid,
    pub status: String,
    /// Fraction of one worker's time it ran.
    pub cpu: f64,
    /// Its CPU demand: the fraction of a worker it would use with one to itself (what it
    /// ran, over the time it was not waiting in a run queue).
    pub demand: f64,
    /// Fraction of the window it spent waiting in a run queue.
    pub wait: f64,
    pub reductions_per_s: u64,
    /// Reductions over its whole life.
    pub reductions: u64,
    pub heap_bytes: u64,
    /// Bytes of pages it wrote per second (its write rate).
    pub dirty_bytes_s: u64,
    pub mailbox: u64,
    pub mailbox_bytes: u64,
    /// How long it has been on this node, ms.
    pub resident_ms: u64,
    pub moves: u32,
    /// The node it came from (`None`: spawned here).
    pub came_from: Option<NodeId>,
    pub pinned: bool,
    pub lazy: bool,
    pub shell: bool,
    pub group: u64,
    /// Message bytes per second with each node (this one included), busiest first.
    pub talk: Vec<(NodeId, u64)>,
    /// Its busiest senders: (pid, node, bytes per second).
    pub partners: Vec<(Pid, NodeId, u64)>,
}

impl ProcLoad {
    /// For a look between samples: what may have changed since the sample about
    /// whether it may move (frozen by another move, pinned, its pages, its group), as
    /// `s`, taken now, says. Its loads stay the sample's.
    pub fn refresh(&mut self, s: &ProcSample) {
        (self.pinned, self.lazy, self.shell, self.group) = (s.pinned, s.lazy, s.shell, s.group);
        s.status.clone_into(&mut self.status);
    }

    /// Why the policy may not move it, if it may not.
    pub fn unmovable(&self) -> Option<&'static str> {
        if self.group != 0 {
            return Some("in a coprocess group");
        }
        unmovable(self.shell, self.pinned, self.lazy, &self.status)
    }

    fn talk_with(&self, n: NodeId) -> u64 {
        self.talk.iter().find(|t| t.0 == n).map_or(0, |t| t.1)
    }
}

/// Which of two partners split across two nodes moves to the other (affinity): the same
/// answer on both nodes, whichever asks, and each end as often over many pairs (a rule
/// such as "the lower pid" would always empty the node with the lowest number).
pub fn mover(p: Pid, q: Pid) -> Pid {
    let (lo, hi) = if p < q { (p, q) } else { (q, p) };
    // A 64-bit mix (splitmix64's finaliser) of the pair; its low bit draws.
    let mut z = lo ^ hi.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z & 1 == 0 {
        lo
    } else {
        hi
    }
}

/// Why a process may not be moved by the policy or a drain, if it may not (groups
/// aside: the policy leaves them, a drain moves each group whole).
pub fn unmovable(shell: bool, pinned: bool, lazy: bool, status: &str) -> Option<&'static str> {
    if shell {
        Some("a REPL's shell")
    } else if pinned {
        Some("pinned")
    } else if lazy {
        Some("pages still on the node it came from")
    } else if status == "frozen" {
        Some("frozen (moving)")
    } else {
        None
    }
}

/// One sample kept for the window.
#[derive(Clone)]
struct Kept {
    at_us: u64,
    cpu_us: u64,
    wait_us: u64,
    reductions: u64,
    dirtied: u64,
    talk: Vec<(NodeId, u64)>,
    partners: Vec<(Pid, NodeId, u64)>,
}

/// Rates over a sliding window, from cumulative counters sampled now and then.
#[derive(Default)]
pub struct Meter {
    window_us: u64,
    /// This node's samples within the window (oldest first), the newest included.
    node: VecDeque<NodeSample>,
    procs: HashMap<Pid, (VecDeque<Kept>, ProcSample)>,
}

impl Meter {
    pub fn new(window_ms: u64) -> Meter {
        Meter { window_us: window_ms.max(1) * 1000, ..Meter::default() }
    }

    pub fn set_window(&mut self, window_ms: u64) {
        self.window_us = window_ms.max(1) * 1000;
    }

    /// Takes a sample of the node and of its processes (processes not in it are gone).
    pub fn observe(&mut self, node: NodeSample, procs: Vec<ProcSample>) {
        let now = node.at_us;
        self.node.push_back(node);
        while self.node.len() > 2 && self.node[1].at_us + self.window_us <= now {
            self.node.pop_front();
        }
        let mut seen: HashMap<Pid, ()> = HashMap::with_capacity(procs.len());
        for p in procs {
            seen.insert(p.pid, ());
            let k = Kept {
                at_us: now,
                cpu_us: p.cpu_us,
                wait_us: p.wait_us,
                reductions: p.reductions,
                dirtied: p.dirtied_pages,
                talk: p.talk.clone(),
                partners: p.partners.clone(),
            };
            let e = self.procs.entry(p.pid).or_insert_with(|| (VecDeque::new(), p.clone()));
            // A process that left and came back is a new arrival: its counters started again.
            if e.1.resident_us > p.resident_us {
                e.0.clear();
            }
            e.0.push_back(k);
            while e.0.len() > 2 && e.0[1].at_us + self.window_us <= now {
                e.0.pop_front();
            }
            e.1 = p;
        }
        self.procs.retain(|pid, _| seen.contains_key(pid));
    }

    /// This node's load over the window (`migrations` and `accepting` are the host's),
    /// and its processes' (busiest first): one pass over the samples for both.
    pub fn loads(&self) -> (Load, Vec<ProcLoad>) {
        let procs = self.procs();
        (self.node_load_with(&procs), procs)
    }

    /// This node's utilization over its last sample interval (0 with fewer than two
    /// samples): how busy it is now, where the window's mean lags by the window.
    pub fn recent_utilization(&self) -> f64 {
        let n = self.node.len();
        if n < 2 {
            return 0.0;
        }
        utilization(&self.node[n - 2], &self.node[n - 1])
    }

    /// This node's load over the window.
    pub fn node_load(&self) -> Load {
        self.node_load_with(&self.procs())
    }

    fn node_load_with(&self, procs: &[ProcLoad]) -> Load {
        let (Some(first), Some(last)) = (self.node.front(), self.node.back()) else { return Load::default() };
        let workers = last.busy_us.len().max(1);
        let dt = last.at_us.saturating_sub(first.at_us);
        let utilization = utilization(first, last);
        // The run queue: the mean of the samples in the window (the first is the
        // window's start, so it counts only when it is the one sample).
        let rq: Vec<u64> = self.node.iter().skip(usize::from(self.node.len() > 1)).map(|s| s.runnable).collect();
        let runnable = rq.iter().sum::<u64>() as f64 / rq.len().max(1) as f64;
        let demand = crowding(workers as f64, procs);
        let plus_one = if procs.is_empty() { 1.0 } else { crowding_plus_one(workers as f64, procs) };
        Load {
            workers: workers as u32,
            utilization_pm: (utilization * 1000.0).round() as u32,
            runnable_x100: (runnable * 100.0).round() as u32,
            demand_x100: (demand * 100.0).round() as u32,
            plus_one_x100: (plus_one * 100.0).round() as u32,
            processes: last.processes,
            reductions_per_s: per_s(last.reductions.saturating_sub(first.reductions), dt),
            migrations: 0,
            accepting: true,
        }
    }

    /// Every process's load over the window (busiest first).
    pub fn procs(&self) -> Vec<ProcLoad> {
        let mut out: Vec<ProcLoad> = self
            .procs
            .values()
            .map(|(kept, p)| {
                let (first, last) = (&kept[0], &kept[kept.len() - 1]);
                let dt = last.at_us.saturating_sub(first.at_us);
                let mut talk: Vec<(NodeId, u64)> = last
                    .talk
                    .iter()
                    .map(|&(n, b)| (n, per_s(b.saturating_sub(first.talk.iter().find(|t| t.0 == n).map_or(0, |t| t.1)), dt)))
                    .filter(|t| t.1 > 0)
                    .collect();
                talk.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut partners: Vec<(Pid, NodeId, u64)> = last
                    .partners
                    .iter()
                    .map(|&(p, n, b)| {
                        let before = first.partners.iter().find(|t| t.0 == p && t.1 == n).map_or(0, |t| t.2);
                        (p, n, per_s(b.saturating_sub(before), dt))
                    })
                    .filter(|t| t.2 > 0)
                    .collect();
                partners.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
                ProcLoad {
                    pid: p.pid,
                    status: p.status.to_string(),
                    cpu: if dt == 0 { 0.0 } else { (last.cpu_us.saturating_sub(first.cpu_us) as f64 / dt as f64).min(1.0) },
                    demand: {
                        let cpu = last.cpu_us.saturating_sub(first.cpu_us) as f64;
                        let waited = last.wait_us.saturating_sub(first.wait_us) as f64;
                        let alone = (dt as f64 - waited).max(cpu);
                        if alone <= 0.0 {
                            0.0
                        } else {
                            (cpu / alone).min(1.0)
                        }
                    },
                    wait: if dt == 0 { 0.0 } else { (last.wait_us.saturating_sub(first.wait_us) as f64 / dt as f64).min(1.0) },
                    reductions_per_s: per_s(last.reductions.saturating_sub(first.reductions), dt),
                    reductions: p.reductions,
                    heap_bytes: p.heap_pages * p.page_bytes,
                    dirty_bytes_s: per_s(last.dirtied.saturating_sub(first.dirtied), dt) * p.page_bytes,
                    mailbox: p.mailbox,
                    mailbox_bytes: p.mailbox_bytes,
                    resident_ms: p.resident_us / 1000,
                    moves: p.moves,
                    came_from: p.came_from,
                    pinned: p.pinned,
                    lazy: p.lazy,
                    shell: p.shell,
                    group: p.group,
                    talk,
                    partners,
                }
            })
            .collect();
        out.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then(a.pid.cmp(&b.pid)));
        out
    }
}

/// The CPU time the workers spent running processes between two samples, per worker
/// and second of wall time (0 to 1).
fn utilization(first: &NodeSample, last: &NodeSample) -> f64 {
    let dt = last.at_us.saturating_sub(first.at_us);
    let workers = last.busy_us.len().max(1);
    let busy: u64 = last.busy_us.iter().zip(&first.busy_us).map(|(b, a)| b.saturating_sub(*a)).sum();
    if dt == 0 {
        0.0
    } else {
        (busy as f64 / (dt as f64 * workers as f64)).min(1.0)
    }
}

fn per_s(n: u64, dt_us: u64) -> u64 {
    if dt_us == 0 {
        0
    } else {
        (n as u128 * 1_000_000 / dt_us as u128).min(u64::MAX as u128) as u64
    }
}

/// A peer's load as this node knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLoad {
    pub id: NodeId,
    pub up: bool,
    /// Its last report (default: none yet).
    pub load: Load,
    /// How long ago that report came, µs (`None`: never).
    pub age_us: Option<u64>,
}

/// A move the policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub pid: Pid,
    pub to: NodeId,
    pub why: String,
    /// What the destination is told, to check that it still has room.
    pub admit: Admit,
}

/// A decision, for the log: what the policy saw, what it did and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Node µs.
    pub at_us: u64,
    /// `balance` or `affinity`.
    pub rule: String,
    /// The loads it saw: (node, run-queue length per worker, utilization ‰).
    pub loads: Vec<(NodeId, f64, u32)>,
    /// The move, if it made one.
    pub moved: Option<Move>,
    /// Why it moved that one there, or why it declined.
    pub why: String,
    /// The other candidates it weighed (pid, score), best first.
    pub candidates: Vec<(Pid, f64)>,
}

/// A change of load this node expects from its own move, counted until the reports
/// show it.
#[derive(Debug, Clone, Copy)]
struct Expect {
    pid: Pid,
    from: NodeId,
    to: NodeId,
    /// The process's CPU demand (a fraction of a worker).
    demand: f64,
    /// `None` while the move is in flight; then when it ended (the reports show it a
    /// window and a report later).
    ended_us: Option<u64>,
}

/// The most decisions kept for `tern ctl policy`.
pub const LOG_LEN: usize = 256;

/// Test only: deliberate bugs, to show that the simulator's checkers catch them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyFault {
    #[default]
    None,
    /// Balance moves whenever a peer is less loaded at all (no step of one process
    /// required): two nodes trade processes back and forth.
    AnyGain,
    /// The residence time is not respected.
    NoResidence,
}

/// The policy of one node.
pub struct Policy {
    pub conf: PolicyConf,
    #[doc(hidden)]
    pub fault: PolicyFault,
    me: NodeId,
    /// Since when this node has been busy (see "Balance").
    busy_since: Option<u64>,
    /// Since when some peer has had room for one of its processes (see "Balance").
    uneven_since: Option<u64>,
    expect: Vec<Expect>,
    /// Affinity: since when each process has been seen split from its partner's node.
    split_since: HashMap<Pid, (NodeId, u64)>,
    log: VecDeque<Decision>,
    /// The last reason a rule declined (logged once, not at every look).
    last_decline: BTreeMap<&'static str, String>,
    next_look_us: u64,
    /// Decisions recorded, and of those, handed out by [`Policy::take_new`].
    recorded: u64,
    taken: u64,
    /// Link speed assumed for a move's cost, bytes per µs (updated from reports).
    link_bytes_per_us: f64,
    /// The nodes' names, for the reasons given (a node not named is shown by number).
    names: BTreeMap<NodeId, String>,
}

impl Policy {
    pub fn new(me: NodeId, conf: PolicyConf) -> Policy {
        Policy {
            conf,
            fault: PolicyFault::None,
            me,
            busy_since: None,
            uneven_since: None,
            expect: Vec::new(),
            split_since: HashMap::new(),
            log: VecDeque::new(),
            last_decline: BTreeMap::new(),
            next_look_us: 0,
            recorded: 0,
            taken: 0,
            link_bytes_per_us: 100.0,
            names: BTreeMap::new(),
        }
    }

    /// Names the nodes in the reasons this policy gives.
    pub fn set_names(&mut self, names: impl IntoIterator<Item = (NodeId, String)>) {
        self.names = names.into_iter().collect();
    }

    /// Node `id` as the reasons show it: its name, else its number.
    fn name(&self, id: NodeId) -> String {
        self.names.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// The decisions kept (oldest first).
    pub fn log(&self) -> impl Iterator<Item = &Decision> {
        self.log.iter()
    }

    /// The decisions recorded since the last call (for the host's log and tracing).
    pub fn take_new(&mut self) -> Vec<Decision> {
        let n = (self.recorded - self.taken).min(self.log.len() as u64) as usize;
        self.taken = self.recorded;
        self.log.iter().skip(self.log.len() - n).cloned().collect()
    }

    /// When [`Policy::decide`] next wants to look.
    pub fn next_look_us(&self) -> u64 {
        self.next_look_us
    }

    /// A migration this node made ended (ok or not): its expected loads count until
    /// the reports show them, or stop counting at once if it failed. One that went
    /// through frees its place in flight, and the next look is at once (`now_us`), not
    /// `interval_ms` after the last: a node that sheds more processes than may be in
    /// flight sends the next ones as the first arrive. (A failed one does not hasten
    /// the look: a move refused at once would be tried again at once.)
    pub fn moved(&mut self, now_us: u64, pid: Pid, ok: bool, bytes_per_ms: u64) {
        if ok {
            for e in self.expect.iter_mut().filter(|e| e.pid == pid && e.ended_us.is_none()) {
                e.ended_us = Some(now_us);
            }
            self.next_look_us = self.next_look_us.min(now_us);
            if bytes_per_ms > 0 {
                self.link_bytes_per_us = bytes_per_ms as f64 / 1000.0;
            }
        } else {
            self.expect.retain(|e| e.pid != pid);
        }
    }

    /// Looks at the loads and says which processes to move (at most as many as may be
    /// in flight). `own`: this node's load over the window (with `migrations` in
    /// flight, moves started by the policy or anyone else); `util_now`: its utilization
    /// over the last sample ([`Meter::recent_utilization`]).
    pub fn decide(&mut self, now_us: u64, own: &Load, util_now: f64, peers: &[PeerLoad], procs: &[ProcLoad]) -> Vec<Move> {
        self.next_look_us = now_us + self.conf.interval_ms * 1000;
        let settle_us = (self.conf.window_ms + 2 * self.conf.gossip_ms) * 1000;
        self.expect.retain(|e| e.ended_us.is_none_or(|t| now_us < t + settle_us));
        if self.conf.mode == Mode::Off {
            self.busy_since = None;
            self.split_since.clear();
            return Vec::new();
        }
        let stale_us = (4 * self.conf.gossip_ms).max(2 * self.conf.window_ms) * 1000;
        let mut view = View::new(self.me, own, peers, stale_us);
        self.expected(now_us, &mut view);
        let in_flight = self.expect.iter().filter(|e| e.ended_us.is_none()).count() as u32;
        let mut budget = self.conf.max_in_flight.saturating_sub(in_flight);
        let mesh_flight = peers.iter().filter(|p| p.up).map(|p| p.load.migrations).sum::<u64>() + own.migrations;
        // Each migration is counted by its two nodes.
        if mesh_flight / 2 >= u64::from(self.conf.max_in_flight_mesh) {
            budget = 0;
        }
        let mut out = Vec::new();
        if self.conf.mode.affinity() {
            self.affinity(now_us, &mut view, procs, &mut budget, &mut out);
        } else {
            self.split_since.clear();
        }
        if self.conf.mode.balance() {
            self.balance(now_us, &mut view, util_now, procs, &mut budget, &mut out);
        }
        out
    }

    fn balance(&mut self, now_us: u64, view: &mut View, util_now: f64, procs: &[ProcLoad], budget: &mut u32, out: &mut Vec<Move>) {
        let me = view.own();
        // Busy over the window, or over the last sample: a node that just filled up is
        // busy from then (the window's mean would say so only most of a window later),
        // and the hysteresis below is what asks that it stays so.
        let busy = me.util.max(util_now) >= self.conf.high && me.queue > f64::from(me.workers) + 1e-9;
        if !busy {
            self.busy_since = None;
            self.uneven_since = None;
            self.decline(
                now_us,
                "balance",
                view,
                format!("not busy (utilization {:.0}%, {:.1} runnable on {} workers)", me.util * 100.0, me.queue, me.workers),
            );
            return;
        }
        // Busy for a while, not for a moment; the mesh's unevenness is timed meanwhile
        // (the two waits overlap: a node busy while a peer has room acts after one wait).
        let since = *self.busy_since.get_or_insert(now_us);
        let busy_long = now_us >= since + self.conf.hysteresis_ms * 1000;
        while *budget > 0 {
            let me = view.own();
            // The share of a worker each runnable process gets here: a process's CPU
            // over it is what it would use alone (1: it wants all the CPU it gets).
            let Some(dst) = view.least_loaded() else {
                self.decline(now_us, "balance", view, "no peer up with a fresh load report that takes processes".into());
                return;
            };
            let mut scored: Vec<(f64, &ProcLoad)> = procs
                .iter()
                .filter(|p| !out.iter().any(|m| m.pid == p.pid))
                .filter(|p| !self.expect.iter().any(|e| e.pid == p.pid))
                // Never back to where it just came from (that would undo a decision).
                .filter(|p| p.came_from != Some(dst.id) || p.resident_ms >= 2 * self.conf.residence_ms)
                .filter(|p| {
                    p.unmovable().is_none() && (self.settled(p) || self.fault == PolicyFault::NoResidence) && p.demand >= self.conf.min_cpu
                })
                .map(|p| (self.score(p, dst.id), p))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.pid.cmp(&b.1.pid)));
            let Some(&(_, best)) = scored.first() else {
                // While the only processes that could move are too new to (spawned
                // here less than `hysteresis_ms` ago: their wait is the busy node's,
                // and runs beside it), the unevenness is timed meanwhile, for a
                // process that wants a whole worker (if the mesh is uneven for it, it
                // is for any): they move once they may, not a wait after. (One that
                // moved here waits out its residence with the unevenness untimed: it
                // is judged afresh after.)
                let new_here =
                    |p: &ProcLoad| p.came_from.is_none() && p.unmovable().is_none() && !self.settled(p) && p.demand >= self.conf.min_cpu;
                if procs.iter().any(new_here) && balance_gain(&me, &dst, 1.0) >= -1e-9 {
                    self.uneven_since.get_or_insert(now_us);
                } else {
                    self.uneven_since = None;
                }
                let why = self.candidates_missing(procs);
                self.decline(now_us, "balance", view, why);
                return;
            };
            // The move must leave the destination less crowded than this node is now
            // (the process then gets more of a worker there than here, this node's
            // others get more, and the destination's still get more than the least
            // share before: the least share in the mesh only grows, so no later move of
            // the same rule undoes this one); when the destination has no room for it
            // (it would be crowded too), by a tenth, for the noise of the measurements.
            let d = best.demand;
            let after = dst.with_one_more(d);
            let mut gain = balance_gain(&me, &dst, d);
            if self.fault == PolicyFault::AnyGain {
                gain = me.load() - dst.load() - 1e-6;
            }
            if gain < -1e-9 {
                self.uneven_since = None;
                self.decline(
                    now_us,
                    "balance",
                    view,
                    format!(
                        "balanced: moving {} ({:.0}% of a worker) to the least loaded node {} ({:.2} per worker, {after:.2} with it) would not leave it less crowded than this one ({:.2}) by a tenth",
                        tern_vm::value::name_text(best.pid),
                        d * 100.0,
                        self.name(dst.id),
                        dst.load(),
                        me.load()
                    ),
                );
                return;
            }
            // Uneven for a while, not for a moment (a load is a mean of samples).
            let uneven = *self.uneven_since.get_or_insert(now_us);
            if !busy_long || now_us < uneven + self.conf.hysteresis_ms * 1000 {
                return;
            }
            let why = format!(
                "node {} is busy ({:.2} runnable per worker, utilization {:.0}%) and node {} is not ({:.2}, {:.0}%): {} uses {:.0}% of a worker (wants {:.0}%), heap {} KiB, on this node {:.1} s",
                self.name(self.me),
                me.load(),
                me.util * 100.0,
                self.name(dst.id),
                dst.load(),
                dst.util * 100.0,
                tern_vm::value::name_text(best.pid),
                best.cpu * 100.0,
                best.demand * 100.0,
                best.heap_bytes / 1024,
                best.resident_ms as f64 / 1000.0
            );
            // The view and the expected loads count it as the move was judged.
            let w = charged(d, after);
            let mv = Move { pid: best.pid, to: dst.id, why: why.clone(), admit: view.admit_balance(w) };
            let candidates = scored.iter().take(8).map(|(s, p)| (p.pid, (s * 1000.0).round() / 1000.0)).collect();
            self.record(Decision {
                at_us: now_us,
                rule: "balance".into(),
                loads: view.summary(),
                moved: Some(mv.clone()),
                why,
                candidates,
            });
            view.shift(self.me, dst.id, w, w);
            self.expect.push(Expect { pid: best.pid, from: self.me, to: dst.id, demand: w, ended_us: None });
            out.push(mv);
            *budget -= 1;
        }
    }

    /// How good a candidate `p` is for a move to `to`: the CPU it relieves over what
    /// its move costs, longer-lived first, talkers to `to` first and talkers to this
    /// node last (with affinity on).
    fn score(&self, p: &ProcLoad, to: NodeId) -> f64 {
        // Its move's cost, ms: the heap, and what it writes meanwhile, at the link's speed.
        let cost_ms = (p.heap_bytes as f64 + p.dirty_bytes_s as f64 * 0.05) / self.link_bytes_per_us / 1000.0;
        let lived = 1.0 + (1.0 + p.reductions as f64 / 1e6).log10().min(3.0) / 3.0;
        let mut s = p.demand * lived / (1.0 + cost_ms / 10.0);
        if self.conf.mode.affinity() {
            let total: u64 = p.talk.iter().map(|t| t.1).sum();
            if total > 0 {
                let there = p.talk_with(to) as f64 / total as f64;
                let here = p.talk_with(self.me) as f64 / total as f64;
                s *= (1.0 + there) * (1.0 - 0.9 * here);
            }
        }
        s
    }

    fn affinity(&mut self, now_us: u64, view: &mut View, procs: &[ProcLoad], budget: &mut u32, out: &mut Vec<Move>) {
        let mut still_split = HashMap::new();
        for p in procs {
            if p.unmovable().is_some() {
                continue;
            }
            let local = p.talk_with(self.me);
            let Some(&(to, rate)) = p.talk.iter().find(|t| t.0 != self.me) else { continue };
            if rate < self.conf.affinity_bytes_s || rate <= 2 * local {
                continue;
            }
            let since = match self.split_since.get(&p.pid) {
                Some(&(n, t)) if n == to => t,
                _ => now_us,
            };
            still_split.insert(p.pid, (to, since));
            if *budget == 0 || !self.settled(p) || self.expect.iter().any(|e| e.pid == p.pid) {
                continue;
            }
            if p.came_from == Some(to) && p.resident_ms < 2 * self.conf.residence_ms {
                continue;
            }
            // Of two partners split across two nodes, the one the pair's draw names
            // moves; the other only once that one has had its chance twice over.
            let partner = p.partners.iter().find(|q| q.1 == to).map(|q| q.0);
            if let Some(q) = partner {
                let waited = now_us.saturating_sub(since) >= 2 * (self.conf.residence_ms + self.conf.interval_ms) * 1000;
                if mover(p.pid, q) != p.pid && !waited {
                    continue;
                }
            }
            let Some(dst) = view.get(to) else {
                self.decline(
                    now_us,
                    "affinity",
                    view,
                    format!(
                        "{} talks to node {}, which is down or has not reported its load",
                        tern_vm::value::name_text(p.pid),
                        self.name(to)
                    ),
                );
                continue;
            };
            let me = view.own();
            let d = p.demand;
            let name = self.name(to);
            // Room: below the high watermark, and no busier than this node with it (or
            // one process per worker); above it, only no busier than this node. Partners
            // that talk as fast as they can use every worker they get wherever they
            // are: a node they keep busy has room for another pair as long as it is no
            // busier than the node the pair would leave.
            let after = dst.load() + d / f64::from(dst.workers);
            let room = if dst.util < self.conf.high { after <= me.load().max(1.0) + 1e-9 } else { after <= me.load() + 1e-9 };
            if !room {
                self.decline(
                    now_us,
                    "affinity",
                    view,
                    format!(
                        "{} talks to node {name} ({rate} B/s, {local} B/s here) but node {name} has no room (utilization {:.0}%, {:.2} runnable per worker, {after:.2} with it, against {:.2} here)",
                        tern_vm::value::name_text(p.pid),
                        dst.util * 100.0,
                        dst.load(),
                        me.load()
                    ),
                );
                continue;
            }
            let why = format!(
                "{} exchanges {rate} B/s with node {name} and {local} B/s here{}",
                tern_vm::value::name_text(p.pid),
                match partner {
                    Some(q) if mover(p.pid, q) != p.pid => format!("; its partner {} did not come here", tern_vm::value::name_text(q)),
                    Some(q) => format!("; it moves rather than its partner {} (the pair's draw)", tern_vm::value::name_text(q)),
                    None => String::new(),
                }
            );
            let mv = Move { pid: p.pid, to, why: why.clone(), admit: view.admit_affinity(d) };
            self.record(Decision {
                at_us: now_us,
                rule: "affinity".into(),
                loads: view.summary(),
                moved: Some(mv.clone()),
                why,
                candidates: Vec::new(),
            });
            view.shift(self.me, to, d, d);
            self.expect.push(Expect { pid: p.pid, from: self.me, to, demand: d, ended_us: None });
            still_split.remove(&p.pid);
            out.push(mv);
            *budget -= 1;
        }
        self.split_since = still_split;
    }

    /// Whether this node takes process `pid` from node `from` in a load policy's move:
    /// only if, with it, its run queue per worker stays within what the move asks
    /// ([`Admit`]), counting the moves it already took or made that the loads do not
    /// show yet. Taken, it counts as one of those.
    pub fn admit(&mut self, now_us: u64, pid: Pid, from: NodeId, own: &Load, a: Admit) -> Result<(), String> {
        let mut view = View::new(self.me, own, &[], 0);
        self.expected(now_us, &mut view);
        let me = view.own();
        let d = f64::from(a.demand_x100.clamp(1, 100)) / 100.0;
        let with = me.with_one_more(d);
        let most = f64::from(a.max_load_x100) / 100.0;
        if with > most + 0.005 {
            let why = format!(
                "refused {} from node {}: with it this node would run {with:.2} processes per worker, more than the {most:.2} the move allows",
                tern_vm::value::name_text(pid),
                self.name(from)
            );
            self.record(Decision {
                at_us: now_us,
                rule: "admit".into(),
                loads: view.summary(),
                moved: None,
                why: why.clone(),
                candidates: Vec::new(),
            });
            return Err(why);
        }
        self.expect.push(Expect { pid, from, to: self.me, demand: d, ended_us: Some(now_us) });
        Ok(())
    }

    /// Shifts `view` by the moves the loads do not show yet: all of a move in flight;
    /// of one that ended, what the window does not cover yet (the run queue is a mean
    /// over the window, so it shows a move bit by bit; a peer's report comes up to two
    /// gossip intervals later).
    fn expected(&self, now_us: u64, view: &mut View) {
        let window = (self.conf.window_ms * 1000).max(1) as f64;
        let lag = 2 * self.conf.gossip_ms * 1000;
        let unseen = |since: u64| (1.0 - since as f64 / window).clamp(0.0, 1.0);
        for e in &self.expect {
            let (own, peer) = match e.ended_us {
                None => (1.0, 1.0),
                Some(t) => {
                    let since = now_us.saturating_sub(t);
                    (unseen(since), unseen(since.saturating_sub(lag)))
                }
            };
            view.shift(e.from, e.to, own * e.demand, peer * e.demand);
        }
    }

    fn decline(&mut self, now_us: u64, rule: &'static str, view: &View, why: String) {
        if self.last_decline.get(rule) == Some(&why) {
            return;
        }
        self.last_decline.insert(rule, why.clone());
        self.record(Decision { at_us: now_us, rule: rule.into(), loads: view.summary(), moved: None, why, candidates: Vec::new() });
    }

    fn record(&mut self, d: Decision) {
        if d.moved.is_some() {
            self.last_decline.clear();
        }
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(d);
        self.recorded += 1;
    }
}

impl Policy {
    /// Whether `p` has been on this node long enough to move: `residence_ms` since it
    /// moved here, or `hysteresis_ms` since it was spawned here.
    fn settled(&self, p: &ProcLoad) -> bool {
        p.resident_ms >= self.min_stay(p)
    }

    fn min_stay(&self, p: &ProcLoad) -> u64 {
        if p.came_from.is_some() {
            self.conf.residence_ms
        } else {
            self.conf.hysteresis_ms
        }
    }

    /// Why no process could be moved.
    fn candidates_missing(&self, procs: &[ProcLoad]) -> String {
        let mut why: BTreeMap<String, u32> = BTreeMap::new();
        for p in procs {
            let r = match p.unmovable() {
                Some(r) => r.to_string(),
                None if !self.settled(p) => format!("here less than {} ms", self.min_stay(p)),
                None if p.demand < self.conf.min_cpu => format!("using less than {:.0}% of a worker", self.conf.min_cpu * 100.0),
                None => "already moving".into(),
            };
            *why.entry(r).or_default() += 1;
        }
        let parts: Vec<String> = why.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!("busy, but no process may move ({})", if parts.is_empty() { "none here".into() } else { parts.join(", ") })
    }
}

/// A node's load as the policy counts it.
#[derive(Debug, Clone, Copy)]
struct NodeView {
    id: NodeId,
    workers: u32,
    /// CPU demand (or, without it, the run queue): what balance compares.
    runnable: f64,
    /// The run queue (processes runnable or running).
    queue: f64,
    util: f64,
    processes: u32,
    /// Its load per worker with one more process wanting a whole worker, as it said
    /// (0: it did not).
    plus_one: f64,
    accepting: bool,
}

impl NodeView {
    fn of(id: NodeId, l: &Load) -> NodeView {
        NodeView {
            id,
            workers: l.workers.max(1),
            runnable: f64::from(if l.demand_x100 > 0 { l.demand_x100 } else { l.runnable_x100 }) / 100.0,
            queue: f64::from(l.runnable_x100) / 100.0,
            util: f64::from(l.utilization_pm) / 1000.0,
            processes: l.processes as u32,
            plus_one: f64::from(l.plus_one_x100) / 100.0 / f64::from(l.workers.max(1)),
            accepting: l.accepting,
        }
    }

    /// CPU demand (or run-queue length) per worker.
    fn load(&self) -> f64 {
        self.runnable / f64::from(self.workers)
    }

    /// Its load with one more process of demand `d`: as it said for one that wants a
    /// whole worker, in proportion while that leaves it room, and as it said once it
    /// would be crowded. Without that, at worst: with room for it, its
    /// demand grows by `d`; without, its runnable processes get a share of a worker
    /// each, at least what the others leave free and at least an equal part of the
    /// workers, and the load is one over the share; once crowded, one more process
    /// competes for the workers.
    fn with_one_more(&self, d: f64) -> f64 {
        let w = f64::from(self.workers);
        let load = self.load();
        if self.plus_one > 0.0 {
            // Crowded with it, it counts as one that wants a whole worker ([`charged`]).
            let after = load + d * (self.plus_one - load).max(0.0);
            return if charged(d, after) > d { self.plus_one.max(after) } else { after };
        }
        if load >= 1.0 - 1e-9 {
            return load + d / w;
        }
        let demand = load * w;
        if demand + d <= w {
            return (demand + d) / w;
        }
        let share = (w - demand).max(w / (f64::from(self.processes) + 1.0)).clamp(1e-3, 1.0);
        (1.0 / share).max((demand + d) / w)
    }
}

/// Every node's load for one look: this node's first, then its peers up with a fresh
/// report, each shifted by the moves expected.
struct View {
    nodes: Vec<NodeView>,
}

impl View {
    fn new(me: NodeId, own: &Load, peers: &[PeerLoad], stale_us: u64) -> View {
        let mut nodes = vec![NodeView::of(me, own)];
        for p in peers {
            if p.up && p.load.workers > 0 && p.age_us.is_some_and(|a| a <= stale_us) {
                nodes.push(NodeView::of(p.id, &p.load));
            }
        }
        View { nodes }
    }

    fn own(&self) -> NodeView {
        self.nodes[0]
    }

    /// What a balancing move asks of its destination: room for the process, or with it
    /// less crowded than this node is now, by a tenth (see [`Policy::balance`]).
    fn admit_balance(&self, d: f64) -> Admit {
        let most = (self.own().load() * (1.0 - BALANCE_MARGIN)).max(1.0);
        Admit { max_load_x100: (most * 100.0).round() as u32, demand_x100: (d * 100.0).round() as u32 }
    }

    /// What an affinity move asks: no busier than this node (or one process per worker).
    fn admit_affinity(&self, d: f64) -> Admit {
        Admit { max_load_x100: (self.own().load().max(1.0) * 100.0).round() as u32, demand_x100: (d * 100.0).round() as u32 }
    }

    fn get(&self, id: NodeId) -> Option<NodeView> {
        self.nodes.iter().skip(1).find(|n| n.id == id && n.accepting).copied()
    }

    /// The peer that takes processes with the least load per worker once it has one
    /// more process that wants a whole worker (so of two nodes at about the same load the
    /// one with more workers; ties: the lower utilization, then the lower id).
    fn least_loaded(&self) -> Option<NodeView> {
        let after = |n: &NodeView| n.with_one_more(1.0);
        self.nodes
            .iter()
            .skip(1)
            .filter(|n| n.accepting)
            .copied()
            .min_by(|a, b| after(a).total_cmp(&after(b)).then(a.util.total_cmp(&b.util)).then(a.id.cmp(&b.id)))
    }

    /// One runnable process goes from `from` to `to`.
    /// (`own`: how much of it this node's load does not show yet; `peer`: how much a
    /// peer's report does not.)
    fn shift(&mut self, from: NodeId, to: NodeId, own: f64, peer: f64) {
        let me = self.nodes[0].id;
        for n in &mut self.nodes {
            let w = if n.id == me { own } else { peer };
            // What it said one more would make it moves with its load.
            let per_worker = w / f64::from(n.workers);
            if n.id == from {
                n.runnable = (n.runnable - w).max(0.0);
                n.queue = (n.queue - w).max(0.0);
                if n.plus_one > 0.0 {
                    n.plus_one = (n.plus_one - per_worker).max(n.load());
                }
            } else if n.id == to {
                n.runnable += w;
                n.queue += w;
                n.util = n.util.max((n.runnable / f64::from(n.workers)).min(1.0));
                if n.plus_one > 0.0 {
                    n.plus_one += per_worker;
                }
            }
        }
    }

    fn summary(&self) -> Vec<(NodeId, f64, u32)> {
        self.nodes.iter().map(|n| (n.id, (n.load() * 100.0).round() / 100.0, (n.util * 1000.0).round() as u32)).collect()
    }
}

/// Where processes go that no one placed (`spawn` on any node, a drain): to the node
/// whose load with one more would be least, each placement counted until the reports
/// show it (so a drain of many processes spreads them by the room each node has).
#[derive(Debug, Clone)]
pub struct Placer {
    nodes: Vec<NodeView>,
}

impl Placer {
    /// Among these nodes (their last reports): those that take new processes.
    pub fn new(nodes: &[(NodeId, Load)]) -> Placer {
        Placer { nodes: nodes.iter().filter(|(_, l)| l.accepting).map(|(id, l)| NodeView::of(*id, l)).collect() }
    }

    /// The node for one more process of CPU demand `demand` (a fraction of a worker;
    /// not measured: say 1), counted as there from now on. `None`: no node takes it.
    pub fn place(&mut self, demand: f64) -> Option<NodeId> {
        let d = if demand.is_finite() { demand.clamp(0.05, 1.0) } else { 1.0 };
        let after = |n: &NodeView| n.with_one_more(d);
        let best =
            self.nodes.iter_mut().min_by(|a, b| after(a).total_cmp(&after(b)).then(a.util.total_cmp(&b.util)).then(a.id.cmp(&b.id)))?;
        let w = f64::from(best.workers);
        let load = best.with_one_more(d);
        best.runnable = load * w;
        best.queue += d;
        best.processes += 1;
        if best.plus_one > 0.0 {
            best.plus_one += d / w;
        }
        Some(best.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(workers: u32, runnable_x100: u32, accepting: bool) -> Load {
        Load { workers, runnable_x100, accepting, ..Load::default() }
    }

    #[test]
    fn a_placer_spreads_by_room_and_passes_drained_nodes_by() {
        // Two idle nodes of 2 workers and a drained one: 6 processes, 3 each.
        let mut p = Placer::new(&[(2, load(2, 0, true)), (3, load(2, 0, true)), (4, load(2, 0, false))]);
        let mut got = HashMap::new();
        for _ in 0..6 {
            *got.entry(p.place(1.0).expect("a node")).or_insert(0) += 1;
        }
        assert_eq!(got.get(&2), Some(&3), "{got:?}");
        assert_eq!(got.get(&3), Some(&3), "{got:?}");
        assert_eq!(got.get(&4), None, "{got:?}");
        // A busy node gets nothing while an idle one has room.
        let mut p = Placer::new(&[(2, load(2, 400, true)), (3, load(2, 0, true))]);
        assert_eq!([p.place(1.0), p.place(1.0)], [Some(3), Some(3)]);
        // Per worker: a node of 4 workers takes twice what one of 2 takes.
        let mut p = Placer::new(&[(2, load(2, 0, true)), (3, load(4, 0, true))]);
        let to_big = (0..12).filter(|_| p.place(1.0) == Some(3)).count();
        assert_eq!(to_big, 8);
        // No node that takes processes: none.
        assert_eq!(Placer::new(&[(2, load(2, 0, false))]).place(1.0), None);
        assert_eq!(Placer::new(&[]).place(f64::NAN), None);
    }

    fn busy_proc(pid: Pid, resident_ms: u64) -> ProcLoad {
        ProcLoad { pid, status: "runnable".into(), cpu: 0.5, demand: 1.0, resident_ms, ..ProcLoad::default() }
    }

    fn peer(id: NodeId, load: Load) -> PeerLoad {
        PeerLoad { id, up: true, load, age_us: Some(1000) }
    }

    /// A node's load: utilization ‰, run queue and demand ×100, one more ×100 (0: not said).
    fn node(workers: u32, util_pm: u32, runnable_x100: u32, demand_x100: u32, plus_one_x100: u32) -> Load {
        Load { workers, utilization_pm: util_pm, runnable_x100, demand_x100, plus_one_x100, accepting: true, ..Load::default() }
    }

    #[test]
    fn one_look_does_not_send_a_second_process_to_a_node_the_first_one_filled() {
        // 5 processes on 4 workers here, 3 on 4 there, which said that one more would
        // fill it (4.00): one move balances; a second, to a node then as loaded as
        // this one, would only make it the busier of the two.
        let conf = PolicyConf { mode: Mode::Balance, max_in_flight: 3, ..PolicyConf::default() };
        let mut pol = Policy::new(0, conf);
        let (own, there) = (node(4, 1000, 500, 500, 0), node(4, 750, 300, 300, 400));
        let procs: Vec<ProcLoad> = (1..=5).map(|p| busy_proc(p, 60_000)).collect();
        let mut moves = Vec::new();
        for t in 0..12 {
            moves.extend(pol.decide(t * 250_000, &own, 1.0, &[peer(7, there)], &procs));
        }
        assert_eq!(moves.len(), 1, "{moves:?}");
    }

    #[test]
    fn a_crowded_destination_is_charged_a_whole_worker_per_process_sent() {
        // Ten half-worker processes crowd one worker here (5.00); there, 2.50, and one
        // more whole-worker process would make it 3.50. Sending one crowds it further:
        // on a crowded node a process that gets less than it wants counts as a whole
        // one. A second in the same look would make it the busier of the two.
        let conf = PolicyConf { mode: Mode::Balance, ..PolicyConf::default() };
        let mut pol = Policy::new(0, conf);
        let (own, there) = (node(1, 1000, 1000, 500, 0), node(1, 1000, 300, 250, 350));
        let procs: Vec<ProcLoad> = (1..=10).map(|p| ProcLoad { demand: 0.5, ..busy_proc(p, 60_000) }).collect();
        let mut moves = Vec::new();
        for t in 0..12 {
            moves.extend(pol.decide(t * 250_000, &own, 1.0, &[peer(7, there)], &procs));
        }
        assert_eq!(moves.len(), 1, "{moves:?}");
    }

    #[test]
    fn a_node_that_fills_up_sheds_work_one_hysteresis_after() {
        // One worker, idle until 8 processes that each want a whole worker start at 0;
        // a peer idle beside it. The window's mean utilization climbs a quarter per
        // sample (a 1 s window, 250 ms samples); the last sample's is full at once.
        let conf = PolicyConf { mode: Mode::Balance, ..PolicyConf::default() };
        let hyst = conf.hysteresis_ms * 1000;
        let idle = Load { workers: 1, accepting: true, ..Load::default() };
        let first_move = |util_now: bool| {
            let mut pol = Policy::new(0, conf);
            for k in 1..40u64 {
                let t = k * 250_000;
                let own = node(1, (k * 250).min(1000) as u32, 800, 800, 0);
                let procs: Vec<ProcLoad> = (1..=8).map(|p| busy_proc(p, t / 1000)).collect();
                if !pol.decide(t, &own, if util_now { 1.0 } else { 0.0 }, &[peer(1, idle)], &procs).is_empty() {
                    return t;
                }
            }
            panic!("no move");
        };
        // Busy from the first sample, and its processes may move once spawned here
        // `hysteresis_ms` ago: the first move one look after that.
        let now = first_move(true);
        assert!(now <= hyst + conf.interval_ms * 1000, "first move at {now} µs");
        // With the window's mean alone it would come most of a window later.
        assert!(first_move(false) >= now + 500_000);
    }

    #[test]
    fn a_move_that_arrived_frees_its_place_and_the_next_look_is_at_once() {
        // 8 whole-worker processes on one worker, an idle peer: 4 should go, one at a
        // time (`max_in_flight` 1).
        let conf = PolicyConf { mode: Mode::Balance, max_in_flight: 1, ..PolicyConf::default() };
        let mut pol = Policy::new(0, conf);
        let idle = Load { workers: 1, accepting: true, ..Load::default() };
        let own = node(1, 1000, 800, 800, 0);
        let procs: Vec<ProcLoad> = (1..=8).map(|p| busy_proc(p, 60_000)).collect();
        let mut t = 0;
        let first = loop {
            let m = pol.decide(t, &own, 1.0, &[peer(1, idle)], &procs);
            if !m.is_empty() {
                break m;
            }
            t = pol.next_look_us();
        };
        assert_eq!(first.len(), 1);
        // While it is in flight, no second one, and the next look is `interval_ms` on.
        assert!(pol.decide(t + 1_000, &own, 1.0, &[peer(1, idle)], &procs).is_empty());
        assert_eq!(pol.next_look_us(), t + 1_000 + conf.interval_ms * 1000);
        // A move that failed does not hasten the look (a refusal at once would be tried
        // again at once)...
        pol.moved(t + 3_000, first[0].pid, false, 0);
        assert_eq!(pol.next_look_us(), t + 1_000 + conf.interval_ms * 1000);
        let t = pol.next_look_us();
        let again = pol.decide(t, &own, 1.0, &[peer(1, idle)], &procs);
        assert_eq!(again.len(), 1);
        // ...one that arrived does: the next look is when it ended, and sends the next.
        pol.moved(t + 5_000, again[0].pid, true, 0);
        assert_eq!(pol.next_look_us(), t + 5_000);
        let next = pol.decide(t + 5_000, &own, 1.0, &[peer(1, idle)], &procs);
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].pid, again[0].pid);
    }

    #[test]
    fn the_pairs_draw_is_the_same_either_way_and_picks_each_end_as_often() {
        let pid = |node: u64, n: u64| (node << 48) | n;
        let mut lower = 0;
        for k in 0..1000 {
            let (p, q) = (pid(1, 2 + k), pid(2 + k % 2, 7 + 3 * k));
            assert_eq!(mover(p, q), mover(q, p));
            assert!(mover(p, q) == p || mover(p, q) == q);
            lower += usize::from(mover(p, q) == p);
        }
        assert!((400..=600).contains(&lower), "the lower pid moves {lower} times in 1000");
    }
}
