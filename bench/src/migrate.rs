//! `tern-bench migrate`: live migration between two nodes, each mechanism (freeze,
//! precopy, lazy, hybrid) at several heap sizes and write rates, beside the raw QUIC
//! throughput of the same machine as the ceiling.
//!
//! Every run starts a fresh 2-node mesh on loopback **in this OS process** (two
//! `MeshNode`s from `tern_net::cmd::loopback_mesh`, QUIC with mutual TLS between them as
//! between separate processes; the heap limit raised to 2 GiB), starts
//! `bench/programs/migrate_heap.tern` on node a with the heap size and writer as
//! constants, waits for its "ready" (the heap is built), measures its write rate (pages
//! touched per ms, from two "writes" answers 300 ms apart), migrates it to node b with
//! `MeshNode::migrate(pid, "b", Some(mechanism))` and keeps the `MigReport`. For lazy
//! and hybrid the process is asked to sum its whole heap as soon as it is on b, so its
//! absent pages fault in while the migration still runs (the report comes when the
//! destination has every page, by fault or background push); for freeze and precopy it
//! is asked after. Either way the sum must match what the heap held (every cell 1, plus
//! the writes), so a migration that lost or mixed up pages fails its run.
//!
//! The ceiling: one QUIC stream carrying `--ceiling-mib` MiB between two quinn endpoints
//! on loopback with the mesh's TLS and transport configs (`tern_net::tls`, the cluster
//! certificates of a loopback mesh), each endpoint on its own single-threaded tokio
//! runtime as in a node; best of three.
//!
//! Output: a markdown table (printed, and written to `bench/results/migration-speed.md`
//! with the targets and whether they were met) and a chart of freeze time against heap
//! size per mechanism, one panel per writer (`bench/results/migration-freeze.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tern_net::config::MeshConfig;
use tern_net::mesh::{LogSink, MeshNode, NodeOptions};
use tern_net::proto::wire::{CtlReply, MigReport};
use tern_vm::message::{Message, Val};
use tokio::sync::mpsc;

use crate::procs::{self, TempDir};
use crate::report;

/// The program every run migrates (the runner puts its constants before it).
const PROGRAM: &str = include_str!("../programs/migrate_heap.tern");

/// The mechanisms, in table order.
pub const MECHANISMS: [&str; 4] = ["freeze", "precopy", "lazy", "hybrid"];
/// The writers, in table order.
pub const RATES: [&str; 3] = ["none", "light", "heavy"];
/// Heap sizes of a full run, MiB.
const FULL_SIZES: [u64; 4] = [1, 16, 256, 1024];
/// Heap sizes of `--quick`, MiB.
const QUICK_SIZES: [u64; 2] = [1, 16];

/// Extra `[limits]` of the bench's mesh: 1 GiB heaps need more than the default 256 MiB
/// (the heap holds a little more than its arrays).
const EXTRA_LIMITS: &str = "heap_bytes = 2147483648\n";

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
    /// Mechanisms, comma-separated: freeze, precopy, lazy, hybrid (default: all).
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
    /// MiB sent on one QUIC stream for the raw-throughput ceiling (default 1024, 256
    /// with --quick).
    #[arg(long, value_name = "MIB")]
    ceiling_mib: Option<u64>,
    /// Give up on one run (heap building, migration, checking) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
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

/// The raw QUIC ceiling.
struct Ceiling {
    bytes: u64,
    /// Seconds of each transfer.
    times: Vec<f64>,
}

impl Ceiling {
    fn best_s(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
    /// Bytes per second of the best transfer.
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.best_s()
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
    let load_before = load_average();

    eprintln!("raw QUIC ceiling: {ceiling_mib} MiB on one stream, best of 3 ...");
    let ceiling = quic_ceiling(&temp.0.join("ceiling"), ceiling_mib << 20, 3)?;
    eprintln!(
        "  {:.0} MiB/s ({})",
        ceiling.rate() / (1 << 20) as f64,
        ceiling.times.iter().map(|t| format!("{t:.3} s")).collect::<Vec<_>>().join(", ")
    );

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
                let r = run_one(&dir, size, rate, mechanism, batch, limit);
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
    }

