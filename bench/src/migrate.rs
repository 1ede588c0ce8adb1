//! `tern-bench migrate`: live migration between two nodes, each mechanism (freeze,
//! precopy, lazy, hybrid) at several heap sizes and write rates, beside the raw QUIC and
//! TCP throughput between two processes of the same machine as the ceilings.
//!
//! Every run starts a fresh 2-node mesh on loopback, **each node its own `tern node` OS
//! process** (a fresh config and certificates, the heap limit raised to 2 GiB), and
//! drives it through the control API `tern ctl` uses: it starts
//! `bench/programs/migrate_heap.tern` on node a with the heap size and writer as
//! constants (its output streamed back), waits for its "ready" (the heap is built),
//! measures its write rate (pages touched per ms, from two "writes" answers 300 ms
//! apart), migrates it to node b with the mechanism asked for and keeps the node's
//! `MigReport`. For lazy and hybrid the process is asked to sum its whole heap as soon
//! as node b lists it, so its absent pages fault in while the migration still runs (the
//! report comes when the destination has every page, by fault or background push); for
//! freeze and precopy it is asked after. Either way the sum must match what the heap held
//! (every cell 1, plus the writes), so a migration that lost or mixed up pages fails its
//! run.
//!
//! The ceilings (`crate::ceiling`): one QUIC stream with the mesh's TLS, and one TCP
//! connection, from this process to a `tern-bench ceiling-sink` child; best of three.
//!
//! The migration anchor (`crate::qemu`, unless `--no-qemu`): QEMU's pre-copy live
//! migration of a stopped guest of each heap size, its RAM filled with random bytes,
//! between two `qemu-system-x86_64` processes on loopback, run after Tern's runs of that
//! size; skipped with a loud warning when QEMU is not installed.
//!
//! Output: a markdown table (printed, and written to `bench/results/migration-speed.md`
//! with the targets and whether they were met) and a chart of freeze time against heap
//! size per mechanism, one panel per writer (`bench/results/migration-freeze.svg`).
//!
//! [`Mesh`] (two `MeshNode`s in this process) is for `jit-migrate`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tern_net::config::MeshConfig;
use tern_net::mesh::{LogSink, MeshNode, NodeOptions};
use tern_net::ops::ctl::CtlClient;
use tern_net::proto::mechanism::How;
use tern_net::proto::wire::{CtlReply, CtlRequest, MigReport};
use tokio::sync::mpsc;

use crate::ceiling::{self, Ceiling};
use crate::procs::{self, TempDir};
use crate::qemu;
use crate::remote::TernMesh;
use crate::report;

/// The program every run migrates (the runner puts its constants before it).
const PROGRAM: &str = include_str!("../programs/migrate_heap.tern");

/// The mechanisms, in table order.
pub const MECHANISMS: [&str; 5] = ["freeze", "precopy", "lazy", "hybrid", "auto"];
/// The writers, in table order.
pub const RATES: [&str; 3] = ["none", "light", "heavy"];
/// Heap sizes of a full run, MiB.
const FULL_SIZES: [u64; 4] = [1, 16, 256, 1024];
/// Heap sizes of `--quick`, MiB.
const QUICK_SIZES: [u64; 2] = [1, 16];

/// Extra `[limits]` of the bench's mesh: 1 GiB heaps need more than the default 256 MiB
/// (the heap holds a little more than its arrays).
const EXTRA_LIMITS: &str = "heap_bytes = 2147483648\n";

/// What the bench's mesh config has beyond a loopback mesh's: lines after its
/// `[limits]` header (more limits, or more tables) and keys of its `[mesh]` table.
struct MeshExtra {
    limits: String,
    mesh: String,
}

/// Page size of the mesh (the config's default).
const PAGE_BYTES: u64 = 4096;

/// Messages the program answers.
const MSG_SUM: i64 = 1;
const MSG_STOP: i64 = 2;
const MSG_WRITES: i64 = 3;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Heap sizes in MiB, comma-separated (default: 1,16,256,1024; with --quick 1,16).
    #[arg(long, value_name = "MIB,...", value_delimiter = ',')]
    sizes: Vec<u64>,
    /// Writers, comma-separated: none, light, heavy (default: all).
    #[arg(long, value_name = "RATE,...", value_delimiter = ',')]
    rates: Vec<String>,
    /// Mechanisms, comma-separated: freeze, precopy, lazy, hybrid, auto (default: all).
    #[arg(long, value_name = "MECH,...", value_delimiter = ',')]
    mechanisms: Vec<String>,
    /// A short run: heaps of 1 and 16 MiB (unless --sizes) and a 256 MiB ceiling
    /// transfer; the result files are not written unless --write.
    #[arg(long)]
    quick: bool,
    /// Write the result files even for --quick or a subset of sizes, rates or mechanisms.
    #[arg(long)]
    write: bool,
    /// Light writer: pages touched per 1 ms sleep.
    #[arg(long, value_name = "N", default_value_t = 4)]
    light_pages: u32,
    /// Heavy writer: pages touched between two looks at the mailbox (no sleep).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    heavy_batch: u32,
    /// Idle processes (each waiting in `recv`) the measured process starts on node a
    /// before it builds its heap: a migration out of a crowded node (issue 18's 1,000,000).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=2_000_000))]
    crowd: u32,
    /// MiB sent on one QUIC stream for the raw-throughput ceiling (default 1024, 256
    /// with --quick).
    #[arg(long, value_name = "MIB")]
    ceiling_mib: Option<u64>,
    /// Give up on one run (heap building, migration, checking) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// The Tern binary the nodes run. Without it the runner builds
    /// <workspace>/target/release/tern.
    #[arg(long, value_name = "PATH")]
    tern: Option<std::path::PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Skip the QEMU pre-copy peer (the migration anchor: a stopped QEMU guest of each
    /// heap size migrated between two qemu-system-x86_64 processes on loopback).
    #[arg(long)]
    no_qemu: bool,
    /// Cap the migration traffic at N MiB/s (`[policy] bandwidth_mib_s`): faults
    /// beside a background push that does not fill the link.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    cap_mib_s: Option<u64>,
    /// The mesh's `[mesh] readahead` (pages asked for ahead of page faults in order;
    /// 0: none); the config's default if not given.
    #[arg(long, value_name = "PAGES")]
    readahead: Option<u32>,
    /// Frames of pages never go compressed (`[mesh] compress = false`): the bench's heap
    /// (every cell 1) compresses to almost nothing, so this shows the link and the
    /// pipeline without lz4.
    #[arg(long)]
    no_compress: bool,
    /// The heap's cells: `ones` (every cell 1, as a heap of one repeated value: lz4
    /// shrinks it to almost nothing) or `random` (random ints: pages lz4 cannot shrink,
    /// so compression is tried and refused). Building a random heap takes seconds a GiB.
    #[arg(long, value_name = "FILL", default_value = "ones", value_parser = ["ones", "random"])]
    fill: String,
    /// Touch this many GiB of memory once before the runs. A freshly started virtual
    /// machine may populate its memory only as it is first touched (measured at about
    /// 3 s a GiB on one), which every large heap built or received would pay for; the
    /// bench measures it either way and says so in the results.
    #[arg(long, value_name = "GIB", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    warm_memory_gib: u64,
}

/// `bytes` of freshly allocated memory, each of its pages written once.
fn touched(bytes: usize) -> Vec<u8> {
    let mut v: Vec<u8> = vec![0; bytes];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(v)
}

