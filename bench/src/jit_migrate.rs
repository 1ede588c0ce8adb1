//! `tern-bench jit-migrate`: how soon a migrated process runs compiled again at its
//! destination, with the hotness profile (`[jit] profile = true`, the default: the
//! destination compiles what ran compiled at the source as soon as the process resumes)
//! and without it (`profile = false`: each function is compiled when it turns hot there
//! again, as any JIT would do).
//!
//! Every run starts a fresh 2-node mesh on loopback in this OS process (as `migrate`
//! does: nothing compiled on b beforehand), runs `bench/programs/jit_migrate.tern` on a
//! (rounds of four hot functions) until its functions are compiled there, moves it to b
//! with the chosen mechanism and keeps the report: functions compiled at the source,
//! compiled again at b, and `time_to_compiled_us` (from the resume at b until the last
//! of them was ready there; 0 when all were ready before the process resumed). The
//! process is then stopped on b, which must answer from b.
//!
//! Output: a markdown table, printed and written to `bench/results/jit-migrate.md`.

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tern_net::proto::wire::MigReport;
use tern_vm::message::{Message, Val};

use crate::migrate::Mesh;
use crate::procs::TempDir;
use crate::report;

/// The program every run moves.
const PROGRAM: &str = include_str!("../programs/jit_migrate.tern");

/// Its functions that turn hot (`sum_to`, `fib`, `stir`, `mix`).
const HOT_FUNCTIONS: u64 = 4;

#[derive(clap::Args)]
pub struct JitMigrateArgs {
    /// Runs per setting.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Mechanisms, comma-separated: freeze, precopy, lazy, hybrid.
    #[arg(long, value_name = "MECH,...", value_delimiter = ',', default_value = "freeze,precopy")]
    mechanisms: Vec<String>,
    /// Print the table only; do not write bench/results/jit-migrate.md.
    #[arg(long)]
    no_write: bool,
}

/// One migration's figures.
struct Run {
    at_source: u32,
    rebuilt: u32,
    to_compiled_us: u64,
    freeze_us: u64,
}

