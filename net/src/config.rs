//! `mesh.toml`: the nodes of a mesh, where their certificates and files are, and the
//! defaults and limits they share. The schema, with every key and its default, is in
//! `net/MESH.md`.
//!
//! Loading checks everything it can without touching the network or the file system
//! (beyond reading the file): unknown keys and bad values are errors that name the file
//! and the key, e.g. `mesh.toml: node[1].addr: "127.0.0.1" is not a socket address
//! (expected host:port)`. Relative paths are resolved against the directory of the
//! config file, so every path in a [`MeshConfig`] is absolute.

use crate::proto::mechanism::{Choice, Forwarding};
use crate::proto::policy::PolicyConf;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tern_vm::heap::MAX_LIMIT_BYTES;

/// The name reserved for the operator's client certificate (`tern ctl`, `tern repl`):
/// no node may be called this.
pub const CTL_NAME: &str = "ctl";

/// Largest number of worker threads a node may ask for.
pub const MAX_WORKERS: usize = 1024;

/// The most pages `[mesh] readahead` may keep asked for ahead of a fault.
pub const MAX_READAHEAD: u32 = 4096;
/// The most `limits.migrations_in` and `limits.migrations_out` can be: each migration
/// runs on a thread of its own.
pub const MAX_MIGRATIONS: u64 = 1024;
/// The most `limits.files` can be (a process's file numbers are `u32`).
pub const MAX_FILES: u64 = 1 << 20;
/// The most a count limit (`processes`, `mailbox_messages`, `spawns_per_peer_s`) can be.
pub const MAX_COUNT: u64 = 1 << 40;

/// The largest JIT code cache a node may ask for (`jit.cache_bytes`, and
/// `tern run --jit-cache-mib`): 16 GiB.
pub const MAX_JIT_CACHE_BYTES: u64 = 16 << 30;

/// The smallest JIT code cache a node may ask for: 1 MiB.
pub const MIN_JIT_CACHE_BYTES: u64 = 1 << 20;

/// Default number of worker threads is the number of CPUs, capped at this.
pub const DEFAULT_WORKERS_CAP: usize = 64;

/// A loaded and validated `mesh.toml`.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The file it was read from, as given (used in messages).
    pub file: PathBuf,
    /// The directory relative paths were resolved against (absolute).
    pub base_dir: PathBuf,
    /// Where `tern cluster init` writes the CA and the node certificates.
    pub cert_dir: PathBuf,
    /// The replicated namespace's root: a node's replica is `<shared_root>/<name>` unless it sets `shared`.
    pub shared_root: PathBuf,
    /// Heap page size in bytes.
    pub page_size: usize,
    /// Every migration's mechanism unless it names one (default `auto`).
    pub migration: Choice,
    /// Transfer on reference: pages fetched after the one a fault touched.
    pub prefetch: u32,
    /// Transfer on reference: at most this many pages asked for ahead of a process that
    /// faults in order (0: none).
    pub readahead: u32,
    /// How messages find a process that has moved.
    pub forwarding: Forwarding,
    /// A migration's frames of pages may go as lz4 blocks, where that pays
    /// (`proto::compress`); `false`: never.
    pub compress: bool,
    pub limits: Limits,
    /// The load policy (`[policy]`).
    pub policy: PolicyConf,
    pub jit: JitConf,
    /// The nodes; a node's id is its index in this list plus one.
    pub nodes: Vec<NodeConf>,
    /// Certificate names refused (`[security] revoked`): a node's, `ctl`, or a control
    /// certificate's. A running node reads them again when the file changes.
    pub revoked: Vec<String>,
}

/// Sizes and times every node of the mesh uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of queued messages per process.
    pub mailbox_bytes: u64,
    /// Largest message.
    pub message_bytes: u64,
    /// Largest wire frame a node accepts.
    pub frame_bytes: u64,
    /// Heap limit per process.
    pub heap_bytes: u64,
    /// Queued messages per process.
    pub mailbox_messages: u64,
    /// Files a process may have open at once.
    pub files: u64,
    /// Processes per node (spawned there or migrated there).
    pub processes: u64,
    /// Migrations a node runs at once as their source.
    pub migrations_out: u64,
    /// Migrations a node runs at once as their destination.
    pub migrations_in: u64,
    /// Spawn requests a node carries out per second from each peer (programs'
    /// `spawn_on`, operators' `spawn --on` relayed); more are refused.
    pub spawns_per_peer_s: u64,
    /// Bytes of messages a node holds for processes it is locating.
    pub held_bytes: u64,
    /// Interval between probes of a watched peer (a node watches its next peer up
    /// in the ring of node ids; idle pairs send nothing).
    pub heartbeat_ms: u64,
    /// A peer not heard from for this long (while watched, owing an ack, or suspected)
    /// is down; the bound on how long a node takes to see a crashed peer down.
    pub node_down_ms: u64,
    /// How long a lazy migration's destination waits for a source that is down while
    /// pages of the process are only there, before it ends the process; `None`:
    /// [`Limits::source_down_ms`]'s default.
    pub source_down_ms: Option<u64>,
    /// Pre-copy: how far a process whose writes outrun the link may be slowed before the
    /// rounds stop, in levels (level L: it runs 1/2^L of the time; 0: never slowed).
    pub precopy_throttle: u64,
}

/// The most `[limits] precopy_throttle` may be: a process slowed to 1/256 (QEMU's
/// auto-converge goes to 99%); the VM applies no more.
pub const MAX_PRECOPY_THROTTLE: u64 = 8;