/// Milliseconds per GiB to touch freshly allocated memory, a page at a time, over
/// `mib` MiB (freed again).
fn first_touch_ms_per_gib(mib: usize) -> f64 {
    let start = Instant::now();
    drop(touched(mib << 20));
    start.elapsed().as_secs_f64() * 1000.0 * 1024.0 / mib as f64
}

/// Touches `gib` GiB once (a GiB at a time, all held until the end, so that the
/// machine's memory, not the same GiB again, is touched), then frees it.
fn warm_memory(gib: u64) {
    let held: Vec<Vec<u8>> = (0..gib).map(|_| touched(1 << 30)).collect();
    drop(held);
}

/// The memory available now (`MemAvailable` in /proc/meminfo), in GiB; `None` where
/// it cannot be read.
fn available_gib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib >> 20)
}

/// The memory's first-touch speed, measured before the runs: a line for the results,
/// and a warning on stderr if it is slow.
fn memory_note(warm_gib: u64) -> String {
    if warm_gib > 0 {
        let start = Instant::now();
        warm_memory(warm_gib);
        eprintln!("touched {warm_gib} GiB of memory once in {:.1} s (--warm-memory-gib)", start.elapsed().as_secs_f64());
    }
    let ms = first_touch_ms_per_gib(256);
    let note = format!(
        "fresh memory touched at {ms:.0} ms per GiB (256 MiB, a page at a time){}",
        if warm_gib > 0 { format!(", after {warm_gib} GiB were touched once") } else { String::new() }
    );
    if ms > 1000.0 {
        eprintln!(
            "warning: fresh memory takes {ms:.0} ms per GiB to touch here: a new virtual machine may populate its \
             memory on first use, and every large heap built or received pays for it; warm it first (--warm-memory-gib 16)"
        );
    }
    note
}

/// The transports' ceilings, each between two OS processes.
struct Ceilings {
    quic: Ceiling,
    tcp: Ceiling,
}

/// What one run measured.
struct RunResult {
    size_mib: u64,
    rate: &'static str,
    mechanism: &'static str,
    /// Pages touched per ms before the migration (0 for `none`).
    pages_per_ms: f64,
    /// The report, when the migration answered.
    report: Option<MigReport>,
    /// Why the run failed (migration, timeout, wrong sum), if it did.
    problem: Option<String>,
    /// Seconds the heap took to build.
    build_s: f64,
}

impl RunResult {
    fn ok_report(&self) -> Option<&MigReport> {
        self.report.as_ref().filter(|r| r.ok && self.problem.is_none())
    }
}

pub fn run(args: &MigrateArgs) -> Result<bool> {
    let sizes: Vec<u64> = if !args.sizes.is_empty() {
        args.sizes.clone()
    } else if args.quick {
        QUICK_SIZES.to_vec()
    } else {
        FULL_SIZES.to_vec()
    };
    if let Some(&bad) = sizes.iter().find(|&&s| s == 0 || s > 1024) {
        bail!("--sizes: {bad} MiB is not between 1 and 1024");
    }
    let rates = pick(&args.rates, &RATES, "--rates")?;
    let mechanisms = pick(&args.mechanisms, &MECHANISMS, "--mechanisms")?;
    let full = !args.quick && args.sizes.is_empty() && args.rates.is_empty() && args.mechanisms.is_empty();
    let ceiling_mib = args.ceiling_mib.unwrap_or(if args.quick { 256 } else { 1024 });
    let limit = Duration::from_secs(args.timeout);
    let temp = TempDir::new("migrate")?;
    if args.warm_memory_gib > 0 {
        // More than the machine has would be the OOM killer's, not a clear error.
        if let Some(avail) = available_gib().filter(|&a| args.warm_memory_gib >= a) {
            bail!("--warm-memory-gib {}: only {avail} GiB of memory are available here; ask for less", args.warm_memory_gib);
        }
    }
    let load_before = load_average();
    let memory = memory_note(args.warm_memory_gib);

    let tern = procs::tern_to_measure(args.tern.as_deref(), args.no_build, &crate::workspace_root())?;
    let mut peer = qemu::Peer::new(args.no_qemu);
    eprintln!("raw QUIC ceiling: {ceiling_mib} MiB on one stream to another process, best of 3 ...");
    let quic = ceiling::quic(&temp.0.join("ceiling"), ceiling_mib << 20, 3)?;
    eprintln!("  {:.0} MiB/s ({})", quic.mib_s(), quic.times_text());
    eprintln!("raw TCP ceiling: {ceiling_mib} MiB on one loopback connection to another process, best of 3 ...");
    let tcp = ceiling::tcp(ceiling_mib << 20, 3)?;
    eprintln!("  {:.0} MiB/s ({})", tcp.mib_s(), tcp.times_text());
    let ceiling = Ceilings { quic, tcp };

    let mut results = Vec::new();
    let total = sizes.len() * rates.len() * mechanisms.len();
    let mut n = 0;
    for &size in &sizes {
        for &rate in &rates {
            for &mechanism in &mechanisms {
                n += 1;
                eprint!("[{n}/{total}] {size} MiB, writer {rate}, {mechanism}: ");
                let dir = temp.0.join(format!("run-{n}"));
                let batch = if rate == "heavy" { args.heavy_batch } else { args.light_pages };
                let extra = MeshExtra {
                    limits: match args.cap_mib_s {
                        Some(cap) => format!("{EXTRA_LIMITS}\n[policy]\nbandwidth_mib_s = {cap}\n"),
                        None => EXTRA_LIMITS.to_string(),
                    },
                    mesh: args.readahead.map(|n| format!("readahead = {n}\n")).unwrap_or_default()
                        + if args.no_compress { "compress = false\n" } else { "" },
                };
                let r = run_one(&tern, &dir, &extra, size, rate, mechanism, &header(batch, args.crowd, &args.fill), limit);
                match (&r.problem, &r.report) {
                    (None, Some(rep)) => eprintln!(
                        "freeze {} µs, total {:.1} ms, {:.1} MB sent, {} round(s), {} fault(s){}",
                        rep.freeze_time_us,
                        rep.total_time_us as f64 / 1e3,
                        rep.bytes_sent as f64 / 1e6,
                        rep.rounds.len(),
                        rep.page_faults,
                        if rate == "none" { String::new() } else { format!(", writer {:.1} pages/ms", r.pages_per_ms) }
                    ),
                    (Some(p), _) => eprintln!("FAILED: {p}"),
                    (None, None) => eprintln!("FAILED: no report"),
                }
                results.push(r);
            }
        }
        // The anchor, in the same run, after Tern's runs of this size.
        peer.measure(&temp.0.join(format!("qemu-{size}")), size, limit);
    }

    let table = render_table(&results);
    let targets = targets(&results, &ceiling, &peer);
    println!("{table}");
    println!("{}", render_targets(&targets));
    // The anchor in one line: QEMU's times and whether Tern's precopy beat them.
    let met = targets.iter().find(|c| c.what.starts_with(QEMU_TARGET)).map(|c| c.met);
    println!("{}; target \"{QEMU_TARGET}\": {}", peer.summary(), verdict(met.flatten()));
    let document = results_document(args, &sizes, &ceiling, &table, &targets, &results, &peer, &load_before, &memory);
    if full || args.write {
        let dir = crate::bench_dir().join("results");
        let md = dir.join("migration-speed.md");
        report::write_file(&md, &document)?;
        let svg = dir.join("migration-freeze.svg");
        chart(&svg, &results, &rates, &mechanisms)?;
        eprintln!("wrote {} and {}", md.display(), svg.display());
    } else {
        eprintln!("(a partial run: the result files are not written; --write writes them)");
    }
    peer.warn_if_missing();
    Ok(results.iter().all(|r| r.ok_report().is_some()) && !peer.failed())
}

