//! `tern-bench remote`: messages between two nodes in two OS processes, Tern beside
//! Erlang.
//!
//! Each benchmark is `bench/programs/NAME.tern` beside `NAME.erl` (module `NAME`
//! exporting `main/1`, which takes the peer node's short name). In every run the runner
//! starts, for Tern, a fresh 2-node mesh on loopback (`tern_net::cmd::loopback_mesh`:
//! free ports, certificates from a new cluster CA) as two `tern node` child processes,
//! waits until each node sees the other up (`tern ctl --json nodes`) and runs each
//! program on node a with `tern ctl --node a spawn FILE --wait`; then, for Erlang, a
//! fresh `erl -sname` node B (child process) and, per program, a node A running
//! `NAME:main([B])`. The programs put one process on the other node (`spawn_on("b", ..)`,
//! `spawn(Node, M, F, A)`), time their own work with a monotonic clock and print one line
//! `NAME: key=value ...`. The medians over the runs are printed as a markdown table and
//! written to `bench/results/remote-speed.md`. Nodes are stopped when a run is done (and
//! when the runner fails or panics: they are held by a guard).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::exec::{self, Outcome};
use crate::procs::{self, Erlang, Problem, TempDir, INSTALL_HINT};
use crate::report;
use crate::table::{self, Cell, Failure, Lang, Row, Target};
use crate::vm::stderr_tail;

/// The programs, in table order.
const PROGRAMS: [&str; 2] = ["remote_pingpong", "remote_throughput"];

/// Erlang modules the programs share (`bench/programs/NAME.erl`), compiled with them.
const ERL_HELPERS: [&str; 1] = ["remote_peer"];

/// How long nodes may take to start and see each other.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct RemoteArgs {
    /// Runs per language, interleaved (a fresh pair of nodes each); the median of each
    /// measure counts.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The Tern binary. Without it the runner builds <workspace>/target/release/tern
    /// (`cargo build --release -p tern-net --bin tern`) and uses that.
    #[arg(long, value_name = "PATH")]
    tern: Option<PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Kill a program still running after this many seconds; it is reported as TIMEOUT.
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// The runs of one (program, language): the `key=value` pairs of each, or why it failed.
#[derive(Default)]
struct Runs {
    samples: Vec<HashMap<String, f64>>,
    failed: Option<Failure>,
}

/// Node processes started by the runner, stopped (SIGTERM, then SIGKILL after a grace
/// period) when dropped.
#[derive(Default)]
struct Nodes(Vec<NodeProcess>);