impl Limits {
    /// `source_down_ms`, by default ten times `node_down_ms` and at least 10 s: long
    /// enough for a stall, bounded for a node that never comes back.
    pub fn source_down_ms(&self) -> u64 {
        self.source_down_ms.unwrap_or_else(|| self.node_down_ms.saturating_mul(10).max(10_000))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mailbox_bytes: 64 << 20,
            message_bytes: 16 << 20,
            frame_bytes: 32 << 20,
            heap_bytes: 256 << 20,
            mailbox_messages: 1 << 20,
            files: 1024,
            processes: 4 << 20,
            migrations_out: 32,
            migrations_in: 32,
            spawns_per_peer_s: 10_000,
            held_bytes: 256 << 20,
            heartbeat_ms: 500,
            node_down_ms: 2000,
            source_down_ms: None,
            precopy_throttle: MAX_PRECOPY_THROTTLE,
        }
    }
}

/// `[policy]` as written: the numbers as they are, the mode as text (checked into a
/// [`PolicyConf`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    mode: String,
    high: f64,
    low: f64,
    hysteresis_ms: u64,
    residence_ms: u64,
    max_in_flight: u32,
    max_in_flight_mesh: u32,
    bandwidth_mib_s: u64,
    interval_ms: u64,
    gossip_ms: u64,
    window_ms: u64,
    min_cpu: f64,
    affinity_bytes_s: u64,
}

impl Default for RawPolicy {
    fn default() -> Self {
        let d = PolicyConf::default();
        RawPolicy {
            mode: d.mode.name().into(),
            high: d.high,
            low: d.low,
            hysteresis_ms: d.hysteresis_ms,
            residence_ms: d.residence_ms,
            max_in_flight: d.max_in_flight,
            max_in_flight_mesh: d.max_in_flight_mesh,
            bandwidth_mib_s: d.bandwidth_mib_s,
            interval_ms: d.interval_ms,
            gossip_ms: d.gossip_ms,
            window_ms: d.window_ms,
            min_cpu: d.min_cpu,
            affinity_bytes_s: d.affinity_bytes_s,
        }
    }
}

/// Every node's JIT (`[jit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitConf {
    /// When functions are compiled: `"off"`, `"on"` (once hot) or `"always"`.
    pub mode: tern_vm::jit::JitMode,
    /// Calls and loop back edges that make a function hot.
    pub threshold: u32,
    /// Whether a migration's destination compiles the functions the source had
    /// compiled as soon as the process resumes there (the hotness profile), rather than when
    /// they turn hot again there.
    pub profile: bool,
    /// The size limit of the node's code cache (machine code of compiled functions).
    pub cache_bytes: u64,
}

impl Default for JitConf {
    fn default() -> Self {
        JitConf {
            mode: tern_vm::jit::JitMode::On,
            threshold: tern_vm::VmConfig::default().jit_threshold,
            profile: true,
            cache_bytes: tern_vm::jit::DEFAULT_CODE_LIMIT,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawJit {
    mode: String,
    threshold: u32,
    profile: bool,
    cache_bytes: u64,
}

impl Default for RawJit {
    fn default() -> Self {
        let d = JitConf::default();
        RawJit { mode: "on".into(), threshold: d.threshold, profile: d.profile, cache_bytes: d.cache_bytes }
    }
}

/// One node of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConf {
    /// 1-based index in the config's node list.
    pub id: u16,
    pub name: String,
    /// The address it listens on and peers dial.
    pub addr: SocketAddr,
    /// Its file root (`/node/NAME/...`).
    pub root: PathBuf,
    /// Its replica of the shared namespace (`/shared/...`).
    pub shared: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Where `tern node` serves this node's `/metrics` (Prometheus), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where `tern node` serves the mesh's dashboard, if anywhere, and the control
    /// certificate it uses (`dashboard_as`; default `ctl`).
    pub dashboard: Option<SocketAddr>,
    pub dashboard_as: String,
}

/// A config that could not be loaded: the file, the key when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// A key path like `node[2].addr` or `limits.heartbeat_ms` (nodes count from 1).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: {}: {}", self.file, k, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    mesh: RawMesh,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    jit: RawJit,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    revoked: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMesh {
    cert_dir: String,
    shared_root: String,
    page_size: u64,
    migration: String,
    prefetch: u32,
    readahead: u32,
    forwarding: String,
    compress: bool,
}

impl Default for RawMesh {
    fn default() -> Self {
        RawMesh {
            cert_dir: "certs".into(),
            shared_root: "shared".into(),
            page_size: 4096,
            migration: Choice::default().to_string(),
            prefetch: 1,
            readahead: 256,
            forwarding: "link-update".into(),
            compress: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    addr: String,
    root: Option<String>,
    shared: Option<String>,
    workers: Option<u64>,
    metrics: Option<String>,
    dashboard: Option<String>,
    dashboard_as: Option<String>,
}

/// This machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`), if it can
/// be read.
pub fn machine_memory() -> Option<u64> {
    mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    if words.next() == Some("kB") {
        n.checked_mul(1024)
    } else {
        None
    }
}

/// A size for people: `1.5 GiB`, `512.0 MiB`.
fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// Checks a heap limit against the memory of the machine that would run it: a limit
/// above it is refused, since one process reaching it would run the machine out of
/// memory. `memory` is [`machine_memory`] (unknown: nothing to check against).
pub fn check_heap_fits(heap_bytes: u64, memory: Option<u64>) -> Result<(), String> {
    match memory {
        Some(m) if heap_bytes > m => Err(format!(
            "{heap_bytes} ({}) is more than this machine's memory ({m} bytes, {}): a process whose heap grew that far \
             would run the machine out of memory",
            human_bytes(heap_bytes),
            human_bytes(m)
        )),
        _ => Ok(()),
    }
}

impl MeshConfig {
    /// How long a pair may be idle (nothing heard either way) before its peer is probed
    /// anyway: `node_down_ms` times thirty or times the number of other nodes, whichever
    /// is more (a minute by default up to 31 nodes, 3.3 minutes at 100). It finds a link
    /// cut between two nodes that see everyone else (crashes are found by the watchers;
    /// a pair that carries traffic finds a cut within `node_down_ms`), and with the
    /// mesh's size in it a node sends at most one such probe every two `node_down_ms` on
    /// average, whatever the size: the idle cost stays linear in the number of nodes.
    pub fn idle_probe_ms(&self) -> u64 {
        let others = self.nodes.len().saturating_sub(1) as u64;
        self.limits.node_down_ms.saturating_mul(others.max(30))
    }

    /// Checks what depends on the machine a node of this config runs on (`memory`: its
    /// physical memory, [`machine_memory`]): `limits.heap_bytes` must fit in it. `tern
    /// node` and `tern mesh up` check this before starting; tools that only talk to a
    /// mesh (`tern ctl`, `tern repl`, `tern cluster init`) do not, as they may run on a
    /// smaller machine than the nodes.
    pub fn check_machine(&self, memory: Option<u64>) -> Result<(), ConfigError> {
        check_heap_fits(self.limits.heap_bytes, memory).map_err(|message| ConfigError {
            file: self.file.display().to_string(),
            key: Some("limits.heap_bytes".into()),
            message: format!("{message}; set it at most {}", memory.unwrap_or(0)),
        })
    }

    /// Reads and validates a config file. Relative paths in it resolve against its directory.
    pub fn load(path: &Path) -> Result<MeshConfig, ConfigError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: label.clone(),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&dir).map_err(|e| ConfigError {
            file: label.clone(),
            key: None,
            message: format!("cannot resolve its directory {}: {e}", dir.display()),
        })?;
        let mut cfg = Self::parse_labeled(&text, &base, &label)?;
        cfg.file = path.to_path_buf();
        Ok(cfg)
    }