/// The names of `given` (all of `all` if empty), each one of `all`, in `all`'s order.
fn pick(given: &[String], all: &[&'static str], flag: &str) -> Result<Vec<&'static str>> {
    if let Some(bad) = given.iter().find(|g| !all.contains(&g.as_str())) {
        bail!("{flag}: unknown {bad:?} (expected some of {})", all.join(", "));
    }
    Ok(all.iter().copied().filter(|a| given.is_empty() || given.iter().any(|g| g == a)).collect())
}

// ---------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------

/// Two nodes of a loopback mesh in this process, and their log lines.
pub(crate) struct Mesh {
    pub a: Arc<MeshNode>,
    pub b: Arc<MeshNode>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Mesh {
    /// A mesh whose config has `extra` after its `[limits]` (more limits, or more tables).
    pub fn start_with(dir: &Path, extra: &str) -> Result<Mesh> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cfg: MeshConfig = tern_net::cmd::loopback_mesh(dir, 2, extra).map_err(|e| anyhow!("cannot make a loopback mesh: {e}"))?;
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = |name: &str| -> LogSink {
            let logs = logs.clone();
            let name = name.to_string();
            Arc::new(move |line: &str| {
                if let Ok(mut l) = logs.lock() {
                    l.push(format!("{name}| {line}"));
                }
            })
        };
        let a = MeshNode::start(&cfg, "a", NodeOptions { log: sink("a"), workers: None, operators: None })
            .map_err(|e| anyhow!("node a: {e}"))?;
        let b = MeshNode::start(&cfg, "b", NodeOptions { log: sink("b"), workers: None, operators: None })
            .map_err(|e| anyhow!("node b: {e}"))?;
        let mesh = Mesh { a: Arc::new(a), b: Arc::new(b), logs };
        if !wait_until(Duration::from_secs(20), || mesh.a.peer_up("b") && mesh.b.peer_up("a")) {
            bail!("the nodes did not connect within 20 s{}", mesh.log_tail());
        }
        Ok(mesh)
    }

    /// Compiles `source` and starts it on node a, with a console here.
    pub fn start_on_a(&self, file: &str, source: &str) -> Result<(u64, Console)> {
        let program = tern_net::runner::compile_text(file, source).map_err(|e| anyhow!("the program does not compile:\n{}", e.rendered))?;
        let a = self.a.node();
        for m in &program.modules {
            a.vm().load(m.clone()).map_err(|e| anyhow!("module rejected: {e}"))?;
        }
        let (console_id, rx) = self.a.open_console();
        let pid = a.spawn_main_on(program.main, console_id, true).map_err(|e| anyhow!("the program did not start: {e}"))?;
        Ok((pid, Console::new(rx)))
    }

    /// The last log lines of both nodes, for a failure report.
    pub fn log_tail(&self) -> String {
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        let tail: Vec<&String> = logs.iter().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; node logs: {}", tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" / "))
        }
    }
}

/// Polls `f` every 200 µs until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// A program's console.
pub(crate) struct Console {
    rx: mpsc::UnboundedReceiver<CtlReply>,
    text: String,
    /// Complete lines already returned by `wait_line`.
    seen: usize,
    failures: Vec<String>,
}

impl Console {
    pub fn new(rx: mpsc::UnboundedReceiver<CtlReply>) -> Console {
        Console { rx, text: String::new(), seen: 0, failures: Vec::new() }
    }

    fn pump(&mut self) {
        while let Ok(reply) = self.rx.try_recv() {
            if let CtlReply::Output { text, failed, .. } = reply {
                if failed {
                    self.failures.push(text.trim_end().to_string());
                } else {
                    self.text.push_str(&text);
                }
            }
        }
    }

    /// Waits for the next complete line (after those already returned) starting with
    /// `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            let complete = self.text.rsplit_once('\n').map_or("", |(done, _)| done);
            let lines: Vec<&str> = complete.lines().collect();
            if let Some(i) = (self.seen..lines.len()).find(|&i| lines[i].starts_with(prefix)) {
                self.seen = i + 1;
                return Ok(lines[i].to_string());
            }
            if !self.failures.is_empty() {
                bail!("the program failed: {}", self.failures.join("; "));
            }
            if Instant::now() > deadline {
                bail!("no line `{prefix} ...` within {} s", timeout.as_secs());
            }
            thread::sleep(Duration::from_micros(500));
        }
    }
}

/// `writes N at T`: (N, T µs).
fn parse_writes(line: &str) -> Option<(f64, f64)> {
    let rest = line.strip_prefix("writes ")?;
    let (n, t) = rest.split_once(" at ")?;
    Some((n.trim().parse().ok()?, t.trim().parse().ok()?))
}

/// `sum S want W on NODE`: whether S == W, and the node.
fn parse_sum(line: &str) -> Option<(bool, String)> {
    let rest = line.strip_prefix("sum ")?;
    let (s, rest) = rest.split_once(" want ")?;
    let (w, node) = rest.split_once(" on ")?;
    Some((s.trim() == w.trim(), node.trim().to_string()))
}

/// Two `tern node` OS processes on loopback (a fresh config and certificates), driven
/// through the control API `tern ctl` uses (`tern_net::ops::ctl::CtlClient`).
struct RealPair {
    /// Stops the nodes when dropped.
    mesh: TernMesh,
    cfg: MeshConfig,
    /// Control connections to node a and node b.
    a: CtlClient,
    b: CtlClient,
}

impl RealPair {
    fn start(tern: &Path, dir: &Path, extra: &MeshExtra) -> Result<RealPair> {
        let mesh = TernMesh::start_with_mesh(tern, dir, 2, &extra.limits, None, &extra.mesh)?;
        let cfg = MeshConfig::load(&mesh.config).map_err(|e| anyhow!("{e}"))?;
        let a = Self::connect(&cfg, "a")?;
        let b = Self::connect(&cfg, "b")?;
        Ok(RealPair { mesh, cfg, a, b })
    }

    fn connect(cfg: &MeshConfig, node: &str) -> Result<CtlClient> {
        CtlClient::connect(cfg, Some(node), Duration::from_secs(10)).map_err(|e| anyhow!("cannot reach node {node}: {e}"))
    }

    fn client(&self, node: &str) -> &CtlClient {
        if node == "a" {
            &self.a
        } else {
            &self.b
        }
    }

    /// Starts the program in `file` on node a with its output coming here (`tern ctl
    /// spawn --wait` on a connection of its own, on a thread of its own).
    fn start_on_a(&self, file: &Path) -> Result<(u64, Console)> {
        let req = tern_net::cmd::program_request(file, None, true).map_err(|e| anyhow!("{e}"))?;
        let client = Self::connect(&self.cfg, "a")?;
        let (tx, rx) = mpsc::unbounded_channel();
        client
            .open_console(move |pid, text, failed| {
                let _ = tx.send(CtlReply::Output { pid, text, failed });
            })
            .map_err(|e| anyhow!("cannot open a console: {e}"))?;
        let (pid_tx, pid_rx) = std::sync::mpsc::channel::<Result<u64, String>>();
        thread::Builder::new()
            .name("bench-program".into())
            .spawn(move || {
                let asked = client.request(&req, |reply| match reply {
                    CtlReply::Spawned { pid, .. } => {
                        let _ = pid_tx.send(Ok(pid));
                        true
                    }
                    CtlReply::Error(e) => {
                        let _ = pid_tx.send(Err(e));
                        false
                    }
                    CtlReply::Ended { .. } => false,
                    _ => true,
                });
                if let Err(e) = asked {
                    let _ = pid_tx.send(Err(e));
                }
                client.close();
            })
            .context("cannot start a thread")?;
        let pid = pid_rx.recv_timeout(Duration::from_secs(60)).map_err(|_| anyhow!("the node did not start the program"))?;
        let pid = pid.map_err(|e| anyhow!("the program did not start: {e}"))?;
        Ok((pid, Console::new(rx)))
    }

