//! `tern-bench`: benchmarks for Tern.
//!
//! Subcommands:
//! - `vm`: the VM-speed suite, `bench/programs/NAME.{tern,lua,py,erl}` run under Tern (JIT
//!   off and on), Lua 5.4, LuaJIT, CPython and Erlang; prints a markdown table and writes
//!   `bench/results/vm-speed.md`.
//! - `procs`: process benchmarks, `bench/programs/{spawn,pingpong,ring}.{tern,erl}` run under
//!   Tern and Erlang; prints a markdown table and writes `bench/results/procs-speed.md`.
//! - `remote`: messages between two nodes in two OS processes,
//!   `bench/programs/remote_{pingpong,throughput}.{tern,erl}` on a 2-node Tern mesh and on
//!   two distributed Erlang nodes; prints a markdown table and writes
//!   `bench/results/remote-speed.md`.
//! - `migrate`: live migration between two `tern node` processes (freeze, precopy, lazy,
//!   hybrid; heaps of 1 MiB to 1 GiB; idle, light and heavy writers) beside the raw QUIC
//!   and TCP throughput between two processes and QEMU's pre-copy live migration of a
//!   guest of the same size (the anchor, `--no-qemu` to skip it); prints a markdown table and writes `bench/results/migration-speed.md`
//!   and the chart `bench/results/migration-freeze.svg`.
//! - `jit-migrate`: how soon a migrated process runs compiled again at its destination,
//!   with and without the hotness profile; writes `bench/results/jit-migrate.md`.
//! - `forwarding`: the four message-forwarding mechanisms side by side on 3 to 100 (or
//!   more) in-process nodes; writes `bench/results/forwarding.md`.
//! - `forwarding-real`: the first message after a move on real meshes of 3 to 30 `tern
//!   node` processes; writes `bench/results/forwarding-real.md` and the chart
//!   `bench/results/forwarding-first-message.svg`.

mod affinity;
mod ceiling;
mod drain;
mod exec;
mod forwarding;
mod forwarding_real;
mod jit_migrate;
mod migrate;
mod policy;
mod procs;
mod qemu;
mod remote;
mod report;
mod table;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tern-bench", about = "Benchmarks for Tern")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// VM speed: run bench/programs under tern (JIT off and on), lua5.4, luajit, python3 and
    /// erl and compare.
    Vm(vm::VmArgs),
    /// Processes: spawn, ping-pong and ring benchmarks under tern and Erlang (erl).
    Procs(procs::ProcsArgs),
    /// Remote messages: ping-pong and throughput between two nodes (two OS processes),
    /// a Tern mesh beside distributed Erlang.
    Remote(remote::RemoteArgs),
    /// How soon a migrated process runs compiled again at its destination, with and
    /// without the hotness profile.
    JitMigrate(jit_migrate::JitMigrateArgs),
    /// Live migration between two nodes: freeze, precopy, lazy and hybrid at several heap
    /// sizes and write rates, beside the raw QUIC throughput and QEMU's pre-copy.
    Migrate(migrate::MigrateArgs),
    /// The four message-forwarding mechanisms compared: control messages, hops and
    /// latency of the first message after a move, state left behind, lost nodes.
    Forwarding(forwarding::ForwardingArgs),
    /// The first message after a move on real meshes (each node its own OS process),
    /// per forwarding mechanism and mesh size, with a chart.
    ForwardingReal(forwarding_real::ForwardingRealArgs),
    /// The load policy: the makespan of a batch of CPU-bound jobs all started on one of
    /// two nodes (each its own OS process with one worker), policy off against on.
    Policy(policy::PolicyArgs),
    /// The affinity policy: pairs of processes that message each other, each started
    /// split across two of three nodes (each its own OS process), policy off against on.
    Affinity(affinity::AffinityArgs),
    /// A drain out of a crowded node: node a holds many processes of a given heap, all
    /// pinned but some, which `tern ctl drain` moves; its time against the raw QUIC
    /// throughput for their heaps.
    Drain(drain::DrainArgs),
    /// The receiving end of `migrate`'s raw QUIC and TCP ceilings (a child process of it).
    #[command(hide = true)]
    CeilingSink(ceiling::SinkArgs),
}

/// The bench crate's directory (`<workspace>/bench`).
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (the bench crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let bench = bench_dir();
    bench.parent().map(Path::to_path_buf).unwrap_or(bench)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vm(args) => vm::run(&args),
        Command::Procs(args) => procs::run(&args),
        Command::Remote(args) => remote::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::JitMigrate(args) => jit_migrate::run(&args),
        Command::Forwarding(args) => forwarding::run(&args),
        Command::ForwardingReal(args) => forwarding_real::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Affinity(args) => affinity::run(&args),
        Command::Drain(args) => drain::run(&args),
        Command::CeilingSink(args) => ceiling::sink(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