    /// Parses and validates config text as if it were a file `mesh.toml` in `base_dir`
    /// (relative paths resolve against `base_dir`, which is made absolute).
    pub fn parse(text: &str, base_dir: &Path) -> Result<MeshConfig, ConfigError> {
        let base = std::path::absolute(base_dir).map_err(|e| ConfigError {
            file: "mesh.toml".into(),
            key: None,
            message: format!("cannot resolve {}: {e}", base_dir.display()),
        })?;
        Self::parse_labeled(text, &base, "mesh.toml")
    }

    fn parse_labeled(text: &str, base: &Path, label: &str) -> Result<MeshConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError { file: label.to_string(), key: Some(key.to_string()), message };
        let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(label, text, &e))?;

        let resolve = |key: &str, p: &str| -> Result<PathBuf, ConfigError> {
            if p.is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
            Ok(base.join(p))
        };
        let cert_dir = resolve("mesh.cert_dir", &raw.mesh.cert_dir)?;
        let shared_root = resolve("mesh.shared_root", &raw.mesh.shared_root)?;

        let ps = raw.mesh.page_size;
        if !ps.is_power_of_two() || !(64..=16 << 20).contains(&ps) {
            return Err(err("mesh.page_size", format!("{ps} is not a power of two from 64 to 16777216 (16 MiB)")));
        }
        let page_size = ps as usize;
        let migration: Choice = raw.mesh.migration.parse().map_err(|e| err("mesh.migration", e))?;
        let forwarding: Forwarding = raw.mesh.forwarding.parse().map_err(|e| err("mesh.forwarding", e))?;