    /// Sends `what` to `pid` from node `via` (as `tern ctl --node VIA send`: a one-line
    /// program there sends it).
    fn send(&self, via: &str, pid: u64, what: i64) -> Result<()> {
        let req = tern_net::cmd::send_request(pid, &what.to_string()).map_err(|e| anyhow!("{e}"))?;
        let mut failed = None;
        self.client(via)
            .request(&req, |reply| match reply {
                CtlReply::Ended { failed: true, reason, .. } => {
                    failed = Some(reason);
                    false
                }
                CtlReply::Error(e) => {
                    failed = Some(e);
                    false
                }
                CtlReply::Ended { .. } => false,
                _ => true,
            })
            .map_err(|e| anyhow!("node {via}: {e}"))?;
        match failed {
            Some(why) => bail!("sending {what} to the program failed: {why}"),
            None => Ok(()),
        }
    }

    /// Whether node b runs `pid`.
    fn on_b(&self, pid: u64) -> Result<bool> {
        match self.b.call(&CtlRequest::Ps { node: Some("b".into()) }).map_err(|e| anyhow!("node b: {e}"))? {
            CtlReply::Ps(rows) => Ok(rows.iter().any(|r| r.pid == pid && r.node == "b")),
            other => bail!("node b answered ps with {other:?}"),
        }
    }

    /// The end of each node's log, for a failure report.
    fn log_tail(&self) -> String {
        self.mesh.log_tails()
    }
}

/// The program's lines after `MIB` and `MODE`: its `BATCH`, and the idle crowd it starts
/// first (`--crowd`), each process waiting in `recv` once it has said it runs.
fn header(batch: u32, crowd: u32, fill: &str) -> String {
    let mut h = format!("let BATCH = {batch};\nlet FILL = \"{fill}\";\n");
    if crowd > 0 {
        // Each tells a counter it is running before it waits, and the counter tells the
        // measured process once all have: the crowd is idle before the heap is built and
        // the move asked for (and the measured process has heard from one process only).
        h += &format!(
            "fn idle(c) {{ send(c, 0); recv(); }}\n\
             fn count(p, n) {{ for i in 0..n {{ recv(); }} send(p, 0); recv(); }}\n\
             let counter = spawn(count, self(), {crowd});\n\
             for i in 0..{crowd} {{ spawn(idle, counter); }}\n\
             recv();\n"
        );
    }
    h
}

/// `extra`: what the mesh config has beyond a loopback mesh's.
#[allow(clippy::too_many_arguments)]
fn run_one(
    tern: &Path,
    dir: &Path,
    extra: &MeshExtra,
    size: u64,
    rate: &'static str,
    mechanism: &'static str,
    header: &str,
    limit: Duration,
) -> RunResult {
    let mut result = RunResult { size_mib: size, rate, mechanism, pages_per_ms: 0.0, report: None, problem: None, build_s: 0.0 };
    let pair = match RealPair::start(tern, dir, extra) {
        Ok(m) => m,
        Err(e) => {
            result.problem = Some(format!("{e:#}"));
            return result;
        }
    };
    if let Err(e) = migrate_once(&pair, dir, size, rate, mechanism, header, limit, &mut result) {
        result.problem = Some(format!("{e:#}{}", pair.log_tail()));
    }
    drop(pair);
    if !procs::keep_temp() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn migrate_once(
    pair: &RealPair,
    dir: &Path,
    size: u64,
    rate: &str,
    mechanism: &'static str,
    header: &str,
    limit: Duration,
    result: &mut RunResult,
) -> Result<()> {
    let source = format!("let MIB = {size};\nlet MODE = \"{rate}\";\n{header}{PROGRAM}");
    let file = dir.join("migrate_heap.tern");
    std::fs::write(&file, source).with_context(|| format!("cannot write {}", file.display()))?;
    let started = Instant::now();
    let (pid, mut console) = pair.start_on_a(&file)?;
    console.wait_line("ready", limit).context("building the heap")?;
    result.build_s = started.elapsed().as_secs_f64();
    if rate != "none" {
        pair.send("a", pid, MSG_WRITES)?;
        let first = console.wait_line("writes ", limit)?;
        thread::sleep(Duration::from_millis(300));
        pair.send("a", pid, MSG_WRITES)?;
        let second = console.wait_line("writes ", limit)?;
        if let (Some((n0, t0)), Some((n1, t1))) = (parse_writes(&first), parse_writes(&second)) {
            if t1 > t0 {
                result.pages_per_ms = (n1 - n0) / ((t1 - t0) / 1e3);
            }
        }
    }

    // The migration is asked for on its own connection and thread; this one sends the
    // sum when the process is on b.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let client = RealPair::connect(&pair.cfg, "a")?;
    let how = How::parse(Some(mechanism), None).map_err(|e| anyhow!("{e}"))?;
    thread::Builder::new()
        .name("bench-migrate".into())
        .spawn(move || {
            let _ = done_tx.send(tern_net::cmd::migrate(&client, pid, "b", how, false, None));
            client.close();
        })
        .context("cannot start a thread")?;
    let deadline = Instant::now() + limit;
    let lazy = matches!(mechanism, "lazy" | "hybrid" | "auto");
    let mut asked = false;
    let report = loop {
        if lazy && !asked && pair.on_b(pid)? {
            // On b (maybe still frozen there: the message waits for it to run): read every page.
            pair.send("b", pid, MSG_SUM)?;
            asked = true;
        }
        match done_rx.recv_timeout(Duration::from_micros(if lazy && !asked { 200 } else { 5000 })) {
            Ok(r) => break r.map_err(|e| anyhow!("the migration failed: {e}"))?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => bail!("the migration did not end within {} s", limit.as_secs()),
        }
    };
    let ok = report.ok;
    let outcome = report.outcome.clone();
    result.report = Some(report);
    if !ok {
        bail!("the migration failed: {outcome}");
    }
    if !asked {
        pair.send("b", pid, MSG_SUM)?;
    }
    let line = console.wait_line("sum ", limit).context("summing the heap after the move")?;
    match parse_sum(&line) {
        Some((true, node)) if node == "b" => {}
        _ => bail!("after the move the program printed `{line}`"),
    }
    pair.send("b", pid, MSG_STOP)?;
    console.wait_line("stopped", Duration::from_secs(30))?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Tables, targets, documents, chart
// ---------------------------------------------------------------------------------

pub(crate) fn size_label(mib: u64) -> String {
    if mib >= 1024 && mib.trailing_zeros() >= 10 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// The results table: one row per run.
fn render_table(results: &[RunResult]) -> String {
    let headers: Vec<String> = [
        "heap",
        "writer",
        "pages/ms",
        "mechanism",
        "freeze (µs)",
        "total (ms)",
        "MB sent",
        "lz4 MB",
        "rounds",
        "redundant",
        "final pages",
        "absent at resume",
        "faults",
        "fault p50/p99 (µs)",
        "wait p50/p99 (µs)",
        "read ahead",
        "pushed",
        "stop",
        "throttle",
        "sum",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                size_label(r.size_mib),
                r.rate.to_string(),
                if r.rate == "none" { "0".into() } else { format!("{:.1}", r.pages_per_ms) },
                match &r.report {
                    Some(rep) if r.mechanism == "auto" => format!("auto: {}", rep.mechanism.name()),
                    _ => r.mechanism.to_string(),
                },
            ];
            match (&r.report, &r.problem) {
                (Some(rep), problem) if rep.ok => {
                    let picked = rep.mechanism.name();
                    let lazy = matches!(picked, "lazy" | "hybrid") || rep.fell_back;
                    let precopy = matches!(picked, "precopy" | "hybrid");
                    row.extend([
                        format!("{} ±{}", rep.freeze_time_us, rep.freeze_error_us),
                        format!("{:.1}", rep.total_time_us as f64 / 1e3),
                        format!("{:.1}", rep.bytes_sent as f64 / 1e6),
                        lz4_cell(rep),
                        if precopy { rep.rounds.len().to_string() } else { "-".into() },
                        rep.redundant_pages.to_string(),
                        rep.final_pages.to_string(),
                        if lazy { rep.absent_pages_at_resume.to_string() } else { "-".into() },
                        if lazy { rep.page_faults.to_string() } else { "-".into() },
                        if lazy && rep.page_faults > 0 {
                            format!("{}/{}", rep.fault_latency_p50_us, rep.fault_latency_p99_us)
                        } else {
                            "-".into()
                        },
                        if lazy && rep.page_faults > 0 {
                            format!("{}/{}", rep.fault_wait_p50_us, rep.fault_wait_p99_us)
                        } else {
                            "-".into()
                        },
                        if lazy { rep.pages_read_ahead.to_string() } else { "-".into() },
                        if lazy { rep.pages_pushed.to_string() } else { "-".into() },
                        if precopy { rep.stop_reason.clone() } else { "-".into() },
                        if precopy { rep.throttle_level.to_string() } else { "-".into() },
                        if problem.is_none() { "ok".into() } else { "FAILED".into() },
                    ]);
                }
                _ => {
                    row.push("FAILED".into());
                    row.extend((0..15).map(|_| "-".to_string()));
                }
            }
            row
        })
        .collect();
    report::markdown_table(&headers, &rows)
}

/// The `lz4 MB` cell: page bytes that went compressed, before → after, and how many
/// frames were tried and sent as they were.
fn lz4_cell(rep: &MigReport) -> String {
    let refused = if rep.lz4_refused_frames > 0 { format!(" ({} refused)", rep.lz4_refused_frames) } else { String::new() };
    match (rep.lz4_raw_bytes, rep.lz4_refused_frames) {
        (0, 0) => "-".into(),
        (0, _) => format!("none{refused}"),
        (raw, _) => format!("{:.1} → {:.1}{refused}", raw as f64 / 1e6, rep.lz4_sent_bytes as f64 / 1e6),
    }
}

/// A target, what was measured for it, and whether it was met (`None`: not measured).
struct TargetCheck {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn find<'a>(results: &'a [RunResult], size: u64, rate: &str, mechanism: &str) -> Option<&'a RunResult> {
    results.iter().find(|r| r.size_mib == size && r.rate == rate && r.mechanism == mechanism)
}

