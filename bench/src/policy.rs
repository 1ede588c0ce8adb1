//! The load policy's makespan (`cargo run --release -p tern-bench -- policy`): a batch
//! of CPU-bound jobs all started on node a of a 2-node loopback mesh, each node its own
//! `tern node` OS process with one worker thread (so two nodes have twice the CPU of one
//! on a 2-core machine), run with `[policy] mode = "off"` and then `"balance"` (the
//! mesh.toml defaults otherwise), alternating, a fresh mesh each run. The makespan is the
//! wall time of `tern ctl spawn --wait` of the batch's main process; the migrations are
//! counted from the nodes' decision logs (`tern ctl --json policy`). A third run per row,
//! policy off, starts half the jobs on node b itself (`spawn_on`): the batch placed by
//! hand from the start, the best the policy could do on these two nodes. Results:
//! `bench/results/policy-makespan.md`.

use crate::exec::{self, Outcome};
use crate::forwarding_real::median;
use crate::procs::{self, TempDir};
use crate::remote::TernMesh;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Runs per mode, interleaved (a fresh mesh each); the medians count.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Jobs in the batch.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..1000))]
    jobs: u32,
    /// Loop iterations per job (the default: about 1.9 s of one core per job on the
    /// AMD EPYC of bench/results, a batch of about 15 s on one node, as the bench was
    /// first measured with).
    #[arg(long, value_name = "N", default_value_t = 600_000_000)]
    work: u64,
    /// The Tern binary. Without it the runner builds <workspace>/target/release/tern.
    #[arg(long, value_name = "PATH")]
    tern: Option<std::path::PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Write the results here instead of bench/results/policy-makespan.md.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

/// The batch: `jobs` processes that each loop `work` times, started by main, which waits
/// for every result and checks them; with `placed`, every other job started on node b.
fn program(jobs: u32, work: u64, placed: bool) -> String {
    let start = if placed {
        "if k % 2 == 1 { spawn_on(\"b\", job, self(), n); } else { spawn(job, self(), n); }"
    } else {
        "spawn(job, self(), n);"
    };
    format!(
        "fn job(parent, n) {{\n\
           let s = 0;\n\
           for i in 0..n {{ s += i % 7; }}\n\
           send(parent, s);\n\
         }}\n\
         let n = {work};\n\
         for k in 0..{jobs} {{ {start} }}\n\
         let sums = [];\n\
         for k in 0..{jobs} {{ push(sums, recv()); }}\n\
         let first = sums[0];\n\
         for s in sums {{ if s != first {{ exit(\"a job's sum differs\"); }} }}\n\
         println(\"done {jobs} jobs\");\n"
    )
}

/// One run: the makespan and the migrations made.
fn run_once(tern: &Path, dir: &Path, mode: &str, file: &Path) -> Result<(f64, u64)> {
    let extra = format!("\n[policy]\nmode = \"{mode}\"\n");
    let mesh = TernMesh::start_with(tern, dir, 2, &extra, Some(1))?;
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&mesh.config).args(["--node", "a", "spawn"]).arg(file).arg("--wait");
    let wall = match exec::run_timed(&mut cmd, Duration::from_secs(600))? {
        Outcome::Exited { status, stdout, stderr, wall, .. } => {
            if !status.success() || !stdout.contains("done") {
                bail!("the batch failed ({status}): {stdout}{stderr}");
            }
            wall
        }
        Outcome::TimedOut => bail!("the batch took more than 600 s"),
    };
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&mesh.config).args(["--json", "policy", "--decisions", "256"]);
    let moves = match exec::run_timed(&mut cmd, Duration::from_secs(30))? {
        Outcome::Exited { status, stdout, .. } if status.success() => {
            let v: serde_json::Value = serde_json::from_str(stdout.trim()).with_context(|| format!("policy printed {stdout:?}"))?;
            v["nodes"]
                .as_array()
                .map(|ns| {
                    ns.iter()
                        .flat_map(|n| n["decisions"].as_array().cloned().unwrap_or_default())
                        .filter(|d| d["moved"].is_object())
                        .count() as u64
                })
                .unwrap_or(0)
        }
        _ => bail!("tern ctl policy failed"),
    };
    drop(mesh);
    Ok((wall.as_secs_f64(), moves))
}

pub fn run(args: &PolicyArgs) -> Result<bool> {
    let root = crate::workspace_root();
    let tern = procs::tern_to_measure(args.tern.as_deref(), args.no_build, &root)?;
    let temp = TempDir::new("policy")?;
    let file = temp.0.join("batch.tern");
    fs::write(&file, program(args.jobs, args.work, false)).context("cannot write the batch program")?;
    let placed = temp.0.join("placed.tern");
    fs::write(&placed, program(args.jobs, args.work, true)).context("cannot write the batch program")?;
    let mut rows = Vec::new();
    for run in 1..=args.runs {
        let mut row = Vec::new();
        for (mode, label, file) in [("off", "off", &file), ("balance", "balance", &file), ("off", "placed", &placed)] {
            eprint!("run {run}/{}: policy {label:<7} ... ", args.runs);
            let (secs, moves) = run_once(&tern, &temp.0.join(format!("{label}-{run}")), mode, file)?;
            eprintln!("{secs:.2} s, {moves} migrations");
            row.push((secs, moves));
        }
        rows.push(row);
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i].0).collect());
    let (off, on, best) = (col(0), col(1), col(2));
    let ratio = off / on;
    let mut doc = String::from("# The load policy: makespan of a batch started on one node\n\n");
    doc += &format!(
        "`cargo run --release -p tern-bench -- policy --runs {} --jobs {} --work {}`: {} CPU-bound jobs (each a loop of {} \
         iterations) started by one process on node a of a 2-node loopback mesh; each node is its own `tern node` OS process \
         with one worker thread (`workers = 1`), so the two nodes have twice the CPU of one on this 2-core machine. Each run \
         starts a fresh mesh; policy off and `mode = \"balance\"` (every other `[policy]` key at its default: hysteresis \
         1000 ms, residence 2000 ms, 2 moves in flight) alternate, and with them the batch placed by hand: policy off, \
         every other job started on node b (`spawn_on`), the best a policy could do on these two nodes. Makespan: the \
         wall time of `tern ctl spawn --wait`; migrations: the moves in the nodes' decision logs.\n\n",
        args.runs, args.jobs, args.work, args.jobs, args.work
    );
    doc += "| run | policy off (s) | policy on (s) | ratio | migrations | placed by hand (s) | ratio |\n|---|---|---|---|---|---|---|\n";
    for (i, r) in rows.iter().enumerate() {
        doc += &format!(
            "| {} | {:.2} | {:.2} | {:.2}x | {} | {:.2} | {:.2}x |\n",
            i + 1,
            r[0].0,
            r[1].0,
            r[0].0 / r[1].0,
            r[1].1,
            r[2].0,
            r[0].0 / r[2].0
        );
    }
    doc += &format!(
        "| median | {off:.2} | {on:.2} | **{ratio:.2}x** | | {best:.2} | {:.2}x |\n\nTarget: at least 1.7x shorter with the policy on.\n",
        off / best
    );
    let out = args.out.clone().unwrap_or_else(|| crate::bench_dir().join("results").join("policy-makespan.md"));
    fs::write(&out, &doc).with_context(|| format!("cannot write {}", out.display()))?;
    print!("{doc}");
    eprintln!("wrote {}", out.display());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_batches_compile() {
        for placed in [false, true] {
            tern_net::runner::compile_text("batch.tern", &program(3, 10, placed)).map_err(|e| e.rendered).unwrap();
        }
    }
}