        let l = raw.limits;
        for (key, v) in [
            ("limits.mailbox_bytes", l.mailbox_bytes),
            ("limits.message_bytes", l.message_bytes),
            ("limits.frame_bytes", l.frame_bytes),
            ("limits.heap_bytes", l.heap_bytes),
            ("limits.mailbox_messages", l.mailbox_messages),
            ("limits.files", l.files),
            ("limits.processes", l.processes),
            ("limits.migrations_out", l.migrations_out),
            ("limits.migrations_in", l.migrations_in),
            ("limits.spawns_per_peer_s", l.spawns_per_peer_s),
            ("limits.held_bytes", l.held_bytes),
            ("limits.heartbeat_ms", l.heartbeat_ms),
            ("limits.node_down_ms", l.node_down_ms),
            ("limits.source_down_ms", l.source_down_ms()),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        for (key, v, max) in [
            ("limits.mailbox_messages", l.mailbox_messages, MAX_COUNT),
            ("limits.files", l.files, MAX_FILES),
            ("limits.processes", l.processes, MAX_COUNT),
            ("limits.migrations_out", l.migrations_out, MAX_MIGRATIONS),
            ("limits.migrations_in", l.migrations_in, MAX_MIGRATIONS),
            ("limits.spawns_per_peer_s", l.spawns_per_peer_s, MAX_COUNT),
            ("limits.precopy_throttle", l.precopy_throttle, MAX_PRECOPY_THROTTLE),
        ] {
            if v > max {
                return Err(err(key, format!("{v} is more than {max}, the most it can be")));
            }
        }
        if l.message_bytes > l.mailbox_bytes {
            return Err(err(
                "limits.message_bytes",
                format!("{} exceeds limits.mailbox_bytes ({}): such a message could never be delivered", l.message_bytes, l.mailbox_bytes),
            ));
        }
        if l.message_bytes > l.frame_bytes {
            return Err(err(
                "limits.message_bytes",
                format!("{} exceeds limits.frame_bytes ({}): such a message could never be sent", l.message_bytes, l.frame_bytes),
            ));
        }
        if l.heap_bytes < ps {
            return Err(err("limits.heap_bytes", format!("{} is smaller than one page (mesh.page_size = {ps})", l.heap_bytes)));
        }
        if usize::try_from(l.heap_bytes).is_err() {
            return Err(err("limits.heap_bytes", format!("{} does not fit in this machine's address space", l.heap_bytes)));
        }
        if l.heap_bytes > MAX_LIMIT_BYTES as u64 {
            return Err(err(
                "limits.heap_bytes",
                format!("{} is more than the largest heap a process can have ({MAX_LIMIT_BYTES}, 32 GiB)", l.heap_bytes),
            ));
        }
        if l.node_down_ms < l.heartbeat_ms.saturating_mul(4) {
            return Err(err(
                "limits.node_down_ms",
                format!(
                    "{} must be at least four times limits.heartbeat_ms ({}): a watched peer is probed every heartbeat and suspected after half of node_down_ms",
                    l.node_down_ms, l.heartbeat_ms
                ),
            ));
        }

        let p = raw.policy;
        let policy = PolicyConf {
            mode: p.mode.parse().map_err(|e| err("policy.mode", e))?,
            high: p.high,
            low: p.low,
            hysteresis_ms: p.hysteresis_ms,
            residence_ms: p.residence_ms,
            max_in_flight: p.max_in_flight,
            max_in_flight_mesh: p.max_in_flight_mesh,
            bandwidth_mib_s: p.bandwidth_mib_s,
            interval_ms: p.interval_ms,
            gossip_ms: p.gossip_ms,
            window_ms: p.window_ms,
            min_cpu: p.min_cpu,
            affinity_bytes_s: p.affinity_bytes_s,
        };
        if let Err(e) = policy.check() {
            // `policy.KEY: why`, as every other key's error.
            let (key, why) = e.split_once(": ").unwrap_or(("policy", e.as_str()));
            return Err(err(key, why.to_string()));
        }

        let jit = JitConf {
            mode: raw.jit.mode.parse().map_err(|e| err("jit.mode", e))?,
            threshold: match raw.jit.threshold {
                0 => return Err(err("jit.threshold", "must be at least 1".into())),
                t => t,
            },
            profile: raw.jit.profile,
            cache_bytes: match raw.jit.cache_bytes {
                b if (MIN_JIT_CACHE_BYTES..=MAX_JIT_CACHE_BYTES).contains(&b) => b,
                b => {
                    return Err(err(
                        "jit.cache_bytes",
                        format!("{b} is not from {MIN_JIT_CACHE_BYTES} (1 MiB) to {MAX_JIT_CACHE_BYTES} (16 GiB)"),
                    ))
                }
            },
        };

        if raw.node.is_empty() {
            return Err(ConfigError {
                file: label.to_string(),
                key: None,
                message: "no nodes: add at least one [[node]] table with a name and an addr".into(),
            });
        }
        if raw.node.len() > u16::MAX as usize {
            return Err(ConfigError { file: label.to_string(), key: None, message: format!("more than {} nodes", u16::MAX) });
        }
        let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(DEFAULT_WORKERS_CAP);
        let mut nodes: Vec<NodeConf> = Vec::with_capacity(raw.node.len());
        for (i, n) in raw.node.into_iter().enumerate() {
            let id = (i + 1) as u16;
            let k = |field: &str| format!("node[{id}].{field}");
            check_node_name(&n.name).map_err(|m| err(&k("name"), m))?;
            if let Some(other) = nodes.iter().find(|o| o.name == n.name) {
                return Err(err(&k("name"), format!("{:?} is already the name of node[{}]", n.name, other.id)));
            }
            let addr: SocketAddr =
                n.addr.parse().map_err(|_| err(&k("addr"), format!("{:?} is not a socket address (expected host:port)", n.addr)))?;
            if addr.port() == 0 {
                return Err(err(&k("addr"), format!("{:?}: port 0 cannot be dialed by peers", n.addr)));
            }
            if addr.ip().is_unspecified() {
                return Err(err(&k("addr"), format!("{:?}: an unspecified address cannot be dialed by peers", n.addr)));
            }
            if let Some(other) = nodes.iter().find(|o| o.addr == addr) {
                return Err(err(&k("addr"), format!("{addr} is already the address of node[{}] ({})", other.id, other.name)));
            }
            let root = match &n.root {
                Some(r) => resolve(&k("root"), r)?,
                None => base.join("files").join(&n.name),
            };
            let shared = match &n.shared {
                Some(s) => resolve(&k("shared"), s)?,
                None => shared_root.join(&n.name),
            };
            if let Some(other) = nodes.iter().find(|o| o.shared == shared) {
                return Err(err(
                    &k("shared"),
                    format!(
                        "{} is already the shared replica of node[{}] ({}); every node needs its own",
                        shared.display(),
                        other.id,
                        other.name
                    ),
                ));
            }
            let workers = match n.workers {
                None => default_workers,
                Some(w) if (1..=MAX_WORKERS as u64).contains(&w) => w as usize,
                Some(w) => return Err(err(&k("workers"), format!("{w} is not from 1 to {MAX_WORKERS}"))),
            };
            let listen = |key: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
                v.as_ref()
                    .map(|a| {
                        a.parse::<SocketAddr>().map_err(|_| err(&k(key), format!("{a:?} is not a socket address (expected host:port)")))
                    })
                    .transpose()
            };
            let metrics = listen("metrics", &n.metrics)?;
            let dashboard = listen("dashboard", &n.dashboard)?;
            if metrics.is_some() && metrics == dashboard {
                return Err(err(&k("dashboard"), "is the same address as metrics (the dashboard serves /metrics too)".into()));
            }
            let dashboard_as = n.dashboard_as.unwrap_or_else(|| CTL_NAME.to_string());
            if crate::tls::control_role(&dashboard_as).is_none() {
                return Err(err(&k("dashboard_as"), format!("{dashboard_as:?} is not ctl, PERSON.operator or PERSON.observer")));
            }
            nodes.push(NodeConf { id, name: n.name, addr, root, shared, workers, metrics, dashboard, dashboard_as });
        }