    let table = render_table(&results);
    let targets = targets(&results, &ceiling);
    println!("{table}");
    println!("{}", render_targets(&targets));
    let document = results_document(args, &sizes, &ceiling, &table, &targets, &results, &load_before);
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
    Ok(results.iter().all(|r| r.ok_report().is_some()))
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
    fn start(dir: &Path) -> Result<Mesh> {
        Mesh::start_with(dir, EXTRA_LIMITS)
    }

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

fn run_one(dir: &Path, size: u64, rate: &'static str, mechanism: &'static str, batch: u32, limit: Duration) -> RunResult {
    let mut result = RunResult { size_mib: size, rate, mechanism, pages_per_ms: 0.0, report: None, problem: None, build_s: 0.0 };
    let mesh = match Mesh::start(dir) {
        Ok(m) => m,
        Err(e) => {
            result.problem = Some(format!("{e:#}"));
            return result;
        }
    };
    if let Err(e) = migrate_once(&mesh, size, rate, mechanism, batch, limit, &mut result) {
        result.problem = Some(format!("{e:#}{}", mesh.log_tail()));
    }
    // The nodes stop when the last handles go (a migration thread that never returned
    // keeps its node: it is left behind rather than waited for).
    drop(mesh);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn migrate_once(
    mesh: &Mesh,
    size: u64,
    rate: &str,
    mechanism: &'static str,
    batch: u32,
    limit: Duration,
    result: &mut RunResult,
) -> Result<()> {
    let source = format!("let MIB = {size};\nlet MODE = \"{rate}\";\nlet BATCH = {batch};\n{PROGRAM}");
    let (a, b) = (mesh.a.node(), mesh.b.node());
    let started = Instant::now();
    let (pid, mut console) = mesh.start_on_a("migrate_heap.tern", &source)?;
    console.wait_line("ready", limit).context("building the heap")?;
    result.build_s = started.elapsed().as_secs_f64();
    let ask = |node: &tern_vm::node::Node, what: i64| -> Result<()> {
        match node.send_to(pid, Message::scalar(Val::Int(what))) {
            Ok(true) => Ok(()),
            Ok(false) => bail!("the program has ended"),
            Err(e) => bail!("cannot send to the program: {e}"),
        }
    };
    if rate != "none" {
        ask(a, MSG_WRITES)?;
        let first = console.wait_line("writes ", limit)?;
        thread::sleep(Duration::from_millis(300));
        ask(a, MSG_WRITES)?;
        let second = console.wait_line("writes ", limit)?;
        if let (Some((n0, t0)), Some((n1, t1))) = (parse_writes(&first), parse_writes(&second)) {
            if t1 > t0 {
                result.pages_per_ms = (n1 - n0) / ((t1 - t0) / 1e3);
            }
        }
    }

    // The migration runs on its own thread; this one sends the sum when the process is on b.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let node_a = mesh.a.clone();
    thread::Builder::new()
        .name("bench-migrate".into())
        .spawn(move || {
            let _ = done_tx.send(mechanism.parse().and_then(|m| node_a.migrate(pid, "b", Some(m))));
        })
        .context("cannot start a thread")?;
    let deadline = Instant::now() + limit;
    let lazy = matches!(mechanism, "lazy" | "hybrid");
    let mut asked = false;
    let report = loop {
        if lazy && !asked && b.is_local(pid) {
            // On b (maybe still frozen there: the message waits for it to run): read every page.
            ask(b, MSG_SUM)?;
            asked = true;
        }
        match done_rx.recv_timeout(Duration::from_micros(200)) {
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
        ask(b, MSG_SUM)?;
    }
    let line = console.wait_line("sum ", limit).context("summing the heap after the move")?;
    match parse_sum(&line) {
        Some((true, node)) if node == "b" => {}
        _ => bail!("after the move the program printed `{line}`"),
    }
    ask(b, MSG_STOP)?;
    console.wait_line("stopped", Duration::from_secs(30))?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The raw QUIC ceiling
// ---------------------------------------------------------------------------------

/// Sends `bytes` on one QUIC stream between two endpoints on loopback, `runs` times.
fn quic_ceiling(dir: &Path, bytes: u64, runs: usize) -> Result<Ceiling> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cfg = tern_net::cmd::loopback_mesh(dir, 2, "").map_err(|e| anyhow!("cannot make a loopback mesh: {e}"))?;
    let server_cfg = tern_net::tls::server_config(&cfg, "a").map_err(|e| anyhow!("{e}"))?;
    let client_cfg = tern_net::tls::client_config(&cfg, "b", tern_net::tls::ALPN_MESH).map_err(|e| anyhow!("{e}"))?;
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")
    };
    let (rt_a, rt_b) = (runtime("ceiling-a")?, runtime("ceiling-b")?);
    let addr_a = cfg.node("a").map(|n| n.addr).ok_or_else(|| anyhow!("no node a"))?;
    let addr_b = cfg.node("b").map(|n| n.addr).ok_or_else(|| anyhow!("no node b"))?;
    let server = {
        let _g = rt_a.enter();
        quinn::Endpoint::server(server_cfg, addr_a).context("cannot listen")?
    };
    let client = {
        let _g = rt_b.enter();
        let mut ep = quinn::Endpoint::client(addr_b).context("cannot bind")?;
        ep.set_default_client_config(client_cfg);
        ep
    };
    // The receiving side: each stream read to its end, the byte count reported.
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    rt_a.spawn(async move {
        let Some(incoming) = server.accept().await else { return };
        let conn = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                let _ = got_tx.send(Err(format!("accept: {e}")));
                return;
            }
        };
        while let Ok(mut recv) = conn.accept_uni().await {
            let mut n = 0u64;
            let r = loop {
                match recv.read_chunk(1 << 20, true).await {
                    Ok(Some(chunk)) => n += chunk.bytes.len() as u64,
                    Ok(None) => break Ok(n),
                    Err(e) => break Err(format!("read: {e}")),
                }
            };
            let _ = got_tx.send(r);
        }
    });
    let result = rt_b.block_on(async {
        let conn = client.connect(addr_a, "a").map_err(|e| anyhow!("connect: {e}"))?.await.map_err(|e| anyhow!("connect: {e}"))?;
        let buf = vec![0x5au8; 1 << 20];
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let mut send = conn.open_uni().await.map_err(|e| anyhow!("open: {e}"))?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                send.write_all(&buf[..n]).await.map_err(|e| anyhow!("write: {e}"))?;
                left -= n as u64;
            }
            send.finish().map_err(|e| anyhow!("finish: {e}"))?;
            match got_rx.recv().await {
                Some(Ok(n)) if n == bytes => times.push(t.elapsed().as_secs_f64()),
                Some(Ok(n)) => bail!("the receiver got {n} bytes, not {bytes}"),
                Some(Err(e)) => bail!("{e}"),
                None => bail!("the receiver stopped"),
            }
        }
        conn.close(0u32.into(), b"done");
        Ok(times)
    });
    client.wait_idle_blocking(&rt_b);
    rt_a.shutdown_timeout(Duration::from_secs(1));
    rt_b.shutdown_timeout(Duration::from_secs(1));
    Ok(Ceiling { bytes, times: result? })
}

