//! A drain out of a crowded node (`cargo run --release -p tern-bench -- drain`): node a
//! of a 2-node loopback mesh (each node its own `tern node` OS process) holds `--procs`
//! processes of `--heap-kib` of heap each (every cell written, so no page is zero),
//! all pinned but `--movers` of them; `tern ctl drain a` then moves those to b, at most
//! `[policy] max_in_flight` at a time, with the mesh's mechanism (`auto`). The drain's
//! wall time is set against the time the movers' heaps take on one raw QUIC stream
//! between two OS processes, measured in the same run (issue 18's "10,000 processes of
//! 1 MiB, 100 of them drained": total time against the sum of the heaps over the raw
//! throughput). Results: `bench/results/drain.md`.

use crate::ceiling;
use crate::exec::KillOnDrop;
use crate::procs::{self, TempDir};
use crate::remote::TernMesh;
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DrainArgs {
    /// Processes on node a.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    procs: u32,
    /// Of them, the ones the drain moves (the others are pinned).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    movers: u32,
    /// Heap per process, KiB (its cells all written).
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    heap_kib: u32,
    /// `[policy] max_in_flight`: the moves a drain runs at once (the mesh's default: 2).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    in_flight: u32,
    /// The mesh's mechanism (`[mesh] migration`), which a drain's moves use.
    #[arg(long, value_name = "MECH", default_value = "auto")]
    mechanism: String,
    /// Runs (a fresh mesh each); the medians count.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The Tern binary. Without it the runner builds <workspace>/target/release/tern.
    #[arg(long, value_name = "PATH")]
    tern: Option<std::path::PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Write the results here instead of bench/results/drain.md.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

/// The crowd: main (pinned) starts `procs` holders, the first `movers` of them free to
/// move, the rest pinned; each builds its heap and says so; main prints "ready" once all
/// have, then waits.
fn program(procs: u32, movers: u32, heap_kib: u32) -> String {
    // An array of n ints takes 16 bytes a cell (two words).
    let cells = u64::from(heap_kib) * 1024 / 16;
    format!(
        "fn holder(parent, pinned) {{\n\
           if pinned {{ pin(); }}\n\
           let a = array({cells}, 1);\n\
           send(parent, 1);\n\
           recv();\n\
           send(parent, len(a));\n\
         }}\n\
         pin();\n\
         for i in 0..{procs} {{ spawn(holder, self(), i >= {movers}); }}\n\
         for i in 0..{procs} {{ recv(); }}\n\
         println(\"ready\");\n\
         recv();\n"
    )
}

struct RunResult {
    /// Building the crowd, s.
    build_s: f64,
    /// The drain's wall time, s.
    drain_s: f64,
    moved: usize,
    failed: usize,
    stayed: usize,
    mechanisms: Vec<(String, usize)>,
    freeze_p50_us: u64,
    freeze_max_us: u64,
    /// Node a's resident memory with the crowd, bytes (from /proc).
    rss_a: u64,
}

fn rss_of(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

fn run_once(tern: &Path, dir: &Path, file: &Path, args: &DrainArgs) -> Result<RunResult> {
    // Room for the crowd: every heap and then some.
    let heap_total = u64::from(args.procs) * u64::from(args.heap_kib) * 1024;
    let extra = format!("processes = {}\n\n[policy]\nmax_in_flight = {}\n", args.procs.max(1000) + 100, args.in_flight);
    let mesh = TernMesh::start_with_mesh(tern, dir, 2, &extra, None, &format!("migration = \"{}\"\n", args.mechanism))?;
    let config = mesh.config.clone();
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&config).args(["--node", "a", "spawn"]).arg(file).arg("--wait");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = KillOnDrop(cmd.spawn().context("cannot start tern ctl spawn")?);
    let stdout = child.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // About 1.5 s per GiB to build, on the machines of bench/results; generously.
    let limit = Duration::from_secs(120 + heap_total / (64 << 20));
    loop {
        match lines.recv_timeout(limit.saturating_sub(t.elapsed())) {
            Ok(l) if l == "ready" => break,
            Ok(_) => {}
            Err(_) => bail!("the crowd was not ready within {limit:?}"),
        }
    }
    let build_s = t.elapsed().as_secs_f64();
    let rss_a = mesh.node_pid("a").map_or(0, rss_of);
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&config).args(["--node", "a", "--json", "drain", "a"]);
    let t = Instant::now();
    let out = match crate::exec::run_timed(&mut cmd, Duration::from_secs(600))? {
        crate::exec::Outcome::Exited { stdout, .. } => stdout,
        crate::exec::Outcome::TimedOut => bail!("the drain took more than 600 s"),
    };
    let drain_s = t.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("drain printed {out:?}"))?;
    let moved = v["moved"].as_array().cloned().unwrap_or_default();
    let mut mechanisms: Vec<(String, usize)> = Vec::new();
    for m in &moved {
        let name = m["mechanism"].as_str().unwrap_or("?").to_string();
        match mechanisms.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => mechanisms.push((name, 1)),
        }
    }
    let mut freezes: Vec<u64> = moved.iter().filter_map(|m| m["freeze_time_us"].as_u64()).collect();
    freezes.sort_unstable();
    let failed = v["failed"].as_array().map_or(0, Vec::len);
    if failed > 0 {
        eprintln!("failed moves: {}", v["failed"]);
    }
    drop(child);
    drop(mesh);
    Ok(RunResult {
        build_s,
        drain_s,
        moved: moved.len(),
        failed,
        stayed: v["stayed"].as_array().map_or(0, Vec::len),
        mechanisms,
        freeze_p50_us: freezes.get(freezes.len() / 2).copied().unwrap_or(0),
        freeze_max_us: freezes.last().copied().unwrap_or(0),
        rss_a,
    })
}