fn targets(results: &[RunResult], ceilings: &Ceilings, peer: &qemu::Peer) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let failed_note = |rs: &[&RunResult]| {
        let n = rs.iter().filter(|r| r.ok_report().is_none()).count();
        if n > 0 {
            format!("; {n} run(s) failed")
        } else {
            String::new()
        }
    };
    // 1. Freeze, 1 GiB: at least 80% of the raw QUIC throughput between two processes.
    let what = "freeze migration of 1 GiB at ≥ 80% of raw single-stream QUIC throughput (same TLS, loopback, two processes)".to_string();
    let raw = ceilings.quic.rate();
    out.push(match find(results, 1024, "none", "freeze").or_else(|| find(results, 1024, "light", "freeze")) {
        Some(r) => match r.ok_report() {
            Some(rep) => {
                let heap_bytes = u64::from(rep.heap_pages) * PAGE_BYTES;
                let rate = heap_bytes as f64 / (rep.total_time_us as f64 / 1e6);
                let pct = rate / raw * 100.0;
                // The writer does not matter to a freeze (it stops at once): the other
                // writers' 1 GiB freeze runs, for the spread.
                let others: Vec<String> = results
                    .iter()
                    .filter(|o| o.size_mib == 1024 && o.mechanism == "freeze" && o.rate != r.rate)
                    .filter_map(|o| {
                        let rep = o.ok_report()?;
                        let t = rep.total_time_us as f64 / 1e6;
                        Some(format!("writer {}: {t:.3} s = {:.0}%", o.rate, heap_bytes as f64 / t / raw * 100.0))
                    })
                    .collect();
                TargetCheck {
                    what,
                    measured: format!(
                        "writer {}: {:.0} MiB in {:.3} s = {:.0} MiB/s; raw QUIC {:.0} MiB/s, TCP {:.0} MiB/s: {pct:.0}% of QUIC, {:.0}% of TCP{} \
                         (not measured alike: the ceilings are the best of {} runs whose receiver only reads; a migration is one run, \
                         timed from its offer to its end, whose receiver installs every page in a heap)",
                        r.rate,
                        heap_bytes as f64 / (1 << 20) as f64,
                        rep.total_time_us as f64 / 1e6,
                        rate / (1 << 20) as f64,
                        ceilings.quic.mib_s(),
                        ceilings.tcp.mib_s(),
                        rate / ceilings.tcp.rate() * 100.0,
                        if others.is_empty() { String::new() } else { format!(" (other runs: {})", others.join(", ")) },
                        ceilings.quic.times.len()
                    ) + &if rep.lz4_raw_bytes > 0 {
                        format!(
                            "; **lz4**: {:.0} MB of pages went as {:.1} MB (this heap is one value repeated; `--fill random` or `--no-compress` for the link without it)",
                            rep.lz4_raw_bytes as f64 / 1e6,
                            rep.lz4_sent_bytes as f64 / 1e6
                        )
                    } else {
                        String::new()
                    },
                    met: Some(pct >= 80.0),
                }
            }
            None => TargetCheck { what, measured: format!("the run failed: {}", r.problem.clone().unwrap_or_default()), met: Some(false) },
        },
        None => TargetCheck { what, measured: format!("not run (raw QUIC {:.0} MiB/s)", ceilings.quic.mib_s()), met: None },
    });
    // 2. Lazy and hybrid: freeze ≤ 1 ms at every heap size, every writer.
    for mech in ["lazy", "hybrid"] {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.mechanism == mech).collect();
        if runs.is_empty() {
            continue;
        }
        let mut per_size: BTreeMap<u64, u64> = BTreeMap::new();
        for (s, f) in runs.iter().filter_map(|r| r.ok_report().map(|rep| (r.size_mib, rep.freeze_time_us))) {
            let e = per_size.entry(s).or_insert(0);
            *e = (*e).max(f);
        }
        let worst = per_size.values().copied().max();
        out.push(TargetCheck {
            what: format!("{mech} freeze time ≤ 1 ms at every heap size (worst writer)"),
            measured: format!(
                "{}{}",
                per_size.iter().map(|(s, f)| format!("{} {f} µs", size_label(*s))).collect::<Vec<_>>().join(", "),
                failed_note(&runs)
            ),
            met: Some(runs.iter().all(|r| r.ok_report().is_some()) && worst.is_some_and(|f| f <= 1000)),
        });
    }
    // 3. Page faults while the background push runs: p50 ≤ 200 µs, p99 ≤ 1 ms.
    let faulted: Vec<(&RunResult, &MigReport)> =
        results.iter().filter_map(|r| r.ok_report().map(|rep| (r, rep))).filter(|(_, rep)| rep.page_faults > 0).collect();
    if !faulted.is_empty() {
        let p50 = faulted.iter().map(|(_, rep)| rep.fault_latency_p50_us).max().unwrap_or(0);
        let p99 = faulted.iter().map(|(_, rep)| rep.fault_latency_p99_us).max().unwrap_or(0);
        let faults: u64 = faulted.iter().map(|(_, rep)| rep.page_faults).sum();
        out.push(TargetCheck {
            what: "page faults at the destination while the push runs: p50 ≤ 200 µs and p99 ≤ 1 ms (worst run)".into(),
            measured: format!("{faults} faults in {} runs: worst p50 {p50} µs, worst p99 {p99} µs", faulted.len()),
            met: Some(p50 <= 200 && p99 <= 1000),
        });
        let p50 = faulted.iter().map(|(_, rep)| rep.fault_wait_p50_us).max().unwrap_or(0);
        let p99 = faulted.iter().map(|(_, rep)| rep.fault_wait_p99_us).max().unwrap_or(0);
        out.push(TargetCheck {
            what: "... as the process waits them (touching the page to running again): p50 ≤ 200 µs and p99 ≤ 1 ms (worst run)".into(),
            measured: format!("worst p50 {p50} µs, worst p99 {p99} µs"),
            met: Some(p50 <= 200 && p99 <= 1000),
        });
    }
    // 4. Precopy, 256 MiB, light writer: freeze ≤ 1 ms.
    let what = "precopy freeze time ≤ 1 ms at 256 MiB with a light writer".to_string();
    out.push(match find(results, 256, "light", "precopy") {
        Some(r) => match r.ok_report() {
            Some(rep) => TargetCheck {
                what,
                measured: format!(
                    "{} µs ({} final pages, writer {:.1} pages/ms, rounds {:?}, stop {})",
                    rep.freeze_time_us, rep.final_pages, r.pages_per_ms, rep.rounds, rep.stop_reason
                ),
                met: Some(rep.freeze_time_us <= 1000),
            },
            None => TargetCheck { what, measured: format!("the run failed: {}", r.problem.clone().unwrap_or_default()), met: Some(false) },
        },
        None => TargetCheck { what, measured: "not run".into(), met: None },
    });
    // 5. ... and within 2x across heap sizes (it grows with the working set, not the heap).
    let light: Vec<(u64, u64, u32)> = results
        .iter()
        .filter(|r| r.rate == "light" && r.mechanism == "precopy")
        .filter_map(|r| r.ok_report().map(|rep| (r.size_mib, rep.freeze_time_us, rep.final_pages)))
        .collect();
    if light.len() >= 2 {
        let lo = light.iter().map(|l| l.1).min().unwrap_or(0).max(1);
        let hi = light.iter().map(|l| l.1).max().unwrap_or(0);
        out.push(TargetCheck {
            what: "precopy freeze time (light writer) within 2× across heap sizes".into(),
            measured: format!(
                "{}: highest/lowest ×{:.2}",
                light.iter().map(|(s, f, p)| format!("{} {f} µs ({p} final pages)", size_label(*s))).collect::<Vec<_>>().join(", "),
                hi as f64 / lo as f64
            ),
            met: Some(hi <= 2 * lo),
        });
    }
    // 6. Heavy writers: no migration (but freeze) ends with the whole heap sent frozen.
    let heavy: Vec<&RunResult> = results.iter().filter(|r| r.rate == "heavy" && r.mechanism != "freeze").collect();
    if !heavy.is_empty() {
        let whole: Vec<String> = heavy
            .iter()
            .filter_map(|r| {
                let rep = r.ok_report()?;
                (u64::from(rep.final_pages) * 2 > u64::from(rep.heap_pages))
                    .then(|| format!("{} {} ({} of {} pages frozen)", size_label(r.size_mib), r.mechanism, rep.final_pages, rep.heap_pages))
            })
            .collect();
        out.push(TargetCheck {
            what: "heavy writers: no migration but `freeze` sends half the heap or more while frozen".into(),
            measured: if whole.is_empty() {
                format!("none of {} runs{}", heavy.len(), failed_note(&heavy))
            } else {
                format!("{}{}", whole.join(", "), failed_note(&heavy))
            },
            met: Some(whole.is_empty() && heavy.iter().all(|r| r.ok_report().is_some())),
        });
    }
    // 7. The anchor: precopy (idle process) faster than QEMU's pre-copy (stopped guest).
    out.push(qemu_target(results, peer));
    out
}