pub fn run(args: &JitMigrateArgs) -> Result<bool> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for m in &args.mechanisms {
        m.parse::<tern_net::proto::mechanism::Mechanism>().map_err(|e| anyhow!("--mechanisms: {e}"))?;
    }
    let temp = TempDir::new("jit-migrate")?;
    let mut rows = Vec::new();
    let mut all_ok = true;
    let mut n = 0;
    for mechanism in &args.mechanisms {
        for profile in [true, false] {
            let mut runs = Vec::new();
            let mut problems = Vec::new();
            for k in 0..args.runs {
                n += 1;
                let dir = temp.0.join(format!("run-{n}"));
                eprint!("{mechanism}, profile {}, run {}/{}: ", if profile { "on" } else { "off" }, k + 1, args.runs);
                match one(&dir, mechanism, profile) {
                    Ok(r) => {
                        eprintln!(
                            "{} compiled at the source, {} at the destination, compiled {} µs after the resume (freeze {} µs)",
                            r.at_source, r.rebuilt, r.to_compiled_us, r.freeze_us
                        );
                        runs.push(r);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e:#}");
                        problems.push(format!("{e:#}"));
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            all_ok &= problems.is_empty();
            rows.push(row(mechanism, profile, &runs, problems.len()));
        }
    }
    let headers: Vec<String> = [
        "mechanism",
        "profile",
        "runs",
        "compiled at source",
        "compiled again",
        "to compiled p50 (µs)",
        "to compiled max (µs)",
        "freeze p50 (µs)",
    ]
    .map(String::from)
    .to_vec();
    let table = report::markdown_table(&headers, &rows);
    println!("{table}");
    if !args.no_write {
        let mut doc = String::new();
        let _ = writeln!(doc, "# Back at compiled speed after a migration: with and without the hotness profile\n");
        let _ = writeln!(doc, "Measured {} on {}.\n", report::utc_now(), report::machine_note());
        let _ = writeln!(
            doc,
            "`cargo run --release -p tern-bench -- jit-migrate --runs {} --mechanisms {}`: a fresh 2-node loopback mesh per run \
             (both nodes in the bench's OS process, QUIC with mutual TLS between them), `bench/programs/jit_migrate.tern` \
             (four hot functions: a loop, recursion, an array written and one read) moved from a to b once its functions \
             are compiled at a. *to compiled*: from the resume at b until the last function compiled at a was compiled \
             at b (the report's `time_to_compiled_us`; 0 when all were ready before the process resumed). With the \
             profile (`[jit] profile = true`, the default) b compiles them in the background from the resume on (not during the freeze: tried, it took the freeze's CPU); without \
             it, each when it turns hot again at b (1000 calls or back edges, then the compile). Machine code never \
             moves: the process always resumes in b's interpreter.\n",
            args.runs,
            args.mechanisms.join(",")
        );
        doc.push_str(&table);
        let path = crate::bench_dir().join("results").join("jit-migrate.md");
        report::write_file(&path, &doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(all_ok)
}

fn row(mechanism: &str, profile: bool, runs: &[Run], failed: usize) -> Vec<String> {
    let median = |mut v: Vec<u64>| -> String {
        v.sort_unstable();
        v.get(v.len() / 2).map_or("-".into(), |x| x.to_string())
    };
    let range = |v: Vec<u32>| match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "-".into(),
    };
    vec![
        mechanism.to_string(),
        if profile { "on" } else { "off" }.to_string(),
        if failed == 0 { runs.len().to_string() } else { format!("{} ({failed} failed)", runs.len()) },
        range(runs.iter().map(|r| r.at_source).collect()),
        range(runs.iter().map(|r| r.rebuilt).collect()),
        median(runs.iter().map(|r| r.to_compiled_us).collect()),
        runs.iter().map(|r| r.to_compiled_us).max().map_or("-".into(), |x| x.to_string()),
        median(runs.iter().map(|r| r.freeze_us).collect()),
    ]
}

fn one(dir: &std::path::Path, mechanism: &str, profile: bool) -> Result<Run> {
    let mesh = Mesh::start_with(dir, &format!("\n[jit]\nprofile = {profile}\n"))?;
    let r = moved(&mesh, mechanism).map_err(|e| anyhow!("{e:#}{}", mesh.log_tail()));
    drop(mesh);
    r
}

fn moved(mesh: &Mesh, mechanism: &str) -> Result<Run> {
    let (a, b) = (mesh.a.node(), mesh.b.node());
    let (pid, mut console) = mesh.start_on_a("jit_migrate.tern", PROGRAM)?;
    let limit = Duration::from_secs(60);
    console.wait_line("ready", limit)?;
    let compiler = a.vm().jit.clone().context("the JIT is off at a")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while compiler.stats().compiled < HOT_FUNCTIONS {
        if Instant::now() > deadline {
            bail!("only {} functions compiled at a within 20 s", compiler.stats().compiled);
        }
        thread::sleep(Duration::from_millis(1));
    }
    let report: MigReport = mesh
        .a
        .migrate(pid, "b", Some(mechanism.parse().map_err(|e: String| anyhow!(e))?))
        .map_err(|e| anyhow!("the migration failed: {e}"))?;
    if !report.ok {
        bail!("the migration failed: {}", report.outcome);
    }
    match b.send_to(pid, Message::scalar(Val::Int(0))) {
        Ok(true) => {}
        Ok(false) => bail!("the program has ended"),
        Err(e) => bail!("cannot send to the program: {e}"),
    }
    let line = console.wait_line("stopped", limit)?;
    if !line.contains(" on b ") {
        bail!("after the move the program printed `{line}`");
    }
    Ok(Run {
        at_source: report.jit_functions_at_source,
        rebuilt: report.jit_functions_rebuilt,
        to_compiled_us: report.time_to_compiled_us,
        freeze_us: report.freeze_time_us,
    })
}