struct NodeProcess {
    name: String,
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Nodes {
    /// Starts `cmd` as a node, its output going to `log`.
    fn start(&mut self, name: &str, mut cmd: Command, log: PathBuf) -> Result<()> {
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("cannot reopen {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("cannot start node {name}: {cmd:?}"))?;
        self.0.push(NodeProcess { name: name.to_string(), child, log });
        Ok(())
    }

    /// An error if a node has exited, with the end of its log.
    fn check_running(&mut self) -> Result<()> {
        for node in &mut self.0 {
            if let Some(status) = node.child.try_wait().context("cannot poll a node")? {
                let log = fs::read_to_string(&node.log).unwrap_or_default();
                bail!("node {} exited ({status}){}", node.name, stderr_tail(&log));
            }
        }
        Ok(())
    }

    /// The ends of every node's log, for a failure report.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.0 {
            let log = fs::read_to_string(&node.log).unwrap_or_default();
            let tail = stderr_tail(&log);
            if !tail.is_empty() {
                out.push_str(&format!("\n  node {}{tail}", node.name));
            }
        }
        out
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            terminate(&mut node.child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.0 {
            loop {
                match node.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let log = fs::read_to_string(&node.log).unwrap_or_default();
                        eprintln!(
                            "node {} did not stop within {} s of SIGTERM: killing it{}",
                            node.name,
                            STOP_GRACE.as_secs(),
                            stderr_tail(&log)
                        );
                        let _ = node.child.kill();
                        let _ = node.child.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// Asks a child to stop: SIGTERM on Unix (both `tern node` and `erl` shut down cleanly
/// on it), a kill elsewhere.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    #[cfg(unix)]
    {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own child,
            // not reaped yet (`try_wait` above saw it running; only this thread reaps it).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// A Tern mesh on loopback, its nodes running as `tern node` children (stopped when it
/// is dropped).
pub(crate) struct TernMesh {
    pub(crate) config: PathBuf,
    nodes: Nodes,
}

impl TernMesh {
    /// The OS process id of node `name`, while it runs.
    pub(crate) fn node_pid(&self, name: &str) -> Option<u32> {
        self.nodes.0.iter().find(|n| n.name == name).map(|n| n.child.id())
    }

    /// Writes a fresh config and certificates in `dir`, starts nodes a and b and waits
    /// until each sees the other up.
    fn start(tern: &Path, dir: &Path) -> Result<TernMesh> {
        Self::start_n(tern, dir, 2)
    }

    /// As [`TernMesh::start`], with `n` nodes (a, b, c, ...), each seeing every node up.
    pub(crate) fn start_n(tern: &Path, dir: &Path, n: usize) -> Result<TernMesh> {
        Self::start_with(tern, dir, n, "", None)
    }

    /// As [`TernMesh::start_n`], with `extra` in the config (before the nodes) and, if
    /// given, `workers` worker threads per node instead of 2.
    pub(crate) fn start_with(tern: &Path, dir: &Path, n: usize, extra: &str, workers: Option<usize>) -> Result<TernMesh> {
        Self::start_with_mesh(tern, dir, n, extra, workers, "")
    }

    /// As [`TernMesh::start_with`], with `mesh_keys` (lines of `key = value`) added to
    /// the config's `[mesh]` table.
    pub(crate) fn start_with_mesh(
        tern: &Path,
        dir: &Path,
        n: usize,
        extra: &str,
        workers: Option<usize>,
        mesh_keys: &str,
    ) -> Result<TernMesh> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cfg = tern_net::cmd::loopback_mesh(dir, n, extra).map_err(|e| anyhow!("cannot make a loopback mesh: {e}"))?;
        let config = cfg.file.clone();
        if workers.is_some() || !mesh_keys.is_empty() {
            let mut text = fs::read_to_string(&config).with_context(|| format!("cannot read {}", config.display()))?;
            if let Some(w) = workers {
                text = text.replace("workers = 2\n", &format!("workers = {w}\n"));
            }
            if !mesh_keys.is_empty() {
                text = text.replacen("[mesh]\n", &format!("[mesh]\n{}\n", mesh_keys.trim_end()), 1);
            }
            fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
        }
        let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
        let mut nodes = Nodes::default();
        for name in &names {
            let mut cmd = Command::new(tern);
            cmd.arg("node").arg("--config").arg(&config).args(["--name", name]).current_dir(dir);
            nodes.start(name, cmd, dir.join(format!("node-{name}.log")))?;
        }
        let mut mesh = TernMesh { config, nodes };
        let deadline = Instant::now() + STARTUP_LIMIT;
        for name in &names {
            loop {
                mesh.nodes.check_running()?;
                match all_up(tern, &mesh.config, name) {
                    Ok(true) => break,
                    Ok(false) | Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                    Ok(false) => {
                        bail!("node {name} did not see every node up within {} s{}", STARTUP_LIMIT.as_secs(), mesh.nodes.log_tails())
                    }
                    Err(e) => bail!("node {name} did not answer within {} s: {e:#}{}", STARTUP_LIMIT.as_secs(), mesh.nodes.log_tails()),
                }
            }
        }
        Ok(mesh)
    }
}

impl TernMesh {
    /// The end of each node's log, for a failure report.
    pub(crate) fn log_tails(&self) -> String {
        self.nodes.log_tails()
    }
}

/// Whether node `name` answers `tern ctl --json nodes` and reports every node up.
fn all_up(tern: &Path, config: &Path, name: &str) -> Result<bool> {
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(config).args(["--node", name, "--json", "nodes"]);
    match exec::run_timed(&mut cmd, Duration::from_secs(10))? {
        Outcome::Exited { status, stdout, .. } if status.success() => {
            let rows: serde_json::Value =
                serde_json::from_str(stdout.trim()).with_context(|| format!("`tern ctl nodes` printed {stdout:?}"))?;
            let rows = rows.as_array().ok_or_else(|| anyhow!("`tern ctl nodes` printed {stdout:?}, not a list"))?;
            Ok(!rows.is_empty() && rows.iter().all(|r| r["status"] == "up"))
        }
        Outcome::Exited { status, stdout, stderr, .. } => {
            bail!("`tern ctl nodes` failed ({status}){}", stderr_tail(&format!("{stdout}{stderr}")))
        }
        Outcome::TimedOut => bail!("`tern ctl nodes` took more than 10 s"),
    }
}

/// An Erlang node B (a child), the peer of each program's node A.
struct ErlangPeer {
    /// B's short name (`-sname`), which the programs are given.
    name: String,
    nodes: Nodes,
}

/// What Erlang runs need: the tools, the compiled modules, the cookie.
struct ErlangSetup {
    erlang: Erlang,
    ebin: PathBuf,
    cookie: String,
}

impl ErlangSetup {
    /// The common arguments of node A and B: a short name, the cookie, no shell, the
    /// modules on the code path (both nodes need them: B runs the spawned functions).
    fn erl(&self, sname: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.erlang.erl);
        cmd.args(["-sname", sname, "-setcookie", &self.cookie, "-noshell", "-pa"]).arg(&self.ebin);
        cmd.env("ERL_CRASH_DUMP", dir.join(format!("erl_crash-{sname}.dump"))).current_dir(dir);
        cmd
    }

    fn start_peer(&self, sname: &str, dir: &Path) -> Result<ErlangPeer> {
        let mut nodes = Nodes::default();
        nodes.start(sname, self.erl(sname, dir), dir.join(format!("{sname}.log")))?;
        // Node A waits (net_adm:ping, up to 10 s) for B to answer, so nothing to wait
        // for here but a quick exit (e.g. a name clash or no epmd).
        thread::sleep(Duration::from_millis(100));
        nodes.check_running()?;
        Ok(ErlangPeer { name: sname.to_string(), nodes })
    }
}

/// Makes the command that runs one program (by name) on the nodes of a run.
type ProgramCommand<'a> = Box<dyn Fn(&str) -> Command + 'a>;

/// Runs the suite; `Ok(false)` when some program failed, timed out or printed
/// something unexpected.
pub fn run(args: &RemoteArgs) -> Result<bool> {
    let root = crate::workspace_root();
    let programs_dir = crate::bench_dir().join("programs");
    let limit = Duration::from_secs(args.timeout);
    let programs = PROGRAMS.iter().flat_map(|p| [format!("{p}.tern"), format!("{p}.erl")]);
    for name in programs.chain(ERL_HELPERS.iter().map(|h| format!("{h}.erl"))) {
        let file = programs_dir.join(name);
        if !file.is_file() {
            bail!("{} does not exist", file.display());
        }
    }

    let tern = procs::tern_to_measure(args.tern.as_deref(), args.no_build, &root)?;
    let temp = TempDir::new("remote")?;
    let mut problems = Vec::new();
    let found = procs::find_erlang();
    let have_erlang = found.is_some();
    let erlang = match found {
        Some(erlang) => prepare_erlang(erlang, &programs_dir, &temp.0, &mut problems)?,
        None => None,
    };
    let load_before = load_average();

    let langs = [Lang::Tern, Lang::Erlang];
    eprintln!(
        "running {} program(s) x {} language(s) on 2 nodes in 2 OS processes, median of {} run(s), timeout {} s",
        PROGRAMS.len(),
        if have_erlang { 2 } else { 1 },
        args.runs,
        args.timeout
    );
    let mut results: HashMap<(&str, Lang), Runs> = HashMap::new();
    if erlang.is_none() {
        for program in PROGRAMS {
            results.entry((program, Lang::Erlang)).or_default().failed = Some(Failure::Failed);
        }
    }
    // Alternate the languages run by run, so that a slow drift in machine speed does
    // not favour one of them; each run starts fresh nodes.
    for run in 1..=args.runs {
        for lang in langs {
            if PROGRAMS.iter().all(|p| results.get(&(*p, lang)).is_some_and(|r| r.failed.is_some())) {
                continue;
            }
            let dir = temp.0.join(format!("{}-{run}", lang.name()));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            eprint!("{:<6} run {run}/{}: starting 2 nodes ... ", lang.name(), args.runs);
            let started = Instant::now();
            // The nodes of this run and, per program, the command that runs it.
            let launched: Result<(Nodes, ProgramCommand)> = match lang {
                Lang::Tern => TernMesh::start(&tern, &dir).map(|mesh| {
                    let (tern, config) = (tern.clone(), mesh.config.clone());
                    let programs_dir = programs_dir.clone();
                    let command = move |program: &str| {
                        let mut cmd = Command::new(&tern);
                        cmd.arg("ctl").arg("--config").arg(&config).args(["--node", "a", "spawn"]);
                        cmd.arg(programs_dir.join(format!("{program}.tern"))).arg("--wait");
                        cmd
                    };
                    (mesh.nodes, Box::new(command) as ProgramCommand)
                }),
                Lang::Erlang => {
                    let Some(setup) = &erlang else { continue };
                    let b = format!("tern_bench_b_{}_{run}", std::process::id());
                    setup.start_peer(&b, &dir).map(|ErlangPeer { name: peer, nodes }| {
                        let dir = dir.clone();
                        let command = move |program: &str| {
                            let a = format!("tern_bench_a_{}_{run}_{program}", std::process::id());
                            let mut cmd = setup.erl(&a, &dir);
                            cmd.args(["-s", program, "main", &peer, "-s", "init", "stop"]);
                            cmd
                        };
                        (nodes, Box::new(command) as ProgramCommand)
                    })
                }
            };
            let (mut nodes, command) = match launched {
                Ok(x) => x,
                Err(err) => {
                    eprintln!("FAILED");
                    for program in PROGRAMS {
                        results.entry((program, lang)).or_default().failed = Some(Failure::Failed);
                    }
                    problems.push(Problem { what: "starting the nodes".into(), lang: lang.name(), detail: format!("{err:#}") });
                    continue;
                }
            };
            eprintln!("up in {:.2} s", started.elapsed().as_secs_f64());
            for program in PROGRAMS {
                let runs = results.entry((program, lang)).or_default();
                if runs.failed.is_some() {
                    continue;
                }
                eprint!("  {program:<18} ");
                let mut cmd = command(program);
                let outcome = run_once(&mut cmd, program, limit).and_then(|values| {
                    // A node that died during the program is a failure even if the
                    // program's line came out.
                    nodes.check_running().map_err(|e| (Failure::Failed, format!("{e:#}")))?;
                    Ok(values)
                });
                match outcome {
                    Ok(values) => {
                        eprintln!("{}", describe(program, &values));
                        runs.samples.push(values);
                    }
                    Err((failure, detail)) => {
                        eprintln!("{}", if failure == Failure::Timeout { "TIMEOUT" } else { "FAILED" });
                        runs.failed = Some(failure);
                        let detail = format!("{detail}{}", nodes.log_tails());
                        problems.push(Problem { what: program.to_string(), lang: lang.name(), detail });
                    }
                }
            }
            drop(nodes);
        }
    }

    let rows = measures(&results, have_erlang);
    let table = table::render(&rows);
    println!("\n{table}");
    let per_run = render_per_run(&results);

    let results_path = crate::bench_dir().join("results").join("remote-speed.md");
    let doc = results_document(args, &tern, &root, erlang.as_ref().map(|s| &s.erlang), limit, &table, &per_run, &load_before);
    report::write_file(&results_path, &doc)?;
    eprintln!("wrote {}", results_path.display());

    Ok(procs::finish(have_erlang, &rows, &problems))
}

/// Compiles the `.erl` programs and their helpers into `temp/ebin` and starts epmd;
/// `None` (with a problem) if a module does not compile.
fn prepare_erlang(erlang: Erlang, programs_dir: &Path, temp: &Path, problems: &mut Vec<Problem>) -> Result<Option<ErlangSetup>> {
    let ebin = temp.join("ebin");
    fs::create_dir_all(&ebin).with_context(|| format!("cannot create {}", ebin.display()))?;
    let mut cmd = Command::new(&erlang.erlc);
    cmd.arg("-o").arg(&ebin);
    for module in PROGRAMS.iter().chain(&ERL_HELPERS) {
        cmd.arg(programs_dir.join(format!("{module}.erl")));
    }
    let failure = match exec::run_timed(&mut cmd, Duration::from_secs(120))? {
        Outcome::Exited { status, .. } if status.success() => None,
        Outcome::Exited { status, stdout, stderr, .. } => {
            Some(format!("erlc failed ({status}){}", stderr_tail(&format!("{stdout}{stderr}"))))
        }
        Outcome::TimedOut => Some("erlc still running after 120 s, killed".to_string()),
    };
    if let Some(detail) = failure {
        problems.push(Problem { what: "compiling the modules".into(), lang: "erlang", detail });
        return Ok(None);
    }
    // `erl -sname` starts epmd itself when it is not running; starting it first keeps
    // that out of the first run. It stays running afterwards, as it would for any node.
    if let Some(epmd) = exec::find_on_path("epmd") {
        let mut cmd = Command::new(epmd);
        cmd.arg("-daemon");
        let _ = exec::run_timed(&mut cmd, Duration::from_secs(30));
    }
    let cookie = format!("tern_bench_{}", std::process::id());
    Ok(Some(ErlangSetup { erlang, ebin, cookie }))
}

/// The keys a program's line must have, with the values they must have (`None`: any
/// number, a time).
fn expected_values(program: &str) -> Vec<(&'static str, Option<f64>)> {
    match program {
        "remote_pingpong" => vec![("rounds", Some(20_000.0)), ("total_us", None)],
        "remote_throughput" => vec![("count", Some(200_000.0)), ("first_us", None), ("stream_us", None), ("total_us", None)],
        _ => Vec::new(),
    }
}

/// Runs one program once and reads its `NAME: key=value ...` line.
fn run_once(cmd: &mut Command, program: &str, limit: Duration) -> Result<HashMap<String, f64>, (Failure, String)> {
    let (status, stdout, stderr) = match exec::run_timed(cmd, limit) {
        Err(err) => return Err((Failure::Failed, format!("{err:#}"))),
        Ok(Outcome::TimedOut) => return Err((Failure::Timeout, format!("still running after {} s, killed", limit.as_secs()))),
        Ok(Outcome::Exited { status, stdout, stderr, .. }) => (status, stdout, stderr),
    };
    if !status.success() {
        return Err((Failure::Failed, format!("{status}{}", stderr_tail(&format!("{stdout}{stderr}")))));
    }
    let prefix = format!("{program}:");
    let Some(line) = stdout.lines().find(|l| l.starts_with(&prefix)) else {
        return Err((Failure::Failed, format!("no `{prefix} ...` line in the output{}", stderr_tail(&format!("{stdout}{stderr}")))));
    };
    let values = procs::parse_values(&line[prefix.len()..]);
    for (key, want) in expected_values(program) {
        match (values.get(key), want) {
            (None, _) => return Err((Failure::Failed, format!("`{key}=` missing from `{line}`"))),
            (Some(&got), Some(want)) if got != want => return Err((Failure::Failed, format!("expected {key}={want}, got `{line}`"))),
            (Some(&got), None) if got <= 0.0 => return Err((Failure::Failed, format!("expected {key} > 0, got `{line}`"))),
            _ => {}
        }
    }
    Ok(values)
}

/// The derived measures of one run of `program`, for the progress line and the
/// per-run list.
fn describe(program: &str, values: &HashMap<String, f64>) -> String {
    match program {
        "remote_pingpong" => match round_trip_us(values) {
            Some(rt) => format!("round trip {rt:.2} µs"),
            None => String::new(),
        },
        "remote_throughput" => match (stream_rate(values), total_rate(values), values.get("first_us")) {
            (Some(stream), Some(total), Some(first)) => {
                format!("{stream:.0} msg/s first to last, {total:.0} msg/s from spawn, first after {:.1} ms", first / 1e3)
            }
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// µs per round trip: `total_us / rounds`.
fn round_trip_us(v: &HashMap<String, f64>) -> Option<f64> {
    Some(v.get("total_us")? / v.get("rounds")?)
}

/// Messages per second from the first message to the last at the receiver.
fn stream_rate(v: &HashMap<String, f64>) -> Option<f64> {
    Some((v.get("count")? - 1.0) / v.get("stream_us")? * 1e6)
}

/// Messages per second from the spawn on the other node to the last message.
fn total_rate(v: &HashMap<String, f64>) -> Option<f64> {
    Some(v.get("count")? / v.get("total_us")? * 1e6)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// The table rows: medians over the runs.
fn measures(results: &HashMap<(&str, Lang), Runs>, have_erlang: bool) -> Vec<Row> {
    let cell = |program: &str, lang: Lang, f: fn(&HashMap<String, f64>) -> Option<f64>| -> Cell {
        if lang == Lang::Erlang && !have_erlang {
            return Cell::Skipped;
        }
        match results.get(&(program, lang)) {
            Some(Runs { failed: Some(failure), .. }) => Cell::failed(*failure),
            None => Cell::Failed,
            Some(runs) => median(runs.samples.iter().filter_map(f).collect()).map_or(Cell::Failed, Cell::Value),
        }
    };
    let row = |label: &str, program: &str, decimals: usize, target: Option<Target>, f: fn(&HashMap<String, f64>) -> Option<f64>| Row {
        label: label.to_string(),
        tern: cell(program, Lang::Tern, f),
        erlang: cell(program, Lang::Erlang, f),
        decimals,
        target,
    };
    vec![
        row("remote pingpong: round trip (µs)", "remote_pingpong", 2, Some(Target::AtMost(1.0)), round_trip_us),
        row("remote throughput: messages/s, first to last", "remote_throughput", 0, Some(Target::AtLeast(1.0)), stream_rate),
        row("remote throughput: messages/s, from the spawn", "remote_throughput", 0, None, total_rate),
        row("remote throughput: spawn to first message (ms)", "remote_throughput", 2, None, |v| Some(v.get("first_us")? / 1e3)),
    ]
}

/// Every run's measures, one line per (program, language), for the results file.
fn render_per_run(results: &HashMap<(&str, Lang), Runs>) -> String {
    let mut out = String::new();
    for program in PROGRAMS {
        for lang in [Lang::Tern, Lang::Erlang] {
            let Some(runs) = results.get(&(program, lang)) else { continue };
            if runs.samples.is_empty() {
                continue;
            }
            let each: Vec<String> = runs.samples.iter().map(|v| describe(program, v)).collect();
            out.push_str(&format!("- {program}, {}: {}\n", lang.name(), each.join("; ")));
        }
    }
    out
}

/// `/proc/loadavg`'s three load averages, or nothing.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// `bench/results/remote-speed.md`: the table with when, where and how it was measured.
#[allow(clippy::too_many_arguments)]
fn results_document(
    args: &RemoteArgs,
    tern: &Path,
    root: &Path,
    erlang: Option<&Erlang>,
    limit: Duration,
    table: &str,
    per_run: &str,
    load_before: &str,
) -> String {
    let mut invocation = format!("cargo run --release -p tern-bench -- remote --runs {}", args.runs);
    if let Some(path) = &args.tern {
        invocation.push_str(&format!(" --tern {}", path.display()));
    } else if args.no_build {
        invocation.push_str(" --no-build");
    }
    let tern_shown = tern.strip_prefix(root).unwrap_or(tern).display().to_string();
    let erlang_shown = match erlang {
        Some(e) => format!(
            "{}; node B: `erl -sname B -setcookie K -noshell -pa EBIN`, node A per program: \
             `erl -sname A -setcookie K -noshell -pa EBIN -s NAME main B -s init stop`",
            procs::erlang_version(&e.erl).unwrap_or_else(|| "version unknown".into())
        ),
        None => format!("not installed, skipped ({INSTALL_HINT})"),
    };
    let mut doc = String::from("# Tern messages between nodes beside Erlang distribution\n\n");
    doc.push_str(&format!("- Date: {}\n", report::utc_now()));
    doc.push_str(&format!("- Machine: {}{}\n", report::machine_note(), procs::memory_note()));
    if !load_before.is_empty() {
        doc.push_str(&format!("- Load average before the runs: {load_before}; after: {}\n", load_average()));
    }
    doc.push_str(&format!("- Command: `{invocation}`\n"));
    doc.push_str(&format!(
        "- Method: {} run(s) per language, alternating (a fresh pair of nodes each); the median of each \
         measure counts; programs killed after {} s\n",
        args.runs,
        limit.as_secs()
    ));
    doc.push_str(&format!(
        "- tern: 2 nodes on loopback (QUIC, mutual TLS), `{tern_shown} node --config C --name a` and `--name b` \
         (2 worker threads each), programs run with `{tern_shown} ctl --config C --node a spawn bench/programs/NAME.tern \
         --wait`{}\n",
        if args.tern.is_some() || args.no_build { ", the binary as found (not rebuilt)".to_string() } else { procs::source_note(root) }
    ));
    doc.push_str(&format!("- erlang: {erlang_shown} (2 schedulers each; distribution over TCP on loopback)\n"));
    doc.push('\n');
    doc.push_str(table);
    doc.push_str(
        "\nEach node is its own OS process, both on this machine. `remote_pingpong`: a process on node a and \
         one spawned on node b bounce a number 20,000 times (after 1,000 untimed rounds); the round trip is two \
         messages, one each way. `remote_throughput`: a process spawned on node b sends 200,000 ints to one on \
         node a as fast as it can; the receiver checks the order and counts messages per second from the first \
         to the last it receives, and also from the spawn. Times are measured inside the programs with a \
         monotonic clock (`mono_us()`, `erlang:monotonic_time(microsecond)`). Round trip: `tern/erlang` below 1 \
         means Tern is faster, target ≤ 1×. Messages per second: `tern/erlang` above 1 means Tern is faster, \
         target ≥ 1×. On a small shared machine these times vary by tens of percent from run to run, in both \
         languages: use several runs.\n",
    );
    if !per_run.is_empty() {
        doc.push_str("\nEvery run:\n\n");
        doc.push_str(per_run);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn programs_print_their_lines() {
        let dir = crate::bench_dir().join("programs");
        for program in PROGRAMS {
            for ext in ["tern", "erl"] {
                let text = fs::read_to_string(dir.join(format!("{program}.{ext}"))).unwrap();
                assert!(text.contains(&format!("{program}:")), "{program}.{ext} prints no `{program}:` line");
                for (key, _) in expected_values(program) {
                    assert!(text.contains(&format!("{key}=")), "{program}.{ext} prints no `{key}=`");
                }
            }
        }
    }

    #[test]
    fn erl_helpers_are_modules() {
        let dir = crate::bench_dir().join("programs");
        for helper in ERL_HELPERS {
            let text = fs::read_to_string(dir.join(format!("{helper}.erl"))).unwrap();
            assert!(text.contains(&format!("-module({helper}).")), "{helper}.erl is not module {helper}");
        }
    }

    #[test]
    fn measures_are_derived() {
        let v = procs::parse_values(" count=200001 first_us=500 stream_us=1000000 total_us=2000000");
        assert_eq!(stream_rate(&v), Some(200_000.0));
        assert_eq!(total_rate(&v), Some(100_000.5));
        let v = procs::parse_values(" rounds=20000 total_us=400000");
        assert_eq!(round_trip_us(&v), Some(20.0));
    }
}