/// `Endpoint::wait_idle` from outside the runtime, bounded.
trait WaitIdle {
    fn wait_idle_blocking(&self, rt: &tokio::runtime::Runtime);
}

impl WaitIdle for quinn::Endpoint {
    fn wait_idle_blocking(&self, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_idle()).await;
        });
    }
}

// ---------------------------------------------------------------------------------
// Tables, targets, documents, chart
// ---------------------------------------------------------------------------------

fn size_label(mib: u64) -> String {
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
        "rounds",
        "redundant",
        "final pages",
        "absent at resume",
        "faults",
        "fault p50/p99 (µs)",
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
                r.mechanism.to_string(),
            ];
            match (&r.report, &r.problem) {
                (Some(rep), problem) if rep.ok => {
                    let lazy = matches!(r.mechanism, "lazy" | "hybrid");
                    let precopy = matches!(r.mechanism, "precopy" | "hybrid");
                    row.extend([
                        rep.freeze_time_us.to_string(),
                        format!("{:.1}", rep.total_time_us as f64 / 1e3),
                        format!("{:.1}", rep.bytes_sent as f64 / 1e6),
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
                        if lazy { rep.pages_pushed.to_string() } else { "-".into() },
                        if precopy { rep.stop_reason.clone() } else { "-".into() },
                        if precopy { rep.throttle_level.to_string() } else { "-".into() },
                        if problem.is_none() { "ok".into() } else { "FAILED".into() },
                    ]);
                }
                _ => {
                    row.push("FAILED".into());
                    row.extend((0..12).map(|_| "-".to_string()));
                }
            }
            row
        })
        .collect();
    report::markdown_table(&headers, &rows)
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

