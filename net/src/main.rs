//! `tern`: run, check and inspect Tern programs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tern_net::certs;
use tern_net::cmd::CtlCommand;
use tern_net::config::{check_heap_fits, machine_memory, MeshConfig, MAX_JIT_CACHE_BYTES};
use tern_net::runner::{compile, compile_text, load, new_vm, run_program, RunOptions, StdoutHost};
use tern_vm::heap::HeapConfig;
use tern_vm::VmConfig;

#[derive(Parser)]
#[command(name = "tern", version, about = "Tern: a process VM whose running processes move between machines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The largest `--jit-cache-mib`.
const MAX_JIT_CACHE_MIB: u64 = MAX_JIT_CACHE_BYTES >> 20;

#[derive(clap::Args, Clone)]
struct Limits {
    /// Heap limit per process, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    max_heap: usize,
    /// Heap page size in bytes (a power of two, 64 bytes to 16 MiB).
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    page_size: usize,
    /// Call-depth limit.
    #[arg(long, default_value_t = 10_000, value_name = "FRAMES")]
    max_frames: u32,
    /// Reductions a process runs before it yields to the scheduler.
    #[arg(long, default_value_t = 4000, value_name = "REDUCTIONS")]
    budget: u32,
    /// Compiling hot functions to machine code: off, on (once hot) or always (every
    /// function at its first call).
    #[arg(long, default_value = "on", value_name = "MODE")]
    jit: tern_vm::jit::JitMode,
    /// Calls and loop back edges that make a function hot (--jit on).
    #[arg(long, default_value_t = 1000, value_name = "COUNT")]
    jit_threshold: u32,
    /// The size limit of the code cache (machine code of compiled functions), in MiB:
    /// past half of it, the older half is evicted and its functions are interpreted
    /// until they turn hot again.
    #[arg(long, default_value_t = tern_vm::jit::DEFAULT_CODE_LIMIT >> 20, value_name = "MIB")]
    jit_cache_mib: u64,
}

impl Limits {
    fn config(&self) -> Result<VmConfig, String> {
        let heap = HeapConfig {
            page_size_bytes: self.page_size,
            limit_bytes: self.max_heap.checked_mul(1 << 20).ok_or("--max-heap is too large")?,
            gc_min_bytes: HeapConfig::default().gc_min_bytes,
        };
        heap.validate()?;
        let memory = machine_memory();
        check_heap_fits(heap.limit_bytes as u64, memory)
            .map_err(|e| format!("--max-heap {}: {e}; give at most {} (MiB)", self.max_heap, memory.unwrap_or(0) >> 20))?;
        if self.max_frames == 0 || self.budget == 0 {
            return Err("--max-frames and --budget must be at least 1".into());
        }
        if self.jit_threshold == 0 {
            return Err("--jit-threshold must be at least 1".into());
        }
        if !(1..=MAX_JIT_CACHE_MIB).contains(&self.jit_cache_mib) {
            return Err(format!("--jit-cache-mib {}: give a size from 1 to {MAX_JIT_CACHE_MIB} (MiB)", self.jit_cache_mib));
        }
        Ok(VmConfig {
            heap,
            max_frames: self.max_frames,
            budget: self.budget,
            jit: self.jit,
            jit_threshold: self.jit_threshold,
            jit_cache_bytes: self.jit_cache_mib << 20,
        })
    }
}

/// How `tern ctl` and `tern repl` reach a node.
#[derive(clap::Args, Clone)]
struct Connect {
    /// How long to wait for a node to answer, in seconds (all the config's nodes are
    /// tried at once, or only --node's).
    #[arg(long, value_name = "SECONDS", default_value_t = tern_net::ctl::DEFAULT_CONNECT_TIMEOUT.as_secs_f64(), global = true)]
    connect_timeout: f64,
    /// The control certificate to connect with: `ctl` (the operator's, from `cluster
    /// init`), or `PERSON.operator` / `PERSON.observer` (from `cluster cert`).
    #[arg(long = "as", value_name = "CERT", default_value = tern_net::config::CTL_NAME, global = true)]
    identity: String,
}