/// The QEMU anchor's target.
const QEMU_TARGET: &str = "precopy total time below QEMU's for the same size in the same run";

/// Tern's `precopy` total time, writer none, against QEMU's pre-copy of a stopped guest
/// of the same size in the same run: 256 MiB first, then every other size run; met when
/// Tern is below QEMU at each of them.
fn qemu_target(results: &[RunResult], peer: &qemu::Peer) -> TargetCheck {
    let what = format!("{QEMU_TARGET} (writer none; QEMU: stopped guest)");
    let mut runs: Vec<&RunResult> = results.iter().filter(|r| r.rate == "none" && r.mechanism == "precopy").collect();
    runs.sort_by_key(|r| (r.size_mib != 256, r.size_mib));
    if let Some(why) = peer.skipped() {
        return TargetCheck { what, measured: format!("not measured: QEMU pre-copy {}", why.replace("**", "")), met: None };
    }
    if runs.is_empty() {
        return TargetCheck { what, measured: "not run (no precopy run with writer none)".into(), met: None };
    }
    let mut all_below = true;
    let parts: Vec<String> = runs
        .iter()
        .map(|r| {
            let size = size_label(r.size_mib);
            let tern = match r.ok_report() {
                Some(rep) => rep.total_time_us,
                None => {
                    all_below = false;
                    return format!("{size}: the Tern run failed");
                }
            };
            match peer.total_ms(r.size_mib) {
                Some(Ok(q)) => {
                    let below = tern < q * 1000;
                    all_below &= below;
                    format!(
                        "{size}: Tern {:.1} ms, QEMU {q} ms (Tern/QEMU {:.2}, {})",
                        tern as f64 / 1e3,
                        tern as f64 / 1e3 / (q.max(1)) as f64,
                        if below { "below" } else { "NOT below" }
                    )
                }
                Some(Err(e)) => {
                    all_below = false;
                    format!("{size}: {e}")
                }
                None => {
                    all_below = false;
                    format!("{size}: QEMU not run")
                }
            }
        })
        .collect();
    TargetCheck { what, measured: parts.join("; "), met: Some(all_below) }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not measured",
    }
}

fn render_targets(checks: &[TargetCheck]) -> String {
    let headers: Vec<String> = ["target", "measured", "met"].iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = checks.iter().map(|c| vec![c.what.clone(), c.measured.clone(), verdict(c.met).to_string()]).collect();
    report::markdown_table(&headers, &rows)
}