fn targets(results: &[RunResult], ceiling: &Ceiling) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    // 1. Precopy, 256 MiB, light writer: freeze < 1 ms.
    out.push(match find(results, 256, "light", "precopy") {
        Some(r) => match r.ok_report() {
            Some(rep) => TargetCheck {
                what: "precopy freeze time < 1 ms at 256 MiB with a light writer".into(),
                measured: format!(
                    "{} µs ({} final pages, writer {:.1} pages/ms, rounds {:?}, stop {})",
                    rep.freeze_time_us, rep.final_pages, r.pages_per_ms, rep.rounds, rep.stop_reason
                ),
                met: Some(rep.freeze_time_us < 1000),
            },
            None => TargetCheck {
                what: "precopy freeze time < 1 ms at 256 MiB with a light writer".into(),
                measured: format!("the run failed: {}", r.problem.clone().unwrap_or_default()),
                met: Some(false),
            },
        },
        None => {
            TargetCheck { what: "precopy freeze time < 1 ms at 256 MiB with a light writer".into(), measured: "not run".into(), met: None }
        }
    });
    // 1b. ... growing with the writable working set rather than the heap size.
    let light: Vec<(u64, u64, u32)> = results
        .iter()
        .filter(|r| r.rate == "light" && r.mechanism == "precopy")
        .filter_map(|r| r.ok_report().map(|rep| (r.size_mib, rep.freeze_time_us, rep.final_pages)))
        .collect();
    if light.len() >= 2 {
        let (first, last) = (light[0], light[light.len() - 1]);
        let size_ratio = last.0 as f64 / first.0 as f64;
        let freeze_ratio = last.1 as f64 / first.1.max(1) as f64;
        out.push(TargetCheck {
            what: "precopy freeze time (light writer) grows with the writable working set, not the heap size".into(),
            measured: format!(
                "{}: heap ×{size_ratio:.0}, freeze time ×{freeze_ratio:.2}",
                light.iter().map(|(s, f, p)| format!("{} {f} µs ({p} final pages)", size_label(*s))).collect::<Vec<_>>().join(", ")
            ),
            // Far from proportional: a tenth of the heap's growth at most.
            met: Some(freeze_ratio < (size_ratio / 10.0).max(2.0)),
        });
    }
    // 2. Lazy: freeze < 1 ms at every size.
    let lazy: Vec<&RunResult> = results.iter().filter(|r| r.mechanism == "lazy").collect();
    if !lazy.is_empty() {
        let failed = lazy.iter().filter(|r| r.ok_report().is_none()).count();
        let worst = lazy.iter().filter_map(|r| r.ok_report().map(|rep| (rep.freeze_time_us, r))).max_by_key(|(f, _)| *f);
        let per_size: BTreeMap<u64, u64> =
            lazy.iter().filter_map(|r| r.ok_report().map(|rep| (r.size_mib, rep.freeze_time_us))).fold(BTreeMap::new(), |mut m, (s, f)| {
                let e = m.entry(s).or_insert(0);
                *e = (*e).max(f);
                m
            });
        let mut measured = format!(
            "worst per heap size: {}",
            per_size.iter().map(|(s, f)| format!("{} {f} µs", size_label(*s))).collect::<Vec<_>>().join(", ")
        );
        if let Some((f, r)) = worst {
            let _ = write!(measured, "; worst {f} µs ({}, writer {})", size_label(r.size_mib), r.rate);
        }
        if failed > 0 {
            let _ = write!(measured, "; {failed} run(s) failed");
        }
        out.push(TargetCheck {
            what: "lazy freeze time < 1 ms regardless of heap size".into(),
            measured,
            met: Some(failed == 0 && worst.is_some_and(|(f, _)| f < 1000)),
        });
    }
    // 3. Freeze, 1 GiB: at least 80% of the raw QUIC throughput.
    let what = "freeze migration of 1 GiB at ≥ 80% of raw QUIC throughput (same TLS, loopback, one stream)".to_string();
    let raw = ceiling.rate();
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
                        "writer {}: {:.0} MiB in {:.3} s = {:.0} MiB/s; raw QUIC {:.0} MiB/s ({} MiB in {:.3} s): {pct:.0}%{}",
                        r.rate,
                        heap_bytes as f64 / (1 << 20) as f64,
                        rep.total_time_us as f64 / 1e6,
                        rate / (1 << 20) as f64,
                        raw / (1 << 20) as f64,
                        ceiling.bytes >> 20,
                        ceiling.best_s(),
                        if others.is_empty() { String::new() } else { format!(" (other runs: {})", others.join(", ")) }
                    ),
                    met: Some(pct >= 80.0),
                }
            }
            None => TargetCheck { what, measured: format!("the run failed: {}", r.problem.clone().unwrap_or_default()), met: Some(false) },
        },
        None => TargetCheck { what, measured: format!("not run (raw QUIC {:.0} MiB/s)", raw / (1 << 20) as f64), met: None },
    });
    out
}