pub fn run(args: &DrainArgs) -> Result<bool> {
    if args.movers > args.procs {
        bail!("--movers ({}) is more than --procs ({})", args.movers, args.procs);
    }
    let root = crate::workspace_root();
    let tern = procs::tern_to_measure(args.tern.as_deref(), args.no_build, &root)?;
    let temp = TempDir::new("drain")?;
    let file = temp.0.join("crowd.tern");
    fs::write(&file, program(args.procs, args.movers, args.heap_kib)).context("cannot write the crowd program")?;
    let movers_bytes = u64::from(args.movers) * u64::from(args.heap_kib) * 1024;
    let mut rows = Vec::new();
    for run in 1..=args.runs {
        // The raw ceiling for the movers' heaps (at least 64 MiB, for a steady rate),
        // best of 3, then the drain.
        let bytes = movers_bytes.max(64 << 20);
        let c = ceiling::quic(&temp.0.join(format!("ceiling-{run}")), bytes, 3)?;
        eprint!("run {run}/{}: raw QUIC {:.0} MiB/s; ", args.runs, c.mib_s());
        let r = run_once(&tern, &temp.0.join(format!("run-{run}")), &file, args)?;
        eprintln!(
            "crowd built in {:.1} s, drain {:.3} s: {} moved, {} failed, {} stayed",
            r.build_s, r.drain_s, r.moved, r.failed, r.stayed
        );
        rows.push((c, r));
    }
    let mut doc = String::from("# A drain out of a crowded node\n\n");
    doc += &format!(
        "`cargo run --release -p tern-bench -- drain --procs {} --movers {} --heap-kib {} --in-flight {} --mechanism {} --runs {}`{}. \
         Node a of a 2-node loopback mesh (each node its own `tern node` OS process, 2 workers each; `[mesh] migration = \"{}\"`, `[policy] max_in_flight = {}`) holds {} processes of {} KiB of heap each (every cell written), \
         all pinned but {}; `tern ctl --json drain a` moves those to b. The drain's time is from the command's start to its \
         answer. The ideal is the movers' heaps ({:.1} MiB) on one raw QUIC stream between two OS processes with the mesh's \
         TLS (best of 3, measured in the same run just before, at least 64 MiB sent): `drain / ideal` is how far the drain \
         is from the wire.\n\n",
        args.procs,
        args.movers,
        args.heap_kib,
        args.in_flight,
        args.mechanism,
        args.runs,
        procs::source_note(&root),
        args.mechanism,
        args.in_flight,
        args.procs,
        args.heap_kib,
        args.movers,
        movers_bytes as f64 / f64::from(1u32 << 20),
    );
    doc += "| run | crowd built (s) | node a RSS (GiB) | raw QUIC (MiB/s) | ideal (s) | drain (s) | drain / ideal | moved | failed | stayed | mechanisms | freeze p50 / max (µs) |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|\n";
    for (i, (c, r)) in rows.iter().enumerate() {
        let ideal = movers_bytes as f64 / c.rate();
        let mech: Vec<String> = r.mechanisms.iter().map(|(m, n)| format!("{m} {n}")).collect();
        doc += &format!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.3} | {:.3} | {:.1}× | {} | {} | {} | {} | {} / {} |\n",
            i + 1,
            r.build_s,
            r.rss_a as f64 / f64::from(1u32 << 30),
            c.mib_s(),
            ideal,
            r.drain_s,
            r.drain_s / ideal,
            r.moved,
            r.failed,
            r.stayed,
            mech.join(", "),
            r.freeze_p50_us,
            r.freeze_max_us
        );
    }
    let out = args.out.clone().unwrap_or_else(|| crate::bench_dir().join("results").join("drain.md"));
    fs::write(&out, &doc).with_context(|| format!("cannot write {}", out.display()))?;
    print!("{doc}");
    eprintln!("wrote {}", out.display());
    Ok(rows.iter().all(|(_, r)| r.failed == 0 && r.moved == args.movers as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crowd_compiles() {
        tern_net::runner::compile_text("crowd.tern", &program(10, 2, 64)).map_err(|e| e.rendered).unwrap();
    }
}