impl Connect {
    fn opts(&self) -> Result<tern_net::ctl::ConnectOpts, String> {
        let s = self.connect_timeout;
        if !(s.is_finite() && s > 0.0 && s <= 600.0) {
            return Err(format!("--connect-timeout {s}: give a number of seconds above 0 and at most 600"));
        }
        if tern_net::tls::control_role(&self.identity).is_none() {
            return Err(format!(
                "--as {:?}: give `ctl`, `PERSON.operator` or `PERSON.observer` (the name of a certificate `tern cluster cert` made)",
                self.identity
            ));
        }
        Ok(tern_net::ctl::ConnectOpts { timeout: std::time::Duration::from_secs_f64(s), identity: self.identity.clone() })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a program on this machine (one node, no network).
    Run {
        /// The program (a .tern file).
        file: PathBuf,
        /// Run two VM instances in this OS process and, about every R reductions, relocate a
        /// randomly chosen process (seeded by --seed) to the other instance (freeze it, image
        /// it, reinstate it there) while the rest keep running. The output must not change.
        #[arg(long, value_name = "R")]
        migrate_every: Option<u64>,
        /// Seed for --migrate-every's choices.
        #[arg(long, default_value_t = 0, value_name = "S")]
        seed: u64,
        /// Worker threads (default: one per core).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// The directory `open` resolves paths in (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print a summary (reductions, moves, GC of the main process) to stderr at the end.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// A 3-node mesh on loopback (built-in config, certificates in a temporary
    /// directory) running a program across all three (examples/mesh/demo.tern).
    Demo {
        /// Instead: two VM instances in this OS process, with processes of
        /// examples/demo.tern moved between them while they run.
        #[arg(long)]
        local: bool,
        /// With --local: seed for the choice of moves (default: from the clock).
        #[arg(long, value_name = "S", requires = "local")]
        seed: Option<u64>,
    },
    /// Run one node of a mesh until Ctrl-C.
    Node {
        /// The mesh config (see net/MESH.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Which node of the config this is.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// On SIGTERM or Ctrl-C, move this node's processes to the other nodes before
        /// stopping (as `tern ctl drain`); without it they end with the reason `shutdown`,
        /// which their monitors see.
        #[arg(long)]
        drain_on_stop: bool,
        /// How long stopping may take, in seconds; what is left then is dropped.
        #[arg(long, value_name = "S", default_value_t = 60.0)]
        stop_timeout: f64,
    },
    /// Run a whole mesh.
    Mesh {
        #[command(subcommand)]
        command: MeshCommand,
    },
    /// Control a running mesh from scripts (the REPL's commands).
    Ctl {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The node to talk to (default: the first of the config that answers).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: Connect,
        #[command(subcommand)]
        command: CtlCmd,
    },
    /// A live web page of the mesh: its nodes, processes, traffic, migrations and
    /// policy; with an operator's certificate it can also migrate, drain and switch the
    /// policy. `/metrics` on the same address has every node's metrics for Prometheus.
    Dashboard {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Where to serve it (loopback unless an address of another interface is given).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7480")]
        listen: std::net::SocketAddr,
        /// The node to talk to (default: the first of the config that answers).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// An interactive session with a running mesh: Tern statements and expressions, and
    /// commands (:help).
    Repl {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The node to run on (default: the first of the config that answers).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Compile a program and verify its bytecode, without running it.
    Check { file: PathBuf },
    /// Show a program's bytecode.
    Disasm { file: PathBuf },
    /// Format programs in Tern's one style (comments kept), rewriting each file that
    /// changes and naming it on stderr.
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing: list the files that would change, and exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Manage a mesh's cluster (its CA and certificates).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Run every node of the config in this OS process (logs prefixed by node) until Ctrl-C.
    Up {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// The nodes: name, address, up or down, processes, load.
    Nodes,
    /// Processes on NODE, or on every node that is up.
    Ps { node: Option<String> },
    /// Start a program as a process.
    Spawn {
        file: PathBuf,
        /// The node to run it on (default: the node talked to; `any`: the least loaded).
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        /// Wait for it to end, printing its output (it runs on the node talked to).
        #[arg(long)]
        wait: bool,
        /// As --wait, and the program's read_line() reads this command's stdin (one line
        /// each; nil at its end), wherever the process runs.
        #[arg(long)]
        attach: bool,
    },
    /// End a process (PID as printed: 2.15).
    Kill { pid: String },
    /// Decide a move in doubt: a process its node keeps frozen because the node it was
    /// moving to restarted before it answered whether it took it. `resume` runs it
    /// there again (only if the other node never ran it), `end` ends it as lost. Ask the
    /// node it is frozen on (--node).
    Resolve {
        pid: String,
        #[arg(value_parser = ["resume", "end"])]
        decision: String,
    },
    /// Move a running process to another node, and print what the migration did.
    Migrate {
        pid: String,
        node: String,
        #[arg(long, value_name = "MECHANISM", help = mechanism_help())]
        mechanism: Option<String>,
        #[arg(long, value_name = "FORWARDING", help = forwarding_help())]
        forwarding: Option<String>,
        /// Move the process's whole coprocess group with it, in one migration.
        #[arg(long)]
        group: bool,
        /// Append the report to FILE as a JSON line.
        #[arg(long, value_name = "FILE")]
        metrics_out: Option<PathBuf>,
    },
    /// Send VALUE (a Tern expression) to a process.
    Send { pid: String, value: String },
    /// The nodes' load and the busiest processes, refreshing in place on a terminal.
    Top {
        /// How many processes.
        #[arg(long, default_value_t = 20)]
        procs: u32,
        /// Print once, even on a terminal.
        #[arg(long)]
        once: bool,
    },
    /// The load policy on every node and its recent decisions; `on`, `off` or `set KEY
    /// VALUE` change it on every node that is up.
    Policy {
        /// show | on | off | set KEY VALUE
        #[arg(num_args = 0..=3)]
        action: Vec<String>,
        /// How many recent decisions per node.
        #[arg(long, default_value_t = 20)]
        decisions: u32,
    },
    /// Move every movable process off NODE (pinned ones stay and are listed), then have
    /// it take no new processes.
    Drain { node: String },
    /// Have a drained NODE take new processes again.
    Undrain { node: String },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Make the cluster CA, a certificate for every node of the config and the
    /// operator's (`ctl`), in the config's cert_dir.
    Init {
        /// The mesh config (see net/MESH.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Regenerate every key and certificate even if some exist.
        #[arg(long)]
        force: bool,
    },
    /// Make a control certificate for one person or tool, signed by the cluster CA:
    /// `<cert_dir>/NAME.ROLE.pem` and `.key`, used with `tern ctl --as NAME.ROLE`.
    /// An operator may do everything; an observer may only look (nodes, ps, top, the
    /// policy). Nodes log which certificate asked for each change.
    Cert {
        /// The mesh config (see net/MESH.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// operator or observer.
        #[arg(long, value_name = "ROLE", value_parser = ["operator", "observer"])]
        role: String,
        /// Who holds it: 1 to 32 of a-z, 0-9, '_' and '-'.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Replace the certificate and key if they exist.
        #[arg(long)]
        force: bool,
    },
}

/// `tern ctl migrate --mechanism`'s help: the names come from the one list of them.
fn forwarding_help() -> String {
    format!("{} (default: the config's `mesh.forwarding`)", tern_net::proto::mechanism::Forwarding::listed())
}

fn mechanism_help() -> String {
    format!("{} (default: the config's `mesh.migration`)", tern_net::proto::mechanism::Choice::listed())
}

/// Diagnostics on stderr when `TERN_LOG` is set: a tracing filter such as `debug`,
/// `tern_net=debug` or `quinn_proto=trace` (the `EnvFilter` syntax). Unset, nothing.
fn init_tracing() {
    let Ok(spec) = std::env::var("TERN_LOG") else { return };
    match tracing_subscriber::EnvFilter::try_new(&spec) {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
        }
        Err(e) => eprintln!("warning: TERN_LOG={spec:?} is not a log filter ({e}); logging nothing"),
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { file, migrate_every, seed, workers, root, stats, limits } => {
            let config = match limits.config() {
                Ok(c) => c,
                Err(e) => return usage_error(&e),
            };
            if migrate_every == Some(0) {
                return usage_error("--migrate-every must be at least 1");
            }
            if workers == Some(0) || workers.is_some_and(|w| w > 1024) {
                return usage_error("--workers must be between 1 and 1024");
            }
            if let Some(r) = &root {
                if !r.is_dir() {
                    return usage_error(&format!("--root {}: not a directory", r.display()));
                }
            }
            let program = match compile(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut host = StdoutHost::default();
            let opts = RunOptions { config, migrate_every, seed, workers: workers.unwrap_or(0), file_root: root };
            let report = run_program(&program, &opts, &mut host);
            host.flush();
            match report {
                Ok(r) => {
                    if stats {
                        eprintln!(
                            "reductions: {}, moves: {}, largest image: {} bytes (a heap of 1 MiB or more is handed over, not imaged), functions compiled: {}",
                            r.reductions, r.migrations, r.image_bytes_max, r.jit.compiled
                        );
                        if r.jit.compiled + r.jit.failed > 0 {
                            let mut us = r.jit.compile_us.clone();
                            us.sort_unstable();
                            let pct = |q: usize| us.get((us.len().saturating_sub(1) * q) / 100).copied().unwrap_or(0);
                            eprintln!(
                                "jit: {} functions compiled ({} left interpreted), {} bytes of code, compile time p50 {} µs, p99 {} µs",
                                r.jit.compiled,
                                r.jit.failed,
                                r.jit.code_bytes,
                                pct(50),
                                pct(99)
                            );
                            if r.jit.flushes > 0 {
                                eprintln!(
                                    "jit: code cache full {} times: {} functions evicted (compiled again if hot again), {} evicted generations freed",
                                    r.jit.flushes, r.jit.evicted, r.jit.freed
                                );
                            }
                        }
                        eprintln!(
                            "heap: {} KiB; collections: {}, pages dirtied by the last: {}, by all: {}",
                            r.heap_bytes >> 10,
                            r.gc.collections,
                            r.gc.last_pages_dirtied,
                            r.gc.total_pages_dirtied
                        );
                    }
                    exit_code(Ok(r))
                }
                Err(e) => exit_code(Err(e)),
            }
        }
        Command::Demo { local: false, .. } => match tern_net::cmd::demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Node { config, name, drain_on_stop, stop_timeout } => {
            if !(stop_timeout.is_finite() && (0.0..=86_400.0).contains(&stop_timeout)) {
                return usage_error("--stop-timeout must be between 0 and 86400 seconds");
            }
            let stop = tern_net::cmd::StopOpts { drain: drain_on_stop, limit: std::time::Duration::from_secs_f64(stop_timeout) };
            with_config(&config, |cfg| {
                cfg.check_machine(machine_memory()).map_err(|e| e.to_string())?;
                tern_net::cmd::node(cfg, &name, stop).map(|()| true)
            })
        }
        Command::Mesh { command: MeshCommand::Up { config } } => with_config(&config, |cfg| {
            cfg.check_machine(machine_memory()).map_err(|e| e.to_string())?;
            tern_net::cmd::mesh_up(cfg).map(|()| true)
        }),
        Command::Repl { config, node, connect } => {
            let opts = match connect.opts() {
                Ok(o) => o,
                Err(e) => return usage_error(&e),
            };
            with_config(&config, |cfg| tern_net::cmd::repl(cfg, node.as_deref(), &opts).map(|()| true))
        }
        Command::Ctl { config, node, json, connect, command } => {
            let opts = match connect.opts() {
                Ok(o) => o,
                Err(e) => return usage_error(&e),
            };
            let cmd = match command {
                CtlCmd::Nodes => CtlCommand::Nodes,
                CtlCmd::Ps { node } => CtlCommand::Ps { node },
                CtlCmd::Spawn { file, on, wait, attach } => CtlCommand::Spawn { file, on, wait: wait || attach, attach },
                CtlCmd::Kill { pid } => CtlCommand::Kill { pid },
                CtlCmd::Resolve { pid, decision } => CtlCommand::Resolve { pid, resume: decision == "resume" },
                CtlCmd::Migrate { pid, node, mechanism, forwarding, group, metrics_out } => {
                    CtlCommand::Migrate { pid, to: node, mechanism, forwarding, group, metrics_out }
                }
                CtlCmd::Send { pid, value } => CtlCommand::Send { pid, value },
                CtlCmd::Top { procs, once } => CtlCommand::Top { procs, once },
                CtlCmd::Policy { action, decisions } => {
                    let words: Vec<&str> = action.iter().map(String::as_str).collect();
                    match tern_net::cmd::policy_change(&words) {
                        Ok(change) => CtlCommand::Policy { change, decisions },
                        Err(e) => return fail(&e),
                    }
                }
                CtlCmd::Drain { node } => CtlCommand::Drain { node, on: true },
                CtlCmd::Undrain { node } => CtlCommand::Drain { node, on: false },
            };
            with_config(&config, |cfg| tern_net::cmd::ctl(cfg, node.as_deref(), &opts, json, cmd))
        }
        Command::Demo { local: true, seed } => {
            let program = match compile_text("demo.tern", include_str!("../../examples/demo.tern")) {
                Ok(p) => p,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            let seed = seed
                .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64));
            let opts = RunOptions { migrate_every: Some(3000), seed, ..RunOptions::default() };
            let mut host = StdoutHost::default();
            let report = run_program(&program, &opts, &mut host);
            host.flush();
            match report {
                Ok(r) => {
                    println!(
                        "\n{} moves between the two VM instances (seed {seed}); the largest process image was {} KiB (a heap of 1 MiB or more is handed over, not imaged).",
                        r.migrations,
                        r.image_bytes_max.div_ceil(1024)
                    );
                    exit_code(Ok(r))
                }
                Err(e) => exit_code(Err(e)),
            }
        }
        Command::Check { file } => match compile(&file) {
            Ok(p) => {
                let mut vm = new_vm(VmConfig::default());
                if let Err(e) = load(&mut vm, &p) {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                println!("{}: ok ({} module{})", file.display(), p.modules.len(), if p.modules.len() == 1 { "" } else { "s" });
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Dashboard { config, listen, node, connect } => {
            let opts = match connect.opts() {
                Ok(o) => o,
                Err(e) => return usage_error(&e),
            };
            let d = tern_net::ops::dashboard::DashOpts { listen, identity: opts.identity, node, timeout: opts.timeout };
            with_config(&config, |cfg| tern_net::ops::dashboard::dashboard(cfg, d).map(|()| true))
        }
        Command::Cluster { command } => cluster(command),
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Disasm { file } => match compile(&file) {
            Ok(p) => {
                for m in &p.modules {
                    println!("; hash {}", m.hash());
                    print!("{}", tern_vm::bytecode::disassemble(m));
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Loads the config and runs `f`: exit 0 when it succeeds, 1 when it ran but did not
/// succeed, 2 (with `error: ...`) on an error.
fn with_config(path: &std::path::Path, f: impl FnOnce(&MeshConfig) -> Result<bool, String>) -> ExitCode {
    let cfg = match MeshConfig::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    match f(&cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}

fn cluster(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Init { config, force } => {
            let cfg = match MeshConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            match certs::cluster_init(&cfg, force) {
                Ok(report) => {
                    let nodes = cfg.nodes.len();
                    println!(
                        "cluster CA and certificates for {nodes} node{} and the operator (ctl), valid until {}:",
                        if nodes == 1 { "" } else { "s" },
                        report.not_after.date()
                    );
                    for f in &report.files {
                        println!("  {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        ClusterCommand::Cert { config, role, name, force } => {
            let cfg = match MeshConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            let Some(role) = tern_net::tls::Role::parse(&role) else {
                return usage_error(&format!("--role {role:?}: operator or observer"));
            };
            if let Err(e) = tern_net::config::check_node_name(&name) {
                return usage_error(&format!("--name: {e}"));
            }
            let cert = tern_net::tls::control_name(&name, role);
            match certs::issue(&cfg, &cert, certs::CertKind::Operator, force) {
                Ok(report) => {
                    println!(
                        "{} certificate {cert:?}, valid until {} (use it with `tern ctl --as {cert}`):",
                        role.name(),
                        report.not_after.date()
                    );
                    for f in &report.files {
                        println!("  {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// `error: MSG` on stderr, exit code 2. Compile errors (from `tern ctl spawn`) come
/// rendered, each already in the form `error: ...`, and are printed as they are.
fn fail(msg: &str) -> ExitCode {
    eprintln!("{}", tern_net::cmd::error_text(msg));
    ExitCode::from(2)
}

/// 0 when the main process ended normally; 1, with the error on stderr, otherwise.
fn exit_code(report: Result<tern_net::runner::RunReport, tern_net::runner::RunError>) -> ExitCode {
    match report.map(|r| r.result) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        // (Already in a runtime error's form, `file:line: error: ...`.)
        Err(e @ tern_net::runner::RunError::Deadlock(_)) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// `tern fmt`: exit 2 if a file could not be read, parsed or written (it is left as it
/// was), else 1 if `check` found files that would change, else 0.
fn fmt(files: &[PathBuf], check: bool) -> ExitCode {
    let mut failed = false;
    let mut unformatted = false;
    for file in files {
        let source = match std::fs::metadata(file).and_then(|m| {
            if m.len() > tern_compiler::MAX_SOURCE_BYTES {
                return Err(std::io::Error::other(format!("larger than {} bytes", tern_compiler::MAX_SOURCE_BYTES)));
            }
            std::fs::read_to_string(file)
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}: cannot read: {e}", file.display());
                failed = true;
                continue;
            }
        };
        let formatted = match tern_compiler::fmt::format_source(&file.display().to_string(), &source) {
            Ok(f) => f,
            Err(e) => {
                eprint!("{e}");
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        if check {
            println!("{}", file.display());
            unformatted = true;
        } else if let Err(e) = std::fs::write(file, formatted) {
            eprintln!("error: {}: cannot write: {e}", file.display());
            failed = true;
        } else {
            eprintln!("{}", file.display());
        }
    }
    ExitCode::from(if failed { 2 } else { u8::from(unformatted) })
}