fn render_targets(checks: &[TargetCheck]) -> String {
    let headers: Vec<String> = ["target", "measured", "met"].iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.what.clone(),
                c.measured.clone(),
                match c.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "not measured".into(),
                },
            ]
        })
        .collect();
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
    ceiling: &Ceiling,
    table: &str,
    checks: &[TargetCheck],
    results: &[RunResult],
    load_before: &str,
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
    let mut doc = String::from("# Tern live migration: freeze, precopy, lazy, hybrid\n\n");
    let _ = writeln!(doc, "- Date: {}", report::utc_now());
    let _ = writeln!(doc, "- Machine: {}{}", report::machine_note(), procs::memory_note());
    if !load_before.is_empty() {
        let _ = writeln!(doc, "- Load average before the runs: {load_before}; after: {}", load_average());
    }
    let _ = writeln!(doc, "- Command: `{invocation}`{}", procs::source_note(&root));
    let _ = writeln!(
        doc,
        "- Nodes: **two `MeshNode`s in one OS process** (the bench's), on loopback, QUIC with mutual TLS between \
         them exactly as between two OS processes (a fresh mesh from `tern_net::cmd::loopback_mesh` for every run; \
         2 VM worker threads and 1 network thread per node; `[limits] heap_bytes = 2 GiB`, pages of 4 KiB). \
         Both nodes share the machine's 2 cores with each other and with the bench."
    );
    let _ = writeln!(
        doc,
        "- Program: `bench/programs/migrate_heap.tern` with the heap as 1-MiB arrays of ints (every cell 1). \
         Writers: **none** waits in `recv()`; **light** touches one cell in each of the next {} pages, then \
         `sleep(1)`; **heavy** touches one cell in each of the next {} pages and looks at its mailbox, without \
         sleeping. Both walk page after page over the whole heap. `pages/ms` is measured in the program before \
         the move (writes counted over 300 ms; each write is to a different page).",
        args.light_pages, args.heavy_batch
    );
    let _ = writeln!(
        doc,
        "- Each run: start the program on node a, wait for its heap (\"ready\"), measure the writer, \
         `MeshNode::migrate(pid, \"b\", Some(mechanism))`. Lazy and hybrid: as soon as the process is on b it is \
         asked to sum every cell, so its absent pages fault in while the background push runs; the report comes \
         when the destination has every page. Then (all mechanisms) the sum must equal the cells plus the writes, \
         on node b (`sum` = ok), and the program is stopped. One run per (heap, writer, mechanism)."
    );
    let _ = writeln!(
        doc,
        "- Ceiling: {} MiB on one QUIC stream between two quinn endpoints on loopback with the mesh's TLS and \
         transport configs (`tern_net::tls`, rustls with ring), each endpoint on its own 1-thread tokio runtime; \
         best of {}: **{:.0} MiB/s** ({}).",
        ceiling.bytes >> 20,
        ceiling.times.len(),
        ceiling.rate() / (1 << 20) as f64,
        ceiling.times.iter().map(|t| format!("{t:.3} s")).collect::<Vec<_>>().join(", ")
    );
    doc.push_str("\n## Results\n\n");
    doc.push_str(table);
    doc.push_str(
        "\nColumns, from the `MigReport`: `freeze` is `freeze_time_us` (from the process frozen at the source to \
         `Committed` seen there, plus the destination's wait from `Commit` to running it: an upper bound of the \
         time it runs nowhere); `total` from the start of the \
         migration to its end (for lazy and hybrid: until the destination has every page); `MB sent` the bytes \
         on the migration stream; `rounds` the pre-copy rounds; `redundant` pages sent more than once; \
         `final pages` pages sent while frozen; `absent at resume`, `faults` (pages the process faulted on at \
         the destination), their latency, and `pushed` (pages sent by the background push) for lazy and hybrid; \
         `stop` why the pre-copy rounds stopped and `throttle` the highest throttle level applied.\n",
    );
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
             {:.1} ms after the start; outcome {}",
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
        _ => RGBColor(0x94, 0x67, 0xbd),
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

    #[test]
    fn the_program_compiles() {
        let src = format!("let MIB = 1;\nlet MODE = \"light\";\nlet BATCH = 4;\n{PROGRAM}");
        tern_net::runner::compile_text("migrate_heap.tern", &src).map_err(|e| e.rendered).unwrap();
    }
}