        if raw.mesh.readahead > MAX_READAHEAD {
            return Err(err("mesh.readahead", format!("{} is more than {MAX_READAHEAD} pages", raw.mesh.readahead)));
        }
        for (i, name) in raw.security.revoked.iter().enumerate() {
            if crate::tls::control_role(name).is_none() && check_node_name(name).is_err() {
                return Err(err(
                    &format!("security.revoked[{i}]"),
                    format!("{name:?} is not a certificate name (a node's, ctl, PERSON.operator or PERSON.observer)"),
                ));
            }
        }

        Ok(MeshConfig {
            file: PathBuf::from(label),
            base_dir: base.to_path_buf(),
            cert_dir,
            shared_root,
            page_size,
            migration,
            prefetch: raw.mesh.prefetch.min(1024),
            readahead: raw.mesh.readahead,
            forwarding,
            compress: raw.mesh.compress,
            limits: l,
            policy,
            jit,
            nodes,
            revoked: raw.security.revoked,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeConf> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node with id `id` (its 1-based index in the list).
    pub fn node_by_id(&self, id: u16) -> Option<&NodeConf> {
        self.nodes.get(usize::from(id).checked_sub(1)?)
    }

    /// The file name used in messages (the path as it was given).
    pub fn file_label(&self) -> String {
        self.file.display().to_string()
    }
}

/// A node name: `[a-z0-9_-]{1,32}`, usable as a certificate's DNS name (so not all
/// digits, not starting or ending with `-`), and not the reserved `ctl` or `any` (the
/// least loaded node, to `spawn --on`).
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err(format!("{name:?} is not a node name (1 to 32 of a-z, 0-9, '_' and '-')"));
    }
    if name == CTL_NAME {
        return Err(format!("{name:?} is reserved for the operator's certificate"));
    }
    if name == "any" {
        return Err(format!("{name:?} is reserved: `--on any` means the least loaded node"));
    }
    // The name is the DNS name in the node's certificate, and peers verify it as such.
    if rustls::pki_types::DnsName::try_from(name).is_err() {
        return Err(format!("{name:?} cannot be a certificate name (it must not be a number or start or end with '-')"));
    }
    Ok(())
}

/// A toml/serde error, with the key it is about when it can be found from the error's
/// position: the enclosing table header and the key on that line.
fn toml_error(label: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return ConfigError { file: label.to_string(), key: None, message };
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.len() - line_start + 1;
    let line = text[line_start..].lines().next().unwrap_or("");

    // The table the line is in: the last header above it. `[[node]]` headers count from 1.
    let mut table: Option<String> = None;
    let mut nodes = 0usize;
    for l in text[..line_start].lines() {
        let t = strip_comment(l).trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let h = h.trim();
            if h == "node" {
                nodes += 1;
                table = Some(format!("node[{nodes}]"));
            } else {
                table = Some(h.to_string());
            }
        } else if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = Some(h.trim().to_string());
        }
    }
    let t = strip_comment(line).trim();
    let header = t.starts_with('[');
    let key = if header {
        // An error about a whole table (e.g. an unknown table or a missing key in it).
        let h = t.trim_start_matches('[').trim_end_matches(']').trim();
        if h == "node" && t.starts_with("[[") {
            Some(format!("node[{}]", nodes + 1))
        } else {
            Some(h.to_string())
        }
    } else {
        let k = t.split('=').next().map(str::trim).filter(|k| !k.is_empty() && t.contains('='));
        match (&table, k) {
            (Some(tb), Some(k)) => Some(format!("{tb}.{k}")),
            (None, Some(k)) => Some(k.to_string()),
            (Some(tb), None) => Some(tb.clone()),
            (None, None) => None,
        }
    };
    ConfigError { file: label.to_string(), key, message: format!("{message} (line {line_no}, column {col})") }
}