/// `/proc/loadavg`'s three load averages, or nothing.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// `bench/results/migration-speed.md`: when, where, how, the table, the targets.
#[allow(clippy::too_many_arguments)]
fn results_document(
    args: &MigrateArgs,
    sizes: &[u64],
    ceilings: &Ceilings,
    table: &str,
    checks: &[TargetCheck],
    results: &[RunResult],
    peer: &qemu::Peer,
    load_before: &str,
    memory: &str,
) -> String {
    let root = crate::workspace_root();
    let mut invocation = String::from("cargo run --release -p tern-bench -- migrate");
    if args.quick {
        invocation.push_str(" --quick");
    }
    if !args.sizes.is_empty() {
        let _ = write!(invocation, " --sizes {}", sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    }
    if !args.rates.is_empty() {
        let _ = write!(invocation, " --rates {}", args.rates.join(","));
    }
    if !args.mechanisms.is_empty() {
        let _ = write!(invocation, " --mechanisms {}", args.mechanisms.join(","));
    }
    if args.no_qemu {
        invocation.push_str(" --no-qemu");
    }
    if let Some(cap) = args.cap_mib_s {
        let _ = write!(invocation, " --cap-mib-s {cap}");
    }
    let mut doc = String::from("# Tern live migration: freeze, precopy, lazy, hybrid\n\n");
    let _ = writeln!(doc, "- Date: {}", report::utc_now());
    let _ = writeln!(doc, "- Machine: {}{}", report::machine_note(), procs::memory_note());
    if !load_before.is_empty() {
        let _ = writeln!(doc, "- Load average before the runs: {load_before}; after: {}", load_average());
    }
    if !memory.is_empty() {
        let _ = writeln!(doc, "- Memory: {memory}");
    }
    let _ = writeln!(doc, "- Command: `{invocation}`{}", procs::source_note(&root));
    let _ = writeln!(
        doc,
        "- Nodes: **two `tern node` OS processes** on loopback (a fresh config and certificates from \
         `tern_net::cmd::loopback_mesh` for every run; 2 VM worker threads and 1 network thread per node; \
         `[limits] heap_bytes = 2 GiB`, pages of 4 KiB{}), driven through the control API `tern ctl` uses \
         (`CtlClient`: spawn with the program's output streamed back, send, ps, migrate). The two nodes and the \
         bench share the machine's 2 cores.",
        args.cap_mib_s.map(|c| format!("; migration traffic capped at {c} MiB/s, `[policy] bandwidth_mib_s`")).unwrap_or_default()
            + &args.readahead.map(|n| format!("; `[mesh] readahead = {n}`")).unwrap_or_default()
            + if args.no_compress { "; `[mesh] compress = false`: frames of pages never compressed" } else { "" }
    );
    let _ = writeln!(
        doc,
        "- Program: `bench/programs/migrate_heap.tern` with the heap as 1-MiB arrays of ints ({}). \
         Writers: **none** waits in `recv()`; **light** touches one cell in each of the next {} pages, then \
         `sleep(1)`; **heavy** touches one cell in each of the next {} pages and looks at its mailbox, without \
         sleeping. Both walk page after page over the whole heap. `pages/ms` is measured in the program before \
         the move (writes counted over 300 ms; each write is to a different page).",
        if args.fill == "random" {
            "each cell a random int below 10^9 (`--fill random`): pages lz4 cannot shrink, so frames of pages go as they are"
        } else {
            "every cell 1: a heap lz4 shrinks to almost nothing, so frames of pages go compressed unless `--no-compress`"
        },
        args.light_pages,
        args.heavy_batch
    );
    let _ = writeln!(
        doc,
        "- Each run: start the program on node a, wait for its heap (\"ready\"), measure the writer, \
         migrate it to b (`tern ctl migrate PID b --mechanism M`). Lazy and hybrid: as soon as the process is on b it is \
         asked to sum every cell, so its absent pages fault in while the background push runs; the report comes \
         when the destination has every page. Then (all mechanisms) the sum must equal the cells plus the writes, \
         on node b (`sum` = ok), and the program is stopped. One run per (heap, writer, mechanism)."
    );
    let _ = writeln!(
        doc,
        "- Ceilings, each between two OS processes (the bench and a `tern-bench ceiling-sink` child), timed from \
         the first byte written to the receiver's answer that it has read them all, best of {runs}: **QUIC {:.0} MiB/s** \
         ({} MiB on one stream between two quinn endpoints with the mesh's TLS and transport configs, \
         `tern_net::tls`, rustls with ring, each on a 1-thread tokio runtime as in a node: {}); **TCP {:.0} MiB/s** \
         (one loopback connection, no TLS, blocking 1 MiB writes: {}).",
        ceilings.quic.mib_s(),
        ceilings.quic.bytes >> 20,
        ceilings.quic.times_text(),
        ceilings.tcp.mib_s(),
        ceilings.tcp.times_text(),
        runs = ceilings.quic.times.len(),
    );
    doc.push_str("\n## Results\n\n");
    doc.push_str(table);
    doc.push_str(
        "\nColumns, from the `MigReport`: `freeze` is `freeze_time_us ±freeze_error_us`: from when the process was \
         last seen running at the source (it stops at its next safepoint; looked at every 50 µs at most) to its \
         resume at the destination, the destination's clock put on the source's by the \
         `Commit`/`Committed` round trip (its arrival taken at the round trip's midpoint: off by at most half of \
         it, the ± figure); `total` from the start of the \
         migration to its end (for lazy and hybrid: until the destination has every page); `MB sent` the bytes \
         on the migration stream; `lz4 MB` the bytes of the frames of pages that went compressed, before and \
         after, and the frames tried that went as they were (`[mesh] compress`: a frame goes compressed when \
         that is quicker even unoverlapped, from the measured compression speed and ratio against the link's \
         speed; `-`: none tried); `rounds` the pre-copy rounds; `redundant` pages sent more than once; \
         `final pages` pages sent while frozen; `absent at resume`, `faults` (pages the process faulted on at \
         the destination), their latency (from the fetch of the faulting page to its arrival) and the process's \
         wait, `read ahead` (pages asked for ahead of faults that came in order) and `pushed` (pages sent by \
         the background push) for lazy and hybrid; \
         `stop` why the pre-copy rounds stopped and `throttle` the highest throttle level applied.\n",
    );
    doc.push_str(&peer.section());
    doc.push_str("\n## Targets\n\n");
    doc.push_str(&render_targets(checks));
    let failed: Vec<&RunResult> = results.iter().filter(|r| r.ok_report().is_none()).collect();
    if !failed.is_empty() {
        doc.push_str("\n## Failed runs\n\n");
        for r in failed {
            let _ = writeln!(
                doc,
                "- {}, writer {}, {}: {}",
                size_label(r.size_mib),
                r.rate,
                r.mechanism,
                r.problem.clone().or_else(|| r.report.as_ref().map(|rep| rep.outcome.clone())).unwrap_or_default()
            );
        }
    }
    doc.push_str("\n## Every run\n\n");
    for r in results {
        let Some(rep) = &r.report else { continue };
        let _ = writeln!(
            doc,
            "- {}, writer {}, {}: heap built in {:.1} s; {} heap pages, rounds {:?}, zero pages skipped {}, \
             bandwidth {} B/ms, reductions during rounds {}, fault latency max {} µs, source dependency ended \
             {:.1} ms after the start; freeze {} µs ±{} of which {} µs from the freeze to `Commit` sent and {} µs \
             at the destination from `Commit` to the resume; the late messages came {} µs after the resume (a system \
             call waits for them); outcome {}",
            size_label(r.size_mib),
            r.rate,
            r.mechanism,
            r.build_s,
            rep.heap_pages,
            rep.rounds,
            rep.zero_pages_skipped,
            rep.bandwidth_bytes_per_ms,
            rep.reductions_during_rounds,
            rep.fault_latency_max_us,
            rep.dependency_ended_us as f64 / 1e3,
            rep.freeze_time_us,
            rep.freeze_error_us,
            rep.freeze_time_us.saturating_sub(rep.freeze_error_us + rep.resume_wait_us),
            rep.resume_wait_us,
            rep.late_wait_us,
            rep.outcome
        );
    }
    doc.push_str("\nChart: `bench/results/migration-freeze.svg` (freeze time against heap size, log-log, one panel per writer).\n");
    doc
}

/// Colours of the mechanisms in the chart.
fn colour(mechanism: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match mechanism {
        "freeze" => RGBColor(0xd6, 0x27, 0x28),
        "precopy" => RGBColor(0x1f, 0x77, 0xb4),
        "lazy" => RGBColor(0x2c, 0xa0, 0x2c),
        "hybrid" => RGBColor(0x94, 0x67, 0xbd),
        _ => RGBColor(0xff, 0x7f, 0x0e),
    }
}

/// The chart: freeze time against heap size (log-log), one line per mechanism, one panel
/// per writer, with the 1 ms line.
fn chart(path: &Path, results: &[RunResult], rates: &[&str], mechanisms: &[&str]) -> Result<()> {
    use plotters::prelude::*;
    let points = |rate: &str, mechanism: &str| -> Vec<(f64, f64)> {
        results
            .iter()
            .filter(|r| r.rate == rate && r.mechanism == mechanism)
            .filter_map(|r| r.ok_report().map(|rep| (r.size_mib as f64, (rep.freeze_time_us.max(1)) as f64)))
            .collect()
    };
    let all: Vec<(f64, f64)> = rates.iter().flat_map(|r| mechanisms.iter().flat_map(move |m| points(r, m))).collect();
    if all.is_empty() {
        bail!("no successful run to chart");
    }
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xmin, xmax) = (xmin / 1.5, (xmax * 1.5).max(xmin * 3.0));
    let (ymin, ymax) = ((ymin.min(1000.0) / 2.0).max(1.0), ymax.max(1000.0) * 2.0);
    let width = 420 * rates.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let root = root.titled("Tern live migration: freeze time vs heap size", ("sans-serif", 20)).map_err(|e| anyhow!("chart: {e}"))?;
    let panels = root.split_evenly((1, rates.len().max(1)));
    for (panel, rate) in panels.iter().zip(rates) {
        let mut c = ChartBuilder::on(panel)
            .caption(format!("writer: {rate}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())
            .map_err(|e| anyhow!("chart: {e}"))?;
        c.configure_mesh()
            .x_desc("heap (MiB)")
            .y_desc("freeze time (µs)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| anyhow!("chart: {e}"))?;
        c.draw_series(LineSeries::new([(xmin, 1000.0), (xmax, 1000.0)], BLACK.mix(0.4)))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label("1 ms")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
        for &m in mechanisms {
            let pts = points(rate, m);
            let col = colour(m);
            c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(|e| anyhow!("chart: {e}"))?
                .label(m)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col.stroke_width(2)));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(|e| anyhow!("chart: {e}"))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| anyhow!("chart: {e}"))?;
    }
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_writes("writes 120 at 5000"), Some((120.0, 5000.0)));
        assert_eq!(parse_writes("sum 1"), None);
        assert_eq!(parse_sum("sum 65536 want 65536 on b"), Some((true, "b".into())));
        assert_eq!(parse_sum("sum 65535 want 65536 on b"), Some((false, "b".into())));
    }

    #[test]
    fn picks_keep_the_table_order() {
        assert_eq!(pick(&[], &MECHANISMS, "--m").unwrap(), MECHANISMS.to_vec());
        assert_eq!(pick(&["lazy".into(), "freeze".into()], &MECHANISMS, "--m").unwrap(), vec!["freeze", "lazy"]);
        assert!(pick(&["fast".into()], &MECHANISMS, "--m").is_err());
    }

    /// The results document of a made-up run with the QEMU peer, and its target row.
    #[test]
    fn the_document_has_the_qemu_peer_and_its_target() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: MigrateArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["migrate", "--sizes", "1,256", "--mechanisms", "precopy", "--rates", "none"]).args;
        let run = |size_mib: u64, total_time_us: u64| RunResult {
            size_mib,
            rate: "none",
            mechanism: "precopy",
            pages_per_ms: 0.0,
            report: Some(MigReport { ok: true, total_time_us, heap_pages: (size_mib << 8) as u32, ..MigReport::default() }),
            problem: None,
            build_s: 0.1,
        };
        let results = vec![run(1, 9_000), run(256, 2_049_600)];
        let ceiling = || Ceiling { bytes: 64 << 20, times: vec![0.3] };
        let ceilings = Ceilings { quic: ceiling(), tcp: ceiling() };
        let peer = qemu::Peer::ran(&[(1, 11), (256, 794)]);
        let checks = targets(&results, &ceilings, &peer);
        let row = checks.iter().find(|c| c.what.starts_with(QEMU_TARGET)).unwrap();
        assert_eq!(row.met, Some(false));
        assert!(row
            .measured
            .starts_with("256 MiB: Tern 2049.6 ms, QEMU 794 ms (Tern/QEMU 2.58, NOT below); 1 MiB: Tern 9.0 ms, QEMU 11 ms"));
        let doc = results_document(
            &args,
            &[1, 256],
            &ceilings,
            &render_table(&results),
            &checks,
            &results,
            &peer,
            "",
            "fresh memory touched at 390 ms per GiB",
        );
        if std::env::var_os("TERN_BENCH_SHOW").is_some() {
            println!("{doc}");
        }
        assert!(doc.contains("\n- Memory: fresh memory touched at 390 ms per GiB\n"), "{doc}");
        let (peer_at, targets_at) = (doc.find("## Peer: QEMU pre-copy (same run)").unwrap(), doc.find("## Targets").unwrap());
        assert!(peer_at < targets_at);
        assert!(doc[targets_at..].contains("| precopy total time below QEMU's for the same size in the same run"));

        let skipped = qemu::Peer::skipped_for("skipped (--no-qemu)");
        let row = qemu_target(&results, &skipped);
        assert_eq!(row.met, None);
        assert_eq!(row.measured, "not measured: QEMU pre-copy skipped (--no-qemu)");
        let faster = qemu::Peer::ran(&[(1, 11), (256, 3000)]);
        assert_eq!(qemu_target(&results, &faster).met, Some(true));
        let failed = qemu::Peer::ran(&[(1, 11), (256, 0)]);
        assert_eq!(qemu_target(&results, &failed).met, Some(false));
    }

    #[test]
    fn the_program_compiles() {
        for crowd in [0, 10] {
            let src = format!("let MIB = 1;\nlet MODE = \"light\";\n{}{PROGRAM}", header(4, crowd, "ones"));
            tern_net::runner::compile_text("migrate_heap.tern", &src).map_err(|e| e.rendered).unwrap();
        }
    }
}