fn strip_comment(line: &str) -> &str {
    // Good enough for locating headers and keys: a '#' inside a string only shortens
    // the text searched, never changes the header or key found before it.
    line.split('#').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::policy::Mode;

    const GOOD: &str = r#"
[mesh]
cert_dir = "certs"
shared_root = "shared"
page_size = 8192
migration = "lazy"
forwarding = "link-traversal"

[limits]
mailbox_bytes = 1000000
message_bytes = 1000
frame_bytes = 2000
heap_bytes = 1048576
heartbeat_ms = 100
node_down_ms = 1000
source_down_ms = 3000
files = 16

[policy]
mode = "balance"
high = 0.9
low = 0.2
hysteresis_ms = 3000
residence_ms = 4000
max_in_flight = 3
interval_ms = 500
gossip_ms = 100

[jit]
mode = "always"
threshold = 50
profile = false
cache_bytes = 8388608

[[node]]
name = "a"
addr = "127.0.0.1:7401"
root = "files/a"
workers = 2

[[node]]
name = "b-2"
addr = "[::1]:7402"
shared = "/abs/replica-b"

[[node]]
name = "c_3"
addr = "127.0.0.1:7403"
"#;

    fn parse(text: &str) -> Result<MeshConfig, ConfigError> {
        MeshConfig::parse(text, Path::new("/etc/tern"))
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const ONE_NODE: &str = "[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n";

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cert_dir, Path::new("/etc/tern/certs"));
        assert_eq!(c.shared_root, Path::new("/etc/tern/shared"));
        assert_eq!(c.page_size, 8192);
        assert_eq!(c.migration, Choice::Use(crate::proto::mechanism::Mechanism::Lazy));
        assert_eq!(c.forwarding, Forwarding::LinkTraversal);
        assert_eq!(
            c.limits,
            Limits {
                mailbox_bytes: 1000000,
                message_bytes: 1000,
                frame_bytes: 2000,
                heap_bytes: 1048576,
                heartbeat_ms: 100,
                node_down_ms: 1000,
                source_down_ms: Some(3000),
                files: 16,
                ..Limits::default()
            }
        );
        assert_eq!(
            c.policy,
            PolicyConf {
                mode: Mode::Balance,
                high: 0.9,
                low: 0.2,
                hysteresis_ms: 3000,
                residence_ms: 4000,
                max_in_flight: 3,
                interval_ms: 500,
                gossip_ms: 100,
                ..PolicyConf::default()
            }
        );
        assert_eq!(c.jit, JitConf { mode: tern_vm::jit::JitMode::Always, threshold: 50, profile: false, cache_bytes: 8 << 20 });
        assert_eq!(c.nodes.len(), 3);
        let a = c.node("a").unwrap();
        assert_eq!((a.id, a.addr, a.workers), (1, "127.0.0.1:7401".parse().unwrap(), 2));
        assert_eq!(a.root, Path::new("/etc/tern/files/a"));
        assert_eq!(a.shared, Path::new("/etc/tern/shared/a"));
        let b = c.node_by_id(2).unwrap();
        assert_eq!(b.name, "b-2");
        assert_eq!(b.addr, "[::1]:7402".parse().unwrap());
        assert_eq!(b.root, Path::new("/etc/tern/files/b-2"));
        assert_eq!(b.shared, Path::new("/abs/replica-b"));
        assert!(b.workers >= 1 && b.workers <= DEFAULT_WORKERS_CAP);
        assert_eq!(c.node_by_id(3).unwrap().name, "c_3");
        assert!(c.node_by_id(0).is_none() && c.node_by_id(4).is_none() && c.node("zed").is_none());
    }

    #[test]
    fn defaults() {
        let c = parse(ONE_NODE).unwrap();
        assert_eq!(c.page_size, 4096);
        assert_eq!(c.migration, Choice::Auto);
        assert_eq!(c.forwarding, Forwarding::LinkUpdate);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.mailbox_bytes, 67108864);
        assert_eq!(c.limits.message_bytes, 16777216);
        assert_eq!(c.limits.frame_bytes, 33554432);
        assert_eq!(c.limits.heap_bytes, 268435456);
        assert_eq!((c.limits.heartbeat_ms, c.limits.node_down_ms), (500, 2000));
        assert_eq!(c.limits.source_down_ms(), 20000);
        assert_eq!(Limits { node_down_ms: 500, ..Limits::default() }.source_down_ms(), 10000);
        assert_eq!(c.policy, PolicyConf::default());
        assert_eq!(c.policy.mode, Mode::Off, "nothing moves unless asked to");
        assert_eq!(c.jit, JitConf { mode: tern_vm::jit::JitMode::On, threshold: 1000, profile: true, cache_bytes: 64 << 20 });
        assert_eq!(c.cert_dir, Path::new("/etc/tern/certs"));
        assert!(c.compress, "frames of pages may go compressed unless told not to");
        let off = parse(&format!("[mesh]\ncompress = false\n\n{ONE_NODE}")).unwrap();
        assert!(!off.compress);
    }

    #[test]
    fn the_example_mesh_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh.toml");
        let c = MeshConfig::load(&path).unwrap();
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(c.cert_dir.is_absolute() && c.cert_dir.ends_with("examples/certs"), "{}", c.cert_dir.display());
    }

    #[test]
    fn unknown_keys_are_named_at_every_level() {
        let e = parse_err(&format!("bogus = 1\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: bogus: unknown field `bogus`"), "{e}");
        let e = parse_err(&format!("[mesh]\npage_size = 4096\ncert_dri = \"x\"\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: mesh.cert_dri: unknown field `cert_dri`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = parse_err(&format!("[limits]\nheartbeat = 5\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: limits.heartbeat: unknown field `heartbeat`"), "{e}");
        let e = parse_err(&format!("[policy]\nenabled = true\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: policy.enabled: unknown field `enabled`"), "{e}");
        let e = parse_err(&format!("{ONE_NODE}[[node]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\nport = 7402\n"));
        assert!(e.starts_with("mesh.toml: node[2].port: unknown field `port`"), "{e}");
        let e = parse_err(&format!("[extra]\nx = 1\n{ONE_NODE}"));
        assert!(e.contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn bad_types_name_the_key() {
        let e = parse_err(&format!("[mesh]\npage_size = \"big\"\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: mesh.page_size: invalid type"), "{e}");
        let e = parse_err(&format!("[limits]\nheartbeat_ms = -5\n{ONE_NODE}"));
        assert!(e.starts_with("mesh.toml: limits.heartbeat_ms: "), "{e}");
        let e = parse_err("[[node]]\nname = \"a\"\n");
        assert!(e.contains("missing field `addr`"), "{e}");
        assert!(e.starts_with("mesh.toml: node[1]"), "{e}");
        let e = parse_err("[mesh\n");
        assert!(e.starts_with("mesh.toml: "), "{e}");
    }

    #[test]
    fn bad_addresses() {
        let e = parse_err("[[node]]\nname = \"a\"\naddr = \"127.0.0.1\"\n");
        assert_eq!(e, r#"mesh.toml: node[1].addr: "127.0.0.1" is not a socket address (expected host:port)"#);
        let e = parse_err("[[node]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\n");
        assert!(e.starts_with("mesh.toml: node[1].addr: ") && e.contains("port 0"), "{e}");
        let e = parse_err("[[node]]\nname = \"a\"\naddr = \"0.0.0.0:7401\"\n");
        assert!(e.starts_with("mesh.toml: node[1].addr: ") && e.contains("unspecified"), "{e}");
        let e = parse_err(&format!("{ONE_NODE}[[node]]\nname = \"b\"\naddr = \"127.0.0.1:7401\"\n"));
        assert_eq!(e, "mesh.toml: node[2].addr: 127.0.0.1:7401 is already the address of node[1] (a)");
    }

    #[test]
    fn bad_names() {
        let e = parse_err(&format!("{ONE_NODE}[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7402\"\n"));
        assert_eq!(e, r#"mesh.toml: node[2].name: "a" is already the name of node[1]"#);
        for bad in ["", "A", "a.b", "a b", "x".repeat(33).as_str(), "ctl", "123", "-a", "a-"] {
            let e = parse_err(&format!("[[node]]\nname = \"{bad}\"\naddr = \"127.0.0.1:7401\"\n"));
            assert!(e.starts_with("mesh.toml: node[1].name: "), "{bad}: {e}");
        }
        assert!(parse("").unwrap_err().to_string().contains("no nodes"));
    }

    #[test]
    fn bad_values() {
        for (text, key) in [
            ("[mesh]\npage_size = 4000\n", "mesh.page_size"),
            ("[mesh]\npage_size = 32\n", "mesh.page_size"),
            ("[mesh]\npage_size = 33554432\n", "mesh.page_size"),
            ("[mesh]\nmigration = \"teleport\"\n", "mesh.migration"),
            ("[mesh]\nforwarding = \"carrier-pigeon\"\n", "mesh.forwarding"),
            ("[mesh]\ncert_dir = \"\"\n", "mesh.cert_dir"),
            ("[limits]\nnode_down_ms = 200\n", "limits.node_down_ms"),
            ("[limits]\nheartbeat_ms = 3000\n", "limits.node_down_ms"),
            ("[limits]\nheartbeat_ms = 0\n", "limits.heartbeat_ms"),
            ("[limits]\nsource_down_ms = 0\n", "limits.source_down_ms"),
            ("[limits]\nmessage_bytes = 100000000\n", "limits.message_bytes"),
            ("[limits]\nheap_bytes = 100\n", "limits.heap_bytes"),
            ("[limits]\nprocesses = 0\n", "limits.processes"),
            ("[limits]\nmigrations_in = 5000\n", "limits.migrations_in"),
            ("[limits]\nfiles = 0\n", "limits.files"),
            ("[limits]\nprecopy_throttle = 9\n", "limits.precopy_throttle"),
            ("[limits]\nheap_bytes = 1099511627776\n", "limits.heap_bytes"),
            ("[limits]\nheap_bytes = 9223372036854775807\n", "limits.heap_bytes"),
            ("[limits]\nheap_bytes = 34359738369\n", "limits.heap_bytes"),
            ("[jit]\ncache_bytes = 0\n", "jit.cache_bytes"),
            ("[jit]\ncache_bytes = 65536\n", "jit.cache_bytes"),
            ("[jit]\ncache_bytes = 17179869185\n", "jit.cache_bytes"),
            ("[policy]\nhigh = 1.5\n", "policy.high"),
            ("[policy]\nlow = nan\n", "policy.low"),
            ("[policy]\nlow = 0.9\nhigh = 0.5\n", "policy.low"),
            ("[policy]\ninterval_ms = 0\n", "policy.interval_ms"),
            ("[policy]\ngossip_ms = 9223372036854775807\nwindow_ms = 9223372036854775807\n", "policy.gossip_ms"),
            ("[policy]\nhysteresis_ms = 86400001\n", "policy.hysteresis_ms"),
            ("[policy]\nresidence_ms = 9223372036854775807\n", "policy.residence_ms"),
            ("[policy]\nwindow_ms = 10\ngossip_ms = 100\n", "policy.window_ms"),
            ("[policy]\nmax_in_flight = 0\n", "policy.max_in_flight"),
            ("[policy]\nbandwidth_mib_s = 9223372036854775807\n", "policy.bandwidth_mib_s"),
            ("[security]\nrevoked = [\"Bad Name\"]\n", "security.revoked[0]"),
            ("[mesh]\nreadahead = 4097\n", "mesh.readahead"),
            ("[security]\nrevoked = [\"olive.admin\"]\n", "security.revoked[0]"),
            ("[policy]\nmode = \"wander\"\n", "policy.mode"),
            ("[jit]\nmode = \"fast\"\n", "jit.mode"),
            ("[jit]\nthreshold = 0\n", "jit.threshold"),
            ("[jit]\nthreshold = -1\n", "jit.threshold"),
            ("[jit]\nprofile = \"yes\"\n", "jit.profile"),
        ] {
            let e = parse_err(&format!("{text}{ONE_NODE}"));
            assert!(e.starts_with(&format!("mesh.toml: {key}: ")), "{text}: {e}");
        }
        let e = parse_err("[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\nworkers = 0\n");
        assert!(e.starts_with("mesh.toml: node[1].workers: "), "{e}");
        let e = parse_err("[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\nroot = \"\"\n");
        assert!(e.starts_with("mesh.toml: node[1].root: "), "{e}");
        // The HTTP servers a node may run.
        let node = |extra: &str| format!("[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n{extra}");
        for (extra, key, says) in [
            ("metrics = \"localhost\"\n", "metrics", "is not a socket address"),
            ("metrics = 9100\n", "metrics", "invalid type"),
            ("dashboard = \"127.0.0.1\"\n", "dashboard", "is not a socket address"),
            ("metrics = \"127.0.0.1:9100\"\ndashboard = \"127.0.0.1:9100\"\n", "dashboard", "the same address as metrics"),
            ("dashboard = \"127.0.0.1:7480\"\ndashboard_as = \"root\"\n", "dashboard_as", "is not ctl, PERSON.operator or PERSON.observer"),
            ("dashboard_as = \"eve.admin\"\n", "dashboard_as", "is not ctl"),
        ] {
            let e = parse_err(&node(extra));
            assert!(e.starts_with(&format!("mesh.toml: node[1].{key}: ")) && e.contains(says), "{extra}: {e}");
        }
        let c = parse(&node("metrics = \"127.0.0.1:9100\"\ndashboard = \"[::1]:7480\"\ndashboard_as = \"olive.observer\"\n")).unwrap();
        let a = &c.nodes[0];
        assert_eq!(
            (a.metrics, a.dashboard, a.dashboard_as.as_str()),
            (Some("127.0.0.1:9100".parse().unwrap()), Some("[::1]:7480".parse().unwrap()), "olive.observer")
        );
        let e = parse_err(&format!("{ONE_NODE}[[node]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\nshared = \"shared/a\"\n"));
        assert!(e.starts_with("mesh.toml: node[2].shared: ") && e.contains("node[1] (a)"), "{e}");
        let e = parse_err("[mesh]\nmigration = \"teleport\"\n[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n");
        assert_eq!(
            e,
            r#"mesh.toml: mesh.migration: unknown migration mechanism "teleport" (expected auto, freeze, precopy, lazy or hybrid)"#
        );
    }

    #[test]
    fn a_heap_limit_above_the_machines_memory_is_refused_where_a_node_starts() {
        let gib = 1u64 << 30;
        let c = parse(&format!("[limits]\nheap_bytes = {}\n{ONE_NODE}", 8 * gib)).unwrap();
        // The same file on a machine of 4 GiB: refused, naming the key and the memory.
        let e = c.check_machine(Some(4 * gib)).unwrap_err().to_string();
        assert_eq!(
            e,
            "mesh.toml: limits.heap_bytes: 8589934592 (8.0 GiB) is more than this machine's memory (4294967296 bytes, 4.0 GiB): \
             a process whose heap grew that far would run the machine out of memory; set it at most 4294967296"
        );
        // On a machine of 16 GiB, or exactly 8, or one whose memory is unknown: accepted.
        c.check_machine(Some(16 * gib)).unwrap();
        c.check_machine(Some(8 * gib)).unwrap();
        c.check_machine(None).unwrap();
        // The largest heap a process can have (32 GiB) is still accepted by the file alone.
        parse(&format!("[limits]\nheap_bytes = {}\n{ONE_NODE}", 32 * gib)).unwrap();
        let e = parse_err(&format!("[limits]\nheap_bytes = 1099511627776\n{ONE_NODE}"));
        assert_eq!(e, "mesh.toml: limits.heap_bytes: 1099511627776 is more than the largest heap a process can have (34359738368, 32 GiB)");
        // This machine's memory is read, and the default limit fits any machine a node runs on.
        let m = machine_memory();
        if cfg!(target_os = "linux") {
            assert!(m.is_some_and(|m| m > 0), "{m:?}");
        }
        parse(ONE_NODE).unwrap().check_machine(m).unwrap();
    }

    #[test]
    fn mem_total_is_read_from_meminfo() {
        assert_eq!(mem_total("MemFree: 10 kB\nMemTotal:       24684544 kB\nSwapTotal: 0 kB\n"), Some(24684544 * 1024));
        assert_eq!(mem_total("MemTotal: 1000\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total("MemTotal: 5 pages\n"), None);
        assert_eq!(mem_total("MemFree: 10 kB\n"), None);
        assert_eq!(mem_total("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        let text = "[mesh]\ncert_dir = \"../keys\"\nshared_root = \"/srv/shared\"\n\
                    [[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\nroot = \"data/a\"\n\
                    [[node]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\nshared = \"rep/b\"\n";
        std::fs::write(sub.join("mesh.toml"), text).unwrap();
        let c = MeshConfig::load(&sub.join("mesh.toml")).unwrap();
        assert_eq!(c.base_dir, sub);
        assert_eq!(c.cert_dir, sub.join("../keys"));
        assert_eq!(c.shared_root, Path::new("/srv/shared"));
        let (a, b) = (c.node("a").unwrap(), c.node("b").unwrap());
        assert_eq!(a.root, sub.join("data/a"));
        assert_eq!(a.shared, Path::new("/srv/shared/a"));
        assert_eq!(b.root, sub.join("files/b"));
        assert_eq!(b.shared, sub.join("rep/b"));
        assert!([&c.cert_dir, &a.root, &a.shared, &b.root, &b.shared].iter().all(|p| p.is_absolute()));

        let missing = dir.path().join("nope.toml");
        let e = MeshConfig::load(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: cannot read", missing.display())), "{e}");
        let relative = MeshConfig::parse(ONE_NODE, Path::new("rel")).unwrap();
        assert!(relative.cert_dir.is_absolute());
    }
}
